//! One test per fixed bug, as ripgrep keeps them. Bugs whose test lives
//! with its topic are listed here with the test that proves the fix:
//!
//! - A sender that wrote and closed without reading lost the lines still
//!   in the receive queue (a failed ack write stopped the reading):
//!   `senders::send_and_close_loses_no_line`,
//!   `senders::logger_tcp_lines_are_all_written`.
//! - The idle timeout closed a client waiting for acks behind a stalled
//!   output, or one sending while the server was stopped:
//!   `senders::a_stalled_output_does_not_blame_the_client`,
//!   `senders::a_paused_server_does_not_blame_the_client`.
//! - A refused client, with `Accept=yes` above all, saw a reset instead
//!   of its refusal: `senders::every_refusal_arrives_in_every_activation_mode`,
//!   `senders::a_refused_client_that_sent_first_reads_its_refusal`.
//! - A non-blocking standard output made sockserve exit 1 when its reader
//!   paused: `senders::a_non_blocking_stdout_pipe_waits_for_its_reader`.
//! - `--max-line 18446744073709551615` made every connection panic:
//!   `senders::max_line_beyond_what_the_server_can_hold_is_a_usage_error`.

mod common;

use common::*;

/// sockclient counted a last line without a newline only after writing
/// its newline, so a fast ack arrived first and was taken for an extra
/// ack: "1 more acks came than lines were sent", then "1 of 3 lines were
/// not acknowledged", exit 1. Repeated, because it was a race.
#[test]
fn last_line_without_newline_is_counted_before_its_ack_can_arrive() {
    let s = Server::start(&["127.0.0.1:0"]);
    for _ in 0..200 {
        let r = run_client(&[s.addr()], b"one\ntwo\nthree");
        assert_eq!(r.code(), 0, "{}", r.stderr);
        assert_eq!(r.stderr, "");
    }
}

/// `sockserve --inetd -o FILE 127.0.0.1:0` served its connection on
/// standard input and then kept running: "one connection, then exit"
/// keyed on "no listeners", and the address gave it one. --inetd now
/// means the one connection on standard input only: with an address (or
/// --fd-name) it is a usage error.
#[test]
fn inetd_with_an_address_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("in.log");
    for extra in [&["127.0.0.1:0"][..], &["--fd-name", "x"][..]] {
        let mut args = vec!["--inetd", "-o", log.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = run_bin(sockserve_bin(), &args, b"");
        assert_eq!(r.code(), 2, "{}", r.stderr);
        assert!(r.stderr.contains("--inetd"), "{}", r.stderr);
        assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    }
}

/// The sink thread committed the batches pending at a SIGHUP to the old
/// file and then again to the new one: lines duplicated across a
/// logrotate. To have batches pending at the reopen, eight clients
/// pipeline into --fsync (the thread path: batches queue behind each
/// sync) while SIGHUP comes every millisecond; the file is not renamed,
/// so a batch written twice shows as a duplicate in it.
#[test]
fn batches_pending_at_sighup_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dup.log");
    let mut s = Server::start(&["--fsync", "-o", log.to_str().unwrap(), "127.0.0.1:0"]);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = s.addr().to_string();
            std::thread::spawn(move || {
                let input: String = (0..50_000).map(|i| format!("{c}:{i}\n")).collect();
                run_client(&[&addr], input.as_bytes())
            })
        })
        .collect();
    let mut hups = 0;
    while clients.iter().any(|c| !c.is_finished()) && hups < 20_000 {
        s.signal(nix::sys::signal::Signal::SIGHUP);
        hups += 1;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.code(), 0, "{}", r.stderr);
    }
    assert!(s.stop().success());
    assert!(
        hups > 10,
        "the clients finished before the reopens could matter"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8 * 50_000, "after {hups} SIGHUPs");
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 8 * 50_000, "duplicates after {hups} SIGHUPs");
}

/// sockclient exited 0 when the server closed the connection while its
/// standard input still had lines to come, because every line sent so
/// far had been acked: `cat file | sockclient` could lose the rest of
/// the file in silence.
#[test]
fn server_closing_before_the_end_of_input_is_exit_1() {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"connect\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        s.write_all(b"Information Received\n").unwrap();
        // Close, with the client's input still open.
    });
    let mut child = spawn_piped(sockclient_bin(), &[&addr]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    let err = Lines::collect(child.stderr.take().unwrap());
    server.join().unwrap();
    let st = wait_child(&mut child, WAIT, &err);
    drop(stdin);
    assert_eq!(st.code(), Some(1));
    let m = err.wait_for("sockclient:");
    assert!(
        m.contains("the input was not sent to its end (the server closed the connection); lines sent and acknowledged: 1"),
        "{m}"
    );
}

/// An inherited socket's name (`LISTEN_FDNAMES`) went into log lines as
/// it was: a name holding a line break started a line of its own, and
/// under the journal (`JOURNAL_STREAM`) a `<0>` after it made that line
/// an emergency. Names from outside are now escaped in diagnostics.
#[test]
fn an_fd_name_cannot_forge_a_log_line_or_a_priority() {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let st = nix::sys::stat::fstat(writer.as_raw_fd()).unwrap();
    let mut cmd = std::process::Command::new(sockserve_bin());
    cmd.env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env("LISTEN_FDNAMES", "evil\n<0>emergency")
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stdout(std::process::Stdio::null())
        .stderr(writer);
    with_fd3(&mut cmd, l.as_raw_fd());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let lines = Lines::collect(reader);
    let listening = lines.wait_for("listening on");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    wait_child(&mut child, WAIT, &lines);
    assert!(
        listening.ends_with(r"(evil\n<0>emergency, fd 3)"),
        "{listening}"
    );
    for l in lines.all() {
        assert!(l.starts_with("<6>sockserve: "), "a forged line: {l:?}");
    }
}
