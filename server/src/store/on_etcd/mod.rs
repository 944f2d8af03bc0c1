//! The Store on etcd, shared by several Marquee nodes, with each node's fjall
//! data dir as its cache of it (issue 11; `../shared/SCALE-OUT.md`).
//!
//! - The **applier** (`applier.rs`) brings the cache up to etcd (a snapshot
//!   if it is empty, else the watch from its last seq) and then follows the
//!   watch: every node applies every change in revision order and puts it on
//!   its bus, so subscribers on every node see one order, with `seq` = the
//!   etcd revision (unique and increasing, not gap-free).
//! - The **write path** ([`Backend::write`]) plans a write with the same
//!   rules as the embedded writer (`change::decide`) against the cache,
//!   commits it as one etcd transaction (one change per revision, so every
//!   change has its own seq) conditioned on the record's mod revision as
//!   cached (or its absence), re-plans once the applier has caught up when
//!   the condition fails, and answers only once this node's applier has
//!   published the revision: a client that writes and then reads on the same
//!   node sees its write, and so does every subscriber here.
//! - **Transient publishes** (MQTT without retain, REST/WS `publish`) go
//!   through the node's `t/{node}` key, a batch of them per revision, so
//!   subscribers on other nodes get them in the same order as the records.
//!
//! - **MQTT shared subscriptions** (`shares.rs`): each node says in etcd
//!   which groups it has members of, and every node knows those sets as of
//!   each revision, so the nodes agree, message by message and without
//!   asking etcd, which one hands it to the group.
//!
//! - **Accounts, tokens, saved MQTT sessions and table declarations**
//!   (`state.rs`) are written the same way, one conditioned transaction
//!   each, and cached where the embedded store keeps them
//!   (`state_cache.rs`), so reads are the same on both. A record write
//!   requires its table's declaration as cached, and a drop requires that
//!   no record was written since the cache saw the table empty: whichever
//!   of the two commits first, the other fails.

mod applier;
mod envelope;
mod shares;
mod state;
mod state_cache;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::event::{ChangeEvent, ChangeType, MqttMeta, Origin};
use fjall::{Database, Keyspace, Readable};
use tokio::sync::{mpsc, oneshot, watch};

use super::etcd::{
    Batch, Compactor, CompactorOptions, EtcdError, EtcdLog, Expect, Key, KeyKind, Node,
    NodeOptions, Op, OwnershipEvent, Role, RoleOptions,
};
use super::ids::IdMaker;
use super::writer::tombstone_key;
use super::{
    StoreError, StoredRecord, Tables, WriteOp, change, decode_record, record_key,
    validate_record_id,
};
use crate::bus::Bus;
use crate::clock;
use crate::metrics::Metrics;
use applier::{Applier, decode_tombstone};
use envelope::{Envelope, TransientEnvelope, WireMqtt};

/// Re-plans of one write whose condition failed, before giving up.
const MAX_REPLANS: u32 = 16;
/// A record write re-plans for at least this long, however many times: a
/// count alone made giving up depend on how fast the other node is. Two
/// nodes patching one record, one of them (the faster, by its member or its
/// scheduling) won 10-15 races in a row within ~70 ms while it had writes
/// queued, and the other gave up after 16 losses (seen in `etcd_store`'s
/// two-node test next to another etcd test). Each re-plan waits for the write it lost to,
/// so this is time spent behind real writes, never a busy loop.
const REPLAN_FOR: Duration = Duration::from_secs(2);
/// How long a write waits for this node's applier to reach its revision.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// Writes of one record on this node take turns, by key hash over this many
/// stripes, so a hot record is contended between nodes, not within one.
const TURN_STRIPES: usize = 256;
/// How long a stopping node waits for etcd to revoke its lease.
const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// Transient publishes waiting for their lane before callers are refused.
const TRANSIENT_QUEUE: usize = 4096;
/// Most transient publishes in one etcd transaction, and most bytes.
const TRANSIENT_BATCH: usize = 256;
const TRANSIENT_BATCH_BYTES: usize = 512 * 1024;

/// The answer to a write or a queued publish, as the embedded writer gives it.
pub(super) type Reply = oneshot::Sender<Result<Option<Arc<ChangeEvent>>, StoreError>>;

/// The local fjall keyspaces the cache lives in (the embedded store's own,
/// and the mod revisions of the non-record keys).
#[derive(Clone)]
pub(super) struct Cache {
    pub db: Database,
    pub records: Keyspace,
    pub changes: Keyspace,
    pub meta: Keyspace,
    pub accounts: Keyspace,
    pub tokens: Keyspace,
    pub revisions: Keyspace,
}

pub(super) use state_cache::REVISIONS_KEYSPACE;

/// The Store on etcd: one per store, attached after the cache is open.
pub(super) struct Backend {
    log: EtcdLog,
    node: String,
    counter: AtomicU64,
    ids: Mutex<IdMaker>,
    cache: Cache,
    tables: Tables,
    /// Every revision up to this is in the cache and its events are on the
    /// bus: writes answer on this (the store's `durable` moves before the bus).
    published: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    transients: mpsc::Sender<(Arc<ChangeEvent>, Option<Reply>)>,
    /// Transient publishes queued so far, and how many of them are on the
    /// bus: a write waits for those queued before it, so that a connection's
    /// publish and its next write arrive everywhere in the order sent.
    transients_queued: AtomicU64,
    transients_done: watch::Sender<u64>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// This node's lease and presence, and the compactor it campaigns with:
    /// one live node at a time compacts etcd's history to the window.
    membership: Mutex<Option<(Arc<Node>, Compactor)>>,
    /// The revision this node joined at: its ownership watch starts after it.
    joined_at: u64,
    /// The node's campaigns for roles, by name, started on first use.
    roles: Mutex<std::collections::HashMap<String, Role>>,
    turns: Box<[tokio::sync::Mutex<()>; TURN_STRIPES]>,
    /// Which nodes have members of each MQTT shared subscription (`shares.rs`).
    shares: Arc<shares::ShareNodes>,
}

/// Cache state a write is planned on.
struct Planned {
    /// The cache's last seq when read.
    at: u64,
    current: Option<StoredRecord>,
    /// A tombstone: (version deleted at, its mod revision).
    tombstone: Option<(u64, u64)>,
    /// The mod revision of the table's declaration as cached (`None` for a
    /// built-in table, which etcd does not hold, or one not on etcd yet).
    table: Option<u64>,
}

/// What [`Backend::start`] needs of the store it serves.
pub(super) struct Attach {
    pub cache: Cache,
    pub tables: Tables,
    pub durable: watch::Sender<u64>,
    /// The store's `access_changes`, moved by the applier.
    pub access: watch::Sender<u64>,
    pub log_start: Arc<AtomicU64>,
    pub bus: Bus,
    pub window: u64,
    pub metrics: Arc<Metrics>,
    /// Set if the cache cannot be written: the process must then exit, as
    /// when the embedded store's fsync fails.
    pub failed: watch::Sender<Option<String>>,
}

impl Backend {
    /// Brings the cache up to etcd and starts following it.
    pub(super) async fn start(
        log: EtcdLog,
        node: String,
        attach: Attach,
    ) -> Result<Arc<Self>, StoreError> {
        let Attach {
            cache,
            tables,
            durable,
            access,
            log_start,
            bus,
            window,
            metrics,
            failed,
        } = attach;
        let last = *durable.borrow();
        let shares = Arc::new(shares::ShareNodes::new(node.clone(), window));
        let mut applier = Applier {
            log: log.clone(),
            cache: cache.clone(),
            durable: durable.clone(),
            published: watch::Sender::new(last),
            tables: tables.clone(),
            access,
            log_start,
            bus,
            window: window.max(1),
            last,
            failed,
            shares: shares.clone(),
        };
        if last == 0 {
            applier.resnapshot().await?;
        } else {
            shares.load(&log, last).await;
        }
        let member = log
            .join(&node, NodeOptions::default())
            .await
            .map_err(etcd_error)?;
        let compactor = member.spawn_compactor(CompactorOptions {
            window: window.max(1),
            ..CompactorOptions::default()
        });
        let joined_at = member.joined_at();
        let (transients, lane) = mpsc::channel(TRANSIENT_QUEUE);
        let backend = Arc::new(Self {
            log,
            node,
            counter: AtomicU64::new(0),
            ids: Mutex::new(IdMaker::default()),
            cache,
            tables,
            published: applier.published.clone(),
            metrics,
            transients,
            transients_queued: AtomicU64::new(0),
            transients_done: watch::Sender::new(0),
            tasks: Mutex::new(Vec::new()),
            membership: Mutex::new(Some((Arc::new(member), compactor))),
            joined_at,
            roles: Mutex::default(),
            turns: Box::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
            shares,
        });
        let mut handles = vec![
            tokio::spawn(applier.run()),
            tokio::spawn(transient_lane(Arc::downgrade(&backend), lane)),
        ];
        handles.extend(backend.spawn_share_keys());
        if let Ok(mut tasks) = backend.tasks.lock() {
            *tasks = handles;
        }
        Ok(backend)
    }

    /// Stops following etcd and leaves: the node's lease is revoked, so
    /// what it held passes to the others at once rather than at its expiry.
    pub(super) async fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        let membership = self.membership.lock().ok().and_then(|mut m| m.take());
        // Roles before the lease, so their holders stop acting on them first;
        // after the membership, so no campaign starts after this.
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|p| p.into_inner()));
        drop(roles);
        if let Some((member, compactor)) = membership {
            drop(compactor);
            // A claim in flight holds the node for a moment; leaving needs
            // it alone (if it never comes back, the lease simply expires).
            let member = match Arc::try_unwrap(member) {
                Ok(member) => member,
                Err(mut shared) => {
                    let deadline = tokio::time::Instant::now() + LEAVE_WAIT;
                    loop {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        match Arc::try_unwrap(shared) {
                            Ok(member) => break member,
                            Err(_) if tokio::time::Instant::now() >= deadline => {
                                tracing::warn!(
                                    "leaving etcd: a client claim still in flight; the lease will expire"
                                );
                                return;
                            }
                            Err(again) => shared = again,
                        }
                    }
                }
            };
            // Bounded: with etcd unreachable the lease simply expires.
            match tokio::time::timeout(LEAVE_WAIT, member.leave()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("leaving etcd: {e}"),
                Err(_) => tracing::warn!("leaving etcd: no answer within {LEAVE_WAIT:?}"),
            }
        }
    }

    /// Whether this node holds `role` now, and its changes: its campaign,
    /// started on first use, on the node's lease. Never held once stopped.
    pub(super) fn leadership(&self, role: &str) -> Result<watch::Receiver<bool>, StoreError> {
        let membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        let Some((member, _)) = membership.as_ref() else {
            return Ok(watch::channel(false).1);
        };
        let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(campaign) = roles.get(role) {
            return Ok(campaign.held());
        }
        let campaign = member
            .campaign(role, RoleOptions::default())
            .map_err(|e| StoreError::BadName(e.to_string()))?;
        let held = campaign.held();
        roles.insert(role.to_owned(), campaign);
        Ok(held)
    }

    /// Claims an MQTT client id for this node (the newest claim wins, on
    /// whichever node), with the will it carries: its revision, and who
    /// owned it before.
    pub(super) async fn claim_client(
        &self,
        client_id: &str,
        will: Option<&[u8]>,
    ) -> Result<(u64, super::ClientOwner), StoreError> {
        let member = self.member().ok_or(StoreError::ShuttingDown)?;
        let (revision, previous) = member
            .claim_with_will(client_id, will)
            .await
            .map_err(etcd_error)?;
        let owner = match previous {
            None => super::ClientOwner::Nobody,
            Some(owner) if owner == self.node => super::ClientOwner::ThisNode,
            Some(_) => super::ClientOwner::OtherNode,
        };
        Ok((revision, owner))
    }

    /// Takes the will off this node's claim of `client_id` made at `claimed`.
    pub(super) async fn settle_will(
        &self,
        client_id: &str,
        claimed: u64,
    ) -> Result<bool, StoreError> {
        let member = self.member().ok_or(StoreError::ShuttingDown)?;
        member
            .settle_will(client_id, claimed)
            .await
            .map_err(etcd_error)
    }

    /// Whether any node holds a claim of `client_id` now.
    pub(super) async fn client_claimed(&self, client_id: &str) -> Result<bool, StoreError> {
        let member = self.member().ok_or(StoreError::ShuttingDown)?;
        member.is_claimed(client_id).await.map_err(etcd_error)
    }

    fn member(&self) -> Option<Arc<Node>> {
        let membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        membership.as_ref().map(|(member, _)| Arc::clone(member))
    }

    /// What other nodes' claims mean for this node's MQTT clients, from when
    /// it joined: clients another node claimed since (their connections
    /// here close), and wills of a dead node's clients this node won the
    /// race for (it sends them). The watch is resumed after an error; the
    /// receiver ends when the store stops.
    pub(super) fn client_events(&self) -> mpsc::Receiver<super::ClientEvent> {
        let (tx, rx) = mpsc::channel(1024);
        let Some(member) = self.member() else {
            return rx;
        };
        let mut watch = member.watch_ownership(self.joined_at + 1);
        // Weak: this task must not keep the node from leaving.
        let member = Arc::downgrade(&member);
        let task = tokio::spawn(async move {
            loop {
                match watch.next().await {
                    Ok(OwnershipEvent::TakenOver {
                        client_id,
                        revision,
                        ..
                    }) => {
                        let event = super::ClientEvent::TakenOver {
                            client_id,
                            revision,
                        };
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Ok(OwnershipEvent::Orphaned {
                        client_id,
                        revision,
                        will: Some(will),
                        ..
                    }) => {
                        let Some(node) = member.upgrade() else {
                            return;
                        };
                        // Its own task: the race is an etcd round trip,
                        // and takeovers should not wait behind it.
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match node.claim_will(&client_id, revision).await {
                                Ok(true) => {
                                    let event =
                                        super::ClientEvent::WillOrphaned { client_id, will };
                                    let _ = tx.send(event).await;
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(%client_id, "cannot race for a dead node's client's will: {e}");
                                }
                            }
                        });
                    }
                    // A dead node's client without a will leaves nothing to do.
                    Ok(OwnershipEvent::Orphaned { will: None, .. }) => {}
                    Err(e) => {
                        tracing::warn!("the MQTT ownership watch failed, resuming: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let Some(node) = member.upgrade().filter(|_| !tx.is_closed()) else {
                            return;
                        };
                        // An error ends a watch for good: a new one goes on
                        // after what this one delivered.
                        watch = node.watch_ownership(watch.last_revision() + 1);
                    }
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
        rx
    }

    /// Commits `op` on etcd and returns its change once this node has applied
    /// and published it.
    pub(super) async fn write(
        &self,
        op: WriteOp,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<Arc<ChangeEvent>, StoreError> {
        let started = std::time::Instant::now();
        self.after_queued_transients().await?;
        let wid = self.next_wid();
        let (kind, table, id, input, if_match) = match op {
            WriteOp::Put {
                table,
                id,
                value,
                if_match,
            } => (ChangeType::Put, table, id, Some(value), if_match),
            WriteOp::Patch {
                table,
                id,
                patch,
                if_match,
            } => (ChangeType::Patch, table, Some(id), Some(patch), if_match),
            WriteOp::Delete {
                table,
                id,
                if_match,
            } => (ChangeType::Delete, table, Some(id), None, if_match),
        };
        // A server-made id is new by construction; should it collide anyway,
        // the create-only condition fails and the write takes another.
        let made_id = id.is_none();
        let mut id = match id {
            Some(id) => id,
            None => self.fresh_id()?,
        };
        validate_record_id(&table, &id)?;
        let declared = || {
            let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
            tables.contains_key(&table)
        };
        if !declared() {
            // Declared on another node a moment ago?
            self.caught_up().await?;
        }
        let mut turn = self.turn(&table, &id).await;
        let replanning = std::time::Instant::now();
        let mut attempt = 0u32;
        let builtin = super::BUILTIN_TABLES.contains(&table.as_str());
        let mut caught_up_for_table = false;
        while attempt < MAX_REPLANS || replanning.elapsed() < REPLAN_FOR {
            attempt += 1;
            let planned = self.plan_state(&table, &id).await?;
            if planned.table.is_none() && !builtin {
                // The applier updates the table list just before it commits
                // the cache, so the list can know a table whose declaration
                // the cache has not got yet. Written without the declaration's
                // revision as a condition, the write could land in a table a
                // racing drop has removed: catch up and plan again, and a
                // table etcd does not declare even then is not there.
                if caught_up_for_table {
                    return Err(StoreError::NoSuchTable(table));
                }
                self.caught_up().await?;
                caught_up_for_table = true;
                continue;
            }
            // The schema after the cache snapshot: the applier changes the
            // table list before it commits the cache, so a schema older than
            // the declaration's revision planned on is never paired with it.
            let schema = {
                let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
                let def = tables
                    .get(&table)
                    .ok_or_else(|| StoreError::NoSuchTable(table.clone()))?;
                def.schema.clone()
            };
            let effect = change::decide(
                change::Intent {
                    kind,
                    table: &table,
                    id: &id,
                    input: input.clone(),
                    if_match,
                },
                planned.current.as_ref(),
                || Ok(planned.tombstone.map_or(0, |(version, _)| version)),
                schema.as_ref(),
            )?;
            let expect = match (&planned.current, planned.tombstone) {
                (Some(record), _) => Expect::ModRevision(record.seq),
                // 0: the key itself was deleted (by a tool other than Marquee).
                (None, Some((_, 0))) | (None, None) => Expect::Absent,
                (None, Some((_, revision))) => Expect::ModRevision(revision),
            };
            let envelope = Envelope {
                version: effect.version,
                ts: clock::now_rfc3339(),
                origin,
                kind,
                created: effect.created,
                wid: wid.clone(),
                value: effect.value,
                mqtt: mqtt.as_deref().map(WireMqtt::from),
            };
            let bytes =
                serde_json::to_vec(&envelope).map_err(|e| StoreError::Storage(e.to_string()))?;
            let mut batch = Batch::new(format!("{wid}.{attempt}"))
                .with(Op::put(Key::record(&table, &id), bytes).expecting(expect));
            // The table as declared when planned: a write racing a drop of
            // it (or a re-declaration with another schema) fails and plans again.
            if let Some(declared) = planned.table {
                batch = batch.require(Key::Table(table.clone()), Expect::ModRevision(declared));
            }
            match self.log.commit(&batch).await {
                Ok(committed) => {
                    self.metrics.commits.inc();
                    self.metrics.commit_batch.observe(1.0);
                    self.wait_published(committed.revision).await?;
                    self.metrics.changes.inc();
                    self.metrics
                        .write_latency
                        .observe_duration(started.elapsed());
                    let mut event = envelope.event(&table, &id, committed.revision);
                    // The caller's own Arc, not a copy.
                    event.mqtt = mqtt;
                    return Ok(Arc::new(event));
                }
                Err(EtcdError::ConditionFailed { key, current, .. }) => {
                    if made_id
                        && key.kind() == KeyKind::Record
                        && planned.current.is_none()
                        && planned.tombstone.is_none()
                    {
                        id = self.fresh_id()?;
                        drop(turn);
                        turn = self.turn(&table, &id).await;
                        continue;
                    }
                    // Another node wrote the record after the state planned
                    // on: wait until the applier has that, then plan again.
                    self.wait_published(current.max(planned.at + 1)).await?;
                }
                Err(e) => return Err(etcd_error(e)),
            }
        }
        Err(StoreError::Storage(format!(
            "{table}/{id}: still contended after {attempt} attempts in {:?}; try again",
            replanning.elapsed()
        )))
    }

    /// Queues a transient publish for every node; `reply`, if given, is
    /// answered once this node has put it on its bus. Refused at once when
    /// the lane is full, as a full subscriber queue would be.
    pub(super) fn publish(
        &self,
        event: Arc<ChangeEvent>,
        reply: Option<Reply>,
    ) -> Result<(), StoreError> {
        self.transients
            .try_send((event, reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => lane_full(),
                mpsc::error::TrySendError::Closed(_) => StoreError::ShuttingDown,
            })?;
        self.transients_queued.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// [`Backend::publish`] for a publisher that can wait: while the lane
    /// is full it waits for room (at most [`APPLY_WAIT`]), so a fast MQTT
    /// publisher is slowed down to what etcd takes rather than refused.
    pub(super) async fn publish_when_room(
        &self,
        event: Arc<ChangeEvent>,
    ) -> Result<(), StoreError> {
        match tokio::time::timeout(APPLY_WAIT, self.transients.send((event, None))).await {
            Ok(Ok(())) => {
                self.transients_queued.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Ok(Err(_)) => Err(StoreError::ShuttingDown),
            Err(_) => Err(lane_full()),
        }
    }

    /// Waits until every transient publish queued before now is on the bus.
    async fn after_queued_transients(&self) -> Result<(), StoreError> {
        let ticket = self.transients_queued.load(Ordering::Acquire);
        if *self.transients_done.borrow() >= ticket {
            return Ok(());
        }
        let mut done = self.transients_done.subscribe();
        match tokio::time::timeout(APPLY_WAIT, done.wait_for(|d| *d >= ticket)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::ShuttingDown),
            Err(_) => Err(StoreError::Storage(
                "earlier messages did not reach the other nodes in time; try again".into(),
            )),
        }
    }

    /// Waits until this node has applied `seq` (a seq another node made),
    /// for at most [`APPLY_WAIT`].
    pub(super) async fn wait_published(&self, revision: u64) -> Result<(), StoreError> {
        let mut published = self.published.subscribe();
        match tokio::time::timeout(APPLY_WAIT, published.wait_for(|p| *p >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::ShuttingDown),
            Err(_) => Err(StoreError::Storage(format!(
                "revision {revision} was committed but not applied on this node within {APPLY_WAIT:?}"
            ))),
        }
    }

    /// Waits until this node has applied every batch committed under the
    /// prefix before the call (see `EtcdLog::head`).
    pub(super) async fn caught_up(&self) -> Result<(), StoreError> {
        let head = self.log.head().await.map_err(etcd_error)?;
        self.wait_published(head).await
    }

    /// Waits for this record's turn on this node (`None` cannot happen: the
    /// stripe is always in range).
    async fn turn(&self, table: &str, id: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (table, id).hash(&mut hasher);
        let stripe = self.turns.get((hasher.finish() as usize) % TURN_STRIPES)?;
        Some(stripe.lock().await)
    }

    fn next_wid(&self) -> String {
        format!(
            "{}:{}",
            self.node,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn plan_state(&self, table: &str, id: &str) -> Result<Planned, StoreError> {
        let cache = self.cache.clone();
        let key = record_key(table, id);
        let declaration = Key::Table(table.to_owned());
        super::blocking(move || {
            let snapshot = cache.db.snapshot();
            let (at, [table]) = state_cache::revisions(&cache, &snapshot, [&declaration])?;
            let current = snapshot
                .get(&cache.records, &key)?
                .map(|bytes| decode_record(&bytes))
                .transpose()?;
            let tombstone = snapshot
                .get(&cache.meta, tombstone_key(&key))?
                .map(|bytes| decode_tombstone(&bytes));
            Ok(Planned {
                at,
                current,
                tombstone,
                table,
            })
        })
        .await
    }

    fn fresh_id(&self) -> Result<String, StoreError> {
        let mut random = [0u8; 10];
        getrandom::fill(&mut random)
            .map_err(|e| StoreError::Storage(format!("no randomness for a new id: {e}")))?;
        let now_ms = u64::try_from(clock::now_millis()).unwrap_or(0);
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ids.next(now_ms, random))
    }
}

/// Commits this node's transient publishes to `t/{node}`, in the order they
/// were queued, as many per transaction as are waiting.
async fn transient_lane(
    backend: std::sync::Weak<Backend>,
    mut lane: mpsc::Receiver<(Arc<ChangeEvent>, Option<Reply>)>,
) {
    let mut waiting = Vec::new();
    while lane.recv_many(&mut waiting, TRANSIENT_BATCH).await > 0 {
        let Some(backend) = backend.upgrade() else {
            return;
        };
        while !waiting.is_empty() {
            // The key's value is a JSON array of the batch, built as each
            // publish is serialised (once), until the batch is full.
            let mut array = vec![b'['];
            let mut take = 0;
            for (event, _) in &waiting {
                let one = match serde_json::to_vec(&TransientEnvelope::of(event)) {
                    Ok(one) => one,
                    Err(e) => {
                        // JSON values always serialise; should one not, it is
                        // left out rather than spoil the batch.
                        tracing::warn!(table = %event.table, id = %event.id, "a publish cannot be serialised: {e}");
                        take += 1;
                        continue;
                    }
                };
                if take > 0 && array.len() + one.len() > TRANSIENT_BATCH_BYTES {
                    break;
                }
                if array.len() > 1 {
                    array.push(b',');
                }
                array.extend_from_slice(&one);
                take += 1;
            }
            array.push(b']');
            let sent: Vec<_> = waiting.drain(..take).collect();
            let result = backend.commit_transients(array).await;
            // Failed ones count as done too: nothing waits for them any more.
            backend
                .transients_done
                .send_modify(|done| *done += sent.len() as u64);
            for (event, reply) in sent {
                if let Some(reply) = reply {
                    let _ = reply.send(result.clone().map(|()| Some(event)));
                } else if let Err(e) = &result {
                    tracing::warn!(table = %event.table, id = %event.id, "a publish did not reach the other nodes: {e}");
                }
            }
        }
    }
}

impl Backend {
    /// Puts `array` (a JSON array of [`TransientEnvelope`]s) on `t/{node}`.
    async fn commit_transients(&self, array: Vec<u8>) -> Result<(), StoreError> {
        let batch = Batch::new(format!("{}.t", self.next_wid()))
            .with(Op::put(Key::Transient(self.node.clone()), array));
        let committed = self.log.commit(&batch).await.map_err(etcd_error)?;
        self.wait_published(committed.revision).await
    }
}

fn etcd_error(e: EtcdError) -> StoreError {
    StoreError::Storage(format!("etcd: {e}"))
}

/// Why a transient publish is refused: the way to the other nodes is full.
fn lane_full() -> StoreError {
    StoreError::Storage("too many messages are waiting to reach the other nodes; try again".into())
}
