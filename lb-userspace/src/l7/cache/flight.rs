//! Request coalescing: one upstream request per key at a time; the other
//! requests for the key wait (bounded) for its outcome and then look in the
//! store again.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

/// How a leader's upstream request ended, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still under way.
    Pending,
    /// An entry was stored or freshened: look again.
    Stored,
    /// The response is not storable (waiters go upstream themselves).
    NotStored,
    /// The upstream failed or answered 5xx (waiters may serve a stale
    /// entry under `stale-if-error`, else go upstream themselves).
    Error,
    /// The body was cut short, too large, or abandoned by the client.
    Abandoned,
}

/// Keys with an upstream request in flight.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<Vec<u8>, watch::Receiver<Outcome>>>,
}

/// What a request is for its key.
pub enum Join {
    /// Go upstream; the guard tells the waiters how it ended.
    Leader(FlightGuard),
    /// Wait on this.
    Waiter(watch::Receiver<Outcome>),
    /// The store changed meanwhile: look again.
    Retry,
}

impl Flights {
    /// Joins the flight for `key`, or starts it. `changed` is asked under
    /// the lock, when no flight exists, whether the store got a new entry
    /// since the caller looked: a leader stores before it ends its flight,
    /// so a request either sees the flight or the entry.
    pub fn join(self: &Arc<Self>, key: &[u8], changed: impl FnOnce() -> bool) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Join::Waiter(rx.clone());
        }
        if changed() {
            return Join::Retry;
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        map.insert(key.to_vec(), rx);
        Join::Leader(FlightGuard {
            flights: self.clone(),
            key: key.to_vec(),
            tx,
            outcome: Outcome::Abandoned,
        })
    }

    /// Keys in flight.
    pub fn in_flight(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Held by the leader; ends the flight when finished or dropped.
pub struct FlightGuard {
    flights: Arc<Flights>,
    key: Vec<u8>,
    tx: watch::Sender<Outcome>,
    outcome: Outcome,
}

impl FlightGuard {
    /// Ends the flight with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        {
            let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
            {
                map.remove(&self.key);
            }
        }
        self.tx.send_replace(self.outcome);
    }
}

/// Ends an optional flight.
pub fn finish(guard: Option<FlightGuard>, outcome: Outcome) {
    if let Some(g) = guard {
        g.finish(outcome);
    }
}
