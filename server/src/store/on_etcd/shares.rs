//! MQTT shared subscriptions across nodes: of the nodes with members of a
//! group (`$share/{group}/{filter}`), exactly one hands each message to the
//! group, with no etcd round trip per message.
//!
//! - **Who has members.** A node says it has members of a group with a
//!   `share/{subscription}/{node}` key on its lease, put when its first
//!   member joins and deleted when its last leaves (`keep_keys`, which also
//!   puts them again on a new lease); the key goes by itself when the node dies.
//! - **As of any revision.** Every node's applier applies those keys in
//!   revision order with everything else, before it puts any later event on
//!   the bus, and keeps a short history per group (revision → the sorted
//!   node ids): so a dispatcher that reads a message of revision `r` off the
//!   bus, however late, finds the same member nodes at `r` on every node.
//! - **One node per message.** The node at `hash(r, i) % n` of that set takes
//!   it, where `(r, i)` names the message alike on every node: a transient
//!   publish's revision and index in its batch (`ChangeEvent::carried_at`),
//!   a record change's seq and `table/id`. A round robin per node would not
//!   do: the nodes do not see the same messages in the same groups.
//!
//! Limits:
//! - If the set at `r` is empty (no node's key applied yet), every node with
//!   local members takes the message. So when two nodes get their first
//!   members of a new group at once, messages before the first key's
//!   revision may go to both (a window of one etcd commit). A node that
//!   joins a group that other nodes already serve takes nothing until its key
//!   is applied, and nothing is lost meanwhile: the others still take all.
//! - Messages chosen for a node that has no members any more are dropped:
//!   when its last member leaves, until its key's delete is applied (one
//!   commit), and when it dies, until its lease expires (10 s TTL). For QoS
//!   1 and 2 that loses acknowledged publishes; the survivors cannot tell
//!   them from the ones the dead node delivered. (Cheaper than a per-message
//!   hand-over would be a node that stops cleanly deleting its keys and
//!   waiting for that revision before it closes its sessions; a dead node's
//!   share can only be re-sent from a log of what it had not acknowledged.)
//! - Nodes share a group's messages evenly, whatever their member counts.
//! - A message older than the history kept (a dispatcher resuming from the
//!   change log far back, or one read across a resnapshot) is decided on the
//!   oldest set kept.
//! - A message that carries no position (`publish_here`: this node's own)
//!   goes to this node's members.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use app::event::ChangeEvent;
use tokio::sync::watch;

use super::Backend;
use crate::store::etcd::{EtcdLog, LeaseState, Node, ShareChange};

/// Member-node sets kept per group, at most.
const MAX_HISTORY: usize = 256;
/// Sets older than this many revisions are dropped (the newest of them is
/// kept as the base), at most the change log's window.
const HORIZON: u64 = 100_000;
/// The pause before `keep_keys` tries again after etcd failed it.
const RETRY: Duration = Duration::from_secs(1);

/// Every group's member nodes as of the revisions applied lately, and the
/// groups this node has members of.
pub(super) struct ShareNodes {
    /// This node's id.
    node: String,
    horizon: u64,
    groups: Mutex<HashMap<String, History>>,
    /// The groups this node has members of, as the broker says; kept in etcd by `keep_keys`.
    here: watch::Sender<BTreeSet<String>>,
}

/// A group's member nodes from a revision on, oldest first.
#[derive(Default)]
struct History {
    sets: VecDeque<(u64, Arc<[String]>)>,
    /// Older sets were dropped: before the first, the group had members.
    trimmed: bool,
}

impl ShareNodes {
    pub fn new(node: String, window: u64) -> Self {
        Self {
            node,
            horizon: window.clamp(1, HORIZON),
            groups: Mutex::default(),
            here: watch::Sender::new(BTreeSet::new()),
        }
    }

    /// The applier's part: one revision's `share/` changes, before any
    /// later event goes on the bus.
    pub fn apply(&self, revision: u64, changes: &[ShareChange]) {
        let mut groups = self.groups();
        for change in changes {
            let history = groups.entry(change.subscription.clone()).or_default();
            let mut nodes: Vec<String> = history.latest().to_vec();
            match (change.present, nodes.binary_search(&change.node)) {
                (true, Err(at)) => nodes.insert(at, change.node.clone()),
                (false, Ok(at)) => {
                    nodes.remove(at);
                }
                // A put again on a new lease, or a delete of a key not known.
                _ => continue,
            }
            history.push(revision, nodes.into());
        }
        let floor = revision.saturating_sub(self.horizon);
        groups.retain(|_, history| history.prune(floor));
    }

    /// Replaces every group's history with the sets read at a revision, which
    /// then hold for every revision (the events before it are not dispatched
    /// any more: a snapshot cuts every subscriber off).
    pub fn replace_all(&self, members: Vec<(String, String)>) {
        let mut sets: HashMap<String, Vec<String>> = HashMap::new();
        for (subscription, node) in members {
            sets.entry(subscription).or_default().push(node);
        }
        let mut groups = self.groups();
        groups.clear();
        for (subscription, mut nodes) in sets {
            nodes.sort();
            nodes.dedup();
            let mut history = History::default();
            history.push(0, nodes.into());
            groups.insert(subscription, history);
        }
    }

    /// Whether this node hands `event` to its members of `subscription`.
    pub fn takes(&self, subscription: &str, event: &ChangeEvent) -> bool {
        let Some((revision, within)) = position(event) else {
            return true;
        };
        let groups = self.groups();
        let Some(nodes) = groups.get(subscription).map(|h| h.at(revision)) else {
            return true;
        };
        if nodes.is_empty() {
            return true;
        }
        let pick = mix(revision ^ mix(within)) % nodes.len() as u64;
        usize::try_from(pick)
            .ok()
            .and_then(|pick| nodes.get(pick))
            .is_some_and(|chosen| *chosen == self.node)
    }

    /// Says whether this node has members of `subscription`.
    pub fn set_here(&self, subscription: &str, here: bool) {
        self.here.send_if_modified(|groups| match here {
            true => groups.insert(subscription.to_owned()),
            false => groups.remove(subscription),
        });
    }

    /// The sets as of `last` (a cache that was already up to `last` when
    /// the node started): read at `last`, or, if etcd compacted that away,
    /// now (the watch from `last + 1` then applies some changes again,
    /// which leaves a set as it is).
    pub async fn load(&self, log: &EtcdLog, last: u64) {
        let read = match log.read_shares(Some(last)).await {
            Ok(read) => Ok(read),
            Err(_) => log.read_shares(None).await,
        };
        match read {
            Ok(read) => self.replace_all(read.members),
            Err(e) => tracing::warn!(
                "shared subscriptions: cannot read which nodes have members: {e}; \
                 every node with members takes every message until they change"
            ),
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl History {
    fn latest(&self) -> &[String] {
        self.sets.back().map_or(&[], |(_, nodes)| nodes)
    }

    /// The set from `revision` on (a later set at the same revision replaces it).
    fn push(&mut self, revision: u64, nodes: Arc<[String]>) {
        if self.sets.back().is_some_and(|(at, _)| *at == revision) {
            self.sets.pop_back();
        }
        self.sets.push_back((revision, nodes));
        while self.sets.len() > MAX_HISTORY {
            self.sets.pop_front();
            self.trimmed = true;
        }
    }

    /// The set at `revision`: the last one from at or before it (empty if
    /// none), or the oldest kept, for a revision older than the history.
    fn at(&self, revision: u64) -> &[String] {
        match self.sets.iter().rev().find(|(at, _)| *at <= revision) {
            Some((_, nodes)) => nodes,
            None if self.trimmed => self.sets.front().map_or(&[], |(_, nodes)| nodes),
            None => &[],
        }
    }

    /// Drops the sets that no revision from `floor` on needs; whether
    /// anything is left to keep (a group with no member node since before
    /// `floor` is not).
    fn prune(&mut self, floor: u64) -> bool {
        while self.sets.get(1).is_some_and(|(at, _)| *at <= floor) {
            self.sets.pop_front();
            self.trimmed = true;
        }
        match (self.sets.len(), self.sets.front()) {
            (1, Some((at, nodes))) => !(nodes.is_empty() && *at <= floor),
            (n, _) => n > 0,
        }
    }
}

/// Names `event` alike on every node: its revision, and what tells it from
/// the other messages of that revision. `None`: this node's own.
fn position(event: &ChangeEvent) -> Option<(u64, u64)> {
    if let Some((revision, index)) = event.carried_at {
        return Some((revision, u64::from(index)));
    }
    let seq = event.seq?;
    // FNV-1a: stable across builds and processes, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in event.table.bytes().chain([b'/']).chain(event.id.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    Some((seq, hash))
}

/// splitmix64's finaliser: neighbouring revisions and indexes spread evenly.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Keeps this node's `share/` keys as `here` says, on the node's lease as
/// held now: a new lease (the old one expired) gets them all again.
pub(super) async fn keep_keys(
    node: Weak<Node>,
    mut here: watch::Receiver<BTreeSet<String>>,
    mut lease: watch::Receiver<LeaseState>,
) {
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut written_on: Option<i64> = None;
    loop {
        let Some(member) = node.upgrade() else {
            return;
        };
        let held = match *lease.borrow_and_update() {
            LeaseState::Alive { lease } => Some(lease),
            LeaseState::Lost => None,
        };
        if let (Some(held), Some(before)) = (held, written_on)
            && held != before
        {
            // The keys went with the old lease.
            written.clear();
        }
        let wanted = here.borrow_and_update().clone();
        let mut failed = false;
        for gone in written.difference(&wanted).cloned().collect::<Vec<_>>() {
            match member.unshare(&gone).await {
                Ok(()) => {
                    written.remove(&gone);
                }
                Err(e) => {
                    tracing::warn!(subscription = %gone, "shared subscription: cannot say this node left: {e}");
                    failed = true;
                }
            }
        }
        if held.is_some() {
            for new in wanted.difference(&written).cloned().collect::<Vec<_>>() {
                match member.share(&new).await {
                    Ok(_) => {
                        written.insert(new);
                        written_on = held;
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %new, "shared subscription: cannot say this node has members: {e}");
                        failed = true;
                    }
                }
            }
        }
        drop(member);
        if failed {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tokio::select! {
            changed = here.changed() => if changed.is_err() { return },
            changed = lease.changed() => if changed.is_err() { return },
        }
    }
}

impl Backend {
    /// See [`crate::store::Store::share_here`].
    pub(in crate::store) fn share_here(&self, subscription: &str, here: bool) {
        self.shares.set_here(subscription, here);
    }

    /// See [`crate::store::Store::takes_shared`].
    pub(in crate::store) fn takes_shared(&self, subscription: &str, event: &ChangeEvent) -> bool {
        self.shares.takes(subscription, event)
    }

    /// Starts keeping this node's `share/` keys.
    pub(super) fn spawn_share_keys(&self) -> Option<tokio::task::JoinHandle<()>> {
        let membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        let (member, _) = membership.as_ref()?;
        let lease = member.state();
        Some(tokio::spawn(keep_keys(
            Arc::downgrade(member),
            self.shares.here.subscribe(),
            lease,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::event::{ChangeType, Origin};

    fn publish(revision: u64, index: u32) -> ChangeEvent {
        ChangeEvent {
            seq: None,
            kind: ChangeType::Publish,
            table: "jobs".into(),
            id: "x".into(),
            version: None,
            ts: String::new(),
            origin: Origin::Mqtt,
            value: None,
            mqtt: None,
            created: false,
            carried_at: Some((revision, index)),
        }
    }

    fn change(node: &str, present: bool) -> ShareChange {
        ShareChange {
            subscription: "$share/w/jobs/#".into(),
            node: node.into(),
            present,
        }
    }

    /// Two nodes' views, fed the same changes.
    fn pair() -> [ShareNodes; 2] {
        ["a", "b"].map(|n| ShareNodes::new(n.into(), 1000))
    }

    #[test]
    fn each_message_goes_to_exactly_one_node_as_of_its_revision() {
        let nodes = pair();
        for view in &nodes {
            view.apply(10, &[change("a", true)]);
            view.apply(20, &[change("b", true)]);
            view.apply(30, &[change("a", false)]);
        }
        let takers = |event: &ChangeEvent| {
            nodes
                .iter()
                .filter(|v| v.takes("$share/w/jobs/#", event))
                .count()
        };
        let mut by_a = 0;
        for revision in 10..40 {
            for index in 0..20 {
                let event = publish(revision, index);
                assert_eq!(takers(&event), 1, "r{revision} i{index}");
                let a = nodes[0].takes("$share/w/jobs/#", &event);
                if revision < 20 {
                    assert!(a, "only a is a member before 20");
                }
                if revision >= 30 {
                    assert!(!a, "a left at 30");
                }
                by_a += usize::from((20..30).contains(&revision) && a);
            }
        }
        // Between 20 and 30 both share: roughly half each.
        assert!((50..150).contains(&by_a), "{by_a} of 200");
        // Before any key: every node with members takes it.
        assert_eq!(takers(&publish(5, 0)), 2);
    }

    #[test]
    fn history_is_bounded_and_empty_groups_go() {
        let view = ShareNodes::new("a".into(), 10);
        for r in 1..1000 {
            view.apply(r, &[change("b", r % 2 == 1)]);
        }
        let groups = view.groups();
        let history = &groups["$share/w/jobs/#"];
        assert!(history.sets.len() <= 11, "{}", history.sets.len());
        drop(groups);
        view.apply(1000, &[change("b", false)]);
        view.apply(1020, &[change("c", false)]);
        assert!(view.groups().is_empty());
    }
}
