//! `cargo xtask demo`: build xlb, make a two-namespace topology, attach xlb
//! to it, send real TCP and UDP (v4 and v6) traffic, and print what xlb saw.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;
use xlb_tests::{
    netns::{veth, Netns},
    privilege::privileged,
    xlb::Xlb,
};

use crate::{build, deps, exec};

const CONNECTIONS: usize = 20;
const DATAGRAMS: usize = 100;

pub fn run() -> anyhow::Result<()> {
    deps::ensure_apt(deps::TEST_PACKAGES)?;
    let bin = build::all(false)?;
    if !privileged("cargo xtask demo") {
        anyhow::bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    std::env::set_var("XLB_BIN", &bin);
    println!("\n== xlb demo ==========================================================");
    println!("topology: [client ns] veth0 <--> veth0 [lb ns, xlb attached with XDP]");
    let client = Netns::new("demo-client")?;
    let lb = Netns::new("demo-lb")?;
    veth(&client, "veth0", &lb, "veth0")?;
    client.addr("veth0", "192.0.2.1/24")?;
    lb.addr("veth0", "192.0.2.2/24")?;
    client.addr("veth0", "2001:db8::1/64")?;
    lb.addr("veth0", "2001:db8::2/64")?;

    let mut xlb = Xlb::start(&lb, "interfaces:\n  - name: veth0\n    xdp_mode: native\n")?;
    println!(
        "xlb started in {} (pid {}), maps pinned in {}",
        lb.name(),
        xlb.pid(),
        xlb.pin_dir.display()
    );

    // A small echo service inside the lb namespace, so the TCP traffic is
    // whole real connections.
    let listeners = lb.enter(|| -> anyhow::Result<_> {
        Ok((
            TcpListener::bind("192.0.2.2:7000")?,
            TcpListener::bind("[2001:db8::2]:7000")?,
        ))
    })??;
    for l in [listeners.0, listeners.1] {
        std::thread::spawn(move || {
            for mut s in l.incoming().map_while(Result::ok) {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    let _ = s.write_all(&buf[..n]);
                }
            }
        });
    }

    let echoed = client.enter(|| -> anyhow::Result<usize> {
        let mut ok = 0;
        for i in 0..CONNECTIONS {
            let addr = if i % 2 == 0 {
                "192.0.2.2:7000"
            } else {
                "[2001:db8::2]:7000"
            };
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"hello xlb")?;
            let mut buf = [0u8; 9];
            s.read_exact(&mut buf)?;
            ok += usize::from(&buf == b"hello xlb");
        }
        let u4 = UdpSocket::bind("192.0.2.1:0")?;
        let u6 = UdpSocket::bind("[2001:db8::1]:0")?;
        for i in 0..DATAGRAMS {
            if i % 2 == 0 {
                u4.send_to(b"datagram", "192.0.2.2:9")?;
            } else {
                u6.send_to(b"datagram", "[2001:db8::2]:9")?;
            }
        }
        Ok(ok)
    })??;
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "traffic: {CONNECTIONS} TCP connections (half v4, half v6), {echoed} echoed back; \
         {DATAGRAMS} UDP datagrams (half v4, half v6)"
    );
    println!(
        "\nwhat the XDP program counted on the lb side (`xlb stats --instance {}`):",
        xlb.instance()
    );
    let table = exec::output(std::process::Command::new(&bin).args([
        "stats",
        "--instance",
        xlb.instance(),
    ]))?;
    print!("{table}");
    let status = xlb.stop().context("stopping xlb")?;
    println!("\nxlb stopped ({status}); XDP detached, pins removed; namespaces are deleted now.");
    println!("=======================================================================");
    Ok(())
}
