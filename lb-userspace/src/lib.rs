//! The xlb daemon as a library: the `xlb` binary is a thin CLI over it, and
//! the end-to-end tests drive the same code.

pub mod admin;
pub mod allocator;
pub mod anycast;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod ebpf_object;
pub mod health;
pub mod l7;
pub mod lifecycle;
pub mod net;
pub mod observe;
pub mod sched;
pub mod store;
pub mod tls_util;
pub mod units;
