//! Shared health verdicts in etcd (`health: { shared_verdicts: true }`):
//! this node's votes out, the fleet's decision in. The rule itself is in
//! `health::fleet`; this file moves its inputs.
//!
//! - **Votes.** Each node writes its own verdict on every actively checked
//!   L4 backend under `<prefix>/health/<vip>/<backend>/<node>` = `up` |
//!   `down`, bound to the lease of its node key (`<prefix>/nodes/<node>`):
//!   a node that dies takes its votes with it when the lease expires, so
//!   a dead node neither holds a backend out nor keeps it in. A vote is
//!   written when the verdict changes, and all of them again whenever the
//!   lease is new (at start and after an outage, when the old lease and
//!   its keys may have expired).
//! - **Decision.** Each node reads the node keys and votes at one
//!   revision, then watches the whole configuration prefix from the next
//!   revision, so that each batch is one whole revision (a lease expiry
//!   deletes the node key and its votes in one revision: no node ever
//!   counts a half-deleted node). Watching the whole prefix also delivers
//!   route writes, which are skipped by key; two narrower watches would
//!   interleave revisions and could flap a backend for a moment.
//! - **Outage.** When a read or the watch fails, the last decision is
//!   kept with `connected: false` (what that means for the tables:
//!   `Decision::excluded`), and the read is retried every second.
use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use super::{etcd::EtcdStore, keys::Layout, Event, StoreError};
use crate::health::fleet::{BackendKey, Ballots, Decision, Vote};

/// This node's verdicts: backend → seen down here.
pub type LocalVerdicts = BTreeMap<BackendKey, bool>;

/// The daemon's handle: set local verdicts, read the fleet's decision.
#[derive(Debug)]
pub struct SharedVerdicts {
    /// This node's id (its key under `<prefix>/nodes/`).
    pub node: String,
    local: watch::Sender<LocalVerdicts>,
    /// The fleet's decision, updated on every change of votes or nodes.
    pub decisions: watch::Receiver<Decision>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SharedVerdicts {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SharedVerdicts {
    /// Starts publishing this node's votes under `lease` (the node key's
    /// lease, 0 while there is none) and following the fleet's votes.
    /// `initial` is the decision the node's first tables were written
    /// with ([`first_decision`]).
    pub fn start(
        etcd: EtcdStore,
        layout: Layout,
        node: String,
        lease: watch::Receiver<i64>,
        initial: Decision,
    ) -> SharedVerdicts {
        let (local, local_rx) = watch::channel(LocalVerdicts::new());
        let (decision_tx, decisions) = watch::channel(initial);
        let tasks = vec![
            tokio::spawn(publish(
                etcd.clone(),
                layout.clone(),
                node.clone(),
                lease,
                local_rx,
            )),
            tokio::spawn(follow(etcd, layout, decision_tx)),
        ];
        SharedVerdicts {
            node,
            local,
            decisions,
            tasks,
        }
    }

    /// Sets this node's verdicts (every checked backend; the ones left
    /// out are withdrawn). Written to the store only where they changed.
    pub fn set_local(&self, verdicts: LocalVerdicts) {
        self.local.send_if_modified(|old| {
            if *old == verdicts {
                false
            } else {
                *old = verdicts;
                true
            }
        });
    }
}

/// Keeps the store's copy of this node's votes equal to `local`.
async fn publish(
    etcd: EtcdStore,
    layout: Layout,
    node: String,
    mut lease: watch::Receiver<i64>,
    mut local: watch::Receiver<LocalVerdicts>,
) {
    // What the store holds under `written_lease`.
    let mut written = LocalVerdicts::new();
    let mut written_lease = 0;
    loop {
        let l = *lease.borrow_and_update();
        let want = local.borrow_and_update().clone();
        if l != 0 {
            if l != written_lease {
                // A new lease: the old one's keys expire with it.
                written.clear();
                written_lease = l;
            }
            if let Err(e) = sync_votes(&etcd, &layout, &node, l, &want, &mut written).await {
                log::warn!("shared verdicts: publishing this node's votes: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tokio::select! {
            r = lease.changed() => if r.is_err() { return },
            r = local.changed() => if r.is_err() { return },
        }
    }
}

/// Writes the votes of `want` that differ from `written`, deletes the
/// ones `want` no longer has.
async fn sync_votes(
    etcd: &EtcdStore,
    layout: &Layout,
    node: &str,
    lease: i64,
    want: &LocalVerdicts,
    written: &mut LocalVerdicts,
) -> Result<(), StoreError> {
    for (k, down) in want {
        if written.get(k) == Some(down) {
            continue;
        }
        let vote = Vote::of(*down);
        etcd.put_leased(&layout.verdict(&k.0, k.1, node), vote.as_str(), lease)
            .await?;
        log::info!(
            "shared verdicts: this node votes {} for L4 backend {} of VIP {}",
            vote.as_str(),
            k.1,
            k.0
        );
        written.insert(k.clone(), *down);
    }
    let gone: Vec<BackendKey> = written
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        etcd.delete(&layout.verdict(&k.0, k.1, node)).await?;
        written.remove(&k);
    }
    Ok(())
}

/// Keeps `tx` at the fleet's decision; across outages, with
/// `connected: false` and the last decision.
async fn follow(etcd: EtcdStore, layout: Layout, tx: watch::Sender<Decision>) {
    loop {
        let Err(e) = follow_once(&etcd, &layout, &tx).await;
        tx.send_if_modified(|d| {
            if !d.connected {
                return false;
            }
            d.connected = false;
            log::warn!(
                "shared verdicts: etcd unreachable ({e}); keeping the last fleet decision ({} backends fleet-down); a fleet-down backend that this node sees recover comes back in, a backend only this node sees down stays in",
                d.tally.values().filter(|t| t.fleet_down()).count()
            );
            true
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One read and the watch after it, until an error.
async fn follow_once(
    etcd: &EtcdStore,
    layout: &Layout,
    tx: &watch::Sender<Decision>,
) -> Result<Infallible, StoreError> {
    let (mut ballots, rev) = read_ballots(etcd, layout).await?;
    let was_connected = tx.borrow().connected;
    decide(tx, &ballots);
    if !was_connected {
        log::info!(
            "shared verdicts: following the fleet's votes at revision {rev} ({} live nodes)",
            ballots.live.len()
        );
    }
    let mut events = etcd.watch(&layout.all(), rev + 1).await?;
    loop {
        let batch = events
            .recv()
            .await
            .ok_or_else(|| StoreError::Unavailable("the watch ended".into()))??;
        let mut touched = false;
        for ev in &batch.events {
            touched |= match ev {
                Event::Put(kv) => note(&mut ballots, layout, &kv.key, Some(&kv.value)),
                Event::Delete { key, .. } => note(&mut ballots, layout, key, None),
            };
        }
        if touched {
            decide(tx, &ballots);
        }
    }
}

/// The node keys and votes at one revision, and that revision.
async fn read_ballots(etcd: &EtcdStore, layout: &Layout) -> Result<(Ballots, i64), StoreError> {
    let (mut read, rev) = etcd.ranges(&[layout.nodes(), layout.verdicts()]).await?;
    let votes = read.pop().unwrap_or_default();
    let nodes = read.pop().unwrap_or_default();
    let mut ballots = Ballots::default();
    for kv in nodes.iter().chain(&votes) {
        note(&mut ballots, layout, &kv.key, Some(&kv.value));
    }
    Ok((ballots, rev))
}

/// The fleet's decision now: read before a node writes its first tables,
/// so that a node that starts, restarts or takes over never puts a
/// fleet-down backend back into its table, not even for the moment until
/// its watch is up (flows that arrived then would stay on that backend
/// through the connection table).
pub async fn first_decision(etcd: &EtcdStore, layout: &Layout) -> Result<Decision, StoreError> {
    Ok(Decision::of(&read_ballots(etcd, layout).await?.0))
}

/// Applies one key's new value (`None`: deleted) to `ballots`; whether
/// the key was a node or a vote.
fn note(ballots: &mut Ballots, layout: &Layout, key: &str, value: Option<&[u8]>) -> bool {
    if let Some(node) = layout.parse_node(key) {
        match value {
            Some(_) => ballots.live.insert(node.to_string()),
            None => ballots.live.remove(node),
        };
        return true;
    }
    let Some((vip, backend, node)) = layout.parse_verdict(key) else {
        return false;
    };
    let k = (vip, backend);
    match value.and_then(Vote::parse) {
        Some(v) => {
            ballots.votes.entry(k).or_default().insert(node, v);
        }
        None => {
            if let Some(by_node) = ballots.votes.get_mut(&k) {
                by_node.remove(&node);
                if by_node.is_empty() {
                    ballots.votes.remove(&k);
                }
            }
        }
    }
    true
}

/// Publishes the decision of `ballots` when it differs from the last,
/// logging every backend whose fleet verdict changed.
fn decide(tx: &watch::Sender<Decision>, ballots: &Ballots) {
    let new = Decision::of(ballots);
    tx.send_if_modified(|old| {
        if *old == new {
            return false;
        }
        for (k, t) in &new.tally {
            if t.fleet_down() != old.fleet_down(k) {
                log::info!(
                    "shared verdicts: L4 backend {} of VIP {} is {} by the fleet ({} of {} live voters see it down, quorum {})",
                    k.1,
                    k.0,
                    if t.fleet_down() { "down" } else { "up" },
                    t.down,
                    t.voters,
                    t.quorum()
                );
            }
        }
        for (k, t) in &old.tally {
            if t.fleet_down() && !new.tally.contains_key(k) {
                log::info!(
                    "shared verdicts: L4 backend {} of VIP {} has no live voters left: up by the fleet",
                    k.1,
                    k.0
                );
            }
        }
        *old = new;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fleet::Tally;

    #[test]
    fn keys_become_ballots_and_other_keys_are_skipped() {
        let l = Layout::new("/xlb");
        let b: std::net::IpAddr = "192.0.2.13".parse().unwrap();
        let k = ("web".to_string(), b);
        let mut ballots = Ballots::default();
        for n in ["a", "b", "c"] {
            assert!(note(
                &mut ballots,
                &l,
                &format!("/xlb/nodes/{n}"),
                Some(b"7")
            ));
        }
        assert!(note(
            &mut ballots,
            &l,
            &l.verdict("web", b, "a"),
            Some(b"down")
        ));
        assert!(note(
            &mut ballots,
            &l,
            &l.verdict("web", b, "b"),
            Some(b"down")
        ));
        assert!(note(
            &mut ballots,
            &l,
            &l.verdict("web", b, "c"),
            Some(b"up")
        ));
        assert!(!note(&mut ballots, &l, "/xlb/routes/r1", Some(b"{}")));
        assert!(Decision::of(&ballots).fleet_down(&k));
        // b's lease expires: its node key and vote are deleted.
        note(&mut ballots, &l, "/xlb/nodes/b", None);
        note(&mut ballots, &l, &l.verdict("web", b, "b"), None);
        let d = Decision::of(&ballots);
        assert_eq!(d.live_nodes, 2);
        assert_eq!(d.tally[&k], Tally { down: 1, voters: 2 });
        assert!(!d.fleet_down(&k));
        // A value that is not a vote withdraws the node's vote.
        note(&mut ballots, &l, &l.verdict("web", b, "a"), Some(b"maybe"));
        assert_eq!(
            Decision::of(&ballots).tally[&k],
            Tally { down: 0, voters: 1 }
        );
    }
}
