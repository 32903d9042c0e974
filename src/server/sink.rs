//! The output sink and its commit: write, then `fdatasync` where asked,
//! then tell the waiting connection it may ack.
//!
//! Two paths, chosen once at start by what the output is:
//!
//! - **Thread** (pipes, terminals, sockets, and any output with
//!   `--fsync`): one thread owns the output. Connections send it batches;
//!   it takes every batch that is waiting, writes them in one `writev`,
//!   syncs once if asked (group commit: many connections share one sync),
//!   and only then answers each batch. A slow reader of a pipe blocks this
//!   thread, not the runtime's workers; connections wait for their answer,
//!   stop reading, and the pressure reaches the clients.
//! - **Inline** (a regular file or a device such as `/dev/null`, without
//!   `--fsync`): such writes never wait for a reader, so the connection's
//!   task writes under a lock itself and saves the thread hop (half the
//!   round-trip latency).
//!
//! The journal ([`Output::Journal`]) takes the thread path: the thread
//! sends each entry of a batch to journald's socket ([`super::journal`]),
//! which can block while journald is busy.
//!
//! Either way, a write, sync or send that fails answers every batch, then
//! and after, with failure: no line is ever acked that did not reach the
//! output.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::journal::{self, Journal};
use crate::diag::describe;

/// Where received lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
    File(PathBuf),
    /// journald, over its native protocol: one entry per line.
    Journal,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stdout => f.write_str("standard output"),
            Output::Stderr => f.write_str("standard error"),
            Output::File(p) => write!(f, "{}", p.display()),
            Output::Journal => f.write_str("the journal"),
        }
    }
}

/// How many bytes one commit writes at most before it answers.
const COMMIT_BYTES: usize = 8 << 20;

enum Msg {
    Commit {
        data: Vec<u8>,
        lines: u64,
        done: oneshot::Sender<bool>,
    },
    Reopen,
}

/// What the lines are written to.
enum Target {
    File(File),
    Journal(Journal),
}

/// The output and what is known of it, whichever way lines reach it.
struct Writer {
    target: Target,
    output: Output,
    fsync: bool,
    /// False once a write or sync failed: nothing is acked after that.
    ok: bool,
    lines: Arc<AtomicU64>,
    /// Says why the output failed, once: the server then stops, exit 1.
    failed: watch::Sender<Option<String>>,
}

impl Writer {
    /// Writes the batches in order, then syncs if asked. False, said once,
    /// if the output failed now or before.
    fn commit(&mut self, bufs: &[&[u8]], lines: u64) -> bool {
        if !self.ok {
            return false;
        }
        let result = match &mut self.target {
            Target::File(file) => {
                let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                write_all_vectored(file, &mut slices).and_then(|()| {
                    if self.fsync {
                        file.sync_data()
                    } else {
                        Ok(())
                    }
                })
            }
            Target::Journal(j) => bufs.iter().try_for_each(|b| j.send_framed(b)),
        };
        match result {
            Ok(()) => {
                self.lines.fetch_add(lines, Ordering::Relaxed);
            }
            Err(e) => {
                let what = if let Target::Journal(j) = &self.target {
                    format!("cannot send lines to the journal at {}", j.path().display())
                } else if e.kind() == io::ErrorKind::BrokenPipe {
                    "output closed".to_string()
                } else {
                    format!("cannot write output {}", self.output)
                };
                self.ok = false;
                let _ = self.failed.send(Some(format!(
                    "{what}: {}; no more lines are acked, stopping",
                    describe(&e)
                )));
            }
        }
        self.ok
    }

    /// Reopens the output file (SIGHUP); keeps the old one if that fails.
    fn reopen(&mut self) {
        if !self.ok {
            return;
        }
        if let Target::Journal(_) = self.target {
            crate::info!("output is the journal: nothing to reopen");
            return;
        }
        match open(&self.output) {
            Ok(f) => {
                self.target = Target::File(f);
                crate::info!("reopened output {}", self.output);
            }
            Err(e) => crate::warn!("{e}; still writing to the old file"),
        }
    }
}

/// How a commit reaches the output.
enum Path {
    /// The connection's own task writes, under a lock: for outputs that
    /// never wait for a reader (a regular file, `/dev/null`) when no
    /// `--fsync` asks for a shared sync. No thread hop, lowest latency.
    Inline(Mutex<Writer>),
    /// The sink thread writes: for pipes, terminals and sockets, whose
    /// writes can block on a slow reader, and for `--fsync`, where one
    /// sync serves every batch that waits (group commit).
    Thread(mpsc::Sender<Msg>),
}

/// The connections' handle on the sink.
#[derive(Clone)]
pub struct Sink {
    path: Arc<Path>,
    /// Lines written to the output so far.
    pub lines: Arc<AtomicU64>,
}

/// Opens the output; the error names it and says what failed.
fn open(output: &Output) -> Result<File, String> {
    let fd = match output {
        Output::Stdout => io::stdout().as_fd().try_clone_to_owned(),
        Output::Stderr => io::stderr().as_fd().try_clone_to_owned(),
        Output::Journal => {
            return Err("the journal is not a file to open (a bug in sockserve)".to_string())
        }
        Output::File(path) => {
            return OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .open(path)
                .map_err(|e| format!("cannot open output {}: {}", path.display(), describe(&e)))
        }
    };
    fd.map(File::from)
        .map_err(|e| format!("cannot use {output} as output: {}", describe(&e)))
}

/// Connects to journald's socket; the error says what to do.
fn open_journal(path: &std::path::Path) -> Result<Journal, String> {
    Journal::connect(path).map_err(|e| {
        format!(
            "cannot send lines to the journal at {}: {}; is systemd-journald running? (give --output FILE to write them elsewhere)",
            path.display(),
            describe(&e)
        )
    })
}

/// Whether writes to `file` can never wait for a reader.
fn never_blocks(file: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match file.metadata() {
        Ok(m) if m.is_file() => true,
        Ok(m) if m.file_type().is_char_device() => {
            !nix::unistd::isatty(file.as_raw_fd()).unwrap_or(true)
        }
        _ => false,
    }
}

impl Sink {
    /// Opens the output and, where needed, starts the sink thread.
    /// `failed` says why when the output fails; the server then stops.
    /// `--fsync` was checked against the output already
    /// ([`check_fsync`]).
    pub fn start(
        output: Output,
        fsync: bool,
        failed: watch::Sender<Option<String>>,
    ) -> Result<Sink, String> {
        let target = match output {
            Output::Journal => {
                Target::Journal(open_journal(std::path::Path::new(journal::SOCKET))?)
            }
            _ => Target::File(open(&output)?),
        };
        let lines = Arc::new(AtomicU64::new(0));
        let inline = !fsync && matches!(&target, Target::File(f) if never_blocks(f));
        let writer = Writer {
            target,
            output,
            fsync,
            ok: true,
            lines: lines.clone(),
            failed,
        };
        if inline {
            return Ok(Sink {
                path: Arc::new(Path::Inline(Mutex::new(writer))),
                lines,
            });
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || sink_thread(writer, rx))
            .map_err(|e| format!("cannot start the output thread: {}", describe(&e)))?;
        Ok(Sink {
            path: Arc::new(Path::Thread(tx)),
            lines,
        })
    }

    /// Hands lines to the sink; the answer says whether they reached the
    /// output (and the disk, with `--fsync`). `false` also when the sink is
    /// gone.
    pub async fn commit(&self, data: Vec<u8>, lines: u64) -> bool {
        match &*self.path {
            Path::Inline(w) => lock(w).commit(&[&data], lines),
            Path::Thread(tx) => {
                let (done, rx) = oneshot::channel();
                if tx.send(Msg::Commit { data, lines, done }).is_err() {
                    return false;
                }
                rx.await.unwrap_or(false)
            }
        }
    }

    /// Reopens the output file (SIGHUP), after everything handed to the
    /// sink before is committed.
    pub fn reopen(&self) {
        match &*self.path {
            Path::Inline(w) => lock(w).reopen(),
            Path::Thread(tx) => {
                let _ = tx.send(Msg::Reopen);
            }
        }
    }
}

fn lock(w: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sink thread: takes every batch that is waiting (up to
/// `COMMIT_BYTES`), commits them together, answers each.
fn sink_thread(mut writer: Writer, rx: mpsc::Receiver<Msg>) {
    let mut pending: Vec<(Vec<u8>, u64, oneshot::Sender<bool>)> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut bytes = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Reopen => {
                    // Commit and answer what came before, then switch.
                    settle(&mut writer, &mut pending);
                    writer.reopen();
                }
                Msg::Commit { data, lines, done } => {
                    bytes += data.len();
                    pending.push((data, lines, done));
                }
            }
            if bytes < COMMIT_BYTES {
                next = rx.try_recv().ok();
            }
        }
        settle(&mut writer, &mut pending);
    }
}

/// Commits the pending batches and answers each of them, leaving none
/// pending.
fn settle(writer: &mut Writer, pending: &mut Vec<(Vec<u8>, u64, oneshot::Sender<bool>)>) {
    if pending.is_empty() {
        return;
    }
    let bufs: Vec<&[u8]> = pending.iter().map(|(d, _, _)| d.as_slice()).collect();
    let lines = pending.iter().map(|(_, l, _)| l).sum();
    let ok = writer.commit(&bufs, lines);
    for (_, _, done) in pending.drain(..) {
        let _ = done.send(ok);
    }
}

/// `--fsync` needs an output that can be synced: a file (or a block
/// device), not a pipe or a terminal.
pub fn check_fsync(output: &Output) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match output {
        Output::Journal => {
            return Err(
                "--fsync applies to files, and the output is the journal; give --output FILE, or drop --fsync".to_string(),
            )
        }
        Output::File(p) => match std::fs::metadata(p) {
            Ok(m) => m,
            // It will be created as a file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot inspect output {output}: {}", describe(&e))),
        },
        _ => open(output)?
            .metadata()
            .map_err(|e| format!("cannot inspect output {output}: {}", describe(&e)))?,
    };
    if meta.is_file() || meta.file_type().is_block_device() {
        Ok(())
    } else {
        Err(format!(
            "--fsync needs an output that is a file, and {output} is not; give --output FILE or redirect to a file"
        ))
    }
}

fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A non-blocking output (a parent set O_NONBLOCK on the pipe)
            // that is full: wait until it takes more, as a blocking one
            // would. Only the sink thread writes to such an output.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(file)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `file` can take more bytes (or has failed: the next write
/// says how).
fn wait_writable(file: &File) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
