//! `aya::Pod` for every shared map type.
//!
//! SAFETY (for every impl below): the type is `#[repr(C)]`, made only of
//! integers and integer arrays, has no implicit padding (checked by the size
//! assertions beside each definition), and every bit pattern is valid.
use crate::{
    backend::BackendMeta,
    conntrack::ConnValue,
    counters::{GlobalCounters, PacketCounter},
    settings::{FloodBudget, Settings},
    vip::{VipKey, VipMeta},
};

unsafe impl aya::Pod for PacketCounter {}
unsafe impl aya::Pod for GlobalCounters {}
unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for BackendMeta {}
unsafe impl aya::Pod for ConnValue {}
unsafe impl aya::Pod for crate::conntrack::FlowKeyV4 {}
unsafe impl aya::Pod for crate::conntrack::FragKey {}
unsafe impl aya::Pod for crate::conntrack::FragValue {}
unsafe impl aya::Pod for crate::backend::TxPort {}
unsafe impl aya::Pod for Settings {}
unsafe impl aya::Pod for FloodBudget {}
unsafe impl aya::Pod for crate::reuseport::ActiveWorkers {}
