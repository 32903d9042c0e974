//! A TLS connection in the connection loop of `conn.rs`.
//!
//! That loop is readiness-based (wait until readable, then read what is
//! there without waiting), which keeps an idle plain connection free of
//! buffers. [`TlsConn`] keeps that shape: it drives a rustls
//! `ServerConnection` over a tokio `TcpStream` by hand, so "readable"
//! means "the socket is readable, or rustls still holds bytes", and a
//! read decrypts whatever the socket has without waiting. Ciphertext is
//! read from the socket up to 64 KiB at a time (rustls alone would read
//! 4 KiB per call) and the buffer goes once it is used up.
//!
//! Writes go through rustls, which encrypts them into its own buffer; a
//! write is only done when that buffer reached the socket, so the loop
//! flushes after a write that left some behind ([`Conn::wants_flush`]).
//!
//! Half-close is `close_notify`: the client's ends its input (a read
//! returns 0) while the server can still send the acks it owes; the
//! server's own `close_notify` goes out with the shutdown at the end.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{self, kernel_has_input, Conn};
use super::{Phase, Shared};
use crate::diag::describe;
use crate::tls::{describe_error, TlsId};

/// Ciphertext read from the socket at once, at most.
const READ_TLS: usize = 64 * 1024;
/// Plaintext taken from rustls at once (it holds at most a little over
/// 16 KiB after one read of ciphertext).
const PLAIN_STEP: usize = 32 * 1024;

/// A TLS stream over TCP, server side.
pub struct TlsConn {
    tcp: TcpStream,
    tls: ServerConnection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    inbuf: Vec<u8>,
    /// How much of `inbuf` rustls has taken.
    inpos: usize,
    /// The socket reached its end (TCP FIN).
    tcp_eof: bool,
    /// The client's input is over: its `close_notify` came, or its TCP
    /// end without one.
    closed: bool,
    /// rustls was told of the socket's end.
    eof_fed: bool,
    /// Our `close_notify` was queued.
    sent_close: bool,
    /// The client's input ended with its `close_notify`: nothing of it
    /// was cut, whatever the TCP connection did after.
    notified: bool,
    /// A write of records rustls queued on its own (an ack's, a ticket)
    /// failed while reading: how. The reading goes on.
    write_failed: Option<io::ErrorKind>,
}

/// A failed TLS record or handshake, with the reason in words.
pub fn tls_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, crate::tls::describe_error(e))
}

/// `io::Write` over a tokio socket without waiting.
struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsConn {
    pub fn new(tcp: TcpStream, tls: ServerConnection) -> TlsConn {
        TlsConn::with_input(tcp, tls, Vec::new())
    }

    /// A TLS stream whose first bytes were read already (after a PROXY
    /// header).
    pub fn with_input(tcp: TcpStream, tls: ServerConnection, first: Vec<u8>) -> TlsConn {
        TlsConn {
            tcp,
            tls,
            inbuf: first,
            inpos: 0,
            tcp_eof: false,
            closed: false,
            eof_fed: false,
            sent_close: false,
            notified: false,
            write_failed: None,
        }
    }

    /// The TLS state: after the handshake, the client's certificates.
    pub fn tls(&self) -> &ServerConnection {
        &self.tls
    }

    /// Ciphertext read and not yet given to rustls.
    fn has_ciphertext(&self) -> bool {
        self.inpos < self.inbuf.len()
    }

    /// Gives rustls the ciphertext read so far (or the socket's end) and
    /// processes it. `Ok(false)`: nothing was there to give.
    fn feed(&mut self) -> io::Result<bool> {
        if self.has_ciphertext() {
            let mut rd = &self.inbuf[self.inpos..];
            let n = self.tls.read_tls(&mut rd)?;
            if n == 0 {
                // After the client's close_notify nothing more is taken.
                self.inpos = self.inbuf.len();
            } else {
                self.inpos += n;
            }
            if !self.has_ciphertext() {
                // Used up: no buffer is held while the client is quiet.
                self.inbuf = Vec::new();
                self.inpos = 0;
            }
        } else if self.tcp_eof && !self.eof_fed {
            self.eof_fed = true;
            self.tls.read_tls(&mut io::empty())?;
        } else {
            return Ok(false);
        }
        self.process()?;
        Ok(true)
    }

    /// Processes what rustls was given; on an error, sends the alert it
    /// queued if the socket takes it now.
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.flush_now();
            return Err(tls_error(&e));
        }
        if self.tls.wants_write() {
            // A key update, a ticket, an ack's record: sent now if it
            // fits, else with the next write. A client that went away
            // (a reset, a closed reading side) fails it, but what it sent
            // before is still to be read: the failure is noted, and the
            // acks' own write reports it.
            match self.flush_now() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    if self.tls.is_handshaking() {
                        return Err(e);
                    }
                    self.write_failed.get_or_insert(e.kind());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads ciphertext from the socket without waiting.
    fn read_socket(&mut self) -> io::Result<()> {
        self.inbuf.reserve(READ_TLS);
        match self.tcp.try_read_buf(&mut self.inbuf) {
            Ok(0) => {
                self.tcp_eof = true;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes what rustls has encrypted to the socket, without waiting:
    /// `WouldBlock` when the socket did not take all of it.
    fn flush_now(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut TryWrite(&self.tcp))?;
        }
        Ok(())
    }

    /// Waits until everything rustls has encrypted is on the socket.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.flush_now() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    /// The handshake, to its end or its failure (the reason in words);
    /// the caller bounds it in time.
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            poll_fn(|cx| self.poll_flush_tls(cx)).await?;
            if !self.tls.is_handshaking() {
                break;
            }
            if self.feed()? {
                continue;
            }
            if self.tcp_eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ));
            }
            match self.read_socket() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.readable().await?,
                Err(e) => return Err(e),
            }
        }
        // The server's last flight (and TLS 1.3 session tickets).
        poll_fn(|cx| self.poll_flush_tls(cx)).await
    }

    /// Takes the plaintext rustls holds into `buf`'s spare room.
    /// `Ok(None)`: none held.
    fn take_plain(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        let len = buf.len();
        let step = (buf.capacity() - len).min(PLAIN_STEP);
        if step == 0 {
            return Ok(Some(0));
        }
        buf.resize(len + step, 0);
        let r = self.tls.reader().read(&mut buf[len..]);
        let n = *r.as_ref().unwrap_or(&0);
        buf.truncate(len + n);
        match r {
            Ok(0) => {
                // The client's close_notify.
                self.closed = true;
                self.notified = true;
                Ok(Some(0))
            }
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                // The TCP end without a close_notify: the end of input
                // all the same (only complete lines are ever written).
                self.closed = true;
                Ok(Some(0))
            }
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for TlsConn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl Conn for TlsConn {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed || self.has_ciphertext() || self.tcp_eof {
            return Poll::Ready(Ok(()));
        }
        if self
            .tls
            .process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
        {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    /// Decrypts what the socket has, up to `buf`'s spare room, without
    /// waiting; `Ok(0)` is the client's end of input.
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let start = buf.len();
        loop {
            if self.closed {
                return Ok(buf.len() - start);
            }
            match self.take_plain(buf)? {
                Some(0) => return Ok(buf.len() - start),
                Some(_) => continue,
                None => {}
            }
            if self.feed()? {
                continue;
            }
            if buf.len() > start {
                // Something to frame: no second read of the socket now.
                return Ok(buf.len() - start);
            }
            if self.tcp_eof {
                // feed() gave rustls the end; take_plain() saw it.
                self.closed = true;
                return Ok(0);
            }
            self.read_socket()?;
        }
    }

    /// Encrypts what rustls takes of `buf` and sends what the socket
    /// takes; what it does not stays for [`Conn::wants_flush`].
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush_now()?;
        let n = self.tls.writer().write(buf)?;
        match self.flush_now() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn wants_flush(&self) -> bool {
        self.tls.wants_write()
    }

    fn has_input(&self) -> bool {
        self.closed || self.has_ciphertext() || self.tcp_eof || kernel_has_input(self.as_raw_fd())
    }

    /// After the client's `close_notify` nothing was cut.
    fn may_be_cut(&self) -> bool {
        !self.notified
    }

    fn was_reset(&self) -> bool {
        self.write_failed == Some(io::ErrorKind::ConnectionReset)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_flush_tls(cx))?;
            let n = this.tls.writer().write(buf)?;
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_tls(cx)
    }

    /// Our `close_notify`, then the TCP half-close.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close {
            this.tls.send_close_notify();
            this.sent_close = true;
        }
        ready!(this.poll_flush_tls(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Serves a TCP connection over TLS: the handshake, bounded by the idle
/// timeout (a client that never finishes it is closed) and holding the
/// connection's slot (`slot`, so handshakes count against
/// `--max-connections`), then the connection as any other, its peer
/// named by its client certificate if it gave one.
pub async fn serve(
    tcp: TcpStream,
    opening: conn::Opening,
    config: Arc<ServerConfig>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    slot: impl Send,
) {
    // The handshake's flights and tickets are several small writes in a
    // row: with Nagle's algorithm each waits for the client's delayed
    // ACK (40 ms).
    let _ = tcp.set_nodelay(true);
    let conn::Opening { peer, first, quiet } = opening;
    let mut t = match ServerConnection::new(config) {
        // What came after a PROXY header is the start of the handshake.
        Ok(c) => TlsConn::with_input(tcp, c, first),
        Err(e) => {
            crate::error!("{peer}: cannot start TLS: {}", describe_error(&e));
            return;
        }
    };
    if let Err(why) = bounded_handshake(&mut t, shared.cfg.idle_timeout, &mut phase).await {
        drop(t);
        drop(slot);
        if quiet {
            // A balancer's health check (PROXY LOCAL) that did not do TLS.
            crate::debug!("{peer}: health check closed before a TLS handshake: {why}");
        } else {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            crate::info!("{peer}: refused: TLS handshake failed: {why}");
        }
        return;
    }
    let id = t
        .tls()
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| TlsId::from_cert(c));
    let peer = match id {
        Some(id) => peer.with_tls(id),
        None => peer,
    };
    let opening = conn::Opening {
        peer,
        first: Vec::new(),
        quiet,
    };
    conn::serve(t, opening, shared, phase, slot).await;
}

/// The handshake within the idle timeout; while the server drains, within
/// [`conn::DRAIN_QUIET`] of the drain's start; never past an abort.
async fn bounded_handshake(
    t: &mut TlsConn,
    idle: Option<Duration>,
    phase: &mut watch::Receiver<Phase>,
) -> Result<(), String> {
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    let mut deadline = idle
        .and_then(|d| Instant::now().checked_add(d))
        .unwrap_or_else(far);
    let hs = t.handshake();
    tokio::pin!(hs);
    loop {
        let running = *phase.borrow_and_update() == Phase::Running;
        if *phase.borrow() == Phase::Abort {
            return Err("the server stopped".into());
        }
        if !running {
            deadline = deadline.min(Instant::now() + conn::DRAIN_QUIET);
        }
        tokio::select! {
            r = &mut hs => return r.map_err(|e| describe(&e)),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(if running {
                    "not finished within the idle timeout".into()
                } else {
                    "not finished when the server began to drain".into()
                });
            }
            r = phase.changed() => {
                if r.is_err() {
                    return Err("the server stopped".into());
                }
            }
        }
    }
}

/// A refusal over TLS: the handshake, the refusal line, our
/// `close_notify`, then the client's input read and dropped until it
/// closes, as for a plain refusal, all within a bound. A client whose
/// certificate fails verification gets no line: the handshake ends it.
pub async fn refuse(tcp: TcpStream, config: Arc<ServerConfig>, line: &[u8]) {
    let _ = tcp.set_nodelay(true);
    let Ok(c) = ServerConnection::new(config) else {
        return;
    };
    let mut t = TlsConn::new(tcp, c);
    let _ = tokio::time::timeout(2 * super::REFUSAL_LINGER, async {
        t.handshake().await?;
        t.write_all(line).await?;
        t.shutdown().await?;
        let mut sink = Vec::with_capacity(4096);
        loop {
            poll_fn(|cx| t.poll_readable(cx)).await?;
            sink.clear();
            match t.try_read_buf(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
}
