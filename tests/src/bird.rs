//! Real BIRD 2 daemons in test namespaces, configured from the templates in
//! `scripts/bird/` (the LB node's through `scripts/install-anycast-node.sh`,
//! as an operator would), stopped on drop.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{netns::Netns, process::ChildGuard};

/// The repository's `scripts/` folder.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// A running `bird -f` inside a namespace.
#[derive(Debug)]
pub struct Bird {
    child: ChildGuard,
    socket: PathBuf,
    log: PathBuf,
}

impl Bird {
    /// Starts BIRD on `config` inside `ns`, with its control socket and log
    /// in `dir`; waits until `birdc` answers.
    pub fn start(ns: &Netns, config: &Path, dir: &Path) -> anyhow::Result<Bird> {
        let socket = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        let out = std::fs::File::create(&log)?;
        let child = ns
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(config)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting bird (Debian package bird2)")?;
        let bird = Bird {
            child: ChildGuard::new(child),
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird.birdc(&["show", "status"]).is_err() {
            if Instant::now() > deadline {
                bail!("bird did not answer; its log:\n{}", bird.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(bird)
    }

    /// The control socket (for xlb's `anycast.bird_socket`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `birdc -s SOCKET ARGS…`'s output.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("birdc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until BGP protocol `name` is Established.
    pub fn wait_established(&self, name: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.birdc(&["show", "protocols", name])?;
            if s.contains("Established") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("BGP {name} not established: {s}\nlog:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// BIRD's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops BIRD.
    pub fn stop(mut self) {
        let _ = self.child.terminate(Duration::from_secs(5));
    }
}

/// Renders `scripts/bird/router.conf.in` with one eBGP session per
/// `(name, neighbour address, neighbour AS)`.
pub fn router_config(
    router_id: &str,
    local_as: u32,
    peers: &[(&str, &str, u32)],
) -> anyhow::Result<String> {
    let dir = scripts_dir().join("bird");
    let main = std::fs::read_to_string(dir.join("router.conf.in"))?;
    let peer = std::fs::read_to_string(dir.join("router-peer.conf.in"))?;
    let peers: String = peers
        .iter()
        .map(|(name, addr, asn)| {
            peer.replace("@NAME@", name)
                .replace("@LOCAL_AS@", &local_as.to_string())
                .replace("@PEER_ADDR@", addr)
                .replace("@PEER_AS@", &asn.to_string())
        })
        .collect();
    Ok(main
        .replace("@ROUTER_ID@", router_id)
        .replace("@PEERS@", &peers))
}

/// Runs `scripts/install-anycast-node.sh --root ROOT …` and returns the
/// BIRD config and the routes file it wrote.
pub fn install_node(
    root: &Path,
    router_id: &str,
    local_as: u32,
    peer: &str,
    peer_as: u32,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = Command::new("sh")
        .arg(scripts_dir().join("install-anycast-node.sh"))
        .arg("--root")
        .arg(root)
        .args(["--router-id", router_id])
        .args(["--local-as", &local_as.to_string()])
        .args(["--peer", peer])
        .args(["--peer-as", &peer_as.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "install-anycast-node.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        root.join("etc/bird/bird.conf"),
        root.join("etc/bird/xlb-routes.conf"),
    ))
}
