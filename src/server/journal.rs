//! The journal as an output: one entry per received line, sent over
//! journald's native protocol (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>),
//! never through the journal's stream on standard output, where journald
//! reads `<N>` level prefixes, cuts lines at `LineMax=` and ends records
//! at NUL.
//!
//! An entry is a list of fields. Every field here is plain
//! (`NAME=value\n`) except `MESSAGE`, which always takes the binary form
//! (`NAME\n`, the value's length as a 64-bit little-endian integer, the
//! value, `\n`), so the line's bytes travel exactly: NULs, line breaks,
//! invalid UTF-8, a leading `<0>`. An entry too large for one datagram
//! goes in a sealed memfd passed with `SCM_RIGHTS`, as `sd_journal_send`
//! does. A line counts as written (and is acked) once the journal's socket
//! took its entry.
//!
//! Written here rather than taken from a crate: `libsystemd`'s
//! `journal_send` takes the message as `&str` (no invalid UTF-8), and the
//! `log`/`tracing` journald writers take text records; none sends
//! arbitrary bytes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The fields every entry of one connection starts with: its priority
/// (informational, whatever the line says), the identifier, the peer and
/// the connection's number.
pub fn head(peer: &str, connection: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(96 + peer.len());
    field(&mut h, "PRIORITY", b"6");
    field(
        &mut h,
        "SYSLOG_IDENTIFIER",
        crate::diag::program().as_bytes(),
    );
    field(&mut h, "SOCKSERVE_PEER", peer.as_bytes());
    field(
        &mut h,
        "SOCKSERVE_CONNECTION",
        connection.to_string().as_bytes(),
    );
    h
}

/// Appends the entry of line number `line` (text `text`), after the
/// connection's `head`, framed for the sink: the entry's length as a
/// 64-bit little-endian integer, then the entry ([`Journal::send_framed`]
/// takes them apart).
pub fn frame(out: &mut Vec<u8>, head: &[u8], line: u64, text: &[u8]) {
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(head);
    out.extend_from_slice(b"SOCKSERVE_LINE=");
    let _ = write!(out, "{line}");
    out.push(b'\n');
    binary_field(out, "MESSAGE", text);
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
}

/// A field in the plain form, or in the binary form if the value holds a
/// line break (which would end a plain one).
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    if value.contains(&b'\n') {
        binary_field(out, name, value);
    } else {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
}

fn binary_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A datagram socket connected to journald's.
pub struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
}

/// Bytes asked for the socket's send buffer, so that large entries fit
/// one datagram (the kernel caps it at `net.core.wmem_max`).
const SEND_BUFFER: usize = 8 << 20;

impl Journal {
    /// Connects to journald's socket at `path` ([`SOCKET`] but in tests).
    pub fn connect(path: &Path) -> io::Result<Journal> {
        Ok(Journal {
            sock: connect(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Where the socket is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends every entry that [`frame`] put in `framed`, in order; stops
    /// at the first that the journal's socket did not take.
    pub fn send_framed(&mut self, mut framed: &[u8]) -> io::Result<()> {
        while !framed.is_empty() {
            let entry = framed
                .get(..8)
                .and_then(|l| l.try_into().ok())
                .map(|l| u64::from_le_bytes(l) as usize)
                .and_then(|n| framed.get(8..n.checked_add(8)?));
            let Some(entry) = entry else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a journal entry was framed wrongly (a bug in sockserve)",
                ));
            };
            self.send(entry)?;
            framed = &framed[8 + entry.len()..];
        }
        Ok(())
    }

    /// Sends one entry. journald restarted (our socket's peer is gone):
    /// connect again, once, and resend.
    pub fn send(&mut self, entry: &[u8]) -> io::Result<()> {
        match self.send_once(entry) {
            Err(e)
                if matches!(
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    Errno::ECONNREFUSED | Errno::ENOTCONN
                ) =>
            {
                self.sock = connect(&self.path)?;
                self.send_once(entry)
            }
            r => r,
        }
    }

    fn send_once(&self, entry: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.send(entry) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Too large for one datagram: through a memfd.
                Err(e)
                    if matches!(
                        Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                        Errno::EMSGSIZE | Errno::ENOBUFS
                    ) =>
                {
                    return self.send_memfd(entry)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the entry to a memfd, seals it (journald takes only sealed
    /// ones) and passes it with an empty datagram.
    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        let fd = memfd_create(
            c"sockserve-journal-entry",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )?;
        let mut file = File::from(fd);
        file.write_all(entry)?;
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let fds = [file.as_raw_fd()];
        loop {
            match sendmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &[],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    // Best effort: a smaller buffer only sends more entries by memfd.
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one native-protocol entry into its fields.
    fn parse(mut e: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        while !e.is_empty() {
            let nl = e.iter().position(|&b| b == b'\n').unwrap();
            let line = &e[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                fields.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                ));
                e = &e[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let n = u64::from_le_bytes(e[nl + 1..nl + 9].try_into().unwrap()) as usize;
                fields.push((name, e[nl + 9..nl + 9 + n].to_vec()));
                assert_eq!(e[nl + 9 + n], b'\n');
                e = &e[nl + 10 + n..];
            }
        }
        fields
    }

    fn get<'a>(f: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
        &f.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn an_entry_carries_the_line_exactly_at_priority_6() {
        let head = head("127.0.0.1:5\nx", 3);
        let mut out = Vec::new();
        let line = b"<0>emergency?\0\nand more\xff";
        frame(&mut out, &head, 9, line);
        let n = u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
        assert_eq!(n, out.len() - 8);
        let f = parse(&out[8..]);
        assert_eq!(get(&f, "MESSAGE"), line);
        assert_eq!(get(&f, "PRIORITY"), b"6");
        assert_eq!(get(&f, "SOCKSERVE_PEER"), b"127.0.0.1:5\nx");
        assert_eq!(get(&f, "SOCKSERVE_CONNECTION"), b"3");
        assert_eq!(get(&f, "SOCKSERVE_LINE"), b"9");
        // MESSAGE always in the binary form, even without a line break.
        let mut out = Vec::new();
        frame(&mut out, &head, 1, b"plain");
        assert!(out.windows(8).any(|w| w == b"MESSAGE\n"));
    }

    /// A fake journald: a datagram socket in a temporary directory.
    fn fake() -> (tempfile::TempDir, UnixDatagram, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let j = Journal::connect(&path).unwrap();
        (dir, server, j)
    }

    /// Receives one entry, from the datagram or from the memfd it
    /// carries, and says which.
    fn receive(server: &UnixDatagram) -> (Vec<u8>, bool) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        use std::io::{IoSliceMut, Read, Seek};
        use std::os::fd::FromRawFd;
        let mut buf = vec![0u8; 1 << 20];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let m = recvmsg::<()>(
            server.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let n = m.bytes;
        let fd = m.cmsgs().unwrap().find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => Some(fds[0]),
            _ => None,
        });
        match fd {
            Some(fd) => {
                assert_eq!(n, 0);
                let mut f = unsafe { File::from_raw_fd(fd) };
                let seals = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
                assert_eq!(seals & 0xf, 0xf, "memfd not sealed");
                f.rewind().unwrap();
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                (v, true)
            }
            None => (buf[..n].to_vec(), false),
        }
    }

    #[test]
    fn small_entries_go_in_datagrams_large_ones_in_a_sealed_memfd() {
        let (_dir, server, mut j) = fake();
        let head = head("p", 1);
        let big = vec![b'x'; 16 << 20];
        let mut framed = Vec::new();
        frame(&mut framed, &head, 1, b"small");
        frame(&mut framed, &head, 2, &big);
        let sender = std::thread::spawn(move || j.send_framed(&framed).map(|()| j));
        let (a, memfd_a) = receive(&server);
        let (b, memfd_b) = receive(&server);
        sender.join().unwrap().unwrap();
        assert!(!memfd_a && memfd_b);
        assert_eq!(get(&parse(&a), "MESSAGE"), b"small");
        assert_eq!(get(&parse(&b), "MESSAGE"), &big[..]);
        assert_eq!(get(&parse(&b), "SOCKSERVE_LINE"), b"2");
    }

    #[test]
    fn a_journal_that_went_away_is_an_error() {
        let (dir, server, mut j) = fake();
        drop(server);
        std::fs::remove_file(dir.path().join("socket")).unwrap();
        let e = j.send(b"MESSAGE=x\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(Journal::connect(&dir.path().join("socket")).is_err());
    }
}
