//! sockclient: command line -> config -> run -> exit status.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use sockserve::cli::ClientArgs;
use sockserve::client::{self, Config, Mode, EXIT_LOST, EXIT_USAGE};
use sockserve::{diag, error};

fn main() -> ExitCode {
    let parsed = ClientArgs::command()
        .try_get_matches()
        .and_then(|m| ClientArgs::from_arg_matches(&m).map(|a| (a, m)));
    let (args, matches) = match parsed {
        Ok(x) => x,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
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
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let signals = Arc::new(AtomicU64::new(0));
    if let Err(e) = watch_signals(signals.clone()) {
        error!("cannot install signal handlers: {e}");
        return ExitCode::from(EXIT_LOST);
    }
    let cfg = Config {
        endpoint,
        texts: args.texts.texts(),
        strict_greeting: matches.value_source("greeting") == Some(ValueSource::CommandLine),
        connect_timeout: args.connect_timeout,
        retry: args.retry,
        ack_timeout: args.ack_timeout.filter(|d| !d.is_zero()),
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

/// Counts SIGINT and SIGTERM; the client looks at the count.
fn watch_signals(count: Arc<AtomicU64>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        })?;
    Ok(())
}
