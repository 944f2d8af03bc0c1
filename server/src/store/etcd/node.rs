//! A Marquee node's lease and presence. Everything a node holds only while
//! it lives (its presence key, the roles it holds, its MQTT clients'
//! ownership) is put on one lease, so that when the node dies, is cut off or
//! stops, etcd deletes all of it in one revision, and the other nodes see
//! that in their watches.
//!
//! The client library does not keep leases alive by itself: a task here
//! sends a keep-alive every [`NodeOptions::keepalive_every`] (a third of the
//! TTL by default), moving to the next member when one does not answer. The
//! node counts its lease as [`LeaseState::Lost`] once a TTL has passed since
//! the last keep-alive etcd confirmed was *sent*, which is before etcd
//! received it and restarted the TTL: so the node stops acting on its lease
//! no later than etcd lets it expire (etcd 3.4 may keep it longer after a
//! leader change, never shorter). If etcd answers that the lease is gone,
//! the node grants a new one and puts its presence again: a new incarnation,
//! whose holder must claim again what it held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{EtcdError, EtcdLog, Failure, backoff, protocol, revision};

/// The lease's timing; [`Default`]: a 10 s TTL renewed every 3.3 s.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The lease's time to live (etcd rounds it up to at least 2 s).
    pub ttl: Duration,
    /// How often the lease is renewed; well under the TTL.
    pub keepalive_every: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            keepalive_every: Duration::from_secs(10) / 3,
        }
    }
}

/// Whether the node holds its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// The lease (this id) is held: keys on it stand for this node.
    Alive { lease: i64 },
    /// Not confirmed within a TTL, or expired: act on nothing held by it.
    Lost,
}

/// A live node: its lease, kept alive by a task, and its presence key
/// `{prefix}node/{id}`. Dropping it stops the keep-alives (as a crash would:
/// the lease then runs out); [`Node::leave`] revokes the lease at once.
pub struct Node {
    pub(super) log: EtcdLog,
    pub(super) id: String,
    pub(super) state: watch::Receiver<LeaseState>,
    /// The revision of the first presence put.
    joined_at: u64,
    halted: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl EtcdLog {
    /// Joins the cluster as node `id`: grants its lease, puts its presence,
    /// and keeps the lease alive until the [`Node`] is dropped. Node ids are
    /// unique among live nodes and hold no `/`.
    pub async fn join(&self, id: &str, options: NodeOptions) -> Result<Node, EtcdError> {
        if id.is_empty() || id.contains('/') {
            return Err(EtcdError::InvalidName(format!(
                "node id '{id}': non-empty, without '/'"
            )));
        }
        if options.keepalive_every.is_zero() || options.keepalive_every >= options.ttl {
            return Err(EtcdError::Config(format!(
                "a node lease renewed every {:?} with a TTL of {:?}: renew well within the TTL",
                options.keepalive_every, options.ttl
            )));
        }
        let mut keeper = Keeper {
            log: self.clone(),
            id: id.to_owned(),
            options: options.clone(),
            lease: None,
            confirmed: Instant::now(),
            stream: None,
            failures: 0,
        };
        let (lease, joined_at) = keeper.register().await?;
        let (state_tx, state) = watch::channel(LeaseState::Alive { lease });
        let halted = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(keeper.run(state_tx, halted.clone()));
        Ok(Node {
            log: self.clone(),
            id: id.to_owned(),
            state,
            joined_at,
            halted,
            task,
        })
    }

    /// The ids of the nodes whose presence keys exist now.
    pub async fn live_nodes(&self) -> Result<Vec<String>, EtcdError> {
        let prefix = self.shared.keys.node("");
        let end = super::read::prefix_end(prefix.as_bytes());
        let response = self
            .retrying("node list", || {
                let options = etcd_client::GetOptions::new()
                    .with_range(end.clone())
                    .with_keys_only();
                self.range(prefix.clone().into_bytes(), options)
            })
            .await?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| kv.key().strip_prefix(prefix.as_bytes()))
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .collect())
    }
}

impl Node {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The revision at which the node first put its presence: watch
    /// ownership from the next one to miss nothing that concerns it.
    pub fn joined_at(&self) -> u64 {
        self.joined_at
    }

    /// The lease held now, if any.
    pub fn lease(&self) -> Option<i64> {
        match *self.state.borrow() {
            LeaseState::Alive { lease } => Some(lease),
            LeaseState::Lost => None,
        }
    }

    /// The lease's state, to wait on changes.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// The connection the node uses.
    pub fn log(&self) -> &EtcdLog {
        &self.log
    }

    /// Stops renewing the lease, as a stopped or cut-off node would: the node
    /// counts it lost after a TTL, and etcd deletes its keys soon after.
    pub fn halt(&self) {
        self.halted.store(true, Ordering::Release);
    }

    /// Renews the lease again after [`Node::halt`], as a node that was
    /// stopped and continued: if etcd let the lease expire meanwhile, the node
    /// grants a new one and puts its presence again (what it held is gone).
    pub fn resume(&self) {
        self.halted.store(false, Ordering::Release);
    }

    /// Leaves at once: revokes the lease, so its keys go in one revision now.
    pub async fn leave(self) -> Result<(), EtcdError> {
        self.task.abort();
        let Some(lease) = self.lease() else {
            return Ok(());
        };
        let result = self
            .log
            .retrying("lease revoke", || async {
                let (member, client) = self.log.member()?;
                let mut leases = client.lease_client();
                self.log
                    .deadline(member, leases.revoke(lease))
                    .await
                    .map_err(|f| match f {
                        Failure::LeaseGone(_, reason) => {
                            Failure::Fatal(EtcdError::Rejected(reason))
                        }
                        other => other,
                    })
            })
            .await;
        match result {
            // Already expired: as good as revoked.
            Err(EtcdError::Rejected(reason)) if reason.contains("lease not found") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The keep-alive task's state.
struct Keeper {
    log: EtcdLog,
    id: String,
    options: NodeOptions,
    /// The lease, once granted (kept while presumed lost: it may live yet).
    lease: Option<i64>,
    /// When the last keep-alive that etcd confirmed was sent.
    confirmed: Instant,
    stream: Option<(usize, LeaseKeeper, LeaseKeepAliveStream)>,
    failures: u32,
}

impl Keeper {
    /// Grants a lease and puts the presence key on it: the lease and the put's revision.
    async fn register(&mut self) -> Result<(i64, u64), EtcdError> {
        let seconds = i64::try_from(self.options.ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let sent = Instant::now();
        let lease = self
            .log
            .retrying("node lease grant", || async {
                let (member, client) = self.log.member()?;
                let mut leases = client.lease_client();
                let granted = self
                    .log
                    .deadline(member, leases.grant(seconds, None))
                    .await?;
                Ok(granted.id())
            })
            .await?;
        let key = self.log.shared.keys.node(&self.id);
        let put = self
            .log
            .retrying("node presence", || async {
                let (member, client) = self.log.member()?;
                let mut kv = client.kv_client();
                let options = PutOptions::new().with_lease(lease);
                self.log
                    .deadline(member, kv.put(key.clone(), self.id.clone(), Some(options)))
                    .await
                    // Expired already (a long pause): the caller grants another.
                    .map_err(|f| match f {
                        Failure::LeaseGone(_, reason) => {
                            Failure::Fatal(EtcdError::Rejected(reason))
                        }
                        other => other,
                    })
            })
            .await?;
        let header = put
            .header()
            .ok_or_else(|| protocol("a put without a header"))?;
        let joined = revision(header.revision())?;
        tracing::info!(node = %self.id, lease, joined, "etcd: node lease granted, presence put");
        self.lease = Some(lease);
        self.confirmed = sent;
        self.stream = None;
        Ok((lease, joined))
    }

    async fn run(mut self, state: watch::Sender<LeaseState>, halted: Arc<AtomicBool>) {
        loop {
            let wait = match self.failures {
                0 => self.options.keepalive_every,
                n => backoff(n).min(self.options.keepalive_every),
            };
            // Wake at the lease's deadline too, so that `Lost` is never late.
            let now = Instant::now();
            let deadline = self.confirmed + self.options.ttl;
            let wake = match deadline > now {
                true => (now + wait).min(deadline),
                false => now + wait,
            };
            tokio::time::sleep_until(wake.into()).await;
            if self.confirmed.elapsed() >= self.options.ttl {
                state.send_if_modified(|s| {
                    let changed = *s != LeaseState::Lost;
                    if changed {
                        tracing::warn!(node = %self.id, "etcd: node lease not confirmed within its TTL: lost");
                    }
                    *s = LeaseState::Lost;
                    changed
                });
            }
            if halted.load(Ordering::Acquire) {
                continue;
            }
            let Some(lease) = self.lease else {
                self.regrant(&state).await;
                continue;
            };
            let sent = Instant::now();
            match self.renew(lease).await {
                Ok(true) => {
                    self.failures = 0;
                    self.confirmed = sent;
                    state.send_if_modified(|s| {
                        let changed = *s != LeaseState::Alive { lease };
                        *s = LeaseState::Alive { lease };
                        changed
                    });
                }
                Ok(false) => {
                    tracing::warn!(node = %self.id, lease, "etcd: node lease expired");
                    state.send_replace(LeaseState::Lost);
                    self.lease = None;
                    self.stream = None;
                    self.regrant(&state).await;
                }
                Err(reason) => {
                    self.failures += 1;
                    if let Some((member, _, _)) = self.stream.take() {
                        self.log.avoid(member);
                    }
                    tracing::debug!(node = %self.id, "etcd: keep-alive failed: {reason}");
                }
            }
        }
    }

    async fn regrant(&mut self, state: &watch::Sender<LeaseState>) {
        match self.register().await {
            Ok((lease, _)) => {
                self.failures = 0;
                state.send_replace(LeaseState::Alive { lease });
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(node = %self.id, "etcd: could not grant a node lease: {e}");
            }
        }
    }

    /// One keep-alive: `Ok(true)` renewed, `Ok(false)` the lease is gone.
    async fn renew(&mut self, lease: i64) -> Result<bool, String> {
        let limit = self.log.shared.options.request_timeout;
        if let Some((_, keeper, stream)) = self.stream.as_mut() {
            let exchange = async {
                keeper.keep_alive().await?;
                stream.message().await
            };
            return match timeout(limit, exchange).await {
                Ok(Ok(Some(response))) => Ok(response.ttl() > 0),
                Ok(Ok(None)) => Err("the keep-alive stream ended".into()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no keep-alive answer within {limit:?}")),
            };
        }
        // A new stream sends the first keep-alive and waits for its answer.
        let (member, client) = self.log.member().map_err(|f| match f {
            Failure::Fatal(e) => e.to_string(),
            Failure::Retry(r) | Failure::LeaseGone(_, r) => r,
        })?;
        let mut leases = client.lease_client();
        match timeout(limit, leases.keep_alive(lease)).await {
            Ok(Ok((keeper, stream))) => {
                self.stream = Some((member, keeper, stream));
                Ok(true)
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                Ok(false)
            }
            Ok(Err(e)) => {
                self.log.avoid(member);
                Err(e.to_string())
            }
            Err(_) => {
                self.log.avoid(member);
                Err(format!("no keep-alive answer within {limit:?}"))
            }
        }
    }
}
