//! Bounds-checked header access and the frame classifier.
use aya_ebpf::programs::XdpContext;
use lb_common::counters::ProtoClass;

use crate::hdr::{
    EthHdr, Ipv4Hdr, Ipv6Hdr, VlanHdr, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};

/// Returns a pointer to a `T` at `offset` bytes into the frame, or `None`
/// when the frame is too short. Every header read goes through here so the
/// verifier sees the bounds check next to the access.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Sorts a frame into its counter bucket: L2 type, IP version, L4 protocol.
///
/// A frame whose announced headers do not fit, or whose IP version field
/// disagrees with its EtherType, is `Malformed`.
#[inline(always)]
pub fn classify(ctx: &XdpContext) -> ProtoClass {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return ProtoClass::Malformed;
    };
    let mut offset = core::mem::size_of::<EthHdr>();
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let mut ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q {
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, offset) else {
            return ProtoClass::Malformed;
        };
        // SAFETY: bounds checked by ptr_at.
        ether_type = u16::from_be_bytes(unsafe { (*vlan).ether_type });
        offset += core::mem::size_of::<VlanHdr>();
    }
    match ether_type {
        ETH_P_IPV4 => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, offset) else {
                return ProtoClass::Malformed;
            };
            // SAFETY: bounds checked by ptr_at.
            let (version_ihl, protocol) = unsafe { ((*ip).version_ihl, (*ip).protocol) };
            if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
                return ProtoClass::Malformed;
            }
            match protocol {
                IPPROTO_TCP => ProtoClass::Tcp4,
                IPPROTO_UDP => ProtoClass::Udp4,
                IPPROTO_ICMP => ProtoClass::Icmp4,
                _ => ProtoClass::OtherIp4,
            }
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, offset) else {
                return ProtoClass::Malformed;
            };
            // SAFETY: bounds checked by ptr_at.
            let (vtf, next) = unsafe { ((*ip).version_tc_flow[0], (*ip).next_header) };
            if vtf >> 4 != 6 {
                return ProtoClass::Malformed;
            }
            match next {
                IPPROTO_TCP => ProtoClass::Tcp6,
                IPPROTO_UDP => ProtoClass::Udp6,
                IPPROTO_ICMPV6 => ProtoClass::Icmp6,
                _ => ProtoClass::OtherIp6,
            }
        }
        _ => ProtoClass::NonIp,
    }
}
