//! The `xlb` subcommands other than `run` (which is `crate::daemon`).

pub mod decap;
pub mod flow;
pub mod stats;
pub mod status;
