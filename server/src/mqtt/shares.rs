//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2): each
//! message matching a group's filter goes to exactly one of its members.
//!
//! The member is chosen once per message, by the group's dispatcher as the
//! message comes off the bus, in bus order: online members first, round
//! robin, and a member whose queue is full is passed over. Members never
//! decide for themselves, so joining and leaving cannot make two of them
//! take one message, or none. A member that leaves for good (unsubscribes,
//! or its session ends) hands back what it was given and had not had
//! acknowledged, and the group sends that on to another member.
//!
//! On a store shared by several nodes each node has a dispatcher per group
//! with members here, and the store says which node takes each message
//! ([`Store::takes_shared`], told which groups have members here by
//! [`Store::share_here`]): one node per message, so one member in all. The
//! store's module on that (`store/on_etcd/shares.rs`) says what it cannot
//! promise while nodes join, leave and die.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::event::ChangeEvent;
use tokio::sync::{mpsc, watch};

use super::topics;
use crate::bus::RecvError;
use crate::feed::{Feed, Start};
use crate::store::{Store, StoreError};
use crate::topic::TopicFilter;

/// Messages one session may hold from its groups before it is passed over.
pub const INBOX: usize = 4096;
/// How long a dispatcher waits before trying again when every member is full.
const FULL_RETRY: Duration = Duration::from_millis(5);

/// One message for one member: the subscription (`$share/{group}/{filter}`)
/// it was chosen through.
#[derive(Clone)]
pub struct SharedMessage {
    pub subscription: Arc<str>,
    pub event: Arc<ChangeEvent>,
}

/// A session's end of its groups: where they put its messages, and whether
/// its client is connected. It lives as long as the session.
pub struct Membership {
    pub inbox: mpsc::Receiver<SharedMessage>,
    sender: mpsc::Sender<SharedMessage>,
    online: Arc<AtomicBool>,
}

/// Every group on this broker. Cheap to clone.
#[derive(Clone)]
pub struct Shares {
    groups: Arc<Mutex<HashMap<Arc<str>, Group>>>,
    store: Store,
    shutdown: watch::Receiver<bool>,
}

struct Group {
    members: Vec<Member>,
    /// Where the next round-robin choice starts.
    next: usize,
    dispatcher: tokio::task::AbortHandle,
}

struct Member {
    client_id: String,
    inbox: mpsc::Sender<SharedMessage>,
    online: Arc<AtomicBool>,
}

impl Membership {
    pub fn new() -> Self {
        let (sender, inbox) = mpsc::channel(INBOX);
        Self {
            inbox,
            sender,
            online: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the dispatchers should prefer this session now.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }
}

impl Default for Membership {
    fn default() -> Self {
        Self::new()
    }
}

impl Shares {
    pub fn new(store: Store, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            groups: Arc::default(),
            store,
            shutdown,
        }
    }

    /// Adds a session to the group of `subscription` (`$share/{group}/{filter}`,
    /// with `filter` already parsed), starting the group's dispatcher if it is new.
    pub fn join(
        &self,
        subscription: &str,
        filter: &TopicFilter,
        client_id: &str,
        membership: &Membership,
    ) {
        let mut groups = self.groups();
        let group = groups.entry(Arc::from(subscription)).or_insert_with(|| {
            // On the bus before the SUBACK goes out: nothing published after
            // it may be missed.
            let mut feed = Feed::new(self.store.clone());
            for (bus_filter, _) in topics::bus_filters(filter) {
                feed.begin_live(bus_filter);
            }
            let dispatcher = tokio::spawn(self.clone().dispatch(
                Arc::from(subscription),
                filter.clone(),
                feed,
            ));
            self.store.share_here(subscription, true);
            Group {
                members: Vec::new(),
                next: 0,
                dispatcher: dispatcher.abort_handle(),
            }
        });
        if group.members.iter().any(|m| m.client_id == client_id) {
            return;
        }
        group.members.push(Member {
            client_id: client_id.to_owned(),
            inbox: membership.sender.clone(),
            online: membership.online.clone(),
        });
    }

    /// Takes a session out of a group for good, and sends what it was given
    /// and had not finished (`returned`) to the other members.
    pub fn leave(&self, subscription: &str, client_id: &str, returned: Vec<SharedMessage>) {
        let mut groups = self.groups();
        let Some(group) = groups.get_mut(subscription) else {
            return;
        };
        group.members.retain(|m| m.client_id != client_id);
        if group.members.is_empty() {
            group.dispatcher.abort();
            groups.remove(subscription);
            self.store.share_here(subscription, false);
            return;
        }
        for message in returned {
            if let Err(message) = group.hand_out(message) {
                tracing::warn!(
                    subscription = %message.subscription,
                    "every member of a shared subscription is full: a returned message is dropped"
                );
            }
        }
    }

    /// The group's dispatcher: reads every change matching its filter off the
    /// bus and hands each to one member. When it falls behind and is cut off,
    /// it resumes from the change log like any other subscriber.
    async fn dispatch(self, subscription: Arc<str>, filter: TopicFilter, feed: Feed) {
        let mut shutdown = self.shutdown.clone();
        let mut position = self.store.last_seq();
        let mut live = Some(feed);
        loop {
            let ended = tokio::select! {
                () = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                ended = self.follow(&subscription, &filter, &mut position, live.take()) => ended,
            };
            match ended {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(%subscription, "shared subscription resumes after: {e}");
                    // Not a busy loop while the store keeps failing.
                    tokio::time::sleep(FULL_RETRY).await;
                }
            }
        }
    }

    /// Dispatches what `live` receives or, without it, the change log from
    /// `position` on and then live changes, until the bus closes (`Ok`) or
    /// this dispatcher is cut off or cannot read the log (`Err`).
    async fn follow(
        &self,
        subscription: &Arc<str>,
        filter: &TopicFilter,
        position: &mut u64,
        live: Option<Feed>,
    ) -> Result<(), StoreError> {
        let mut feed = match live {
            Some(feed) => feed,
            None => self.replay(subscription, filter, position).await?,
        };
        loop {
            match feed.next().await {
                Ok(event) => {
                    *position = (*position).max(event.seq.unwrap_or(0));
                    self.offer(subscription, filter, event).await;
                }
                Err(RecvError::Lagged) => {
                    return Err(StoreError::Storage(format!(
                        "cut off for falling behind at seq {position}"
                    )));
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// A new feed after a cut-off, with what the log holds since `position`
    /// dispatched first.
    async fn replay(
        &self,
        subscription: &Arc<str>,
        filter: &TopicFilter,
        position: &mut u64,
    ) -> Result<Feed, StoreError> {
        let mut feed = Feed::new(self.store.clone());
        for (bus_filter, carrier) in topics::bus_filters(filter) {
            let mut backfill = match feed
                .begin(bus_filter.clone(), Start::Since(*position))
                .await
            {
                Ok(backfill) => backfill,
                // The log no longer reaches back: what it lost is lost.
                Err(StoreError::ResumeGap { .. }) => {
                    feed.begin(bus_filter, Start::Since(self.store.last_seq()))
                        .await?
                }
                Err(e) => return Err(e),
            };
            while let Some(events) = backfill.next_page(&self.store).await? {
                for event in events {
                    *position = (*position).max(event.seq.unwrap_or(0));
                    if topics::carried_by(&event, carrier) {
                        self.offer(subscription, filter, Arc::new(event)).await;
                    }
                }
            }
            feed.synced(backfill);
        }
        Ok(feed)
    }

    /// Hands `event` to one member, waiting while every member is full.
    async fn offer(&self, subscription: &Arc<str>, filter: &TopicFilter, event: Arc<ChangeEvent>) {
        if !filter.matches(&topics::topic_of(&event))
            || !self.store.takes_shared(subscription, &event)
        {
            return;
        }
        let mut message = SharedMessage {
            subscription: subscription.clone(),
            event,
        };
        loop {
            {
                let mut groups = self.groups();
                let Some(group) = groups.get_mut(subscription) else {
                    return;
                };
                match group.hand_out(message) {
                    Ok(()) => return,
                    Err(back) => message = back,
                }
            }
            // The bus queues behind us meanwhile; if that fills, we resume
            // from the change log.
            tokio::time::sleep(FULL_RETRY).await;
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Group>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Group {
    /// Gives `message` to the next member with room, online members first.
    fn hand_out(&mut self, mut message: SharedMessage) -> Result<(), SharedMessage> {
        let count = self.members.len();
        for online in [true, false] {
            for step in 0..count {
                let at = (self.next + step) % count;
                let Some(member) = self.members.get(at) else {
                    continue;
                };
                if member.online.load(Ordering::Acquire) != online {
                    continue;
                }
                match member.inbox.try_send(message) {
                    Ok(()) => {
                        self.next = at + 1;
                        return Ok(());
                    }
                    Err(
                        mpsc::error::TrySendError::Full(back)
                        | mpsc::error::TrySendError::Closed(back),
                    ) => message = back,
                }
            }
        }
        Err(message)
    }
}
