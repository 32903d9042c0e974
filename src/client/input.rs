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

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use memchr::{memchr, memchr_iter};

use super::connect::Sock;
use crate::diag::describe;

/// Bytes read from standard input at a time, and written at most at once.
const CHUNK: usize = 64 * 1024;
/// Buffers of acked chunks kept to be read into again (at most 4 MiB).
const SPARE: usize = 64;
/// Bytes read but not yet written at which the reader waits for the
/// writer: reading further ahead of the socket gains nothing, and would
/// only grow the window's buffer (page faults, copies) up to `--window`.
const READ_AHEAD: usize = 16 * CHUNK;

/// Where the input stands. One state, set under the pipe's lock: it
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

/// One read of standard input, shared with the writer while it writes it.
#[derive(Debug)]
struct Chunk {
    data: Arc<Vec<u8>>,
    /// Newlines in `data`.
    lines: u64,
}

/// The lines read and not yet acked, as the bytes that were (or will be)
/// written. Acks are in order, so what a broken connection lost is exactly
/// the tail from `head`.
///
/// The bytes stay in the chunks standard input was read into: the writer
/// writes straight from them (no copy), and a chunk goes (its buffer to be
/// read into again) once every line in it is acked. Positions are offsets
/// from the start of the input.
#[derive(Debug, Default)]
pub struct Window {
    chunks: VecDeque<Chunk>,
    /// Offset of the first chunk's first byte.
    base: u64,
    /// Offset just past the last byte read.
    end: u64,
    /// Start of the first unacked line.
    head: u64,
    /// End of what the current connection was given.
    sent: u64,
    /// End of what any connection was given.
    high: u64,
    /// Complete lines from `head` to `end`.
    lines: u64,
    /// Complete lines from `head` to `sent`: written on this connection,
    /// ack owed.
    in_flight: u64,
    /// Start of the last line read, complete or not (just past the last
    /// newline read).
    line_start: u64,
    /// Buffers of acked chunks, to read into again.
    spare: Vec<Vec<u8>>,
}

/// What the writer writes next: a range of a chunk.
struct Piece {
    data: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl Window {
    /// Bytes held (unacked, sent or not).
    pub fn bytes(&self) -> usize {
        (self.end - self.head) as usize
    }

    /// Complete lines held (read and not acked).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Lines the current connection owes acks for.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// A buffer to read into (of an acked chunk if there is one).
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Appends a read; returns the complete lines it ended.
    fn push(&mut self, data: Vec<u8>) -> u64 {
        if data.is_empty() {
            return 0;
        }
        let lines = memchr_iter(b'\n', &data).count() as u64;
        if let Some(nl) = memchr::memrchr(b'\n', &data) {
            self.line_start = self.end + nl as u64 + 1;
        }
        self.end += data.len() as u64;
        self.lines += lines;
        self.chunks.push_back(Chunk {
            data: Arc::new(data),
            lines,
        });
        lines
    }

    /// Appends bytes (a copy); returns the complete lines they ended.
    #[cfg(test)]
    fn push_bytes(&mut self, bytes: &[u8]) -> u64 {
        self.push(bytes.to_vec())
    }

    /// The chunk holding offset `at` (`at < end`), and where in it.
    fn locate(&self, at: u64) -> (usize, usize) {
        let mut start = self.base;
        for (i, c) in self.chunks.iter().enumerate() {
            let len = c.data.len() as u64;
            if at < start + len {
                return (i, (at - start) as usize);
            }
            start += len;
        }
        (self.chunks.len(), 0)
    }

    fn byte_at(&self, at: u64) -> u8 {
        let (i, off) = self.locate(at);
        self.chunks[i].data[off]
    }

    /// Offset just past the first newline at or after `from`, if any.
    fn line_end(&self, from: u64) -> Option<u64> {
        if from >= self.end {
            return None;
        }
        let (i, off) = self.locate(from);
        let mut at = from;
        for (k, c) in self.chunks.iter().enumerate().skip(i) {
            let start = if k == i { off } else { 0 };
            if let Some(nl) = memchr(b'\n', &c.data[start..]) {
                return Some(at + nl as u64 + 1);
            }
            at += (c.data.len() - start) as u64;
        }
        None
    }

    /// Whether a line was given to a connection only in part (the last
    /// bytes any connection had are not a newline) and is not acked.
    pub fn sent_in_part(&self) -> bool {
        self.high > self.head && self.byte_at(self.high - 1) != b'\n'
    }

    /// Ends a last line that has no newline with one; returns 1 if it did.
    pub fn end_partial(&mut self) -> u64 {
        if self.end > self.head && self.byte_at(self.end - 1) != b'\n' {
            self.push(b"\n".to_vec())
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
        if keep > self.head && self.byte_at(keep - 1) != b'\n' {
            keep = self.line_end(keep).unwrap_or(self.end);
        }
        self.truncate(keep);
        self.end_partial();
        self.lines
    }

    /// Bytes of a line not yet ended: the line read so far.
    pub fn partial(&self) -> usize {
        (self.end - self.line_start.max(self.head)) as usize
    }

    /// Drops what no connection had of the line not yet ended (the rest
    /// of it is never sent): no newline is added, so the server is not
    /// handed a cut line as a whole one.
    pub fn drop_partial(&mut self) {
        let keep = self.high.max(self.sent).max(self.line_start);
        self.truncate(keep);
    }

    /// Drops everything from offset `keep` on.
    fn truncate(&mut self, keep: u64) {
        if keep < self.end {
            let (i, off) = self.locate(keep);
            let mut dropped: u64 = self.chunks.iter().skip(i + 1).map(|c| c.lines).sum();
            let c = &mut self.chunks[i];
            dropped += memchr_iter(b'\n', &c.data[off..]).count() as u64;
            if off == 0 {
                self.chunks.truncate(i);
            } else {
                let kept = c.data[..off].to_vec();
                c.lines = memchr_iter(b'\n', &kept).count() as u64;
                c.data = Arc::new(kept);
                self.chunks.truncate(i + 1);
            }
            self.lines -= dropped;
            self.end = keep;
        }
    }

    /// The next bytes for the current connection (at most `max`), counted
    /// as in flight. Also returns how many lines they end that no
    /// connection had before.
    fn take_unsent(&mut self, max: usize) -> Option<(Piece, u64)> {
        if self.sent >= self.end {
            return None;
        }
        let (i, off) = self.locate(self.sent);
        let c = &self.chunks[i];
        let stop = c.data.len().min(off + max);
        let n = if off == 0 && stop == c.data.len() {
            c.lines
        } else {
            memchr_iter(b'\n', &c.data[off..stop]).count() as u64
        };
        let chunk_start = self.sent - off as u64;
        let new_end = chunk_start + stop as u64;
        let fresh = if self.sent >= self.high {
            n
        } else if new_end <= self.high {
            0
        } else {
            let from = (self.high - chunk_start) as usize;
            memchr_iter(b'\n', &c.data[from..stop]).count() as u64
        };
        let piece = Piece {
            data: c.data.clone(),
            range: off..stop,
        };
        self.in_flight += n;
        self.sent = new_end;
        self.high = self.high.max(new_end);
        Some((piece, fresh))
    }

    /// Whether the reader should wait: the window is full (and an ack can
    /// free some of it), or the writer is far enough behind.
    fn full(&self, limit: usize) -> bool {
        (self.bytes() >= limit && self.lines > 0) || self.end - self.sent >= READ_AHEAD as u64
    }

    /// The line being read is longer than the window: it cannot be kept
    /// whole for resending, and holding it would not bound the memory.
    pub fn overlong(&self, limit: usize) -> bool {
        self.partial() > limit
    }

    /// Whether a waiting reader is worth waking: there is room again, and
    /// the writer caught up by half the read-ahead (one wake-up for many
    /// writes, not one each).
    pub fn roomy(&self, limit: usize) -> bool {
        (self.bytes() < limit || self.lines == 0) && self.end - self.sent <= READ_AHEAD as u64 / 2
    }

    /// Takes `n` acks: drops as many lines from the front, and, for
    /// `--echo`, appends each of them (without its line ending), a tab and
    /// `ack` to `echo`. Returns the acks beyond the lines in flight.
    pub fn ack(&mut self, n: u64, mut echo: Option<(&mut Vec<u8>, &[u8])>) -> u64 {
        let take = n.min(self.in_flight);
        if take == 0 {
            return n;
        }
        let (first, off) = self.locate(self.head);
        let mut left = take;
        let mut at = self.head;
        // A line that spans chunks, gathered for --echo.
        let mut carry: Vec<u8> = Vec::new();
        'chunks: for (k, c) in self.chunks.iter().enumerate().skip(first) {
            let start = if k == first { off } else { 0 };
            let data = &c.data[..];
            if echo.is_none() {
                // Without --echo only the end matters: skip to it with
                // vectorised counts, not line by line.
                match nth_newline(&data[start..], left) {
                    Ok(i) => {
                        at += (i + 1) as u64;
                        break 'chunks;
                    }
                    Err(count) => {
                        left -= count;
                        at += (data.len() - start) as u64;
                        continue;
                    }
                }
            }
            let mut line_start = start;
            for nl in memchr_iter(b'\n', &data[start..]).map(|i| i + start) {
                if let Some((out, ack)) = echo.as_mut() {
                    let line: &[u8] = if carry.is_empty() {
                        &data[line_start..=nl]
                    } else {
                        carry.extend_from_slice(&data[line_start..=nl]);
                        &carry
                    };
                    out.extend_from_slice(crate::protocol::trim_eol(line));
                    out.push(b'\t');
                    out.extend_from_slice(ack);
                    out.push(b'\n');
                    carry.clear();
                }
                line_start = nl + 1;
                left -= 1;
                if left == 0 {
                    at += (line_start - start) as u64;
                    break 'chunks;
                }
            }
            if echo.is_some() {
                carry.extend_from_slice(&data[line_start..]);
            }
            at += (data.len() - start) as u64;
        }
        self.head = at;
        self.lines -= take;
        self.in_flight -= take;
        // Chunks wholly acked go; their buffers are read into again.
        while let Some(c) = self.chunks.front() {
            let len = c.data.len() as u64;
            if self.base + len > self.head {
                break;
            }
            self.base += len;
            if let Some(c) = self.chunks.pop_front() {
                if let Ok(mut v) = Arc::try_unwrap(c.data) {
                    if self.spare.len() < SPARE {
                        v.clear();
                        self.spare.push(v);
                    }
                }
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

/// Where the `n`-th newline (from 1, `n > 0`) of `data` is, or how many
/// newlines it has if fewer: counted a block at a time (vectorised), then
/// found within the block.
fn nth_newline(data: &[u8], n: u64) -> Result<usize, u64> {
    const BLOCK: usize = 4096;
    let mut left = n;
    let mut pos = 0;
    while pos < data.len() {
        let end = data.len().min(pos + BLOCK);
        let block = &data[pos..end];
        let c = memchr_iter(b'\n', block).count() as u64;
        if c >= left {
            if let Some(i) = memchr_iter(b'\n', block).nth(left as usize - 1) {
                return Ok(pos + i);
            }
        }
        left -= c;
        pos = end;
    }
    Err(n - left)
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
    /// The input ends in a line cut off on the wire: connections end in
    /// a reset, not a half-close (which would hand the server the cut
    /// line as a whole one).
    pub abort: bool,
    /// Writing to the current connection failed (why).
    pub write_error: Option<String>,
    /// The reader waits for room in the window: wake it when some is
    /// made (and only then, to spare the wake-ups).
    pub reader_waiting: bool,
    /// The writer waits for something to write.
    pub writer_waiting: bool,
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
                abort: false,
                write_error: None,
                reader_waiting: false,
                writer_waiting: false,
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
    loop {
        let mut buf = {
            let mut st = pipe.lock();
            while st.input == Input::Reading && st.window.full(st.limit) {
                st.reader_waiting = true;
                st = pipe.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                st.reader_waiting = false;
            }
            if st.input != Input::Reading {
                return;
            }
            st.window.buffer()
        };
        buf.resize(CHUNK, 0);
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
                buf.truncate(n);
                let lines = st.window.push(buf);
                st.counts.read += lines;
                if st.window.overlong(st.limit) {
                    st.window.drop_partial();
                    st.abort = st.window.sent_in_part();
                    st.input = Input::Failed(format!(
                        "a line longer than --window ({} bytes) cannot be kept for resending: \
                         give a larger --window",
                        st.limit
                    ));
                } else {
                    if st.writer_waiting {
                        drop(st);
                        pipe.changed.notify_all();
                    }
                    continue;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A non-blocking standard input (the parent's pipe):
                // wait until it has something, then read again; look up
                // now and then, as a stop may have come.
                drop(st);
                wait_readable(&stdin);
                continue;
            }
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

/// Waits until `fd` can be read (or ends, or fails: the read says
/// which), at most a tick.
fn wait_readable(fd: &impl std::os::fd::AsFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(100u8));
}

/// The writer: what the current connection has not had, from the window
/// to the socket; at the end of the input, the half-close. Runs until the
/// process ends.
pub fn write_socket(pipe: Arc<Pipe>) {
    loop {
        let (sock, generation, piece, abort) = {
            let mut st = pipe.lock();
            loop {
                if let (Some(sock), None) = (st.conn.clone(), &st.write_error) {
                    if let Some((piece, fresh)) = st.window.take_unsent(CHUNK) {
                        st.counts.sent += fresh;
                        if st.reader_waiting && st.window.roomy(st.limit) {
                            pipe.changed.notify_all();
                        }
                        break (sock, st.generation, Some(piece), false);
                    }
                    if st.input != Input::Reading && !st.half_closed {
                        st.half_closed = true;
                        break (sock, st.generation, None, st.abort);
                    }
                }
                st.writer_waiting = true;
                st = pipe.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                st.writer_waiting = false;
            }
        };
        let result = match &piece {
            Some(p) => sock.write_all(&p.data[p.range.clone()]),
            // The process's exit closes the socket: with the reset set,
            // the server drops the cut line. Until then its acks for the
            // whole lines before it still come.
            None if abort => sock.abort(),
            None => sock.shutdown(std::net::Shutdown::Write),
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

    /// Everything the writer would write next, as bytes.
    fn take_all(w: &mut Window, max: usize) -> (Vec<u8>, u64, u64) {
        let mut out = Vec::new();
        let (mut n, mut fresh) = (0, 0);
        let before = w.in_flight();
        let mut budget = max;
        while budget > 0 {
            let Some((p, f)) = w.take_unsent(budget) else {
                break;
            };
            budget -= p.range.len();
            out.extend_from_slice(&p.data[p.range.clone()]);
            fresh += f;
        }
        n += w.in_flight() - before;
        (out, n, fresh)
    }

    #[test]
    fn acks_drop_lines_from_the_front_and_echo_them() {
        let mut w = Window::default();
        assert_eq!(w.push_bytes(b"a\r\nb"), 1);
        assert_eq!(w.push_bytes(b"b\nc"), 1);
        let (out, n, _) = take_all(&mut w, 100);
        assert_eq!(out, b"a\r\nbb\nc");
        assert_eq!(n, 2);
        let mut echo = Vec::new();
        assert_eq!(w.ack(1, Some((&mut echo, b"ok"))), 0);
        assert_eq!(echo, b"a\tok\n");
        assert_eq!(w.bytes(), 4);
        // A line across two reads is echoed whole.
        echo.clear();
        assert_eq!(w.ack(1, Some((&mut echo, b"ok"))), 0);
        assert_eq!(echo, b"bb\tok\n");
        // One more ack than lines in flight: the extra is returned.
        assert_eq!(w.ack(1, None), 1);
        assert_eq!(w.lines(), 0);
        assert_eq!(w.push_bytes(b"\n"), 1);
        take_all(&mut w, 100);
        assert_eq!(w.ack(1, None), 0);
        assert_eq!(w.bytes(), 0);
        assert!(w.chunks.is_empty());
    }

    #[test]
    fn a_restart_resends_the_unacked_tail_in_order() {
        let mut w = Window::default();
        w.push_bytes(b"1\n2\n3\n");
        assert_eq!(take_all(&mut w, 4), (b"1\n2\n".to_vec(), 2, 2));
        w.ack(1, None);
        assert_eq!(w.restart(), 1);
        assert_eq!(take_all(&mut w, 100), (b"2\n3\n".to_vec(), 2, 1));
    }

    #[test]
    fn a_stop_drops_what_no_connection_had() {
        let mut w = Window::default();
        w.push_bytes(b"1\n2");
        w.push_bytes(b"\n3\n4");
        take_all(&mut w, 3); // "1\n2": line 2 begun on the wire
        assert_eq!(w.drop_unsent(), 2);
        assert_eq!(w.bytes(), 4);
        assert_eq!(take_all(&mut w, 100).0, b"\n");
        // Nothing sent at all: everything goes.
        let mut w = Window::default();
        w.push_bytes(b"x\ny");
        assert_eq!(w.drop_unsent(), 0);
        assert_eq!(w.bytes(), 0);
        // A line begun on the wire and not yet read to its end is ended.
        let mut w = Window::default();
        w.push_bytes(b"x\nyy");
        take_all(&mut w, 3);
        assert_eq!(w.drop_unsent(), 2);
        assert_eq!(w.bytes(), 5);
        assert_eq!(take_all(&mut w, 100).0, b"y\n");
    }

    #[test]
    fn a_line_longer_than_the_window_is_dropped_past_what_was_sent() {
        let mut w = Window::default();
        w.push_bytes(b"a\nbbbb");
        assert_eq!(w.partial(), 4);
        assert!(w.overlong(3) && !w.overlong(4));
        take_all(&mut w, 4); // "a\nbb" on the wire
        w.push_bytes(b"bbbb");
        w.drop_partial();
        // The part on the wire stays (it is in flight), the rest goes,
        // and no newline ends it.
        assert_eq!(w.bytes(), 4);
        assert!(w.sent_in_part());
        assert_eq!(take_all(&mut w, 100).0, b"");
        // Nothing of it sent: none of it is kept.
        let mut w = Window::default();
        w.push_bytes(b"a\nbbbb");
        w.drop_partial();
        assert_eq!(w.bytes(), 2);
        assert!(!w.sent_in_part());
    }

    #[test]
    fn nth_newline_counts_across_blocks() {
        let data: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        for n in [1u64, 2, 577, 4096, 9999, 10_000] {
            let want = memchr_iter(b'\n', &data).nth(n as usize - 1).unwrap();
            assert_eq!(nth_newline(&data, n), Ok(want), "{n}");
        }
        assert_eq!(nth_newline(&data, 10_001), Err(10_000));
        // Acks without --echo end at the same place as with it.
        for echo in [false, true] {
            let mut w = Window::default();
            for part in data.chunks(3000) {
                w.push_bytes(part);
            }
            take_all(&mut w, usize::MAX);
            let mut out = Vec::new();
            w.ack(4321, echo.then_some((&mut out, &b"ok"[..])));
            assert_eq!(w.lines(), 10_000 - 4321);
            assert_eq!(take_all(&mut w, 0).0, b"");
            w.restart();
            assert!(take_all(&mut w, 100).0.starts_with(b"4321\n"));
        }
    }

    #[test]
    fn acked_chunks_go_and_their_buffers_are_reused() {
        let mut w = Window::default();
        for i in 0..1000u32 {
            w.push_bytes(format!("{i}\n").as_bytes());
            assert_eq!(take_all(&mut w, 1 << 20).0, format!("{i}\n").as_bytes());
            if i % 3 == 0 {
                w.ack(w.in_flight(), None);
            }
        }
        assert!(w.bytes() < 16);
        assert!(w.chunks.len() <= 2);
        assert!(!w.spare.is_empty());
    }
}
