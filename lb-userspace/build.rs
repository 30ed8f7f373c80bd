//! Finds the eBPF object that `cargo xtask build-ebpf` produced and hands its
//! path to `include_bytes_aligned!`, so the `xlb` binary is self-contained.
//!
//! The object is not built from here: building it needs the nightly
//! toolchain, rust-src and bpf-linker, which `cargo xtask build-ebpf` installs
//! and checks; a build script that silently did half of that would fail in
//! more confusing ways. Set `XLB_EBPF_OBJECT` to embed another object.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=XLB_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = match std::env::var_os("XLB_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("..").join("target"));
            target.join("ebpf/bpfel-unknown-none/release/lb-ebpf")
        }
    };
    if !object.is_file() {
        panic!(
            "the eBPF object {} does not exist: run `cargo xtask build-ebpf` (or `cargo xtask build`) first",
            object.display()
        );
    }
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=XLB_EBPF_OBJECT_PATH={}", object.display());
}
