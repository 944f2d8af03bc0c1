//! Slows password guessing (SECURITY.md §7.7). Per account and address:
//! after 5 failures within 15 minutes, attempts are refused for a time that
//! doubles with each further failure (2 s, 4 s, … at most 15 minutes) — a
//! growing delay, not a lock-out. Keyed by address too, so someone guessing
//! the admin's password from one place cannot lock the admin out from
//! another (OWASP's lock-out denial of service). Per address: 20 failures
//! within a minute refuse that address for a minute, whatever the account.
//! Loopback is not exempt. And one address may have only a few checks
//! under way at once: thousands of simultaneous guesses would otherwise all
//! pass the count before the first failed, and queue for the password
//! hasher ahead of everyone else. The counts live in memory (a restart forgets them) and are
//! bounded: past the bound, expired entries go, and then new ones are not
//! tracked (the other counter still is).

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
/// Checks one address may have under way at once; more are refused at once.
const MAX_PENDING_PER_PEER: u32 = 4;
/// What a client refused for having too many checks under way is told to wait.
const PENDING_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    accounts: HashMap<(String, IpAddr), Failures>,
    peers: HashMap<IpAddr, Failures>,
    /// Checks under way per address; an entry goes when it reaches zero, so
    /// the map holds at most as many entries as checks are under way.
    pending: HashMap<IpAddr, u32>,
}

/// One attempt under way; say how it ended with [`Attempt::failed`] or
/// [`Attempt::succeeded`], and hold it until the client has its answer:
/// dropped, it frees its place.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    username: String,
    peer: IpAddr,
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

    /// Starts an attempt for `username` from `peer`, or `Err(wait)` if it
    /// must be refused now.
    pub fn begin(&self, username: &str, peer: IpAddr) -> Result<Attempt<'_>, Duration> {
        self.check(username, peer)?;
        let mut state = self.state();
        let pending = state.pending.entry(peer).or_insert(0);
        if *pending >= MAX_PENDING_PER_PEER {
            return Err(PENDING_WAIT);
        }
        *pending += 1;
        Ok(Attempt {
            throttle: self,
            username: username.to_owned(),
            peer,
        })
    }

    /// `Err(wait)` if an attempt for `username` from `peer` must be refused now.
    fn check(&self, username: &str, peer: IpAddr) -> Result<(), Duration> {
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

    /// Counts a failed attempt.
    fn failed(&self, username: &str, peer: IpAddr) {
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
    fn succeeded(&self, username: &str, peer: IpAddr) {
        self.state().accounts.remove(&(username.to_owned(), peer));
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Attempt<'_> {
    /// Counts the attempt as a failure.
    pub fn failed(&self) {
        self.throttle.failed(&self.username, self.peer);
    }

    /// The attempt succeeded: the account's count from that address clears.
    pub fn succeeded(&self) {
        self.throttle.succeeded(&self.username, self.peer);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut state = self.throttle.state();
        if let Some(pending) = state.pending.get_mut(&self.peer) {
            *pending = pending.saturating_sub(1);
            if *pending == 0 {
                state.pending.remove(&self.peer);
            }
        }
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
    fn an_address_has_only_a_few_checks_under_way_at_once() {
        let throttle = Throttle::new();
        let peer: IpAddr = "127.0.0.2".parse().unwrap();
        let under_way: Vec<_> = (0..MAX_PENDING_PER_PEER)
            .map(|_| throttle.begin("admin", peer).unwrap())
            .collect();
        assert_eq!(throttle.begin("admin", peer).err(), Some(PENDING_WAIT));
        assert!(
            throttle
                .begin("admin", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        let mut under_way = under_way.into_iter();
        under_way.next().unwrap().failed();
        assert!(throttle.begin("other", peer).is_ok());
        drop(under_way);
        assert!(throttle.state().pending.is_empty());
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
