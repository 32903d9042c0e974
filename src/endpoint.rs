//! Addresses as both tools write them: `HOST:PORT`, `[V6]:PORT`,
//! `unix:PATH` and `unix:@NAME` (Linux abstract namespace).

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
    fn host_port_pair() {
        assert_eq!(
            Endpoint::from_host_port("[::1]", "7").unwrap().to_string(),
            "[::1]:7"
        );
    }
}
