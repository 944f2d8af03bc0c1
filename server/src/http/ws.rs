//! WebSockets: the multiplexed `/api/ws` (subscribe to many topic filters,
//! write, get an ack or an error for each request) and the same protocol
//! scoped to one table (`/api/{table}/`) or one record (`/api/{table}/{id}`).

use std::pin::Pin;

use app::event::{ChangeEvent, ClientMessage, ErrorBody, Origin, ServerReply};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{FuturesOrdered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

use super::{ApiError, AppState, Caller};
use crate::access::Action;
use crate::auth::Principal;
use crate::bus::RecvError;
use crate::feed::{Feed, Start};
use crate::metrics::Protocol;
use crate::store::{StoreError, WriteOp};
use crate::topic::TopicFilter;

/// Writes one socket may have waiting for their commit before it stops reading.
const MAX_INFLIGHT: usize = 256;
/// Once the server is stopping, how long one message may take to go out
/// before the socket is given up on (a client that stopped reading).
const STOPPING_SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Topic filters one socket may hold.
const MAX_FILTERS: usize = 256;

/// What a socket's writes may touch without naming it.
#[derive(Clone, Debug)]
pub enum Scope {
    All,
    Table(String),
    Record(String, String),
}

type Sink = SplitSink<WebSocket, Message>;
/// A request's reply, once it is durable (or refused). A write's change is
/// on the bus by the time its reply resolves.
type Pending = Pin<Box<dyn Future<Output = ServerReply> + Send>>;

/// One socket's writes and publishes in the order it sent them. Each write is
/// queued at the store when its message is handled, so the store commits them
/// in that order, and a publish sent while writes are in flight joins the
/// store's queue behind them; replies come out in that order too.
struct Queue {
    pending: FuturesOrdered<Pending>,
}

impl Queue {
    fn push(&mut self, step: Pending) {
        self.pending.push_back(step);
    }

    fn ready(&mut self, reply: ServerReply) {
        self.push(Box::pin(std::future::ready(reply)));
    }
}

/// `GET /api/ws`.
pub async fn multiplexed(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<Response, ApiError> {
    super::auth::signed_in_or_open(&state, &who)?;
    upgrade(state, who, request, Scope::All, None).await
}

/// A WebSocket on a table or record path, starting with that path's stream.
pub async fn scoped(
    state: AppState,
    who: Principal,
    request: Request,
    scope: Scope,
    filter: TopicFilter,
    start: Start,
) -> Result<Response, ApiError> {
    upgrade(state, who, request, scope, Some((filter, start))).await
}

async fn upgrade(
    state: AppState,
    who: Principal,
    request: Request,
    scope: Scope,
    initial: Option<(TopicFilter, Start)>,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "this path needs a WebSocket upgrade: {}",
                e.body_text()
            ))
        })?;
    let limit = state.body_limit;
    // Counted from the upgrade on, so shutdown waits for the socket's last replies.
    let token = state.tasks.token();
    Ok(super::lean_websocket(upgrade, limit)
        .on_upgrade(move |socket| async move {
            session(socket, state, who, scope, initial).await;
            drop(token);
        })
        .into_response())
}

async fn session(
    socket: WebSocket,
    state: AppState,
    who: Principal,
    scope: Scope,
    initial: Option<(TopicFilter, Start)>,
) {
    let _connection = state.metrics.connection(Protocol::Ws);
    let mut shutdown = state.shutdown.clone();
    let mut access = state.guard.changes();
    let (mut sink, mut incoming) = socket.split();
    let mut feed = Feed::new(state.store.clone());
    let mut writes = Queue {
        pending: FuturesOrdered::new(),
    };

    if let Some((filter, start)) = initial
        && Box::pin(subscribe(
            &state, &who, &mut feed, &mut sink, None, filter, start,
        ))
        .await
        .is_err()
    {
        return;
    }

    loop {
        tokio::select! {
            message = incoming.next(), if writes.pending.len() < MAX_INFLIGHT => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let reply = error_reply(None, "bad_message", "send JSON text messages");
                        if send(&state, &mut sink, &reply).await.is_err() { return; }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                state.metrics.message_in(Protocol::Ws);
                // Boxed: its state is only needed while a message is handled,
                // not in every idle socket's task.
                if Box::pin(handle(&state, &who, &scope, &mut feed, &mut sink, &mut writes, text.as_str())).await.is_err() {
                    return;
                }
            }
            Some(reply) = writes.pending.next(), if !writes.pending.is_empty() => {
                if send(&state, &mut sink, &reply).await.is_err() { return; }
            }
            next = feed.next(), if feed.filter_count() > 0 => match next {
                Ok(change) if !super::may_receive(&state, &who, &change) => {}
                Ok(change) => {
                    if send(&state, &mut sink, change.as_ref()).await.is_err() { return; }
                }
                Err(RecvError::Lagged) => {
                    let message = format!(
                        "this socket fell too far behind and was closed; reconnect and subscribe with since={}",
                        feed.position()
                    );
                    let _ = send(&state, &mut sink, &error_reply(None, "lagged", &message)).await;
                    let _ = sink.close().await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            Ok(()) = access.changed() => {
                if !state.guard.still_valid(&who) {
                    // The session ended (signed out, disabled, new role or
                    // password): 1008, policy violation (RFC 6455 §7.4.1).
                    let reply = error_reply(None, "unauthenticated", "the session ended; sign in again");
                    let _ = send(&state, &mut sink, &reply).await;
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::POLICY,
                            reason: "session ended".into(),
                        })))
                        .await;
                    return;
                }
            }
            _ = super::stopped(&mut shutdown) => break,
        }
    }
    // Let writes already sent finish and be acknowledged before closing.
    while let Some(reply) = writes.pending.next().await {
        if send(&state, &mut sink, &reply).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Handles one client message. Writes are queued at the store at once and
/// their replies put on `writes`, so several wait for their commit together
/// and still go out in order; `Err` means the socket is gone.
async fn handle(
    state: &AppState,
    who: &Principal,
    scope: &Scope,
    feed: &mut Feed,
    sink: &mut Sink,
    writes: &mut Queue,
    text: &str,
) -> Result<(), ()> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => {
            let req = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("req").and_then(Value::as_str).map(str::to_owned));
            let reply = error_reply(req, "bad_message", &format!("not a valid message: {e}"));
            send(state, sink, &reply).await?;
            return Ok(());
        }
    };
    match message {
        ClientMessage::Subscribe { req, filter, since } => {
            let filter = match scope {
                Scope::All => TopicFilter::parse(&filter),
                _ => {
                    let reply =
                        error_reply(req, "bad_message", "subscribe is only available on /api/ws");
                    send(state, sink, &reply).await?;
                    return Ok(());
                }
            };
            let filter = match filter {
                Ok(filter) if feed.filter_count() < MAX_FILTERS => filter,
                Ok(_) => {
                    let reply = error_reply(
                        req,
                        "too_many_filters",
                        &format!("a socket may hold at most {MAX_FILTERS} filters"),
                    );
                    send(state, sink, &reply).await?;
                    return Ok(());
                }
                Err(e) => {
                    send(state, sink, &error_reply(req, "bad_filter", &e.to_string())).await?;
                    return Ok(());
                }
            };
            if let Err(e) = super::authorize(state, who, Action::Subscribe, filter.as_str()) {
                send(
                    state,
                    sink,
                    &error_reply(req, &e.body.code, &e.body.message),
                )
                .await?;
                return Ok(());
            }
            let start = since.map_or(Start::State, Start::Since);
            subscribe(state, who, feed, sink, req, filter, start).await
        }
        ClientMessage::Unsubscribe { req, filter } => {
            let reply = match TopicFilter::parse(&filter) {
                Ok(filter) if feed.remove(&filter) => ack(req),
                Ok(_) => error_reply(req, "not_subscribed", "this socket holds no such filter"),
                Err(e) => error_reply(req, "bad_filter", &e.to_string()),
            };
            send(state, sink, &reply).await
        }
        ClientMessage::Publish {
            req,
            table,
            id,
            value,
        } => {
            let reply = match target(scope, table, id, false) {
                Ok((table, Some(id)))
                    if let Err(e) = super::authorize(
                        state,
                        who,
                        Action::Publish,
                        &super::record_topic(&table, &id),
                    ) =>
                {
                    error_reply(req, &e.body.code, &e.body.message)
                }
                // Nothing in flight: nothing to wait for.
                Ok((table, Some(id))) if writes.pending.is_empty() => {
                    publish(state, req, &table, &id, value)
                }
                // Behind the writes still on their way, through the store's queue.
                Ok((table, Some(id))) => {
                    match state
                        .store
                        .publish_queued(&table, &id, value, Origin::Ws, None)
                        .await
                    {
                        Ok(queued) => writes.push(Box::pin(async move {
                            match queued.durable().await {
                                Ok(_) => ack(req),
                                Err(e) => store_error(req, &e),
                            }
                        })),
                        Err(e) => writes.ready(store_error(req, &e)),
                    }
                    return Ok(());
                }
                Ok((_, None)) => error_reply(req, "bad_message", "a publish needs an id"),
                Err(message) => error_reply(req, "bad_message", &message),
            };
            if writes.pending.is_empty() {
                send(state, sink, &reply).await
            } else {
                writes.ready(reply);
                Ok(())
            }
        }
        ClientMessage::Put {
            req,
            table,
            id,
            value,
            if_match,
        } => {
            let op = target(scope, table, id, true).map(|(table, id)| WriteOp::Put {
                table,
                id,
                value,
                if_match,
            });
            queue_write(state, who, writes, req, op).await;
            Ok(())
        }
        ClientMessage::Patch {
            req,
            table,
            id,
            value,
            if_match,
        } => {
            let op = target(scope, table, id, false).and_then(|(table, id)| {
                let id = id.ok_or("a patch needs an id")?;
                Ok(WriteOp::Patch {
                    table,
                    id,
                    patch: value,
                    if_match,
                })
            });
            queue_write(state, who, writes, req, op).await;
            Ok(())
        }
        ClientMessage::Delete {
            req,
            table,
            id,
            if_match,
        } => {
            let op = target(scope, table, id, false).and_then(|(table, id)| {
                let id = id.ok_or("a delete needs an id")?;
                Ok(WriteOp::Delete {
                    table,
                    id,
                    if_match,
                })
            });
            queue_write(state, who, writes, req, op).await;
            Ok(())
        }
    }
}

/// Adds a filter to the feed and sends its backfill, framed by an ack and a `sync`.
async fn subscribe(
    state: &AppState,
    who: &Principal,
    feed: &mut Feed,
    sink: &mut Sink,
    req: Option<String>,
    filter: TopicFilter,
    start: Start,
) -> Result<(), ()> {
    let mut backfill = match feed.begin(filter, start).await {
        Ok(backfill) => backfill,
        Err(e) => return send(state, sink, &store_error(req, &e)).await,
    };
    if req.is_some() {
        send(state, sink, &ack(req.clone())).await?;
    }
    loop {
        match backfill.next_page(feed.store()).await {
            Ok(Some(page)) => {
                for change in page.iter().filter(|c| super::may_receive(state, who, c)) {
                    send(state, sink, change).await?;
                }
            }
            Ok(None) => break,
            Err(e) => return send(state, sink, &store_error(req, &e)).await,
        }
    }
    let seq = feed.synced(backfill);
    send(state, sink, &ServerReply::Sync { req, seq }).await
}

/// The table and id a write names, checked against the socket's scope.
fn target(
    scope: &Scope,
    table: Option<String>,
    id: Option<String>,
    id_optional: bool,
) -> Result<(String, Option<String>), String> {
    let (table, id) = match scope {
        Scope::All => (table.ok_or("name the table")?, id),
        Scope::Table(own) => {
            if table.as_ref().is_some_and(|t| t != own) {
                return Err(format!("this socket writes only to table '{own}'"));
            }
            (own.clone(), id)
        }
        Scope::Record(own_table, own_id) => {
            if table.as_ref().is_some_and(|t| t != own_table)
                || id.as_ref().is_some_and(|i| i != own_id)
            {
                return Err(format!("this socket writes only to '{own_table}/{own_id}'"));
            }
            (own_table.clone(), Some(own_id.clone()))
        }
    };
    if id.is_none() && !id_optional {
        return Err("name the record id".into());
    }
    Ok((table, id))
}

/// Queues a write at the store now (so it commits after every write this
/// socket sent before it) and its reply on `writes`.
async fn queue_write(
    state: &AppState,
    who: &Principal,
    writes: &mut Queue,
    req: Option<String>,
    op: Result<WriteOp, String>,
) {
    let denied = match &op {
        Ok(op) => {
            let (table, id) = match op {
                WriteOp::Put { table, id, .. } => (table, id.as_deref().unwrap_or("+")),
                WriteOp::Patch { table, id, .. } | WriteOp::Delete { table, id, .. } => {
                    (table, id.as_str())
                }
            };
            super::authorize(state, who, Action::Publish, &super::record_topic(table, id)).err()
        }
        Err(_) => None,
    };
    let op = match op {
        Ok(op) => op,
        Err(message) => return writes.ready(error_reply(req, "bad_message", &message)),
    };
    if let Some(e) = denied {
        return writes.ready(error_reply(req, &e.body.code, &e.body.message));
    }
    match state.store.enqueue(op, Origin::Ws, None).await {
        Ok(pending) => writes.push(Box::pin(async move {
            match pending.durable().await {
                Ok(event) => written(req, &event),
                Err(e) => store_error(req, &e),
            }
        })),
        Err(e) => writes.ready(store_error(req, &e)),
    }
}

/// Puts a transient message on the bus now.
fn publish(
    state: &AppState,
    req: Option<String>,
    table: &str,
    id: &str,
    value: Value,
) -> ServerReply {
    match state.store.publish(table, id, value, Origin::Ws) {
        Ok(()) => ack(req),
        Err(e) => store_error(req, &e),
    }
}

fn written(req: Option<String>, event: &ChangeEvent) -> ServerReply {
    ServerReply::Ack {
        req,
        seq: event.seq,
        id: Some(event.id.clone()),
        version: event.version,
    }
}

fn ack(req: Option<String>) -> ServerReply {
    ServerReply::Ack {
        req,
        seq: None,
        id: None,
        version: None,
    }
}

fn error_reply(req: Option<String>, code: &str, message: &str) -> ServerReply {
    ServerReply::Error {
        req,
        error: ErrorBody {
            code: code.into(),
            message: message.into(),
        },
    }
}

fn store_error(req: Option<String>, e: &StoreError) -> ServerReply {
    error_reply(req, e.code(), &e.to_string())
}

async fn send<T: serde::Serialize>(
    state: &AppState,
    sink: &mut Sink,
    message: &T,
) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    state.metrics.message_out(Protocol::Ws);
    let sending = sink.send(Message::Text(text.into()));
    tokio::pin!(sending);
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        sent = &mut sending => return sent.map_err(|_| ()),
        _ = super::stopped(&mut shutdown) => {}
    }
    // Stopping: a client that still reads gets its last replies; one that
    // does not is given up on soon, rather than holding up shutdown.
    match tokio::time::timeout(STOPPING_SEND_LIMIT, sending).await {
        Ok(sent) => sent.map_err(|_| ()),
        Err(_) => Err(()),
    }
}
