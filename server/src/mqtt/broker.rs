//! The broker: the registry of client sessions (so a second connection with
//! the same client id takes over the first), the shared subscriptions'
//! groups, and the limits every connection enforces. `listener` accepts the
//! connections that use it. Messages travel through the store and
//! the bus like every other protocol's; nothing here keeps a second copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use super::session::{SavedSession, Session};
use super::shares::Shares;
use crate::auth::Guard;
use crate::store::Store;

/// The largest packet MQTT can express: a 268,435,455-byte remaining length
/// plus the 5-byte fixed header.
pub const MAX_PACKET_SIZE: usize = 268_435_460;

/// What one client may use. Every limit is checked before memory is taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest packet either way, fixed header included.
    pub max_packet_size: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most `/`-separated levels in a topic or filter.
    pub max_topic_levels: usize,
    /// Subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// QoS 1/2 messages in flight each way (our Receive Maximum; the window
    /// towards MQTT 3.1.1 clients).
    pub max_inflight: u16,
    /// Open MQTT connections, TCP and WebSocket together, counted from the
    /// moment a socket is accepted.
    pub max_connections: usize,
    /// Sessions that outlive their connection, online or not. A client
    /// asking for a new one past this is refused (0x97; 3.1.1: 0x03).
    pub max_sessions: usize,
    /// The longest a session may outlive its connection: what an MQTT 3.1.1
    /// persistent session gets (Mosquitto's `persistent_client_expiration`),
    /// and the cap on an MQTT 5 client's Session Expiry Interval.
    pub max_session_expiry: Duration,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// The longest keep-alive a client may ask for; MQTT 5 clients asking
    /// for more (or for none) are told this as Server Keep Alive.
    pub max_keep_alive: u16,
    /// Topic aliases a client may set towards us.
    pub topic_alias_maximum: u16,
    /// How often `$SYS/broker/...` statistics are published.
    pub sys_interval: Duration,
}

impl Limits {
    /// `max_session_expiry` as MQTT's Session Expiry Interval.
    pub fn max_session_expiry_secs(&self) -> u32 {
        u32::try_from(self.max_session_expiry.as_secs()).unwrap_or(u32::MAX - 1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_size: 1 << 20,
            max_topic_length: crate::store::MAX_TOPIC_ID_LEN,
            max_topic_levels: 32,
            max_subscriptions: 256,
            max_inflight: 64,
            max_connections: 10_000,
            max_sessions: 10_000,
            max_session_expiry: Duration::from_secs(7 * 24 * 3600),
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: 3600,
            topic_alias_maximum: 64,
            sys_interval: super::sys::INTERVAL,
        }
    }
}

/// Handle to the broker; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    limits: Limits,
    guard: Guard,
    sessions: Mutex<HashMap<String, Slot>>,
    shares: Shares,
    connections: AtomicUsize,
    /// Sockets past `max_connections` waiting to be told the server is busy.
    refusing: AtomicUsize,
    generation: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Connection tasks and delayed wills; the server waits for them at shutdown.
    tasks: TaskTracker,
}

/// A request to a connection to hand its session over and close.
pub(super) type Takeover = oneshot::Sender<Option<Box<Session>>>;

enum Slot {
    Online {
        generation: u64,
        takeover: mpsc::Sender<Takeover>,
        /// Its session outlives the connection (counts against `max_sessions`).
        persistent: bool,
        /// The store's revision of its claim of the client id (0 embedded):
        /// another node's claim closes it only if newer.
        claimed: u64,
    },
    Offline {
        session: Box<Session>,
        expires: Instant,
    },
}

/// What a new connection found under its client id.
pub(super) enum Previous {
    None,
    Online(mpsc::Sender<Takeover>),
    Offline(Box<Session>),
}

/// Counts a socket for as long as it lives.
pub(super) struct ConnectionSlot {
    broker: Broker,
    /// Counted among the sockets being refused, not the connections.
    refusal: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let inner = &self.broker.inner;
        let counter = if self.refusal {
            &inner.refusing
        } else {
            &inner.connections
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sockets past `max_connections` that may wait (briefly) for their CONNECT
/// to be answered "server busy"; any more are closed at once.
const MAX_REFUSING: usize = 64;

/// The role (on etcd) of the node that forgets sessions their nodes left.
const SESSION_SWEEPER: &str = "mqtt-sessions";

/// How long a client that moved from another node waits for that node to
/// save its session, after which it takes the last save there is.
const REMOTE_SESSION_WAIT: Duration = Duration::from_secs(2);

/// `claim` found no room for another session that outlives its connection.
pub(super) struct TooManySessions;

impl Broker {
    /// A broker on `store`, with the persistent sessions saved there before
    /// a restart waiting for their clients.
    pub fn new(
        store: Store,
        limits: Limits,
        guard: Guard,
        shutdown: watch::Receiver<bool>,
        tasks: TaskTracker,
    ) -> Self {
        // On etcd a client's session is read when it connects, on whichever
        // node: taken up here at start, each node would hold (and sweep, and
        // keep in its groups) every other node's sessions too.
        let sessions = if store.on_etcd() {
            HashMap::new()
        } else {
            restore_sessions(&store, &limits)
        };
        // A restored session is still in its groups: it gets its share of
        // what they are sent while away, as it would have without the restart.
        let shares = Shares::new(store.clone(), shutdown.clone());
        for (client_id, slot) in &sessions {
            if let Slot::Offline { session, .. } = slot {
                for (subscription, filter) in session.shares() {
                    shares.join(subscription, filter, client_id, &session.shared);
                }
            }
        }
        Self {
            inner: Arc::new(Inner {
                store,
                limits,
                guard,
                sessions: Mutex::new(sessions),
                shares,
                connections: AtomicUsize::new(0),
                refusing: AtomicUsize::new(0),
                generation: AtomicU64::new(1),
                shutdown,
                tasks,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Who may connect, and do what.
    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    pub(super) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.clone()
    }

    /// Where connection tasks and delayed wills are spawned, so shutdown waits for them.
    pub(super) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Counts a socket just accepted: `Ok` within `max_connections`; past
    /// it `Err`, with a slot among the few that wait to be refused, or none.
    pub(super) fn admit_connection(&self) -> Result<ConnectionSlot, Option<ConnectionSlot>> {
        let admit = |counter: &AtomicUsize, limit: usize, refusal: bool| {
            let before = counter.fetch_add(1, Ordering::AcqRel);
            let slot = ConnectionSlot {
                broker: self.clone(),
                refusal,
            };
            (before < limit).then_some(slot)
        };
        let inner = &self.inner;
        admit(&inner.connections, inner.limits.max_connections, false)
            .ok_or_else(|| admit(&inner.refusing, MAX_REFUSING, true))
    }

    pub(super) fn next_generation(&self) -> u64 {
        self.inner.generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection as the owner of `client_id` and returns what
    /// was there before: a live connection to take over, or a stored session.
    /// A `persistent` connection that would start a new session past
    /// `max_sessions` is refused, and nothing changes.
    pub(super) fn claim(
        &self,
        client_id: &str,
        generation: u64,
        takeover: mpsc::Sender<Takeover>,
        persistent: bool,
        claimed: u64,
    ) -> Result<Previous, TooManySessions> {
        let mut sessions = self.sessions();
        let has_session = match sessions.get(client_id) {
            Some(Slot::Online { .. }) => true,
            Some(Slot::Offline { expires, .. }) => *expires > Instant::now(),
            None => false,
        };
        if persistent && !has_session {
            let kept = sessions
                .values()
                .filter(|slot| match slot {
                    Slot::Online { persistent, .. } => *persistent,
                    Slot::Offline { .. } => true,
                })
                .count();
            if kept >= self.inner.limits.max_sessions {
                return Err(TooManySessions);
            }
        }
        let previous = sessions.insert(
            client_id.to_owned(),
            Slot::Online {
                generation,
                takeover,
                persistent,
                claimed,
            },
        );
        Ok(match previous {
            None => Previous::None,
            Some(Slot::Online { takeover, .. }) => Previous::Online(takeover),
            Some(Slot::Offline {
                mut session,
                expires,
            }) => {
                if expires <= Instant::now() {
                    self.leave_shares(client_id, &mut session);
                    Previous::None
                } else {
                    Previous::Offline(session)
                }
            }
        })
    }

    /// Ends a connection's ownership of `client_id`, keeping its session if it
    /// asked to outlive the connection. If a newer connection has claimed the
    /// id meanwhile, the session comes back: that connection is asking for it.
    pub(super) fn release(
        &self,
        client_id: &str,
        generation: u64,
        session: Box<Session>,
    ) -> Result<(), Box<Session>> {
        let mut sessions = self.sessions();
        let owned = matches!(
            sessions.get(client_id),
            Some(Slot::Online { generation: g, .. }) if *g == generation
        );
        if !owned {
            return Err(session);
        }
        match Some(session).filter(|s| s.expiry > 0) {
            Some(session) => {
                let expires = Instant::now() + Duration::from_secs(u64::from(session.expiry));
                sessions.insert(client_id.to_owned(), Slot::Offline { session, expires });
            }
            None => {
                sessions.remove(client_id);
            }
        }
        Ok(())
    }

    /// Whether the connection of `generation` is still the latest for
    /// `client_id` (or the client has not come back): a delayed will is
    /// published only then.
    pub(super) fn not_reconnected(&self, client_id: &str, generation: u64) -> bool {
        match self.sessions().get(client_id) {
            Some(Slot::Online { generation: g, .. }) => *g <= generation,
            _ => true,
        }
    }

    /// How many sessions are stored for clients that are away.
    pub fn offline_sessions(&self) -> usize {
        self.sessions()
            .values()
            .filter(|s| matches!(s, Slot::Offline { .. }))
            .count()
    }

    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
    }

    /// Forgets sessions whose expiry has passed, every 10 s, for ever. On
    /// etcd, the node holding the `mqtt-sessions` role also forgets the
    /// expired sessions nobody holds: those of clients whose node died.
    pub(super) async fn sweep_expired_sessions(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let orphans = match self.inner.store.on_etcd() {
            true => self.inner.store.leadership(SESSION_SWEEPER).ok(),
            false => None,
        };
        loop {
            tick.tick().await;
            if orphans.as_ref().is_some_and(|held| *held.borrow()) {
                self.forget_orphaned_sessions().await;
            }
            let now = Instant::now();
            let expired: Vec<(String, Box<Session>)> = {
                let mut sessions = self.sessions();
                let ids: Vec<String> = sessions
                    .iter()
                    .filter(|(_, slot)| {
                        matches!(slot, Slot::Offline { expires, .. } if *expires <= now)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.into_iter()
                    .filter_map(|id| match sessions.remove(&id) {
                        Some(Slot::Offline { session, .. }) => Some((id, session)),
                        _ => None,
                    })
                    .collect()
            };
            for (id, mut session) in expired {
                // An expired member gets no more of its groups' messages, and
                // what it was given goes to the others.
                self.leave_shares(&id, &mut session);
                if let Err(e) = self.inner.store.save_session(&id, None).await {
                    tracing::warn!(client_id = %id, "cannot forget an expired session: {e}");
                }
            }
        }
    }

    /// Forgets saved sessions that have expired while no node held them:
    /// their node died with them, so no node's own sweep will. A client
    /// connected anywhere keeps its session (its node saves it again).
    async fn forget_orphaned_sessions(&self) {
        let saved = match self.inner.store.saved_sessions() {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!("cannot read saved MQTT sessions: {e}");
                return;
            }
        };
        let now_ms = super::session::now_ms();
        let max_expiry = self.inner.limits.max_session_expiry_secs();
        for (client_id, bytes) in saved {
            let expired = serde_json::from_slice::<SavedSession>(&bytes).is_ok_and(|saved| {
                let expiry = saved.expiry.min(max_expiry);
                saved.saved_at_ms.saturating_add(u64::from(expiry) * 1000) <= now_ms
            });
            if !expired || self.sessions().contains_key(&client_id) {
                continue;
            }
            match self.inner.store.client_claimed(&client_id).await {
                Ok(false) => {
                    tracing::debug!(%client_id, "forgetting an expired session of a node since gone");
                    if let Err(e) = self.inner.store.save_session(&client_id, None).await {
                        tracing::warn!(%client_id, "cannot forget an expired session: {e}");
                    }
                }
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!("cannot tell whether a client is connected: {e}");
                    return;
                }
            }
        }
    }

    /// Another node claimed `client_id` at `revision`: closes its connection
    /// here as a local takeover would (0x8E for MQTT 5) and saves its
    /// session for the other node, or forgets the copy kept here of a
    /// session now used there.
    pub(super) async fn taken_over_elsewhere(&self, client_id: &str, revision: u64) {
        let offline = {
            let mut sessions = self.sessions();
            match sessions.get(client_id) {
                Some(Slot::Online {
                    generation,
                    takeover,
                    claimed,
                    ..
                }) if *claimed < revision => Err((*generation, takeover.clone())),
                // Saved when its connection ended; the other node reads it
                // from the store. Kept here it would go stale.
                Some(Slot::Offline { .. }) => match sessions.remove(client_id) {
                    Some(Slot::Offline { session, expires }) => Ok((session, expires)),
                    _ => return,
                },
                // Reconnected here after that claim, or gone already.
                _ => return,
            }
        };
        let (generation, takeover) = match offline {
            Ok((mut session, expires)) => {
                self.leave_shares(client_id, &mut session);
                // Saved again, as of now: the other node waits for a save
                // made after its claim, and this is the latest (any later
                // claim would have taken it away from here). Its client is
                // back, so its expiry counting from now is right.
                if expires > Instant::now() {
                    self.save_moved(client_id, session).await;
                }
                return;
            }
            Err(online) => online,
        };
        let (reply, handed) = oneshot::channel();
        if takeover.send(reply).await.is_err() {
            return;
        }
        let session = tokio::time::timeout(super::connection::TAKEOVER_TIMEOUT, handed)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        {
            let mut sessions = self.sessions();
            let ours = matches!(
                sessions.get(client_id),
                Some(Slot::Online { generation: g, .. }) if *g == generation
            );
            if ours {
                sessions.remove(client_id);
            }
        }
        let Some(mut session) = session else {
            return;
        };
        session.shared.set_online(false);
        // Its groups' messages in hand go back to them; the session goes on
        // on the other node, which joins the groups there.
        self.leave_shares(client_id, &mut session);
        self.save_moved(client_id, session).await;
        tracing::debug!(%client_id, revision, "MQTT client taken over by another node");
    }

    /// Saves a session another node is taking over, as its connection would
    /// on closing (a session that ends with its connection is forgotten).
    async fn save_moved(&self, client_id: &str, session: Box<Session>) {
        let state = (session.expiry > 0)
            .then(|| serde_json::to_vec(&session.saved()).ok())
            .flatten();
        if (state.is_some() || session.stored)
            && let Err(e) = self.inner.store.save_session(client_id, state).await
        {
            tracing::warn!(%client_id, "cannot save a session taken over by another node: {e}");
        }
    }

    /// The persistent session of `client_id` as the store has it saved
    /// (on etcd, caught up with every node's saves first). With
    /// `wait_since`, the client was on another node, which saves its session
    /// again on seeing this node's claim: if a save older than that time
    /// (ms) is there, waits (at most [`REMOTE_SESSION_WAIT`]) for the new
    /// one, else takes the latest there is. `None` if there is none.
    pub(super) async fn saved_session(
        &self,
        client_id: &str,
        wait_since: Option<u64>,
    ) -> Option<SavedSession> {
        let read = || -> Option<SavedSession> {
            match self.inner.store.saved_session(client_id) {
                Ok(bytes) => bytes.and_then(|b| serde_json::from_slice(&b).ok()),
                Err(e) => {
                    tracing::warn!(%client_id, "cannot read a saved session: {e}");
                    None
                }
            }
        };
        if let Err(e) = self.inner.store.caught_up().await {
            tracing::warn!(%client_id, "reading a saved session without catching up: {e}");
        }
        let Some(since_ms) = wait_since else {
            return read();
        };
        let deadline = Instant::now() + REMOTE_SESSION_WAIT;
        loop {
            // Nothing saved: the session there ended with its connection
            // (or had nothing worth keeping), and nothing is coming.
            let saved = read()?;
            if saved.saved_at_ms >= since_ms || Instant::now() >= deadline {
                return Some(saved);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A saved session taken up by a client connecting here (`None` if it
    /// has expired), in its shared subscriptions' groups here from now on,
    /// as a session restored at start is.
    pub(super) fn resume_saved(
        &self,
        client_id: &str,
        saved: SavedSession,
    ) -> Option<Box<Session>> {
        let expiry = saved
            .expiry
            .min(self.inner.limits.max_session_expiry_secs());
        let end_ms = saved.saved_at_ms.saturating_add(u64::from(expiry) * 1000);
        if end_ms <= super::session::now_ms() {
            return None;
        }
        let mut session = Box::new(Session::restore(saved));
        session.expiry = expiry;
        for (subscription, filter) in session.shares() {
            self.inner
                .shares
                .join(subscription, filter, client_id, &session.shared);
        }
        Some(session)
    }

    /// The shared subscriptions' groups.
    pub(super) fn shares(&self) -> &Shares {
        &self.inner.shares
    }

    /// Takes an ending session out of all its groups, handing back to them
    /// what it was given and had not finished.
    pub(super) fn leave_shares(&self, client_id: &str, session: &mut Session) {
        let subscriptions: Vec<String> = session.shares().map(|(s, _)| s.to_owned()).collect();
        for subscription in subscriptions {
            let returned = session.take_shared(Some(&subscription), true);
            self.inner.shares.leave(&subscription, client_id, returned);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the persistent sessions saved in the store; the sweep drops those
/// that expired while the server was down. Sessions saved under a longer
/// expiry than today's limit get today's.
fn restore_sessions(store: &Store, limits: &Limits) -> HashMap<String, Slot> {
    let max_expiry = limits.max_session_expiry_secs();
    let saved = match store.saved_sessions() {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!("cannot read saved MQTT sessions: {e}");
            return HashMap::new();
        }
    };
    let now_ms = super::session::now_ms();
    let mut sessions = HashMap::new();
    for (client_id, bytes) in saved {
        let Ok(saved) = serde_json::from_slice::<SavedSession>(&bytes) else {
            tracing::warn!(%client_id, "ignoring an unreadable saved session");
            continue;
        };
        let expiry = saved.expiry.min(max_expiry);
        let end_ms = saved.saved_at_ms.saturating_add(u64::from(expiry) * 1000);
        let expires = Instant::now() + Duration::from_millis(end_ms.saturating_sub(now_ms));
        let mut session = Box::new(Session::restore(saved));
        session.expiry = expiry;
        sessions.insert(client_id, Slot::Offline { session, expires });
    }
    if !sessions.is_empty() {
        tracing::info!(count = sessions.len(), "MQTT sessions restored");
    }
    sessions
}
