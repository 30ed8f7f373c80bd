//! Idle HTTP/1.1 upstream connections, one pool per worker thread.
//!
//! Each worker is a thread with a single-threaded runtime, and a request
//! is served start to end on its worker, so the pool is a thread-local map
//! with no lock: checkout is one hash lookup and a pop, checkin a push.
//! Connections are not shared between workers, as in nginx and HAProxy
//! (per-thread idle lists); a worker that needs more opens more.
//!
//! An idle connection carries its deadline (the upstream's idle timeout,
//! or sooner the node's announced `Keep-Alive: timeout`, see
//! `upstream_keepalive`). Expiry is checked at checkout (newest first),
//! and a sweeper task per thread, started when the thread's pool gets its
//! first connection and ended when it empties, closes expired ones and
//! ones the node closed, so that an idle worker does not keep sockets in
//! CLOSE_WAIT. On a multi-threaded runtime (tests) the sweeper may run on
//! another thread than the one whose pool it was started for; checkout
//! still never hands out an expired or closed connection.
use std::{cell::RefCell, collections::HashMap, time::Duration};

use super::{
    conn::Conn,
    pool_key::{Checkin, PoolKey},
};
use crate::l7::coarse_clock;

struct IdleConn {
    conn: Conn,
    /// On the coarse monotonic clock (nanoseconds): a deadline of seconds
    /// (at least 750 ms, see `upstream_keepalive::reuse_limit`, whose
    /// margin is far wider than a tick) needs no precise clock, and the
    /// precise one costs ~25–35 ns a read here against ~5 (a checkin and
    /// a checkout per request).
    deadline: u64,
}

#[derive(Default)]
struct ThreadPool {
    /// Looked up at every checkout and checkin: foldhash, not SipHash
    /// (the keys come from the config).
    idle: HashMap<PoolKey, Vec<IdleConn>, foldhash::fast::RandomState>,
    sweeping: bool,
}

thread_local! {
    static POOL: RefCell<ThreadPool> = RefCell::default();
}

/// How often the sweeper looks at its thread's idle connections.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The newest idle connection for `key` that is before its deadline and
/// still open; expired and closed ones met on the way are dropped.
pub fn checkout(key: &PoolKey) -> Option<Conn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.get_mut(key)?;
        let mut now: Option<u64> = None;
        while let Some(idle) = list.pop() {
            let now = *now.get_or_insert_with(coarse_clock::monotonic_ns);
            if idle.deadline > now && idle.conn.stream.idle_and_open() {
                return Some(idle.conn);
            }
        }
        None
    })
}

/// Puts `conn` back, usable until `keep` from now (at most the idle
/// timeout); the oldest goes when the list is full.
pub fn checkin(to: &Checkin, conn: Conn, keep: Option<Duration>) {
    if to.max_idle == 0 {
        return;
    }
    let keep = keep.map_or(to.idle_timeout, |k| k.min(to.idle_timeout));
    let keep = u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX);
    let deadline = coarse_clock::monotonic_ns().saturating_add(keep);
    let start_sweeper = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.entry(to.key.clone()).or_default();
        if list.len() >= to.max_idle {
            // The oldest is the likeliest to be closed by the node.
            list.remove(0);
        }
        list.push(IdleConn { conn, deadline });
        !std::mem::replace(&mut p.sweeping, true)
    });
    if start_sweeper {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sweeper());
            }
            Err(_) => POOL.with(|p| p.borrow_mut().sweeping = false),
        }
    }
}

async fn sweeper() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let empty = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let now = coarse_clock::monotonic_ns();
            p.idle.retain(|_, list| {
                list.retain(|i| i.deadline > now && i.conn.stream.idle_and_open());
                !list.is_empty()
            });
            let empty = p.idle.is_empty();
            if empty {
                p.sweeping = false;
            }
            empty
        });
        if empty {
            return;
        }
    }
}

/// Idle connections of `client` in this thread's pool.
pub fn idle_count(client: u64) -> usize {
    POOL.with(|p| {
        p.borrow()
            .idle
            .iter()
            .filter(|(k, _)| k.client == client)
            .map(|(_, l)| l.len())
            .sum()
    })
}

/// Closes this thread's idle connections of `client`.
pub fn clear(client: u64) {
    POOL.with(|p| p.borrow_mut().idle.retain(|k, _| k.client != client));
}
