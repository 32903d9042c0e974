//! Diagnostics on standard error: `PROGRAM: message`, one line each.
//!
//! Never panics (a closed or broken standard error is ignored), and when
//! standard error is the journal (`JOURNAL_STREAM` names its device and
//! inode) each line starts with a `<N>` syslog priority so journald files
//! it at the right level.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

/// How much to say. `-q` gives `Quiet`, `-v` gives `Verbose`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

/// Syslog priorities of the lines we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

static PROGRAM: OnceLock<&'static str> = OnceLock::new();
static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Sets the program name and verbosity; detects the journal.
pub fn init(program: &'static str, verbosity: Verbosity) {
    let _ = PROGRAM.set(program);
    VERBOSITY.store(verbosity as u8, Ordering::Relaxed);
    JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
}

fn stderr_is_journal() -> bool {
    is_journal_stream(std::io::stderr().as_fd())
}

/// Whether `fd` is the stream to the journal that systemd connected
/// standard output or error to: `JOURNAL_STREAM` names its device and
/// inode.
pub fn is_journal_stream(fd: BorrowedFd<'_>) -> bool {
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// A text from outside (a peer's name, an inherited socket's name) made
/// safe to put in a diagnostic: control characters (line breaks, NUL,
/// escape sequences) and backslashes are written as escapes (`\n`,
/// `\x1b`, `\u{85}`, `\\`), and a leading `<` as `\x3c`, so the text can
/// neither end the line it is in, nor start one, nor pass for a journal
/// priority such as `<0>`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.starts_with('<') && !text.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.chars().enumerate() {
        match c {
            '<' if i == 0 => out.push_str("\\x3c"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("sockserve")
}

/// Whether lines of this level are written at the current verbosity:
/// errors and warnings always, info unless `-q`, debug only with `-v`.
pub fn enabled(level: Level) -> bool {
    let v = VERBOSITY.load(Ordering::Relaxed);
    match level {
        Level::Error | Level::Warning => true,
        Level::Info => v >= Verbosity::Normal as u8,
        Level::Debug => v >= Verbosity::Verbose as u8,
    }
}

/// Writes one diagnostic line if its level is enabled.
pub fn emit(level: Level, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = if JOURNAL.load(Ordering::Relaxed) {
        format!("<{}>{}: {}\n", level as u8, program(), msg)
    } else {
        format!("{}: {}\n", program(), msg)
    };
    if LOG_THREAD.load(Ordering::Relaxed) {
        if let Some(queue) = QUEUE.get() {
            queue.push(line.into_bytes());
            return;
        }
    }
    // One write per line, so lines from several threads never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Lines waiting for the log thread, at most this many: past it, lines are
/// dropped and counted, never waited for.
const QUEUE_LINES: usize = 4096;

static QUEUE: OnceLock<Queue> = OnceLock::new();
/// The log thread runs: lines go through [`QUEUE`].
static LOG_THREAD: AtomicBool = AtomicBool::new(false);

/// The lines the log thread writes, so that a standard error that does not
/// drain (a log pipe whose reader stopped, a stuck journald) never blocks
/// the thread that logs: a server's runtime workers keep serving, and its
/// signals keep working.
struct Queue {
    state: std::sync::Mutex<QueueState>,
    /// Wakes the log thread when lines come, and [`flush`] when they are
    /// written.
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct QueueState {
    lines: std::collections::VecDeque<Vec<u8>>,
    /// Lines dropped since the last that was written.
    dropped: u64,
    /// The log thread is writing a line it took.
    writing: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: Vec<u8>) {
        let mut st = self.lock();
        if st.lines.len() >= QUEUE_LINES {
            st.dropped += 1;
            return;
        }
        st.lines.push_back(line);
        self.changed.notify_all();
    }
}

/// From here on, diagnostics go through a thread of their own, which
/// alone may wait for standard error: call it before starting threads
/// that must never block on it (a server's runtime). Lines that come
/// while standard error does not drain and the queue is full are dropped,
/// and a line says how many.
pub fn start_log_thread() {
    let queue = QUEUE.get_or_init(|| Queue {
        state: Default::default(),
        changed: std::sync::Condvar::new(),
    });
    let spawned = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || loop {
            let (line, dropped) = {
                let mut st = queue.lock();
                while st.lines.is_empty() {
                    st = queue.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.writing = true;
                let dropped = std::mem::take(&mut st.dropped);
                (st.lines.pop_front(), dropped)
            };
            let mut err = std::io::stderr().lock();
            if dropped > 0 {
                let note = format!(
                    "{}: {dropped} log lines dropped: standard error did not drain\n",
                    program()
                );
                let _ = err.write_all(note.as_bytes());
            }
            if let Some(line) = line {
                let _ = err.write_all(&line);
            }
            drop(err);
            queue.lock().writing = false;
            queue.changed.notify_all();
        });
    // Without the thread, lines are written where they are made.
    LOG_THREAD.store(spawned.is_ok(), Ordering::Relaxed);
}

/// Waits until the log thread has written every line queued, at most
/// `limit`: before the process exits, so its last words are not lost.
pub fn flush(limit: std::time::Duration) {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let deadline = std::time::Instant::now() + limit;
    let mut st = queue.lock();
    while !st.lines.is_empty() || st.writing {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        st = queue
            .changed
            .wait_timeout(st, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::diag::emit($crate::diag::Level::Error, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::diag::emit($crate::diag::Level::Warning, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::diag::emit($crate::diag::Level::Info, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::diag::emit($crate::diag::Level::Debug, format_args!($($t)*)) };
}

/// Describes an I/O error the way the rest of a message wants it:
/// `address in use`, not `Address in use (os error 98)`.
pub fn describe(err: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let s = match err.kind() {
        AddrInUse => "address in use",
        AddrNotAvailable => "address not available on this machine",
        PermissionDenied => "permission denied",
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        BrokenPipe => "broken pipe (the reader went away)",
        NotFound => "no such file or directory",
        TimedOut => "timed out",
        _ => "",
    };
    if !s.is_empty() {
        return s.to_string();
    }
    let text = err.to_string();
    // The resolver's errors: "failed to lookup address information: Name
    // or service not known" says less than its own last part.
    let text = text
        .strip_prefix("failed to lookup address information: ")
        .map_or(text.clone(), str::to_string);
    match text.find(" (os error") {
        Some(i) => {
            let mut t = text[..i].to_string();
            if let Some(c) = t.get_mut(..1) {
                c.make_ascii_lowercase();
            }
            t
        }
        None => {
            let mut t = text;
            if let Some(c) = t.get_mut(..1) {
                c.make_ascii_lowercase();
            }
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_plain_text_and_defuses_the_rest() {
        assert!(matches!(escape("127.0.0.1:5123"), Cow::Borrowed(_)));
        assert_eq!(escape("sockserve"), "sockserve");
        assert_eq!(escape("<0>boom"), "\\x3c0>boom");
        assert_eq!(escape("a<b"), "a<b");
        assert_eq!(escape("evil\n<0>x"), "evil\\n<0>x");
        assert_eq!(escape("a\r\tb\0\x1b[2J"), "a\\r\\tb\\x00\\x1b[2J");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("nel\u{85}del\x7f"), "nel\\u{85}del\\x7f");
        assert_eq!(escape("caf\u{e9}"), "caf\u{e9}");
    }

    #[test]
    fn describe_strips_os_error() {
        let e = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert_eq!(describe(&e), "too many open files");
        let e = std::io::Error::from_raw_os_error(nix::libc::EADDRINUSE);
        assert_eq!(describe(&e), "address in use");
    }
}
