//! sockserve: command line -> library -> exit status.

use std::process::ExitCode;

use clap::Parser;
use sockserve::cli::ServeArgs;
use sockserve::{diag, exit, server};

fn main() -> ExitCode {
    let args = match ServeArgs::try_parse() {
        Ok(a) => a,
        Err(e) => return exit::clap_error(&e),
    };
    diag::init("sockserve", args.verbosity());
    exit::report(server::start(args))
}
