//! The single writer: drains every write waiting, applies them in order against
//! the committed state (plus the batch's own earlier writes), commits them as
//! one fjall batch with one `SyncData` fsync, and only then acknowledges each
//! and puts its change on the bus — in `seq` order.
//!
//! One writer, two places it runs. Under load its thread takes every queued
//! write and group-commits them. When nothing at all is queued or being
//! committed, a caller may commit its own write on its own (runtime worker)
//! thread instead: at a low rate each hand-off to the writer thread and back
//! wakes an idle thread, which costs more than the fsync it waits for, and the
//! bus then wakes subscribers' tasks on the worker that is already running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use app::event::{ChangeEvent, ChangeType, MqttMeta, Origin};
use fjall::{Database, Keyspace, PersistMode};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::ids::IdMaker;
use super::{
    LAST_SEQ_KEY, StoreError, StoredRecord, TableDecl, Tables, WriteOp, change, decode_record,
    record_key, table_def, table_key, validate_record_id, validate_table_name,
};
use crate::bus::Bus;
use crate::clock;
use crate::metrics::Metrics;

/// Most writes committed by one fsync.
const MAX_BATCH: usize = 4096;

/// How long the writer must have been idle before a caller may commit on
/// its own thread: longer than the gaps between writes under load (a
/// closed-loop client's next write comes ~0.1 ms after its answer; at 1,000
/// writes/s the gap is under 1 ms), shorter than at the low rates where the
/// hand-offs are what a write waits for.
const INLINE_AFTER: std::time::Duration = std::time::Duration::from_millis(2);

/// Longest commit after which a lone write may still be committed inline
/// without the rest above: a runtime worker blocks for the fsync, which is
/// fine for a fast disk, not for one that takes milliseconds.
const INLINE_LONE_UNDER: std::time::Duration = std::time::Duration::from_millis(1);

pub(super) enum Command {
    Write(WriteOp, Origin, Option<Arc<MqttMeta>>),
    DeclareTable(TableDecl),
    DropTable(String),
    /// Put a transient message on the bus after the changes queued before it.
    Publish(Arc<ChangeEvent>),
    /// Store an account: `create` only if the name is free, else only if it exists.
    PutAccount {
        username: String,
        account: Vec<u8>,
        create: bool,
    },
    /// Remove an account (it must exist).
    DeleteAccount(String),
    /// Set (or with `None` remove) a key of the meta keyspace, durably.
    SetMeta(Vec<u8>, Option<Vec<u8>>),
    /// Set (or with `None` remove) a key of the tokens keyspace, durably.
    SetToken(Vec<u8>, Option<Vec<u8>>),
    /// Commit everything queued before this, then exit.
    Stop,
}

/// The writer's answer to one request.
pub(super) type Answer = oneshot::Receiver<Result<Option<Arc<ChangeEvent>>, StoreError>>;

pub(super) struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Option<Arc<ChangeEvent>>, StoreError>>,
    pub queued: Instant,
}

impl Request {
    /// A request, and where its answer will come.
    pub fn new(command: Command) -> (Self, Answer) {
        let (reply, answer) = oneshot::channel();
        let queued = Instant::now();
        (
            Self {
                command,
                reply,
                queued,
            },
            answer,
        )
    }
}

/// The writer, shared by its thread and callers that commit while it is idle.
pub(super) struct Committer {
    writer: Mutex<Writer>,
    /// Requests queued for the thread or in the batch it is committing. A
    /// caller commits inline only when this is 0, so a write never overtakes
    /// one queued before it (a connection's own pipelined writes included).
    outstanding: AtomicUsize,
    /// Requests in the last batch committed (by the thread or inline): 1
    /// means no other write came while it was being committed.
    last_batch: AtomicUsize,
}

pub(super) struct Writer {
    pub db: Database,
    pub records: Keyspace,
    pub changes: Keyspace,
    pub meta: Keyspace,
    pub accounts: Keyspace,
    pub tokens: Keyspace,
    pub tables: Tables,
    pub last_seq: u64,
    pub window: u64,
    pub log_start: Arc<AtomicU64>,
    pub durable: watch::Sender<u64>,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    /// Told the reason when a commit or fsync fails and the writer stops.
    pub failed: watch::Sender<Option<String>>,
    /// Test hook: commits left before a simulated fsync failure.
    pub fail_persist_after: Option<u64>,
    /// Makes the ids of records created without one.
    pub ids: IdMaker,
    /// Why the writer stopped taking writes: a failed commit, or shutdown.
    pub stopped: Option<Stopped>,
    /// When the last commit ended, and how long it took.
    pub last_commit: (Instant, std::time::Duration),
    /// The versions of records committed lately (`None`: absent), so that a
    /// put or delete of one need not read it back from fjall (a memtable
    /// search and a JSON parse were ~7% of the server's CPU under 64
    /// writers). Only this writer changes records, and it stops for good
    /// when a commit fails, so what it committed is what is stored.
    pub known: HashMap<Vec<u8>, Option<u64>>,
}

/// Most records whose versions the writer keeps ([`Writer::known`]): about
/// 100 bytes each; when full it starts again from empty.
const KNOWN_RECORDS: usize = 8192;

#[derive(Clone)]
pub(super) enum Stopped {
    Failed(String),
    ShutDown,
}

/// What one request will do once its batch is durable.
enum Outcome {
    Change(Arc<ChangeEvent>),
    /// A table declaration or removal: applied to the in-memory table list after commit.
    Tables(TableChange),
    /// A transient message: nothing to commit, on the bus in its turn.
    Publish(Arc<ChangeEvent>),
    /// Nothing to do after the commit but answer.
    Done,
    Stop,
}

enum TableChange {
    Declare(TableDecl),
    Drop(String),
}

/// What the batch being built has done so far, read before the store.
#[derive(Default)]
struct Overlay {
    /// Records touched earlier in the batch, as the change that made them
    /// (shared with the answer, not a copy of the value): `None` = deleted.
    records: HashMap<Vec<u8>, Option<Arc<ChangeEvent>>>,
    /// The last version of records the batch deleted.
    tombstones: HashMap<Vec<u8>, u64>,
    /// Accounts the batch wrote (`true`) or removed (`false`).
    accounts: HashMap<String, bool>,
}

impl Committer {
    pub fn new(mut writer: Writer) -> Arc<Self> {
        writer.trim_log_on_open();
        Arc::new(Self {
            writer: Mutex::new(writer),
            outstanding: AtomicUsize::new(0),
            last_batch: AtomicUsize::new(0),
        })
    }

    /// Counts a request about to be queued for the thread; undo with
    /// [`Committer::settled`] if it could not be queued.
    pub fn queued(&self) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    pub fn settled(&self, requests: usize) {
        self.outstanding.fetch_sub(requests, Ordering::SeqCst);
    }

    /// Commits `request` on the caller's thread if the writer is idle, and
    /// hands it back otherwise, to be queued. Blocks for the fsync: only for
    /// a runtime with another worker to go on meanwhile.
    pub fn commit_if_idle(&self, request: Request) -> Option<Request> {
        let Ok(mut writer) = self.writer.try_lock() else {
            return Some(request);
        };
        // Under load the writer is idle only between batches, and the next
        // batch is already on its way: committing one write alone then would
        // take an fsync from the batch behind it. So only a writer that has
        // rested a while ([`INLINE_AFTER`], and at least as long as its last
        // commit took) lets a caller commit; or one whose last batch was a
        // lone write committed quickly. That is one client writing after each
        // answer (nobody else's write came during the last commit): there is
        // no batch behind to rob, and a commit on the writer thread would
        // cost a wake-up of that thread and one of a runtime worker for its
        // answer (a third less server CPU per write for a keep-alive client).
        // When more clients write, a write arrives during a commit, the
        // batch is larger than one, and the thread takes over again.
        let (ended, took) = writer.last_commit;
        let lone = self.last_batch.load(Ordering::Relaxed) <= 1 && took < INLINE_LONE_UNDER;
        if self.outstanding.load(Ordering::SeqCst) != 0
            || (!lone && ended.elapsed() < took.max(INLINE_AFTER))
            || matches!(writer.stopped, Some(Stopped::ShutDown))
        {
            return Some(request);
        }
        self.last_batch.store(1, Ordering::Relaxed);
        if writer.commit_or_refuse(vec![request]).is_ok() {
            writer.metrics.inline_commits.inc();
        }
        None
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: group-commits whatever is queued, batch by batch,
    /// until told to stop or a commit fails.
    pub fn run(&self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        while !stopping {
            let Some(first) = requests.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if batch.iter().any(|r| matches!(r.command, Command::Stop)) {
                // Refuse what comes later, but commit everything already queued.
                requests.close();
                while let Ok(request) = requests.try_recv() {
                    batch.push(request);
                }
                stopping = true;
            }
            let taken = batch.len();
            let mut writer = self.lock();
            self.last_batch.store(taken, Ordering::Relaxed);
            let committed = writer.commit_or_refuse(std::mem::take(&mut batch));
            if stopping && committed.is_ok() {
                writer.stopped = Some(Stopped::ShutDown);
            }
            self.settled(taken);
            drop(writer);
            if let Err(reason) = committed {
                // Nothing after a failed fsync can be trusted to be durable, and
                // the failed batch may already be readable: refuse everything
                // and stop, so the process exits and recovery decides.
                requests.close();
                while let Ok(request) = requests.try_recv() {
                    let _ = request.reply.send(Err(StoreError::Failed(reason.clone())));
                    self.settled(1);
                }
                return;
            }
        }
        tracing::info!(last_seq = self.lock().last_seq, "writer stopped");
    }
}

impl Writer {
    /// Commits one batch, or refuses it whole if an earlier commit failed;
    /// a failure here stops the writer for good.
    fn commit_or_refuse(&mut self, requests: Vec<Request>) -> Result<(), String> {
        if let Some(Stopped::Failed(reason)) = &self.stopped {
            for request in requests {
                let _ = request.reply.send(Err(StoreError::Failed(reason.clone())));
            }
            return Err(reason.clone());
        }
        let started = Instant::now();
        let committed = self.commit(requests);
        self.last_commit = (Instant::now(), started.elapsed());
        if let Err(reason) = &committed {
            tracing::error!("stopping the writer: {reason}");
            self.stopped = Some(Stopped::Failed(reason.clone()));
            self.failed.send_replace(Some(reason.clone()));
        }
        committed
    }

    /// Commits one batch; `Err` (with the reason) if it could not be made durable.
    fn commit(&mut self, requests: Vec<Request>) -> Result<(), String> {
        let mut overlay = Overlay::default();
        let mut batch = self.db.batch();
        let mut seq = self.last_seq;
        let mut pending = Vec::with_capacity(requests.len());
        for request in requests {
            let outcome = match request.command {
                Command::Write(op, origin, mqtt) => self
                    .apply(op, origin, mqtt, seq + 1, &mut overlay, &mut batch)
                    .map(|event| {
                        seq += 1;
                        Outcome::Change(event)
                    }),
                Command::Publish(event) => Ok(Outcome::Publish(event)),
                Command::DeclareTable(decl) => self.declare(decl, &mut batch),
                Command::DropTable(name) => self.drop_table(name, &overlay, &mut batch),
                Command::PutAccount {
                    username,
                    account,
                    create,
                } => self.put_account(username, account, create, &mut overlay, &mut batch),
                Command::DeleteAccount(username) => {
                    self.delete_account(username, &mut overlay, &mut batch)
                }
                Command::SetToken(key, value) => {
                    match value {
                        Some(value) => batch.insert(&self.tokens, key, value),
                        None => batch.remove(&self.tokens, key),
                    }
                    Ok(Outcome::Done)
                }
                Command::SetMeta(key, value) => {
                    match value {
                        Some(value) => batch.insert(&self.meta, key, value),
                        None => batch.remove(&self.meta, key),
                    }
                    Ok(Outcome::Done)
                }
                Command::Stop => Ok(Outcome::Stop),
            };
            match outcome {
                Ok(outcome) => pending.push((request.reply, request.queued, outcome)),
                // Refusals depend on nothing uncommitted: answer at once.
                Err(e) => {
                    let _ = request.reply.send(Err(e));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if seq != self.last_seq {
            batch.insert(&self.meta, LAST_SEQ_KEY, seq.to_be_bytes());
        }
        // A batch of transient messages alone has nothing to make durable.
        let only_publishes = pending
            .iter()
            .all(|(_, _, outcome)| matches!(outcome, Outcome::Publish(_)));
        let written = if only_publishes {
            Ok(())
        } else {
            batch
                .commit()
                .and_then(|()| self.persist())
                .map_err(|e| format!("commit failed: {e}"))
        };
        if let Err(reason) = written {
            for (reply, _, _) in pending {
                let _ = reply.send(Err(StoreError::Failed(reason.clone())));
            }
            return Err(reason);
        }
        // Only a batch with record changes moves the seq (with records on
        // etcd this writer keeps only accounts, tokens and sessions, and the
        // applier owns `durable`).
        let advanced = seq != self.last_seq;
        self.last_seq = seq;
        self.remember(overlay.records);
        if !only_publishes {
            self.metrics.commits.inc();
            self.metrics.commit_batch.observe(pending.len() as f64);
        }
        if advanced {
            self.durable.send_replace(seq);
            if seq > self.window {
                self.log_start
                    .store(seq - self.window + 1, Ordering::Release);
            }
        }
        for (reply, queued, outcome) in pending {
            match outcome {
                Outcome::Change(event) => {
                    self.metrics.changes.inc();
                    self.metrics
                        .write_latency
                        .observe_duration(queued.elapsed());
                    // On the bus before the answer: a connection that waits for
                    // this write and then publishes something else cannot overtake it.
                    self.bus.publish(event.clone());
                    let _ = reply.send(Ok(Some(event)));
                }
                Outcome::Publish(event) => {
                    self.bus.publish(event.clone());
                    let _ = reply.send(Ok(Some(event)));
                }
                Outcome::Tables(change) => {
                    self.apply_table_change(change);
                    let _ = reply.send(Ok(None));
                }
                Outcome::Done | Outcome::Stop => {
                    let _ = reply.send(Ok(None));
                }
            }
        }
        Ok(())
    }

    /// The one fsync of a batch (or, under the test hook, its failure).
    fn persist(&mut self) -> Result<(), fjall::Error> {
        if let Some(left) = self.fail_persist_after.as_mut() {
            if *left == 0 {
                return Err(fjall::Error::Io(std::io::Error::other(
                    "simulated fsync failure (test hook)",
                )));
            }
            *left -= 1;
        }
        self.db.persist(PersistMode::SyncData)
    }

    fn apply(
        &self,
        op: WriteOp,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
        seq: u64,
        overlay: &mut Overlay,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<Arc<ChangeEvent>, StoreError> {
        let (kind, table, id, value, if_match) = match op {
            WriteOp::Put {
                table,
                id,
                value,
                if_match,
            } => {
                let id = match id {
                    Some(id) => id,
                    None => self.fresh_id(&table, overlay)?,
                };
                (ChangeType::Put, table, id, Some(value), if_match)
            }
            WriteOp::Patch {
                table,
                id,
                patch,
                if_match,
            } => (ChangeType::Patch, table, id, Some(patch), if_match),
            WriteOp::Delete {
                table,
                id,
                if_match,
            } => (ChangeType::Delete, table, id, None, if_match),
        };
        let schema = {
            let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
            let def = tables
                .get(&table)
                .ok_or_else(|| StoreError::NoSuchTable(table.clone()))?;
            def.schema.clone()
        };
        validate_record_id(&table, &id)?;
        let key = record_key(&table, &id);
        // Only a patch reads the value it changes.
        let current = self.current(&key, overlay, kind == ChangeType::Patch)?;
        let change::Effect {
            value: new_value,
            version,
            created,
        } = change::decide(
            change::Intent {
                kind,
                table: &table,
                id: &id,
                input: value,
                if_match,
            },
            current.as_ref(),
            || self.deleted_version(&key, overlay),
            schema.as_ref(),
        )?;
        let ts = clock::now_rfc3339();
        match &new_value {
            Some(value) => {
                // Serialized from borrowed parts: the same bytes as a
                // `StoredRecord`, without a copy of the value to make one.
                let record = RecordRef {
                    version,
                    seq,
                    ts: &ts,
                    origin,
                    value,
                };
                let bytes =
                    serde_json::to_vec(&record).map_err(|e| StoreError::Storage(e.to_string()))?;
                batch.insert(&self.records, key.as_slice(), bytes);
                if current.is_none() {
                    batch.remove(&self.meta, tombstone_key(&key));
                    overlay.tombstones.remove(&key);
                }
            }
            None => {
                batch.remove(&self.records, key.as_slice());
                batch.insert(
                    &self.meta,
                    tombstone_key(&key),
                    version.to_be_bytes().to_vec(),
                );
                overlay.tombstones.insert(key.clone(), version);
            }
        }
        let event = ChangeEvent {
            seq: Some(seq),
            kind,
            table,
            id,
            version: Some(version),
            ts,
            origin,
            value: new_value,
            mqtt,
            created,
            carried_at: None,
        };
        let bytes = serde_json::to_vec(&event).map_err(|e| StoreError::Storage(e.to_string()))?;
        // Keys by reference or as arrays: fjall copies them into its own
        // (inline when short) slices anyway, so a Vec first is one more
        // allocation per key.
        batch.insert(&self.changes, seq.to_be_bytes(), bytes);
        if seq > self.window {
            batch.remove(&self.changes, (seq - self.window).to_be_bytes());
        }
        let event = Arc::new(event);
        let after = event.value.is_some().then(|| event.clone());
        overlay.records.insert(key, after);
        Ok(event)
    }

    /// The version a deleted record was at when it was deleted (0 if never).
    fn deleted_version(&self, key: &[u8], overlay: &Overlay) -> Result<u64, StoreError> {
        if let Some(version) = overlay.tombstones.get(key) {
            return Ok(*version);
        }
        Ok(self
            .meta
            .get(tombstone_key(key))?
            .map_or(0, |bytes| super::decode_seq(&bytes)))
    }

    /// The record at `key`, counting the batch's own earlier writes. Its
    /// value is read only `with_value`; otherwise only its version is (the
    /// rest is `Null`, empty, `System`): a put or a delete needs no more than
    /// whether it exists and its version, and parsing and dropping the value
    /// was a tenth of the writer's work.
    fn current(
        &self,
        key: &[u8],
        overlay: &Overlay,
        with_value: bool,
    ) -> Result<Option<StoredRecord>, StoreError> {
        if let Some(state) = overlay.records.get(key) {
            return Ok(state
                .as_ref()
                .map(|event| match (&event.value, with_value) {
                    (Some(value), true) => StoredRecord {
                        version: event.version.unwrap_or(0),
                        seq: event.seq.unwrap_or(0),
                        ts: event.ts.clone(),
                        origin: event.origin,
                        value: value.clone(),
                    },
                    _ => version_only(event.version.unwrap_or(0)),
                }));
        }
        if !with_value && let Some(known) = self.known.get(key) {
            return Ok(known.map(version_only));
        }
        let Some(bytes) = self.records.get(key)? else {
            return Ok(None);
        };
        if with_value {
            return decode_record(&bytes).map(Some);
        }
        let head: RecordHead = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Storage(format!("corrupt record: {e}")))?;
        Ok(Some(version_only(head.version)))
    }

    /// Keeps the versions a committed batch left its records at.
    fn remember(&mut self, records: HashMap<Vec<u8>, Option<Arc<ChangeEvent>>>) {
        if self.known.len() + records.len() > KNOWN_RECORDS {
            self.known = HashMap::new();
        }
        for (key, state) in records {
            let version = state.map(|event| event.version.unwrap_or(0));
            self.known.insert(key, version);
        }
    }

    /// A server-made id (a ULID, see `ids.rs`) that no record of the table has.
    fn fresh_id(&self, table: &str, overlay: &Overlay) -> Result<String, StoreError> {
        let mut random = [0u8; 10];
        getrandom::fill(&mut random)
            .map_err(|e| StoreError::Storage(format!("no randomness for a new id: {e}")))?;
        let now_ms = u64::try_from(clock::now_millis()).unwrap_or(0);
        // Taken only if a client already PUT a record under this exact id; each try is
        // the previous id plus one.
        for _ in 0..1000 {
            let candidate = self.ids.next(now_ms, random);
            if self
                .current(&record_key(table, &candidate), overlay, false)?
                .is_none()
            {
                return Ok(candidate);
            }
        }
        Err(StoreError::Storage("no free id".into()))
    }

    fn put_account(
        &self,
        username: String,
        account: Vec<u8>,
        create: bool,
        overlay: &mut Overlay,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<Outcome, StoreError> {
        let exists = self.account_exists(&username, overlay)?;
        match (create, exists) {
            (true, true) => return Err(StoreError::AccountExists(username)),
            (false, false) => return Err(StoreError::NoSuchAccount(username)),
            _ => {}
        }
        batch.insert(&self.accounts, username.as_bytes(), account);
        overlay.accounts.insert(username, true);
        Ok(Outcome::Done)
    }

    fn delete_account(
        &self,
        username: String,
        overlay: &mut Overlay,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<Outcome, StoreError> {
        if !self.account_exists(&username, overlay)? {
            return Err(StoreError::NoSuchAccount(username));
        }
        batch.remove(&self.accounts, username.as_bytes());
        overlay.accounts.insert(username, false);
        Ok(Outcome::Done)
    }

    fn account_exists(&self, username: &str, overlay: &Overlay) -> Result<bool, StoreError> {
        match overlay.accounts.get(username) {
            Some(present) => Ok(*present),
            None => Ok(self.accounts.contains_key(username)?),
        }
    }

    fn declare(
        &self,
        decl: TableDecl,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<Outcome, StoreError> {
        validate_table_name(&decl.name)?;
        table_def(&decl)?;
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        if tables.contains_key(&decl.name) {
            return Err(StoreError::TableExists(decl.name));
        }
        let bytes = serde_json::to_vec(&decl).map_err(|e| StoreError::Storage(e.to_string()))?;
        batch.insert(&self.meta, table_key(&decl.name), bytes);
        Ok(Outcome::Tables(TableChange::Declare(decl)))
    }

    fn drop_table(
        &self,
        name: String,
        overlay: &Overlay,
        batch: &mut fjall::OwnedWriteBatch,
    ) -> Result<Outcome, StoreError> {
        {
            let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
            match tables.get(&name) {
                None => return Err(StoreError::NoSuchTable(name)),
                Some(def) if def.builtin => return Err(StoreError::BuiltIn(name)),
                Some(_) => {}
            }
        }
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let pending_record = overlay
            .records
            .iter()
            .any(|(k, v)| k.starts_with(&prefix) && v.is_some());
        if pending_record || self.records.prefix(&prefix).next().is_some() {
            return Err(StoreError::TableNotEmpty(name));
        }
        batch.remove(&self.meta, table_key(&name));
        Ok(Outcome::Tables(TableChange::Drop(name)))
    }

    fn apply_table_change(&self, change: TableChange) {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        match change {
            TableChange::Declare(decl) => {
                if let Ok(def) = table_def(&decl) {
                    tables.insert(decl.name, def);
                }
            }
            TableChange::Drop(name) => {
                tables.remove(&name);
            }
        }
    }

    /// Removes log entries beyond the window (after the window was made smaller).
    fn trim_log_on_open(&mut self) {
        let keep_from = self.last_seq.saturating_sub(self.window) + 1;
        let start = self.log_start.load(Ordering::Acquire);
        if start >= keep_from {
            return;
        }
        let mut from = start;
        while from < keep_from {
            let to = (from + 10_000).min(keep_from);
            let mut batch = self.db.batch();
            for seq in from..to {
                batch.remove(&self.changes, seq.to_be_bytes().to_vec());
            }
            if let Err(e) = batch.commit() {
                tracing::warn!("cannot trim the change log: {e}");
                return;
            }
            from = to;
        }
        self.log_start.store(keep_from, Ordering::Release);
    }
}

/// A [`StoredRecord`] to serialize, borrowing its parts (same fields, same order).
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    version: u64,
    seq: u64,
    ts: &'a str,
    origin: Origin,
    value: &'a Value,
}

/// A stored record's version (the rest is skipped, not built).
#[derive(serde::Deserialize)]
struct RecordHead {
    version: u64,
}

/// A record as a put or delete needs it: its version.
fn version_only(version: u64) -> StoredRecord {
    StoredRecord {
        version,
        seq: 0,
        ts: String::new(),
        origin: Origin::System,
        value: Value::Null,
    }
}

/// Where the last version of a deleted record is kept (in the meta keyspace).
pub(super) fn tombstone_key(record_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(TOMBSTONE_PREFIX.len() + record_key.len());
    key.extend_from_slice(TOMBSTONE_PREFIX);
    key.extend_from_slice(record_key);
    key
}

pub(super) const TOMBSTONE_PREFIX: &[u8] = b"tombstone:";
