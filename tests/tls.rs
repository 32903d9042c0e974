//! TLS on both tools: a private CA made here (rcgen; no key is committed,
//! nothing is fetched), sockclient against sockserve, mutual TLS accepted
//! and refused, expired and misnamed certificates, plain text on a TLS
//! port both ways, refusals read over TLS, the handshake against the idle
//! timeout and the connection limit, a certificate swapped by SIGHUP under
//! connected clients, close_notify both ways, and the earlier guarantees
//! (receipts, drain, kill -9, resets) over TLS. Interop with `openssl
//! s_client` and `openssl s_server` where openssl is installed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// A CA made for one test, and the files of the certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    /// The CA's certificate, PEM.
    pem: PathBuf,
}

/// A certificate and its key, as files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            pem,
        }
    }

    /// A certificate for `sans` (DNS names, IP addresses) with subject
    /// `subject` (attribute, value pairs, in order), written as
    /// FILE.pem and FILE.key (0600).
    fn issue(&self, file: &str, sans: &[&str], subject: &[(DnType, &str)]) -> Leaf {
        self.issue_with(file, sans, subject, |_| {})
    }

    fn issue_with(
        &self,
        file: &str,
        sans: &[&str],
        subject: &[(DnType, &str)],
        f: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for (t, v) in subject {
            p.distinguished_name.push(t.clone(), *v);
        }
        f(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        write_private(&leaf.key, key.serialize_pem().as_bytes());
        leaf
    }

    /// The server's usual certificate: localhost and 127.0.0.1.
    fn server(&self, file: &str) -> Leaf {
        self.issue(
            file,
            &["localhost", "127.0.0.1"],
            &[(DnType::CommonName, "localhost")],
        )
    }
}

fn write_private(path: &Path, data: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `sockserve --tls-cert --tls-key [EXTRA...] 127.0.0.1:0`.
fn tls_server(leaf: &Leaf, extra: &[&str]) -> Server {
    ServerBuilder::new(&["--tls-cert", s(&leaf.cert), "--tls-key", s(&leaf.key)])
        .args(extra)
        .arg("127.0.0.1:0")
        .start()
}

/// `sockclient --tls --tls-ca CA [EXTRA...] ADDR` with `input`.
fn tls_client(ca: &Path, extra: &[&str], addr: &str, input: &[u8]) -> Run {
    let mut args = vec!["--tls", "--tls-ca", s(ca)];
    args.extend_from_slice(extra);
    args.push(addr);
    run_client(&args, input)
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().1
}

fn numbered(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix}{i}\n")).collect()
}

/// A TLS client in the test itself (rustls, blocking), for what
/// sockclient does not do: stop halfway, reset, count the server's
/// close_notify.
fn rustls_client(
    ca: &Path,
    addr: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends the client's close_notify now, all of it.
fn send_close_notify(c: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) {
    c.conn.send_close_notify();
    while c.conn.wants_write() {
        c.conn.write_tls(&mut c.sock).unwrap();
    }
}

use rustls::pki_types::pem::PemObject;

#[test]
fn sockclient_and_sockserve_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    let mut server = tls_server(&srv, &[]);
    let input = numbered("line ", 1000);
    // By IP address (its SAN), and by name.
    let by_ip = server.addr().to_string();
    let by_name = format!("localhost:{}", port(&by_ip));
    for addr in [&by_ip, &by_name] {
        let r = tls_client(&ca.pem, &[], addr, input.as_bytes());
        r.assert_success();
        assert_eq!(r.out(), ACK.repeat(1000));
    }
    server.stop_success();
    // Every line, in order, and only after that its ack: receipts.
    assert_eq!(String::from_utf8(server.output()).unwrap(), input.repeat(2));
    server
        .stderr
        .assert_contains("closed (client EOF): 1000 lines, 1000 acks");
}

#[test]
fn a_large_stream_and_a_long_line_cross_tls_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let mut server = tls_server(&ca.server("server"), &["--max-line", "200000"]);
    let mut input = numbered("", 300_000).into_bytes();
    input.extend(std::iter::repeat_n(b'x', 150_000));
    input.push(b'\n');
    let r = tls_client(&ca.pem, &["-q"], server.addr(), &input);
    r.assert_success();
    server.stop_success();
    assert_eq!(server.output(), input);
}

#[test]
fn mutual_tls_names_the_peer_in_logs_and_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    // A subject with characters that must not reach the output raw.
    let alice = ca.issue_with(
        "alice",
        &[],
        &[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "alice\t\\x,y"),
        ],
        |p| {
            p.subject_alt_names = vec![
                SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
                SanType::DnsName("alice.example".try_into().unwrap()),
            ]
        },
    );
    let mut server = tls_server(&srv, &["--tls-client-ca", s(&ca.pem), "--prefix-peer"]);
    let r = tls_client(
        &ca.pem,
        &["--tls-cert", s(&alice.cert), "--tls-key", s(&alice.key)],
        server.addr(),
        b"hello\n",
    );
    r.assert_success().assert_stdout(ACK);
    server.stop_success();
    let out = String::from_utf8(server.output()).unwrap();
    let (prefix, line) = out.trim_end().split_once('\t').unwrap();
    assert_eq!(line, "hello");
    let (addr, id) = prefix.split_once(' ').unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{out:?}");
    // RFC 4514 order: the certificates last attribute first.
    let subject = "CN=alice\\x09\\x5cx\\x2cy";
    assert!(
        id == format!("{subject},O=Example email:alice@example.com")
            || id == format!("O=Example,{subject} email:alice@example.com"),
        "{out:?}"
    );
    server
        .stderr
        .assert_contains(&format!("{prefix}: closed (client EOF): 1 lines, 1 acks"));
}

#[test]
fn mutual_tls_refuses_a_client_without_a_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let srv = ca.server("server");
    let stranger = other.issue("stranger", &[], &[(DnType::CommonName, "stranger")]);
    let expired = ca.issue_with("old", &[], &[(DnType::CommonName, "old")], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server = tls_server(&srv, &["--tls-client-ca", s(&ca.pem)]);
    // No certificate.
    let r = tls_client(&ca.pem, &[], server.addr(), b"x\n");
    r.assert_code(4)
        .assert_stderr_contains("a client certificate is required");
    server
        .stderr
        .wait_for("refused: TLS handshake failed: the client sent no certificate");
    // From a CA the server does not trust.
    let r = tls_client(
        &ca.pem,
        &[
            "--tls-cert",
            s(&stranger.cert),
            "--tls-key",
            s(&stranger.key),
        ],
        server.addr(),
        b"x\n",
    );
    r.assert_code(4);
    server
        .stderr
        .wait_for("refused: TLS handshake failed: the certificate is signed by an unknown CA");
    // Expired.
    let r = tls_client(
        &ca.pem,
        &["--tls-cert", s(&expired.cert), "--tls-key", s(&expired.key)],
        server.addr(),
        b"x\n",
    );
    r.assert_code(4);
    server
        .stderr
        .wait_for("refused: TLS handshake failed: the certificate has expired");
    assert!(server.output().is_empty());
}

#[test]
fn a_server_certificate_that_fails_verification_is_exit_4_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other");
    let expired = ca.issue_with("old", &["localhost", "127.0.0.1"], &[], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server = tls_server(&expired, &[]);
    tls_client(&ca.pem, &[], server.addr(), b"x\n")
        .assert_code(4)
        .assert_stderr_contains("TLS handshake with 127.0.0.1:")
        .assert_stderr_contains("failed: the certificate has expired");
    let good = tls_server(&ca.server("good"), &[]);
    // Not the CA we trust.
    tls_client(&other.pem, &[], good.addr(), b"x\n")
        .assert_code(4)
        .assert_stderr_contains("signed by an unknown CA");
    // Not the name we asked for.
    tls_client(
        &ca.pem,
        &["--tls-server-name", "db.example"],
        good.addr(),
        b"x\n",
    )
    .assert_code(4)
    .assert_stderr_contains("wrong name: certificate not valid for name \"db.example\"");
    // And the name it has.
    tls_client(
        &ca.pem,
        &["--tls-server-name", "localhost"],
        good.addr(),
        b"x\n",
    )
    .assert_success();
    assert!(good.output() == b"x\n");
}

#[test]
fn plain_text_and_tls_on_the_wrong_port_fail_cleanly_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = tls_server(&ca.server("server"), &[]);
    // A plain sockclient waits for a greeting the TLS server never sends
    // before a handshake: exit 4, with a hint.
    run_client(&["--connect-timeout", "1s", server.addr()], b"x\n")
        .assert_code(4)
        .assert_stderr_contains(
            "no greeting came within 1.0 s; if the server speaks TLS, give --tls",
        );
    // A plain sender that speaks first: refused at the handshake, closed.
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"hello in clear\n").unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(!got.windows(7).any(|w| w == b"connect"), "{got:?}");
    server
        .stderr
        .wait_for("refused: TLS handshake failed: not TLS, or broken TLS");
    assert!(server.output().is_empty());
    // The server is still up for TLS clients.
    tls_client(&ca.pem, &[], server.addr(), b"still\n").assert_success();
    // A TLS client against a plain server: exit 4, saying so.
    let plain = Server::start(&["127.0.0.1:0"]);
    tls_client(&ca.pem, &[], plain.addr(), b"x\n")
        .assert_code(4)
        .assert_stderr_contains("is the other side speaking plain text?");
}

#[test]
fn busy_and_access_refusals_are_read_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    let server = tls_server(&srv, &["--max-connections", "1"]);
    // A connection that has not finished its handshake holds the slot.
    let _held = TcpStream::connect(server.addr()).unwrap();
    eventually(WAIT, || {
        let r = tls_client(&ca.pem, &[], server.addr(), b"x\n");
        r.code() == 3 && r.stderr.contains("refused by") && r.stderr.contains("server busy")
    });
    tls_client(&ca.pem, &[], server.addr(), b"x\n")
        .assert_code(3)
        .assert_stderr_contains("not connect: server busy");
    let denied = tls_server(&srv, &["--deny", "127.0.0.1"]);
    tls_client(&ca.pem, &[], denied.addr(), b"x\n")
        .assert_code(3)
        .assert_stderr_contains("not connect: not allowed");
}

#[test]
fn a_handshake_never_finished_is_closed_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = tls_server(&ca.server("server"), &["--idle-timeout", "1s"]);
    let t = Instant::now();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let took = t.elapsed();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    server
        .stderr
        .wait_for("refused: TLS handshake failed: not finished within the idle timeout");
}

#[test]
fn close_notify_ends_the_input_and_the_server_answers_with_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = tls_server(&ca.server("server"), &[]);
    let mut c = rustls_client(&ca.pem, server.addr());
    c.write_all(numbered("n", 5000).as_bytes()).unwrap();
    c.flush().unwrap();
    // close_notify, and the TCP half-close after it.
    send_close_notify(&mut c);
    c.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    // Ok at the end only if the server's close_notify came: rustls says
    // UnexpectedEof for a bare TCP close.
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, format!("connect\n{}", ACK.repeat(5000)).into_bytes());
    server
        .stderr
        .wait_for("closed (client EOF): 5000 lines, 5000 acks");
}

/// A TLS sender that writes, half-closes and resets without reading (as
/// `ncat --ssl --send-only` does), all while the server is stopped, so
/// that everything is in its receive queue when it resumes. The server's
/// first write (the greeting's ack records) then fails, and that failure
/// ended the connection as an error before the ciphertext queued was
/// decrypted: whole lines lost (1,365 of 3,000 in a hostile review). With
/// `close_notify` before the reset, even the last line without its
/// newline is whole: the client said its input was over.
#[test]
fn a_tls_sender_that_resets_after_its_whole_input_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = tls_server(&ca.server("server"), &[]);
    for (round, notify) in [(0, false), (1, true)] {
        let mut c = rustls_client(&ca.pem, server.addr());
        let mut g = [0u8; 8];
        c.read_exact(&mut g).unwrap();
        server.signal(nix::sys::signal::Signal::SIGSTOP);
        let mut input = numbered(&format!("r{round}-"), 3000);
        input.push_str(&format!("r{round}-last"));
        c.write_all(input.as_bytes()).unwrap();
        c.flush().unwrap();
        if notify {
            send_close_notify(&mut c);
        }
        c.sock.shutdown(std::net::Shutdown::Write).unwrap();
        linger_zero(&c.sock);
        drop(c);
        server.signal(nix::sys::signal::Signal::SIGCONT);
        let want = if notify { 3001 } else { 3000 };
        let tag = format!("r{round}-");
        assert!(
            eventually(WAIT, || {
                String::from_utf8_lossy(&server.output())
                    .lines()
                    .filter(|l| l.starts_with(&tag))
                    .count()
                    >= want
            }),
            "round {round}: {} lines of {want}\n{}",
            String::from_utf8_lossy(&server.output())
                .lines()
                .filter(|l| l.starts_with(&tag))
                .count(),
            server.stderr.text()
        );
    }
    let out = String::from_utf8(server.output()).unwrap();
    assert!(
        out.ends_with("r1-3000\nr1-last\n"),
        "{}",
        server.stderr.text()
    );
}

#[test]
fn sighup_swaps_the_certificate_under_connected_clients() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(dir.path(), "old-ca");
    let new_ca = Ca::new(dir.path(), "new-ca");
    let live = old_ca.server("live");
    let server = tls_server(&live, &[]);
    // A client connected before the swap, still sending after it.
    let mut before = spawn_piped(
        sockclient_bin(),
        &["--tls", "--tls-ca", s(&old_ca.pem), server.addr()],
    );
    let mut stdin = before.stdin.take().unwrap();
    let mut acks = BufReader::new(before.stdout.take().unwrap());
    stdin.write_all(b"before the swap\n").unwrap();
    let mut line = String::new();
    acks.read_line(&mut line).unwrap();
    assert_eq!(line, ACK);
    // Renewed in place, as certbot does, and SIGHUP.
    let renewed = new_ca.server("renewed");
    std::fs::copy(&renewed.cert, &live.cert).unwrap();
    std::fs::copy(&renewed.key, &live.key).unwrap();
    server.signal(Signal::SIGHUP);
    server.stderr.wait_for("reloaded the TLS certificate");
    // New connections get the new certificate.
    tls_client(&new_ca.pem, &[], server.addr(), b"after\n").assert_success();
    tls_client(&old_ca.pem, &[], server.addr(), b"x\n")
        .assert_code(4)
        .assert_stderr_contains("unknown CA");
    // A bad new certificate: logged, the one in force kept.
    std::fs::write(&live.cert, b"not a certificate\n").unwrap();
    server.signal(Signal::SIGHUP);
    server
        .stderr
        .wait_for("no certificate in it (a PEM file with '-----BEGIN CERTIFICATE-----' is expected); keeping the certificate loaded before");
    tls_client(&new_ca.pem, &[], server.addr(), b"still\n").assert_success();
    // A key that is not the certificate's: the same.
    std::fs::copy(&renewed.cert, &live.cert).unwrap();
    std::fs::copy(&old_ca.server("stray").key, &live.key).unwrap();
    server.signal(Signal::SIGHUP);
    server
        .stderr
        .wait_for("the key is not the certificate's (its public key differs); keeping");
    tls_client(&new_ca.pem, &[], server.addr(), b"again\n").assert_success();
    // The client from before the swap was never disturbed.
    stdin.write_all(b"after the swap\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    acks.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, ACK);
    assert!(before.wait().unwrap().success());
    let out = String::from_utf8(server.output()).unwrap();
    for l in [
        "before the swap",
        "after",
        "still",
        "again",
        "after the swap",
    ] {
        assert!(out.lines().any(|x| x == l), "{l} not in {out:?}");
    }
}

#[test]
fn bad_files_stop_the_start_with_a_message_and_a_readable_key_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    let missing = dir.path().join("missing.pem");
    let r = run_bin(
        sockserve_bin(),
        &[
            "--tls-cert",
            s(&missing),
            "--tls-key",
            s(&srv.key),
            "127.0.0.1:0",
        ],
        b"",
    );
    r.assert_code(1).assert_stderr_contains(&format!(
        "sockserve: cannot load the TLS certificate {}: ",
        missing.display()
    ));
    let r = run_bin(
        sockserve_bin(),
        &[
            "--tls-cert",
            s(&srv.cert),
            "--tls-key",
            s(&srv.cert),
            "127.0.0.1:0",
        ],
        b"",
    );
    r.assert_code(1)
        .assert_stderr_contains("no private key in it");
    run_bin(
        sockserve_bin(),
        &["--tls-cert", s(&srv.cert), "127.0.0.1:0"],
        b"",
    )
    .assert_code(2)
    .assert_stderr_contains("--tls-key");
    run_client(&["--tls-ca", s(&ca.pem), "127.0.0.1:1"], b"").assert_code(2);
    run_client(&["--tls", "unix:/nonexistent"], b"")
        .assert_code(2)
        .assert_stderr_contains("--tls is for TCP addresses");
    // World-readable key: served, with a warning.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&srv.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = tls_server(&srv, &[]);
    server.stderr.assert_contains(&format!(
        "sockserve: the TLS key {} can be read by every user (mode 0644)",
        srv.key.display()
    ));
}

#[test]
fn unix_sockets_stay_plain_beside_a_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    let sock = dir.path().join("s.sock");
    let unix = format!("unix:{}", sock.display());
    let mut server = ServerBuilder::new(&["--tls-cert", s(&srv.cert), "--tls-key", s(&srv.key)])
        .args(["127.0.0.1:0", unix.as_str()])
        .listeners(2)
        .start();
    run_client(&[&unix], b"plain\n").assert_success();
    tls_client(&ca.pem, &[], &server.addrs[0].clone(), b"tls\n").assert_success();
    server.stop_success();
    let out = String::from_utf8(server.output()).unwrap();
    assert!(out.contains("plain\n") && out.contains("tls\n"), "{out}");
}

/// A sockclient --tls --echo fed lines over time, for the fault tests:
/// returns the lines it printed as acked.
fn echo_client(ca: &Path, addr: &str, tag: usize) -> std::thread::JoinHandle<Vec<String>> {
    let mut child = Command::new(sockclient_bin())
        .args(["--tls", "--tls-ca", s(ca), "--echo", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        for i in 0..200_000 {
            if writeln!(stdin, "c{tag} l{i}").is_err() {
                break;
            }
        }
    });
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let acked: Vec<String> = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_suffix("\tInformation Received").map(str::to_string))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        acked
    })
}

#[test]
fn kill_9_loses_no_acked_line_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    for round in 0..3 {
        let out = dir.path().join(format!("out{round}"));
        let server = tls_server(&srv, &["-o", s(&out)]);
        let clients: Vec<_> = (0..4)
            .map(|c| echo_client(&ca.pem, server.addr(), c))
            .collect();
        eventually(WAIT, || file_lines(&out).len() > 1000);
        server.signal(Signal::SIGKILL);
        let acked: Vec<String> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        assert!(!acked.is_empty(), "round {round}: nothing acked");
        assert_acked_were_written(&acked, &out, &format!("round {round}: "));
    }
}

#[test]
fn sigterm_drains_tls_clients_and_every_acked_line_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let out = dir.path().join("out");
    let mut server = tls_server(
        &ca.server("server"),
        &["-o", s(&out), "--drain-timeout", "2s"],
    );
    let clients: Vec<_> = (0..4)
        .map(|c| echo_client(&ca.pem, server.addr(), c))
        .collect();
    eventually(WAIT, || file_lines(&out).len() > 1000);
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    server.assert_exit(0);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let acked: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(!acked.is_empty());
    assert_acked_were_written(&acked, &out, "");
    server.stderr.assert_contains("draining");
}

#[test]
fn resets_mid_stream_over_tls_lose_no_acked_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let out = dir.path().join("out");
    let server = tls_server(&ca.server("server"), &["-o", s(&out)]);
    let steady = echo_client(&ca.pem, server.addr(), 0);
    for i in 0..20 {
        let mut c = rustls_client(&ca.pem, server.addr());
        let data: String = (0..1000).map(|j| format!("reset{i}:{j}\n")).collect();
        let _ = c.write_all(data.as_bytes());
        let _ = c.flush();
        linger_zero(&c.sock);
        drop(c);
    }
    eventually(WAIT, || {
        file_lines(&out).iter().any(|l| l.starts_with("c0 l10"))
    });
    server.signal(Signal::SIGKILL);
    let acked = steady.join().unwrap();
    assert!(!acked.is_empty());
    assert_acked_were_written(&acked, &out, "");
    server.stderr.assert_lacks("panicked");
}

#[test]
#[ignore = "needs openssl"]
fn openssl_s_client_gets_the_greeting_and_acks() {
    let openssl = require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    // s_client -quiet ends when the server closes: at the idle timeout.
    let mut server = tls_server(&ca.server("server"), &["--idle-timeout", "1s"]);
    for version in ["-tls1_3", "-tls1_2"] {
        let mut cmd = Command::new(&openssl);
        cmd.args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            version,
            "-CAfile",
            s(&ca.pem),
            "-connect",
            server.addr(),
        ]);
        let r = run_command(cmd, b"one\ntwo\n");
        assert_eq!(
            r.out(),
            format!("connect\n{}", ACK.repeat(2)),
            "{version}: {}",
            r.stderr
        );
    }
    // TLS 1.1 is refused.
    let mut cmd = Command::new(&openssl);
    cmd.args(["s_client", "-quiet", "-tls1_1", "-connect", server.addr()]);
    let r = run_command(cmd, b"x\n");
    assert!(!r.out().contains("connect"), "{}", r.out());
    server.stop_success();
    assert_eq!(server.output(), b"one\ntwo\none\ntwo\n");
}

#[test]
#[ignore = "needs openssl"]
fn sockclient_against_openssl_s_server_speaking_the_protocol() {
    let openssl = require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    let p = free_port();
    // s_server relays the client's bytes to its stdout and its stdin to
    // the client: a thread here greets and acks every line.
    let mut child = Command::new(&openssl)
        .args([
            "s_server",
            "-quiet",
            "-naccept",
            "1",
            "-accept",
            &format!("127.0.0.1:{p}"),
            "-cert",
            s(&srv.cert),
            "-key",
            s(&srv.key),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_client = child.stdin.take().unwrap();
    let from_client = BufReader::new(child.stdout.take().unwrap());
    let addr = format!("127.0.0.1:{p}");
    // Listening (a probe connection would use up -naccept 1).
    let hex = format!(":{p:04X} ");
    assert!(eventually(WAIT, || {
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&hex) && l.split_whitespace().nth(3) == Some("0A"))
    }));
    let relay = std::thread::spawn(move || {
        let mut lines = Vec::new();
        to_client.write_all(b"connect\n").unwrap();
        for l in from_client.lines().map_while(Result::ok) {
            let _ = to_client.write_all(ACK.as_bytes());
            lines.push(l);
        }
        lines
    });
    // s_server closes at our close_notify, with acks it has not relayed
    // yet: the input ends only once every ack came.
    let mut client = spawn_piped(
        sockclient_bin(),
        &[
            "--tls",
            "--tls-ca",
            s(&ca.pem),
            "--tls-server-name",
            "localhost",
            &addr,
        ],
    );
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(numbered("s", 50).as_bytes()).unwrap();
    let mut acks = BufReader::new(client.stdout.take().unwrap());
    for _ in 0..50 {
        let mut l = String::new();
        acks.read_line(&mut l).unwrap();
        assert_eq!(l, ACK);
    }
    drop(stdin);
    let st = wait_child(&mut client, WAIT, &Lines::default());
    assert!(st.success(), "{st}");
    let _ = child.kill();
    let _ = child.wait();
    let lines = relay.join().unwrap();
    assert_eq!(lines.len(), 50, "{lines:?}");
}

/// With `--proxy-protocol`, the PROXY header comes first, then the TLS
/// handshake, as HAProxy sends them; the header's source is the peer.
/// Sent in one write here, so that the start of the handshake arrives
/// with the header.
#[test]
fn a_proxy_header_then_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let mut server = tls_server(
        &ca.server("server"),
        &["--proxy-protocol", "127.0.0.1", "--prefix-peer"],
    );
    let mut c = rustls_client(&ca.pem, server.addr());
    let mut hello = Vec::new();
    while c.conn.wants_write() {
        c.conn.write_tls(&mut hello).unwrap();
    }
    let mut first = b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 10008\r\n".to_vec();
    first.extend_from_slice(&hello);
    c.sock.write_all(&first).unwrap();
    let mut greeting = [0u8; 8];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"connect\n");
    c.write_all(b"through a balancer\n").unwrap();
    let mut ack = vec![0u8; ACK.len()];
    c.read_exact(&mut ack).unwrap();
    assert_eq!(ack, ACK.as_bytes());
    drop(c);
    server.stop_success();
    assert_eq!(
        String::from_utf8(server.output()).unwrap(),
        "10.1.2.3:40000\tthrough a balancer\n"
    );
}

/// The JSON records name a verified client as the log lines do.
#[test]
fn json_records_name_the_client_by_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let bob = ca.issue("bob", &["bob.example"], &[(DnType::CommonName, "bob")]);
    let mut server = tls_server(
        &ca.server("server"),
        &["--tls-client-ca", s(&ca.pem), "--format", "json"],
    );
    tls_client(
        &ca.pem,
        &["--tls-cert", s(&bob.cert), "--tls-key", s(&bob.key)],
        server.addr(),
        b"hi\n",
    )
    .assert_success();
    server.stop_success();
    let out = String::from_utf8(server.output()).unwrap();
    let record: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    let peer = record["peer"].as_str().unwrap();
    assert!(
        peer.starts_with("127.0.0.1:") && peer.ends_with(" CN=bob DNS:bob.example"),
        "{out}"
    );
    assert_eq!(record["text"], "hi");
}

/// `--inetd` (and so `Accept=yes`, the same road): the one connection on
/// standard input speaks TLS too.
#[test]
fn the_connection_on_standard_input_speaks_tls_too() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let srv = ca.server("server");
    let out = dir.path().join("out");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let client = std::thread::spawn({
        let ca = ca.pem.clone();
        move || tls_client(&ca, &[], &addr, b"over inetd\n")
    });
    let (conn, _) = listener.accept().unwrap();
    let mut server = Command::new(sockserve_bin())
        .args(["--inetd", "-o", s(&out)])
        .args(["--tls-cert", s(&srv.cert), "--tls-key", s(&srv.key)])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(conn)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::collect(server.stderr.take().unwrap());
    client.join().unwrap().assert_success().assert_stdout(ACK);
    let st = wait_child(&mut server, WAIT, &err);
    assert!(st.success(), "{st}: {}", err.text());
    assert_eq!(std::fs::read(&out).unwrap(), b"over inetd\n");
}

/// A balancer's health check (PROXY `UNKNOWN`, then a close, no TLS) is
/// not a refused client: debug level only, as without TLS.
#[test]
fn a_health_check_without_tls_is_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = tls_server(
        &ca.server("server"),
        &["-v", "--proxy-protocol", "127.0.0.1"],
    );
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    drop(c);
    server
        .stderr
        .wait_for("health check closed before a TLS handshake");
    server.stderr.assert_lacks("refused");
}
