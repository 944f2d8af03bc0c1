//! A feed is one client's ordered view of the change stream: for each filter it
//! holds, first a backfill (the current state, or the changes since a `seq`),
//! then live changes — with no gap and no duplicate between the two. SSE, the
//! per-record WebSocket and the multiplexed `/api/ws` all stream through it.

use std::pin::Pin;
use std::sync::Arc;

use app::event::ChangeEvent;

use crate::bus::{RecvError, Subscriber};
use crate::store::{ReadView, Store, StoreError};
use crate::topic::TopicFilter;

/// Records or changes read per backfill page.
const PAGE: usize = 256;

/// Where a new filter's stream begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The current state of every matching record, then changes.
    State,
    /// Every committed change after this `seq`, then live changes.
    Since(u64),
}

pub struct Feed {
    store: Store,
    subscriber: Subscriber,
    /// Filters whose backfill is done, with the `seq` it covered.
    synced: Vec<(TopicFilter, u64)>,
    /// The highest `seq` this feed has delivered or synced through.
    position: u64,
}

/// A filter's backfill, read page by page.
///
/// [`Backfill::next_page`] is cancel-safe: connections race it in a
/// `select!` against client traffic, so a page read that loses the race is
/// kept (not restarted) and finished by the next call.
pub struct Backfill {
    filter: TopicFilter,
    source: Source,
    until: u64,
    done: bool,
    reading: Option<PageRead>,
}

enum Source {
    State {
        view: ReadView,
        after: Option<String>,
    },
    Replay {
        after: u64,
    },
}

/// A page read under way, owning everything it needs.
type PageRead = Pin<Box<dyn Future<Output = Result<Page, StoreError>> + Send>>;

enum Page {
    /// Records, and the cursor after them (`None` at the end).
    State(Vec<ChangeEvent>, Option<String>),
    /// Changes, and the last seq the read examined.
    Replay(Vec<ChangeEvent>, u64),
}

impl Backfill {
    /// The next page of backfill events, or `None` when it is complete.
    pub async fn next_page(
        &mut self,
        store: &Store,
    ) -> Result<Option<Vec<ChangeEvent>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        if let Source::Replay { after } = &self.source
            && *after >= self.until
        {
            self.done = true;
            return Ok(None);
        }
        let read = self
            .reading
            .get_or_insert_with(|| start_read(store, &self.source, &self.filter));
        let page = read.await;
        // Only now, with the page in hand, does the cursor move.
        self.reading = None;
        match (page?, &mut self.source) {
            (Page::State(events, next), Source::State { after, .. }) => {
                self.done = next.is_none();
                *after = next;
                Ok(Some(events))
            }
            (Page::Replay(mut events, scanned), Source::Replay { after }) => {
                events.retain(|e| e.seq.is_some_and(|s| s <= self.until));
                *after = scanned.min(self.until);
                if scanned >= self.until {
                    self.done = true;
                }
                Ok(Some(events))
            }
            _ => Err(StoreError::Storage(
                "backfill page of the wrong kind".into(),
            )),
        }
    }

    /// Whether this backfill replays changes (each with its `seq`) rather than state.
    pub fn is_replay(&self) -> bool {
        matches!(self.source, Source::Replay { .. })
    }
}

fn start_read(store: &Store, source: &Source, filter: &TopicFilter) -> PageRead {
    let store = store.clone();
    let filter = filter.clone();
    match source {
        Source::State { view, after } => {
            let view = view.clone();
            let after = after.clone();
            Box::pin(async move {
                let (events, next) = store.read_state(&view, &filter, after, PAGE).await?;
                Ok(Page::State(events, next))
            })
        }
        Source::Replay { after } => {
            let after = *after;
            Box::pin(async move {
                let (events, scanned) = store.changes_since(after, Some(&filter), PAGE).await?;
                Ok(Page::Replay(events, scanned))
            })
        }
    }
}

impl Feed {
    pub fn new(store: Store) -> Self {
        let subscriber = store.bus().subscribe();
        Self {
            store,
            subscriber,
            synced: Vec::new(),
            position: 0,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts routing `filter` to this feed and returns its backfill. Call
    /// [`Feed::synced`] once the backfill has been sent.
    pub async fn begin(
        &mut self,
        filter: TopicFilter,
        start: Start,
    ) -> Result<Backfill, StoreError> {
        // Subscribe before reading, so every change after the backfill is queued.
        self.subscriber.add_filter(&filter);
        let began = match start {
            Start::State => self.store.view().await.map(|view| {
                let until = view.seq;
                (Source::State { view, after: None }, until)
            }),
            Start::Since(since) => {
                // Validates that the log still reaches back to `since` and, on
                // etcd, waits until this node has applied a `since` another
                // node made; only then is the replay's end read, so it is at
                // or past `since` and no change is both replayed and live.
                self.store
                    .changes_since(since, Some(&filter), 1)
                    .await
                    .map(|_| {
                        let until = self.store.last_seq().max(since);
                        (Source::Replay { after: since }, until)
                    })
            }
        };
        match began {
            Ok((source, until)) => Ok(Backfill {
                filter,
                source,
                until,
                done: false,
                reading: None,
            }),
            Err(e) => {
                if !self.synced.iter().any(|(f, _)| *f == filter) {
                    self.subscriber.remove_filter(&filter);
                }
                Err(e)
            }
        }
    }

    /// Starts routing `filter` to this feed, before its [`Feed::begin`]:
    /// a client filter that needs several bus filters is on the bus for all
    /// of them at once, not one backfill read after another.
    pub fn listen(&mut self, filter: &TopicFilter) {
        self.subscriber.add_filter(filter);
    }

    /// Starts routing `filter` to this feed with no backfill: whatever is
    /// published from now on. Unlike [`Feed::begin`] it does not wait, so a
    /// caller can be on the bus before it answers its client.
    pub fn begin_live(&mut self, filter: TopicFilter) {
        self.subscriber.add_filter(&filter);
        self.synced.retain(|(f, _)| *f != filter);
        self.synced.push((filter, 0));
    }

    /// Marks a backfill as delivered; returns the `seq` it covered.
    pub fn synced(&mut self, backfill: Backfill) -> u64 {
        let through = backfill.until;
        self.synced.retain(|(f, _)| *f != backfill.filter);
        self.synced.push((backfill.filter, through));
        self.position = self.position.max(through);
        through
    }

    /// Stops a filter; returns whether it was held.
    pub fn remove(&mut self, filter: &TopicFilter) -> bool {
        self.synced.retain(|(f, _)| f != filter);
        self.subscriber.remove_filter(filter)
    }

    pub fn filter_count(&self) -> usize {
        self.synced.len()
    }

    /// The highest `seq` delivered: where a resume should start.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next live event to deliver. Changes a backfill already covered are
    /// skipped, so each change reaches the client once.
    pub async fn next(&mut self) -> Result<Arc<ChangeEvent>, RecvError> {
        loop {
            let event = self.subscriber.recv().await?;
            let topic = event.topic();
            let mut matching = self
                .synced
                .iter()
                .filter(|(f, _)| f.matches(&topic))
                .peekable();
            if matching.peek().is_none() {
                continue;
            }
            match event.seq {
                None => return Ok(event),
                Some(seq) => {
                    if matching.all(|(_, through)| *through < seq) {
                        self.position = self.position.max(seq);
                        return Ok(event);
                    }
                }
            }
        }
    }
}
