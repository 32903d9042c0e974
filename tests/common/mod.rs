//! Test helpers: start the real binaries, wait on readiness (a line on
//! standard error, a connect that succeeds), never on sleeps, and bound
//! every wait. When a wait times out, the panic message carries the
//! server's standard error.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn sockserve_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockserve")
}

pub fn sockclient_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockclient")
}

/// Lines a child wrote on standard error, collected by a thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    pub fn collect(from: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                let (m, c) = &*l.0;
                m.lock().unwrap().push(line);
                c.notify_all();
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits for a line containing `pat`; panics with everything seen
    /// after `WAIT`.
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
            if let Some(l) = g.iter().find(|l| l.contains(pat)) {
                return Some(l.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = c.wait_timeout(g, left).unwrap().0;
        }
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
}

pub struct ServerBuilder {
    pub cmd: Command,
    pub listeners: usize,
    pub stdout: Option<Stdio>,
}

impl ServerBuilder {
    pub fn new(args: &[&str]) -> ServerBuilder {
        let mut cmd = Command::new(sockserve_bin());
        cmd.args(args);
        ServerBuilder {
            cmd,
            listeners: 1,
            stdout: None,
        }
    }

    pub fn listeners(mut self, n: usize) -> Self {
        self.listeners = n;
        self
    }

    pub fn stdout(mut self, s: Stdio) -> Self {
        self.stdout = Some(s);
        self
    }

    pub fn start(mut self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout");
        let stdout = match self.stdout.take() {
            Some(s) => s,
            None => Stdio::from(std::fs::File::create(&out).unwrap()),
        };
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockserve");
        let stderr = Lines::collect(child.stderr.take().unwrap());
        // From here on a panic kills the child (Server's Drop).
        let mut server = Server {
            child,
            stderr,
            addrs: Vec::new(),
            dir,
            out,
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
                    "sockserve exited early ({st}); stderr:\n{}",
                    server.stderr.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sockserve not listening; stderr:\n{}",
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

pub fn wait_child(child: &mut Child, t: Duration, stderr: &Lines) -> ExitStatus {
    let deadline = Instant::now() + t;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "process did not exit within {t:?}; stderr:\n{}",
                stderr.text()
            );
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

    pub fn half_close(&self) {
        let _ = match self {
            Peer::Tcp(s) => s.shutdown(Shutdown::Write),
            Peer::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    fn read_byte(&mut self) -> std::io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        let n = match self {
            Peer::Tcp(s) => s.read(&mut b)?,
            Peer::Unix(s) => s.read(&mut b)?,
        };
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

/// Runs sockclient with `input` on standard input; bounded in time.
pub struct ClientRun {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl ClientRun {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

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

pub fn run_bin(bin: &str, args: &[&str], input: &[u8]) -> ClientRun {
    let mut child = spawn_piped(bin, args);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut so = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let mut se = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = wait_child(&mut child, Duration::from_secs(60), &Lines::default());
    let _ = writer.join();
    let stdout = reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    ClientRun {
        status,
        stdout,
        stderr,
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
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
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
