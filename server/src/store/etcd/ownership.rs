//! Which node an MQTT client id is connected to (SCALE-OUT.md §5, "MQTT"),
//! for session takeover and wills across nodes.
//!
//! - A CONNECT on node B puts `{prefix}own/{client}` = B on B's lease,
//!   unconditionally: in MQTT the newest CONNECT wins ([`Node::claim`]).
//!   With a will, the value is B, a NUL, then the will as the broker keeps
//!   it ([`Node::claim_with_will`]), so the will outlives B; B takes it off
//!   again ([`Node::settle_will`]) once it has sent or dropped the will itself.
//! - Every node watches ownership ([`Node::watch_ownership`]). Node A is told
//!   [`OwnershipEvent::TakenOver`] when a client it owned is claimed by
//!   another node, so it closes its old connection, once per claim.
//! - When a node's lease ends, etcd deletes its presence key and all its
//!   `own/` keys in one revision. A delete of `own/{client}` in the same
//!   revision as the delete of its owner's `node/{owner}` is that owner's
//!   death (a clean [`Node::release`] deletes only the `own/` key), and every
//!   other node is told [`OwnershipEvent::Orphaned`]. Each then tries
//!   [`Node::claim_will`], a create-only transaction on
//!   `{prefix}will/{revision}/{client}`: exactly one wins and sends the will.
//!   The key is on the winner's lease, so it goes with the winner: a will
//!   is sent at most once (not at all if the winner dies before sending it).
//! - [`Node::leave`] revokes the lease, which is a death like any other: a
//!   node shutting down cleanly deals with its clients' wills itself and
//!   releases them first, or the survivors send the wills.
//!
//! The watch covers the keys from `node/` to the end of `own/`, which hold
//! nothing else (`{prefix}o…` is only `own/`).

use std::collections::VecDeque;

use etcd_client::{Compare, CompareOp, Event, PutOptions, Txn, TxnOp};

use super::watch::Watch;
use super::{EtcdError, Keys, LeaseState, Node, lease_lost, protocol, revision};

/// What a node learns from the ownership watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// A client this node owned was claimed by node `by` at `revision`:
    /// close this node's connection of it.
    TakenOver {
        client_id: String,
        by: String,
        revision: u64,
    },
    /// Node `owner` died (its lease ended at `revision`) while it owned this
    /// client: race for its will with [`Node::claim_will`]`(client_id, revision)`.
    Orphaned {
        client_id: String,
        owner: String,
        revision: u64,
        /// The will its claim carried, as the broker stored it.
        will: Option<Vec<u8>>,
    },
}

/// One `own/` key's change, as the watch decodes it (for every node alike).
#[derive(Clone, Debug)]
struct OwnerChange {
    client_id: String,
    /// The owner before the change (from the previous value).
    previous: Option<String>,
    /// The will the previous value carried.
    previous_will: Option<Vec<u8>>,
    /// The owner after it; `None` for a delete.
    owner: Option<String>,
    /// The previous owner's presence was deleted in the same revision.
    owner_died: bool,
}

/// This node's view of ownership changes; see [`Node::watch_ownership`].
pub struct OwnershipWatch {
    watch: Watch<(u64, Vec<OwnerChange>)>,
    node: String,
    ready: VecDeque<OwnershipEvent>,
}

impl Node {
    /// Claims `client_id` for this node (a CONNECT here): the newest claim
    /// wins, whichever node held it. Returns the claim's revision.
    pub async fn claim(&self, client_id: &str) -> Result<u64, EtcdError> {
        self.claim_with_will(client_id, None)
            .await
            .map(|(revision, _)| revision)
    }

    /// [`Node::claim`] of a client with (or without) a `will`, kept with the
    /// claim until [`Node::settle_will`]; also tells which node owned the
    /// client before (`None`: nobody), so a node taking a client over from
    /// another knows to wait for that node's save of its session.
    pub async fn claim_with_will(
        &self,
        client_id: &str,
        will: Option<&[u8]>,
    ) -> Result<(u64, Option<String>), EtcdError> {
        check_client(client_id)?;
        let lease = self.lease_now()?;
        let key = self.log.shared.keys.own(client_id);
        let value = owner_value(&self.id, will);
        let response = self
            .log
            .put_on_lease("ownership claim", &key, &value, lease, &self.id, true)
            .await?;
        let header = response
            .header()
            .ok_or_else(|| protocol("a put without a header"))?;
        // A retried put may find its own first attempt: that is this node.
        let previous = response.prev_key().map(|kv| split_owner(kv.value()).0);
        Ok((revision(header.revision())?, previous))
    }

    /// Takes the will off this node's claim of `client_id` made at
    /// `claimed` (the claim's revision): its connection ended and this node
    /// sent the will or had no need to. Whether the claim was still that one
    /// (a later claim, here or elsewhere, has its own will or none).
    pub async fn settle_will(&self, client_id: &str, claimed: u64) -> Result<bool, EtcdError> {
        check_client(client_id)?;
        let lease = self.lease_now()?;
        let key = self.log.shared.keys.own(client_id);
        let claimed = i64::try_from(claimed).map_err(|_| protocol("a revision past i64"))?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                claimed,
            )])
            .and_then([TxnOp::put(
                key.clone(),
                self.id.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = self
            .log
            .retrying("will settle", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                self.log
                    .deadline(member, kv.txn(txn.clone()))
                    .await
                    .map_err(|f| lease_lost(f, &self.id))
            })
            .await?;
        Ok(response.succeeded())
    }

    /// Whether some node holds a claim of `client_id` now (one linearizable
    /// read): a client back since its node died keeps its will unsent.
    pub async fn is_claimed(&self, client_id: &str) -> Result<bool, EtcdError> {
        check_client(client_id)?;
        let key = self.log.shared.keys.own(client_id);
        let response = self
            .log
            .retrying("ownership read", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                self.log.deadline(member, kv.get(key.clone(), None)).await
            })
            .await?;
        Ok(!response.kvs().is_empty())
    }

    /// Gives `client_id` up (a clean disconnect), if this node still owns it
    /// on its current lease. Whether it did.
    pub async fn release(&self, client_id: &str) -> Result<bool, EtcdError> {
        check_client(client_id)?;
        let lease = self.lease_now()?;
        let key = self.log.shared.keys.own(client_id);
        let txn = Txn::new()
            // The lease is this node's alone (the value may carry a will).
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key.clone(), None)]);
        let response = self
            .log
            .retrying("ownership release", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                self.log.deadline(member, kv.txn(txn.clone())).await
            })
            .await?;
        Ok(response.succeeded())
    }

    /// Races the other survivors for the will of `client_id`, whose owner
    /// died at `revision` (from [`OwnershipEvent::Orphaned`]): true for
    /// exactly one node (also when this node asks again), which sends it.
    pub async fn claim_will(&self, client_id: &str, revision: u64) -> Result<bool, EtcdError> {
        check_client(client_id)?;
        let lease = self.lease_now()?;
        let key = self.log.shared.keys.will(revision, client_id);
        let (ours, _) = self
            .log
            .create_on_lease("will claim", &key, &self.id, lease)
            .await?;
        Ok(ours)
    }

    /// Ownership changes that concern this node, from revision `start` on.
    pub fn watch_ownership(&self, start: u64) -> OwnershipWatch {
        let keys = &self.log.shared.keys;
        let from = keys.node("");
        let end = super::read::prefix_end(keys.own("").as_bytes());
        OwnershipWatch {
            watch: self.log.watch_keys(from, end, true, owner_changes, start),
            node: self.id.clone(),
            ready: VecDeque::new(),
        }
    }

    fn lease_now(&self) -> Result<i64, EtcdError> {
        match *self.state.borrow() {
            LeaseState::Alive { lease } => Ok(lease),
            LeaseState::Lost => Err(EtcdError::LeaseLost(self.id.clone())),
        }
    }
}

impl OwnershipWatch {
    /// The next event for this node. Errors end the watch (as
    /// [`super::LogWatch::next`]); cancel-safe.
    pub async fn next(&mut self) -> Result<OwnershipEvent, EtcdError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            let (revision, changes) = self.watch.next().await?;
            for change in changes {
                let me = Some(self.node.as_str());
                let previous = change.previous.as_deref();
                match (&change.owner, change.owner_died) {
                    (Some(by), _) if previous == me && by != &self.node => {
                        self.ready.push_back(OwnershipEvent::TakenOver {
                            client_id: change.client_id,
                            by: by.clone(),
                            revision,
                        });
                    }
                    (None, true) if previous.is_some() && previous != me => {
                        self.ready.push_back(OwnershipEvent::Orphaned {
                            client_id: change.client_id,
                            owner: change.previous.unwrap_or_default(),
                            revision,
                            will: change.previous_will,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// The revision the watch has delivered through.
    pub fn last_revision(&self) -> u64 {
        match self.ready.front() {
            Some(OwnershipEvent::TakenOver { revision, .. })
            | Some(OwnershipEvent::Orphaned { revision, .. }) => revision - 1,
            None => self.watch.last_revision(),
        }
    }
}

/// A revision's `own/` changes, each marked if its previous owner's presence
/// went in the same revision.
fn owner_changes(keys: &Keys, revision: u64, events: &[Event]) -> Option<(u64, Vec<OwnerChange>)> {
    let node_prefix = keys.node("");
    let own_prefix = keys.own("");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut died: Vec<String> = Vec::new();
    let mut changes = Vec::new();
    for event in events {
        let Some(kv) = event.kv() else { continue };
        // mvccpb.Event.EventType: 0 PUT, 1 DELETE.
        let put = event.0.r#type == 0;
        if let Some(node) = kv.key().strip_prefix(node_prefix.as_bytes()) {
            if !put {
                died.push(text(node));
            }
        } else if let Some(client) = kv.key().strip_prefix(own_prefix.as_bytes()) {
            let (previous, previous_will) = match event.prev_kv() {
                Some(prev) => {
                    let (owner, will) = split_owner(prev.value());
                    (Some(owner), will)
                }
                None => (None, None),
            };
            changes.push(OwnerChange {
                client_id: text(client),
                previous,
                previous_will,
                owner: put.then(|| split_owner(kv.value()).0),
                owner_died: false,
            });
        }
    }
    for change in &mut changes {
        change.owner_died = change.owner.is_none()
            && change
                .previous
                .as_ref()
                .is_some_and(|owner| died.contains(owner));
    }
    (!changes.is_empty()).then_some((revision, changes))
}

/// An `own/` value: the node's id, then (with a will) a NUL and the will.
fn owner_value(node: &str, will: Option<&[u8]>) -> Vec<u8> {
    let mut value = node.as_bytes().to_vec();
    if let Some(will) = will {
        value.push(0);
        value.extend_from_slice(will);
    }
    value
}

/// An `own/` value's node id and will ([`owner_value`] read back).
fn split_owner(value: &[u8]) -> (String, Option<Vec<u8>>) {
    match value.iter().position(|b| *b == 0) {
        Some(at) => {
            let (node, will) = value.split_at(at);
            let will = will.get(1..).unwrap_or_default().to_vec();
            (String::from_utf8_lossy(node).into_owned(), Some(will))
        }
        None => (String::from_utf8_lossy(value).into_owned(), None),
    }
}

fn check_client(client_id: &str) -> Result<(), EtcdError> {
    if client_id.is_empty() {
        return Err(EtcdError::InvalidName("an empty MQTT client id".into()));
    }
    Ok(())
}
