//! Behind a load balancer: PROXY protocol v1 and v2 headers from trusted
//! peers (`--proxy-protocol`), health checks, malformed and late headers,
//! untrusted peers, `--max-per-source`, `--reuse-port`, and rules written
//! as IPv4-mapped IPv6 on a dual-stack socket. The balancer here is the
//! test itself, writing headers byte for byte as HAProxy's
//! `proxy-protocol.txt` defines them; `tests/shell/t0500-haproxy.sh`
//! runs the real HAProxy and nginx.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;

const NOT_ALLOWED: &str = "not connect: not allowed\n";
const BAD_HEADER: &str = "not connect: bad PROXY header\n";
const TOO_MANY: &str = "not connect: too many connections from your address\n";

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: PROXY (command 1) or LOCAL (0), with `body` after the
/// 16 fixed bytes.
fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// A v2 PROXY header for a TCP client at `src` (to `dst`), with a TLV
/// (an authority, which sockserve skips).
fn v2_tcp(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("mixed families"),
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    body.extend_from_slice(&[0x02, 0, 11]);
    body.extend_from_slice(b"example.org");
    v2(1, family, &body)
}

fn v1_tcp4(src: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 127.0.0.1 {port} 10008\r\n").into_bytes()
}

/// Connects to `to` from the source address `from` (any 127.0.0.0/8
/// address works on Linux loopback).
fn connect_from(from: &str, to: &str) -> Peer {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
    let (SocketAddr::V4(f), SocketAddr::V4(t)) = (
        format!("{from}:0").parse::<SocketAddr>().unwrap(),
        to.parse::<SocketAddr>().unwrap(),
    ) else {
        panic!("IPv4 only")
    };
    let sock = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(sock.as_raw_fd(), &SockaddrIn::from(f)).unwrap();
    socket::connect(sock.as_raw_fd(), &SockaddrIn::from(t)).unwrap();
    let p = Peer::Tcp(TcpStream::from(sock));
    p.set_timeout(WAIT);
    p
}

/// A proxy connection that sent `header`, greeted.
fn proxied(s: &Server, header: &[u8]) -> Peer {
    let mut p = s.connect();
    p.send(header).unwrap();
    p.greeted()
}

fn output(s: &Server) -> String {
    String::from_utf8_lossy(&s.output()).into_owned()
}

#[test]
fn v1_header_source_is_the_peer_in_prefix_and_log() {
    let mut s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--prefix-peer",
        "127.0.0.1:0",
    ]);
    let mut p = proxied(&s, &v1_tcp4("192.0.2.7", 40000));
    p.send(b"hello\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.half_close();
    assert_eq!(p.rest(), "");
    let log = s.stderr.wait_for("closed (");
    assert!(
        log.starts_with("sockserve: 192.0.2.7:40000: closed (client EOF): 1 lines"),
        "{log}"
    );
    assert!(s.stop().success());
    assert_eq!(output(&s), "192.0.2.7:40000\thello\n");
}

#[test]
fn v2_header_with_tlvs_ipv4_and_ipv6() {
    let mut s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.0/8",
        "--prefix-peer",
        "-v",
        "127.0.0.1:0",
    ]);
    let mut p = proxied(
        &s,
        &v2_tcp(
            "192.0.2.7:40000".parse().unwrap(),
            "10.0.0.1:10008".parse().unwrap(),
        ),
    );
    p.send(b"four\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let mut p6 = proxied(
        &s,
        &v2_tcp(
            "[2001:db8::7]:40001".parse().unwrap(),
            "[2001:db8::1]:10008".parse().unwrap(),
        ),
    );
    p6.send(b"six\n").unwrap();
    assert_eq!(p6.line().as_deref(), Some(ACK));
    // The log names the proxy the client came through.
    let l = s
        .stderr
        .wait_for("[2001:db8::7]:40001: connected through 127.0.0.1:");
    assert!(l.contains("connected through"), "{l}");
    drop((p, p6));
    assert!(s.stop().success());
    assert_eq!(
        output(&s),
        "192.0.2.7:40000\tfour\n[2001:db8::7]:40001\tsix\n"
    );
}

#[test]
fn local_and_unknown_are_the_proxy_itself_logged_at_debug_level() {
    // Default verbosity: a health check leaves no line.
    let mut s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--prefix-peer",
        "127.0.0.1:0",
    ]);
    for header in [v2(0, 0, &[]), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut p = proxied(&s, &header);
        p.send(b"from the proxy\n").unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
        p.half_close();
        assert_eq!(p.rest(), "");
    }
    // A client after them: its line is the marker that they are done.
    let mut p = proxied(&s, &v1_tcp4("192.0.2.7", 40000));
    p.half_close();
    assert_eq!(p.rest(), "");
    s.stderr.wait_for("192.0.2.7:40000: closed");
    let lines: Vec<String> = s
        .stderr
        .all()
        .into_iter()
        .filter(|l| !l.contains("listening on") && !l.contains("192.0.2.7"))
        .collect();
    assert!(lines.is_empty(), "health checks were logged: {lines:#?}");
    assert!(s.stop().success());
    let out = output(&s);
    assert_eq!(out.matches("\tfrom the proxy\n").count(), 2, "{out}");
    assert!(out.lines().all(|l| l.starts_with("127.0.0.1:")), "{out}");

    // -v: they are logged, as the proxy.
    let s = Server::start(&["--proxy-protocol", "127.0.0.1", "-v", "127.0.0.1:0"]);
    let mut p = proxied(&s, &v2(0, 0, &[]));
    p.half_close();
    assert_eq!(p.rest(), "");
    let l = s.stderr.wait_for("PROXY LOCAL or UNKNOWN");
    assert!(l.contains("127.0.0.1:"), "{l}");
    let l = s
        .stderr
        .wait_for("closed (health check done): 0 lines, 0 acks");
    assert!(l.starts_with("sockserve: 127.0.0.1:"), "{l}");
}

#[test]
fn client_rules_do_not_refuse_the_balancers_health_checks() {
    let s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--allow",
        "192.0.2.0/24",
        "127.0.0.1:0",
    ]);
    let mut check = proxied(&s, &v2(0, 0, &[]));
    check.half_close();
    assert_eq!(check.rest(), "");
    let mut ok = proxied(&s, &v1_tcp4("192.0.2.7", 40000));
    ok.send(b"x\n").unwrap();
    assert_eq!(ok.line().as_deref(), Some(ACK));
    let mut other = s.connect();
    other.send(&v1_tcp4("198.51.100.1", 40000)).unwrap();
    assert_eq!(other.line().as_deref(), Some(NOT_ALLOWED));
    let l = s.stderr.wait_for("refused");
    assert!(
        l.starts_with("sockserve: 198.51.100.1:40000: refused: not allowed"),
        "{l}"
    );
}

#[test]
fn a_health_check_that_connects_and_closes_is_not_an_error() {
    let s = Server::start(&["--proxy-protocol", "127.0.0.1", "127.0.0.1:0"]);
    for _ in 0..5 {
        drop(s.connect());
    }
    // And one that resets.
    let p = s.connect();
    if let Peer::Tcp(t) = &p {
        linger_zero(t);
    }
    drop(p);
    let mut p = proxied(&s, &v1_tcp4("192.0.2.7", 40000));
    p.half_close();
    assert_eq!(p.rest(), "");
    s.stderr.wait_for("192.0.2.7:40000: closed");
    let lines: Vec<String> = s
        .stderr
        .all()
        .into_iter()
        .filter(|l| !l.contains("listening on") && !l.contains("192.0.2.7"))
        .collect();
    assert!(lines.is_empty(), "{lines:#?}");
}

#[test]
fn a_malformed_header_is_a_refusal_never_a_line() {
    let mut s = Server::start(&["--proxy-protocol", "127.0.0.1", "127.0.0.1:0"]);
    let bad_version = {
        let mut h = v2(0, 0, &[]);
        h[12] = 0x30;
        h
    };
    for bad in [
        b"hello\n".to_vec(),
        b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 10008\r\nhello\n".to_vec(),
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n".to_vec(),
        [b"PROXY TCP4 ".as_slice(), &[b'1'; 200], b"\r\n"].concat(),
        bad_version,
        // LF, not CR LF: refused at once, not at the 5 s deadline.
        b"PROXY TCP4 192.0.2.1 192.0.2.2 5555 80\nbad\n".to_vec(),
    ] {
        let mut p = s.connect();
        p.set_timeout(Duration::from_secs(3));
        p.send(&bad).unwrap();
        assert_eq!(
            p.line().as_deref(),
            Some(BAD_HEADER),
            "{:?}",
            bad.escape_ascii().to_string()
        );
        assert_eq!(p.line(), None);
    }
    let l = s.stderr.wait_for("malformed PROXY header");
    assert!(
        l.contains("refused: malformed PROXY header: it begins with \"hello\\n\""),
        "{l}"
    );
    assert!(eventually(WAIT, || s
        .stderr
        .text()
        .matches("refused: malformed PROXY header")
        .count()
        == 6));
    assert!(s.stop().success());
    assert_eq!(output(&s), "", "header bytes reached the output");
}

#[test]
fn an_untrusted_peer_is_refused_and_its_header_never_parsed() {
    let mut s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.9",
        "--prefix-peer",
        "127.0.0.1:0",
    ]);
    // From 127.0.0.1, a well-formed header naming an allowed source: not
    // trusted, so refused, and nothing is read.
    let mut p = connect_from("127.0.0.1", s.addr());
    p.send(&v1_tcp4("192.0.2.7", 40000)).unwrap();
    let _ = p.send(b"sneaky\n");
    assert_eq!(p.line().as_deref(), Some(NOT_ALLOWED));
    let l = s.stderr.wait_for("refused: not allowed");
    assert!(l.starts_with("sockserve: 127.0.0.1:"), "{l}");
    assert!(l.contains("--proxy-protocol"), "{l}");
    // A plain client without a header: refused at once, not after a wait.
    let t = Instant::now();
    let mut p = connect_from("127.0.0.1", s.addr());
    assert_eq!(p.line().as_deref(), Some(NOT_ALLOWED));
    assert!(t.elapsed() < Duration::from_secs(2));
    // The trusted proxy is served.
    let mut p = connect_from("127.0.0.9", s.addr());
    p.send(&v1_tcp4("192.0.2.7", 40000)).unwrap();
    let mut p = p.greeted();
    p.send(b"relayed\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    drop(p);
    assert!(s.stop().success());
    assert_eq!(output(&s), "192.0.2.7:40000\trelayed\n");
}

#[test]
fn rules_apply_to_the_header_source() {
    let mut s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--deny",
        "192.0.2.7",
        "127.0.0.1:0",
    ]);
    let mut p = s.connect();
    p.send(&v1_tcp4("192.0.2.7", 40000)).unwrap();
    p.send(b"denied\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(NOT_ALLOWED));
    let l = s.stderr.wait_for("refused: not allowed");
    assert!(l.starts_with("sockserve: 192.0.2.7:40000: refused"), "{l}");
    let mut p = proxied(&s, &v1_tcp4("192.0.2.8", 40000));
    p.send(b"allowed\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    drop(p);
    assert!(s.stop().success());
    assert_eq!(output(&s), "allowed\n");
}

#[test]
fn a_header_split_across_reads_is_put_together() {
    let mut s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--prefix-peer",
        "127.0.0.1:0",
    ]);
    let header = v2_tcp(
        "192.0.2.7:40000".parse().unwrap(),
        "10.0.0.1:10008".parse().unwrap(),
    );
    let v1 = v1_tcp4("192.0.2.8", 40001);
    for (h, cuts) in [
        (&header, &[1usize, 5, 13, 15, 16, 30][..]),
        (&v1, &[3, 6, 20]),
    ] {
        let mut p = s.connect();
        if let Peer::Tcp(t) = &p {
            t.set_nodelay(true).unwrap();
        }
        let mut at = 0;
        for &c in cuts.iter().chain([h.len()].iter()) {
            p.send(&h[at..c]).unwrap();
            at = c;
            // Spacing, so that the server sees the pieces in separate
            // reads; the test holds whether or not it does.
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut p = p.greeted();
        p.send(b"whole\n").unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    assert!(s.stop().success());
    assert_eq!(
        output(&s),
        "192.0.2.7:40000\twhole\n192.0.2.8:40001\twhole\n"
    );
}

#[test]
fn no_header_within_the_deadline_is_a_refusal() {
    // --idle-timeout shorter than 5 s is the deadline.
    let s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--idle-timeout",
        "1s",
        "127.0.0.1:0",
    ]);
    for partial in [&b""[..], b"PROXY TCP4 192.0", &V2_SIGNATURE[..7]] {
        let t = Instant::now();
        let mut p = s.connect();
        p.send(partial).unwrap();
        assert_eq!(p.line().as_deref(), Some(BAD_HEADER));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{took:?}"
        );
    }
    let l = s.stderr.wait_for("no complete PROXY header within 1.0 s");
    assert!(l.contains("refused"), "{l}");
    // The default: 5 s.
    let s = Server::start(&["--proxy-protocol", "127.0.0.1", "127.0.0.1:0"]);
    let t = Instant::now();
    let mut p = s.connect();
    p.send(b"PROXY ").unwrap();
    assert_eq!(p.line().as_deref(), Some(BAD_HEADER));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    s.stderr.wait_for("no complete PROXY header within 5.0 s");
}

#[test]
fn bytes_after_the_header_are_the_clients_first() {
    let mut s = Server::start(&["--proxy-protocol", "127.0.0.1", "127.0.0.1:0"]);
    // Header and lines in one write, a partial line finished later.
    let mut input = v2_tcp(
        "192.0.2.7:40000".parse().unwrap(),
        "10.0.0.1:10008".parse().unwrap(),
    );
    input.extend_from_slice(b"first\nsecond\nthi");
    let mut p = s.connect();
    p.send(&input).unwrap();
    let mut p = p.greeted();
    assert_eq!(p.line().as_deref(), Some(ACK));
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.send(b"rd\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    // v1, and a line that starts like a header after it is a line.
    let mut input = v1_tcp4("192.0.2.8", 40001);
    input.extend_from_slice(b"PROXY UNKNOWN\r\n");
    let mut q = s.connect();
    q.send(&input).unwrap();
    let mut q = q.greeted();
    assert_eq!(q.line().as_deref(), Some(ACK));
    drop((p, q));
    assert!(s.stop().success());
    assert_eq!(output(&s), "first\nsecond\nthird\nPROXY UNKNOWN\n");
}

#[test]
fn max_per_source_refuses_the_next_from_one_address() {
    let s = Server::start(&["--max-per-source", "2", "127.0.0.1:0"]);
    let a = connect_from("127.0.0.1", s.addr()).greeted();
    let _b = connect_from("127.0.0.1", s.addr()).greeted();
    let mut c = connect_from("127.0.0.1", s.addr());
    assert_eq!(c.line().as_deref(), Some(TOO_MANY));
    assert_eq!(c.line(), None);
    let l = s.stderr.wait_for("refused: too many connections");
    assert!(l.starts_with("sockserve: 127.0.0.1:"), "{l}");
    // Another address is counted apart.
    let mut other = connect_from("127.0.0.2", s.addr()).greeted();
    other.send(b"x\n").unwrap();
    assert_eq!(other.line().as_deref(), Some(ACK));
    // One closes: the next from 127.0.0.1 is served.
    a.half_close();
    drop(a);
    s.stderr.wait_for("closed (client EOF)");
    let mut d = connect_from("127.0.0.1", s.addr()).greeted();
    d.send(b"y\n").unwrap();
    assert_eq!(d.line().as_deref(), Some(ACK));
    // sockclient reads the refusal: exit 3, with the reason.
    let r = run_client(&[s.addr()], b"z\n");
    assert_eq!(r.code(), 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("too many connections from your address"),
        "{}",
        r.stderr
    );
}

#[test]
fn max_per_source_counts_the_header_source() {
    let s = Server::start(&[
        "--proxy-protocol",
        "127.0.0.1",
        "--max-per-source",
        "1",
        "127.0.0.1:0",
    ]);
    let _a = proxied(&s, &v1_tcp4("192.0.2.7", 40000));
    let mut b = s.connect();
    b.send(&v1_tcp4("192.0.2.7", 40001)).unwrap();
    assert_eq!(b.line().as_deref(), Some(TOO_MANY));
    let l = s.stderr.wait_for("refused: too many connections");
    assert!(l.starts_with("sockserve: 192.0.2.7:40001"), "{l}");
    // Same proxy, another client: served.
    let mut c = proxied(&s, &v1_tcp4("192.0.2.8", 40002));
    c.send(b"x\n").unwrap();
    assert_eq!(c.line().as_deref(), Some(ACK));
}

#[test]
fn reuse_port_lets_two_servers_share_a_port() {
    let a = Server::start(&["--reuse-port", "127.0.0.1:0"]);
    let addr = a.addr().to_string();
    let b = Server::start(&["--reuse-port", &addr]);
    assert_eq!(b.addr(), addr);
    // Without it, the port is taken.
    let r = run_bin(sockserve_bin(), &[&addr], b"");
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("address in use"), "{}", r.stderr);
    // The kernel spreads connections over both.
    for i in 0..40 {
        let r = run_client(&[&addr], format!("line {i}\n").as_bytes());
        assert_eq!(r.code(), 0, "{}", r.stderr);
    }
    let (na, nb) = (count_lines(&a.output()), count_lines(&b.output()));
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "all on one: {na} and {nb}");
    // One gone, the other serves the port alone.
    drop(a);
    let r = run_client(&[&addr], b"after\n");
    assert_eq!(r.code(), 0, "{}", r.stderr);
}

fn activator() -> String {
    require_tool("systemd-socket-activate", "systemd")
}

/// sockserve ARGS under `systemd-socket-activate -l PORT` (a bare port:
/// a dual-stack socket, where IPv4 clients arrive as ::ffff:a.b.c.d).
fn dual_stack(bin: &str, extra: &[&str], args: &[&str]) -> (Server, String) {
    let port = free_port();
    let s = ServerBuilder::via(bin)
        .args(["-l", &port.to_string()])
        .args(extra)
        .arg(sockserve_bin())
        .args(args)
        .listeners(0)
        .start();
    assert!(eventually(WAIT, || s
        .stderr
        .text()
        .contains("Listening on")));
    (s, format!("127.0.0.1:{port}"))
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn mapped_rules_on_a_dual_stack_socket() {
    let bin = activator();
    let (s, addr) = dual_stack(&bin, &[], &["--deny", "::ffff:127.0.0.1", "-v"]);
    let mut p = connect_from("127.0.0.1", &addr);
    assert_eq!(p.line().as_deref(), Some(NOT_ALLOWED));
    let l = s.stderr.wait_for("refused: not allowed");
    assert!(l.starts_with("sockserve: 127.0.0.1:"), "{l}");
    let mut q = connect_from("127.0.0.2", &addr).greeted();
    q.send(b"x\n").unwrap();
    assert_eq!(q.line().as_deref(), Some(ACK));
    drop((s, q));

    let (s, addr) = dual_stack(&bin, &[], &["--allow", "::ffff:127.0.0.1", "--prefix-peer"]);
    let mut p = connect_from("127.0.0.1", &addr).greeted();
    p.send(b"allowed\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let mut q = connect_from("127.0.0.2", &addr);
    assert_eq!(q.line().as_deref(), Some(NOT_ALLOWED));
    assert!(output(&s).starts_with("127.0.0.1:"), "{}", output(&s));
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn proxy_protocol_on_an_inherited_listener() {
    let bin = activator();
    let addr = format!("127.0.0.1:{}", free_port());
    let s = ServerBuilder::via(&bin)
        .args(["-l", &addr])
        .arg(sockserve_bin())
        .args(["--proxy-protocol", "127.0.0.1", "--prefix-peer"])
        .listeners(0)
        .start();
    assert!(eventually(WAIT, || s
        .stderr
        .text()
        .contains("Listening on")));
    let mut p = Peer::connect(&addr);
    p.send(&v1_tcp4("192.0.2.7", 40000)).unwrap();
    let mut p = p.greeted();
    p.send(b"inherited\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    assert_eq!(output(&s), "192.0.2.7:40000\tinherited\n");
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn proxy_protocol_on_an_accepted_connection() {
    let bin = activator();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let s = ServerBuilder::via(&bin)
        .args(["-l", &addr, "--accept", "--inetd"])
        .arg(sockserve_bin())
        .args(["--proxy-protocol", "127.0.0.1", "--prefix-peer", "-o"])
        .arg(&out)
        .listeners(0)
        .start();
    assert!(eventually(WAIT, || s
        .stderr
        .text()
        .contains("Listening on")));
    let mut p = Peer::connect(&addr);
    p.send(&v2_tcp(
        "192.0.2.7:40000".parse().unwrap(),
        "10.0.0.1:10008".parse().unwrap(),
    ))
    .unwrap();
    let mut p = p.greeted();
    p.send(b"inetd\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.half_close();
    assert_eq!(p.rest(), "");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "192.0.2.7:40000\tinetd\n"
    );
}

#[test]
fn rules_that_cannot_apply_are_said_so_at_start() {
    let s = Server::start(&["--allow-uid", "0", "127.0.0.1:0"]);
    let l = s
        .stderr
        .wait_for("--allow-uid and --allow-gid apply to Unix peers only");
    assert!(l.contains("127.0.0.1:"), "{l}");
    // Not with Unix sockets only.
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}", dir.path().join("s.sock").display());
    let s = Server::start(&["--allow-uid", "0", &sock]);
    drop(run_client(&[&sock], b"x\n"));
    assert!(
        !s.stderr.text().contains("apply to Unix peers only"),
        "{}",
        s.stderr.text()
    );
    // --proxy-protocol without TCP: said to have no effect.
    let sock2 = format!("unix:{}", dir.path().join("t.sock").display());
    let s = Server::start(&["--proxy-protocol", "127.0.0.1", &sock2]);
    s.stderr
        .wait_for("--proxy-protocol applies to TCP connections only");
}

#[test]
fn bad_flags_are_usage_errors() {
    for (args, says) in [
        (
            &["--proxy-protocol", "nope"][..],
            "'nope' is not an address or CIDR block",
        ),
        (
            &["--max-per-source", "0"],
            "'0' is not a whole number above 0",
        ),
        (&["--reuse-port", "--inetd"], "cannot be used with"),
    ] {
        let r = run_bin(sockserve_bin(), args, b"");
        assert_eq!(r.code(), 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
}
