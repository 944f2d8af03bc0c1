//! The compactor: etcd keeps every revision until it is compacted, and the
//! history is Marquee's resume window, so one node compacts it to
//! `head − window` every [`CompactorOptions::period`]. Exactly one node at a
//! time: the one that created `{prefix}compactor` (create revision 0 in the
//! transaction) on its node lease. The others watch that key, and campaign
//! again when it is deleted (its holder's lease ended) or after a while
//! anyway (a lost watch). Before each compaction the leader checks that its
//! lease is held and the key is still its own, on that lease; a node that
//! lost its lease compacts nothing more (see `node.rs` for why it learns that
//! no later than etcd deletes the key). Two compactions at once would do no
//! harm anyway: compacting to a revision already compacted is a no-op.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{EtcdError, EtcdLog, LeaseState, Node, protocol, revision};

/// How often and how far; [`Default`]: every minute, keep 100,000 revisions.
#[derive(Clone, Debug)]
pub struct CompactorOptions {
    /// Between compactions (and the longest a follower waits before it
    /// campaigns again without having seen the leader go).
    pub period: Duration,
    /// Revisions kept below the head: a watch or read from `head − window`
    /// or later still works.
    pub window: u64,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(60),
            window: 100_000,
        }
    }
}

/// What a compactor has done, as of now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactorStatus {
    /// This node holds the compactor key now.
    pub leader: bool,
    /// Times this node became the leader.
    pub elections: u64,
    /// Compactions this node did.
    pub compactions: u64,
    /// The revision this node last compacted to.
    pub floor: u64,
}

/// A node's compactor task; stops when dropped.
pub struct Compactor {
    status: watch::Receiver<CompactorStatus>,
    task: JoinHandle<()>,
}

impl Node {
    /// Starts this node's compactor: it campaigns for the compactor key and,
    /// while it holds it, compacts.
    pub fn spawn_compactor(&self, options: CompactorOptions) -> Compactor {
        let (status_tx, status) = watch::channel(CompactorStatus::default());
        let run = Run {
            log: self.log.clone(),
            id: self.id.clone(),
            lease: self.state.clone(),
            options,
            status: status_tx,
        };
        Compactor {
            status,
            task: tokio::spawn(run.run()),
        }
    }
}

impl Compactor {
    pub fn status(&self) -> CompactorStatus {
        *self.status.borrow()
    }

    /// The status, to wait on changes.
    pub fn subscribe(&self) -> watch::Receiver<CompactorStatus> {
        self.status.clone()
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Run {
    log: EtcdLog,
    id: String,
    lease: watch::Receiver<LeaseState>,
    options: CompactorOptions,
    status: watch::Sender<CompactorStatus>,
}

/// How a campaign went.
enum Campaign {
    /// Ours, on this lease.
    Won,
    /// Someone else's; watch the key from this revision for its deletion.
    Lost { after: u64 },
}

impl Run {
    async fn run(mut self) {
        loop {
            if self.lease.has_changed().is_err() {
                // The node was dropped: its lease runs out, and so does this.
                self.status.send_modify(|s| s.leader = false);
                return;
            }
            let state = *self.lease.borrow_and_update();
            let lease = match state {
                LeaseState::Alive { lease } => lease,
                LeaseState::Lost => {
                    // Bounded, so a stuck state is looked at again.
                    let _ = timeout(self.options.period, self.lease.changed()).await;
                    continue;
                }
            };
            match self.campaign(lease).await {
                Ok(Campaign::Won) => {
                    self.status.send_modify(|s| {
                        s.leader = true;
                        s.elections += 1;
                    });
                    tracing::info!(node = %self.id, "etcd: this node is the compactor");
                    self.lead(lease).await;
                    self.status.send_modify(|s| s.leader = false);
                    tracing::info!(node = %self.id, "etcd: this node is no longer the compactor");
                }
                Ok(Campaign::Lost { after }) => {
                    if !self.await_vacancy(after).await {
                        // The watch failed: not at once again.
                        tokio::time::sleep(self.options.period.min(Duration::from_millis(500)))
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %self.id, "etcd: compactor campaign failed: {e}");
                    tokio::time::sleep(self.options.period.min(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// Creates the key on `lease` unless it exists.
    async fn campaign(&self, lease: i64) -> Result<Campaign, EtcdError> {
        let key = self.log.shared.keys.compactor();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.id.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        // A retry after a timeout may find the key its own attempt created:
        // the `else` read says whose it is.
        let response = self
            .log
            .retrying("compactor campaign", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                self.log.deadline(member, kv.txn(txn.clone())).await
            })
            .await?;
        if response.succeeded() {
            return Ok(Campaign::Won);
        }
        let header = response
            .header()
            .ok_or_else(|| protocol("a transaction without a header"))?;
        let after = revision(header.revision())?;
        let Some(TxnOpResponse::Get(read)) = response.op_responses().into_iter().next() else {
            return Err(protocol("a failed campaign without its read"));
        };
        match read.kvs().first() {
            Some(kv) if kv.value() == self.id.as_bytes() && kv.lease() == lease => {
                Ok(Campaign::Won)
            }
            _ => Ok(Campaign::Lost { after }),
        }
    }

    /// Waits until the compactor key is deleted after revision `after`, or a
    /// period passes, or the watch fails (false): then the caller campaigns again.
    async fn await_vacancy(&self, after: u64) -> bool {
        let key = self.log.shared.keys.compactor();
        let wait = async {
            let (member, client) = self.log.member().ok()?;
            let start = i64::try_from(after + 1).ok()?;
            let options = WatchOptions::new().with_start_revision(start);
            let limit = self.log.shared.options.request_timeout;
            let mut stream =
                match timeout(limit, client.watch_client().watch(key, Some(options))).await {
                    Ok(Ok(stream)) => stream,
                    _ => {
                        self.log.avoid(member);
                        return None;
                    }
                };
            loop {
                let response = stream.message().await.ok()??;
                if response.canceled() {
                    return None;
                }
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Some(());
                }
            }
        };
        match timeout(self.options.period, wait).await {
            Ok(Some(())) => true,
            Ok(None) => false,
            Err(_) => {
                tracing::debug!(node = %self.id, "etcd: compactor still held; campaigning again");
                true
            }
        }
    }

    /// Compacts every period while this node holds the key on `lease`.
    async fn lead(&mut self, lease: i64) {
        loop {
            let changed = timeout(self.options.period, self.lease.changed()).await;
            if matches!(changed, Ok(Err(_))) {
                // The node is gone.
                return;
            }
            if *self.lease.borrow_and_update() != (LeaseState::Alive { lease }) {
                return;
            }
            if changed.is_ok() {
                // The lease state was re-sent while still alive: wait the period out.
                continue;
            }
            match self.still_ours(lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(node = %self.id, "etcd: compactor check failed: {e}");
                    continue;
                }
            }
            if let Err(e) = self.compact_once().await {
                tracing::warn!(node = %self.id, "etcd: compaction failed: {e}");
            }
        }
    }

    /// Whether the key is this node's, on `lease` (a linearizable read).
    async fn still_ours(&self, lease: i64) -> Result<bool, EtcdError> {
        let key = self.log.shared.keys.compactor().into_bytes();
        let response = self
            .log
            .retrying("compactor check", || {
                self.log.range(key.clone(), etcd_client::GetOptions::new())
            })
            .await?;
        Ok(response
            .kvs()
            .first()
            .is_some_and(|kv| kv.value() == self.id.as_bytes() && kv.lease() == lease))
    }

    async fn compact_once(&self) -> Result<(), EtcdError> {
        let head = self.log.current_revision().await?;
        let target = head.saturating_sub(self.options.window);
        if target <= self.status.borrow().floor || target == 0 {
            return Ok(());
        }
        self.log.compact(target).await?;
        tracing::info!(node = %self.id, head, target, "etcd: compacted");
        self.status.send_modify(|s| {
            s.compactions += 1;
            s.floor = target;
        });
        Ok(())
    }
}
