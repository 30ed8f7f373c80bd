//! Starting the successor of this process for a restart or an upgrade
//! (SIGUSR2, `systemctl reload`): the same command line plus `--takeover`,
//! from the binary's path as it was at start, so a binary replaced on disk
//! (an upgrade) is the one that runs.
use std::{path::PathBuf, process::Command};

/// How this process was started, recorded at start (before an upgrade
/// replaces the file `/proc/self/exe` points to).
#[derive(Debug, Clone)]
pub struct Origin {
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl Origin {
    /// Records the current executable and arguments.
    pub fn current() -> std::io::Result<Origin> {
        let exe = std::env::current_exe()?;
        // After the file is replaced, Linux reports the old path with
        // " (deleted)" appended; the path itself names the new binary.
        let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(s) => PathBuf::from(s),
            None => exe,
        };
        Ok(Origin {
            exe,
            args: std::env::args_os().skip(1).collect(),
        })
    }

    /// The successor's command: the same arguments, with `--takeover`
    /// added once.
    pub fn successor_command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args);
        if !self.args.iter().any(|a| a == "--takeover") {
            cmd.arg("--takeover");
        }
        cmd
    }

    /// Starts the successor. It inherits stdout/stderr (and so the
    /// journal); a thread reaps it should it exit while this process lives.
    pub fn spawn_successor(&self) -> std::io::Result<u32> {
        let mut child = self.successor_command().spawn()?;
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_successor_takes_over_once() {
        let o = Origin {
            exe: "/usr/bin/xlb".into(),
            args: vec!["run".into(), "-c".into(), "/etc/xlb.yaml".into()],
        };
        let cmd = o.successor_command();
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["run", "-c", "/etc/xlb.yaml", "--takeover"]);
        let again = Origin {
            exe: o.exe.clone(),
            args: args.iter().map(|a| a.to_os_string()).collect(),
        };
        assert_eq!(again.successor_command().get_args().count(), 4);
    }
}
