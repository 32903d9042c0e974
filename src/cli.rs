//! The command lines of both tools (clap derive), kept in the library so
//! that the binaries and the shell-completion generator share them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum, ValueHint};

use crate::diag::{parse_duration, Verbosity};
use crate::endpoint::Endpoint;
use crate::protocol::{self, Texts};
use crate::server::access::{self, Access};
use ipnet::IpNet;

/// The protocol texts, the same flags on both tools.
#[derive(Args, Debug, Clone)]
pub struct TextArgs {
    /// Greeting line sent on connect
    #[arg(long, value_name = "TEXT", default_value = protocol::DEFAULT_GREETING, value_parser = protocol::validate_text)]
    pub greeting: String,
    /// Acknowledgement line sent for every line received
    #[arg(long, value_name = "TEXT", default_value = protocol::DEFAULT_ACK, value_parser = protocol::validate_text)]
    pub ack: String,
    /// Text of the refusal greeting (a greeting containing it is a refusal)
    #[arg(long, value_name = "TEXT", default_value = protocol::DEFAULT_REFUSAL, value_parser = protocol::validate_text)]
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
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
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
    let n = positive(s)?;
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
    #[arg(value_name = "ADDRESS")]
    pub addresses: Vec<Endpoint>,

    #[command(flatten)]
    pub texts: TextArgs,

    /// Longest line accepted, in bytes, line ending excluded; a longer one
    /// closes the connection unacked
    #[arg(long, value_name = "BYTES", default_value_t = protocol::DEFAULT_MAX_LINE, value_parser = max_line)]
    pub max_line: usize,

    /// Connections served at once; more get the refusal greeting
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive)]
    pub max_connections: usize,

    /// Close a connection that sends no complete line for this long (0: never)
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Longest drain after SIGTERM or SIGINT before connections are cut
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
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

    /// Mode of the Unix socket files sockserve creates, in octal
    #[arg(long, value_name = "MODE", default_value = "0660", value_parser = octal_mode)]
    pub unix_mode: u32,

    /// Serve only the inherited sockets with this LISTEN_FDNAMES name
    /// (repeatable)
    #[arg(long = "fd-name", value_name = "NAME")]
    pub fd_names: Vec<String>,

    /// Serve the one connection on standard input (inetd style), then exit;
    /// received lines go to --output or standard error
    #[arg(long, conflicts_with_all = ["addresses", "fd_names"])]
    pub inetd: bool,

    /// Serve only TCP peers in this address or CIDR block (repeatable)
    #[arg(long, value_name = "CIDR", value_parser = access::parse_cidr)]
    pub allow: Vec<IpNet>,

    /// Refuse TCP peers in this address or CIDR block (repeatable; wins
    /// over --allow)
    #[arg(long, value_name = "CIDR", value_parser = access::parse_cidr)]
    pub deny: Vec<IpNet>,

    /// Serve only Unix peers running as this user, by id or name
    /// (repeatable)
    #[arg(long = "allow-uid", value_name = "UID", value_parser = access::parse_uid)]
    pub allow_uid: Vec<u32>,

    /// Serve only Unix peers whose primary group is this, by id or name
    /// (repeatable)
    #[arg(long = "allow-gid", value_name = "GID", value_parser = access::parse_gid)]
    pub allow_gid: Vec<u32>,

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

    pub fn access(&self) -> Access {
        Access {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            allow_uid: self.allow_uid.clone(),
            allow_gid: self.allow_gid.clone(),
        }
    }
}

/// Like netcat, for line protocols: sends standard input line by line,
/// prints each acknowledgement, and exits 0 only if all of it was sent and
/// every line was acked.
#[derive(Parser, Debug)]
#[command(name = "sockclient", version, max_term_width = 100)]
pub struct ClientArgs {
    /// ADDRESS (HOST:PORT, [IPV6]:PORT, unix:PATH, unix:@NAME), or HOST PORT
    #[arg(value_name = "ADDRESS", required = true, num_args = 1..=2)]
    pub target: Vec<String>,

    #[command(flatten)]
    pub texts: TextArgs,

    /// Give up connecting (and waiting for the greeting) after this long
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Try again this many times, with exponential backoff, when the
    /// connection fails or the server refuses
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry: u32,

    /// Give up when no ack comes for this long while acks are owed
    /// (default: wait as long as the server keeps the connection)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ack_timeout: Option<Duration>,

    /// Print LINE<TAB>ACK for every acked line instead of the ack alone
    #[arg(long, conflicts_with = "quiet")]
    pub echo: bool,

    /// Print nothing; only the exit status speaks
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print the greeting and a summary on standard error
    #[arg(short, long)]
    pub verbose: bool,
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
