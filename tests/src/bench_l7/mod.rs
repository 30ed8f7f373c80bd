//! Pieces of `cargo xtask bench l7` (tests/benches/l7.rs) that can be unit
//! tested without running anything: the load generators' output parsers,
//! the proxies' configuration files, and the process and CPU helpers the
//! bench drives them with.

pub mod configs;
pub mod parse;
pub mod procs;
