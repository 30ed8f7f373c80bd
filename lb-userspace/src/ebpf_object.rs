//! The eBPF object embedded into the binary at build time (see build.rs):
//! the XDP balancer and decap programs, the `sk_reuseport` steering program
//! and their maps. A leaf, so that the datapath and the proxy both load it
//! without importing each other.

/// The compiled lb-ebpf object, 8-byte aligned as the ELF parser requires.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("XLB_EBPF_OBJECT_PATH"));
