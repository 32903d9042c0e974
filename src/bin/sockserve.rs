//! sockserve: command line -> library -> exit status.

use std::process::ExitCode;

use clap::Parser;
use sockserve::cli::ServeArgs;
use sockserve::{diag, exit, server};

/// Runs before the Rust runtime's own start-up, which opens `/dev/null`
/// on a closed standard output: a closed one must be an error, not a place
/// where every line is acked and lost.
extern "C" fn note_closed_stdout() {
    // SAFETY: F_GETFD on fd 1 reads its flags and changes nothing.
    let closed = unsafe { nix::libc::fcntl(1, nix::libc::F_GETFD) } == -1;
    server::sink::STDOUT_CLOSED_AT_START.store(closed, std::sync::atomic::Ordering::Relaxed);
}

#[used]
#[link_section = ".init_array"]
static NOTE_CLOSED_STDOUT: extern "C" fn() = note_closed_stdout;

fn main() -> ExitCode {
    let args = match ServeArgs::try_parse() {
        Ok(a) => a,
        Err(e) => return exit::clap_error(&e),
    };
    diag::init("sockserve", args.verbosity());
    exit::report(server::start(args))
}
