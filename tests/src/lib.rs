//! The testbed: throwaway network namespaces joined by veth pairs, processes
//! run inside them, raw frames sent from them, and the `xlb` daemon driven
//! from outside. Everything created is removed on drop, also when a test
//! panics.

pub mod bench_l7;
pub mod bird;
pub mod l4bed;
pub mod l7bed;
pub mod names;
pub mod netns;
pub mod privilege;
pub mod process;
pub mod rawsock;
pub mod xlb;

pub use netns::Netns;
pub use process::ChildGuard;
