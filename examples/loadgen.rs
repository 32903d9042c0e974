//! The load generator of `scripts/bench`. Every mode checks what it
//! measures: each greeting, each ack counted, nothing extra; a mode that
//! sees a wrong byte exits 1. Every loop is bounded in count and time.
//! Only loopback and Unix addresses are accepted.
//!
//!     loadgen throughput ADDR LINES            pipelined lines/s on one connection
//!     loadgen multi ADDR CLIENTS LINES         pipelined lines/s over many connections
//!     loadgen connrate ADDR THREADS SECONDS [v1|v2]
//!                                              connect, greeting, line, ack, close: per s;
//!                                              with v1 or v2, a PROXY header first
//!     loadgen hold ADDR N                      hold N served connections until stdin ends
//!     loadgen latency ADDR COUNT               one-line round trips: p50 and p99 in µs
//!     loadgen fsync-baseline FILE SECONDS      one fdatasync per line: lines/s
//!     loadgen tls-throughput CA ADDR LINES     throughput, over TLS
//!     loadgen tls-connrate CA ADDR THREADS SECONDS
//!                                              connrate, over TLS: a full
//!                                              handshake each (no resumption)
//!
//! Output is one line of `key=value` pairs. The TLS modes verify the
//! server's certificate against the CA file, for the name `localhost`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

const ACK: &[u8] = b"Information Received\n";
const LIMIT: Duration = Duration::from_secs(120);

fn die(msg: String) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1)
}

fn addr(s: &str) -> SocketAddr {
    let a: SocketAddr = s
        .parse()
        .unwrap_or_else(|_| die(format!("'{s}' is not IP:PORT")));
    if !a.ip().is_loopback() {
        die(format!(
            "{a} is not a loopback address; loadgen drives loopback only"
        ));
    }
    a
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| die(format!("missing or bad {what}")))
}

/// Connects and checks the greeting.
fn connect(a: SocketAddr) -> TcpStream {
    connect_with(a, None)
}

/// A PROXY header as a balancer sends it, naming a client 192.0.2.1:PORT.
fn proxy_header(version: &str, port: u16, to: SocketAddr) -> Vec<u8> {
    match version {
        "v1" => format!("PROXY TCP4 192.0.2.1 127.0.0.1 {port} {}\r\n", to.port()).into_bytes(),
        "v2" => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
            h.extend_from_slice(&[192, 0, 2, 1, 127, 0, 0, 1]);
            h.extend_from_slice(&port.to_be_bytes());
            h.extend_from_slice(&to.port().to_be_bytes());
            h
        }
        v => die(format!("'{v}' is not v1 or v2")),
    }
}

/// Connects, sends `header` (a PROXY header) if any, and checks the
/// greeting.
fn connect_with(a: SocketAddr, header: Option<&[u8]>) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(10))
        .unwrap_or_else(|e| die(format!("connect {a}: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    if let Some(h) = header {
        s.write_all(h)
            .unwrap_or_else(|e| die(format!("send the PROXY header: {e}")));
    }
    let mut g = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match (&s).read(&mut g[got..]) {
            Ok(0) => die("connection closed before the greeting".into()),
            Ok(n) => got += n,
            Err(e) => die(format!("greeting: {e}")),
        }
    }
    if &g != b"connect\n" {
        die(format!("bad greeting {:?}", String::from_utf8_lossy(&g)));
    }
    s
}

/// Reads exactly `n` acks, checking every byte.
fn read_acks(s: &TcpStream, n: u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let total = n * ACK.len() as u64;
    let mut seen = 0u64;
    while seen < total {
        let k = match (&*s).read(&mut buf) {
            Ok(0) => die(format!(
                "closed after {} of {n} acks",
                seen / ACK.len() as u64
            )),
            Ok(k) => k,
            Err(e) => die(format!(
                "reading acks: {e} after {} of {n}",
                seen / ACK.len() as u64
            )),
        };
        for (i, b) in buf[..k].iter().enumerate() {
            if *b != ACK[((seen + i as u64) % ACK.len() as u64) as usize] {
                die(format!("not an ack at byte {}", seen + i as u64));
            }
        }
        seen += k as u64;
        if seen > total {
            die("more acks than lines".into());
        }
    }
}

fn lines_buffer(n: u64, tag: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n as usize * 12);
    for i in 0..n {
        writeln!(v, "{tag}:{i}").unwrap();
    }
    v
}

/// Sends `n` lines pipelined and waits for every ack; returns seconds.
fn pipelined(a: SocketAddr, n: u64, tag: u64) -> f64 {
    let s = connect(a);
    let data = lines_buffer(n, tag);
    let w = s.try_clone().unwrap();
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        w.write_all(&data)
            .unwrap_or_else(|e| die(format!("send: {e}")));
    });
    read_acks(&s, n);
    writer.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let _ = s.shutdown(std::net::Shutdown::Write);
    secs
}

/// The line scripts/bench reads for the modes that count lines.
fn report_lines(lines: u64, secs: f64) {
    println!(
        "lines={lines} seconds={secs:.3} lines_per_s={:.0}",
        lines as f64 / secs
    );
}

/// A client configuration trusting the CA file; no session resumption,
/// so every connection is a full handshake.
fn tls_config(ca: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .unwrap_or_else(|e| die(format!("{ca}: {e:?}")))
    {
        roots
            .add(c.unwrap_or_else(|e| die(format!("{ca}: {e:?}"))))
            .unwrap_or_else(|e| die(format!("{ca}: {e}")));
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| die(format!("{e}")))
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

fn tls_connect(
    cfg: &Arc<rustls::ClientConfig>,
    a: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let s = TcpStream::connect_timeout(&a, Duration::from_secs(10))
        .unwrap_or_else(|e| die(format!("connect {a}: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    let c = rustls::ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap())
        .unwrap_or_else(|e| die(format!("{e}")));
    let mut t = rustls::StreamOwned::new(c, s);
    let mut g = [0u8; 8];
    t.read_exact(&mut g)
        .unwrap_or_else(|e| die(format!("TLS greeting: {e}")));
    if &g != b"connect\n" {
        die(format!("bad greeting {:?}", String::from_utf8_lossy(&g)));
    }
    t
}

/// Checks acks as they come: `seen` bytes so far.
fn check_acks(buf: &[u8], seen: &mut u64, total: u64) {
    for (i, b) in buf.iter().enumerate() {
        if *b != ACK[((*seen + i as u64) % ACK.len() as u64) as usize] {
            die(format!("not an ack at byte {}", *seen + i as u64));
        }
    }
    *seen += buf.len() as u64;
    if *seen > total {
        die("more acks than lines".into());
    }
}

/// `n` lines pipelined over TLS on one connection, one thread driving a
/// non-blocking socket (rustls' state cannot be shared without a lock);
/// returns seconds from the first write to the last ack.
fn tls_pipelined(cfg: &Arc<rustls::ClientConfig>, a: SocketAddr, n: u64) -> f64 {
    let t = tls_connect(cfg, a);
    let (mut tls, sock) = (t.conn, t.sock);
    sock.set_nonblocking(true).unwrap();
    let data = lines_buffer(n, 0);
    let total = n * ACK.len() as u64;
    let (mut sent, mut seen) = (0usize, 0u64);
    let mut plain = vec![0u8; 256 * 1024];
    let start = Instant::now();
    while seen < total {
        if start.elapsed() > LIMIT {
            die(format!(
                "only {} of {n} acks within {LIMIT:?}",
                seen / ACK.len() as u64
            ));
        }
        if sent < data.len() && !tls.wants_write() {
            let end = data.len().min(sent + 64 * 1024);
            sent += tls.writer().write(&data[sent..end]).unwrap();
        }
        let mut pfd = nix::libc::pollfd {
            fd: sock.as_raw_fd(),
            events: nix::libc::POLLIN
                | if tls.wants_write() {
                    nix::libc::POLLOUT
                } else {
                    0
                },
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { nix::libc::poll(&mut pfd, 1, 1000) };
        if pfd.revents & nix::libc::POLLOUT != 0 {
            match tls.write_tls(&mut &sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => die(format!("send: {e}")),
            }
        }
        if pfd.revents & (nix::libc::POLLIN | nix::libc::POLLHUP | nix::libc::POLLERR) != 0 {
            loop {
                match tls.read_tls(&mut &sock) {
                    Ok(0) => die(format!(
                        "closed after {} of {n} acks",
                        seen / ACK.len() as u64
                    )),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => die(format!("reading acks: {e}")),
                }
                tls.process_new_packets()
                    .unwrap_or_else(|e| die(format!("TLS: {e}")));
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => die("the server closed".into()),
                        Ok(k) => check_acks(&plain[..k], &mut seen, total),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => die(format!("reading acks: {e}")),
                    }
                }
            }
        }
    }
    start.elapsed().as_secs_f64()
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Runs `one` (a whole connection; given how many this thread has done)
/// on `threads` threads until `secs` (bounded by `LIMIT`) or a million
/// connections a thread, and reports the rate.
fn connrate(threads: u64, secs: f64, one: impl Fn(u64) + Clone + Send + 'static) {
    let stop = Instant::now() + Duration::from_secs_f64(secs.min(LIMIT.as_secs_f64()));
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let one = one.clone();
            std::thread::spawn(move || {
                let mut done = 0u64;
                while Instant::now() < stop && done < 1_000_000 {
                    one(done);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    let el = t.elapsed().as_secs_f64();
    println!(
        "connections={total} seconds={el:.3} conns_per_s={:.0}",
        total as f64 / el
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    match mode {
        "throughput" => {
            let n: u64 = arg(&args, 3, "LINES");
            let secs = pipelined(addr(&args[2]), n, 0);
            report_lines(n, secs);
        }
        "multi" => {
            let a = addr(&args[2]);
            let clients: u64 = arg(&args, 3, "CLIENTS");
            let n: u64 = arg(&args, 4, "LINES");
            let t = Instant::now();
            let hs: Vec<_> = (0..clients)
                .map(|c| std::thread::spawn(move || pipelined(a, n, c)))
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let total = clients * n;
            report_lines(total, secs);
        }
        "connrate" => {
            let a = addr(&args[2]);
            let threads: u64 = arg(&args, 3, "THREADS");
            let secs: f64 = arg(&args, 4, "SECONDS");
            let proxy = args.get(5).cloned();
            connrate(threads, secs, move |done| {
                let header = proxy
                    .as_deref()
                    .map(|v| proxy_header(v, 1024 + (done % 60000) as u16, a));
                let mut s = connect_with(a, header.as_deref());
                s.write_all(b"one line\n")
                    .unwrap_or_else(|e| die(format!("send: {e}")));
                read_acks(&s, 1);
                let _ = s.shutdown(std::net::Shutdown::Write);
                // Wait for the server's close, so nothing lingers.
                let mut b = [0u8; 64];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            });
        }
        "hold" => {
            raise_nofile();
            let a = addr(&args[2]);
            let n: usize = arg(&args, 3, "N");
            let mut held = Vec::with_capacity(n);
            let t = Instant::now();
            for _ in 0..n {
                if t.elapsed() > LIMIT {
                    die(format!("only {} connections within {LIMIT:?}", held.len()));
                }
                let mut s = connect(a);
                s.write_all(b"hello\n")
                    .unwrap_or_else(|e| die(format!("send: {e}")));
                read_acks(&s, 1);
                held.push(s);
            }
            println!("held={}", held.len());
            std::io::stdout().flush().unwrap();
            // Hold until the caller closes our stdin.
            let mut line = String::new();
            let _ = BufReader::new(std::io::stdin()).read_line(&mut line);
        }
        "latency" => {
            let a = addr(&args[2]);
            let count: usize = arg(&args, 3, "COUNT");
            let mut s = connect(a);
            let mut us = Vec::with_capacity(count);
            let mut buf = [0u8; 64];
            let t0 = Instant::now();
            for _ in 0..count {
                if t0.elapsed() > LIMIT {
                    break;
                }
                let t = Instant::now();
                s.write_all(b"ping\n").unwrap();
                let mut got = 0;
                while got < ACK.len() {
                    got += s
                        .read(&mut buf[got..])
                        .unwrap_or_else(|e| die(format!("{e}")));
                }
                if &buf[..ACK.len()] != ACK {
                    die("bad ack".into());
                }
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            us.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let p = |q: f64| us[((us.len() as f64 - 1.0) * q) as usize];
            println!(
                "count={} p50_us={:.1} p99_us={:.1}",
                us.len(),
                p(0.5),
                p(0.99)
            );
        }
        "fsync-baseline" => {
            let path = &args[2];
            let secs: f64 = arg(&args, 3, "SECONDS");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed().as_secs_f64() < secs.min(60.0) {
                writeln!(f, "line {n}").unwrap();
                f.sync_data().unwrap();
                n += 1;
            }
            let el = t.elapsed().as_secs_f64();
            report_lines(n, el);
        }
        "tls-throughput" => {
            let cfg = tls_config(&args[2]);
            let n: u64 = arg(&args, 4, "LINES");
            let secs = tls_pipelined(&cfg, addr(&args[3]), n);
            report_lines(n, secs);
        }
        "tls-connrate" => {
            let cfg = tls_config(&args[2]);
            let a = addr(&args[3]);
            let threads: u64 = arg(&args, 4, "THREADS");
            let secs: f64 = arg(&args, 5, "SECONDS");
            connrate(threads, secs, move |_| {
                let mut s = tls_connect(&cfg, a);
                s.write_all(b"one line\n")
                    .unwrap_or_else(|e| die(format!("send: {e}")));
                let mut ack = [0u8; ACK.len()];
                s.read_exact(&mut ack)
                    .unwrap_or_else(|e| die(format!("ack: {e}")));
                if ack != ACK {
                    die("bad ack".into());
                }
                // close_notify and the half-close; then the server's
                // close_notify, so nothing lingers.
                s.conn.send_close_notify();
                let _ = s.flush();
                let _ = s.sock.shutdown(std::net::Shutdown::Write);
                let mut b = [0u8; 64];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            });
        }
        _ => die("usage: see the comment at the top of examples/loadgen.rs".into()),
    }
}
