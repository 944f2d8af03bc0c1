//! Slows password guessing (SECURITY.md §7.7). Per account and address:
//! after 5 failures within 15 minutes, attempts are refused for a time that
//! doubles with each further failure (2 s, 4 s, … at most 15 minutes) — a
//! growing delay, not a lock-out. Keyed by address too, so someone guessing
//! the admin's password from one place cannot lock the admin out from
//! another (OWASP's lock-out denial of service). Per address: 20 failures
//! within a minute refuse that address for a minute, whatever the account.
//! Loopback is not exempt. The counts live in memory (a restart forgets them) and are
//! bounded: past the bound, expired entries go, and then new ones are not
//! tracked (the other counter still is).
//!
//! Failures are counted when a check ends, so a flood of attempts started
//! at once would all pass the counts and queue for the few argon2 checks
//! the server runs at a time, ahead of everyone else. So one address may
//! have only a few checks under way at once; more are refused at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ACCOUNT_FREE_FAILURES: u32 = 5;
const ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);
const ACCOUNT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);
const PEER_FAILURES: u32 = 20;
const PEER_WINDOW: Duration = Duration::from_secs(60);
const PEER_WAIT: Duration = Duration::from_secs(60);
/// Accounts and addresses tracked at most, each.
const MAX_TRACKED: usize = 10_000;
/// Checks one address may have under way at once.
const PEER_CHECKS_AT_ONCE: u32 = 4;
/// What an address with too many checks under way is told to wait.
const PEER_BUSY_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: HashMap<(String, IpAddr), Failures>,
    peers: HashMap<IpAddr, Failures>,
    /// Checks under way, per address (no entry: none). At most one entry
    /// per connection being checked.
    checking: HashMap<IpAddr, u32>,
}

/// A check under way (see [`Throttle::begin`]); it ends when dropped.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    peer: IpAddr,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut state = self.throttle.state();
        if let Some(n) = state.checking.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.checking.remove(&self.peer);
            }
        }
    }
}

struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

impl Throttle {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(wait)` if an attempt for `username` from `peer` must be refused now.
    pub fn check(&self, username: &str, peer: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let state = self.state();
        let waits = [
            state
                .accounts
                .get(&(username.to_owned(), peer))
                .and_then(|f| f.wait(now)),
            state.peers.get(&peer).and_then(|f| f.wait(now)),
        ];
        match waits.into_iter().flatten().max() {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Starts a check for `username` from `peer`, unless it must be refused
    /// now: throttled by past failures, or too many checks from `peer` are
    /// under way. Hold the [`Attempt`] until the check has been answered.
    pub fn begin(&self, username: &str, peer: IpAddr) -> Result<Attempt<'_>, Duration> {
        self.check(username, peer)?;
        let mut state = self.state();
        let under_way = state.checking.entry(peer).or_insert(0);
        if *under_way >= PEER_CHECKS_AT_ONCE {
            return Err(PEER_BUSY_WAIT);
        }
        *under_way += 1;
        Ok(Attempt {
            throttle: self,
            peer,
        })
    }

    /// Counts a failed attempt.
    pub fn failed(&self, username: &str, peer: IpAddr) {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(f) = track(
            &mut state.accounts,
            (username.to_owned(), peer),
            now,
            ACCOUNT_WINDOW,
        ) && f.count > ACCOUNT_FREE_FAILURES
        {
            let doublings = (f.count - ACCOUNT_FREE_FAILURES - 1).min(20);
            let wait = Duration::from_secs(2u64 << doublings).min(ACCOUNT_MAX_WAIT);
            f.blocked_until = Some(now + wait);
        }
        if let Some(f) = track(&mut state.peers, peer, now, PEER_WINDOW)
            && f.count >= PEER_FAILURES
        {
            f.blocked_until = Some(now + PEER_WAIT);
        }
    }

    /// A successful sign-in clears the account's count from that address
    /// (not the address's own).
    pub fn succeeded(&self, username: &str, peer: IpAddr) {
        self.state().accounts.remove(&(username.to_owned(), peer));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Failures {
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

/// The failures of `key`, one more, restarting the count after `window`.
fn track<K: Hash + Eq>(
    map: &mut HashMap<K, Failures>,
    key: K,
    now: Instant,
    window: Duration,
) -> Option<&mut Failures> {
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        map.retain(|_, f| now < f.since + window || f.wait(now).is_some());
        if map.len() >= MAX_TRACKED {
            return None;
        }
    }
    let failures = map.entry(key).or_insert(Failures {
        count: 0,
        since: now,
        blocked_until: None,
    });
    if now >= failures.since + window && failures.wait(now).is_none() {
        failures.count = 0;
        failures.since = now;
    }
    failures.count += 1;
    Some(failures)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_account_gets_five_tries_then_a_growing_wait() {
        let throttle = Throttle::new();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(throttle.check("alice", peer).is_ok());
            throttle.failed("alice", peer);
        }
        assert!(
            throttle.check("alice", peer).is_ok(),
            "five failures are free"
        );
        throttle.failed("alice", peer);
        let first = throttle.check("alice", peer).unwrap_err();
        assert!(first <= Duration::from_secs(2) && first > Duration::from_secs(1));
        throttle.failed("alice", peer);
        let second = throttle.check("alice", peer).unwrap_err();
        assert!(second > Duration::from_secs(3), "{second:?}");
        // Another account, or the same one from another address, is not held up.
        assert!(throttle.check("bob", peer).is_ok());
        assert!(throttle.check("alice", "10.0.0.3".parse().unwrap()).is_ok());
        throttle.succeeded("alice", peer);
        assert!(throttle.check("alice", peer).is_ok());
    }

    #[test]
    fn an_address_may_have_only_a_few_checks_under_way() {
        let throttle = Throttle::new();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        let under_way: Vec<_> = (0..PEER_CHECKS_AT_ONCE)
            .map(|i| throttle.begin(&format!("u{i}"), peer).unwrap())
            .collect();
        assert!(throttle.begin("admin", peer).is_err());
        assert!(
            throttle
                .begin("admin", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        drop(under_way);
        assert!(throttle.begin("admin", peer).is_ok());
        assert!(throttle.state().checking.is_empty());
    }

    #[test]
    fn an_address_with_twenty_failures_waits_a_minute_whatever_the_account() {
        let throttle = Throttle::new();
        let peer: IpAddr = "::1".parse().unwrap();
        for i in 0..20 {
            throttle.failed(&format!("user{i}"), peer);
        }
        let wait = throttle.check("someone-else", peer).unwrap_err();
        assert!(wait > Duration::from_secs(59));
        assert!(
            throttle
                .check("someone-else", "::2".parse().unwrap())
                .is_ok()
        );
    }
}
