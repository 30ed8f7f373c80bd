//! systemd integration, as far as a host without systemd as PID 1 allows:
//! the shipped unit (`scripts/xlb.service`) passes `systemd-analyze
//! verify` (with a control: a broken copy does not), and xlb speaks the
//! `Type=notify` protocol over `NOTIFY_SOCKET` as systemd would see it —
//! READY with its MAINPID at start, RELOADING when the unit's own
//! `ExecReload` line runs, the successor's MAINPID and READY after the
//! handover (the old process then exits), STOPPING on stop.
use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use xlb_tests::{
    bird::scripts_dir, netns::Netns, privilege::privileged, process::pid_alive, xlb::Xlb,
};

/// `systemd-analyze verify` on `unit`: its complaints, minus the one about
/// the binary not being installed on this test host.
fn verify(unit: &Path) -> Vec<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("Command /usr/local/bin/xlb is not executable"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_unit_file_verifies_and_a_broken_one_does_not() {
    let unit = scripts_dir().join("xlb.service");
    let complaints = verify(&unit);
    assert!(complaints.is_empty(), "systemd-analyze: {complaints:?}");
    // Control: the same check catches a mistake.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("xlb.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&broken, text.replace("NotifyAccess=all", "NotifyAcces=all")).unwrap();
    assert!(!verify(&broken).is_empty(), "a misspelt key went unnoticed");
}

/// The next notification; panics after 30 s.
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Notifications until one contains `want`.
fn until(sock: &UnixDatagram, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no notification with {want}");
        let m = next(sock);
        if m.contains(want) {
            return m;
        }
    }
}

#[test]
fn notify_ready_mainpid_handover_and_stop() {
    if !privileged("systemd notify") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // SAFETY (edition 2021: set_var is safe): the only test in this binary
    // that starts xlb; the child inherits the variable as under systemd.
    std::env::set_var("NOTIFY_SOCKET", &path);
    let ns = Netns::new("sysd").unwrap();
    let mut xlb = Xlb::start(&ns, "").expect("xlb starts");
    let first = xlb.pid();
    let m = until(&sock, "READY=1");
    assert!(m.contains(&format!("MAINPID={first}")), "{m}");

    // `systemctl reload` runs the unit's ExecReload with $MAINPID.
    let unit = std::fs::read_to_string(scripts_dir().join("xlb.service")).unwrap();
    let reload = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("the unit has ExecReload");
    let reload = reload.replace("$MAINPID", &first.to_string());
    // Read the successor's ready line while the reload runs.
    let status = Command::new("sh").arg("-c").arg(&reload).status().unwrap();
    assert!(status.success(), "{reload}");
    let m = until(&sock, "RELOADING=1");
    println!("old process: {m:?}");
    let m = until(&sock, "READY=1");
    let second = m
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse::<u32>().ok())
        .expect("the successor names itself the main PID");
    assert_ne!(second, first, "{m}");
    xlb.adopt_successor(second);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !xlb.first_exited() {
        assert!(
            Instant::now() < deadline,
            "the old process did not exit after the handover"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pid_alive(second), "the successor runs");

    xlb.stop().expect("stop");
    until(&sock, "STOPPING=1");
}
