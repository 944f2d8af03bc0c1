//! One read serving every caller that was waiting for it.
//!
//! A consistent read on etcd answers "what was committed before I asked":
//! any read that *started* after the caller asked will do. So while one read
//! is under way, every caller that arrives waits for the next one, which
//! then serves them all: at most one read in flight and one queued, however
//! many callers — a node's GETs, token checks and stream starts cost etcd a
//! read per round trip, not a read each.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shares reads of one value among the callers waiting at the same time.
pub struct JointRead<T> {
    /// Held by the caller doing a read; callers queue on it in turn.
    turn: tokio::sync::Mutex<()>,
    /// The number of the last read started (reads are numbered from 1).
    started: AtomicU64,
    /// The last read finished: its number and what it found.
    last: Mutex<Option<(u64, T)>>,
}

impl<T> Default for JointRead<T> {
    fn default() -> Self {
        Self {
            turn: tokio::sync::Mutex::new(()),
            started: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }
}

impl<T: Clone> JointRead<T> {
    /// What `read` finds when it starts after this call: done by this caller,
    /// or by another that was waiting too.
    pub async fn read<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        // Any read numbered above this one starts after now.
        let wanted = self.started.load(Ordering::Acquire) + 1;
        let _turn = self.turn.lock().await;
        if let Some(found) = self.finished(wanted) {
            return found;
        }
        let number = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let found = read().await;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((number, found.clone()));
        found
    }

    /// What the last read found, if it was read `wanted` or later.
    fn finished(&self, wanted: u64) -> Option<T> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(number, _)| *number >= wanted)
            .map(|(_, found)| found.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// A value that changes (the writes committed so far), read slowly.
    struct Slow {
        writes: AtomicU64,
        reads: AtomicU64,
    }

    impl Slow {
        async fn read(&self) -> u64 {
            self.reads.fetch_add(1, Ordering::AcqRel);
            let seen = self.writes.load(Ordering::Acquire);
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen
        }
    }

    #[tokio::test]
    async fn callers_waiting_together_share_one_read() {
        let value = Arc::new(Slow {
            writes: AtomicU64::new(7),
            reads: AtomicU64::new(0),
        });
        let joint = Arc::new(JointRead::default());
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (value, joint) = (value.clone(), joint.clone());
            callers.spawn(async move { joint.read(|| value.read()).await });
        }
        while let Some(found) = callers.join_next().await {
            assert_eq!(found.unwrap(), 7);
        }
        // The first caller's read, then one for everyone who came during it.
        assert!(value.reads.load(Ordering::Acquire) <= 2);
    }

    #[tokio::test]
    async fn a_caller_never_gets_a_read_that_started_before_it_asked() {
        let value = Arc::new(Slow {
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        });
        let joint = Arc::new(JointRead::default());
        let early = {
            let (value, joint) = (value.clone(), joint.clone());
            tokio::spawn(async move { joint.read(|| value.read()).await })
        };
        // The early read has started (and seen 0) when the write lands.
        tokio::time::sleep(Duration::from_millis(5)).await;
        value.writes.store(1, Ordering::Release);
        let late = joint.read(|| value.read()).await;
        assert_eq!(early.await.unwrap(), 0);
        assert_eq!(late, 1, "the write acknowledged before the late call");
        assert_eq!(value.reads.load(Ordering::Acquire), 2);
    }
}
