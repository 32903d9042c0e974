//! Paths somebody else may have planted: the output file and Unix socket
//! files. The output is opened without following a symbolic link, checked
//! (owner, links, kind) and reopened on SIGHUP relative to the directory
//! held since the start; `-o -` is standard output itself. What needs a
//! second user (a file another user owns) runs when root; the attacks as
//! another user are in `tests/shell/t0300-attacks.sh`.

mod common;

use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::Signal;

/// Sends `line` on a new connection and expects its ack.
fn acked(s: &Server, line: &str) {
    let mut p = s.connect().greeted();
    p.send(format!("{line}\n").as_bytes()).unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK), "{}", s.stderr.text());
}

/// sockserve ARGS in `dir`, expected to refuse to start: its stderr.
fn refused_at_start(dir: &Path, args: &[&str]) -> String {
    // Bounded: the code before these checks could hang in open(2).
    let out = Command::new("timeout")
        .arg("20")
        .arg(sockserve_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("listening on"), "{err}");
    err
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Opens a FIFO for reading without waiting for a writer.
fn fifo_reader(p: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(p)
        .unwrap()
}

#[test]
fn dash_means_standard_output_and_opens_no_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut s = ServerBuilder::new(&["-o", "-", "127.0.0.1:0"])
        .configure(move |cmd| {
            cmd.current_dir(&d);
        })
        .start();
    acked(&s, "to stdout");
    assert!(s.stop().success());
    assert_eq!(s.output(), b"to stdout\n");
    assert!(!dir.path().join("-").exists(), "a file named - was created");
}

#[test]
fn dev_stdout_is_fd_1_even_when_it_is_a_socket() {
    // /dev/stdout of a process whose standard output is a socket cannot
    // be opened (ENXIO): -o /dev/stdout must not open it, but use fd 1.
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let theirs: std::os::fd::OwnedFd = theirs.into();
    let mut s = ServerBuilder::new(&["-o", "/dev/stdout", "127.0.0.1:0"])
        .stdout(Stdio::from(theirs))
        .start();
    acked(&s, "through fd 1");
    ours.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = [0u8; 13];
    std::io::Read::read_exact(&mut ours, &mut got).unwrap();
    assert_eq!(&got, b"through fd 1\n");
    assert!(s.stop().success());
}

#[test]
fn symlink_at_the_output_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "precious\n").unwrap();
    symlink(&target, dir.path().join("lines.log")).unwrap();
    // A dangling one too: nothing may be created at its target.
    symlink(dir.path().join("created"), dir.path().join("dangling.log")).unwrap();
    for name in ["lines.log", "dangling.log"] {
        let err = refused_at_start(dir.path(), &["-o", name, "127.0.0.1:0"]);
        assert!(
            err.contains(&format!(
                "sockserve: cannot use output {name}: it is a symbolic link; give the real path"
            )),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(!dir.path().join("created").exists());
}

#[test]
fn hard_linked_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "other\n").unwrap();
    std::fs::hard_link(&other, dir.path().join("lines.log")).unwrap();
    let err = refused_at_start(dir.path(), &["-o", "lines.log", "127.0.0.1:0"]);
    assert!(
        err.contains("cannot use output lines.log: it has 2 hard links"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "other\n");
}

#[test]
#[ignore = "needs root"]
fn output_owned_by_another_user_is_refused() {
    require(
        nix::unistd::Uid::effective().is_root(),
        "root, to make a file another user owns",
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lines.log");
    std::fs::write(&f, "").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    nix::unistd::chown(&f, Some(65534.into()), Some(65534.into())).unwrap();
    let err = refused_at_start(dir.path(), &["-o", "lines.log", "127.0.0.1:0"]);
    assert!(
        err.contains("it is a regular file owned by uid 65534, neither this user (uid 0) nor root"),
        "{err}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"");
}

/// sockserve with `-o FIFO` (nobody reads it yet) and a Unix socket,
/// started: the directory, the FIFO, the socket path, its address, the
/// server.
fn server_waiting_for_a_fifo_reader() -> (tempfile::TempDir, PathBuf, PathBuf, String, Server) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("lines.fifo");
    mkfifo(&fifo);
    let sock = dir.path().join("s.sock");
    let addr = format!("unix:{}", sock.display());
    let s = ServerBuilder::new(&["-o", fifo.to_str().unwrap(), &addr])
        .listeners(0)
        .start();
    (dir, fifo, sock, addr, s)
}

/// A FIFO nobody reads yet is waited for, said once, before sockserve
/// listens: no client is greeted by a server that cannot write its lines.
/// Today's reader then gets every line.
#[test]
fn a_fifo_without_a_reader_is_waited_for_before_listening() {
    let (_dir, fifo, sock, addr, mut s) = server_waiting_for_a_fifo_reader();
    s.stderr
        .wait_for("is a FIFO nobody reads yet; waiting for its reader");
    assert!(!sock.exists(), "listening before the output is open");
    assert!(s.child.try_wait().unwrap().is_none());
    let mut reader = fifo_reader(&fifo);
    s.stderr.wait_for("listening on");
    let mut p = Peer::connect(&addr).greeted();
    p.send(b"through the fifo\n").unwrap();
    assert_eq!(p.line().as_deref(), Some(ACK));
    let mut got = Vec::new();
    assert!(eventually(WAIT, || {
        let mut buf = [0u8; 64];
        if let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.ends_with(b"\n")
    }));
    assert_eq!(got, b"through the fifo\n");
    s.stop_success();
    assert_eq!(s.stderr.text().matches("waiting for its reader").count(), 1);
}

/// SIGTERM while waiting for a FIFO's reader: exit 0, and no socket file
/// is left behind (none was made).
#[test]
fn sigterm_while_waiting_for_a_fifo_reader_exits_0_and_leaves_no_socket() {
    let (_dir, _fifo, sock, _addr, mut s) = server_waiting_for_a_fifo_reader();
    s.stderr.wait_for("waiting for its reader");
    s.stop_success();
    assert!(!sock.exists());
}

#[test]
fn dev_null_is_accepted() {
    let mut s = Server::start(&["-o", "/dev/null", "127.0.0.1:0"]);
    acked(&s, "into the void");
    s.signal(Signal::SIGHUP);
    s.stderr.wait_for("reopened output /dev/null");
    acked(&s, "still served");
    assert!(s.stop().success());
}

/// Renames the output away (as logrotate does), plants `plant` at its
/// name, sends SIGHUP: the reopen is refused with `why`, the old file
/// keeps getting the lines, and the server keeps acking.
fn sighup_refused(extra: &[&str], plant: impl Fn(&Path), why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lines.log");
    let rotated = dir.path().join("lines.log.1");
    let mut args = extra.to_vec();
    let log_s = log.to_str().unwrap().to_string();
    args.extend(["-o", &log_s, "127.0.0.1:0"]);
    let mut s = Server::start(&args);
    acked(&s, "before");
    std::fs::rename(&log, &rotated).unwrap();
    plant(&log);
    s.signal(Signal::SIGHUP);
    let said = s.stderr.wait_for("cannot reopen output");
    assert!(
        said.contains(&format!("cannot reopen output {log_s}: {why}"))
            && said.ends_with("still writing to the old one"),
        "{extra:?}: {said}"
    );
    acked(&s, "after");
    assert!(s.stop().success());
    assert_eq!(std::fs::read(&rotated).unwrap(), b"before\nafter\n");
    assert!(!s.stderr.text().contains("reopened output"));
}

#[test]
fn sighup_refuses_a_dangling_symlink_and_keeps_the_old_output() {
    for extra in [&[][..], &["--fsync"]] {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("created-by-root");
        let t = target.clone();
        sighup_refused(
            extra,
            move |log| symlink(&t, log).unwrap(),
            "it is a symbolic link; give the real path",
        );
        assert!(!target.exists(), "{extra:?}: the link's target was created");
    }
}

#[test]
fn sighup_refuses_a_fifo_swapped_in_with_or_without_a_reader() {
    for extra in [&[][..], &["--fsync"]] {
        // Without a reader: no hang in open(2); the server keeps serving.
        sighup_refused(extra, mkfifo, "it is a FIFO nobody reads yet");
        // With a reader (the attacker's): not the kind of file it was.
        let reader = std::sync::Mutex::new(None);
        sighup_refused(
            extra,
            |log| {
                mkfifo(log);
                *reader.lock().unwrap() = Some(fifo_reader(log));
            },
            "it is now a FIFO, and it was a regular file at start",
        );
        let mut r = reader.lock().unwrap().take().unwrap();
        let mut buf = [0u8; 64];
        assert!(
            !matches!(std::io::Read::read(&mut r, &mut buf), Ok(n) if n > 0),
            "lines reached the swapped-in FIFO"
        );
    }
}

#[test]
fn sighup_refuses_a_hard_link_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "").unwrap();
    let o = other.clone();
    sighup_refused(
        &[],
        move |log| std::fs::hard_link(&o, log).unwrap(),
        "it has 2 hard links",
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"");
}

#[test]
fn sighup_reopens_relative_to_the_directory_held_since_the_start() {
    // The output's directory is renamed and another put at its old path:
    // the reopen still lands in the directory the server started with.
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let log = dir.join("lines.log");
    let mut s = Server::start(&["-o", log.to_str().unwrap(), "127.0.0.1:0"]);
    acked(&s, "one");
    let moved = top.path().join("logs.moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(moved.join("lines.log"), moved.join("lines.log.1")).unwrap();
    s.signal(Signal::SIGHUP);
    s.stderr.wait_for("reopened output");
    acked(&s, "two");
    assert!(s.stop().success());
    assert_eq!(std::fs::read(moved.join("lines.log.1")).unwrap(), b"one\n");
    assert_eq!(std::fs::read(moved.join("lines.log")).unwrap(), b"two\n");
    assert!(!log.exists(), "reopened by name, in the new directory");
}

#[test]
fn a_directory_others_can_write_is_warned_about() {
    let top = tempfile::tempdir().unwrap();
    let open = top.path().join("open");
    let sticky = top.path().join("sticky");
    for (d, mode) in [(&open, 0o777), (&sticky, 0o1777)] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let s = Server::start(&[
        "-o",
        open.join("lines.log").to_str().unwrap(),
        &format!("unix:{}", sticky.join("s.sock").display()),
    ]);
    let o = s.stderr.wait_for("the directory of output");
    assert!(
        o.contains("every user can write it (mode 0777, without the sticky bit)"),
        "{o}"
    );
    // A socket in a sticky directory is still a name others can take.
    let w = s.stderr.wait_for("the directory of socket");
    assert!(w.contains("mode 1777, sticky"), "{w}");
    drop(s);
    // A sticky directory is fine for the output.
    let s = Server::start(&[
        "-o",
        sticky.join("lines.log").to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    acked(&s, "x");
    assert!(
        !s.stderr.text().contains("not private"),
        "{}",
        s.stderr.text()
    );
}

#[test]
fn symlink_at_a_socket_path_is_neither_followed_nor_removed() {
    let dir = tempfile::tempdir().unwrap();
    // A stale socket elsewhere, and a link to it where sockserve binds.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let link = dir.path().join("s.sock");
    symlink(&stale, &link).unwrap();
    let err = refused_at_start(dir.path(), &[&format!("unix:{}", link.display())]);
    assert!(
        err.contains("is not a socket (it is a symbolic link); not replacing it"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&stale)
        .unwrap()
        .file_type()
        .is_socket());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn socket_file_is_removed_at_exit_only_if_it_is_still_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let mut s = Server::start(&[&format!("unix:{}", path.display())]);
    let ino = std::fs::symlink_metadata(&path).unwrap().ino();
    // Somebody replaces it with a link to a file.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::fs::remove_file(&path).unwrap();
    symlink(&victim, &path).unwrap();
    assert!(s.stop().success());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert_ne!(std::fs::symlink_metadata(&path).unwrap().ino(), ino);
}
