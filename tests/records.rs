//! Records: `--format json` read back by programs nobody here wrote
//! (Python's json module, jq), byte for byte; the sink's guarantees with
//! JSON records (SIGHUP reopen, `--fsync`); `--journal` and the choice of
//! the journal when standard output is the journal's stream. The journal
//! itself, under a real systemd: `tests/shell/t0210-journal.sh`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use nix::sys::signal::Signal;

/// Decodes JSON records with Python's json module: for each record,
/// `connection line peer time HEX` where HEX is the line's bytes, from
/// `text` (as UTF-8) or `text_base64`. Fails on a record with neither or
/// both, or with a field too many.
fn python_decode(records: &[u8]) -> Vec<String> {
    const SCRIPT: &str = r#"
import base64, json, sys
for raw in sys.stdin.buffer.read().split(b"\n")[:-1]:
    r = json.loads(raw)
    keys = set(r)
    assert keys in ({"time", "peer", "connection", "line", "text"},
                    {"time", "peer", "connection", "line", "text_base64"}), keys
    if "text" in r:
        b = r["text"].encode("utf-8")
    else:
        b = base64.b64decode(r["text_base64"], validate=True)
    print(r["connection"], r["line"], r["peer"], r["time"], b.hex())
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let input = records.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python3 could not read the records: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(records)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The time a record carries: RFC 3339, UTC, microseconds.
fn parse_time(t: &str) -> SystemTime {
    assert_eq!(t.len(), 27, "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"))
}

#[test]
#[ignore = "needs python3"]
fn json_records_bring_every_byte_back_through_python() {
    require_tool("python3", "python3");
    let before = SystemTime::now() - Duration::from_millis(1);
    let mut s = Server::start(&["--format", "json", "127.0.0.1:0"]);
    // Every byte value but the newline, in valid UTF-8 (0..0x80) and not
    // (0x80..0x100); a CR in the middle stays, a CR before the newline
    // goes (one of them), as in plain.
    let ascii: Vec<u8> = (0u8..0x80).filter(|&b| b != b'\n').collect();
    let high: Vec<u8> = (0x80u8..=0xff).collect();
    let lines: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (ascii.clone(), ascii.clone()),
        (high.clone(), high.clone()),
        (
            "café ü 日本 \u{1F600}".into(),
            "café ü 日本 \u{1F600}".into(),
        ),
        (b"crlf\r".to_vec(), b"crlf".to_vec()),
        (b"two\r\r".to_vec(), b"two\r".to_vec()),
        (b"\xc3".to_vec(), b"\xc3".to_vec()),
        (b"".to_vec(), b"".to_vec()),
        (b"<0>emergency?".to_vec(), b"<0>emergency?".to_vec()),
    ];
    let mut p = s.connect().greeted();
    let local = match &p {
        Peer::Tcp(t) => t.local_addr().unwrap().to_string(),
        _ => unreachable!(),
    };
    for (sent, _) in &lines {
        let mut l = sent.clone();
        l.push(b'\n');
        p.send(&l).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    // A last line without a newline, at the end of the stream.
    p.send(b"last").unwrap();
    p.half_close();
    assert_eq!(p.rest(), ACK);
    // A second connection gets a number of its own.
    let mut q = s.connect().greeted();
    q.send(b"other\n").unwrap();
    assert_eq!(q.line().as_deref(), Some(ACK));
    drop(q);
    assert!(s.stop().success());
    let after = SystemTime::now() + Duration::from_millis(1);

    let out = s.output();
    assert!(out.ends_with(b"\n"));
    let got = python_decode(&out);
    assert_eq!(got.len(), lines.len() + 2, "{got:#?}");
    let first: Vec<&str> = got[0].split(' ').collect();
    let conn = first[0];
    let mut times = Vec::new();
    for (i, (_, expect)) in lines
        .iter()
        .map(|(s, e)| (s, e.clone()))
        .chain([(&Vec::new(), b"last".to_vec())])
        .enumerate()
    {
        let f: Vec<&str> = got[i].split(' ').collect();
        assert_eq!(f[0], conn, "one connection, one number: {}", got[i]);
        assert_eq!(f[1], (i + 1).to_string(), "line numbers count from 1");
        assert_eq!(f[2], local, "the client's address");
        assert_eq!(f[4], hex(&expect), "line {} came back different", i + 1);
        times.push(parse_time(f[3]));
    }
    let other: Vec<&str> = got[lines.len() + 1].split(' ').collect();
    assert_ne!(other[0], conn, "two connections, one number");
    assert_eq!((other[1], other[4]), ("1", hex(b"other").as_str()));
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times[0] >= before && *times.last().unwrap() <= after);
    // Invalid UTF-8 went as base64; valid as text.
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\"text_base64\":").count(), 2, "{text}");
}

#[test]
#[ignore = "needs jq"]
fn a_one_mib_line_comes_back_exactly_through_jq() {
    require_tool("jq", "jq");
    let mut s = Server::start(&["--format", "json", "--max-line", "2097152", "127.0.0.1:0"]);
    let line: Vec<u8> = (0..1 << 20)
        .map(|i| b"abcdefghij\t\"\\\x01\x7f"[i % 15])
        .collect();
    let mut input = line.clone();
    input.push(b'\n');
    let r = run_client(&[s.addr()], &input);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert!(s.stop().success());
    let out = s.output();
    assert_eq!(count_lines(&out), 1);
    let jq = Command::new("jq")
        .args(["-j", ".text"])
        .arg(s.dir.path().join("stdout"))
        .output()
        .unwrap();
    assert!(
        jq.status.success(),
        "{}",
        String::from_utf8_lossy(&jq.stderr)
    );
    assert!(jq.stdout == line, "the 1 MiB line came back different");
}

/// JSON records keep every promise of the sink: a rename and SIGHUP
/// (logrotate) splits them between the files, none lost, none twice;
/// line numbers go on within the connection.
#[test]
fn json_records_are_reopened_on_sighup_and_synced_with_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("records.json");
    let mut s = Server::start(&[
        "--format",
        "json",
        "--fsync",
        "-o",
        log.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let mut p = s.connect().greeted();
    for i in 0..50 {
        p.send(format!("a{i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    // Acked with --fsync: in the file already.
    let synced = std::fs::read_to_string(&log).unwrap();
    assert_eq!(synced.lines().count(), 50);
    let rotated = dir.path().join("records.json.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(Signal::SIGHUP);
    s.stderr.wait_for("reopened output");
    for i in 0..50 {
        p.send(format!("b{i}\n").as_bytes()).unwrap();
        assert_eq!(p.line().as_deref(), Some(ACK));
    }
    p.half_close();
    assert_eq!(p.rest(), "");
    assert!(s.stop().success());
    let records = |path: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let old = records(&rotated);
    let new = records(&log);
    assert_eq!((old.len(), new.len()), (50, 50));
    for (i, r) in old.iter().chain(new.iter()).enumerate() {
        let text = if i < 50 {
            format!("a{i}")
        } else {
            format!("b{}", i - 50)
        };
        assert_eq!(r["text"], text.as_str());
        assert_eq!(r["line"], i as u64 + 1);
    }
}

#[test]
fn format_and_journal_conflicts_are_usage_errors() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--format", "json", "--prefix-peer"],
            "--prefix-peer is for --format plain",
        ),
        (&["--journal", "--fsync"], "cannot be used with"),
        (&["--journal", "-o", "journal"], "cannot be used with"),
        (&["--journal", "--format", "json"], "cannot be used with"),
        (&["--journal", "--prefix-peer"], "cannot be used with"),
    ];
    for (args, says) in cases {
        let mut a = args.to_vec();
        a.push("127.0.0.1:0");
        let r = run_bin(sockserve_bin(), &a, b"");
        assert_eq!(r.code(), 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
}

/// The journal is a flag of its own; `-o journal` is a file named
/// journal.
#[test]
fn journal_is_a_flag_and_output_journal_a_file() {
    let r = run_bin(sockserve_bin(), &["--journal", "127.0.0.1:0"], b"");
    assert!(!r.stderr.contains("unexpected argument"), "{}", r.stderr);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut s = ServerBuilder::new(&["-o", "journal", "127.0.0.1:0"])
        .configure(move |cmd| {
            cmd.current_dir(&d);
        })
        .start();
    assert_eq!(run_client(&[s.addr()], b"to a file\n").code(), 0);
    assert!(s.stop().success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("journal")).unwrap(),
        "to a file\n"
    );
}

/// When standard output is the journal's stream (`JOURNAL_STREAM` names
/// it), received lines go to the journal natively, never through that
/// stream. This machine has no journald: sockserve says so and exits 1
/// rather than write client bytes to the stream.
#[test]
#[ignore = "needs a machine without journald (t0210-journal.sh covers one with it)"]
fn stdout_that_is_the_journal_stream_means_the_native_journal() {
    use std::os::fd::AsRawFd;
    require(
        !std::path::Path::new("/run/systemd/journal/socket").exists(),
        "a machine without journald",
    );
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let st = nix::sys::stat::fstat(b.as_raw_fd()).unwrap();
    let stream = format!("{}:{}", st.st_dev, st.st_ino);
    let run = |extra: &[&str]| {
        let mut child = Command::new(sockserve_bin())
            .args(extra)
            .arg("127.0.0.1:0")
            .env("JOURNAL_STREAM", &stream)
            .stdin(Stdio::null())
            .stdout(std::os::fd::OwnedFd::from(b.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = Lines::collect(child.stderr.take().unwrap());
        // Bounded: a sockserve that serves instead of failing is killed.
        let st = wait_child(&mut child, Duration::from_secs(5), &err);
        // The collector may still be reading the last line.
        err.wait_for_within("sockserve:", Duration::from_secs(5));
        (st.code(), err.text())
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot send lines to the journal at /run/systemd/journal/socket: no such file or directory; is systemd-journald running?"),
        "{err}"
    );
    let (code, err) = run(&["--format", "json"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("standard output is the journal"), "{err}");
    // An explicit --output still wins.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lines.log");
    let mut s = ServerBuilder::new(&["-o", log.to_str().unwrap(), "127.0.0.1:0"])
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(
            b.try_clone().unwrap(),
        )))
        .env("JOURNAL_STREAM", &stream)
        .start();
    assert_eq!(run_client(&[s.addr()], b"kept\n").code(), 0);
    assert!(s.stop().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "kept\n");
    drop(a);
}

/// The README's example, run as written (on another port): sockserve's
/// JSON records piped into jq, one line per record as it arrives.
#[test]
#[ignore = "needs jq"]
fn the_readme_jq_example_works_as_written() {
    use std::os::unix::process::CommandExt;
    require_tool("jq", "jq");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = readme
        .lines()
        .find_map(|l| l.strip_prefix("    sockserve --format json "))
        .expect("the README has a `sockserve --format json ... | jq` example");
    assert!(example.contains("| jq "), "{example}");
    let port = free_port();
    let cmd = format!(
        "sockserve --format json {}",
        example.replace("127.0.0.1:10008", &format!("127.0.0.1:{port}"))
    );
    let bin_dir = std::path::Path::new(sockserve_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("sh")
        .args(["-c", &cmd])
        .env("PATH", path)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::collect(child.stdout.take().unwrap());
    let err = Lines::collect(child.stderr.take().unwrap());
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    err.wait_for("listening on");
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(run_client(&[&addr], b"hello\n\xff\n").code(), 0);
    // Records reach jq as they are written, not at exit.
    let first = out.wait_for("#1: hello");
    out.wait_for(" #2: ");
    let _ = nix::sys::signal::kill(group, Signal::SIGTERM);
    wait_child(&mut child, WAIT, &err);
    assert!(first.starts_with("127.0.0.1:"), "{first}");
    let all = out.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].ends_with(" #2: base64:/w=="), "{all:?}");
}

/// With --inetd the connection is standard output and lines would go to
/// standard error: when that is the journal's stream, they go to the
/// journal natively instead (here, with no journald: exit 1, the line
/// unacked), never through the stream.
#[test]
#[ignore = "needs a machine without journald (t0210-journal.sh covers one with it)"]
fn inetd_with_stderr_the_journal_stream_means_the_native_journal() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, OwnedFd};
    require(
        !std::path::Path::new("/run/systemd/journal/socket").exists(),
        "a machine without journald",
    );
    let (mut client, server_side) = std::os::unix::net::UnixStream::pair().unwrap();
    let (err_read, err_write) = std::os::unix::net::UnixStream::pair().unwrap();
    let st = nix::sys::stat::fstat(err_write.as_raw_fd()).unwrap();
    // The line waits in the socket before sockserve starts: it may exit
    // (no journal) before a write made later could arrive.
    client.write_all(b"<0>not through the stream\n").unwrap();
    let mut child = Command::new(sockserve_bin())
        .arg("--inetd")
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stdin(OwnedFd::from(server_side.try_clone().unwrap()))
        .stdout(OwnedFd::from(server_side))
        .stderr(OwnedFd::from(err_write))
        .spawn()
        .unwrap();
    let err = Lines::collect(err_read);
    let st = wait_child(&mut child, WAIT, &err);
    assert_eq!(st.code(), Some(1), "{}", err.text());
    err.wait_for("cannot send lines to the journal");
    assert!(
        !err.text().contains("not through the stream"),
        "{}",
        err.text()
    );
    let mut got = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = client.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("Information Received"),
        "acked: {got:?}"
    );
}
