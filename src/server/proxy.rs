//! The PROXY protocol, v1 (text) and v2 (binary), as HAProxy's
//! `proxy-protocol.txt` defines it: a load balancer in front of sockserve
//! begins each connection with a header that names the client it relays.
//!
//! Only peers in `--proxy-protocol` are asked for a header, and every one
//! of them must send one, before the greeting, within a deadline. The
//! version is told from the first bytes; bytes that cannot begin a header
//! end the wait at once. The parse itself is the `proxy-header` crate's;
//! this module bounds the reading (at most 107 bytes for v1, 16 + 65535
//! for v2), keeps the bytes that follow the header (the client's first),
//! and names what went wrong for the log.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use proxy_header::{ParseConfig, ProxyHeader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a trusted peer may take to send its header, at most: the
/// idle timeout, when it is shorter, is the deadline instead.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);

/// The longest v1 header, `\r\n` included.
pub const V1_MAX: usize = 107;
/// The longest v2 header: 16 fixed bytes and a 16-bit length.
pub const V2_MAX: usize = 16 + 65535;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// The first read asks for this much: any v1 header, and a v2 header with
/// IPv6 addresses and a few TLVs, in one read.
const FIRST_READ: usize = 256;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed client: this is its address.
    Proxied(SocketAddr),
    /// v2 `LOCAL` or v1 `UNKNOWN`: the proxy speaking for itself, as
    /// HAProxy's health checks do. The peer stays the proxy.
    Local,
    /// v2 `PROXY` with an address family that names no IP client (unspec,
    /// `AF_UNIX`): the peer stays the proxy, as the specification says.
    Unaddressed,
}

/// Why no header came.
#[derive(Debug)]
pub enum Missing {
    /// The peer closed (or reset) the connection before sending a byte: a
    /// health check that connects and closes. Not an error.
    ClosedFirst,
    /// The peer closed after these many bytes of a header.
    Truncated(usize),
    /// These bytes are no PROXY header.
    Malformed(String),
    /// No complete header within this long.
    Timeout(Duration),
    /// Reading failed.
    Io(io::Error),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::ClosedFirst => f.write_str("closed before sending a PROXY header"),
            Missing::Truncated(n) => write!(
                f,
                "closed after {n} bytes of a PROXY header, before its end"
            ),
            Missing::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            Missing::Timeout(d) => write!(
                f,
                "no complete PROXY header within {:.1} s",
                d.as_secs_f64()
            ),
            Missing::Io(e) => write!(
                f,
                "reading the PROXY header failed: {}",
                crate::diag::describe(e)
            ),
        }
    }
}

/// Parses the bytes received so far: the header and its length once it
/// is complete, `None` while more bytes may complete it, an error as soon
/// as they cannot.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let signature = match first {
        b'P' => V1_SIGNATURE,
        b'\r' => V2_SIGNATURE,
        _ => return Err(format!("it begins with {}", shown(buf))),
    };
    let n = buf.len().min(signature.len());
    if buf[..n] != signature[..n] {
        return Err(format!("it begins with {}", shown(buf)));
    }
    // A v1 header ends with CR LF: a bare LF in it can never become one,
    // so it is malformed now, not after the deadline.
    if first == b'P' {
        if let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(V1_MAX)]) {
            if nl == 0 || buf[nl - 1] != b'\r' {
                return Err(format!(
                    "bad v1 header {}: it ends with LF, not CR LF",
                    shown(&buf[..=nl])
                ));
            }
        }
    }
    let config = ParseConfig {
        include_tlvs: false,
        allow_v1: true,
        allow_v2: true,
    };
    match ProxyHeader::parse(buf, config) {
        Ok((h, len)) => {
            let header = match h.proxied_address() {
                Some(a) => Header::Proxied(a.source),
                // v2: the low nibble of byte 12 is the command, 0 LOCAL.
                None if first == b'\r' && buf[12] & 0x0f == 1 => Header::Unaddressed,
                None => Header::Local,
            };
            Ok(Some((header, len)))
        }
        Err(proxy_header::Error::BufferTooShort) if first == b'P' && buf.len() >= V1_MAX => Err(
            format!("a v1 header is at most {V1_MAX} bytes, and no CR LF came"),
        ),
        Err(proxy_header::Error::BufferTooShort) => Ok(None),
        Err(e) => Err(if first == b'P' {
            format!(
                "bad v1 header {} ({e:?})",
                shown(&buf[..buf.len().min(V1_MAX)])
            )
        } else {
            format!("bad v2 header ({e:?})")
        }),
    }
}

/// At most 40 bytes of `b`, escaped, for a log line.
fn shown(b: &[u8]) -> String {
    let cut = &b[..b.len().min(40)];
    let mut s = format!("\"{}\"", cut.escape_ascii());
    if b.len() > cut.len() {
        s.push_str("...");
    }
    s
}

/// How many bytes the header in `buf` may need in all, at most: a v2
/// header's length is known from its 16th byte on.
fn room(buf: &[u8]) -> usize {
    if buf.len() >= 16 && buf.starts_with(V2_SIGNATURE) {
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        (16 + len).max(FIRST_READ)
    } else {
        FIRST_READ
    }
}

/// Reads the header, which must be complete by `deadline`. Returns it
/// with the bytes read past it: the client's first bytes. Holds at most
/// [`V2_MAX`] bytes.
pub async fn read(stream: &TcpStream, deadline: Instant) -> Result<(Header, Vec<u8>), Missing> {
    let started = Instant::now();
    let mut buf = Vec::new();
    loop {
        match parse(&buf) {
            Ok(Some((header, len))) => {
                buf.drain(..len);
                return Ok((header, buf));
            }
            Ok(None) => {}
            Err(why) => return Err(Missing::Malformed(why)),
        }
        let limit = room(&buf).min(V2_MAX);
        if buf.len() >= limit {
            // Unreachable by the parse's own bounds; a guard all the same.
            return Err(Missing::Malformed(format!("longer than {limit} bytes")));
        }
        // Read first: the header is usually there by the time a
        // connection is accepted, and a wait for readiness costs a trip
        // through the reactor.
        let old = buf.len();
        buf.resize(limit, 0);
        let r = stream.try_read(&mut buf[old..]);
        buf.truncate(old + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) if buf.is_empty() => return Err(Missing::ClosedFirst),
            Ok(0) => return Err(Missing::Truncated(buf.len())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout_at(deadline, stream.readable()).await {
                    Err(_) => return Err(Missing::Timeout(deadline - started)),
                    Ok(Err(e)) => return Err(Missing::Io(e)),
                    Ok(Ok(())) => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Missing::ClosedFirst)
            }
            Err(e) => return Err(Missing::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_every_prefix_waits_then_parses() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 10008\r\n";
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n}");
        }
        let mut with_data = h.to_vec();
        with_data.extend_from_slice(b"first\n");
        assert_eq!(
            parse(&with_data),
            Ok(Some((
                Header::Proxied("192.0.2.7:40000".parse().unwrap()),
                h.len()
            )))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Header::Local, 15))));
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&10008u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]); // a NOOP TLV
        let h = v2(1, 0x11, &body);
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n}");
        }
        assert_eq!(
            parse(&h),
            Ok(Some((
                Header::Proxied("192.0.2.7:40000".parse().unwrap()),
                h.len()
            )))
        );
        assert_eq!(parse(&v2(0, 0, &[])), Ok(Some((Header::Local, 16))));
        assert_eq!(parse(&v2(1, 0, &[])), Ok(Some((Header::Unaddressed, 16))));
    }

    #[test]
    fn garbage_is_refused_at_the_first_wrong_byte() {
        assert!(parse(b"hello\n").is_err());
        assert!(parse(b"PROXX").is_err());
        assert!(parse(b"\r\n\r\nX").is_err());
        // A bare LF ends nothing: refused at once, not at the deadline.
        let lf = parse(b"PROXY TCP4 192.0.2.1 192.0.2.2 5555 80\nbad\n");
        assert!(lf.is_err_and(|e| e.contains("ends with LF, not CR LF")));
        assert!(parse(b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\n").is_err());
        // No CR LF within 107 bytes.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse(&long).is_err());
        // Version 3.
        let mut h = v2(0, 0, &[]);
        h[12] = 0x30;
        assert!(parse(&h).is_err());
    }
}
