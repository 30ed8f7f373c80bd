//! The L7 half of xlb. So far: one `SO_REUSEPORT` listener per worker and
//! the eBPF steering that picks the worker for each new connection.

pub mod balance;
pub mod body;
pub mod cache;
pub mod cold_start;
pub mod error;
pub mod forward;
pub mod headers;
pub mod listeners;
pub mod options;
pub mod plan;
pub mod preface;
pub mod proxy;
pub mod ratelimit;
pub mod record;
pub mod recording;
pub mod resolve;
pub mod retry_budget;
pub mod rewrite;
pub mod router;
pub mod server;
pub mod service;
pub mod source_cap;
pub mod steering;
pub mod target;
pub mod tls;
pub mod upgrade;
pub mod upstream_client;
pub mod upstream_keepalive;

pub use listeners::{ListenError, Listeners};
pub use steering::{FallbackKind, FallbackReason, Steering, SteeringError};
