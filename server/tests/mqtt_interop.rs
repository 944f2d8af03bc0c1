//! What the Eclipse Paho MQTT 5 interoperability test (and issue 14's flows)
//! checks of a broker, in our own words: Receive Maximum both ways, the
//! client's Maximum Packet Size, acknowledgements of the wrong flow, topic
//! aliases towards the client, and retained messages that keep what they
//! were published with. Each talks to a real server over TCP with exact
//! packets (our codec as a client), as an MQTT 5 client would.

mod common;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use common::mqtt::{Raw, connect_packet, publish};
use common::{TestServer, client, get_json, put};
use marquee::mqtt::{
    Ack, Auth, AuthProperties, Connect, Packet, PacketId, ProtocolVersion, Publish,
    PublishProperties, QoS, ReasonCode, Subscription, encode,
};
use serde_json::json;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

/// A server with a declared table `sensors` (records) beside plain topics.
async fn start() -> TestServer {
    TestServer::start_with(|config| {
        config.tables.push(marquee::store::TableDecl {
            name: "sensors".into(),
            schema: None,
        })
    })
    .await
}

fn mqtt_addr(server: &TestServer) -> SocketAddr {
    server.mqtt_addr()
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// An MQTT 5 CONNECT for `client_id`, as `tweak` changes it.
fn v5(client_id: &str, tweak: impl FnOnce(&mut Connect)) -> Connect {
    let mut connect = connect_packet(V5, client_id, true);
    tweak(&mut connect);
    connect
}

/// Publishes at QoS 0 or 1 and waits for the PUBACK, so the message is on
/// its way to subscribers before the test goes on.
async fn publish_acked(publisher: &mut Raw, packet: Packet) {
    let qos = match &packet {
        Packet::Publish(p) => p.qos,
        _ => unreachable!("publish_acked takes a PUBLISH"),
    };
    publisher.send(&packet).await;
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => match publisher.recv().await {
            Some(Packet::PubAck(ack)) => assert!(!ack.reason_code.is_error(), "{ack:?}"),
            other => panic!("expected PUBACK, got {other:?}"),
        },
        QoS::ExactlyOnce => {
            match publisher.recv().await {
                Some(Packet::PubRec(rec)) => {
                    assert!(!rec.reason_code.is_error(), "{rec:?}");
                    publisher
                        .send(&Packet::PubRel(Ack::new(rec.packet_id)))
                        .await;
                }
                other => panic!("expected PUBREC, got {other:?}"),
            }
            assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
        }
    }
}

async fn next_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Sends PINGREQ and returns what the server sent before its PINGRESP: the
/// server answers in order, so anything it had already sent comes first.
async fn before_pingresp(raw: &mut Raw) -> Vec<Packet> {
    raw.send(&Packet::PingReq).await;
    let mut before = Vec::new();
    loop {
        match raw.recv().await {
            Some(Packet::PingResp) => return before,
            Some(other) => before.push(other),
            None => panic!("no PINGRESP; the connection closed after {before:?}"),
        }
    }
}

/// The DISCONNECT reason among the packets a server sent before closing.
fn disconnect_reason(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason_code),
        _ => None,
    })
}

// ------------------------------------------------------------ Receive Maximum

#[tokio::test]
async fn mqtt_3_3_4_9_receive_maximum_bounds_inflight() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut publisher, _) = Raw::connect(addr, v5("flow-pub", |_| {})).await;
    for n in 1..=3 {
        let topic = format!("flow/{n}");
        publish_acked(
            &mut publisher,
            publish(&topic, QoS::AtLeastOnce, n, true, b"m"),
        )
        .await;
    }
    // Three retained messages are ready at once: only two may be in flight.
    let (mut sub, _) = Raw::connect(
        addr,
        v5("flow-sub", |c| {
            c.properties.receive_maximum = Some(2.try_into().unwrap());
        }),
    )
    .await;
    sub.subscribe(1, vec![Subscription::new("flow/+", QoS::AtLeastOnce)])
        .await;
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    assert_eq!(
        before_pingresp(&mut sub).await,
        vec![],
        "a third QoS 1 message went out with two unacknowledged"
    );
    // One acknowledged: the third may come.
    sub.send(&Packet::PubAck(Ack::new(first.packet_id.unwrap())))
        .await;
    let third = next_publish(&mut sub).await;
    let mut topics = vec![first.topic, second.topic, third.topic];
    topics.sort();
    assert_eq!(topics, ["flow/1", "flow/2", "flow/3"]);
    server.stop().await;
}

#[tokio::test]
async fn mqtt_4_9_0_a_resumed_session_resends_no_more_than_the_new_receive_maximum() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let resumer = |window: u16, clean: bool| {
        let mut c = connect_packet(V5, "resumer", clean);
        c.properties.session_expiry_interval = Some(60);
        c.properties.receive_maximum = Some(window.try_into().unwrap());
        c
    };
    let (mut sub, _) = Raw::connect(addr, resumer(3, true)).await;
    sub.subscribe(1, vec![Subscription::new("again/t", QoS::AtLeastOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, v5("again-pub", |_| {})).await;
    for n in 1..=3u16 {
        publish_acked(
            &mut publisher,
            publish(
                "again/t",
                QoS::AtLeastOnce,
                n,
                false,
                format!("m{n}").as_bytes(),
            ),
        )
        .await;
    }
    for _ in 1..=3 {
        next_publish(&mut sub).await;
    }
    // Gone with three unacknowledged; back with room for one at a time.
    sub.send(&Packet::Disconnect(Default::default())).await;
    assert!(sub.closed().await.0);
    let (mut sub, connack) = Raw::connect(addr, resumer(1, false)).await;
    assert!(connack.session_present);
    for n in 1..=3 {
        let again = next_publish(&mut sub).await;
        assert!(again.dup);
        assert_eq!(again.payload, format!("m{n}").as_bytes());
        assert_eq!(
            before_pingresp(&mut sub).await,
            vec![],
            "more than one resent while m{n} is unacknowledged"
        );
        sub.send(&Packet::PubAck(Ack::new(again.packet_id.unwrap())))
            .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn mqtt_3_3_4_7_more_publishes_than_our_receive_maximum_is_disconnect_0x93() {
    let server = TestServer::start_with(|config| config.mqtt_limits.max_inflight = 4).await;
    let addr = mqtt_addr(&server);
    let (mut raw, connack) = Raw::connect(addr, v5("greedy", |_| {})).await;
    assert_eq!(connack.properties.receive_maximum.map(|m| m.get()), Some(4));
    // Five QoS 2 publishes in one write, none released: one too many.
    let mut burst = BytesMut::new();
    for n in 1..=5 {
        encode(
            &publish("greedy/t", QoS::ExactlyOnce, n, false, b"x"),
            V5,
            &mut burst,
        )
        .unwrap();
    }
    raw.send_bytes(&burst).await;
    // The client goes on answering each PUBREC, as a real one does, and
    // gives up when a send fails: it must still get to read why it was cut
    // off (a socket closed with those answers unread is reset).
    let mut recs = 0;
    let mut reason = None;
    for _ in 0..16 {
        match raw.recv().await {
            Some(Packet::PubRec(rec)) => {
                recs += 1;
                assert!(
                    raw.try_send(&Packet::PubRel(Ack::new(rec.packet_id))).await,
                    "the connection was reset before the client read the DISCONNECT"
                );
            }
            Some(Packet::Disconnect(d)) => {
                reason = Some(d.reason_code);
                break;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(reason, Some(ReasonCode::ReceiveMaximumExceeded));
    assert_eq!(recs, 4, "the four within the window are acknowledged");
    assert!(raw.closed().await.0);
    server.stop().await;
}

// ------------------------------------------------- acknowledgements of the wrong flow

/// A subscriber at `qos` with one delivery of that QoS in hand.
async fn holding_a_delivery(
    addr: SocketAddr,
    version: ProtocolVersion,
    qos: QoS,
    name: &str,
) -> (Raw, Publish) {
    let topic = format!("oof/{name}");
    let (mut sub, _) =
        Raw::connect(addr, connect_packet(version, &format!("{name}-sub"), true)).await;
    sub.subscribe(1, vec![Subscription::new(topic.as_str(), qos)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, v5(&format!("{name}-pub"), |_| {})).await;
    publish_acked(
        &mut publisher,
        publish(&topic, QoS::AtLeastOnce, 1, false, b"m"),
    )
    .await;
    let delivery = next_publish(&mut sub).await;
    assert_eq!(delivery.qos, qos.min(QoS::AtLeastOnce));
    (sub, delivery)
}

#[tokio::test]
async fn mqtt_4_3_2_a_pubrec_for_a_qos1_delivery_is_a_protocol_error() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut sub, delivery) = holding_a_delivery(addr, V5, QoS::AtLeastOnce, "rec1").await;
    sub.send(&Packet::PubRec(Ack::new(delivery.packet_id.unwrap())))
        .await;
    let (closed, packets) = sub.closed().await;
    assert!(closed);
    assert_eq!(disconnect_reason(&packets), Some(ReasonCode::ProtocolError));
    server.stop().await;
}

/// Enhanced authentication is not offered (a CONNECT naming a method gets
/// 0x8C), so an AUTH from a connected client, continuing or asking to
/// re-authenticate, is a Protocol Error.
#[tokio::test]
async fn mqtt_4_12_0_5_an_auth_without_a_method_agreed_at_connect_is_a_protocol_error() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    for reason_code in [
        ReasonCode::ContinueAuthentication,
        ReasonCode::ReAuthenticate,
    ] {
        let (mut raw, connack) = Raw::connect(addr, connect_packet(V5, "auth", true)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        raw.send(&Packet::Auth(Auth {
            reason_code,
            properties: AuthProperties {
                authentication_method: Some("SCRAM-SHA-256".into()),
                ..AuthProperties::default()
            },
        }))
        .await;
        let (closed, packets) = raw.closed().await;
        assert!(closed, "{reason_code:?}");
        assert_eq!(
            disconnect_reason(&packets),
            Some(ReasonCode::ProtocolError),
            "{reason_code:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn mqtt_4_3_3_a_puback_or_an_early_pubcomp_for_a_qos2_delivery_is_a_protocol_error() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    // QoS 2 deliveries need a QoS 2 publish.
    for (name, wrong) in [
        ("ack2", Packet::PubAck as fn(Ack) -> Packet),
        ("comp2", Packet::PubComp),
    ] {
        let topic = format!("oof/{name}");
        let (mut sub, _) = Raw::connect(addr, v5(&format!("{name}-sub"), |_| {})).await;
        sub.subscribe(1, vec![Subscription::new(topic.as_str(), QoS::ExactlyOnce)])
            .await;
        let (mut publisher, _) = Raw::connect(addr, v5(&format!("{name}-pub"), |_| {})).await;
        publish_acked(
            &mut publisher,
            publish(&topic, QoS::ExactlyOnce, 1, false, b"m"),
        )
        .await;
        let delivery = next_publish(&mut sub).await;
        assert_eq!(delivery.qos, QoS::ExactlyOnce);
        // PUBACK belongs to QoS 1; PUBCOMP answers a PUBREL not yet sent.
        sub.send(&wrong(Ack::new(delivery.packet_id.unwrap())))
            .await;
        let (closed, packets) = sub.closed().await;
        assert!(closed, "{name}");
        assert_eq!(
            disconnect_reason(&packets),
            Some(ReasonCode::ProtocolError),
            "{name}: {packets:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn mqtt_4_3_3_a_repeated_pubrec_gets_its_pubrel_again_and_an_unknown_one_0x92() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut sub, _) = Raw::connect(addr, v5("again-sub", |_| {})).await;
    sub.subscribe(1, vec![Subscription::new("oof/again", QoS::ExactlyOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, v5("again-pub", |_| {})).await;
    publish_acked(
        &mut publisher,
        publish("oof/again", QoS::ExactlyOnce, 1, false, b"m"),
    )
    .await;
    let delivery = next_publish(&mut sub).await;
    let pid = delivery.packet_id.unwrap();
    for _ in 0..2 {
        sub.send(&Packet::PubRec(Ack::new(pid))).await;
        match sub.recv().await {
            Some(Packet::PubRel(rel)) => {
                assert_eq!((rel.packet_id, rel.reason_code), (pid, ReasonCode::Success))
            }
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }
    sub.send(&Packet::PubComp(Ack::new(pid))).await;
    // Not in flight at all: told so, and the connection stays.
    sub.send(&Packet::PubRec(Ack::new(id(999)))).await;
    match sub.recv().await {
        Some(Packet::PubRel(rel)) => {
            assert_eq!(rel.reason_code, ReasonCode::PacketIdentifierNotFound)
        }
        other => panic!("expected PUBREL 0x92, got {other:?}"),
    }
    assert_eq!(before_pingresp(&mut sub).await, vec![]);
    server.stop().await;
}

#[tokio::test]
async fn mqtt_4_8_0_a_311_client_acknowledging_the_wrong_flow_is_disconnected() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut sub, delivery) = holding_a_delivery(addr, V311, QoS::AtLeastOnce, "old").await;
    sub.send(&Packet::PubRec(Ack::new(delivery.packet_id.unwrap())))
        .await;
    // 3.1.1 has no DISCONNECT from the server: the socket just closes.
    let (closed, packets) = sub.closed().await;
    assert!(closed);
    assert_eq!(packets, vec![]);
    server.stop().await;
}

// ------------------------------------------------- the client's Maximum Packet Size

#[tokio::test]
async fn mqtt_3_1_2_25_a_message_too_large_for_the_client_is_not_sent_and_the_connection_stays() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    // One message in flight at a time: a skipped one must not hold the window.
    let (mut sub, _) = Raw::connect(
        addr,
        v5("small", |c| {
            c.properties.maximum_packet_size = Some(64.try_into().unwrap());
            c.properties.receive_maximum = Some(1.try_into().unwrap());
        }),
    )
    .await;
    sub.subscribe(1, vec![Subscription::new("tiny/t", QoS::ExactlyOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, v5("big-pub", |_| {})).await;
    let fits = [b'.'; 32];
    let too_big = [b'#'; 64];
    for (n, payload, qos) in [
        (1, &fits[..], QoS::AtLeastOnce),
        (2, &too_big[..], QoS::AtLeastOnce),
        (3, &too_big[..], QoS::ExactlyOnce),
        (4, &fits[..], QoS::ExactlyOnce),
    ] {
        publish_acked(&mut publisher, publish("tiny/t", qos, n, false, payload)).await;
    }
    let first = next_publish(&mut sub).await;
    assert_eq!(first.payload.as_ref(), &fits[..]);
    sub.send(&Packet::PubAck(Ack::new(first.packet_id.unwrap())))
        .await;
    let next = next_publish(&mut sub).await;
    assert_eq!(
        (next.payload.as_ref(), next.qos),
        (&fits[..], QoS::ExactlyOnce),
        "the two 64-byte messages are skipped, as if delivered"
    );
    assert_eq!(before_pingresp(&mut sub).await, vec![]);
    server.stop().await;
}

#[tokio::test]
async fn mqtt_3_14_2_3_a_disconnects_reason_string_is_left_out_when_it_would_not_fit() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let max = 24;
    let (mut sub, _) = Raw::connect(
        addr,
        v5("terse", |c| {
            c.properties.maximum_packet_size = Some(max.try_into().unwrap())
        }),
    )
    .await;
    sub.subscribe(1, vec![Subscription::new("oof/terse", QoS::AtLeastOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, v5("terse-pub", |_| {})).await;
    publish_acked(
        &mut publisher,
        publish("oof/terse", QoS::AtLeastOnce, 1, false, b"m"),
    )
    .await;
    let delivery = next_publish(&mut sub).await;
    // The wrong flow: our DISCONNECT says why in a reason string, which
    // would make it larger than the client takes.
    sub.send(&Packet::PubRec(Ack::new(delivery.packet_id.unwrap())))
        .await;
    let (closed, packets) = sub.closed().await;
    assert!(closed);
    match packets.as_slice() {
        [Packet::Disconnect(d)] => {
            assert_eq!(d.reason_code, ReasonCode::ProtocolError);
            assert_eq!(d.properties.reason_string, None);
            let size = marquee::mqtt::encoded_len(&packets[0], V5).unwrap();
            assert!(size <= max as usize, "{size} bytes");
        }
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_2_24_a_records_change_metadata_is_left_out_before_the_change_is_dropped() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut sub, _) = Raw::connect(
        addr,
        v5("narrow", |c| {
            c.properties.maximum_packet_size = Some(40.try_into().unwrap())
        }),
    )
    .await;
    sub.subscribe(1, vec![Subscription::new("sensors/+", QoS::AtMostOnce)])
        .await;
    put(&client(), &server.url, "/api/sensors/a", &json!({"v": 1})).await;
    // With seq, type, version and origin it is about 70 bytes; without, 21.
    let got = next_publish(&mut sub).await;
    assert_eq!(got.topic, "sensors/a");
    assert_eq!(got.payload.as_ref(), br#"{"v":1}"#);
    assert_eq!(got.properties.user_properties, vec![]);
    server.stop().await;
}

// ------------------------------------------------- topic aliases towards the client

#[tokio::test]
async fn mqtt_3_3_2_3_4_topic_aliases_go_to_a_client_that_allows_them() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let (mut aliased, _) = Raw::connect(
        addr,
        v5("aliased", |c| c.properties.topic_alias_maximum = Some(1)),
    )
    .await;
    let (mut plain, _) = Raw::connect(addr, v5("plain", |_| {})).await;
    for sub in [&mut aliased, &mut plain] {
        sub.subscribe(1, vec![Subscription::new("al/#", QoS::AtMostOnce)])
            .await;
    }
    let (mut publisher, _) = Raw::connect(addr, v5("al-pub", |_| {})).await;
    let sent = ["al/a", "al/a", "al/a", "al/b", "al/a"];
    for (n, topic) in (1..).zip(sent) {
        publish_acked(
            &mut publisher,
            publish(topic, QoS::AtLeastOnce, n, false, b"m"),
        )
        .await;
    }
    let mut got = Vec::new();
    for _ in sent {
        let p = next_publish(&mut aliased).await;
        got.push((p.topic, p.properties.topic_alias.map(|a| a.get())));
    }
    // The first on a topic names it; the only alias is taken, so al/b goes whole.
    let expected: Vec<(String, Option<u16>)> = vec![
        ("al/a".into(), Some(1)),
        (String::new(), Some(1)),
        (String::new(), Some(1)),
        ("al/b".into(), None),
        (String::new(), Some(1)),
    ];
    assert_eq!(got, expected);
    for topic in sent {
        let p = next_publish(&mut plain).await;
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), (topic, None));
    }
    server.stop().await;
}

// ------------------------------------------------- retained messages as published

#[tokio::test]
async fn mqtt_3_3_1_5_a_retained_message_keeps_its_qos_and_properties() {
    let server = start().await;
    let addr = mqtt_addr(&server);
    let user = vec![("a".to_string(), "2".to_string()), ("c".into(), "3".into())];
    let (mut live, _) = Raw::connect(addr, v5("kept-live", |_| {})).await;
    live.subscribe(1, vec![Subscription::new("kept/+", QoS::ExactlyOnce)])
        .await;
    let (mut publisher, _) = Raw::connect(addr, v5("kept-pub", |_| {})).await;
    for (n, qos) in [
        (0u16, QoS::AtMostOnce),
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
    ] {
        let packet = Packet::Publish(Publish {
            dup: false,
            qos,
            retain: true,
            topic: format!("kept/{n}"),
            packet_id: (qos != QoS::AtMostOnce).then(|| id(n)),
            payload: Bytes::from(format!("qos {n}")),
            properties: PublishProperties {
                user_properties: user.clone(),
                response_topic: Some("replies/kept".into()),
                correlation_data: Some(Bytes::from_static(b"334")),
                ..PublishProperties::default()
            },
        });
        // QoS 2 goes last: its PUBCOMP means the earlier ones are stored too.
        publish_acked(&mut publisher, packet).await;
    }
    // Live, and later from the store: the publisher's QoS and properties,
    // the user properties unaltered and in order [MQTT-3.3.2-17/18].
    let (mut late, _) = Raw::connect(addr, v5("kept-late", |_| {})).await;
    late.subscribe(1, vec![Subscription::new("kept/+", QoS::ExactlyOnce)])
        .await;
    for (who, sub) in [("live", &mut live), ("retained", &mut late)] {
        let mut got = Vec::new();
        for _ in 0..3 {
            let p = next_publish(sub).await;
            assert_eq!(p.properties.user_properties, user, "{who} {}", p.topic);
            assert_eq!(p.properties.response_topic.as_deref(), Some("replies/kept"));
            assert_eq!(p.properties.correlation_data.as_deref(), Some(&b"334"[..]));
            got.push((p.topic, p.qos, p.payload));
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
            "{who}"
        );
        assert_eq!(got[1].2.as_ref(), b"qos 1");
    }
    let (status, body) = get_json(&client(), &server.url, "/api/mqtt/kept%2F1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"], "qos 1");
    assert_eq!(body["mqtt"]["qos"], 1);
    server.stop().await;
}
