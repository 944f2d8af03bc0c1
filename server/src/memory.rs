//! Gives memory that a burst of load used back to the system.
//!
//! glibc's malloc keeps what is freed in its arenas (one per thread that
//! allocated, up to eight per core) and returns only the top of each heap, so
//! after 50 busy REST clients the server's RSS stayed at its peak for good.
//! `malloc_trim(0)` also releases the free pages inside every heap. It runs
//! every few seconds on a blocking thread: it holds each arena's lock briefly,
//! and costs well under a millisecond when there is nothing to give back.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// How often freed memory is handed back.
const EVERY: Duration = Duration::from_secs(5);

/// Trims the allocator every [`EVERY`] until `stopping` turns true.
pub fn spawn_trimmer(mut stopping: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let _ = tokio::task::spawn_blocking(release_free_memory).await;
                }
                _ = async { drop(stopping.wait_for(|stop| *stop).await) } => break,
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers, and glibc makes it safe to call
    // from any thread while others allocate (it locks each arena in turn).
    unsafe {
        malloc_trim(0);
    }
}

/// Other allocators (musl's, macOS's) return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
