//! Committing batches of record writes: one etcd transaction and one revision
//! per batch, applied at most once per idempotency key.
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
//! # Limits
//! etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or
//! a request of more than 1.5 MiB (`--max-request-bytes`), and a key twice in
//! one transaction. A batch is checked against all three before it is sent and
//! refused with its own error; the caller splits it (a split batch is several
//! revisions, so it is the caller's call).

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use sha2::{Digest, Sha256};

use super::{
    EtcdError, EtcdLog, Failure, Keys, MAX_BATCH_BYTES, MAX_BATCH_CHANGES, protocol, revision,
    to_i64,
};

/// What one operation adds to a transaction besides its key and value, generously.
const OP_OVERHEAD: usize = 32;
/// A new idempotency lease at least this often, so that one lease's expiry
/// deletes at most this long's commits' keys in its one revision.
const LEASE_ROTATION: Duration = Duration::from_secs(30);
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
        plan.outcome(&response).map_err(Failure::Fatal)
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
