//! How MQTT topics map onto the table store, and changes back onto MQTT
//! messages. `{table}/{id}` of a declared table is that record, and its
//! payload is the record's JSON; every other topic is kept whole as a record
//! of the `mqtt` table, its payload as text (or base64 when it is not UTF-8),
//! so any MQTT client's retained messages are stored and come back byte for
//! byte.

use std::borrow::Cow;

use app::event::{ChangeEvent, ChangeType, MqttMeta};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::store::{MQTT_TABLE, Store, validate_id};
use crate::topic::TopicFilter;

/// Where an MQTT topic lives in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A record of a declared table.
    Record { table: &'a str, id: &'a str },
    /// Any other topic: a record of the `mqtt` table whose id is the topic.
    Topic(&'a str),
}

impl<'a> Target<'a> {
    pub fn of(store: &Store, topic: &'a str) -> Self {
        if let Some((table, id)) = topic.split_once('/')
            && table != MQTT_TABLE
            && validate_id(id).is_ok()
            && store.table_info(table).is_some()
        {
            return Target::Record { table, id };
        }
        Target::Topic(topic)
    }

    /// The table and record id.
    pub fn key(self) -> (&'a str, &'a str) {
        match self {
            Target::Record { table, id } => (table, id),
            Target::Topic(topic) => (MQTT_TABLE, topic),
        }
    }

    /// The stored value for `payload`; records must be JSON objects.
    pub fn value(self, payload: &[u8]) -> Result<Value, &'static str> {
        match self {
            Target::Record { .. } => match serde_json::from_slice::<Value>(payload) {
                Ok(value) if value.is_object() => Ok(value),
                _ => Err("a retained message on a record topic must be a JSON object"),
            },
            Target::Topic(_) => Ok(raw_value(payload)),
        }
    }
}

/// A raw payload as a record: `{"payload": text}` or `{"payload_base64": …}`.
pub fn raw_value(payload: &[u8]) -> Value {
    let mut object = Map::new();
    match std::str::from_utf8(payload) {
        Ok(text) => object.insert("payload".into(), Value::String(text.to_owned())),
        Err(_) => object.insert(
            "payload_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
        ),
    };
    Value::Object(object)
}

/// Where a retained message on a plain topic keeps what it was published
/// with besides its payload.
const PUBLISHED_WITH: &str = "mqtt";

/// A retained message on a plain topic as a record: its payload, and under
/// `"mqtt"` the QoS and MQTT 5 properties it was published with, so a later
/// subscriber gets it as it was sent [MQTT-3.3.1-5] — QoS, user properties
/// in their order [MQTT-3.3.2-18], content type, response topic, correlation
/// data, and its expiry.
pub fn retained_value(payload: &[u8], meta: &MqttMeta) -> Value {
    let mut value = raw_value(payload);
    let mut with = Map::new();
    with.insert("qos".into(), Value::from(meta.qos));
    if !meta.user_properties.is_empty() {
        let pairs = meta
            .user_properties
            .iter()
            .map(|(k, v)| Value::Array(vec![Value::from(k.as_str()), Value::from(v.as_str())]))
            .collect();
        with.insert("user_properties".into(), Value::Array(pairs));
    }
    if meta.payload_utf8 {
        with.insert("payload_utf8".into(), Value::Bool(true));
    }
    if let Some(content_type) = &meta.content_type {
        with.insert("content_type".into(), Value::from(content_type.as_str()));
    }
    if let Some(topic) = &meta.response_topic {
        with.insert("response_topic".into(), Value::from(topic.as_str()));
    }
    if let Some(data) = &meta.correlation_data {
        with.insert(
            "correlation_data_base64".into(),
            Value::from(base64::engine::general_purpose::STANDARD.encode(data)),
        );
    }
    if let Some(at) = meta.expires_at_ms {
        with.insert("expires_at_ms".into(), Value::from(at));
    }
    if let Value::Object(object) = &mut value {
        object.insert(PUBLISHED_WITH.into(), Value::Object(with));
    }
    value
}

/// What a stored plain-topic message was published with (see
/// [`retained_value`]); `None` for records and for messages stored without it.
pub fn published_with(event: &ChangeEvent) -> Option<MqttMeta> {
    if event.table != MQTT_TABLE {
        return None;
    }
    let with = event.value.as_ref()?.get(PUBLISHED_WITH)?.as_object()?;
    let text = |key: &str| with.get(key).and_then(Value::as_str).map(str::to_owned);
    let user_properties = with
        .get("user_properties")
        .and_then(Value::as_array)
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), Value::String(v)]) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(MqttMeta {
        qos: with
            .get("qos")
            .and_then(Value::as_u64)
            .and_then(|q| u8::try_from(q).ok())
            .filter(|q| *q <= 2)
            .unwrap_or(2),
        client_id: String::new(),
        retain: true,
        payload_utf8: with.get("payload_utf8").and_then(Value::as_bool) == Some(true),
        content_type: text("content_type"),
        response_topic: text("response_topic"),
        correlation_data: text("correlation_data_base64")
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok()),
        user_properties,
        expires_at_ms: with.get("expires_at_ms").and_then(Value::as_u64),
    })
}

/// The MQTT topic a change is published on.
pub fn topic_of(event: &ChangeEvent) -> Cow<'_, str> {
    if event.table == MQTT_TABLE {
        Cow::Borrowed(&event.id)
    } else {
        Cow::Owned(event.topic())
    }
}

/// The MQTT payload of a change: the record's JSON (empty for a delete), or
/// for the `mqtt` table the bytes that were published.
pub fn payload_of(event: &ChangeEvent) -> Bytes {
    if event.kind == ChangeType::Delete {
        return Bytes::new();
    }
    let Some(value) = &event.value else {
        return Bytes::new();
    };
    if event.table == MQTT_TABLE {
        if let Some(Value::String(text)) = value.get("payload") {
            return Bytes::from(text.clone().into_bytes());
        }
        if let Some(Value::String(encoded)) = value.get("payload_base64")
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded)
        {
            return Bytes::from(bytes);
        }
    }
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Which of an MQTT filter's two bus filters a backfill came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// `{filter}` itself: carries records of declared tables.
    Records,
    /// `mqtt/{filter}`: carries the `mqtt` table's topics.
    Topics,
}

/// The bus filters that carry every change an MQTT filter can match.
pub fn bus_filters(filter: &TopicFilter) -> [(TopicFilter, Carrier); 2] {
    let topics = TopicFilter::parse(&format!("{MQTT_TABLE}/{}", filter.as_str()))
        .unwrap_or_else(|_| filter.clone());
    [
        (filter.clone(), Carrier::Records),
        (topics, Carrier::Topics),
    ]
}

/// Whether `event` belongs to the carrier it was read through: the two bus
/// filters of one MQTT filter can both match a change, which must still be
/// sent once.
pub fn carried_by(event: &ChangeEvent, carrier: Carrier) -> bool {
    (event.table == MQTT_TABLE) == (carrier == Carrier::Topics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use app::event::Origin;

    fn event(table: &str, id: &str, value: Value) -> ChangeEvent {
        ChangeEvent {
            seq: Some(1),
            kind: ChangeType::Put,
            table: table.into(),
            id: id.into(),
            version: Some(1),
            ts: String::new(),
            origin: Origin::Mqtt,
            value: Some(value),
            mqtt: None,
            created: false,
            carried_at: None,
        }
    }

    #[test]
    fn raw_payloads_round_trip_byte_for_byte() {
        for payload in [&b"hello"[..], b"", &[0xff, 0x00, 0x80], b"{\"a\": 1 }"] {
            let e = event(MQTT_TABLE, "a/b/c", raw_value(payload));
            assert_eq!(payload_of(&e).as_ref(), payload);
            assert_eq!(topic_of(&e), "a/b/c");
        }
    }

    #[test]
    fn records_publish_their_json_on_their_own_topic() {
        let e = event("signs", "lobby", serde_json::json!({"name": "Lobby"}));
        assert_eq!(topic_of(&e), "signs/lobby");
        assert_eq!(payload_of(&e).as_ref(), br#"{"name":"Lobby"}"#);
    }

    #[test]
    fn a_retained_plain_message_keeps_what_it_was_published_with() {
        let meta = MqttMeta {
            qos: 1,
            client_id: "pub".into(),
            retain: true,
            payload_utf8: true,
            content_type: Some("text/plain".into()),
            response_topic: Some("replies".into()),
            correlation_data: Some(vec![0, 255]),
            user_properties: vec![("c".into(), "3".into()), ("a".into(), "2".into())],
            expires_at_ms: Some(42),
        };
        let e = event(MQTT_TABLE, "a/b", retained_value(b"hi", &meta));
        assert_eq!(payload_of(&e).as_ref(), b"hi");
        let back = published_with(&e).unwrap();
        // The client id is not kept: no-local does not apply to retained messages.
        assert_eq!(
            back,
            MqttMeta {
                client_id: String::new(),
                ..meta
            }
        );
        let plain = event(MQTT_TABLE, "a/b", raw_value(b"hi"));
        assert_eq!(published_with(&plain), None);
    }

    #[test]
    fn each_change_is_carried_once() {
        let filter = TopicFilter::parse("#").unwrap();
        let [(records, _), (topics, _)] = bus_filters(&filter);
        assert_eq!(records.as_str(), "#");
        assert_eq!(topics.as_str(), "mqtt/#");
        let raw = event(MQTT_TABLE, "x/y", raw_value(b"1"));
        assert!(carried_by(&raw, Carrier::Topics));
        assert!(!carried_by(&raw, Carrier::Records));
    }
}
