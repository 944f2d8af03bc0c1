//! What etcd holds for a record (`r/{table}/{id}`) and for a node's latest
//! transient publishes (`t/{node}`): JSON, so that `etcdctl get` shows it.
//!
//! A delete is a *put* of a tombstone (an envelope with no value), so the key
//! keeps the version a re-create continues from, and a re-create is a
//! compare-and-swap on the tombstone's mod revision like any update.

use std::sync::Arc;

use app::event::{ChangeEvent, ChangeType, MqttMeta, Origin};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A record's version as etcd stores it; `value: None` is a tombstone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub version: u64,
    pub ts: String,
    pub origin: Origin,
    pub kind: ChangeType,
    #[serde(default)]
    pub created: bool,
    /// The write's id (`node:counter`), also its idempotency key's stem: tells
    /// a node's own write from another's when reading etcd after a failure.
    pub wid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<WireMqtt>,
}

impl Envelope {
    /// The change this version made, at `seq` (its revision).
    pub fn event(&self, table: &str, id: &str, seq: u64) -> ChangeEvent {
        ChangeEvent {
            seq: Some(seq),
            kind: self.kind,
            table: table.to_owned(),
            id: id.to_owned(),
            version: Some(self.version),
            ts: self.ts.clone(),
            origin: self.origin,
            value: self.value.clone(),
            mqtt: self.mqtt.clone().map(|m| Arc::new(m.into())),
            created: self.created,
            carried_at: None,
        }
    }
}

/// One transient publish (`ChangeType::Publish`), as a node's `t/{node}` key
/// holds a batch of them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TransientEnvelope {
    pub table: String,
    pub id: String,
    pub ts: String,
    pub origin: Origin,
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<WireMqtt>,
}

impl TransientEnvelope {
    pub fn of(event: &ChangeEvent) -> Self {
        Self {
            table: event.table.clone(),
            id: event.id.clone(),
            ts: event.ts.clone(),
            origin: event.origin,
            value: event.value.clone(),
            mqtt: event.mqtt.as_deref().map(WireMqtt::from),
        }
    }

    pub fn into_event(self) -> ChangeEvent {
        ChangeEvent {
            seq: None,
            kind: ChangeType::Publish,
            table: self.table,
            id: self.id,
            version: None,
            ts: self.ts,
            origin: self.origin,
            value: self.value,
            mqtt: self.mqtt.map(|m| Arc::new(m.into())),
            created: false,
            carried_at: None,
        }
    }
}

/// [`MqttMeta`], serialisable, so MQTT subscribers on other nodes get the
/// publish's QoS, no-local client id and MQTT 5 properties too.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct WireMqtt {
    qos: u8,
    client_id: String,
    retain: bool,
    payload_utf8: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_data: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user_properties: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

impl From<&MqttMeta> for WireMqtt {
    fn from(m: &MqttMeta) -> Self {
        Self {
            qos: m.qos,
            client_id: m.client_id.clone(),
            retain: m.retain,
            payload_utf8: m.payload_utf8,
            content_type: m.content_type.clone(),
            response_topic: m.response_topic.clone(),
            correlation_data: m.correlation_data.clone(),
            user_properties: m.user_properties.clone(),
            expires_at_ms: m.expires_at_ms,
        }
    }
}

impl From<WireMqtt> for MqttMeta {
    fn from(m: WireMqtt) -> Self {
        Self {
            qos: m.qos,
            client_id: m.client_id,
            retain: m.retain,
            payload_utf8: m.payload_utf8,
            content_type: m.content_type,
            response_topic: m.response_topic,
            correlation_data: m.correlation_data,
            user_properties: m.user_properties,
            expires_at_ms: m.expires_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transient_publish_keeps_its_mqtt_properties_across_nodes() {
        let meta = MqttMeta {
            qos: 1,
            client_id: "sensor-7".into(),
            retain: false,
            payload_utf8: true,
            content_type: Some("application/json".into()),
            response_topic: Some("replies/7".into()),
            correlation_data: Some(vec![0, 255]),
            user_properties: vec![("room".into(), "lobby".into())],
            expires_at_ms: Some(1_900_000_000_000),
        };
        let event = ChangeEvent {
            seq: None,
            kind: ChangeType::Publish,
            table: "Sensors".into(),
            id: "t1".into(),
            version: None,
            ts: "2026-12-06T10:00:00Z".into(),
            origin: Origin::Mqtt,
            value: Some(json!({"temp": 21})),
            mqtt: Some(Arc::new(meta.clone())),
            created: false,
            carried_at: None,
        };
        let bytes = serde_json::to_vec(&vec![TransientEnvelope::of(&event)]).unwrap();
        let back: Vec<TransientEnvelope> = serde_json::from_slice(&bytes).unwrap();
        let [one] = <[TransientEnvelope; 1]>::try_from(back).unwrap();
        let arrived = one.into_event();
        assert_eq!(arrived, event);
        assert_eq!(arrived.mqtt.as_deref(), Some(&meta));
    }
}
