//! One connection's life: greeting, then read, frame, commit, ack, until
//! the client is done, goes idle, breaks a limit, or the server stops.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{oneshot, watch};
use tokio::time::timeout_at;

use super::format::{self, Records};
use super::sink::Commit;
use super::{Phase, Shared};
use crate::diag::{describe, Level};
use crate::peer::Peer;
use crate::protocol::{self, Framer, Lines};

/// Bytes asked of the kernel per read, at most: a connection starts at
/// `FIRST_READ` and doubles after every read that fills its buffer, so a
/// client that sends a few lines costs a few KiB and a bulk stream gets
/// large reads after five of them. A connection holds no buffer at all
/// between reads that leave no partial line.
const READ_CHUNK: usize = 64 * 1024;
const FIRST_READ: usize = 4 * 1024;

/// With `--prefix-peer`, what a read brings in grows by the prefix on
/// every line: 2-byte lines with a 16-byte prefix are 9 times the bytes
/// read. So that the prefix counts against the per-connection bound,
/// reads are then at most half of `READ_CHUNK`, and the prefixed lines
/// are handed to the sink in batches of at most `PREFIXED_BATCH` bytes
/// (one line may exceed it), each committed and acked before the next is
/// built: the bytes read plus one batch stay within `READ_CHUNK`.
const PREFIXED_READ: usize = READ_CHUNK / 2;
const PREFIXED_BATCH: usize = READ_CHUNK / 2;

/// With `--fsync`, a connection keeps reading while its batches wait for
/// their sync, and acks them, in order, as the syncs complete; but it
/// stops reading while batches of this many bytes (or more) wait. The
/// man page states it.
pub const FSYNC_PENDING: usize = 1 << 20;

/// During a drain, a connection that has sent nothing for this long is
/// "quiet" and is closed.
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// A connected stream, TCP, Unix or TLS: what the loop below needs of
/// it.
pub trait Conn: AsyncWrite + AsRawFd + Unpin + Send + 'static {
    /// Ready when there may be something to read. Polled, not a future
    /// made per wait: tokio's `poll_read_ready` keeps the task's waker in
    /// the socket's own slot, where `readable()` links a waiter into a
    /// list under a lock and out again on every round trip.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// Whether bytes `try_write` took are still on their way to the socket
    /// (a TLS stream's encrypted records): the write then waits for them.
    fn wants_flush(&self) -> bool {
        false
    }

    /// Whether a client that made a write to it fail may have been cut off
    /// mid-stream: over TCP that failure is a reset, which discards what
    /// the client's kernel had not sent yet. A Unix socket has no reset:
    /// its peer's close delivers every byte written before it (the
    /// ECONNRESET a read may then get comes after them all).
    fn may_be_cut(&self) -> bool {
        true
    }

    /// Whether a write of the stream's own (not the acks') met a reset
    /// without a FIN before it: a TLS stream sends records of its own
    /// while it reads.
    fn was_reset(&self) -> bool {
        false
    }

    /// Whether the client has sent something not read yet (bytes, its end
    /// of stream, or an error to report), asked of the kernel itself, not
    /// of cached readiness: after a pause of the whole server, the timer
    /// and the readiness can come back in either order.
    fn has_input(&self) -> bool {
        kernel_has_input(self.as_raw_fd())
    }
}

/// Whether the kernel would take bytes for `fd` now (or has an error to
/// report on it).
fn kernel_can_write(fd: std::os::fd::RawFd) -> bool {
    poll_now(fd, nix::poll::PollFlags::POLLOUT).unwrap_or(false)
}

/// Whether the kernel holds input (or an end, or an error) for `fd`.
/// Asked with poll(2), not a peeking recv(2): a peek on an empty queue
/// takes the socket's pending error (a reset) for itself, and the read
/// after it would then see a clean end of stream.
pub fn kernel_has_input(fd: std::os::fd::RawFd) -> bool {
    use nix::poll::PollFlags;
    // Cannot tell: say yes, so that the read finds out.
    poll_now(
        fd,
        PollFlags::POLLIN | PollFlags::from_bits_retain(nix::libc::POLLRDHUP),
    )
    .unwrap_or(true)
}

/// Whether `fd` is ready for any of `events` (or has an error or hang-up
/// to report) right now, without waiting.
fn poll_now(fd: std::os::fd::RawFd, events: nix::poll::PollFlags) -> nix::Result<bool> {
    use nix::poll::{poll, PollFd, PollTimeout};
    // SAFETY: the caller holds the socket open for the length of the call.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(bfd, events)];
    poll(&mut fds, PollTimeout::ZERO).map(|n| n > 0)
}

/// Reads into the spare capacity of `buf` through `try_io`, so that a read
/// that did not fill the buffer also clears the stream's readiness, as
/// tokio's own `poll_read` does: the socket's queue was drained (epoll is
/// edge-triggered, and tokio keeps anything that arrived meanwhile ready),
/// so the next wait parks until more comes instead of waking at once for
/// a `recvfrom` that fails with EAGAIN.
fn read_clearing(
    fd: std::os::fd::RawFd,
    buf: &mut Vec<u8>,
    try_io: impl FnOnce(&mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut short = None;
    let r = try_io(&mut || {
        let spare = buf.spare_capacity_mut();
        let len = spare.len();
        // SAFETY: recv writes at most `len` bytes into the spare capacity,
        // which is valid for writes of that length; only the bytes it
        // reports written are then counted as initialised.
        let n = unsafe { nix::libc::recv(fd, spare.as_mut_ptr().cast(), len, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: recv initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        if n > 0 && n < len {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, short) {
        (_, Some(n)) => Ok(n),
        (r, None) => r,
    }
}

impl Conn for TcpStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_clearing(self.as_raw_fd(), buf, |f| {
            self.try_io(tokio::io::Interest::READABLE, f)
        })
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl Conn for UnixStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn may_be_cut(&self) -> bool {
        false
    }
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_clearing(self.as_raw_fd(), buf, |f| {
            self.try_io(tokio::io::Interest::READABLE, f)
        })
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
}

/// Why a connection ended, as the log line says it.
#[derive(Debug)]
enum End {
    ClientEof,
    Idle,
    /// The client kept sending but did not read its acks for the idle
    /// timeout: its receive buffer is full of them.
    NotReadingAcks,
    TooLong,
    Drain,
    OutputFailed,
    Error(io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientEof => f.write_str("client EOF"),
            End::Idle => f.write_str("idle timeout"),
            End::NotReadingAcks => f.write_str("not reading acks"),
            End::TooLong => f.write_str("line too long"),
            End::Drain => f.write_str("drain"),
            End::OutputFailed => f.write_str("output failed"),
            End::Error(e) => write!(f, "error: {}", describe(e)),
        }
    }
}

/// What is known of a connection before it is served.
pub struct Opening {
    /// Who is on the other end: for a proxied connection, the client its
    /// PROXY header named.
    pub peer: Peer,
    /// Bytes the client already sent (those that came after its PROXY
    /// header): framed before anything is read.
    pub first: Vec<u8>,
    /// Log the connection at debug level only: the proxy's own connection
    /// (a health check), not a client's.
    pub quiet: bool,
}

/// One connection being served.
struct State<S> {
    /// The client's socket: read for lines, written for the greeting, the
    /// acks and the error line.
    stream: S,
    /// The sink to commit to, the config, the ack block.
    shared: Arc<Shared>,
    /// The server's phase: a drain changes when the connection ends
    /// ([`deadline`]), an abort ends it at once, even mid-write.
    shutdown: watch::Receiver<Phase>,
    /// Makes the records of this connection's lines (plain, JSON,
    /// journal entries).
    records: Records,
    /// Complete lines read and handed to the sink, for the log line; the
    /// number of the last line, for the records.
    lines: u64,
    /// Acks written to the client, for the log line: fewer than `lines`
    /// when the connection ended between a commit and its ack, or when
    /// acks stopped.
    acks: u64,
    /// Why writing to the client failed (it reset the connection, or shut
    /// its reading side), if it did. A sender that writes and closes
    /// without reading makes its kernel answer our acks with a reset, but
    /// what it sent is still in our receive queue: reading goes on, only
    /// the acks stop.
    acks_stopped: Option<io::Error>,
    /// Bytes of a partial line the connection ended in (a reset, an idle
    /// timeout, a drain), which were not written: the line may be cut.
    partial_dropped: usize,
    /// With `--fsync`: batches handed to the sink whose sync has not
    /// answered yet, oldest first, each with its count of lines and
    /// bytes; acked in this order as the answers come.
    /// Boxed, made at the first such batch: a connection without
    /// `--fsync` holds one pointer for it (a task's room is counted in
    /// steps of 128 bytes).
    syncing: Option<Box<Syncing>>,
}

/// A connection's batches waiting for their sync.
#[derive(Default)]
struct Syncing {
    /// Oldest first: the answer, the lines, the bytes.
    batches: std::collections::VecDeque<(oneshot::Receiver<bool>, u64, usize)>,
    /// The bytes of `batches`: reading stops at [`FSYNC_PENDING`].
    bytes: usize,
}

/// Serves one client to its end and logs one line about it. `slot` (the
/// connection-limit permit) is released with the socket, before that
/// line, so "closed" in the log means the next client can be served.
pub async fn serve<S: Conn>(
    stream: S,
    opening: Opening,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Phase>,
    slot: impl Send,
) {
    let started = Instant::now();
    let Opening { peer, first, quiet } = opening;
    let via = peer.via();
    // The peer as logs name it: a PROXY header's source is the client's
    // word, and must not break or forge a log line. A client
    // certificate's identity is escaped already (`\xNN`, as in
    // --prefix-peer), not twice.
    let shown = match &peer {
        Peer::Tls(t) => format!("{} {}", crate::diag::escape(&t.peer.to_string()), t.id),
        p => crate::diag::escape(&p.to_string()).into_owned(),
    };
    let peer = peer.to_string();
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    match via {
        Some(via) => crate::debug!("{shown}: connected through {via}"),
        None => crate::debug!("{shown}: connected"),
    }
    let records = Records::new(shared.cfg.format, &peer, format::next_connection());
    let mut st = State {
        stream,
        shared: shared.clone(),
        shutdown,
        records,
        lines: 0,
        acks: 0,
        acks_stopped: None,
        partial_dropped: 0,
        syncing: None,
    };
    let end = st.run(&peer, first).await;
    let _ = st.stream.shutdown().await;
    let State {
        stream,
        lines,
        acks,
        acks_stopped,
        partial_dropped,
        ..
    } = st;
    drop(stream);
    drop(slot);
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    // A health check (the proxy itself, sending nothing) that closes or
    // resets, as HAProxy's do, has done its job.
    let check_done = quiet
        && lines == 0
        && partial_dropped == 0
        && match &end {
            End::ClientEof => true,
            End::Error(e) => e.kind() == io::ErrorKind::ConnectionReset,
            _ => false,
        };
    let mut counts = format!("{lines} lines, {acks} acks");
    if shared.cfg.receive_only {
        counts.push_str(" (receive-only)");
    } else if let Some(e) = acks_stopped.filter(|_| !check_done) {
        counts.push_str(&format!(
            ", {} unacked (acks stopped: {})",
            lines - acks,
            describe(&e)
        ));
    }
    if partial_dropped > 0 {
        counts.push_str(&format!(
            ", a partial last line of {partial_dropped} bytes not written"
        ));
    }
    let level = if quiet { Level::Debug } else { Level::Info };
    let end = if check_done {
        "health check done".to_string()
    } else {
        end.to_string()
    };
    crate::diag::emit(
        level,
        format_args!(
            "{shown}: closed ({end}): {counts}, {:.2} s",
            started.elapsed().as_secs_f64()
        ),
    );
}

impl<S: Conn> State<S> {
    async fn run(&mut self, peer: &str, first: Vec<u8>) -> End {
        let cfg = self.shared.cfg.clone();
        if !cfg.receive_only {
            if let Err(e) = self.send(&cfg.texts.greeting_line()).await {
                return e;
            }
        }
        let prefix = cfg.prefix_peer.then(|| format!("{peer}\t").into_bytes());
        let mut framer = Framer::new(cfg.max_line);
        framer.push(&first);
        let mut end = self.read_lines(&mut framer, prefix.as_deref()).await;
        // Batches still waiting for their sync are acked as they complete,
        // before the connection closes.
        if let Err(e) = self.settle_syncing().await {
            end = e;
        }
        if !matches!(end, End::TooLong) {
            self.partial_dropped = framer.pending();
        }
        end
    }

    /// Reads, frames, commits and acks until the stream ends, the client
    /// goes idle or breaks a limit, or the server stops.
    async fn read_lines(&mut self, framer: &mut Framer, prefix: Option<&[u8]>) -> End {
        let cfg = self.shared.cfg.clone();
        // The idle clock: the last complete line, or the last ack written,
        // whichever is later, so a stalled output or a paused server never
        // counts against the client.
        let mut last_line = Instant::now();
        let mut last_byte = Instant::now();
        // One timer for the connection's life. It is moved only when the
        // deadline comes earlier, or when it fires before the deadline,
        // which has moved on since: not once per read.
        let timer = tokio::time::sleep_until(far_future().into());
        tokio::pin!(timer);
        // One wait for the server's phase to change, for as long as it
        // does not: made again only after it fires, not on every turn.
        let changed = phase_changed(self.shutdown.clone());
        tokio::pin!(changed);
        let read_max = if prefix.is_some() {
            PREFIXED_READ
        } else {
            READ_CHUNK
        };
        let mut chunk = FIRST_READ.min(read_max);
        if framer.pending() > 0 {
            // What came with the PROXY header, before any read here.
            match self.deliver(framer, prefix, false).await {
                Err(end) => return end,
                Ok(true) => last_line = Instant::now(),
                Ok(false) => {}
            }
        }
        loop {
            let phase = *self.shutdown.borrow_and_update();
            if phase == Phase::Abort {
                return End::Drain;
            }
            let due = deadline(phase, cfg.idle_timeout, last_line, last_byte);
            if let Some((d, _)) = due {
                if d < timer.deadline().into_std() {
                    timer.as_mut().reset(d.into());
                }
            }
            let waiting = self.syncing.as_ref().is_some_and(|s| !s.batches.is_empty());
            let room = self
                .syncing
                .as_ref()
                .is_none_or(|s| s.bytes < FSYNC_PENDING);
            tokio::select! {
                biased;
                r = async { (&mut self.syncing.as_mut().and_then(|s| s.batches.front_mut()).expect("a batch waits").0).await }, if waiting => {
                    if let Err(end) = self.synced(r.unwrap_or(false)).await {
                        return end;
                    }
                    last_line = Instant::now();
                    continue;
                }
                r = std::future::poll_fn(|cx| self.stream.poll_readable(cx)), if room => {
                    if let Err(e) = r {
                        return End::Error(e);
                    }
                }
                // After the reads: the loop's top reads the phase on every
                // turn; this wait only wakes a connection that waits.
                (rx, alive) = changed.as_mut() => {
                    if !alive {
                        return End::Drain;
                    }
                    changed.set(phase_changed(rx));
                    continue;
                }
                _ = &mut timer, if due.is_some() => {
                    match due {
                        // The timer was set for an earlier deadline, which
                        // has moved on since.
                        Some((d, _)) if d > Instant::now() => {
                            timer.as_mut().reset(d.into());
                            continue;
                        }
                        // Silent only if nothing waits to be read.
                        Some((_, why)) if !self.stream.has_input() => return why,
                        _ => timer.as_mut().reset(far_future().into()),
                    }
                }
            }
            let spare = framer.reserve(chunk);
            let eof = match self.stream.try_read_buf(framer.buffer()) {
                Ok(0) => true,
                Ok(n) => {
                    if n == spare {
                        chunk = (chunk * 2).min(read_max);
                    }
                    false
                }
                // Nothing to read after all: the buffer reserved for it
                // goes back, or an idle connection would keep it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    framer.shrink_if_empty();
                    continue;
                }
                // A Unix peer that closed with bytes of ours unread makes
                // this read fail once with ECONNRESET, but everything it
                // wrote has been read: its end of stream.
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionReset && !self.stream.may_be_cut() =>
                {
                    true
                }
                Err(e) => return End::Error(e),
            };
            last_byte = Instant::now();
            // A client that reset the connection (the ack write took the
            // reset, so this read's 0 looks like a clean end) may have
            // been cut off mid-line: a partial last line is then not a
            // line, and is counted as not written. Not so when its FIN
            // came first (its whole stream is here): Linux then fails the
            // write with EPIPE, a reset without a FIN with ECONNRESET.
            let cut = self
                .acks_stopped
                .as_ref()
                .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionReset)
                || self.stream.was_reset();
            let clean_end = eof && !(cut && self.stream.may_be_cut());
            match self.deliver(framer, prefix, clean_end).await {
                Err(end) => return end,
                Ok(true) => last_line = Instant::now(),
                Ok(false) => {}
            }
            if eof {
                return End::ClientEof;
            }
            framer.shrink_if_empty();
        }
    }

    /// Takes the complete lines the framer holds, commits and acks them.
    /// `Ok(true)` when there were lines; an error when the connection
    /// must end (a line too long, a failed output or write).
    async fn deliver(
        &mut self,
        framer: &mut Framer,
        prefix: Option<&[u8]>,
        eof: bool,
    ) -> Result<bool, End> {
        // When the lines were read, for records that say so.
        let read_at = if self.records.timed() {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        let taken = framer.take(eof);
        let any = taken.lines.is_some();
        if let Some(lines) = taken.lines {
            match prefix {
                None => self.commit_and_ack(lines, read_at).await?,
                // --prefix-peer is for plain output only.
                Some(p) => self.commit_prefixed(p, lines).await?,
            }
        }
        if taken.too_long {
            // The lines before it are acked before the error line.
            self.settle_syncing().await?;
            if !self.shared.cfg.receive_only {
                let line = protocol::too_long_line(self.shared.cfg.max_line);
                let _ = self.send(&line).await;
            }
            return Err(End::TooLong);
        }
        Ok(any)
    }

    /// Puts `prefix` before every line and commits the result in batches
    /// of at most `PREFIXED_BATCH` bytes (or one line), each built only
    /// once the one before is written, so the prefix costs at most one
    /// batch of memory whatever the lines' lengths; then acks them all in
    /// one go, as for an unprefixed read.
    async fn commit_prefixed(&mut self, prefix: &[u8], lines: Lines) -> Result<(), End> {
        let mut committed = 0;
        let mut rest = &lines.data[..];
        while !rest.is_empty() {
            let mut batch =
                Vec::with_capacity(PREFIXED_BATCH.min(rest.len().saturating_mul(1 + prefix.len())));
            let mut count = 0;
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let line = &rest[..=nl];
                if count > 0 && batch.len() + prefix.len() + line.len() > PREFIXED_BATCH {
                    break;
                }
                batch.extend_from_slice(prefix);
                batch.extend_from_slice(line);
                count += 1;
                rest = &rest[nl + 1..];
            }
            if count == 0 {
                // The framer ends every line with a newline; nothing else
                // can be left.
                break;
            }
            self.commit(Lines { data: batch, count }).await?;
            committed += count;
        }
        self.ack(committed).await
    }

    /// Hands the lines' records to the sink and acks the lines once they
    /// are written.
    async fn commit_and_ack(&mut self, lines: Lines, read_at: SystemTime) -> Result<(), End> {
        let n = lines.count;
        let data = self
            .records
            .encode(lines, self.lines + 1, read_at)
            .map_err(End::Error)?;
        if !self.shared.cfg.fsync {
            self.commit(Lines { data, count: n }).await?;
            return self.ack(n).await;
        }
        // --fsync: the batch waits for its sync while the connection reads
        // on; `synced` acks it.
        self.lines += n;
        let bytes = data.len();
        match self.shared.sink.submit(data, n) {
            Commit::Done(false) => Err(End::OutputFailed),
            Commit::Done(true) if self.syncing.as_ref().is_none_or(|s| s.batches.is_empty()) => {
                self.ack(n).await
            }
            Commit::Done(true) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(true);
                self.wait_sync(rx, n, bytes);
                Ok(())
            }
            Commit::Waiting(rx) => {
                self.wait_sync(rx, n, bytes);
                Ok(())
            }
        }
    }

    /// Keeps a batch handed to the sink until its sync answers.
    fn wait_sync(&mut self, rx: oneshot::Receiver<bool>, n: u64, bytes: usize) {
        let s = self.syncing.get_or_insert_with(Box::default);
        s.batches.push_back((rx, n, bytes));
        s.bytes += bytes;
    }

    /// The oldest batch waiting for its sync has its answer: acks it, or
    /// ends the connection when the output failed.
    async fn synced(&mut self, ok: bool) -> Result<(), End> {
        let s = self.syncing.as_mut().expect("a batch waits");
        let (_, n, bytes) = s.batches.pop_front().expect("a batch waits");
        s.bytes -= bytes;
        if !ok {
            return Err(End::OutputFailed);
        }
        self.ack(n).await
    }

    /// Waits for every batch still waiting for its sync, acking each; ends
    /// at once when the server aborts.
    async fn settle_syncing(&mut self) -> Result<(), End> {
        while let Some((rx, _, _)) = self.syncing.as_mut().and_then(|s| s.batches.front_mut()) {
            let mut shutdown = self.shutdown.clone();
            let ok = tokio::select! {
                r = rx => r.unwrap_or(false),
                _ = shutdown.wait_for(|p| *p == Phase::Abort) => return Err(End::Drain),
            };
            self.synced(ok).await?;
        }
        Ok(())
    }

    /// Hands lines (or their records) to the sink; `Err` when they did not
    /// reach the output.
    async fn commit(&mut self, lines: Lines) -> Result<(), End> {
        self.lines += lines.count;
        if !self.shared.sink.commit(lines.data, lines.count).await {
            return Err(End::OutputFailed);
        }
        Ok(())
    }

    /// Acks `n` lines, in as few writes as the ack block allows; nothing
    /// with --receive-only, or once writing to the client failed.
    async fn ack(&mut self, n: u64) -> Result<(), End> {
        if self.shared.cfg.receive_only {
            return Ok(());
        }
        let block = self.shared.ack_block;
        let per = self.shared.ack_len;
        let mut left = n as usize;
        while left > 0 && self.acks_stopped.is_none() {
            let k = left.min(block.len() / per);
            self.send(&block[..k * per]).await.map_err(|e| match e {
                End::Idle => End::NotReadingAcks,
                e => e,
            })?;
            left -= k;
            if self.acks_stopped.is_none() {
                self.acks += k as u64;
            }
        }
        Ok(())
    }

    /// Writes to the client, unless writing already failed. A client that
    /// reset the connection or shut its reading side stops the writes, not
    /// the connection: what it sent before is still read.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        if self.acks_stopped.is_some() {
            return Ok(());
        }
        match self.write(bytes).await {
            Err(End::Error(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.acks_stopped = Some(e);
                Ok(())
            }
            r => r,
        }
    }

    /// Writes to the client, giving up when it does not read for the idle
    /// timeout, or when the server aborts.
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), End> {
        // Most writes fit the socket buffer at once: no timer, no wait.
        match self.stream.try_write(bytes) {
            Ok(n) if n == bytes.len() && !self.stream.wants_flush() => return Ok(()),
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(End::Error(e)),
        }
        // The wait, boxed: its state (a timer, the write, the shutdown
        // watch) would otherwise take room in every connection's task for
        // its whole life, idle or not.
        Box::pin(self.write_waiting(bytes)).await
    }

    /// Writes what the socket did not take at once: waits for it to take
    /// more, giving up when the client does not read for the idle timeout,
    /// or when the server aborts.
    async fn write_waiting(&mut self, mut bytes: &[u8]) -> Result<(), End> {
        let idle = self.shared.cfg.idle_timeout;
        let deadline = idle.and_then(|t| Instant::now().checked_add(t));
        let mut shutdown = self.shutdown.clone();
        let fd = self.stream.as_raw_fd();
        let stream = &mut self.stream;
        // The idle clock measures the client's silence, not ours: every
        // write that makes progress starts it again, and when it runs out
        // the kernel is asked whether the socket takes bytes now (after a
        // pause of the whole server, the client may have read everything
        // while the timer and the readiness came back in either order).
        let write = async move {
            let Some(mut due) = deadline else {
                return stream.write_all(bytes).await;
            };
            while !bytes.is_empty() {
                match timeout_at(due.into(), stream.write(bytes)).await {
                    Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(Ok(n)) => bytes = &bytes[n..],
                    Ok(Err(e)) => return Err(e),
                    Err(_) if kernel_can_write(fd) => {}
                    Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                }
                due = idle
                    .and_then(|t| Instant::now().checked_add(t))
                    .unwrap_or(due);
            }
            Ok(())
        };
        let written = tokio::select! {
            r = write => r,
            _ = shutdown.wait_for(|p| *p == Phase::Abort) => return Err(End::Drain),
        };
        // A TLS stream may still hold records: they go out within the
        // same deadline. (A separate step, so that a plain connection's
        // task is no larger than before.)
        let done = match written {
            Ok(()) if self.stream.wants_flush() => {
                let flush = async {
                    match deadline {
                        Some(d) => timeout_at(d.into(), self.stream.flush())
                            .await
                            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                        None => self.stream.flush().await,
                    }
                };
                tokio::select! {
                    r = flush => r,
                    _ = shutdown.wait_for(|p| *p == Phase::Abort) => return Err(End::Drain),
                }
            }
            r => r,
        };
        match done {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(End::Idle),
            Err(e) => Err(End::Error(e)),
        }
    }
}

/// When a connection that stays silent must end, and what the end is
/// called: `--idle-timeout` after the last complete line; while the server
/// drains, also [`DRAIN_QUIET`] after the last byte, whichever comes
/// first. `None`: never.
fn deadline(
    phase: Phase,
    idle_timeout: Option<Duration>,
    last_line: Instant,
    last_byte: Instant,
) -> Option<(Instant, End)> {
    // A timeout too far off to be a clock reading never comes.
    let idle = idle_timeout
        .and_then(|t| last_line.checked_add(t))
        .map(|d| (d, End::Idle));
    match phase {
        Phase::Running => idle,
        Phase::Draining | Phase::Abort => {
            let quiet = (last_byte + DRAIN_QUIET, End::Drain);
            Some(match idle {
                Some(i) if i.0 <= quiet.0 => i,
                _ => quiet,
            })
        }
    }
}

/// Waits for the server's phase to change (`false`: the server is gone),
/// and gives the receiver back for the next wait.
async fn phase_changed(mut rx: watch::Receiver<Phase>) -> (watch::Receiver<Phase>, bool) {
    let alive = rx.changed().await.is_ok();
    (rx, alive)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        thread_local!(static ZERO: Instant = Instant::now());
        ZERO.with(|z| *z + Duration::from_millis(ms))
    }

    fn due(phase: Phase, idle_ms: Option<u64>, line: u64, byte: u64) -> Option<(Instant, String)> {
        deadline(
            phase,
            idle_ms.map(Duration::from_millis),
            at(line),
            at(byte),
        )
        .map(|(d, why)| (d, why.to_string()))
    }

    /// A reset with nothing queued: asking whether there is input must
    /// leave the reset to the read, or the read sees a clean end and a
    /// partial last line cut by the reset is written as a line.
    #[test]
    fn asking_for_input_leaves_a_reset_to_the_read() {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        nix::sys::socket::setsockopt(
            &c,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(c);
        let start = Instant::now();
        while !kernel_has_input(s.as_raw_fd()) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(kernel_has_input(s.as_raw_fd()));
        let e = (&s).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn running_ends_only_at_the_idle_timeout() {
        assert_eq!(due(Phase::Running, None, 0, 0), None);
        assert_eq!(
            due(Phase::Running, Some(2000), 100, 1900),
            Some((at(2100), "idle timeout".into()))
        );
    }

    #[test]
    fn draining_ends_at_a_quiet_second_or_the_idle_timeout() {
        // Bytes came a moment ago: quiet one second after them.
        assert_eq!(
            due(Phase::Draining, None, 0, 500),
            Some((at(1500), "drain".into()))
        );
        assert_eq!(
            due(Phase::Draining, Some(60_000), 0, 500),
            Some((at(1500), "drain".into()))
        );
        // The idle timeout comes first: it is named.
        assert_eq!(
            due(Phase::Draining, Some(300), 0, 500),
            Some((at(300), "idle timeout".into()))
        );
    }
}
