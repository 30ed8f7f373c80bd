//! The XDP deny list: source prefixes whose packets the datapath drops at
//! the NIC (`drop_denied`), for every destination. The L7 rate limiter
//! escalates abusive sources here; operators can too.
//!
//! The maps (see `lb_common::deny`) are the source of truth, so the daemon
//! and `xlb` subcommands working on the same pinned maps see the same list.
//! Every entry is keyed by its normalized prefix: host bits zeroed, and an
//! IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/96+n`) stored as the IPv4
//! prefix `a.b.c.d/n`, since the L7 proxy may see IPv4 clients as mapped
//! addresses on a dual-stack listener while XDP sees the IPv4 header.
//!
//! Expiry is enforced here: [`DenyList::expire`] removes entries whose time
//! has passed (the daemon calls it every second). The datapath also checks
//! the expiry on a hit, so an entry stops dropping the instant it runs out
//! even before `expire` removes it; an expired entry inside a live shorter
//! prefix does not shadow it (the datapath then looks at the covering
//! prefixes, up to 4 lookups in all).
//!
//! Denying a prefix that is already denied keeps one entry whose expiry is
//! the later of the two; the reason goes with whichever expiry wins (on a
//! tie the new reason). So repeated escalations extend a deny and never
//! shorten it; use [`DenyList::allow`] to lift one early.
//!
//! Concurrency: each call is a few map operations, not a transaction. One
//! writer (the daemon) is the intended use; with several, the `DENY_STATE`
//! presence bits can briefly disagree with the tries, and the next
//! [`DenyList::expire`] sets them right again.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, Map, MapData, MapError,
    },
    Ebpf,
};
use lb_common::{
    deny::{DenyValue, DENY_V4_PRESENT, DENY_V6_PRESENT},
    maps,
};

pub use crate::net::prefix::{Prefix, PrefixError};

/// One deny-list entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyEntry {
    pub prefix: Prefix,
    /// The caller's reason or rule id.
    pub reason: u32,
    /// CLOCK_MONOTONIC nanoseconds ([`monotonic_now_ns`]) at which the
    /// entry stops dropping; `lb_common::deny::DENY_FOREVER` for never.
    pub expires_ns: u64,
}

/// What [`DenyList::deny`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyOutcome {
    /// The prefix was not denied before (or its entry had expired).
    Added,
    /// It was, until earlier (or until the same time for another reason):
    /// the expiry and reason are now the new ones.
    Extended,
    /// It was, until the same time or later: the entry is unchanged.
    Kept,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// deny entries' expiries are written in.
pub fn monotonic_now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// The three deny maps of one loaded (or pinned) datapath.
pub struct DenyList {
    v4: LpmTrie<MapData, u32, DenyValue>,
    v6: LpmTrie<MapData, [u32; 4], DenyValue>,
    state: Array<MapData, u32>,
}

impl fmt::Debug for DenyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenyList").finish_non_exhaustive()
    }
}

/// The key words of an address: as loaded from the packet (network byte
/// order), like `lb_common::flow`.
fn v4_data(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn v6_data(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

fn v6_addr(w: [u32; 4]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in w.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

/// "Not found" from a map lookup or delete.
fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

impl DenyList {
    /// Opens the pinned maps of a running instance (`pin_dir` as
    /// `instance_pin_dir` names it).
    pub fn open(pin_dir: &Path) -> anyhow::Result<DenyList> {
        let open = |name: &str| {
            let path = pin_dir.join(name);
            MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening {} (is an xlb instance running with this name?)",
                    path.display()
                )
            })
        };
        DenyList::from_maps(
            Map::LpmTrie(open(maps::DENY_V4)?),
            Map::LpmTrie(open(maps::DENY_V6)?),
            Map::Array(open(maps::DENY_STATE)?),
        )
    }

    /// Takes the three maps out of a loaded object (pin them first: a map
    /// taken out of `Ebpf` is no longer in its `maps()`).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> anyhow::Result<DenyList> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("the eBPF object has no map {name}"))
        };
        DenyList::from_maps(
            take(maps::DENY_V4)?,
            take(maps::DENY_V6)?,
            take(maps::DENY_STATE)?,
        )
    }

    /// Wraps the three maps (`DENY_V4`, `DENY_V6`, `DENY_STATE`), checking
    /// their types and key/value sizes.
    pub fn from_maps(v4: Map, v6: Map, state: Map) -> anyhow::Result<DenyList> {
        Ok(DenyList {
            v4: LpmTrie::try_from(v4).context(maps::DENY_V4)?,
            v6: LpmTrie::try_from(v6).context(maps::DENY_V6)?,
            state: Array::try_from(state).context(maps::DENY_STATE)?,
        })
    }

    /// Denies `prefix` for `ttl` from now, for `reason`. A prefix denied
    /// already keeps the later expiry (see the module documentation).
    pub fn deny(
        &mut self,
        prefix: Prefix,
        ttl: Duration,
        reason: u32,
    ) -> anyhow::Result<DenyOutcome> {
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let expires = monotonic_now_ns().saturating_add(ttl);
        self.deny_until(prefix, expires, reason)
    }

    /// Denies `prefix` until `expires_ns` (CLOCK_MONOTONIC, see
    /// [`monotonic_now_ns`]; `DENY_FOREVER` for never).
    pub fn deny_until(
        &mut self,
        prefix: Prefix,
        expires_ns: u64,
        reason: u32,
    ) -> anyhow::Result<DenyOutcome> {
        let outcome = match self.get_exact(prefix)? {
            None => DenyOutcome::Added,
            Some(old) if old.expires_ns <= monotonic_now_ns() => DenyOutcome::Added,
            Some(old) if old.expires_ns > expires_ns => DenyOutcome::Kept,
            Some(old) if old.expires_ns == expires_ns && old.reason == reason => DenyOutcome::Kept,
            Some(_) => DenyOutcome::Extended,
        };
        if outcome == DenyOutcome::Kept {
            return Ok(outcome);
        }
        let value = DenyValue {
            reason,
            prefix_len: u32::from(prefix.len()),
            expires_ns,
        };
        let len = u32::from(prefix.len());
        match prefix.addr() {
            IpAddr::V4(a) => self.v4.insert(&Key::new(len, v4_data(a)), value, 0),
            IpAddr::V6(a) => self.v6.insert(&Key::new(len, v6_data(a)), value, 0),
        }
        .with_context(|| format!("denying {prefix}"))?;
        self.sync_state()?;
        Ok(outcome)
    }

    /// Lifts the deny of exactly `prefix` (not of prefixes inside or around
    /// it). Returns whether there was one.
    pub fn allow(&mut self, prefix: Prefix) -> anyhow::Result<bool> {
        let removed = self.remove(prefix)?;
        self.sync_state()?;
        Ok(removed)
    }

    /// Removes every entry whose expiry is at or before `now_ns`
    /// (CLOCK_MONOTONIC, [`monotonic_now_ns`]) and returns them. Also sets
    /// the datapath's presence bits right.
    pub fn expire(&mut self, now_ns: u64) -> anyhow::Result<Vec<DenyEntry>> {
        let mut released = Vec::new();
        for e in self.list()? {
            if e.expires_ns > now_ns {
                continue;
            }
            // Read again: another writer may have extended it meanwhile.
            if let Some(cur) = self.get_exact(e.prefix)? {
                if cur.expires_ns <= now_ns && self.remove(e.prefix)? {
                    released.push(cur);
                }
            }
        }
        self.sync_state()?;
        Ok(released)
    }

    /// Every entry, IPv4 first, each family in prefix order.
    pub fn list(&self) -> anyhow::Result<Vec<DenyEntry>> {
        let mut out = Vec::new();
        for kv in self.v4.iter() {
            let (k, v) = kv.context("reading DENY_V4")?;
            let addr = IpAddr::V4(Ipv4Addr::from(k.data().to_ne_bytes()));
            out.push(entry(addr, k.prefix_len(), v)?);
        }
        for kv in self.v6.iter() {
            let (k, v) = kv.context("reading DENY_V6")?;
            let addr = IpAddr::V6(v6_addr(k.data()));
            out.push(entry(addr, k.prefix_len(), v)?);
        }
        out.sort_by_key(|e| e.prefix);
        Ok(out)
    }

    /// Removes every entry; returns how many there were.
    pub fn clear(&mut self) -> anyhow::Result<usize> {
        let all = self.list()?;
        for e in &all {
            self.remove(e.prefix)?;
        }
        self.sync_state()?;
        Ok(all.len())
    }

    /// The entry of exactly `prefix`, if any (a trie lookup returns the
    /// longest matching prefix, which may be a shorter covering one: the
    /// value's own `prefix_len` tells them apart).
    fn get_exact(&self, prefix: Prefix) -> anyhow::Result<Option<DenyEntry>> {
        let len = u32::from(prefix.len());
        let got = match prefix.addr() {
            IpAddr::V4(a) => self.v4.get(&Key::new(len, v4_data(a)), 0),
            IpAddr::V6(a) => self.v6.get(&Key::new(len, v6_data(a)), 0),
        };
        match got {
            Ok(v) if v.prefix_len == len => Ok(Some(DenyEntry {
                prefix,
                reason: v.reason,
                expires_ns: v.expires_ns,
            })),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up {prefix}")),
        }
    }

    fn remove(&mut self, prefix: Prefix) -> anyhow::Result<bool> {
        let len = u32::from(prefix.len());
        let r = match prefix.addr() {
            IpAddr::V4(a) => self.v4.remove(&Key::new(len, v4_data(a))),
            IpAddr::V6(a) => self.v6.remove(&Key::new(len, v6_data(a))),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {prefix}")),
        }
    }

    /// Writes `DENY_STATE[0]` from what the tries hold now.
    fn sync_state(&mut self) -> anyhow::Result<()> {
        let mut bits = 0;
        if self.v4.keys().next().is_some() {
            bits |= DENY_V4_PRESENT;
        }
        if self.v6.keys().next().is_some() {
            bits |= DENY_V6_PRESENT;
        }
        self.state.set(0, bits, 0).context("writing DENY_STATE")?;
        Ok(())
    }
}

fn entry(addr: IpAddr, prefix_len: u32, v: DenyValue) -> anyhow::Result<DenyEntry> {
    let len = u8::try_from(prefix_len).context("prefix length")?;
    Ok(DenyEntry {
        prefix: Prefix::new(addr, len)?,
        reason: v.reason,
        expires_ns: v.expires_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_words_are_wire_order() {
        let a: Ipv4Addr = "10.0.0.1".parse().unwrap();
        assert_eq!(v4_data(a).to_ne_bytes(), [10, 0, 0, 1]);
        let b: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(v6_addr(v6_data(b)), b);
        assert_eq!(v6_data(b)[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
    }
}
