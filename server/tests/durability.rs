//! Order, exactly-once delivery, crash safety and slow consumers, under load.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const WRITERS: usize = 16;
const WRITES_PER_WRITER: usize = 625; // 10,000 in all
const RECORDS: usize = 4;

/// Per record, the seqs a subscriber saw, in arrival order.
fn check_stream(name: &str, events: &[Value], expected: &HashMap<String, Vec<u64>>) {
    let mut per_record: HashMap<String, Vec<u64>> = HashMap::new();
    for event in events {
        let id = event["id"].as_str().unwrap().to_owned();
        per_record
            .entry(id)
            .or_default()
            .push(event["seq"].as_u64().unwrap());
    }
    for (id, want) in expected {
        let got = per_record.get(id).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: {id} saw {} of {} changes",
            got.len(),
            want.len()
        );
        assert_eq!(
            &got, want,
            "{name}: {id} changes out of order or duplicated"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_writes_reach_every_subscriber_once_in_order() {
    let server = TestServer::start().await;
    let http = client();
    let url = server.url.clone();
    let total = WRITERS * WRITES_PER_WRITER;

    let mut sse = SseClient::connect(&format!("{url}/api/signs/"), None).await;
    sse.until_sync().await;
    let mut ws = WsClient::connect(&server.ws_url("/api/signs/")).await;
    ws.until_sync().await;
    let mut mux = WsClient::connect(&server.ws_url("/api/ws")).await;
    mux.send(json!({"type": "subscribe", "filter": "signs/#"}))
        .await;
    mux.until_sync().await;

    let sse_task = tokio::spawn(async move {
        let mut events = Vec::new();
        while events.len() < total {
            let Some(event) = sse.next().await else { break };
            if event.kind() == "put" {
                events.push(event.json());
            }
        }
        events
    });
    let ws_task = tokio::spawn(async move {
        let mut events = Vec::new();
        while events.len() < total {
            let Some(m) = ws.next().await else { break };
            events.push(m);
        }
        events
    });
    let mux_task = tokio::spawn(async move {
        let mut events = Vec::new();
        while events.len() < total {
            let Some(m) = mux.next().await else { break };
            events.push(m);
        }
        events
    });

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut acks = Vec::with_capacity(WRITES_PER_WRITER);
                for i in 0..WRITES_PER_WRITER {
                    let id = format!("r{}", (w + i) % RECORDS);
                    let response = put(
                        &http,
                        &url,
                        &format!("/api/signs/{id}"),
                        &json!({"name": format!("{w}-{i}")}),
                    )
                    .await;
                    assert!(response.status().is_success());
                    let event: Value = response.json().await.unwrap();
                    acks.push((id, event["seq"].as_u64().unwrap()));
                }
                acks
            })
        })
        .collect();
    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    let mut all_seqs = Vec::new();
    for writer in writers {
        for (id, seq) in writer.await.unwrap() {
            expected.entry(id).or_default().push(seq);
            all_seqs.push(seq);
        }
    }
    for seqs in expected.values_mut() {
        seqs.sort_unstable();
    }
    all_seqs.sort_unstable();
    assert_eq!(
        all_seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "seqs are gap-free and unique"
    );

    check_stream("sse", &sse_task.await.unwrap(), &expected);
    check_stream("record ws", &ws_task.await.unwrap(), &expected);
    check_stream("multiplexed ws", &mux_task.await.unwrap(), &expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = client();
    let acked = {
        let server = ChildServer::spawn(&data, &[]);
        let url = server.url.clone();
        let stop_at = Instant::now() + Duration::from_millis(1500);
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let http = http.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for i in 0..100_000 {
                        if Instant::now() > stop_at + Duration::from_secs(5) {
                            break;
                        }
                        let sent = http
                            .put(format!("{url}/api/messages/w{w}-{i}"))
                            .json(&json!({"text": format!("{w}-{i}")}))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().is_success() => {
                                let event: Value = r.json().await.unwrap_or(Value::Null);
                                match event["seq"].as_u64() {
                                    Some(seq) => acked.push((format!("w{w}-{i}"), seq)),
                                    None => break,
                                }
                            }
                            _ => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        tokio::time::sleep_until(stop_at.into()).await;
        let mut server = server;
        server.kill(); // SIGKILL while writes are in flight
        let mut acked = Vec::new();
        for writer in writers {
            acked.extend(writer.await.unwrap());
        }
        acked
    };
    assert!(
        acked.len() > 100,
        "the load ran: {} writes acknowledged",
        acked.len()
    );

    let server = ChildServer::spawn(&data, &[]);
    for (id, seq) in &acked {
        let response = http
            .get(format!("{}/api/messages/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged write {id} (seq {seq}) is present"
        );
    }
    // The change log is gap-free from 1 to the last seq.
    let mut since = 0;
    let mut expected = 1;
    loop {
        let (status, page) =
            get_json(&http, &server.url, &format!("/api/changes?since={since}")).await;
        assert_eq!(status, 200);
        let changes = page["changes"].as_array().unwrap();
        for change in changes {
            assert_eq!(change["seq"].as_u64().unwrap(), expected, "no gap in seq");
            expected += 1;
        }
        if changes.is_empty() {
            break;
        }
        since = page["next"].as_u64().unwrap();
    }
    let max_acked = acked.iter().map(|(_, s)| *s).max().unwrap();
    assert!(
        expected > max_acked,
        "the log reaches the last acknowledged seq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_cut_off_without_slowing_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(&dir.path().join("data"), &["--subscriber-queue", "512"]);
    let url = server.url.clone();
    let http = client();
    let ws_base = url.replacen("http", "ws", 1);

    // The slow one subscribes and then never reads.
    let mut slow = WsClient::connect(&format!("{ws_base}/api/ws")).await;
    slow.send(json!({"type": "subscribe", "filter": "mqtt/#"}))
        .await;
    slow.until_sync().await;
    let mut fast = WsClient::connect(&format!("{ws_base}/api/ws")).await;
    fast.send(json!({"type": "subscribe", "filter": "mqtt/#"}))
        .await;
    fast.until_sync().await;

    const WRITES: usize = 4000;
    // About 4 KB per change: a retained MQTT message of that size.
    let blob = "x".repeat(4000);
    let fast_task = tokio::spawn(async move {
        let mut seen = 0;
        while seen < WRITES {
            match fast.next().await {
                Some(m) if m["type"] == "put" => seen += 1,
                Some(_) => {}
                None => break,
            }
        }
        seen
    });
    let rss_before = rss_kib(server.pid());
    write_blobs(&http, &url, 8, WRITES, &blob).await;
    let fast_seen = tokio::time::timeout(Duration::from_secs(60), fast_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fast_seen, WRITES, "the fast subscriber got every change");
    let rss_after = rss_kib(server.pid());

    let metrics = metrics_text(&http, &url).await;
    assert!(metrics.contains("marquee_bus_cutoffs_total 1"), "{metrics}");

    // The slow one, reading at last, finds a bounded backlog that ends with the cut-off notice.
    let (backlog, last) = backlog(&mut slow).await;
    assert!(
        backlog < WRITES,
        "the slow subscriber's backlog was bounded ({backlog})"
    );
    assert_eq!(last["error"]["code"], "lagged", "last message {last}");
    // ~16 MB of changes went by; the server held on to far less than that.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory stayed bounded: {rss_before} KiB -> {rss_after} KiB"
    );
}

/// Large changes fill a slow subscriber's queue by their bytes long before
/// its count: ~80 MB of 200 KB changes cut off a reader that stopped reading
/// (at the default 4,096 changes it would have held on to all of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_of_large_changes_is_cut_off_by_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(
        &dir.path().join("data"),
        &["--subscriber-queue-bytes", "4194304"],
    );
    let url = server.url.clone();
    let http = client();
    let ws_base = url.replacen("http", "ws", 1);
    let mut slow = WsClient::connect(&format!("{ws_base}/api/ws")).await;
    slow.send(json!({"type": "subscribe", "filter": "mqtt/#"}))
        .await;
    slow.until_sync().await;

    const WRITES: usize = 400;
    let blob = "x".repeat(200_000);
    let rss_before = rss_kib(server.pid());
    write_blobs(&http, &url, 4, WRITES, &blob).await;
    let rss_after = rss_kib(server.pid());
    let metrics = metrics_text(&http, &url).await;
    assert!(metrics.contains("marquee_bus_cutoffs_total 1"), "{metrics}");

    let (backlog, last) = backlog(&mut slow).await;
    assert!(
        backlog < WRITES / 2,
        "the slow subscriber's backlog was bounded ({backlog} of {WRITES})"
    );
    assert_eq!(last["error"]["code"], "lagged", "last message {last}");
    assert!(
        rss_after < rss_before + 48 * 1024,
        "memory stayed bounded: {rss_before} KiB -> {rss_after} KiB"
    );
}

/// `writers` connections PUT `writes` changes between them to retained MQTT
/// topics, each a payload of `blob` (and a counter), and all must succeed.
async fn write_blobs(http: &reqwest::Client, url: &str, writers: usize, writes: usize, blob: &str) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let http = http.clone();
            let url = url.to_owned();
            let blob = blob.to_owned();
            tokio::spawn(async move {
                for i in 0..writes / writers {
                    let r = put(
                        &http,
                        &url,
                        &format!("/api/mqtt/s{w}"),
                        &json!({"payload": format!("{i} {blob}")}),
                    )
                    .await;
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// What a WebSocket subscriber finds once it reads at last: how many messages
/// were waiting, and the last of them.
async fn backlog(slow: &mut WsClient) -> (usize, Value) {
    let mut count = 0;
    let mut last = Value::Null;
    while let Some(m) = slow.next_within(Duration::from_secs(5)).await {
        count += 1;
        last = m;
    }
    (count, last)
}

/// A failed fsync is fatal: the write waiting for it is refused (503 with a
/// JSON error), nothing later is accepted, the process exits non-zero, and
/// the next start recovers every acknowledged write without reusing a seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_refuses_the_write_and_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_path(&dir);
    let http = client();
    let mut seen = Vec::new();
    {
        let mut server =
            ChildServer::spawn_with_env(&data, &[], &[("MARQUEE_FAULT_FAIL_FSYNC_AFTER", "3")]);
        for i in 0..3 {
            let response = put(&http, &server.url, &format!("/api/signs/s{i}"), &json!({})).await;
            assert_eq!(response.status(), 201);
            let event: Value = response.json().await.unwrap();
            seen.push(event["seq"].as_u64().unwrap());
        }
        let failed = put(&http, &server.url, "/api/signs/doomed", &json!({})).await;
        assert_eq!(failed.status(), 503);
        let body: Value = failed.json().await.unwrap();
        assert_eq!(body["error"]["code"], "storage_failed", "{body}");
        let status = server
            .wait_exit(Duration::from_secs(20))
            .expect("the process exits after a failed fsync");
        assert!(!status.success(), "exit status {status:?}");
    }
    let server = ChildServer::spawn(&data, &[]);
    for i in 0..3 {
        let (status, _) = get_json(&http, &server.url, &format!("/api/signs/s{i}")).await;
        assert_eq!(status, 200, "acknowledged write s{i} lost");
    }
    let after = put(&http, &server.url, "/api/signs/after", &json!({})).await;
    assert_eq!(after.status(), 201);
    let event: Value = after.json().await.unwrap();
    let seq = event["seq"].as_u64().unwrap();
    assert!(
        seq > *seen.iter().max().unwrap(),
        "seq {seq} reused (saw {seen:?})"
    );
}

/// A failed fsync refuses the write on the protocol it came from, too: an
/// MQTT retained publish gets PUBACK 0x80 (before the DISCONNECT that the
/// stopping server sends) and a WebSocket write an error reply.
#[tokio::test]
async fn a_failed_fsync_refuses_mqtt_and_websocket_writes_with_their_own_errors() {
    use common::mqtt::{Raw, connect_packet, publish};
    use marquee::mqtt::{Packet, ProtocolVersion, QoS, ReasonCode};

    let dir = tempfile::tempdir().unwrap();
    let data = data_path(&dir);
    let http = client();
    let fail_next = [("MARQUEE_FAULT_FAIL_FSYNC_AFTER", "0")];

    let mut server = ChildServer::spawn_with_env(&data, &[], &fail_next);
    let (mut raw, _) = Raw::connect(
        server.mqtt,
        connect_packet(ProtocolVersion::V5, "doomed", true),
    )
    .await;
    raw.send(&publish(
        "sensors/by-mqtt",
        QoS::AtLeastOnce,
        7,
        true,
        br#"{"n":1}"#,
    ))
    .await;
    match raw.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.packet_id.get(), 7);
            assert_eq!(ack.reason_code, ReasonCode::UnspecifiedError);
        }
        other => panic!("expected PUBACK 0x80, got {other:?}"),
    }
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the process exits after a failed fsync");
    assert!(!status.success(), "exit status {status:?}");

    let mut server = ChildServer::spawn_with_env(&data, &[], &fail_next);
    let ws_url = format!("{}/api/ws", server.url.replacen("http", "ws", 1));
    let mut ws = WsClient::connect(&ws_url).await;
    ws.send(json!({"type": "put", "req": "w1", "table": "mqtt", "id": "by-ws", "value": {"n": 1}}))
        .await;
    let mut others = Vec::new();
    let refused = ws.reply("w1", &mut others).await;
    assert_eq!(refused["error"]["code"], "storage_failed", "{refused}");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the process exits after a failed fsync");
    assert!(!status.success(), "exit status {status:?}");

    // What the failed batch left is for recovery to decide; the store opens
    // and takes writes again.
    let server = ChildServer::spawn(&data, &[]);
    let after = put(&http, &server.url, "/api/devices/after", &json!({})).await;
    assert_eq!(after.status(), 201);
}
