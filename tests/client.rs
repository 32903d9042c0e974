//! sockclient against the real sockserve and against small fake servers
//! that misbehave on purpose: refuse, close early, never ack, send garbage.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// A one-connection fake server on 127.0.0.1: `behave` gets the accepted
/// stream and the lines read so far come from it.
fn fake(behave: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((s, _)) = l.accept() {
            s.set_read_timeout(Some(WAIT)).unwrap();
            behave(s);
        }
    });
    addr
}

/// Reads lines until end of stream (or `limit` lines), returning them.
fn read_lines(s: &TcpStream, limit: usize) -> Vec<String> {
    BufReader::new(s)
        .lines()
        .take(limit)
        .map_while(Result::ok)
        .collect()
}

#[test]
fn every_line_acked_is_exit_0_and_acks_on_stdout() {
    let s = Server::start(&["127.0.0.1:0"]);
    let r = run_client(&[s.addr()], b"one\ntwo\nthree");
    r.assert_code(0);
    assert_eq!(r.out(), "Information Received\n".repeat(3));
    assert_eq!(r.stderr, "");
    // The last line went out with a newline.
    assert!(eventually(WAIT, || s.output() == b"one\ntwo\nthree\n"));
}

#[test]
fn host_port_pair_like_netcat() {
    let s = Server::start(&["127.0.0.1:0"]);
    let (host, port) = s.addr().rsplit_once(':').unwrap();
    let r = run_client(&[host, port], b"x\n");
    r.assert_code(0);
    assert_eq!(r.out(), "Information Received\n");
}

#[test]
fn unix_and_ipv6_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("unix:{}", dir.path().join("c.sock").display());
    let s = ServerBuilder::new(&["[::1]:0", &path]).listeners(2).start();
    for a in &s.addrs {
        let r = run_client(&[a], b"a\nb\n");
        assert_eq!(r.code(), 0, "{a}: {}", r.stderr);
        assert_eq!(r.out(), "Information Received\n".repeat(2));
    }
}

#[test]
fn refusal_is_exit_3_with_the_reason() {
    let addr = fake(|mut s| {
        s.write_all(b"not connect: server busy\n").unwrap();
    });
    let r = run_client(&[&addr], b"never sent\n");
    r.assert_code(3);
    assert!(r.stderr.contains("refused by"), "{}", r.stderr);
    assert!(
        r.stderr.contains("not connect: server busy"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}

#[test]
fn cannot_connect_is_exit_4() {
    let port = free_port();
    let r = run_client(&["127.0.0.1", &port.to_string()], b"x\n");
    r.assert_code(4);
    assert!(
        r.stderr.contains(&format!(
            "sockclient: cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &[][..],
        &["a", "b", "c"],
        &["noport"],
        &["h", "99999"],
        &["--bogus", "x:1"],
    ] {
        let r = run_client(args, b"");
        assert_eq!(r.code(), 2, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn server_closing_after_n_lines_is_exit_1_with_the_count() {
    let addr = fake(|mut s| {
        s.write_all(b"connect\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        for _ in 0..3 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            s.write_all(b"Information Received\n").unwrap();
        }
        // Close without acking the rest.
    });
    let input: String = (0..10).map(|i| format!("line {i}\n")).collect();
    let r = run_client(&[&addr], input.as_bytes());
    r.assert_code(1);
    assert_eq!(r.out(), "Information Received\n".repeat(3));
    assert!(
        r.stderr
            .contains("7 of 10 sent lines were not acknowledged"),
        "{}",
        r.stderr
    );
}

#[test]
fn waits_for_owed_acks_after_end_of_input() {
    // The server acks only after the client has half-closed, and slowly:
    // a client on a timer (nc, socat -t) would lose these.
    let addr = fake(|mut s| {
        s.write_all(b"connect\n").unwrap();
        let lines = read_lines(&s, usize::MAX);
        std::thread::sleep(Duration::from_millis(1500));
        for _ in &lines {
            s.write_all(b"Information Received\n").unwrap();
        }
    });
    let r = run_client(&[&addr], b"1\n2\n3\n");
    r.assert_code(0);
    assert_eq!(r.out(), "Information Received\n".repeat(3));
}

#[test]
fn garbage_lines_go_to_stderr_and_are_not_acks() {
    let addr = fake(|mut s| {
        s.write_all(b"connect\n").unwrap();
        let lines = read_lines(&s, 2);
        for _ in &lines {
            s.write_all(b"garbage\nInformation Received\n").unwrap();
        }
        let _ = read_lines(&s, usize::MAX);
        s.write_all(b"Information Receivedxx\n").unwrap();
    });
    let r = run_client(&[&addr], b"a\nb\nc\n");
    r.assert_code(1);
    assert_eq!(r.out(), "Information Received\n".repeat(2));
    assert_eq!(
        r.stderr
            .matches("unexpected line from the server: garbage")
            .count(),
        2,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Information Receivedxx"), "{}", r.stderr);
    assert!(
        r.stderr.contains("1 of 3 sent lines were not acknowledged"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_million_lines_stream_without_deadlock() {
    let s = Server::start(&["127.0.0.1:0"]);
    let mut input = Vec::with_capacity(8 << 20);
    for i in 0..1_000_000 {
        input.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let started = Instant::now();
    let r = run_client(&[s.addr()], &input);
    r.assert_code(0);
    assert_eq!(count_lines(&r.stdout), 1_000_000);
    eprintln!("1e6 lines in {:?}", started.elapsed());
    assert!(eventually(WAIT, || s.output().len() == input.len()));
}

#[test]
fn lines_stream_as_they_are_typed() {
    // Standard input that stays open: each line's ack arrives before the
    // next line is written, so nothing waits for the end of input.
    let s = Server::start(&["127.0.0.1:0"]);
    let mut child = spawn_piped(sockclient_bin(), &[s.addr()]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        let _ = tx.send(l);
    });
    for i in 0..5 {
        stdin.write_all(format!("typed {i}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let ack = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("ack before more input");
        assert_eq!(ack, "Information Received\n");
    }
    drop(stdin);
    assert!(wait_child(&mut child, WAIT, &Lines::default()).success());
}

#[test]
fn a_server_that_never_acks_is_not_a_hang_with_ack_timeout() {
    let addr = fake(|mut s| {
        s.write_all(b"connect\n").unwrap();
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b);
        std::thread::sleep(Duration::from_secs(30));
    });
    let started = Instant::now();
    let r = run_client(&["--ack-timeout", "0.5", &addr], b"x\ny\n");
    r.assert_code(1);
    assert!(
        r.stderr
            .contains("2 of 2 sent lines were not acknowledged (no ack for 0.5 s (--ack-timeout))"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn retry_waits_for_a_server_that_is_starting() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let a = addr.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        Server::start(&[&a])
    });
    let r = run_client(&["--retry", "6", "-v", &addr], b"hello\n");
    let _server = starter.join().unwrap();
    r.assert_code(0);
    assert!(
        r.stderr
            .contains("connection refused; retry 1 of 6 in 0.1 s"),
        "{}",
        r.stderr
    );
    assert_eq!(r.out(), "Information Received\n");
}

#[test]
fn retry_after_a_busy_refusal() {
    let s = Server::start(&["--max-connections", "1", "127.0.0.1:0"]);
    let held = s.connect().greeted();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(held);
    });
    let r = run_client(&["--retry", "8", s.addr()], b"x\n");
    releaser.join().unwrap();
    r.assert_code(0);
    // Without --retry the refusal is final.
    let _held = s.connect().greeted();
    let r = run_client(&[s.addr()], b"x\n");
    r.assert_code(3);
}

#[test]
fn no_greeting_within_the_connect_timeout_is_exit_4() {
    let addr = fake(|s| {
        std::thread::sleep(Duration::from_secs(10));
        drop(s);
    });
    let t = Instant::now();
    let r = run_client(&["--connect-timeout", "300ms", &addr], b"x\n");
    r.assert_code(4);
    assert!(
        r.stderr.contains("no greeting came within 0.3 s"),
        "{}",
        r.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn wrong_greeting_is_exit_1_only_when_greeting_was_given() {
    let greet = |text: &'static [u8]| {
        fake(move |mut s| {
            s.write_all(text).unwrap();
            for _ in read_lines(&s, usize::MAX) {
                s.write_all(b"Information Received\n").unwrap();
            }
        })
    };
    let r = run_client(&[&greet(b"hello there\n")], b"x\n");
    assert_eq!(r.code(), 0, "any greeting is fine by default: {}", r.stderr);
    let r = run_client(&["--greeting", "connect", &greet(b"hello there\n")], b"x\n");
    r.assert_code(1);
    assert!(r.stderr.contains("unexpected greeting"), "{}", r.stderr);
    let r = run_client(
        &["--greeting", "hello there", &greet(b"hello there\r\n")],
        b"x\n",
    );
    r.assert_code(0);
}

#[test]
#[ignore = "needs localhost to resolve to both 127.0.0.1 and ::1"]
fn a_name_with_several_addresses_is_tried_in_turn() {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = ("localhost", 1)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    require(
        addrs.iter().any(|a: &std::net::SocketAddr| a.is_ipv4())
            && addrs.iter().any(|a| a.is_ipv6()),
        "localhost resolving to both 127.0.0.1 and ::1",
    );
    // Listen on one of them only; the client must get past the other.
    for listen in ["[::1]:0", "127.0.0.1:0"] {
        let s = Server::start(&[listen]);
        let port = s.addr().rsplit_once(':').unwrap().1;
        let r = run_client(&["localhost", port], b"x\n");
        assert_eq!(r.code(), 0, "{listen}: {}", r.stderr);
    }
}

#[test]
fn verbose_prints_greeting_and_summary() {
    let s = Server::start(&["127.0.0.1:0"]);
    let r = run_client(&["-v", s.addr()], b"1\n2\n3\n");
    assert_eq!(r.code(), 0);
    assert!(
        r.stderr.contains("sockclient: greeting: connect\n"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("sockclient: sent 3, acked 3, "),
        "{}",
        r.stderr
    );
}

#[test]
fn sigterm_half_closes_and_reports_the_owed_acks() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    // Against a server that acks the first line only.
    // It says when it has read all three lines: then the client has sent
    // them and waits for two acks.
    let (read_all, got_all) = std::sync::mpsc::channel();
    let addr = fake(move |mut s| {
        s.write_all(b"connect\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        s.write_all(b"Information Received\n").unwrap();
        for _ in 0..2 {
            l.clear();
            r.read_line(&mut l).unwrap();
        }
        read_all.send(()).unwrap();
        while r.read_line(&mut l).is_ok_and(|n| n > 0) {}
    });
    let mut child = spawn_piped(sockclient_bin(), &[&addr]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let err = Lines::collect(child.stderr.take().unwrap());
    stdin.write_all(b"one\n").unwrap();
    let mut ack = String::new();
    out.read_line(&mut ack).unwrap();
    assert_eq!(ack, "Information Received\n");
    stdin.write_all(b"two\nthree\n").unwrap();
    stdin.flush().unwrap();
    got_all.recv_timeout(WAIT).unwrap();
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let st = wait_child(&mut child, WAIT, &err);
    // Standard input is still open: the signal ended it, then the server
    // closed after the half-close, so no grace period was needed.
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(st.code(), Some(1));
    let msg = err.wait_for("not acknowledged");
    assert!(
        msg.contains("2 of 3 sent lines were not acknowledged"),
        "{msg}"
    );
}

/// A fake server on 127.0.0.1 that serves connections one after another:
/// the n-th accepted connection (from 0) goes to `behave(n, stream)`.
fn fake_many(count: usize, behave: impl Fn(usize, TcpStream) + Send + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for n in 0..count {
            let Ok((s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(WAIT)).unwrap();
            behave(n, s);
        }
    });
    addr
}

/// `resent R after K reconnect(s)` from the client's summary.
fn resent(stderr: &str) -> Option<(u64, u64)> {
    let rest = &stderr[stderr.rfind("resent ")? + "resent ".len()..];
    let mut words = rest.split_whitespace();
    let r = words.next()?.parse().ok()?;
    let _after = words.next()?;
    let k = words.next()?.trim_end_matches(',').parse().ok()?;
    Some((r, k))
}

#[test]
fn a_break_resends_the_unacked_lines_and_a_refusal_is_retried() {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = fake_many(3, move |n, mut s| match n {
        0 => {
            // Reads all three lines, acks the first, and breaks.
            s.write_all(b"connect\n").unwrap();
            let lines = read_lines(&s, 3);
            assert_eq!(lines.len(), 3);
            s.write_all(b"Information Received\n").unwrap();
        }
        1 => s.write_all(b"not connect: busy\n").unwrap(),
        _ => {
            s.write_all(b"connect\n").unwrap();
            let lines = read_lines(&s, usize::MAX);
            for _ in &lines {
                s.write_all(b"Information Received\n").unwrap();
            }
            tx.send(lines).unwrap();
        }
    });
    let r = run_client(&["--retry", "3", "--echo", "-v", &addr], b"a\nb\nc\n");
    r.assert_code(0);
    // Each line once, when its ack came, resent or not.
    assert_eq!(
        r.out(),
        "a\tInformation Received\nb\tInformation Received\nc\tInformation Received\n"
    );
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), ["b", "c"]);
    assert!(r.stderr.contains("refused by"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("sent 3, acked 3, resent 2 after 1 reconnect, "),
        "{}",
        r.stderr
    );
}

#[test]
fn kill_9_of_the_server_mid_stream_several_times_loses_nothing() {
    use std::collections::HashMap;
    use std::process::{Command, Stdio};
    const LINES: usize = 2_000_000;
    const KILLS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("s.sock").display());
    let input_path = dir.path().join("input");
    let mut input = Vec::with_capacity(LINES * 14);
    for i in 0..LINES {
        input.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    std::fs::write(&input_path, &input).unwrap();
    let mut servers = vec![Server::start(&[&addr])];
    let mut child = Command::new(sockclient_bin())
        .args(["-v", "--retry", "20", &addr])
        .stdin(std::fs::File::open(&input_path).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::collect(child.stderr.take().unwrap());
    let written = |servers: &[Server]| servers.iter().map(|s| s.output().len()).sum::<usize>();
    for k in 0..KILLS {
        // Kill when a share of the input has arrived, mid-stream.
        let mark = input.len() * (k + 1) / (KILLS + 2);
        assert!(
            eventually(WAIT, || written(&servers) >= mark),
            "stuck at {} of {} bytes; client stderr:\n{}",
            written(&servers),
            input.len(),
            err.text()
        );
        let last = servers.last_mut().unwrap();
        last.child.kill().unwrap();
        last.child.wait().unwrap();
        servers.push(Server::start(&[&addr]));
    }
    let st = wait_child(&mut child, Duration::from_secs(120), &err);
    assert_eq!(st.code(), Some(0), "{}", err.text());
    let summary = err.wait_for("sockclient: sent ");
    let (resent, reconnects) = resent(&summary).unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(reconnects, KILLS as u64, "{}", err.text());
    // Every input line is in the union of the outputs; the duplicates are
    // at most the lines in flight at the breaks (the ones resent). A
    // SIGKILL can stop the server's write to its file at a page boundary:
    // a killed server's output may end in part of a line (never acked, so
    // resent whole), which is the start of an input line.
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::with_capacity(LINES);
    let mut total = 0;
    for (i, s) in servers.iter().enumerate() {
        let out = s.output();
        let whole = match out.iter().rposition(|&b| b == b'\n') {
            Some(nl) if nl + 1 < out.len() => {
                let part = &out[nl + 1..];
                assert!(i < KILLS, "the last server's output ends mid-line");
                // Input lines are `line N`.
                let start_of_a_line = b"line ".starts_with(part)
                    || (part.starts_with(b"line ") && part[5..].iter().all(u8::is_ascii_digit));
                assert!(
                    start_of_a_line,
                    "server {i}'s output ends in {:?}, not the start of a line",
                    String::from_utf8_lossy(part)
                );
                &out[..=nl]
            }
            _ => &out[..],
        };
        for line in whole.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            *seen.entry(line.to_vec()).or_default() += 1;
            total += 1;
        }
    }
    assert_eq!(seen.len(), LINES, "lines missing from the outputs");
    let duplicates = (total - LINES) as u64;
    assert!(
        duplicates <= resent,
        "{duplicates} duplicates, {resent} resent: {}",
        err.text()
    );
    eprintln!("{KILLS} kills: {resent} lines resent, {duplicates} duplicates");
}

#[test]
fn retry_2_against_an_address_that_stays_down_is_exit_1_with_the_counts() {
    let mut s = Server::start(&["127.0.0.1:0"]);
    let mut child = spawn_piped(sockclient_bin(), &["--retry", "2", s.addr()]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let err = Lines::collect(child.stderr.take().unwrap());
    stdin.write_all(b"1\n2\n3\n4\n5\n").unwrap();
    stdin.flush().unwrap();
    for _ in 0..5 {
        let mut ack = String::new();
        out.read_line(&mut ack).unwrap();
        assert_eq!(ack, "Information Received\n");
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    stdin.write_all(b"6\n7\n8\n").unwrap();
    drop(stdin);
    let st = wait_child(&mut child, WAIT, &err);
    assert_eq!(st.code(), Some(1), "{}", err.text());
    // Lines 6-8 went to the dead connection, or to none.
    let m = err.wait_for("cannot connect to");
    assert!(
        m.contains("3 of 8 sent lines were not acknowledged (")
            || m.contains("3 lines read were never sent ("),
        "{m}"
    );
    assert!(m.contains("acked 5"), "{m}");
}

#[test]
fn memory_is_bounded_by_the_window_against_a_server_that_never_acks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const WINDOW: usize = 4 << 20;
    let received = Arc::new(AtomicUsize::new(0));
    let got = received.clone();
    let addr = fake(move |mut s| {
        s.write_all(b"connect\n").unwrap();
        let mut b = vec![0u8; 64 * 1024];
        while let Ok(n) = s.read(&mut b) {
            if n == 0 {
                break;
            }
            got.fetch_add(n, Ordering::SeqCst);
        }
    });
    let mut child = spawn_piped(
        sockclient_bin(),
        &["-q", "--window", "4M", "--ack-timeout", "2s", &addr],
    );
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let line = [b'x'; 99];
        let mut block = Vec::new();
        for _ in 0..10_000 {
            block.extend_from_slice(&line);
            block.push(b'\n');
        }
        // Up to 256 MiB, or until the client stops reading and exits.
        for _ in 0..256 {
            if stdin.write_all(&block).is_err() {
                return;
            }
        }
    });
    let err = Lines::collect(child.stderr.take().unwrap());
    let peak = peak_kib_until_exit(&mut child, &err);
    let st = wait_child(&mut child, WAIT, &err);
    feeder.join().unwrap();
    assert_eq!(st.code(), Some(1), "{}", err.text());
    let m = err.wait_for("not acknowledged");
    assert!(m.contains("(no ack for 2.0 s (--ack-timeout))"), "{m}");
    // Reading stopped at the window: the server got about that much.
    let got = received.load(Ordering::SeqCst);
    assert!(
        (WINDOW..2 * WINDOW).contains(&got),
        "server received {got} bytes"
    );
    // And the client's memory stayed near it.
    assert!(peak > 0 && peak < 24 * 1024, "peak RSS {peak} KiB");
    eprintln!("peak RSS {peak} KiB with a {} KiB window", WINDOW >> 10);
}

#[test]
fn help_is_written_for_the_client() {
    let r = run_client(&["--help"], b"");
    assert_eq!(r.code(), 0);
    let help = r.out();
    assert!(help.contains("sockclient [-q | -v]"), "{help}");
    assert!(help.contains("The greeting expected"), "{help}");
    assert!(help.contains("The ack line expected"), "{help}");
    assert!(help.contains("The text that marks a refusal"), "{help}");
    assert!(!help.contains("sent on connect"), "{help}");
    assert!(!help.contains("for every line received"), "{help}");
}

#[test]
fn completions_offer_no_file_names_after_value_flags() {
    // fish: every flag that takes a value says -f (no files), but the
    // TLS files.
    let fish = std::fs::read_to_string("completions/sockclient.fish").unwrap();
    let files = ["-l tls-ca ", "-l tls-cert ", "-l tls-key "];
    for line in fish.lines().filter(|l| l.contains(" -r")) {
        if files.iter().any(|f| line.contains(f)) {
            assert!(line.ends_with(" -F"), "{line}");
        } else {
            assert!(line.ends_with(" -f"), "{line}");
        }
    }
    assert!(fish.contains("-l window"), "{fish}");
}

#[test]
fn a_second_signal_ends_the_wait_for_acks_at_once() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    // A server that reads and never acks: the first SIGTERM waits for the
    // owed ack (up to two seconds), the second ends the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = fake(move |mut s| {
        s.write_all(b"connect\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        tx.send(line).unwrap();
        // Holds the connection open past the half-close, acking nothing.
        let _ = read_lines(&s, usize::MAX);
        std::thread::sleep(Duration::from_secs(10));
    });
    let mut child = spawn_piped(sockclient_bin(), &["-v", &addr]);
    let mut stdin = child.stdin.take().unwrap();
    let err = Lines::collect(child.stderr.take().unwrap());
    stdin.write_all(b"owed\n").unwrap();
    stdin.flush().unwrap();
    // Ready when the line reached the server: its ack is owed.
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "owed\n");
    let pid = Pid::from_raw(child.id() as i32);
    let t = Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    err.wait_for("input stopped; waiting up to 2 s for 1 owed acks");
    kill(pid, Signal::SIGTERM).unwrap();
    let st = wait_child(&mut child, WAIT, &err);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(st.code(), Some(1), "{}", err.text());
    let m = err.wait_for("not acknowledged");
    assert!(m.contains("1 of 1 sent lines were not acknowledged (stopped by SIGTERM; interrupted during the wait for acks)"), "{m}");
}
