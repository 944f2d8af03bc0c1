//! Polls a connection again on the spot when it wakes itself while being
//! polled, instead of letting the runtime reschedule its task.
//!
//! hyper wakes its own connection task in the middle of every request with a
//! body: the handler asking for the body wakes the dispatcher that feeds it,
//! and both run in that one task. Tokio treats a task woken during its own
//! poll as one that yielded: it queues it again and wakes a sleeping worker
//! thread to come and take it. That worker finds nothing and sleeps again,
//! so one keep-alive client writing cost two context switches and a
//! cross-CPU wake-up per request on the other worker, on a VM as much CPU as
//! a third of the request itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls of the same future in a row, at most, before a self-wake-up is left
/// to the runtime after all: a future that keeps waking itself (tokio's
/// cooperative budget spent, say) must let the other tasks have their turn.
const POLLS: usize = 3;

/// One per connection: the waker its future is polled with.
pub struct PollAgain {
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    /// The task's own waker, for a wake-up that comes between polls.
    task: AtomicWaker,
}

/// Not being polled: a wake-up goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake-up only asks for one more poll.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const WOKEN: u8 = 2;

impl Default for PollAgain {
    fn default() -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Self {
            waker: Waker::from(shared.clone()),
            shared,
        }
    }
}

impl PollAgain {
    /// Polls `future` (through `poll`) until it is ready or waits without
    /// having woken itself, a few times at most.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.shared.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..POLLS {
            self.shared.state.store(POLLING, Ordering::SeqCst);
            if let Poll::Ready(value) = poll(&mut inner) {
                self.shared.state.store(IDLE, Ordering::SeqCst);
                return Poll::Ready(value);
            }
            // Either back to idle with nobody having woken it, so that a
            // later wake-up reaches the task, or it was woken meanwhile.
            if self
                .shared
                .state
                .compare_exchange(POLLING, IDLE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Poll::Pending;
            }
        }
        self.shared.state.store(IDLE, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts how often the task itself was woken.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task's waker, and how often it was woken.
    fn counting_waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn a_wake_up_during_the_poll_is_a_poll_again_not_a_task_wake_up() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let again = PollAgain::default();
        let mut polls = 0;
        let result = again.poll(&mut cx, |cx| {
            polls += 1;
            if polls == 1 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        });
        assert_eq!(result, Poll::Ready(2));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wake_up_between_polls_reaches_the_task() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let again = PollAgain::default();
        let mut kept = None;
        let result: Poll<()> = again.poll(&mut cx, |cx| {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        assert_eq!(result, Poll::Pending);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        kept.expect("a waker").wake();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_is_left_to_the_runtime() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let again = PollAgain::default();
        let mut polls = 0;
        let result: Poll<()> = again.poll(&mut cx, |cx| {
            polls += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!(result, Poll::Pending);
        assert_eq!(polls, POLLS);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }
}
