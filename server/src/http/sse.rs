//! Server-Sent Events: the current state (or the changes since `Last-Event-ID`),
//! a `sync` event, then every change as it commits. Records and changes are
//! unnamed events, so a plain `EventSource.onmessage` receives them (the change
//! type is in the JSON); `id:` is the change's `seq`. Only control events
//! (`sync`, `reset`, `error`) carry a name. A comment heartbeat keeps proxies
//! from closing the stream.

use std::convert::Infallible;
use std::time::Duration;

use app::event::{ChangeEvent, ErrorBody};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::sync::mpsc;

use super::AppState;
use crate::auth::Principal;
use crate::bus::RecvError;
use crate::feed::{Feed, Start};
use crate::metrics::Protocol;
use crate::store::StoreError;
use crate::topic::TopicFilter;

/// Events buffered between the feed and a slow HTTP connection.
const BUFFER: usize = 64;
const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn stream(state: AppState, who: Principal, filter: TopicFilter, start: Start) -> Response {
    let (tx, mut rx) = mpsc::channel(BUFFER);
    let tasks = state.tasks.clone();
    tasks.spawn(run(state, who, filter, start, tx));
    let events = stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text(""))
        .into_response()
}

async fn run(
    state: AppState,
    who: Principal,
    filter: TopicFilter,
    start: Start,
    tx: mpsc::Sender<Event>,
) {
    let _connection = state.metrics.connection(Protocol::Sse);
    let mut shutdown = state.shutdown.clone();
    let mut access = state.guard.changes();
    let mut feed = Feed::new(state.store.clone());
    let send = |event: Event| {
        let tx = tx.clone();
        let metrics = state.metrics.clone();
        async move {
            metrics.message_out(Protocol::Sse);
            tx.send(event).await.is_ok()
        }
    };

    // Boxed: the store reads are large futures, and only the start needs them;
    // the task then stays small for as long as the stream is open.
    let mut backfill = match Box::pin(feed.begin(filter.clone(), start)).await {
        Ok(backfill) => backfill,
        // Too old to resume: say so, then start over from the current state.
        Err(e @ StoreError::ResumeGap { .. }) => {
            if !send(error_event("reset", &e)).await {
                return;
            }
            match Box::pin(feed.begin(filter, Start::State)).await {
                Ok(backfill) => backfill,
                Err(e) => {
                    let _ = send(error_event("error", &e)).await;
                    return;
                }
            }
        }
        Err(e) => {
            let _ = send(error_event("error", &e)).await;
            return;
        }
    };
    let replay = backfill.is_replay();
    loop {
        match backfill.next_page(&state.store).await {
            Ok(Some(page)) => {
                for change in page.iter().filter(|c| super::may_receive(&state, &who, c)) {
                    if !send(change_event(change, replay)).await {
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = send(error_event("error", &e)).await;
                return;
            }
        }
    }
    let seq = feed.synced(backfill);
    let sync = Event::default()
        .event("sync")
        .id(seq.to_string())
        .data(format!("{{\"seq\":{seq}}}"));
    if !send(sync).await {
        return;
    }

    loop {
        tokio::select! {
            next = feed.next() => match next {
                Ok(change) if !super::may_receive(&state, &who, &change) => {}
                Ok(change) => {
                    if !send(change_event(&change, true)).await {
                        return;
                    }
                }
                Err(RecvError::Lagged) => {
                    let body = ErrorBody {
                        code: "lagged".into(),
                        message: format!("this stream fell too far behind and was closed; reconnect with Last-Event-ID: {}", feed.position()),
                    };
                    let _ = send(Event::default().event("error").data(json(&body))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            Ok(()) = access.changed() => {
                if !state.guard.still_valid(&who) {
                    // The session ended (signed out, disabled, new role or
                    // password): say so; a reconnect then gets 401.
                    let body = ErrorBody {
                        code: "unauthenticated".into(),
                        message: "the session ended; sign in again".into(),
                    };
                    let _ = send(Event::default().event("error").data(json(&body))).await;
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = super::stopped(&mut shutdown) => return,
        }
    }
}

/// A change as an SSE event; `with_id` puts its seq in `id:` (state events
/// carry none, so `Last-Event-ID` only ever names a point in the change log).
fn change_event(change: &ChangeEvent, with_id: bool) -> Event {
    let event = Event::default().data(json(change));
    match change.seq {
        Some(seq) if with_id => event.id(seq.to_string()),
        _ => event,
    }
}

fn error_event(name: &str, e: &StoreError) -> Event {
    let body = ErrorBody {
        code: e.code().into(),
        message: e.to_string(),
    };
    Event::default().event(name).data(json(&body))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}
