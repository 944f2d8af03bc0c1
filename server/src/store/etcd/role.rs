//! Roles: a job that one live node at a time does for the whole cluster (the
//! compactor, the playlist player). A node campaigns by creating
//! `{prefix}role/{name}` = its id on its node lease, only if the key is absent
//! (create revision 0 in the transaction); whoever created it holds the role
//! until the key goes, which is when its lease ends (the node died, was cut
//! off, stopped or left) or someone deletes it. The others watch the key and
//! campaign again when it is deleted, or after [`RoleOptions::recheck`]
//! anyway (a watch can be lost without a word).
//!
//! The holder steps down, on its own clock, as soon as its lease is not
//! confirmed within a TTL (`node.rs`): that is no later than etcd deletes the
//! key, so no other node can have won the role before this one lets go. It
//! also steps down when it sees the key deleted, or when a periodic read finds
//! it is no longer its own (a deletion its watch missed). A role is held as
//! a [`watch`] flag so that whatever does the job can stop the moment it
//! turns `false`.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{EtcdError, EtcdLog, LeaseState, Node};

/// How often a role is looked at again; [`Default`]: every 5 s.
#[derive(Clone, Debug)]
pub struct RoleOptions {
    /// The longest a node that does not hold the role waits before it
    /// campaigns again without having seen the holder go, and how often the
    /// holder reads the key to check it is still its own.
    pub recheck: Duration,
}

impl Default for RoleOptions {
    fn default() -> Self {
        Self {
            recheck: Duration::from_secs(5),
        }
    }
}

/// A node's campaign for one role; it ends when dropped, and the role is
/// given up ([`Role::resign`], in the background).
pub struct Role {
    name: String,
    shared: Arc<Shared>,
    ctx: Ctx,
    task: JoinHandle<()>,
}

/// What the campaign's task and its [`Role`] share.
struct Shared {
    /// This node holds the role now.
    held: watch::Sender<bool>,
    /// The lease the role is held on, while it is (0: not held).
    lease: AtomicU64,
    /// Times this node won the role.
    elections: AtomicU64,
    /// The [`Role`] was dropped: the task, which may still be finishing a
    /// step on another thread, must not say `true` after that.
    ended: AtomicBool,
}

impl Shared {
    /// Says whether the role is held, on `lease` (0 when not); returns the
    /// lease it was held on before. Under the flag's lock, so that it cannot
    /// overtake the final `false` of [`Role::give_up`].
    fn set(&self, lease: u64) -> u64 {
        let mut before = 0;
        self.held.send_if_modified(|held| {
            let now = lease != 0 && !self.ended.load(Ordering::Acquire);
            before = self
                .lease
                .swap(if now { lease } else { 0 }, Ordering::AcqRel);
            let changed = *held != now;
            *held = now;
            changed
        });
        before
    }
}

impl Node {
    /// Starts campaigning for the role `name` (non-empty, without `/`), with
    /// this node's lease, for as long as the returned [`Role`] lives.
    pub fn campaign(&self, name: &str, options: RoleOptions) -> Result<Role, EtcdError> {
        if name.is_empty() || name.contains('/') {
            return Err(EtcdError::InvalidName(format!(
                "role '{name}': non-empty, without '/'"
            )));
        }
        Ok(self.start_campaign(name, options))
    }

    /// [`Node::campaign`] for a name known to be valid.
    pub(super) fn start_campaign(&self, name: &str, options: RoleOptions) -> Role {
        let shared = Arc::new(Shared {
            held: watch::Sender::new(false),
            lease: AtomicU64::new(0),
            elections: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        });
        let ctx = Ctx {
            log: self.log.clone(),
            id: self.id.clone(),
            name: name.to_owned(),
            key: self.log.shared.keys.role(name),
            options,
        };
        let run = Run {
            ctx: ctx.clone(),
            lease: self.state.clone(),
            shared: shared.clone(),
        };
        Role {
            name: name.to_owned(),
            shared,
            ctx,
            task: tokio::spawn(run.run()),
        }
    }
}

impl Role {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this node holds the role now.
    pub fn holds(&self) -> bool {
        *self.shared.held.borrow()
    }

    /// Whether this node holds the role, to wait on changes. Once the
    /// campaign ends (the [`Role`] or the node is dropped) it reads `false`
    /// and changes no more.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.shared.held.subscribe()
    }

    /// Times this node has won the role.
    pub fn elections(&self) -> u64 {
        self.shared.elections.load(Ordering::Acquire)
    }

    /// Whether the role's key is this node's, on the lease it won it with (a
    /// linearizable read): for a holder about to do something that only one
    /// node may do at a time, and that its flag may be a moment late about.
    pub async fn confirm(&self) -> Result<bool, EtcdError> {
        let Ok(lease) = i64::try_from(self.shared.lease.load(Ordering::Acquire)) else {
            return Ok(false);
        };
        if lease == 0 || !self.holds() {
            return Ok(false);
        }
        self.ctx.still_ours(lease).await
    }
}

impl Role {
    /// Gives the role up: stops campaigning and deletes the key if it is
    /// this node's, so that another node takes over now rather than when
    /// this node's lease ends.
    pub async fn resign(self) -> Result<(), EtcdError> {
        match self.give_up() {
            Some(lease) => self.ctx.delete_if_ours(lease).await,
            None => Ok(()),
        }
    }

    /// Ends the campaign and says the role is not held; the lease it was
    /// held on, if it was.
    fn give_up(&self) -> Option<i64> {
        self.task.abort();
        // The task may be cut off while holding, or still finishing a step
        // on another thread: it cannot say `true` once this is set.
        self.shared.ended.store(true, Ordering::Release);
        let lease = self.shared.set(0);
        i64::try_from(lease).ok().filter(|lease| *lease != 0)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let Some(lease) = self.give_up() else {
            return;
        };
        // Best effort, in the background (a drop cannot wait): should it not
        // happen, the key goes with the lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let ctx = self.ctx.clone();
            runtime.spawn(async move {
                if let Err(e) = ctx.delete_if_ours(lease).await {
                    tracing::debug!(node = %ctx.id, role = %ctx.name, "etcd: could not give the role up: {e}");
                }
            });
        }
    }
}

/// What a campaign's requests need.
#[derive(Clone)]
struct Ctx {
    log: EtcdLog,
    id: String,
    name: String,
    /// `{prefix}role/{name}`.
    key: String,
    options: RoleOptions,
}

/// How a campaign went.
enum Campaign {
    /// Ours, on this lease, as of this revision.
    Won { at: u64 },
    /// Someone else's; watch the key from this revision for its deletion.
    Lost { after: u64 },
}

struct Run {
    ctx: Ctx,
    lease: watch::Receiver<LeaseState>,
    shared: Arc<Shared>,
}

impl Run {
    async fn run(mut self) {
        let (id, name) = (self.ctx.id.clone(), self.ctx.name.clone());
        loop {
            if self.lease.has_changed().is_err() {
                // The node was dropped: its lease runs out, and so does this.
                break;
            }
            let state = *self.lease.borrow_and_update();
            let lease = match state {
                LeaseState::Alive { lease } => lease,
                LeaseState::Lost => {
                    // Bounded, so a stuck state is looked at again.
                    let _ = timeout(self.ctx.options.recheck, self.lease.changed()).await;
                    continue;
                }
            };
            match self.ctx.campaign(lease).await {
                Ok(Campaign::Won { .. })
                    if *self.lease.borrow() != (LeaseState::Alive { lease }) =>
                {
                    // The lease was lost (or replaced) while the campaign
                    // was retried: not held, not even for a moment.
                    continue;
                }
                Ok(Campaign::Won { at }) => {
                    self.shared.elections.fetch_add(1, Ordering::AcqRel);
                    // Lease ids are positive.
                    self.shared.set(u64::try_from(lease).unwrap_or(0));
                    tracing::info!(node = %id, role = %name, "etcd: this node holds the role");
                    self.hold(lease, at).await;
                    self.shared.set(0);
                    tracing::info!(node = %id, role = %name, "etcd: this node no longer holds the role");
                }
                Ok(Campaign::Lost { after }) => {
                    let recheck = self.ctx.options.recheck;
                    let vacancy = pin!(self.ctx.await_deletion(after));
                    tokio::select! {
                        gone = timeout(recheck, vacancy) => {
                            if matches!(gone, Ok(None)) {
                                // The watch failed: not at once again.
                                tokio::time::sleep(recheck.min(Duration::from_millis(500))).await;
                            }
                        }
                        // A new lease (or none) changes what a campaign would do.
                        _ = self.lease.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %id, role = %name, "etcd: campaign failed: {e}");
                    tokio::time::sleep(self.ctx.options.recheck.min(Duration::from_secs(1))).await;
                }
            }
        }
        self.shared.set(0);
    }

    /// Returns when this node no longer holds the role it won on `lease` at
    /// revision `at`: the lease changed or was lost, the key was deleted, or
    /// a check found it is not ours.
    async fn hold(&mut self, lease: i64, at: u64) {
        let mut deletion = pin!(self.ctx.await_deletion(at));
        let mut watching = true;
        let mut recheck = tokio::time::interval(self.ctx.options.recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: the campaign has just read the key.
        recheck.tick().await;
        loop {
            if *self.lease.borrow_and_update() != (LeaseState::Alive { lease }) {
                return;
            }
            tokio::select! {
                changed = self.lease.changed() => {
                    if changed.is_err() {
                        // The node is gone.
                        return;
                    }
                }
                gone = &mut deletion, if watching => match gone {
                    Some(()) => return,
                    // The periodic check stands in until the next one re-watches.
                    None => watching = false,
                },
                _ = recheck.tick() => {
                    // Raced with the lease, so a slow read never delays stepping down.
                    let check = self.ctx.still_ours(lease);
                    tokio::select! {
                        ours = check => match ours {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => tracing::warn!(node = %self.ctx.id, role = %self.ctx.name, "etcd: role check failed: {e}"),
                        },
                        changed = self.lease.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    if !watching {
                        deletion.set(self.ctx.await_deletion(at));
                        watching = true;
                    }
                }
            }
        }
    }
}

impl Ctx {
    /// Creates the key on `lease` unless it exists.
    async fn campaign(&self, lease: i64) -> Result<Campaign, EtcdError> {
        let (ours, at) = self
            .log
            .create_on_lease("role campaign", &self.key, &self.id, lease)
            .await?;
        Ok(match ours {
            true => Campaign::Won { at },
            false => Campaign::Lost { after: at },
        })
    }

    /// Resolves when the key is deleted after revision `after` (`Some`), or
    /// when the watch fails (`None`); a watch on a silent member may never
    /// resolve, so callers bound it.
    async fn await_deletion(&self, after: u64) -> Option<()> {
        let (member, client) = self.log.member().ok()?;
        let start = i64::try_from(after + 1).ok()?;
        let options = WatchOptions::new().with_start_revision(start);
        let limit = self.log.shared.options.request_timeout;
        let mut watches = client.watch_client();
        let watching = watches.watch(self.key.clone(), Some(options));
        let mut stream = match timeout(limit, watching).await {
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
            // mvccpb.Event.EventType 1 is DELETE (read raw: the typed accessor panics on unknown types).
            if response.events().iter().any(|e| e.0.r#type == 1) {
                return Some(());
            }
        }
    }

    /// Deletes the key if it is this node's, on `lease`.
    async fn delete_if_ours(&self, lease: i64) -> Result<(), EtcdError> {
        let key = self.key.clone();
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, self.id.clone()),
                Compare::lease(key.clone(), CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::delete(key, None)]);
        let response = self
            .log
            .retrying("role resignation", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                self.log.deadline(member, kv.txn(txn.clone())).await
            })
            .await?;
        // Not ours (any more): nothing to give up.
        if response.succeeded() {
            tracing::info!(node = %self.id, role = %self.name, "etcd: this node gave the role up");
        }
        Ok(())
    }

    /// Whether the key is this node's, on `lease` (a linearizable read).
    async fn still_ours(&self, lease: i64) -> Result<bool, EtcdError> {
        let key = self.key.clone().into_bytes();
        let response = self
            .log
            .retrying("role check", || {
                self.log.range(key.clone(), etcd_client::GetOptions::new())
            })
            .await?;
        Ok(response
            .kvs()
            .first()
            .is_some_and(|kv| kv.value() == self.id.as_bytes() && kv.lease() == lease))
    }
}
