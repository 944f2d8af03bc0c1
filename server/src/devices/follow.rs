//! The device follower: one task that keeps every paired device showing what its
//! sign shows. It follows `devices/+`, `signs/+` and `messages/+` on the bus,
//! and each device's own topics; it publishes to devices through the store like
//! any other client, only when a payload changed, and records what devices say
//! (presence, firmware, refusals) as fields of their `devices` record, so those
//! arrive live on every protocol too.

use std::collections::HashMap;
use std::time::Duration;

use app::device::{Device, DeviceKind};
use app::event::{ChangeEvent, ChangeType, Origin};
use app::sign::{Message, Shows, Sign};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::adapter::{self, Heard, Outgoing, Showing};
use crate::auth::{Guard, Refused, RefusedAction};
use crate::bus::RecvError;
use crate::feed::{Feed, Start};
use crate::mqtt::topics::{payload_of, raw_value};
use crate::store::{
    DEVICES_TABLE, MESSAGES_TABLE, MQTT_TABLE, SIGNS_TABLE, Store, StoreError, WriteOp,
};
use crate::topic::TopicFilter;

/// A device's `last_seen` is written at most this often while nothing else changes.
const SEEN_EVERY: Duration = Duration::from_secs(60);
/// Messages a device may send per second before the rest are ignored.
const FLOOD_PER_SECOND: u32 = 100;
/// Largest payload from a device that is read at all.
const MAX_HEARD_BYTES: usize = 16 * 1024;
/// How often AWTRIX refreshes and other slow duties are checked.
const SLOW_TICK: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(1);
/// Refusals kept for a device this node does not know yet, at most.
const MAX_UNMATCHED: usize = 64;
/// How long such a refusal waits for its device.
const UNMATCHED_FOR: Duration = Duration::from_secs(3);
/// The role of the node that acts on what devices say.
const DEVICES_ROLE: &str = "devices";
/// How long a removed device keeps its account, for the messages clearing it to arrive.
const CLEAR_GRACE: Duration = Duration::from_millis(500);

/// Starts the follower; it ends once `stopping` turns `true`.
pub fn spawn(
    store: Store,
    guard: Guard,
    frame_rate: u32,
    stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let frame_every = Duration::from_millis(1000 / u64::from(frame_rate.clamp(1, 60)));
    tokio::spawn(run(store, guard, frame_every, stopping))
}

async fn run(
    store: Store,
    guard: Guard,
    frame_every: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut refusals = guard.refusals();
    let acting = acting(&store);
    let mut follower = Follower {
        store,
        guard,
        frame_every,
        devices: HashMap::new(),
        signs: HashMap::new(),
        state: HashMap::new(),
        since: HashMap::new(),
        first_start: true,
        acting,
        unmatched: Vec::new(),
    };
    loop {
        let mut feed = Feed::new(follower.store.clone());
        let flow = match follower.catch_up(&mut feed).await {
            Ok(()) => {
                follower
                    .follow(&mut feed, &mut refusals, &mut stopping)
                    .await
            }
            Err(StoreError::ShuttingDown) => Flow::Stop,
            Err(e) => {
                tracing::warn!("device follower cannot read its tables, trying again: {e}");
                tokio::select! {
                    () = crate::shutdown::stopped(&mut stopping) => Flow::Stop,
                    () = tokio::time::sleep(RETRY) => Flow::CatchUp,
                }
            }
        };
        if matches!(flow, Flow::Stop) {
            break;
        }
    }
    tracing::debug!("device follower stopped");
}

enum Flow {
    CatchUp,
    Stop,
}

/// The store's `devices` role, which says whether this node acts on what
/// devices say. Should the store refuse the role (it cannot: the name is
/// valid), this node acts, as a lone node would.
fn acting(store: &Store) -> watch::Receiver<bool> {
    store
        .leadership(DEVICES_ROLE)
        .unwrap_or_else(|_| watch::channel(true).1)
}

/// What the follower remembers of one device between changes.
#[derive(Default)]
struct DeviceState {
    /// Topic → the payload last sent there.
    sent: HashMap<String, Vec<u8>>,
    last_refresh: Option<Instant>,
    frames: u32,
    /// When `last_seen` was last written.
    seen_written: Option<Instant>,
    /// Messages heard in the current second, and when it began.
    heard: (Option<Instant>, u32),
    listening: Vec<TopicFilter>,
    /// Whether its output moves with time (re-rendered every frame).
    animated: bool,
}

/// The message up on a sign: dropped when the sign moves on or the message changes.
struct Up {
    message_id: Option<String>,
    position: usize,
    at: Instant,
    message: Option<Message>,
}

struct Follower {
    store: Store,
    guard: Guard,
    frame_every: Duration,
    devices: HashMap<String, Device>,
    signs: HashMap<String, Sign>,
    state: HashMap<String, DeviceState>,
    /// Per sign: what is up on it now, and since when.
    since: HashMap<String, Up>,
    first_start: bool,
    /// Whether this node acts on what devices say: one node for all (the
    /// store's `devices` role; embedded, always), since every node hears
    /// every device, and a button press must step its playlist once.
    acting: watch::Receiver<bool>,
    /// Refusals no known device matched yet, and when they came.
    unmatched: Vec<(Instant, Refused)>,
}

impl Follower {
    /// Reads every sign and device, listens on every device's topics, and
    /// brings every device up to date.
    async fn catch_up(&mut self, feed: &mut Feed) -> Result<(), StoreError> {
        self.signs.clear();
        self.devices.clear();
        for table in [SIGNS_TABLE, DEVICES_TABLE] {
            let filter = TopicFilter::parse(&format!("{table}/+"))
                .map_err(|e| StoreError::BadName(e.to_string()))?;
            let mut backfill = feed.begin(filter, Start::State).await?;
            while let Some(events) = backfill.next_page(&self.store).await? {
                for event in events {
                    self.remember(&event);
                }
            }
            feed.synced(backfill);
        }
        if let Ok(filter) = TopicFilter::parse(&format!("{MESSAGES_TABLE}/+")) {
            feed.begin_live(filter);
        }
        let ids: Vec<String> = self.devices.keys().cloned().collect();
        for id in &ids {
            let state = self.state.entry(id.clone()).or_default();
            state.listening.clear();
            self.listen(feed, id);
        }
        if std::mem::take(&mut self.first_start) {
            self.sweep_accounts().await;
            // Every device's connection ended with the last run; each says
            // `online` again when it reconnects. Not on etcd: the devices of
            // the other nodes are still connected there.
            let alone = !self.store.on_etcd();
            for id in ids.iter().filter(|_| alone) {
                if self.devices.get(id).is_some_and(|d| d.online) {
                    self.patch(id, json!({"online": false})).await;
                }
            }
        }
        for id in &ids {
            self.update(id).await;
        }
        Ok(())
    }

    async fn follow(
        &mut self,
        feed: &mut Feed,
        refusals: &mut broadcast::Receiver<Refused>,
        stopping: &mut watch::Receiver<bool>,
    ) -> Flow {
        let mut slow = tokio::time::interval(SLOW_TICK);
        let mut frames = tokio::time::interval(self.frame_every);
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let animating = self.state.values().any(|s| s.animated);
            tokio::select! {
                () = crate::shutdown::stopped(stopping) => return Flow::Stop,
                event = feed.next() => match event {
                    Ok(event) => self.on_change(feed, &event).await,
                    Err(RecvError::Lagged) => {
                        tracing::warn!("device follower fell behind the bus; reading everything again");
                        return Flow::CatchUp;
                    }
                    Err(RecvError::Closed) => return Flow::Stop,
                },
                refused = refusals.recv() => match refused {
                    Ok(refused) => {
                        if !self.on_refused(&refused).await {
                            self.keep_unmatched(refused);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Flow::Stop,
                },
                _ = frames.tick(), if animating => self.animate().await,
                _ = slow.tick() => {
                    self.retry_unmatched().await;
                    self.refresh().await;
                }
            }
        }
    }

    /// Takes in a sign or device record (current state, or a change).
    fn remember(&mut self, event: &ChangeEvent) -> Option<Device> {
        let value = event.value.as_ref();
        match (event.table.as_str(), event.kind) {
            (SIGNS_TABLE, ChangeType::Put | ChangeType::Patch) => {
                if let Some(sign) = value.and_then(|v| Sign::from_json(v).ok()) {
                    self.signs.insert(event.id.clone(), sign);
                }
                None
            }
            (SIGNS_TABLE, ChangeType::Delete) => {
                self.signs.remove(&event.id);
                None
            }
            (DEVICES_TABLE, ChangeType::Put | ChangeType::Patch) => {
                let device = value.and_then(|v| Device::from_json(v).ok())?;
                self.devices.insert(event.id.clone(), device)
            }
            (DEVICES_TABLE, ChangeType::Delete) => self.devices.remove(&event.id),
            _ => None,
        }
    }

    async fn on_change(&mut self, feed: &mut Feed, event: &ChangeEvent) {
        match event.table.as_str() {
            SIGNS_TABLE => {
                self.remember(event);
                let bound: Vec<String> = self.bound_to(&event.id);
                for id in bound {
                    self.update(&id).await;
                }
            }
            MESSAGES_TABLE => {
                // Its text or look changed: it starts over on every sign showing it.
                let showing: Vec<String> = self
                    .signs
                    .iter()
                    .filter(|(_, s)| s.shows.current_message() == Some(event.id.as_str()))
                    .map(|(id, _)| id.clone())
                    .collect();
                for sign in showing {
                    self.since.remove(&sign);
                    for id in self.bound_to(&sign) {
                        self.update(&id).await;
                    }
                }
            }
            DEVICES_TABLE if event.kind != ChangeType::Publish => {
                let before = self.remember(event);
                let after = self.devices.get(&event.id).cloned();
                self.on_device_change(feed, &event.id, before, after).await;
            }
            MQTT_TABLE if event.origin != Origin::System => self.on_heard(event).await,
            _ => {}
        }
    }

    async fn on_device_change(
        &mut self,
        feed: &mut Feed,
        id: &str,
        before: Option<Device>,
        after: Option<Device>,
    ) {
        let moved = |a: &Device, b: &Device| {
            a.kind != b.kind || a.prefix != b.prefix || a.full_topic != b.full_topic
        };
        if let Some(old) = &before {
            let unbound = old.sign.is_some()
                && after
                    .as_ref()
                    .is_none_or(|new| new.sign.is_none() || moved(old, new));
            if unbound {
                // What Marquee put on it goes; nothing more is sent.
                self.send(id, old, adapter::clear(old)).await;
            }
            if after.as_ref().is_none_or(|new| moved(old, new)) {
                self.unlisten(feed, id);
            }
            if after.as_ref().is_none_or(|new| new.sign != old.sign)
                && let Some(state) = self.state.get_mut(id)
            {
                state.sent.clear();
            }
        }
        match after {
            None => {
                self.state.remove(id);
                if let Some(old) = before
                    && !old.username.is_empty()
                {
                    self.remove_account(id, &old.username).await;
                }
            }
            Some(new) => {
                if before.as_ref().is_none_or(|old| moved(old, &new)) {
                    self.listen(feed, id);
                }
                self.update(id).await;
            }
        }
    }

    /// A device's account goes with its record (and its connection with it),
    /// a moment after the messages clearing it, so they reach it first.
    async fn remove_account(&self, id: &str, username: &str) {
        let accounts = self.guard.accounts().clone();
        let (id, username) = (id.to_owned(), username.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(CLEAR_GRACE).await;
            match accounts.get(&username) {
                Ok(Some(account)) if account.device.as_deref() == Some(id.as_str()) => {
                    if let Err(e) = accounts.delete_device(&username).await {
                        tracing::warn!(device = %id, "cannot remove the device's account: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(device = %id, "cannot read the device's account: {e}"),
            }
        });
    }

    /// Device accounts whose device is gone (removed while Marquee was
    /// stopping): they go too. A fresh one may be a pairing under way.
    async fn sweep_accounts(&self) {
        let accounts = self.guard.accounts();
        let Ok(all) = accounts.list() else {
            return;
        };
        let settled = crate::clock::now_millis() - 60_000;
        for account in all {
            let Some(device) = &account.device else {
                continue;
            };
            if !self.devices.contains_key(device) && account.created_ms < settled {
                tracing::info!(device = %device, username = %account.username, "removing the account of a device that is gone");
                if let Err(e) = accounts.delete_device(&account.username).await {
                    tracing::warn!(device = %device, "cannot remove the device's account: {e}");
                }
            }
        }
    }

    fn listen(&mut self, feed: &mut Feed, id: &str) {
        let Some(device) = self.devices.get(id) else {
            return;
        };
        if device.prefix.is_empty() {
            return;
        }
        let filters: Vec<TopicFilter> = adapter::listens(device)
            .iter()
            .filter_map(|f| TopicFilter::parse(&format!("{MQTT_TABLE}/{f}")).ok())
            .collect();
        for filter in &filters {
            feed.begin_live(filter.clone());
        }
        self.state.entry(id.to_owned()).or_default().listening = filters;
    }

    fn unlisten(&mut self, feed: &mut Feed, id: &str) {
        let Some(state) = self.state.get_mut(id) else {
            return;
        };
        let filters = std::mem::take(&mut state.listening);
        for filter in filters {
            // Two devices with one prefix share a filter: keep it for the other.
            let shared = self.state.values().any(|s| s.listening.contains(&filter));
            if !shared {
                feed.remove(&filter);
            }
        }
    }

    /// The device whose topics `topic` is one of, by the filters it is listened on.
    fn owner_of(&self, topic: &str) -> Option<(String, Device)> {
        let on_bus = format!("{MQTT_TABLE}/{topic}");
        let (id, _) = self
            .state
            .iter()
            .find(|(_, s)| s.listening.iter().any(|f| f.matches(&on_bus)))?;
        let device = self.devices.get(id)?;
        Some((id.clone(), device.clone()))
    }

    fn bound_to(&self, sign: &str) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, d)| d.sign.as_deref() == Some(sign))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sends the device whatever changed in what its sign shows.
    async fn update(&mut self, id: &str) {
        let Some(device) = self.devices.get(id).cloned() else {
            return;
        };
        if device.prefix.is_empty() || unsupported(&device) {
            return;
        }
        let Some(sign_id) = device.sign.clone() else {
            return;
        };
        let Some(sign) = self.signs.get(&sign_id).cloned() else {
            // Its sign is gone: what Marquee put on it goes too.
            self.state.entry(id.to_owned()).or_default().animated = false;
            self.send(id, &device, adapter::clear(&device)).await;
            return;
        };
        let (message_id, position) = current(&sign);
        let fresh = self
            .since
            .get(&sign_id)
            .is_some_and(|up| up.message_id == message_id && up.position == position);
        if !fresh {
            // Read once when it comes up (or changes), not at every frame.
            let message = match &message_id {
                Some(mid) => match self.store.get(MESSAGES_TABLE, mid).await {
                    Ok(Some(record)) => Message::from_json(&record.value).ok(),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(device = id, "cannot read the message: {e}");
                        return;
                    }
                },
                None => None,
            };
            let up = Up {
                message_id,
                position,
                at: Instant::now(),
                message,
            };
            self.since.insert(sign_id.clone(), up);
        }
        let Some(up) = self.since.get(&sign_id) else {
            return;
        };
        let (message, since) = (up.message.clone(), up.at);
        let showing = Showing {
            sign: &sign,
            message: message.as_ref(),
            t_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let animated = adapter::animated(&device, &showing);
        let out = adapter::show(&device, &showing);
        self.state.entry(id.to_owned()).or_default().animated = animated;
        self.send(id, &device, out).await;
    }

    /// Publishes what differs from what the device last got.
    async fn send(&mut self, id: &str, device: &Device, out: Vec<Outgoing>) {
        let state = self.state.entry(id.to_owned()).or_default();
        let mut changed = false;
        for message in out {
            let same = state.sent.get(&message.topic) == Some(&message.payload);
            if same && !(message.after_change && changed) {
                continue;
            }
            changed = true;
            let mut payload = message.payload.clone();
            if device.kind == DeviceKind::Marquee {
                state.frames = state.frames.wrapping_add(1);
                if let Some(number) = payload.get_mut(8..12) {
                    number.copy_from_slice(&state.frames.to_be_bytes());
                }
            }
            let published = self.store.publish_here(
                MQTT_TABLE,
                &message.topic,
                raw_value(&payload),
                Origin::System,
            );
            match published {
                Ok(()) => {
                    state.sent.insert(message.topic, message.payload);
                }
                Err(e) => {
                    tracing::warn!(device = id, topic = %message.topic, "cannot send to the device: {e}")
                }
            }
        }
        if changed {
            state.last_refresh = Some(Instant::now());
        }
    }

    /// Re-renders the devices whose picture moves.
    async fn animate(&mut self) {
        let moving: Vec<String> = self
            .state
            .iter()
            .filter(|(_, s)| s.animated)
            .map(|(id, _)| id.clone())
            .collect();
        for id in moving {
            self.update(&id).await;
        }
    }

    /// Sends again what a firmware forgets without updates (AWTRIX's lifetime).
    async fn refresh(&mut self) {
        let due: Vec<String> = self
            .devices
            .iter()
            .filter(|(id, d)| {
                d.sign.is_some()
                    && adapter::refresh_every(d.kind).is_some_and(|every| {
                        self.state
                            .get(*id)
                            .and_then(|s| s.last_refresh)
                            .is_none_or(|at| at.elapsed() >= every)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(state) = self.state.get_mut(&id) {
                state.sent.clear();
            }
            self.update(&id).await;
        }
    }

    /// A message from a device (or to it, from someone else).
    async fn on_heard(&mut self, event: &ChangeEvent) {
        if !matches!(event.kind, ChangeType::Publish | ChangeType::Put) {
            return;
        }
        let topic = event.id.as_str();
        let Some((id, device)) = self.owner_of(topic) else {
            return;
        };
        let state = self.state.entry(id.clone()).or_default();
        let now = Instant::now();
        if state
            .heard
            .0
            .is_none_or(|began| now.duration_since(began) >= Duration::from_secs(1))
        {
            state.heard = (Some(now), 0);
        }
        state.heard.1 += 1;
        if state.heard.1 > FLOOD_PER_SECOND {
            if state.heard.1 == FLOOD_PER_SECOND + 1 && *self.acting.borrow() {
                tracing::warn!(device = %id, "device sends more than {FLOOD_PER_SECOND} messages a second; ignoring the rest");
                self.warn(&id, &device, format!("sent more than {FLOOD_PER_SECOND} messages in a second; the rest were ignored")).await;
            }
            return;
        }
        let payload = payload_of(event);
        let heard = if payload.len() > MAX_HEARD_BYTES {
            vec![Heard::Unreadable(format!(
                "{topic}: a {} byte payload, more than Marquee reads",
                payload.len()
            ))]
        } else {
            adapter::hear(&device, topic, &payload)
        };
        if heard.is_empty() {
            return;
        }
        self.apply(&id, &device, heard).await;
    }

    /// Records what a device said and acts on it: on every node, a hello
    /// has the node send its devices everything again; the rest (records,
    /// playlist steps) only on the node acting for devices.
    async fn apply(&mut self, id: &str, device: &Device, mut heard: Vec<Heard>) {
        if !*self.acting.borrow() {
            heard.retain(|item| matches!(item, Heard::Hello));
        }
        let mut patch = Map::new();
        let mut resend = false;
        for item in heard {
            match item {
                Heard::Online => {
                    if !device.online {
                        patch.insert("online".into(), Value::Bool(true));
                    }
                    let state = self.state.entry(id.to_owned()).or_default();
                    let stale = state
                        .seen_written
                        .is_none_or(|at| at.elapsed() >= SEEN_EVERY);
                    if stale || !device.online {
                        patch.insert(
                            "last_seen".into(),
                            Value::String(crate::clock::now_rfc3339()),
                        );
                        state.seen_written = Some(Instant::now());
                    }
                }
                Heard::Offline => {
                    if device.online {
                        patch.insert("online".into(), Value::Bool(false));
                        patch.insert(
                            "last_seen".into(),
                            Value::String(crate::clock::now_rfc3339()),
                        );
                    }
                }
                Heard::Hello => resend = true,
                Heard::Details {
                    firmware,
                    details,
                    size,
                } => {
                    if firmware.is_some() && firmware != device.firmware {
                        patch.insert("firmware".into(), json!(firmware));
                    }
                    if !details.is_empty() && details != device.details {
                        patch.insert("details".into(), Value::Object(details));
                    }
                    if let Some((w, h)) = size
                        && (w, h) != (device.width, device.height)
                    {
                        patch.insert("width".into(), json!(w));
                        patch.insert("height".into(), json!(h));
                    }
                    if device
                        .warning
                        .as_deref()
                        .is_some_and(|w| w.contains("without credentials"))
                    {
                        // It has its credentials now.
                        patch.insert("warning".into(), Value::Null);
                    }
                }
                Heard::Step(step) => self.step(device, step).await,
                Heard::Unsupported(why) => {
                    if device.warning.as_deref() != Some(why.as_str()) {
                        patch.insert("warning".into(), Value::String(why));
                    }
                }
                Heard::Unreadable(what) => {
                    tracing::debug!(device = id, "unreadable: {what}");
                    let warning = format!("sent a payload Marquee cannot read ({what})");
                    if device.warning.as_deref() != Some(warning.as_str()) {
                        patch.insert("warning".into(), Value::String(warning));
                    }
                }
            }
        }
        if !patch.is_empty() {
            self.patch(id, Value::Object(patch)).await;
        }
        if resend {
            if let Some(state) = self.state.get_mut(id) {
                state.sent.clear();
            }
            self.update(id).await;
        }
    }

    /// A button press: the sign's playlist moves on (or back) one item.
    async fn step(&mut self, device: &Device, step: i8) {
        let allowed = match device.kind {
            DeviceKind::Awtrix3 => device.buttons_step_playlist,
            DeviceKind::Marquee => true,
            _ => false,
        };
        let Some(sign_id) = device.sign.as_deref().filter(|_| allowed) else {
            return;
        };
        let Ok(Some(record)) = self.store.get(SIGNS_TABLE, sign_id).await else {
            return;
        };
        let Ok(Sign {
            shows: Shows::Playlist(playlist),
            ..
        }) = Sign::from_json(&record.value)
        else {
            return;
        };
        let len = playlist.items.len();
        if len < 2 {
            return;
        }
        let next = if step > 0 {
            (playlist.position + 1) % len
        } else {
            (playlist.position + len - 1) % len
        };
        let op = WriteOp::Patch {
            table: SIGNS_TABLE.to_owned(),
            id: sign_id.to_owned(),
            patch: json!({"shows": {"position": next}}),
            if_match: Some(record.version),
        };
        if let Err(e) = self.store.write(op, Origin::System).await {
            tracing::debug!(sign = sign_id, "a button could not step the playlist: {e}");
        }
    }

    /// The broker refused something: if a device did it, its card says so.
    /// Records why a device was refused on its card; false if no device
    /// known here matches it (yet: see [`Follower::keep_unmatched`]).
    async fn on_refused(&mut self, refused: &Refused) -> bool {
        let by_user = refused.username.as_deref().and_then(|name| {
            self.devices
                .iter()
                .find(|(_, d)| d.username == name)
                .map(|(id, d)| (id.clone(), d.clone()))
        });
        let (id, device, warning) = match (&refused.what, by_user) {
            (RefusedAction::Publish { topic }, Some((id, d))) => (
                id,
                d,
                format!("tried to publish to {topic}, outside its topics; refused"),
            ),
            (RefusedAction::Subscribe { filter }, Some((id, d))) => (
                id,
                d,
                format!("tried to subscribe to {filter}, outside its topics; refused"),
            ),
            (RefusedAction::Connect { .. }, Some((id, d))) => (
                id,
                d,
                "was refused at connect: its password is wrong or was regenerated".to_owned(),
            ),
            (
                RefusedAction::Connect {
                    will_topic: Some(will),
                },
                None,
            ) if refused.username.is_none() => {
                // Firmwares fall back to no login when a field is empty; their
                // will topic still names their prefix.
                let Some((id, d)) = self.owner_of(will) else {
                    return false;
                };
                let from = refused
                    .peer
                    .map(|p| format!(" from {}", p.ip()))
                    .unwrap_or_default();
                (
                    id,
                    d,
                    format!(
                        "connected without credentials{from} (client id {}); refused. Type the user name and password from pairing into the device",
                        refused.client_id
                    ),
                )
            }
            _ => return false,
        };
        tracing::info!(device = %id, "{warning}");
        self.warn(&id, &device, warning).await;
        true
    }

    /// Keeps a refusal no device matched for a few seconds: on etcd the
    /// device may have been paired on another node a moment ago, and this
    /// node's follower learns of it after the refusal (refusals are heard
    /// only by the node that refused). Bounded; the oldest go first.
    fn keep_unmatched(&mut self, refused: Refused) {
        if self.unmatched.len() >= MAX_UNMATCHED {
            self.unmatched.remove(0);
        }
        self.unmatched.push((Instant::now(), refused));
    }

    /// Tries the kept refusals again; those still unmatched after
    /// [`UNMATCHED_FOR`] are dropped (no device of ours was refused).
    async fn retry_unmatched(&mut self) {
        for (at, refused) in std::mem::take(&mut self.unmatched) {
            if !self.on_refused(&refused).await && at.elapsed() < UNMATCHED_FOR {
                self.unmatched.push((at, refused));
            }
        }
    }

    async fn warn(&mut self, id: &str, device: &Device, warning: String) {
        if device.warning.as_deref() != Some(warning.as_str()) {
            self.patch(id, json!({"warning": warning})).await;
        }
    }

    /// Writes Marquee's observations into the device's record.
    async fn patch(&mut self, id: &str, patch: Value) {
        let op = WriteOp::Patch {
            table: DEVICES_TABLE.to_owned(),
            id: id.to_owned(),
            patch,
            if_match: None,
        };
        match self.store.write(op, Origin::System).await {
            Ok(event) => {
                // Known at once, not only when the change comes back on the bus.
                self.remember(&event);
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(device = id, "cannot record what the device said: {e}"),
        }
    }
}

/// The message a sign shows now, and its playlist position.
fn current(sign: &Sign) -> (Option<String>, usize) {
    let position = match &sign.shows {
        Shows::Playlist(p) => p.position,
        _ => 0,
    };
    (sign.shows.current_message().map(str::to_owned), position)
}

/// A device that said it runs a firmware Marquee does not drive.
fn unsupported(device: &Device) -> bool {
    device
        .warning
        .as_deref()
        .is_some_and(|w| w.contains("AWTRIX NG"))
}
