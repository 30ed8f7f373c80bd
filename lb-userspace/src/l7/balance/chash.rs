//! Consistent hash with a Maglev table, built by the same
//! `lb_common::maglev::build` as the L4 datapath's: each node's identity is
//! its address and port bytes ([`super::Node::identity`]) and it owns a
//! share of the slots proportional to its weight (weight 0: none). A request
//! hashes its key — [`PickContext::hash_key`] (a header, a cookie, the URI,
//! as the route says), else the client address (an IPv4-mapped IPv6 address
//! counts as the IPv4 one) — with MurmurHash3 and the fixed [`CHASH_SEED`],
//! and takes the slot `lb_common::flow::slot(hash, m)`. The table depends
//! only on the nodes' addresses and weights and the seed is fixed, so every
//! worker, every restart and every proxy of a fleet send a key to the same
//! node.
//!
//! When the slot's node is unhealthy or excluded (a retry), the pick walks
//! to the next slot, `s + 1, s + 2, …` (wrapping), until a node that may be
//! picked: deterministic, so a key keeps its fallback node too, and since
//! Maglev interleaves the owners of consecutive slots pseudo-randomly, the
//! keys of a down node spread over the others roughly by weight while no
//! other key moves. Health changes never rebuild the table; only a change
//! of the node set or weights (a new [`Upstream`]) does, and Maglev then
//! moves few keys besides those of the changed nodes (≤ 2 % of the rest at
//! m = 65537, `lb_common::maglev::REMOVAL_DISRUPTION_BOUND`; measured by the
//! tests when one node of 5 / 20 / 40 leaves: 0.43 / 1.78 / 1.90 % of the
//! other keys move at m = 4093, 0.13 / – / 0.42 % at m = 65537).
//!
//! Table size: [`default_table_size`] picks 4093 for up to 40 nodes and
//! 65537 (the L4 default) for up to 655, then larger primes — at least 100
//! slots per node, the Maglev paper's rule for a balanced table. A small
//! table is 16 KiB and builds in microseconds instead of 256 KiB and about a
//! millisecond per upstream, which matters with hundreds of upstreams and
//! frequent reloads. The price: changing `m` reshuffles every key, so a pool
//! that grows across a threshold (40 → 41 nodes) loses its affinity once.
//! The size is chosen from the number of nodes including drained and
//! unhealthy ones, so draining does not cross it; a pool that hovers around
//! a threshold should set the size explicitly
//! ([`ConsistentHash::with_table_size`]).
//!
//! Slow start does not apply: the point of a hash is that a key keeps its
//! node.
use std::{fmt, net::IpAddr, sync::Arc};

use lb_common::{
    flow::slot,
    maglev::{self, murmur3_32, Backend, NO_BACKEND},
};

use super::{Algorithm, BalanceError, Balancer, PickContext, Upstream};

/// Seed of the key hash, the ASCII bytes `"xlbh"` read big-endian. Fixed so
/// that every proxy of a fleet agrees.
pub const CHASH_SEED: u32 = 0x786c_6268;

/// The Maglev table size for an upstream of `nodes` nodes: the smallest of
/// 4093, 65537, 262147 and 1048573 (primes) that gives at least 100 slots
/// per node, or 1048573.
pub fn default_table_size(nodes: usize) -> u32 {
    const SIZES: [u32; 4] = [4093, 65537, 262_147, 1_048_573];
    SIZES
        .into_iter()
        .find(|&m| m as usize >= nodes.saturating_mul(100))
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Maglev consistent hash (see the module documentation).
pub struct ConsistentHash {
    upstream: Arc<Upstream>,
    /// Slot → node index, or `NO_BACKEND` (only if no node has a weight).
    table: Vec<u32>,
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("nodes", &self.upstream.len())
            .field("table_size", &self.table.len())
            .finish()
    }
}

impl ConsistentHash {
    /// Over `upstream`, with [`default_table_size`].
    pub fn new(upstream: Arc<Upstream>) -> Result<ConsistentHash, BalanceError> {
        let m = default_table_size(upstream.len());
        ConsistentHash::with_table_size(upstream, m)
    }

    /// Over `upstream`, with a table of `m` slots (a prime, 101 ≤ m ≤ 2²⁴,
    /// at least the number of nodes with a weight).
    pub fn with_table_size(
        upstream: Arc<Upstream>,
        m: u32,
    ) -> Result<ConsistentHash, BalanceError> {
        let keys: Vec<Vec<u8>> = upstream.nodes().iter().map(|n| n.identity()).collect();
        let mut backends = Vec::with_capacity(keys.len());
        for (n, key) in upstream.nodes().iter().zip(&keys) {
            backends.push(Backend {
                id: u32::try_from(n.id).map_err(|_| maglev::MaglevError::ReservedId)?,
                key,
                weight: n.weight,
            });
        }
        let table = maglev::build(&backends, m)?;
        Ok(ConsistentHash { upstream, table })
    }

    /// The table size.
    pub fn table_size(&self) -> u32 {
        self.table.len() as u32
    }

    /// The node that owns key hash `hash`'s slot, whatever its state.
    pub fn owner(&self, hash: u32) -> Option<usize> {
        let id = self.table[slot(hash, self.table_size()) as usize];
        (id != NO_BACKEND).then_some(id as usize)
    }

    /// The hash of a request's key: `ctx.hash_key`, else the client address.
    pub fn key_hash(ctx: &PickContext<'_>) -> u32 {
        match ctx.hash_key {
            Some(key) => murmur3_32(key, CHASH_SEED),
            None => match ctx.client_ip.to_canonical() {
                IpAddr::V4(a) => murmur3_32(&a.octets(), CHASH_SEED),
                IpAddr::V6(a) => murmur3_32(&a.octets(), CHASH_SEED),
            },
        }
    }
}

impl Balancer for ConsistentHash {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let up = &*self.upstream;
        let m = self.table.len();
        let start = slot(Self::key_hash(ctx), self.table_size()) as usize;
        let ok = |id: u32| id != NO_BACKEND && up.is_eligible(id as usize, ctx.exclude);
        if ok(self.table[start]) {
            return Some(self.table[start] as usize);
        }
        // The walk visits every slot before giving up, so first make sure
        // there is something to find.
        if !up.any_eligible(ctx.exclude) {
            return None;
        }
        (1..m)
            .map(|step| self.table[(start + step) % m])
            .find(|&id| ok(id))
            .map(|id| id as usize)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::ConsistentHash
    }

    fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}
