//! Adopting the pins a previous run left: each pinned map is checked
//! against the map the object being loaded declares (type, key and value
//! sizes, capacity, flags) before the new program is given it, so a binary
//! whose map layout changed never reads old entries as something else.
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;

/// The shape of a map: what must agree for a program to share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// `BPF_F_*` creation flags (e.g. `BPF_F_NO_PREALLOC`).
    pub flags: u32,
}

/// A pinned map that the program being loaded cannot share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pinned map {map} at {path} does not fit this xlb: {field} is {pinned}, this build needs {wanted}\n  \
     the pins are from another xlb version or another map size setting; keep the old \
     binary and config, or run `xlb unpin --instance {instance}` (which detaches XDP and \
     drops the connection table, deny list and counters) and start again",
    path = path.display()
)]
pub struct ShapeMismatch {
    pub map: String,
    pub path: PathBuf,
    pub instance: String,
    /// Which property differs: `type`, `key size`, ….
    pub field: &'static str,
    pub pinned: u32,
    pub wanted: u32,
}

/// The first property in which `pinned` differs from `wanted`.
pub fn first_difference(pinned: &MapShape, wanted: &MapShape) -> Option<(&'static str, u32, u32)> {
    [
        ("type", pinned.map_type, wanted.map_type),
        ("key size", pinned.key_size, wanted.key_size),
        ("value size", pinned.value_size, wanted.value_size),
        ("max_entries", pinned.max_entries, wanted.max_entries),
        ("flags", pinned.flags, wanted.flags),
    ]
    .into_iter()
    .find(|(_, p, w)| p != w)
}

/// The shape of the map pinned at `path`.
pub fn pinned_shape(path: &Path) -> Result<MapShape, aya::maps::MapError> {
    let info = MapInfo::from_pin(path)?;
    Ok(MapShape {
        map_type: info.map_type()? as isize as u32,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// The shapes the object `elf` declares, with `max_entries` replaced where
/// the loader overrides it (the config's sizes).
pub fn declared_shapes(
    elf: &[u8],
    overrides: &[(&str, u32)],
) -> Result<std::collections::HashMap<String, MapShape>, aya_obj::ParseError> {
    let obj = aya_obj::Object::parse(elf)?;
    Ok(obj
        .maps
        .iter()
        .map(|(name, m)| {
            let max_entries = overrides
                .iter()
                .find(|(n, _)| n == name)
                .map_or(m.max_entries(), |(_, v)| *v);
            (
                name.clone(),
                MapShape {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries,
                    flags: m.map_flags(),
                },
            )
        })
        .collect())
}

/// The pin of the XDP link on `iface`, beside the maps.
pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// Pins whose name starts with this are XDP links, not maps.
pub const LINK_PREFIX: &str = "link_xdp_";

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> MapShape {
        MapShape {
            map_type: 1,
            key_size: 20,
            value_size: 16,
            max_entries: 512,
            flags: 1,
        }
    }

    #[test]
    fn equal_shapes_agree() {
        assert_eq!(first_difference(&shape(), &shape()), None);
    }

    #[test]
    fn a_different_capacity_or_value_size_is_named() {
        let mut s = shape();
        s.max_entries = 1024;
        assert_eq!(
            first_difference(&s, &shape()),
            Some(("max_entries", 1024, 512))
        );
        let mut s = shape();
        s.value_size = 24;
        assert_eq!(first_difference(&s, &shape()), Some(("value size", 24, 16)));
    }

    #[test]
    fn the_object_declares_every_pinned_map() {
        let shapes = declared_shapes(
            crate::ebpf_object::EBPF_OBJECT,
            &[(lb_common::maps::VIPS, 7)],
        )
        .unwrap();
        for name in lb_common::maps::PINNED {
            assert!(shapes.contains_key(*name), "{name} not declared");
        }
        assert_eq!(shapes[lb_common::maps::VIPS].max_entries, 7);
    }

    #[test]
    fn the_refusal_says_the_way_out() {
        let e = ShapeMismatch {
            map: "XLB_VIPS".into(),
            path: "/sys/fs/bpf/xlb/a/XLB_VIPS".into(),
            instance: "a".into(),
            field: "value size",
            pinned: 12,
            wanted: 16,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("value size is 12, this build needs 16"),
            "{msg}"
        );
        assert!(msg.contains("xlb unpin --instance a"), "{msg}");
    }
}
