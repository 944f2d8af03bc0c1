//! The one change-event shape every protocol carries, and the messages of the
//! multiplexed WebSocket (`/api/ws`). Shared by the server and the browser so
//! both sides agree on the wire format by construction.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// Full replace or create.
    Put,
    /// JSON merge patch; the event's `value` is the record after the patch.
    Patch,
    Delete,
    /// A transient message: delivered, never stored, carries no `seq`.
    Publish,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Put => "put",
            ChangeType::Patch => "patch",
            ChangeType::Delete => "delete",
            ChangeType::Publish => "publish",
        }
    }
}

/// Which protocol a change came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Rest,
    Ws,
    Mqtt,
    System,
}

/// A committed change (or a transient publish) as every subscriber sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Global, gap-free sequence number of committed changes; `None` for `publish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(rename = "type")]
    pub kind: ChangeType,
    pub table: String,
    pub id: String,
    /// The record's version after this change (0 after a delete of a missing record never happens:
    /// deletes carry the version the record had when it was removed, plus one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// RFC 3339 UTC timestamp with milliseconds.
    pub ts: String,
    pub origin: Origin,
    /// The record after the change (`put`, `patch`), the message (`publish`), absent for `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// How an MQTT client published this, for MQTT subscribers; other
    /// protocols neither carry nor store it.
    #[serde(skip)]
    pub mqtt: Option<std::sync::Arc<MqttMeta>>,
    /// For the writer's answer: whether this `put` made a record that did not
    /// exist (versions continue across a delete, so `version == 1` cannot say).
    #[serde(skip)]
    pub created: bool,
}

impl ChangeEvent {
    /// The topic this change is routed on: `{table}/{id}`.
    pub fn topic(&self) -> String {
        format!("{}/{}", self.table, self.id)
    }
}

/// What an MQTT publish carried besides its payload: what MQTT subscribers
/// need for delivered QoS, no-local and the MQTT 5 properties passed through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MqttMeta {
    /// The QoS it was published with (0–2).
    pub qos: u8,
    /// The publishing client's id, for no-local subscriptions.
    pub client_id: String,
    pub retain: bool,
    pub payload_utf8: bool,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
    /// Unix time in milliseconds after which it must not be delivered (MQTT 5 message expiry).
    pub expires_at_ms: Option<u64>,
}

/// A stored record as REST lists return it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordItem {
    pub id: String,
    pub version: u64,
    pub seq: u64,
    pub ts: String,
    pub value: Value,
}

/// One page of a table listing: `GET /api/{table}/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordPage {
    pub items: Vec<RecordItem>,
    /// Pass as `?after=` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A declared table: `GET /api/_tables`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: String,
    pub builtin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableList {
    pub tables: Vec<TableInfo>,
}

/// The error body of every failed request, on every HTTP path and on WebSockets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// What a client sends on a WebSocket.
///
/// On `/api/ws` writes name `table` and `id`; on `/api/{table}/{id}` both are
/// implied by the path and may be left out. `req` is echoed in the reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Subscribe {
        #[serde(default)]
        req: Option<String>,
        filter: String,
        /// Resume: replay committed changes after this `seq` instead of sending current state.
        #[serde(default)]
        since: Option<u64>,
    },
    Unsubscribe {
        #[serde(default)]
        req: Option<String>,
        filter: String,
    },
    Put {
        #[serde(default)]
        req: Option<String>,
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        id: Option<String>,
        value: Value,
        #[serde(default)]
        if_match: Option<u64>,
    },
    Patch {
        #[serde(default)]
        req: Option<String>,
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        id: Option<String>,
        value: Value,
        #[serde(default)]
        if_match: Option<u64>,
    },
    Delete {
        #[serde(default)]
        req: Option<String>,
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        if_match: Option<u64>,
    },
    Publish {
        #[serde(default)]
        req: Option<String>,
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        id: Option<String>,
        value: Value,
    },
}

/// What the server sends on a WebSocket besides change events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerReply {
    /// A request succeeded. Writes carry the committed `seq`, `id` and `version`.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// The current state (or the replayed changes) of a subscription has been sent;
    /// live changes follow. `seq` is where a later resume should start from.
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<String>,
        seq: u64,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<String>,
        error: ErrorBody,
    },
}

/// Anything the server sends on a WebSocket: a reply or a change event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    Reply(ServerReply),
    Change(ChangeEvent),
}
