//! sockclient: command line -> library -> exit status.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use sockserve::cli::ClientArgs;
use sockserve::{client, diag, exit};

fn main() -> ExitCode {
    let parsed = ClientArgs::command()
        .try_get_matches()
        .and_then(|m| ClientArgs::from_arg_matches(&m).map(|a| (a, m)));
    let (args, matches) = match parsed {
        Ok(x) => x,
        Err(e) => return exit::clap_error(&e),
    };
    diag::init(
        "sockclient",
        if args.verbose {
            diag::Verbosity::Verbose
        } else {
            diag::Verbosity::Normal
        },
    );
    let greeting_given = matches.value_source("greeting") == Some(ValueSource::CommandLine);
    match client::start(&args, greeting_given) {
        Ok(code) => ExitCode::from(code),
        Err(f) => exit::report(Err(f)),
    }
}
