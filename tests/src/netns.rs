//! Network namespaces that delete themselves, and veth pairs between them.
use std::{fs::File, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};
use nix::sched::{setns, CloneFlags};

use crate::names;

/// A named network namespace (`ip netns add`), deleted on drop together with
/// its links and any process still inside it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `xlbt-<role>-<pid>-<n>` with its loopback up.
    pub fn new(role: &str) -> anyhow::Result<Netns> {
        let name = names::unique(role);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> ARGS…` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside this namespace.
    ///
    /// Uses `nsenter --net` rather than `ip netns exec`: the latter mounts a
    /// private /sys, which hides the host's bpffs and so xlb's pinned maps.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created
    /// there stay in this namespace wherever they are used afterwards.
    pub fn enter<F, R>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns {} panicked", self.name))?
        })
    }

    /// Starts `f` on a detached thread that has entered this namespace
    /// (for servers and load loops that run while the test goes on).
    pub fn spawn<F>(&self, f: F) -> std::thread::JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let file = File::open(self.path()).expect("open the namespace");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// Sets a sysctl inside this namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))?;
        Ok(())
    }

    /// Adds an address; IPv6 addresses skip duplicate address detection so
    /// they are usable at once.
    pub fn addr(&self, dev: &str, cidr: &str) -> anyhow::Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args)?;
        Ok(())
    }

    /// Brings a link up.
    pub fn up(&self, dev: &str) -> anyhow::Result<()> {
        self.ip(&["link", "set", dev, "up"])?;
        Ok(())
    }

    /// The MAC address of a link in this namespace.
    pub fn mac(&self, dev: &str) -> anyhow::Result<[u8; 6]> {
        let json = self.ip(&["-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let s = v[0]["address"]
            .as_str()
            .with_context(|| format!("no address for {dev} in {json}"))?;
        let mut mac = [0u8; 6];
        for (i, part) in s.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }

    /// The interface index of a link in this namespace.
    pub fn ifindex(&self, dev: &str) -> anyhow::Result<u32> {
        let json = self.ip(&["-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        v[0]["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .with_context(|| format!("no ifindex for {dev}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside would keep the namespace alive.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> anyhow::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ])?;
    a.up(a_dev)?;
    b.up(b_dev)?;
    Ok(())
}

/// Names of the namespaces that currently exist.
pub fn list() -> anyhow::Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
