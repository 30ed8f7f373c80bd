//! How an instance starts, hands itself to a successor and stops:
//! listener handover, systemd notification and the successor's launch.
//! (The XDP side of surviving a restart is the datapath's pin adoption.)

pub mod handover;
pub mod notify;
pub mod successor;
