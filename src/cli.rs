//! The command lines of both tools (clap derive), kept in the library so
//! that the binaries and the shell-completion generator share them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum, ValueHint};

use crate::diag::Verbosity;
use crate::endpoint::Endpoint;
use crate::protocol::{self, Texts};
use crate::server::access::{self, Access};
use ipnet::IpNet;

/// The protocol texts, the same flags on both tools.
#[derive(Args, Debug, Clone)]
pub struct TextArgs {
    /// Greeting line sent on connect
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other, default_value = protocol::DEFAULT_GREETING, value_parser = protocol::validate_text)]
    pub greeting: String,
    /// Acknowledgement line sent for every line received
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other, default_value = protocol::DEFAULT_ACK, value_parser = protocol::validate_text)]
    pub ack: String,
    /// Text of the refusal greeting (a greeting containing it is a refusal)
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other, default_value = protocol::DEFAULT_REFUSAL, value_parser = protocol::validate_text)]
    pub refusal: String,
}

impl TextArgs {
    pub fn texts(&self) -> Texts {
        Texts {
            greeting: self.greeting.clone(),
            ack: self.ack.clone(),
            refusal: self.refusal.clone(),
        }
    }

    /// The server's texts must be told apart by its clients: a greeting
    /// that contains the refusal text refuses every client, and an ack
    /// that begins like the error line is taken for one.
    pub fn check(&self) -> Result<(), String> {
        let t = self.texts();
        if t.is_refusal(t.greeting.as_bytes()) {
            return Err(format!(
                "--greeting '{}' contains the refusal text '{}', so every client would take it for a refusal; give another --greeting or --refusal",
                t.greeting, t.refusal
            ));
        }
        if protocol::server_error(t.ack.as_bytes()).is_some() {
            return Err(format!(
                "--ack '{}' begins like the server's error line ('{}'), so clients would take every ack for an error; give another --ack",
                t.ack,
                protocol::ERROR_PREFIX
            ));
        }
        Ok(())
    }
}

/// The longest duration either tool takes: about 31 years, far beyond
/// any timeout, and short enough for every clock sum to fit.
const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// Parses a duration as systemd writes time spans (`250ms`, `10s`,
/// `2min`, `1h 30min`, `1.5h`, `2d`; units `us`, `ms`, `s`, `min` or `m`,
/// `h`, `d`, and their long names), through `humantime`; a plain number
/// (`5`, `0.5`) is seconds. `0` is a valid duration; callers decide what
/// it means.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 && secs <= MAX_DURATION.as_secs_f64() => {
            Duration::from_secs_f64(secs)
        }
        Ok(_) if t.starts_with('-') => return Err(format!("'{s}' is negative")),
        Ok(_) => return Err(format!("'{s}' is out of range")),
        Err(_) => humantime::parse_duration(t).map_err(|_| {
            format!("'{s}' is not a duration (examples: 5, 0.5, 250ms, 10s, 2min, 1h 30min)")
        })?,
    };
    if d > MAX_DURATION {
        return Err(format!(
            "'{s}' is out of range (at most {}s)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// `--backlog`: a `listen(2)` backlog, above 0 and within an `int`.
fn backlog(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 && n <= i32::MAX as u32 => Ok(n),
        _ => Err(format!(
            "'{s}' is not a whole number from 1 to {}",
            i32::MAX
        )),
    }
}

fn octal_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("'{s}' is not an octal mode such as 0660"))?;
    if m > 0o777 {
        return Err(format!("'{s}' has bits beyond 0777"));
    }
    Ok(m)
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number above 0")),
    }
}

/// `--max-line`: above 0 and at most [`protocol::MAX_MAX_LINE`], so that
/// every size computed from it fits.
fn max_line(s: &str) -> Result<usize, String> {
    let n = byte_size(s).map_err(|_| {
        format!("'{s}' is not a whole number above 0 (a size in bytes, such as 65536 or 64K)")
    })?;
    if n > protocol::MAX_MAX_LINE {
        return Err(format!(
            "'{s}' is more than sockserve can hold in one line; the largest accepted is {} (1 GiB)",
            protocol::MAX_MAX_LINE
        ));
    }
    Ok(n)
}

/// `--format`: what each received line becomes in a file or a pipe.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    /// The line itself
    Plain,
    /// One JSON object per line
    Json,
}

fn verbosity(quiet: bool, verbose: bool) -> Verbosity {
    if quiet {
        Verbosity::Quiet
    } else if verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    }
}

/// A line server: greets each client, writes every line it receives to its
/// output, and acks the line only once it is written there.
#[derive(Parser, Debug)]
#[command(name = "sockserve", version, max_term_width = 100)]
pub struct ServeArgs {
    /// Addresses to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or
    /// unix:@NAME. Default 127.0.0.1:10008 when no socket is inherited.
    #[arg(value_name = "ADDRESS", value_hint = ValueHint::Other)]
    pub addresses: Vec<Endpoint>,

    #[command(flatten)]
    pub texts: TextArgs,

    /// Longest line accepted, in bytes, line ending excluded; a longer one
    /// closes the connection unacked
    #[arg(long, value_name = "BYTES", value_hint = ValueHint::Other, default_value_t = protocol::DEFAULT_MAX_LINE, value_parser = max_line)]
    pub max_line: usize,

    /// Connections served at once; more get the refusal greeting
    #[arg(long, value_name = "N", value_hint = ValueHint::Other, default_value_t = 1024, value_parser = positive)]
    pub max_connections: usize,

    /// Close a connection that sends no complete line for this long (0: never)
    #[arg(long, value_name = "DURATION", value_hint = ValueHint::Other, default_value = "300s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Longest drain after SIGTERM or SIGINT before connections are cut
    #[arg(long, value_name = "DURATION", value_hint = ValueHint::Other, default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Append received lines to this file (mode 0640 if created) instead of
    /// standard output; SIGHUP reopens it
    #[arg(short, long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub output: Option<PathBuf>,

    /// Ack a line only after fdatasync(2) of the output returned
    #[arg(long)]
    pub fsync: bool,

    /// Write the peer's address and a tab before each received line
    /// (--format plain only)
    #[arg(long)]
    pub prefix_peer: bool,

    /// What each received line becomes in the output: the line itself
    /// (plain), or a JSON object with time, peer, connection, line and
    /// text (json)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = RecordFormat::Plain)]
    pub format: RecordFormat,

    /// Send each received line to the journal as an entry of its own,
    /// exactly, at priority 6, with SOCKSERVE_PEER, SOCKSERVE_CONNECTION
    /// and SOCKSERVE_LINE fields; the default when standard output is the
    /// journal and no --output is given
    #[arg(long, conflicts_with_all = ["output", "fsync", "prefix_peer", "format"])]
    pub journal: bool,

    /// Send clients nothing (no greeting, no acks, no refusal text): for
    /// senders that never read, such as logger, nc -N or socat -u
    #[arg(long)]
    pub receive_only: bool,

    /// Re-apply listen(2) with this backlog to every listener, inherited
    /// ones included (default: 4096 for sockserve's own binds; inherited
    /// backlogs left as they are); net.core.somaxconn caps it
    #[arg(long, value_name = "N", value_hint = ValueHint::Other, value_parser = backlog)]
    pub backlog: Option<u32>,

    /// Mode of the Unix socket files sockserve creates, in octal
    #[arg(long, value_name = "MODE", value_hint = ValueHint::Other, default_value = "0660", value_parser = octal_mode)]
    pub unix_mode: u32,

    /// Serve only the inherited sockets with this LISTEN_FDNAMES name
    /// (repeatable)
    #[arg(long = "fd-name", value_name = "NAME", value_hint = ValueHint::Other)]
    pub fd_names: Vec<String>,

    /// Serve the one connection on standard input (inetd style), then exit;
    /// received lines go to --output or standard error
    #[arg(long, conflicts_with_all = ["addresses", "fd_names"])]
    pub inetd: bool,

    /// Serve only TCP peers in this address or CIDR block (repeatable)
    #[arg(long, value_name = "CIDR", value_hint = ValueHint::Other, value_parser = access::parse_cidr)]
    pub allow: Vec<IpNet>,

    /// Refuse TCP peers in this address or CIDR block (repeatable; wins
    /// over --allow)
    #[arg(long, value_name = "CIDR", value_hint = ValueHint::Other, value_parser = access::parse_cidr)]
    pub deny: Vec<IpNet>,

    /// TCP peers in this address or CIDR block (a load balancer) must begin
    /// each connection with a PROXY protocol header (v1 or v2), whose
    /// source is then the peer; other TCP peers are refused (repeatable)
    #[arg(long = "proxy-protocol", value_name = "CIDR", value_hint = ValueHint::Other, value_parser = access::parse_cidr)]
    pub proxy_protocol: Vec<IpNet>,

    /// Serve at most N connections at once from one source address; more
    /// get the refusal greeting
    #[arg(long, value_name = "N", value_hint = ValueHint::Other, value_parser = positive)]
    pub max_per_source: Option<usize>,

    /// Set SO_REUSEPORT on the TCP sockets sockserve binds, so that several
    /// processes can listen on one port
    #[arg(long, conflicts_with = "inetd")]
    pub reuse_port: bool,

    /// Serve only Unix peers running as this user, by id or name
    /// (repeatable)
    #[arg(long = "allow-uid", value_name = "UID", value_hint = ValueHint::Other, value_parser = access::parse_uid)]
    pub allow_uid: Vec<u32>,

    /// Serve only Unix peers whose primary group is this, by id or name
    /// (repeatable)
    #[arg(long = "allow-gid", value_name = "GID", value_hint = ValueHint::Other, value_parser = access::parse_gid)]
    pub allow_gid: Vec<u32>,

    /// Speak TLS (1.2 and 1.3) on every TCP connection, with this
    /// certificate (PEM; the chain may follow it); Unix sockets stay plain.
    /// SIGHUP reloads it
    #[arg(long, value_name = "FILE", requires = "tls_key", value_hint = ValueHint::FilePath)]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert", value_hint = ValueHint::FilePath)]
    pub tls_key: Option<PathBuf>,

    /// Require a client certificate signed by a CA of this PEM file
    /// (mutual TLS); its subject joins the peer's name
    #[arg(long, value_name = "FILE", requires = "tls_cert", value_hint = ValueHint::FilePath)]
    pub tls_client_ca: Option<PathBuf>,

    /// Log only warnings and errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log more (every connection's start)
    #[arg(short, long)]
    pub verbose: bool,
}

impl ServeArgs {
    pub fn verbosity(&self) -> Verbosity {
        verbosity(self.quiet, self.verbose)
    }

    /// The TLS files, when `--tls-cert` was given.
    pub fn tls_files(&self) -> Option<crate::tls::ServerFiles> {
        Some(crate::tls::ServerFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    pub fn access(&self) -> Access {
        Access {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            allow_uid: self.allow_uid.clone(),
            allow_gid: self.allow_gid.clone(),
        }
    }
}

/// The protocol texts as sockclient sees them: what it expects to read.
#[derive(Args, Debug, Clone)]
pub struct ClientTextArgs {
    /// The greeting expected on connect; when given, any other greeting is
    /// an error (by default any greeting but a refusal is accepted)
    #[arg(long, value_name = "TEXT", default_value = protocol::DEFAULT_GREETING, value_parser = protocol::validate_text, value_hint = ValueHint::Other)]
    pub greeting: String,
    /// The ack line expected from the server for every line sent
    #[arg(long, value_name = "TEXT", default_value = protocol::DEFAULT_ACK, value_parser = protocol::validate_text, value_hint = ValueHint::Other)]
    pub ack: String,
    /// The text that marks a refusal: a greeting containing it means the
    /// server will not serve this client
    #[arg(long, value_name = "TEXT", default_value = protocol::DEFAULT_REFUSAL, value_parser = protocol::validate_text, value_hint = ValueHint::Other)]
    pub refusal: String,
}

impl ClientTextArgs {
    pub fn texts(&self) -> Texts {
        Texts {
            greeting: self.greeting.clone(),
            ack: self.ack.clone(),
            refusal: self.refusal.clone(),
        }
    }
}

/// A duration above zero (zero cannot bound a connect).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be above 0".to_string()),
        d => Ok(d),
    }
}

/// A size in bytes: a whole number, optionally with the binary suffix `K`,
/// `M` or `G` (`KiB`, `MiB`, `GiB` also accepted), above 0.
pub fn byte_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale: usize = match &t[digits.len()..] {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "'{s}' is not a size (examples: 65536, 512K, 64M, 1G)"
            ))
        }
    };
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(n) if n > 0 => Ok(n),
        Some(_) => Err("must be above 0".to_string()),
        None => Err(format!(
            "'{s}' is not a size (examples: 65536, 512K, 64M, 1G)"
        )),
    }
}

/// Like netcat, for line protocols: sends standard input line by line,
/// prints each acknowledgement, resends what a broken connection lost, and
/// exits 0 only if all of it was sent and every line was acked.
#[derive(Parser, Debug)]
#[command(
    name = "sockclient",
    version,
    max_term_width = 100,
    override_usage = "sockclient [-q | -v] [OPTIONS] <ADDRESS | HOST PORT>"
)]
pub struct ClientArgs {
    /// ADDRESS (HOST:PORT, [IPV6]:PORT, unix:PATH, unix:@NAME), or HOST PORT
    #[arg(value_name = "ADDRESS", required = true, num_args = 1..=2, value_hint = ValueHint::Other)]
    pub target: Vec<String>,

    #[command(flatten)]
    pub texts: ClientTextArgs,

    /// Give up connecting (and waiting for the greeting) after this long;
    /// above 0
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration, value_hint = ValueHint::Other)]
    pub connect_timeout: Duration,

    /// Try again up to N times in a row, with exponential backoff, when
    /// connecting fails or the server refuses; also reconnect and resend
    /// the unacked lines when the connection breaks
    #[arg(long, value_name = "N", default_value_t = 0, value_hint = ValueHint::Other)]
    pub retry: u32,

    /// Give up when no ack comes for this long while acks are owed
    /// (default, or 0: wait as long as the server keeps the connection)
    #[arg(long, value_name = "DURATION", value_parser = duration, value_hint = ValueHint::Other)]
    pub ack_timeout: Option<Duration>,

    /// Keep at most this many bytes of unacked lines; stop reading
    /// standard input while it is full (K, M, G suffixes)
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = byte_size, value_hint = ValueHint::Other)]
    pub window: usize,

    /// Print LINE<TAB>ACK for every acked line instead of the ack alone
    #[arg(long, conflicts_with = "quiet")]
    pub echo: bool,

    /// Print nothing on standard output, and no report of a stop; only
    /// the exit status (and errors) speak
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print the greeting, failed attempts, reconnects and a summary on
    /// standard error
    #[arg(short, long)]
    pub verbose: bool,

    /// Speak TLS, verifying the server's certificate against the system's
    /// trust store and the host name of ADDRESS
    #[arg(long)]
    pub tls: bool,

    /// Trust the CAs of this PEM file instead of the system's (with --tls)
    #[arg(long, value_name = "FILE", requires = "tls", value_hint = ValueHint::FilePath)]
    pub tls_ca: Option<PathBuf>,

    /// Verify the server's certificate against this name instead of the
    /// host of ADDRESS, as when connecting by IP address (with --tls)
    #[arg(long, value_name = "NAME", requires = "tls", value_hint = ValueHint::Other)]
    pub tls_server_name: Option<String>,

    /// Present this client certificate (PEM; the chain may follow it),
    /// with --tls-key (with --tls)
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"], value_hint = ValueHint::FilePath)]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_cert"], value_hint = ValueHint::FilePath)]
    pub tls_key: Option<PathBuf>,
}

impl ClientArgs {
    /// The address from `ADDRESS` or `HOST PORT`.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        match self.target.as_slice() {
            [a] => a.parse(),
            [h, p] => Endpoint::from_host_port(h, p),
            _ => Err("give ADDRESS or HOST PORT".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("5"), Duration::from_secs(5));
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("2min"), Duration::from_secs(120));
        assert_eq!(ok("1h 30min"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("2d"), Duration::from_secs(2 * 86400));
        assert_eq!(ok("500us"), Duration::from_micros(500));
        for bad in [
            "",
            "x",
            "-1",
            "1x",
            "nan",
            "inf",
            "5 parsecs",
            "99999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn window_sizes() {
        assert_eq!(byte_size("65536"), Ok(65536));
        assert_eq!(byte_size("512K"), Ok(512 << 10));
        assert_eq!(byte_size("64M"), Ok(64 << 20));
        assert_eq!(byte_size("1GiB"), Ok(1 << 30));
        for bad in [
            "0",
            "0M",
            "",
            "M",
            "1T",
            "-1",
            "1.5M",
            "99999999999999999999G",
        ] {
            assert!(byte_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_timeout_must_be_above_0() {
        assert!(positive_duration("0").is_err());
        assert!(positive_duration("0ms").is_err());
        assert_eq!(positive_duration("250ms"), Ok(Duration::from_millis(250)));
    }
}
