//! The built-in MQTT broker, driven by real clients: rumqttc (3.1.1 and 5),
//! a raw client on our own codec where a test needs exact packets, and the
//! other protocols (REST, SSE, WebSocket) on the same records. Tests named
//! [MQTT-x.y.z-n] check that normative statement of the specification.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::malformed;
use common::mqtt::{Raw, WAIT, connect_packet, publish};
use common::{SseClient, TestServer, WsClient, client, get_json, put};
use marquee::mqtt::{
    Ack, Packet, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, Subscribe,
    Subscription, Will, WillProperties, encode,
};
use rumqttc::{AsyncClient, Event, MqttOptions, SubscribeReasonCode};
use serde_json::json;
use tokio::sync::mpsc;

// ------------------------------------------------------------ rumqttc clients

/// A rumqttc 3.1.1 client whose event loop runs in the background.
struct V4 {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<rumqttc::Packet>,
}

impl V4 {
    async fn connect(addr: SocketAddr, id: &str, tweak: impl FnOnce(&mut MqttOptions)) -> Self {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        tweak(&mut options);
        let (client, mut events) = AsyncClient::new(options, 64);
        let (tx, mut incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(packet) = event
                    && tx.send(packet).is_err()
                {
                    break;
                }
            }
        });
        match tokio::time::timeout(WAIT, incoming.recv()).await {
            Ok(Some(rumqttc::Packet::ConnAck(_))) => {}
            other => panic!("no CONNACK for {id}: {other:?}"),
        }
        Self { client, incoming }
    }

    async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        loop {
            match tokio::time::timeout(WAIT, self.incoming.recv()).await {
                Ok(Some(rumqttc::Packet::SubAck(ack))) => return ack.return_codes,
                Ok(Some(_)) => {}
                other => panic!("no SUBACK: {other:?}"),
            }
        }
    }

    async fn publish(&self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
    }

    async fn next_publish(&mut self, within: Duration) -> Option<rumqttc::Publish> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(rumqttc::Packet::Publish(p))) => return Some(p),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Waits for the acknowledgement of our last QoS 1/2 publish.
    async fn acked(&mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.incoming.recv()).await {
                Ok(Some(rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_))) => return,
                Ok(Some(_)) => {}
                other => panic!("publish not acknowledged: {other:?}"),
            }
        }
    }
}

fn mqtt_addr(server: &TestServer) -> SocketAddr {
    server.mqtt_addr()
}

/// A server with a plain table (no model) for records of any shape.
async fn start() -> TestServer {
    TestServer::start_with(|config| {
        config.tables.push(marquee::store::TableDecl {
            name: "sensors".into(),
            schema: None,
        })
    })
    .await
}

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

// ------------------------------------------------------------ cross-protocol

#[tokio::test]
async fn retained_mqtt_publish_is_a_durable_record_seen_on_rest_sse_and_ws() {
    let server = start().await;
    let http = client();
    let mut sse = SseClient::connect(&format!("{}/api/sensors/", server.url), None).await;
    sse.until_sync().await;
    let mut ws = WsClient::connect(&server.ws_url("/api/sensors/")).await;
    ws.until_sync().await;

    let mut device = V4::connect(mqtt_addr(&server), "device-1", |_| {}).await;
    device
        .publish(
            "sensors/lobby",
            rumqttc::QoS::AtLeastOnce,
            true,
            br#"{"name":"Lobby"}"#,
        )
        .await;
    // PUBACK only once durable: the record is readable the moment it arrives.
    device.acked().await;
    let (status, body) = get_json(&http, &server.url, "/api/sensors/lobby").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "Lobby");

    let event = sse.next_within(WAIT).await.expect("SSE event").json();
    assert_eq!(event["type"], "put");
    assert_eq!(event["origin"], "mqtt");
    assert_eq!(event["value"]["name"], "Lobby");
    let event = ws.next_within(WAIT).await.expect("WS event");
    assert_eq!(event["id"], "lobby");
    assert_eq!(event["origin"], "mqtt");

    // An empty retained payload deletes the record.
    device
        .publish("sensors/lobby", rumqttc::QoS::AtLeastOnce, true, b"")
        .await;
    device.acked().await;
    let (status, _) = get_json(&http, &server.url, "/api/sensors/lobby").await;
    assert_eq!(status, 404);
    let event = sse.next_within(WAIT).await.expect("SSE delete").json();
    assert_eq!(event["type"], "delete");
    server.stop().await;
}

#[tokio::test]
async fn rest_and_ws_writes_reach_mqtt_311_and_5_subscribers_as_the_records_json() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let http = client();
    let mut v4 = V4::connect(addr, "sub-v4", |_| {}).await;
    assert_eq!(
        v4.subscribe("sensors/+", rumqttc::QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)]
    );
    let (mut v5, _) = Raw::connect(addr, connect_packet(V5, "sub-v5", true)).await;
    assert_eq!(
        v5.subscribe(1, vec![Subscription::new("sensors/#", QoS::ExactlyOnce)])
            .await,
        vec![ReasonCode::GrantedQoS2]
    );

    put(
        &http,
        &server.url,
        "/api/sensors/hall",
        &json!({"name": "Hall"}),
    )
    .await;
    let got = v4.next_publish(WAIT).await.expect("3.1.1 delivery");
    assert_eq!(got.topic, "sensors/hall");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got.payload).unwrap(),
        json!({"name": "Hall"})
    );
    assert!(
        !got.retain,
        "live deliveries are not retained [MQTT-3.3.1-9]"
    );

    match v5.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "sensors/hall");
            // A REST write has no publish QoS: it goes at the granted QoS.
            assert_eq!(p.qos, QoS::ExactlyOnce);
            let user = &p.properties.user_properties;
            assert!(user.contains(&("type".into(), "put".into())), "{user:?}");
            assert!(user.contains(&("origin".into(), "rest".into())), "{user:?}");
            assert!(user.iter().any(|(k, _)| k == "seq"));
            v5.send(&Packet::PubRec(Ack::new(p.packet_id.unwrap())))
                .await;
            match v5.recv().await {
                Some(Packet::PubRel(rel)) => {
                    v5.send(&Packet::PubComp(Ack::new(rel.packet_id))).await
                }
                other => panic!("expected PUBREL, got {other:?}"),
            }
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }

    // A WebSocket write, and a transient publish over REST.
    let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
    ws.send(json!({"type": "put", "req": "1", "table": "sensors", "id": "yard", "value": {"name": "Yard"}}))
        .await;
    let got = v4.next_publish(WAIT).await.expect("WS write on MQTT");
    assert_eq!(got.topic, "sensors/yard");
    let response = http
        .post(format!("{}/api/sensors/yard/publish", server.url))
        .json(&json!({"flash": true}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let got = v4.next_publish(WAIT).await.expect("transient on MQTT");
    assert_eq!(got.topic, "sensors/yard");
    assert_eq!(&got.payload[..], br#"{"flash":true}"#);
    server.stop().await;
}

#[tokio::test]
async fn transient_mqtt_publishes_reach_sse_and_are_not_stored() {
    let server = start().await;
    let http = client();
    let mut sse = SseClient::connect(&format!("{}/api/sensors/door", server.url), None).await;
    sse.until_sync().await;
    let device = V4::connect(mqtt_addr(&server), "pub", |_| {}).await;
    device
        .publish(
            "sensors/door",
            rumqttc::QoS::AtMostOnce,
            false,
            br#"{"ring":1}"#,
        )
        .await;
    let event = sse
        .next_within(WAIT)
        .await
        .expect("transient on SSE")
        .json();
    assert_eq!(event["type"], "publish");
    assert_eq!(event["value"]["ring"], 1);
    let (status, _) = get_json(&http, &server.url, "/api/sensors/door").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn topics_outside_tables_keep_their_retained_bytes_and_are_readable_over_rest() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let mut publisher = V4::connect(addr, "sensor", |_| {}).await;
    let binary = [0u8, 159, 146, 150, 255];
    publisher
        .publish(
            "home/kitchen/temp",
            rumqttc::QoS::AtLeastOnce,
            true,
            b"21.5",
        )
        .await;
    publisher.acked().await;
    publisher
        .publish("home/blob", rumqttc::QoS::AtLeastOnce, true, &binary)
        .await;
    publisher.acked().await;

    let mut late = V4::connect(addr, "late", |_| {}).await;
    late.subscribe("home/#", rumqttc::QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = late.next_publish(WAIT).await.expect("retained message");
        assert!(p.retain, "retained on subscribe [MQTT-3.3.1-8]");
        got.push((p.topic, p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("home/blob".to_string(), binary.to_vec()),
            ("home/kitchen/temp".to_string(), b"21.5".to_vec())
        ]
    );
    let (status, body) = get_json(&client(), &server.url, "/api/mqtt/home%2Fkitchen%2Ftemp").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"], "21.5");
    server.stop().await;
}

#[tokio::test]
async fn a_new_wildcard_subscriber_gets_every_retained_record_not_a_capped_few() {
    let server = start().await;
    let http = client();
    const N: usize = 600;
    for i in 0..N {
        put(
            &http,
            &server.url,
            &format!("/api/sensors/m{i:04}"),
            &json!({"text": i}),
        )
        .await;
    }
    let (mut raw, _) = Raw::connect(mqtt_addr(&server), connect_packet(V311, "all", true)).await;
    raw.subscribe(1, vec![Subscription::new("sensors/+", QoS::AtMostOnce)])
        .await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < N {
        match raw.recv().await {
            Some(Packet::Publish(p)) => {
                assert!(p.retain);
                seen.insert(p.topic);
            }
            other => panic!("after {} retained: {other:?}", seen.len()),
        }
    }
    assert_eq!(seen.len(), N);
    server.stop().await;
}

/// The retained backfill is read page by page while the client talks: its
/// PUBACKs and PINGREQs race the page reads in the connection's select!. A
/// page read that loses the race must not restart the scan.
#[tokio::test]
async fn retained_backfill_is_sent_once_while_the_client_acks_and_pings() {
    let server = start().await;
    let http = client();
    const N: usize = 600;
    for i in 0..N {
        put(
            &http,
            &server.url,
            &format!("/api/sensors/r{i:04}"),
            // Large enough that reading a page takes a while.
            &json!({"n": i, "pad": "x".repeat(16 * 1024)}),
        )
        .await;
    }
    let (mut raw, _) = Raw::connect(mqtt_addr(&server), connect_packet(V311, "acker", true)).await;
    raw.subscribe(1, vec![Subscription::new("sensors/#", QoS::AtLeastOnce)])
        .await;
    let mut deliveries: std::collections::BTreeMap<String, usize> = Default::default();
    let mut total = 0;
    // Past N, keep listening a while: a restarted scan shows as more PUBLISHes.
    let quiet = Duration::from_millis(1500);
    loop {
        let within = if total < N { WAIT } else { quiet };
        match raw.recv_within(within).await {
            Some(Packet::Publish(p)) => {
                total += 1;
                assert!(total <= 2 * N, "the backfill is looping");
                *deliveries.entry(p.topic.clone()).or_default() += 1;
                // Acks trickle in, as from a real device, so they arrive
                // while the server is reading the next page.
                tokio::time::sleep(Duration::from_micros(500)).await;
                if let Some(id) = p.packet_id {
                    raw.send(&Packet::PubAck(Ack::new(id))).await;
                }
                if total % 2 == 0 {
                    raw.send(&Packet::PingReq).await;
                }
            }
            Some(Packet::PingResp) => {}
            None if total >= N => break,
            other => panic!("after {total} PUBLISHes: {other:?}"),
        }
    }
    let twice: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {} topics, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    assert_eq!(deliveries.len(), N);
    assert_eq!(total, N);
    server.stop().await;
}

/// MQTT 5 §4.6: one client's messages on one topic reach subscribers in the
/// order it sent them, whether they are stored (retained) or not.
#[tokio::test]
async fn stored_and_transient_publishes_from_one_client_arrive_in_the_order_sent() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut subscriber, _) = Raw::connect(addr, connect_packet(V5, "watcher", true)).await;
    subscriber
        .subscribe(1, vec![Subscription::new("order/x", QoS::AtMostOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, connect_packet(V5, "sender", true)).await;
    const N: usize = 400;
    // One write of every packet, so the stored ones are still on their way to
    // the disk when the transient ones after them arrive.
    let mut wire = BytesMut::new();
    for i in 0..N {
        let packet = publish(
            "order/x",
            QoS::AtMostOnce,
            0,
            i % 2 == 0,
            i.to_string().as_bytes(),
        );
        encode(&packet, V5, &mut wire).unwrap();
    }
    publisher.send_bytes(&wire).await;
    let mut received = Vec::with_capacity(N);
    while received.len() < N {
        match subscriber.recv().await {
            Some(Packet::Publish(p)) => received.push(
                String::from_utf8(p.payload.to_vec())
                    .unwrap()
                    .parse::<usize>()
                    .unwrap(),
            ),
            other => panic!("after {} messages: {other:?}", received.len()),
        }
    }
    let out_of_order: Vec<_> = received.windows(2).filter(|w| w[0] > w[1]).collect();
    assert!(
        out_of_order.is_empty(),
        "{} reversals, e.g. {:?}",
        out_of_order.len(),
        out_of_order.first()
    );
    assert_eq!(received, (0..N).collect::<Vec<_>>());
    server.stop().await;
}

// ------------------------------------------------------------ QoS flows

#[tokio::test]
async fn qos2_publish_is_applied_once_even_when_resent() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let mut watcher = V4::connect(addr, "watcher", |_| {}).await;
    watcher
        .subscribe("counter/#", rumqttc::QoS::ExactlyOnce)
        .await;
    let (mut raw, _) = Raw::connect(addr, connect_packet(V5, "q2", true)).await;
    raw.send(&publish("counter/a", QoS::ExactlyOnce, 7, false, b"one"))
        .await;
    match raw.recv().await {
        Some(Packet::PubRec(rec)) => assert_eq!(rec.packet_id.get(), 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // The same packet id again, DUP set, before PUBREL: not delivered twice [MQTT-4.3.3-10].
    let mut again = publish("counter/a", QoS::ExactlyOnce, 7, false, b"one");
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    raw.send(&again).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    raw.send(&Packet::PubRel(Ack::new(7.try_into().unwrap())))
        .await;
    match raw.recv().await {
        Some(Packet::PubComp(comp)) => assert_eq!(comp.reason_code, ReasonCode::Success),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let first = watcher.next_publish(WAIT).await.expect("delivered");
    assert_eq!(&first.payload[..], b"one");
    assert!(
        watcher
            .next_publish(Duration::from_millis(500))
            .await
            .is_none()
    );

    // PUBREL for an unknown id: PUBCOMP 0x92 (MQTT 5).
    raw.send(&Packet::PubRel(Ack::new(99.try_into().unwrap())))
        .await;
    match raw.recv().await {
        Some(Packet::PubComp(comp)) => {
            assert_eq!(comp.reason_code, ReasonCode::PacketIdentifierNotFound)
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_publish_and_granted_and_overlaps_deliver_once() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut sub, _) = Raw::connect(addr, connect_packet(V5, "overlap", true)).await;
    sub.subscribe(
        1,
        vec![
            Subscription::new("q/#", QoS::AtMostOnce),
            Subscription::new("q/+", QoS::ExactlyOnce),
        ],
    )
    .await;
    let publisher = V4::connect(addr, "qpub", |_| {}).await;
    publisher
        .publish("q/x", rumqttc::QoS::AtLeastOnce, false, b"hi")
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => {
            // Published at 1, granted 0 and 2 by two filters: once, at 1.
            assert_eq!(p.qos, QoS::AtLeastOnce);
            sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                .await;
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    assert!(sub.recv_within(Duration::from_millis(500)).await.is_none());
    server.stop().await;
}

// ------------------------------------------------------------ topics and wildcards

#[tokio::test]
async fn mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let mut all = V4::connect(addr, "all", |_| {}).await;
    all.subscribe("#", rumqttc::QoS::AtMostOnce).await;
    all.subscribe("+/status", rumqttc::QoS::AtMostOnce).await;
    let mut dollar = V4::connect(addr, "dollar", |_| {}).await;
    dollar.subscribe("$app/#", rumqttc::QoS::AtMostOnce).await;
    let publisher = V4::connect(addr, "p", |_| {}).await;
    publisher
        .publish("$app/status", rumqttc::QoS::AtMostOnce, false, b"x")
        .await;
    publisher
        .publish("app/status", rumqttc::QoS::AtMostOnce, false, b"y")
        .await;
    let got = dollar.next_publish(WAIT).await.expect("$ topic by name");
    assert_eq!(got.topic, "$app/status");
    let got = all.next_publish(WAIT).await.expect("plain topic");
    assert_eq!(got.topic, "app/status");
    assert!(all.next_publish(Duration::from_millis(500)).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn sys_topics_cannot_be_published_by_clients() {
    let server = start().await;
    let (mut raw, _) = Raw::connect(mqtt_addr(&server), connect_packet(V5, "sys", true)).await;
    raw.send(&publish(
        "$SYS/broker/uptime",
        QoS::AtLeastOnce,
        1,
        false,
        b"0",
    ))
    .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_non_json_retained_payload_on_a_record_topic_is_refused_with_0x99() {
    let server = start().await;
    let (mut raw, _) = Raw::connect(mqtt_addr(&server), connect_packet(V5, "bad", true)).await;
    raw.send(&publish(
        "sensors/lobby",
        QoS::AtLeastOnce,
        3,
        true,
        b"not json",
    ))
    .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::PayloadFormatInvalid)
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let (status, _) = get_json(&client(), &server.url, "/api/sensors/lobby").await;
    assert_eq!(status, 404);
    server.stop().await;
}

// ------------------------------------------------------------ sessions

#[tokio::test]
async fn mqtt_3_1_4_3_a_second_connection_with_the_same_client_id_takes_over() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut first, _) = Raw::connect(addr, connect_packet(V5, "same", true)).await;
    let (mut second, ack) = Raw::connect(addr, connect_packet(V5, "same", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let (closed, seen) = first.closed().await;
    assert!(closed, "the first connection is closed");
    assert!(
        seen.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason_code == ReasonCode::SessionTakenOver)
        ),
        "{seen:?}"
    );
    second.send(&Packet::PingReq).await;
    assert!(matches!(second.recv().await, Some(Packet::PingResp)));
    // Client ids with slashes are just names.
    let (_a, _) = Raw::connect(addr, connect_packet(V311, "a/b", true)).await;
    let (_b, ack) = Raw::connect(addr, connect_packet(V311, "a/b", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    server.stop().await;
}

#[tokio::test]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let http = client();
    let (mut raw, ack) = Raw::connect(addr, connect_packet(V311, "keeper", false)).await;
    assert!(!ack.session_present);
    raw.subscribe(1, vec![Subscription::new("sensors/+", QoS::AtLeastOnce)])
        .await;
    raw.send(&Packet::Disconnect(Default::default())).await;
    drop(raw);

    for i in 0..3 {
        put(
            &http,
            &server.url,
            &format!("/api/sensors/s{i}"),
            &json!({"n": i}),
        )
        .await;
    }
    let (mut raw, ack) = Raw::connect(addr, connect_packet(V311, "keeper", false)).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2]");
    let mut got = Vec::new();
    while got.len() < 3 {
        match raw.recv().await {
            Some(Packet::Publish(p)) => {
                raw.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                    .await;
                got.push(p.topic);
            }
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec!["sensors/s0", "sensors/s1", "sensors/s2"],
        "in order"
    );

    // Clean session discards it [MQTT-3.1.2-6].
    raw.send(&Packet::Disconnect(Default::default())).await;
    let (_raw, ack) = Raw::connect(addr, connect_packet(V311, "keeper", true)).await;
    assert!(!ack.session_present);
    server.stop().await;
}

#[tokio::test]
async fn unacknowledged_qos1_messages_are_resent_with_dup_on_reconnect() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut raw, _) = Raw::connect(addr, connect_packet(V311, "forgetful", false)).await;
    raw.subscribe(1, vec![Subscription::new("sensors/+", QoS::AtLeastOnce)])
        .await;
    put(
        &client(),
        &server.url,
        "/api/sensors/a",
        &json!({"text": "a"}),
    )
    .await;
    let first = match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("{other:?}"),
    };
    drop(raw); // no PUBACK
    let (mut raw, ack) = Raw::connect(addr, connect_packet(V311, "forgetful", false)).await;
    assert!(ack.session_present);
    match raw.recv().await {
        Some(Packet::Publish(p)) => {
            assert!(p.dup, "[MQTT-3.3.1-1]");
            assert_eq!(p.packet_id, first.packet_id);
            assert_eq!(p.payload, first.payload);
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn the_will_is_published_when_a_client_vanishes_but_not_after_disconnect() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let mut watcher = V4::connect(addr, "watch", |_| {}).await;
    watcher
        .subscribe("status/#", rumqttc::QoS::AtLeastOnce)
        .await;

    let mut vanishing = connect_packet(V311, "gone", true);
    vanishing.will = Some(Will {
        topic: "status/gone".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    let (raw, _) = Raw::connect(addr, vanishing).await;
    drop(raw); // the socket closes without DISCONNECT
    let will = watcher.next_publish(WAIT).await.expect("will message");
    assert_eq!(will.topic, "status/gone");
    assert_eq!(&will.payload[..], b"offline");

    let mut will_connect = connect_packet(V311, "polite", true);
    will_connect.will = Some(Will {
        topic: "status/polite".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let (mut polite, _) = Raw::connect(addr, will_connect).await;
    polite.send(&Packet::Disconnect(Default::default())).await;
    assert!(polite.closed().await.0);
    // [MQTT-3.1.2-10]: DISCONNECT discards the will.
    assert!(
        watcher
            .next_publish(Duration::from_millis(700))
            .await
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_closes_a_silent_client_after_one_and_a_half_periods() {
    let server = start().await;
    let mut connect = connect_packet(V311, "sleepy", true);
    connect.keep_alive = 1;
    let (mut raw, _) = Raw::connect(mqtt_addr(&server), connect).await;
    let started = std::time::Instant::now();
    let (closed, _) = raw.closed().await;
    assert!(closed, "[MQTT-3.1.2-24]");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    server.stop().await;
}

// ------------------------------------------------------------ MQTT 5 features

#[tokio::test]
async fn mqtt5_no_local_retain_as_published_subscription_ids_and_properties() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut me, _) = Raw::connect(addr, connect_packet(V5, "me", true)).await;
    let mut no_local = Subscription::new("chat/#", QoS::AtMostOnce);
    no_local.options.no_local = true;
    me.subscribe(1, vec![no_local]).await;
    let (mut other, _) = Raw::connect(addr, connect_packet(V5, "other", true)).await;
    let mut rap = Subscription::new("chat/#", QoS::AtMostOnce);
    rap.options.retain_as_published = true;
    other
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1.try_into().unwrap(),
            subscriptions: vec![rap],
            properties: marquee::mqtt::SubscribeProperties {
                subscription_identifier: Some(42.try_into().unwrap()),
                ..Default::default()
            },
        }))
        .await;
    assert!(matches!(other.recv().await, Some(Packet::SubAck(_))));

    let mut message = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "chat/room".into(),
        packet_id: None,
        payload: Bytes::from_static(b"hello"),
        properties: PublishProperties {
            content_type: Some("text/plain".into()),
            response_topic: Some("chat/replies".into()),
            correlation_data: Some(Bytes::from_static(b"c-1")),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        },
    };
    me.send(&Packet::Publish(message.clone())).await;
    match other.recv().await {
        Some(Packet::Publish(p)) => {
            assert!(p.retain, "retain as published");
            assert_eq!(
                p.properties.subscription_identifiers,
                vec![42.try_into().unwrap()]
            );
            assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(p.properties.response_topic.as_deref(), Some("chat/replies"));
            assert_eq!(p.properties.correlation_data.as_deref(), Some(&b"c-1"[..]));
            assert!(
                p.properties
                    .user_properties
                    .contains(&("k".into(), "v".into()))
            );
        }
        other => panic!("{other:?}"),
    }
    // No-local: the publisher does not get its own message [MQTT-3.8.3-3].
    assert!(me.recv_within(Duration::from_millis(500)).await.is_none());

    // Topic alias: set once, then used with an empty topic.
    message.retain = false;
    message.properties = PublishProperties {
        topic_alias: Some(3.try_into().unwrap()),
        ..Default::default()
    };
    me.send(&Packet::Publish(message.clone())).await;
    message.topic = String::new();
    message.payload = Bytes::from_static(b"again");
    me.send(&Packet::Publish(message)).await;
    for expected in [&b"hello"[..], b"again"] {
        match other.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.topic, "chat/room");
                assert_eq!(&p.payload[..], expected);
            }
            other => panic!("{other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn connack_tells_mqtt5_clients_the_limits_and_assigns_an_id() {
    let server = start().await;
    let mut connect = connect_packet(V5, "", true);
    connect.keep_alive = 0;
    let (_raw, ack) = Raw::connect(mqtt_addr(&server), connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let p = ack.properties;
    assert!(
        p.assigned_client_identifier
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(p.receive_maximum.map(|m| m.get()), Some(64));
    assert_eq!(p.maximum_packet_size.map(|m| m.get()), Some(1 << 20));
    assert_eq!(p.server_keep_alive, Some(3600));
    server.stop().await;
}

// ------------------------------------------------------------ authorization

#[tokio::test]
async fn acl_rules_from_the_config_refuse_subscriptions_and_deliveries() {
    let server = TestServer::start_with(|config| {
        config.access = marquee::access::Access::new(
            marquee::access::Mode::Open,
            true,
            vec![
                marquee::access::AclRule {
                    filter: "test/nosubscribe".into(),
                    publish: None,
                    subscribe: Some(false),
                    ..Default::default()
                },
                marquee::access::AclRule {
                    filter: "test/nopublish".into(),
                    publish: Some(false),
                    subscribe: None,
                    ..Default::default()
                },
            ],
        )
        .unwrap();
    })
    .await;
    let addr = mqtt_addr(&server);
    let mut v4 = V4::connect(addr, "acl", |_| {}).await;
    assert_eq!(
        v4.subscribe("test/nosubscribe", rumqttc::QoS::AtMostOnce)
            .await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        v4.subscribe("test/#", rumqttc::QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(rumqttc::QoS::AtMostOnce)]
    );
    let (mut raw, _) = Raw::connect(addr, connect_packet(V5, "acl5", true)).await;
    raw.send(&publish("test/nopublish", QoS::AtLeastOnce, 1, false, b"x"))
        .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
        other => panic!("{other:?}"),
    }
    // Delivery is checked too: test/# does not carry test/nosubscribe.
    raw.send(&publish(
        "test/nosubscribe",
        QoS::AtMostOnce,
        0,
        false,
        b"secret",
    ))
    .await;
    raw.send(&publish("test/open", QoS::AtMostOnce, 0, false, b"open"))
        .await;
    let got = v4.next_publish(WAIT).await.expect("open topic");
    assert_eq!(got.topic, "test/open");
    assert!(v4.next_publish(Duration::from_millis(500)).await.is_none());
    server.stop().await;
}

// ------------------------------------------------------------ malformed input

#[tokio::test]
async fn mqtt_3_1_0_1_a_first_packet_other_than_connect_closes_the_connection() {
    let server = start().await;
    let mut raw = Raw::open(mqtt_addr(&server), V311).await;
    raw.send_bytes(&[0xC0, 0x00]).await; // PINGREQ
    assert!(raw.closed().await.0);
    server.stop().await;
}

#[tokio::test]
async fn a_huge_declared_length_is_refused_before_it_is_read() {
    let server = start().await;
    let (mut raw, _) = Raw::connect(mqtt_addr(&server), connect_packet(V5, "huge", true)).await;
    // PUBLISH declaring 200 MB, then nothing.
    raw.send_bytes(&[0x30, 0x80, 0x80, 0x80, 0x60]).await;
    let (closed, seen) = raw.closed().await;
    assert!(closed);
    assert!(
        seen.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason_code == ReasonCode::PacketTooLarge)
        ),
        "{seen:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_packets_get_a_disconnect_and_the_broker_keeps_serving() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let cases: &[(&str, &[u8], ReasonCode)] = &[
        // PUBLISH with QoS 3.
        (
            "qos 3",
            &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            ReasonCode::MalformedPacket,
        ),
        // A client sending CONNACK.
        (
            "connack",
            &[0x20, 0x03, 0x00, 0x00, 0x00],
            ReasonCode::ProtocolError,
        ),
        // Invalid UTF-8 in a topic.
        (
            "utf8",
            &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
            ReasonCode::MalformedPacket,
        ),
        // SUBSCRIBE with reserved flags 0000.
        (
            "flags",
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
            ReasonCode::MalformedPacket,
        ),
        // A second CONNECT [MQTT-3.1.0-2].
        (
            "second connect",
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x1E, 0x00, 0x00,
                0x00,
            ],
            ReasonCode::ProtocolError,
        ),
    ];
    for (name, bytes, reason) in cases {
        let (mut raw, _) = Raw::connect(addr, connect_packet(V5, name, true)).await;
        raw.send_bytes(bytes).await;
        let (closed, seen) = raw.closed().await;
        assert!(closed, "{name}: closed");
        assert!(
            seen.iter()
                .any(|p| matches!(p, Packet::Disconnect(d) if d.reason_code == *reason)),
            "{name}: {seen:?}"
        );
    }
    let (mut raw, ack) = Raw::connect(addr, connect_packet(V311, "after", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    raw.send(&Packet::PingReq).await;
    assert!(matches!(raw.recv().await, Some(Packet::PingResp)));
    server.stop().await;
}

/// Sends every case of `rules` (prefixes of [`malformed::Case::rule`]) from
/// the shared corpus on its own connection, as raw bytes, and checks that the
/// broker answers as the case says (a CONNACK to a CONNECT, a DISCONNECT after
/// one; nothing in 3.1.1) and closes; then that it still serves others.
async fn each_case_is_refused(rules: &[&str]) {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let mut tried = 0;
    let cases = malformed::cases().into_iter().enumerate();
    for (i, case) in cases.filter(|(_, c)| rules.iter().any(|r| c.rule.starts_with(r))) {
        let what = format!("{} [MQTT-{}] in {:?}", case.what, case.rule, case.version);
        let mut raw = if case.after_connect {
            let connect = connect_packet(case.version, &format!("malformed-{i}"), true);
            let (raw, ack) = Raw::connect(addr, connect).await;
            assert_eq!(ack.reason_code, ReasonCode::Success, "{what}");
            raw
        } else {
            Raw::open(addr, case.version).await
        };
        raw.send_bytes(&case.bytes).await;
        let (closed, seen) = raw.closed().await;
        assert!(closed, "{what}: the connection was left open ({seen:?})");
        let answer = seen.iter().find_map(|p| match p {
            Packet::ConnAck(ack) if !case.after_connect => Some(ack.reason_code),
            Packet::Disconnect(d) if case.after_connect => Some(d.reason_code),
            _ => None,
        });
        assert_eq!(answer, case.answer, "{what}: got {seen:?}");
        tried += 1;
    }
    assert!(tried > 0, "no case for {rules:?}");
    let (mut raw, ack) = Raw::connect(addr, connect_packet(V5, "after", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    raw.send(&Packet::PingReq).await;
    assert!(matches!(raw.recv().await, Some(Packet::PingResp)));
    server.stop().await;
}

#[tokio::test]
async fn mqtt_1_5_4_names_with_control_characters_non_characters_or_surrogates_are_refused() {
    each_case_is_refused(&["1.5.4"]).await;
}

#[tokio::test]
async fn mqtt_3_1_2_1_and_16_to_19_a_wrong_protocol_name_or_flags_without_fields_are_refused() {
    each_case_is_refused(&["3.1.2-"]).await;
}

#[tokio::test]
async fn mqtt_2_1_3_1_and_3_14_2_1_reserved_flags_fixed_lengths_and_server_only_codes_are_refused()
{
    each_case_is_refused(&["2.1.", "3.12.", "3.14.", "3.15.", "3.4."]).await;
}

#[tokio::test]
async fn mqtt_2_2_2_2_a_property_its_packet_cannot_carry_is_malformed() {
    each_case_is_refused(&["2.2.2.2"]).await;
}

// ------------------------------------------------------------ MQTT over WebSocket

#[tokio::test]
async fn mqtt_over_websocket_at_slash_mqtt_talks_to_tcp_clients() {
    let server = start().await;
    let (mut ws, ack) =
        Raw::connect_ws(&server.ws_url("/mqtt"), connect_packet(V5, "browser", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    ws.subscribe(1, vec![Subscription::new("sensors/+", QoS::AtMostOnce)])
        .await;

    let publisher = V4::connect(mqtt_addr(&server), "tcp", |_| {}).await;
    publisher
        .publish(
            "sensors/web",
            rumqttc::QoS::AtMostOnce,
            false,
            br#"{"a":1}"#,
        )
        .await;
    match ws.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "sensors/web"),
        other => panic!("{other:?}"),
    }
    // And a retained publish from the browser is a record.
    ws.send(&publish(
        "sensors/web",
        QoS::AtLeastOnce,
        2,
        true,
        br#"{"b":2}"#,
    ))
    .await;
    // The browser is subscribed too: its own message may come before the PUBACK.
    let mut acked = false;
    let mut echoed = 0;
    while !(acked && echoed == 1) {
        match ws.recv().await {
            Some(Packet::PubAck(ack)) if !acked => {
                assert_eq!(ack.reason_code, ReasonCode::Success);
                acked = true;
            }
            Some(Packet::Publish(p)) if echoed == 0 => {
                assert_eq!(p.payload.as_ref(), br#"{"b":2}"#);
                echoed += 1;
            }
            other => panic!("acked {acked}, echoed {echoed}: {other:?}"),
        }
    }
    let (status, body) = get_json(&client(), &server.url, "/api/sensors/web").await;
    assert_eq!(status, 200);
    assert_eq!(body["b"], 2);
    server.stop().await;
}

#[tokio::test]
async fn packets_sent_in_the_same_write_as_connect_are_answered() {
    let server = start().await;
    let mut raw = Raw::open(mqtt_addr(&server), V311).await;
    let mut out = BytesMut::new();
    encode(
        &Packet::Connect(connect_packet(V311, "eager", true)),
        V311,
        &mut out,
    )
    .unwrap();
    encode(&Packet::PingReq, V311, &mut out).unwrap();
    raw.send_bytes(&out).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(raw.recv().await, Some(Packet::PingResp)));
    server.stop().await;
}

/// Publishes transient jobs `jobs/0` … `jobs/{n-1}`, QoS 0, from one client.
async fn publish_jobs(addr: SocketAddr, n: usize) {
    let publisher = V4::connect(addr, "boss", |_| {}).await;
    for i in 0..n {
        publisher
            .publish(
                &format!("jobs/{i}"),
                rumqttc::QoS::AtMostOnce,
                false,
                b"job",
            )
            .await;
    }
}

/// Publishes `n` jobs and counts what `member` receives of them.
async fn jobs_received(addr: SocketAddr, member: &mut Raw, n: usize) -> usize {
    publish_jobs(addr, n).await;
    let mut count = 0;
    while let Some(packet) = member.recv_within(Duration::from_millis(700)).await {
        if let Packet::Publish(p) = packet {
            assert_eq!(p.topic, format!("jobs/{count}"));
            count += 1;
        }
    }
    count
}

#[tokio::test]
async fn a_shared_subscription_delivers_each_message_to_one_member() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let mut members = Vec::new();
    for name in ["w1", "w2", "w3"] {
        let (mut raw, ack) = Raw::connect(addr, connect_packet(V5, name, true)).await;
        assert_eq!(ack.properties.shared_subscription_available, Some(true));
        let codes = raw
            .subscribe(
                1,
                vec![Subscription::new("$share/workers/jobs/+", QoS::AtMostOnce)],
            )
            .await;
        assert_eq!(codes, vec![ReasonCode::Success]);
        members.push(raw);
    }
    const N: usize = 30;
    publish_jobs(addr, N).await;
    let mut per_member = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for member in &mut members {
        let mut count = 0;
        while let Some(Packet::Publish(p)) = member.recv_within(Duration::from_millis(700)).await {
            assert!(seen.insert(p.topic.clone()), "{} delivered twice", p.topic);
            count += 1;
        }
        per_member.push(count);
    }
    assert_eq!(seen.len(), N, "every job once: {per_member:?}");
    assert!(
        per_member.iter().filter(|c| **c > 0).count() >= 2,
        "spread: {per_member:?}"
    );
    server.stop().await;
}

/// How a member of the churn test below comes and goes.
#[derive(Clone, Copy, Debug)]
enum Membership {
    /// Connected throughout.
    Stays,
    /// Leaves (clean session) after a few hundred messages and joins again, over and over.
    Churns,
    /// A persistent session that goes away for a while and comes back.
    Naps,
}

/// One member of `$share/workers/jobs/#`: counts every job it is sent (PUBACKing
/// each) until `done`, leaving and joining as `how` says.
async fn shared_member(
    addr: SocketAddr,
    name: String,
    how: Membership,
    counts: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    use std::sync::atomic::Ordering;
    let mut received = 0;
    let mut round = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
        let persistent = matches!(how, Membership::Naps);
        let mut connect = connect_packet(V5, &name, !(persistent && round > 0));
        if persistent {
            connect.properties.session_expiry_interval = Some(300);
        }
        let (mut raw, ack) = Raw::connect(addr, connect).await;
        if !ack.session_present {
            let codes = raw
                .subscribe(
                    1,
                    vec![Subscription::new("$share/workers/jobs/#", QoS::AtLeastOnce)],
                )
                .await;
            assert_eq!(codes, vec![ReasonCode::GrantedQoS1]);
        }
        // How many jobs this connection takes before it leaves.
        let quota = match how {
            Membership::Stays => usize::MAX,
            Membership::Churns => 150 + (round * 97) % 300,
            Membership::Naps if round == 0 => 1000,
            Membership::Naps => usize::MAX,
        };
        let mut this_connection = 0;
        while this_connection < quota {
            match raw.recv_within(Duration::from_millis(100)).await {
                Some(Packet::Publish(p)) => {
                    let job: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                    counts[job].fetch_add(1, Ordering::AcqRel);
                    received += 1;
                    this_connection += 1;
                    raw.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                        .await;
                }
                Some(other) => panic!("{name}: {other:?}"),
                None if done.load(Ordering::Acquire) => break,
                None => {}
            }
        }
        // Leave cleanly, after the PUBACKs: whatever the server sent after we
        // stopped reading was never ours and must go to another member.
        raw.send(&Packet::Disconnect(Default::default())).await;
        let (closed, _unread) = raw.closed().await;
        assert!(closed, "{name}: no close after DISCONNECT");
        round += 1;
        if persistent && round == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    received
}

/// MQTT 5 §4.8.2: each message to a shared subscription goes to one member,
/// chosen once, while members join and leave (clean sessions hand back what
/// they had not acknowledged; a persistent one keeps its own).
#[tokio::test]
async fn shared_subscription_delivers_each_message_exactly_once_while_members_join_and_leave() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let server = start().await;
    let addr = mqtt_addr(&server);
    const N: usize = 10_000;
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let plan = [
        ("stays-1", Membership::Stays),
        ("stays-2", Membership::Stays),
        ("churns-1", Membership::Churns),
        ("churns-2", Membership::Churns),
        ("churns-3", Membership::Churns),
        ("naps", Membership::Naps),
    ];
    let mut members = tokio::task::JoinSet::new();
    for (name, how) in plan {
        members.spawn(shared_member(
            addr,
            name.to_owned(),
            how,
            counts.clone(),
            done.clone(),
        ));
    }
    // Let the steady members subscribe before the first job.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut boss, _) = Raw::connect(addr, connect_packet(V5, "boss", true)).await;
    for batch in (0..N).collect::<Vec<_>>().chunks(50) {
        let mut wire = BytesMut::new();
        for (k, job) in batch.iter().enumerate() {
            let id = u16::try_from(k + 1).unwrap();
            let packet = publish(
                "jobs/x",
                QoS::AtLeastOnce,
                id,
                false,
                job.to_string().as_bytes(),
            );
            encode(&packet, V5, &mut wire).unwrap();
        }
        boss.send_bytes(&wire).await;
        for _ in batch {
            match boss.recv().await {
                Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
                other => panic!("publisher: {other:?}"),
            }
        }
    }

    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum::<usize>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while total() < N && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A while longer: a message handed out twice would show now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Release);
    let mut per_member = Vec::new();
    while let Some(received) = members.join_next().await {
        per_member.push(received.unwrap());
    }
    let missing: Vec<usize> = (0..N)
        .filter(|j| counts[*j].load(Ordering::Acquire) == 0)
        .collect();
    let twice: Vec<usize> = (0..N)
        .filter(|j| counts[*j].load(Ordering::Acquire) > 1)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} never delivered (e.g. {:?}), {} delivered more than once (e.g. {:?}); per member {per_member:?}",
        missing.len(),
        missing.first(),
        twice.len(),
        twice.first()
    );
    assert_eq!(per_member.iter().sum::<usize>(), N);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_session_leaves_its_shared_subscriptions() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let share = || vec![Subscription::new("$share/workers/jobs/+", QoS::AtMostOnce)];
    let mut leaver = connect_packet(V5, "leaver", false);
    leaver.properties.session_expiry_interval = Some(1);
    let (mut leaver, _) = Raw::connect(addr, leaver).await;
    leaver.subscribe(1, share()).await;
    let (mut stayer, _) = Raw::connect(addr, connect_packet(V5, "stayer", true)).await;
    stayer.subscribe(1, share()).await;
    leaver.send(&Packet::Disconnect(Default::default())).await;
    drop(leaver);
    // Past the 1 s expiry and the broker's 10 s sweep of expired sessions.
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert_eq!(jobs_received(addr, &mut stayer, 20).await, 20);
    server.stop().await;
}

#[tokio::test]
async fn a_persistent_shared_subscription_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = common::ChildServer::spawn(&data, &[]);
    let (mut raw, _) = Raw::connect(first.mqtt, connect_packet(V311, "worker", false)).await;
    raw.subscribe(
        1,
        vec![Subscription::new("$share/workers/jobs/+", QoS::AtMostOnce)],
    )
    .await;
    raw.send(&Packet::Disconnect(Default::default())).await;
    drop(raw);
    first.kill();

    let second = common::ChildServer::spawn(&data, &[]);
    let (mut raw, ack) = Raw::connect(second.mqtt, connect_packet(V311, "worker", false)).await;
    assert!(ack.session_present);
    // The only member of its group, without subscribing again: it gets every job.
    assert_eq!(jobs_received(second.mqtt, &mut raw, 10).await, 10);
}

#[tokio::test]
async fn sys_statistics_are_published_to_dollar_sys_subscribers_only() {
    // $SYS statistics are the node's own (its clients, its messages), as on
    // a Mosquitto bridge: on two nodes each would count one of the two.
    let _one = common::one_node();
    let server = TestServer::start_with(|config| {
        config.mqtt_limits.sys_interval = Duration::from_millis(200);
    })
    .await;
    let addr = mqtt_addr(&server);
    let mut all = V4::connect(addr, "everything", |_| {}).await;
    all.subscribe("#", rumqttc::QoS::AtMostOnce).await;
    let mut sys = V4::connect(addr, "monitor", |_| {}).await;
    sys.subscribe("$SYS/broker/clients/connected", rumqttc::QoS::AtMostOnce)
        .await;
    let got = sys.next_publish(WAIT).await.expect("$SYS statistic");
    let connected: usize = std::str::from_utf8(&got.payload).unwrap().parse().unwrap();
    assert!(connected >= 2, "{connected}");
    assert!(all.next_publish(Duration::from_millis(600)).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn persistent_sessions_and_their_missed_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = common::ChildServer::spawn(&data, &[]);
    let (mut raw, _) = Raw::connect(first.mqtt, connect_packet(V311, "survivor", false)).await;
    raw.subscribe(1, vec![Subscription::new("messages/+", QoS::AtLeastOnce)])
        .await;
    raw.send(&Packet::Disconnect(Default::default())).await;
    drop(raw);
    let http = client();
    for i in 0..3 {
        let r = put(
            &http,
            &first.url,
            &format!("/api/messages/d{i}"),
            &json!({"text": i.to_string()}),
        )
        .await;
        assert!(r.status().is_success());
    }
    first.kill(); // SIGKILL: nothing gets a chance to save anything more

    let second = common::ChildServer::spawn(&data, &[]);
    let (mut raw, ack) = Raw::connect(second.mqtt, connect_packet(V311, "survivor", false)).await;
    assert!(ack.session_present, "the session outlived the restart");
    let mut got = Vec::new();
    while got.len() < 3 {
        match raw.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::AtLeastOnce);
                raw.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                    .await;
                got.push(p.topic);
            }
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(got, vec!["messages/d0", "messages/d1", "messages/d2"]);
    // And it still holds its subscription for new changes.
    put(
        &http,
        &second.url,
        "/api/messages/d9",
        &json!({"text": "9"}),
    )
    .await;
    match raw.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "messages/d9"),
        other => panic!("{other:?}"),
    }
}

/// SIGTERM with 100 persistent sessions connected, each with messages queued
/// behind one it has not acknowledged and a will (half of them delayed): the
/// server waits for them, so after a restart every session is there with its
/// position and its queue, and every will went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_100_persistent_sessions_their_queues_and_their_wills() {
    const CLIENTS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let things = common::things_table(dir.path());
    let data = dir.path().join("data");
    let mut first = common::ChildServer::spawn(&data, &["--config", &things]);
    let session = |i: usize, clean: bool| {
        let mut connect = connect_packet(V5, &format!("s{i}"), clean);
        connect.properties.session_expiry_interval = Some(600);
        // One message in flight at a time: the rest wait in the session.
        connect.properties.receive_maximum = Some(1.try_into().unwrap());
        connect
    };
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut connect = session(i, true);
        connect.will = Some(Will {
            topic: format!("things/will-{i}"),
            payload: Bytes::from(format!(r#"{{"gone":{i}}}"#)),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: (i % 2 == 0).then_some(60),
                ..Default::default()
            },
        });
        let (mut raw, ack) = Raw::connect(first.mqtt, connect).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        let codes = raw
            .subscribe(
                1,
                vec![Subscription::new(format!("things/q{i}"), QoS::AtLeastOnce)],
            )
            .await;
        assert_eq!(codes, vec![ReasonCode::GrantedQoS1]);
        clients.push(raw);
    }
    let http = client();
    for n in 0..3 {
        for i in 0..CLIENTS {
            let r = put(
                &http,
                &first.url,
                &format!("/api/things/q{i}"),
                &json!({"n": n}),
            )
            .await;
            assert!(r.status().is_success());
        }
    }
    // Each has the first in hand, unacknowledged; the other two wait.
    for (i, raw) in clients.iter_mut().enumerate() {
        match raw.recv().await {
            Some(Packet::Publish(p)) => assert_eq!(p.payload.as_ref(), br#"{"n":0}"#, "s{i}"),
            other => panic!("s{i}: {other:?}"),
        }
    }

    let status = std::process::Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let exit = first.wait_exit(Duration::from_secs(20));
        (exit, first)
    })
    .await
    .unwrap();
    assert!(
        exit.0.is_some_and(|e| e.success()),
        "clean exit on SIGTERM: {:?}",
        exit.0
    );
    drop(clients);

    let second = common::ChildServer::spawn(&data, &["--config", &things]);
    for i in 0..CLIENTS {
        let (status, will) = get_json(&http, &second.url, &format!("/api/things/will-{i}")).await;
        assert_eq!((status, &will["gone"]), (200, &json!(i)), "will of s{i}");
    }
    for i in 0..CLIENTS {
        let (mut raw, ack) = Raw::connect(second.mqtt, session(i, false)).await;
        assert!(ack.session_present, "s{i} lost its session");
        let mut got = Vec::new();
        while let Some(packet) = raw
            .recv_within(Duration::from_millis(if got.len() < 3 {
                5000
            } else {
                200
            }))
            .await
        {
            match packet {
                Packet::Publish(p) => {
                    raw.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())))
                        .await;
                    let value: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    got.push(value["n"].as_u64().unwrap());
                }
                other => panic!("s{i}: {other:?}"),
            }
        }
        assert_eq!(
            got,
            vec![0, 1, 2],
            "s{i}: the unacknowledged one again, then its queue"
        );
    }
}

#[tokio::test]
async fn one_set_of_access_rules_guards_mqtt_rest_sse_and_websockets() {
    let server = TestServer::start_with(|config| {
        config.tables.push(marquee::store::TableDecl {
            name: "sensors".into(),
            schema: None,
        });
        config.access = marquee::access::Access::new(
            marquee::access::Mode::Open,
            true,
            vec![
                marquee::access::AclRule {
                    filter: "sensors/locked".into(),
                    publish: Some(false),
                    subscribe: None,
                    ..Default::default()
                },
                marquee::access::AclRule {
                    filter: "sensors/secret".into(),
                    publish: None,
                    subscribe: Some(false),
                    ..Default::default()
                },
            ],
        )
        .unwrap();
    })
    .await;
    let http = client();
    let mut sse = SseClient::connect(&format!("{}/api/sensors/", server.url), None).await;
    sse.until_sync().await;

    let r = put(&http, &server.url, "/api/sensors/locked", &json!({"x": 1})).await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let (mut raw, _) =
        Raw::connect(mqtt_addr(&server), connect_packet(V5, "locksmith", true)).await;
    raw.send(&publish(
        "sensors/locked",
        QoS::AtLeastOnce,
        1,
        true,
        br#"{"x":1}"#,
    ))
    .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
        other => panic!("{other:?}"),
    }
    let mut ws = WsClient::connect(&server.ws_url("/api/ws")).await;
    ws.send(json!({"type": "put", "req": "w", "table": "sensors", "id": "locked", "value": {}}))
        .await;
    let reply = ws.reply("w", &mut Vec::new()).await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");

    // Writable, but nobody may read it: not over REST, not in a stream.
    put(
        &http,
        &server.url,
        "/api/sensors/secret",
        &json!({"pin": 1234}),
    )
    .await;
    put(&http, &server.url, "/api/sensors/open", &json!({"x": 2})).await;
    let (status, _) = get_json(&http, &server.url, "/api/sensors/secret").await;
    assert_eq!(status, 403);
    let event = sse.next_within(WAIT).await.expect("SSE event").json();
    assert_eq!(event["id"], "open", "the secret change is skipped: {event}");
    server.stop().await;
}

#[tokio::test]
async fn configured_limits_are_enforced_with_the_reason_codes_the_spec_names() {
    // Its last case, max_connections, counts the node's own connections
    // (mqtt::broker): behind a balancer each node holds its own share.
    let _one = common::one_node();
    let server = start_with_limits(|limits| {
        limits.max_topic_levels = 3;
        limits.max_subscriptions = 2;
        limits.max_connections = 3;
        limits.connect_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = mqtt_addr(&server);
    let (mut raw, _) = Raw::connect(addr, connect_packet(V5, "limited", true)).await;
    raw.send(&publish("a/b/c/d", QoS::AtLeastOnce, 1, false, b"deep"))
        .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::TopicNameInvalid),
        other => panic!("{other:?}"),
    }
    let codes = raw
        .subscribe(
            2,
            vec![
                Subscription::new("x/1", QoS::AtMostOnce),
                Subscription::new("x/2", QoS::AtMostOnce),
                Subscription::new("x/3", QoS::AtMostOnce),
                Subscription::new("x/4/5/6", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded,
            ReasonCode::TopicFilterInvalid
        ]
    );

    // A socket that never sends CONNECT is closed.
    let mut idle = Raw::open(addr, V311).await;
    let started = std::time::Instant::now();
    assert!(idle.closed().await.0);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Past max_connections: CONNACK "server busy" (3.1.1: "server unavailable").
    let (_b, _) = Raw::connect(addr, connect_packet(V5, "second", true)).await;
    let (_c, _) = Raw::connect(addr, connect_packet(V5, "third", true)).await;
    let (_d, ack) = Raw::connect(addr, connect_packet(V5, "fourth", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerBusy);
    server.stop().await;
}

/// Sockets count against `max_connections` from accept: a flood of sockets
/// that never send CONNECT cannot hold more than the limit, and past it a
/// client is told the server is busy.
#[tokio::test]
async fn sockets_count_against_max_connections_before_they_send_connect() {
    // Connections are counted, and limited, per node (mqtt::broker): behind
    // a balancer each node holds its own share.
    let _one = common::one_node();
    let server = start_with_limits(|limits| {
        limits.max_connections = 2;
        limits.connect_timeout = Duration::from_secs(3);
    })
    .await;
    let addr = mqtt_addr(&server);
    let silent = [Raw::open(addr, V5).await, Raw::open(addr, V5).await];
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, ack) = Raw::connect(addr, connect_packet(V5, "late", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerBusy);
    let (_, ack) = Raw::connect(addr, connect_packet(V311, "late-311", true)).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::ServerUnavailable,
        "3.1.1 return code 3"
    );
    drop(silent);
    // Their slots come back once the server sees them close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_raw, ack) = Raw::connect(addr, connect_packet(V5, "in-time", true)).await;
        if ack.reason_code == ReasonCode::Success {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Sessions that outlive their connection are capped (`max_sessions`): a
/// client asking for a new one past the cap is refused; clean sessions and
/// clients coming back to their own session are not.
#[tokio::test]
async fn a_new_persistent_session_past_max_sessions_is_refused() {
    // max_sessions caps the sessions each node holds (mqtt::broker counts
    // its own): a node's memory, not the cluster's.
    let _one = common::one_node();
    let server = start_with_limits(|limits| limits.max_sessions = 2).await;
    let addr = mqtt_addr(&server);
    let persistent = |version, id: &str| {
        let mut connect = connect_packet(version, id, version == V5);
        if version == V5 {
            connect.properties.session_expiry_interval = Some(600);
        }
        connect
    };
    for id in ["kept-1", "kept-2"] {
        let (mut raw, ack) = Raw::connect(addr, persistent(V5, id)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        raw.send(&Packet::Disconnect(Default::default())).await;
        assert!(raw.closed().await.0);
    }
    let (mut refused, ack) = Raw::connect(addr, persistent(V5, "third")).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    assert!(refused.closed().await.0);
    let (_, ack) = Raw::connect(addr, persistent(V311, "third-311")).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::ServerUnavailable,
        "3.1.1 return code 3"
    );

    let (_clean, ack) = Raw::connect(addr, connect_packet(V5, "clean", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut back = persistent(V5, "kept-1");
    back.clean_start = false;
    let (_back, ack) = Raw::connect(addr, back).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(ack.session_present);
    server.stop().await;
}

/// No session waits for ever: an MQTT 3.1.1 persistent session expires after
/// `persistent_client_expiration`, and an MQTT 5 client asking for "never"
/// is told the limit in CONNACK.
#[tokio::test]
async fn persistent_sessions_expire_after_persistent_client_expiration() {
    let server =
        start_with_limits(|limits| limits.max_session_expiry = Duration::from_secs(1)).await;
    let addr = mqtt_addr(&server);
    let leave = |mut raw: Raw| async move {
        raw.send(&Packet::Disconnect(Default::default())).await;
        assert!(raw.closed().await.0);
    };
    let (mut raw, _) = Raw::connect(addr, connect_packet(V311, "old-device", false)).await;
    raw.subscribe(1, vec![Subscription::new("a/b", QoS::AtLeastOnce)])
        .await;
    leave(raw).await;
    let (raw, ack) = Raw::connect(addr, connect_packet(V311, "old-device", false)).await;
    assert!(ack.session_present, "back within the expiry");
    leave(raw).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_raw, ack) = Raw::connect(addr, connect_packet(V311, "old-device", false)).await;
    assert!(!ack.session_present, "expired after 1 s away");

    let mut forever = connect_packet(V5, "v5-device", true);
    forever.properties.session_expiry_interval = Some(u32::MAX);
    let (_raw, ack) = Raw::connect(addr, forever).await;
    assert_eq!(ack.properties.session_expiry_interval, Some(1));
    server.stop().await;
}

/// What a connection has encoded and not yet written is capped in bytes: a
/// subscriber that stops reading does not make the server hold every large
/// record it is sent (a window of 1,024 such messages would be a gigabyte).
#[tokio::test]
async fn a_subscriber_that_stops_reading_does_not_hold_its_messages_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let things = common::things_table(dir.path());
    let server = common::ChildServer::spawn(&dir.path().join("data"), &["--config", &things]);
    let http = client();
    const RECORDS: usize = 60;
    let pad = "x".repeat(900_000);
    for i in 0..RECORDS {
        let r = put(
            &http,
            &server.url,
            &format!("/api/things/big-{i:02}"),
            &json!({"pad": pad}),
        )
        .await;
        assert!(r.status().is_success());
    }
    // A subscriber that reads them all first, so caches are as warm as they get.
    let (mut reader, _) = Raw::connect(server.mqtt, connect_packet(V5, "reader", true)).await;
    reader
        .subscribe(1, vec![Subscription::new("things/#", QoS::AtMostOnce)])
        .await;
    for i in 0..RECORDS {
        assert!(
            matches!(reader.recv().await, Some(Packet::Publish(_))),
            "record {i}"
        );
    }
    drop(reader);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = common::rss_kib(server.pid());

    // 60 × 900 KB = 54 MB of retained records this client never reads.
    let mut connect = connect_packet(V5, "stalled", true);
    connect.properties.receive_maximum = Some(1024.try_into().unwrap());
    let (mut stalled, _) = Raw::connect(server.mqtt, connect).await;
    stalled
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1.try_into().unwrap(),
            subscriptions: vec![Subscription::new("things/#", QoS::AtLeastOnce)],
            properties: Default::default(),
        }))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown_mb = common::rss_kib(server.pid()).saturating_sub(before) / 1024;
    assert!(
        grown_mb < 30,
        "the server grew by {grown_mb} MB for a client that reads nothing"
    );
    drop(stalled);
}

#[tokio::test]
async fn retain_handling_message_expiry_and_the_clients_maximum_packet_size() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    put(
        &client(),
        &server.url,
        "/api/sensors/kept",
        &json!({"k": 1}),
    )
    .await;
    let (mut raw, _) = Raw::connect(addr, {
        let mut c = connect_packet(V5, "picky", true);
        c.properties.maximum_packet_size = Some(120.try_into().unwrap());
        c
    })
    .await;
    // Retain handling 2: no retained messages on subscribe.
    let mut quiet = Subscription::new("sensors/+", QoS::AtMostOnce);
    quiet.options.retain_handling = marquee::mqtt::RetainHandling::DoNotSend;
    raw.subscribe(1, vec![quiet]).await;
    assert!(raw.recv_within(Duration::from_millis(400)).await.is_none());
    // Larger than the client's Maximum Packet Size: not sent [MQTT-3.1.2-25].
    let big = "x".repeat(200);
    put(
        &client(),
        &server.url,
        "/api/sensors/big",
        &json!({ "v": big }),
    )
    .await;
    put(
        &client(),
        &server.url,
        "/api/sensors/small",
        &json!({"v": 1}),
    )
    .await;
    match raw.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "sensors/small"),
        other => panic!("{other:?}"),
    }

    // Message expiry: a queued message that expired is not delivered.
    let (mut away, _) = Raw::connect(addr, {
        let mut c = connect_packet(V5, "away", false);
        c.properties.session_expiry_interval = Some(60);
        c
    })
    .await;
    away.subscribe(1, vec![Subscription::new("news/+", QoS::AtLeastOnce)])
        .await;
    away.send(&Packet::Disconnect(Default::default())).await;
    drop(away);
    let (mut sender, _) = Raw::connect(addr, connect_packet(V5, "newsroom", true)).await;
    for (topic, expiry) in [("news/stale", Some(1)), ("news/fresh", None)] {
        let mut p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: Some(1.try_into().unwrap()),
            payload: Bytes::from_static(b"n"),
            properties: PublishProperties::default(),
        };
        p.properties.message_expiry_interval = expiry;
        sender.send(&Packet::Publish(p)).await;
        assert!(matches!(sender.recv().await, Some(Packet::PubAck(_))));
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (mut away, ack) = Raw::connect(addr, {
        let mut c = connect_packet(V5, "away", false);
        c.properties.session_expiry_interval = Some(60);
        c
    })
    .await;
    assert!(ack.session_present);
    match away.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "news/fresh", "the stale one expired"),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

async fn start_with_limits(tweak: impl FnOnce(&mut marquee::mqtt::Limits)) -> TestServer {
    TestServer::start_with(|config| tweak(&mut config.mqtt_limits)).await
}
