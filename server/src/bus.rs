//! The change bus: routes every committed change (and every transient publish)
//! to the subscribers whose filters match its topic.
//!
//! Each subscriber has one queue, bounded both in changes and in bytes (a
//! count alone would let a slow reader of 1 MB messages hold gigabytes).
//! Publishing never waits: a subscriber whose queue is full is cut off on the
//! spot (it can resume from the last `seq` it saw), so one slow reader never
//! delays the writer or anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use app::event::ChangeEvent;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::topic::{FilterTrie, TopicFilter};

/// Events queued for one subscriber before it is cut off.
pub const DEFAULT_QUEUE: usize = 4096;
/// Bytes (of the changes' JSON, estimated) queued for one subscriber before
/// it is cut off: 64 of the largest request bodies.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// How far one subscriber's queue may fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimit {
    pub events: usize,
    /// A change larger than this alone is still queued when the queue is
    /// empty, so that one large message never cuts off a reader that keeps up.
    pub bytes: usize,
}

impl Default for QueueLimit {
    fn default() -> Self {
        Self {
            events: DEFAULT_QUEUE,
            bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

impl QueueLimit {
    /// A limit of `events` changes and the default byte budget.
    pub fn events(events: usize) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

type SubscriberId = u64;

/// The shared router. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    router: RwLock<Router>,
    next_id: AtomicU64,
    limit: QueueLimit,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Router {
    trie: FilterTrie<SubscriberId>,
    subscribers: HashMap<SubscriberId, Entry>,
}

struct Entry {
    tx: mpsc::Sender<Queued>,
    filters: Vec<TopicFilter>,
    lagged: Arc<AtomicBool>,
    /// The estimated bytes of the changes in its queue.
    queued_bytes: Arc<AtomicUsize>,
}

/// A change in a subscriber's queue, with the bytes it counts for.
type Queued = (Arc<ChangeEvent>, usize);

/// Why a subscriber stopped receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("the subscriber fell too far behind and was cut off")]
    Lagged,
    #[error("the bus is closed")]
    Closed,
}

/// One subscriber's end: its filters and its queue. Dropping it unsubscribes.
pub struct Subscriber {
    id: SubscriberId,
    rx: mpsc::Receiver<Queued>,
    lagged: Arc<AtomicBool>,
    queued_bytes: Arc<AtomicUsize>,
    bus: Bus,
}

impl Bus {
    pub fn new(limit: QueueLimit, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                router: RwLock::new(Router::default()),
                next_id: AtomicU64::new(1),
                limit: QueueLimit {
                    events: limit.events.max(1),
                    bytes: limit.bytes,
                },
                metrics,
            }),
        }
    }

    /// A new subscriber with no filters yet.
    pub fn subscribe(&self) -> Subscriber {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.limit.events);
        let lagged = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        self.router_mut().subscribers.insert(
            id,
            Entry {
                tx,
                filters: Vec::new(),
                lagged: lagged.clone(),
                queued_bytes: queued_bytes.clone(),
            },
        );
        Subscriber {
            id,
            rx,
            lagged,
            queued_bytes,
            bus: self.clone(),
        }
    }

    /// Delivers `event` to every subscriber with a matching filter, once each.
    pub fn publish(&self, event: Arc<ChangeEvent>) {
        let mut targets = Vec::new();
        let mut laggards = Vec::new();
        {
            let router = self.router();
            // Nobody listening (a REST-only load): no topic string to build
            // and no trie walk for every write.
            if router.subscribers.is_empty() {
                return;
            }
            router
                .trie
                .matches_parts(&event.table, &event.id, &mut targets);
            targets.sort_unstable();
            targets.dedup();
            if targets.is_empty() {
                return;
            }
            let bytes = weight(&event);
            for id in &targets {
                let Some(entry) = router.subscribers.get(id) else {
                    continue;
                };
                let queued = entry.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
                if queued > 0 && queued + bytes > self.inner.limit.bytes {
                    entry.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    laggards.push(*id);
                    continue;
                }
                match entry.tx.try_send((event.clone(), bytes)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        entry.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                        laggards.push(*id);
                    }
                    // The receiver is gone; its Drop is about to unsubscribe it.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        if !laggards.is_empty() {
            let mut router = self.router_mut();
            for id in laggards {
                if let Some(entry) = router.remove(id) {
                    entry.lagged.store(true, Ordering::Release);
                    self.inner.metrics.bus_cutoffs.inc();
                    tracing::warn!(subscriber = id, "slow subscriber cut off");
                }
            }
        }
    }

    /// Cuts every subscriber off, as if each had fallen behind: after changes
    /// were lost to this node (its etcd watch fell behind the compaction),
    /// each protocol tells its clients to read the state again.
    pub fn cut_off_all(&self) {
        let mut router = self.router_mut();
        let ids: Vec<SubscriberId> = router.subscribers.keys().copied().collect();
        for id in ids {
            if let Some(entry) = router.remove(id) {
                entry.lagged.store(true, Ordering::Release);
                self.inner.metrics.bus_cutoffs.inc();
            }
        }
    }

    /// How many subscribers are registered (for metrics and tests).
    pub fn subscriber_count(&self) -> usize {
        self.router().subscribers.len()
    }

    fn router(&self) -> std::sync::RwLockReadGuard<'_, Router> {
        // A panic while holding the lock cannot leave the router half-updated in a
        // way that matters more than losing the broker, so keep serving.
        self.inner
            .router
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn router_mut(&self) -> std::sync::RwLockWriteGuard<'_, Router> {
        self.inner
            .router
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Router {
    fn remove(&mut self, id: SubscriberId) -> Option<Entry> {
        let entry = self.subscribers.remove(&id)?;
        for filter in &entry.filters {
            self.trie.remove(filter, id);
        }
        Some(entry)
    }
}

impl Subscriber {
    /// Starts routing events matching `filter` to this subscriber.
    pub fn add_filter(&self, filter: &TopicFilter) {
        let mut router = self.bus.router_mut();
        let Some(entry) = router.subscribers.get_mut(&self.id) else {
            return;
        };
        if entry.filters.contains(filter) {
            return;
        }
        entry.filters.push(filter.clone());
        router.trie.insert(filter, self.id);
    }

    /// Stops routing events for `filter`; returns whether it was held.
    pub fn remove_filter(&self, filter: &TopicFilter) -> bool {
        let mut router = self.bus.router_mut();
        let Some(entry) = router.subscribers.get_mut(&self.id) else {
            return false;
        };
        let before = entry.filters.len();
        entry.filters.retain(|f| f != filter);
        let held = entry.filters.len() != before;
        if held {
            router.trie.remove(filter, self.id);
        }
        held
    }

    pub fn filter_count(&self) -> usize {
        self.bus
            .router()
            .subscribers
            .get(&self.id)
            .map_or(0, |e| e.filters.len())
    }

    /// The next event, in the order the bus published them.
    pub async fn recv(&mut self) -> Result<Arc<ChangeEvent>, RecvError> {
        match self.rx.recv().await {
            Some((event, bytes)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                Ok(event)
            }
            None if self.lagged.load(Ordering::Acquire) => Err(RecvError::Lagged),
            None => Err(RecvError::Closed),
        }
    }
}

/// About how many bytes `event` takes as JSON: what a queued change holds on
/// to, without serialising it (the walk is a small fraction of the one
/// serialisation each subscriber's protocol does anyway).
fn weight(event: &ChangeEvent) -> usize {
    const FIELDS: usize = 96;
    FIELDS + event.table.len() + event.id.len() + event.value.as_ref().map_or(0, value_weight)
}

fn value_weight(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| value_weight(v) + 1).sum::<usize>(),
        Value::Object(fields) => {
            2 + fields
                .iter()
                .map(|(k, v)| k.len() + 4 + value_weight(v))
                .sum::<usize>()
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.bus.router_mut().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::event::{ChangeType, Origin};

    fn event(table: &str, id: &str, seq: u64) -> Arc<ChangeEvent> {
        Arc::new(ChangeEvent {
            seq: Some(seq),
            kind: ChangeType::Put,
            table: table.into(),
            id: id.into(),
            version: Some(1),
            ts: String::new(),
            origin: Origin::System,
            value: None,
            mqtt: None,
            created: false,
            carried_at: None,
        })
    }

    #[tokio::test]
    async fn overlapping_filters_deliver_once() {
        let bus = Bus::new(QueueLimit::events(8), Arc::default());
        let mut sub = bus.subscribe();
        sub.add_filter(&TopicFilter::parse("signs/#").unwrap());
        sub.add_filter(&TopicFilter::parse("signs/+").unwrap());
        bus.publish(event("signs", "a", 1));
        bus.publish(event("messages", "a", 2));
        bus.publish(event("signs", "b", 3));
        assert_eq!(sub.recv().await.unwrap().seq, Some(1));
        assert_eq!(sub.recv().await.unwrap().seq, Some(3));
        assert!(sub.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_cuts_off_only_that_subscriber() {
        let bus = Bus::new(QueueLimit::events(2), Arc::default());
        let filter = TopicFilter::parse("#").unwrap();
        let mut slow = bus.subscribe();
        slow.add_filter(&filter);
        let mut fast = bus.subscribe();
        fast.add_filter(&filter);
        for seq in 1..=5 {
            bus.publish(event("t", "x", seq));
            assert_eq!(fast.recv().await.unwrap().seq, Some(seq));
        }
        assert_eq!(slow.recv().await.unwrap().seq, Some(1));
        assert_eq!(slow.recv().await.unwrap().seq, Some(2));
        assert_eq!(slow.recv().await, Err(RecvError::Lagged));
        assert_eq!(bus.subscriber_count(), 1);
    }

    fn sized(seq: u64, bytes: usize) -> Arc<ChangeEvent> {
        let mut event = Arc::unwrap_or_clone(event("t", "x", seq));
        event.value = Some(serde_json::Value::String("x".repeat(bytes)));
        Arc::new(event)
    }

    /// Large changes fill a queue by their bytes long before its count; one
    /// larger than the whole budget still reaches a reader that keeps up.
    #[tokio::test]
    async fn a_queue_full_of_bytes_cuts_off_only_that_subscriber() {
        let limit = QueueLimit {
            events: 1000,
            bytes: 10_000,
        };
        let bus = Bus::new(limit, Arc::default());
        let filter = TopicFilter::parse("#").unwrap();
        let mut slow = bus.subscribe();
        slow.add_filter(&filter);
        let mut fast = bus.subscribe();
        fast.add_filter(&filter);
        bus.publish(sized(1, 50_000));
        assert_eq!(fast.recv().await.unwrap().seq, Some(1));
        assert_eq!(slow.recv().await.unwrap().seq, Some(1));
        for seq in 2..=10 {
            bus.publish(sized(seq, 3_000));
            assert_eq!(fast.recv().await.unwrap().seq, Some(seq));
        }
        for seq in 2..=4 {
            assert_eq!(slow.recv().await.unwrap().seq, Some(seq));
        }
        assert_eq!(slow.recv().await, Err(RecvError::Lagged));
        assert_eq!(bus.subscriber_count(), 1);
        assert_eq!(fast.queued_bytes.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn dropping_a_subscriber_unsubscribes_it() {
        let bus = Bus::new(QueueLimit::events(2), Arc::default());
        let sub = bus.subscribe();
        sub.add_filter(&TopicFilter::parse("a/b").unwrap());
        assert_eq!(bus.subscriber_count(), 1);
        drop(sub);
        assert_eq!(bus.subscriber_count(), 0);
        bus.publish(event("a", "b", 1));
    }
}
