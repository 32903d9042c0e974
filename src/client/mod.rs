//! sockclient: standard input to a line server, the server's acks to
//! standard output, and an exit status that says whether every line
//! arrived.
//!
//! The data path, one module each:
//!
//! - `connect.rs`: addresses, the connect timeout, retries with back-off,
//!   the greeting.
//! - `input.rs`: standard input into the window of unacked lines (the
//!   *reader* thread), and the window to the socket (the *writer* thread).
//! - `acks.rs`: the socket's acks to standard output (the main thread), the
//!   tally that frees acked lines from the window.
//! - `mod.rs`: the run (connect, converse, reconnect and resend after a
//!   break) and the verdict, a pure function from the final counts to the
//!   exit status and message.
//!
//! A TCP write is not a delivery: only the server's ack says a line
//! arrived. At the end of input the client half-closes and waits for every
//! ack it is owed; it never exits on a timer while acks are owed, unless
//! `--ack-timeout` says how long to wait. Delivery is at least once: after
//! a break the unacked lines are sent again, and those the old server had
//! written but not acked arrive twice.

mod acks;
mod connect;
mod input;
mod tls;

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cli::ClientArgs;
use crate::diag::describe;
use crate::endpoint::Endpoint;
use crate::exit::{self, Failure};
use crate::protocol::Texts;

pub use acks::{End, Output};
pub use input::Input;

/// How long to wait for owed acks after SIGINT, SIGTERM or a closed
/// standard output.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often a blocked read looks up (signals, timeouts, the writer).
const TICK: Duration = Duration::from_millis(100);

/// What goes to standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each ack line as it arrives.
    Acks,
    /// Nothing; the exit status speaks.
    Quiet,
    /// `LINE<TAB>ACK` for every acked line.
    Echo,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub endpoint: Endpoint,
    pub texts: Texts,
    /// `--greeting` was given: any other greeting is an error.
    pub strict_greeting: bool,
    pub connect_timeout: Duration,
    /// Failed attempts allowed in a row, per outage.
    pub retry: u32,
    pub ack_timeout: Option<Duration>,
    /// Bytes of unacked lines kept before reading stops.
    pub window: usize,
    pub mode: Mode,
    pub verbose: bool,
    /// `--tls`: what the handshake needs.
    pub tls: Option<TlsConfig>,
}

/// sockclient's TLS: the configuration (CAs, client certificate) and the
/// name the server's certificate must have.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl TlsConfig {
    /// From the command line: `--tls-ca` or the system's CAs,
    /// `--tls-cert`/`--tls-key`, and `--tls-server-name` or the host of
    /// the address.
    pub fn new(args: &ClientArgs, endpoint: &Endpoint) -> Result<TlsConfig, Failure> {
        let host = match endpoint {
            Endpoint::Tcp { host, .. } => host.clone(),
            _ => {
                return Err(Failure::usage(
                    "--tls is for TCP addresses: sockserve serves Unix sockets in plain text (their peers are known by their credentials)",
                ))
            }
        };
        let files = crate::tls::ClientFiles {
            ca: args.tls_ca.clone(),
            cert: args.tls_cert.clone().zip(args.tls_key.clone()),
        };
        let config = files.load().map_err(Failure::usage)?;
        let name = args.tls_server_name.clone().unwrap_or(host);
        let server_name = crate::tls::server_name(&name).map_err(Failure::usage)?;
        Ok(TlsConfig {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// SIGINT and SIGTERM as the client sees them: how many came, the first
/// one's number, and a wait that wakes on the next one.
#[derive(Default)]
pub struct Signals {
    /// (count, number of the first).
    seen: Mutex<(u64, i32)>,
    came: Condvar,
}

impl Signals {
    /// Records a signal (called by the binary's signal thread).
    pub fn raise(&self, signal: i32) {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        if g.1 == 0 {
            g.1 = signal;
        }
        drop(g);
        self.came.notify_all();
    }

    pub fn count(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The first signal's number, once one came.
    pub fn first(&self) -> Option<i32> {
        let g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (g.0 > 0).then_some(g.1)
    }

    /// Sleeps for `d`, or until a signal comes: then its number.
    pub fn sleep(&self, d: Duration) -> Option<i32> {
        let deadline = Instant::now() + d;
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.0 > 0 {
                return Some(g.1);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            g = self
                .came
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The counts of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines read from standard input (a last line without its newline
    /// counts; lines read but never sent when a stop came do not).
    pub read: u64,
    /// Lines written to a connection at least once.
    pub sent: u64,
    pub acked: u64,
    /// Lines written again on a new connection after a break.
    pub resent: u64,
    pub reconnects: u64,
    /// Acks beyond the lines sent on their connection.
    pub extra: u64,
    /// A line begun on the wire and never ended there (1 or 0): not in
    /// `sent`.
    pub in_part: u64,
}

impl Counts {
    /// `sent 10, acked 10`, and `, resent 3 after 1 reconnect` if any.
    pub fn summary(&self) -> String {
        let mut s = format!("sent {}, acked {}", self.sent, self.acked);
        if self.in_part > 0 {
            s.push_str(", 1 line sent in part");
        }
        if self.reconnects > 0 {
            s.push_str(&format!(
                ", resent {} after {} reconnect{}",
                self.resent,
                self.reconnects,
                if self.reconnects == 1 { "" } else { "s" }
            ));
        }
        s
    }
}

/// How a run ended: what the verdict is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub input: Input,
    pub counts: Counts,
    /// Why the run ended before its input was done and acked, if it did.
    pub end: Option<End>,
    /// No connection was ever greeted: the last attempt's failure.
    pub never_connected: Option<Failure>,
    /// What became of standard output.
    pub output: Output,
}

/// The exit status, and the line for standard error if there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub code: u8,
    pub message: Option<String>,
}

fn signal_name(sig: i32) -> String {
    match sig {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// The exit status never lies: 0 only when standard input reached its
/// end, all of it was sent, and every line was acked. `quiet` (`-q`)
/// silences the report of a stop.
pub fn verdict(o: &Outcome, quiet: bool) -> Verdict {
    let c = &o.counts;
    let unacked = c.sent.saturating_sub(c.acked);
    // Lines read that no connection had any of: the lines the writer
    // sends are in order, so a line sent in part is counted in `read`
    // only if lines after it were read, and is not "never sent".
    let unsent = c
        .read
        .saturating_sub(c.sent.max(c.acked))
        .saturating_sub(c.in_part);
    let why = o.end.as_ref().map(|e| match e {
        End::Cut(w) => w.clone(),
        End::ServerError(t) => format!("the server reported an error: {t}"),
        End::Violation => "protocol violation".into(),
    });
    let fail = |m: String| Verdict {
        code: exit::FAILURE,
        message: Some(m),
    };
    if c.extra > 0 {
        return fail(format!(
            "protocol violation: {} more acks came than lines were sent ({})",
            c.extra,
            c.summary()
        ));
    }
    if let Some(f) = &o.never_connected {
        if c.read == 0 {
            return Verdict {
                code: f.code,
                message: Some(f.message.clone()),
            };
        }
    }
    let output_failed = match &o.output {
        Output::Failed(m) => Some(m.clone()),
        Output::Open | Output::Closed => None,
    };
    let stop = match &o.input {
        Input::Signalled(s) => Some(format!("stopped by {}", signal_name(*s))),
        // The output's failure is named below.
        Input::OutputClosed if output_failed.is_some() => None,
        Input::OutputClosed => Some("standard output closed".to_string()),
        Input::Failed(e) => Some(e.clone()),
        Input::Reading | Input::Ended => None,
    };
    let reason = [
        output_failed.clone(),
        stop.clone(),
        why.clone(),
        o.never_connected.as_ref().map(|f| f.message.clone()),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    if unacked > 0 || unsent > 0 || c.in_part > 0 {
        let mut what = Vec::new();
        if unacked > 0 {
            what.push(format!(
                "{unacked} of {} sent lines were not acknowledged",
                c.sent
            ));
        }
        if c.in_part > 0 {
            what.push("a line was cut off in the middle".to_string());
        }
        if unsent > 0 {
            what.push(format!("{unsent} lines read were never sent"));
        }
        let because = if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        };
        return fail(format!("{}{because}: {}", what.join(", "), c.summary()));
    }
    if let Some(End::ServerError(_)) = &o.end {
        return fail(format!("{reason} ({})", c.summary()));
    }
    if output_failed.is_some() {
        return fail(format!("{reason} ({})", c.summary()));
    }
    match &o.input {
        Input::Signalled(s) => Verdict {
            code: exit::by_signal(*s),
            message: (!quiet).then(|| format!("{reason}: {}", c.summary())),
        },
        Input::Failed(_) => fail(format!("{reason} ({})", c.summary())),
        Input::Reading => fail(format!(
            "the input was not sent to its end ({reason}); lines sent and acknowledged: {}",
            c.acked
        )),
        // Acks were left unprinted (or input unread): as a program that
        // SIGPIPE ended, with or without --echo.
        Input::OutputClosed => Verdict {
            code: exit::CLOSED_OUTPUT,
            message: None,
        },
        Input::Ended if o.output == Output::Closed => Verdict {
            code: exit::CLOSED_OUTPUT,
            message: None,
        },
        Input::Ended => Verdict {
            code: exit::OK,
            message: None,
        },
    }
}

/// Text from the server, made safe for a terminal: control characters
/// (C0 but tab, DEL, C1; so every escape sequence, which starts with ESC
/// or CSI) are written as `\xHH` or `\u{HH}`, a backslash as two (so an
/// escape cannot be faked), and bytes that are not UTF-8 as U+FFFD.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\t' => out.push(ch),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", ch as u32)),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", ch as u32)),
            '\\' => out.push_str("\\\\"),
            _ => out.push(ch),
        }
    }
    out
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Runs sockclient to its end; returns the exit status.
/// All of sockclient after its command line: the config from the
/// arguments (`greeting_given`: `--greeting` was on the command line, so
/// any other greeting is an error), the signal handlers, the run. The
/// exit status is the verdict's; a failure before the run carries its own.
pub fn start(args: &ClientArgs, greeting_given: bool) -> Result<u8, Failure> {
    let endpoint = args.endpoint().map_err(|e| {
        Failure::usage(format!(
            "cannot use the address {}: {e}",
            args.target.join(" ")
        ))
    })?;
    let tls = args
        .tls
        .then(|| TlsConfig::new(args, &endpoint))
        .transpose()?;
    let signals = Arc::new(Signals::default());
    watch_signals(signals.clone()).map_err(|e| {
        Failure::runtime(format!("cannot install signal handlers: {}", describe(&e)))
    })?;
    let cfg = Config {
        endpoint,
        texts: args.texts.texts(),
        strict_greeting: greeting_given,
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
        tls,
    };
    Ok(run(cfg, signals))
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

pub fn run(cfg: Config, signals: Arc<Signals>) -> u8 {
    let started = Instant::now();
    let pipe = Arc::new(input::Pipe::new(cfg.window));
    let mut printer = acks::Printer::new(cfg.mode);
    let mut tally = acks::Tally::new(&cfg.texts);
    let mut threads = false;
    let mut never_connected = None;
    let end = loop {
        let conn = match connect::establish(&cfg, &signals) {
            Ok(c) => c,
            Err(connect::NoConn::Signal(s)) => {
                pipe.stop(Input::Signalled(s));
                break Some(End::Cut(format!("no connection to {}", cfg.endpoint)));
            }
            Err(connect::NoConn::Failed(f)) => {
                if threads {
                    break Some(End::Cut(f.message));
                }
                never_connected = Some(f);
                break None;
            }
        };
        let sock = Arc::new(conn.sock);
        if cfg.verbose {
            crate::info!("greeting: {}", printable(&conn.greeting));
        }
        let resend = pipe.connect(sock.clone());
        if threads {
            if cfg.verbose {
                crate::info!(
                    "reconnected to {}; resending the {resend} lines in flight ({})",
                    cfg.endpoint,
                    pipe.lock().counts.summary()
                );
            }
        } else {
            threads = true;
            for (name, f) in [
                ("stdin", input::read_stdin as fn(Arc<input::Pipe>)),
                ("writer", input::write_socket),
            ] {
                let p = pipe.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || f(p))
                {
                    crate::error!(
                        "cannot start the {name} thread: {}",
                        crate::diag::describe(&e)
                    );
                    return exit::FAILURE;
                }
            }
        }
        match acks::session(
            &cfg,
            &sock,
            conn.leftover,
            &pipe,
            &signals,
            &mut printer,
            &mut tally,
        ) {
            acks::Session::Done => break None,
            acks::Session::Over(end) => break Some(end),
            acks::Session::Broken(why) => {
                pipe.disconnect();
                let stopped = !matches!(pipe.lock().input, Input::Reading | Input::Ended);
                if cfg.retry == 0 || stopped {
                    break Some(End::Cut(why));
                }
                if cfg.verbose {
                    crate::info!("{why}; reconnecting");
                }
            }
        }
    };
    printer.flush();
    let outcome = {
        let st = pipe.lock();
        Outcome {
            input: st.input.clone(),
            counts: Counts {
                in_part: u64::from(st.window.sent_in_part()),
                ..st.counts.clone()
            },
            end,
            never_connected,
            output: printer.state.clone(),
        }
    };
    let v = verdict(&outcome, cfg.mode == Mode::Quiet);
    if let Some(m) = &v.message {
        crate::error!("{m}");
    }
    // The summary comes last, after any error.
    if cfg.verbose && threads {
        crate::info!(
            "{}, {:.2} s",
            outcome.counts.summary(),
            started.elapsed().as_secs_f64()
        );
    }
    v.code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(input: Input, read: u64, acked: u64) -> Outcome {
        Outcome {
            input,
            counts: Counts {
                read,
                sent: read,
                acked,
                ..Counts::default()
            },
            end: None,
            never_connected: None,
            output: Output::Open,
        }
    }

    #[test]
    fn exit_0_only_when_the_input_ended_and_all_was_acked() {
        let v = verdict(&outcome(Input::Ended, 5, 5), false);
        assert_eq!(
            v,
            Verdict {
                code: 0,
                message: None
            }
        );
        // Input still open when the run ended: not 0, even with all acked.
        let mut o = outcome(Input::Reading, 1, 1);
        o.end = Some(End::Cut("the server closed the connection".into()));
        let v = verdict(&o, false);
        assert_eq!(v.code, 1);
        assert_eq!(
            v.message.unwrap(),
            "the input was not sent to its end (the server closed the connection); \
             lines sent and acknowledged: 1"
        );
    }

    #[test]
    fn lost_lines_are_exit_1_with_the_counts() {
        let mut o = outcome(Input::Ended, 10, 3);
        o.end = Some(End::Cut("the server closed the connection".into()));
        o.counts.resent = 4;
        o.counts.reconnects = 2;
        let v = verdict(&o, true);
        assert_eq!(v.code, 1);
        assert_eq!(
            v.message.unwrap(),
            "7 of 10 sent lines were not acknowledged (the server closed the connection): \
             sent 10, acked 3, resent 4 after 2 reconnects"
        );
    }

    #[test]
    fn lines_never_sent_are_counted_apart_from_those_not_acked() {
        let mut o = outcome(Input::Ended, 761_929, 12_091);
        o.counts.sent = 605_696;
        o.end = Some(End::Cut("the server closed the connection".into()));
        let v = verdict(&o, false);
        assert_eq!(v.code, 1);
        assert_eq!(
            v.message.unwrap(),
            "593605 of 605696 sent lines were not acknowledged, 156233 lines read were \
             never sent (the server closed the connection): sent 605696, acked 12091"
        );
        // All sent were acked, some never sent.
        let mut o = outcome(Input::Ended, 5, 3);
        o.counts.sent = 3;
        let v = verdict(&o, false);
        assert_eq!(
            v.message.unwrap(),
            "2 lines read were never sent: sent 3, acked 3"
        );
    }

    #[test]
    fn a_line_sent_in_part_is_said_and_not_counted_as_never_sent() {
        // The server's "line too long" cut the only line: it was not
        // "sent 0" without a word.
        let mut o = outcome(Input::Reading, 0, 0);
        o.counts.in_part = 1;
        o.end = Some(End::ServerError("line too long (max 10 bytes)".into()));
        let v = verdict(&o, false);
        assert_eq!(v.code, 1);
        assert_eq!(
            v.message.unwrap(),
            "a line was cut off in the middle (the server reported an error: line too long \
             (max 10 bytes)): sent 0, acked 0, 1 line sent in part"
        );
        // Ended (so counted as read) and sent in part: not "never sent".
        let mut o = outcome(Input::Ended, 3, 2);
        o.counts.sent = 2;
        o.counts.in_part = 1;
        let v = verdict(&o, false);
        assert!(
            v.message
                .as_deref()
                .unwrap()
                .starts_with("a line was cut off in the middle: sent 2, acked 2"),
            "{v:?}"
        );
    }

    #[test]
    fn signals_are_128_plus_n_when_nothing_was_lost() {
        let v = verdict(&outcome(Input::Signalled(15), 20, 20), false);
        assert_eq!(v.code, 143);
        assert_eq!(v.message.unwrap(), "stopped by SIGTERM: sent 20, acked 20");
        let v = verdict(&outcome(Input::Signalled(2), 20, 20), true);
        assert_eq!(
            v,
            Verdict {
                code: 130,
                message: None
            }
        );
        let v = verdict(&outcome(Input::Signalled(2), 20, 19), true);
        assert_eq!(v.code, 1);
        assert!(v
            .message
            .unwrap()
            .starts_with("1 of 20 sent lines were not acknowledged (stopped by SIGINT)"));
    }

    #[test]
    fn closed_output_is_141_quietly_or_1_if_lines_were_lost() {
        let v = verdict(&outcome(Input::OutputClosed, 9, 9), false);
        assert_eq!(
            v,
            Verdict {
                code: 141,
                message: None
            }
        );
        let v = verdict(&outcome(Input::OutputClosed, 9, 8), false);
        assert_eq!(v.code, 1);
        // Closed after the input ended (acks left unprinted): 141 too,
        // not 0.
        let mut o = outcome(Input::Ended, 9, 9);
        o.output = Output::Closed;
        let v = verdict(&o, false);
        assert_eq!(
            v,
            Verdict {
                code: 141,
                message: None
            }
        );
        let mut o = outcome(Input::Ended, 9, 8);
        o.output = Output::Closed;
        assert_eq!(verdict(&o, false).code, 1);
    }

    #[test]
    fn a_failed_write_to_standard_output_is_exit_1_with_why() {
        let failed = Output::Failed("cannot write standard output: no space left on device".into());
        for input in [Input::Ended, Input::OutputClosed] {
            let mut o = outcome(input, 3, 3);
            o.output = failed.clone();
            let v = verdict(&o, false);
            assert_eq!(v.code, 1);
            assert_eq!(
                v.message.unwrap(),
                "cannot write standard output: no space left on device (sent 3, acked 3)"
            );
        }
        let mut o = outcome(Input::OutputClosed, 3, 2);
        o.output = failed;
        let v = verdict(&o, true);
        assert_eq!(v.code, 1);
        assert_eq!(
            v.message.unwrap(),
            "1 of 3 sent lines were not acknowledged (cannot write standard output: \
             no space left on device): sent 3, acked 2"
        );
    }

    #[test]
    fn more_acks_than_lines_is_a_protocol_violation() {
        let mut o = outcome(Input::Ended, 3, 3);
        o.counts.extra = 1;
        o.end = Some(End::Violation);
        let v = verdict(&o, false);
        assert_eq!(v.code, 1);
        assert_eq!(
            v.message.unwrap(),
            "protocol violation: 1 more acks came than lines were sent (sent 3, acked 3)"
        );
    }

    #[test]
    fn the_servers_error_line_is_named() {
        let mut o = outcome(Input::Ended, 3, 1);
        o.end = Some(End::ServerError("line too long (max 10 bytes)".into()));
        let v = verdict(&o, false);
        assert_eq!(v.code, 1);
        assert!(v.message.unwrap().starts_with(
            "2 of 3 sent lines were not acknowledged (the server reported an error: line too long"
        ));
    }

    #[test]
    fn no_connection_keeps_its_own_status() {
        for code in [exit::REFUSED, exit::NO_CONNECT, exit::FAILURE] {
            let mut o = outcome(Input::Reading, 0, 0);
            o.never_connected = Some(Failure::new(code, "refused by x: busy"));
            let v = verdict(&o, false);
            assert_eq!(v.code, code);
            assert_eq!(v.message.as_deref(), Some("refused by x: busy"));
        }
        // Interrupted while connecting, nothing read: 128 + n.
        let mut o = outcome(Input::Signalled(2), 0, 0);
        o.end = Some(End::Cut("no connection to x:1".into()));
        let v = verdict(&o, false);
        assert_eq!(v.code, 130);
        assert_eq!(
            v.message.unwrap(),
            "stopped by SIGINT; no connection to x:1: sent 0, acked 0"
        );
    }

    #[test]
    fn a_failed_read_of_standard_input_is_exit_1() {
        let v = verdict(
            &outcome(
                Input::Failed("cannot read standard input: is a directory".into()),
                2,
                2,
            ),
            false,
        );
        assert_eq!(v.code, 1);
        assert!(v.message.unwrap().contains("is a directory"));
    }

    #[test]
    fn usage_errors_are_2() {
        // Usage errors never reach the verdict (clap ends the run first);
        // the status is the one in crate::exit.
        assert_eq!(exit::USAGE, 2);
    }

    #[test]
    fn server_text_is_made_printable() {
        assert_eq!(printable(b"a\tb"), "a\tb");
        assert_eq!(printable(b"\x1b]0;owned\x07\r"), "\\x1b]0;owned\\x07\\x0d");
        assert_eq!(printable("\u{9b}2J".as_bytes()), "\\u{9b}2J");
        assert_eq!(printable(b"\x7f\\"), "\\x7f\\\\");
        assert_eq!(printable(b"\xff"), "\u{fffd}");
    }
}
