//! Source prefixes (`ADDR/LEN`), normalized so that one network has one
//! spelling: host bits zero, IPv4-mapped IPv6 as IPv4. Used by the XDP deny
//! list, `trusted_proxies`, cache purge sources and rate-limit exemptions.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// A source prefix, normalized: host bits zero, IPv4-mapped IPv6 as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {len} is longer than {max} bits")]
    TooLong { len: u8, max: u8 },
    #[error("`{0}` is not an address or a prefix (ADDR or ADDR/LEN)")]
    Syntax(String),
}

impl Prefix {
    /// `addr/len` with the host bits cleared; `::ffff:a.b.c.d/len` with
    /// `len >= 96` becomes `a.b.c.d/(len - 96)`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(PrefixError::TooLong { len, max: 32 });
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                let a = Ipv4Addr::from(u32::from(a) & mask);
                Ok(Prefix {
                    addr: IpAddr::V4(a),
                    len,
                })
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(PrefixError::TooLong { len, max: 128 });
                }
                if len >= 96 {
                    if let Some(v4) = a.to_ipv4_mapped() {
                        return Prefix::new(IpAddr::V4(v4), len - 96);
                    }
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                let a = Ipv6Addr::from(u128::from(a) & mask);
                Ok(Prefix {
                    addr: IpAddr::V6(a),
                    len,
                })
            }
        }
    }

    /// The single address `addr` (/32 or /128; a mapped address as IPv4).
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix::new(addr, len).expect("a full-length prefix is valid")
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside this prefix (a mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let host = Prefix::host(ip);
        match (self.addr, host.addr) {
            (IpAddr::V4(_), IpAddr::V4(h)) => {
                Prefix::new(IpAddr::V4(h), self.len).is_ok_and(|p| p == *self)
            }
            (IpAddr::V6(_), IpAddr::V6(h)) => {
                Prefix::new(IpAddr::V6(h), self.len).is_ok_and(|p| p == *self)
            }
            _ => false,
        }
    }
}

impl From<IpAddr> for Prefix {
    fn from(addr: IpAddr) -> Prefix {
        Prefix::host(addr)
    }
}

impl TryFrom<(IpAddr, u8)> for Prefix {
    type Error = PrefixError;
    fn try_from((addr, len): (IpAddr, u8)) -> Result<Prefix, PrefixError> {
        Prefix::new(addr, len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    /// `ADDR` (a host) or `ADDR/LEN`.
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let bad = || PrefixError::Syntax(s.to_string());
        match s.split_once('/') {
            None => Ok(Prefix::host(s.parse().map_err(|_| bad())?)),
            Some((a, l)) => {
                Prefix::new(a.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?)
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(p("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("10.1.2.3/0").to_string(), "0.0.0.0/0");
        assert_eq!(p("2001:db8::1/64").to_string(), "2001:db8::/64");
        assert_eq!(p("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(p("::/0").to_string(), "::/0");
        // IPv4-mapped IPv6 is IPv4.
        assert_eq!(p("::ffff:10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("::ffff:10.1.2.3/120").to_string(), "10.1.2.0/24");
        assert_eq!(p("::ffff:10.1.2.3/96").to_string(), "0.0.0.0/0");
        // Shorter than /96: an IPv6 prefix (it covers more than the mapped
        // space).
        assert_eq!(p("::ffff:10.1.2.3/80").to_string(), "::/80");
        assert_eq!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::TooLong { len: 33, max: 32 })
        );
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        assert!("10.0.0.0/x".parse::<Prefix>().is_err());
        assert!("nonsense".parse::<Prefix>().is_err());
        assert_eq!(
            Prefix::try_from(("10.9.8.7".parse::<IpAddr>().unwrap(), 16)).unwrap(),
            p("10.9.0.0/16")
        );
    }

    #[test]
    fn containment() {
        let net = p("192.0.2.0/24");
        assert!(net.contains("192.0.2.200".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let net6 = p("2001:db8:0:1::/64");
        assert!(net6.contains("2001:db8:0:1:ffff::1".parse().unwrap()));
        assert!(!net6.contains("2001:db8:0:2::1".parse().unwrap()));
        assert!(p("0.0.0.0/0").contains("203.0.113.1".parse().unwrap()));
    }
}
