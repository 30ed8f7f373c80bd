//! Upgrading over a pin directory written by a version that kept IPv4 flows
//! in the one 40-byte-key `CONNTRACK` table: the new version adopts that
//! table as its IPv6 table and moves the IPv4 flows into `CONNTRACK_V4`, so
//! an established IPv4 connection keeps its backend across the upgrade.
//!
//! The "old" pin directory is made the way it looked: a real load pins
//! every map, the test writes IPv4 and IPv6 flows into `CONNTRACK` and
//! unpins `CONNTRACK_V4` (the old version had no such map). The control
//! loads the same flows over a directory that still has `CONNTRACK_V4`
//! (a new-layout directory): nothing moves, so the check below can fail.

use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{
    conntrack::{ConnValue, FlowKeyV4},
    flow::FlowKey,
    maps,
};
use xlb::{
    config::Config,
    datapath::{unpin_instance, Datapath},
};

const BPFFS: &str = "/sys/fs/bpf";

/// Removes the instance's pins and lock however the test ends.
struct Instance(String);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = unpin_instance(Path::new(BPFFS), &self.0);
    }
}

fn config(instance: &str) -> Config {
    let text = format!(
        "instance: {instance}\ninterfaces:\n  - name: lo\nl4:\n  conntrack_size: 1024\n  max_vips: 4\n  max_backends: 16\n  vips: []\n"
    );
    Config::parse(&text, Path::new("conntrack_upgrade.yaml")).expect("test config parses")
}

fn open<K: aya::Pod, V: aya::Pod>(pin: &Path) -> BpfHashMap<MapData, K, V> {
    let data = MapData::from_pin(pin).unwrap_or_else(|e| panic!("opening {}: {e}", pin.display()));
    BpfHashMap::try_from(Map::LruHashMap(data)).expect("an LRU hash map")
}

fn v4_flows() -> Vec<(FlowKey, ConnValue)> {
    (0..40u32)
        .map(|i| {
            let key = FlowKey::v4(0x0a00_0001 + i, 0xcb00_710a, 20_000 + i as u16, 80, 6);
            let value = ConnValue {
                backend: i % 5,
                vip: 1,
                hash: 0x1000 + i,
            };
            (key, value)
        })
        .collect()
}

fn v6_flows() -> Vec<(FlowKey, ConnValue)> {
    (0..10u32)
        .map(|i| {
            let key = FlowKey::v6(
                [0x2001_0db8, 0, 0, 1 + i],
                [0x2001_0db8, 0, 0, 0x100],
                30_000 + i as u16,
                443,
                6,
            );
            let value = ConnValue {
                backend: 7,
                vip: 2,
                hash: 0x2000 + i,
            };
            (key, value)
        })
        .collect()
}

/// The pinned `CONNTRACK` (IPv6 and old-layout flows) and `CONNTRACK_V4`
/// entries.
type Tables = (Vec<(FlowKey, ConnValue)>, Vec<(FlowKeyV4, ConnValue)>);

/// Loads once to pin every map, writes the old-version flows into
/// `CONNTRACK`, optionally unpins `CONNTRACK_V4`, loads again; returns the
/// pin directory's two tables as read after the second load.
fn upgrade(instance: &str, old_layout: bool) -> Tables {
    let cfg = config(instance);
    let pin_dir: PathBuf = {
        let dp = Datapath::load(&cfg).expect("first load");
        dp.pin_dir().to_path_buf()
        // Dropped without detaching: the pins stay, as after a handover.
    };
    {
        let mut ct = open::<FlowKey, ConnValue>(&pin_dir.join(maps::CONNTRACK));
        for (k, v) in v4_flows().into_iter().chain(v6_flows()) {
            ct.insert(k, v, 0).expect("writing an old-version flow");
        }
    }
    if old_layout {
        std::fs::remove_file(pin_dir.join(maps::CONNTRACK_V4)).expect("unpinning CONNTRACK_V4");
    }
    let dp = Datapath::load(&cfg).expect("second load (the upgrade)");
    assert!(dp.adopted(), "the second load must adopt the pins");
    let ct = open::<FlowKey, ConnValue>(&pin_dir.join(maps::CONNTRACK));
    let ct4 = open::<FlowKeyV4, ConnValue>(&pin_dir.join(maps::CONNTRACK_V4));
    let mut old: Vec<_> = ct.iter().map(|r| r.expect("reading CONNTRACK")).collect();
    let mut new: Vec<_> = ct4
        .iter()
        .map(|r| r.expect("reading CONNTRACK_V4"))
        .collect();
    old.sort_by_key(|(k, _)| k.words());
    new.sort_by_key(|(k, _)| (k.src, k.src_port));
    drop(dp);
    (old, new)
}

#[test]
fn ipv4_flows_of_an_old_connection_table_move_to_their_own_table() {
    if !xlb_tests::privilege::privileged("conntrack_upgrade") {
        return;
    }
    let instance = Instance(format!("ctup{}", std::process::id()));
    let (ct, ct4) = upgrade(&instance.0, true);

    let mut want_v4: Vec<(FlowKeyV4, ConnValue)> = v4_flows()
        .iter()
        .map(|(k, v)| (FlowKeyV4::of(k), *v))
        .collect();
    want_v4.sort_by_key(|(k, _)| (k.src, k.src_port));
    let mut want_v6 = v6_flows();
    want_v6.sort_by_key(|(k, _)| k.words());
    assert_eq!(
        ct4, want_v4,
        "every IPv4 flow, with its backend, in CONNTRACK_V4"
    );
    assert_eq!(ct, want_v6, "only the IPv6 flows left in CONNTRACK");
}

#[test]
fn control_a_new_layout_directory_moves_nothing() {
    if !xlb_tests::privilege::privileged("conntrack_upgrade control") {
        return;
    }
    let instance = Instance(format!("ctupc{}", std::process::id()));
    let (ct, ct4) = upgrade(&instance.0, false);
    assert!(
        ct4.is_empty(),
        "nothing moved into CONNTRACK_V4: {} entries",
        ct4.len()
    );
    assert_eq!(ct.len(), 50, "CONNTRACK kept all it held");
}
