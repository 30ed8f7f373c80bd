//! Unique names so tests running at once (threads or processes) never share
//! a namespace or an xlb instance.
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `xlb-<role>-<pid>-<seq>`: unique per process and call.
pub fn unique(role: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("xlbt-{role}-{}-{n}", std::process::id())
}
