//! Writing the routes file and asking BIRD to reconfigure (`birdc`).
use std::{collections::BTreeSet, net::IpAddr, path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::config::lifecycle::AnycastConfig;

use super::prefixes;

/// Keeps BIRD's view of this node's prefixes up to date.
#[derive(Debug)]
pub struct Announcer {
    config: AnycastConfig,
    /// What BIRD was last told (`None`: nothing yet).
    last: Option<BTreeSet<IpAddr>>,
}

impl Announcer {
    /// An announcer for `config`; nothing is written until [`Announcer::set`].
    pub fn new(config: AnycastConfig) -> Announcer {
        Announcer { config, last: None }
    }

    /// The prefixes BIRD was last told to announce.
    pub fn announced(&self) -> Option<&BTreeSet<IpAddr>> {
        self.last.as_ref()
    }

    /// Makes BIRD announce exactly `wanted`; does nothing when that is what
    /// it was last told. Blocking (runs `birdc`): call from a blocking
    /// context or accept a short stall.
    pub fn set(&mut self, wanted: BTreeSet<IpAddr>) -> anyhow::Result<bool> {
        if self.last.as_ref() == Some(&wanted) {
            return Ok(false);
        }
        write_atomically(&self.config.routes_file, &prefixes::render(&wanted))?;
        configure(&self.config)?;
        log::info!("anycast: announcing {:?}", wanted);
        self.last = Some(wanted);
        Ok(true)
    }
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `birdc -s SOCKET configure`; BIRD answers "Reconfigured" (or, while a
/// previous one finishes, "Reconfiguration in progress"); anything else,
/// e.g. a parse error in the file, is an error.
fn configure(c: &AnycastConfig) -> anyhow::Result<()> {
    let out = Command::new(&c.birdc)
        .arg("-s")
        .arg(&c.bird_socket)
        .arg("configure")
        .output()
        .with_context(|| format!("running {}", c.birdc.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains("Reconfigur") {
        return Ok(());
    }
    bail!(
        "birdc configure failed: {}{}",
        text.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
