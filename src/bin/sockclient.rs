//! sockclient: command line -> config -> run -> exit status.

use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use sockserve::cli::ClientArgs;
use sockserve::client::{self, Config, Mode, Signals};
use sockserve::exit;
use sockserve::{diag, error};

fn main() -> ExitCode {
    let parsed = ClientArgs::command()
        .try_get_matches()
        .and_then(|m| ClientArgs::from_arg_matches(&m).map(|a| (a, m)));
    let (args, matches) = match parsed {
        Ok(x) => x,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    diag::init(
        "sockclient",
        if args.verbose {
            diag::Verbosity::Verbose
        } else {
            diag::Verbosity::Normal
        },
    );
    let endpoint = match args.endpoint() {
        Ok(e) => e,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let signals = Arc::new(Signals::default());
    if let Err(e) = watch_signals(signals.clone()) {
        error!("cannot install signal handlers: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    let cfg = Config {
        endpoint,
        texts: args.texts.texts(),
        strict_greeting: matches.value_source("greeting") == Some(ValueSource::CommandLine),
        connect_timeout: args.connect_timeout,
        retry: args.retry,
        ack_timeout: args.ack_timeout.filter(|d| !d.is_zero()),
        window: args.window,
        mode: if args.quiet {
            Mode::Quiet
        } else if args.echo {
            Mode::Echo
        } else {
            Mode::Acks
        },
        verbose: args.verbose,
    };
    ExitCode::from(client::run(cfg, signals))
}

/// Hands SIGINT and SIGTERM to the client, which wakes on them.
fn watch_signals(to: Arc<Signals>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                to.raise(sig);
            }
        })?;
    Ok(())
}
