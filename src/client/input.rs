//! Standard input to the socket, through the window of unacked lines.
//!
//! Two threads share [`Pipe`] with the main thread: the *reader* copies
//! standard input into the [`Window`] and stops while it is full; the
//! *writer* copies what the current connection has not had yet from the
//! window to the socket. Only the writer writes, so after a reconnect the
//! unacked tail goes out again first and in order, whatever the reader is
//! doing (blocked on a terminal, or waiting for room).
//!
//! # Why not [`crate::protocol::Framer`]
//!
//! The server frames with `Framer`, which folds CR LF into LF and hands out
//! whole lines only. The client must not: it sends its input byte for
//! byte as it was read (a `\r` before the `\n` included, so the server
//! sees exactly what a netcat would send), and it sends a partial line as
//! soon as it is read (a line typed slowly, or one longer than a read).
//! All it needs is where each line ends, to count lines and to drop acked
//! ones from the front of the window: one `memchr` pass, done here.

use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use memchr::{memchr, memchr_iter};

use super::connect::Sock;
use crate::diag::describe;

/// Bytes read from standard input at a time, and written at most at once.
const CHUNK: usize = 128 * 1024;

/// Where the input stands. One state, set under the [`Pipe`]'s lock: it
/// replaces the flags that used to overlap (`input_done`, `stop`,
/// `input_complete`, `partial`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Reading standard input.
    Reading,
    /// Standard input reached its end; all of it is in the window.
    Ended,
    /// SIGINT or SIGTERM (the number) stopped the reading.
    Signalled(i32),
    /// Standard output closed, so reading stopped.
    OutputClosed,
    /// Reading standard input failed (why).
    Failed(String),
}

/// The lines read and not yet acked, as the bytes that were (or will be)
/// written. Acks are in order, so what a broken connection lost is exactly
/// the tail `buf[head..]`.
#[derive(Debug, Default)]
pub struct Window {
    buf: Vec<u8>,
    /// Start of the first unacked line.
    head: usize,
    /// End of what the current connection was given.
    sent: usize,
    /// End of what any connection was given.
    high: usize,
    /// Complete lines in `buf[head..]`.
    lines: u64,
    /// Complete lines in `buf[head..sent]`: written on this connection, ack
    /// owed.
    in_flight: u64,
}

impl Window {
    /// Bytes held (unacked, sent or not).
    pub fn bytes(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Complete lines held (read and not acked).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Lines the current connection owes acks for.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Appends bytes read; returns the complete lines they ended.
    pub fn push(&mut self, bytes: &[u8]) -> u64 {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.sent -= self.head;
            self.high -= self.head;
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
        let n = memchr_iter(b'\n', bytes).count() as u64;
        self.lines += n;
        n
    }

    /// Ends a last line that has no newline with one; returns 1 if it did.
    pub fn end_partial(&mut self) -> u64 {
        if self.buf.len() > self.head && self.buf.last() != Some(&b'\n') {
            self.push(b"\n")
        } else {
            0
        }
    }

    /// Drops what was read but never given to any connection, as if it had
    /// not been read (the input was stopped). A line already begun on the
    /// wire is kept to its end, and ended with a newline if the window
    /// holds no more of it. Returns the complete lines held now.
    pub fn drop_unsent(&mut self) -> u64 {
        let mut keep = self.high.max(self.sent);
        if keep > self.head && self.buf[keep - 1] != b'\n' {
            match memchr(b'\n', &self.buf[keep..]) {
                Some(i) => keep += i + 1,
                None => keep = self.buf.len(),
            }
        }
        let dropped = memchr_iter(b'\n', &self.buf[keep..]).count() as u64;
        self.buf.truncate(keep);
        self.lines -= dropped;
        self.end_partial();
        self.lines
    }

    /// Takes the next bytes for the current connection (at most `max`)
    /// into `out`, counting the lines they end as in flight. Returns those
    /// lines, and how many of them no connection had before.
    fn take_unsent(&mut self, out: &mut Vec<u8>, max: usize) -> (u64, u64) {
        out.clear();
        let end = self.buf.len().min(self.sent + max);
        out.extend_from_slice(&self.buf[self.sent..end]);
        let n = memchr_iter(b'\n', out).count() as u64;
        let new_start = self.high.max(self.sent);
        let fresh = if end > new_start {
            memchr_iter(b'\n', &self.buf[new_start..end]).count() as u64
        } else {
            0
        };
        self.in_flight += n;
        self.sent = end;
        self.high = self.high.max(end);
        (n, fresh)
    }

    fn unsent(&self) -> bool {
        self.sent < self.buf.len()
    }

    /// Takes `n` acks: drops as many lines from the front, and, for
    /// `--echo`, appends each of them (without its line ending), a tab and
    /// `ack` to `echo`. Returns the acks beyond the lines in flight.
    pub fn ack(&mut self, n: u64, echo: Option<(&mut Vec<u8>, &[u8])>) -> u64 {
        let take = n.min(self.in_flight);
        if take > 0 {
            let rest = &self.buf[self.head..self.sent];
            let mut end = 0;
            let mut echo = echo;
            for (i, nl) in memchr_iter(b'\n', rest).enumerate() {
                if let Some((out, ack)) = echo.as_mut() {
                    out.extend_from_slice(crate::protocol::trim_eol(&rest[end..=nl]));
                    out.push(b'\t');
                    out.extend_from_slice(ack);
                    out.push(b'\n');
                }
                end = nl + 1;
                if i as u64 + 1 == take {
                    break;
                }
            }
            self.head += end;
            self.lines -= take;
            self.in_flight -= take;
            if self.head == self.buf.len() {
                self.buf.clear();
                self.head = 0;
                self.sent = 0;
                self.high = 0;
            }
        }
        n - take
    }

    /// A new connection: everything unacked goes out again. Returns the
    /// lines the old connection had and did not ack (to be resent).
    fn restart(&mut self) -> u64 {
        let lost = self.in_flight;
        self.sent = self.head;
        self.in_flight = 0;
        lost
    }
}

/// What the three threads share.
pub struct Pipe {
    pub state: Mutex<State>,
    /// Signalled on every change of `state`.
    pub changed: Condvar,
}

/// The shared state, all under one lock.
pub struct State {
    pub window: Window,
    pub input: Input,
    /// `--window`: the bytes the window may hold before reading stops.
    pub limit: usize,
    /// The current connection, for the writer; `None` between connections.
    pub conn: Option<Arc<Sock>>,
    /// Counts connections, so a late error of an old one is not taken for
    /// the current one's.
    pub generation: u64,
    /// The writer shut the current connection's write side.
    pub half_closed: bool,
    /// Writing to the current connection failed (why).
    pub write_error: Option<String>,
    pub counts: super::Counts,
}

impl Pipe {
    pub fn new(limit: usize) -> Pipe {
        Pipe {
            state: Mutex::new(State {
                window: Window::default(),
                input: Input::Reading,
                limit,
                conn: None,
                generation: 0,
                half_closed: false,
                write_error: None,
                counts: super::Counts::default(),
            }),
            changed: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the writer a new connection: what is unacked goes out first.
    /// Returns the lines the last connection had and did not ack.
    pub fn connect(&self, sock: Arc<Sock>) -> u64 {
        let mut st = self.lock();
        let resend = st.window.restart();
        if st.generation > 0 {
            st.counts.reconnects += 1;
            st.counts.resent += resend;
        }
        st.generation += 1;
        st.conn = Some(sock);
        st.half_closed = false;
        st.write_error = None;
        drop(st);
        self.changed.notify_all();
        resend
    }

    /// Takes the connection from the writer and shuts it, so that a write
    /// blocked on it returns.
    pub fn disconnect(&self) {
        let old = self.lock().conn.take();
        if let Some(s) = old {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.changed.notify_all();
    }

    /// Stops the input (a signal, or standard output closed): no more is
    /// read, and what was read but never sent is dropped, as input left
    /// unread. A signal after the end of the input still counts as the
    /// stop: the run did not finish on its own.
    pub fn stop(&self, why: Input) {
        let mut st = self.lock();
        if !matches!(st.input, Input::Reading | Input::Ended) {
            return;
        }
        st.input = why;
        let before = st.window.lines();
        let now = st.window.drop_unsent();
        st.counts.read = st.counts.read - before + now;
        drop(st);
        self.changed.notify_all();
    }
}

/// The reader: standard input into the window, until it ends, fails, or
/// the input is stopped.
pub fn read_stdin(pipe: Arc<Pipe>) {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; CHUNK];
    loop {
        {
            let mut st = pipe.lock();
            while st.input == Input::Reading
                && st.window.bytes() >= st.limit
                && st.window.lines() > 0
            {
                st = pipe.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.input != Input::Reading {
                return;
            }
        }
        let result = stdin.read(&mut buf);
        let mut st = pipe.lock();
        if st.input != Input::Reading {
            return;
        }
        match result {
            Ok(0) => {
                let n = st.window.end_partial();
                st.counts.read += n;
                st.input = Input::Ended;
            }
            Ok(n) => {
                let lines = st.window.push(&buf[..n]);
                st.counts.read += lines;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let n = st.window.end_partial();
                st.counts.read += n;
                st.input = Input::Failed(format!("cannot read standard input: {}", describe(&e)));
            }
        }
        let done = st.input != Input::Reading;
        drop(st);
        pipe.changed.notify_all();
        if done {
            return;
        }
    }
}

/// The writer: what the current connection has not had, from the window
/// to the socket; at the end of the input, the half-close. Runs until the
/// process ends.
pub fn write_socket(pipe: Arc<Pipe>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let (sock, generation, shut) = {
            let mut st = pipe.lock();
            loop {
                if let (Some(sock), None) = (st.conn.clone(), &st.write_error) {
                    if st.window.unsent() {
                        let (_, fresh) = st.window.take_unsent(&mut chunk, CHUNK);
                        st.counts.sent += fresh;
                        break (sock, st.generation, false);
                    }
                    if st.input != Input::Reading && !st.half_closed {
                        st.half_closed = true;
                        break (sock, st.generation, true);
                    }
                }
                st = pipe.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = if shut {
            sock.shutdown(std::net::Shutdown::Write)
        } else {
            sock.write_all(&chunk)
        };
        if let Err(e) = result {
            let mut st = pipe.lock();
            if st.generation == generation && st.write_error.is_none() {
                st.write_error = Some(format!("cannot send to the server: {}", describe(&e)));
            }
            drop(st);
            pipe.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_drop_lines_from_the_front_and_echo_them() {
        let mut w = Window::default();
        assert_eq!(w.push(b"a\r\nbb\nc"), 2);
        let mut out = Vec::new();
        w.take_unsent(&mut out, 100);
        assert_eq!(out, b"a\r\nbb\nc");
        assert_eq!(w.in_flight(), 2);
        let mut echo = Vec::new();
        assert_eq!(w.ack(1, Some((&mut echo, b"ok"))), 0);
        assert_eq!(echo, b"a\tok\n");
        assert_eq!(w.bytes(), 4);
        // One more ack than lines in flight: the extra is returned.
        assert_eq!(w.ack(2, None), 1);
        assert_eq!(w.lines(), 0);
        assert_eq!(w.push(b"\n"), 1);
        w.take_unsent(&mut out, 100);
        assert_eq!(out, b"\n");
        assert_eq!(w.ack(1, None), 0);
        assert_eq!(w.bytes(), 0);
    }

    #[test]
    fn a_restart_resends_the_unacked_tail_in_order() {
        let mut w = Window::default();
        w.push(b"1\n2\n3\n");
        let mut out = Vec::new();
        assert_eq!(w.take_unsent(&mut out, 4), (2, 2));
        w.ack(1, None);
        assert_eq!(w.restart(), 1);
        assert_eq!(w.take_unsent(&mut out, 100), (2, 1));
        assert_eq!(out, b"2\n3\n");
    }

    #[test]
    fn a_stop_drops_what_no_connection_had() {
        let mut w = Window::default();
        w.push(b"1\n2\n3\n4");
        let mut out = Vec::new();
        w.take_unsent(&mut out, 3); // "1\n2": line 2 begun on the wire
        assert_eq!(w.drop_unsent(), 2);
        assert_eq!(w.bytes(), 4);
        // Nothing sent at all: everything goes.
        let mut w = Window::default();
        w.push(b"x\ny");
        assert_eq!(w.drop_unsent(), 0);
        assert_eq!(w.bytes(), 0);
        // A line begun on the wire and not yet read to its end is ended.
        let mut w = Window::default();
        w.push(b"x\nyy");
        w.take_unsent(&mut out, 3);
        assert_eq!(w.drop_unsent(), 2);
        assert_eq!(w.bytes(), 5);
    }

    #[test]
    fn compaction_keeps_offsets() {
        let mut w = Window::default();
        let mut out = Vec::new();
        for i in 0..1000u32 {
            w.push(format!("{i}\n").as_bytes());
            w.take_unsent(&mut out, 1 << 20);
            assert_eq!(out, format!("{i}\n").as_bytes());
            if i % 3 == 0 {
                w.ack(w.in_flight(), None);
            }
        }
        assert!(w.bytes() < 16);
    }
}
