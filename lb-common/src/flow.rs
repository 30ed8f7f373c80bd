//! The flow key and the flow hash, shared by the XDP balancer and userspace.
//!
//! The XDP program builds a [`FlowKey`] from each packet, hashes it with
//! [`flow_hash`] and picks the Maglev slot with [`slot`]; userspace uses the
//! very same functions to predict where a flow goes (tests, `xlb` tooling).
//! Everything here is `no_std`, allocation-free and written for the BPF
//! verifier: no panics (no indexing by runtime values, no division by a
//! possibly-zero divisor), no `u128`, and loops only with constant bounds.
//!
//! # Byte order
//!
//! Addresses and ports are stored **exactly as they appear on the wire**: the
//! XDP program loads the network-byte-order field from the packet and stores
//! the loaded value as-is, without `from_be`/`ntohl`. So on a little-endian
//! machine (x86-64, aarch64, and the `bpfel` eBPF target) the IPv4 address
//! 10.0.0.1 is the `u32` `0x0100_000a` and port 80 is the `u16` `0x5000`.
//! Userspace builds the same values with [`wire_addr_v4`], [`wire_addr_v6`]
//! and [`wire_port`]. An IPv4 address goes into word 0 of `src`/`dst`, the
//! other three words being zero.

/// A connection's identity: what the flow hash and the connection table key
/// on.
///
/// Layout (40 bytes, no implicit padding, alignment 4):
///
/// | bytes  | field      |
/// |--------|------------|
/// | 0..16  | `src`      |
/// | 16..32 | `dst`      |
/// | 32..34 | `src_port` |
/// | 34..36 | `dst_port` |
/// | 36     | `proto`    |
/// | 37..40 | padding, always zero |
///
/// All address and port fields hold network-byte-order values loaded as-is
/// (see the [module documentation](self)). The padding is private so that
/// every key built through the constructors has it zeroed: it takes part in
/// the hash and in map-key comparisons.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address: an IPv4 address in word 0 (words 1..4 zero), or the
    /// four words of an IPv6 address, in wire order.
    pub src: [u32; 4],
    /// Destination address, same convention as `src`.
    pub dst: [u32; 4],
    /// Source port as loaded from the packet (network byte order); zero for
    /// protocols without ports and in a [three-tuple](FlowKey::three_tuple).
    pub src_port: u16,
    /// Destination port, same convention as `src_port`.
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// The 3 bytes after `proto`, always zero, as a byte and a 16-bit word:
    /// a `[u8; 3]` makes LLVM zero them with a call to `memset` (a byte
    /// loop) on the eBPF side, on every packet.
    _pad: u8,
    _pad16: u16,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 4);

// SAFETY: `FlowKey` is `#[repr(C)]`, made only of integers and integer
// arrays, has no implicit padding (the explicit `_pad` and `_pad16` fill
// the 3 bytes after `proto`, `_pad16` 2-aligned at offset 38; the size
// assertion above checks 16+16+2+2+1+1+2 == 40), and
// every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}

impl FlowKey {
    /// An IPv4 flow. `src` and `dst` are the addresses as loaded from the
    /// IPv4 header (network byte order, e.g. `iphdr.saddr`), ports as loaded
    /// from the L4 header.
    #[inline(always)]
    pub const fn v4(src: u32, dst: u32, src_port: u16, dst_port: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: [src, 0, 0, 0],
            dst: [dst, 0, 0, 0],
            src_port,
            dst_port,
            proto,
            _pad: 0,
            _pad16: 0,
        }
    }

    /// An IPv6 flow. `src` and `dst` are the four 32-bit words of the
    /// addresses as loaded from the IPv6 header (`in6_addr.s6_addr32`).
    #[inline(always)]
    pub const fn v6(
        src: [u32; 4],
        dst: [u32; 4],
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> FlowKey {
        FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            proto,
            _pad: 0,
            _pad16: 0,
        }
    }

    /// The same flow without ports: (source, destination, protocol).
    ///
    /// Used for IP fragments (only the first fragment carries the L4 header,
    /// so all fragments of a datagram must hash without ports to meet at the
    /// same backend) and for VIPs configured to hash without ports.
    #[inline(always)]
    pub const fn three_tuple(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            src_port: 0,
            dst_port: 0,
            proto: self.proto,
            _pad: 0,
            _pad16: 0,
        }
    }

    /// The key as the ten little-endian 32-bit words of its 40-byte memory
    /// image: the input of [`flow_hash`].
    ///
    /// On little-endian machines (all the ones xlb runs on, and `bpfel`)
    /// every `u16::from_le`/`u32::from_le` below is the identity, and word 8
    /// is `src_port | dst_port << 16`, word 9 is `proto` (the padding is
    /// zero). On a big-endian host the conversions make the words, hence the
    /// hash, still a function of the bytes in memory, which are the bytes on
    /// the wire.
    #[inline(always)]
    pub const fn words(&self) -> [u32; 10] {
        [
            u32::from_le(self.src[0]),
            u32::from_le(self.src[1]),
            u32::from_le(self.src[2]),
            u32::from_le(self.src[3]),
            u32::from_le(self.dst[0]),
            u32::from_le(self.dst[1]),
            u32::from_le(self.dst[2]),
            u32::from_le(self.dst[3]),
            (u16::from_le(self.src_port) as u32) | ((u16::from_le(self.dst_port) as u32) << 16),
            (self.proto as u32)
                | ((self._pad as u32) << 8)
                | ((u16::from_le(self._pad16) as u32) << 16),
        ]
    }
}

/// The wire representation of an IPv4 address given as octets
/// (`Ipv4Addr::octets()`), as the XDP program loads it: `FlowKey::v4` input.
#[inline(always)]
pub const fn wire_addr_v4(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// The wire representation of an IPv6 address given as octets
/// (`Ipv6Addr::octets()`): `FlowKey::v6` input.
#[inline(always)]
pub const fn wire_addr_v6(o: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The wire representation of a port given as a host number (`80`), as the
/// XDP program loads it from the L4 header.
#[inline(always)]
pub const fn wire_port(port: u16) -> u16 {
    port.to_be()
}

/// Seed of [`flow_hash`]: the ASCII bytes `"xlb0"` read big-endian.
///
/// Fixed on purpose: every node of an anycast fleet (and userspace, when it
/// predicts a flow's backend) must map a flow to the same slot, so the seed
/// cannot be random per node or per boot. Changing it reshuffles every flow
/// that is not pinned by the connection table.
pub const FLOW_HASH_SEED: u32 = 0x786c_6230;

const MURMUR3_C1: u32 = 0xcc9e_2d51;
const MURMUR3_C2: u32 = 0x1b87_3593;

/// One MurmurHash3 x86_32 body step: mixes a 4-byte block `k` into `h`.
#[inline(always)]
pub const fn murmur3_mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(MURMUR3_C1)
        .rotate_left(15)
        .wrapping_mul(MURMUR3_C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// MurmurHash3 x86_32 finalisation: folds in the input length in bytes and
/// applies `fmix32`.
#[inline(always)]
pub const fn murmur3_finish(h: u32, len: u32) -> u32 {
    let mut h = h ^ len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of a flow: MurmurHash3 x86_32 with seed [`FLOW_HASH_SEED`] over
/// a short form of the key, read as little-endian words:
///
/// * a key whose address words 1..4 are all zero (every IPv4 key): 16
///   bytes, `src[0] ‖ dst[0] ‖ src_port ‖ dst_port ‖ proto ‖ 0 0 0`;
/// * any other key (IPv6): 24 bytes, each address folded to 8 by XOR of its
///   halves (`a[0..8] ^ a[8..16]`), then the ports and protocol as above.
///
/// Equivalently, `mmh3.hash(bytes, 0x786c6230, signed=False)` in Python over
/// those bytes, addresses and ports being their wire (network-order) bytes.
/// The short forms are purely a matter of cost: the hash is the longest
/// dependency chain on the datapath's new-flow path (each 4-byte round is a
/// chain of multiplies), and zero words add nothing to the spread, while
/// folding an IPv6 address loses nothing a client could not equally get by
/// picking another source address or port (measured: ~30 ns per new IPv4
/// flow, ~15 ns per IPv6 one). The form is a function of the key alone, so
/// the datapath and userspace always agree.
///
/// Why MurmurHash3 x86_32: it is a well-known, well-distributed hash (it
/// passes SMHasher's avalanche and distribution tests), it has a published
/// reference implementation and test vectors and independent implementations
/// in many languages (so its results can be checked from outside this crate),
/// and it is cheap and verifier-friendly: over whole 32-bit blocks it is ten
/// rounds of 32-bit multiply/rotate/xor plus a finaliser, no tail handling,
/// no table, no `u128`. The Maglev builder hashes backend identities with
/// the same function family (see `crate::maglev`). The seed is fixed, see
/// [`FLOW_HASH_SEED`].
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let w = key.words();
    let mut h = FLOW_HASH_SEED;
    if w[1] | w[2] | w[3] | w[5] | w[6] | w[7] == 0 {
        h = murmur3_mix(h, w[0]);
        h = murmur3_mix(h, w[4]);
        h = murmur3_mix(h, w[8]);
        h = murmur3_mix(h, w[9]);
        return murmur3_finish(h, 16);
    }
    h = murmur3_mix(h, w[0] ^ w[2]);
    h = murmur3_mix(h, w[1] ^ w[3]);
    h = murmur3_mix(h, w[4] ^ w[6]);
    h = murmur3_mix(h, w[5] ^ w[7]);
    h = murmur3_mix(h, w[8]);
    h = murmur3_mix(h, w[9]);
    murmur3_finish(h, 24)
}

/// The Maglev table slot for a flow hash: `⌊hash · m / 2³²⌋`, which is in
/// `0..m` for every `m` (0 when `m` is 0, which no valid table has).
///
/// A multiply and a shift rather than `hash % m`: the division is the
/// single most expensive instruction on the datapath's new-flow path, and
/// the Maglev table only needs the hash spread evenly over the slots, which
/// this does (Lemire, "A fast alternative to the modulo reduction", 2016;
/// the bias is below m / 2³² per slot).
///
/// This is the lookup side of `crate::maglev::build`, shared by the eBPF
/// program and userspace.
#[inline(always)]
pub const fn slot(hash: u32, m: u32) -> u32 {
    ((hash as u64 * m as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytewise MurmurHash3 x86_32, written from the reference algorithm
    /// (smhasher's `MurmurHash3_x86_32`), tail included; used to check that
    /// the word-wise `flow_hash` really is murmur3 over the key's bytes.
    fn murmur3_bytes(data: &[u8], seed: u32) -> u32 {
        let mut h = seed;
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            h = murmur3_mix(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let tail = chunks.remainder();
        let mut k: u32 = 0;
        if tail.len() >= 3 {
            k ^= (tail[2] as u32) << 16;
        }
        if tail.len() >= 2 {
            k ^= (tail[1] as u32) << 8;
        }
        if !tail.is_empty() {
            k ^= tail[0] as u32;
            k = k
                .wrapping_mul(MURMUR3_C1)
                .rotate_left(15)
                .wrapping_mul(MURMUR3_C2);
            h ^= k;
        }
        murmur3_finish(h, data.len() as u32)
    }

    fn key_bytes(k: &FlowKey) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (i, w) in k.words().iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    #[test]
    fn murmur3_reference_vectors() {
        // Published MurmurHash3_x86_32 vectors (smhasher, and e.g. Python's
        // mmh3 / Guava's murmur3_32_fixed agree).
        assert_eq!(murmur3_bytes(b"", 0), 0);
        assert_eq!(murmur3_bytes(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_bytes(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_bytes(&[0, 0, 0, 0], 0), 0x2362_f9de);
        assert_eq!(murmur3_bytes(b"aaaa", 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_bytes(b"abc", 0), 0xb3dd_93fa);
        assert_eq!(murmur3_bytes(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_bytes(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn layout_matches_words() {
        let k = FlowKey::v4(
            wire_addr_v4([10, 0, 0, 1]),
            wire_addr_v4([192, 0, 2, 7]),
            wire_port(12345),
            wire_port(80),
            6,
        );
        let expected: [u8; 40] = [
            10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // src
            192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // dst
            0x30, 0x39, 0, 80, 6, 0, 0, 0, // ports, proto, pad
        ];
        assert_eq!(key_bytes(&k), expected);
        // On this (little-endian) host the memory image is the same.
        // SAFETY: FlowKey is repr(C), 40 bytes, no implicit padding.
        let mem: [u8; 40] = unsafe { core::mem::transmute(k) };
        if cfg!(target_endian = "little") {
            assert_eq!(mem, expected);
        }
    }

    /// Known answers computed independently with Python's `mmh3` package
    /// (`mmh3.hash(bytes, 0x786c6230, signed=False)`) over the short forms
    /// described at `flow_hash`.
    #[test]
    fn flow_hash_known_answers() {
        let tcp4 = FlowKey::v4(
            wire_addr_v4([10, 0, 0, 1]),
            wire_addr_v4([192, 0, 2, 7]),
            wire_port(12345),
            wire_port(80),
            6,
        );
        let udp6 = FlowKey::v6(
            wire_addr_v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            wire_addr_v6([
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
            ]),
            wire_port(5353),
            wire_port(53),
            17,
        );
        let zero = FlowKey::default();
        let cases = [
            (tcp4, KAT_TCP4),
            (tcp4.three_tuple(), KAT_TCP4_3T),
            (udp6, KAT_UDP6),
            (zero, KAT_ZERO),
        ];
        for (k, want) in cases {
            let bytes = key_bytes(&k);
            let short = k.src[1..] == [0; 3] && k.dst[1..] == [0; 3];
            let mut significant = [0u8; 40];
            let n = if short {
                significant[0..4].copy_from_slice(&bytes[0..4]);
                significant[4..8].copy_from_slice(&bytes[16..20]);
                significant[8..16].copy_from_slice(&bytes[32..40]);
                16
            } else {
                for i in 0..8 {
                    significant[i] = bytes[i] ^ bytes[8 + i];
                    significant[8 + i] = bytes[16 + i] ^ bytes[24 + i];
                }
                significant[16..24].copy_from_slice(&bytes[32..40]);
                24
            };
            assert_eq!(
                flow_hash(&k),
                murmur3_bytes(&significant[..n], FLOW_HASH_SEED)
            );
            assert_eq!(flow_hash(&k), want, "{k:?}");
        }
    }

    const KAT_TCP4: u32 = 0x1274_243f;
    const KAT_TCP4_3T: u32 = 0x1491_f2a9;
    const KAT_UDP6: u32 = 0x63d1_1ec6;
    const KAT_ZERO: u32 = 0xd9e0_2552;

    #[test]
    fn every_field_changes_the_hash() {
        let base = FlowKey::v6(
            [0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444],
            [0x5555_5555, 0x6666_6666, 0x7777_7777, 0x8888_8888],
            0x1234,
            0x5678,
            6,
        );
        let h0 = flow_hash(&base);
        let mut variants = [base; 13];
        for i in 0..4 {
            variants[i].src[i] ^= 1;
            variants[4 + i].dst[i] ^= 1;
        }
        variants[8].src_port ^= 1;
        variants[9].dst_port ^= 1;
        variants[10].proto ^= 1;
        variants[11]._pad ^= 1;
        variants[12]._pad16 ^= 0x8000u16.to_le();
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(flow_hash(v), h0, "variant {i}");
        }
        // Swapping source and destination is a different flow.
        let swapped = FlowKey::v6(base.dst, base.src, base.dst_port, base.src_port, 6);
        assert_ne!(flow_hash(&swapped), h0);
        // Every single-bit flip of the key changes the hash.
        let w = base.words();
        for word in 0..10 {
            for bit in 0..32 {
                let mut w2 = w;
                w2[word] ^= 1 << bit;
                let mut h = FLOW_HASH_SEED;
                for x in w2 {
                    h = murmur3_mix(h, x);
                }
                assert_ne!(murmur3_finish(h, 40), h0, "word {word} bit {bit}");
            }
        }
    }

    #[test]
    fn three_tuple_zeroes_ports_only() {
        let k = FlowKey::v4(1, 2, 3, 4, 17);
        let t = k.three_tuple();
        assert_eq!(t, FlowKey::v4(1, 2, 0, 0, 17));
        assert_eq!(t.three_tuple(), t);
    }

    #[test]
    fn slot_maps_the_hash_range_onto_the_table() {
        assert_eq!(slot(0, 65537), 0);
        assert_eq!(slot(u32::MAX, 65537), 65536);
        assert_eq!(slot(1 << 31, 65537), 32768);
        assert_eq!(slot(12345, 0), 0);
        // Every slot is reachable and equally often: count over an even
        // sweep of the hash space.
        let m = 101u32;
        let mut hits = [0u32; 101];
        let n = 1_000_000u64;
        for i in 0..n {
            let hash = ((i << 32) / n) as u32;
            hits[slot(hash, m) as usize] += 1;
        }
        let (lo, hi) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
        assert!(hi - lo <= 1, "uneven: {lo}..{hi}");
    }
}
