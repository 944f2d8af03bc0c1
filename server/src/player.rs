//! The playlist player: one task that moves every sign showing a playlist on to its next
//! item when the current one's time is up, by writing the sign's `shows.position`. Doing it
//! here, once, rather than in each browser or device is what makes them all show the same
//! item at the same time.
//!
//! It follows `signs/+` on the bus (current state first, then changes) and keeps one
//! deadline per playing sign in a timer queue. Its writes carry `If-Match` semantics, so a
//! person editing a sign at the same moment always wins; the player then just reads the
//! sign again and starts over from what it finds.
//!
//! With several nodes on one etcd store, one node plays for all: the one that holds the
//! store's `player` role ([`Store::leadership`]). When a node gains it, it starts from the
//! signs as they are stored, as after a restart: each current item gets the rest of its
//! time, counted from when it came up. When it loses it, it drops whatever it was doing at
//! once. A write of its own still in flight then cannot double a step: it carries `If-Match`
//! on the version it was planned from, so of it and the new player's write of the same step
//! only one can succeed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use app::event::{ChangeEvent, ChangeType, Origin};
use app::sign::{DEFAULT_DURATION, Message, Playlist, Shows, Sign};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bus::RecvError;
use crate::clock;
use crate::feed::{Feed, Start};
use crate::store::{MESSAGES_TABLE, SIGNS_TABLE, Store, StoreError, WriteOp};
use crate::topic::TopicFilter;

/// How long to wait before trying again after the store failed in a way that may pass.
const RETRY: Duration = Duration::from_secs(1);
/// The store role whose holder plays.
pub const ROLE: &str = "player";

/// Starts the player; it ends once `stopping` turns `true`.
pub fn spawn(store: Store, stopping: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run(store, stopping))
}

/// Plays whenever this node holds the role, until the server stops.
async fn run(store: Store, mut stopping: watch::Receiver<bool>) {
    let mut held = match store.leadership(ROLE) {
        Ok(held) => held,
        Err(e) => {
            // Only a bad role name fails, and the name is fixed.
            tracing::error!("the player cannot campaign for its role, so it does not play: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            () = crate::shutdown::stopped(&mut stopping) => break,
            () = gained(&mut held) => {}
        }
        if store.on_etcd() {
            tracing::info!("this node plays the playlists");
        }
        // A fresh player each time: what it knew from an earlier turn may be stale now.
        let flow = tokio::select! {
            flow = play(store.clone(), &mut stopping) => flow,
            () = lost(&mut held) => {
                tracing::info!("this node no longer plays the playlists");
                Flow::Continue
            }
        };
        if matches!(flow, Flow::Stop) {
            break;
        }
    }
    tracing::debug!("player stopped");
}

/// Resolves once the role is held; never, if the campaign ended without it.
async fn gained(held: &mut watch::Receiver<bool>) {
    if held.wait_for(|held| *held).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the role is no longer held; never, if it is held for good
/// (the embedded store's campaign ends at once, holding).
async fn lost(held: &mut watch::Receiver<bool>) {
    if held.wait_for(|held| !*held).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Plays from the signs as they are stored until the server stops.
async fn play(store: Store, stopping: &mut watch::Receiver<bool>) -> Flow {
    let mut player = Player {
        store,
        playing: HashMap::new(),
        queue: BTreeSet::new(),
    };
    loop {
        let flow = match player.catch_up().await {
            Ok(mut feed) => player.follow(&mut feed, stopping).await,
            Err(StoreError::ShuttingDown) => Flow::Stop,
            Err(e) => {
                tracing::warn!("player cannot read the signs, trying again: {e}");
                pause(RETRY, stopping).await
            }
        };
        if matches!(flow, Flow::Stop) {
            return Flow::Stop;
        }
    }
}

/// What the player's loop does next.
enum Flow {
    Continue,
    /// Read every sign again (after falling behind the bus or a failed read).
    CatchUp,
    Stop,
}

/// A sign whose playlist is running.
struct Playing {
    /// The sign's version this schedule was made from: the player's write must find it.
    version: u64,
    playlist: Playlist,
    deadline: Instant,
}

struct Player {
    store: Store,
    playing: HashMap<String, Playing>,
    /// The same deadlines as `playing`, ordered, so the next one due is the first.
    queue: BTreeSet<(Instant, String)>,
}

impl Player {
    /// Subscribes to every sign and schedules each from its current state.
    async fn catch_up(&mut self) -> Result<Feed, StoreError> {
        let filter = TopicFilter::parse(&format!("{SIGNS_TABLE}/+"))
            .map_err(|e| StoreError::BadName(e.to_string()))?;
        let mut feed = Feed::new(self.store.clone());
        let mut backfill = feed.begin(filter, Start::State).await?;
        let mut present = HashSet::new();
        while let Some(events) = backfill.next_page(&self.store).await? {
            for event in events {
                present.insert(event.id.clone());
                self.on_change(&event).await;
            }
        }
        // Signs deleted while the player was behind.
        let gone: Vec<String> = self
            .playing
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.stop_playing(&id);
        }
        feed.synced(backfill);
        Ok(feed)
    }

    async fn follow(&mut self, feed: &mut Feed, stopping: &mut watch::Receiver<bool>) -> Flow {
        loop {
            let next_due = self.queue.first().map(|(at, _)| *at);
            tokio::select! {
                () = crate::shutdown::stopped(stopping) => return Flow::Stop,
                event = feed.next() => match event {
                    Ok(event) => self.on_change(&event).await,
                    Err(RecvError::Lagged) => {
                        tracing::warn!("player fell behind the bus; reading every sign again");
                        return Flow::CatchUp;
                    }
                    Err(RecvError::Closed) => return Flow::Stop,
                },
                () = sleep_until(next_due) => match self.advance_due().await {
                    Flow::Continue => {}
                    flow => return flow,
                },
            }
        }
    }

    async fn on_change(&mut self, event: &ChangeEvent) {
        match (event.kind, event.version, &event.value) {
            (ChangeType::Put | ChangeType::Patch, Some(version), Some(value)) => {
                self.schedule(&event.id, version, value, &event.ts).await;
            }
            (ChangeType::Delete, _, _) => self.stop_playing(&event.id),
            // Transient publishes change nothing stored.
            _ => {}
        }
    }

    /// (Re)schedules a sign from one of its versions. `written` is when that version was
    /// written: after a restart the current item only gets the rest of its time.
    async fn schedule(&mut self, id: &str, version: u64, value: &Value, written: &str) {
        if let Some(playing) = self.playing.get(id)
            && playing.version >= version
        {
            // An echo of the player's own write, already scheduled from its answer.
            return;
        }
        let playlist = match Sign::from_json(value) {
            Ok(Sign {
                shows: Shows::Playlist(playlist),
                ..
            }) if playlist.items.len() > 1 => playlist,
            Ok(_) => {
                self.stop_playing(id);
                return;
            }
            Err(e) => {
                // Stored before signs were checked on write; nothing sensible to play.
                tracing::debug!(sign = id, "not playing an invalid sign: {e}");
                self.stop_playing(id);
                return;
            }
        };
        let unchanged = self
            .playing
            .get(id)
            .is_some_and(|playing| playing.playlist == playlist);
        if unchanged {
            // Renaming a sign or dimming it must not restart the item it is showing.
            if let Some(playing) = self.playing.get_mut(id) {
                playing.version = version;
            }
            return;
        }
        let duration = self.duration(&playlist).await;
        let elapsed = clock::parse_millis(written)
            .map(|at| clock::now_millis().saturating_sub(at))
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let deadline = Instant::now() + duration.saturating_sub(elapsed);
        self.stop_playing(id);
        self.queue.insert((deadline, id.to_owned()));
        self.playing.insert(
            id.to_owned(),
            Playing {
                version,
                playlist,
                deadline,
            },
        );
    }

    /// How long the current item stays up: its own duration, else its message's, else the
    /// default.
    async fn duration(&self, playlist: &Playlist) -> Duration {
        let Some(item) = playlist.current() else {
            return Duration::from_secs(u64::from(DEFAULT_DURATION));
        };
        let seconds = match item.duration {
            Some(seconds) => seconds,
            None => match self.store.get(MESSAGES_TABLE, &item.message).await {
                Ok(Some(record)) => Message::from_json(&record.value)
                    .map_or(DEFAULT_DURATION, |message| message.duration),
                // A missing message shows nothing, for as long as a message would.
                Ok(None) | Err(_) => DEFAULT_DURATION,
            },
        };
        Duration::from_secs(u64::from(seconds.max(1)))
    }

    fn stop_playing(&mut self, id: &str) {
        if let Some(playing) = self.playing.remove(id) {
            self.queue.remove(&(playing.deadline, id.to_owned()));
        }
    }

    async fn advance_due(&mut self) -> Flow {
        let now = Instant::now();
        while self.queue.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, id)) = self.queue.pop_first() else {
                break;
            };
            match self.advance(&id).await {
                Flow::Continue => {}
                flow => return flow,
            }
        }
        Flow::Continue
    }

    /// Moves one sign, whose deadline was just taken off the queue, on to its next item.
    async fn advance(&mut self, id: &str) -> Flow {
        let Some(playing) = self.playing.get(id) else {
            return Flow::Continue;
        };
        let len = playing.playlist.items.len().max(1);
        let next = (playing.playlist.position + 1) % len;
        let op = WriteOp::Patch {
            table: SIGNS_TABLE.to_owned(),
            id: id.to_owned(),
            patch: json!({"shows": {"position": next}}),
            if_match: Some(playing.version),
        };
        let now = Instant::now();
        let written = self.store.write(op, Origin::System).await;
        match written {
            Ok(event) => {
                if let (Some(version), Some(value)) = (event.version, &event.value) {
                    self.schedule(id, version, value, &event.ts).await;
                }
            }
            Err(StoreError::VersionMismatch { .. }) => {
                // Someone else wrote the sign first: start over from what they wrote.
                self.stop_playing(id);
                match self.store.get(SIGNS_TABLE, id).await {
                    Ok(Some(record)) => {
                        self.schedule(id, record.version, &record.value, &record.ts)
                            .await;
                    }
                    Ok(None) => {}
                    Err(StoreError::ShuttingDown) => return Flow::Stop,
                    Err(e) => {
                        tracing::warn!(sign = id, "player cannot read the sign: {e}");
                        return Flow::CatchUp;
                    }
                }
            }
            Err(StoreError::NotFound(_)) => self.stop_playing(id),
            Err(StoreError::ShuttingDown) => return Flow::Stop,
            Err(e) => {
                tracing::warn!(
                    sign = id,
                    "player cannot advance the sign, trying again: {e}"
                );
                self.retry_later(id);
            }
        }
        // A sign still playing must be back on the queue, and not at the deadline that
        // just passed, or it would stall or spin.
        let stalled = self.playing.get(id).is_some_and(|playing| {
            playing.deadline <= now || !self.queue.contains(&(playing.deadline, id.to_owned()))
        });
        if stalled {
            self.retry_later(id);
        }
        Flow::Continue
    }

    fn retry_later(&mut self, id: &str) {
        if let Some(playing) = self.playing.get_mut(id) {
            self.queue.remove(&(playing.deadline, id.to_owned()));
            playing.deadline = Instant::now() + RETRY;
            self.queue.insert((playing.deadline, id.to_owned()));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits `delay`, or less if the server stops meanwhile.
async fn pause(delay: Duration, stopping: &mut watch::Receiver<bool>) -> Flow {
    tokio::select! {
        () = crate::shutdown::stopped(stopping) => Flow::Stop,
        () = tokio::time::sleep(delay) => Flow::CatchUp,
    }
}
