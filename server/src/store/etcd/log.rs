//! Committing batches of writes of the Store's state (records, table
//! declarations, accounts, tokens, sessions, transient publishes, mixed
//! freely): one etcd transaction and one revision per batch, applied at most
//! once per idempotency key.
//!
//! # Commits
//! [`EtcdLog::commit`] sends one batch as one transaction, so the batch gets
//! one revision (every change in it carries that `mod_revision`):
//! `when [create_revision(idem) == 0, each op's own condition, the batch's conditions]`
//! `then [the puts and deletes, put idem]` `else [get idem, a read per condition]`.
//! A failed condition is [`EtcdError::ConditionFailed`] (naming the key and its
//! mod revision) or [`EtcdError::RecordWrittenAfter`] (naming the record).
//!
//! # Tables
//! A record write requires its table's declaration at the mod revision the
//! writer knows ([`Batch::require`] of `Key::Table`), and a drop
//! ([`Batch::drop_table`]) deletes the declaration only if no record of the
//! table was written after the revision at which the dropper saw it empty
//! ([`Condition::NoRecordWrittenAfter`], a range compare that etcd 3.4 finds
//! true on an empty range). Whichever commits first, the other fails: a write
//! never lands in a dropped table, and a drop never loses a record.
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
//! # Limits
//! etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or
//! a request of more than 1.5 MiB (`--max-request-bytes`), and a key twice in
//! one transaction. A batch is checked against all three before it is sent and
//! refused with its own error; the caller splits it (a split batch is several
//! revisions, so it is the caller's call).

use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use sha2::{Digest, Sha256};

use super::read::prefix_end;
use super::{
    EtcdError, EtcdLog, Failure, Key, Keys, MAX_BATCH_BYTES, MAX_BATCH_CHANGES,
    MAX_BATCH_CONDITIONS, protocol, revision, to_i64,
};

/// What one operation adds to a transaction besides its key and value, generously.
const OP_OVERHEAD: usize = 32;
/// A new idempotency lease at least this often, so that one lease's expiry
/// deletes at most this long's commits' keys in its one revision.
const LEASE_ROTATION: Duration = Duration::from_secs(30);
/// A condition on a key's current state, checked in the same transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// No condition.
    #[default]
    Any,
    /// The key does not exist (create-only, `If-Match: 0`).
    Absent,
    /// The key was last written at this revision (a record's ETag).
    ModRevision(u64),
}

/// One write of a batch, of any kind of key, with a condition on that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Key,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: Key,
        expect: Expect,
    },
}

impl Op {
    /// An unconditional put.
    pub fn put(key: Key, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key,
            value: value.into(),
            expect: Expect::Any,
        }
    }

    /// An unconditional delete.
    pub fn delete(key: Key) -> Self {
        Op::Delete {
            key,
            expect: Expect::Any,
        }
    }

    /// This write, only if its key is in state `expect`.
    pub fn expecting(mut self, expected: Expect) -> Self {
        match &mut self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect = expected,
        }
        self
    }

    pub fn key(&self) -> &Key {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect,
        }
    }
}

/// A condition of a whole batch, on keys it need not write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `key` is in state `expect`. A record write names its table's
    /// declaration here (`Key::Table`, its mod revision), so that a write
    /// racing a drop of the table fails instead of landing in it.
    Key { key: Key, expect: Expect },
    /// Every record of `table` that exists now was last written at or before
    /// `revision`; with `revision` 0, the table has no record at all. A drop
    /// of the table commits with it after a read at `revision` found no
    /// record (or, with tombstones, only tombstones): so no record written
    /// since then survives the drop. One etcd range compare,
    /// `mod_revision(r/{table}/…) < revision + 1`, true on an empty range.
    NoRecordWrittenAfter { table: String, revision: u64 },
}

/// Writes committed together, at one revision, at most once per idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Names the batch across retries, also by a caller that retries after an
    /// [`EtcdError::Unconfirmed`]. Unique per batch (e.g. node id + counter).
    pub idempotency_key: String,
    /// The writes, of any kinds of key, each key at most once.
    pub ops: Vec<Op>,
    /// Conditions on other keys; the batch commits only if all hold, as
    /// well as each op's own [`Expect`].
    pub conditions: Vec<Condition>,
}

impl Batch {
    pub fn new(idempotency_key: impl Into<String>) -> Self {
        Self {
            idempotency_key: idempotency_key.into(),
            ops: Vec::new(),
            conditions: Vec::new(),
        }
    }

    /// Adds an unconditional put of a record.
    pub fn put(self, table: &str, id: &str, value: impl Into<Vec<u8>>) -> Self {
        self.with(Op::put(Key::record(table, id), value))
    }

    /// Adds an unconditional delete of a record.
    pub fn delete(self, table: &str, id: &str) -> Self {
        self.with(Op::delete(Key::record(table, id)))
    }

    /// Adds a write of any kind.
    pub fn with(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds a condition on a key the batch need not write.
    pub fn require(mut self, key: Key, expect: Expect) -> Self {
        self.conditions.push(Condition::Key { key, expect });
        self
    }

    /// A declaration of table `name`, only if it is not declared.
    pub fn declare_table(
        idempotency_key: impl Into<String>,
        name: &str,
        declaration: impl Into<Vec<u8>>,
    ) -> Self {
        Self::new(idempotency_key)
            .with(Op::put(Key::Table(name.to_owned()), declaration).expecting(Expect::Absent))
    }

    /// A drop of table `name`: deletes its declaration if that is in state
    /// `declared` and no record of it was written after `empty_at` (see
    /// [`Condition::NoRecordWrittenAfter`]).
    pub fn drop_table(
        idempotency_key: impl Into<String>,
        name: &str,
        declared: Expect,
        empty_at: u64,
    ) -> Self {
        let mut batch = Self::new(idempotency_key)
            .with(Op::delete(Key::Table(name.to_owned())).expecting(declared));
        batch.conditions.push(Condition::NoRecordWrittenAfter {
            table: name.to_owned(),
            revision: empty_at,
        });
        batch
    }

    /// Roughly the bytes the batch's transaction takes, never less (see [`MAX_BATCH_BYTES`]).
    pub fn estimated_bytes(&self, prefix: &str) -> usize {
        // The idempotency key: compared, put with its digest, read back on failure.
        let idem = 3 * (prefix.len() + 5 + self.idempotency_key.len() + OP_OVERHEAD) + 64;
        let ops: usize = self
            .ops
            .iter()
            .map(|op| {
                let key = prefix.len() + key_len(op.key()) + OP_OVERHEAD;
                let value = match op {
                    Op::Put { value, .. } => value.len(),
                    Op::Delete { .. } => 0,
                };
                // Conditioned keys are also compared and read back.
                let copies = if op.expect() == Expect::Any { 1 } else { 3 };
                copies * key + value
            })
            .sum();
        let conditions: usize = self
            .conditions
            .iter()
            .map(|condition| match condition {
                // Compared and read back.
                Condition::Key { key, .. } => 2 * (prefix.len() + key_len(key) + OP_OVERHEAD),
                // A range (key and end) compared and read back.
                Condition::NoRecordWrittenAfter { table, .. } => {
                    4 * (prefix.len() + 3 + table.len()) + 2 * OP_OVERHEAD
                }
            })
            .sum();
        idem + ops + conditions
    }
}

/// A key's path length, without building it.
fn key_len(key: &Key) -> usize {
    let name = match key {
        Key::Record { table, id } => table.len() + 1 + id.len(),
        Key::Table(name)
        | Key::Account(name)
        | Key::Token(name)
        | Key::Session(name)
        | Key::Transient(name) => name.len(),
    };
    key.kind().prefix().len() + name
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

pub(super) struct IdemLease {
    id: i64,
    granted: Instant,
}

impl EtcdLog {
    /// Commits `batch` as one transaction, at most once per idempotency key,
    /// and returns its revision. See the module doc for retries.
    pub async fn commit(&self, batch: &Batch) -> Result<Committed, EtcdError> {
        let plan = Plan::new(&self.shared.keys, batch)?;
        self.retrying("commit", || self.try_commit(&plan)).await
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
        plan.outcome(&self.shared.keys, &response)
            .map_err(Failure::Fatal)
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts or time run out.
    /// The lease to put new idempotency keys on, granted anew every
    /// [`LEASE_ROTATION`] (or half the TTL, if shorter).
    pub(super) async fn idem_lease(&self) -> Result<i64, Failure> {
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

    pub(super) async fn forget_lease(&self, id: i64) {
        let mut held = self.shared.lease.lock().await;
        if held.as_ref().is_some_and(|lease| lease.id == id) {
            *held = None;
        }
    }
}

/// A batch turned into its transaction, minus the lease that changes per attempt.
struct Plan {
    idem_key: String,
    /// `{prefix}head`, put by every batch (see [`EtcdLog::head`]).
    head_key: String,
    digest: String,
    compares: Vec<Compare>,
    writes: Vec<TxnOp>,
    reads: Vec<TxnOp>,
    /// The conditions (the ops' own, then the batch's), in the order of
    /// `reads` after the idempotency key.
    conditions: Vec<Condition>,
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
        let conditions: Vec<Condition> = batch
            .ops
            .iter()
            .map(|op| Condition::Key {
                key: op.key().clone(),
                expect: op.expect(),
            })
            .chain(batch.conditions.iter().cloned())
            .filter(|condition| {
                !matches!(
                    condition,
                    Condition::Key {
                        expect: Expect::Any,
                        ..
                    }
                )
            })
            .collect();
        // etcd counts the compares (and the reads of the else branch) against
        // --max-txn-ops too; the idempotency key's is one of them.
        if conditions.len() > MAX_BATCH_CONDITIONS {
            return Err(EtcdError::TooManyConditions {
                conditions: conditions.len(),
            });
        }
        let bytes = batch.estimated_bytes(&keys.root);
        if bytes > MAX_BATCH_BYTES {
            return Err(EtcdError::TooLarge { bytes });
        }
        for key in batch
            .ops
            .iter()
            .map(Op::key)
            .chain(
                batch
                    .conditions
                    .iter()
                    .filter_map(|condition| match condition {
                        Condition::Key { key, .. } => Some(key),
                        Condition::NoRecordWrittenAfter { .. } => None,
                    }),
            )
        {
            key.check().map_err(EtcdError::InvalidBatch)?;
        }
        let mut paths: Vec<String> = batch.ops.iter().map(|op| op.key().path()).collect();
        paths.sort_unstable();
        if let Some(pair) = paths.windows(2).find(|pair| pair.first() == pair.last()) {
            return Err(EtcdError::DuplicateKey(
                pair.first().cloned().unwrap_or_default(),
            ));
        }

        let idem_key = keys.idem(&batch.idempotency_key);
        let mut compares = vec![Compare::create_revision(
            idem_key.clone(),
            CompareOp::Equal,
            0,
        )];
        let writes = batch
            .ops
            .iter()
            .map(|op| {
                let key = keys.key(op.key());
                match op {
                    Op::Put { value, .. } => TxnOp::put(key, value.clone(), None),
                    Op::Delete { .. } => TxnOp::delete(key, None),
                }
            })
            .collect();
        let mut reads = vec![TxnOp::get(idem_key.clone(), None)];
        for condition in &conditions {
            match condition {
                Condition::Key { key, expect } => {
                    let key = keys.key(key);
                    compares.push(match *expect {
                        Expect::Any => continue,
                        Expect::Absent => {
                            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
                        }
                        Expect::ModRevision(rev) => {
                            Compare::mod_revision(key.clone(), CompareOp::Equal, to_i64(rev)?)
                        }
                    });
                    reads.push(TxnOp::get(key, None));
                }
                Condition::NoRecordWrittenAfter { table, revision } => {
                    if table.is_empty() || table.contains('/') {
                        return Err(EtcdError::InvalidBatch(format!(
                            "table '{table}': a table is non-empty, without '/'"
                        )));
                    }
                    let after = to_i64(revision.saturating_add(1))?;
                    let prefix = keys.record(table, "");
                    let end = prefix_end(prefix.as_bytes());
                    compares.push(
                        Compare::mod_revision(prefix.clone(), CompareOp::Less, after)
                            .with_range(end.clone()),
                    );
                    // On failure, one record written after the revision. etcd
                    // filters by revision before it applies the limit.
                    let options = GetOptions::new()
                        .with_range(end)
                        .with_min_mod_revision(after)
                        .with_keys_only()
                        .with_limit(1);
                    reads.push(TxnOp::get(prefix, Some(options)));
                }
            }
        }
        Ok(Self {
            idem_key,
            head_key: keys.head(),
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
        writes.push(TxnOp::put(self.head_key.clone(), "", None));
        Txn::new()
            .when(self.compares.clone())
            .and_then(writes)
            .or_else(self.reads.clone())
    }

    /// What the transaction's answer means for the batch.
    fn outcome(&self, keys: &Keys, response: &TxnResponse) -> Result<Committed, EtcdError> {
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
        for (condition, read) in self.conditions.iter().zip(reads) {
            let TxnOpResponse::Get(read) = read else {
                return Err(protocol("a failed transaction's read of another kind"));
            };
            match condition {
                Condition::Key { key, expect } => {
                    let current = read.kvs().first().map_or(0, |kv| kv.mod_revision());
                    let current = u64::try_from(current).unwrap_or(0);
                    let holds = match expect {
                        Expect::Any => true,
                        Expect::Absent => current == 0,
                        Expect::ModRevision(rev) => current == *rev,
                    };
                    if !holds {
                        return Err(EtcdError::ConditionFailed {
                            key: key.clone(),
                            expected: *expect,
                            current,
                        });
                    }
                }
                Condition::NoRecordWrittenAfter { table, revision } => {
                    let late = read.kvs().iter().find_map(|kv| {
                        let written = u64::try_from(kv.mod_revision()).ok()?;
                        let id = match keys.parse(kv.key())? {
                            Key::Record { id, .. } => id,
                            _ => return None,
                        };
                        (written > *revision).then_some((id, written))
                    });
                    if let Some((id, written)) = late {
                        return Err(EtcdError::RecordWrittenAfter {
                            table: table.clone(),
                            id,
                            revision: *revision,
                            written,
                        });
                    }
                }
            }
        }
        Err(protocol(
            "a transaction's compare failed, yet its key is unused and its conditions hold",
        ))
    }
}

/// The SHA-256 of everything a batch writes and requires, in hex: what its
/// idempotency key holds.
fn digest(batch: &Batch) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    for op in &batch.ops {
        match op {
            Op::Put { value, .. } => {
                field(b"put");
                field(value);
            }
            Op::Delete { .. } => field(b"delete"),
        }
        field(op.key().path().as_bytes());
        field(&expect_bytes(op.expect()));
    }
    for condition in &batch.conditions {
        match condition {
            Condition::Key { key, expect: e } => {
                field(b"require");
                field(key.path().as_bytes());
                field(&expect_bytes(*e));
            }
            Condition::NoRecordWrittenAfter { table, revision } => {
                field(b"no-record-after");
                field(table.as_bytes());
                field(&revision.to_be_bytes());
            }
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn expect_bytes(expect: Expect) -> Vec<u8> {
    match expect {
        Expect::Any => b"any".to_vec(),
        Expect::Absent => b"absent".to_vec(),
        Expect::ModRevision(rev) => rev.to_be_bytes().to_vec(),
    }
}
