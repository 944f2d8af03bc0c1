//! The cross-protocol matrix: every publisher (MQTT 3.1.1, MQTT 5,
//! MQTT over WebSocket, REST, WebSocket) × every subscriber (MQTT 3.1.1,
//! MQTT 5, MQTT over WebSocket, SSE, WebSocket), for a stored write and a
//! transient message — each cell its own test.

mod common;

use bytes::Bytes;
use common::mqtt::{Raw, WAIT, connect_packet};
use common::{SseClient, TestServer, WsClient, client};
use marquee::mqtt::{
    Packet, ProtocolVersion, Publish, PublishProperties, QoS, Subscribe, Subscription,
};
use marquee::store::TableDecl;
use serde_json::{Value, json};

const TABLE: &str = "sensors";
const ID: &str = "cell";

#[derive(Clone, Copy, Debug)]
enum Side {
    Mqtt311,
    Mqtt5,
    MqttWs,
    Rest,
    Ws,
    Sse,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Stored,
    Transient,
}

/// An MQTT client of the kind `side` names.
async fn mqtt_client(server: &TestServer, side: Side, id: &str) -> Raw {
    let addr = server.mqtt_addr();
    let (raw, ack) = match side {
        Side::Mqtt311 => Raw::connect(addr, connect_packet(ProtocolVersion::V311, id, true)).await,
        Side::Mqtt5 => Raw::connect(addr, connect_packet(ProtocolVersion::V5, id, true)).await,
        _ => {
            let packet = connect_packet(ProtocolVersion::V311, id, true);
            Raw::connect_ws(&server.ws_url("/mqtt"), packet).await
        }
    };
    assert!(!ack.reason_code.is_error());
    raw
}

enum Subscriber {
    Mqtt(Raw),
    Sse(SseClient),
    Ws(Box<WsClient>),
}

async fn subscribe(server: &TestServer, side: Side) -> Subscriber {
    match side {
        Side::Sse => {
            let mut sse = SseClient::connect(&format!("{}/api/{TABLE}/", server.url), None).await;
            sse.until_sync().await;
            Subscriber::Sse(sse)
        }
        Side::Ws => {
            let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
            ws.send(json!({"type": "subscribe", "req": "s", "filter": format!("{TABLE}/+")}))
                .await;
            ws.until_sync().await;
            Subscriber::Ws(Box::new(ws))
        }
        _ => {
            let mut mqtt = mqtt_client(server, side, "subscriber").await;
            mqtt.send(&Packet::Subscribe(Subscribe {
                packet_id: 1.try_into().unwrap(),
                subscriptions: vec![Subscription::new(format!("{TABLE}/+"), QoS::AtMostOnce)],
                properties: Default::default(),
            }))
            .await;
            assert!(matches!(mqtt.recv().await, Some(Packet::SubAck(_))));
            Subscriber::Mqtt(mqtt)
        }
    }
}

async fn publish(server: &TestServer, side: Side, kind: Kind, value: &Value) {
    let stored = kind == Kind::Stored;
    match side {
        Side::Rest => {
            let http = client();
            let response = if stored {
                http.put(format!("{}/api/{TABLE}/{ID}", server.url))
                    .json(value)
                    .send()
                    .await
            } else {
                http.post(format!("{}/api/{TABLE}/{ID}/publish", server.url))
                    .json(value)
                    .send()
                    .await
            }
            .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
        Side::Ws => {
            let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
            let kind = if stored { "put" } else { "publish" };
            ws.send(json!({"type": kind, "req": "w", "table": TABLE, "id": ID, "value": value}))
                .await;
            let reply = ws.reply("w", &mut Vec::new()).await;
            assert_eq!(reply["type"], "ack", "{reply}");
        }
        _ => {
            let mut mqtt = mqtt_client(server, side, "publisher").await;
            mqtt.send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: stored,
                topic: format!("{TABLE}/{ID}"),
                packet_id: Some(1.try_into().unwrap()),
                payload: Bytes::from(serde_json::to_vec(value).unwrap()),
                properties: PublishProperties::default(),
            }))
            .await;
            match mqtt.recv().await {
                Some(Packet::PubAck(ack)) => assert!(!ack.reason_code.is_error()),
                other => panic!("no PUBACK: {other:?}"),
            }
        }
    }
}

/// What the subscriber received: (type or "mqtt", the JSON value).
async fn receive(subscriber: &mut Subscriber) -> (String, Value) {
    match subscriber {
        Subscriber::Mqtt(mqtt) => match mqtt.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic, format!("{TABLE}/{ID}"));
                ("mqtt".into(), serde_json::from_slice(&p.payload).unwrap())
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        },
        Subscriber::Sse(sse) => {
            let event = sse.next_within(WAIT).await.expect("SSE event");
            let json = event.json();
            (event.kind(), json["value"].clone())
        }
        Subscriber::Ws(ws) => {
            let message = ws.next_within(WAIT).await.expect("WS message");
            (
                message["type"].as_str().unwrap_or_default().to_owned(),
                message["value"].clone(),
            )
        }
    }
}

async fn cell(from: Side, to: Side, kind: Kind) {
    let server = TestServer::start_with(|config| {
        config.tables.push(TableDecl {
            name: TABLE.into(),
            schema: None,
        });
    })
    .await;
    let mut subscriber = subscribe(&server, to).await;
    let value = json!({"from": format!("{from:?}"), "kind": format!("{kind:?}")});
    publish(&server, from, kind, &value).await;
    let (event, got) = receive(&mut subscriber).await;
    assert_eq!(got, value, "{from:?} → {to:?} ({kind:?})");
    if !matches!(to, Side::Mqtt311 | Side::Mqtt5 | Side::MqttWs) {
        let expected = if kind == Kind::Stored {
            "put"
        } else {
            "publish"
        };
        assert_eq!(event, expected);
    }
    let (status, _) = common::get_json(&client(), &server.url, &format!("/api/{TABLE}/{ID}")).await;
    assert_eq!(
        status,
        if kind == Kind::Stored { 200 } else { 404 },
        "stored only when stored"
    );
    server.stop().await;
}

macro_rules! matrix {
    ($($name:ident: $from:ident -> $to:ident, $kind:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                cell(Side::$from, Side::$to, Kind::$kind).await;
            }
        )*
    };
}

matrix! {
    mqtt311_to_mqtt311_stored: Mqtt311 -> Mqtt311, Stored;
    mqtt311_to_mqtt5_stored: Mqtt311 -> Mqtt5, Stored;
    mqtt311_to_mqtt_ws_stored: Mqtt311 -> MqttWs, Stored;
    mqtt311_to_sse_stored: Mqtt311 -> Sse, Stored;
    mqtt311_to_ws_stored: Mqtt311 -> Ws, Stored;
    mqtt5_to_mqtt311_stored: Mqtt5 -> Mqtt311, Stored;
    mqtt5_to_mqtt5_stored: Mqtt5 -> Mqtt5, Stored;
    mqtt5_to_mqtt_ws_stored: Mqtt5 -> MqttWs, Stored;
    mqtt5_to_sse_stored: Mqtt5 -> Sse, Stored;
    mqtt5_to_ws_stored: Mqtt5 -> Ws, Stored;
    mqtt_ws_to_mqtt311_stored: MqttWs -> Mqtt311, Stored;
    mqtt_ws_to_mqtt5_stored: MqttWs -> Mqtt5, Stored;
    mqtt_ws_to_mqtt_ws_stored: MqttWs -> MqttWs, Stored;
    mqtt_ws_to_sse_stored: MqttWs -> Sse, Stored;
    mqtt_ws_to_ws_stored: MqttWs -> Ws, Stored;
    rest_to_mqtt311_stored: Rest -> Mqtt311, Stored;
    rest_to_mqtt5_stored: Rest -> Mqtt5, Stored;
    rest_to_mqtt_ws_stored: Rest -> MqttWs, Stored;
    rest_to_sse_stored: Rest -> Sse, Stored;
    rest_to_ws_stored: Rest -> Ws, Stored;
    ws_to_mqtt311_stored: Ws -> Mqtt311, Stored;
    ws_to_mqtt5_stored: Ws -> Mqtt5, Stored;
    ws_to_mqtt_ws_stored: Ws -> MqttWs, Stored;
    ws_to_sse_stored: Ws -> Sse, Stored;
    ws_to_ws_stored: Ws -> Ws, Stored;
    mqtt311_to_mqtt311_transient: Mqtt311 -> Mqtt311, Transient;
    mqtt311_to_mqtt5_transient: Mqtt311 -> Mqtt5, Transient;
    mqtt311_to_mqtt_ws_transient: Mqtt311 -> MqttWs, Transient;
    mqtt311_to_sse_transient: Mqtt311 -> Sse, Transient;
    mqtt311_to_ws_transient: Mqtt311 -> Ws, Transient;
    mqtt5_to_mqtt311_transient: Mqtt5 -> Mqtt311, Transient;
    mqtt5_to_mqtt5_transient: Mqtt5 -> Mqtt5, Transient;
    mqtt5_to_mqtt_ws_transient: Mqtt5 -> MqttWs, Transient;
    mqtt5_to_sse_transient: Mqtt5 -> Sse, Transient;
    mqtt5_to_ws_transient: Mqtt5 -> Ws, Transient;
    mqtt_ws_to_mqtt311_transient: MqttWs -> Mqtt311, Transient;
    mqtt_ws_to_mqtt5_transient: MqttWs -> Mqtt5, Transient;
    mqtt_ws_to_mqtt_ws_transient: MqttWs -> MqttWs, Transient;
    mqtt_ws_to_sse_transient: MqttWs -> Sse, Transient;
    mqtt_ws_to_ws_transient: MqttWs -> Ws, Transient;
    rest_to_mqtt311_transient: Rest -> Mqtt311, Transient;
    rest_to_mqtt5_transient: Rest -> Mqtt5, Transient;
    rest_to_mqtt_ws_transient: Rest -> MqttWs, Transient;
    rest_to_sse_transient: Rest -> Sse, Transient;
    rest_to_ws_transient: Rest -> Ws, Transient;
    ws_to_mqtt311_transient: Ws -> Mqtt311, Transient;
    ws_to_mqtt5_transient: Ws -> Mqtt5, Transient;
    ws_to_mqtt_ws_transient: Ws -> MqttWs, Transient;
    ws_to_sse_transient: Ws -> Sse, Transient;
    ws_to_ws_transient: Ws -> Ws, Transient;
}
