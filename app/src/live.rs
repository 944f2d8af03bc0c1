//! The live connection of the web app: one multiplexed WebSocket (`/api/ws`)
//! that watches one table and carries the page's writes.
//!
//! The protocol logic is [`Tracker`], a plain state machine with no I/O (unit
//! tested here); the browser side ([`Live`], built only with `hydrate`) owns the
//! socket, reconnects with backoff and feeds the tracker. On the server the
//! page renders with the same signals and never opens a socket.

use std::collections::{BTreeMap, HashSet};

use leptos::prelude::*;
use serde_json::Value;

use crate::auth::Auth;
use crate::event::{ChangeEvent, ChangeType, ClientMessage, ErrorBody, ServerMessage, ServerReply};

/// One record as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub version: Option<u64>,
    pub seq: Option<u64>,
    pub value: Value,
    /// Changed live, after the table's state was first shown (the row flashes).
    pub fresh: bool,
}

#[cfg(test)]
impl Record {
    /// A record as a page first loads it (version 1, not changed live), for page tests.
    pub fn loaded(value: Value) -> Self {
        Record {
            version: Some(1),
            seq: Some(1),
            value,
            fresh: false,
        }
    }
}

/// A change to the page's copy of the table.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordOp {
    Clear,
    Replace(BTreeMap<String, Record>),
    Upsert(String, Record),
    Remove(String),
}

impl RecordOp {
    pub fn apply(self, records: &mut BTreeMap<String, Record>) {
        match self {
            RecordOp::Clear => records.clear(),
            RecordOp::Replace(all) => *records = all,
            RecordOp::Upsert(id, record) => {
                records.insert(id, record);
            }
            RecordOp::Remove(id) => {
                records.remove(&id);
            }
        }
    }
}

/// A write acknowledged by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub id: Option<String>,
    pub version: Option<u64>,
    pub seq: Option<u64>,
}

/// What the tracker asks the connection to do or show.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send(ClientMessage),
    Records(RecordOp),
    /// A subscription was sent; the table's state is being (re)loaded.
    Syncing,
    /// The table's state is complete; live changes follow.
    Synced,
    /// The server refused to watch the table.
    TableError(ErrorBody),
    /// The answer to a write the page made.
    Reply {
        req: String,
        result: Result<Acked, ErrorBody>,
    },
    /// An error about the connection itself (for example `lagged`).
    Notice(ErrorBody),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Subscribe sent; events before its ack belong to an older subscription.
    AwaitingAck,
    /// Between ack and sync: the current state (fresh) or the replayed changes.
    Backfill,
    Live,
}

#[derive(Debug)]
struct Subscription {
    req: String,
    /// `true`: the server sends the whole current state, collected in `staging`
    /// and shown at `sync`; `false`: it replays changes since `resume`.
    fresh: bool,
    phase: Phase,
    staging: BTreeMap<String, Record>,
}

/// The `/api/ws` protocol for one watched table, across reconnects.
#[derive(Debug, Default)]
pub struct Tracker {
    table: Option<String>,
    subscription: Option<Subscription>,
    /// The `seq` to resume from after a drop: set at `sync`, advanced by live events.
    resume: Option<u64>,
    next_req: u64,
    /// Requests whose answers nobody waits for (unsubscribes).
    ignored: HashSet<String>,
}

/// The topic filter that matches every record of a table.
pub fn table_filter(table: &str) -> String {
    format!("{table}/+")
}

impl Tracker {
    pub fn new(table: Option<String>) -> Self {
        Tracker {
            table,
            ..Tracker::default()
        }
    }

    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// Where a reconnect resumes from, if it can.
    pub fn resume_point(&self) -> Option<u64> {
        self.resume
    }

    /// A fresh request id.
    pub fn next_req(&mut self) -> String {
        self.next_req += 1;
        self.next_req.to_string()
    }

    /// The socket is open: watch the table again, resuming where the last socket stopped.
    pub fn on_open(&mut self, out: &mut Vec<Output>) {
        self.subscription = None;
        self.ignored.clear();
        if self.table.is_some() {
            self.subscribe(out);
        }
    }

    /// The socket is gone. The records stay on screen; `resume` survives only
    /// if the last subscription reached `sync`.
    pub fn on_close(&mut self) {
        if let Some(sub) = self.subscription.take()
            && sub.fresh
            && sub.phase != Phase::Live
        {
            self.resume = None;
        }
        self.ignored.clear();
    }

    /// Watch another table (or none).
    pub fn watch(&mut self, table: Option<String>, connected: bool, out: &mut Vec<Output>) {
        if table == self.table {
            return;
        }
        if connected
            && self.subscription.take().is_some()
            && let Some(old) = self.table.clone()
        {
            let req = self.next_req();
            self.ignored.insert(req.clone());
            out.push(Output::Send(ClientMessage::Unsubscribe {
                req: Some(req),
                filter: table_filter(&old),
            }));
        }
        self.subscription = None;
        self.table = table;
        self.resume = None;
        out.push(Output::Records(RecordOp::Clear));
        if connected && self.table.is_some() {
            self.subscribe(out);
        }
    }

    fn subscribe(&mut self, out: &mut Vec<Output>) {
        let Some(table) = &self.table else { return };
        let filter = table_filter(table);
        let req = self.next_req();
        let since = self.resume;
        self.subscription = Some(Subscription {
            req: req.clone(),
            fresh: since.is_none(),
            phase: Phase::AwaitingAck,
            staging: BTreeMap::new(),
        });
        out.push(Output::Syncing);
        out.push(Output::Send(ClientMessage::Subscribe {
            req: Some(req),
            filter,
            since,
        }));
    }

    fn is_subscription(&self, req: &Option<String>) -> bool {
        match (&self.subscription, req) {
            (Some(sub), Some(req)) => &sub.req == req,
            _ => false,
        }
    }

    /// One message from the server.
    pub fn on_message(&mut self, message: ServerMessage, out: &mut Vec<Output>) {
        match message {
            ServerMessage::Change(change) => self.on_change(change, out),
            ServerMessage::Reply(reply) => self.on_reply(reply, out),
        }
    }

    fn on_reply(&mut self, reply: ServerReply, out: &mut Vec<Output>) {
        match reply {
            ServerReply::Ack {
                req,
                seq,
                id,
                version,
            } => {
                if self.is_subscription(&req) {
                    if let Some(sub) = &mut self.subscription
                        && sub.phase == Phase::AwaitingAck
                    {
                        sub.phase = Phase::Backfill;
                    }
                } else if let Some(req) = req
                    && !self.ignored.remove(&req)
                {
                    out.push(Output::Reply {
                        req,
                        result: Ok(Acked { id, version, seq }),
                    });
                }
            }
            ServerReply::Sync { req, seq } => {
                if !self.is_subscription(&req) {
                    return;
                }
                let Some(sub) = &mut self.subscription else {
                    return;
                };
                if sub.fresh {
                    let staging = std::mem::take(&mut sub.staging);
                    out.push(Output::Records(RecordOp::Replace(staging)));
                }
                sub.phase = Phase::Live;
                self.resume = Some(self.resume.map_or(seq, |r| r.max(seq)));
                out.push(Output::Synced);
            }
            ServerReply::Error { req, error } => {
                if self.is_subscription(&req) {
                    self.subscription = None;
                    if error.code == "resume_gap" {
                        // Too far behind to replay: load the whole table again.
                        self.resume = None;
                        self.subscribe(out);
                    } else {
                        out.push(Output::TableError(error));
                    }
                } else if let Some(req) = req {
                    if !self.ignored.remove(&req) {
                        out.push(Output::Reply {
                            req,
                            result: Err(error),
                        });
                    }
                } else {
                    out.push(Output::Notice(error));
                }
            }
        }
    }

    fn on_change(&mut self, change: ChangeEvent, out: &mut Vec<Output>) {
        if self.table.as_deref() != Some(change.table.as_str()) {
            return;
        }
        let Some(sub) = &mut self.subscription else {
            return;
        };
        let live = match sub.phase {
            Phase::AwaitingAck => return,
            Phase::Backfill if sub.fresh => {
                if let Some(op) = record_op(change, false) {
                    op.apply(&mut sub.staging);
                }
                return;
            }
            Phase::Backfill => true,
            Phase::Live => true,
        };
        if let Some(seq) = change.seq {
            self.resume = Some(self.resume.map_or(seq, |r| r.max(seq)));
        }
        if let Some(op) = record_op(change, live) {
            out.push(Output::Records(op));
        }
    }
}

fn record_op(change: ChangeEvent, fresh: bool) -> Option<RecordOp> {
    match change.kind {
        ChangeType::Put | ChangeType::Patch => change.value.map(|value| {
            RecordOp::Upsert(
                change.id,
                Record {
                    version: change.version,
                    seq: change.seq,
                    value,
                    fresh,
                },
            )
        }),
        ChangeType::Delete => Some(RecordOp::Remove(change.id)),
        // Transient messages are not records.
        ChangeType::Publish => None,
    }
}

/// Parses editor text into a record value: JSON, and an object.
pub fn parse_record(text: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("This is not valid JSON: {e}."))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("A record must be a JSON object, such as {\"text\": \"hello\"}.".into())
    }
}

/// The state of the connection, as the indicator shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Live,
    Reconnecting,
}

impl Status {
    pub fn is_live(self) -> bool {
        self == Status::Live
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Connecting => "connecting…",
            Status::Live => "live",
            Status::Reconnecting => "reconnecting…",
        }
    }
}

/// A write the page asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put {
        id: Option<String>,
        value: Value,
        if_match: Option<u64>,
    },
    /// A JSON merge patch (RFC 7396): only the fields it names change, so a
    /// page's edit does not undo what others (the playlist player) wrote meanwhile.
    Patch {
        id: String,
        value: Value,
        if_match: Option<u64>,
    },
    Delete {
        id: String,
        if_match: Option<u64>,
    },
}

impl Write {
    #[cfg(feature = "hydrate")]
    fn into_message(self, req: String, table: String) -> ClientMessage {
        match self {
            Write::Put {
                id,
                value,
                if_match,
            } => ClientMessage::Put {
                req: Some(req),
                table: Some(table),
                id,
                value,
                if_match,
            },
            Write::Patch {
                id,
                value,
                if_match,
            } => ClientMessage::Patch {
                req: Some(req),
                table: Some(table),
                id: Some(id),
                value,
                if_match,
            },
            Write::Delete { id, if_match } => ClientMessage::Delete {
                req: Some(req),
                table: Some(table),
                id: Some(id),
                if_match,
            },
        }
    }
}

fn offline() -> ErrorBody {
    ErrorBody {
        code: "offline".into(),
        message: "Not connected to the server; try again when the indicator shows live.".into(),
    }
}

/// The page's live view of one table, shared by its components (all `Copy`).
#[derive(Clone, Copy)]
pub struct Live {
    pub status: RwSignal<Status>,
    pub table: RwSignal<Option<String>>,
    pub records: RwSignal<BTreeMap<String, Record>>,
    /// The table's state has been loaded since it was picked.
    pub synced: RwSignal<bool>,
    pub table_error: RwSignal<Option<ErrorBody>>,
    /// The last error about the connection itself.
    pub notice: RwSignal<Option<ErrorBody>>,
    /// Told when the server says the session is gone (close 1008, a refused
    /// upgrade, an `unauthenticated` answer), so the app returns to sign-in.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    auth: Option<Auth>,
    #[cfg(feature = "hydrate")]
    commands: StoredValue<Option<futures::channel::mpsc::UnboundedSender<client::Command>>>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// The signals only; [`Live::connect`] starts the socket in the browser.
    pub fn new() -> Self {
        Live {
            status: RwSignal::new(Status::Connecting),
            table: RwSignal::new(None),
            records: RwSignal::new(BTreeMap::new()),
            synced: RwSignal::new(false),
            table_error: RwSignal::new(None),
            notice: RwSignal::new(None),
            auth: use_context::<Auth>(),
            #[cfg(feature = "hydrate")]
            commands: StoredValue::new(None),
        }
    }

    /// Opens the socket (browser only; does nothing on the server). It closes
    /// when the reactive owner that created this `Live` is disposed.
    pub fn connect(self) {
        #[cfg(feature = "hydrate")]
        Effect::new(move |started: Option<()>| {
            if started.is_none() {
                let (tx, rx) = futures::channel::mpsc::unbounded();
                self.commands.set_value(Some(tx));
                leptos::task::spawn_local(client::run(self, rx));
            }
        });
    }

    /// Watch `table` (or nothing) from now on.
    pub fn watch(self, table: Option<String>) {
        if self.table.get_untracked() == table {
            return;
        }
        self.table.set(table.clone());
        self.synced.set(false);
        self.table_error.set(None);
        #[cfg(feature = "hydrate")]
        self.commands.with_value(|tx| {
            if let Some(tx) = tx {
                let _ = tx.unbounded_send(client::Command::Watch(table));
            }
        });
    }

    /// Sends a write on the socket and waits for the server's answer.
    pub async fn write(self, write: Write) -> Result<Acked, ErrorBody> {
        #[cfg(feature = "hydrate")]
        {
            let (reply, answer) = futures::channel::oneshot::channel();
            let sent = self.commands.with_value(|tx| {
                tx.as_ref().is_some_and(|tx| {
                    tx.unbounded_send(client::Command::Write { write, reply })
                        .is_ok()
                })
            });
            if !sent {
                return Err(offline());
            }
            answer.await.unwrap_or_else(|_| Err(offline()))
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = write;
            Err(offline())
        }
    }
}

#[cfg(feature = "hydrate")]
mod client {
    //! The browser side: the socket, reconnects, and the page's pending writes.

    use std::collections::HashMap;
    use std::pin::Pin;
    use std::time::Duration;

    use futures::channel::{mpsc, oneshot};
    use futures::future::{Either, select};
    use futures::{Sink, SinkExt, StreamExt};
    use gloo_net::websocket::{Message, State, WebSocketError, futures::WebSocket};
    use leptos::prelude::*;

    use super::{Acked, Live, Output, Status, Tracker, Write, offline};
    use crate::event::{ErrorBody, ServerMessage};

    const MIN_BACKOFF: Duration = Duration::from_millis(500);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);

    type Reply = oneshot::Sender<Result<Acked, ErrorBody>>;

    pub enum Command {
        Watch(Option<String>),
        Write { write: Write, reply: Reply },
    }

    enum Input {
        Frame(Option<Result<Message, WebSocketError>>),
        Command(Option<Command>),
    }

    struct Connection {
        live: Live,
        tracker: Tracker,
        pending: HashMap<String, Reply>,
    }

    /// How a served socket ended.
    enum Ended {
        /// The page went away: stop.
        PageGone,
        /// The socket closed or failed; `policy`: the server closed it with
        /// 1008, as it does when the session behind it ends.
        Dropped { policy: bool },
    }

    /// The close code a server uses when the socket's session has ended.
    const POLICY_VIOLATION: u16 = 1008;

    /// Runs until the page's command sender is dropped (the page went away).
    pub async fn run(live: Live, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut conn = Connection {
            live,
            tracker: Tracker::new(live.table.try_get_untracked().flatten()),
            pending: HashMap::new(),
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            // A socket that never opens may be a refused upgrade (401): the
            // browser does not say, so ask whether the session still stands.
            let mut ask = true;
            if let Ok(mut socket) = WebSocket::open(&url()) {
                let opened = futures::future::poll_fn(|cx| Pin::new(&mut socket).poll_ready(cx))
                    .await
                    .is_ok()
                    && matches!(socket.state(), State::Open);
                if opened {
                    backoff = MIN_BACKOFF;
                    live.status.try_set(Status::Live);
                    match conn.serve(&mut socket, &mut commands).await {
                        Ended::PageGone => return,
                        Ended::Dropped { policy } => ask = policy,
                    }
                }
            }
            conn.down();
            if ask && let Some(auth) = live.auth {
                auth.recheck();
            }
            // Wait out the backoff; the page may still change table or try to write.
            let (wake, mut slept) = oneshot::channel::<()>();
            set_timeout(
                move || {
                    let _ = wake.send(());
                },
                backoff,
            );
            loop {
                match select(&mut slept, commands.next()).await {
                    Either::Left(_) => break,
                    Either::Right((None, _)) => return,
                    Either::Right((Some(command), _)) => {
                        conn.offline_command(command);
                    }
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn url() -> String {
        let location = window().location();
        let scheme = match location.protocol().as_deref() {
            Ok("https:") => "wss",
            _ => "ws",
        };
        let host = location.host().unwrap_or_default();
        format!("{scheme}://{host}/api/ws")
    }

    impl Connection {
        /// Serves one open socket until it ends or the page goes away.
        async fn serve(
            &mut self,
            socket: &mut WebSocket,
            commands: &mut mpsc::UnboundedReceiver<Command>,
        ) -> Ended {
            let mut out = Vec::new();
            self.tracker.on_open(&mut out);
            if !self.emit(socket, out).await {
                return Ended::Dropped { policy: false };
            }
            loop {
                let input = match select(socket.next(), commands.next()).await {
                    Either::Left((frame, _)) => Input::Frame(frame),
                    Either::Right((command, _)) => Input::Command(command),
                };
                let mut out = Vec::new();
                match input {
                    Input::Frame(Some(Ok(Message::Text(text)))) => {
                        // Anything unreadable is skipped: a newer server may say more.
                        if let Ok(message) = serde_json::from_str::<ServerMessage>(&text) {
                            self.tracker.on_message(message, &mut out);
                        }
                    }
                    Input::Frame(Some(Ok(Message::Bytes(_)))) => {}
                    Input::Frame(Some(Err(WebSocketError::ConnectionClose(close)))) => {
                        return Ended::Dropped {
                            policy: close.code == POLICY_VIOLATION,
                        };
                    }
                    Input::Frame(Some(Err(_)) | None) => {
                        return Ended::Dropped { policy: false };
                    }
                    Input::Command(None) => return Ended::PageGone,
                    Input::Command(Some(Command::Watch(table))) => {
                        self.tracker.watch(table, true, &mut out);
                    }
                    Input::Command(Some(Command::Write { write, reply })) => {
                        match self.tracker.table().map(str::to_owned) {
                            Some(table) => {
                                let req = self.tracker.next_req();
                                out.push(Output::Send(write.into_message(req.clone(), table)));
                                self.pending.insert(req, reply);
                            }
                            None => {
                                let _ = reply.send(Err(ErrorBody {
                                    code: "no_table".into(),
                                    message: "Pick a table first.".into(),
                                }));
                            }
                        }
                    }
                }
                if !self.emit(socket, out).await {
                    return Ended::Dropped { policy: false };
                }
            }
        }

        /// Carries out the tracker's outputs; `false` if the socket failed.
        async fn emit(&mut self, socket: &mut WebSocket, out: Vec<Output>) -> bool {
            let live = self.live;
            for output in out {
                match output {
                    Output::Send(message) => {
                        let Ok(text) = serde_json::to_string(&message) else {
                            continue;
                        };
                        if socket.send(Message::Text(text)).await.is_err() {
                            return false;
                        }
                    }
                    Output::Records(op) => {
                        live.records.try_update(|records| op.apply(records));
                    }
                    Output::Syncing => {
                        live.synced.try_set(false);
                        live.table_error.try_set(None);
                    }
                    Output::Synced => {
                        live.synced.try_set(true);
                        live.notice.try_set(None);
                    }
                    Output::TableError(error) => {
                        self.session_lost(&error);
                        live.table_error.try_set(Some(error));
                        live.synced.try_set(true);
                    }
                    Output::Reply { req, result } => {
                        if let Err(error) = &result {
                            self.session_lost(error);
                        }
                        if let Some(reply) = self.pending.remove(&req) {
                            let _ = reply.send(result);
                        }
                    }
                    Output::Notice(error) => {
                        live.notice.try_set(Some(error));
                    }
                }
            }
            true
        }

        /// An answer that says the session is gone sends the app to sign-in.
        fn session_lost(&self, error: &ErrorBody) {
            if let Some(auth) = self.live.auth {
                auth.lost(error);
            }
        }

        /// The socket closed: fail what waits for an answer, show the state.
        fn down(&mut self) {
            self.tracker.on_close();
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(ErrorBody {
                    code: "disconnected".into(),
                    message: "The connection dropped before the server answered; \
                              check the record before trying again."
                        .into(),
                }));
            }
            let was = self.live.status.try_get_untracked();
            if was == Some(Status::Live) {
                self.live.status.try_set(Status::Reconnecting);
            }
        }

        fn offline_command(&mut self, command: Command) {
            match command {
                Command::Watch(table) => {
                    let mut out = Vec::new();
                    self.tracker.watch(table, false, &mut out);
                    for output in out {
                        if let Output::Records(op) = output {
                            self.live.records.try_update(|records| op.apply(records));
                        }
                    }
                }
                Command::Write { reply, .. } => {
                    let _ = reply.send(Err(offline()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(value: Value) -> ServerMessage {
        serde_json::from_value(value).expect("a server message")
    }

    fn change(kind: &str, id: &str, seq: u64, version: u64, value: Option<Value>) -> Value {
        let mut event = json!({"seq": seq, "type": kind, "table": "t", "id": id,
            "version": version, "ts": "2026-01-01T00:00:00.000Z", "origin": "rest"});
        if let Some(value) = value {
            event["value"] = value;
        }
        event
    }

    fn sent(out: &[Output]) -> Vec<ClientMessage> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn apply(out: Vec<Output>, records: &mut BTreeMap<String, Record>) {
        for o in out {
            if let Output::Records(op) = o {
                op.apply(records);
            }
        }
    }

    #[test]
    fn subscribes_loads_state_then_applies_live_changes() {
        let mut tracker = Tracker::new(Some("t".into()));
        let mut records = BTreeMap::new();
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        assert_eq!(
            sent(&out),
            vec![ClientMessage::Subscribe {
                req: Some("1".into()),
                filter: "t/+".into(),
                since: None
            }]
        );
        let mut out = Vec::new();
        // An event before the ack belongs to no subscription of ours.
        tracker.on_message(msg(change("put", "stale", 1, 1, Some(json!({})))), &mut out);
        tracker.on_message(msg(json!({"type": "ack", "req": "1"})), &mut out);
        tracker.on_message(
            msg(change("put", "a", 3, 2, Some(json!({"n": 1})))),
            &mut out,
        );
        tracker.on_message(
            msg(change("put", "b", 4, 1, Some(json!({"n": 2})))),
            &mut out,
        );
        assert!(out.iter().all(|o| !matches!(o, Output::Records(_))));
        tracker.on_message(msg(json!({"type": "sync", "req": "1", "seq": 9})), &mut out);
        assert!(out.contains(&Output::Synced));
        apply(out, &mut records);
        assert_eq!(records.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(!records["a"].fresh);
        assert_eq!(tracker.resume_point(), Some(9));

        let mut out = Vec::new();
        tracker.on_message(
            msg(change("patch", "a", 10, 3, Some(json!({"n": 5})))),
            &mut out,
        );
        tracker.on_message(msg(change("delete", "b", 11, 2, None)), &mut out);
        apply(out, &mut records);
        assert_eq!(records["a"].value, json!({"n": 5}));
        assert_eq!(records["a"].version, Some(3));
        assert!(records["a"].fresh);
        assert!(!records.contains_key("b"));
        assert_eq!(tracker.resume_point(), Some(11));
    }

    #[test]
    fn resumes_after_a_drop_and_starts_over_on_a_gap() {
        let mut tracker = Tracker::new(Some("t".into()));
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        tracker.on_message(msg(json!({"type": "ack", "req": "1"})), &mut out);
        tracker.on_message(msg(json!({"type": "sync", "req": "1", "seq": 5})), &mut out);
        tracker.on_message(msg(change("put", "a", 7, 1, Some(json!({})))), &mut out);
        tracker.on_close();

        let mut out = Vec::new();
        tracker.on_open(&mut out);
        assert_eq!(
            sent(&out),
            vec![ClientMessage::Subscribe {
                req: Some("2".into()),
                filter: "t/+".into(),
                since: Some(7)
            }]
        );
        let mut out = Vec::new();
        tracker.on_message(
            msg(json!({"type": "error", "req": "2",
                "error": {"code": "resume_gap", "message": "too old"}})),
            &mut out,
        );
        assert_eq!(
            sent(&out),
            vec![ClientMessage::Subscribe {
                req: Some("3".into()),
                filter: "t/+".into(),
                since: None
            }]
        );
        assert!(!out.iter().any(|o| matches!(o, Output::TableError(_))));

        // A replay (not fresh) applies changes as they come.
        let mut tracker = Tracker::new(Some("t".into()));
        tracker.resume = Some(7);
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        tracker.on_message(msg(json!({"type": "ack", "req": "1"})), &mut out);
        tracker.on_message(
            msg(change("put", "a", 8, 2, Some(json!({"x": 1})))),
            &mut out,
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Records(RecordOp::Upsert(id, _)) if id == "a"))
        );
        assert_eq!(tracker.resume_point(), Some(8));
    }

    #[test]
    fn a_drop_before_sync_means_a_fresh_start() {
        let mut tracker = Tracker::new(Some("t".into()));
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        tracker.on_message(msg(json!({"type": "ack", "req": "1"})), &mut out);
        tracker.on_close();
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        assert!(matches!(
            &sent(&out)[..],
            [ClientMessage::Subscribe { since: None, .. }]
        ));
    }

    #[test]
    fn write_replies_and_notices_are_routed() {
        let mut tracker = Tracker::new(Some("t".into()));
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        let req = tracker.next_req();
        let mut out = Vec::new();
        tracker.on_message(
            msg(json!({"type": "ack", "req": req, "seq": 4, "id": "x", "version": 2})),
            &mut out,
        );
        tracker.on_message(
            msg(json!({"type": "error", "req": "77",
                "error": {"code": "version_mismatch", "message": "no"}})),
            &mut out,
        );
        tracker.on_message(
            msg(json!({"type": "error", "error": {"code": "lagged", "message": "slow"}})),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Output::Reply {
                    req: req.clone(),
                    result: Ok(Acked {
                        id: Some("x".into()),
                        version: Some(2),
                        seq: Some(4)
                    })
                },
                Output::Reply {
                    req: "77".into(),
                    result: Err(ErrorBody {
                        code: "version_mismatch".into(),
                        message: "no".into()
                    })
                },
                Output::Notice(ErrorBody {
                    code: "lagged".into(),
                    message: "slow".into()
                }),
            ]
        );
    }

    #[test]
    fn switching_tables_unsubscribes_and_ignores_the_old_table() {
        let mut tracker = Tracker::new(Some("t".into()));
        let mut out = Vec::new();
        tracker.on_open(&mut out);
        tracker.on_message(msg(json!({"type": "ack", "req": "1"})), &mut out);
        tracker.on_message(msg(json!({"type": "sync", "req": "1", "seq": 1})), &mut out);
        let mut out = Vec::new();
        tracker.watch(Some("u".into()), true, &mut out);
        assert_eq!(
            sent(&out),
            vec![
                ClientMessage::Unsubscribe {
                    req: Some("2".into()),
                    filter: "t/+".into()
                },
                ClientMessage::Subscribe {
                    req: Some("3".into()),
                    filter: "u/+".into(),
                    since: None
                },
            ]
        );
        assert!(out.contains(&Output::Records(RecordOp::Clear)));
        let mut out = Vec::new();
        tracker.on_message(msg(json!({"type": "ack", "req": "2"})), &mut out);
        tracker.on_message(msg(json!({"type": "ack", "req": "3"})), &mut out);
        tracker.on_message(msg(change("put", "a", 2, 1, Some(json!({})))), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn editor_text_must_be_a_json_object() {
        assert_eq!(parse_record(r#"{"a": 1}"#), Ok(json!({"a": 1})));
        assert!(
            parse_record("{nope")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse_record("[1]").unwrap_err().contains("object"));
    }
}
