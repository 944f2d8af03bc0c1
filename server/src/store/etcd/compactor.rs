//! The compactor: etcd keeps every revision until it is compacted, and the
//! history is Marquee's resume window, so one node compacts it to
//! `head − window` every [`CompactorOptions::period`]. Exactly one node at a
//! time: the holder of the `compactor` role (`role.rs`: the key
//! `{prefix}role/compactor` on the holder's node lease). Before each
//! compaction the holder confirms with a read that the key is still its own,
//! on its lease; a node that lost its lease compacts nothing more (see
//! `node.rs` for why it learns that no later than etcd deletes the key). Two
//! compactions at once would do no harm anyway: compacting to a revision
//! already compacted is a no-op.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{EtcdError, EtcdLog, Node, Role, RoleOptions};

/// The role whose holder compacts.
const ROLE: &str = "compactor";

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
    /// This node holds the compactor role now.
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
    /// Starts this node's compactor: it campaigns for the compactor role and,
    /// while it holds it, compacts.
    pub fn spawn_compactor(&self, options: CompactorOptions) -> Compactor {
        let (status_tx, status) = watch::channel(CompactorStatus::default());
        let role = self.start_campaign(
            ROLE,
            RoleOptions {
                recheck: options.period,
            },
        );
        let run = Run {
            log: self.log.clone(),
            id: self.id.clone(),
            held: role.held(),
            role,
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
        // The role goes with the task, so its campaign ends too.
        self.task.abort();
    }
}

struct Run {
    log: EtcdLog,
    id: String,
    role: Role,
    held: watch::Receiver<bool>,
    options: CompactorOptions,
    status: watch::Sender<CompactorStatus>,
}

impl Run {
    async fn run(mut self) {
        loop {
            if self.held.wait_for(|held| *held).await.is_err() {
                // The campaign ended without the role (the node was dropped).
                break;
            }
            let elections = self.role.elections();
            self.status.send_modify(|s| {
                s.leader = true;
                s.elections = elections;
            });
            tracing::info!(node = %self.id, "etcd: this node is the compactor");
            self.lead().await;
            self.status.send_modify(|s| s.leader = false);
            tracing::info!(node = %self.id, "etcd: this node is no longer the compactor");
        }
        self.status.send_modify(|s| s.leader = false);
    }

    /// Compacts every period while this node holds the role.
    async fn lead(&mut self) {
        loop {
            let stepped_down = timeout(self.options.period, self.held.wait_for(|held| !*held));
            if stepped_down.await.is_ok() {
                // Stepped down, or the campaign ended.
                return;
            }
            match self.role.confirm().await {
                Ok(true) => {}
                Ok(false) => {
                    // The role's task will say so too; until then, nothing.
                    continue;
                }
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
