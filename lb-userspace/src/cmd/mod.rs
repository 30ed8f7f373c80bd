//! The `xlb` subcommands other than `run` (which is `crate::daemon`).

pub mod config_io;
pub mod decap;
pub mod drain;
pub mod flow;
pub mod stats;
pub mod status;
