//! Exit statuses of both tools, in one place, and the error type that
//! carries one to `main` (in the style of ripgrep's `main`).

/// sockserve: a clean stop, or its one connection is done. sockclient:
/// all of standard input was sent and every line was acked.
pub const OK: u8 = 0;
/// sockserve: a runtime failure (cannot bind, a bad inherited socket, a
/// failing output). sockclient: lines were lost (or not all input was
/// sent, or a protocol violation).
pub const FAILURE: u8 = 1;
/// Either tool: a bad command line.
pub const USAGE: u8 = 2;
/// sockclient: the server refused us.
pub const REFUSED: u8 = 3;
/// sockclient: could not connect, or no greeting came.
pub const NO_CONNECT: u8 = 4;
/// sockclient: standard output closed with input left, as a program
/// ended by SIGPIPE (128 + 13).
pub const CLOSED_OUTPUT: u8 = 128 + 13;

/// 128 + the signal's number: how the shell reports a program a signal
/// stopped (130 for SIGINT, 143 for SIGTERM).
pub fn by_signal(signal: i32) -> u8 {
    128u8.saturating_add(u8::try_from(signal).unwrap_or(0))
}

/// A run that could not go on: the status to exit with and the message
/// to print (`PROGRAM: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A runtime failure (exit 1).
    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure::new(FAILURE, message)
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code of a run: 0, or the failure's code after its message.
pub fn report(result: Result<(), Failure>) -> std::process::ExitCode {
    let code = match result {
        Ok(()) => std::process::ExitCode::from(OK),
        Err(f) => {
            if !f.message.is_empty() {
                crate::error!("{}", f.message);
            }
            std::process::ExitCode::from(f.code)
        }
    };
    // The last words: written before the process exits, within a bound
    // (a standard error that does not drain must not hold the exit).
    crate::diag::flush(std::time::Duration::from_secs(1));
    code
}

/// Prints clap's own message (usage error, `--help`, `--version`) in
/// clap's format; exit 2 for an error, 0 for help and version (1 when
/// they could not be written).
pub fn clap_error(e: &clap::Error) -> std::process::ExitCode {
    let printed = e.print();
    std::process::ExitCode::from(if e.use_stderr() {
        USAGE
    } else if printed.is_err() {
        // --help or --version that could not be written (a full disk, a
        // closed pipe) did not do what was asked.
        FAILURE
    } else {
        OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_statuses_follow_the_shell() {
        assert_eq!(by_signal(2), 130);
        assert_eq!(by_signal(15), 143);
        assert_eq!(CLOSED_OUTPUT, 141);
    }
}
