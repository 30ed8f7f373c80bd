//! Shared by the XDP fixture and differential tests (included with
//! `#[path]`, because it needs the dev-dependencies aya, lb-common and the
//! daemon library): the map-loading harness, the frame builder, and a
//! userspace model of the balancer's decision.
#![allow(dead_code)]

pub mod check;
pub mod config;
pub mod frame;
pub mod loader;
pub mod model;
