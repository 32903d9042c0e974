//! sockserve, driven over real sockets: the protocol, addresses,
//! inherited sockets, receipts, limits, signals and exit statuses.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn greeting_then_one_ack_per_line_byte_for_byte() {
    let mut s = Server::start(&["127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    p.send(b"hello\nCR LF line\r\n\nlast").unwrap();
    p.half_close();
    assert_eq!(p.rest(), ACK.repeat(4));
    s.stop_success();
    // Empty lines count; CR LF is one line without its CR; a last line
    // without a newline gets one.
    assert_eq!(s.output(), b"hello\nCR LF line\n\nlast\n");
}

/// Every byte value but newline, with and without CR; invalid UTF-8;
/// lone CRs; a CR kept before a CR LF; empty lines, plain and CR LF; a
/// line of exactly --max-line bytes. The bytes come out exactly (only
/// the CR before each LF dropped), one ack per line, and a half-close
/// then ends the connection with nothing more. One byte over the limit
/// closes its connection with an error, and is not written.
#[test]
fn every_byte_value_passes_through_and_both_sides_of_the_limit() {
    let mut s = Server::start(&["--max-line", "400", "127.0.0.1:0"]);
    let all: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').collect();
    let mut no_cr: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n' && b != b'\r').collect();
    no_cr.extend_from_slice(b"\xff\xfe invalid utf-8 \xc3\x28 and a lone \r in the middle");
    let pieces: [&[u8]; 8] = [
        &all,
        &no_cr,
        b"\xc3\x28\xa0\xa1 \xf0\x28\x8c\xbc",
        b"lone\rcr",
        b"trailing cr kept\r\r",
        b"",
        b"\r",
        &[b'm'; 400],
    ];
    let mut input = Vec::new();
    let mut want = Vec::new();
    for piece in pieces {
        input.extend_from_slice(piece);
        input.push(b'\n');
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        want.extend_from_slice(line);
        want.push(b'\n');
    }
    let mut p = s.connect().greeted();
    p.send(&input).unwrap();
    for _ in pieces {
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    p.half_close();
    assert_eq!(p.rest(), "");
    let mut q = s.connect().greeted();
    let mut long = vec![b'm'; 401];
    long.push(b'\n');
    q.send(&long).unwrap();
    assert_eq!(q.rest(), "error: line too long (max 400 bytes)\n");
    s.stop_success();
    assert_eq!(s.output(), want);
}

#[test]
fn texts_can_be_changed() {
    let s = Server::start(&["--greeting", "HELO", "--ack", "OK", "127.0.0.1:0"]);
    let mut p = s.connect();
    assert_eq!(p.line().as_deref(), Some("HELO\n"));
    p.send(b"x\ny\n").unwrap();
    p.half_close();
    assert_eq!(p.rest(), "OK\nOK\n");
}

#[test]
fn serves_tcp4_tcp6_unix_and_abstract_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let abs = format!("unix:@sockserve-test-{}", std::process::id());
    let mut s = ServerBuilder::new(&[
        "127.0.0.1:0",
        "[::1]:0",
        &format!("unix:{}", sock.display()),
        &abs,
    ])
    .listeners(4)
    .start();
    assert_eq!(s.addrs.len(), 4, "{:?}", s.addrs);
    for (i, a) in s.addrs.clone().iter().enumerate() {
        let mut p = Peer::connect(a).greeted();
        p.send(format!("via {i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK), "{a}");
    }
    assert!(s.addrs[1].starts_with("[::1]:"));
    assert_eq!(s.addrs[2], format!("unix:{}", sock.display()));
    assert_eq!(s.addrs[3], abs);
    s.stop_success();
    let out = String::from_utf8(s.output()).unwrap();
    for i in 0..4 {
        assert!(out.contains(&format!("via {i}\n")), "{out}");
    }
}

#[test]
fn default_address_is_the_tutorials() {
    // The only Rust test on port 10008; the shell tests use it after.
    let mut s = Server::start(&[]);
    assert_eq!(s.addr(), "127.0.0.1:10008");
    let mut p = s.connect().greeted();
    p.send(b"SOME DATA\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    // The client closes first, so no TIME_WAIT is left on port 10008 for
    // the tutorial's server.php (no SO_REUSEADDR) in the shell tests.
    p.half_close();
    assert_eq!(p.rest(), "");
    s.stop_success();
}

#[test]
fn many_clients_at_once_and_a_silent_one_delays_nobody() {
    let s = Server::start(&["127.0.0.1:0"]);
    let _silent = s.connect().greeted();
    let addr = s.addr().to_string();
    let threads: Vec<_> = (0..50)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut p = Peer::connect(&addr).greeted();
                let mut text = String::new();
                for l in 0..200 {
                    text.push_str(&format!(
                        "client {c:02} line {l:03} {}\n",
                        "x".repeat(c * 20)
                    ));
                }
                p.send(text.as_bytes()).unwrap();
                p.half_close();
                assert_eq!(p.rest(), ACK.repeat(200));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Lines from different clients never interleave inside a line.
    let out = String::from_utf8(s.output()).unwrap();
    assert_eq!(out.lines().count(), 50 * 200);
    for line in out.lines() {
        let c: usize = line[7..9].parse().unwrap();
        assert_eq!(line.len(), "client 00 line 000 ".len() + c * 20, "{line:?}");
    }
}

#[test]
fn line_of_max_length_passes_one_more_is_refused() {
    let mut s = Server::start(&["--max-line", "10", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    p.send(b"0123456789\n0123456789\r\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.send(b"ok\n0123456789A\nnever\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let rest = p.rest();
    assert_eq!(rest, "error: line too long (max 10 bytes)\n");
    assert!(s
        .stderr
        .wait_for("closed (line too long)")
        .contains("3 lines, 3 acks"));
    s.stop_success();
    assert_eq!(s.output(), b"0123456789\n0123456789\nok\n");
}

#[test]
fn endless_line_costs_at_most_the_maximum() {
    let s = Server::start(&["--max-line", "1000", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    // 64 MiB without a newline: the server must cut us off long before.
    let chunk = vec![b'z'; 1 << 20];
    let mut sent = 0;
    for _ in 0..64 {
        if p.send(&chunk).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 64, "server read 64 MiB of one line");
    s.stderr.wait_for("closed (line too long)");
    assert!(s.output().is_empty());
}

#[test]
fn unix_socket_mode_stale_live_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sock");
    let addr = format!("unix:{}", path.display());
    // A stale socket file (nobody listens) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut s = Server::start(&["--unix-mode", "0600", &addr]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A live one is not.
    run_bin(sockserve_bin(), &[&addr], b"")
        .assert_code(1)
        .assert_stderr_contains(&format!("sockserve: cannot bind {addr}: address in use"));
    s.stop_success();
    assert!(!path.exists(), "socket file left behind");
    // Nor is a file that is not a socket.
    std::fs::write(&path, "data").unwrap();
    run_bin(sockserve_bin(), &[&addr], b"")
        .assert_code(1)
        .assert_stderr_contains("is not a socket");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
}

#[test]
fn default_unix_mode_is_0660() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let s = Server::start(&[&format!("unix:{}", path.display())]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    drop(s);
}

#[test]
fn sigint_and_sigterm_stop_cleanly_with_every_acked_line_written() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let mut s = Server::start(&["127.0.0.1:0"]);
        let mut p = s.connect().greeted();
        for i in 0..100 {
            p.send(format!("line {i}\n").as_bytes()).unwrap();
        }
        for _ in 0..100 {
            assert_eq!(p.line().as_deref(), Some(ACK));
        }
        s.signal(sig);
        s.assert_exit(0);
        let out = String::from_utf8(s.output()).unwrap();
        assert_eq!(out.lines().count(), 100);
    }
}

#[test]
fn cannot_bind_is_exit_1_with_a_clear_message() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let r = run_bin(sockserve_bin(), &[&addr], b"");
    r.assert_code(1).assert_stdout("");
    if !r
        .stderr
        .starts_with(&format!("sockserve: cannot bind {addr}: address in use"))
    {
        r.fail("expected stderr to start with the bind error");
    }
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["--bogus"][..],
        &["not-an-address"],
        &["--max-line", "0"],
        &["--idle-timeout", "soon"],
        &["--unix-mode", "999"],
        &["--ack", ""],
    ] {
        run_bin(sockserve_bin(), args, b"")
            .assert_code(2)
            .assert_stderr_contains("error");
    }
}

#[test]
fn closed_stdout_is_exit_1_not_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    // The reader goes before the server starts: a test running beside
    // this one that forks a child in the meantime holds a copy of every
    // descriptor until its exec, and a write then finds a reader (the
    // line written and acked, once in a full run).
    drop(reader);
    let mut s = ServerBuilder::new(&["127.0.0.1:0"])
        .stdout(writer.into())
        .start();
    let mut p = s.connect().greeted();
    p.send(b"nobody will read this\n").unwrap();
    // No ack: the line was not written.
    assert_eq!(p.rest(), "");
    s.assert_exit(1);
    s.stderr
        .assert_contains("sockserve: output closed")
        .assert_lacks("panicked");
}

#[test]
fn inherited_listening_socket_with_listen_fds() {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut s = ServerBuilder::new(&["-v"])
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .configure(|c| with_fd3(c, l.as_raw_fd()))
        .start();
    drop(l);
    assert!(s.addr().starts_with(&addr), "{}", s.addr());
    let mut p = Peer::connect(&addr).greeted();
    p.send(b"inherited\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    s.stop_success();
    assert_eq!(s.output(), b"inherited\n");
}

#[test]
fn listen_pid_of_another_process_is_not_for_us() {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s = ServerBuilder::new(&["-v", "127.0.0.1:0"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .configure(|c| with_fd3(c, l.as_raw_fd()))
        .start();
    s.stderr.wait_for("LISTEN_PID=1 is another process");
    assert_eq!(s.addrs.len(), 1);
    assert_ne!(s.addr(), l.local_addr().unwrap().to_string());
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn systemd_socket_activate_listen() {
    let bin = require_tool("systemd-socket-activate", "systemd");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // systemd-socket-activate says "Listening on" itself, then execs us on
    // the first connection.
    let mut s = ServerBuilder::via(&bin)
        .args(["-l", &addr, sockserve_bin()])
        .listeners(0)
        .start();
    s.stderr.wait_for("Listening on");
    let mut p = Peer::connect(&addr).greeted();
    p.send(b"activated\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    s.stderr
        .wait_for(&format!("sockserve: listening on {addr} (fd 3)"));
    s.stop_success();
    assert_eq!(s.output(), b"activated\n");
}

/// With `--fsync` a connection reads on while its batches wait for their
/// sync: what a client pipelines is still acked in order, every acked
/// line is in the file, and the error line of a line too long comes after
/// the acks of every line before it.
#[test]
fn fsync_pipelined_acks_in_order_then_the_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let s = Server::start(&[
        "--fsync",
        "--max-line",
        "100",
        "-o",
        log.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let mut p = s.connect().greeted();
    let mut input: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
    input.push_str(&"x".repeat(200));
    input.push('\n');
    let mut w = p.try_clone();
    let writer = std::thread::spawn(move || w.send(input.as_bytes()));
    for i in 0..50_000 {
        assert_eq!(
            p.line().as_deref(),
            Some(ACK),
            "ack {i}: {}",
            s.stderr.text()
        );
    }
    assert_eq!(
        p.line().as_deref(),
        Some("error: line too long (max 100 bytes)\n")
    );
    let _ = writer.join();
    let written = std::fs::read_to_string(&log).unwrap();
    let want: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(written, want);
}
