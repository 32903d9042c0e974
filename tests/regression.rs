//! One test per fixed bug, as ripgrep keeps them.

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

/// The sink thread committed the batches pending at a SIGHUP to the old
/// file and then again to the new one: lines duplicated across a
/// logrotate. (--fsync, so that the thread path is the one taken.)
#[test]
fn batches_pending_at_sighup_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dup.log");
    let mut s = Server::start(&[
        "--drain-timeout",
        "0.5",
        "-o",
        log.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let addr = s.addr().to_string();
    let input: String = (0..20000).map(|i| format!("{i}\n")).collect();
    let sender = std::thread::spawn(move || run_client(&[&addr], input.as_bytes()));
    let mut k = 0;
    while !sender.is_finished() && k < 50 {
        std::fs::rename(&log, dir.path().join(format!("dup.{k}"))).unwrap_or(());
        s.signal(nix::sys::signal::Signal::SIGHUP);
        k += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let r = sender.join().unwrap();
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert!(s.stop().success());
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        all.extend(
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    all.sort_by_key(|l| l.parse::<u32>().unwrap());
    let want: Vec<String> = (0..20000).map(|i| i.to_string()).collect();
    assert_eq!(all, want);
}
