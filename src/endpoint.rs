//! Addresses as both tools write them: `HOST:PORT`, `[V6]:PORT`,
//! `unix:PATH` and `unix:@NAME` (Linux abstract namespace). `tcp:`,
//! `tcp4:` and `tcp6:` before a TCP address are taken too, and socat's
//! forms (`TCP-LISTEN:PORT`, `UNIX-CONNECT:PATH`, ...) are answered with
//! what to write instead.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where to listen or connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP literal and a port. IPv6 literals are kept without
    /// their brackets.
    Tcp { host: String, port: u16 },
    /// A Unix socket in the file system.
    Unix(PathBuf),
    /// A Unix socket in Linux's abstract namespace (`unix:@NAME`).
    Abstract(Vec<u8>),
}

/// The tutorial's address, where `sockserve` alone listens.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:10008";

impl Endpoint {
    /// An endpoint from the netcat-style pair `HOST PORT`.
    pub fn from_host_port(host: &str, port: &str) -> Result<Endpoint, String> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err("empty host".to_string());
        }
        Ok(Endpoint::Tcp {
            host: host.to_string(),
            port: parse_port(port)?,
        })
    }

    /// Resolves a TCP endpoint to its socket addresses, in the resolver's
    /// order, without duplicates.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let Endpoint::Tcp { host, port } = self else {
            return Ok(Vec::new());
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in (host.as_str(), *port).to_socket_addrs()? {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The std socket address of a Unix endpoint.
    pub fn unix_addr(&self) -> io::Result<Option<UnixSocketAddr>> {
        match self {
            Endpoint::Tcp { .. } => Ok(None),
            Endpoint::Unix(p) => UnixSocketAddr::from_pathname(p).map(Some),
            Endpoint::Abstract(name) => UnixSocketAddr::from_abstract_name(name).map(Some),
        }
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("invalid port '{port}' (want 0 to 65535)"))
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Endpoint, String> {
        if let Some(rest) = strip_prefix_nocase(s, "tcp:") {
            // socat's and many tools' spelling of a TCP address.
            return rest.parse().and_then(|e| match e {
                Endpoint::Tcp { .. } => Ok(e),
                _ => Err(format!("'{s}' is not a TCP address; write HOST:PORT")),
            });
        }
        for (prefix, v6) in [("tcp4:", false), ("tcp6:", true)] {
            if let Some(rest) = strip_prefix_nocase(s, prefix) {
                return family_only(s, rest, v6);
            }
        }
        if let Some(hint) = socat_hint(s) {
            return Err(hint);
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            if let Some(name) = rest.strip_prefix('@') {
                if name.is_empty() {
                    return Err("empty abstract socket name after 'unix:@'".to_string());
                }
                return Ok(Endpoint::Abstract(name.as_bytes().to_vec()));
            }
            if rest.is_empty() {
                return Err("empty path after 'unix:'".to_string());
            }
            return Ok(Endpoint::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((host, port)) = rest.split_once("]:") else {
                return Err(format!("'{s}' is not [IPV6]:PORT"));
            };
            return Endpoint::from_host_port(host, port);
        }
        match s.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => Err(format!(
                "'{s}' is ambiguous: write an IPv6 address in brackets, [ADDR]:PORT"
            )),
            Some((host, port)) => Endpoint::from_host_port(host, port),
            None => Err(format!(
                "'{s}' is not an address (HOST:PORT, [IPV6]:PORT, unix:PATH or unix:@NAME)"
            )),
        }
    }
}

fn strip_prefix_nocase<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `tcp4:ADDR:PORT` or `tcp6:ADDR:PORT`: taken when ADDR is an IP address
/// of that family, which is then what is bound or connected to. A host
/// name stands for all its addresses here, so the prefix cannot pick one.
fn family_only(s: &str, rest: &str, v6: bool) -> Result<Endpoint, String> {
    let (want, example) = if v6 {
        ("IPv6", "[::1]:10008")
    } else {
        ("IPv4", "127.0.0.1:10008")
    };
    let e = match rest.parse::<Endpoint>() {
        Ok(e) => e,
        // tcp6:::1:80, socat's spelling, without brackets.
        Err(_) if v6 => match rest.rsplit_once(':') {
            Some((host, port)) => Endpoint::from_host_port(host, port)?,
            None => return Err(format!("'{s}' is not an address; write {example}")),
        },
        Err(e) => return Err(e),
    };
    let ip = match &e {
        Endpoint::Tcp { host, .. } => host.parse::<std::net::IpAddr>().ok(),
        _ => None,
    };
    match ip {
        Some(ip) if ip.is_ipv6() == v6 => Ok(e),
        _ => Err(format!(
            "'{s}': the {} prefix takes an {want} address, such as {example}; for a host name, write HOST:PORT (every address it resolves to)",
            &s[..5]
        )),
    }
}

/// What to write instead of socat's address forms, which users type out
/// of habit: `TCP-LISTEN:PORT`, `TCP4:HOST:PORT`, `UNIX-LISTEN:PATH`, ...
fn socat_hint(s: &str) -> Option<String> {
    let (kind, rest) = s.split_once(':')?;
    // socat's options follow a comma: TCP-LISTEN:10008,fork,reuseaddr.
    let arg = rest.split(',').next().unwrap_or(rest);
    let instead = match kind.to_ascii_uppercase().as_str() {
        "TCP-LISTEN" | "TCP4-LISTEN" | "TCP-L" | "TCP4-L" => {
            format!("127.0.0.1:{arg} (or 0.0.0.0:{arg}: every IPv4 address of this machine)")
        }
        "TCP6-LISTEN" | "TCP6-L" => {
            format!("[::1]:{arg} (or [::]:{arg}: every IPv6 address of this machine)")
        }
        "TCP-CONNECT" | "TCP4-CONNECT" | "TCP6-CONNECT" => match arg.rsplit_once(':') {
            Some((h, p)) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{p}"),
            _ => arg.to_string(),
        },
        "UNIX-LISTEN" | "UNIX-CONNECT" | "UNIX-CLIENT" | "UNIX-L" | "UNIX-RECV" | "UNIX" => {
            format!("unix:{arg}")
        }
        "ABSTRACT-LISTEN" | "ABSTRACT-CONNECT" | "ABSTRACT-CLIENT" | "ABSTRACT" => {
            format!("unix:@{arg}")
        }
        _ => return None,
    };
    // Our own unix:PATH is not socat's UNIX:PATH, and needs no hint.
    if kind == "unix" {
        return None;
    }
    Some(format!("'{s}' is socat's address syntax; write {instead}"))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Abstract(n) => write!(f, "unix:@{}", String::from_utf8_lossy(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "127.0.0.1:10008",
            "[::1]:80",
            "localhost:1",
            "unix:/tmp/x.sock",
            "unix:@name",
        ] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "nohost", "::1:80", "h:99999", "unix:", "unix:@", "[::1]80", ":80",
        ] {
            assert!(s.parse::<Endpoint>().is_err(), "{s}");
        }
    }

    #[test]
    fn tcp_prefixes() {
        let p = |s: &str| s.parse::<Endpoint>().map(|e| e.to_string());
        assert_eq!(p("tcp:127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(p("TCP:localhost:80").unwrap(), "localhost:80");
        assert_eq!(p("tcp:[::1]:80").unwrap(), "[::1]:80");
        assert_eq!(p("tcp4:127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(p("tcp6:[::1]:80").unwrap(), "[::1]:80");
        assert_eq!(p("tcp6:::1:80").unwrap(), "[::1]:80");
        assert!(p("tcp:unix:/x").unwrap_err().contains("not a TCP address"));
        assert!(p("tcp4:[::1]:80").unwrap_err().contains("IPv4 address"));
        assert!(p("tcp6:127.0.0.1:80").unwrap_err().contains("IPv6 address"));
        assert!(p("tcp4:localhost:80").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn socat_forms_say_what_to_write() {
        let e = |s: &str| s.parse::<Endpoint>().unwrap_err();
        assert!(e("TCP-LISTEN:10008,fork").contains("write 127.0.0.1:10008 (or 0.0.0.0:10008"));
        assert!(e("TCP6-LISTEN:10008").contains("write [::1]:10008 (or [::]:10008"));
        assert!(e("TCP-CONNECT:127.0.0.1:80").contains("write 127.0.0.1:80"));
        // socat's TCP4: is our tcp4:, taken as it is.
        assert!("TCP4:127.0.0.1:80".parse::<Endpoint>().is_ok());
        assert!(e("TCP4:localhost:80").contains("write HOST:PORT"));
        assert!(e("UNIX-LISTEN:/tmp/x.sock").contains("write unix:/tmp/x.sock"));
        assert!(e("UNIX-CONNECT:/tmp/x.sock").contains("write unix:/tmp/x.sock"));
        assert!(e("ABSTRACT-LISTEN:name").contains("write unix:@name"));
        assert!("unix:/tmp/x.sock".parse::<Endpoint>().is_ok());
    }

    #[test]
    fn host_port_pair() {
        assert_eq!(
            Endpoint::from_host_port("[::1]", "7").unwrap().to_string(),
            "[::1]:7"
        );
    }
}
