//! The etcd side of the store, for several Marquee nodes on one etcd cluster
//! (issue 11; the facts and the mapping are in `../shared/SCALE-OUT.md`). It
//! knows nothing of fjall, tables or JSON: it commits batches of record
//! writes as etcd transactions and watches them back in revision order.
//! Nothing calls it yet; the writer and the bus will be wired onto it.
//!
//! # Keys (SCALE-OUT.md §5), under a prefix (default `/marquee/`)
//! - `{prefix}r/{table}/{id}`: a record's bytes. The table has no `/`; the id
//!   may (the `mqtt` table's ids are topics), so the first `/` after the table ends it.
//! - `{prefix}idem/{key}`: one per committed batch, named by the batch's
//!   idempotency key and holding the batch's SHA-256. Its create revision is
//!   the batch's revision.
//!
//! # Commits
//! [`EtcdLog::commit`] sends one batch as one transaction, so the batch gets
//! one revision (every change in it carries that `mod_revision`):
//! `when [create_revision(idem) == 0, each op's own condition]`
//! `then [the puts and deletes, put idem]` `else [get idem, get each conditioned key]`.
//!
//! A request that times out may still have committed (SCALE-OUT.md §2 saw 22
//! of 179 failures do so). So every attempt has a deadline
//! ([`EtcdOptions::request_timeout`], 2 s), and a timeout or an unavailable
//! member moves every request of this [`EtcdLog`] on to the next member
//! before the retry (one client per member; see `Shared::members` for why not
//! tonic's balancer). A retry whose compare fails because the idempotency key
//! exists returns the revision the key was created at, so the batch is
//! applied once; a transaction that arrives after its own retry fails its
//! compare the same way, and an `else` of reads consumes no revision. Retries
//! are bounded ([`EtcdOptions::attempts`], [`EtcdOptions::retry_for`]); then
//! the caller gets [`EtcdError::Unconfirmed`] and may retry with the same key.
//!
//! # Idempotency keys' lifetime
//! Idempotency keys are put on a lease that nobody keeps alive: each
//! [`EtcdLog`] grants one with a TTL of [`EtcdOptions::idempotency_ttl`]
//! (10 min) and a fresh one every 30 s (or half the TTL, if shorter), so a key
//! lives from 9.5 to 10 min, far beyond the seconds a retry takes. etcd
//! deletes a lease's keys when it expires, with no work here, all in one
//! revision: rotating every 30 s bounds that revision to 30 s of commits (the
//! watch skips it). A retry arriving after that would apply its batch again.
//! In etcd 3.4 a leader change resets lease TTLs, so keys go late, never
//! early. A lease that expired under us (a long pause) is granted anew.
//!
//! # Watch
//! [`EtcdLog::watch_from`] watches the whole prefix from a revision and yields
//! one [`LogEntry`] per revision that wrote records or an idempotency key, so
//! every commit shows up, even one whose deletes found nothing to delete. The
//! client library does not resume watches: when the stream breaks, ends, or
//! goes silent (a stopped member: a progress request gets no answer), it
//! re-watches from the last revision seen plus one and drops any revision at
//! or below it (etcd#20221 replays old events after a re-watch on another
//! member). Progress notifications only show that the stream is alive; they
//! never move that position (etcd#15220, fixed after Debian's 3.4.23: a
//! requested progress notification could be out of order with events). Responses
//! are fragmented by the server and put back together here, so a revision is
//! never split and a large catch-up never exceeds a message limit. A start
//! below the compaction floor gives [`EtcdError::Compacted`] with the floor
//! (the future HTTP 410).
//!
//! # Limits
//! etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or
//! a request of more than 1.5 MiB (`--max-request-bytes`), and a key twice in
//! one transaction. A batch is checked against all three before it is sent and
//! refused with its own error; the caller splits it (a split batch is several
//! revisions, so it is the caller's call).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, Event, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions, WatchResponse, WatchStream,
};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::timeout;
use tonic::Code;

/// Where Marquee's keys live unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/marquee/";
/// etcd's default `--max-txn-ops`.
pub const ETCD_MAX_TXN_OPS: usize = 128;
/// Changes in one batch: the transaction's last operation is the idempotency key's put.
pub const MAX_BATCH_CHANGES: usize = ETCD_MAX_TXN_OPS - 1;
/// etcd's default `--max-request-bytes`: the largest proposal it accepts (1.5 MiB).
pub const ETCD_MAX_REQUEST_BYTES: usize = 1_572_864;
/// The largest batch sent, as [`Batch::estimated_bytes`] counts it: 64 KiB
/// under etcd's limit for the request's framing and the Raft header.
pub const MAX_BATCH_BYTES: usize = ETCD_MAX_REQUEST_BYTES - 64 * 1024;
/// What one operation adds to a transaction besides its key and value, generously.
const OP_OVERHEAD: usize = 32;
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
/// A new idempotency lease at least this often, so that one lease's expiry
/// deletes at most this long's commits' keys in its one revision.
const LEASE_ROTATION: Duration = Duration::from_secs(30);

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
        }
    }
}

/// A condition on a record's current state, checked in the same transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// No condition.
    #[default]
    Any,
    /// The record does not exist (create-only, `If-Match: 0`).
    Absent,
    /// The record was last written at this revision (its ETag).
    ModRevision(u64),
}

/// One record write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        table: String,
        id: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        table: String,
        id: String,
        expect: Expect,
    },
}

impl Op {
    fn table_id(&self) -> (&str, &str) {
        match self {
            Op::Put { table, id, .. } | Op::Delete { table, id, .. } => (table, id),
        }
    }

    fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect,
        }
    }
}

/// Writes committed together, at one revision, at most once per idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Names the batch across retries, also by a caller that retries after an
    /// [`EtcdError::Unconfirmed`]. Unique per batch (e.g. node id + counter).
    pub idempotency_key: String,
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new(idempotency_key: impl Into<String>) -> Self {
        Self {
            idempotency_key: idempotency_key.into(),
            ops: Vec::new(),
        }
    }

    /// Adds an unconditional put.
    pub fn put(mut self, table: &str, id: &str, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            table: table.to_owned(),
            id: id.to_owned(),
            value: value.into(),
            expect: Expect::Any,
        });
        self
    }

    /// Adds an unconditional delete.
    pub fn delete(mut self, table: &str, id: &str) -> Self {
        self.ops.push(Op::Delete {
            table: table.to_owned(),
            id: id.to_owned(),
            expect: Expect::Any,
        });
        self
    }

    /// Roughly the bytes the batch's transaction takes, never less (see [`MAX_BATCH_BYTES`]).
    pub fn estimated_bytes(&self, prefix: &str) -> usize {
        // The idempotency key: compared, put with its digest, read back on failure.
        let idem = 3 * (prefix.len() + 5 + self.idempotency_key.len() + OP_OVERHEAD) + 64;
        let ops: usize = self
            .ops
            .iter()
            .map(|op| {
                let (table, id) = op.table_id();
                let key = prefix.len() + 3 + table.len() + id.len() + OP_OVERHEAD;
                let value = match op {
                    Op::Put { value, .. } => value.len(),
                    Op::Delete { .. } => 0,
                };
                // Conditioned keys are also compared and read back.
                let copies = if op.expect() == Expect::Any { 1 } else { 3 };
                copies * key + value
            })
            .sum();
        idem + ops
    }
}

/// A batch as committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The etcd revision of the batch: every change in it has this `mod_revision`.
    pub revision: u64,
    /// Whether an earlier attempt (or an earlier call with the same key) had
    /// already committed it: nothing was written this time.
    pub replayed: bool,
}

/// One record change, as the watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub table: String,
    pub id: String,
    /// The bytes put; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// etcd's per-key version after a put (1 on creation, restarting after a
    /// delete); 0 for a delete.
    pub version: u64,
    /// The revision that created the record (0 for a delete).
    pub create_revision: u64,
}

/// Everything one revision changed, in the order etcd applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub revision: u64,
    /// The idempotency key of the batch committed at this revision.
    pub idempotency_key: Option<String>,
    pub changes: Vec<Change>,
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
    #[error("the batch writes {0} twice; etcd refuses a key twice in one transaction")]
    DuplicateKey(String),
    #[error("idempotency key '{0}' was already used by a different batch")]
    IdempotencyConflict(String),
    #[error(
        "{table}/{id} is at mod revision {current} (0: absent), which fails the batch's condition {expected:?}"
    )]
    ConditionFailed {
        table: String,
        id: String,
        expected: Expect,
        current: u64,
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
}

struct Member {
    endpoint: String,
    client: Client,
}

struct IdemLease {
    id: i64,
    granted: Instant,
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

    /// Commits `batch` as one transaction, at most once per idempotency key,
    /// and returns its revision. See the module doc for retries.
    pub async fn commit(&self, batch: &Batch) -> Result<Committed, EtcdError> {
        let plan = Plan::new(&self.shared.keys, batch)?;
        self.retrying("commit", || self.try_commit(&plan)).await
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

    /// Every revision from `start` on (1 or 0: the oldest kept) that wrote
    /// records or committed a batch, in revision order, each once.
    pub fn watch_from(&self, start: u64) -> LogWatch {
        LogWatch {
            log: self.clone(),
            last_seen: start.saturating_sub(1),
            stream: None,
            member: 0,
            fragments: Vec::new(),
            ready: VecDeque::new(),
            probing: false,
            failing_since: None,
            failures: 0,
            resumes: 0,
            failed: None,
        }
    }

    async fn try_commit(&self, plan: &Plan) -> Result<Committed, Failure> {
        let lease = self.idem_lease().await?;
        let (member, client) = self.member()?;
        let mut kv = client.kv_client();
        let response = self
            .deadline(member, kv.txn(plan.txn(lease)))
            .await
            .map_err(|failure| match failure {
                // Our idempotency lease expired (a long pause): grant another.
                Failure::LeaseGone(_, reason) => Failure::LeaseGone(lease, reason),
                other => other,
            })?;
        plan.outcome(&response).map_err(Failure::Fatal)
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts or time run out.
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

    /// The lease to put new idempotency keys on, granted anew every
    /// [`LEASE_ROTATION`] (or half the TTL, if shorter).
    async fn idem_lease(&self) -> Result<i64, Failure> {
        let ttl = self.shared.options.idempotency_ttl;
        let mut held = self.shared.lease.lock().await;
        if let Some(lease) = held.as_ref()
            && lease.granted.elapsed() < (ttl / 2).min(LEASE_ROTATION)
        {
            return Ok(lease.id);
        }
        let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let granted = Instant::now();
        let (member, client) = self.member()?;
        let mut leases = client.lease_client();
        let response = self.deadline(member, leases.grant(seconds, None)).await?;
        *held = Some(IdemLease {
            id: response.id(),
            granted,
        });
        Ok(response.id())
    }

    async fn forget_lease(&self, id: i64) {
        let mut held = self.shared.lease.lock().await;
        if held.as_ref().is_some_and(|lease| lease.id == id) {
            *held = None;
        }
    }
}

/// A watch from a revision on; see [`EtcdLog::watch_from`].
pub struct LogWatch {
    log: EtcdLog,
    /// The last revision received (queued or skipped as empty): resume after it.
    last_seen: u64,
    stream: Option<WatchStream>,
    /// The member the stream is on.
    member: usize,
    /// Events of a response the server sent in fragments, until the last one.
    fragments: Vec<Event>,
    ready: VecDeque<LogEntry>,
    /// A progress request is out because the stream went quiet.
    probing: bool,
    /// Since when the watch has been failing, without a message in between.
    failing_since: Option<Instant>,
    failures: u32,
    /// Streams lost and made again, over the watch's life.
    resumes: u64,
    /// The error that ended the watch.
    failed: Option<EtcdError>,
}

/// What one wait on the watch stream gave.
enum Heard {
    Response(WatchResponse),
    Quiet,
    Lost(String),
}

impl LogWatch {
    /// The next revision's changes. Errors end the watch: every later call
    /// returns the same error. Cancel-safe: a call dropped before it returns
    /// (a `select!` that took another branch) loses no revision.
    pub async fn next(&mut self) -> Result<LogEntry, EtcdError> {
        loop {
            if let Some(error) = &self.failed {
                return Err(error.clone());
            }
            if let Some(entry) = self.ready.pop_front() {
                return Ok(entry);
            }
            let heard = match self.stream.as_mut() {
                None => {
                    self.open().await;
                    continue;
                }
                Some(stream) => {
                    match timeout(self.log.shared.options.watch_idle, stream.message()).await {
                        Ok(Ok(Some(response))) => Heard::Response(response),
                        Ok(Ok(None)) => Heard::Lost("the watch stream ended".into()),
                        Ok(Err(e)) => Heard::Lost(e.to_string()),
                        Err(_) if self.probing => {
                            Heard::Lost("no answer to a progress request".into())
                        }
                        Err(_) => match stream.request_progress().await {
                            Ok(()) => Heard::Quiet,
                            Err(e) => Heard::Lost(e.to_string()),
                        },
                    }
                }
            };
            match heard {
                Heard::Response(response) => {
                    if let Some(reason) = self.receive(response) {
                        self.lost(reason).await;
                    }
                }
                Heard::Quiet => self.probing = true,
                Heard::Lost(reason) => self.lost(reason).await,
            }
        }
    }

    /// The revision this watch has delivered through: every revision up to it
    /// was returned by [`LogWatch::next`] or held nothing to deliver.
    pub fn last_revision(&self) -> u64 {
        match self.ready.front() {
            Some(queued) => queued.revision - 1,
            None => self.last_seen,
        }
    }

    /// How many times the stream was lost and the watch made again (for metrics).
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// This watch as a stream, which ends after its first error.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<LogEntry, EtcdError>> {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut watch = state?;
            match watch.next().await {
                Ok(entry) => Some((Ok(entry), Some(watch))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// (Re)makes the watch from the revision after the last one seen.
    async fn open(&mut self) {
        let start = match to_i64(self.last_seen.saturating_add(1)) {
            Ok(start) => start,
            Err(e) => {
                self.failed = Some(e);
                return;
            }
        };
        let (member, client) = match self.log.member() {
            Ok(found) => found,
            Err(Failure::Fatal(e)) => {
                self.failed = Some(e);
                return;
            }
            Err(Failure::Retry(reason) | Failure::LeaseGone(_, reason)) => {
                self.lost(reason).await;
                return;
            }
        };
        self.member = member;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_fragment();
        let mut client = client
            .watch_client()
            .max_decoding_message_size(WATCH_MAX_MESSAGE);
        let shared = &self.log.shared;
        let key = shared.keys.root.clone();
        match timeout(
            shared.options.request_timeout,
            client.watch(key, Some(options)),
        )
        .await
        {
            Ok(Ok(stream)) => {
                self.stream = Some(stream);
                self.fragments.clear();
                self.probing = false;
            }
            Ok(Err(e)) => self.lost(e.to_string()).await,
            Err(_) => self.lost("no answer to the watch request".into()).await,
        }
    }

    /// Drops the stream, moves off its member, and waits before the next
    /// attempt, or gives up.
    async fn lost(&mut self, reason: String) {
        self.stream = None;
        self.log.avoid(self.member);
        self.fragments.clear();
        self.probing = false;
        self.failures += 1;
        let options = &self.log.shared.options;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= options.watch_retry_for {
            self.failed = Some(EtcdError::Unreachable {
                endpoints: self.log.shared.endpoints.clone(),
                waited: since.elapsed(),
                reason,
            });
            return;
        }
        self.resumes += 1;
        tracing::warn!(
            resume_from = self.last_seen + 1,
            "etcd watch lost, re-watching: {reason}"
        );
        tokio::time::sleep(backoff(self.failures)).await;
    }

    /// Takes in one response; `Some(reason)` if the stream is lost.
    fn receive(&mut self, mut response: WatchResponse) -> Option<String> {
        self.probing = false;
        self.failing_since = None;
        self.failures = 0;
        if response.canceled() {
            let floor = response.compact_revision();
            if floor > 0 {
                self.failed = Some(EtcdError::Compacted {
                    start: self.last_seen + 1,
                    compact_revision: u64::try_from(floor).unwrap_or(0),
                });
                return None;
            }
            // E.g. the member lost its leader (require_leader): re-watch elsewhere.
            return Some(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason()
            ));
        }
        self.fragments.extend(
            std::mem::take(&mut response.0.events)
                .into_iter()
                .map(Event),
        );
        if response.0.fragment {
            return None;
        }
        let events = std::mem::take(&mut self.fragments);
        let mut entry: Option<LogEntry> = None;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(rev) = u64::try_from(kv.mod_revision()) else {
                continue;
            };
            if rev <= self.last_seen {
                // Already delivered: a re-watch on another member replayed it.
                continue;
            }
            if entry.as_ref().is_some_and(|e| e.revision != rev) {
                self.deliver(entry.take());
            }
            let current = entry.get_or_insert_with(|| LogEntry {
                revision: rev,
                idempotency_key: None,
                changes: Vec::new(),
            });
            self.log.shared.keys.add_event(current, &event);
        }
        self.deliver(entry);
        None
    }

    /// Queues a whole revision (unless it held nothing of ours) and moves past it.
    fn deliver(&mut self, entry: Option<LogEntry>) {
        let Some(entry) = entry else { return };
        self.last_seen = entry.revision;
        if entry.idempotency_key.is_some() || !entry.changes.is_empty() {
            self.ready.push_back(entry);
        }
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

    fn idem(&self, key: &str) -> String {
        format!("{}idem/{key}", self.root)
    }

    /// Adds what `event` did to `entry`, if it is ours.
    fn add_event(&self, entry: &mut LogEntry, event: &Event) {
        let Some(kv) = event.kv() else { return };
        let Some(rest) = kv.key().strip_prefix(self.root.as_bytes()) else {
            return;
        };
        // mvccpb.Event.EventType: 0 PUT, 1 DELETE (read raw: the typed accessor panics on others).
        let put = match event.0.r#type {
            0 => true,
            1 => false,
            other => {
                tracing::warn!("etcd event of unknown type {other} ignored");
                return;
            }
        };
        if let Some(record) = rest.strip_prefix(b"r/") {
            let Some((table, id)) = std::str::from_utf8(record)
                .ok()
                .and_then(|key| key.split_once('/'))
            else {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "not a record key; ignored");
                return;
            };
            entry.changes.push(Change {
                table: table.to_owned(),
                id: id.to_owned(),
                value: put.then(|| kv.value().to_vec()),
                version: u64::try_from(kv.version()).unwrap_or(0),
                create_revision: u64::try_from(kv.create_revision()).unwrap_or(0),
            });
        } else if let Some(key) = rest.strip_prefix(b"idem/")
            && put
        {
            // A deleted idempotency key is its lease expiring, not a commit.
            entry.idempotency_key = Some(String::from_utf8_lossy(key).into_owned());
        }
    }
}

/// A batch turned into its transaction, minus the lease that changes per attempt.
struct Plan {
    idem_key: String,
    digest: String,
    compares: Vec<Compare>,
    writes: Vec<TxnOp>,
    reads: Vec<TxnOp>,
    /// The conditioned ops, in the order of `reads` after the idempotency key.
    conditions: Vec<(String, String, Expect)>,
}

impl Plan {
    fn new(keys: &Keys, batch: &Batch) -> Result<Self, EtcdError> {
        if batch.idempotency_key.is_empty() {
            return Err(EtcdError::InvalidBatch(
                "the idempotency key is empty".into(),
            ));
        }
        if batch.ops.is_empty() {
            return Err(EtcdError::InvalidBatch("the batch has no changes".into()));
        }
        if batch.ops.len() > MAX_BATCH_CHANGES {
            return Err(EtcdError::TooManyChanges {
                changes: batch.ops.len(),
            });
        }
        let bytes = batch.estimated_bytes(&keys.root);
        if bytes > MAX_BATCH_BYTES {
            return Err(EtcdError::TooLarge { bytes });
        }
        let mut names: Vec<(&str, &str)> = batch.ops.iter().map(Op::table_id).collect();
        for (table, id) in &names {
            if table.is_empty() || table.contains('/') || id.is_empty() {
                return Err(EtcdError::InvalidBatch(format!(
                    "'{table}/{id}': a table is non-empty without '/', an id non-empty"
                )));
            }
        }
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair.first() == pair.last()) {
            let (table, id) = pair.first().copied().unwrap_or_default();
            return Err(EtcdError::DuplicateKey(format!("{table}/{id}")));
        }

        let idem_key = keys.idem(&batch.idempotency_key);
        let mut compares = vec![Compare::create_revision(
            idem_key.clone(),
            CompareOp::Equal,
            0,
        )];
        let mut writes = Vec::with_capacity(batch.ops.len() + 1);
        let mut reads = vec![TxnOp::get(idem_key.clone(), None)];
        let mut conditions = Vec::new();
        for op in &batch.ops {
            let (table, id) = op.table_id();
            let key = keys.record(table, id);
            writes.push(match op {
                Op::Put { value, .. } => TxnOp::put(key.clone(), value.clone(), None),
                Op::Delete { .. } => TxnOp::delete(key.clone(), None),
            });
            let compare = match op.expect() {
                Expect::Any => continue,
                Expect::Absent => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Expect::ModRevision(rev) => {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, to_i64(rev)?)
                }
            };
            compares.push(compare);
            reads.push(TxnOp::get(key, None));
            conditions.push((table.to_owned(), id.to_owned(), op.expect()));
        }
        Ok(Self {
            idem_key,
            digest: digest(batch),
            compares,
            writes,
            reads,
            conditions,
        })
    }

    fn txn(&self, lease: i64) -> Txn {
        let mut writes = self.writes.clone();
        writes.push(TxnOp::put(
            self.idem_key.clone(),
            self.digest.clone(),
            Some(PutOptions::new().with_lease(lease)),
        ));
        Txn::new()
            .when(self.compares.clone())
            .and_then(writes)
            .or_else(self.reads.clone())
    }

    /// What the transaction's answer means for the batch.
    fn outcome(&self, response: &TxnResponse) -> Result<Committed, EtcdError> {
        if response.succeeded() {
            let header = response
                .header()
                .ok_or_else(|| protocol("a transaction without a header"))?;
            return Ok(Committed {
                revision: revision(header.revision())?,
                replayed: false,
            });
        }
        let mut reads = response.op_responses().into_iter();
        let Some(TxnOpResponse::Get(idem)) = reads.next() else {
            return Err(protocol("a failed transaction without its reads"));
        };
        if let Some(kv) = idem.kvs().first() {
            if kv.value() != self.digest.as_bytes() {
                return Err(EtcdError::IdempotencyConflict(
                    self.idem_key
                        .rsplit("idem/")
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                ));
            }
            return Ok(Committed {
                revision: revision(kv.create_revision())?,
                replayed: true,
            });
        }
        for ((table, id, expected), read) in self.conditions.iter().zip(reads) {
            let TxnOpResponse::Get(read) = read else {
                return Err(protocol("a failed transaction's read of another kind"));
            };
            let current = read.kvs().first().map_or(0, |kv| kv.mod_revision());
            let current = u64::try_from(current).unwrap_or(0);
            let holds = match expected {
                Expect::Any => true,
                Expect::Absent => current == 0,
                Expect::ModRevision(rev) => current == *rev,
            };
            if !holds {
                return Err(EtcdError::ConditionFailed {
                    table: table.clone(),
                    id: id.clone(),
                    expected: *expected,
                    current,
                });
            }
        }
        Err(protocol(
            "a transaction's compare failed, yet its key is unused and its conditions hold",
        ))
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

/// The SHA-256 of everything a batch writes, in hex: what its idempotency key holds.
fn digest(batch: &Batch) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    for op in &batch.ops {
        let (table, id) = op.table_id();
        match op {
            Op::Put { value, .. } => {
                field(b"put");
                field(value);
            }
            Op::Delete { .. } => field(b"delete"),
        }
        field(table.as_bytes());
        field(id.as_bytes());
        match op.expect() {
            Expect::Any => field(b"any"),
            Expect::Absent => field(b"absent"),
            Expect::ModRevision(rev) => field(&rev.to_be_bytes()),
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
