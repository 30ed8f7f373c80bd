//! `aya::Pod` for every shared map type.
//!
//! SAFETY (for every impl below): the type is `#[repr(C)]`, made only of
//! integers, has no implicit padding (checked by the size assertions beside
//! each definition), and every bit pattern is a valid value.
use crate::counters::PacketCounter;

unsafe impl aya::Pod for PacketCounter {}
