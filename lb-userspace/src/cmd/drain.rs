//! `xlb drain` / `xlb undrain`: set or clear the instance's drain flag and
//! wait until the daemon has told BIRD (it looks at the flag every second).
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::daemon::{anycast_status, drain_flag};

/// How long to wait for the daemon to act on the flag.
const WAIT: Duration = Duration::from_secs(10);

/// Drains (`true`) or undrains the instance and waits for the daemon's
/// status file to agree.
pub fn set(instance: &str, drained: bool) -> anyhow::Result<()> {
    let flag = drain_flag(instance);
    if drained {
        std::fs::create_dir_all("/run/xlb")?;
        std::fs::write(&flag, b"").with_context(|| format!("writing {}", flag.display()))?;
    } else {
        match std::fs::remove_file(&flag) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", flag.display())),
        }
    }
    let status = anycast_status(instance);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(&status) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if v["drained"] == drained {
                    println!("{v}");
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "instance `{instance}` did not act on the drain flag within {WAIT:?} \
                 (is it running, with an `anycast:` section?); the flag is left as asked"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
