//! The server: accept loops, the connection limit, signals, the drain, and
//! the output sink every connection commits to.
//!
//! [`run`] takes sockets that are already open (bound by us, inherited from
//! systemd, or a test's `127.0.0.1:0`), so they all travel the same road.
//!
//! Shutdown follows mini-redis: a `watch` channel carries the phase
//! (running, draining, abort) to every accept loop and connection, and each
//! connection task holds a clone of an `mpsc::Sender` that it drops when it
//! ends, so the server knows every connection is done when `recv()` on the
//! other end returns `None`.

pub mod access;
mod conn;
pub mod sink;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::diag::describe;
use crate::listen::{Connection, Listener, StdListener, StdStream};
use crate::protocol::Texts;
pub use access::Access;
pub use sink::Output;
use sink::Sink;

/// Everything the server needs to know, from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub texts: Texts,
    /// Longest line accepted, in bytes, without its line ending.
    pub max_line: usize,
    /// Connections served at once; the next one is refused.
    pub max_connections: usize,
    /// Close a connection that sends no complete line for this long.
    pub idle_timeout: Option<Duration>,
    /// How long a drain may take before the remaining connections are cut.
    pub drain_timeout: Duration,
    pub output: Output,
    /// Ack only after `fdatasync` of the output.
    pub fsync: bool,
    /// Write `PEER<TAB>` before each received line.
    pub prefix_peer: bool,
    /// Who may connect.
    pub access: Access,
}

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Listeners closed; connections finish what they have.
    Draining,
    /// Connections close now.
    Abort,
}

/// Counters for the log and `STATUS=`.
#[derive(Default)]
struct Stats {
    open: AtomicU64,
    refused: AtomicU64,
}

/// What every connection task shares.
struct Shared {
    cfg: Arc<Config>,
    sink: Sink,
    stats: Stats,
    /// Many ack lines in a row, so that acking n lines is one write.
    ack_block: Arc<[u8]>,
    ack_len: usize,
}

/// The exit status of a server run: 0 clean stop, 1 runtime failure.
pub type ExitStatus = u8;

/// Serves the listeners and the already-accepted connections until a
/// signal stops it, or, with no listeners, until the connections are done.
/// Call it from the main thread, after inherited sockets were taken.
pub fn run(cfg: Config, listeners: Vec<Listener>, connections: Vec<Connection>) -> ExitStatus {
    let (failed_tx, failed_rx) = watch::channel(false);
    let sink = match Sink::start(cfg.output.clone(), cfg.fsync, failed_tx) {
        Ok(s) => s,
        Err(e) => {
            crate::error!("{e}");
            return 1;
        }
    };
    let signals = match signals() {
        Ok(s) => s,
        Err(e) => {
            crate::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::error!("cannot start the runtime: {}", describe(&e));
            return 1;
        }
    };
    let shared = Arc::new(Shared {
        ack_len: cfg.texts.ack_line().len(),
        ack_block: cfg.texts.ack_block(1024).into(),
        cfg: Arc::new(cfg),
        sink,
        stats: Stats::default(),
    });
    let status = rt.block_on(serve(shared, listeners, connections, signals, failed_rx));
    rt.shutdown_timeout(Duration::from_millis(100));
    status
}

/// The signals we act on, forwarded from a signal-hook thread.
fn signals() -> io::Result<mpsc::UnboundedReceiver<i32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

fn to_tokio(l: StdListener) -> io::Result<AnyListener> {
    Ok(match l {
        StdListener::Tcp(l) => {
            l.set_nonblocking(true)?;
            AnyListener::Tcp(TcpListener::from_std(l)?)
        }
        StdListener::Unix(l) => {
            l.set_nonblocking(true)?;
            AnyListener::Unix(UnixListener::from_std(l)?)
        }
    })
}

fn status_line(shared: &Shared) -> String {
    format!(
        "{} connections open, {} lines received, {} refused",
        shared.stats.open.load(Ordering::Relaxed),
        shared.sink.lines.load(Ordering::Relaxed),
        shared.stats.refused.load(Ordering::Relaxed)
    )
}

async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    connections: Vec<Connection>,
    mut signals: mpsc::UnboundedReceiver<i32>,
    mut failed: watch::Receiver<bool>,
) -> ExitStatus {
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(shared.cfg.max_connections));
    let single = listeners.is_empty();

    // Socket files we created stay until the very end.
    let mut socket_files = Vec::new();
    for l in listeners {
        socket_files.extend(l.path);
        let name = l.name;
        let listener = match to_tokio(l.socket) {
            Ok(x) => x,
            Err(e) => {
                crate::error!("cannot serve {name}: {}", describe(&e));
                return 1;
            }
        };
        crate::info!("listening on {name}");
        tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            phase_rx.clone(),
            limit.clone(),
            done_tx.clone(),
        ));
    }
    for c in connections {
        let accepted = match c.stream {
            StdStream::Tcp(s) => s
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(s))
                .map(|s| (s.peer_addr().ok(), Accepted::Tcp(s))),
            StdStream::Unix(s) => s
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(s))
                .map(|s| (None, Accepted::Unix(s))),
        };
        match accepted {
            Ok((addr, stream)) => admit(stream, addr, &shared, &phase_rx, &limit, &done_tx),
            Err(e) => {
                crate::error!(
                    "cannot serve the connection on {}: {}",
                    c.name,
                    describe(&e)
                );
                return 1;
            }
        }
    }
    drop(done_tx);

    if let Some(every) = crate::notify::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                crate::notify::watchdog();
                tokio::time::sleep(every).await;
            }
        });
    }
    crate::notify::ready(&status_line(&shared));

    let mut exit = 0;
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_status = String::new();
    let mut drain_deadline = None;
    loop {
        let deadline = drain_deadline;
        tokio::select! {
            s = signals.recv() => match s {
                Some(signal_hook::consts::SIGHUP) => shared.sink.reopen(),
                Some(_) if drain_deadline.is_none() => {
                    crate::info!("draining: listeners closed, finishing open connections (at most {:.1} s)", shared.cfg.drain_timeout.as_secs_f64());
                    let _ = phase_tx.send(Phase::Draining);
                    crate::notify::stopping(&format!("draining; {}", status_line(&shared)));
                    drain_deadline = Some(tokio::time::Instant::now() + shared.cfg.drain_timeout);
                }
                Some(_) => {
                    crate::info!("second signal: closing all connections now");
                    break;
                }
                None => break,
            },
            r = failed.wait_for(|f| *f) => {
                if r.is_ok() {
                    exit = 1;
                    break;
                }
            }
            _ = done_rx.recv(), if single || drain_deadline.is_some() => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                crate::info!("drain timeout: closing the remaining connections");
                break;
            }
            _ = status_tick.tick() => {
                let s = status_line(&shared);
                if s != last_status {
                    crate::notify::status(&s);
                    last_status = s;
                }
            }
        }
    }
    let _ = phase_tx.send(Phase::Abort);
    // Connections close at once on Abort; give them a moment to say so.
    let _ = tokio::time::timeout(Duration::from_secs(1), done_rx.recv()).await;
    crate::debug!("stopped: {}", status_line(&shared));
    drop(socket_files);
    exit
}

/// Accepts until the drain begins; the listener closes when this returns.
async fn accept_loop(
    listener: AnyListener,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    limit: Arc<Semaphore>,
    done: mpsc::Sender<()>,
) {
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
            r = accept(&listener) => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                if !backoff.is_zero() {
                    crate::info!("accepting again");
                    backoff = Duration::ZERO;
                }
                x
            }
            Err(e) if is_out_of_resources(&e) => {
                if backoff.is_zero() {
                    crate::warn!(
                        "cannot accept: {}; backing off until descriptors free up",
                        describe(&e)
                    );
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::select! {
                    _ = phase.wait_for(|p| *p != Phase::Running) => return,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
            Err(e) => {
                crate::debug!("accept: {}", describe(&e));
                continue;
            }
        };
        admit(stream, peer, &shared, &phase, &limit, &done);
    }
}

/// Serves an accepted connection in a task of its own, or refuses it: a
/// peer that is not allowed, or one past the connection limit.
fn admit(
    stream: Accepted,
    addr: Option<SocketAddr>,
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
    limit: &Arc<Semaphore>,
    done: &mpsc::Sender<()>,
) {
    let peer = crate::endpoint::peer_name(addr);
    let access = &shared.cfg.access;
    let allowed = match (&stream, addr) {
        (Accepted::Tcp(_), Some(a)) => access.tcp_allowed(a.ip()),
        (Accepted::Unix(s), _) if access.checks_unix() => s
            .peer_cred()
            .is_ok_and(|c| access.unix_allowed(c.uid(), c.gid())),
        _ => true,
    };
    let reason = if !allowed {
        "not allowed"
    } else {
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let (shared, phase, done) = (shared.clone(), phase.clone(), done.clone());
                tokio::spawn(async move {
                    match stream {
                        Accepted::Tcp(s) => conn::serve(s, peer, shared, phase, permit).await,
                        Accepted::Unix(s) => conn::serve(s, peer, shared, phase, permit).await,
                    }
                    // The drain waits for every task to drop this.
                    drop(done);
                });
                return;
            }
            Err(_) => "server busy",
        }
    };
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    crate::info!("{peer}: refused: {reason}");
    stream.refuse(&shared.cfg.texts.refusal_line(Some(reason)));
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Accepted {
    /// Sends the refusal without waiting (it fits any fresh socket buffer)
    /// and closes.
    fn refuse(self, line: &[u8]) {
        let _ = match &self {
            Accepted::Tcp(s) => s.try_write(line),
            Accepted::Unix(s) => s.try_write(line),
        };
    }
}

async fn accept(l: &AnyListener) -> io::Result<(Accepted, Option<SocketAddr>)> {
    match l {
        AnyListener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            Ok((Accepted::Tcp(s), Some(a)))
        }
        AnyListener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Accepted::Unix(s), None))
        }
    }
}

fn is_out_of_resources(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Raises the soft open-file limit to the hard limit (as Go's runtime
/// does) and returns the soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Descriptors the server needs besides its connections: standard streams,
/// the output, the runtime's own, the signal pipe, a margin.
pub const RESERVED_FDS: u64 = 32;
