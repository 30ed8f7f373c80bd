//! The connection table: which backend an established flow uses.

/// `CONNTRACK` value (key: `flow::FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnValue {
    /// Index into `BACKENDS`.
    pub backend: u32,
    /// Row of the VIP the flow belongs to (so a removed VIP's flows are not
    /// followed into a reused backend slot).
    pub vip: u32,
}
const _: () = assert!(core::mem::size_of::<ConnValue>() == 8);
