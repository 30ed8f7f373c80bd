//! One `xlb run` per instance name on a host: an exclusive `flock` on
//! `/run/xlb/<instance>.lock`, removed again on a clean exit. A crashed
//! run leaves the file behind unlocked (the kernel drops the lock with the
//! process), and the next run takes it over.
use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use super::DatapathError;

/// Where instance locks live; outside bpffs, which holds no regular files.
pub const LOCK_DIR: &str = "/run/xlb";

/// How often taking the lock may find its file replaced under it before
/// giving up (each time another process removed or recreated it).
const RETRIES: usize = 8;

/// The held lock; dropping it removes the file, then releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl InstanceLock {
    /// Takes the lock of `instance`, or says that another run holds it.
    ///
    /// Because a clean exit removes the file, a second process may have
    /// opened the old file just before it was unlinked and then lock that
    /// orphan while a third locks a new file at the same path. So after
    /// locking, the file must still be the one at the path (same inode);
    /// otherwise it is opened again.
    pub fn take(instance: &str) -> Result<InstanceLock, DatapathError> {
        let io = |what: String| move |source| DatapathError::Io { what, source };
        std::fs::create_dir_all(LOCK_DIR).map_err(io(format!("creating {LOCK_DIR}")))?;
        let path = Path::new(LOCK_DIR).join(format!("{instance}.lock"));
        for _ in 0..RETRIES {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
                DatapathError::InstanceBusy {
                    instance: instance.to_string(),
                    lock: path.clone(),
                }
            })?;
            let held = lock
                .metadata()
                .map_err(io(format!("stat {}", path.display())))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(InstanceLock { path, _lock: lock });
                }
                // Removed or replaced by the run that just exited: again.
                _ => continue,
            }
        }
        Err(DatapathError::InstanceBusy {
            instance: instance.to_string(),
            lock: path,
        })
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock: a run that opens the path
        // from now on gets a new file, and one that opened the old file in
        // the meantime finds it unlinked and retries (see `take`).
        let _ = std::fs::remove_file(&self.path);
    }
}
