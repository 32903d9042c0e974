//! sockclient's pump: standard input to the socket on one thread, the
//! socket's acks to standard output on another, and the ledger between
//! them: how many lines were sent, how many acked.
//!
//! A TCP write is not a delivery: only the server's ack says a line
//! arrived. At the end of input the client half-closes and waits for every
//! ack it is owed; it never exits on a timer while acks are owed, unless
//! `--ack-timeout` says how long to wait.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memchr::{memchr, memchr_iter};

use crate::diag::describe;
use crate::endpoint::Endpoint;
use crate::protocol::{trim_eol, Texts};

/// Every line sent was acked.
pub const EXIT_OK: u8 = 0;
/// Some lines were not acked (or the greeting was not the one asked for).
pub const EXIT_LOST: u8 = 1;
/// Bad command line.
pub const EXIT_USAGE: u8 = 2;
/// The server refused us.
pub const EXIT_REFUSED: u8 = 3;
/// Could not connect (or no greeting came).
pub const EXIT_NO_CONNECT: u8 = 4;

/// How long to wait for owed acks after SIGINT, SIGTERM or a closed
/// standard output.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Longest greeting accepted.
const MAX_GREETING: usize = 64 * 1024;
/// How often the ack reader looks up from a blocked read.
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
    pub retry: u32,
    pub ack_timeout: Option<Duration>,
    pub mode: Mode,
    pub verbose: bool,
}

/// A connected socket, TCP or Unix.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.write_all(buf),
            Sock::Unix(s) => s.write_all(buf),
        }
    }
}

/// Why the client failed before it could send anything.
struct Failure {
    code: u8,
    message: String,
}

fn connect_once(cfg: &Config) -> io::Result<Sock> {
    match &cfg.endpoint {
        Endpoint::Tcp { .. } => {
            let addrs = cfg.endpoint.resolve()?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
            for a in addrs {
                match TcpStream::connect_timeout(&a, cfg.connect_timeout) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Sock::Tcp(s));
                    }
                    Err(e) => {
                        if cfg.verbose {
                            crate::info!("cannot connect to {a}: {}", describe(&e));
                        }
                        last = e;
                    }
                }
            }
            Err(last)
        }
        _ => {
            let addr = cfg
                .endpoint
                .unix_addr()?
                .ok_or(io::ErrorKind::InvalidInput)?;
            UnixStream::connect_addr(&addr).map(Sock::Unix)
        }
    }
}

/// Bytes read from the server that are not yet lines.
struct Inbox {
    buf: Vec<u8>,
}

impl Inbox {
    /// Reads one line (the greeting), within `timeout`.
    fn greeting(&mut self, sock: &mut Sock, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = memchr(b'\n', &self.buf) {
                let line = trim_eol(&self.buf[..=i]).to_vec();
                self.buf.drain(..=i);
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_GREETING {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "greeting too long",
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            sock.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects, retrying with exponential backoff, and reads the greeting.
fn establish(cfg: &Config) -> Result<(Sock, Inbox, Vec<u8>), Failure> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        let result = attempt_once(cfg);
        match result {
            Ok(x) => return Ok(x),
            Err(f) if attempt < cfg.retry && f.code != EXIT_LOST => {
                attempt += 1;
                if cfg.verbose {
                    crate::info!(
                        "{}; retry {attempt} of {} in {:.1} s",
                        f.message,
                        cfg.retry,
                        delay.as_secs_f64()
                    );
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(f) => return Err(f),
        }
    }
}

fn attempt_once(cfg: &Config) -> Result<(Sock, Inbox, Vec<u8>), Failure> {
    let ep = &cfg.endpoint;
    let mut sock = connect_once(cfg).map_err(|e| Failure {
        code: EXIT_NO_CONNECT,
        message: format!("cannot connect to {ep}: {}", describe(&e)),
    })?;
    let mut inbox = Inbox { buf: Vec::new() };
    let no_greeting = |why: String| Failure {
        code: EXIT_NO_CONNECT,
        message: format!("connected to {ep}, but {why}"),
    };
    let greeting = match inbox.greeting(&mut sock, cfg.connect_timeout) {
        Ok(Some(g)) => g,
        Ok(None) => return Err(no_greeting("it closed before its greeting".into())),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(no_greeting(format!(
                "no greeting came within {:.1} s",
                cfg.connect_timeout.as_secs_f64()
            )))
        }
        Err(e) => {
            return Err(no_greeting(format!(
                "reading its greeting failed: {}",
                describe(&e)
            )))
        }
    };
    if cfg.texts.is_refusal(&greeting) {
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("refused by {ep}: {}", String::from_utf8_lossy(&greeting)),
        });
    }
    if cfg.strict_greeting && greeting != cfg.texts.greeting.as_bytes() {
        return Err(Failure {
            code: EXIT_LOST,
            message: format!(
                "unexpected greeting from {ep}: '{}' (wanted '{}')",
                String::from_utf8_lossy(&greeting),
                cfg.texts.greeting
            ),
        });
    }
    Ok((sock, inbox, greeting))
}

/// What both threads know of the conversation.
struct Ledger {
    /// Lines handed to the socket (counted before the write, so an ack can
    /// never outrun its line).
    sent: AtomicU64,
    /// No more lines will be sent; the write side is shut.
    input_done: AtomicBool,
    /// Stop sending: a signal came, or standard output closed.
    stop: AtomicBool,
    /// Standard input was read and sent to its end.
    input_complete: AtomicBool,
    /// Serialises writes with the half-close a signal does, so no line is
    /// ever cut in two by it. Holds whether a partial line was written.
    writer: Mutex<WriterState>,
    /// Lines awaiting their ack, for `--echo`.
    echo: Mutex<VecDeque<Vec<u8>>>,
    /// Why sending ended early, if it did.
    problem: Mutex<Option<String>>,
}

struct WriterState {
    sock: Sock,
    /// The last byte written was not a `\n`.
    partial: bool,
}

impl Ledger {
    /// Ends the input side: counts a partial line (the server takes it as
    /// a line at end of stream) and shuts the write side. Idempotent.
    fn finish_input(&self, w: &mut WriterState) {
        if self.input_done.swap(true, Ordering::SeqCst) {
            return;
        }
        if w.partial {
            self.sent.fetch_add(1, Ordering::SeqCst);
            w.partial = false;
        }
        let _ = w.sock.shutdown(Shutdown::Write);
    }

    fn set_problem(&self, p: String) {
        let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(p);
    }
}

/// Copies standard input to the socket until it ends, then half-closes.
fn pump_stdin(ledger: Arc<Ledger>, echo: bool) {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                ledger.set_problem(format!("cannot read standard input: {}", describe(&e)));
                break;
            }
        };
        let chunk = &buf[..n];
        let lines = memchr_iter(b'\n', chunk).count() as u64;
        let mut w = ledger.writer.lock().unwrap_or_else(|e| e.into_inner());
        if ledger.stop.load(Ordering::SeqCst) || ledger.input_done.load(Ordering::SeqCst) {
            ledger.finish_input(&mut w);
            return;
        }
        if echo {
            queue_echo(&ledger, &mut line, chunk);
        }
        ledger.sent.fetch_add(lines, Ordering::SeqCst);
        if let Err(e) = w.sock.write_all(chunk) {
            ledger.set_problem(format!("cannot send to the server: {}", describe(&e)));
            ledger.finish_input(&mut w);
            return;
        }
        w.partial = chunk.last() != Some(&b'\n');
    }
    let mut w = ledger.writer.lock().unwrap_or_else(|e| e.into_inner());
    if w.partial && !ledger.input_done.load(Ordering::SeqCst) {
        // A last line without its newline is sent with one.
        if echo {
            queue_echo(&ledger, &mut line, b"\n");
        }
        // Counted before the write, like every line, so its ack cannot
        // arrive before the ledger knows the line.
        ledger.sent.fetch_add(1, Ordering::SeqCst);
        w.partial = false;
        if let Err(e) = w.sock.write_all(b"\n") {
            ledger.set_problem(format!("cannot send to the server: {}", describe(&e)));
            ledger.finish_input(&mut w);
            return;
        }
    }
    if !ledger.input_done.load(Ordering::SeqCst) {
        ledger.input_complete.store(true, Ordering::SeqCst);
    }
    ledger.finish_input(&mut w);
}

fn queue_echo(ledger: &Ledger, line: &mut Vec<u8>, chunk: &[u8]) {
    let mut q = ledger.echo.lock().unwrap_or_else(|e| e.into_inner());
    let mut start = 0;
    for nl in memchr_iter(b'\n', chunk) {
        line.extend_from_slice(&chunk[start..=nl]);
        q.push_back(trim_eol(line).to_vec());
        line.clear();
        start = nl + 1;
    }
    line.extend_from_slice(&chunk[start..]);
}

/// What the client's standard output and error see of the acks.
struct Printer {
    out: io::BufWriter<io::Stdout>,
    mode: Mode,
    /// Standard output was closed by its reader.
    closed: bool,
}

impl Printer {
    fn ack(&mut self, ledger: &Ledger, line: &[u8]) {
        if self.closed {
            return;
        }
        let r = match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Acks => self
                .out
                .write_all(line)
                .and_then(|()| self.out.write_all(b"\n")),
            Mode::Echo => {
                let sent = ledger
                    .echo
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front()
                    .unwrap_or_default();
                self.out
                    .write_all(&sent)
                    .and_then(|()| self.out.write_all(b"\t"))
                    .and_then(|()| self.out.write_all(line))
                    .and_then(|()| self.out.write_all(b"\n"))
            }
        };
        self.check(r);
    }

    /// Prints a run of whole ack lines exactly as they came.
    fn acks(&mut self, ledger: &Ledger, run: &[u8], ack_line: &[u8]) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Acks if !self.closed => {
                let r = self.out.write_all(run);
                self.check(r);
            }
            _ => {
                for line in run.chunks(ack_line.len()) {
                    self.ack(ledger, trim_eol(line));
                }
            }
        }
    }

    fn flush(&mut self) {
        if !self.closed {
            let r = self.out.flush();
            self.check(r);
        }
    }

    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::BrokenPipe {
                crate::error!("cannot write standard output: {}", describe(&e));
            }
            self.closed = true;
        }
    }
}

/// The count of acks, and the check that each line from the server is one.
struct Tally {
    ack: Vec<u8>,
    /// `ack` and its newline.
    ack_line: Vec<u8>,
    /// `ack_line` many times over: a run of acks is checked against it a
    /// block at a time, not line by line.
    block: Vec<u8>,
    acked: u64,
    /// Acks beyond the lines sent.
    extra: u64,
    last_progress: Instant,
}

impl Tally {
    fn new(ack: &[u8]) -> Tally {
        let mut ack_line = ack.to_vec();
        ack_line.push(b'\n');
        Tally {
            ack: ack.to_vec(),
            block: ack_line.repeat((64 * 1024 / ack_line.len()).max(1)),
            ack_line,
            acked: 0,
            extra: 0,
            last_progress: Instant::now(),
        }
    }

    fn count(&mut self, n: u64, ledger: &Ledger) {
        let owed = ledger
            .sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked);
        self.acked += n.min(owed);
        self.extra += n.saturating_sub(owed);
        self.last_progress = Instant::now();
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

    /// Takes every complete line of `buf`: acks are counted and printed,
    /// anything else goes to standard error. Returns the bytes used.
    fn absorb(&mut self, buf: &[u8], ledger: &Ledger, printer: &mut Printer) -> usize {
        let mut i = 0;
        loop {
            let run = self.ack_run(&buf[i..]);
            if run > 0 {
                self.count((run / self.ack_line.len()) as u64, ledger);
                printer.acks(ledger, &buf[i..i + run], &self.ack_line);
                i += run;
                continue;
            }
            let Some(nl) = memchr(b'\n', &buf[i..]) else {
                break;
            };
            let line = trim_eol(&buf[i..=i + nl]);
            if line == self.ack {
                self.count(1, ledger);
                printer.ack(ledger, line);
            } else {
                crate::warn!(
                    "unexpected line from the server: {}",
                    String::from_utf8_lossy(line)
                );
            }
            i += nl + 1;
        }
        printer.flush();
        i
    }
}

/// Runs sockclient to its end; returns the exit status. `stop` becomes
/// true on SIGINT or SIGTERM (a second one ends the wait at once).
pub fn run(cfg: Config, signals: Arc<AtomicU64>) -> u8 {
    let started = Instant::now();
    let (sock, mut inbox, greeting) = match establish(&cfg) {
        Ok(x) => x,
        Err(f) => {
            crate::error!("{}", f.message);
            return f.code;
        }
    };
    if cfg.verbose {
        crate::info!("greeting: {}", String::from_utf8_lossy(&greeting));
    }
    let writer = match sock.try_clone() {
        Ok(w) => w,
        Err(e) => {
            crate::error!("cannot use the connection: {}", describe(&e));
            return EXIT_LOST;
        }
    };
    let ledger = Arc::new(Ledger {
        sent: AtomicU64::new(0),
        input_done: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        input_complete: AtomicBool::new(false),
        writer: Mutex::new(WriterState {
            sock: writer,
            partial: false,
        }),
        echo: Mutex::new(VecDeque::new()),
        problem: Mutex::new(None),
    });
    {
        let ledger = ledger.clone();
        let echo = cfg.mode == Mode::Echo;
        if let Err(e) = std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || pump_stdin(ledger, echo))
        {
            crate::error!("cannot start the input thread: {}", describe(&e));
            return EXIT_LOST;
        }
    }
    let mut reader = sock;
    let _ = reader.set_read_timeout(Some(TICK));
    let mut printer = Printer {
        out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
        mode: cfg.mode,
        closed: false,
    };
    let mut tally = Tally::new(cfg.texts.ack.as_bytes());
    let mut stop_deadline: Option<Instant> = None;
    let mut signals_seen = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    let end: Option<String> = loop {
        // Lines already in the inbox (after the greeting) come first.
        let used = tally.absorb(&inbox.buf, &ledger, &mut printer);
        inbox.buf.drain(..used);
        printer.flush();
        let sent = ledger.sent.load(Ordering::SeqCst);
        let acked = tally.acked;
        let input_done = ledger.input_done.load(Ordering::SeqCst);
        if input_done && acked >= sent {
            break None;
        }
        if printer.closed && stop_deadline.is_none() {
            stop_deadline = Some(Instant::now() + STOP_GRACE);
            stop_input(&ledger);
        }
        let sig = signals.load(Ordering::SeqCst);
        if sig > signals_seen {
            signals_seen = sig;
            if stop_deadline.is_some() && sig > 1 {
                break Some("interrupted".to_string());
            }
            stop_deadline.get_or_insert(Instant::now() + STOP_GRACE);
            stop_input(&ledger);
        }
        if let Some(d) = stop_deadline {
            if Instant::now() >= d {
                break Some(
                    if printer.closed {
                        "standard output closed"
                    } else {
                        "interrupted"
                    }
                    .to_string(),
                );
            }
        }
        if let Some(t) = cfg.ack_timeout {
            if acked < sent && tally.last_progress.elapsed() >= t {
                break Some(format!(
                    "no ack for {:.1} s (--ack-timeout)",
                    t.as_secs_f64()
                ));
            }
        }
        if acked >= sent {
            tally.last_progress = Instant::now();
        }
        match reader.read(&mut chunk) {
            Ok(0) => break Some("the server closed the connection".to_string()),
            Ok(n) => {
                inbox.buf.extend_from_slice(&chunk[..n]);
                if inbox.buf.len() > MAX_GREETING && memchr(b'\n', &inbox.buf).is_none() {
                    break Some("the server sent a line too long to be an ack".to_string());
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(format!("connection lost: {}", describe(&e))),
        }
    };
    printer.flush();
    // Whatever stopped us, no more lines go out.
    stop_input(&ledger);
    let sent = ledger.sent.load(Ordering::SeqCst);
    let (acked, extra) = (tally.acked, tally.extra);
    let problem = ledger
        .problem
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if extra > 0 {
        crate::warn!("{extra} more acks came than lines were sent");
    }
    let lost = sent.saturating_sub(acked);
    if cfg.verbose {
        crate::info!(
            "sent {sent}, acked {acked}, {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    // Input left unsent is lost too, unless we stopped it ourselves (a
    // signal, or standard output closed).
    let unsent = !ledger.input_complete.load(Ordering::SeqCst) && stop_deadline.is_none();
    if lost > 0 || unsent || (problem.is_some() && !printer.closed) {
        let why = [end, problem]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        if lost > 0 {
            crate::error!("{lost} of {sent} lines were not acknowledged ({why})");
        } else if unsent {
            crate::error!(
                "the input was not sent to its end ({why}); lines sent and acknowledged: {sent}"
            );
        } else {
            crate::error!("{why}");
        }
        return EXIT_LOST;
    }
    EXIT_OK
}

/// Stops sending and half-closes, without cutting a line in two: when the
/// input thread is in the middle of a write (the server is not reading),
/// it half-closes itself once that write is done.
fn stop_input(ledger: &Ledger) {
    ledger.stop.store(true, Ordering::SeqCst);
    let mut w = match ledger.writer.try_lock() {
        Ok(w) => w,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    ledger.finish_input(&mut w);
}
