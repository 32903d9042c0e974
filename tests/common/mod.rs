//! Test helpers in the style of ripgrep's `tests/util.rs`: start the real
//! binaries, wait on readiness (a line on standard error, a connect that
//! succeeds), never on sleeps, and bound every wait. Every check that
//! fails says what ran and what it printed: a timeout carries the
//! process's standard error, a wrong exit status the command line, the
//! status, standard output and standard error.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(20);

/// How long `run_bin` lets a process run.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The server's ack line, as the tutorial's programs expect it. Written
/// out here, not taken from the library, so a change to the wire fails
/// the tests.
pub const ACK: &str = "Information Received\n";

pub fn sockserve_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockserve")
}

pub fn sockclient_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockclient")
}

/// Fails a test that cannot run here (a tool missing, not root). Such a
/// test is marked `#[ignore = "the reason"]`, so plain `cargo test`
/// shows it as ignored, and `scripts/test` runs it with
/// `--include-ignored` where the tools exist; run by hand anywhere else,
/// it fails loudly instead of passing without having tested anything.
#[track_caller]
pub fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "cannot run this test here: {what}; it is #[ignore]d for that \
         reason, and scripts/test runs it (as root) where the tools exist"
    );
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The path of `name` on PATH, if there is one.
pub fn which(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then_some(p)
}

/// `which(name)`, or fails the test through `require`.
#[track_caller]
pub fn require_tool(name: &str, package: &str) -> String {
    let p = which(name);
    require(
        p.is_some(),
        &format!("{name} is not installed (Debian package {package})"),
    );
    p.unwrap()
}

/// Everything a child wrote on one of its outputs, collected by a thread
/// as it comes: the exact bytes, and its complete lines for waiting on.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Captured>, Condvar)>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    /// The stream has ended (or failed).
    eof: bool,
}

impl Lines {
    pub fn collect(from: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            let mut from = from;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => 0,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let (m, c) = &*l.0;
                let mut g = m.lock().unwrap();
                g.bytes.extend_from_slice(&buf[..n]);
                g.eof |= n == 0;
                c.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
        lines
    }

    /// The complete lines so far (the last one too once the stream has
    /// ended), without their `\n` or `\r\n`, invalid UTF-8 replaced.
    pub fn all(&self) -> Vec<String> {
        Self::lines_of(&self.0 .0.lock().unwrap())
    }

    fn lines_of(c: &Captured) -> Vec<String> {
        c.bytes
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| c.eof || l.ends_with(b"\n"))
            .map(|l| {
                let l = l.strip_suffix(b"\n").unwrap_or(l);
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                String::from_utf8_lossy(l).into_owned()
            })
            .collect()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Exactly the bytes so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0 .0.lock().unwrap().bytes.clone()
    }

    /// Waits (at most `t`) for the end of the stream.
    pub fn wait_eof(&self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        let (m, c) = &*self.0;
        let mut g = m.lock().unwrap();
        while !g.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = c.wait_timeout(g, left).unwrap().0;
        }
        true
    }

    /// Waits for a line containing `pat`; panics with everything seen
    /// after `WAIT`.
    #[track_caller]
    pub fn wait_for(&self, pat: &str) -> String {
        self.wait_for_within(pat, WAIT).unwrap_or_else(|| {
            panic!(
                "no line with {pat:?} on stderr within {WAIT:?}; stderr:\n{}",
                self.text()
            )
        })
    }

    pub fn wait_for_within(&self, pat: &str, t: Duration) -> Option<String> {
        let deadline = Instant::now() + t;
        let (m, c) = &*self.0;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = Self::lines_of(&g).into_iter().find(|l| l.contains(pat)) {
                return Some(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = c.wait_timeout(g, left).unwrap().0;
        }
    }

    /// Checks that what was seen so far contains `pat`; panics with it
    /// all if not.
    #[track_caller]
    pub fn assert_contains(&self, pat: &str) -> &Self {
        let t = self.text();
        assert!(t.contains(pat), "no {pat:?} in stderr:\n{t}");
        self
    }

    /// Checks that what was seen so far does not contain `pat`.
    #[track_caller]
    pub fn assert_lacks(&self, pat: &str) -> &Self {
        let t = self.text();
        assert!(!t.contains(pat), "{pat:?} in stderr:\n{t}");
        self
    }
}

/// A running sockserve.
pub struct Server {
    pub child: Child,
    pub stderr: Lines,
    /// Addresses from its `listening on` lines, in order.
    pub addrs: Vec<String>,
    pub dir: tempfile::TempDir,
    /// Where its standard output goes, unless the test took it.
    pub out: PathBuf,
    /// Its command line, for failure messages.
    pub cmd: String,
}

/// How to start a server: `ServerBuilder::new(ARGS)`, then `.arg()`,
/// `.env()`, `.listeners(n)`, `.stdout()` and the like, then `.start()`.
pub struct ServerBuilder {
    cmd: Command,
    listeners: usize,
    stdout: Option<Stdio>,
}

impl ServerBuilder {
    /// `sockserve ARGS`.
    pub fn new(args: &[&str]) -> ServerBuilder {
        ServerBuilder::via(sockserve_bin()).args(args)
    }

    /// Another program that runs sockserve, such as `strace` or
    /// `systemd-socket-activate`: give it its arguments, sockserve's path
    /// among them, with `.arg()` and `.args()`.
    pub fn via(program: &str) -> ServerBuilder {
        ServerBuilder {
            cmd: Command::new(program),
            listeners: 1,
            stdout: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(a);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// How many `listening on` lines `start` waits for (1 unless told;
    /// 0 when the server says nothing, as with `-q`).
    pub fn listeners(mut self, n: usize) -> Self {
        self.listeners = n;
        self
    }

    /// Its standard output, instead of a file in its temporary folder.
    pub fn stdout(mut self, s: Stdio) -> Self {
        self.stdout = Some(s);
        self
    }

    /// Anything else on the command, such as a `pre_exec`.
    pub fn configure(mut self, f: impl FnOnce(&mut Command)) -> Self {
        f(&mut self.cmd);
        self
    }

    pub fn start(mut self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout");
        let stdout = match self.stdout.take() {
            Some(s) => s,
            None => Stdio::from(std::fs::File::create(&out).unwrap()),
        };
        let cmd = format!("{:?}", self.cmd);
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
        let stderr = Lines::collect(child.stderr.take().unwrap());
        // From here on a panic kills the child (Server's Drop).
        let mut server = Server {
            child,
            stderr,
            addrs: Vec::new(),
            dir,
            out,
            cmd,
        };
        let deadline = Instant::now() + WAIT;
        while server.addrs.len() < self.listeners {
            server.addrs = server
                .stderr
                .all()
                .iter()
                .filter_map(|l| l.split_once("listening on ").map(|(_, a)| a.to_string()))
                .collect();
            if let Ok(Some(st)) = server.child.try_wait() {
                panic!(
                    "{} exited early ({st}); stderr:\n{}",
                    server.cmd,
                    server.stderr.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening; stderr:\n{}",
                server.cmd,
                server.stderr.text()
            );
            server
                .stderr
                .wait_for_within("listening on", Duration::from_millis(50));
        }
        server
    }
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        ServerBuilder::new(args).start()
    }

    /// The first address it listens on.
    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for it to exit; panics (after killing it) if it does not.
    pub fn wait(&mut self) -> ExitStatus {
        wait_child(&mut self.child, WAIT, &self.stderr)
    }

    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }

    /// Waits for it to exit and checks its exit status; when it is
    /// wrong, panics with the command line, the status and stderr.
    #[track_caller]
    pub fn assert_exit(&mut self, code: i32) -> &mut Self {
        let st = self.wait();
        if st.code() != Some(code) {
            panic!(
                "\n\n==========\nserver exited with {st}, expected exit status {code}\n\n\
                 command: {}\n\nstderr:\n{}\n==========\n",
                self.cmd,
                self.stderr.text()
            );
        }
        self
    }

    /// SIGTERM, then `assert_exit(0)`.
    #[track_caller]
    pub fn stop_success(&mut self) -> &mut Self {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.assert_exit(0)
    }

    /// What it wrote to standard output so far.
    pub fn output(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap()
    }

    pub fn connect(&self) -> Peer {
        Peer::connect(self.addr())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, at most `t`; after that kills it and
/// panics with its stderr.
pub fn wait_child(child: &mut Child, t: Duration, stderr: &Lines) -> ExitStatus {
    wait_within(child, t).unwrap_or_else(|| {
        panic!(
            "process did not exit within {t:?}; stderr:\n{}",
            stderr.text()
        )
    })
}

/// Waits for `child` to exit, at most `t`; `None` (after killing and
/// reaping it) if it did not.
fn wait_within(child: &mut Child, t: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + t;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
/// A raw client socket, TCP or Unix, with bounded reads.
pub enum Peer {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Peer {
    pub fn connect(addr: &str) -> Peer {
        let p = if let Some(path) = addr.strip_prefix("unix:") {
            let a = match path.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap()
                }
                None => std::os::unix::net::SocketAddr::from_pathname(path).unwrap(),
            };
            Peer::Unix(
                UnixStream::connect_addr(&a).unwrap_or_else(|e| panic!("connect {addr}: {e}")),
            )
        } else {
            Peer::Tcp(TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}")))
        };
        p.set_timeout(WAIT);
        p
    }

    pub fn set_timeout(&self, t: Duration) {
        match self {
            Peer::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
            Peer::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    pub fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Peer::Tcp(s) => s.write_all(b),
            Peer::Unix(s) => s.write_all(b),
        }
    }

    /// Another handle on the same socket (for a writer thread).
    pub fn try_clone(&self) -> Peer {
        match self {
            Peer::Tcp(s) => Peer::Tcp(s.try_clone().unwrap()),
            Peer::Unix(s) => Peer::Unix(s.try_clone().unwrap()),
        }
    }

    pub fn half_close(&self) {
        let _ = match self {
            Peer::Tcp(s) => s.shutdown(Shutdown::Write),
            Peer::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    fn read_byte(&mut self) -> std::io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        let n = self.read(&mut b)?;
        Ok((n == 1).then_some(b[0]))
    }

    /// Reads one line with its `\n`; `None` at end of stream. Panics on a
    /// read timeout.
    pub fn line(&mut self) -> Option<String> {
        let mut v = Vec::new();
        loop {
            match self.read_byte() {
                Ok(Some(b)) => {
                    v.push(b);
                    if b == b'\n' {
                        return Some(String::from_utf8_lossy(&v).into_owned());
                    }
                }
                Ok(None) if v.is_empty() => return None,
                Ok(None) => return Some(String::from_utf8_lossy(&v).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                // A signal to the test process (a child's end) is not the
                // peer's doing: read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e} (after {:?})", String::from_utf8_lossy(&v)),
            }
        }
    }

    /// Reads everything up to end of stream.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        while let Some(l) = self.line() {
            s.push_str(&l);
        }
        s
    }

    /// Reads the greeting and checks it.
    pub fn greeted(mut self) -> Peer {
        assert_eq!(self.line().as_deref(), Some("connect\n"));
        self
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Peer::Tcp(s) => s.read(buf),
            Peer::Unix(s) => s.read(buf),
        }
    }
}

/// A finished run of a program (sockclient, sockserve, a tool): what it
/// printed and how it exited. The `assert_*` methods check it and, when
/// a check fails, panic with the command line, the status, stdout and
/// stderr, as ripgrep's test helpers do.
pub struct ClientRun {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The command line, for failure messages.
    pub cmd: String,
}

/// The name that says what it is: a run of any program.
pub type Run = ClientRun;

impl ClientRun {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with `what` and everything about this run.
    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "\n\n==========\n{what}\n\ncommand: {}\n\nstatus: {}\n\n\
             stdout:\n{}\n\nstderr:\n{}\n==========\n",
            self.cmd,
            self.status,
            self.out(),
            self.stderr
        )
    }

    /// Checks the exit status.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        if self.status.code() != Some(code) {
            self.fail(&format!("expected exit status {code}"));
        }
        self
    }

    /// Checks that it exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Checks that its stderr contains `pat`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, pat: &str) -> &Self {
        if !self.stderr.contains(pat) {
            self.fail(&format!("expected {pat:?} on stderr"));
        }
        self
    }

    /// Checks its stderr exactly.
    #[track_caller]
    pub fn assert_stderr(&self, want: &str) -> &Self {
        if self.stderr != want {
            self.fail(&format!("expected exactly {want:?} on stderr"));
        }
        self
    }

    /// Checks its stdout exactly.
    #[track_caller]
    pub fn assert_stdout(&self, want: &str) -> &Self {
        if self.stdout != want.as_bytes() {
            self.fail(&format!("expected exactly {want:?} on stdout"));
        }
        self
    }
}

/// Runs sockclient with `input` on standard input; bounded in time.
pub fn run_client(args: &[&str], input: &[u8]) -> ClientRun {
    run_bin(sockclient_bin(), args, input)
}

/// Starts `bin ARGS` with its standard input, output and error piped.
pub fn spawn_piped(bin: &str, args: &[&str]) -> Child {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"))
}

/// Runs `bin ARGS` with `input` on standard input, at most `RUN_LIMIT`.
pub fn run_bin(bin: &str, args: &[&str], input: &[u8]) -> ClientRun {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    run_command(cmd, input)
}

/// Runs `cmd` with `input` on standard input and its output and error
/// collected, at most `RUN_LIMIT`. If it runs longer, it is killed and
/// the panic shows what it printed until then.
pub fn run_command(mut cmd: Command, input: &[u8]) -> ClientRun {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {line}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let stderr = Lines::collect(child.stderr.take().unwrap());
    let status = wait_within(&mut child, RUN_LIMIT);
    // Whatever is still in the pipes, within one bound (a child of the
    // child may hold them open), and a short one after a timeout.
    let t = if status.is_some() {
        WAIT
    } else {
        Duration::from_millis(200)
    };
    let deadline = Instant::now() + t;
    for o in [&stdout, &stderr] {
        o.wait_eof(deadline.saturating_duration_since(Instant::now()));
    }
    let run = ClientRun {
        status: status.unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::from_raw(nix::libc::SIGKILL)
        }),
        stdout: stdout.bytes(),
        stderr: String::from_utf8_lossy(&stderr.bytes()).into_owned(),
        cmd: line,
    };
    if status.is_none() {
        run.fail(&format!("did not exit within {RUN_LIMIT:?}; killed"));
    }
    let _ = writer.join();
    run
}

/// A client that streams lines `c{tag} l{i}` (`Streamer::line`) on its
/// own connection, at most `window` of them unacked at a time (1: lock
/// step, a line and its ack; `usize::MAX`: as fast as the socket takes
/// them), and records which were acked: the k-th ack is for the k-th line.
/// It stops when the connection ends, at a line that is not an ack, or
/// when told (`stop`: it then half-closes and reads the acks still owed).
pub struct Streamer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Streamed>,
}

/// What a `Streamer` did.
pub struct Streamed {
    /// It was greeted (not when the server died before accepting it).
    pub greeted: bool,
    /// The lines acked, in order.
    pub acked: Vec<String>,
    /// How many lines it sent (all of them written to the socket).
    pub sent: usize,
}

impl Streamer {
    /// Connects here (panics if that fails), so the connection is made
    /// when this returns; reads the greeting and streams from threads of
    /// its own, so that many can start at once against a busy server. A
    /// greeting other than `connect` panics, in the thread (`join`).
    pub fn start(addr: &str, tag: usize, window: usize) -> Streamer {
        let p = Peer::connect(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || Self::run(p, tag, window, stop2));
        Streamer { stop, thread }
    }

    /// The `i`-th line of streamer `tag`, without its newline.
    pub fn line(tag: usize, i: usize) -> String {
        format!("c{tag} l{i}")
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for it to end (tell it to `stop`, or end the server first).
    pub fn join(self) -> Streamed {
        self.thread
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn run(p: Peer, tag: usize, window: usize, stop: Arc<AtomicBool>) -> Streamed {
        const MAX: usize = 1_000_000;
        let mut r = BufReader::new(p.try_clone());
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(_) if line == b"connect\n" => {}
            Ok(0) => return Streamed::ungreeted(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Streamed::ungreeted()
            }
            Ok(_) => panic!(
                "streamer {tag}: greeting {:?}",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!("streamer {tag}: no greeting: {e}"),
        }
        // acked count, and whether the reading side has ended.
        let state = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
        let mut w = p;
        let st = state.clone();
        let writer = std::thread::spawn(move || {
            let (m, c) = &*st;
            let mut sent = 0;
            while sent < MAX && !stop.load(Ordering::Relaxed) {
                let mut g = m.lock().unwrap();
                while !g.1 && sent - g.0 >= window && !stop.load(Ordering::Relaxed) {
                    g = c.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
                }
                if g.1 {
                    break;
                }
                let room = window - (sent - g.0);
                drop(g);
                let n = room.min(100).min(MAX - sent);
                if n == 0 {
                    continue;
                }
                let batch: String = (sent..sent + n)
                    .map(|i| Self::line(tag, i) + "\n")
                    .collect();
                if w.send(batch.as_bytes()).is_err() {
                    break;
                }
                sent += n;
            }
            w.half_close();
            sent
        });
        let (m, c) = &*state;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(_) if line == ACK.as_bytes() => {
                    m.lock().unwrap().0 += 1;
                    c.notify_all();
                }
                // The end, a reset, or a line that is not an ack.
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("streamer {tag}: read: {e}"),
            }
        }
        let acked = {
            let mut g = m.lock().unwrap();
            g.1 = true;
            c.notify_all();
            g.0
        };
        let sent = writer.join().unwrap();
        Streamed {
            greeted: true,
            acked: (0..acked).map(|i| Self::line(tag, i)).collect(),
            sent,
        }
    }
}

impl Streamed {
    fn ungreeted() -> Streamed {
        Streamed {
            greeted: false,
            acked: Vec::new(),
            sent: 0,
        }
    }
}

/// A port that was free a moment ago (for tools that want a number).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until `f` is true, at most `t`.
pub fn eventually(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Count of lines in bytes.
pub fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// A field of /proc/PID/status, in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    try_status_kib(pid, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A field of /proc/PID/status, in KiB, or `None` once the process is
/// gone.
pub fn try_status_kib(pid: i32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Waits (bounded by `WAIT`) for `child` to exit, and returns its peak
/// resident memory (VmHWM, KiB) as seen every 20 ms meanwhile.
pub fn peak_kib_until_exit(child: &mut Child, err: &Lines) -> u64 {
    let mut peak = 0;
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{}", err.text());
        if let Some(k) = try_status_kib(child.id() as i32, "VmHWM") {
            peak = peak.max(k);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// Open descriptors of a process.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Runs `cmd` with `fd` as its fd 3, inheritable, as systemd passes a
/// socket.
pub fn with_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 {
                nix::unistd::dup2(fd, 3)?;
            }
            nix::fcntl::fcntl(
                3,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            Ok(())
        });
    }
}

/// What a process's descriptors point at, for failure messages.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    format!("{}->{target}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The lines of a file (none if it is missing), without their newlines.
pub fn file_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The receipt, checked: every line in `acked` is a line of the output
/// file `out`. Names up to five that are not, after `what`.
#[track_caller]
pub fn assert_acked_were_written<S: AsRef<str>>(acked: &[S], out: &std::path::Path, what: &str) {
    let written: std::collections::HashSet<String> = file_lines(out).into_iter().collect();
    let missing: Vec<&str> = acked
        .iter()
        .map(AsRef::as_ref)
        .filter(|l| !written.contains(*l))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}acked but not written: {missing:?}"
    );
}

/// Makes closing `sock` a reset (SO_LINGER 0), as a client that aborts,
/// or one that closes with data unread, does.
pub fn linger_zero(sock: &impl std::os::fd::AsFd) {
    nix::sys::socket::setsockopt(
        sock,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
}
