//! bpffs: making sure it is mounted, and where an instance pins its maps.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// `BPF_FS_MAGIC` from include/uapi/linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs at `root` unless a bpffs is already mounted there.
///
/// Hosts without systemd (and fresh `ip netns exec` mounts) often lack it,
/// and pinning would fail with a confusing ENOENT/EPERM.
pub fn ensure_bpffs(root: &Path) -> anyhow::Result<()> {
    if is_bpffs(root)? {
        return Ok(());
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs at {}", root.display()))?;
    log::info!("mounted bpffs at {}", root.display());
    Ok(())
}

fn is_bpffs(path: &Path) -> anyhow::Result<bool> {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => Ok(st.filesystem_type().0 == BPF_FS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("statfs {}", path.display())),
    }
}

/// The folder an instance pins its maps in: `<bpffs>/xlb/<instance>`.
pub fn instance_pin_dir(bpffs: &Path, instance: &str) -> PathBuf {
    bpffs.join("xlb").join(instance)
}
