//! The etcd side of the store, for several Marquee nodes on one etcd cluster
//! (issue 11; the facts and the mapping are in `../shared/SCALE-OUT.md`). It
//! knows nothing of fjall, schemas or JSON: it commits batches of writes of
//! the Store's state (records, table declarations, accounts, tokens, MQTT
//! sessions, transient publishes: one typed [`Key`] each) as etcd
//! transactions and watches them back in revision order, one total order for
//! all of them, reads all of that state at a revision (a node's cache is
//! built from one and then fed by the watch), keeps each node's lease and
//! presence, elects the one node that does a job for all (a role: the
//! compactor of the history, the playlist player), and tracks which node
//! owns each MQTT client id. `store/on_etcd` builds the Store on it
//! (`--store etcd://…`).
//!
//! # Keys (SCALE-OUT.md §5), under a prefix (default `/marquee/`)
//! - The Store's state, one kind per [`KeyKind`] (see `key.rs`):
//!   `acct/{username}`, `r/{table}/{id}`, `sess/{client_id}`, `t/{node}`,
//!   `tbl/{name}`, `tok/{hex}`. A record's table has no `/`; its id may (the
//!   `mqtt` table's ids are topics), so the first `/` after the table ends it.
//! - `{prefix}idem/{key}`: one per committed batch, named by the batch's
//!   idempotency key and holding the batch's SHA-256. Its create revision is
//!   the batch's revision.
//! - `{prefix}head`: put by every batch, so its mod revision is the
//!   revision of the last batch: what a node must have applied to serve a
//!   read that sees every write acknowledged before it ([`EtcdLog::head`]).
//! - `{prefix}node/{id}`: a live node's presence, on its lease.
//! - `{prefix}role/{name}`: the id of the node that holds the role `name`
//!   (`compactor`: it compacts the history; `player`: it advances the
//!   signs' playlists), on its lease. (Nodes before roles kept the
//!   compactor's at `{prefix}compactor`, still counted as the layer's own.)
//! - `{prefix}own/{client}`: the id of the node an MQTT client is connected
//!   to, on that node's lease.
//! - `{prefix}will/{revision}/{client}`: the node that sends the will of a
//!   client whose owner's lease ended at `revision`.
//! - `{prefix}share/{subscription}/{node}`: the node has members of the MQTT
//!   shared subscription, on its lease; the log watch reports these too.
//!
//! # Files, one concern each
//! - `key.rs`: the kinds of key of the Store's state.
//! - `log.rs`: commits (batches as transactions, idempotency keys, conditions, limits).
//! - `watch.rs`: the log watched back in revision order, resumed across members.
//! - `read.rs`: snapshot reads of the state (or the records) at one revision, and single gets.
//! - `joint_read.rs`: one head read serving every caller waiting for it.
//! - `node.rs`: a node's lease, kept alive by hand, and its presence key.
//! - `role.rs`: one node at a time holds a named role; the others take over when its lease ends.
//! - `compactor.rs`: the holder of the `compactor` role compacts the history to a window.
//! - `ownership.rs`: which node owns an MQTT client id; takeovers and wills.
//! - `shares.rs`: which nodes have members of which MQTT shared subscription.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn,
    TxnOp, TxnOpResponse,
};
use tokio::sync::Mutex;
use tokio::time::timeout;
use tonic::Code;

use joint_read::JointRead;
use log::IdemLease;

mod compactor;
mod joint_read;
mod key;
mod log;
mod node;
mod ownership;
mod read;
mod role;
mod shares;
mod watch;

pub use compactor::{Compactor, CompactorOptions, CompactorStatus};
pub use key::{Key, KeyKind};
pub use log::{Batch, Committed, Condition, Expect, Op};
pub use node::{LeaseState, Node, NodeOptions};
pub use ownership::{OwnershipEvent, OwnershipWatch};
pub use read::{Got, GotItem, Item, Record, Snapshot, State};
pub use role::{Role, RoleOptions};
pub use shares::{ShareChange, ShareMembers};
pub use watch::{Change, LogEntry, LogWatch, Watch};

/// Where Marquee's keys live unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/marquee/";
/// etcd's default `--max-txn-ops`.
pub const ETCD_MAX_TXN_OPS: usize = 128;
/// Changes in one batch: the transaction's last two operations are the
/// idempotency key's put and the head's.
pub const MAX_BATCH_CHANGES: usize = ETCD_MAX_TXN_OPS - 2;
/// Conditions of one batch: the transaction's first compare is the
/// idempotency key's (etcd counts compares against `--max-txn-ops` too).
pub const MAX_BATCH_CONDITIONS: usize = ETCD_MAX_TXN_OPS - 1;
/// etcd's default `--max-request-bytes`: the largest proposal it accepts (1.5 MiB).
pub const ETCD_MAX_REQUEST_BYTES: usize = 1_572_864;
/// The largest batch sent, as [`Batch::estimated_bytes`] counts it: 64 KiB
/// under etcd's limit for the request's framing and the Raft header.
pub const MAX_BATCH_BYTES: usize = ETCD_MAX_REQUEST_BYTES - 64 * 1024;
/// HTTP/2 pings on a busy connection. etcd answers pings more often than every
/// 5 s (`--grpc-keepalive-min-time`) with GOAWAY, so not below that.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest watch message accepted: a fragment is at most etcd's request
/// limit plus the one event that crossed it.
const WATCH_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Waits between retries grow from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Timeouts and bounds; [`Default`] suits a cluster on a LAN.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// How long [`EtcdLog::connect`] tries to reach a cluster with a leader.
    pub connect_timeout: Duration,
    /// The deadline of one request; a commit past it is retried.
    pub request_timeout: Duration,
    /// Most attempts per commit (or other request) ...
    pub attempts: u32,
    /// ... and most time, whichever is reached first.
    pub retry_for: Duration,
    /// How long an idempotency key is kept: at most this, at least this less
    /// 30 s (or half of it, if that is less).
    pub idempotency_ttl: Duration,
    /// A watch silent this long is asked for progress, and if silent as long
    /// again, re-made on the next member (its member is stopped or cut off):
    /// with 1 s, a stopped member delays the watch by 1–2 s plus the re-watch.
    pub watch_idle: Duration,
    /// A watch that cannot be re-made for this long gives up.
    pub watch_retry_for: Duration,
    /// Start on the first endpoint (say, the member on this machine) rather
    /// than a random one, so that nodes given the same list spread out.
    pub start_on_first: bool,
    /// Records per request of a snapshot read (etcd's range `limit`); a page
    /// too large for one message is halved until it fits.
    pub read_page: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            attempts: 8,
            retry_for: Duration::from_secs(15),
            idempotency_ttl: Duration::from_secs(600),
            watch_idle: Duration::from_secs(1),
            watch_retry_for: Duration::from_secs(30),
            start_on_first: false,
            read_page: 500,
        }
    }
}

/// Why etcd work failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("invalid etcd configuration: {0}")]
    Config(String),
    #[error("no etcd cluster with a leader answered at {endpoints} within {waited:?}: {reason}")]
    Unreachable {
        endpoints: String,
        waited: Duration,
        reason: String,
    },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(
        "a batch of {changes} changes does not fit one etcd transaction (at most {MAX_BATCH_CHANGES}): split it"
    )]
    TooManyChanges { changes: usize },
    #[error(
        "a batch of about {bytes} bytes does not fit one etcd request (at most {MAX_BATCH_BYTES}): split it"
    )]
    TooLarge { bytes: usize },
    #[error(
        "a batch with {conditions} conditions does not fit one etcd transaction (at most {MAX_BATCH_CONDITIONS}, counting conditioned writes): split it"
    )]
    TooManyConditions { conditions: usize },
    /// The key's path under the prefix, e.g. `r/signs/lobby`.
    #[error("the batch writes {0} twice; etcd refuses a key twice in one transaction")]
    DuplicateKey(String),
    #[error("idempotency key '{0}' was already used by a different batch")]
    IdempotencyConflict(String),
    #[error(
        "{key} is at mod revision {current} (0: absent), which fails the batch's condition {expected:?}"
    )]
    ConditionFailed {
        key: Key,
        expected: Expect,
        current: u64,
    },
    /// [`Condition::NoRecordWrittenAfter`] failed: this record of the table
    /// exists and was written at `written`, after `revision`.
    #[error(
        "{table}/{id} was written at revision {written}, which fails the batch's condition that no record of {table} was written after {revision}"
    )]
    RecordWrittenAfter {
        table: String,
        id: String,
        revision: u64,
        written: u64,
    },
    /// For a commit: it may have been applied; retry with the same idempotency key.
    #[error(
        "etcd did not confirm the {what} in {attempts} attempts over {elapsed:?} (last: {last})"
    )]
    Unconfirmed {
        what: &'static str,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error(
        "etcd has compacted away the revisions before {compact_revision}; cannot watch from {start}"
    )]
    Compacted { start: u64, compact_revision: u64 },
    #[error("etcd refused the request: {0}")]
    Rejected(String),
    #[error("unexpected answer from etcd: {0}")]
    Protocol(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("node {0} does not hold its lease now")]
    LeaseLost(String),
}

/// A connection to an etcd cluster, holding Marquee's keys under one prefix. Cheap to clone.
#[derive(Clone)]
pub struct EtcdLog {
    shared: Arc<Shared>,
}

struct Shared {
    /// One client per member, not one channel balanced over all: tonic's
    /// balancer picks the member with the fewest requests in flight, and a
    /// stopped member whose requests have all timed out has none, so it kept
    /// being picked (a commit took 8.8 s under a 12 s SIGSTOP). Here every
    /// request goes to the preferred member, and a failure that another
    /// attempt may not repeat moves everyone to the next.
    members: Vec<Member>,
    preferred: AtomicUsize,
    keys: Keys,
    options: EtcdOptions,
    /// For error messages.
    endpoints: String,
    /// The lease new idempotency keys are put on.
    lease: Mutex<Option<IdemLease>>,
    /// Head reads, one serving every caller waiting for it.
    heads: JointRead<Result<u64, EtcdError>>,
}

struct Member {
    endpoint: String,
    client: Client,
}

impl EtcdLog {
    /// Connects with [`EtcdOptions::default`].
    pub async fn connect<E: AsRef<str>>(endpoints: &[E], prefix: &str) -> Result<Self, EtcdError> {
        Self::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// Connects to the cluster at `endpoints` (`host:port` or `http://host:port`)
    /// and waits, at most about [`EtcdOptions::connect_timeout`], until it can
    /// write: it grants the first idempotency lease, which takes a leader and
    /// a quorum. Requests go to members that have a leader (`require_leader`).
    pub async fn connect_with<E: AsRef<str>>(
        endpoints: &[E],
        prefix: &str,
        options: EtcdOptions,
    ) -> Result<Self, EtcdError> {
        let keys = Keys::new(prefix)?;
        let list: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        if list.is_empty() {
            return Err(EtcdError::Config("no etcd endpoints given".into()));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_require_leader(true);
        let started = Instant::now();
        let unreachable = |reason: String| EtcdError::Unreachable {
            endpoints: list.join(","),
            waited: started.elapsed(),
            reason,
        };
        let mut members = Vec::with_capacity(list.len());
        for endpoint in &list {
            // Connections are made lazily, on the first request.
            let connecting = Client::connect([*endpoint], Some(connect.clone()));
            let client = match timeout(options.connect_timeout, connecting).await {
                Ok(Ok(client)) => client,
                Ok(Err(
                    etcd_client::Error::InvalidArgs(e) | etcd_client::Error::EndpointError(e),
                )) => return Err(EtcdError::Config(format!("endpoint '{endpoint}': {e}"))),
                Ok(Err(etcd_client::Error::InvalidUri(e))) => {
                    return Err(EtcdError::Config(format!("endpoint '{endpoint}': {e}")));
                }
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable("no connection".into())),
            };
            members.push(Member {
                endpoint: (*endpoint).to_owned(),
                client,
            });
        }
        let first = match options.start_on_first {
            true => 0,
            false => getrandom::u32().map_or(0, |r| r as usize % members.len()),
        };
        let log = Self {
            shared: Arc::new(Shared {
                members,
                preferred: AtomicUsize::new(first),
                keys,
                endpoints: list.join(","),
                options,
                lease: Mutex::new(None),
                heads: JointRead::default(),
            }),
        };
        loop {
            match log.idem_lease().await {
                Ok(_) => return Ok(log),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(reason) | Failure::LeaseGone(_, reason)) => {
                    if started.elapsed() >= log.shared.options.connect_timeout {
                        return Err(unreachable(reason));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The key prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.shared.keys.root
    }

    /// The key a record is kept under.
    pub fn record_key(&self, table: &str, id: &str) -> String {
        self.shared.keys.record(table, id)
    }

    /// The etcd key `key` is kept under.
    pub fn key(&self, key: &Key) -> String {
        self.shared.keys.key(key)
    }

    /// The cluster's current revision (a linearizable read).
    pub async fn current_revision(&self) -> Result<u64, EtcdError> {
        self.retrying("revision read", || async {
            let (member, client) = self.member()?;
            let mut kv = client.kv_client();
            let key = self.shared.keys.root.clone();
            let options = GetOptions::new().with_count_only();
            let response = self.deadline(member, kv.get(key, Some(options))).await?;
            let header = response
                .header()
                .ok_or_else(|| Failure::Fatal(protocol("a read without a header")))?;
            revision(header.revision()).map_err(Failure::Fatal)
        })
        .await
    }

    /// The revision of the last batch committed under this prefix (0: none
    /// yet), by a linearizable read: a node that has applied it has every
    /// write acknowledged before this call, on any node.
    /// Callers at the same time share one read ([`JointRead`]).
    pub async fn head(&self) -> Result<u64, EtcdError> {
        let log = self.clone();
        self.shared
            .heads
            .read(|| async move { log.read_head().await })
            .await
    }

    async fn read_head(&self) -> Result<u64, EtcdError> {
        let key = self.shared.keys.head().into_bytes();
        let response = self
            .retrying("head read", || {
                self.range(key.clone(), GetOptions::new().with_keys_only())
            })
            .await?;
        Ok(response
            .kvs()
            .first()
            .map_or(0, |kv| u64::try_from(kv.mod_revision()).unwrap_or(0)))
    }

    /// Discards the history before `revision` (every key's older versions):
    /// watches from below it then fail with [`EtcdError::Compacted`]. Waits
    /// until the compaction is applied. Compacting to a revision already
    /// compacted is not an error.
    pub async fn compact(&self, revision: u64) -> Result<(), EtcdError> {
        let target = to_i64(revision)?;
        let result = self
            .retrying("compaction", || async {
                let (member, client) = self.member()?;
                let mut kv = client.kv_client();
                let options = CompactionOptions::new().with_physical();
                self.deadline(member, kv.compact(target, Some(options)))
                    .await?;
                Ok(())
            })
            .await;
        match result {
            Err(EtcdError::Rejected(reason)) if reason.contains("has been compacted") => Ok(()),
            other => other,
        }
    }

    async fn retrying<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let options = &self.shared.options;
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let reason = match call().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(reason)) => reason,
                Err(Failure::LeaseGone(lease, reason)) => {
                    self.forget_lease(lease).await;
                    reason
                }
            };
            if attempts >= options.attempts || started.elapsed() >= options.retry_for {
                return Err(EtcdError::Unconfirmed {
                    what,
                    attempts,
                    elapsed: started.elapsed(),
                    last: reason,
                });
            }
            tracing::debug!(attempts, "etcd {what}: retrying after: {reason}");
            tokio::time::sleep(backoff(attempts)).await;
        }
    }

    /// Puts `key` = `value` on `lease` (a key that goes with its node), the
    /// previous value in the answer if `with_prev`. A lease etcd no longer
    /// has ends the attempt: `owner` (the node) has lost it.
    async fn put_on_lease(
        &self,
        what: &'static str,
        key: &str,
        value: &[u8],
        lease: i64,
        owner: &str,
        with_prev: bool,
    ) -> Result<etcd_client::PutResponse, EtcdError> {
        let mut options = PutOptions::new().with_lease(lease);
        if with_prev {
            options = options.with_prev_key();
        }
        self.retrying(what, || async {
            let (member, client) = self.member()?;
            let mut kv = client.kv_client();
            self.deadline(member, kv.put(key, value, Some(options.clone())))
                .await
                .map_err(|failure| lease_lost(failure, owner))
        })
        .await
    }

    /// Creates `key` = `owner` on `lease` unless the key exists: the one
    /// step of every "first node to ask gets it" race (a role, a dead
    /// client's will). Whether `owner` holds it on `lease` now (created, or
    /// found as a retry's own first attempt left it), and the revision of
    /// the answer. A lease etcd no longer has ends the race for this node.
    async fn create_on_lease(
        &self,
        what: &'static str,
        key: &str,
        owner: &str,
        lease: i64,
    ) -> Result<(bool, u64), EtcdError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                owner,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .retrying(what, || async {
                let (member, client) = self.member()?;
                let mut kv = client.kv_client();
                self.deadline(member, kv.txn(txn.clone()))
                    .await
                    .map_err(|failure| lease_lost(failure, owner))
            })
            .await?;
        let header = response
            .header()
            .ok_or_else(|| protocol("a transaction without a header"))?;
        let at = revision(header.revision())?;
        if response.succeeded() {
            return Ok((true, at));
        }
        let Some(TxnOpResponse::Get(read)) = response.op_responses().into_iter().next() else {
            return Err(protocol("a failed create without its read"));
        };
        let ours = read
            .kvs()
            .first()
            .is_some_and(|kv| kv.value() == owner.as_bytes() && kv.lease() == lease);
        Ok((ours, at))
    }

    /// The preferred member, by index, and its client.
    fn member(&self) -> Result<(usize, &Client), Failure> {
        let members = &self.shared.members;
        let i = self.shared.preferred.load(Ordering::Acquire);
        members
            .get(i)
            .map(|m| (i, &m.client))
            .ok_or_else(|| Failure::Fatal(EtcdError::Config("no etcd members".into())))
    }

    /// Moves everyone off member `i` (unless someone already has).
    fn avoid(&self, i: usize) {
        let members = &self.shared.members;
        let next = (i + 1) % members.len().max(1);
        if next != i
            && self
                .shared
                .preferred
                .compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let name = |i: usize| members.get(i).map_or("?", |m| m.endpoint.as_str());
            tracing::info!("etcd: moving from member {} to {}", name(i), name(next));
        }
    }

    /// `request` to member `member` with [`EtcdOptions::request_timeout`],
    /// its errors sorted; a failure worth retrying moves off the member.
    async fn deadline<T>(
        &self,
        member: usize,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Failure> {
        let limit = self.shared.options.request_timeout;
        let failure = match timeout(limit, request).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => classify(e),
            Err(_) => Failure::Retry(format!("no answer within {limit:?}")),
        };
        if let Failure::Retry(_) = failure {
            self.avoid(member);
        }
        Err(failure)
    }
}

/// Marquee's key names under the prefix.
struct Keys {
    /// The prefix, ending in `/`.
    root: String,
}

impl Keys {
    fn new(prefix: &str) -> Result<Self, EtcdError> {
        if !prefix.starts_with('/') {
            return Err(EtcdError::Config(format!(
                "the etcd key prefix '{prefix}' must start with '/'"
            )));
        }
        let mut root = prefix.to_owned();
        if !root.ends_with('/') {
            root.push('/');
        }
        Ok(Self { root })
    }

    fn record(&self, table: &str, id: &str) -> String {
        format!("{}r/{table}/{id}", self.root)
    }

    fn key(&self, key: &Key) -> String {
        format!("{}{}", self.root, key.path())
    }

    /// The Store key that the etcd key `full` is, if it is one.
    fn parse(&self, full: &[u8]) -> Option<Key> {
        Key::parse(full.strip_prefix(self.root.as_bytes())?)
    }

    /// Whether `path` (after the prefix) is one of the layer's own keys.
    fn is_own(&self, path: &[u8]) -> bool {
        // `compactor`: the compactor's key before it became a role, should
        // a node of that version still run on the cluster.
        path == b"compactor"
            || path == b"head"
            || [
                &b"idem/"[..],
                b"node/",
                b"own/",
                b"role/",
                b"share/",
                b"will/",
            ]
            .iter()
            .any(|own| path.starts_with(own))
    }

    fn head(&self) -> String {
        format!("{}head", self.root)
    }

    fn idem(&self, key: &str) -> String {
        format!("{}idem/{key}", self.root)
    }

    fn node(&self, id: &str) -> String {
        format!("{}node/{id}", self.root)
    }

    fn role(&self, name: &str) -> String {
        format!("{}role/{name}", self.root)
    }

    fn own(&self, client: &str) -> String {
        format!("{}own/{client}", self.root)
    }

    fn will(&self, revision: u64, client: &str) -> String {
        format!("{}will/{revision}/{client}", self.root)
    }
}

/// How an attempt failed.
enum Failure {
    /// Worth another attempt (the request may or may not have been applied).
    Retry(String),
    /// The idempotency lease (this id) is gone: grant another, then retry.
    LeaseGone(i64, String),
    /// No point in retrying.
    Fatal(EtcdError),
}

/// Sorts an error: only answers that another attempt cannot change are fatal.
fn classify(error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => {
            let message = status.message().to_owned();
            match status.code() {
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::Unimplemented
                | Code::AlreadyExists => Failure::Fatal(EtcdError::Rejected(message)),
                // "etcdserver: requested lease not found": the caller names the lease.
                Code::NotFound if message.contains("lease not found") => {
                    Failure::LeaseGone(0, message)
                }
                Code::NotFound => Failure::Fatal(EtcdError::Rejected(message)),
                // "too many requests" passes; "database space exceeded" does not.
                Code::ResourceExhausted if !message.contains("too many requests") => {
                    Failure::Fatal(EtcdError::Rejected(message))
                }
                // Unavailable (no leader, leader changed, timed out), transport
                // resets, cancellations: another member or moment may answer.
                code => Failure::Retry(format!("{code:?}: {message}")),
            }
        }
        E::InvalidArgs(e) => Failure::Fatal(EtcdError::Rejected(e)),
        other => Failure::Retry(other.to_string()),
    }
}

/// A write on a lease etcd no longer has fails again on a retry: `owner`
/// (the node) has lost its lease.
fn lease_lost(failure: Failure, owner: &str) -> Failure {
    match failure {
        Failure::LeaseGone(..) => Failure::Fatal(EtcdError::LeaseLost(owner.to_owned())),
        other => other,
    }
}

fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(10);
    (BACKOFF_FIRST * factor).min(BACKOFF_MAX)
}

fn revision(raw: i64) -> Result<u64, EtcdError> {
    u64::try_from(raw)
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| protocol(&format!("revision {raw}")))
}

fn to_i64(revision: u64) -> Result<i64, EtcdError> {
    i64::try_from(revision)
        .map_err(|_| EtcdError::InvalidBatch(format!("revision {revision} is out of etcd's range")))
}

fn protocol(what: &str) -> EtcdError {
    EtcdError::Protocol(what.to_owned())
}
