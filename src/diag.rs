//! Diagnostics on standard error: `PROGRAM: message`, one line each.
//!
//! Never panics (a closed or broken standard error is ignored), and when
//! standard error is the journal (`JOURNAL_STREAM` names its device and
//! inode) each line starts with a `<N>` syslog priority so journald files
//! it at the right level.

use std::io::Write;
use std::os::fd::AsRawFd;
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
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
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
    // One write per line, so lines from several threads never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
    fn describe_strips_os_error() {
        let e = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert_eq!(describe(&e), "too many open files");
        let e = std::io::Error::from_raw_os_error(nix::libc::EADDRINUSE);
        assert_eq!(describe(&e), "address in use");
    }
}
