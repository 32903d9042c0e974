//! The server: accept loops, the connection limit, signals, the drain, and
//! the output sink every connection commits to.
//!
//! [`start`] is all of sockserve after its command line: it takes the
//! inherited sockets ([`Sources`]), opens the output, binds, fits the
//! config ([`Config::new`]) and calls [`run`], which takes sockets that are already open (bound by us,
//! inherited from systemd, or a test's `127.0.0.1:0`), so they all travel
//! the same road. Inside, an `Acceptor` admits connections and a
//! `Supervisor` decides when the server stops.
//!
//! Shutdown follows mini-redis: a `watch` channel carries the phase
//! (running, draining, abort) to every accept loop and connection, and each
//! connection task holds a clone of an `mpsc::Sender` that it drops when it
//! ends, so the server knows every connection is done when `recv()` on the
//! other end returns `None`.

pub mod access;
mod conn;
pub mod format;
pub mod journal;
pub mod proxy;
pub mod sink;
mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::cli::{RecordFormat, ServeArgs};
use crate::diag::describe;
use crate::exit::Failure;
use crate::listen::{SocketFile, Sources, StdListener, StdStream, Wanted};
use crate::peer::{Cred, Peer};
use crate::protocol::Texts;
pub use access::Access;
pub use format::Format;
use ipnet::IpNet;
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
    /// What each line becomes: plain, JSON, a journal entry.
    pub format: Format,
    /// Who may connect.
    pub access: Access,
    /// Send clients nothing: no greeting, no acks, no refusal text.
    pub receive_only: bool,
    /// TCP peers in these networks must begin with a PROXY protocol
    /// header; with any here, other TCP peers are refused.
    pub proxy_protocol: Vec<IpNet>,
    /// Connections served at once from one source address, at most.
    pub max_per_source: Option<usize>,
    /// Speak TLS on every TCP connection (`--tls-cert`); reloaded on
    /// SIGHUP.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl Config {
    /// The config for these arguments and sockets: `--max-connections` is
    /// fitted to the descriptor limit (raised first).
    pub fn new(args: &ServeArgs, sources: &Sources, output: Output, format: Format) -> Config {
        let tcp = sources
            .listeners
            .iter()
            .filter(|l| matches!(l.socket, StdListener::Tcp(_)))
            .map(|l| l.name.as_str())
            .chain(
                sources
                    .connections
                    .iter()
                    .filter(|c| matches!(c.stream, StdStream::Tcp(_)))
                    .map(|c| c.name.as_str()),
            )
            .collect::<Vec<_>>();
        if !args.proxy_protocol.is_empty() && tcp.is_empty() {
            crate::warn!(
                "--proxy-protocol applies to TCP connections only, and sockserve serves none: it has no effect"
            );
        }
        if args.access().checks_unix() && !tcp.is_empty() {
            crate::warn!(
                "--allow-uid and --allow-gid apply to Unix peers only: TCP clients on {} are not checked by them (use --allow and --deny for those)",
                tcp.join(", ")
            );
        }
        Config {
            texts: args.texts.texts(),
            max_line: args.max_line,
            max_connections: fit_to_descriptors(args.max_connections, sources.listeners.len()),
            idle_timeout: Some(args.idle_timeout).filter(|d| !d.is_zero()),
            drain_timeout: args.drain_timeout,
            output,
            fsync: args.fsync,
            prefix_peer: args.prefix_peer,
            format,
            access: args.access(),
            receive_only: args.receive_only,
            proxy_protocol: args.proxy_protocol.clone(),
            max_per_source: args.max_per_source,
            tls: None,
        }
    }

    /// Where received lines go and what they become: the journal,
    /// natively, when asked (`--journal`) or when the stream lines would
    /// go to is the journal's (`JOURNAL_STREAM`): client bytes never go
    /// through that stream, where journald reads `<N>` prefixes and cuts
    /// lines. Else `-o`, or standard error when standard output is the
    /// connection (inetd), else standard output. `--fsync` is checked
    /// against it.
    pub fn output(args: &ServeArgs, inetd: bool) -> Result<(Output, Format), Failure> {
        use std::os::fd::AsFd;
        // Inetd: the connection is standard output; lines go to standard
        // error.
        let stream_is_journal = || {
            if inetd {
                crate::diag::is_journal_stream(io::stderr().as_fd())
            } else {
                crate::diag::is_journal_stream(io::stdout().as_fd())
            }
        };
        if args.journal || (args.output.is_none() && stream_is_journal()) {
            if args.prefix_peer || args.format != RecordFormat::Plain {
                return Err(Failure::usage(format!(
                    "standard {} is the journal, so each received line goes to it as an entry of its own, its peer in SOCKSERVE_PEER=; --format json and --prefix-peer are for files and pipes: give --output FILE, or drop them",
                    if inetd { "error" } else { "output" }
                )));
            }
            if args.fsync {
                sink::check_fsync(&Output::Journal).map_err(Failure::usage)?;
            }
            return Ok((Output::Journal, Format::Journal));
        }
        let output = match (args.output.as_deref().map(Output::from_arg), inetd) {
            (Some(Output::Stdout), true) => {
                return Err(Failure::usage(
                    "-o - with --inetd: standard output is the connection; give -o FILE, or leave -o out and lines go to standard error",
                ))
            }
            (Some(o), _) => o,
            (None, true) => Output::Stderr,
            (None, false) => Output::Stdout,
        };
        let format = match args.format {
            RecordFormat::Plain => Format::Plain,
            RecordFormat::Json if args.prefix_peer => {
                return Err(Failure::usage(
                    "--prefix-peer is for --format plain: a JSON record names its peer in its \"peer\" field; drop --prefix-peer",
                ))
            }
            RecordFormat::Json => Format::Json,
        };
        if args.fsync {
            sink::check_fsync(&output).map_err(Failure::usage)?;
        }
        Ok((output, format))
    }
}

/// All of sockserve after its command line: takes the inherited sockets
/// (before any thread starts), opens the output (waiting for a FIFO's
/// reader), binds, builds the config, and serves until stopped.
pub fn start(args: ServeArgs) -> Result<(), Failure> {
    args.texts.check().map_err(Failure::usage)?;
    let want = Wanted {
        addresses: &args.addresses,
        fd_names: &args.fd_names,
        inetd: args.inetd,
        unix_mode: args.unix_mode,
        backlog: args.backlog,
        reuse_port: args.reuse_port,
    };
    let mut sources = Sources::inherit(want)?;
    let (output, format) = Config::output(&args, sources.inetd)?;
    // The certificate before the listeners too: a server that cannot
    // speak TLS never listens.
    let tls = args
        .tls_files()
        .map(crate::tls::ServerTls::load)
        .transpose()
        .map_err(Failure::runtime)?
        .map(Arc::new);
    // The output before the listeners: a client is never greeted by a
    // server that cannot write its lines, and a stop while waiting for a
    // FIFO's reader leaves no socket file behind.
    let Some(opened) = sink::open_waiting(&output).map_err(Failure::runtime)? else {
        return Ok(());
    };
    sources.bind(want)?;
    let cfg = Config {
        tls,
        ..Config::new(&args, &sources, output, format)
    };
    run(cfg, sources, opened)
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
    /// Connections being served now.
    open: AtomicU64,
    /// Connections refused since the start (busy, or not allowed).
    refused: AtomicU64,
}

/// What every connection task shares, read-only but for the counters.
struct Shared {
    /// The command line, for limits and texts.
    cfg: Arc<Config>,
    /// Where every connection commits its lines before it acks them.
    sink: Sink,
    /// For the log and `STATUS=`; never read on the data path.
    stats: Stats,
    /// Many ack lines in a row, built once, so that acking n lines is one
    /// write of a slice of it, not n writes or an allocation. Made once
    /// for the process's life (no count to keep per ack).
    ack_block: &'static [u8],
    /// The length of one ack line in `ack_block`.
    ack_len: usize,
}

/// Acks in the shared ack block: enough for every line of a 64 KiB read
/// of 8-byte lines (about 7,300), so that such a read is acked in one
/// write (the socket takes what it can; the rest follows), not eight.
/// 16384 default acks are 336 KiB, once per server.
const ACK_BLOCK: usize = 16384;

/// Serves the sockets until a signal stops it, or, with only
/// already-accepted connections, until they are done. Call it from the
/// main thread, after the sockets were taken: it starts the threads.
pub fn run(cfg: Config, sources: Sources, output: sink::Opened) -> Result<(), Failure> {
    let (failed_tx, failed_rx) = watch::channel(None);
    let sink =
        Sink::start(cfg.output.clone(), output, cfg.fsync, failed_tx).map_err(Failure::runtime)?;
    // From here on no thread that serves waits for standard error.
    crate::diag::start_log_thread();
    let signals = signals().map_err(|e| {
        Failure::runtime(format!("cannot install signal handlers: {}", describe(&e)))
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {}", describe(&e))))?;
    let shared = Arc::new(Shared {
        ack_len: cfg.texts.ack_line().len(),
        ack_block: Vec::leak(cfg.texts.ack_block(ACK_BLOCK)),
        cfg: Arc::new(cfg),
        sink,
        stats: Stats::default(),
    });
    let result = rt.block_on(async {
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let acceptor = Acceptor {
            limit: Arc::new(Semaphore::new(shared.cfg.max_connections)),
            refusals: Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS)),
            per_source: shared
                .cfg
                .max_per_source
                .map(|max| Arc::new(PerSource::new(max))),
            shared: shared.clone(),
            phase: phase_rx,
            done: done_tx,
        };
        let single = sources.single();
        let socket_files = acceptor.start(sources)?;
        let supervisor = Supervisor {
            shared,
            phase: phase_tx,
            done: done_rx,
            single,
        };
        let result = supervisor.supervise(signals, failed_rx).await;
        // Socket files we created stay until the very end.
        drop(socket_files);
        result
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    result
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

/// A deadline, or one a year away when the duration overflows the clock.
fn far_or(deadline: Option<tokio::time::Instant>) -> tokio::time::Instant {
    deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365))
}

fn status_line(shared: &Shared) -> String {
    format!(
        "{} connections open, {} lines received, {} refused",
        shared.stats.open.load(Ordering::Relaxed),
        shared.sink.lines.load(Ordering::Relaxed),
        shared.stats.refused.load(Ordering::Relaxed)
    )
}

/// Admits connections: every accept loop holds a clone, and so does the
/// code that serves already-accepted connections. In the manner of
/// mini-redis's `Listener`.
#[derive(Clone)]
struct Acceptor {
    shared: Arc<Shared>,
    /// The server's phase: accept loops stop when the drain begins, and
    /// each connection gets a clone to know when to finish.
    phase: watch::Receiver<Phase>,
    /// One permit per connection served: `--max-connections`. A permit is
    /// released with the connection's socket.
    limit: Arc<Semaphore>,
    /// Every connection task holds a clone and drops it when it ends: the
    /// supervisor knows all are done when the channel closes.
    done: mpsc::Sender<()>,
    /// One permit per refused connection lingering so that its refusal
    /// arrives ([`refuse`]).
    refusals: Arc<Semaphore>,
    /// Connections per source address: `--max-per-source`.
    per_source: Option<Arc<PerSource>>,
}

impl Acceptor {
    /// Starts an accept loop per listener and serves the connections
    /// already accepted. Returns the socket files to remove at exit.
    fn start(self, sources: Sources) -> Result<Vec<SocketFile>, Failure> {
        let mut socket_files = Vec::new();
        for l in sources.listeners {
            socket_files.extend(l.path);
            let name = l.name;
            let listener = to_tokio(l.socket)
                .map_err(|e| Failure::runtime(format!("cannot serve {name}: {}", describe(&e))))?;
            crate::info!("listening on {name}");
            tokio::spawn(self.clone().accept_loop(listener));
        }
        for c in sources.connections {
            let accepted = match c.stream {
                StdStream::Tcp(s) => s
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(s))
                    .map(|s| (None, Accepted::Tcp(s))),
                StdStream::Unix(s) => s
                    .set_nonblocking(true)
                    .and_then(|()| UnixStream::from_std(s))
                    .map(|s| (None, Accepted::Unix(s))),
            };
            let (addr, stream) = accepted.map_err(|e| {
                Failure::runtime(format!(
                    "cannot serve the connection on {}: {}",
                    c.name,
                    describe(&e)
                ))
            })?;
            self.admit(stream, addr);
        }
        Ok(socket_files)
    }

    /// Accepts until the drain begins; the listener closes when this
    /// returns.
    async fn accept_loop(mut self, listener: AnyListener) {
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                _ = self.phase.wait_for(|p| *p != Phase::Running) => return,
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
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        _ = self.phase.wait_for(|p| *p != Phase::Running) => return,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
                Err(e) => {
                    crate::debug!("accept: {}", describe(&e));
                    continue;
                }
            };
            self.admit(stream, peer);
        }
    }

    /// Serves an accepted connection in a task of its own, or refuses it.
    /// A TCP connection under `--proxy-protocol` first gives its PROXY
    /// header ([`Acceptor::admit_proxied`]); then, for every connection,
    /// [`Acceptor::admit_peer`] applies the rules and limits.
    fn admit(&self, stream: Accepted, addr: Option<SocketAddr>) {
        let peer = stream.peer(addr);
        match stream {
            Accepted::Tcp(s) if !self.shared.cfg.proxy_protocol.is_empty() => {
                self.admit_proxied(s, peer)
            }
            stream => self.admit_peer(stream, peer, Vec::new(), None, false),
        }
    }

    /// A TCP connection under `--proxy-protocol`: a peer outside those
    /// networks is refused without a byte of its input read; a trusted
    /// one takes a connection slot (so that headers being read are bounded
    /// by `--max-connections`), then must send a valid header within the
    /// deadline, before the greeting. The header's source is the peer from
    /// then on.
    fn admit_proxied(&self, stream: TcpStream, via: Peer) {
        let cfg = &self.shared.cfg;
        let proxy = match via {
            Peer::Tcp(a) if cfg.proxy_protocol.iter().any(|n| n.contains(&a.ip())) => a,
            _ => {
                crate::info!(
                    "{via}: refused: not allowed (not in --proxy-protocol, the networks whose PROXY headers are trusted; add the balancer's address there if this is one)"
                );
                return self.refuse(Accepted::Tcp(stream), "not allowed");
            }
        };
        let Ok(slot) = self.limit.clone().try_acquire_owned() else {
            crate::info!("{via}: refused: server busy");
            return self.refuse(Accepted::Tcp(stream), "server busy");
        };
        let wait = cfg
            .idle_timeout
            .map_or(proxy::HEADER_DEADLINE, |t| t.min(proxy::HEADER_DEADLINE));
        let deadline = far_or(tokio::time::Instant::now().checked_add(wait));
        let this = self.clone();
        tokio::spawn(async move {
            let mut phase = this.phase.clone();
            let read = tokio::select! {
                r = proxy::read(&stream, deadline) => r,
                _ = phase.wait_for(|p| *p == Phase::Abort) => return,
            };
            let (peer, first, quiet) = match read {
                Ok((proxy::Header::Proxied(source), first)) => {
                    (Peer::proxied(source, proxy), first, false)
                }
                Ok((proxy::Header::Local, first)) => {
                    crate::debug!("{via}: PROXY LOCAL or UNKNOWN (a health check): served as the proxy itself");
                    (via, first, true)
                }
                Ok((proxy::Header::Unaddressed, first)) => {
                    crate::info!(
                        "{via}: the PROXY header names no IP source; served as the proxy itself"
                    );
                    (via, first, false)
                }
                Err(proxy::Missing::ClosedFirst) => {
                    crate::debug!("{via}: closed before sending a PROXY header (a health check)");
                    return;
                }
                Err(why @ (proxy::Missing::Truncated(_) | proxy::Missing::Io(_))) => {
                    this.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    crate::warn!("{via}: refused: {why}");
                    return;
                }
                Err(why) => {
                    drop(slot);
                    crate::warn!("{via}: refused: {why}; check that it sends the PROXY protocol (HAProxy: send-proxy or send-proxy-v2; nginx: proxy_protocol on)");
                    this.refuse(Accepted::Tcp(stream), "bad PROXY header");
                    return;
                }
            };
            // Served in this task: no second spawn per connection.
            if let Some(admitted) =
                this.check_peer(Accepted::Tcp(stream), peer, first, Some(slot), quiet)
            {
                // The PROXY header first, then the TLS handshake, as
                // HAProxy sends them.
                match admitted.tls_config(&this.shared) {
                    Some(config) => {
                        Box::pin(admitted.serve_tls(
                            config,
                            this.shared.clone(),
                            this.phase.clone(),
                        ))
                        .await
                    }
                    None => {
                        admitted
                            .serve(this.shared.clone(), this.phase.clone())
                            .await
                    }
                }
            }
        });
    }

    /// Applies the access rules, the per-source limit and the connection
    /// limit (unless `slot` was taken already) to `peer`, then serves the
    /// connection in a task of its own, with `first` as the first bytes it
    /// sent; or refuses it. `quiet`: a health check, the balancer's own
    /// connection: not subject to `--allow`/`--deny`, and its end is
    /// logged at debug level.
    fn admit_peer(
        &self,
        stream: Accepted,
        peer: Peer,
        first: Vec<u8>,
        slot: Option<OwnedSemaphorePermit>,
        quiet: bool,
    ) {
        if let Some(admitted) = self.check_peer(stream, peer, first, slot, quiet) {
            let (shared, phase, done) =
                (self.shared.clone(), self.phase.clone(), self.done.clone());
            match admitted.tls_config(&shared) {
                // A task of its own: a TLS connection's state is
                // kilobytes, which a plain one does not carry. The
                // handshake holds the connection's slot.
                Some(config) => tokio::spawn(async move {
                    admitted.serve_tls(config, shared, phase).await;
                    drop(done);
                }),
                None => tokio::spawn(async move {
                    admitted.serve(shared, phase).await;
                    // The supervisor waits for every task to drop this.
                    drop(done);
                }),
            };
        }
    }

    /// The rules and limits of [`Acceptor::admit_peer`]: what serving the
    /// connection needs, or `None` when it was refused.
    fn check_peer(
        &self,
        stream: Accepted,
        peer: Peer,
        first: Vec<u8>,
        slot: Option<OwnedSemaphorePermit>,
        quiet: bool,
    ) -> Option<Admitted> {
        // A health check (the balancer's own connection, LOCAL or
        // UNKNOWN) was admitted by --proxy-protocol already: rules meant
        // for clients would refuse it every few seconds.
        if !quiet && !self.shared.cfg.access.allowed(&peer) {
            crate::info!("{peer}: refused: not allowed");
            self.refuse(stream, "not allowed");
            return None;
        }
        let source = match &self.per_source {
            Some(per) => match per.enter(&peer) {
                Ok(s) => s,
                Err(n) => {
                    crate::info!(
                        "{peer}: refused: too many connections from this address ({n} open, --max-per-source {})",
                        per.max
                    );
                    self.refuse(stream, "too many connections from your address");
                    return None;
                }
            },
            None => None,
        };
        let slot = match slot.map_or_else(|| self.limit.clone().try_acquire_owned(), Ok) {
            Ok(s) => s,
            Err(_) => {
                crate::info!("{peer}: refused: server busy");
                self.refuse(stream, "server busy");
                return None;
            }
        };
        Some(Admitted {
            stream,
            opening: conn::Opening { peer, first, quiet },
            slot: (slot, source),
        })
    }

    /// Refuses a connection with the refusal greeting and `reason`; the
    /// caller has logged why.
    fn refuse(&self, stream: Accepted, reason: &str) {
        let shared = &self.shared;
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        if shared.cfg.receive_only {
            // Nothing is sent to a receive-only client: closing says it.
            return;
        }
        let line = shared.cfg.texts.refusal_line(Some(reason));
        // A refusal lingers (see `refuse`): at most this many at once, so
        // a flood of refused clients cannot hold many descriptors; past
        // that, the refusal is sent and the socket closed at once.
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => {
                let done = self.done.clone();
                let tls = shared.cfg.tls.clone();
                tokio::spawn(async move {
                    match (stream, tls) {
                        // After the handshake, so that the client reads it.
                        (Accepted::Tcp(s), Some(t)) => {
                            Box::pin(tls::refuse(s, t.config(), &line)).await
                        }
                        (Accepted::Tcp(s), None) => refuse(s, &line).await,
                        (Accepted::Unix(s), _) => refuse(s, &line).await,
                    }
                    drop(permit);
                    // A server that serves one connection waits for this.
                    drop(done);
                });
            }
            Err(_) => {
                let _ = match &stream {
                    // No handshake for a refusal past the lingering
                    // bound: closed at once.
                    Accepted::Tcp(_) if shared.cfg.tls.is_some() => Ok(0),
                    Accepted::Tcp(s) => s.try_write(&line),
                    Accepted::Unix(s) => s.try_write(&line),
                };
            }
        }
    }
}

/// A connection that passed the rules and holds its slots.
struct Admitted {
    stream: Accepted,
    opening: conn::Opening,
    /// Released with the socket (see [`conn::serve`]).
    slot: (OwnedSemaphorePermit, Option<SourceGuard>),
}

impl Admitted {
    /// The TLS configuration in force, for a TCP connection when
    /// sockserve speaks TLS.
    fn tls_config(&self, shared: &Shared) -> Option<Arc<rustls::ServerConfig>> {
        match self.stream {
            Accepted::Tcp(_) => shared.cfg.tls.as_ref().map(|t| t.config()),
            Accepted::Unix(_) => None,
        }
    }

    /// [`Admitted::serve`] over TLS: the handshake (fed the bytes that
    /// came after a PROXY header first), then the connection.
    async fn serve_tls(
        self,
        config: Arc<rustls::ServerConfig>,
        shared: Arc<Shared>,
        phase: watch::Receiver<Phase>,
    ) {
        match self.stream {
            Accepted::Tcp(s) => tls::serve(s, self.opening, config, shared, phase, self.slot).await,
            stream => {
                Admitted {
                    stream,
                    opening: self.opening,
                    slot: self.slot,
                }
                .serve(shared, phase)
                .await
            }
        }
    }

    /// The connection's life, in a box of exactly its size: an `async fn`
    /// here would hold the connection's parts twice (its own argument
    /// beside the future it moves them into) in a task whose room tokio
    /// counts in steps of 128 bytes, for as long as the connection lasts.
    fn serve(
        self,
        shared: Arc<Shared>,
        phase: watch::Receiver<Phase>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let Admitted {
            stream,
            opening,
            slot,
        } = self;
        match stream {
            Accepted::Tcp(s) => Box::pin(conn::serve(s, opening, shared, phase, slot)),
            Accepted::Unix(s) => Box::pin(conn::serve(s, opening, shared, phase, slot)),
        }
    }
}

/// `--max-per-source`: connections open per source address (a TCP peer's
/// IP address, the PROXY header's source for a proxied one). Unix peers
/// are not counted.
struct PerSource {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerSource {
    fn new(max: usize) -> PerSource {
        PerSource {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a connection from `peer` in, or says how many are open from
    /// its address when that is the maximum already. The guard counts it
    /// out when dropped.
    fn enter(self: &Arc<Self>, peer: &Peer) -> Result<Option<SourceGuard>, usize> {
        let Some(ip) = peer.ip() else {
            return Ok(None);
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return Err(*n);
        }
        *n += 1;
        Ok(Some(SourceGuard {
            per: self.clone(),
            ip,
        }))
    }
}

/// One connection counted in [`PerSource`]; counted out on drop.
struct SourceGuard {
    per: Arc<PerSource>,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut open = self.per.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Watches signals, the output and the connections, and decides when the
/// server stops: the drain, its deadline, a second signal, a failed
/// output.
struct Supervisor {
    shared: Arc<Shared>,
    /// Tells accept loops and connections the phase.
    phase: watch::Sender<Phase>,
    /// Closes when every connection task has ended.
    done: mpsc::Receiver<()>,
    /// Only already-accepted connections: stop when they are done.
    single: bool,
}

impl Supervisor {
    async fn supervise(
        mut self,
        mut signals: mpsc::UnboundedReceiver<i32>,
        mut failed: watch::Receiver<Option<String>>,
    ) -> Result<(), Failure> {
        if let Some(every) = crate::notify::watchdog_interval() {
            tokio::spawn(async move {
                loop {
                    crate::notify::watchdog();
                    tokio::time::sleep(every).await;
                }
            });
        }
        let shared = self.shared.clone();
        crate::notify::ready(&status_line(&shared));

        let mut result = Ok(());
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_status = String::new();
        let mut drain_deadline = None;
        loop {
            let deadline = drain_deadline;
            tokio::select! {
                s = signals.recv() => match s {
                    Some(signal_hook::consts::SIGHUP) => {
                        match &shared.cfg.output {
                            Output::File(_) => shared.sink.reopen(),
                            other => crate::debug!("nothing to reopen: the output is {other}"),
                        }
                        if let Some(t) = shared.cfg.tls.clone() {
                            // Files read off the runtime's threads.
                            let _ = tokio::task::spawn_blocking(move || t.reload()).await;
                        }
                    }
                    Some(_) if drain_deadline.is_none() => {
                        crate::info!("draining: listeners closed, finishing open connections (at most {:.1} s)", shared.cfg.drain_timeout.as_secs_f64());
                        let _ = self.phase.send(Phase::Draining);
                        crate::notify::stopping(&format!("draining; {}", status_line(&shared)));
                        drain_deadline = Some(far_or(tokio::time::Instant::now().checked_add(shared.cfg.drain_timeout)));
                    }
                    Some(_) => {
                        crate::info!("second signal: closing all connections now");
                        break;
                    }
                    None => break,
                },
                r = failed.wait_for(Option::is_some) => {
                    if let Ok(why) = r {
                        result = Err(Failure::runtime(why.clone().unwrap_or_default()));
                        break;
                    }
                }
                _ = self.done.recv(), if self.single || drain_deadline.is_some() => break,
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
        let _ = self.phase.send(Phase::Abort);
        // Connections close at once on Abort; give them a moment to say so.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.done.recv()).await;
        crate::debug!("stopped: {}", status_line(&shared));
        result
    }
}

/// How long a refused connection lingers to let its refusal arrive.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Refused connections lingering at once, at most.
const MAX_LINGERING_REFUSALS: usize = 256;

/// Sends the refusal so that the client reads it: closing a socket with
/// unread input makes the kernel send a reset, which can destroy the
/// refusal still in flight. So: write it (waiting for the socket to take
/// it), half-close, and read and discard what the client sends until it
/// closes too, all within [`REFUSAL_LINGER`].
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, line: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        if stream.write_all(line).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Accepted {
    /// Who is on the other end: the address `accept` gave (or the
    /// socket's), or a Unix peer's credentials.
    fn peer(&self, addr: Option<SocketAddr>) -> Peer {
        match self {
            Accepted::Tcp(s) => addr
                .or_else(|| s.peer_addr().ok())
                .map_or(Peer::Unknown, Peer::tcp),
            Accepted::Unix(s) => Peer::Unix(s.peer_cred().ok().map(|c| Cred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            })),
        }
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

/// `--max-connections`, fitted to the open-file limit (raised first to
/// the hard limit): never more connections than descriptors to serve them.
fn fit_to_descriptors(max_connections: usize, listeners: usize) -> usize {
    let limit = raise_nofile_limit();
    let room = limit.saturating_sub(RESERVED_FDS + listeners as u64).max(1) as usize;
    if max_connections > room {
        crate::warn!(
            "--max-connections {max_connections}: more than the open-file limit ({limit}) allows; serving at most {room} at once (raise it with ulimit -n or LimitNOFILE=)"
        );
        return room;
    }
    max_connections
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
