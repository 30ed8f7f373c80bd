//! Leaf network types shared by every part of xlb (no xlb imports).

pub mod prefix;

pub use prefix::{Prefix, PrefixError};
