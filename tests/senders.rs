//! Senders nobody here wrote: `logger --tcp`, `socat -u`, scripts that
//! send and close without reading, clients that stop reading their acks,
//! and refused clients in every mode. Every line that reaches sockserve is
//! written, whoever sends it; every refused client reads its refusal.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The port of a `127.0.0.1:PORT` address.
fn port(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().1
}

/// Waits until the server's output holds `n` lines (or the wait ends).
fn wait_lines(s: &Server, n: usize) -> usize {
    eventually(WAIT, || count_lines(&s.output()) >= n);
    count_lines(&s.output())
}

/// Sends `lines` and closes without ever reading, as a script that calls
/// `close()` does: the kernel answers the server's greeting and acks with
/// a reset. It waits (bounded) until its kernel has delivered every byte
/// (`SIOCOUTQ` is 0) before it closes, since a reset also discards what
/// the sender's own kernel still had queued, which no server can read.
fn send_and_close(addr: &str, lines: &[u8]) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(lines).unwrap();
    eventually(WAIT, || {
        let mut queued: nix::libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int through the pointer.
        let r = unsafe { nix::libc::ioctl(c.as_raw_fd(), nix::libc::TIOCOUTQ, &mut queued) };
        r == 0 && queued == 0
    });
    drop(c);
}

/// Connection c's lines (`cC line 1` to `cC line 1000`, as
/// `send_and_close` callers send them) are all in `out`, whole and in
/// order, for each of `connections`.
fn assert_every_connection_whole(out: &str, connections: usize) {
    for c in 0..connections {
        let tag = format!("c{c} ");
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&tag)).collect();
        let want: Vec<String> = (1..=1000).map(|i| format!("c{c} line {i}")).collect();
        assert!(
            mine == want,
            "connection {c}: lines missing, cut or out of order"
        );
    }
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn send_and_close_loses_no_line() {
    let s = Server::start(&["127.0.0.1:0"]);
    for c in 0..20 {
        let input: String = (1..=1000).map(|i| format!("c{c} line {i}\n")).collect();
        send_and_close(s.addr(), input.as_bytes());
    }
    let got = wait_lines(&s, 20 * 1000);
    assert_eq!(got, 20 * 1000, "stderr:\n{}", s.stderr.text());
    assert_every_connection_whole(&String::from_utf8(s.output()).unwrap(), 20);
}

/// A sender that half-closes after its last line (`socat -u`, `ncat
/// --send-only`, `printf ... | nc -N`) and then closes with acks unread
/// sent its whole stream: its kernel's reset comes after the FIN, and
/// Linux then fails the server's ack write with EPIPE, not ECONNRESET.
/// Its last line without a newline is a line. The server is stopped
/// (SIGSTOP) while the sender does all that, so that the FIN and the reset
/// are both there before the server reads and acks.
#[test]
fn a_tcp_sender_that_half_closed_before_its_reset_keeps_its_last_line() {
    let s = Server::start(&["127.0.0.1:0"]);
    for i in 0..5 {
        let mut p = s.connect().greeted();
        p.send(format!("a{i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
        s.signal(nix::sys::signal::Signal::SIGSTOP);
        p.send(format!("b{i}\nc{i}").as_bytes()).unwrap();
        let Peer::Tcp(t) = p else { unreachable!() };
        t.shutdown(std::net::Shutdown::Write).unwrap();
        // The reset a close with acks unread sends.
        linger_zero(&t);
        drop(t);
        s.signal(nix::sys::signal::Signal::SIGCONT);
        s.stderr.wait_for(": closed (");
    }
    assert!(eventually(WAIT, || {
        s.stderr.text().matches(": closed (").count() >= 5
    }));
    let out = String::from_utf8(s.output()).unwrap();
    for i in 0..5 {
        let want = [format!("a{i}"), format!("b{i}"), format!("c{i}")];
        let mine: Vec<&str> = out
            .lines()
            .filter(|l| l.ends_with(&i.to_string()))
            .collect();
        assert_eq!(mine, want, "{out}\n{}", s.stderr.text());
    }
}

/// A Unix socket has no reset: a sender that writes and closes without
/// reading delivers every byte, so its last line without a newline is a
/// line, even though the server's ack write failed (the peer is gone),
/// unlike over TCP, where the close with acks unread is a reset that may
/// have cut it.
#[test]
fn a_unix_sender_that_closes_without_reading_keeps_its_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let addr = format!("unix:{}", path.display());
    let s = Server::start(&[&addr]);
    for c in 0..20 {
        let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
        if c % 2 == 1 {
            // The greeting is queued, unread, when it closes: Linux then
            // fails the server's next read with ECONNRESET, once, after
            // every byte the sender wrote.
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&u), PollFlags::POLLIN)];
            assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)), Ok(1));
        }
        u.write_all(format!("c{c} first\nc{c} last").as_bytes())
            .unwrap();
        drop(u);
    }
    let got = wait_lines(&s, 40);
    let out = String::from_utf8(s.output()).unwrap();
    for c in 0..20 {
        let tag = format!("c{c} ");
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&tag)).collect();
        assert_eq!(
            mine,
            [format!("c{c} first"), format!("c{c} last")],
            "{got} lines:\n{out}\n{}",
            s.stderr.text()
        );
    }
}

/// The acks of a sender that closed stop, and the reading goes on: the
/// output stalls (a pipe nobody reads, filled by another client), so the
/// senders' lines wait in sockserve's receive queues while the senders
/// close and their kernels answer with resets; when the output drains,
/// the ack writes fail and every line is still written, and the log says
/// how many went unacked.
#[test]
fn a_failed_ack_write_stops_the_acks_not_the_reading() {
    let mut s = ServerBuilder::new(&["127.0.0.1:0"])
        .stdout(Stdio::piped())
        .start();
    let mut out = s.child.stdout.take().unwrap();
    // 100 KiB of lines fill the 64 KiB pipe: the sink blocks.
    let mut filler = s.connect().greeted();
    filler
        .send(&"filler\n".repeat(15_000).into_bytes())
        .unwrap();
    for c in 0..5 {
        let input: String = (1..=1000).map(|i| format!("c{c} line {i}\n")).collect();
        send_and_close(s.addr(), input.as_bytes());
    }
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    eventually(WAIT, || {
        s.stderr.text().matches(": 1000 lines, ").count() >= 5
    });
    let log = s.stderr.text();
    let closed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": 1000 lines, "))
        .collect();
    assert_eq!(closed.len(), 5, "{log}");
    assert!(
        closed.iter().all(|l| l.contains("unacked (acks stopped")),
        "{log}"
    );
    filler.half_close();
    s.stop_success();
    assert_every_connection_whole(&String::from_utf8(reader.join().unwrap()).unwrap(), 5);
}

/// `logger --tcp` never reads. Without --receive-only, its kernel
/// answers the greeting and the acks with a reset when it closes, and
/// discards whatever logger still had queued to send: what reached
/// sockserve is a prefix of the input, and all of that prefix is written
/// (the acks stop, the reading goes on), in order, and counted in the log.
/// With --receive-only nothing is sent to logger, so its close is a clean
/// end of stream: several messages and 100,000 lines through one
/// connection all arrive.
#[test]
#[ignore = "needs logger (Debian package bsdutils)"]
fn logger_tcp_lines_are_all_written() {
    let logger = require_tool("logger", "bsdutils");
    let run_logger = |s: &Server, input: &str| {
        run_bin(
            &logger,
            &["--tcp", "-n", "127.0.0.1", "-P", port(s.addr()), "-t", "t"],
            input.as_bytes(),
        )
        .assert_success();
    };
    // Without --receive-only: a prefix, whole and in order.
    let s = Server::start(&["127.0.0.1:0"]);
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    run_logger(&s, &input);
    let log = s.stderr.wait_for("closed (");
    let k: usize = log
        .split("): ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line count in {log}"));
    assert!(k >= 1, "{log}");
    let out = String::from_utf8_lossy(&s.output()).into_owned();
    let got: Vec<&str> = out.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    let want: Vec<String> = (1..=k).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "{log}");

    // With --receive-only: everything.
    let s = Server::start(&["--receive-only", "127.0.0.1:0"]);
    for i in 0..5 {
        let st = Command::new(&logger)
            .args(["--tcp", "-n", "127.0.0.1", "-P", port(s.addr()), "-t", "t"])
            .arg(format!("message {i}"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let n = 100_000;
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    run_logger(&s, &input);
    let got = wait_lines(&s, n + 5);
    assert_eq!(got, n + 5, "stderr:\n{}", s.stderr.text());
    let out = String::from_utf8_lossy(&s.output()).into_owned();
    for i in 0..5 {
        assert!(
            out.contains(&format!(" message {i}\n")),
            "message {i} missing"
        );
    }
    let numbers: Vec<&str> = out
        .lines()
        .skip(5)
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(numbers.len(), n);
    assert!(numbers
        .iter()
        .enumerate()
        .all(|(i, v)| *v == (i + 1).to_string()));
}

#[test]
#[ignore = "needs socat"]
fn socat_unidirectional_sender_loses_nothing() {
    let socat = require_tool("socat", "socat");
    let s = Server::start(&["--receive-only", "127.0.0.1:0"]);
    let input = numbered(200_000);
    run_bin(
        &socat,
        &["-u", "-", &format!("TCP:{}", s.addr())],
        input.as_bytes(),
    )
    .assert_success();
    assert_eq!(wait_lines(&s, 200_000), 200_000);
    assert_eq!(s.output(), input.as_bytes());
}

#[test]
fn receive_only_sends_nothing_and_writes_a_million_lines() {
    let s = Server::start(&["--receive-only", "127.0.0.1:0"]);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    let input = numbered(1_000_000);
    c.write_all(input.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"", "a receive-only server sent something");
    assert_eq!(wait_lines(&s, 1_000_000), 1_000_000);
    assert!(s.output() == input.as_bytes());
    s.stderr.wait_for("1000000 lines, 0 acks (receive-only)");
}

#[test]
fn receive_only_refuses_by_closing() {
    let s = Server::start(&["--receive-only", "--deny", "127.0.0.1", "127.0.0.1:0"]);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut back = Vec::new();
    let _ = c.read_to_end(&mut back);
    assert_eq!(back, b"");
    s.stderr.wait_for("refused: not allowed");
}

#[test]
fn a_client_that_stops_reading_acks_is_closed_as_not_reading_acks() {
    let s = Server::start(&["--idle-timeout", "1", "127.0.0.1:0"]);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
    let block = line.repeat(1000);
    let started = Instant::now();
    // Send and never read, until the server stops reading too.
    while started.elapsed() < Duration::from_secs(15) {
        if c.write_all(&block).is_err() {
            break;
        }
        if s.stderr.text().contains("closed (") {
            break;
        }
    }
    let l = s.stderr.wait_for("closed (");
    assert!(l.contains("closed (not reading acks)"), "{l}");
    assert!(l.contains(" lines, ") && l.contains(" acks"), "{l}");
}

/// A client that sends a line every 0.1 s while the server is stopped
/// (SIGSTOP) for twice the idle timeout is not closed, and every line is
/// acked.
#[test]
fn a_paused_server_does_not_blame_the_client() {
    use nix::sys::signal::Signal;
    let s = Server::start(&["--idle-timeout", "2", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    let sender = {
        let mut w = match &p {
            Peer::Tcp(t) => t.try_clone().unwrap(),
            Peer::Unix(_) => unreachable!(),
        };
        std::thread::spawn(move || {
            for i in 0..60 {
                w.write_all(format!("tick {i}\n").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    s.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(4));
    s.signal(Signal::SIGCONT);
    for _ in 0..60 {
        assert_eq!(p.line().as_deref(), Some(ACK), "{}", s.stderr.text());
    }
    sender.join().unwrap();
    p.half_close();
    assert_eq!(p.rest(), "");
    assert!(s.stderr.wait_for("closed (").contains("client EOF"));
}

/// The output stalls for 3 s with `--idle-timeout 1`: a client that sent
/// one line and waits gets its ack and stays connected.
#[test]
fn a_stalled_output_does_not_blame_the_client() {
    let mut s = ServerBuilder::new(&["--idle-timeout", "1", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .start();
    let mut out = s.child.stdout.take().unwrap();
    // Fill the pipe: another client's lines wait for a reader. The pipe
    // holds 64 KiB, about 6,000 of these lines; its acks stop when it is
    // full.
    let filler = TcpStream::connect(s.addr()).unwrap();
    (&filler).write_all(&numbered(20_000).into_bytes()).unwrap();
    let mut acks = std::io::BufReader::new(&filler);
    let mut acked = 0;
    let mut line = String::new();
    filler.set_read_timeout(Some(WAIT)).unwrap();
    while acked < 5000 {
        line.clear();
        acks.read_line(&mut line).unwrap();
        acked += 1;
    }
    // The acks stop when the pipe is full: none for 300 ms.
    filler
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while acks.read_line(&mut line).is_ok_and(|n| n > 0) {
        acked += 1;
    }
    let mut p = s.connect().greeted();
    p.send(b"waiting\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    assert_eq!(p.line().as_deref(), Some(ACK), "{}", s.stderr.text());
    // Still connected: another line, another ack.
    p.send(b"still here\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK), "{}", s.stderr.text());
    p.half_close();
    assert_eq!(p.rest(), "");
    s.stop();
    let out = reader.join().unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(out.contains("\nwaiting\n") && out.contains("\nstill here\n"));
    let log = s.stderr.text();
    let ours = log
        .lines()
        .filter(|l| l.contains("closed ("))
        .find(|l| l.contains(" 2 lines"));
    assert!(ours.is_some_and(|l| l.contains("client EOF")), "{log}");
    assert!(acked < 20_000);
}

/// A pipe whose reader stops holds no runtime worker: three clients fill
/// it (more than the two workers of a 2-core machine), and new clients are
/// still greeted while it is stalled. When the reader comes back, every
/// line of every client is there, whole and in order, and acked.
#[test]
fn a_stalled_pipe_output_does_not_stop_new_clients_from_being_greeted() {
    let mut s = ServerBuilder::new(&["127.0.0.1:0"])
        .stdout(Stdio::piped())
        .start();
    let mut out = s.child.stdout.take().unwrap();
    const N: usize = 20_000;
    let fillers: Vec<_> = (0..3)
        .map(|k| {
            let mut p = s.connect().greeted();
            let mut w = p.try_clone();
            let input: String = (1..=N).map(|i| format!("f{k} line {i}\n")).collect();
            let writer = std::thread::spawn(move || w.send(input.as_bytes()).unwrap());
            std::thread::spawn(move || {
                for _ in 0..N {
                    assert_eq!(p.line().as_deref(), Some(ACK));
                }
                writer.join().unwrap();
            })
        })
        .collect();
    // Nobody reads the pipe: it fills, and the fillers' batches wait.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        let mut p = s.connect();
        p.set_timeout(Duration::from_secs(2));
        assert_eq!(
            p.line().as_deref(),
            Some("connect\n"),
            "not greeted while the output is stalled; stderr:\n{}",
            s.stderr.text()
        );
    }
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    for f in fillers {
        f.join().unwrap();
    }
    s.stop();
    let out = String::from_utf8(reader.join().unwrap()).unwrap();
    for k in 0..3 {
        let tag = format!("f{k} ");
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&tag)).collect();
        let want: Vec<String> = (1..=N).map(|i| format!("f{k} line {i}")).collect();
        assert_eq!(mine, want, "filler {k}");
    }
    assert_eq!(out.lines().count(), 3 * N);
}

/// A client that sends its lines before it reads the greeting still reads
/// the whole refusal: the server does not close on unread input.
#[test]
fn a_refused_client_that_sent_first_reads_its_refusal() {
    let s = Server::start(&["--deny", "127.0.0.1", "127.0.0.1:0"]);
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(&numbered(100).into_bytes()).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"not connect: not allowed\n");
    }
}

fn hundred_refusals(addr: &str) {
    for i in 0..100 {
        eprintln!("refusal {i}");
        run_client(&[addr], b"a line\n")
            .assert_code(3)
            .assert_stderr_contains("not connect: not allowed");
    }
}

#[test]
fn every_refusal_arrives_with_own_listeners() {
    let s = Server::start(&["--deny", "127.0.0.1", "127.0.0.1:0"]);
    hundred_refusals(s.addr());
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn every_refusal_arrives_in_every_activation_mode() {
    let bin = require_tool("systemd-socket-activate", "systemd");
    for mode in [&[][..], &["--accept"][..], &["--accept", "--inetd"][..]] {
        let addr = format!("127.0.0.1:{}", free_port());
        let s = ServerBuilder::via(&bin)
            .args(["-l", &addr])
            .args(mode)
            .arg(sockserve_bin())
            .args(["--deny", "127.0.0.1"])
            .listeners(0)
            .start();
        s.stderr.wait_for("Listening on");
        hundred_refusals(&addr);
        drop(s);
    }
}

/// A parent that hands over a non-blocking pipe as standard output: a
/// reader that pauses means "wait", not "exit 1".
#[test]
fn a_non_blocking_stdout_pipe_waits_for_its_reader() {
    let (r, w) = nix::unistd::pipe().unwrap();
    nix::fcntl::fcntl(
        w.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut s = ServerBuilder::new(&["127.0.0.1:0"])
        .stdout(Stdio::from(w))
        .start();
    let input = numbered(50_000);
    let mut p = s.connect().greeted();
    p.send(input.as_bytes()).unwrap();
    // Nobody reads for a while: the pipe fills, the server waits.
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.child.try_wait().unwrap().is_none(), "{}", s.stderr.text());
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::fs::File::from(r).read_to_end(&mut v);
        v
    });
    for _ in 0..50_000 {
        assert_eq!(p.line().as_deref(), Some(ACK), "{}", s.stderr.text());
    }
    assert_eq!(s.stop().code(), Some(0), "{}", s.stderr.text());
    assert_eq!(reader.join().unwrap(), input.as_bytes());
}

#[test]
fn max_line_beyond_what_the_server_can_hold_is_a_usage_error() {
    for big in ["18446744073709551615", "1073741825"] {
        run_bin(sockserve_bin(), &["--max-line", big, "127.0.0.1:0"], b"")
            .assert_code(2)
            .assert_stderr_contains("1073741824");
    }
}

/// The same for acks owed: a client that sends a stream, reads nothing
/// for a moment (its receive buffer fills, the ack write waits), then
/// reads every ack, while the server is stopped for longer than the idle
/// timeout. The ack write's clock measures the client's silence: when it
/// runs out after the pause, the socket takes bytes again, so the
/// connection goes on, and every line is acked.
#[test]
fn a_paused_server_does_not_blame_a_client_owed_acks() {
    use nix::sys::signal::Signal;
    let s = Server::start(&["--idle-timeout", "2", "-o", "/dev/null", "127.0.0.1:0"]);
    let c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "connect\n");
    let n = 400_000;
    let mut w = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let block = "x\n".repeat(n);
        let _ = w.write_all(block.as_bytes());
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    // Read nothing for a while: the acks pile up and the writes wait.
    std::thread::sleep(Duration::from_millis(500));
    s.signal(Signal::SIGSTOP);
    // The client reads again while the server is stopped, well within
    // the idle timeout of its last read; the server sleeps on past it.
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let mut acked = 0;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    assert_eq!(line, ACK);
                    acked += 1;
                }
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_secs(3));
    s.signal(Signal::SIGCONT);
    let acked = reader.join().unwrap();
    sender.join().unwrap();
    let log = s.stderr.wait_for("closed (");
    assert!(log.contains("closed (client EOF)"), "{log}");
    assert_eq!(acked, n, "{log}");
}
