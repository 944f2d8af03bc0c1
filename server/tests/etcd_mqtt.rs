//! MQTT across two Marquee nodes on one three-member etcd: a client id that
//! connects to node B takes over its connection on node A, as a second
//! connection on one node does [MQTT-3.1.4-3], with its persistent session.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::etcd::EtcdCluster;
use common::mqtt::{Raw, connect_packet, publish};
use common::{TestServer, client, put};
use marquee::mqtt::{Ack, Packet, ProtocolVersion, QoS, ReasonCode, Subscription};
use serde_json::json;

async fn server_on(cluster: &EtcdCluster) -> TestServer {
    TestServer::on_etcd(cluster, |config| {
        config.tables.push(marquee::store::TableDecl {
            name: "sensors".into(),
            schema: None,
        });
    })
    .await
}

fn sensors() -> Vec<Subscription> {
    vec![Subscription::new("sensors/+", QoS::AtLeastOnce)]
}

/// The topics of the publishes `raw` gets (each acknowledged) until it has
/// been quiet for `quiet`.
async fn topics_until_quiet(raw: &mut Raw, quiet: Duration) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(packet) = raw.recv_within(quiet).await {
        match packet {
            Packet::Publish(p) => {
                if let Some(id) = p.packet_id {
                    raw.send(&Packet::PubAck(Ack::new(id))).await;
                }
                topics.push(p.topic);
            }
            other => panic!("after {topics:?}: {other:?}"),
        }
    }
    topics
}

async fn write_sensor(url: &str, id: &str) {
    let response = put(
        &client(),
        url,
        &format!("/api/sensors/{id}"),
        &json!({"n": 1}),
    )
    .await;
    assert!(response.status().is_success(), "{}", response.status());
}

fn mqtt(server: &TestServer) -> SocketAddr {
    server.mqtt_addr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_4_3_a_connect_on_b_takes_over_the_connection_on_a() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;

    // MQTT 5: the old connection is told why.
    let (mut on_a, ack) =
        Raw::connect(mqtt(&a), connect_packet(ProtocolVersion::V5, "x", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    on_a.subscribe(1, sensors()).await;
    let (mut on_b, ack) =
        Raw::connect(mqtt(&b), connect_packet(ProtocolVersion::V5, "x", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(!ack.session_present, "a clean start");
    let (closed, seen) = on_a.closed().await;
    assert!(closed, "A closes its connection of x");
    assert!(
        seen.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason_code == ReasonCode::SessionTakenOver)
        ),
        "DISCONNECT 0x8E on A: {seen:?}"
    );
    on_b.subscribe(1, sensors()).await;
    write_sensor(&a.url, "s1").await;
    let topics = topics_until_quiet(&mut on_b, Duration::from_millis(1500)).await;
    assert_eq!(topics, vec!["sensors/s1"], "once, on B");

    // MQTT 3.1.1: the old socket is closed.
    let (mut old, _) =
        Raw::connect(mqtt(&b), connect_packet(ProtocolVersion::V311, "y", true)).await;
    let (mut new, ack) =
        Raw::connect(mqtt(&a), connect_packet(ProtocolVersion::V311, "y", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let (closed, seen) = old.closed().await;
    assert!(closed, "B closes its connection of y: {seen:?}");
    new.send(&Packet::PingReq).await;
    assert!(matches!(new.recv().await, Some(Packet::PingResp)));

    // The first connection on a node is not closed by an older claim
    // elsewhere: x back on A stays.
    let (mut back, ack) =
        Raw::connect(mqtt(&a), connect_packet(ProtocolVersion::V5, "x", true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let (closed, _) = on_b.closed().await;
    assert!(closed, "B closes x once it is back on A");
    tokio::time::sleep(Duration::from_millis(500)).await;
    back.send(&Packet::PingReq).await;
    assert!(
        matches!(back.recv().await, Some(Packet::PingResp)),
        "x stays on A"
    );

    // Client ids the nodes assign are their own: none takes over another.
    let (mut first, ack) =
        Raw::connect(mqtt(&a), connect_packet(ProtocolVersion::V5, "", true)).await;
    let first_id = ack.properties.assigned_client_identifier.clone();
    let (mut second, ack) =
        Raw::connect(mqtt(&b), connect_packet(ProtocolVersion::V5, "", true)).await;
    assert!(first_id.is_some());
    assert_ne!(first_id, ack.properties.assigned_client_identifier);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for raw in [&mut first, &mut second] {
        raw.send(&Packet::PingReq).await;
        assert!(matches!(raw.recv().await, Some(Packet::PingResp)));
    }

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_moves_with_its_client_to_another_node() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;

    let (mut on_a, ack) = Raw::connect(
        mqtt(&a),
        connect_packet(ProtocolVersion::V311, "keeper", false),
    )
    .await;
    assert!(!ack.session_present);
    on_a.subscribe(1, sensors()).await;
    write_sensor(&b.url, "before").await;
    assert_eq!(
        topics_until_quiet(&mut on_a, Duration::from_millis(1000)).await,
        vec!["sensors/before"]
    );

    let (mut on_b, ack) = Raw::connect(
        mqtt(&b),
        connect_packet(ProtocolVersion::V311, "keeper", false),
    )
    .await;
    assert!(ack.session_present, "the session A had [MQTT-3.2.2-2]");
    let (closed, _) = on_a.closed().await;
    assert!(closed, "A closes its connection of keeper");

    // Without subscribing again.
    write_sensor(&a.url, "after").await;
    let topics = topics_until_quiet(&mut on_b, Duration::from_millis(1500)).await;
    assert_eq!(
        topics,
        vec!["sensors/after"],
        "once, not what A delivered before"
    );

    // And back: A has the session B saved, not its own older copy.
    on_b.subscribe(2, vec![Subscription::new("more/+", QoS::AtLeastOnce)])
        .await;
    let (mut again, ack) = Raw::connect(
        mqtt(&a),
        connect_packet(ProtocolVersion::V311, "keeper", false),
    )
    .await;
    assert!(ack.session_present);
    let (closed, _) = on_b.closed().await;
    assert!(closed, "B closes its connection of keeper");
    write_sensor(&b.url, "back").await;
    let (mut publisher, _) = Raw::connect(
        mqtt(&b),
        connect_packet(ProtocolVersion::V311, "publisher", true),
    )
    .await;
    publisher
        .send(&publish("more/x", QoS::AtLeastOnce, 1, false, b"hi"))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let mut topics = topics_until_quiet(&mut again, Duration::from_millis(1500)).await;
    topics.sort();
    assert_eq!(topics, vec!["more/x", "sensors/back"]);

    // Away from A, then on B: what was published meanwhile is waiting, and
    // B does not wait for a save from A, which saved it when it left.
    again.send(&Packet::Disconnect(Default::default())).await;
    assert!(again.closed().await.0);
    write_sensor(&a.url, "away").await;
    let started = std::time::Instant::now();
    let (mut later, ack) = Raw::connect(
        mqtt(&b),
        connect_packet(ProtocolVersion::V311, "keeper", false),
    )
    .await;
    assert!(ack.session_present);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "CONNACK after {:?}",
        started.elapsed()
    );
    assert_eq!(
        topics_until_quiet(&mut later, Duration::from_millis(1500)).await,
        vec!["sensors/away"]
    );

    // A clean start on another node ends the session there was
    // [MQTT-3.1.2-4]: the old node's save of it does not bring it back.
    let (clean, ack) = Raw::connect(
        mqtt(&a),
        connect_packet(ProtocolVersion::V311, "keeper", true),
    )
    .await;
    assert!(!ack.session_present);
    let (closed, _) = later.closed().await;
    assert!(closed, "B closes its connection of keeper");
    // B saves the session it had once it has closed its connection; A
    // waits for that save before its CONNACK and forgets it, so even a
    // clean connection that ends at once leaves nothing to resume.
    drop(clean);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_resumed, ack) = Raw::connect(
        mqtt(&b),
        connect_packet(ProtocolVersion::V311, "keeper", false),
    )
    .await;
    assert!(
        !ack.session_present,
        "the session ended with the clean start"
    );

    a.stop().await;
    b.stop().await;
}
