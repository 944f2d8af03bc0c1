//! One read serving every caller that was waiting for it.
//!
//! A consistent read on etcd answers "what was committed before I asked":
//! any read that *started* after the caller asked will do. So while one read
//! is under way, every caller that arrives waits for the next one, which
//! then serves them all: at most one read in flight per node, however many
//! callers — a node's GETs, token checks and stream starts cost etcd a read
//! per round trip, not a read each.
//!
//! The read runs in a task of its own, not in the future of the caller that
//! started it: a caller whose future stops being polled (a stream's page
//! read kept for later, a client gone) must not hold up everyone else.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Shares reads of one value among the callers waiting at the same time.
/// Cheap to clone: clones share their reads.
pub struct JointRead<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Moves on each time a read ends (with a result or without).
    ended: watch::Sender<u64>,
}

struct State<T> {
    /// The number of the last read started (reads are numbered from 1).
    started: u64,
    /// Whether a read is under way.
    running: bool,
    /// The last read finished: its number and what it found.
    last: Option<(u64, T)>,
}

impl<T> Default for JointRead<T> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    started: 0,
                    running: false,
                    last: None,
                }),
                ended: watch::Sender::new(0),
            }),
        }
    }
}

impl<T: Clone + Send + 'static> JointRead<T> {
    /// What a read made by `make` finds when it starts after this call:
    /// started by this caller, or by another that was waiting too.
    pub async fn read<F, Fut>(&self, make: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        // Subscribed before looking, so no end is missed in between.
        let mut ended = self.inner.ended.subscribe();
        let mut make = Some(make);
        // Any read numbered above this one starts after now.
        let wanted = self.inner.state().started + 1;
        loop {
            {
                let mut state = self.inner.state();
                if let Some((number, found)) = &state.last
                    && *number >= wanted
                {
                    return found.clone();
                }
                if !state.running
                    && let Some(make) = make.take()
                {
                    state.running = true;
                    state.started += 1;
                    let end = End {
                        inner: self.inner.clone(),
                        number: state.started,
                    };
                    let read = make();
                    tokio::spawn(async move { end.with(read.await) });
                }
            }
            if ended.changed().await.is_err() {
                // The sender lives as long as `self`: cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl<T> Inner<T> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends a read: with its result, or (dropped without one: the task was
/// aborted or panicked) without, so that a waiter starts the next.
struct End<T> {
    inner: Arc<Inner<T>>,
    number: u64,
}

impl<T> End<T> {
    fn with(self, found: T) {
        self.inner.state().last = Some((self.number, found));
    }
}

impl<T> Drop for End<T> {
    fn drop(&mut self) {
        self.inner.state().running = false;
        self.inner.ended.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A value that changes (the writes committed so far), read slowly.
    struct Slow {
        writes: AtomicU64,
        reads: AtomicU64,
    }

    impl Slow {
        fn new(writes: u64) -> Arc<Self> {
            Arc::new(Self {
                writes: AtomicU64::new(writes),
                reads: AtomicU64::new(0),
            })
        }

        async fn read(self: Arc<Self>) -> u64 {
            self.reads.fetch_add(1, Ordering::AcqRel);
            let seen = self.writes.load(Ordering::Acquire);
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen
        }
    }

    fn read_of(
        value: &Arc<Slow>,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> {
        let value = value.clone();
        move || Box::pin(value.read())
    }

    #[tokio::test]
    async fn callers_waiting_together_share_one_read() {
        let value = Slow::new(7);
        let joint = Arc::new(JointRead::default());
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (value, joint) = (value.clone(), joint.clone());
            callers.spawn(async move { joint.read(read_of(&value)).await });
        }
        while let Some(found) = callers.join_next().await {
            assert_eq!(found.unwrap(), 7);
        }
        // The first caller's read, then one for everyone who came during it.
        assert!(value.reads.load(Ordering::Acquire) <= 2);
    }

    #[tokio::test]
    async fn a_caller_never_gets_a_read_that_started_before_it_asked() {
        let value = Slow::new(0);
        let joint = Arc::new(JointRead::default());
        let early = {
            let (value, joint) = (value.clone(), joint.clone());
            tokio::spawn(async move { joint.read(read_of(&value)).await })
        };
        // The early read has started (and seen 0) when the write lands.
        tokio::time::sleep(Duration::from_millis(5)).await;
        value.writes.store(1, Ordering::Release);
        let late = joint.read(read_of(&value)).await;
        assert_eq!(early.await.unwrap(), 0);
        assert_eq!(late, 1, "the write acknowledged before the late call");
        assert_eq!(value.reads.load(Ordering::Acquire), 2);
    }

    /// A caller that started a read and is then never polled again (its
    /// future kept, as a stream keeps an unfinished page read) holds up
    /// nobody: the read goes on without it.
    #[tokio::test]
    async fn a_caller_no_longer_polled_holds_up_nobody() {
        let value = Slow::new(3);
        let joint = JointRead::default();
        let mut stalled = Box::pin(joint.read(read_of(&value)));
        assert!(
            tokio::time::timeout(Duration::from_millis(1), &mut stalled)
                .await
                .is_err(),
            "under way"
        );
        let other = tokio::time::timeout(Duration::from_secs(2), joint.read(read_of(&value))).await;
        assert_eq!(other, Ok(3));
        drop(stalled);
    }
}
