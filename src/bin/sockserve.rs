//! sockserve: command line -> config -> run -> exit status.

use std::process::ExitCode;

use clap::Parser;
use sockserve::cli::ServeArgs;
use sockserve::endpoint::{Endpoint, DEFAULT_ADDRESS};
use sockserve::listen::{self, Connection, Listener};
use sockserve::server::{self, Config, Output};
use sockserve::{diag, error, warn};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = match ServeArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    diag::init("sockserve", args.verbosity());
    ExitCode::from(match start(args) {
        Ok(code) => code,
        Err((code, msg)) => {
            error!("{msg}");
            code
        }
    })
}

/// Takes the sockets (before any thread starts), builds the config, runs.
fn start(args: ServeArgs) -> Result<u8, (u8, String)> {
    let failure = |m: String| (EXIT_FAILURE, m);
    // Inherited sockets first: listenfd edits the environment.
    let inherited = listen::take_inherited(&args.fd_names).map_err(failure)?;
    let mut listeners: Vec<Listener> = inherited.listeners;
    let mut connections: Vec<Connection> = inherited.connections;
    let inetd = args.inetd
        || (args.addresses.is_empty()
            && listeners.is_empty()
            && connections.is_empty()
            && args.fd_names.is_empty()
            && listen::stdin_is_connection());
    if inetd {
        connections.push(listen::take_stdin_connection().map_err(failure)?);
    }
    if !args.fd_names.is_empty() && listeners.is_empty() && connections.is_empty() {
        return Err(failure(format!(
            "no inherited socket is named {} (LISTEN_FDNAMES); check FileDescriptorName= in the .socket unit",
            args.fd_names.join(" or ")
        )));
    }
    let mut addresses = args.addresses.clone();
    if addresses.is_empty() && listeners.is_empty() && connections.is_empty() {
        addresses.push(DEFAULT_ADDRESS.parse::<Endpoint>().map_err(failure)?);
    }
    for a in &addresses {
        listeners.extend(listen::bind(a, args.unix_mode).map_err(failure)?);
    }

    let output = match (args.output.as_deref().map(Output::from_arg), inetd) {
        (Some(Output::Stdout), true) => {
            return Err((
                EXIT_USAGE,
                "-o - with --inetd: standard output is the connection; give -o FILE, or leave -o out and lines go to standard error".to_string(),
            ))
        }
        (Some(o), _) => o,
        // The connection is standard output: lines go to the journal.
        (None, true) => Output::Stderr,
        (None, false) => Output::Stdout,
    };
    let limit = server::raise_nofile_limit();
    let room = limit
        .saturating_sub(server::RESERVED_FDS + listeners.len() as u64)
        .max(1) as usize;
    let mut max_connections = args.max_connections;
    if max_connections > room {
        warn!(
            "--max-connections {max_connections} is more than the open-file limit ({limit}) allows; serving at most {room} at once (raise it with ulimit -n or LimitNOFILE=)"
        );
        max_connections = room;
    }
    let cfg = Config {
        texts: args.texts.texts(),
        max_line: args.max_line,
        max_connections,
        idle_timeout: Some(args.idle_timeout).filter(|d| !d.is_zero()),
        drain_timeout: args.drain_timeout,
        output,
        fsync: args.fsync,
        prefix_peer: args.prefix_peer,
        access: args.access(),
    };
    if cfg.fsync {
        server::sink::check_fsync(&cfg.output).map_err(|m| (EXIT_USAGE, m))?;
    }
    Ok(server::run(cfg, listeners, connections))
}
