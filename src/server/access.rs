//! Who may connect: `--allow`/`--deny` CIDR rules for TCP peers, and
//! `--allow-uid`/`--allow-gid` for Unix peers, checked with `SO_PEERCRED`.
//! A peer that is not allowed gets the refusal and nothing it sends is
//! read.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::peer::Peer;

#[derive(Clone, Debug, Default)]
pub struct Access {
    /// With any rule here, a TCP peer must match one of them.
    pub allow: Vec<IpNet>,
    /// A TCP peer that matches one of these is refused, allowed or not.
    pub deny: Vec<IpNet>,
    /// With any uid or gid here, a Unix peer must run as one of these
    /// users or with one of these primary groups.
    pub allow_uid: Vec<u32>,
    pub allow_gid: Vec<u32>,
}

impl Access {
    pub fn tcp_allowed(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let hit = |rules: &[IpNet]| rules.iter().any(|n| n.contains(&ip));
        (self.allow.is_empty() || hit(&self.allow)) && !hit(&self.deny)
    }

    pub fn unix_allowed(&self, uid: u32, gid: u32) -> bool {
        (self.allow_uid.is_empty() && self.allow_gid.is_empty())
            || self.allow_uid.contains(&uid)
            || self.allow_gid.contains(&gid)
    }

    /// Whether this peer may connect: the CIDR rules for a TCP peer, the
    /// uid and gid rules for a Unix peer (one without credentials passes
    /// only when there are no such rules).
    pub fn allowed(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Tcp(a) | Peer::Proxied { source: a, .. } => self.tcp_allowed(a.ip()),
            Peer::Unix(Some(c)) => self.unix_allowed(c.uid, c.gid),
            Peer::Unix(None) => !self.checks_unix(),
            Peer::Unknown => self.allow.is_empty() && self.deny.is_empty(),
            Peer::Tls(t) => self.allowed(&t.peer),
        }
    }

    /// Whether Unix peers need their credentials looked at.
    pub fn checks_unix(&self) -> bool {
        !(self.allow_uid.is_empty() && self.allow_gid.is_empty())
    }
}

/// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
/// An IPv4-mapped IPv6 block (`::ffff:127.0.0.1`, `::ffff:10.0.0.0/104`)
/// is the IPv4 block it stands for, as peers are: the same client on a
/// dual-stack socket and on an IPv4 one matches the same rules.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(canonical_net)
        .map_err(|_| format!("'{s}' is not an address or CIDR block (like 10.0.0.0/8 or ::1)"))
}

/// `::ffff:a.b.c.d/N` (N at least 96) as `a.b.c.d/(N-96)`; any other
/// block unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            if let Ok(n) = ipnet::Ipv4Net::new(v4, len) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

/// A user id, or a user name looked up in the user database.
pub fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!("'{s}' is neither a uid nor a known user name")),
    }
}

/// A group id, or a group name looked up in the group database.
pub fn parse_gid(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(format!("'{s}' is neither a gid nor a known group name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_rules() {
        let a = Access {
            allow: vec![
                parse_cidr("127.0.0.0/8").unwrap(),
                parse_cidr("::1").unwrap(),
            ],
            deny: vec![parse_cidr("127.0.0.2").unwrap()],
            ..Access::default()
        };
        assert!(a.tcp_allowed("127.0.0.1".parse().unwrap()));
        assert!(a.tcp_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(a.tcp_allowed("::1".parse().unwrap()));
        assert!(!a.tcp_allowed("127.0.0.2".parse().unwrap()));
        assert!(!a.tcp_allowed("10.1.2.3".parse().unwrap()));
        assert!(Access::default().tcp_allowed("10.1.2.3".parse().unwrap()));
        assert!(parse_cidr("300.1.1.1").is_err());
    }

    #[test]
    fn mapped_rules_are_ipv4_rules() {
        assert_eq!(
            parse_cidr("::ffff:127.0.0.1").unwrap(),
            parse_cidr("127.0.0.1").unwrap()
        );
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap(),
            parse_cidr("10.0.0.0/8").unwrap()
        );
        // Wider than the mapped block: an IPv6 rule, left alone.
        assert!(matches!(parse_cidr("::/0").unwrap(), IpNet::V6(_)));
        let deny = Access {
            deny: vec![parse_cidr("::ffff:127.0.0.1").unwrap()],
            ..Access::default()
        };
        assert!(!deny.tcp_allowed("127.0.0.1".parse().unwrap()));
        assert!(!deny.tcp_allowed("::ffff:127.0.0.1".parse().unwrap()));
        let allow = Access {
            allow: vec![parse_cidr("::ffff:127.0.0.1").unwrap()],
            ..Access::default()
        };
        assert!(allow.tcp_allowed("127.0.0.1".parse().unwrap()));
        assert!(!allow.tcp_allowed("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn unix_rules() {
        let a = Access {
            allow_uid: vec![1000],
            allow_gid: vec![50],
            ..Access::default()
        };
        assert!(a.unix_allowed(1000, 1));
        assert!(a.unix_allowed(7, 50));
        assert!(!a.unix_allowed(0, 0));
        assert!(Access::default().unix_allowed(0, 0));
        assert_eq!(parse_uid("root").unwrap(), 0);
        assert_eq!(parse_uid("42").unwrap(), 42);
        assert!(parse_gid("no-such-group-here").is_err());
    }
}
