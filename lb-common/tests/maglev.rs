//! Maglev table builder: balance, disruption, determinism, golden vector,
//! errors. Run with `cargo test -p lb-common --features std -- --nocapture`
//! to see the measured numbers.
#![cfg(feature = "std")]

use std::collections::HashMap;
use std::path::PathBuf;

use lb_common::flow::{flow_hash, slot, wire_addr_v4, wire_port, FlowKey};
use lb_common::maglev::{
    build, Backend, MaglevError, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, MIN_TABLE_SIZE, NO_BACKEND,
    REMOVAL_DISRUPTION_BOUND,
};

const M: u32 = DEFAULT_TABLE_SIZE;

/// Identity bytes of backend `n` (1-based): IPv4 10.0.x.y, port 80, as the
/// 4 address octets followed by the port in network order.
fn key(n: u32) -> Vec<u8> {
    let [_, _, hi, lo] = n.to_be_bytes();
    vec![10, 0, hi, lo, 0, 80]
}

struct Set {
    keys: Vec<Vec<u8>>,
    weights: Vec<u32>,
}

impl Set {
    /// Backends 1..=weights.len(), backend n having id n-1.
    fn new(weights: &[u32]) -> Set {
        Set {
            keys: (1..=weights.len() as u32).map(key).collect(),
            weights: weights.to_vec(),
        }
    }

    fn backends(&self) -> Vec<Backend<'_>> {
        self.keys
            .iter()
            .zip(&self.weights)
            .enumerate()
            .map(|(i, (k, &w))| Backend {
                id: i as u32,
                key: k,
                weight: w,
            })
            .collect()
    }
}

fn counts(table: &[u32]) -> HashMap<u32, u64> {
    let mut c = HashMap::new();
    for &id in table {
        *c.entry(id).or_insert(0) += 1;
    }
    c
}

/// (a) Every backend gets ⌊t⌋ or ⌈t⌉ slots, t = m·w/Σw; hence the relative
/// deviation from its weight share is < 1/t, ≤ 1 % when t ≥ 100.
#[test]
fn shares_follow_weights() {
    let sets: Vec<(&str, Vec<u32>)> = vec![
        ("equal N=3", vec![1; 3]),
        ("equal N=10", vec![1; 10]),
        ("equal N=100", vec![1; 100]),
        ("weights 1,2,3,4", vec![1, 2, 3, 4]),
        ("weights 1,1,2,1,3", vec![1, 1, 2, 1, 3]),
        ("weights 0,1,2,3", vec![0, 1, 2, 3]),
        ("weights 100,1,1,1", vec![100, 1, 1, 1]),
        ("weights 1..=20", (1..=20).collect()),
        ("big weights", vec![u32::MAX, u32::MAX - 1, 1 << 31, 12345]),
    ];
    for (name, weights) in sets {
        let set = Set::new(&weights);
        let table = build(&set.backends(), M).unwrap();
        assert_eq!(table.len(), M as usize);
        let c = counts(&table);
        assert!(!c.contains_key(&NO_BACKEND), "{name}: empty slot");
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut worst_abs: f64 = 0.0;
        let mut worst_rel: f64 = 0.0;
        for (i, &w) in weights.iter().enumerate() {
            let got = c.get(&(i as u32)).copied().unwrap_or(0);
            if w == 0 {
                assert_eq!(got, 0, "{name}: weight-0 backend {i} got slots");
                continue;
            }
            let target = f64::from(M) * f64::from(w) / total;
            let dev = got as f64 - target;
            assert!(
                got == target.floor() as u64 || got == target.ceil() as u64,
                "{name}: backend {i} got {got}, target {target}"
            );
            let rel = dev.abs() / target;
            worst_abs = worst_abs.max(dev.abs());
            if target >= 100.0 {
                assert!(rel <= 0.01, "{name}: backend {i} rel dev {rel}");
                worst_rel = worst_rel.max(rel);
            }
        }
        println!(
            "share {name:>20}: worst |count - target| = {worst_abs:.3} slots, \
             worst relative deviation (targets >= 100 slots) = {:.5} %",
            worst_rel * 100.0
        );
    }
}

/// Fraction of the slots that do not belong to `removed` in `old` whose
/// owner differs in `new`.
fn others_moved(old: &[u32], new: &[u32], removed: u32) -> f64 {
    let mut kept = 0u64;
    let mut moved = 0u64;
    for (&o, &n) in old.iter().zip(new) {
        assert_ne!(n, removed);
        assert_ne!(n, NO_BACKEND);
        if o != removed {
            kept += 1;
            if o != n {
                moved += 1;
            }
        }
    }
    moved as f64 / kept as f64
}

/// Removes each backend in turn; returns (worst, mean) of `others_moved`.
fn removal_disruption(weights: &[u32]) -> (f64, f64) {
    let set = Set::new(weights);
    let all = set.backends();
    let old = build(&all, M).unwrap();
    let mut worst: f64 = 0.0;
    let mut sum = 0.0;
    for r in 0..all.len() {
        let rest: Vec<Backend<'_>> = all.iter().copied().filter(|b| b.id != r as u32).collect();
        let new = build(&rest, M).unwrap();
        let f = others_moved(&old, &new, r as u32);
        worst = worst.max(f);
        sum += f;
    }
    (worst, sum / all.len() as f64)
}

/// (b) Removing one backend moves its own slots and only a small fraction of
/// the others' (bound: `REMOVAL_DISRUPTION_BOUND`, measured numbers in the
/// `maglev` module documentation).
#[test]
fn removal_disrupts_little() {
    for n in [5usize, 10, 50] {
        let (worst, mean) = removal_disruption(&vec![1; n]);
        println!(
            "removal, equal weights N={n:>2}: others' slots moved: worst {:.3} %, mean {:.3} %",
            worst * 100.0,
            mean * 100.0
        );
        assert!(
            worst <= REMOVAL_DISRUPTION_BOUND,
            "N={n}: {worst} > {REMOVAL_DISRUPTION_BOUND}"
        );
    }
    for weights in [vec![1, 1, 2, 1, 3], (1..=10).collect::<Vec<u32>>()] {
        let (worst, mean) = removal_disruption(&weights);
        println!(
            "removal, weights {weights:?}: others' slots moved: worst {:.3} %, mean {:.3} %",
            worst * 100.0,
            mean * 100.0
        );
        assert!(worst <= REMOVAL_DISRUPTION_BOUND, "{weights:?}: {worst}");
    }
}

/// A fixed pseudo-random permutation (LCG-driven Fisher-Yates).
fn shuffled<T: Copy>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut s = seed;
    for i in (1..out.len()).rev() {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((s >> 33) % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

/// (c) The table depends on the set of backends, not on their order; weight-0
/// backends change nothing.
#[test]
fn deterministic_regardless_of_order() {
    let set = Set::new(&(1..=30).map(|i| i % 4).collect::<Vec<u32>>());
    let all = set.backends();
    let reference = build(&all, M).unwrap();
    let mut orders = vec![all.iter().rev().copied().collect::<Vec<_>>()];
    let mut rotated = all.clone();
    rotated.rotate_left(7);
    orders.push(rotated);
    for seed in 1..=5 {
        orders.push(shuffled(&all, seed));
    }
    for (i, o) in orders.iter().enumerate() {
        assert_eq!(build(o, M).unwrap(), reference, "order {i}");
    }
    let positive: Vec<Backend<'_>> = all.iter().copied().filter(|b| b.weight > 0).collect();
    assert!(positive.len() < all.len());
    assert_eq!(build(&positive, M).unwrap(), reference);
}

fn fnv1a64(table: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in table {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[test]
fn fnv1a64_reference() {
    // FNV-1a 64 of the empty input and of "a" (published vectors), and of
    // the u32 0x61 as little-endian bytes "a\0\0\0".
    assert_eq!(fnv1a64(&[]), 0xcbf2_9ce4_8422_2325);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    h ^= 0x61;
    h = h.wrapping_mul(0x0000_0100_0000_01b3);
    assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/maglev_5_backends_m65537.txt")
}

/// The golden backend set: ids 0..5, identities 10.0.0.1..5 port 80 (6
/// bytes: address octets, port big-endian), weights 1,1,2,1,3, m = 65537.
fn golden_table() -> Vec<u32> {
    build(&Set::new(&[1, 1, 2, 1, 3]).backends(), M).unwrap()
}

fn render_golden(table: &[u32]) -> String {
    let first: Vec<String> = table[..64].iter().map(|v| v.to_string()).collect();
    format!(
        "# xlb Maglev golden table (lb-common/tests/maglev.rs, golden_vector).\n\
         # Backends: id i-1 = 10.0.0.i port 80 for i in 1..=5, identity bytes\n\
         # [10, 0, 0, i, 0, 80], weights 1,1,2,1,3; table size m = 65537.\n\
         # fnv1a64: FNV-1a 64 of the whole table as little-endian u32 bytes.\n\
         # Regenerate only on a deliberate algorithm change:\n\
         #   XLB_BLESS_GOLDEN=1 cargo test -p lb-common --features std --test maglev\n\
         m = {}\n\
         fnv1a64 = {:#018x}\n\
         first64 = {}\n",
        table.len(),
        fnv1a64(table),
        first.join(" ")
    )
}

/// (c) A committed golden vector: first 64 entries and a digest of the whole
/// table, so any change in hashing or filling is caught.
#[test]
fn golden_vector() {
    let table = golden_table();
    let path = golden_path();
    if std::env::var_os("XLB_BLESS_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, render_golden(&table)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate it with XLB_BLESS_GOLDEN=1)",
            path.display()
        )
    });
    let field = |name: &str| -> &str {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix('='))
            .unwrap_or_else(|| panic!("golden file lacks `{name} =`"))
            .trim()
    };
    assert_eq!(field("m").parse::<usize>().unwrap(), table.len());
    let want_digest = u64::from_str_radix(field("fnv1a64").trim_start_matches("0x"), 16).unwrap();
    let want_first: Vec<u32> = field("first64")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(want_first.len(), 64);
    assert_eq!(&table[..64], &want_first[..], "first 64 entries");
    assert_eq!(fnv1a64(&table), want_digest, "digest of the whole table");
}

/// (d) Table sizes and backend sets that are refused.
#[test]
fn errors() {
    let set = Set::new(&[1, 1, 1]);
    let b = set.backends();
    // Compare errors only: a wrongly accepted size would print a whole table.
    let err = |b: &[Backend<'_>], m: u32| build(b, m).err();
    for m in [0, 1, 4, 9, 561, 65535, 65536, 65541] {
        assert_eq!(err(&b, m), Some(MaglevError::NotPrime { m }), "m={m}");
    }
    for m in [2, 3, 97] {
        assert_eq!(
            err(&b, m),
            Some(MaglevError::TooSmall {
                m,
                min: MIN_TABLE_SIZE
            })
        );
    }
    for m in [16_777_259, u32::MAX] {
        assert!(m > MAX_TABLE_SIZE);
        assert_eq!(err(&b, m), Some(MaglevError::TooLarge { m }));
    }
    // The size is checked even when there is nothing to place.
    assert_eq!(err(&[], 65536), Some(MaglevError::NotPrime { m: 65536 }));
    // More positive-weight backends than slots.
    let many = Set::new(&[1; 102]);
    assert_eq!(
        err(&many.backends(), 101),
        Some(MaglevError::TooSmall { m: 101, min: 102 })
    );
    // Bad backend sets.
    let k1 = key(1);
    let k2 = key(2);
    let reserved = [Backend {
        id: NO_BACKEND,
        key: &k1,
        weight: 1,
    }];
    assert_eq!(err(&reserved, M), Some(MaglevError::ReservedId));
    let dup_id = [
        Backend {
            id: 7,
            key: &k1,
            weight: 1,
        },
        Backend {
            id: 7,
            key: &k2,
            weight: 0,
        },
    ];
    assert_eq!(err(&dup_id, M), Some(MaglevError::DuplicateId { id: 7 }));
    let dup_key = [
        Backend {
            id: 9,
            key: &k1,
            weight: 1,
        },
        Backend {
            id: 3,
            key: &k1,
            weight: 2,
        },
    ];
    assert_eq!(
        err(&dup_key, M),
        Some(MaglevError::DuplicateKey { id: 3, other: 9 })
    );
    // Errors print something useful.
    assert!(MaglevError::NotPrime { m: 4 }
        .to_string()
        .contains("not prime"));
}

#[test]
fn empty_and_all_zero_give_no_backend() {
    assert_eq!(build(&[], M).unwrap(), vec![NO_BACKEND; M as usize]);
    let zero = Set::new(&[0, 0, 0]);
    assert_eq!(
        build(&zero.backends(), M).unwrap(),
        vec![NO_BACKEND; M as usize]
    );
    // Smallest accepted size with one backend: every slot is it.
    let one = Set::new(&[5]);
    assert_eq!(
        build(&one.backends(), MIN_TABLE_SIZE).unwrap(),
        vec![0; MIN_TABLE_SIZE as usize]
    );
}

/// End to end through the flow hash: flows spread over backends in
/// proportion to their slots (weights 1,1,2,1,3 → 1/8,1/8,2/8,1/8,3/8).
#[test]
fn flows_follow_weights() {
    let table = golden_table();
    let weights = [1.0, 1.0, 2.0, 1.0, 3.0];
    let mut hits = [0u64; 5];
    let flows = 200_000u32;
    for i in 0..flows {
        let k = FlowKey::v4(
            wire_addr_v4([192, 168, (i >> 8) as u8, i as u8]),
            wire_addr_v4([10, 1, 0, 1]),
            wire_port(1024 + (i >> 16) as u16 * 7919),
            wire_port(443),
            6,
        );
        hits[table[slot(flow_hash(&k), M) as usize] as usize] += 1;
    }
    for (i, &h) in hits.iter().enumerate() {
        let share = h as f64 / f64::from(flows);
        let want = weights[i] / 8.0;
        println!("flows to backend {i}: {share:.4} (weight share {want:.4})");
        // 200k samples: one standard deviation is ≤ 0.0011; allow ~5σ.
        assert!(
            (share - want).abs() < 0.006,
            "backend {i}: {share} vs {want}"
        );
    }
}
