//! What the tools say when something is wrong: every error path a user
//! can reach from the command line and the environment (bad addresses,
//! bad durations, bind failures, bad inherited fds, `LISTEN_PID` naming
//! another process, a bad output path, ...), each message checked for its
//! shape (`PROGRAM: what failed: why`, one line, no Rust debug output)
//! and its words. Clap's own usage errors keep clap's format. Also the
//! start-up checks of inherited sockets and `--backlog`.

mod common;

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};

/// Checks that `stderr` is exactly one diagnostic of `program`: one
/// line, `PROGRAM: what failed: why`, no Rust debug formatting.
fn assert_shape(program: &str, stderr: &str) {
    let prefix = format!("{program}: ");
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "not one line: {stderr:?}"
    );
    let line = stderr.trim_end();
    let msg = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("does not start with {prefix:?}: {line:?}"));
    assert!(msg.contains(": "), "no 'what failed: why' in {line:?}");
    for debug in [
        "Os {",
        "(os error",
        "Custom {",
        "kind: ",
        "Kind(",
        "Some(",
        "None",
        "Error {",
        "\\\"",
    ] {
        assert!(
            !line.contains(debug),
            "Rust debug output {debug:?} in {line:?}"
        );
    }
    assert!(
        msg.chars().next().is_some_and(|c| !c.is_uppercase()),
        "starts like a sentence, not a message part: {line:?}"
    );
}

/// Checks clap's own usage-error format: `error: ...`, the usage hint,
/// exit status 2.
fn assert_clap_error(r: &ClientRun, want: &str) {
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(r.stderr.contains(want), "want {want:?} in {}", r.stderr);
    assert!(r.stderr.contains("For more information, try '--help'."));
    assert!(!r.stderr.contains("(os error"), "{}", r.stderr);
}

/// Runs sockserve to its end with this standard input, environment and
/// optional fd 3; bounded.
fn serve_once(args: &[&str], stdin: Stdio, env: &[(&str, &str)], fd3: Option<i32>) -> ClientRun {
    let mut cmd = Command::new(sockserve_bin());
    cmd.args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(fd) = fd3 {
        with_fd3(&mut cmd, fd);
    }
    let line = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    // Bounded: a server that unexpectedly serves is killed.
    let status = wait_child(&mut child, Duration::from_secs(30), &Lines::default());
    ClientRun {
        status,
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        cmd: line,
    }
}

fn serve_fails(args: &[&str]) -> ClientRun {
    serve_once(args, Stdio::null(), &[], None)
}

/// A TCP socket that is neither listening nor connected: made, bound to
/// a loopback port, and left there.
fn unconnected_tcp_socket() -> OwnedFd {
    // Close-on-exec, so that it leaks into no other test's child.
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    fd
}

/// A TCP listener on loopback with this backlog (`systemfd` uses 1).
fn listener_with_backlog(n: i32) -> (OwnedFd, u16) {
    let fd = unconnected_tcp_socket();
    // SAFETY: fd is a socket we own.
    assert_eq!(unsafe { nix::libc::listen(fd.as_raw_fd(), n) }, 0);
    let port = socket::getsockname::<SockaddrIn>(fd.as_raw_fd())
        .unwrap()
        .port();
    (fd, port)
}

// ---- Command line: clap's usage errors keep clap's format ----

#[test]
fn usage_errors_are_clap_s() {
    for (args, want) in [
        (
            &["--idle-timeout", "5parsecs"][..],
            "invalid value '5parsecs' for '--idle-timeout <DURATION>': '5parsecs' is not a duration",
        ),
        (&["--drain-timeout=-1"], "'-1' is negative"),
        (&["nohost"], "'nohost' is not an address"),
        (
            &["TCP-LISTEN:10008,fork"],
            "'TCP-LISTEN:10008,fork' is socat's address syntax; write 127.0.0.1:10008 (or 0.0.0.0:10008: every IPv4 address of this machine)",
        ),
        (
            &["UNIX-LISTEN:/tmp/x.sock"],
            "is socat's address syntax; write unix:/tmp/x.sock",
        ),
        (&["tcp4:localhost:1"], "the tcp4: prefix takes an IPv4 address"),
        (&["--backlog", "0"], "'0' is not a whole number from 1"),
        (&["--max-line", "0"], "'0' is not a whole number above 0"),
        (&["--unix-mode", "999"], "'999' is not an octal mode"),
        (&["--allow", "10.0.0.0/33"], "'10.0.0.0/33' is not an address"),
        (&["-q", "-v"], "cannot be used with"),
    ] {
        let r = serve_fails(args);
        assert_clap_error(&r, want);
    }
}

#[test]
fn durations_take_systemd_time_spans() {
    // Each parses: the server starts (and is stopped).
    for d in [
        "5", "0.5", "250ms", "1min", "2m", "1h 30min", "1.5h", "2d", "500us",
    ] {
        let mut s = Server::start(&["--idle-timeout", d, "127.0.0.1:0"]);
        assert!(s.stop().success(), "{d}");
    }
}

#[test]
fn tcp_prefixes_are_taken() {
    // Port 0 given three times is three listeners, each on a port of its own.
    let mut s = ServerBuilder::new(&["tcp:127.0.0.1:0", "tcp4:127.0.0.1:0", "TCP:[::1]:0"])
        .listeners(3)
        .start();
    for a in s.addrs.clone() {
        let mut p = Peer::connect(&a).greeted();
        p.send(b"via tcp:\n").unwrap();
        assert_eq!(p.line().as_deref(), Some("Information Received\n"));
    }
    assert!(s.stop().success());
}

// ---- Runtime failures: PROGRAM: what failed: why ----

#[test]
fn bind_failures() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec![taken.clone()],
            1,
            format!("cannot bind {taken}: address in use; is another server running there?"),
        ),
        (
            vec!["192.0.2.1:26100".into()],
            1,
            "cannot bind 192.0.2.1:26100: address not available on this machine".into(),
        ),
        (
            vec!["unix:/nonexistent-folder/x.sock".into()],
            1,
            "cannot bind unix:/nonexistent-folder/x.sock: no such file or directory; create its folder first".into(),
        ),
        (
            vec![format!("unix:{}", file.display())],
            1,
            "the path exists and is not a socket".into(),
        ),
        (
            vec!["127.0.0.1:26101".into(), "127.0.0.1:26101".into()],
            2,
            "sockserve: cannot listen on 127.0.0.1:26101 twice: the address was given twice; give it once\n".into(),
        ),
        (
            vec!["localhost:26102".into(), "127.0.0.1:26102".into()],
            2,
            "cannot listen on 127.0.0.1:26102: localhost:26102 is the same address (127.0.0.1:26102)".into(),
        ),
        (
            vec!["-o".into(), "/nonexistent-folder/lines.log".into(), "127.0.0.1:0".into()],
            1,
            "cannot use output /nonexistent-folder/lines.log: cannot open its directory: no such file or directory".into(),
        ),
        (
            vec!["--fd-name".into(), "lines".into()],
            1,
            "sockserve: --fd-name lines: no inherited socket has that name (LISTEN_FDNAMES)".into(),
        ),
    ];
    for (args, code, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = serve_fails(&args);
        assert_eq!(r.code(), code, "{args:?}: {}", r.stderr);
        assert_shape("sockserve", &r.stderr);
        assert!(
            r.stderr.contains(&want),
            "{args:?}: want {want:?}, got {}",
            r.stderr
        );
    }
}

#[test]
fn fsync_to_a_pipe_is_refused() {
    let r = run_bin(sockserve_bin(), &["--fsync", "127.0.0.1:0"], b"");
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert_shape("sockserve", &r.stderr);
    assert_eq!(
        r.stderr,
        "sockserve: --fsync: cannot sync standard output: it is not a file; give --output FILE or redirect to a file\n"
    );
}

// ---- Inherited fds: "inherited fd 3", the name only when there is one ----

#[test]
fn bad_inherited_fds_are_named_once() {
    let f = tempfile::tempfile().unwrap();
    let r = serve_once(
        &[],
        Stdio::null(),
        &[("LISTEN_FDS", "1")],
        Some(f.as_raw_fd()),
    );
    assert_eq!(r.code(), 1);
    assert_eq!(
        r.stderr,
        "sockserve: inherited fd 3: is a regular file, not a stream socket\n"
    );
    let r = serve_once(
        &[],
        Stdio::null(),
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "lines")],
        Some(f.as_raw_fd()),
    );
    assert_eq!(
        r.stderr,
        "sockserve: inherited fd 3 (lines): is a regular file, not a stream socket\n"
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let r = serve_once(
        &[],
        Stdio::null(),
        &[("LISTEN_FDS", "2")],
        Some(l.as_raw_fd()),
    );
    assert_eq!(r.code(), 1);
    assert_shape("sockserve", &r.stderr);
    assert!(
        r.stderr
            .starts_with("sockserve: inherited fd 4: is not open"),
        "{}",
        r.stderr
    );
}

#[test]
fn inherited_tcp_socket_neither_listening_nor_connected_is_rejected() {
    let fd = unconnected_tcp_socket();
    let r = serve_once(
        &[],
        Stdio::null(),
        &[("LISTEN_FDS", "1")],
        Some(fd.as_raw_fd()),
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert_shape("sockserve", &r.stderr);
    assert!(
        r.stderr.starts_with(
            "sockserve: inherited fd 3: is a TCP socket that is neither listening nor connected"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn inetd_standard_input_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    let (_keep, reader) = {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (w, r)
    };
    let (listener, _) = listener_with_backlog(8);
    for (stdin, want) in [
        (
            Stdio::null(),
            "--inetd: standard input is not a socket (it is a character device)",
        ),
        (
            Stdio::from(std::fs::File::open(&file).unwrap()),
            "--inetd: standard input is not a socket (it is a regular file)",
        ),
        (
            Stdio::from(reader),
            "--inetd: standard input is not a socket (it is a pipe)",
        ),
        (
            Stdio::from(unconnected_tcp_socket()),
            "--inetd: standard input is a TCP socket that is neither listening nor connected",
        ),
        (
            Stdio::from(listener),
            "--inetd: standard input is a listening socket, not a connection",
        ),
    ] {
        let r = serve_once(&["--inetd"], stdin, &[], None);
        assert_eq!(r.code(), 1, "{}", r.stderr);
        assert_shape("sockserve", &r.stderr);
        assert!(
            r.stderr.starts_with(&format!("sockserve: {want}")),
            "want {want:?}, got {}",
            r.stderr
        );
    }
}

// ---- The environment: LISTEN_PID, LISTEN_FDS ----

#[test]
fn listen_pid_of_another_process_is_said_always() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    // -q: the warning is said even when nothing else is.
    let mut cmd = Command::new(sockserve_bin());
    cmd.args(["-q", "127.0.0.1:0"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    with_fd3(&mut cmd, l.as_raw_fd());
    let mut child = cmd.spawn().unwrap();
    let stderr = Lines::collect(child.stderr.take().unwrap());
    let line = stderr.wait_for("LISTEN_PID");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        line,
        format!(
            "sockserve: not taking the sockets LISTEN_FDS=1 passes: LISTEN_PID=1 is another process, not this one ({}); serving 127.0.0.1:0 instead (a wrapper script must exec sockserve to keep the PID)",
            child.id()
        )
    );
    assert_shape("sockserve", &format!("{line}\n"));
    assert_eq!(stderr.all().len(), 1, "{}", stderr.text());
}

#[test]
fn listen_fds_that_is_not_a_number_is_said() {
    let mut s = ServerBuilder::new(&["127.0.0.1:0"])
        .env("LISTEN_FDS", "three")
        .env_remove("LISTEN_PID")
        .start();
    let l = s.stderr.wait_for("LISTEN_FDS");
    assert_eq!(
        l,
        "sockserve: ignoring LISTEN_FDS=three: not a number of sockets; no socket is inherited"
    );
    assert!(s.stop().success());
}

// ---- SIGHUP without -o ----

#[test]
fn sighup_without_output_file_logs_nothing_at_info() {
    use nix::sys::signal::Signal::{SIGHUP, SIGTERM};
    let mut s = Server::start(&["127.0.0.1:0"]);
    s.signal(SIGHUP);
    s.signal(SIGTERM);
    assert!(s.wait().success());
    assert!(!s.stderr.text().contains("reopen"), "{}", s.stderr.text());

    let mut s = Server::start(&["-v", "127.0.0.1:0"]);
    s.signal(SIGHUP);
    let l = s.stderr.wait_for("reopen");
    assert_eq!(
        l,
        "sockserve: nothing to reopen: the output is standard output"
    );
    assert!(s.stop().success());
}

// ---- --backlog ----

/// The backlog of the TCP listener on `port`, as `ss` reports it (the
/// Send-Q column of a listening socket).
fn backlog_of(port: u16) -> Option<u32> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs ss (Debian package iproute2)"]
fn backlog_reapplies_listen_to_inherited_listeners() {
    require_tool("ss", "iproute2");
    // Without --backlog an inherited backlog is left alone...
    let (fd, port) = listener_with_backlog(1);
    let mut s = ServerBuilder::new(&[])
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .configure(|c| with_fd3(c, fd.as_raw_fd()))
        .start();
    assert_eq!(backlog_of(port), Some(1));
    assert!(s.stop().success());
    // ...and with it, set.
    let mut s = ServerBuilder::new(&["--backlog", "64"])
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .configure(|c| with_fd3(c, fd.as_raw_fd()))
        .start();
    assert_eq!(backlog_of(port), Some(64));
    assert!(s.stop().success());
}

#[test]
#[ignore = "needs ss (Debian package iproute2)"]
fn backlog_of_own_binds() {
    require_tool("ss", "iproute2");
    let s = Server::start(&["127.0.0.1:0"]);
    let port: u16 = s.addr().rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(backlog_of(port), Some(4096.min(somaxconn())));
    drop(s);
    let s = Server::start(&["--backlog", "100", "127.0.0.1:0"]);
    let port: u16 = s.addr().rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(backlog_of(port), Some(100));
}

#[test]
fn backlog_above_somaxconn_is_said() {
    let max = somaxconn();
    let n = (max + 1).to_string();
    let mut s = Server::start(&["--backlog", &n, "127.0.0.1:0"]);
    let l = s.stderr.wait_for("somaxconn");
    assert_eq!(
        l,
        format!("sockserve: --backlog {n}: the kernel caps it at {max} (net.core.somaxconn); raise that with sysctl -w net.core.somaxconn={n}")
    );
    assert!(s.stop().success());
}

// ---- sockclient: the same shape ----

#[test]
fn sockclient_messages_have_the_shape() {
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for (args, code, want) in [
        (vec![refused.as_str()], 4, "cannot connect to"),
        (
            vec!["unix:/nonexistent-folder/x.sock"],
            4,
            "no such file or directory",
        ),
    ] {
        let r = run_client(&args, b"x\n");
        assert_eq!(r.code(), code, "{args:?}: {}", r.stderr);
        assert_shape("sockclient", &r.stderr);
        assert!(r.stderr.contains(want), "{}", r.stderr);
    }
    let r = run_client(&["--connect-timeout", "1x", "127.0.0.1:1"], b"");
    assert_clap_error(&r, "'1x' is not a duration");
}

// ---- Warnings at start have the shape too ----

#[test]
fn start_up_warnings_have_the_shape() {
    let mut s = Server::start(&["--max-connections", "1000000000", "127.0.0.1:0"]);
    let w = s.stderr.wait_for("open-file limit");
    assert_shape("sockserve", &format!("{w}\n"));
    assert!(
        w.starts_with("sockserve: --max-connections 1000000000: more than the open-file limit"),
        "{w}"
    );
    assert!(s.stop().success());
}

#[test]
fn address_of_an_inherited_listener_given_again() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let r = serve_once(
        &[&addr],
        Stdio::null(),
        &[("LISTEN_FDS", "1")],
        Some(l.as_raw_fd()),
    );
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert_shape("sockserve", &r.stderr);
    assert_eq!(
        r.stderr,
        format!("sockserve: cannot listen on {addr}: the inherited socket {addr} (fd 3) listens there already; drop the address\n")
    );
}

/// sockclient's address errors say what failed before why, like every
/// other message: `sockclient: cannot use the address X: why`.
#[test]
fn sockclient_address_errors_say_what_failed() {
    for (args, why) in [
        (&["127.0.0.1:99999"][..], "invalid port '99999'"),
        (&["TCP-LISTEN:1"][..], "is socat's address syntax; write"),
        (&["127.0.0.1", "http"][..], "invalid port 'http'"),
    ] {
        let r = run_client(args, b"");
        r.assert_code(2);
        let line = r.stderr.trim_end();
        assert!(
            line.starts_with(&format!(
                "sockclient: cannot use the address {}: ",
                args.join(" ")
            )),
            "{line}"
        );
        assert!(line.contains(why) && !line.contains('\n'), "{line}");
    }
}

/// Texts a client cannot tell apart are usage errors: a greeting that
/// contains the refusal text would refuse every client, an ack that
/// begins like the error line would be taken for one. (Found by a
/// hostile review: both started, and every client failed.)
#[test]
fn texts_clients_cannot_tell_apart_are_usage_errors() {
    for (args, want) in [
        (
            &["--greeting", "not connect now"][..],
            "--greeting 'not connect now' contains the refusal text 'not connect'",
        ),
        (
            &["--greeting", "hello", "--refusal", "hell"][..],
            "contains the refusal text 'hell'",
        ),
        (
            &["--ack", "error: x"][..],
            "--ack 'error: x' begins like the server's error line",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("127.0.0.1:0");
        run_bin(sockserve_bin(), &all, b"")
            .assert_code(2)
            .assert_stderr_contains(want);
    }
}

/// `--max-line` takes a size as `--window` does: `64K`, `1M`.
#[test]
fn max_line_takes_a_size_with_a_suffix() {
    let mut s = Server::start(&["--max-line", "4K", "127.0.0.1:0"]);
    let mut p = s.connect().greeted();
    p.send(&[b'x'; 4096]).unwrap();
    p.send(b"\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    p.send(&[b'y'; 4097]).unwrap();
    p.send(b"\n").unwrap();
    assert_eq!(
        p.line().as_deref(),
        Some("error: line too long (max 4096 bytes)\n")
    );
    s.stop_success();
}

/// `--help` and `--version` that cannot be written (standard output on a
/// full disk) exited 0 although nothing was printed; they exit 1.
#[test]
fn help_and_version_that_cannot_be_written_are_not_exit_0() {
    for bin in [sockserve_bin(), sockclient_bin()] {
        for flag in ["--help", "--version"] {
            let st = std::process::Command::new(bin)
                .arg(flag)
                .stdout(std::fs::File::create("/dev/full").unwrap())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert_eq!(st.code(), Some(1), "{bin} {flag}");
        }
    }
}

/// `sockserve >&-`: the Rust runtime opens `/dev/null` on a closed
/// standard output before `main`, and every line was acked into it. A
/// closed standard output is now an error at start (found by a hostile
/// review).
#[test]
fn a_closed_standard_output_is_an_error_not_dev_null() {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(sockserve_bin());
    cmd.arg("127.0.0.1:0");
    // SAFETY: only an async-signal-safe close between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::close(1);
            Ok(())
        });
    }
    let r = run_command(cmd, b"");
    r.assert_code(1).assert_stderr_contains(
        "sockserve: standard output is closed, so no line could be written",
    );
}
