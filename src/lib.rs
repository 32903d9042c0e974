//! sockserve: a line server whose acks are receipts, and sockclient, a
//! netcat-like client that counts them.
//!
//! The protocol is the one of a PHP sockets tutorial: on connect the server
//! greets with `connect`, it answers every line with `Information Received`,
//! and a greeting that contains `not connect` is a refusal. sockserve writes
//! a line to its output before it acks it, so an ack is a receipt;
//! sockclient knows how many lines it sent and how many were acked, and its
//! exit status says whether anything was lost.
//!
//! # Layout
//!
//! - [`cli`]: both tools' command lines (clap derive), shared with the
//!   completion generator.
//! - [`protocol`]: every line either tool puts on the wire (greeting, ack,
//!   refusal, error line) and the line [`protocol::Framer`]; pure code, no
//!   I/O.
//! - [`endpoint`]: addresses (`HOST:PORT`, `[V6]:PORT`, `unix:PATH`,
//!   `unix:@NAME`), parsed and printed the same way by both tools.
//! - [`listen`]: where sockets come from: our own binds, `LISTEN_FDS`
//!   (through `listenfd`), or a connection on standard input; decided once,
//!   before any thread starts.
//! - [`server`]: start-up, the `Acceptor` (accept loops, access rules
//!   (`server/access.rs`), limits, PROXY headers (`server/proxy.rs`)), the
//!   `Supervisor` (signals and the drain), one connection's life
//!   (`server/conn.rs`), TLS streams in that life
//!   (`server/tls.rs`), the records each line
//!   becomes (`server/format.rs`: plain, JSON or journal entries), the
//!   journal's native protocol (`server/journal.rs`) and the output sink
//!   with its group commit (`server/sink.rs`).
//! - [`safepath`]: the output file and our socket files, named relative
//!   to a directory descriptor taken at start, never through a symbolic
//!   link at the last component.
//! - [`client`]: sockclient along its data path: `connect` (addresses,
//!   timeouts, retries, greeting, TLS in `client/tls.rs`), `input` (standard input to the socket
//!   through the window of unacked lines), `acks` (the socket's acks to
//!   standard output), and the run with its verdict.
//! - [`exit`]: the exit statuses of both tools and [`exit::Failure`], the
//!   error that carries one to `main`.
//! - [`tls`]: rustls for both tools (the `ring` provider): certificates
//!   and keys from PEM, the server's configuration and its reload, the
//!   client's, the identity of a verified client certificate, TLS errors
//!   in words.
//! - [`peer`]: who is on the other end of a connection, one type for
//!   access rules, limits, logs and records.
//! - [`notify`]: sd_notify (READY, STATUS, STOPPING, WATCHDOG).
//! - [`diag`]: diagnostics on standard error (journal priorities, `-q`,
//!   `-v`, a log thread that never lets a stalled standard error block),
//!   and the escaping of names from outside.
//! - `bin/sockserve.rs`, `bin/sockclient.rs`: command lines (clap) to a
//!   config, a run and an exit status; they know no sockets.

pub mod cli;
pub mod client;
pub mod diag;
pub mod endpoint;
pub mod exit;
pub mod listen;
pub mod notify;
pub mod peer;
pub mod protocol;
pub mod safepath;
pub mod server;
pub mod tls;
