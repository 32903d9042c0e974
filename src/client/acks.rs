//! The socket's acks to standard output: the tally of one connection.
//!
//! The main thread reads what the server sends, checks that each line is
//! an ack, frees the acked lines from the window, and prints the acks (or,
//! with `--echo`, each acked line and its ack). It also watches the clock
//! (`--ack-timeout`, the grace after a stop) and the signals.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memchr::memchr;

use super::connect::Sock;
use super::input::{Input, Pipe};
use super::{printable, Config, Mode, Signals, STOP_GRACE, TICK};
use crate::diag::describe;
use crate::protocol::{self, trim_eol};

/// Longest line accepted from the server.
const MAX_LINE: usize = 64 * 1024;
/// How long, once every line is acked, the client waits for the server to
/// close (it does, on the half-close) before it exits: acks beyond the
/// lines sent that come in this time are still seen.
const LINGER: Duration = Duration::from_millis(250);

/// How one connection's conversation ended.
pub enum Session {
    /// The input is over (ended, or stopped) and every line read was
    /// acked.
    Done,
    /// The connection broke (closed, reset, a failed write): the lines
    /// in flight may be resent on a new one.
    Broken(String),
    /// The run is over for this reason (no reconnect).
    Over(End),
}

/// Why a run ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The connection was lost or given up on (why).
    Cut(String),
    /// The server sent its error line (its text).
    ServerError(String),
    /// More acks came than lines were sent.
    Violation,
}

/// What became of standard output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Every write so far succeeded.
    #[default]
    Open,
    /// Its reader closed it (EPIPE): what a program that SIGPIPE ended
    /// would have seen.
    Closed,
    /// A write failed otherwise (ENOSPC, EIO...): the message.
    Failed(String),
}

/// What standard output sees of the acks.
pub struct Printer {
    out: io::BufWriter<io::Stdout>,
    mode: Mode,
    /// Whether standard output still takes what is written.
    pub state: Output,
}

impl Printer {
    pub fn new(mode: Mode) -> Printer {
        Printer {
            out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
            mode,
            state: Output::Open,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.closed() || self.mode == Mode::Quiet || bytes.is_empty() {
            return;
        }
        let r = self.out.write_all(bytes);
        self.check(r);
    }

    pub fn flush(&mut self) {
        if !self.closed() {
            let r = self.out.flush();
            self.check(r);
        }
    }

    /// Standard output takes no more: closed, or failed.
    pub fn closed(&self) -> bool {
        self.state != Output::Open
    }

    /// A failed write is remembered for the verdict, which reports it.
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.state = if e.kind() == io::ErrorKind::BrokenPipe {
                Output::Closed
            } else {
                Output::Failed(format!("cannot write standard output: {}", describe(&e)))
            };
        }
    }
}

/// The check that each line from the server is an ack.
pub struct Tally {
    ack: Vec<u8>,
    /// `ack` and its newline.
    ack_line: Vec<u8>,
    /// `ack_line` many times over: a run of acks is checked against it a
    /// block at a time, not line by line.
    block: Vec<u8>,
    /// Lines for `--echo`, reused.
    echo: Vec<u8>,
}

impl Tally {
    pub fn new(texts: &protocol::Texts) -> Tally {
        let ack_line = texts.ack_line();
        Tally {
            ack: texts.ack.as_bytes().to_vec(),
            block: texts.ack_block((64 * 1024 / ack_line.len()).max(1)),
            ack_line,
            echo: Vec::new(),
        }
    }

    /// Bytes at the start of `buf` that are whole ack lines, exactly.
    fn ack_run(&self, buf: &[u8]) -> usize {
        let len = self.ack_line.len();
        let whole = buf.len() / len * len;
        let mut i = 0;
        while i < whole {
            let k = (whole - i).min(self.block.len());
            if buf[i..i + k] == self.block[..k] {
                i += k;
                continue;
            }
            while i < whole && buf[i..i + len] == self.ack_line[..] {
                i += len;
            }
            break;
        }
        i
    }

    /// Counts `n` acks (whose bytes are `run`) and prints them.
    fn acks(&mut self, n: u64, run: &[u8], pipe: &Pipe, printer: &mut Printer) -> bool {
        let echo = printer.mode == Mode::Echo && !printer.closed();
        self.echo.clear();
        let extra = {
            let mut st = pipe.lock();
            let extra = st
                .window
                .ack(n, echo.then_some((&mut self.echo, &self.ack[..])));
            st.counts.acked += n - extra;
            st.counts.extra += extra;
            if st.reader_waiting && st.window.roomy(st.limit) {
                pipe.changed.notify_all();
            }
            extra
        };
        match printer.mode {
            Mode::Echo => printer.write(&self.echo),
            _ => printer.write(run),
        }
        extra == 0
    }

    /// Takes every complete line of `buf`: acks are counted and printed,
    /// the server's error line ends the run, anything else goes to
    /// standard error. Returns the bytes used, and how the run ends if it
    /// must.
    fn absorb(&mut self, buf: &[u8], pipe: &Pipe, printer: &mut Printer) -> (usize, Option<End>) {
        let mut i = 0;
        let end = loop {
            let run = self.ack_run(&buf[i..]);
            if run > 0 {
                let n = (run / self.ack_line.len()) as u64;
                if !self.acks(n, &buf[i..i + run], pipe, printer) {
                    break Some(End::Violation);
                }
                i += run;
                continue;
            }
            let Some(nl) = memchr(b'\n', &buf[i..]) else {
                break None;
            };
            let line = trim_eol(&buf[i..=i + nl]);
            i += nl + 1;
            if line == self.ack {
                if !self.acks(1, &self.ack_line.clone(), pipe, printer) {
                    break Some(End::Violation);
                }
            } else if let Some(text) = protocol::server_error(line) {
                break Some(End::ServerError(printable(text)));
            } else {
                crate::warn!("unexpected line from the server: {}", printable(line));
            }
        };
        printer.flush();
        (i, end)
    }
}

/// One connection's conversation, from the greeting to its end.
pub fn session(
    cfg: &Config,
    sock: &Arc<Sock>,
    mut inbox: Vec<u8>,
    pipe: &Pipe,
    signals: &Signals,
    printer: &mut Printer,
    tally: &mut Tally,
) -> Session {
    let _ = sock.set_read_timeout(Some(TICK));
    let generation = pipe.lock().generation;
    let mut last_progress = Instant::now();
    let mut acked_before = pipe.lock().counts.acked;
    let mut stop_deadline: Option<Instant> = None;
    let mut signals_at_stop = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (used, end) = tally.absorb(&inbox, pipe, printer);
        inbox.drain(..used);
        if let Some(end) = end {
            return Session::Over(end);
        }
        let (input, held, owed, acked, write_error) = {
            let st = pipe.lock();
            let write_error = (st.generation == generation)
                .then(|| st.write_error.clone())
                .flatten();
            (
                st.input.clone(),
                st.window.lines(),
                st.window.in_flight(),
                st.counts.acked,
                write_error,
            )
        };
        if input == Input::Ended && held == 0 {
            return linger(sock, inbox, pipe, printer, tally);
        }
        if input != Input::Reading && held == 0 {
            return Session::Done;
        }
        if printer.closed() && input == Input::Reading {
            pipe.stop(Input::OutputClosed);
            stop_deadline.get_or_insert(Instant::now() + STOP_GRACE);
        }
        let count = signals.count();
        if count > signals_at_stop {
            if stop_deadline.is_some() {
                // A signal during the grace (a second one, or the first
                // after standard output closed) ends the wait at once.
                return Session::Over(End::Cut("interrupted during the wait for acks".into()));
            }
            let sig = signals.first().unwrap_or(0);
            pipe.stop(Input::Signalled(sig));
            stop_deadline = Some(Instant::now() + STOP_GRACE);
            // The first signal stops; any after it ends the wait.
            signals_at_stop = 1;
            if cfg.verbose {
                crate::info!(
                    "{}: input stopped; waiting up to {:.0} s for {owed} owed acks",
                    super::signal_name(sig),
                    STOP_GRACE.as_secs_f64()
                );
            }
            continue;
        }
        if let Some(d) = stop_deadline {
            if Instant::now() >= d {
                return Session::Over(End::Cut(format!(
                    "no ack within {:.0} s of the stop",
                    STOP_GRACE.as_secs_f64()
                )));
            }
        }
        if acked != acked_before || owed == 0 {
            acked_before = acked;
            last_progress = Instant::now();
        }
        if let Some(t) = cfg.ack_timeout {
            if owed > 0 && last_progress.elapsed() >= t {
                return Session::Over(End::Cut(format!(
                    "no ack for {:.1} s (--ack-timeout)",
                    t.as_secs_f64()
                )));
            }
        }
        if let Some(why) = write_error {
            return Session::Broken(why);
        }
        let read = sock.read(&mut chunk);
        let ended = match &read {
            Ok(n) => *n == 0,
            Err(e) => !super::is_timeout(e) && e.kind() != io::ErrorKind::Interrupted,
        };
        if ended {
            // A stop just now may have made the run complete.
            let st = pipe.lock();
            if st.input != Input::Reading && st.window.lines() == 0 {
                return Session::Done;
            }
        }
        match read {
            Ok(0) => return Session::Broken("the server closed the connection".into()),
            Ok(n) if inbox.is_empty() => {
                // The usual case: whole acks, taken from where they were
                // read; only a partial line at the end is kept.
                let (used, end) = tally.absorb(&chunk[..n], pipe, printer);
                if let Some(end) = end {
                    return Session::Over(end);
                }
                inbox.extend_from_slice(&chunk[used..n]);
            }
            Ok(n) => {
                inbox.extend_from_slice(&chunk[..n]);
                if inbox.len() > MAX_LINE && memchr(b'\n', &inbox).is_none() {
                    return Session::Over(End::Cut(
                        "the server sent a line too long to be an ack".into(),
                    ));
                }
            }
            Err(e) if super::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Session::Broken(format!("connection lost: {}", describe(&e))),
        }
    }
}

/// Everything is acked: reads what else the server says until it closes,
/// at most [`LINGER`], so that acks beyond the lines sent are not missed.
fn linger(
    sock: &Sock,
    mut inbox: Vec<u8>,
    pipe: &Pipe,
    printer: &mut Printer,
    tally: &mut Tally,
) -> Session {
    let deadline = Instant::now() + LINGER;
    let mut chunk = vec![0u8; 4096];
    loop {
        let (used, end) = tally.absorb(&inbox, pipe, printer);
        inbox.drain(..used);
        if let Some(end) = end {
            return Session::Over(end);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || inbox.len() > MAX_LINE {
            return Session::Done;
        }
        let _ = sock.set_read_timeout(Some(left));
        match sock.read(&mut chunk) {
            Ok(0) => return Session::Done,
            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
            Err(e) if super::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Session::Done,
        }
    }
}
