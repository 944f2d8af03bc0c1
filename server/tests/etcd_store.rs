//! Two or three `Store`s ("nodes", each with its own data dir as its cache)
//! with their records on one three-member etcd cluster: one order of changes
//! on every node, writes that race on one record, restarts and compaction.

mod common;

use std::sync::Arc;
use std::time::Duration;

use app::event::{ChangeEvent, ChangeType, Origin};
use common::etcd::EtcdCluster;
use marquee::bus::{Bus, Subscriber};
use marquee::metrics::Metrics;
use marquee::store::{EtcdAddress, Store, StoreAddress, StoreOptions, WriteOp};
use marquee::topic::TopicFilter;
use serde_json::{Value, json};

async fn node(cluster: &EtcdCluster, dir: &tempfile::TempDir, name: &str) -> Store {
    let metrics = Arc::new(Metrics::default());
    Store::connect(
        StoreOptions {
            data_dir: dir.path().join(name),
            change_log_window: 10_000,
            tables: Vec::new(),
            fail_persist_after: None,
            address: StoreAddress::Etcd(EtcdAddress {
                endpoints: cluster.endpoints(),
                prefix: "/marquee/".into(),
            }),
        },
        Bus::new(100_000, metrics.clone()),
        metrics,
    )
    .await
    .unwrap_or_else(|e| panic!("node {name}: {e}\n{}", cluster.log_tails()))
}

fn everything(store: &Store) -> Subscriber {
    let subscriber = store.bus().subscribe();
    subscriber.add_filter(&TopicFilter::parse("#").expect("filter"));
    subscriber
}

async fn recv(subscriber: &mut Subscriber) -> Arc<ChangeEvent> {
    tokio::time::timeout(Duration::from_secs(20), subscriber.recv())
        .await
        .expect("an event within 20 s")
        .expect("the bus goes on")
}

fn put(table: &str, id: &str, value: Value) -> WriteOp {
    WriteOp::Put {
        table: table.into(),
        id: Some(id.into()),
        value,
        if_match: None,
    }
}

/// What two nodes' buses must agree on.
fn key(e: &ChangeEvent) -> (Option<u64>, ChangeType, String, Option<u64>, Option<Value>) {
    (e.seq, e.kind, e.topic(), e.version, e.value.clone())
}

async fn caught_up(store: &Store, seq: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.last_seq() < seq {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node stuck at {}",
            store.last_seq()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_etcd_share_records_and_one_event_order() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&cluster, &dir, "a").await;
    let b = node(&cluster, &dir, "b").await;
    let mut bus_a = everything(&a);
    let mut bus_b = everything(&b);

    // A write on A: read on B, on B's bus with the same seq.
    let written = a
        .write(
            put("signs", "lobby", json!({"name": "Lobby"})),
            Origin::Rest,
        )
        .await
        .expect("write on A");
    let seq = written.seq.expect("a seq");
    assert!(written.created);
    assert_eq!(written.version, Some(1));
    assert_eq!(
        written.value.as_ref().map(|v| &v["width"]),
        Some(&json!(64)),
        "normalised"
    );
    let on_a = recv(&mut bus_a).await;
    assert_eq!(
        key(&on_a),
        key(&written),
        "A's bus has it by the time write returns"
    );
    let on_b = recv(&mut bus_b).await;
    assert_eq!(key(&on_b), key(&written));
    caught_up(&b, seq).await;
    let record = b.get("signs", "lobby").await.expect("get").expect("on B");
    assert_eq!((record.version, record.seq), (1, seq));
    assert_eq!(Some(&record.value), written.value.as_ref());

    // Patch on B, delete on A, re-create on B: Marquee's versions continue
    // across the delete; every change on both buses in the same order.
    let patched = b
        .write(
            WriteOp::Patch {
                table: "signs".into(),
                id: "lobby".into(),
                patch: json!({"name": "Hall"}),
                if_match: Some(1),
            },
            Origin::Mqtt,
        )
        .await
        .expect("patch on B");
    assert_eq!(
        (patched.kind, patched.version),
        (ChangeType::Patch, Some(2))
    );
    // A stale If-Match on A (its cache may lag; the CAS catches it either way).
    let stale = a
        .write(
            WriteOp::Delete {
                table: "signs".into(),
                id: "lobby".into(),
                if_match: Some(1),
            },
            Origin::Rest,
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(marquee::store::StoreError::VersionMismatch {
                expected: 1,
                current: 2
            })
        ),
        "{stale:?}"
    );
    let deleted = a
        .write(
            WriteOp::Delete {
                table: "signs".into(),
                id: "lobby".into(),
                if_match: None,
            },
            Origin::Rest,
        )
        .await
        .expect("delete on A");
    assert_eq!(deleted.version, Some(3));
    let again = b
        .write(put("signs", "lobby", json!({"name": "Back"})), Origin::Ws)
        .await
        .expect("re-create on B");
    assert_eq!(again.version, Some(4));
    assert!(again.created);
    for expected in [&patched, &deleted, &again] {
        assert_eq!(key(&*recv(&mut bus_a).await), key(expected));
        assert_eq!(key(&*recv(&mut bus_b).await), key(expected));
    }

    // Concurrent writers on both nodes, half of them patching the same few
    // records (CAS conflicts, re-plans): one order on both buses.
    let per_node = 100usize;
    let mut tasks = Vec::new();
    for (name, store) in [("a", a.clone()), ("b", b.clone())] {
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..per_node / 4 {
                    let op = if i % 2 == 0 {
                        put("mqtt", &format!("{name}{w}-{i}"), json!({"i": i}))
                    } else {
                        WriteOp::Patch {
                            table: "signs".into(),
                            id: "lobby".into(),
                            patch: json!({"name": format!("{name}{w}-{i}")}),
                            if_match: None,
                        }
                    };
                    let event = store
                        .write(op, Origin::Rest)
                        .await
                        .expect("concurrent write");
                    seqs.push(event.seq.expect("seq"));
                }
                seqs
            }));
        }
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    acked.sort_unstable();
    let total = 2 * per_node;
    assert_eq!(acked.len(), total);
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..total {
        seen_a.push(key(&*recv(&mut bus_a).await));
        seen_b.push(key(&*recv(&mut bus_b).await));
    }
    assert_eq!(
        seen_a, seen_b,
        "the same events in the same order on both nodes"
    );
    let seqs: Vec<u64> = seen_a.iter().filter_map(|k| k.0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq strictly increasing"
    );
    assert_eq!(seqs, acked, "every acked write once on the bus");
    // The contended record's versions went up by one per patch.
    let versions: Vec<u64> = seen_a
        .iter()
        .filter(|k| k.2 == "signs/lobby")
        .filter_map(|k| k.3)
        .collect();
    let patches = 8 * (per_node / 4 / 2) as u64;
    assert_eq!(versions, (5..5 + patches).collect::<Vec<_>>());

    // A third node joining late builds its cache from a snapshot (tombstones
    // included) and then agrees with the others.
    let c = node(&cluster, &dir, "c").await;
    let last = a.last_seq().max(b.last_seq());
    caught_up(&c, last).await;
    let lobby_c = c.get("signs", "lobby").await.expect("get").expect("on C");
    let lobby_a = a.get("signs", "lobby").await.expect("get").expect("on A");
    assert_eq!(lobby_c, lobby_a);
    let page_a = a.list("mqtt", None, 1000).await.expect("list A");
    let page_c = c.list("mqtt", None, 1000).await.expect("list C");
    assert_eq!(page_a.items.len(), total - patches as usize);
    assert_eq!(page_c.items, page_a.items);

    let written = c
        .write(put("mqtt", "from-c", json!({})), Origin::Rest)
        .await
        .expect("write on C");
    assert_eq!(key(&*recv(&mut bus_a).await), key(&written));
    assert_eq!(key(&*recv(&mut bus_b).await), key(&written));

    // Resume: changes since a seq, served from B's cache.
    let (changes, _) = b
        .changes_since(seq, None, 1000)
        .await
        .expect("changes since");
    assert_eq!(changes.first().map(|e| e.seq), Some(patched.seq));
    assert_eq!(changes.last().map(|e| e.seq), Some(written.seq));

    for store in [a, b, c] {
        store.shutdown().await;
    }
}

async fn same_records(x: &Store, y: &Store, table: &str) {
    let page_x = x.list(table, None, 1000).await.expect("list");
    let page_y = y.list(table, None, 1000).await.expect("list");
    assert_eq!(page_x.items, page_y.items);
}

/// Drops a node and waits until its data dir can be opened again.
async fn stop(store: Store) {
    store.shutdown().await;
    drop(store);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_from_its_cache_or_resnapshots_after_compaction() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&cluster, &dir, "a").await;
    let b = node(&cluster, &dir, "b").await;
    for i in 0..10 {
        a.write(put("mqtt", &format!("r{i}"), json!({"i": i})), Origin::Rest)
            .await
            .expect("write");
    }
    caught_up(&b, a.last_seq()).await;
    stop(b).await;

    // Missed while down, then resumed from the cache's last seq by the watch.
    let before = a.last_seq();
    for i in 10..15 {
        a.write(put("mqtt", &format!("r{i}"), json!({"i": i})), Origin::Rest)
            .await
            .expect("write");
    }
    let gone = WriteOp::Delete {
        table: "mqtt".into(),
        id: "r0".into(),
        if_match: None,
    };
    a.write(gone, Origin::Rest).await.expect("delete");
    let b = node(&cluster, &dir, "b").await;
    caught_up(&b, a.last_seq()).await;
    same_records(&a, &b, "mqtt").await;
    let (changes, _) = b.changes_since(before, None, 100).await.expect("changes");
    assert_eq!(changes.len(), 6, "the missed changes are in B's log too");
    stop(b).await;

    // Missed beyond the compaction floor: B re-reads the records.
    for i in 15..20 {
        a.write(put("mqtt", &format!("r{i}"), json!({"i": i})), Origin::Rest)
            .await
            .expect("write");
    }
    a.write(
        WriteOp::Delete {
            table: "mqtt".into(),
            id: "r1".into(),
            if_match: None,
        },
        Origin::Rest,
    )
    .await
    .expect("delete");
    let log = marquee::store::etcd::EtcdLog::connect(&cluster.endpoints(), "/marquee/")
        .await
        .expect("connect");
    log.compact(a.last_seq()).await.expect("compact");
    let b = node(&cluster, &dir, "b").await;
    caught_up(&b, a.last_seq()).await;
    same_records(&a, &b, "mqtt").await;
    assert!(b.get("mqtt", "r1").await.expect("get").is_none());
    // The version a re-create continues from survived the snapshot (a tombstone).
    let again = b
        .write(put("mqtt", "r1", json!({})), Origin::Rest)
        .await
        .expect("re-create");
    assert_eq!(again.version, Some(3));
    let resumed = b.changes_since(1, None, 10).await;
    assert!(
        matches!(resumed, Err(marquee::store::StoreError::ResumeGap { .. })),
        "{resumed:?}"
    );
    for store in [a, b] {
        store.shutdown().await;
    }
}

/// A client that wrote (or read) on A resumes on B with A's seq at once: B may
/// not have applied it yet, which must not look like a resume gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_from_another_node_is_a_resume_point_not_a_gap() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&cluster, &dir, "a").await;
    let b = node(&cluster, &dir, "b").await;
    let mut early = 0;
    for i in 0..50 {
        let written = a
            .write(put("mqtt", &format!("x{i}"), json!({"i": i})), Origin::Rest)
            .await
            .expect("write");
        let seq = written.seq.expect("seq");
        if b.last_seq() < seq {
            early += 1;
        }
        let resumed = b.changes_since(seq, None, 10).await;
        assert!(
            matches!(&resumed, Ok((events, _)) if events.is_empty()),
            "{resumed:?}"
        );
    }
    eprintln!("B had not applied A's write yet in {early} of 50");
    for store in [a, b] {
        store.shutdown().await;
    }
}
