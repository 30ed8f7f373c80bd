//! The per-source connection cap (`l7.limits.max_connections_per_source`):
//! how many connections one source may hold open on one worker's listener.
//!
//! A source is an IPv4 address, or an IPv6 /64: one IPv6 host usually
//! holds a whole /64, so counting single IPv6 addresses would cap nothing.
//! IPv4-mapped IPv6 peers (a dual-stack listener) count as their IPv4
//! address.
//!
//! The count is per worker, like `max_connections`: workers share no
//! state on the accept path, and sk_reuseport's flow hash spreads one
//! source's connections over the workers. A connection over the cap is
//! closed as soon as it is accepted, before any byte is read (the
//! protocol is not known yet, so there is no status to answer with).
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// The open connections per source of one listener on one worker.
#[derive(Debug)]
pub struct SourceCap {
    max: u32,
    /// Only sources with at least one connection open: the table is bounded
    /// by the listener's open connections.
    open: Mutex<HashMap<u128, u32>>,
}

/// One connection counted against its source; uncounted when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    cap: Arc<SourceCap>,
    source: u128,
}

impl SourceCap {
    /// A cap of `max` connections per source (`max` ≥ 1).
    pub fn new(max: u32) -> Arc<SourceCap> {
        Arc::new(SourceCap {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`, or `None` when its source
    /// already holds `max`.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let source = source_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(source).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            cap: self.clone(),
            source,
        })
    }

    /// Connections open from `ip`'s source.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&source_of(ip)).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// The key of `ip`'s source: IPv4 addresses as IPv4-mapped IPv6, IPv6
/// addresses cut to their /64.
fn source_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !((1u128 << 64) - 1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_max_connections_and_a_slot_back_on_drop() {
        let cap = SourceCap::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = cap.try_open(a).unwrap();
        let two = cap.try_open(a).unwrap();
        assert!(cap.try_open(a).is_none());
        assert!(cap.try_open(b).is_some(), "another source is not affected");
        assert_eq!(cap.open_from(a), 2);
        drop(one);
        let three = cap.try_open(a).unwrap();
        drop((two, three));
        assert_eq!(cap.open_from(a), 0);
        assert!(cap.open.lock().unwrap().is_empty(), "no empty entries left");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let cap = SourceCap::new(1);
        let _x = cap.try_open("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(cap
            .try_open("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        assert!(cap.try_open("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _y = cap.try_open("198.51.100.4".parse().unwrap()).unwrap();
        assert!(cap
            .try_open("::ffff:198.51.100.4".parse().unwrap())
            .is_none());
    }
}
