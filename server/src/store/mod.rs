//! The table store: every record, the change log and the table declarations,
//! kept in fjall. All writes go through one writer (see `writer`) that
//! group-commits them with one fsync, on its own thread or, while it is idle,
//! on the writing connection's; reads go straight to fjall but never return
//! anything that is not yet durable.

mod address;
mod change;
pub mod etcd;
mod ids;
mod on_etcd;
mod patch;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use app::device::Device;
use app::event::{ChangeEvent, ChangeType, MqttMeta, Origin, RecordItem, RecordPage, TableInfo};
use app::names::is_disallowed_in_name;
use app::sign::{Message, Sign};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::bus::Bus;
use crate::clock;
use crate::metrics::Metrics;
use crate::schema::Schema;
use crate::topic::TopicFilter;

pub use address::{EtcdAddress, StoreAddress, StoreAddressError};
pub use patch::merge_patch;

/// Tables every Marquee has.
pub const DEVICES_TABLE: &str = "devices";
pub const BUILTIN_TABLES: &[&str] = &[SIGNS_TABLE, MESSAGES_TABLE, DEVICES_TABLE, MQTT_TABLE];
/// Signs, checked against [`app::sign::Sign`] on every write.
pub const SIGNS_TABLE: &str = "signs";
/// Messages, checked against [`app::sign::Message`] on every write.
pub const MESSAGES_TABLE: &str = "messages";
/// Retained MQTT messages on topics that are not `{table}/{id}` of a declared
/// table; the record id is the whole topic.
pub const MQTT_TABLE: &str = "mqtt";
/// Longest MQTT topic kept as a record id in [`MQTT_TABLE`], in bytes.
pub const MAX_TOPIC_ID_LEN: usize = 1024;
/// Names taken by API paths (`/api/changes`, `/api/ws`).
const RESERVED_TABLES: &[&str] = &["changes", "ws", "auth", "accounts", "tokens"];
/// Longest record id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest table name, in bytes.
pub const MAX_TABLE_LEN: usize = 64;
/// Largest page a list or a backfill reads at once.
pub const MAX_PAGE: usize = 1000;
/// A page of records or changes ends once it holds this many bytes (it
/// always holds at least one), so a page of large records stays small.
pub const PAGE_BYTES: usize = 1 << 20;

/// A key and its value as stored, for keyspaces the store does not interpret.
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// How many of the most recent changes the change log keeps for resuming.
    pub change_log_window: u64,
    /// Tables declared by the config file.
    pub tables: Vec<TableDecl>,
    /// Test hook: after this many successful commits, the next fsync fails.
    #[doc(hidden)]
    pub fail_persist_after: Option<u64>,
    /// Where the records live: this node's data dir alone, or etcd (with the
    /// data dir as this node's cache of it; [`Store::connect`] only).
    pub address: StoreAddress,
}

/// The environment variable that sets [`StoreOptions::fail_persist_after`] in
/// the `marquee` binary: a fault hook for tests of the failure path, never for use.
pub const FAULT_ENV: &str = "MARQUEE_FAULT_FAIL_FSYNC_AFTER";

/// A table declaration, from the config file or `POST /api/_tables`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableDecl {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// A write as every protocol expresses it.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// Create or replace; `id: None` lets the store choose one.
    Put {
        table: String,
        id: Option<String>,
        value: Value,
        if_match: Option<u64>,
    },
    Patch {
        table: String,
        id: String,
        patch: Value,
        if_match: Option<u64>,
    },
    Delete {
        table: String,
        id: String,
        if_match: Option<u64>,
    },
}

/// A record as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub version: u64,
    pub seq: u64,
    pub ts: String,
    /// The protocol of the write that made this version.
    #[serde(default = "system_origin")]
    pub origin: Origin,
    pub value: Value,
}

fn system_origin() -> Origin {
    Origin::System
}

/// Why a write or a read was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("there is no table named '{0}'")]
    NoSuchTable(String),
    #[error("there is no record '{0}'")]
    NotFound(String),
    #[error("the record is at version {current}, not {expected}")]
    VersionMismatch { expected: u64, current: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadName(String),
    #[error("table '{0}' already exists")]
    TableExists(String),
    #[error("table '{0}' still has records; delete them first")]
    TableNotEmpty(String),
    #[error("table '{0}' is built in and cannot be removed")]
    BuiltIn(String),
    #[error(
        "changes after seq {since} are no longer all in the change log (it starts at {oldest}); read the current state instead"
    )]
    ResumeGap { since: u64, oldest: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A commit or fsync failed: the writer has stopped and the process is
    /// exiting; the next start's recovery decides what was kept.
    #[error("the store could not make writes durable and has stopped: {0}")]
    Failed(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("an account named '{0}' already exists")]
    AccountExists(String),
    #[error("there is no account named '{0}'")]
    NoSuchAccount(String),
    /// Another process holds the data directory (fjall's lock).
    #[error("the data directory is in use by another process (is Marquee running on it?)")]
    InUse,
}

impl StoreError {
    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NoSuchTable(_) => "no_such_table",
            StoreError::NotFound(_) => "not_found",
            StoreError::VersionMismatch { .. } => "version_mismatch",
            StoreError::Invalid(_) => "invalid_record",
            StoreError::BadName(_) => "bad_name",
            StoreError::TableExists(_) => "table_exists",
            StoreError::TableNotEmpty(_) => "table_not_empty",
            StoreError::BuiltIn(_) => "builtin_table",
            StoreError::ResumeGap { .. } => "resume_gap",
            StoreError::ShuttingDown => "shutting_down",
            StoreError::Failed(_) => "storage_failed",
            StoreError::Storage(_) => "storage",
            StoreError::AccountExists(_) => "account_exists",
            StoreError::NoSuchAccount(_) => "no_such_account",
            StoreError::InUse => "data_dir_in_use",
        }
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Locked => StoreError::InUse,
            e => StoreError::Storage(e.to_string()),
        }
    }
}

/// A declared table and its schema.
#[derive(Clone, Debug)]
struct TableDef {
    builtin: bool,
    schema: Option<Schema>,
}

/// The declared tables, shared by readers and the writer.
type Tables = Arc<RwLock<BTreeMap<String, TableDef>>>;

/// A consistent, durable view of every record at one `seq`.
#[derive(Clone)]
pub struct ReadView {
    snapshot: fjall::Snapshot,
    pub seq: u64,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    records: Keyspace,
    changes: Keyspace,
    meta: Keyspace,
    /// Accounts by user name; never reachable through the record API.
    accounts: Keyspace,
    /// Sign-in and API tokens by the SHA-256 of their secret; never reachable
    /// through the record API either.
    tokens: Keyspace,
    tables: Tables,
    writes: mpsc::Sender<writer::Request>,
    committer: Arc<writer::Committer>,
    /// Whether a write may be committed on the caller's worker thread while
    /// the writer is idle (see `writer`): only with another worker to go on.
    inline_commits: bool,
    durable: watch::Receiver<u64>,
    /// The sender of `durable`, for the etcd applier.
    durable_tx: watch::Sender<u64>,
    /// Set when the records live on etcd.
    etcd: OnceLock<Arc<on_etcd::Backend>>,
    log_start: Arc<AtomicU64>,
    bus: Bus,
    metrics: Arc<Metrics>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set once, with the reason, if the writer stopped on a storage failure.
    failed: watch::Receiver<Option<String>>,
    /// Its sender, for the etcd applier (the writer holds the other).
    fail: watch::Sender<Option<String>>,
    /// Counts durable changes to who may do what: an account written or
    /// removed, a token removed. Live connections watch it to re-check
    /// their credentials.
    access_changes: watch::Sender<u64>,
}

/// A write queued by [`Store::enqueue`].
pub struct PendingWrite(writer::Answer);

impl PendingWrite {
    /// Waits until the write is durable (or refused) and returns its change.
    pub async fn durable(self) -> Result<Arc<ChangeEvent>, StoreError> {
        self.0
            .await
            .map_err(|_| StoreError::ShuttingDown)??
            .ok_or_else(|| StoreError::Storage("the writer made no change".into()))
    }
}

const LAST_SEQ_KEY: &[u8] = b"last_seq";
/// Who owned an MQTT client id before this node's claim of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientOwner {
    /// No node (never claimed, or its node's lease ended since).
    Nobody,
    ThisNode,
    /// Another node, told to close its connection and save the session.
    OtherNode,
}

/// What another node did that concerns an MQTT client of this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Another node claimed a client this node had, at `revision`: its
    /// connection here closes and its session is saved for that node.
    TakenOver { client_id: String, revision: u64 },
    /// The node of a client died with the client's will unsent, and this
    /// node is the one survivor to send it (`will` as the broker stored it).
    WillOrphaned { client_id: String, will: Vec<u8> },
}

/// Set in a data dir that caches an etcd store: which one (`etcd:{prefix}`).
const CACHE_OF_KEY: &[u8] = b"cache_of";
/// What such a cache holds, so a cache made by an older Marquee is built
/// again: `2`, the whole state; none, the records alone (accounts, tokens,
/// sessions and tables were then each node's own).
const CACHE_FORMAT_KEY: &[u8] = b"cache_format";
const CACHE_FORMAT: &[u8] = b"2";
const TABLE_KEY_PREFIX: &str = "table:";
const SESSION_KEY_PREFIX: &str = "session:";
/// fjall's defaults (64 MiB per memtable, a 32 MiB block cache) suit a
/// database server, not a small process: every write adds a version of its
/// record, a change-log entry and the last seq to three memtables, which are
/// only freed when flushed, so a busy minute held ~200 MB, and whatever is
/// in them when a burst ends stays until the next one fills them. Flushing
/// records at 2 MiB and the rest at 1 MiB keeps that under 8 MB above idle
/// (the memory bench's REST burst), at the cost of more, smaller segments
/// for compaction to merge: no fewer writes per CPU-second in that bench.
const BUSY_MEMTABLE: u64 = 2 * 1024 * 1024;
/// The change log (written once, read back only by resumes), the last seq,
/// accounts and tokens.
const QUIET_MEMTABLE: u64 = 1024 * 1024;
/// Blocks read back from disk: records not written since the last flush. A
/// sign installation's working set is small; a cold read costs one disk read.
const BLOCK_CACHE: u64 = 8 * 1024 * 1024;
/// fjall's background threads (memtable flushes and compactions). With more
/// than one, fjall's worker 0 hands every compaction request back to the
/// queue so another worker takes it, and while that worker compacts, worker
/// 0 keeps receiving and re-sending the same requests: a busy loop that was
/// ~9% of the server's CPU under steady REST writes (small memtables mean a
/// flush, and compaction requests, every few thousand writes). One worker
/// flushes and compacts in turn; a sign installation's segments are small.
const FJALL_WORKERS: usize = 1;
/// Writes waiting for the writer before callers wait for room.
const WRITE_QUEUE: usize = 16_384;

impl Store {
    /// Opens (or creates) the store; fjall's journal recovery restores every
    /// acknowledged write.
    pub fn open(
        options: StoreOptions,
        bus: Bus,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| {
            StoreError::Storage(format!("cannot create {}: {e}", options.data_dir.display()))
        })?;
        restrict_permissions(&options.data_dir);
        let db = Database::builder(&options.data_dir)
            .cache_size(BLOCK_CACHE)
            .worker_threads(FJALL_WORKERS)
            .open()?;
        let keyspace = |name: &str, memtable: u64| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let records = keyspace("records", BUSY_MEMTABLE)?;
        let changes = keyspace("changes", QUIET_MEMTABLE)?;
        let meta = keyspace("meta", QUIET_MEMTABLE)?;
        let accounts = keyspace("accounts", QUIET_MEMTABLE)?;
        let tokens = keyspace("tokens", QUIET_MEMTABLE)?;

        if options.address == StoreAddress::Embedded
            && let Some(of) = meta.get(CACHE_OF_KEY)?
        {
            return Err(StoreError::Storage(format!(
                "{} is a node's cache of the etcd store {}; start with --store etcd://… or use another data dir",
                options.data_dir.display(),
                String::from_utf8_lossy(&of).trim_start_matches("etcd:")
            )));
        }
        let last_seq = meta.get(LAST_SEQ_KEY)?.map(|v| decode_seq(&v)).unwrap_or(0);
        let first_logged = match changes.first_key_value() {
            Some(guard) => decode_seq(&guard.key()?),
            None => last_seq + 1,
        };

        let mut tables = BTreeMap::new();
        for name in BUILTIN_TABLES {
            tables.insert(
                (*name).to_owned(),
                TableDef {
                    builtin: true,
                    schema: None,
                },
            );
        }
        for guard in meta.prefix(TABLE_KEY_PREFIX) {
            let (_, value) = guard.into_inner()?;
            let decl: TableDecl = serde_json::from_slice(&value)
                .map_err(|e| StoreError::Storage(format!("corrupt table declaration: {e}")))?;
            let def = table_def(&decl)?;
            tables.insert(decl.name, def);
        }
        // Tables in the config file are (re)declared on every start; the file wins.
        for decl in &options.tables {
            validate_table_name(&decl.name)?;
            if BUILTIN_TABLES.contains(&decl.name.as_str()) {
                return Err(StoreError::BadName(format!(
                    "table '{}' is built in and cannot be declared in the config",
                    decl.name
                )));
            }
            let def = table_def(decl)?;
            tables.insert(decl.name.clone(), def);
        }

        let (durable_tx, durable) = watch::channel(last_seq);
        let durable_sender = durable_tx.clone();
        let (failed_tx, failed) = watch::channel(None);
        let (writes, requests) = mpsc::channel(WRITE_QUEUE);
        let log_start = Arc::new(AtomicU64::new(first_logged));
        let tables: Tables = Arc::new(RwLock::new(tables));
        let shared = {
            let state = writer::Writer {
                db: db.clone(),
                records: records.clone(),
                changes: changes.clone(),
                meta: meta.clone(),
                accounts: accounts.clone(),
                tokens: tokens.clone(),
                tables: tables.clone(),
                last_seq,
                window: options.change_log_window.max(1),
                log_start: log_start.clone(),
                durable: durable_tx,
                bus: bus.clone(),
                metrics: metrics.clone(),
                failed: failed_tx.clone(),
                fail_persist_after: options.fail_persist_after,
                ids: Default::default(),
                stopped: None,
                last_commit: (std::time::Instant::now(), std::time::Duration::ZERO),
                known: Default::default(),
            };
            let committer = writer::Committer::new(state);
            let handle = std::thread::Builder::new()
                .name("marquee-writer".into())
                .spawn({
                    let committer = committer.clone();
                    move || committer.run(requests)
                })
                .ok();
            Arc::new(Shared {
                db,
                records,
                changes,
                meta,
                accounts,
                tokens,
                tables,
                writes,
                committer,
                inline_commits: another_worker(),
                durable,
                durable_tx: durable_sender,
                etcd: OnceLock::new(),
                log_start,
                bus,
                metrics,
                writer: Mutex::new(handle),
                failed,
                fail: failed_tx,
                access_changes: watch::Sender::new(0),
            })
        };
        if shared.writer.lock().map(|w| w.is_none()).unwrap_or(true) {
            return Err(StoreError::Storage("cannot start the writer thread".into()));
        }
        let store = Store { shared };
        store.persist_config_tables(&options.tables)?;
        Ok(store)
    }

    /// Opens the store wherever its records live: [`Store::open`] for the
    /// embedded store; on etcd, opens the data dir as this node's cache,
    /// brings it up to etcd and follows etcd from then on.
    pub async fn connect(
        options: StoreOptions,
        bus: Bus,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let address = options.address.clone();
        let window = options.change_log_window;
        let config_tables = options.tables.clone();
        let store = Self::open(options, bus, metrics)?;
        let StoreAddress::Etcd(etcd) = address else {
            return Ok(store);
        };
        let log = etcd::EtcdLog::connect(&etcd.endpoints, &etcd.prefix)
            .await
            .map_err(|e| StoreError::Storage(format!("etcd: {e}")))?;
        let shared = &store.shared;
        // A cache of another store (or of this one before etcd lost its
        // history, say restored from a backup) starts again from etcd's records.
        let marker = format!("etcd:{}", etcd.prefix).into_bytes();
        let head = log
            .current_revision()
            .await
            .map_err(|e| StoreError::Storage(format!("etcd: {e}")))?;
        let cached = shared.meta.get(CACHE_OF_KEY)?;
        let format = shared.meta.get(CACHE_FORMAT_KEY)?;
        if cached.as_deref() != Some(marker.as_slice())
            || format.as_deref() != Some(CACHE_FORMAT)
            || *shared.durable.borrow() > head
        {
            shared.durable_tx.send_replace(0);
        }
        shared.meta.insert(CACHE_OF_KEY, marker)?;
        shared.meta.insert(CACHE_FORMAT_KEY, CACHE_FORMAT)?;
        let revisions = shared.db.keyspace(on_etcd::REVISIONS_KEYSPACE, || {
            KeyspaceCreateOptions::default().max_memtable_size(QUIET_MEMTABLE)
        })?;
        let backend = on_etcd::Backend::start(
            log,
            node_name(),
            on_etcd::Attach {
                cache: on_etcd::Cache {
                    db: shared.db.clone(),
                    records: shared.records.clone(),
                    changes: shared.changes.clone(),
                    meta: shared.meta.clone(),
                    accounts: shared.accounts.clone(),
                    tokens: shared.tokens.clone(),
                    revisions,
                },
                tables: shared.tables.clone(),
                durable: shared.durable_tx.clone(),
                access: shared.access_changes.clone(),
                log_start: shared.log_start.clone(),
                bus: shared.bus.clone(),
                window,
                metrics: shared.metrics.clone(),
                failed: shared.fail.clone(),
            },
        )
        .await?;
        // Before anyone can write: the file's tables, declared for every node.
        let declared = backend.declare_config_tables(&config_tables).await;
        let _ = shared.etcd.set(backend);
        if let Err(e) = declared {
            store.shutdown().await;
            return Err(e);
        }
        Ok(store)
    }

    /// On etcd, waits until this node has applied every write acknowledged
    /// (on any node) before the call, so that reads see them as on one node:
    /// one linearizable read of etcd, and rarely a wait. Nothing to do on the
    /// embedded store, whose every acknowledged write is already here.
    pub async fn caught_up(&self) -> Result<(), StoreError> {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.caught_up().await,
            None => Ok(()),
        }
    }

    /// Whether the records live on etcd.
    pub fn on_etcd(&self) -> bool {
        self.shared.etcd.get().is_some()
    }

    /// Whether this node holds `role` (a job one node does for all, such as
    /// the `player`) now, and its changes. The embedded store is the only
    /// node, so it holds every role for good: `true`, never changing (its
    /// sender is gone at once). On etcd the node campaigns for it (from the
    /// first call on) and it reads `true` while this node holds it; once the
    /// store stops it reads `false` for good. Names: non-empty, without `/`.
    pub fn leadership(&self, role: &str) -> Result<watch::Receiver<bool>, StoreError> {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.leadership(role),
            None => Ok(watch::channel(true).1),
        }
    }

    /// Says whether this node has members of the MQTT shared subscription
    /// `subscription` (`$share/{group}/{filter}`) now: on etcd the nodes that
    /// have share its messages out (see [`Store::takes_shared`]). Nothing to
    /// do on the embedded store.
    pub fn share_here(&self, subscription: &str, here: bool) {
        if let Some(etcd) = self.shared.etcd.get() {
            etcd.share_here(subscription, here);
        }
    }

    /// Whether this node hands `event` to its members of `subscription`: on
    /// etcd, exactly one of the nodes with members does, the same one as
    /// every node sees it, chosen without asking etcd (`on_etcd/shares.rs`);
    /// on the embedded store, this node always does.
    pub fn takes_shared(&self, subscription: &str, event: &ChangeEvent) -> bool {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.takes_shared(subscription, event),
            None => true,
        }
    }

    fn persist_config_tables(&self, decls: &[TableDecl]) -> Result<(), StoreError> {
        let mut batch = self.shared.db.batch();
        for decl in decls {
            let bytes = serde_json::to_vec(decl).map_err(|e| StoreError::Storage(e.to_string()))?;
            batch.insert(&self.shared.meta, table_key(&decl.name), bytes);
        }
        batch.commit()?;
        self.shared.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    /// Commits `op` durably and returns the change it made. The change is on
    /// the bus by the time this returns.
    pub async fn write(&self, op: WriteOp, origin: Origin) -> Result<Arc<ChangeEvent>, StoreError> {
        if let Some(etcd) = self.shared.etcd.get() {
            return self.write_on_etcd(etcd, op, origin, None).await;
        }
        let (request, answer) = writer::Request::new(writer::Command::Write(op, origin, None));
        let queue = if self.shared.inline_commits {
            self.shared.committer.commit_if_idle(request)
        } else {
            Some(request)
        };
        if let Some(request) = queue {
            self.send(request).await?;
        }
        PendingWrite(answer).durable().await
    }

    /// Queues `op` behind every write queued before it and returns at once;
    /// [`PendingWrite::durable`] waits for the commit. A connection that
    /// pipelines writes keeps their order this way. `mqtt` rides along on the
    /// change for MQTT subscribers.
    pub async fn enqueue(
        &self,
        op: WriteOp,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<PendingWrite, StoreError> {
        if let Some(etcd) = self.shared.etcd.get() {
            // Committed before returning, so a connection's writes keep
            // their order across etcd's concurrent transactions, at the
            // price of no pipelining: one round trip per stored write.
            let result = self.write_on_etcd(etcd, op, origin, mqtt).await.map(Some);
            let (reply, answer) = tokio::sync::oneshot::channel();
            let _ = reply.send(result);
            return Ok(PendingWrite(answer));
        }
        let (request, answer) = writer::Request::new(writer::Command::Write(op, origin, mqtt));
        self.send(request).await?;
        Ok(PendingWrite(answer))
    }

    /// A write on etcd. A patch or delete is planned on this node's cache,
    /// which may not have the record yet if another node made it a moment
    /// ago (a client behind a load balancer creating on one node, then
    /// editing on the other): not found there, it catches up and plans once
    /// more, as reads do. Nothing was written by the first plan.
    async fn write_on_etcd(
        &self,
        etcd: &on_etcd::Backend,
        op: WriteOp,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<Arc<ChangeEvent>, StoreError> {
        let again = match &op {
            WriteOp::Patch { .. } | WriteOp::Delete { .. } => Some(op.clone()),
            WriteOp::Put { .. } => None,
        };
        match (etcd.write(op, origin, mqtt.clone()).await, again) {
            (Err(StoreError::NotFound(_)), Some(op)) => {
                self.caught_up().await?;
                etcd.write(op, origin, mqtt).await
            }
            (result, _) => result,
        }
    }

    /// Declares a table at runtime (durably).
    pub async fn declare_table(&self, decl: TableDecl) -> Result<TableInfo, StoreError> {
        validate_table_name(&decl.name)?;
        table_def(&decl)?;
        let name = decl.name.clone();
        if let Some(etcd) = self.shared.etcd.get() {
            etcd.declare_table(&decl).await?;
        } else {
            self.submit(writer::Command::DeclareTable(decl)).await?;
        }
        self.table_info(&name)
            .ok_or_else(|| StoreError::Storage("table vanished after declaration".into()))
    }

    /// Claims an MQTT client id for this node, on a CONNECT: on etcd the
    /// newest claim wins whichever node made it, and the node that had the
    /// client is told through its [`Store::client_events`]. The claim keeps
    /// `will` (as the broker encodes it) until [`Store::settle_will`], so
    /// that if this node dies another sends it. Returns the claim's revision
    /// and who owned the client before. The embedded store is the only
    /// node: `(0, ThisNode)`.
    pub async fn claim_client(
        &self,
        client_id: &str,
        will: Option<&[u8]>,
    ) -> Result<(u64, ClientOwner), StoreError> {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.claim_client(client_id, will).await,
            None => Ok((0, ClientOwner::ThisNode)),
        }
    }

    /// Takes the will off this node's claim of `client_id` (made at revision
    /// `claimed`), once the connection has ended and this node sent the
    /// will or had no need to. A later claim is left alone. Whether that
    /// claim was still the client's latest (embedded: the broker knows).
    pub async fn settle_will(&self, client_id: &str, claimed: u64) -> Result<bool, StoreError> {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.settle_will(client_id, claimed).await,
            None => Ok(true),
        }
    }

    /// Whether any node holds a claim of `client_id` now (a client back
    /// since its node died). Embedded: false, there is no other node.
    pub async fn client_claimed(&self, client_id: &str) -> Result<bool, StoreError> {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.client_claimed(client_id).await,
            None => Ok(false),
        }
    }

    /// What other nodes do that concerns this node's MQTT clients. Embedded,
    /// it ends at once (there is no other node).
    pub fn client_events(&self) -> mpsc::Receiver<ClientEvent> {
        match self.shared.etcd.get() {
            Some(etcd) => etcd.client_events(),
            None => mpsc::channel(1).1,
        }
    }

    /// One saved MQTT session's state, as [`Store::saved_sessions`] has it
    /// (on etcd, as this node's cache has it so far).
    pub fn saved_session(&self, client_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("{SESSION_KEY_PREFIX}{client_id}");
        Ok(self.shared.meta.get(key)?.map(|value| value.to_vec()))
    }

    /// Saves an MQTT session's state (or with `None` forgets it), durably,
    /// so persistent sessions outlive a restart.
    pub async fn save_session(
        &self,
        client_id: &str,
        state: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        if let Some(etcd) = self.shared.etcd.get() {
            return etcd.save_session(client_id, state).await;
        }
        let key = format!("{SESSION_KEY_PREFIX}{client_id}").into_bytes();
        self.submit(writer::Command::SetMeta(key, state))
            .await
            .map(|_| ())
    }

    /// Stores an account under its user name, durably: `create` refuses a
    /// name that is taken, otherwise the account must exist.
    pub async fn put_account(
        &self,
        username: &str,
        account: Vec<u8>,
        create: bool,
    ) -> Result<(), StoreError> {
        // On etcd every node's applier tells its connections, this one's too.
        if let Some(etcd) = self.shared.etcd.get() {
            return etcd.put_account(username, account, create).await;
        }
        self.submit(writer::Command::PutAccount {
            username: username.to_owned(),
            account,
            create,
        })
        .await?;
        self.access_changed();
        Ok(())
    }

    /// Removes an account, durably.
    pub async fn delete_account(&self, username: &str) -> Result<(), StoreError> {
        if let Some(etcd) = self.shared.etcd.get() {
            return etcd.delete_account(username).await;
        }
        self.submit(writer::Command::DeleteAccount(username.to_owned()))
            .await?;
        self.access_changed();
        Ok(())
    }

    /// An account as stored, by user name.
    pub fn account(&self, username: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.shared.accounts.get(username)?.map(|v| v.to_vec()))
    }

    /// Every account as stored, in user-name order.
    pub fn accounts(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for guard in self.shared.accounts.iter() {
            let (_, value) = guard.into_inner()?;
            out.push(value.to_vec());
        }
        Ok(out)
    }

    /// Stores (or with `None` removes) a token under the hash of its secret, durably.
    pub async fn set_token(&self, hash: &[u8], token: Option<Vec<u8>>) -> Result<(), StoreError> {
        if let Some(etcd) = self.shared.etcd.get() {
            return etcd.set_token(hash, token).await;
        }
        let removed = token.is_none();
        self.submit(writer::Command::SetToken(hash.to_vec(), token))
            .await?;
        if removed {
            self.access_changed();
        }
        Ok(())
    }

    /// Removes a token if it is there: whether this call removed it. Of
    /// calls racing on any nodes, one takes it (a setup link used once).
    pub async fn take_token(&self, hash: &[u8]) -> Result<bool, StoreError> {
        let taken = match self.shared.etcd.get() {
            Some(etcd) => etcd.take_token(hash).await?,
            None => {
                // The writer applies commands one at a time, but the check
                // comes before it: callers on one node take turns (the
                // guard's setup lock).
                if self.token(hash)?.is_none() {
                    return Ok(false);
                }
                self.submit(writer::Command::SetToken(hash.to_vec(), None))
                    .await?;
                true
            }
        };
        if taken {
            self.access_changed();
        }
        Ok(taken)
    }

    /// Changes whenever an account is written or removed or a token is
    /// removed, after the change is durable.
    pub fn access_changes(&self) -> watch::Receiver<u64> {
        self.shared.access_changes.subscribe()
    }

    fn access_changed(&self) {
        self.shared
            .access_changes
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A token as stored, by the hash of its secret.
    pub fn token(&self, hash: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.shared.tokens.get(hash)?.map(|v| v.to_vec()))
    }

    /// Every token as stored: the hash of its secret and the token.
    pub fn tokens(&self) -> Result<Vec<RawEntry>, StoreError> {
        let mut out = Vec::new();
        for guard in self.shared.tokens.iter() {
            let (key, value) = guard.into_inner()?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Every saved MQTT session: client id and state.
    pub fn saved_sessions(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.shared.meta.prefix(SESSION_KEY_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let id =
                String::from_utf8_lossy(key.get(SESSION_KEY_PREFIX.len()..).unwrap_or_default())
                    .into_owned();
            out.push((id, value.to_vec()));
        }
        Ok(out)
    }

    /// Removes an empty, non-built-in table.
    pub async fn drop_table(&self, name: &str) -> Result<(), StoreError> {
        if let Some(etcd) = self.shared.etcd.get() {
            // Declared on another node a moment ago? Only a miss costs the wait.
            return match etcd.drop_table(name).await {
                Err(StoreError::NoSuchTable(_)) => {
                    self.caught_up().await?;
                    etcd.drop_table(name).await
                }
                result => result,
            };
        }
        self.submit(writer::Command::DropTable(name.to_owned()))
            .await?;
        Ok(())
    }

    async fn submit(
        &self,
        command: writer::Command,
    ) -> Result<Option<Arc<ChangeEvent>>, StoreError> {
        let (request, answer) = writer::Request::new(command);
        self.send(request).await?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Queues `request` for the writer thread; its answer comes on the
    /// receiver made with it.
    async fn send(&self, request: writer::Request) -> Result<(), StoreError> {
        self.shared.committer.queued();
        let sent = self.shared.writes.send(request).await;
        if sent.is_err() {
            self.shared.committer.settled(1);
        }
        sent.map_err(|_| StoreError::ShuttingDown)
    }

    /// Delivers a transient message to subscribers on every protocol; nothing is stored.
    pub fn publish(
        &self,
        table: &str,
        id: &str,
        value: Value,
        origin: Origin,
    ) -> Result<(), StoreError> {
        self.publish_with(table, id, value, origin, None)
    }

    /// [`Store::publish`], with what an MQTT publish carried besides its payload.
    pub fn publish_with(
        &self,
        table: &str,
        id: &str,
        value: Value,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<(), StoreError> {
        let event = self.transient(table, id, value, origin, mqtt)?;
        match self.shared.etcd.get() {
            Some(etcd) => etcd.publish(event, None),
            None => {
                self.shared.bus.publish(event);
                Ok(())
            }
        }
    }

    /// [`Store::publish_with`] for a publisher that can wait (an MQTT
    /// connection, which then stops reading its socket): on etcd, while too
    /// many messages are on their way to the other nodes it waits for room
    /// instead of refusing at once.
    pub async fn publish_waiting(
        &self,
        table: &str,
        id: &str,
        value: Value,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<(), StoreError> {
        match self.shared.etcd.get() {
            Some(etcd) => {
                let event = self.transient(table, id, value, origin, mqtt)?;
                etcd.publish_when_room(event).await
            }
            None => self.publish_with(table, id, value, origin, mqtt),
        }
    }

    /// A transient message for this node's subscribers only, never the other
    /// nodes': what each node makes for itself (`$SYS` figures, the frames a
    /// device connected here is sent).
    pub fn publish_here(
        &self,
        table: &str,
        id: &str,
        value: Value,
        origin: Origin,
    ) -> Result<(), StoreError> {
        let event = self.transient(table, id, value, origin, None)?;
        self.shared.bus.publish(event);
        Ok(())
    }

    /// A transient publish queued behind every write queued before it: the
    /// writer puts it on the bus after their changes, so a connection whose
    /// writes are still on their way keeps its order without waiting for
    /// them. [`PendingWrite::durable`] resolves once it is on the bus.
    pub async fn publish_queued(
        &self,
        table: &str,
        id: &str,
        value: Value,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<PendingWrite, StoreError> {
        let event = self.transient(table, id, value, origin, mqtt)?;
        if let Some(etcd) = self.shared.etcd.get() {
            let (reply, answer) = tokio::sync::oneshot::channel();
            etcd.publish(event, Some(reply))?;
            return Ok(PendingWrite(answer));
        }
        let (request, answer) = writer::Request::new(writer::Command::Publish(event));
        self.send(request).await?;
        Ok(PendingWrite(answer))
    }

    /// Checks a transient message and makes its change event.
    fn transient(
        &self,
        table: &str,
        id: &str,
        value: Value,
        origin: Origin,
        mqtt: Option<Arc<MqttMeta>>,
    ) -> Result<Arc<ChangeEvent>, StoreError> {
        self.require_table(table)?;
        validate_record_id(table, id)?;
        if !value.is_object() {
            return Err(StoreError::Invalid(
                "a message must be a JSON object".into(),
            ));
        }
        Ok(Arc::new(ChangeEvent {
            seq: None,
            kind: ChangeType::Publish,
            table: table.to_owned(),
            id: id.to_owned(),
            version: None,
            ts: clock::now_rfc3339(),
            origin,
            value: Some(value),
            mqtt,
            created: false,
            carried_at: None,
        }))
    }

    /// The record as last made durable.
    pub async fn get(&self, table: &str, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        self.require_table_now(table).await?;
        validate_record_id(table, id)?;
        self.caught_up().await?;
        let records = self.shared.records.clone();
        let key = record_key(table, id);
        let found = blocking(move || Ok(records.get(key)?)).await?;
        let record = found.map(|bytes| decode_record(&bytes)).transpose()?;
        if let Some(record) = &record {
            self.wait_durable(record.seq).await?;
        }
        Ok(record)
    }

    /// One page of a table, in id order, starting after `after`.
    pub async fn list(
        &self,
        table: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<RecordPage, StoreError> {
        self.require_table_now(table).await?;
        let view = self.view().await?;
        let filter = TopicFilter::parse(&format!("{table}/+"))
            .map_err(|e| StoreError::BadName(e.to_string()))?;
        let (events, next) = self.read_state(&view, &filter, after, limit).await?;
        let items = events
            .into_iter()
            .filter_map(|e| {
                Some(RecordItem {
                    version: e.version?,
                    seq: e.seq?,
                    id: e.id,
                    ts: e.ts,
                    value: e.value?,
                })
            })
            .collect();
        Ok(RecordPage { items, next })
    }

    /// A consistent view of all durable records.
    pub async fn view(&self) -> Result<ReadView, StoreError> {
        self.caught_up().await?;
        let db = self.shared.db.clone();
        let meta = self.shared.meta.clone();
        let view = blocking(move || {
            let snapshot = db.snapshot();
            let seq = snapshot
                .get(&meta, LAST_SEQ_KEY)?
                .map(|v| decode_seq(&v))
                .unwrap_or(0);
            Ok(ReadView { snapshot, seq })
        })
        .await?;
        self.wait_durable(view.seq).await?;
        Ok(view)
    }

    /// Current records matching `filter` as `put` events, in key order, up to
    /// `limit`, starting after the record id `after` (only with a one-table filter)
    /// or the topic `after`. Returns the events and where the next page starts.
    pub async fn read_state(
        &self,
        view: &ReadView,
        filter: &TopicFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ChangeEvent>, Option<String>), StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let snapshot = view.snapshot.clone();
        let records = self.shared.records.clone();
        let filter = filter.clone();
        blocking(move || {
            let prefix = match filter.literal_table() {
                Some(table) => {
                    let mut p = table.as_bytes().to_vec();
                    p.push(0);
                    p
                }
                None => Vec::new(),
            };
            let start = match &after {
                Some(cursor) if filter.literal_table().is_some() => {
                    let mut k = prefix.clone();
                    k.extend_from_slice(cursor.as_bytes());
                    k.push(0);
                    k
                }
                Some(cursor) => {
                    let mut k = cursor.replacen('/', "\0", 1).into_bytes();
                    k.push(0);
                    k
                }
                None => prefix.clone(),
            };
            let mut out = Vec::new();
            let mut next = None;
            let mut page_bytes = 0;
            for guard in snapshot.range(&records, start..) {
                let (key, bytes) = guard.into_inner()?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let Some((table, id)) = split_record_key(&key) else {
                    continue;
                };
                let topic = format!("{table}/{id}");
                if !filter.matches(&topic) {
                    continue;
                }
                if out.len() == limit || page_bytes >= PAGE_BYTES {
                    next = Some(match filter.literal_table() {
                        Some(_) => out
                            .last()
                            .map(|e: &ChangeEvent| e.id.clone())
                            .unwrap_or_default(),
                        None => out
                            .last()
                            .map(|e: &ChangeEvent| e.topic())
                            .unwrap_or_default(),
                    });
                    break;
                }
                page_bytes += bytes.len();
                let record = decode_record(&bytes)?;
                out.push(ChangeEvent {
                    seq: Some(record.seq),
                    kind: ChangeType::Put,
                    table: table.to_owned(),
                    id: id.to_owned(),
                    version: Some(record.version),
                    ts: record.ts,
                    origin: record.origin,
                    value: Some(record.value),
                    mqtt: None,
                    created: false,
                    carried_at: None,
                });
            }
            Ok((out, next))
        })
        .await
    }

    /// Committed changes after `since` (matching `filter`, if given), oldest first,
    /// at most `limit`. Also returns the last seq examined, so a caller can page on.
    pub async fn changes_since(
        &self,
        since: u64,
        filter: Option<&TopicFilter>,
        limit: usize,
    ) -> Result<(Vec<ChangeEvent>, u64), StoreError> {
        // A seq another node made is a resume point here too, not a gap.
        self.caught_up().await?;
        let last = *self.shared.durable.borrow();
        let oldest = self.shared.log_start.load(Ordering::Acquire);
        if since > last || since.saturating_add(1) < oldest {
            return Err(StoreError::ResumeGap { since, oldest });
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let changes = self.shared.changes.clone();
        let filter = filter.cloned();
        let (events, scanned, full) = blocking(move || {
            let mut out = Vec::new();
            let mut scanned = since;
            let mut page_bytes = 0;
            let start = (since + 1).to_be_bytes();
            // Exclusive of the next seq, so a revision's second and later
            // changes (keyed seq + index, on etcd) are in.
            let end = last.saturating_add(1).to_be_bytes();
            for guard in changes.range(start..end) {
                let (key, bytes) = guard.into_inner()?;
                scanned = decode_seq(&key);
                let event: ChangeEvent = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Storage(format!("corrupt change log entry: {e}")))?;
                if filter.as_ref().is_none_or(|f| f.matches(&event.topic())) {
                    out.push(event);
                    page_bytes += bytes.len();
                    if out.len() == limit || page_bytes >= PAGE_BYTES {
                        return Ok((out, scanned, true));
                    }
                }
            }
            Ok((out, scanned, false))
        })
        .await?;
        // The log may have been trimmed under us while reading.
        let oldest = self.shared.log_start.load(Ordering::Acquire);
        if since.saturating_add(1) < oldest {
            return Err(StoreError::ResumeGap { since, oldest });
        }
        let scanned = if full { scanned } else { last };
        Ok((events, scanned))
    }

    /// Resolves, with the reason, if the writer stops because a commit or an
    /// fsync failed. The process must then exit: what is on disk is for the
    /// next start's recovery to decide.
    pub async fn failed(&self) -> String {
        let mut failed = self.shared.failed.clone();
        match failed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The writer ended without failing: never resolve.
            Err(_) => std::future::pending().await,
        }
    }

    /// The seq of the last durable change.
    pub fn last_seq(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn tables(&self) -> Vec<TableInfo> {
        self.read_tables()
            .iter()
            .map(|(name, def)| info(name, def))
            .collect()
    }

    pub fn table_info(&self, name: &str) -> Option<TableInfo> {
        self.read_tables().get(name).map(|def| info(name, def))
    }

    pub fn require_table(&self, name: &str) -> Result<(), StoreError> {
        if self.read_tables().contains_key(name) {
            Ok(())
        } else {
            Err(StoreError::NoSuchTable(name.to_owned()))
        }
    }

    /// [`Store::require_table`], counting a table declared on another node
    /// a moment ago: an unknown name first waits for this node to catch up.
    pub async fn require_table_now(&self, name: &str) -> Result<(), StoreError> {
        if self.require_table(name).is_err() && self.on_etcd() {
            self.caught_up().await?;
        }
        self.require_table(name)
    }

    /// Stops taking writes, commits every write already queued, and waits for
    /// the writer to finish.
    pub async fn shutdown(&self) {
        if let Some(etcd) = self.shared.etcd.get() {
            etcd.stop().await;
        }
        let (stop, answer) = writer::Request::new(writer::Command::Stop);
        if self.send(stop).await.is_ok() {
            let _ = answer.await;
        }
        let handle = self.shared.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut durable = self.shared.durable.clone();
        durable
            .wait_for(|d| *d >= seq)
            .await
            .map(|_| ())
            .map_err(|_| StoreError::ShuttingDown)
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, TableDef>> {
        self.shared
            .tables
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether this runs on a multi-threaded tokio runtime with a second worker,
/// which goes on serving while the first blocks in an inline commit's fsync.
/// This process's name among the nodes on one etcd store: random per start,
/// since what it names (its writes' ids, its transient publishes' key) ends
/// with the process.
fn node_name() -> String {
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("n{hex}")
}

fn another_worker() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && runtime.metrics().num_workers() >= 2
    })
}

/// Table names: letters, digits, `_` and `-`, not starting with `_`, at most 64 bytes.
pub fn validate_table_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TABLE_LEN
        && !name.starts_with('_')
        && !RESERVED_TABLES.contains(&name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(format!(
            "'{name}' is not a valid table name: use 1–{MAX_TABLE_LEN} letters, digits, '_' or '-', not starting with '_', and not 'changes' or 'ws'"
        )))
    }
}

/// A record id as `table` takes it: [`MQTT_TABLE`] ids are whole MQTT topics
/// (with `/`), every other table's follow [`validate_id`].
pub fn validate_record_id(table: &str, id: &str) -> Result<(), StoreError> {
    if table != MQTT_TABLE {
        return validate_id(id);
    }
    let ok = !id.is_empty()
        && id.len() <= MAX_TOPIC_ID_LEN
        && !id
            .chars()
            .any(|c| c == '+' || c == '#' || is_disallowed_in_name(c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(format!(
            "'{id}' is not a valid MQTT topic to keep: use 1–{MAX_TOPIC_ID_LEN} bytes without '+', '#', control characters or non-characters"
        )))
    }
}

/// Record ids: 1–256 bytes, no `/`, no MQTT wildcards, and nothing
/// [`is_disallowed_in_name`] refuses (so every id is a deliverable MQTT topic level).
pub fn validate_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id
            .chars()
            .any(|c| c == '/' || c == '+' || c == '#' || is_disallowed_in_name(c));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(format!(
            "'{id}' is not a valid record id: use 1–{MAX_ID_LEN} bytes without '/', '+', '#', control characters or non-characters"
        )))
    }
}

/// Checks a record of a table with a typed model and returns it with every default
/// filled in, so readers never need to know the defaults; other tables' records pass as
/// they are.
pub fn normalize(table: &str, value: Value) -> Result<Value, StoreError> {
    let checked = match table {
        SIGNS_TABLE => Sign::from_json(&value).map(|sign| sign.to_json()),
        MESSAGES_TABLE => Message::from_json(&value).map(|message| message.to_json()),
        DEVICES_TABLE => Device::from_json(&value).map(|device| device.to_json()),
        _ => return Ok(value),
    };
    checked.map_err(|e| StoreError::Invalid(e.to_string()))
}

fn table_def(decl: &TableDecl) -> Result<TableDef, StoreError> {
    let schema = decl
        .schema
        .clone()
        .map(Schema::new)
        .transpose()
        .map_err(StoreError::Invalid)?;
    Ok(TableDef {
        builtin: BUILTIN_TABLES.contains(&decl.name.as_str()),
        schema,
    })
}

fn info(name: &str, def: &TableDef) -> TableInfo {
    TableInfo {
        name: name.to_owned(),
        builtin: def.builtin,
        schema: def.schema.as_ref().map(|s| s.as_value().clone()),
    }
}

fn record_key(table: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(table.len() + id.len() + 1);
    key.extend_from_slice(table.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

fn split_record_key(key: &[u8]) -> Option<(&str, &str)> {
    let split = key.iter().position(|b| *b == 0)?;
    let table = std::str::from_utf8(key.get(..split)?).ok()?;
    let id = std::str::from_utf8(key.get(split + 1..)?).ok()?;
    Some((table, id))
}

fn table_key(name: &str) -> String {
    format!("{TABLE_KEY_PREFIX}{name}")
}

fn decode_seq(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    if let Some(src) = bytes.get(..8) {
        buf.copy_from_slice(src);
    }
    u64::from_be_bytes(buf)
}

fn decode_record(bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Storage(format!("corrupt record: {e}")))
}

/// Runs blocking fjall work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))?
}

#[cfg(unix)]
fn restrict_permissions(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), "cannot make the data directory private: {e}");
    }
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &std::path::Path) {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;

    fn open(dir: &tempfile::TempDir) -> Store {
        open_failing_after(dir, None)
    }

    /// With the test hook: fsyncs fail after this many commits.
    fn open_failing_after(dir: &tempfile::TempDir, commits: Option<u64>) -> Store {
        let metrics = Arc::new(Metrics::default());
        Store::open(
            StoreOptions {
                data_dir: dir.path().join("data"),
                change_log_window: 1000,
                tables: Vec::new(),
                fail_persist_after: commits,
                address: StoreAddress::Embedded,
            },
            Bus::new(crate::bus::QueueLimit::events(64), metrics.clone()),
            metrics,
        )
        .expect("store opens")
    }

    fn put(table: &str, id: &str, value: Value) -> WriteOp {
        WriteOp::Put {
            table: table.into(),
            id: Some(id.into()),
            value,
            if_match: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signs_and_messages_are_checked_and_stored_with_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);

        let event = store
            .write(
                put("signs", "lobby", json!({"name": "Lobby"})),
                Origin::Rest,
            )
            .await
            .unwrap();
        let stored = store.get("signs", "lobby").await.unwrap().unwrap().value;
        assert_eq!(stored["width"], 64);
        assert_eq!(stored["height"], 16);
        assert_eq!(stored["shows"], Value::Null);
        // Subscribers see what was stored, not what was sent.
        assert_eq!(event.value.as_ref(), Some(&stored));

        // A patch is checked as the record it makes, and a refusal changes nothing.
        let refused = store
            .write(
                WriteOp::Patch {
                    table: "signs".into(),
                    id: "lobby".into(),
                    patch: json!({"width": 300}),
                    if_match: None,
                },
                Origin::Mqtt,
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            StoreError::Invalid("width: must be between 1 and 256".into())
        );
        let after = store.get("signs", "lobby").await.unwrap().unwrap();
        assert_eq!(after.version, 1);
        assert_eq!(after.value, stored);

        let refused = store
            .write(
                put("messages", "hi", json!({"text": "Hi", "speed": 0})),
                Origin::Ws,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::Invalid(m) if m.starts_with("speed:")),
            "{refused:?}"
        );
        store
            .write(put("messages", "hi", json!({"text": "Hi"})), Origin::Ws)
            .await
            .unwrap();
        let message = store.get("messages", "hi").await.unwrap().unwrap().value;
        assert_eq!(message["duration"], 10);
        assert_eq!(message["effect"], "static");

        // Tables without a model keep whatever object they are given.
        store
            .write(put("mqtt", "d1", json!({"anything": [1, 2]})), Origin::Rest)
            .await
            .unwrap();
        let raw = store.get("mqtt", "d1").await.unwrap().unwrap().value;
        assert_eq!(raw, json!({"anything": [1, 2]}));
        let refused = store
            .write(put("devices", "d1", json!({"anything": 1})), Origin::Rest)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{refused:?}"
        );
        store.shutdown().await;
    }

    /// While the writer is idle a write commits on the caller's own thread
    /// (no hand-off to the writer thread and back), but never on a runtime
    /// whose only worker that would block.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_store_commits_writes_on_the_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut subscriber = store.bus().subscribe();
        subscriber.add_filter(&crate::topic::TopicFilter::parse("mqtt/#").unwrap());
        for i in 0..20 {
            // A low rate: the writer rests longer than a commit takes.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let event = store
                .write(put("mqtt", "a", json!({"i": i})), Origin::Rest)
                .await
                .unwrap();
            assert_eq!(event.seq, Some(i + 1));
        }
        // (An fsync slower than the pause sends a write to the thread instead.)
        let inline = store.metrics().inline_commits.get();
        assert!(
            inline >= 15,
            "only {inline} of 20 idle writes were committed inline"
        );
        assert_eq!(store.metrics().commits.get(), 20);
        for i in 0..20 {
            let event = subscriber.recv().await.unwrap();
            assert_eq!(
                event.seq,
                Some(i + 1),
                "the bus has every change once, in order"
            );
        }
        store.shutdown().await;
        // Shut down, the caller does not commit either: it is refused.
        let refused = store.write(put("mqtt", "a", json!({})), Origin::Rest).await;
        assert_eq!(refused.unwrap_err(), StoreError::ShuttingDown);
    }

    /// One caller writing after each answer, with no pause: nobody else's
    /// write comes during a commit, so each is committed inline too (unless
    /// an fsync takes a millisecond or more).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_writer_commits_back_to_back_writes_inline() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..50 {
            let event = store
                .write(put("mqtt", "a", json!({"i": i})), Origin::Rest)
                .await
                .unwrap();
            assert_eq!(event.seq, Some(i + 1));
        }
        let inline = store.metrics().inline_commits.get();
        assert!(
            inline >= 25,
            "only {inline} of 50 back-to-back writes were committed inline"
        );
        assert_eq!(store.metrics().commits.get(), 50);
        store.shutdown().await;
    }

    /// Writes queued together may share a batch: each sees the ones before
    /// it (a patch the value a put just made, a put the version), and the
    /// stored record is the last.
    #[tokio::test]
    async fn writes_in_one_batch_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let patch = |value: Value| WriteOp::Patch {
            table: "mqtt".into(),
            id: "a".into(),
            patch: value,
            if_match: None,
        };
        let ops = [
            put("mqtt", "a", json!({"x": 1})),
            patch(json!({"y": 2})),
            put("mqtt", "a", json!({"z": 3})),
            patch(json!({"x": 4})),
        ];
        let mut pending = Vec::new();
        for op in ops {
            pending.push(store.enqueue(op, Origin::Rest, None).await.unwrap());
        }
        let mut events = Vec::new();
        for write in pending {
            events.push(write.durable().await.unwrap());
        }
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.version, e.value.clone(), e.created))
            .collect();
        assert_eq!(
            seen,
            [
                (Some(1), Some(json!({"x": 1})), true),
                (Some(2), Some(json!({"x": 1, "y": 2})), false),
                (Some(3), Some(json!({"z": 3})), false),
                (Some(4), Some(json!({"z": 3, "x": 4})), false),
            ]
        );
        let stored = store.get("mqtt", "a").await.unwrap().unwrap();
        assert_eq!((stored.version, stored.seq), (4, 4));
        assert_eq!(stored.value, json!({"z": 3, "x": 4}));
        store.shutdown().await;
    }

    /// Batch after batch (the writer remembers the versions it committed),
    /// versions run on across a delete, stale If-Match tags fail and a
    /// patch still finds the stored value.
    #[tokio::test]
    async fn versions_follow_a_record_from_batch_to_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let write = |op| store.write(op, Origin::Rest);
        let first = write(put("mqtt", "a", json!({"x": 1}))).await.unwrap();
        assert_eq!((first.version, first.created), (Some(1), true));
        let again = write(put("mqtt", "a", json!({"x": 2}))).await.unwrap();
        assert_eq!((again.version, again.created), (Some(2), false));
        let stale = WriteOp::Put {
            table: "mqtt".into(),
            id: Some("a".into()),
            value: json!({"x": 3}),
            if_match: Some(1),
        };
        assert!(matches!(
            write(stale).await,
            Err(StoreError::VersionMismatch {
                expected: 1,
                current: 2
            })
        ));
        let patched = write(WriteOp::Patch {
            table: "mqtt".into(),
            id: "a".into(),
            patch: json!({"y": 4}),
            if_match: Some(2),
        })
        .await
        .unwrap();
        assert_eq!(patched.value, Some(json!({"x": 2, "y": 4})));
        let deleted = write(WriteOp::Delete {
            table: "mqtt".into(),
            id: "a".into(),
            if_match: None,
        })
        .await
        .unwrap();
        assert_eq!(deleted.version, Some(4));
        let back = write(put("mqtt", "a", json!({"x": 5}))).await.unwrap();
        assert_eq!((back.version, back.created), (Some(5), true));
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_single_worker_runtime_leaves_every_commit_to_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..5 {
            store
                .write(put("mqtt", "a", json!({"i": i})), Origin::Rest)
                .await
                .unwrap();
        }
        assert_eq!(store.metrics().inline_commits.get(), 0);
        assert_eq!(store.metrics().commits.get(), 5);
        store.shutdown().await;
    }

    /// A connection that queues a write and then writes again: the second
    /// must not commit inline ahead of the first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_never_overtakes_one_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for i in 0..100 {
            // Rested, so that only the queued write keeps the second from
            // committing inline.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            let queued = store
                .enqueue(put("mqtt", "queued", json!({"i": i})), Origin::Mqtt, None)
                .await
                .unwrap();
            let direct = store
                .write(put("mqtt", "direct", json!({"i": i})), Origin::Rest)
                .await
                .unwrap();
            let queued = queued.durable().await.unwrap();
            assert!(
                queued.seq < direct.seq,
                "round {i}: the queued write got seq {:?}, the later one {:?}",
                queued.seq,
                direct.seq
            );
        }
        assert_eq!(store.last_seq(), 200);
        store.shutdown().await;
    }

    /// A failed fsync in an inline commit stops the writer as one in the
    /// writer thread does: that write and every later one are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_inline_commit_stops_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_failing_after(&dir, Some(2));
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(20));
        for i in 0..2 {
            pause().await;
            store
                .write(put("mqtt", "a", json!({"i": i})), Origin::Rest)
                .await
                .unwrap();
        }
        pause().await;
        let failed = store
            .write(put("mqtt", "a", json!({"i": 2})), Origin::Rest)
            .await;
        assert!(
            matches!(&failed, Err(StoreError::Failed(why)) if why.contains("simulated fsync failure")),
            "{failed:?}"
        );
        assert!(store.failed().await.contains("simulated fsync failure"));
        pause().await;
        let later = store
            .write(put("mqtt", "a", json!({"i": 3})), Origin::Rest)
            .await;
        assert!(matches!(later, Err(StoreError::Failed(_))), "{later:?}");
        let queued = store
            .enqueue(put("mqtt", "a", json!({"i": 4})), Origin::Mqtt, None)
            .await;
        let queued = match queued {
            Ok(pending) => pending.durable().await,
            Err(e) => Err(e),
        };
        assert!(
            matches!(
                queued,
                Err(StoreError::Failed(_) | StoreError::ShuttingDown)
            ),
            "{queued:?}"
        );
        assert_eq!(
            store.last_seq(),
            2,
            "nothing after the failure counts as durable"
        );
    }
}
