//! Hostile input and floods. Each test says what it sends, what goes
//! wrong, and the measurable criterion it passes on.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Round trips of one line on an open connection: the slowest, in ms.
fn worst_round_trip(p: &mut Peer, n: usize) -> f64 {
    let mut worst: f64 = 0.0;
    for _ in 0..n {
        let t = Instant::now();
        p.send(b"ping\n").unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
        worst = worst.max(t.elapsed().as_secs_f64() * 1000.0);
    }
    worst
}

/// Input: 1 GiB without a newline, in 1 MiB writes. Fault: a line with no
/// end. Pass: the server closes the connection after at most a few MiB
/// (socket buffers), its peak memory grows by less than 4 MiB (the
/// maximum line is 64 KiB), and a normal client's round trips stay under
/// 100 ms throughout.
#[test]
fn a_gibibyte_without_newline() {
    let s = Server::start(&["127.0.0.1:0"]);
    let before = status_kib(s.pid(), "VmHWM");
    let mut normal = s.connect().greeted();
    let addr = s.addr().to_string();
    let flood = std::thread::spawn(move || {
        let mut p = Peer::connect(&addr).greeted();
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..1024 {
            if p.send(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut worst: f64 = 0.0;
    while !flood.is_finished() {
        worst = worst.max(worst_round_trip(&mut normal, 10));
    }
    let sent = flood.join().unwrap();
    assert!(sent < 16 << 20, "server took {sent} bytes of one line");
    s.stderr.wait_for("closed (line too long)");
    let grew = status_kib(s.pid(), "VmHWM").saturating_sub(before);
    assert!(grew < 4096, "peak memory grew by {grew} KiB");
    assert!(worst < 100.0, "a normal client waited {worst:.1} ms");
    assert!(s.output().ends_with(b"ping\n"));
    eprintln!("figures: 1 GiB line: cut after {} KiB sent, peak +{grew} KiB, worst round trip {worst:.1} ms", sent >> 10);
}

/// Input: 500 clients that each send one byte a second and never a
/// newline. Fault: connections held open by trickles. Pass: all 500 are
/// closed by --idle-timeout 2 within 6 s, and a normal client is served
/// within 100 ms all along.
#[test]
fn five_hundred_trickling_clients_are_closed_at_the_idle_timeout() {
    let s = Server::start(&["--idle-timeout", "2", "127.0.0.1:0"]);
    let mut slow: Vec<Peer> = (0..500).map(|_| s.connect().greeted()).collect();
    let mut normal = s.connect().greeted();
    let t = Instant::now();
    let mut worst: f64 = 0.0;
    let mut open = slow.len();
    while open > 0 && t.elapsed() < Duration::from_secs(8) {
        open = 0;
        for p in slow.iter_mut() {
            if p.send(b"z").is_ok() {
                open += 1;
            }
        }
        worst = worst.max(worst_round_trip(&mut normal, 1));
        std::thread::sleep(Duration::from_millis(1000));
        let closed = s.stderr.text().matches("closed (idle timeout)").count();
        if closed == 500 {
            break;
        }
    }
    assert!(
        eventually(Duration::from_secs(6).saturating_sub(t.elapsed()), || s
            .stderr
            .text()
            .matches("closed (idle timeout)")
            .count()
            == 500),
        "closed: {}",
        s.stderr.text().matches("closed (idle timeout)").count()
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(worst < 100.0, "normal client waited {worst:.1} ms");
    eprintln!(
        "figures: 500 trickling clients closed after {:.1} s, worst round trip {worst:.1} ms",
        t.elapsed().as_secs_f64()
    );
}

/// Input: 400 connections at once against --max-connections 50. Fault: a
/// connection flood. Pass: exactly 50 are greeted and 350 refused with
/// `not connect: server busy`; afterwards a client is served and the
/// server holds no more descriptors than before the flood.
#[test]
fn connection_flood_past_the_limit() {
    let s = Server::start(&["--max-connections", "50", "127.0.0.1:0"]);
    let mut probe = s.connect().greeted();
    probe.send(b"before\n").unwrap();
    assert_eq!(probe.line().as_deref(), Some(ACK));
    drop(probe);
    assert!(eventually(WAIT, || s
        .stderr
        .text()
        .contains("closed (client EOF)")));
    let fds_before = fd_count(s.pid());
    let mut peers: Vec<Peer> = (0..400).map(|_| s.connect()).collect();
    let (mut greeted, mut refused) = (0, 0);
    for p in peers.iter_mut() {
        match p.line().as_deref() {
            Some("connect\n") => greeted += 1,
            Some("not connect: server busy\n") => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((greeted, refused), (50, 350));
    drop(peers);
    assert!(
        eventually(WAIT, || fd_count(s.pid()) <= fds_before),
        "{} fds after the flood, {fds_before} before",
        fd_count(s.pid())
    );
    eprintln!(
        "figures: flood: {greeted} greeted, {refused} refused, fds {fds_before} before and after"
    );
    let mut after = s.connect().greeted();
    after.send(b"after\n").unwrap();
    assert_eq!(after.line().as_deref(), Some(ACK));
}

/// Input: a client pushes 64 MiB of lines while the server's standard
/// output is a pipe nobody reads. Fault: an output that does not drain.
/// Pass: acks stop (fewer than 200 lines acked while the pipe is full:
/// a line is acked only once it is written), the server's memory stays
/// under 32 MiB of growth, and once the pipe is read every line is
/// written and acked.
#[test]
fn a_reader_that_stops_reading_holds_acks_and_bounds_memory() {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let s = ServerBuilder::new(&["127.0.0.1:0"])
        .stdout(writer.into())
        .start();
    let before = status_kib(s.pid(), "VmRSS");
    let addr = s.addr().to_string();
    let total = 64 * 1024;
    let line = format!("{}\n", "q".repeat(1023));
    let acked = Arc::new(AtomicUsize::new(0));
    let count = acked.clone();
    let pusher = std::thread::spawn(move || {
        let mut p = Peer::connect(&addr).greeted();
        let mut w = p.try_clone();
        let writer = std::thread::spawn(move || {
            for _ in 0..total {
                w.send(line.as_bytes()).unwrap();
            }
        });
        while count.load(Ordering::SeqCst) < total {
            match p.line() {
                Some(l) if l == ACK => count.fetch_add(1, Ordering::SeqCst),
                other => panic!("{other:?} after {} acks", count.load(Ordering::SeqCst)),
            };
        }
        writer.join().unwrap();
        count.load(Ordering::SeqCst)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let grew = status_kib(s.pid(), "VmRSS").saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "memory grew {grew} KiB with a blocked output"
    );
    let held = acked.load(Ordering::SeqCst);
    assert!(
        held < 200,
        "{held} lines acked while the output was blocked"
    );
    assert!(
        !pusher.is_finished(),
        "all acked while the output was blocked"
    );
    eprintln!("figures: blocked output: memory +{grew} KiB while a client pushed 64 MiB");
    // Now read the output: everything gets written, then acked.
    let drain = std::thread::spawn(move || {
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = reader.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += count_lines(&buf[..k]);
        }
        n
    });
    assert_eq!(pusher.join().unwrap(), total);
    drop(s);
    assert_eq!(drain.join().unwrap(), total);
}

/// Input: 300 connections with `--prefix-peer`. First each streams
/// 256 KiB of 128-byte lines while the server's standard output is read
/// (so its reads grow to full size), then the output is no longer read
/// and each streams 2-byte lines until the server stops taking them.
/// Fault: the prefix (16 bytes here) makes the batch a read hands to the
/// sink up to 9 times the bytes read; it must count against the
/// per-connection bound. Pass: once every connection is stalled, the
/// server's memory grew by less than 160 KiB per connection.
#[test]
fn prefixed_short_lines_with_a_stalled_output_stay_bounded() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    const CONNS: usize = 300;
    const LONG: usize = 128;
    const FIRST: usize = 256 << 10;
    let (mut reader, writer) = std::io::pipe().unwrap();
    let s = ServerBuilder::new(&["--prefix-peer", "127.0.0.1:0"])
        .stdout(writer.into())
        .start();
    let before = status_kib(s.pid(), "VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicUsize::new(0));
    let (st, dr) = (stop.clone(), drained.clone());
    // Reads the output until told to stop, then keeps the pipe open.
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while !st.load(Ordering::Relaxed) {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => dr.fetch_add(count_lines(&buf[..n]), Ordering::Relaxed),
            };
        }
        reader
    });
    let mut peers: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let t = TcpStream::connect(s.addr()).unwrap();
            nix::sys::socket::setsockopt(&t, nix::sys::socket::sockopt::SndBuf, &FIRST).unwrap();
            t.set_read_timeout(Some(WAIT)).unwrap();
            Peer::Tcp(t.try_clone().unwrap()).greeted();
            t.set_nonblocking(true).unwrap();
            t
        })
        .collect();
    let write = |p: &mut TcpStream, b: &[u8]| match p.write(b) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("write: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // Phase 1: long lines, read out; wait until all of them are out.
    let long = format!("{}\n", "l".repeat(LONG - 1)).repeat(FIRST / LONG);
    let mut at = vec![0usize; CONNS];
    while at.iter().any(|&a| a < long.len()) {
        for (p, a) in peers.iter_mut().zip(at.iter_mut()) {
            *a += write(p, &long.as_bytes()[*a..]);
        }
        assert!(Instant::now() < deadline, "phase 1 took too long");
    }
    while drained.load(Ordering::Relaxed) < CONNS * FIRST / LONG {
        assert!(Instant::now() < deadline, "phase 1 output not read out");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    // Phase 2: short lines until no connection takes a byte for 10
    // rounds in a row (the server has stopped reading every one).
    let short = b"x\n".repeat(32 << 10);
    let (mut quiet, mut sent) = (0, 0usize);
    while quiet < 10 {
        assert!(Instant::now() < deadline, "the server kept reading");
        let round: usize = peers.iter_mut().map(|p| write(p, &short)).sum();
        sent += round;
        quiet = if round == 0 { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(20));
    }
    let grew = status_kib(s.pid(), "VmRSS").saturating_sub(before);
    let per = grew / CONNS as u64;
    eprintln!(
        "figures: {CONNS} prefixed connections, stalled output: {} KiB of short lines sent, memory +{grew} KiB, {per} KiB per connection",
        sent >> 10
    );
    assert!(per < 160, "{per} KiB per connection");
    drop(peers);
    drop(drain.join().unwrap());
}

/// Input: 200,000 lines in one stream with `--prefix-peer`, so that each
/// read is cut into several prefixed batches. Pass: every line is
/// written once, in order, with its prefix, and acked.
#[test]
fn prefixed_batches_write_and_ack_every_line_in_order() {
    let mut s = Server::start(&["--prefix-peer", "127.0.0.1:0"]);
    let input: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    let r = run_client(&["-q", s.addr()], input.as_bytes());
    r.assert_code(0);
    assert!(s.stop().success());
    let out = String::from_utf8(s.output()).unwrap();
    let mut n = 0;
    for (i, line) in out.lines().enumerate() {
        let (peer, text) = line.split_once('\t').expect(line);
        assert!(peer.starts_with("127.0.0.1:"), "{line}");
        assert_eq!(text, i.to_string());
        n += 1;
    }
    assert_eq!(n, 200_000);
}
