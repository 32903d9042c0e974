//! The wire protocol: every line either tool puts on the wire (greeting,
//! ack, refusal, error line) and line framing.
//!
//! Pure code: no sockets, no files, no clocks. The server frames what its
//! clients send with [`Framer`], and the property tests in
//! `tests/framer.rs` feed it arbitrary bytes split at arbitrary places.
//!
//! A line is any run of bytes ended by `\n`. A `\r` right before the `\n` is
//! not part of the line (CR LF is one line). Lines are bytes, not text: every
//! byte value but `\n` may appear.

use memchr::{memchr, memchr_iter, memrchr};

/// The greeting the tutorial's server sends on accept.
pub const DEFAULT_GREETING: &str = "connect";
/// The acknowledgement the tutorial's server sends for every line.
pub const DEFAULT_ACK: &str = "Information Received";
/// The greeting of a server that will not serve a client.
pub const DEFAULT_REFUSAL: &str = "not connect";
/// Default for `--max-line`.
pub const DEFAULT_MAX_LINE: usize = 65536;
/// The largest `--max-line` accepted: a connection may hold a line this
/// long, and every size computed from it (plus a prefix, a line ending)
/// must fit.
pub const MAX_MAX_LINE: usize = 1 << 30;

/// The three texts of the protocol, each without its `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Texts {
    pub greeting: String,
    pub ack: String,
    pub refusal: String,
}

impl Default for Texts {
    fn default() -> Self {
        Texts {
            greeting: DEFAULT_GREETING.to_string(),
            ack: DEFAULT_ACK.to_string(),
            refusal: DEFAULT_REFUSAL.to_string(),
        }
    }
}

impl Texts {
    /// The greeting line, `connect\n`.
    pub fn greeting_line(&self) -> Vec<u8> {
        line(&self.greeting)
    }

    /// One ack line, `Information Received\n`.
    pub fn ack_line(&self) -> Vec<u8> {
        line(&self.ack)
    }

    /// `count` ack lines in a row, so that acking a batch is one write.
    pub fn ack_block(&self, count: usize) -> Vec<u8> {
        self.ack_line().repeat(count.max(1))
    }

    /// The refusal line for `reason`, e.g. `not connect: server busy\n`.
    pub fn refusal_line(&self, reason: Option<&str>) -> Vec<u8> {
        let mut line = self.refusal.clone().into_bytes();
        if let Some(reason) = reason {
            line.extend_from_slice(b": ");
            line.extend_from_slice(reason.as_bytes());
        }
        line.push(b'\n');
        line
    }

    /// Whether a greeting line (without its `\n`) is a refusal.
    pub fn is_refusal(&self, greeting: &[u8]) -> bool {
        contains(greeting, self.refusal.as_bytes())
    }
}

fn line(text: &str) -> Vec<u8> {
    let mut l = Vec::with_capacity(text.len() + 1);
    l.extend_from_slice(text.as_bytes());
    l.push(b'\n');
    l
}

/// What starts the line the server sends, in place of an ack, before it
/// closes a connection for a protocol error.
pub const ERROR_PREFIX: &str = "error: ";

/// The error line for a line longer than `max` bytes:
/// `error: line too long (max N bytes)\n`.
pub fn too_long_line(max: usize) -> Vec<u8> {
    format!("{ERROR_PREFIX}line too long (max {max} bytes)\n").into_bytes()
}

/// The server's error text, when a line from it (without its `\n`) is an
/// error line rather than an ack: `line too long (max 10 bytes)`.
pub fn server_error(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(ERROR_PREFIX.as_bytes())
}

/// Checks that a protocol text can be sent as one line.
pub fn validate_text(text: &str) -> Result<String, String> {
    if text.contains('\n') || text.contains('\r') {
        Err("must not contain a line break".to_string())
    } else if text.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(text.to_string())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Strips one trailing `\n` and then one trailing `\r`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

thread_local! {
    /// One emptied buffer per thread, for the next [`Framer::reserve`] on
    /// it: a connection frees its buffer after every read that leaves no
    /// partial line (so an idle one holds none), and the next read would
    /// otherwise allocate it again, once per round trip.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Keeps a buffer that is done with (its lines written) as this thread's
/// spare read buffer, in place of the one before; a buffer larger than
/// any read is freed.
pub fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() > 0 && buf.capacity() <= SPARE_MAX {
        buf.clear();
        SPARE.with(|s| s.set(buf));
    }
}

/// The largest buffer kept as a spare: half as large again as the
/// largest read (64 KiB), the most [`Framer::reserve`] takes.
const SPARE_MAX: usize = 96 * 1024;

/// What [`Framer::take`] hands out: complete lines, each ended by a
/// single `\n` (CR LF folded), ready to be written to the output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lines {
    /// The lines, each followed by `\n`, each prefixed if a prefix was given.
    pub data: Vec<u8>,
    /// How many lines `data` holds.
    pub count: u64,
}

/// Splits a byte stream into lines, holding at most one partial line.
///
/// Bytes are read straight into [`Framer::buffer`] (no copy); complete lines
/// are taken out with [`Framer::take`], which also says when a line is
/// longer than the maximum and the caller must end the stream.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no `\n`.
    scanned: usize,
    max_line: usize,
}

impl Framer {
    pub fn new(max_line: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            scanned: 0,
            max_line,
        }
    }

    /// The buffer to read into: append bytes at its end.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes held that are not yet part of a complete line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Appends bytes that were read before the framer existed (the bytes
    /// that came after a PROXY header).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Releases the buffer's memory when it holds nothing, so an idle
    /// connection costs no buffer at all. (It becomes this thread's spare,
    /// see [`recycle`].)
    pub fn shrink_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            recycle(std::mem::take(&mut self.buf));
            self.scanned = 0;
        }
    }

    /// Makes room for a read of about `chunk` bytes, unless at least half
    /// of that is free already, and says how much room there is. A framer
    /// without a buffer takes this thread's spare when it is of that size
    /// (at most half as large again: a read fills the whole room, and the
    /// caller's chunk bounds what a connection holds).
    pub fn reserve(&mut self, chunk: usize) -> usize {
        if self.buf.capacity() - self.buf.len() < chunk / 2 {
            if self.buf.capacity() == 0 {
                self.buf = SPARE.with(|s| {
                    let spare = s.take();
                    if (chunk..=chunk + chunk / 2).contains(&spare.capacity()) {
                        spare
                    } else {
                        s.set(spare);
                        Vec::new()
                    }
                });
            }
            if self.buf.capacity() - self.buf.len() < chunk / 2 {
                self.buf.reserve(chunk);
            }
        }
        self.buf.capacity() - self.buf.len()
    }

    /// True when the partial line held is already longer than the maximum,
    /// whatever follows. A line of exactly `max_line` bytes, or of
    /// `max_line` bytes and a `\r` still waiting for its `\n`, is not.
    fn overlong(&self) -> bool {
        let n = self.buf.len();
        n > self.max_line + 1 || (n == self.max_line + 1 && self.buf[n - 1] != b'\r')
    }

    /// Takes every complete line out of the buffer. At the end of the
    /// stream (`eof`), a last line without its `\n` counts as a line, as in
    /// `sed` and `awk`. Stops at the first line longer than the maximum
    /// (complete, or partial and already too long): the lines before it
    /// are still handed out, and [`Taken::too_long`] says the stream must
    /// end there.
    pub fn take(&mut self, eof: bool) -> Taken {
        if eof && !self.buf.is_empty() {
            self.buf.push(b'\n');
        }
        let (lines, too_long) = self.take_complete();
        Taken {
            lines,
            too_long: too_long || self.overlong(),
        }
    }

    fn take_complete(&mut self) -> (Option<Lines>, bool) {
        let Some(last_nl) = memrchr(b'\n', &self.buf[self.scanned..]).map(|i| i + self.scanned)
        else {
            self.scanned = self.buf.len();
            return (None, false);
        };
        let end = last_nl + 1;
        let (count, too_long_at) = count_lines(&self.buf[..end], self.max_line);
        let good_end = too_long_at.unwrap_or(end);
        let lines = if count == 0 {
            None
        } else if memchr(b'\r', &self.buf[..good_end]).is_none() {
            // The fast path: no CR: hand out the buffer itself and keep
            // only what follows the last good line.
            let rest = self.buf.split_off(good_end);
            Some(Lines {
                data: std::mem::replace(&mut self.buf, rest),
                count,
            })
        } else {
            let mut data = Vec::with_capacity(good_end);
            let mut start = 0;
            for nl in memchr_iter(b'\n', &self.buf[..good_end]) {
                data.extend_from_slice(trim_eol(&self.buf[start..=nl]));
                data.push(b'\n');
                start = nl + 1;
            }
            self.buf.drain(..good_end);
            Some(Lines { data, count })
        };
        self.scanned = if too_long_at.is_some() {
            0
        } else {
            self.buf.len()
        };
        (lines, too_long_at.is_some())
    }
}

/// Counts the lines of `body` (which ends with `\n`) up to the first one
/// longer than `max` bytes (without its line ending), and says where that
/// one starts, if any.
///
/// Not one check per line: only a line that starts a window of `max + 2`
/// bytes can be too long (any other line in the window is shorter than
/// the window), so each window costs one check of its first line and one
/// vectorised count of its newlines. With the default `--max-line` a whole
/// 64 KiB read is one or two windows.
fn count_lines(body: &[u8], max: usize) -> (u64, Option<usize>) {
    let mut count = 0u64;
    let mut start = 0;
    while start < body.len() {
        let window = &body[start..body.len().min(start.saturating_add(max).saturating_add(2))];
        let first = match memchr(b'\n', window) {
            Some(nl) => nl,
            // A window of max + 2 bytes without a newline: the line that
            // starts it is too long.
            None => return (count, Some(start)),
        };
        if trim_eol(&window[..=first]).len() > max {
            return (count, Some(start));
        }
        // Every other line that ends in the window starts after `first`:
        // at most `max` bytes with its line ending. The body ends with a
        // newline, so a window that reaches its end ends with one too.
        let last = if start + window.len() == body.len() {
            window.len() - 1
        } else {
            memrchr(b'\n', window).unwrap_or(first)
        };
        count += 1 + memchr_iter(b'\n', &window[first + 1..=last]).count() as u64;
        start += last + 1;
    }
    (count, None)
}

/// What [`Framer::take`] hands out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The complete lines, if any.
    pub lines: Option<Lines>,
    /// A line longer than the maximum follows them: the stream ends here.
    pub too_long: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut Framer) -> Vec<u8> {
        f.take(false).lines.map(|l| l.data).unwrap_or_default()
    }

    #[test]
    fn an_emptied_buffer_serves_the_next_read_of_its_size() {
        // Tests run on threads of their own: this one's spare is its own.
        let mut f = Framer::new(100);
        assert!(f.reserve(4096) >= 4096);
        f.buffer().extend_from_slice(b"one\n");
        let lines = f.take(false).lines.unwrap();
        let at = lines.data.as_ptr();
        recycle(lines.data);
        assert_eq!(f.reserve(4096), 4096);
        assert_eq!(f.buffer().as_ptr(), at, "the spare was not taken");
        // A spare much larger than the read is not: a connection holds
        // no more than its chunk asks for.
        f.shrink_if_empty();
        recycle(Vec::with_capacity(64 * 1024));
        assert_eq!(f.reserve(4096), 4096);
        // Nor one larger than any read.
        f.shrink_if_empty();
        recycle(Vec::with_capacity(SPARE_MAX + 1));
        assert_eq!(SPARE.with(|s| s.take()).capacity(), 4096);
    }

    #[test]
    fn crlf_is_one_line() {
        let mut f = Framer::new(100);
        f.buffer().extend_from_slice(b"a\r\nb\nc\r");
        let l = f.take(false).lines.unwrap();
        assert_eq!(l.data, b"a\nb\n");
        assert_eq!(l.count, 2);
        assert_eq!(f.pending(), 2);
        f.buffer().extend_from_slice(b"\n");
        assert_eq!(lines(&mut f), b"c\n");
    }

    #[test]
    fn max_line_is_inclusive() {
        let mut f = Framer::new(3);
        f.buffer().extend_from_slice(b"abc");
        assert!(!f.take(false).too_long);
        f.buffer().extend_from_slice(b"\r");
        assert!(!f.take(false).too_long);
        f.buffer().extend_from_slice(b"\nabcd");
        // The complete line before it is still good.
        let t = f.take(false);
        assert_eq!(t.lines.unwrap().data, b"abc\n");
        assert!(t.too_long);
    }

    #[test]
    fn complete_long_line_stops_the_batch() {
        let mut f = Framer::new(2);
        f.buffer().extend_from_slice(b"ok\ntoolong\nnext\n");
        let t = f.take(false);
        assert_eq!(t.lines.unwrap().count, 1);
        assert!(t.too_long);
    }

    #[test]
    fn end_of_stream() {
        let mut f = Framer::new(10);
        f.buffer().extend_from_slice(b"x\ny");
        assert_eq!(f.take(false).lines.unwrap().data, b"x\n");
        assert_eq!(f.take(true).lines.unwrap().data, b"y\n");
        assert_eq!(f.take(true), Taken::default());
    }

    /// The windowed count against one check per line, for every body of
    /// up to 9 bytes of `a`, `\r` and `\n` ending in `\n`, and every
    /// maximum from 0 to 5: the windows' edges fall everywhere.
    #[test]
    fn count_lines_agrees_with_a_check_per_line() {
        fn naive(body: &[u8], max: usize) -> (u64, Option<usize>) {
            let (mut count, mut start) = (0, 0);
            for nl in memchr_iter(b'\n', body) {
                if trim_eol(&body[start..=nl]).len() > max {
                    return (count, Some(start));
                }
                count += 1;
                start = nl + 1;
            }
            (count, None)
        }
        for len in 0..9u32 {
            for mut code in 0..3usize.pow(len) {
                let mut body = Vec::new();
                for _ in 0..len {
                    body.push([b'a', b'\r', b'\n'][code % 3]);
                    code /= 3;
                }
                body.push(b'\n');
                for max in 0..6 {
                    assert_eq!(
                        count_lines(&body, max),
                        naive(&body, max),
                        "{body:?} max {max}"
                    );
                }
            }
        }
    }

    #[test]
    fn wire_lines() {
        let t = Texts::default();
        assert!(t.is_refusal(b"not connect: server busy"));
        assert!(!t.is_refusal(b"connect"));
        assert_eq!(t.refusal_line(Some("busy")), b"not connect: busy\n");
        assert_eq!(t.greeting_line(), b"connect\n");
        assert_eq!(
            t.ack_block(2),
            b"Information Received\nInformation Received\n"
        );
        let e = too_long_line(10);
        assert_eq!(e, b"error: line too long (max 10 bytes)\n");
        assert_eq!(
            server_error(trim_eol(&e)),
            Some(&b"line too long (max 10 bytes)"[..])
        );
        assert_eq!(server_error(b"Information Received"), None);
    }
}
