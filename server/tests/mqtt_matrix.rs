//! The cross-protocol matrix: every publisher (MQTT 3.1.1, MQTT 5,
//! MQTT over WebSocket, REST, WebSocket) × every subscriber (MQTT 3.1.1,
//! MQTT 5, MQTT over WebSocket, SSE, WebSocket), for a stored write and a
//! transient message — each cell its own test.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{SseClient, TestServer, WsClient, client};
use futures_util::{SinkExt, StreamExt};
use marquee::mqtt::{
    Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    Subscribe, Subscription, decode_as_client, encode,
};
use marquee::store::TableDecl;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(5);
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

/// An MQTT client over TCP or WebSocket, on our codec.
enum MqttLink {
    Tcp(TcpStream),
    Ws(Box<common::WsStream>),
}

struct Mqtt {
    link: MqttLink,
    version: ProtocolVersion,
    buf: BytesMut,
}

impl Mqtt {
    async fn connect(server: &TestServer, side: Side, id: &str) -> Self {
        let addr = server.server.as_ref().unwrap().mqtt_addr();
        let (link, version) = match side {
            Side::Mqtt311 => (
                MqttLink::Tcp(TcpStream::connect(addr).await.unwrap()),
                ProtocolVersion::V311,
            ),
            Side::Mqtt5 => (
                MqttLink::Tcp(TcpStream::connect(addr).await.unwrap()),
                ProtocolVersion::V5,
            ),
            _ => {
                let mut request = server.ws_url("/mqtt").into_client_request().unwrap();
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
                let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                (MqttLink::Ws(Box::new(ws)), ProtocolVersion::V311)
            }
        };
        let mut mqtt = Self {
            link,
            version,
            buf: BytesMut::new(),
        };
        mqtt.send(&Packet::Connect(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 30,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }))
        .await;
        assert!(matches!(mqtt.recv().await, Some(Packet::ConnAck(_))));
        mqtt
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).unwrap();
        match &mut self.link {
            MqttLink::Tcp(s) => s.write_all(&out).await.unwrap(),
            MqttLink::Ws(ws) => ws.send(Message::Binary(out.freeze())).await.unwrap(),
        }
    }

    async fn recv(&mut self) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(p) = decode_as_client(&mut self.buf, self.version, 1 << 24).unwrap() {
                return Some(p);
            }
            match &mut self.link {
                MqttLink::Tcp(s) => {
                    match tokio::time::timeout_at(deadline, s.read_buf(&mut self.buf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return None,
                    }
                }
                MqttLink::Ws(ws) => match tokio::time::timeout_at(deadline, ws.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) => self.buf.extend_from_slice(&b),
                    _ => return None,
                },
            }
        }
    }
}

enum Subscriber {
    Mqtt(Mqtt),
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
            let mut mqtt = Mqtt::connect(server, side, "subscriber").await;
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
            let mut mqtt = Mqtt::connect(server, side, "publisher").await;
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
            (event.event, json["value"].clone())
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
