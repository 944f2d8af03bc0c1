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
        Bus::new(marquee::bus::QueueLimit::events(100_000), metrics.clone()),
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

/// Polls `check` until it holds (a node's applier follows the others' writes
/// a moment later), for at most 20 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn things(name: &str) -> marquee::store::TableDecl {
    marquee::store::TableDecl {
        name: name.into(),
        schema: Some(json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"]
        })),
    }
}

/// Accounts, tokens, saved MQTT sessions and table declarations live on
/// etcd like the records: what one node writes, every node reads, refuses
/// on and is told about, and a node joining late has it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_tokens_sessions_and_tables_are_shared_by_every_node() {
    use marquee::store::StoreError;

    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&cluster, &dir, "a").await;
    let b = node(&cluster, &dir, "b").await;

    // An account made on A: on B, and a second create there is refused.
    a.put_account("alice", b"alice v1".to_vec(), true)
        .await
        .expect("create on A");
    assert_eq!(
        a.account("alice").expect("read"),
        Some(b"alice v1".to_vec())
    );
    eventually("B has alice", || {
        b.account("alice").expect("read").is_some()
    })
    .await;
    assert_eq!(
        b.put_account("alice", b"other".to_vec(), true).await,
        Err(StoreError::AccountExists("alice".into()))
    );
    assert_eq!(
        b.put_account("bob", b"bob".to_vec(), false).await,
        Err(StoreError::NoSuchAccount("bob".into()))
    );
    // An update on B, seen on A; a change of account tells A's connections.
    let mut access_a = a.access_changes();
    access_a.borrow_and_update();
    b.put_account("alice", b"alice v2".to_vec(), false)
        .await
        .expect("update on B");
    tokio::time::timeout(Duration::from_secs(20), access_a.changed())
        .await
        .expect("A told within 20 s")
        .expect("the store goes on");
    eventually("A has alice v2", || {
        a.account("alice").expect("read") == Some(b"alice v2".to_vec())
    })
    .await;
    // Made and removed on A: B does not keep it; removing it again fails.
    a.put_account("carol", b"carol".to_vec(), true)
        .await
        .expect("create carol");
    a.delete_account("carol").await.expect("delete carol");
    assert_eq!(
        a.delete_account("carol").await,
        Err(StoreError::NoSuchAccount("carol".into()))
    );
    eventually("B has no carol", || {
        b.account("carol").expect("read").is_none()
    })
    .await;
    // A's cache may still have carol; the condition catches it either way.
    assert_eq!(
        b.put_account("carol", b"back".to_vec(), false).await,
        Err(StoreError::NoSuchAccount("carol".into()))
    );
    let names = |store: &Store| store.accounts().expect("accounts");
    eventually("the same accounts", || names(&a) == names(&b)).await;
    assert_eq!(names(&a), vec![b"alice v2".to_vec()]);

    // A token set on A is found on B; its removal on B tells A.
    let hash: Vec<u8> = (0..32u8).collect();
    a.set_token(&hash, Some(b"token".to_vec()))
        .await
        .expect("token on A");
    eventually("B has the token", || {
        b.token(&hash).expect("read") == Some(b"token".to_vec())
    })
    .await;
    assert_eq!(
        b.tokens().expect("tokens"),
        vec![(hash.clone(), b"token".to_vec())]
    );
    // Its use recorded on B (present: an update).
    b.set_token(&hash, Some(b"token, used".to_vec()))
        .await
        .expect("touch on B");
    eventually("A sees the use", || {
        a.token(&hash).expect("read") == Some(b"token, used".to_vec())
    })
    .await;
    let mut access_a = a.access_changes();
    access_a.borrow_and_update();
    b.set_token(&hash, None).await.expect("revoke on B");
    tokio::time::timeout(Duration::from_secs(20), access_a.changed())
        .await
        .expect("A told within 20 s")
        .expect("the store goes on");
    assert_eq!(a.token(&hash).expect("read"), None, "gone once A is told");
    // A use recorded (on B) racing the token's removal (on A) never brings
    // it back, whichever commits first.
    for round in 0..8u8 {
        let second: Vec<u8> = (0..32u8).map(|i| i.wrapping_add(100 + round)).collect();
        a.set_token(&second, Some(b"second".to_vec()))
            .await
            .expect("second token");
        eventually("B has the second token", || {
            b.token(&second).expect("read").is_some()
        })
        .await;
        let (revoked, touched) = tokio::join!(
            a.set_token(&second, None),
            b.set_token(&second, Some(b"second, used".to_vec()))
        );
        revoked.expect("revoke");
        touched.expect("touch");
        // Both writes are applied on their own nodes; once each node has
        // the other's too, neither has the token.
        let last = a.last_seq().max(b.last_seq());
        caught_up(&a, last).await;
        caught_up(&b, last).await;
        assert_eq!(a.token(&second).expect("read"), None, "round {round}");
        assert_eq!(b.token(&second).expect("read"), None, "round {round}");
    }

    // A table declared on A takes records (checked by its schema) on B.
    let info = a.declare_table(things("things")).await.expect("declare");
    assert_eq!(info.name, "things");
    eventually("B has things", || b.table_info("things").is_some()).await;
    assert_eq!(
        b.table_info("things").and_then(|t| t.schema),
        things("things").schema
    );
    assert_eq!(
        b.declare_table(things("things")).await,
        Err(StoreError::TableExists("things".into()))
    );
    let written = b
        .write(put("things", "t1", json!({"n": 1})), Origin::Rest)
        .await
        .expect("a record on B");
    let refused = b
        .write(put("things", "t2", json!({"n": "one"})), Origin::Rest)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    // A drop while it has records is refused, on either node.
    assert_eq!(
        b.drop_table("things").await,
        Err(StoreError::TableNotEmpty("things".into()))
    );
    assert_eq!(
        a.drop_table("things").await,
        Err(StoreError::TableNotEmpty("things".into()))
    );
    assert_eq!(
        a.drop_table("signs").await,
        Err(StoreError::BuiltIn("signs".into()))
    );
    assert!(written.seq.is_some());

    // A session saved on A is in B's saved sessions; forgetting it too.
    a.save_session("device-1", Some(b"subs 1".to_vec()))
        .await
        .expect("save");
    a.save_session("device-2", Some(b"subs 2".to_vec()))
        .await
        .expect("save");
    eventually("B has both sessions", || {
        b.saved_sessions().expect("sessions").len() == 2
    })
    .await;
    b.save_session("device-2", None).await.expect("forget on B");
    eventually("A has one session", || {
        a.saved_sessions().expect("sessions") == vec![("device-1".to_owned(), b"subs 1".to_vec())]
    })
    .await;

    // A late-joining node (a fresh data dir) has all of it once connected.
    let c = node(&cluster, &dir, "c").await;
    assert_eq!(
        c.account("alice").expect("read"),
        Some(b"alice v2".to_vec())
    );
    assert_eq!(c.accounts().expect("accounts").len(), 1);
    assert!(c.tokens().expect("tokens").is_empty());
    assert_eq!(
        c.saved_sessions().expect("sessions"),
        vec![("device-1".to_owned(), b"subs 1".to_vec())]
    );
    assert_eq!(
        c.table_info("things").and_then(|t| t.schema),
        things("things").schema
    );
    let refused = c
        .write(put("things", "t3", json!({"n": "three"})), Origin::Rest)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );

    // Emptied on C, dropped on C: gone on every node.
    let deleted = c
        .write(
            WriteOp::Delete {
                table: "things".into(),
                id: "t1".into(),
                if_match: None,
            },
            Origin::Rest,
        )
        .await
        .expect("delete on C");
    caught_up(&c, deleted.seq.expect("seq")).await;
    c.drop_table("things").await.expect("drop on C");
    for store in [&a, &b, &c] {
        eventually("things dropped", || store.table_info("things").is_none()).await;
    }
    assert_eq!(
        a.write(put("things", "t1", json!({"n": 1})), Origin::Rest)
            .await
            .map(|_| ()),
        Err(StoreError::NoSuchTable("things".into()))
    );

    for store in [a, b, c] {
        store.shutdown().await;
    }
}

/// A drop racing a record write on another node: never both succeed, so no
/// record is left in a dropped table and no write lands in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_drop_and_a_record_write_racing_on_two_nodes_never_both_succeed() {
    use marquee::store::StoreError;

    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&cluster, &dir, "a").await;
    let b = node(&cluster, &dir, "b").await;
    let (mut dropped, mut written) = (0, 0);
    for round in 0..12 {
        let name = format!("race{round}");
        a.declare_table(things(&name)).await.expect("declare");
        eventually("B has the table", || b.table_info(&name).is_some()).await;
        let (drop, write) = tokio::join!(
            a.drop_table(&name),
            b.write(put(&name, "r", json!({"n": round})), Origin::Rest)
        );
        match (&drop, &write) {
            (Ok(()), Err(StoreError::NoSuchTable(_))) => dropped += 1,
            (Err(StoreError::TableNotEmpty(_)), Ok(_)) => written += 1,
            other => panic!("round {round}: {other:?}"),
        }
    }
    eprintln!("the drop won {dropped} rounds, the write {written}");
    // What etcd holds agrees: a record only in the tables still declared.
    let log = marquee::store::etcd::EtcdLog::connect(&cluster.endpoints(), "/marquee/")
        .await
        .expect("connect");
    let records = log.read_records(None, None).await.expect("read");
    for record in &records.records {
        if record.table.starts_with("race") {
            assert!(
                a.table_info(&record.table).is_some(),
                "{}/{} outlived its table",
                record.table,
                record.id
            );
        }
    }
    for store in [a, b] {
        store.shutdown().await;
    }
}

/// The config file's tables are declared on etcd at start (the file wins
/// for its schema), so a node without them in its file has them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_tables_are_declared_for_every_node() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let with_tables = |name: &str, tables: Vec<marquee::store::TableDecl>| {
        let metrics = Arc::new(Metrics::default());
        Store::connect(
            StoreOptions {
                data_dir: dir.path().join(name),
                change_log_window: 10_000,
                tables,
                fail_persist_after: None,
                address: StoreAddress::Etcd(EtcdAddress {
                    endpoints: cluster.endpoints(),
                    prefix: "/marquee/".into(),
                }),
            },
            Bus::new(marquee::bus::QueueLimit::events(1000), metrics.clone()),
            metrics,
        )
    };
    let a = with_tables("a", vec![things("things")])
        .await
        .expect("A starts");
    let b = node(&cluster, &dir, "b").await;
    assert_eq!(
        b.table_info("things").and_then(|t| t.schema),
        things("things").schema,
        "declared on etcd before A's start returned, so in B's snapshot"
    );
    b.write(put("things", "x", json!({"n": 1})), Origin::Rest)
        .await
        .expect("a record on B");
    // Another node's file with another schema wins on its start.
    let free = marquee::store::TableDecl {
        name: "things".into(),
        schema: None,
    };
    let c = with_tables("c", vec![free]).await.expect("C starts");
    assert_eq!(c.table_info("things").and_then(|t| t.schema), None);
    eventually("A has the file's schema", || {
        a.table_info("things").is_some_and(|t| t.schema.is_none())
    })
    .await;
    for store in [a, b, c] {
        store.shutdown().await;
    }
}

/// A server in accounts mode on the cluster, with the bootstrap admin.
async fn accounts_server(cluster: &EtcdCluster) -> common::TestServer {
    common::TestServer::on_etcd(cluster, |config| {
        config.access =
            marquee::access::Access::new(marquee::access::Mode::Accounts, false, Vec::new())
                .expect("access");
        config.admin_bootstrap = Some(marquee::config::AdminBootstrap {
            username: "admin".into(),
            password: "correct horse".into(),
        });
    })
    .await
}

/// `method path` on `server` as `who` (a cookie, with the server's own
/// Origin, or a bearer token): the status and body.
async fn call(
    server: &common::TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    who: Who<'_>,
) -> (u16, Value) {
    let mut request = common::client().request(method, format!("{}{path}", server.url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request = match who {
        Who::Nobody => request.header(reqwest::header::ORIGIN, &server.url),
        Who::Browser(cookie) => request
            .header(reqwest::header::COOKIE, cookie)
            .header(reqwest::header::ORIGIN, &server.url),
        Who::Script(token) => request.bearer_auth(token),
    };
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[derive(Clone, Copy)]
enum Who<'a> {
    Nobody,
    Browser(&'a str),
    Script(&'a str),
}

/// `GET /api/auth/me` as `who` until it answers `status` (the other node
/// applies a sign-in or a sign-out a moment after the node that made it).
async fn me_until(server: &common::TestServer, who: Who<'_>, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (now, body) = call(server, reqwest::Method::GET, "/api/auth/me", None, who).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/api/auth/me stayed {now}, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two servers in accounts mode on one etcd, started together with the same
/// bootstrap admin: a sign-in on A is a session on B, an API token made on B
/// works on A, and a sign-out on B ends the session on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_on_one_server_is_good_on_the_other() {
    let cluster = EtcdCluster::start(3);
    let (a, b) = tokio::join!(accounts_server(&cluster), accounts_server(&cluster));

    let (status, body) = call(
        &a,
        reqwest::Method::POST,
        "/api/auth/login",
        Some(json!({"username": "admin", "password": "correct horse"})),
        Who::Nobody,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        &b,
        reqwest::Method::POST,
        "/api/auth/login",
        Some(json!({"username": "admin", "password": "wrong"})),
        Who::Nobody,
    )
    .await;
    assert_eq!(status, 401);
    // The cookie, by hand: the client keeps none.
    let login = common::client()
        .post(format!("{}/api/auth/login", a.url))
        .header(reqwest::header::ORIGIN, &a.url)
        .json(&json!({"username": "admin", "password": "correct horse"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .trim()
        .to_owned();
    // At once: B catches up before it calls a session unknown.
    let (status, who) = call(
        &b,
        reqwest::Method::GET,
        "/api/auth/me",
        None,
        Who::Browser(&cookie),
    )
    .await;
    assert_eq!((status, &who["username"]), (200, &json!("admin")), "{who}");

    // An API token made on B is a bearer token on A.
    let (status, made) = call(
        &b,
        reqwest::Method::POST,
        "/api/tokens",
        Some(json!({"name": "deploy"})),
        Who::Browser(&cookie),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["token"].as_str().expect("a secret").to_owned();
    let (status, who) = call(
        &a,
        reqwest::Method::GET,
        "/api/auth/me",
        None,
        Who::Script(&secret),
    )
    .await;
    assert_eq!((status, &who["username"]), (200, &json!("admin")), "{who}");

    // Signed out on B: the session ends on A too.
    let (status, body) = call(
        &b,
        reqwest::Method::POST,
        "/api/auth/logout",
        None,
        Who::Browser(&cookie),
    )
    .await;
    assert!(status < 300, "{status}: {body}");
    me_until(&a, Who::Browser(&cookie), 401).await;
    me_until(&a, Who::Script(&secret), 200).await;

    a.stop().await;
    b.stop().await;
}

/// A node away while the state changed catches up from its cache by the
/// watch, or, away beyond the compaction floor, re-reads the whole state:
/// what was removed meanwhile is gone from its cache either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_after_compaction_has_the_state_as_it_is_now() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(&cluster, &dir, "a").await;
    let b = node(&cluster, &dir, "b").await;
    let token: Vec<u8> = vec![7; 32];
    a.put_account("gone", b"gone".to_vec(), true)
        .await
        .expect("account");
    a.put_account("kept", b"kept".to_vec(), true)
        .await
        .expect("account");
    a.set_token(&token, Some(b"token".to_vec()))
        .await
        .expect("token");
    a.save_session("device", Some(b"subs".to_vec()))
        .await
        .expect("session");
    a.declare_table(things("old")).await.expect("declare");
    caught_up(&b, a.last_seq()).await;
    assert_eq!(b.accounts().expect("accounts").len(), 2);
    stop(b).await;

    // Removed and made while B is away, beyond the compaction floor.
    a.delete_account("gone").await.expect("delete");
    a.put_account("new", b"new".to_vec(), true)
        .await
        .expect("account");
    a.set_token(&token, None).await.expect("revoke");
    a.save_session("device", None).await.expect("forget");
    a.drop_table("old").await.expect("drop");
    a.declare_table(things("fresh")).await.expect("declare");
    // A record change missed too: the change log (of records) has a gap.
    a.write(put("mqtt", "while-away", json!({})), Origin::Rest)
        .await
        .expect("write");
    let log = marquee::store::etcd::EtcdLog::connect(&cluster.endpoints(), "/marquee/")
        .await
        .expect("connect");
    log.compact(a.last_seq()).await.expect("compact");

    let b = node(&cluster, &dir, "b").await;
    caught_up(&b, a.last_seq()).await;
    let resumed = b.changes_since(1, None, 10).await;
    assert!(
        matches!(resumed, Err(marquee::store::StoreError::ResumeGap { .. })),
        "B re-read the state: {resumed:?}"
    );
    assert_eq!(
        b.accounts().expect("accounts"),
        vec![b"kept".to_vec(), b"new".to_vec()]
    );
    assert_eq!(b.token(&token).expect("token"), None);
    assert!(b.saved_sessions().expect("sessions").is_empty());
    assert!(b.table_info("old").is_none());
    assert!(b.table_info("fresh").is_some());
    // (B's counter started at 0 with the process.)
    eventually("connections are told that access may have changed", || {
        *b.access_changes().borrow() > 0
    })
    .await;
    for store in [a, b] {
        store.shutdown().await;
    }
}

/// A declaration on etcd that a node cannot use (written by another tool)
/// leaves its table undeclared there, and declaring that name is refused at
/// once, not after waiting for a revision an idle cluster never makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_a_node_cannot_use_is_refused_at_once() {
    use marquee::store::etcd::{Batch, EtcdLog, Key, Op};

    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EtcdLog::connect(&cluster.endpoints(), "/marquee/")
        .await
        .expect("connect");
    let batch = Batch::new("outside-1")
        .with(Op::put(Key::Table("weird".into()), b"not json".to_vec()))
        .with(Op::put(Key::Table("signs".into()), b"not json".to_vec()));
    log.commit(&batch).await.expect("commit");
    let a = node(&cluster, &dir, "a").await;
    assert!(a.table_info("weird").is_none());
    assert!(a.table_info("signs").is_some_and(|t| t.builtin));
    let started = std::time::Instant::now();
    assert_eq!(
        a.declare_table(things("weird")).await,
        Err(marquee::store::StoreError::TableExists("weird".into()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    a.shutdown().await;
}
