//! The L7 half of xlb: workers with `SO_REUSEPORT` listeners and the eBPF
//! steering that picks a worker per connection, TLS, the HTTP server, the
//! router, the proxy's request phases (`proxy/`), the middleware (rate
//! limits, cache, cold-start holding), plugins, and upstream connections.

mod assemble;
pub mod balance;
pub mod body;
mod box_in_place;
pub mod cache;
mod coarse_clock;
pub mod cold_start;
pub mod dynamic;
pub mod error;
pub mod forward;
pub mod h1_client;
pub mod headers;
pub mod lane;
pub mod lazy;
pub mod listeners;
pub mod options;
pub mod plan;
pub mod plugin;
pub mod plugins;
pub mod preface;
pub mod proxy;
pub mod ratelimit;
pub mod record;
pub mod recording;
mod recycled_maps;
pub mod resolve;
pub mod retry_budget;
pub mod reused_timer;
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
pub mod upstream_head;
pub mod upstream_keepalive;
pub mod wake_gate;

pub use listeners::{Inherited, ListenError, Listeners};
pub use steering::{FallbackKind, FallbackReason, Steering, SteeringError};
