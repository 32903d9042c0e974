//! Getting a connection: addresses, the connect timeout, retries with
//! back-off, and the greeting.
//!
//! Every wait here is bounded by `--connect-timeout` and wakes on SIGINT
//! and SIGTERM: connects are non-blocking (a Unix socket whose server has
//! a full backlog would otherwise block `connect(2)` for ever), the
//! greeting is read in short slices, and the back-off sleep is a wait on
//! [`Signals`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use memchr::memchr;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage};

use super::tls::{Handshake, TlsSock};
use super::{printable, Config, Signals, TICK};
use crate::diag::describe;
use crate::endpoint::Endpoint;
use crate::exit::{self, Failure};
use crate::protocol::trim_eol;

/// Longest greeting accepted.
const MAX_GREETING: usize = 64 * 1024;
/// First back-off delay; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// How often a Unix connect to a full backlog is tried again.
const BACKLOG_POLL: Duration = Duration::from_millis(20);

/// A connected socket, TCP, Unix or TLS. Reads and writes take `&self`,
/// so the writer thread and the ack reader share one socket.
#[derive(Debug)]
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsSock>),
}

impl Sock {
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
            Sock::Tls(s) => s.shutdown(how),
        }
    }

    /// Makes the close a reset (TCP, TLS), so that the server drops the
    /// partial line it holds rather than take it, at the end of the
    /// stream, for a whole one. A Unix socket has no reset: its close is
    /// an end of stream.
    pub fn abort(&self) -> io::Result<()> {
        let tcp = match self {
            Sock::Tcp(s) => s,
            Sock::Unix(_) => return Ok(()),
            Sock::Tls(s) => s.tcp(),
        };
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(tcp, nix::sys::socket::sockopt::Linger, &linger)
            .map_err(io::Error::from)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
            Sock::Tls(s) => s.set_read_timeout(t),
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
            Sock::Tls(s) => s.read(buf),
        }
    }

    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => (&*s).write_all(buf),
            Sock::Unix(s) => (&*s).write_all(buf),
            Sock::Tls(s) => s.write_all(buf),
        }
    }
}

/// A greeted connection.
pub struct Conn {
    pub sock: Sock,
    /// Bytes the server sent after its greeting (acks, early).
    pub leftover: Vec<u8>,
    pub greeting: Vec<u8>,
}

/// Why no connection came.
pub enum NoConn {
    /// SIGINT or SIGTERM (its number) came while connecting or waiting.
    Signal(i32),
    /// Every attempt allowed failed; the last failure.
    Failed(Failure),
}

/// Connects and reads the greeting; after a failed attempt (no connect,
/// no greeting, a refusal) tries again up to `--retry` times in a row,
/// waiting 0.1 s, then twice as long each time, up to 10 s. A greeting
/// other than the one `--greeting` asks for is not retried.
pub fn establish(cfg: &Config, signals: &Signals) -> Result<Conn, NoConn> {
    let mut delay = FIRST_DELAY;
    let mut failed = 0u32;
    loop {
        match attempt(cfg, signals) {
            Ok(c) => return Ok(c),
            Err(Attempt::Signal(s)) => return Err(NoConn::Signal(s)),
            Err(Attempt::Failed(f)) if f.code != exit::FAILURE && failed < cfg.retry => {
                failed += 1;
                if cfg.verbose {
                    crate::info!(
                        "{}; retry {failed} of {} in {:.1} s",
                        f.message,
                        cfg.retry,
                        delay.as_secs_f64()
                    );
                }
                if let Some(s) = signals.sleep(delay) {
                    return Err(NoConn::Signal(s));
                }
                delay = (delay * 2).min(MAX_DELAY);
            }
            Err(Attempt::Failed(f)) => return Err(NoConn::Failed(f)),
        }
    }
}

enum Attempt {
    Signal(i32),
    Failed(Failure),
}

fn attempt(cfg: &Config, signals: &Signals) -> Result<Conn, Attempt> {
    if let Some(s) = signals.first() {
        return Err(Attempt::Signal(s));
    }
    let ep = &cfg.endpoint;
    let sock = match (connect_any(cfg, signals)?, &cfg.tls) {
        (Sock::Tcp(tcp), Some(tls)) => {
            let conn = rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                .map_err(|e| {
                Attempt::Failed(Failure::new(
                    exit::NO_CONNECT,
                    format!(
                        "cannot start TLS with {ep}: {}",
                        crate::tls::describe_error(&e)
                    ),
                ))
            })?;
            match TlsSock::connect(tcp, conn, cfg.connect_timeout, signals) {
                Ok(s) => Sock::Tls(Box::new(s)),
                Err(Handshake::Signal(s)) => return Err(Attempt::Signal(s)),
                Err(Handshake::Failed(why)) => {
                    return Err(Attempt::Failed(Failure::new(
                        exit::NO_CONNECT,
                        format!("TLS handshake with {ep} failed: {why}"),
                    )))
                }
            }
        }
        (sock, _) => sock,
    };
    let no_greeting = |why: String| {
        Attempt::Failed(Failure::new(
            exit::NO_CONNECT,
            format!("connected to {ep}, but {why}"),
        ))
    };
    let mut inbox = Vec::new();
    let greeting = match read_greeting(&sock, &mut inbox, cfg.connect_timeout, signals) {
        Ok(Some(g)) => g,
        Ok(None) => return Err(no_greeting("it closed before its greeting".into())),
        Err(Greeting::Signal(s)) => return Err(Attempt::Signal(s)),
        Err(Greeting::TimedOut) => {
            // A TLS server waits for our handshake, as we wait for its
            // greeting.
            let hint = match (&sock, ep) {
                (Sock::Tcp(_), Endpoint::Tcp { .. }) => "; if the server speaks TLS, give --tls",
                _ => "",
            };
            return Err(no_greeting(format!(
                "no greeting came within {:.1} s{hint}",
                cfg.connect_timeout.as_secs_f64()
            )));
        }
        Err(Greeting::TooLong) => {
            return Err(no_greeting(format!(
                "its greeting is longer than {MAX_GREETING} bytes"
            )))
        }
        Err(Greeting::Io(e)) => {
            return Err(no_greeting(format!(
                "reading its greeting failed: {}",
                describe(&e)
            )))
        }
    };
    if cfg.texts.is_refusal(&greeting) {
        return Err(Attempt::Failed(Failure::new(
            exit::REFUSED,
            format!("refused by {ep}: {}", printable(&greeting)),
        )));
    }
    if cfg.strict_greeting && greeting != cfg.texts.greeting.as_bytes() {
        return Err(Attempt::Failed(Failure::new(
            exit::FAILURE,
            format!(
                "unexpected greeting from {ep}: '{}' (wanted '{}')",
                printable(&greeting),
                cfg.texts.greeting
            ),
        )));
    }
    Ok(Conn {
        sock,
        leftover: inbox,
        greeting,
    })
}

enum Greeting {
    Signal(i32),
    TimedOut,
    TooLong,
    Io(io::Error),
}

/// Reads one line, the greeting, within `timeout`; `None` if the server
/// closed first. Bytes after it stay in `inbox`.
fn read_greeting(
    sock: &Sock,
    inbox: &mut Vec<u8>,
    timeout: Duration,
    signals: &Signals,
) -> Result<Option<Vec<u8>>, Greeting> {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = memchr(b'\n', inbox) {
            let line = trim_eol(&inbox[..=i]).to_vec();
            inbox.drain(..=i);
            return Ok(Some(line));
        }
        if inbox.len() > MAX_GREETING {
            return Err(Greeting::TooLong);
        }
        if let Some(s) = signals.first() {
            return Err(Greeting::Signal(s));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Greeting::TimedOut);
        }
        sock.set_read_timeout(Some(left.min(TICK)))
            .map_err(Greeting::Io)?;
        match sock.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
            Err(e) if super::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Greeting::Io(e)),
        }
    }
}

/// Connects to the endpoint: each address of a name in turn, each bounded
/// by the connect timeout.
fn connect_any(cfg: &Config, signals: &Signals) -> Result<Sock, Attempt> {
    let ep = &cfg.endpoint;
    let cannot = |why: String| {
        Attempt::Failed(Failure::new(
            exit::NO_CONNECT,
            format!("cannot connect to {ep}: {why}"),
        ))
    };
    match ep {
        Endpoint::Tcp { .. } => {
            let addrs = ep.resolve().map_err(|e| cannot(describe(&e)))?;
            if addrs.is_empty() {
                return Err(cannot("the name has no addresses".into()));
            }
            let mut errors: Vec<(SocketAddr, String)> = Vec::new();
            for a in &addrs {
                let family = if a.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                match connect_nb(family, &SockaddrStorage::from(*a), cfg, signals) {
                    Ok(fd) => {
                        let s = TcpStream::from(fd);
                        s.set_nonblocking(false).map_err(|e| cannot(describe(&e)))?;
                        let _ = s.set_nodelay(true);
                        return Ok(Sock::Tcp(s));
                    }
                    Err(Connect::Signal(s)) => return Err(Attempt::Signal(s)),
                    Err(Connect::Failed(why)) => errors.push((*a, why)),
                }
            }
            // One line for the whole attempt, whatever the count of
            // addresses: each failure is said once.
            if errors.iter().all(|(_, w)| *w == errors[0].1) {
                let n = errors.len();
                let mut why = errors.swap_remove(0).1;
                if n > 1 {
                    why.push_str(&format!(" ({n} addresses tried)"));
                }
                Err(cannot(why))
            } else {
                let list: Vec<String> = errors.iter().map(|(a, w)| format!("{a}: {w}")).collect();
                Err(cannot(list.join(", ")))
            }
        }
        Endpoint::Unix(p) => {
            let addr = socket::UnixAddr::new(p.as_path()).map_err(|e| cannot(e.desc().into()))?;
            unix(&addr, cfg, signals, cannot)
        }
        Endpoint::Abstract(name) => {
            let addr = socket::UnixAddr::new_abstract(name).map_err(|e| cannot(e.desc().into()))?;
            unix(&addr, cfg, signals, cannot)
        }
    }
}

fn unix(
    addr: &socket::UnixAddr,
    cfg: &Config,
    signals: &Signals,
    cannot: impl Fn(String) -> Attempt,
) -> Result<Sock, Attempt> {
    match connect_nb(AddressFamily::Unix, addr, cfg, signals) {
        Ok(fd) => {
            let s = UnixStream::from(fd);
            s.set_nonblocking(false).map_err(|e| cannot(describe(&e)))?;
            Ok(Sock::Unix(s))
        }
        Err(Connect::Signal(s)) => Err(Attempt::Signal(s)),
        Err(Connect::Failed(why)) => Err(cannot(why)),
    }
}

enum Connect {
    Signal(i32),
    Failed(String),
}

/// A non-blocking connect, waited for at most the connect timeout, awake
/// to signals. A Unix socket with a full backlog answers `EAGAIN` at
/// once instead of queueing: that is tried again until the timeout.
fn connect_nb(
    family: AddressFamily,
    addr: &dyn SockaddrLike,
    cfg: &Config,
    signals: &Signals,
) -> Result<OwnedFd, Connect> {
    let io_err = |e: Errno| Connect::Failed(describe(&io::Error::from(e)));
    let timed_out = || {
        Connect::Failed(format!(
            "timed out after {:.1} s",
            cfg.connect_timeout.as_secs_f64()
        ))
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err)?;
    let deadline = Instant::now() + cfg.connect_timeout;
    loop {
        if let Some(s) = signals.first() {
            return Err(Connect::Signal(s));
        }
        match socket::connect(fd.as_raw_fd(), addr) {
            Ok(()) | Err(Errno::EISCONN) => return Ok(fd),
            Err(Errno::EAGAIN) if family == AddressFamily::Unix => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                if let Some(s) = signals.sleep(left.min(BACKLOG_POLL)) {
                    return Err(Connect::Signal(s));
                }
            }
            Err(Errno::EINPROGRESS) | Err(Errno::EINTR) | Err(Errno::EALREADY) => break,
            Err(e) => return Err(io_err(e)),
        }
    }
    // In progress: wait for writability in slices, looking at signals.
    loop {
        if let Some(s) = signals.first() {
            return Err(Connect::Signal(s));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let slice = left.min(TICK).as_millis().max(1) as i32;
        let mut pfd = nix::libc::pollfd {
            fd: fd.as_raw_fd(),
            events: nix::libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { nix::libc::poll(&mut pfd, 1, slice) };
        if r < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(io_err(e));
        }
        if r == 0 {
            continue;
        }
        return match socket::getsockopt(&fd, socket::sockopt::SocketError) {
            Ok(0) => Ok(fd),
            Ok(code) => Err(io_err(Errno::from_raw(code))),
            Err(e) => Err(io_err(e)),
        };
    }
}
