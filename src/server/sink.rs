//! The output sink and its commit: write, then `fdatasync` where asked,
//! then tell the waiting connection it may ack.
//!
//! Three paths, chosen once at start by what the output is:
//!
//! - **Pipe** (a pipe or FIFO, without `--fsync`): written through a
//!   non-blocking descriptor of the sink's own (standard output is
//!   reopened through `/proc/self/fd`, so the flag never reaches whoever
//!   shares the inherited one). The connection's task writes the batch
//!   itself while the pipe takes it all: no thread hop. When the pipe is
//!   full, the rest of the batch goes to the sink thread, which waits for
//!   the reader; until it has caught up, every batch goes there, in order.
//!   No runtime worker ever waits on the pipe.
//! - **Thread** (terminals, sockets, a pipe no descriptor of our own can
//!   be had for, and any output with `--fsync`): one thread owns the
//!   output. Connections send it batches;
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
//! Either way, a write or sync that fails answers every batch, then and
//! after, with failure: no line is ever acked that did not reach the
//! output.
//!
//! An output file is opened by [`open_output`], relative to its directory
//! (held from the start), never through a symbolic link and never waiting
//! for a FIFO's reader, and only used when its owner, link count and kind
//! pass the checks; SIGHUP reopens it the same way, off the runtime's
//! workers, and keeps the old file when the new one is refused.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::journal::{self, Journal};
use crate::diag::describe;
use crate::safepath::DirEntry;

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

impl Output {
    /// The output `-o PATH` names: `-` and `/dev/stdout` mean standard
    /// output itself (fd 1, not a path opened again), `/dev/stderr`
    /// standard error; anything else is a file.
    pub fn from_arg(path: &std::path::Path) -> Output {
        match path.as_os_str().as_encoded_bytes() {
            b"-" | b"/dev/stdout" => Output::Stdout,
            b"/dev/stderr" => Output::Stderr,
            _ => Output::File(path.to_path_buf()),
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

/// Standard output was closed when the process started (as with a
/// shell's `>&-`). The Rust runtime then opens `/dev/null` in its place
/// before `main`, and lines "written" there would be acked; so the binary
/// looks first, from a constructor that runs before the runtime's, and
/// says so here.
pub static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

/// What the lines are written to.
enum Out {
    File(File),
    Journal(Journal),
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

/// The output and what is known of it, whichever way lines reach it.
struct Writer {
    out: Out,
    output: Output,
    fsync: bool,
    /// False once a write or sync failed: nothing is acked after that.
    ok: bool,
    lines: Arc<AtomicU64>,
    /// Says why the output failed, once: the server then stops, exit 1.
    failed: watch::Sender<Option<String>>,
    /// The output file and its directory; `None` for standard output or
    /// error, which SIGHUP leaves as they are.
    target: Option<Arc<Target>>,
    /// The output is a pipe written without waiting ([`Path::Pipe`]): a
    /// file reopened on SIGHUP is made non-blocking too.
    nonblocking: bool,
}

/// What a write that must not wait did.
enum Attempt {
    /// Written (`true`), or the output failed (`false`).
    Done(bool),
    /// The pipe is full after this many bytes.
    Partial(usize),
}

impl Writer {
    /// Writes the batches in order, then syncs if asked. False, said once,
    /// if the output failed now or before.
    fn commit(&mut self, bufs: &[&[u8]], lines: u64) -> bool {
        if !self.ok {
            return false;
        }
        let result = match &mut self.out {
            Out::File(file) => {
                let written = if let [one] = bufs {
                    // One batch, as from a connection's own task: no list.
                    write_all_vectored(file, &mut [IoSlice::new(one)])
                } else {
                    let mut slices: Vec<IoSlice<'_>> =
                        bufs.iter().map(|b| IoSlice::new(b)).collect();
                    write_all_vectored(file, &mut slices)
                };
                written.and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) })
            }
            Out::Journal(j) => bufs.iter().try_for_each(|b| j.send_framed(b)),
        };
        match result {
            Ok(()) => {
                self.lines.fetch_add(lines, Ordering::Relaxed);
            }
            Err(e) => self.fail(e),
        }
        self.ok
    }

    /// Writes one batch without waiting: for a non-blocking pipe, from a
    /// connection's task. [`Attempt::Partial`] when the pipe is full: the
    /// bytes not written yet must go to the sink thread, before anything
    /// else is written.
    fn try_commit(&mut self, data: &[u8], lines: u64) -> Attempt {
        if !self.ok {
            return Attempt::Done(false);
        }
        let Out::File(file) = &mut self.out else {
            return Attempt::Partial(0);
        };
        let mut done = 0;
        while done < data.len() {
            match file.write(&data[done..]) {
                Ok(0) => {
                    self.fail(io::ErrorKind::WriteZero.into());
                    return Attempt::Done(false);
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Attempt::Partial(done),
                Err(e) => {
                    self.fail(e);
                    return Attempt::Done(false);
                }
            }
        }
        self.lines.fetch_add(lines, Ordering::Relaxed);
        Attempt::Done(true)
    }

    /// The output failed: say why, once, and ack nothing from now on.
    fn fail(&mut self, e: io::Error) {
        let what = if let Out::Journal(j) = &self.out {
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

    /// Reopens the output file (SIGHUP); keeps the old one if that fails.
    fn reopen(&mut self) {
        if !self.ok {
            return;
        }
        if let Some(file) = reopen_target(self.target.as_deref(), &self.output) {
            self.switch(file);
        }
    }

    fn switch(&mut self, file: File) {
        if self.nonblocking {
            if let Err(e) = set_nonblocking(&file) {
                crate::error!(
                    "cannot reopen output {}: {}; still writing to the old one",
                    self.output,
                    describe(&e)
                );
                return;
            }
        }
        self.out = Out::File(file);
        crate::info!("reopened output {}", self.output);
    }
}

/// Opens the output file again, relative to the directory held since the
/// start; logs why not and returns `None` when it cannot (the caller keeps
/// the old file).
fn reopen_target(target: Option<&Target>, output: &Output) -> Option<File> {
    let Some(t) = target else {
        crate::debug!("SIGHUP: the output is {output}; nothing to reopen");
        return None;
    };
    match open_output(&t.at, Some(t.kind)) {
        Ok((mut file, _)) => {
            end_torn_line(&mut file, output);
            Some(file)
        }
        Err(e) => {
            crate::error!("cannot reopen output {output}: {e}; still writing to the old one");
            None
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
    /// A pipe or FIFO without `--fsync`, written through a non-blocking
    /// descriptor of its own: the connection's task writes while the pipe
    /// takes the whole batch (no thread hop); when it is full, the rest of
    /// the batch, and every batch after it until the thread has caught up,
    /// goes to the sink thread, which waits for the reader. A runtime
    /// worker never waits on the pipe.
    Pipe(Arc<PipeShared>),
}

/// The pipe path's state, shared by the connections and the sink thread.
struct PipeShared {
    state: Mutex<PipeState>,
    tx: mpsc::Sender<Msg>,
}

struct PipeState {
    /// The output; taken by the sink thread while it writes (never while
    /// `queued` is 0).
    writer: Option<Writer>,
    /// Messages sent to the sink thread and not yet done. While any are,
    /// connections send theirs there too, so batches stay whole and in
    /// order.
    queued: usize,
}

/// What [`Sink::submit`] did with a batch.
pub enum Commit {
    /// Written (`true`), or not (`false`: the output failed).
    Done(bool),
    /// Handed to the sink thread: the answer comes here; a closed
    /// channel means the sink is gone (not written).
    Waiting(oneshot::Receiver<bool>),
}

/// The connections' handle on the sink.
#[derive(Clone)]
pub struct Sink {
    path: Arc<Path>,
    /// Held while an inline reopen opens the new file, so two SIGHUPs in
    /// a row switch files in order.
    reopening: Arc<Mutex<()>>,
    /// Lines written to the output so far.
    pub lines: Arc<AtomicU64>,
}

/// What kind of file the output is, as far as the checks care. A reopen
/// must find the same kind as the start did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Fifo,
    CharDevice,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Fifo => "a FIFO",
            FileKind::CharDevice => "a character device",
        }
    }
}

/// Why the output file cannot be used (now).
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// A FIFO that nobody reads yet (`ENXIO` under `O_NONBLOCK`): usable
    /// once a reader opens it.
    NoReader,
    /// Anything else: what failed and what to do, without the path.
    Refused(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NoReader => {
                f.write_str("it is a FIFO nobody reads yet; start its reader first")
            }
            OpenError::Refused(why) => f.write_str(why),
        }
    }
}

/// Opens the output file `at` names, relative to its directory: for
/// appending, created 0640 if missing, without following a symbolic link
/// at the last component (`O_NOFOLLOW`), without waiting for a FIFO's
/// reader (`O_NONBLOCK`), without becoming our controlling terminal
/// (`O_NOCTTY`), close-on-exec. Then checks what was opened: a regular
/// file owned by us (or root) with exactly one link, or a FIFO or
/// character device owned by us (or root); with `expect`, only that kind.
/// The descriptor returned is back in blocking mode.
pub fn open_output(at: &DirEntry, expect: Option<FileKind>) -> Result<(File, FileKind), OpenError> {
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    let refuse = |why: &str| Err(OpenError::Refused(why.to_string()));
    let flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CREAT
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match at.openat(flags, nix::sys::stat::Mode::from_bits_truncate(0o640)) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return refuse("it is a symbolic link; give the real path"),
        Err(Errno::ENXIO) => {
            return match at.lstat() {
                Ok(st) if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO => {
                    // Somebody else's FIFO is refused, reader or not.
                    check_owner(FileKind::Fifo, st.st_uid)?;
                    Err(OpenError::NoReader)
                }
                Ok(st) => Err(OpenError::Refused(format!(
                    "it is {}; give a regular file, a FIFO or a character device",
                    crate::safepath::kind_name(st.st_mode)
                ))),
                Err(e) => Err(OpenError::Refused(describe(&e.into()))),
            };
        }
        Err(Errno::EISDIR) => return refuse("it is a directory; give a file name"),
        Err(e) => {
            let e = io::Error::from(e);
            let hint = match e.kind() {
                io::ErrorKind::PermissionDenied => {
                    "; give a path this user may write, or run as its owner"
                }
                io::ErrorKind::NotFound => "; create its directory first",
                _ => "",
            };
            return Err(OpenError::Refused(format!("{}{hint}", describe(&e))));
        }
    };
    let st = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(|e| OpenError::Refused(format!("cannot inspect it: {}", describe(&e.into()))))?;
    let kind = match st.st_mode & nix::libc::S_IFMT {
        nix::libc::S_IFREG => FileKind::Regular,
        nix::libc::S_IFIFO => FileKind::Fifo,
        nix::libc::S_IFCHR => FileKind::CharDevice,
        _ => {
            return Err(OpenError::Refused(format!(
                "it is {}; give a regular file, a FIFO or a character device",
                crate::safepath::kind_name(st.st_mode)
            )))
        }
    };
    check_owner(kind, st.st_uid)?;
    if kind == FileKind::Regular && st.st_nlink != 1 {
        return Err(OpenError::Refused(format!(
            "it has {} hard links, and an output file must have exactly one; remove the other links or give another path",
            st.st_nlink
        )));
    }
    if let Some(want) = expect.filter(|w| *w != kind) {
        return Err(OpenError::Refused(format!(
            "it is now {}, and it was {} at start; put {} back",
            kind.name(),
            want.name(),
            want.name()
        )));
    }
    // The sink writes as if the output blocked (the sink thread waits on a
    // slow reader); only the open had to be non-blocking.
    let fl = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| OpenError::Refused(describe(&e.into())))?;
    let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(|e| OpenError::Refused(describe(&e.into())))?;
    Ok((File::from(fd), kind))
}

/// An output must belong to the effective user or root.
fn check_owner(kind: FileKind, uid: u32) -> Result<(), OpenError> {
    let me = nix::unistd::geteuid().as_raw();
    if uid == me || uid == 0 {
        return Ok(());
    }
    Err(OpenError::Refused(format!(
        "it is {} owned by uid {uid}, neither this user (uid {me}) nor root; remove it, or chown it to uid {me}",
        kind.name()
    )))
}

/// The output file, its directory held from the start, and what kind of
/// file it was then.
struct Target {
    at: DirEntry,
    kind: FileKind,
}

/// The output, opened at start and not yet handed to a [`Sink`].
pub struct Opened {
    out: Out,
    target: Option<Target>,
}

/// Why the output could not be opened at start.
enum StartError {
    /// A FIFO nobody reads yet: try again.
    NoReader,
    /// What failed and what to do, the output named.
    Failed(String),
}

/// Opens the output at start: standard output or error as they are, a
/// path through [`open_output`]. A FIFO that nobody reads yet is waited
/// for: said once on standard error, then tried again every 100 ms until
/// a reader comes. `None` when SIGTERM or SIGINT came while waiting: the
/// server stops before it binds anything. Runs before any thread starts,
/// before the listeners are bound.
pub fn open_waiting(output: &Output) -> Result<Option<Opened>, String> {
    let mut stop: Option<Arc<std::sync::atomic::AtomicBool>> = None;
    loop {
        match open_at_start(output) {
            Ok(o) => return Ok(Some(o)),
            Err(StartError::Failed(why)) => return Err(why),
            Err(StartError::NoReader) => {}
        }
        let flag = match &stop {
            Some(f) => f.clone(),
            None => {
                // The flag stays registered: the server's own signal
                // handling comes later and adds to it.
                let f = Arc::new(std::sync::atomic::AtomicBool::new(false));
                for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                    signal_hook::flag::register(sig, f.clone())
                        .map_err(|e| format!("cannot install signal handlers: {}", describe(&e)))?;
                }
                crate::warn!(
                    "output {output} is a FIFO nobody reads yet; waiting for its reader before listening (SIGTERM stops)"
                );
                stop = Some(f.clone());
                f
            }
        };
        for _ in 0..10 {
            if flag.load(Ordering::Relaxed) {
                crate::info!("stopped while waiting for a reader of {output}");
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn open_at_start(output: &Output) -> Result<Opened, StartError> {
    let fd = match output {
        Output::Stdout if STDOUT_CLOSED_AT_START.load(Ordering::Relaxed) => {
            return Err(StartError::Failed(
                "standard output is closed, so no line could be written; give --output FILE, or start sockserve with standard output open".to_string(),
            ))
        }
        Output::Stdout => io::stdout().as_fd().try_clone_to_owned(),
        Output::Stderr => io::stderr().as_fd().try_clone_to_owned(),
        Output::Journal => {
            return Ok(Opened {
                out: Out::Journal(
                    open_journal(std::path::Path::new(journal::SOCKET))
                        .map_err(StartError::Failed)?,
                ),
                target: None,
            })
        }
        Output::File(path) => {
            let fail = |why: String| {
                StartError::Failed(format!("cannot use output {}: {why}", path.display()))
            };
            let at = DirEntry::new(path).map_err(|e| {
                fail(format!(
                    "cannot open its directory: {}; give a path in an existing directory",
                    describe(&e)
                ))
            })?;
            let (file, kind) = match open_output(&at, None) {
                Ok(x) => x,
                Err(OpenError::NoReader) => return Err(StartError::NoReader),
                Err(e) => return Err(fail(e.to_string())),
            };
            if let Some(why) = at.shared_dir(true) {
                crate::warn!(
                    "the directory of output {} is not private: {why}; another user can replace the file between reopens (sockserve refuses links and files it does not own, but use a directory only this user can write)",
                    path.display()
                );
            }
            return Ok(Opened {
                out: Out::File(file),
                target: Some(Target { at, kind }),
            });
        }
    };
    fd.map(|fd| Opened {
        out: Out::File(File::from(fd)),
        target: None,
    })
    .map_err(|e| StartError::Failed(format!("cannot use {output} as output: {}", describe(&e))))
}

/// A regular file whose last byte is not a newline ends in part of a
/// line, left by a writer stopped mid-write (a SIGKILL stops a write to a
/// file at a page boundary; sockserve had not acknowledged that line).
/// Appending to it would glue the next line to that part, so it is ended
/// with a newline first, and the log says so. Never on a runtime worker,
/// nor under the writer's lock: it may wait [`SETTLE`].
///
/// Another process appending to the same file shows a size that grows
/// page by page while it writes, so a last byte that is not a newline is
/// looked at again after [`SETTLE`]: if the file grew meanwhile, somebody
/// is writing it, and it is left alone. A file that cannot be read back
/// (no read permission) is left as it is, with a warning.
fn end_torn_line(file: &mut File, output: &Output) {
    match ends_mid_line(file) {
        Ok(None) => return,
        Ok(Some(len)) => {
            std::thread::sleep(SETTLE);
            match ends_mid_line(file) {
                Ok(Some(again)) if again == len => {}
                Ok(_) => {
                    crate::debug!("output {output} is being written by another process; not checked for a partial last line");
                    return;
                }
                Err(e) => return cannot_check(output, &e),
            }
        }
        Err(e) => return cannot_check(output, &e),
    }
    match file.write_all(b"\n") {
        Ok(()) => crate::warn!(
            "output {output} ended in the middle of a line (a writer was stopped mid-write, as by kill -9, before that line was acknowledged); a newline now ends it, and new lines start after it"
        ),
        Err(e) => crate::warn!(
            "output {output} ends in the middle of a line, and a newline to end it could not be written: {}",
            describe(&e)
        ),
    }
}

/// How long [`end_torn_line`] waits before it looks again.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// `Some(size)` when `file` is a regular file that does not end with a
/// newline; its last byte is read through a read-only descriptor of the
/// same file (the output is open for appending only).
fn ends_mid_line(file: &File) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(None);
    }
    // Only a file written at its end: a standard output opened without
    // O_APPEND (a shell's 1<>, systemd's StandardOutput=file:) is written
    // where its offset is, and a newline there would overwrite a byte.
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    if nix::fcntl::OFlag::from_bits_truncate(flags) & nix::fcntl::OFlag::O_APPEND
        != nix::fcntl::OFlag::O_APPEND
    {
        return Ok(None);
    }
    let reader = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let mut b = [0u8; 1];
    reader.read_exact_at(&mut b, meta.len() - 1)?;
    Ok((b[0] != b'\n').then_some(meta.len()))
}

fn cannot_check(output: &Output, e: &io::Error) {
    crate::warn!(
        "cannot read the end of output {output} ({}): if a writer was killed in the middle of a line, the next line is glued to that part; let sockserve's user read the file",
        describe(e)
    );
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
    /// Takes the opened output ([`open_waiting`]) and, where needed,
    /// starts the sink thread. `failed` says why when the output fails;
    /// the server then stops. `--fsync` was checked against the output
    /// already ([`check_fsync`]).
    pub fn start(
        output: Output,
        opened: Opened,
        fsync: bool,
        failed: watch::Sender<Option<String>>,
    ) -> Result<Sink, String> {
        let Opened { mut out, target } = opened;
        if let Out::File(f) = &mut out {
            end_torn_line(f, &output);
        }
        let lines = Arc::new(AtomicU64::new(0));
        let inline = !fsync && matches!(&out, Out::File(f) if never_blocks(f));
        let mut nonblocking = false;
        if !fsync && !inline {
            if let Out::File(f) = &out {
                if let Some(nb) = nonblocking_pipe(f, target.is_some()) {
                    out = Out::File(nb);
                    nonblocking = true;
                }
            }
        }
        let writer = Writer {
            out,
            output,
            fsync,
            ok: true,
            lines: lines.clone(),
            failed,
            target: target.map(Arc::new),
            nonblocking,
        };
        let reopening = Arc::new(Mutex::new(()));
        if inline {
            return Ok(Sink {
                path: Arc::new(Path::Inline(Mutex::new(writer))),
                reopening,
                lines,
            });
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        if nonblocking {
            let shared = Arc::new(PipeShared {
                state: Mutex::new(PipeState {
                    writer: Some(writer),
                    queued: 0,
                }),
                tx,
            });
            let theirs = shared.clone();
            std::thread::Builder::new()
                .name("sink".into())
                .spawn(move || pipe_thread(&theirs, rx))
                .map_err(|e| format!("cannot start the output thread: {}", describe(&e)))?;
            return Ok(Sink {
                path: Arc::new(Path::Pipe(shared)),
                reopening,
                lines,
            });
        }
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || sink_thread(writer, rx))
            .map_err(|e| format!("cannot start the output thread: {}", describe(&e)))?;
        Ok(Sink {
            path: Arc::new(Path::Thread(tx)),
            reopening,
            lines,
        })
    }

    /// Hands lines to the sink; the answer says whether they reached the
    /// output (and the disk, with `--fsync`). `false` also when the sink is
    /// gone.
    pub async fn commit(&self, data: Vec<u8>, lines: u64) -> bool {
        match self.submit(data, lines) {
            Commit::Done(ok) => ok,
            Commit::Waiting(rx) => rx.await.unwrap_or(false),
        }
    }

    /// Hands lines to the sink without waiting for the answer: done at
    /// once where the task wrote them itself, else an answer to come (in
    /// the order the lines were handed over, for one connection).
    pub fn submit(&self, data: Vec<u8>, lines: u64) -> Commit {
        match &*self.path {
            Path::Inline(w) => {
                let ok = lock(w).commit(&[&data], lines);
                crate::protocol::recycle(data);
                Commit::Done(ok)
            }
            Path::Pipe(p) => {
                let mut data = data;
                let mut st = lock(&p.state);
                if st.queued == 0 {
                    let Some(w) = st.writer.as_mut() else {
                        return Commit::Done(false);
                    };
                    match w.try_commit(&data, lines) {
                        Attempt::Done(ok) => {
                            drop(st);
                            crate::protocol::recycle(data);
                            return Commit::Done(ok);
                        }
                        Attempt::Partial(n) => {
                            data.drain(..n);
                        }
                    }
                }
                let (done, rx) = oneshot::channel();
                if p.tx.send(Msg::Commit { data, lines, done }).is_err() {
                    return Commit::Done(false);
                }
                st.queued += 1;
                Commit::Waiting(rx)
            }
            Path::Thread(tx) => {
                let (done, rx) = oneshot::channel();
                if tx.send(Msg::Commit { data, lines, done }).is_err() {
                    return Commit::Done(false);
                }
                Commit::Waiting(rx)
            }
        }
    }

    /// Reopens the output file (SIGHUP), after everything handed to the
    /// sink before is committed. Never on a runtime worker: the sink
    /// thread opens it between commits, or (inline path) a blocking
    /// thread opens it while connections keep writing to the old file and
    /// then switches under the lock. Call it from within the runtime.
    pub fn reopen(&self) {
        match &*self.path {
            Path::Inline(_) => {
                let path = self.path.clone();
                let reopening = self.reopening.clone();
                tokio::task::spawn_blocking(move || {
                    let Path::Inline(w) = &*path else { return };
                    let _order = lock(&reopening);
                    let (target, output) = {
                        let w = lock(w);
                        if !w.ok {
                            return;
                        }
                        (w.target.clone(), w.output.clone())
                    };
                    if let Some(file) = reopen_target(target.as_deref(), &output) {
                        let mut w = lock(w);
                        if w.ok {
                            w.switch(file);
                        }
                    }
                });
            }
            Path::Thread(tx) => {
                let _ = tx.send(Msg::Reopen);
            }
            Path::Pipe(p) => {
                let mut st = lock(&p.state);
                if p.tx.send(Msg::Reopen).is_ok() {
                    st.queued += 1;
                }
            }
        }
    }
}

fn lock<T>(w: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sink thread: takes every batch that is waiting (up to
/// `COMMIT_BYTES`), commits them together, answers each.
fn sink_thread(mut writer: Writer, rx: mpsc::Receiver<Msg>) {
    let mut pending = Pending::new();
    while let Ok(first) = rx.recv() {
        gather(first, &rx, &mut writer, &mut pending);
        settle(&mut writer, &mut pending);
    }
}

/// Takes `first` and every message already waiting, up to
/// `COMMIT_BYTES` of batches, into `pending`; a reopen on the way commits
/// and answers what came before it, then switches the output. Returns how
/// many messages it took.
fn gather(
    first: Msg,
    rx: &mpsc::Receiver<Msg>,
    writer: &mut Writer,
    pending: &mut Pending,
) -> usize {
    let mut next = Some(first);
    let mut taken = 0;
    let mut bytes = 0;
    while let Some(msg) = next.take() {
        taken += 1;
        match msg {
            Msg::Reopen => {
                settle(writer, pending);
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
    taken
}

/// Batches handed to a sink thread and not yet answered.
type Pending = Vec<(Vec<u8>, u64, oneshot::Sender<bool>)>;

/// The sink thread of the pipe path: the batches a full pipe left over,
/// and SIGHUP's reopens, in the order they came. It takes the writer out
/// of the shared state while it writes (waiting for the reader), so no
/// connection ever waits for the lock while the pipe is full.
fn pipe_thread(shared: &PipeShared, rx: mpsc::Receiver<Msg>) {
    let mut pending = Pending::new();
    while let Ok(first) = rx.recv() {
        let Some(mut writer) = lock(&shared.state).writer.take() else {
            return;
        };
        let taken = gather(first, &rx, &mut writer, &mut pending);
        // Written before the connections may write again, answered after.
        let ok = {
            if pending.is_empty() {
                None
            } else {
                let bufs: Vec<&[u8]> = pending.iter().map(|(d, _, _)| d.as_slice()).collect();
                let lines = pending.iter().map(|(_, l, _)| l).sum();
                Some(writer.commit(&bufs, lines))
            }
        };
        {
            let mut st = lock(&shared.state);
            st.writer = Some(writer);
            st.queued -= taken;
        }
        if let Some(ok) = ok {
            for (_, _, done) in pending.drain(..) {
                let _ = done.send(ok);
            }
        }
    }
}

/// A descriptor of its own, non-blocking, for the pipe or FIFO `file`
/// writes to; `None` (the sink thread writes) when it is not one or none
/// can be had. A FIFO opened by path (`own`) is ours alone and is set
/// non-blocking itself; standard output is reopened through
/// `/proc/self/fd`, a new open file description, so that the flag does
/// not reach the parent or anyone else who shares the inherited one.
fn nonblocking_pipe(file: &File, own: bool) -> Option<File> {
    use std::os::unix::fs::FileTypeExt;
    if !file.metadata().ok()?.file_type().is_fifo() {
        return None;
    }
    let f = if own {
        file.try_clone().ok()?
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok()?
    };
    set_nonblocking(&f).ok()?;
    Some(f)
}

fn set_nonblocking(f: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?;
    fcntl(
        f.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Commits the pending batches and answers each of them, leaving none
/// pending.
fn settle(writer: &mut Writer, pending: &mut Pending) {
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
        // lstat: a symbolic link is refused when the output is opened.
        Output::File(p) => match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => return Ok(()),
            Ok(m) => m,
            // It will be created as a file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot inspect output {output}: {}", describe(&e))),
        },
        Output::Stdout => std::fs::File::from(
            io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("cannot inspect output {output}: {}", describe(&e)))?,
        )
        .metadata()
        .map_err(|e| format!("cannot inspect output {output}: {}", describe(&e)))?,
        Output::Stderr => std::fs::File::from(
            io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("cannot inspect output {output}: {}", describe(&e)))?,
        )
        .metadata()
        .map_err(|e| format!("cannot inspect output {output}: {}", describe(&e)))?,
    };
    if meta.is_file() || meta.file_type().is_block_device() {
        Ok(())
    } else {
        Err(format!(
            "--fsync: cannot sync {output}: it is not a file; give --output FILE or redirect to a file"
        ))
    }
}

fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        // One slice is a plain write(2): the kernel copies no iovec.
        let wrote = match bufs {
            [one] => file.write(one),
            _ => file.write_vectored(bufs),
        };
        match wrote {
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
