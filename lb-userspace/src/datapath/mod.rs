//! The kernel half of xlb: loading the eBPF object, attaching it, pinning
//! its maps, and reading or writing those maps.

mod bpffs;
mod conntrack_split;
pub mod counters;
pub mod deny;
pub mod flood_refill;
mod instance_lock;
pub mod l4_tables;
mod loader;
pub mod map_writer;
pub mod neighbour;
pub mod next_hops;
pub mod pins;
pub mod predict;
pub mod state_file;
pub mod tx_ports;

pub use crate::ebpf_object::EBPF_OBJECT;
pub use bpffs::{ensure_bpffs, instance_pin_dir};
pub use loader::{unpin_instance, Datapath, DatapathError};
