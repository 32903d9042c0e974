//! The output sink and its commit: write, then `fdatasync` where asked,
//! then tell every waiting connection it may ack.
//!
//! One thread owns the output. Connections send it batches of complete
//! lines; it takes every batch that is waiting, writes them all in one
//! `writev`, syncs once if `--fsync` asks for it (group commit: many
//! connections share one sync), and only then answers each batch. A write
//! or sync that fails answers every batch, then and after, with failure:
//! no line is ever acked that did not reach the output.
//!
//! Writing on a thread of its own keeps a slow reader of standard output
//! (a full pipe) from blocking the runtime's workers; connections wait for
//! their answer, so they stop reading and the pressure reaches the clients.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::{oneshot, watch};

use crate::diag::describe;

/// Where received lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stdout => f.write_str("standard output"),
            Output::Stderr => f.write_str("standard error"),
            Output::File(p) => write!(f, "{}", p.display()),
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

/// The connections' handle on the sink.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Msg>,
    /// Lines written to the output so far.
    pub lines: Arc<AtomicU64>,
}

/// Opens the output; the error names it and says what failed.
fn open(output: &Output) -> Result<File, String> {
    let fd = match output {
        Output::Stdout => io::stdout().as_fd().try_clone_to_owned(),
        Output::Stderr => io::stderr().as_fd().try_clone_to_owned(),
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

impl Sink {
    /// Opens the output and starts the sink thread. `failed` becomes true
    /// when the output fails; the server then stops.
    pub fn start(output: Output, fsync: bool, failed: watch::Sender<bool>) -> Result<Sink, String> {
        if fsync {
            check_fsync(&output)?;
        }
        let mut file = open(&output)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let lines = Arc::new(AtomicU64::new(0));
        let counter = lines.clone();
        std::thread::Builder::new()
            .name("sink".into())
            .spawn(move || {
                let mut ok = true;
                let mut pending: Vec<(Vec<u8>, u64, oneshot::Sender<bool>)> = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    let mut bytes = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Reopen => {
                                // Commit and answer what came before, then switch.
                                ok = settle(
                                    &mut file,
                                    &mut pending,
                                    ok,
                                    fsync,
                                    &output,
                                    &counter,
                                    &failed,
                                );
                                if ok {
                                    match open(&output) {
                                        Ok(f) => {
                                            file = f;
                                            crate::info!("reopened output {output}");
                                        }
                                        Err(e) => {
                                            crate::warn!("{e}; still writing to the old file")
                                        }
                                    }
                                }
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
                    ok = settle(
                        &mut file,
                        &mut pending,
                        ok,
                        fsync,
                        &output,
                        &counter,
                        &failed,
                    );
                }
            })
            .map_err(|e| format!("cannot start the output thread: {}", describe(&e)))?;
        Ok(Sink { tx, lines })
    }

    /// Hands lines to the sink; the answer says whether they reached the
    /// output (and the disk, with `--fsync`). `false` also when the sink is
    /// gone.
    pub async fn commit(&self, data: Vec<u8>, lines: u64) -> bool {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Commit { data, lines, done }).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Asks the sink to reopen the output file (SIGHUP), after committing
    /// everything handed to it before.
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }
}

/// `--fsync` needs an output that can be synced: a file (or a block
/// device), not a pipe or a terminal.
pub fn check_fsync(output: &Output) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match output {
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

/// Commits the pending batches (unless the output already failed) and
/// answers each of them, leaving none pending. Returns whether the output
/// is still good.
fn settle(
    file: &mut File,
    pending: &mut Vec<(Vec<u8>, u64, oneshot::Sender<bool>)>,
    ok: bool,
    fsync: bool,
    output: &Output,
    counter: &AtomicU64,
    failed: &watch::Sender<bool>,
) -> bool {
    let ok = ok && commit(file, pending, fsync, output, counter);
    if !ok {
        let _ = failed.send(true);
    }
    for (_, _, done) in pending.drain(..) {
        let _ = done.send(ok);
    }
    ok
}

/// Writes every pending batch in order, then syncs. Returns false (and
/// says why, once) if anything failed.
fn commit(
    file: &mut File,
    pending: &mut [(Vec<u8>, u64, oneshot::Sender<bool>)],
    fsync: bool,
    output: &Output,
    counter: &AtomicU64,
) -> bool {
    if pending.is_empty() {
        return true;
    }
    let mut slices: Vec<IoSlice<'_>> = pending.iter().map(|(d, _, _)| IoSlice::new(d)).collect();
    let result = write_all_vectored(file, &mut slices).and_then(|()| {
        if fsync {
            file.sync_data()
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => {
            let n: u64 = pending.iter().map(|(_, l, _)| l).sum();
            counter.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(e) => {
            let what = if e.kind() == io::ErrorKind::BrokenPipe {
                "output closed".to_string()
            } else {
                format!("cannot write output {output}")
            };
            crate::error!(
                "{what}: {}; no more lines are acked, stopping",
                describe(&e)
            );
            false
        }
    }
}

fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
