//! The YAML units, re-exported from the leaf module [`crate::units`] so
//! that `config::units::{Dur, Size}` keeps working.
pub use crate::units::{Dur, Size};
