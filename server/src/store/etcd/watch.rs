//! Watching the log back: every revision from a start, in order, each once,
//! across member failures, with the compaction floor as an error.
//!
//! # Watch
//! [`EtcdLog::watch_from`] watches the whole prefix from a revision and yields
//! one [`LogEntry`] per revision that touched any key under it, so every
//! commit shows up, even one whose deletes found nothing to delete, and every
//! put of a transient publish (each its own revision) shows up once. A
//! revision that touched only the layer's own keys (idempotency keys expiring
//! with their lease, `node/`, `own/`, `will/`, `role/`) yields an *empty*
//! entry ([`LogEntry::is_empty`]: no batch, no change), not nothing: so a
//! node's applier moves its applied revision to every revision it has seen,
//! and a wait for "applied ≥ R" ends for any R a node learns from etcd (a
//! claim's revision, a read's header), not only for Store writes. They are
//! few: a lease's expiry, a node joining, a CONNECT's claim. The `share/`
//! keys are the layer's own too, but an entry lists their changes
//! ([`LogEntry::shares`]): a node needs them in this order. (A revision that
//! wrote only outside the prefix is never seen at all, so a read's header
//! is a safe R only on a cluster Marquee does not share.)
//!
//! # Resuming
//! The client library does not resume watches: when the stream breaks, ends, or
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

use std::collections::VecDeque;
use std::time::Instant;

use etcd_client::{Event, WatchOptions, WatchResponse, WatchStream};
use tokio::time::timeout;

use super::{
    EtcdError, EtcdLog, Failure, Key, Keys, ShareChange, WATCH_MAX_MESSAGE, backoff, to_i64,
};

/// One change of the Store's state (a put or a delete of a key of any
/// kind), as the watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Which key, of which kind.
    pub key: Key,
    /// The bytes put; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The revision of the change (its entry's): a put's new mod revision.
    pub mod_revision: u64,
    /// The revision that created the key (since its last delete); 0 for a delete.
    pub create_revision: u64,
    /// etcd's per-key version after a put (1 on creation, restarting after a
    /// delete); 0 for a delete. A delete's event carries neither this nor
    /// the create revision; the watch does not ask for previous values
    /// (`prev_kv` would send every put's old value too, and read it from
    /// etcd's disk).
    pub version: u64,
}

impl Change {
    /// The record's table and id, if this changed a record.
    pub fn record(&self) -> Option<(&str, &str)> {
        self.key.as_record()
    }
}

/// Everything one revision changed, in the order etcd applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub revision: u64,
    /// The idempotency key of the batch committed at this revision.
    pub idempotency_key: Option<String>,
    /// The changes of the Store's state, of every kind, in the batch's order.
    pub changes: Vec<Change>,
    /// Nodes that came to have, or no longer have, members of a shared
    /// subscription (`share/` keys, the layer's own but needed in this order).
    pub shares: Vec<ShareChange>,
}

impl LogEntry {
    /// A revision that committed no batch and changed no Store key (only
    /// the layer's own keys): nothing to apply but the revision itself.
    pub fn is_empty(&self) -> bool {
        self.idempotency_key.is_none() && self.changes.is_empty() && self.shares.is_empty()
    }
}

impl EtcdLog {
    /// Every revision from `start` on (1 or 0: the oldest kept) that touched
    /// a key under the prefix, in revision order, each once (see the module doc).
    pub fn watch_from(&self, start: u64) -> LogWatch {
        let root = self.shared.keys.root.clone();
        let end = super::read::prefix_end(root.as_bytes());
        self.watch_keys(root, end, false, log_entry, start)
    }

    /// Watches every key from `key` to `end` (excluded) from `start` on, with
    /// the previous value of each key if `prev_kv`; `decode` makes a
    /// revision's events into what the watch yields (`None`: nothing).
    pub(super) fn watch_keys<E>(
        &self,
        key: String,
        end: Vec<u8>,
        prev_kv: bool,
        decode: Decoder<E>,
        start: u64,
    ) -> Watch<E> {
        Watch {
            key,
            end,
            prev_kv,
            decode,
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
}

/// Makes one revision's events (of the watched keys) into what a watch yields.
pub(super) type Decoder<E> = fn(&Keys, u64, &[Event]) -> Option<E>;

/// The log from a revision on; see [`EtcdLog::watch_from`].
pub type LogWatch = Watch<LogEntry>;

/// A watch of keys under a prefix from a revision on, yielding one `E` per
/// revision that has one: the machinery of [`LogWatch`], also used to watch
/// client ownership.
pub struct Watch<E> {
    key: String,
    end: Vec<u8>,
    prev_kv: bool,
    decode: Decoder<E>,
    log: EtcdLog,
    /// The last revision received (queued or skipped as empty): resume after it.
    last_seen: u64,
    stream: Option<WatchStream>,
    /// The member the stream is on.
    member: usize,
    /// Events of a response the server sent in fragments, until the last one.
    fragments: Vec<Event>,
    ready: VecDeque<(u64, E)>,
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

impl<E> Watch<E> {
    /// The next revision's changes. Errors end the watch: every later call
    /// returns the same error. Cancel-safe: a call dropped before it returns
    /// (a `select!` that took another branch) loses no revision.
    pub async fn next(&mut self) -> Result<E, EtcdError> {
        loop {
            if let Some(error) = &self.failed {
                return Err(error.clone());
            }
            if let Some((_, entry)) = self.ready.pop_front() {
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
            Some((revision, _)) => revision - 1,
            None => self.last_seen,
        }
    }

    /// How many times the stream was lost and the watch made again (for metrics).
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// This watch as a stream, which ends after its first error.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<E, EtcdError>> {
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
        let mut options = WatchOptions::new()
            .with_range(self.end.clone())
            .with_start_revision(start)
            .with_fragment();
        if self.prev_kv {
            options = options.with_prev_key();
        }
        let mut client = client
            .watch_client()
            .max_decoding_message_size(WATCH_MAX_MESSAGE);
        let shared = &self.log.shared;
        let key = self.key.clone();
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
        let mut revision = 0;
        let mut group: Vec<Event> = Vec::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(rev) = u64::try_from(kv.mod_revision()) else {
                continue;
            };
            if rev <= self.last_seen {
                // Already delivered: a re-watch on another member replayed it.
                continue;
            }
            if rev != revision && !group.is_empty() {
                self.deliver(revision, &std::mem::take(&mut group));
            }
            revision = rev;
            group.push(event);
        }
        if !group.is_empty() {
            self.deliver(revision, &group);
        }
        None
    }

    /// Queues a whole revision (unless it held nothing of ours) and moves past it.
    fn deliver(&mut self, revision: u64, events: &[Event]) {
        self.last_seen = revision;
        if let Some(entry) = (self.decode)(&self.log.shared.keys, revision, events) {
            self.ready.push_back((revision, entry));
        }
    }
}

/// A revision as the log: its changes and batch, possibly neither.
fn log_entry(keys: &Keys, revision: u64, events: &[Event]) -> Option<LogEntry> {
    let mut entry = LogEntry {
        revision,
        idempotency_key: None,
        changes: Vec::new(),
        shares: Vec::new(),
    };
    for event in events {
        keys.add_event(&mut entry, event);
    }
    Some(entry)
}

impl Keys {
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
        if let Some(key) = Key::parse(rest) {
            let number = |n: i64| u64::try_from(n).unwrap_or(0);
            entry.changes.push(Change {
                key,
                value: put.then(|| kv.value().to_vec()),
                mod_revision: entry.revision,
                create_revision: number(kv.create_revision()),
                version: number(kv.version()),
            });
        } else if let Some((subscription, node)) = Keys::parse_share(rest) {
            entry.shares.push(ShareChange {
                subscription,
                node,
                present: put,
            });
        } else if let Some(key) = rest.strip_prefix(b"idem/") {
            // A deleted idempotency key is its lease expiring, not a commit.
            if put {
                entry.idempotency_key = Some(String::from_utf8_lossy(key).into_owned());
            }
        } else if !self.is_own(rest) {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "not a Marquee key; ignored");
        }
    }
}
