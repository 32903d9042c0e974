//! sockserve as a long-running service: limits, idle and drain, the
//! output file and its receipts, logs, sd_notify, descriptor limits.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn connection_past_the_limit_is_refused_then_served_again() {
    let s = Server::start(&["--max-connections", "2", "127.0.0.1:0"]);
    let a = s.connect().greeted();
    let mut b = s.connect().greeted();
    let mut c = s.connect();
    assert_eq!(c.line().as_deref(), Some("not connect: server busy\n"));
    assert_eq!(c.line(), None, "refused connection closed at once");
    s.stderr.wait_for("refused: server busy");
    drop(a);
    s.stderr.wait_for("closed (client EOF)");
    let mut d = s.connect().greeted();
    d.send(b"served again\n").unwrap();
    assert_eq!(d.line().as_deref(), Some(ACK));
    b.send(b"still here\n").unwrap();
    assert_eq!(b.line().as_deref(), Some(ACK));
}

#[test]
fn idle_timeout_closes_a_trickling_client_not_a_normal_one() {
    let s = Server::start(&["--idle-timeout", "1", "127.0.0.1:0"]);
    let mut slow = s.connect().greeted();
    let mut normal = s.connect().greeted();
    let started = Instant::now();
    // One byte every 100 ms, never a newline: bytes do not keep it alive.
    let mut closed_after = None;
    for i in 0..40 {
        if slow.send(b"x").is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        if i % 3 == 0 {
            normal.send(b"line\n").unwrap();
            assert_eq!(normal.line().as_deref(), Some(ACK));
        }
        if s.stderr
            .wait_for_within("closed (idle timeout)", Duration::from_millis(100))
            .is_some()
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let t = closed_after.expect("trickling client never closed");
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_secs(3),
        "{t:?}"
    );
    assert_eq!(slow.rest(), "");
    // The normal one sent complete lines more often than the timeout.
    normal.send(b"after\n").unwrap();
    assert_eq!(normal.line().as_deref(), Some(ACK));
}

#[test]
fn idle_timeout_zero_disables_it() {
    let s = Server::start(&["--idle-timeout", "0", "--drain-timeout", "1", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    std::thread::sleep(Duration::from_millis(1500));
    p.send(b"late\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
}

#[test]
fn too_long_last_line_at_half_close_is_not_written() {
    let mut s = Server::start(&["--max-line", "5", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    p.send(b"12345\n123456").unwrap();
    p.half_close();
    assert_eq!(
        p.rest(),
        format!("{ACK}error: line too long (max 5 bytes)\n")
    );
    // At exactly the maximum, a last line without newline is a line.
    let mut q = s.connect().greeted();
    q.send(b"abcde").unwrap();
    q.half_close();
    assert_eq!(q.rest(), ACK);
    s.stop_success();
    assert_eq!(s.output(), b"12345\nabcde\n");
}

#[test]
fn drain_keeps_acking_open_clients_and_refuses_new_ones() {
    let mut s = Server::start(&["--drain-timeout", "20", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    p.send(b"before\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    s.signal(Signal::SIGTERM);
    s.stderr.wait_for("draining");
    // The listener is closed: the kernel refuses new connections.
    assert!(eventually(WAIT, || std::net::TcpStream::connect(s.addr()).is_err()));
    // The open client still gets acks, then half-closes.
    p.send(b"during\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let t = Instant::now();
    p.half_close();
    assert_eq!(p.rest(), "");
    s.assert_exit(0);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(s.output(), b"before\nduring\n");
}

#[test]
fn drain_timeout_cuts_streaming_clients_and_every_acked_line_is_written() {
    let mut s = Server::start(&["--drain-timeout", "1", "127.0.0.1:0"]);
    // Lock step: each client waits for an ack before its next line.
    let clients: Vec<_> = (0..4).map(|i| Streamer::start(s.addr(), i, 1)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    s.signal(Signal::SIGTERM);
    s.assert_exit(0);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    s.stderr.wait_for("drain timeout");
    let out = String::from_utf8(s.output()).unwrap();
    let written: std::collections::HashSet<&str> = out.lines().collect();
    assert_eq!(
        written.len(),
        out.lines().count(),
        "duplicate lines in the output"
    );
    for c in clients {
        let acked = c.join().acked;
        assert!(!acked.is_empty());
        for l in acked {
            assert!(written.contains(l.as_str()), "acked but not written: {l}");
        }
    }
}

#[test]
fn second_signal_ends_the_drain_at_once() {
    let mut s = Server::start(&["--drain-timeout", "60", "127.0.0.1:0"]);
    let c = Streamer::start(s.addr(), 0, 1);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.signal(Signal::SIGTERM);
    s.stderr.wait_for("draining");
    s.signal(Signal::SIGINT);
    s.assert_exit(0);
    assert!(t.elapsed() < Duration::from_secs(5));
    s.stderr.wait_for("second signal");
    assert!(c.join().greeted);
}

#[test]
fn output_file_is_appended_with_mode_0640_and_reopened_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lines.log");
    std::fs::write(&log, "old\n").unwrap();
    let mut s = Server::start(&["--output", log.to_str().unwrap(), "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    for i in 0..100 {
        p.send(format!("a{i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    // logrotate: rename, then SIGHUP.
    let rotated = dir.path().join("lines.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(Signal::SIGHUP);
    s.stderr.wait_for("reopened output");
    for i in 0..100 {
        p.send(format!("b{i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    p.half_close();
    s.stop_success();
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert_eq!(old.lines().count(), 101);
    assert!(old.starts_with("old\na0\n") && old.ends_with("a99\n"));
    assert_eq!(new.lines().count(), 100);
    assert!(new.starts_with("b0\n") && new.ends_with("b99\n"));
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn reopen_during_a_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stream.log");
    let mut s = Server::start(&[
        "--drain-timeout",
        "0.5",
        "--output",
        log.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let c = Streamer::start(s.addr(), 7, 1);
    for k in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::rename(&log, dir.path().join(format!("stream.log.{k}"))).unwrap();
        s.signal(Signal::SIGHUP);
        assert!(eventually(WAIT, || log.exists()), "not reopened");
    }
    s.stop_success();
    let streamed = c.join();
    assert!(streamed.greeted);
    let mut all = Vec::new();
    for k in 0..5 {
        all.push(std::fs::read_to_string(dir.path().join(format!("stream.log.{k}"))).unwrap());
    }
    all.push(std::fs::read_to_string(&log).unwrap());
    let lines: Vec<&str> = all.iter().flat_map(|f| f.lines()).collect();
    let set: std::collections::HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(set.len(), lines.len(), "duplicates");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, Streamer::line(7, i), "lines out of order or missing");
    }
    assert!(lines.len() >= streamed.acked.len());
    assert!(lines.len() <= streamed.sent);
}

#[test]
fn fsync_acks_after_the_sync_and_refuses_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("synced.log");
    let mut s = Server::start(&["--fsync", "-o", log.to_str().unwrap(), "127.0.0.1:0"]);
    run_client(&[s.addr()], b"1\n2\n3\n").assert_success();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n2\n3\n");
    s.stop_success();
    // Standard output a pipe: --fsync cannot keep its promise.
    run_bin(sockserve_bin(), &["--fsync", "127.0.0.1:0"], b"")
        .assert_code(2)
        .assert_stderr_contains("--fsync: cannot sync standard output: it is not a file");
}

#[test]
fn failing_output_stops_all_acks_and_exits_1() {
    // /dev/full: every write fails with ENOSPC, like a full disk.
    let mut s = Server::start(&["--output", "/dev/full", "127.0.0.1:0"]);
    run_client(&[s.addr()], b"one\ntwo\n")
        .assert_code(1)
        // Empty: it acked no line that was never written.
        .assert_stdout("")
        .assert_stderr_contains("2 of 2 sent lines were not acknowledged");
    s.assert_exit(1);
    s.stderr
        .assert_contains("cannot write output /dev/full: no space left on device");
}

#[test]
fn prefix_peer_names_who_sent_what() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("unix:{}", dir.path().join("p.sock").display());
    let mut s = ServerBuilder::new(&["--prefix-peer", "127.0.0.1:0", &path])
        .listeners(2)
        .start();
    let mut tcp = s.connect().greeted();
    let local = match &tcp {
        Peer::Tcp(t) => t.local_addr().unwrap().to_string(),
        _ => unreachable!(),
    };
    tcp.send(b"from tcp\n").unwrap();
    assert_eq!(tcp.line().as_deref(), Some(ACK));
    let mut unix = Peer::connect(&path).greeted();
    unix.send(b"from unix\r\n").unwrap();
    assert_eq!(unix.line().as_deref(), Some(ACK));
    drop((tcp, unix));
    s.stop_success();
    let out = String::from_utf8(s.output()).unwrap();
    // A Unix peer is named by its credentials: this test process.
    let me = format!(
        "unix:uid={},pid={}",
        nix::unistd::getuid(),
        std::process::id()
    );
    assert_eq!(out, format!("{local}\tfrom tcp\n{me}\tfrom unix\n"));
}

#[test]
fn one_log_line_per_connection_quiet_and_verbose() {
    let s = Server::start(&["127.0.0.1:0"]);
    run_client(&[s.addr()], b"a\nb\n").assert_success();
    let line = s.stderr.wait_for("closed (client EOF)");
    assert!(
        line.contains(": closed (client EOF): 2 lines, 2 acks, "),
        "{line}"
    );
    assert!(line.starts_with("sockserve: 127.0.0.1:"), "{line}");
    s.stderr.assert_lacks("connected");

    let v = Server::start(&["-v", "127.0.0.1:0"]);
    run_client(&[v.addr()], b"a\n");
    v.stderr.wait_for(": connected");
    v.stderr.wait_for("closed (client EOF)");

    // -q says nothing, not even "listening on": wait for a connect.
    let dir = tempfile::tempdir().unwrap();
    let path = format!("unix:{}", dir.path().join("q.sock").display());
    let mut q = ServerBuilder::new(&["-q", &path]).listeners(0).start();
    assert!(eventually(WAIT, || {
        std::os::unix::net::UnixStream::connect(dir.path().join("q.sock")).is_ok()
    }));
    run_client(&[&path], b"a\n").assert_success();
    q.stop_success();
    assert_eq!(q.stderr.text(), "", "-q printed something");
}

#[test]
fn journal_stream_gets_syslog_priorities() {
    use std::os::fd::AsRawFd;
    let (reader, writer) = std::io::pipe().unwrap();
    let st = nix::sys::stat::fstat(writer.as_raw_fd()).unwrap();
    let mut cmd = std::process::Command::new(sockserve_bin());
    cmd.args(["127.0.0.1:0", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stdout(std::process::Stdio::null())
        .stderr(writer);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let lines = Lines::collect(reader);
    let l = lines.wait_for("listening on");
    assert!(
        l.starts_with("<6>sockserve: listening on 127.0.0.1:"),
        "{l}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    wait_child(&mut child, WAIT, &lines);
    // Errors get <3>.
    let (reader, writer) = std::io::pipe().unwrap();
    let st = nix::sys::stat::fstat(writer.as_raw_fd()).unwrap();
    let out = std::process::Command::new(sockserve_bin())
        .arg("no-such-host.invalid:1")
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(1));
    let text = Lines::collect(reader).wait_for("cannot");
    assert!(text.starts_with("<3>sockserve: cannot resolve"), "{text}");
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
struct Notify {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Notify {
            sock,
            path: path.to_str().unwrap().to_string(),
            _dir: dir,
        }
    }
    /// The next message containing `what`.
    fn expect(&self, what: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what}: {e}"));
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(what) {
                return m;
            }
        }
    }
}

#[test]
fn sd_notify_ready_status_stopping_and_watchdog() {
    let n = Notify::new();
    let mut s = ServerBuilder::new(&["127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &n.path)
        .env("WATCHDOG_USEC", "200000")
        .start();
    let ready = n.expect("READY=1");
    assert!(
        ready.contains("STATUS=0 connections open, 0 lines received, 0 refused"),
        "{ready}"
    );
    // READY came after the listener accepts: connect right now works.
    let mut p = s.connect().greeted();
    p.send(b"x\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let st = n.expect("STATUS=1 connections open, 1 lines received");
    assert!(!st.contains("READY"));
    // WATCHDOG=1 at half the interval: several within a second.
    let t = Instant::now();
    for _ in 0..3 {
        n.expect("WATCHDOG=1");
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    s.signal(Signal::SIGTERM);
    let stopping = n.expect("STOPPING=1");
    assert!(stopping.contains("STATUS=draining"), "{stopping}");
    p.half_close();
    s.assert_exit(0);
}

fn set_nofile(cmd: &mut std::process::Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)?;
            Ok(())
        });
    }
}

fn nofile_of(pid: i32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn soft_open_file_limit_is_raised_to_the_hard_limit() {
    let s = ServerBuilder::new(&["--max-connections", "3000", "127.0.0.1:0"])
        .configure(|c| set_nofile(c, 256, 8192))
        .start();
    assert_eq!(nofile_of(s.pid()), "8192 8192");
    s.stderr.assert_lacks("open-file limit");

    let s = ServerBuilder::new(&["--max-connections", "15000", "127.0.0.1:0"])
        .configure(|c| set_nofile(c, 64, 64))
        .start();
    let w = s.stderr.wait_for("open-file limit");
    assert!(
        w.contains("--max-connections 15000: more than the open-file limit (64) allows; serving at most 31"),
        "{w}"
    );
}

#[test]
fn out_of_descriptors_backs_off_without_spinning_and_recovers() {
    let mut s = Server::start(&["127.0.0.1:0"]);
    // Lower the limit under the running server: accept now fails EMFILE.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .count();
    let limit = fds + 3;
    let st = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &s.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mut held: Vec<Peer> = (0..3).map(|_| s.connect().greeted()).collect();
    // These wait in the backlog while the server has no descriptor left.
    let waiting: Vec<Peer> = (0..5).map(|_| s.connect()).collect();
    s.stderr
        .wait_for("cannot accept: too many open files; backing off");
    let before = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(s.pid()) - before;
    assert!(spent < 20, "server spun: {spent} ticks of CPU in 2 s");
    assert_eq!(
        s.stderr.text().matches("backing off").count(),
        1,
        "logged more than once per episode"
    );
    assert!(s.child.try_wait().unwrap().is_none(), "server exited");
    // Free descriptors: the waiting clients are served, one after another.
    held.truncate(0);
    for w in waiting {
        w.set_timeout(WAIT);
        let mut w = w.greeted();
        w.send(b"resumed\n").unwrap();
        assert_eq!(w.line().as_deref(), Some(ACK));
    }
    s.stderr.wait_for("accepting again");
}
