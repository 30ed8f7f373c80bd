//! Shared health verdicts: which L4 backends the *fleet* takes out of its
//! Maglev tables, decided from every live node's own verdict.
//!
//! Why: each node probes the backends itself. When one node's probes fail
//! and the others' pass (a path problem between that node and a backend,
//! a full conntrack table, a firewall rule on one host), a node that acted
//! on its own verdict would build a different Maglev table than its peers,
//! and every flow that ECMP moves between nodes would land on another
//! backend and break. With shared verdicts a backend leaves the tables
//! only when a quorum of nodes sees it down, and every node computes the
//! same set from the same votes, so the tables stay equal.
//!
//! The rule, a pure function of what the store holds (so every node that
//! read the same revision decides the same):
//! - a vote counts only when its node is live (registered under its
//!   leased key); a dead node's votes go with its lease anyway, the check
//!   just makes the decision independent of the order of deletions;
//! - the electorate of a backend is the live nodes that vote on it (nodes
//!   whose config lacks the VIP, or L7-only nodes, never vote and so do
//!   not count: counting them as silent "up" votes would make a fleet with
//!   L7 nodes unable to ever reach a quorum);
//! - the backend is fleet-down when its down votes reach the quorum
//!   `floor(voters / 2) + 1`: a strict majority. One node of three seeing a
//!   backend down changes nothing; two of three take it out everywhere.
//!
//! While the store cannot be reached, see [`Decision::excluded`].
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// One L4 backend of one VIP: `(vip name, backend address)`.
pub type BackendKey = (String, IpAddr);

/// A node's verdict on a backend, as written in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Up,
    Down,
}

impl Vote {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Vote::Up => "up",
            Vote::Down => "down",
        }
    }

    /// A stored value (anything else is not a vote, and is ignored).
    pub fn parse(v: &[u8]) -> Option<Vote> {
        match v {
            b"up" => Some(Vote::Up),
            b"down" => Some(Vote::Down),
            _ => None,
        }
    }

    /// The vote of a node whose local check says `down`.
    pub fn of(down: bool) -> Vote {
        if down {
            Vote::Down
        } else {
            Vote::Up
        }
    }
}

/// The count behind one backend's fleet verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Live nodes voting "down".
    pub down: usize,
    /// Live nodes voting at all.
    pub voters: usize,
}

impl Tally {
    /// `floor(voters / 2) + 1`: a strict majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters / 2 + 1
    }

    /// Whether the fleet takes the backend out.
    pub fn fleet_down(&self) -> bool {
        self.voters > 0 && self.down >= self.quorum()
    }
}

/// What the store says: live nodes and their votes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ballots {
    /// Ids of the nodes registered under leased keys.
    pub live: BTreeSet<String>,
    /// Per backend, per node id, the node's vote.
    pub votes: BTreeMap<BackendKey, BTreeMap<String, Vote>>,
}

impl Ballots {
    /// The tally of every backend somebody votes on.
    pub fn tally(&self) -> BTreeMap<BackendKey, Tally> {
        self.votes
            .iter()
            .map(|(k, by_node)| {
                let mut t = Tally::default();
                for (node, v) in by_node {
                    if !self.live.contains(node) {
                        continue;
                    }
                    t.voters += 1;
                    if *v == Vote::Down {
                        t.down += 1;
                    }
                }
                (k.clone(), t)
            })
            .filter(|(_, t)| t.voters > 0)
            .collect()
    }
}

/// The fleet's decision as this node last knew it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Whether the decision is current: the store answered and the watch
    /// is open. `false` from start until the first read, and during an
    /// outage (then `tally` is the last decision seen).
    pub connected: bool,
    /// Live nodes registered at the last read.
    pub live_nodes: usize,
    /// The tally of every voted-on backend.
    pub tally: BTreeMap<BackendKey, Tally>,
}

impl Decision {
    /// The decision of `ballots` (connected).
    pub fn of(ballots: &Ballots) -> Decision {
        Decision {
            connected: true,
            live_nodes: ballots.live.len(),
            tally: ballots.tally(),
        }
    }

    /// Whether the fleet (last) said `key` is down.
    pub fn fleet_down(&self, key: &BackendKey) -> bool {
        self.tally.get(key).is_some_and(Tally::fleet_down)
    }

    /// Whether this node leaves `key` out of its table, given its own
    /// verdict `local_down`.
    ///
    /// Connected: exactly the fleet's verdict; the local one only counts
    /// through its vote.
    ///
    /// Disconnected (etcd unreachable, or not read yet): the last fleet
    /// decision is kept, so that every node that lost the store at the
    /// same time keeps the same table; but a backend stays out only while
    /// this node also still sees it down. A fleet-down backend that this
    /// node sees recover comes back in (the stale decision must not keep a
    /// recovered backend out for the whole outage), and a backend that
    /// only this node sees down stays in (acting alone is the split that
    /// shared verdicts exist to prevent). The price: a backend that dies
    /// during an outage keeps its share of new flows until the store
    /// answers again.
    pub fn excluded(&self, key: &BackendKey, local_down: bool) -> bool {
        let fleet = self.fleet_down(key);
        if self.connected {
            fleet
        } else {
            fleet && local_down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> BackendKey {
        ("web".into(), IpAddr::from([192, 0, 2, b]))
    }

    fn ballots(live: &[&str], votes: &[(&str, u8, Vote)]) -> Ballots {
        let mut b = Ballots {
            live: live.iter().map(|s| s.to_string()).collect(),
            ..Ballots::default()
        };
        for (node, backend, v) in votes {
            b.votes
                .entry(key(*backend))
                .or_default()
                .insert(node.to_string(), *v);
        }
        b
    }

    #[test]
    fn one_of_three_changes_nothing_two_of_three_take_it_out() {
        use Vote::*;
        let one = ballots(
            &["a", "b", "c"],
            &[("a", 11, Down), ("b", 11, Up), ("c", 11, Up)],
        );
        let d = Decision::of(&one);
        assert_eq!(d.tally[&key(11)], Tally { down: 1, voters: 3 });
        assert!(!d.fleet_down(&key(11)));
        assert!(
            !d.excluded(&key(11), true),
            "the one node that sees it down keeps it"
        );
        let two = ballots(
            &["a", "b", "c"],
            &[("a", 11, Down), ("b", 11, Down), ("c", 11, Up)],
        );
        let d = Decision::of(&two);
        assert!(d.fleet_down(&key(11)));
        assert!(
            d.excluded(&key(11), false),
            "the node that sees it up drops it too"
        );
    }

    #[test]
    fn quorum_is_a_strict_majority_of_live_voters() {
        assert_eq!(Tally { down: 0, voters: 1 }.quorum(), 1);
        assert_eq!(Tally { down: 0, voters: 2 }.quorum(), 2);
        assert_eq!(Tally { down: 0, voters: 4 }.quorum(), 3);
        assert!(Tally { down: 1, voters: 1 }.fleet_down());
        assert!(!Tally { down: 1, voters: 2 }.fleet_down());
        assert!(!Tally::default().fleet_down());
    }

    #[test]
    fn votes_of_nodes_that_are_not_live_do_not_count() {
        use Vote::*;
        // c's node key expired first; its vote is still there.
        let b = ballots(
            &["a", "b"],
            &[("a", 11, Down), ("b", 11, Up), ("c", 11, Down)],
        );
        assert_eq!(b.tally()[&key(11)], Tally { down: 1, voters: 2 });
        assert!(!Decision::of(&b).fleet_down(&key(11)));
        // Nobody live votes: no verdict at all.
        let gone = ballots(&["a"], &[("c", 12, Down)]);
        assert!(gone.tally().is_empty());
    }

    #[test]
    fn disconnected_keeps_the_last_decision_but_a_local_recovery_comes_back() {
        use Vote::*;
        let b = ballots(
            &["a", "b", "c"],
            &[
                ("a", 11, Down),
                ("b", 11, Down),
                ("a", 12, Down),
                ("b", 12, Up),
                ("c", 12, Up),
            ],
        );
        let mut d = Decision::of(&b);
        d.connected = false;
        assert!(
            d.excluded(&key(11), true),
            "fleet-down and still down here: out"
        );
        assert!(
            !d.excluded(&key(11), false),
            "fleet-down but recovered here: in"
        );
        assert!(!d.excluded(&key(12), true), "fleet-up, down only here: in");
        assert!(!Decision::default().excluded(&key(11), true));
    }
}
