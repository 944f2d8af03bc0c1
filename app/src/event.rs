//! The one change-event shape every protocol carries, and the messages of the
//! multiplexed WebSocket (`/api/ws`). Shared by the server and the browser so
//! both sides agree on the wire format by construction.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
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
    /// Global sequence number of committed changes: unique and strictly
    /// increasing (gap-free on the embedded store only); `None` for `publish`.
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
    /// On a store shared by several nodes, where a transient publish sits in
    /// their one order: the revision that carried it to every node and its
    /// index among that revision's publishes, the same on each, so that the
    /// nodes can agree about it (which one hands it to a shared
    /// subscription). `None` for records (their `seq` does that) and on the
    /// embedded store.
    #[serde(skip)]
    pub carried_at: Option<(u64, u32)>,
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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
///
/// Read by its `type` (`ack`, `sync`, `error`, else a change). The derived
/// readers (untagged, internally tagged) buffer every message through serde's
/// `Content` and try each shape in turn; that generic code was about 30 KB of
/// the browser bundle on every live page.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerMessage {
    Reply(ServerReply),
    Change(ChangeEvent),
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match value.get("type").and_then(Value::as_str) {
            Some("ack" | "sync" | "error") => {
                ServerReply::from_value(value).map(ServerMessage::Reply)
            }
            _ => serde_json::from_value(value).map(ServerMessage::Change),
        }
        .map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ServerReply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ServerReply::from_value(Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl ServerReply {
    fn from_value(value: Value) -> Result<Self, serde_json::Error> {
        /// Every field a reply may carry; which are required depends on its type.
        #[derive(Deserialize)]
        struct Fields {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            req: Option<String>,
            #[serde(default)]
            seq: Option<u64>,
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            version: Option<u64>,
            #[serde(default)]
            error: Option<ErrorBody>,
        }
        let missing = |field: &str| serde_json::Error::custom(format!("missing field `{field}`"));
        let Fields {
            kind,
            req,
            seq,
            id,
            version,
            error,
        } = serde_json::from_value(value)?;
        match kind.as_str() {
            "ack" => Ok(ServerReply::Ack {
                req,
                seq,
                id,
                version,
            }),
            "sync" => Ok(ServerReply::Sync {
                req,
                seq: seq.ok_or_else(|| missing("seq"))?,
            }),
            "error" => Ok(ServerReply::Error {
                req,
                error: error.ok_or_else(|| missing("error"))?,
            }),
            other => Err(serde_json::Error::custom(format!(
                "unknown reply type `{other}`, expected `ack`, `sync` or `error`"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> Result<ServerMessage, serde_json::Error> {
        serde_json::from_str(&value.to_string())
    }

    #[test]
    fn every_server_message_reads_back_as_it_was_written() {
        let messages = [
            ServerMessage::Reply(ServerReply::Ack {
                req: Some("r1".into()),
                seq: Some(7),
                id: Some("a".into()),
                version: Some(2),
            }),
            ServerMessage::Reply(ServerReply::Ack {
                req: None,
                seq: None,
                id: None,
                version: None,
            }),
            ServerMessage::Reply(ServerReply::Sync {
                req: Some("s".into()),
                seq: 0,
            }),
            ServerMessage::Reply(ServerReply::Error {
                req: None,
                error: ErrorBody {
                    code: "forbidden".into(),
                    message: "no".into(),
                },
            }),
            ServerMessage::Change(ChangeEvent {
                seq: Some(3),
                kind: ChangeType::Patch,
                table: "signs".into(),
                id: "lobby".into(),
                version: Some(4),
                ts: "2026-12-06T07:00:00.000Z".into(),
                origin: Origin::Mqtt,
                value: Some(json!({"type": "ack"})),
                mqtt: None,
                created: false,
                carried_at: None,
            }),
        ];
        for message in messages {
            let text = serde_json::to_string(&message).expect("serialize");
            let back: ServerMessage =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, message, "{text}");
        }
    }

    #[test]
    fn a_reply_missing_what_its_type_needs_is_refused_by_name() {
        let error = read(json!({"type": "sync", "req": "a"})).unwrap_err();
        assert!(error.to_string().contains("missing field `seq`"), "{error}");
        let error = read(json!({"type": "error"})).unwrap_err();
        assert!(
            error.to_string().contains("missing field `error`"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_type_is_read_as_a_change_and_refused_as_one() {
        let error = read(json!({"type": "hello", "table": "t", "id": "a"})).unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `hello`"),
            "{error}"
        );
        assert!(read(json!(["not", "an", "object"])).is_err());
    }
}
