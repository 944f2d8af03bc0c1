//! Two Marquee servers ("nodes") with their store on one three-member etcd,
//! driven the way users drive them: a write on one node reaches REST, SSE,
//! WebSocket, MQTT and MQTT-over-WebSocket clients on the other, in one
//! order, each change once.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::etcd::EtcdCluster;
use common::mqtt::{Raw, connect_packet, publish};
use common::rumqtt::Mqtt;
use common::{SseClient, TestServer, WsClient, client, put, put_seq, seq_of};
use marquee::mqtt::{Ack, Packet, ProtocolVersion, QoS as MqttQoS, Subscription};
use rumqttc::QoS;
use serde_json::{Value, json};

async fn server_on(cluster: &EtcdCluster) -> TestServer {
    TestServer::on_etcd(cluster, |config| {
        // Room for every change of the load test, so a subscriber that reads
        // a little behind is not cut off: the test counts deliveries.
        config.subscriber_queue.events = 20_000;
        config.tables.push(marquee::store::TableDecl {
            name: "sensors".into(),
            schema: None,
        });
    })
    .await
}

fn mqtt_addr(server: &TestServer) -> SocketAddr {
    server.mqtt_addr()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_write_on_a_is_an_sse_event_on_b_with_the_same_seq() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();

    let mut on_b = SseClient::connect(&format!("{}/api/signs/", b.url), None).await;
    let state = on_b.until_sync().await;
    assert_eq!(state.len(), 1, "empty, then sync: {state:?}");

    let response = put(&http, &a.url, "/api/signs/lobby", &json!({"name": "Lobby"})).await;
    assert_eq!(response.status(), 201);
    let written: Value = response.json().await.expect("json");
    let seq = seq_of(&written);

    let event = on_b.next().await.expect("an event on B");
    assert_eq!(event.kind(), "put");
    assert_eq!(event.seq(), Some(seq));
    assert_eq!(event.json()["value"]["name"], "Lobby");

    // What A wrote, B reads at once (its GET waits for nothing it lacks).
    let (status, on_b_now) = common::get_json(&http, &b.url, "/api/signs/lobby").await;
    assert_eq!(status, 200);
    assert_eq!(on_b_now["name"], "Lobby");

    // Resume on B from a seq A made, at once (B may not have applied it yet).
    let second = put_seq(&http, &a.url, "/api/signs/lobby", &json!({"name": "Hall"})).await;
    let mut resumed =
        SseClient::connect(&format!("{}/api/signs/", b.url), Some(&seq.to_string())).await;
    let event = resumed
        .next()
        .await
        .expect("the change after the resume point");
    assert_eq!(event.seq(), Some(second));
    assert_eq!(event.json()["value"]["name"], "Hall");

    a.stop().await;
    b.stop().await;
}

/// Twenty REST writes on A, then five MQTT publishes without retain on A:
/// B's SSE, WebSocket and MQTT clients each get all of them, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_publishes_on_a_reach_every_protocol_on_b_in_order() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();

    let mut sse = SseClient::connect(&format!("{}/api/sensors/", b.url), None).await;
    sse.until_sync().await;
    let mut ws = WsClient::connect(&b.ws_url("/api/ws")).await;
    ws.send(json!({"type": "subscribe", "req": "1", "filter": "sensors/+"}))
        .await;
    ws.until_sync().await;
    let mut mqtt_b = Mqtt::connect(mqtt_addr(&b), "on-b").await;
    mqtt_b.subscribe("sensors/+").await;
    let (mut mqtt_ws_b, _) = Raw::connect_ws(
        &b.ws_url("/mqtt"),
        connect_packet(ProtocolVersion::V5, "ws-on-b", true),
    )
    .await;
    mqtt_ws_b
        .subscribe(
            1,
            vec![Subscription::new("sensors/+", MqttQoS::AtLeastOnce)],
        )
        .await;
    let mqtt_a = Mqtt::connect(mqtt_addr(&a), "on-a").await;

    let mut seqs = Vec::new();
    for n in 0..20 {
        let path = format!("/api/sensors/s{}", n % 4);
        seqs.push(put_seq(&http, &a.url, &path, &json!({"n": n})).await);
    }
    for n in 20..25 {
        mqtt_a
            .client
            .publish(
                "sensors/live",
                QoS::AtLeastOnce,
                false,
                json!({"n": n}).to_string(),
            )
            .await
            .expect("PUBLISH sent");
    }

    let within = Duration::from_secs(10);
    let mut sse_got = Vec::new();
    while sse_got.len() < 25 {
        let event = sse.next_within(within).await.expect("an SSE event on B");
        let value = event.json();
        sse_got.push((
            event.seq(),
            value["id"].clone(),
            value["value"]["n"].clone(),
        ));
    }
    let mut ws_got = Vec::new();
    while ws_got.len() < 25 {
        let message = ws.next_within(within).await.expect("a WS message on B");
        ws_got.push((
            message["seq"].as_u64(),
            message["id"].clone(),
            message["value"]["n"].clone(),
        ));
    }
    let mut mqtt_got = Vec::new();
    while mqtt_got.len() < 25 {
        let publish = mqtt_b.next(within).await.expect("an MQTT publish on B");
        let value: Value = serde_json::from_slice(&publish.payload).expect("JSON payload");
        mqtt_got.push((publish.topic.clone(), value["n"].clone()));
    }

    let mut mqtt_ws_got = Vec::new();
    while mqtt_ws_got.len() < 25 {
        match mqtt_ws_b.recv_within(within).await {
            Some(Packet::Publish(publish)) => {
                if let Some(id) = publish.packet_id {
                    mqtt_ws_b.send(&Packet::PubAck(Ack::new(id))).await;
                }
                let value: Value = serde_json::from_slice(&publish.payload).expect("JSON payload");
                mqtt_ws_got.push((publish.topic.clone(), value["n"].clone()));
            }
            other => panic!("MQTT over WebSocket on B: {other:?}"),
        }
    }

    let expected: Vec<(Option<u64>, Value, Value)> = (0..25)
        .map(|n| {
            let seq = seqs.get(n).copied();
            let id = if n < 20 {
                json!(format!("s{}", n % 4))
            } else {
                json!("live")
            };
            (seq, id, json!(n))
        })
        .collect();
    assert_eq!(sse_got, expected, "SSE on B");
    assert_eq!(ws_got, expected, "WebSocket on B");
    let expected_mqtt: Vec<(String, Value)> = expected
        .iter()
        .map(|(_, id, n)| (format!("sensors/{}", id.as_str().unwrap_or("")), n.clone()))
        .collect();
    assert_eq!(mqtt_got, expected_mqtt, "MQTT on B");
    assert_eq!(mqtt_ws_got, expected_mqtt, "MQTT over WebSocket on B");
    // Nothing more: each once.
    assert!(sse.next_within(Duration::from_millis(300)).await.is_none());
    assert!(ws.next_within(Duration::from_millis(300)).await.is_none());
    assert!(mqtt_b.next(Duration::from_millis(300)).await.is_none());
    assert!(
        mqtt_ws_b
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );

    a.stop().await;
    b.stop().await;
}

/// 10,000 writes from 16 concurrent writers, half on each node: SSE and MQTT
/// subscribers on both nodes see every change exactly once, in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_writes_over_two_nodes_reach_every_subscriber_once_in_one_order() {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 625;
    const TOTAL: usize = WRITERS * PER_WRITER;
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;

    let mut sse = Vec::new();
    let mut mqtt = Vec::new();
    for (name, node) in [("a", &a), ("b", &b)] {
        let mut stream = SseClient::connect(&format!("{}/api/sensors/", node.url), None).await;
        stream.until_sync().await;
        sse.push(stream);
        let mut subscriber = Mqtt::connect(mqtt_addr(node), &format!("load-{name}")).await;
        subscriber.subscribe("sensors/#").await;
        mqtt.push(subscriber);
    }

    let started = std::time::Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = if w % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        writers.push(tokio::spawn(async move {
            let http = client();
            let mut seqs = Vec::with_capacity(PER_WRITER);
            for i in 0..PER_WRITER {
                let path = format!("/api/sensors/w{w}-{}", i % 8);
                seqs.push(put_seq(&http, &url, &path, &json!({"w": w, "i": i})).await);
            }
            seqs
        }));
    }
    let mut acked = Vec::with_capacity(TOTAL);
    for writer in writers {
        let seqs = tokio::time::timeout(Duration::from_secs(300), writer)
            .await
            .expect("the writers finish within 5 minutes")
            .expect("writer task");
        acked.extend(seqs);
    }
    eprintln!(
        "{TOTAL} writes over two nodes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    acked.sort_unstable();

    let within = Duration::from_secs(30);
    let mut orders = Vec::new();
    for (i, stream) in sse.iter_mut().enumerate() {
        let mut seen = Vec::with_capacity(TOTAL);
        while seen.len() < TOTAL {
            let event = stream
                .next_within(within)
                .await
                .unwrap_or_else(|| panic!("SSE on node {i}: {} of {TOTAL}", seen.len()));
            let value = event.json();
            seen.push((
                event.seq(),
                value["value"]["w"].clone(),
                value["value"]["i"].clone(),
            ));
        }
        assert!(
            stream
                .next_within(Duration::from_millis(300))
                .await
                .is_none()
        );
        orders.push(seen);
    }
    let mut mqtt_orders = Vec::new();
    for (i, subscriber) in mqtt.iter_mut().enumerate() {
        let mut seen = Vec::with_capacity(TOTAL);
        while seen.len() < TOTAL {
            let publish = subscriber
                .next(within)
                .await
                .unwrap_or_else(|| panic!("MQTT on node {i}: {} of {TOTAL}", seen.len()));
            let value: Value = serde_json::from_slice(&publish.payload).expect("JSON payload");
            seen.push((value["w"].clone(), value["i"].clone()));
        }
        assert!(subscriber.next(Duration::from_millis(300)).await.is_none());
        mqtt_orders.push(seen);
    }

    let [on_a, on_b] = <[_; 2]>::try_from(orders).expect("two nodes");
    assert_eq!(
        on_a, on_b,
        "SSE: the same changes in the same order on both nodes"
    );
    let seqs: Vec<u64> = on_a.iter().filter_map(|(seq, _, _)| *seq).collect();
    common::assert_strictly_increasing(&seqs, "SSE seqs");
    assert_eq!(seqs, acked, "every acknowledged write, once");
    let [mqtt_a, mqtt_b] = <[_; 2]>::try_from(mqtt_orders).expect("two nodes");
    assert_eq!(mqtt_a, mqtt_b, "MQTT: one order on both nodes");
    let from_sse: Vec<(Value, Value)> = on_a.into_iter().map(|(_, w, i)| (w, i)).collect();
    assert_eq!(mqtt_a, from_sse, "MQTT in the order of the seqs");

    a.stop().await;
    b.stop().await;
}

/// A record deleted in etcd by another tool (`etcdctl del`) is a delete on
/// every node, and writing it again afterwards works (its version goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_by_another_tool_is_gone_everywhere_and_can_be_written_again() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();
    let made = put_seq(&http, &a.url, "/api/sensors/t1", &json!({"temp": 20})).await;
    // From the write on: B may not have applied it when the stream starts.
    let since = (made - 1).to_string();
    let mut on_b = SseClient::connect(&format!("{}/api/sensors/t1", b.url), Some(&since)).await;
    let made_on_b = on_b.next().await.expect("the put on B");
    assert_eq!(
        (made_on_b.kind(), made_on_b.seq()),
        ("put".into(), Some(made))
    );

    let log = marquee::store::etcd::EtcdLog::connect(&cluster.endpoints(), "/marquee/")
        .await
        .expect("connect");
    log.commit(&marquee::store::etcd::Batch::new("etcdctl-del").delete("sensors", "t1"))
        .await
        .expect("delete by another tool");
    let mut gone = on_b.next().await.expect("the delete on B");
    if gone.kind() == "sync" {
        gone = on_b.next().await.expect("the delete on B");
    }
    assert_eq!(gone.kind(), "delete");
    assert_eq!(gone.json()["version"], 2);
    let (status, _) = common::get_json(&http, &b.url, "/api/sensors/t1").await;
    assert_eq!(status, 404);

    let response = put(&http, &b.url, "/api/sensors/t1", &json!({"temp": 21})).await;
    assert_eq!(response.status(), 201, "created again");
    let again: Value = response.json().await.expect("json");
    assert_eq!(again["version"], 3);
    let (status, on_a) = common::get_json(&http, &a.url, "/api/sensors/t1").await;
    assert_eq!((status, on_a["temp"].clone()), (200, json!(21)));

    a.stop().await;
    b.stop().await;
}

/// A client that writes on A and then reads on B (say, behind a load
/// balancer) sees its write: B first catches up with every write
/// acknowledged before the read. GET, list and a stream's first state alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_on_a_is_read_on_b_at_once() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();
    for n in 0..100 {
        let path = format!("/api/sensors/r{}", n % 5);
        put_seq(&http, &a.url, &path, &json!({"n": n})).await;
        let (status, got) = common::get_json(&http, &b.url, &path).await;
        assert_eq!(
            (status, got["n"].clone()),
            (200, json!(n)),
            "GET on B, write {n}"
        );
        if n % 10 == 0 {
            let (_, page) = common::get_json(&http, &b.url, "/api/sensors/").await;
            let listed = page["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["id"] == format!("r{}", n % 5)))
                .map(|i| i["value"]["n"].clone());
            assert_eq!(listed, Some(json!(n)), "list on B, write {n}");
            let mut stream = SseClient::connect(&format!("{}{path}", b.url), None).await;
            let state = stream.until_sync().await;
            assert_eq!(
                state[0].json()["value"]["n"],
                json!(n),
                "stream on B, write {n}"
            );
        }
    }
    a.stop().await;
    b.stop().await;
}

/// A table declared on A is usable on B at once: written, read, listed and
/// streamed (B catches up before it calls a table unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_declared_on_a_is_used_on_b_at_once() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();
    for n in 0..10 {
        let table = format!("rooms{n}");
        let declared = http
            .post(format!("{}/api/_tables", a.url))
            .json(&json!({"name": table}))
            .send()
            .await
            .expect("declare");
        assert_eq!(declared.status(), 201, "declare {table}");
        let (status, page) = common::get_json(&http, &b.url, &format!("/api/{table}/")).await;
        assert_eq!(status, 200, "list {table} on B: {page}");
        let stream = format!("{}/api/{table}/", b.url);
        let mut events = SseClient::connect(&stream, None).await;
        assert_eq!(events.until_sync().await.len(), 1, "stream {table} on B");
        put_seq(&http, &b.url, &format!("/api/{table}/r"), &json!({"n": n})).await;
    }
    a.stop().await;
    b.stop().await;
}

/// MQTT publishers faster than etcd takes their messages (here: every etcd
/// member paused for a moment, with more QoS 1 publishes in flight than the
/// way to the other nodes holds) are slowed down, not refused: each publish
/// is acknowledged with success once etcd is back, and reaches a subscriber
/// on the other node once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publishers_faster_than_etcd_wait_for_room_instead_of_being_refused() {
    const PUBLISHERS: usize = 8;
    const EACH: usize = 800;
    let mut cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let mut counter = Mqtt::connect(mqtt_addr(&b), "counter").await;
    counter.subscribe("jobs/#").await;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let connect = connect_packet(ProtocolVersion::V5, &format!("publisher-{p}"), true);
        publishers.push(Raw::connect(mqtt_addr(&a), connect).await.0);
    }

    for member in 0..3 {
        cluster.pause(member);
    }
    let mut sending = tokio::task::JoinSet::new();
    for (p, mut raw) in publishers.into_iter().enumerate() {
        sending.spawn(async move {
            // All at once: small enough for the socket buffers both ways.
            let mut wire = bytes::BytesMut::new();
            for k in 0..EACH {
                let id = u16::try_from(k + 1).expect("packet id");
                let payload = format!("{p}-{k}");
                let packet = publish(
                    &format!("jobs/{p}"),
                    MqttQoS::AtLeastOnce,
                    id,
                    false,
                    payload.as_bytes(),
                );
                marquee::mqtt::encode(&packet, ProtocolVersion::V5, &mut wire).expect("encode");
            }
            raw.send_bytes(&wire).await;
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..EACH {
                match raw.recv_within(Duration::from_secs(30)).await {
                    Some(Packet::PubAck(ack)) => {
                        *reasons.entry(format!("{:?}", ack.reason_code)).or_default() += 1;
                    }
                    other => panic!("publisher {p}: {other:?}"),
                }
            }
            reasons
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for member in 0..3 {
        cluster.resume(member);
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(answered) = sending.join_next().await {
        for (reason, n) in answered.expect("publisher") {
            *reasons.entry(reason).or_default() += n;
        }
    }
    let all = PUBLISHERS * EACH;
    assert_eq!(reasons, BTreeMap::from([("Success".to_owned(), all)]));

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    while total < all {
        let Some(message) = counter.next(Duration::from_secs(20)).await else {
            break;
        };
        *received
            .entry(String::from_utf8_lossy(&message.payload).into_owned())
            .or_default() += 1;
        total += 1;
    }
    assert!(
        counter.next(Duration::from_millis(500)).await.is_none(),
        "nothing more"
    );
    let twice = received.values().filter(|n| **n > 1).count();
    assert_eq!((received.len(), twice), (all, 0), "each message once on B");
    a.stop().await;
    b.stop().await;
}

/// What A made a moment ago, B edits at once: a record patched and deleted,
/// a table dropped (B plans those writes on its cache; a miss there makes it
/// catch up first, as a client behind a load balancer needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_or_table_made_on_a_is_patched_deleted_and_dropped_on_b_at_once() {
    let cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let http = client();
    for n in 0..30 {
        let path = format!("/api/sensors/p{n}");
        put_seq(&http, &a.url, &path, &json!({"n": n})).await;
        let patched = http
            .patch(format!("{}{path}", b.url))
            .json(&json!({"patched": true}))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(patched.status(), 200, "PATCH on B, record {n}");
        let path = format!("/api/sensors/d{n}");
        put_seq(&http, &a.url, &path, &json!({"n": n})).await;
        let deleted = http
            .delete(format!("{}{path}", b.url))
            .send()
            .await
            .expect("DELETE");
        assert!(
            deleted.status().is_success(),
            "DELETE on B, record {n}: {}",
            deleted.status()
        );
    }
    for n in 0..10 {
        let table = format!("gone{n}");
        let declared = http
            .post(format!("{}/api/_tables", a.url))
            .json(&json!({"name": table}))
            .send()
            .await
            .expect("declare");
        assert_eq!(declared.status(), 201, "declare {table}");
        let dropped = http
            .delete(format!("{}/api/_tables/{table}?confirm={table}", b.url))
            .send()
            .await
            .expect("drop");
        assert!(
            dropped.status().is_success(),
            "drop {table} on B: {}",
            dropped.status()
        );
    }
    a.stop().await;
    b.stop().await;
}
