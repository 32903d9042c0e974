//! One connection's life: greeting, then read, frame, commit, ack, until
//! the client is done, goes idle, breaks a limit, or the server stops.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::time::timeout_at;

use super::{Phase, Shared};
use crate::diag::describe;
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

/// During a drain, a connection that has sent nothing for this long is
/// "quiet" and is closed.
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// A connected stream, TCP or Unix: what the loop below needs of it.
pub trait Conn: AsyncWrite + Unpin + Send + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl Conn for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl Conn for UnixStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UnixStream::readable(self)
    }
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        UnixStream::try_read_buf(self, buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
}

/// Why a connection ended, as the log line says it.
#[derive(Debug)]
enum End {
    ClientEof,
    Idle,
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
            End::TooLong => f.write_str("line too long"),
            End::Drain => f.write_str("drain"),
            End::OutputFailed => f.write_str("output failed"),
            End::Error(e) => write!(f, "error: {}", describe(e)),
        }
    }
}

struct State<S> {
    stream: S,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Phase>,
    lines: u64,
    acks: u64,
}

/// Serves one client to its end and logs one line about it. `slot` (the
/// connection-limit permit) is released with the socket, before that
/// line, so "closed" in the log means the next client can be served.
pub async fn serve<S: Conn>(
    stream: S,
    peer: String,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<Phase>,
    slot: impl Send,
) {
    let started = Instant::now();
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    crate::debug!("{peer}: connected");
    let mut st = State {
        stream,
        shared: shared.clone(),
        shutdown,
        lines: 0,
        acks: 0,
    };
    let end = st.run(&peer).await;
    let _ = st.stream.shutdown().await;
    let State {
        stream,
        lines,
        acks,
        ..
    } = st;
    drop(stream);
    drop(slot);
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    crate::info!(
        "{peer}: closed ({end}): {lines} lines, {acks} acks, {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

impl<S: Conn> State<S> {
    async fn run(&mut self, peer: &str) -> End {
        let cfg = self.shared.cfg.clone();
        if let Err(e) = self.write(&cfg.texts.greeting_line()).await {
            return e;
        }
        let prefix = cfg.prefix_peer.then(|| format!("{peer}\t").into_bytes());
        let prefix = prefix.as_deref();
        let mut framer = Framer::new(cfg.max_line);
        let mut last_line = Instant::now();
        let mut last_byte = Instant::now();
        // One timer for the connection's life. It is moved only when the
        // deadline comes earlier, or when it fires before the deadline,
        // which has moved on since: not once per read.
        let timer = tokio::time::sleep_until(far_future().into());
        tokio::pin!(timer);
        let read_max = if prefix.is_some() {
            PREFIXED_READ
        } else {
            READ_CHUNK
        };
        let mut chunk = FIRST_READ.min(read_max);
        loop {
            let phase = *self.shutdown.borrow_and_update();
            let idle = cfg.idle_timeout.map(|t| last_line + t);
            let deadline = match phase {
                Phase::Running => idle,
                Phase::Draining => {
                    Some(idle.map_or(last_byte + DRAIN_QUIET, |i| i.min(last_byte + DRAIN_QUIET)))
                }
                Phase::Abort => return End::Drain,
            };
            if let Some(d) = deadline {
                if d < timer.deadline().into_std() {
                    timer.as_mut().reset(d.into());
                }
            }
            tokio::select! {
                biased;
                r = self.shutdown.changed() => {
                    if r.is_err() {
                        return End::Drain;
                    }
                    continue;
                }
                r = self.stream.readable() => {
                    if let Err(e) = r {
                        return End::Error(e);
                    }
                }
                _ = &mut timer, if deadline.is_some() => {
                    let now = Instant::now();
                    if let Some(d) = deadline.filter(|d| *d > now) {
                        timer.as_mut().reset(d.into());
                        continue;
                    }
                    timer.as_mut().reset(far_future().into());
                    return if phase == Phase::Running || idle.is_some_and(|i| now >= i) {
                        End::Idle
                    } else {
                        End::Drain
                    };
                }
            }
            let buf = framer.buffer();
            if buf.capacity() - buf.len() < chunk / 2 {
                buf.reserve(chunk);
            }
            let spare = buf.capacity() - buf.len();
            let eof = match self.stream.try_read_buf(buf) {
                Ok(0) => true,
                Ok(n) => {
                    if n == spare {
                        chunk = (chunk * 2).min(read_max);
                    }
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return End::Error(e),
            };
            let now = Instant::now();
            last_byte = now;
            let taken = framer.take(None, eof);
            if let Some(lines) = taken.lines {
                last_line = now;
                let done = match prefix {
                    None => self.commit_and_ack(lines).await,
                    Some(p) => self.commit_prefixed(p, lines).await,
                };
                if let Err(e) = done {
                    return e;
                }
            }
            if taken.too_long {
                let _ = self.write(&protocol::too_long_line(cfg.max_line)).await;
                return End::TooLong;
            }
            if eof {
                return End::ClientEof;
            }
            framer.shrink_if_empty();
        }
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

    /// Hands the lines to the sink and acks them once they are written.
    async fn commit_and_ack(&mut self, lines: Lines) -> Result<(), End> {
        let n = lines.count;
        self.commit(lines).await?;
        self.ack(n).await
    }

    /// Hands lines to the sink; `Err` when they did not reach the output.
    async fn commit(&mut self, lines: Lines) -> Result<(), End> {
        self.lines += lines.count;
        if !self.shared.sink.commit(lines.data, lines.count).await {
            return Err(End::OutputFailed);
        }
        Ok(())
    }

    /// Acks `n` lines, in as few writes as the ack block allows.
    async fn ack(&mut self, n: u64) -> Result<(), End> {
        let block = self.shared.ack_block.clone();
        let per = self.shared.ack_len;
        let mut left = n as usize;
        while left > 0 {
            let k = left.min(block.len() / per);
            self.write(&block[..k * per]).await?;
            left -= k;
            self.acks += k as u64;
        }
        Ok(())
    }

    /// Writes to the client, giving up when it does not read for the idle
    /// timeout, or when the server aborts.
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), End> {
        // Most writes fit the socket buffer at once: no timer, no wait.
        match self.stream.try_write(bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(End::Error(e)),
        }
        let deadline = self.shared.cfg.idle_timeout.map(|t| Instant::now() + t);
        let mut shutdown = self.shutdown.clone();
        let write = async {
            match deadline {
                Some(d) => timeout_at(d.into(), self.stream.write_all(bytes))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                None => self.stream.write_all(bytes).await,
            }
        };
        tokio::select! {
            r = write => match r {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(End::Idle),
                Err(e) => Err(End::Error(e)),
            },
            _ = shutdown.wait_for(|p| *p == Phase::Abort) => Err(End::Drain),
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
