//! Who is on the other end of a connection: one type, used by the access
//! rules, the limits, the log lines and the records alike.
//!
//! A TCP peer is its socket address, or the source a PROXY protocol header
//! named; an IPv4 peer that arrived on a dual-stack socket as
//! `::ffff:a.b.c.d` is the IPv4 address, written and matched as such. A
//! Unix peer is its credentials (`SO_PEERCRED`), when the kernel gives
//! them. A TLS peer that presented a verified client certificate
//! (`--tls-client-ca`) also carries who the certificate says it is.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::tls::TlsId;

/// The peer of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer: its address, IPv4-mapped IPv6 folded to IPv4.
    Tcp(SocketAddr),
    /// A TCP client behind a trusted proxy (`--proxy-protocol`): the
    /// source its PROXY header named, which is the peer for every purpose,
    /// and the proxy's own address, for the log. Both canonical.
    Proxied { source: SocketAddr, via: SocketAddr },
    /// A Unix peer, with its credentials when the kernel gave them.
    Unix(Option<Cred>),
    /// A TCP peer whose address the kernel no longer knows (it went away
    /// before we asked).
    Unknown,
    /// A peer (TCP) whose client certificate was verified: the peer, and
    /// the certificate's subject and first DNS or email SAN. Boxed, so
    /// that every other peer (and every connection task) stays as small
    /// as before.
    Tls(Box<TlsPeer>),
}

/// A peer and who its verified client certificate says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPeer {
    pub peer: Peer,
    pub id: TlsId,
}

/// A Unix peer's credentials at connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    /// A TCP peer, its address made canonical (`::ffff:127.0.0.1` is
    /// `127.0.0.1`).
    pub fn tcp(addr: SocketAddr) -> Peer {
        Peer::Tcp(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
    }

    /// A client whose PROXY header named `source`, connected through the
    /// proxy at `via`.
    pub fn proxied(source: SocketAddr, via: SocketAddr) -> Peer {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        Peer::Proxied {
            source: canonical(source),
            via: canonical(via),
        }
    }

    /// The IP address of a TCP peer: for a proxied one, the source its
    /// PROXY header named.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(a) | Peer::Proxied { source: a, .. } => Some(a.ip()),
            Peer::Unix(_) | Peer::Unknown => None,
            Peer::Tls(t) => t.peer.ip(),
        }
    }

    /// The proxy a proxied peer came through.
    pub fn via(&self) -> Option<SocketAddr> {
        match self {
            Peer::Proxied { via, .. } => Some(*via),
            Peer::Tls(t) => t.peer.via(),
            _ => None,
        }
    }

    /// The credentials of a Unix peer.
    pub fn cred(&self) -> Option<Cred> {
        match self {
            Peer::Unix(c) => *c,
            Peer::Tcp(_) | Peer::Proxied { .. } | Peer::Unknown => None,
            Peer::Tls(t) => t.peer.cred(),
        }
    }

    /// This peer, identified by a verified client certificate.
    pub fn with_tls(self, id: TlsId) -> Peer {
        Peer::Tls(Box::new(TlsPeer { peer: self, id }))
    }
}

/// `127.0.0.1:5123`, `[::1]:5123`, `unix:uid=1000,pid=4242`, or `unix`
/// when the kernel gave no credentials. A proxied peer is written as its
/// source: the proxy is not who sent the lines. A TLS peer's certificate
/// comes after its address and a space: `127.0.0.1:5123
/// CN=alice,O=Example DNS:alice.example` (control characters, TAB and
/// backslash as `\xNN`).
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) | Peer::Proxied { source: a, .. } => write!(f, "{a}"),
            Peer::Unix(Some(Cred {
                uid, pid: Some(p), ..
            })) => write!(f, "unix:uid={uid},pid={p}"),
            Peer::Unix(Some(Cred { uid, pid: None, .. })) => write!(f, "unix:uid={uid}"),
            Peer::Unix(None) => f.write_str("unix"),
            Peer::Unknown => f.write_str("unknown"),
            Peer::Tls(t) => write!(f, "{} {}", t.peer, t.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_logs_and_prefixes_show_them() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5123".parse().unwrap();
        assert_eq!(Peer::tcp(mapped).to_string(), "127.0.0.1:5123");
        assert_eq!(
            Peer::tcp(mapped).ip(),
            Some("127.0.0.1".parse::<IpAddr>().unwrap())
        );
        let v6: SocketAddr = "[::1]:7".parse().unwrap();
        assert_eq!(Peer::tcp(v6).to_string(), "[::1]:7");
        let c = Cred {
            uid: 1000,
            gid: 100,
            pid: Some(4242),
        };
        assert_eq!(Peer::Unix(Some(c)).to_string(), "unix:uid=1000,pid=4242");
        assert_eq!(Peer::Unix(None).to_string(), "unix");
        let t = Peer::tcp(mapped).with_tls(TlsId {
            subject: "CN=alice\\x09,O=Example".into(),
            san: Some("email:alice@example.com".into()),
        });
        assert_eq!(
            t.to_string(),
            "127.0.0.1:5123 CN=alice\\x09,O=Example email:alice@example.com"
        );
        assert_eq!(t.ip(), Some("127.0.0.1".parse::<IpAddr>().unwrap()));
        let p = Peer::proxied("[::ffff:10.1.2.3]:40000".parse().unwrap(), mapped);
        assert_eq!(p.to_string(), "10.1.2.3:40000");
        assert_eq!(p.ip(), Some("10.1.2.3".parse::<IpAddr>().unwrap()));
        assert_eq!(p.via(), Some("127.0.0.1:5123".parse().unwrap()));
    }
}
