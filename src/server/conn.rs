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
    /// Complete lines read and handed to the sink, for the log line.
    lines: u64,
    /// Acks written to the client, for the log line: fewer than `lines`
    /// when the connection ended between a commit and its ack.
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
        let mut chunk = FIRST_READ;
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
                _ = &mut timer, if due.is_some() => {
                    match due {
                        // The timer was set for an earlier deadline, which
                        // has moved on since.
                        Some((d, _)) if d > Instant::now() => {
                            timer.as_mut().reset(d.into());
                            continue;
                        }
                        Some((_, why)) => return why,
                        None => continue,
                    }
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
                        chunk = (chunk * 2).min(READ_CHUNK);
                    }
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return End::Error(e),
            };
            let now = Instant::now();
            last_byte = now;
            let taken = framer.take(prefix, eof);
            if let Some(lines) = taken.lines {
                last_line = now;
                if let Err(e) = self.commit_and_ack(lines).await {
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

    /// Hands the lines to the sink and acks them once they are written.
    async fn commit_and_ack(&mut self, lines: Lines) -> Result<(), End> {
        let n = lines.count;
        self.lines += n;
        if !self.shared.sink.commit(lines.data, n).await {
            return Err(End::OutputFailed);
        }
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
    let idle = idle_timeout.map(|t| (last_line + t, End::Idle));
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
