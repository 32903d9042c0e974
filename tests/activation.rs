//! Socket activation: every mode through `systemd-socket-activate`, and
//! the bad cases of the LISTEN_FDS protocol. The shipped units under a
//! real systemd are tested by tests/shell/t0200-systemd.sh.

mod common;

use std::os::fd::AsRawFd;
use std::process::Command;

use common::*;

/// The activator's path; fails the test if it is not installed.
fn activator() -> String {
    require_tool("systemd-socket-activate", "systemd")
}

/// `systemd-socket-activate ARGS... sockserve SERVE_ARGS...`, waiting for
/// its own "Listening on" lines (one per -l).
fn activate(bin: &str, args: &[&str], serve_args: &[&str]) -> Server {
    let s = ServerBuilder::via(bin)
        .args(args)
        .arg(sockserve_bin())
        .args(serve_args)
        .listeners(0)
        .start();
    let want = args.iter().filter(|a| **a == "-l").count();
    assert!(eventually(WAIT, || s
        .stderr
        .all()
        .iter()
        .filter(|l| l.contains("Listening on"))
        .count()
        >= want));
    s
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn accept_yes_one_process_per_connection() {
    let bin = activator();
    let addr = format!("127.0.0.1:{}", free_port());
    let s = activate(&bin, &["-l", &addr, "--accept"], &["-v"]);
    for i in 0..3 {
        let mut p = Peer::connect(&addr).greeted();
        p.send(format!("conn {i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
        p.half_close();
        assert_eq!(p.rest(), "");
    }
    // Each connection was its own sockserve, which exited when done.
    assert!(eventually(WAIT, || s
        .stderr
        .text()
        .matches("closed (client EOF)")
        .count()
        == 3));
    assert!(eventually(WAIT, || s.output() == b"conn 0\nconn 1\nconn 2\n"));
    s.stderr.assert_lacks("listening on");
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn inetd_mode_connection_on_stdin_lines_to_stderr() {
    let bin = activator();
    let addr = format!("127.0.0.1:{}", free_port());
    let s = activate(&bin, &["-l", &addr, "--accept", "--inetd"], &[]);
    let mut p = Peer::connect(&addr).greeted();
    p.send(b"via inetd\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.half_close();
    assert_eq!(p.rest(), "");
    // Standard output is the connection: the line went to standard error.
    s.stderr.wait_for("via inetd");
    assert!(s.output().is_empty());
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn inetd_flag_with_output_file() {
    let bin = activator();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("in.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let _s = activate(
        &bin,
        &["-l", &addr, "--accept", "--inetd"],
        &["--inetd", "-o", log.to_str().unwrap()],
    );
    let mut p = Peer::connect(&addr).greeted();
    p.send(b"to the file\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "to the file\n");
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn fd_names_select_sockets() {
    let bin = activator();
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let s = activate(
        &bin,
        &["-l", &a, "-l", &b, "--fdname=first:second"],
        &["--fd-name", "second"],
    );
    // The first connection starts sockserve; it serves only "second".
    let mut p = Peer::connect(&b).greeted();
    p.send(b"second\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let l = s.stderr.wait_for("sockserve: listening on");
    assert!(l.contains(&format!("{b} (second, fd 4)")), "{l}");
    s.stderr.assert_lacks(&format!("listening on {a}"));
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn fd_name_that_matches_nothing_is_an_error() {
    let bin = activator();
    let a = format!("127.0.0.1:{}", free_port());
    let s = activate(&bin, &["-l", &a, "--fdname=web"], &["--fd-name", "lines"]);
    let _ = std::net::TcpStream::connect(&a);
    let e = s.stderr.wait_for("sockserve:");
    assert!(
        e.contains("--fd-name lines: no inherited socket has that name (LISTEN_FDNAMES)"),
        "{e}"
    );
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn unix_socket_passed_in_is_never_unlinked() {
    let bin = activator();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("act.sock");
    let spec = path.to_str().unwrap().to_string();
    let mut s = activate(&bin, &["-l", &spec], &[]);
    let mut p = Peer::connect(&format!("unix:{spec}")).greeted();
    p.send(b"x\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.half_close();
    assert_eq!(p.rest(), "");
    s.stop_success();
    assert!(
        path.exists(),
        "sockserve removed a socket it did not create"
    );
}

/// Spawns sockserve with `fd` as fd 3 and the given environment.
fn spawn_with_fd3(fd: i32, env: &[(&str, &str)], args: &[&str]) -> ClientRun {
    let mut cmd = Command::new(sockserve_bin());
    cmd.args(args).env_remove("LISTEN_PID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    with_fd3(&mut cmd, fd);
    run_command(cmd, b"")
}

#[test]
fn fd_3_a_regular_file_is_a_clear_error() {
    let f = tempfile::tempfile().unwrap();
    spawn_with_fd3(f.as_raw_fd(), &[("LISTEN_FDS", "1")], &[])
        .assert_code(1)
        .assert_stderr("sockserve: inherited fd 3: is a regular file, not a stream socket\n");
}

#[test]
fn fd_3_a_datagram_socket_is_a_clear_error() {
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    spawn_with_fd3(
        u.as_raw_fd(),
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "dgram")],
        &[],
    )
    .assert_code(1)
    .assert_stderr(
        "sockserve: inherited fd 3 (dgram): is a datagram socket, not a stream socket\n",
    );
}

#[test]
fn listen_fds_counting_more_fds_than_passed() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    spawn_with_fd3(l.as_raw_fd(), &[("LISTEN_FDS", "2")], &[])
        .assert_code(1)
        .assert_stderr_contains(
            "inherited fd 4: is not open (LISTEN_FDS counts more fds than were passed)",
        );
}

#[test]
fn inherited_fd_is_made_close_on_exec() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = l.as_raw_fd();
    let s = ServerBuilder::new(&[])
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .configure(|c| with_fd3(c, fd))
        .start();
    let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", s.pid())).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & 0o2000000, 0, "fd 3 is not O_CLOEXEC: {info}");
}
