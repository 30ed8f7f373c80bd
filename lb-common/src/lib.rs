//! Types shared by xlb's eBPF programs and its userspace daemon.
//!
//! Every map key and value is `#[repr(C)]` with explicit widths and explicit
//! padding, and a compile-time size assertion, so the kernel and userspace
//! agree on the layout byte for byte.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod conntrack;
pub mod consts;
pub mod counters;
pub mod deny;
pub mod flow;
#[cfg(feature = "std")]
pub mod maglev;
pub mod maps;
pub mod reasons;
pub mod reuseport;
pub mod settings;
pub mod vip;

#[cfg(feature = "user")]
mod pod;
