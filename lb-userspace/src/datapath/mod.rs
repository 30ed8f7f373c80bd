//! The kernel half of xlb: loading the eBPF object, attaching it, pinning
//! its maps, and reading or writing those maps.

mod bpffs;
pub mod counters;
mod loader;
pub mod neighbour;
mod object;

pub use bpffs::{ensure_bpffs, instance_pin_dir};
pub use loader::{Datapath, DatapathError};
pub use object::EBPF_OBJECT;
