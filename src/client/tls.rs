//! sockclient's TLS socket: a rustls `ClientConnection` over a blocking
//! `TcpStream`, shared by the writer thread and the ack reader as the
//! plain socket is.
//!
//! The rustls state is behind a mutex that is never held across a
//! blocking socket call, so the reader waiting for acks never stops the
//! writer, and a writer blocked on a full socket never stops the reader
//! (the server stops reading while its acks are not read: holding the
//! lock there would deadlock both). The reader reads ciphertext without
//! the lock and hands it to rustls under it; the writer encrypts under
//! the lock, takes the records out, and writes them after, under a second
//! lock that keeps records in the order they were made. Only the writer
//! sends: what rustls queues while reading (a key update's answer) goes
//! out with the next write.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use super::Signals;
use crate::tls::describe_error;

/// Ciphertext read from the socket at once.
const READ_TLS: usize = 64 * 1024;

#[derive(Debug)]
pub struct TlsSock {
    tcp: TcpStream,
    state: Mutex<State>,
    /// Held while encrypted records are written, so that they reach the
    /// socket in the order rustls made them.
    send: Mutex<()>,
}

#[derive(Debug)]
struct State {
    tls: ClientConnection,
    /// Plaintext taken from rustls and not yet read.
    plain: Vec<u8>,
    pos: usize,
    /// The server's `close_notify` came.
    closed: bool,
}

fn tls_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, describe_error(e))
}

/// How a handshake failed.
pub enum Handshake {
    /// SIGINT or SIGTERM came (its number).
    Signal(i32),
    /// Why, in words.
    Failed(String),
}

impl TlsSock {
    /// The handshake over `tcp`, within `timeout`, awake to signals.
    pub fn connect(
        tcp: TcpStream,
        mut tls: ClientConnection,
        timeout: Duration,
        signals: &Signals,
    ) -> Result<TlsSock, Handshake> {
        let deadline = Instant::now() + timeout;
        let failed = |e: io::Error| Handshake::Failed(crate::diag::describe(&e));
        while tls.is_handshaking() {
            while tls.wants_write() {
                tls.write_tls(&mut &tcp).map_err(failed)?;
            }
            if !tls.is_handshaking() {
                break;
            }
            if let Some(s) = signals.first() {
                return Err(Handshake::Signal(s));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Handshake::Failed(format!(
                    "no TLS handshake within {:.1} s",
                    timeout.as_secs_f64()
                )));
            }
            tcp.set_read_timeout(Some(left.min(super::TICK)))
                .map_err(failed)?;
            match tls.read_tls(&mut &tcp) {
                Ok(0) => {
                    return Err(Handshake::Failed(
                        "the server closed the connection during the TLS handshake".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if super::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Err(e) => return Err(failed(e)),
            }
            if let Err(e) = tls.process_new_packets() {
                // Our alert, so the server's log says why too.
                let _ = tls.write_tls(&mut &tcp);
                return Err(Handshake::Failed(describe_error(&e)));
            }
        }
        // Our last flight (Finished, and a client certificate).
        while tls.wants_write() {
            tls.write_tls(&mut &tcp).map_err(failed)?;
        }
        Ok(TlsSock {
            tcp,
            state: Mutex::new(State {
                tls,
                plain: Vec::new(),
                pos: 0,
                closed: false,
            }),
            send: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(t)
    }

    /// Plaintext, as a socket read gives it: `Ok(0)` once the server's
    /// `close_notify` came; an error for a TCP end without one.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cipher = Vec::new();
        loop {
            {
                let mut st = self.lock();
                if st.pos < st.plain.len() {
                    let n = buf.len().min(st.plain.len() - st.pos);
                    buf[..n].copy_from_slice(&st.plain[st.pos..st.pos + n]);
                    st.pos += n;
                    return Ok(n);
                }
                if !cipher.is_empty() {
                    st.take(&cipher)?;
                    cipher.clear();
                    continue;
                }
                // What came with the handshake's last flight.
                st.drain()?;
                if st.pos < st.plain.len() {
                    continue;
                }
                if st.closed {
                    return Ok(0);
                }
            }
            // Without the lock: the writer goes on meanwhile.
            cipher.resize(READ_TLS, 0);
            match (&self.tcp).read(&mut cipher) {
                Ok(0) => {
                    cipher.clear();
                    let mut st = self.lock();
                    st.tls.read_tls(&mut io::empty())?;
                    st.tls.process_new_packets().map_err(|e| tls_error(&e))?;
                    st.drain()?;
                    if st.pos < st.plain.len() {
                        continue;
                    }
                    if st.closed {
                        return Ok(0);
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection without a TLS close_notify",
                    ));
                }
                Ok(n) => cipher.truncate(n),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts and sends all of `buf`.
    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        let _order = self.send.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        while !buf.is_empty() {
            {
                let mut st = self.lock();
                let n = st.tls.writer().write(buf)?;
                buf = &buf[n..];
                while st.tls.wants_write() {
                    st.tls.write_tls(&mut out)?;
                }
            }
            (&self.tcp).write_all(&out)?;
            out.clear();
        }
        Ok(())
    }

    /// `Write`: our `close_notify`, then the TCP half-close; the acks
    /// owed are still read. `Both`: the socket is shut at once (no lock
    /// taken, so a blocked write returns).
    /// The TCP connection under the TLS.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how == Shutdown::Write {
            let _order = self.send.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            {
                let mut st = self.lock();
                st.tls.send_close_notify();
                while st.tls.wants_write() {
                    st.tls.write_tls(&mut out)?;
                }
            }
            (&self.tcp).write_all(&out)?;
        }
        self.tcp.shutdown(how)
    }
}

impl State {
    /// Hands ciphertext to rustls and takes the plaintext out.
    fn take(&mut self, mut cipher: &[u8]) -> io::Result<()> {
        while !cipher.is_empty() {
            let n = self.tls.read_tls(&mut cipher)?;
            self.tls.process_new_packets().map_err(|e| tls_error(&e))?;
            self.drain()?;
            if n == 0 {
                // After the server's close_notify: nothing more is read.
                break;
            }
        }
        Ok(())
    }

    /// Moves the plaintext rustls holds to `plain`.
    fn drain(&mut self) -> io::Result<()> {
        if self.pos == self.plain.len() {
            self.plain.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(());
                }
                Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
