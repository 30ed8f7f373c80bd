//! Checksum verification with etherparse, independent of the builder and
//! of the model: every IPv4 header checksum, and the ICMP/ICMPv6/TCP/UDP
//! checksums where the L4 header is complete and unfragmented, recursing
//! into IP-in-IP.
use etherparse::{Icmpv4Header, Icmpv6Header, Ipv4Header, Ipv6Header, TcpHeader, UdpHeader};

/// Checks every checksum of `frame` that can be checked; `Err` names the
/// first wrong one.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    if frame.len() < 14 {
        return Ok(());
    }
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
    if et == 0x8100 && frame.len() >= 18 {
        et = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    match et {
        0x0800 | 0x86dd => verify_ip(&frame[l3..]),
        _ => Ok(()),
    }
}

/// Checks only the outermost IPv4 header's checksum (the one header an
/// encapsulating program writes); Ok for IPv6 and non-IP frames.
pub fn verify_outer_ipv4(frame: &[u8]) -> Result<(), String> {
    let mut l3 = 14;
    if frame.len() >= 18 && u16::from_be_bytes([frame[12], frame[13]]) == 0x8100 {
        l3 = 18;
    }
    if frame.len() <= l3 || frame[l3] >> 4 != 4 {
        return Ok(());
    }
    let (h, _) = Ipv4Header::from_slice(&frame[l3..]).map_err(|e| format!("ipv4: {e}"))?;
    let want = h.calc_header_checksum();
    if h.header_checksum != want {
        return Err(format!(
            "outer IPv4 header checksum {:#06x}, should be {want:#06x}",
            h.header_checksum
        ));
    }
    Ok(())
}

fn verify_ip(p: &[u8]) -> Result<(), String> {
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            let (h, _) = Ipv4Header::from_slice(p).map_err(|e| format!("ipv4: {e}"))?;
            let want = h.calc_header_checksum();
            if h.header_checksum != want {
                return Err(format!(
                    "IPv4 header checksum {:#06x}, should be {want:#06x}",
                    h.header_checksum
                ));
            }
            let end = (h.total_len as usize).min(p.len());
            if end < h.header_len() {
                // A mutated frame of the differential run can say so.
                return Err(format!(
                    "IPv4 total length {} shorter than its header ({} bytes)",
                    h.total_len,
                    h.header_len()
                ));
            }
            let payload = &p[h.header_len()..end];
            if h.is_fragmenting_payload() {
                return Ok(());
            }
            match h.protocol.0 {
                4 | 41 => verify_ip(payload),
                1 => {
                    let (ih, rest) =
                        Icmpv4Header::from_slice(payload).map_err(|e| e.to_string())?;
                    let want = Icmpv4Header::with_checksum(ih.icmp_type, rest).checksum;
                    if ih.checksum != want {
                        return Err(format!(
                            "ICMP checksum {:#06x}, should be {want:#06x}",
                            ih.checksum
                        ));
                    }
                    Ok(())
                }
                6 => {
                    let Ok((t, data)) = TcpHeader::from_slice(payload) else {
                        return Ok(());
                    };
                    let want = t.calc_checksum_ipv4(&h, data).map_err(|e| e.to_string())?;
                    if t.checksum != want {
                        return Err(format!(
                            "TCP checksum {:#06x}, should be {want:#06x}",
                            t.checksum
                        ));
                    }
                    Ok(())
                }
                17 => {
                    let Ok((u, data)) = UdpHeader::from_slice(payload) else {
                        return Ok(());
                    };
                    let want = u.calc_checksum_ipv4(&h, data).map_err(|e| e.to_string())?;
                    if u.checksum != want {
                        return Err(format!(
                            "UDP checksum {:#06x}, should be {want:#06x}",
                            u.checksum
                        ));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Some(6) => {
            let (h, rest) = Ipv6Header::from_slice(p).map_err(|e| format!("ipv6: {e}"))?;
            let end = (h.payload_length as usize).min(rest.len());
            let payload = &rest[..end];
            match h.next_header.0 {
                4 | 41 => verify_ip(payload),
                58 => {
                    let (ih, body) =
                        Icmpv6Header::from_slice(payload).map_err(|e| e.to_string())?;
                    let want =
                        Icmpv6Header::with_checksum(ih.icmp_type, h.source, h.destination, body)
                            .map_err(|e| e.to_string())?
                            .checksum;
                    if ih.checksum != want {
                        return Err(format!(
                            "ICMPv6 checksum {:#06x}, should be {want:#06x}",
                            ih.checksum
                        ));
                    }
                    Ok(())
                }
                6 => {
                    let Ok((t, data)) = TcpHeader::from_slice(payload) else {
                        return Ok(());
                    };
                    let want = t.calc_checksum_ipv6(&h, data).map_err(|e| e.to_string())?;
                    if t.checksum != want {
                        return Err(format!(
                            "TCP checksum {:#06x}, should be {want:#06x}",
                            t.checksum
                        ));
                    }
                    Ok(())
                }
                17 => {
                    let Ok((u, data)) = UdpHeader::from_slice(payload) else {
                        return Ok(());
                    };
                    let want = u.calc_checksum_ipv6(&h, data).map_err(|e| e.to_string())?;
                    if u.checksum != want {
                        return Err(format!(
                            "UDP checksum {:#06x}, should be {want:#06x}",
                            u.checksum
                        ));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}
