//! The etcd side of the store (`store/etcd/`) against real three-member
//! clusters: commits and the watch, every kind of Store key in one batch, one
//! watch and one snapshot, dropping tables safely, idempotent retries,
//! compaction, node leases, roles, ownership, and no acknowledged write lost or
//! doubled while the leader is killed or a member is stopped. Each test
//! starts its own cluster (see `common/etcd.rs`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use marquee::store::etcd::{
    Batch, Change, Committed, Compactor, CompactorOptions, DEFAULT_PREFIX, EtcdError, EtcdLog,
    EtcdOptions, Expect, Key, KeyKind, LeaseState, LogEntry, LogWatch, MAX_BATCH_CHANGES,
    MAX_BATCH_CONDITIONS, NodeOptions, Op, OwnershipEvent, OwnershipWatch, Role, RoleOptions,
};

async fn connect(cluster: &EtcdCluster) -> EtcdLog {
    EtcdLog::connect(&cluster.endpoints(), DEFAULT_PREFIX)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", cluster.log_tails()))
}

async fn next(watch: &mut LogWatch) -> LogEntry {
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("a watched revision within 20 s")
        .expect("the watch goes on")
}

/// p50, p99 and max of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99), at(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_watched_as_one_revision_with_exactly_its_changes() {
    let cluster = EtcdCluster::start(3);
    let log = connect(&cluster).await;
    let start = log.current_revision().await.unwrap() + 1;
    let mut watch = log.watch_from(start);

    let batch = Batch::new("a-1")
        .put("signs", "lobby", &b"{\"name\":\"Lobby\"}"[..])
        .put("mqtt", "site/a/b", &b"{}"[..])
        // Deletes nothing: no change, though the batch still gets its revision.
        .delete("signs", "never");
    let committed = log.commit(&batch).await.unwrap();
    assert!(!committed.replayed);
    assert!(committed.revision >= start);
    let entry = next(&mut watch).await;
    assert_eq!(entry.revision, committed.revision);
    assert_eq!(entry.idempotency_key.as_deref(), Some("a-1"));
    assert_eq!(
        entry.changes,
        vec![
            Change {
                key: Key::record("signs", "lobby"),
                value: Some(b"{\"name\":\"Lobby\"}".to_vec()),
                mod_revision: committed.revision,
                create_revision: committed.revision,
                version: 1,
            },
            Change {
                key: Key::record("mqtt", "site/a/b"),
                value: Some(b"{}".to_vec()),
                mod_revision: committed.revision,
                create_revision: committed.revision,
                version: 1,
            },
        ]
    );

    // A delete is a change without a value; a condition on the ETag holds.
    let mut delete = Batch::new("a-2");
    delete.ops.push(Op::Delete {
        key: Key::record("signs", "lobby"),
        expect: Expect::ModRevision(committed.revision),
    });
    let deleted = log.commit(&delete).await.unwrap();
    let entry = next(&mut watch).await;
    assert_eq!(entry.revision, deleted.revision);
    assert_eq!(entry.changes.len(), 1);
    assert_eq!(entry.changes[0].value, None);

    // A failed condition names the record and its revision, and writes nothing.
    let mut stale = Batch::new("a-3");
    stale.ops.push(Op::Put {
        key: Key::record("mqtt", "site/a/b"),
        value: b"{}".to_vec(),
        expect: Expect::Absent,
    });
    let refused = log.commit(&stale).await.unwrap_err();
    assert_eq!(
        refused,
        EtcdError::ConditionFailed {
            key: Key::record("mqtt", "site/a/b"),
            expected: Expect::Absent,
            current: committed.revision,
        }
    );
    assert_eq!(log.current_revision().await.unwrap(), deleted.revision);

    // etcd's limits are checked before sending.
    let mut big = Batch::new("a-4");
    for i in 0..=MAX_BATCH_CHANGES {
        big = big.put("t", &format!("r{i}"), &b"{}"[..]);
    }
    assert!(matches!(
        log.commit(&big).await,
        Err(EtcdError::TooManyChanges { changes }) if changes == MAX_BATCH_CHANGES + 1
    ));
    let huge = Batch::new("a-5").put("t", "big", vec![b'x'; 1_600_000]);
    assert!(matches!(
        log.commit(&huge).await,
        Err(EtcdError::TooLarge { .. })
    ));
    let twice = Batch::new("a-6").put("t", "x", &b"1"[..]).delete("t", "x");
    assert_eq!(
        log.commit(&twice).await,
        Err(EtcdError::DuplicateKey("r/t/x".into()))
    );

    // Sequential single-put commits: the latency through the Rust client.
    let mut latencies = Vec::new();
    let mut revisions = Vec::new();
    for n in 0..200 {
        let batch = Batch::new(format!("seq-{n}")).put("t", &format!("r{n}"), &b"{}"[..]);
        let began = Instant::now();
        let committed = log.commit(&batch).await.unwrap();
        latencies.push(began.elapsed());
        revisions.push(committed.revision);
    }
    for revision in revisions {
        assert_eq!(next(&mut watch).await.revision, revision);
    }
    let (p50, p99, max) = percentiles(latencies);
    eprintln!(
        "etcd-figures: 200 sequential commits (1 put each): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );

    // A quiet watch is probed for progress, which etcd 3.4 answers: it is not
    // taken for a stopped member and made again.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .is_err()
    );
    assert_eq!(watch.resumes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_commit_is_applied_once_and_answers_the_same_revision() {
    let mut cluster = EtcdCluster::start(3);
    let log = connect(&cluster).await;
    let start = log.current_revision().await.unwrap() + 1;

    let batch = Batch::new("b-1").put("signs", "s", &b"{}"[..]);
    let first = log.commit(&batch).await.unwrap();
    let again = log.commit(&batch).await.unwrap();
    assert_eq!(
        again,
        Committed {
            revision: first.revision,
            replayed: true
        }
    );
    // The replay wrote nothing, not even a revision.
    assert_eq!(log.current_revision().await.unwrap(), first.revision);
    // The same key for other writes is a caller's bug, not a replay.
    let other = Batch::new("b-1").put("signs", "s", &b"{\"x\":1}"[..]);
    assert_eq!(
        log.commit(&other).await,
        Err(EtcdError::IdempotencyConflict("b-1".into()))
    );

    // Two nodes retrying the same batch at once: one applies it, both get its revision.
    let other_node = connect(&cluster).await;
    let racing = Batch::new("b-2").put("signs", "race", &b"{}"[..]);
    let (a, b) = tokio::join!(log.commit(&racing), other_node.commit(&racing));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.revision, b.revision);
    assert!(a.replayed != b.replayed, "{a:?} {b:?}");

    // An attempt that times out while the leader has no quorum may commit
    // later; the retry after recovery must not apply it a second time.
    let impatient = EtcdLog::connect_with(
        &cluster.endpoints(),
        DEFAULT_PREFIX,
        EtcdOptions {
            attempts: 2,
            retry_for: Duration::from_secs(3),
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    let leader = cluster.leader();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &f in &followers {
        cluster.pause(f);
    }
    let stranded = Batch::new("b-3").put("signs", "stranded", &b"{}"[..]);
    let unconfirmed = impatient.commit(&stranded).await;
    assert!(
        matches!(unconfirmed, Err(EtcdError::Unconfirmed { .. })),
        "{unconfirmed:?}"
    );
    for &f in &followers {
        cluster.resume(f);
    }
    // Right after the pause an election may still be on (slow on a loaded
    // machine): an unconfirmed commit is retried with the same key, as any caller would.
    let mut unconfirmed = 0;
    let retried = loop {
        match log.commit(&stranded).await {
            Ok(committed) => break committed,
            Err(EtcdError::Unconfirmed { .. }) if unconfirmed < 3 => unconfirmed += 1,
            Err(e) => panic!("the retry after the quorum came back: {e}"),
        }
    };
    eprintln!(
        "etcd-figures: the commit that timed out without a quorum {} after the quorum came back",
        if retried.replayed {
            "had committed"
        } else {
            "had not committed; the retry applied it"
        }
    );
    let end = log.current_revision().await.unwrap();
    let mut watch = log.watch_from(start);
    let mut b3 = 0;
    loop {
        let entry = next(&mut watch).await;
        if entry.idempotency_key.as_deref() == Some("b-3") {
            b3 += 1;
            assert_eq!(entry.revision, retried.revision);
        }
        if entry.revision >= end {
            break;
        }
    }
    assert_eq!(b3, 1, "batch b-3 applied {b3} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_fails_with_the_floor() {
    let cluster = EtcdCluster::start(3);
    let log = connect(&cluster).await;
    let mut revisions = Vec::new();
    for n in 0..5 {
        let batch = Batch::new(format!("d-{n}")).put("t", "x", format!("{n}"));
        revisions.push(log.commit(&batch).await.unwrap().revision);
    }
    log.compact(revisions[2]).await.unwrap();
    // Compacting to the same revision again is not an error.
    log.compact(revisions[2]).await.unwrap();

    let mut before = log.watch_from(revisions[0]);
    let error = tokio::time::timeout(Duration::from_secs(20), before.next())
        .await
        .expect("an answer within 20 s")
        .unwrap_err();
    assert_eq!(
        error,
        EtcdError::Compacted {
            start: revisions[0],
            compact_revision: revisions[2],
        }
    );
    // The watch stays failed.
    assert_eq!(before.next().await.unwrap_err(), error);

    // The floor itself is still there.
    let mut at_floor = log.watch_from(revisions[2]);
    for &revision in &revisions[2..] {
        let entry = next(&mut at_floor).await;
        assert_eq!(entry.revision, revision);
        assert_eq!(entry.changes[0].version, revision - revisions[0] + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_expire_with_their_lease_and_the_watch_yields_an_empty_entry() {
    let cluster = EtcdCluster::start(3);
    let options = EtcdOptions {
        idempotency_ttl: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let log = EtcdLog::connect_with(&cluster.endpoints(), DEFAULT_PREFIX, options)
        .await
        .unwrap();
    let batch = Batch::new("gc-1").put("t", "x", &b"{}"[..]);
    let first = log.commit(&batch).await.unwrap();
    // The lease expires with no keep-alive: its keys go, in a revision of their own.
    let deadline = Instant::now() + Duration::from_secs(15);
    while log.current_revision().await.unwrap() == first.revision {
        assert!(
            Instant::now() < deadline,
            "the idempotency lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The key is gone, so the same batch is a new commit.
    let second = log.commit(&batch).await.unwrap();
    assert!(!second.replayed);
    assert!(second.revision > first.revision + 1);
    // The expiry's revision (or revisions) is an empty entry: no batch, no change.
    let mut watch = log.watch_from(first.revision);
    assert_eq!(next(&mut watch).await.revision, first.revision);
    let mut expiries = 0;
    let entry = loop {
        let entry = next(&mut watch).await;
        if entry.revision == second.revision {
            break entry;
        }
        assert!(entry.is_empty(), "{entry:?}");
        expiries += 1;
    };
    assert!(expiries >= 1);
    assert_eq!(entry.idempotency_key.as_deref(), Some("gc-1"));
}

const WRITERS: usize = 4;

/// Acknowledged commits of one writer: (slot, revision, when it began, how long it took).
type Acks = Vec<(usize, u64, Instant, Duration)>;

/// What a watch saw of the writers' batches, per slot (writer × commit).
struct Seen {
    count: Vec<u32>,
    revision: Vec<u64>,
    resumes: u64,
}

/// Counts each batch of the writers (idempotency key `w{writer}-{n}`) that
/// `watch` delivers, checking the revision order, until it has passed the
/// revision `until` holds (0: not known yet).
async fn count_batches(
    mut watch: LogWatch,
    slots: usize,
    per_writer: usize,
    mut until: tokio::sync::watch::Receiver<u64>,
) -> Seen {
    let mut seen = Seen {
        count: vec![0; slots],
        revision: vec![0; slots],
        resumes: 0,
    };
    let mut last = 0;
    loop {
        let target = *until.borrow_and_update();
        if target > 0 && watch.last_revision() >= target {
            seen.resumes = watch.resumes();
            return seen;
        }
        // LogWatch::next is cancel-safe: losing this race loses no event.
        let entry = tokio::select! {
            entry = next(&mut watch) => entry,
            _ = until.changed() => continue,
        };
        assert!(
            entry.revision > last,
            "revision {} after {last}",
            entry.revision
        );
        last = entry.revision;
        if entry.is_empty() {
            continue;
        }
        let key = entry.idempotency_key.as_deref().unwrap_or_default();
        let Some((w, n)) = key
            .strip_prefix('w')
            .and_then(|k| k.split_once('-'))
            .and_then(|(w, n)| Some((w.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        else {
            panic!("an entry that is not a writer's batch: {entry:?}");
        };
        assert_eq!(entry.changes.len(), 2, "{entry:?}");
        let slot = w * per_writer + n;
        seen.count[slot] += 1;
        seen.revision[slot] = entry.revision;
    }
}

/// Runs `WRITERS` writers of `per_writer` commits each (two puts per batch);
/// once a quarter is acknowledged, `begin` injects a fault into the leader
/// (which it returns), and `hold` later `end` undoes it. The writers and a
/// live watch start on the leader, so both must move off it. The live watch
/// and a fresh one afterwards must each see every acknowledged batch exactly
/// once, at its revision, in revision order.
async fn writes_survive(
    name: &str,
    per_writer: usize,
    hold: Duration,
    begin: impl FnOnce(&mut EtcdCluster) -> usize,
    end: impl FnOnce(&mut EtcdCluster, usize),
) {
    let mut cluster = EtcdCluster::start(3);
    let leader = cluster.leader();
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(leader);
    let options = EtcdOptions {
        start_on_first: true,
        ..EtcdOptions::default()
    };
    let log = EtcdLog::connect_with(&endpoints, DEFAULT_PREFIX, options)
        .await
        .unwrap();
    let start = log.current_revision().await.unwrap() + 1;
    let slots = WRITERS * per_writer;
    let (until_tx, until_rx) = tokio::sync::watch::channel(0u64);
    // Reads while the fault happens, so resuming is exercised live.
    let live = tokio::spawn(count_batches(
        log.watch_from(start),
        slots,
        per_writer,
        until_rx,
    ));

    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let log = log.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut acks: Acks = Vec::with_capacity(per_writer);
            let mut retries = 0;
            for n in 0..per_writer {
                let batch = Batch::new(format!("w{w}-{n}"))
                    .put("load", &format!("w{w}-{n}"), format!("{{\"n\":{n}}}"))
                    .put("last", &format!("w{w}"), format!("{{\"n\":{n}}}"));
                let began = Instant::now();
                // An unconfirmed commit is retried by the caller with the same key.
                let committed = loop {
                    match log.commit(&batch).await {
                        Ok(committed) => break committed,
                        Err(EtcdError::Unconfirmed { .. }) if retries < 5 => retries += 1,
                        Err(e) => panic!("writer {w} commit {n}: {e}"),
                    }
                };
                acks.push((
                    w * per_writer + n,
                    committed.revision,
                    began,
                    began.elapsed(),
                ));
                acked.fetch_add(1, Ordering::Relaxed);
            }
            (acks, retries)
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < slots / 4 {
        assert!(Instant::now() < deadline, "{name}: writers too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fault_at = Instant::now();
    let member = begin(&mut cluster);
    let watched_member_failed = member == leader;
    tokio::time::sleep(hold).await;
    end(&mut cluster, member);

    let mut acks: Acks = Vec::with_capacity(slots);
    let mut retries = 0;
    for writer in writers {
        let left = deadline.saturating_duration_since(Instant::now());
        let (mine, r) = tokio::time::timeout(left, writer)
            .await
            .unwrap_or_else(|_| panic!("{name}: writers still busy after 60 s"))
            .unwrap();
        acks.extend(mine);
        retries += r;
    }
    assert_eq!(acks.len(), slots);
    let until = acks.iter().map(|a| a.1).max().unwrap();
    until_tx.send_replace(until);

    // Figures: latency before the fault, the longest commit and the longest
    // time with no acknowledgement at all after it.
    let before: Vec<Duration> = acks
        .iter()
        .filter(|a| a.2 + a.3 < fault_at)
        .map(|a| a.3)
        .collect();
    let (p50, p99, _) = percentiles(before);
    let longest = acks.iter().map(|a| a.3).max().unwrap();
    let mut done: Vec<Instant> = acks.iter().map(|a| a.2 + a.3).collect();
    done.sort_unstable();
    let gap = done
        .windows(2)
        .filter(|w| w[1] > fault_at)
        .map(|w| w[1] - w[0].max(fault_at))
        .max()
        .unwrap_or_default();
    eprintln!(
        "etcd-figures: {name}: {WRITERS} writers x {per_writer}: before the fault p50 {p50:.2} ms, p99 {p99:.2} ms; longest commit {longest:?}; longest with no ack after the fault {gap:?}; caller retries {retries}"
    );

    let live = tokio::time::timeout(Duration::from_secs(30), live)
        .await
        .unwrap_or_else(|_| panic!("{name}: the live watch fell behind"))
        .unwrap();
    eprintln!(
        "etcd-figures: {name}: the live watch was made again {} times",
        live.resumes
    );
    if watched_member_failed {
        assert!(
            live.resumes > 0,
            "{name}: the live watch never left its member"
        );
    }
    let fresh = count_batches(
        log.watch_from(start),
        slots,
        per_writer,
        until_tx.subscribe(),
    )
    .await;
    for (which, seen) in [("live", &live), ("fresh", &fresh)] {
        for &(slot, revision, _, _) in &acks {
            assert_eq!(
                seen.count[slot], 1,
                "{name}, {which} watch: batch {slot} seen {} times",
                seen.count[slot]
            );
            assert_eq!(
                seen.revision[slot], revision,
                "{name}, {which} watch: batch {slot} at another revision"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_and_doubles_no_acknowledged_commit() {
    writes_survive(
        "leader kill -9",
        300,
        Duration::from_secs(3),
        |cluster| {
            let leader = cluster.leader();
            cluster.kill9(leader);
            leader
        },
        |cluster, member| cluster.restart(member),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_a_member_loses_and_doubles_no_acknowledged_commit() {
    writes_survive(
        "leader SIGSTOP",
        300,
        Duration::from_secs(3),
        |cluster| {
            let leader = cluster.leader();
            cluster.pause(leader);
            leader
        },
        |cluster, member| cluster.resume(member),
    )
    .await;
}

/// A record's state in the tests' model: value, create, mod revision, version.
type Model = std::collections::BTreeMap<(String, String), (Vec<u8>, u64, u64, u64)>;

fn model_of(records: &[marquee::store::etcd::Record]) -> Model {
    records
        .iter()
        .map(|r| {
            (
                (r.table.clone(), r.id.clone()),
                (
                    r.value.clone(),
                    r.create_revision,
                    r.mod_revision,
                    r.version,
                ),
            )
        })
        .collect()
}

/// Applies one watched revision to `model`, as a node's cache would.
fn apply(model: &mut Model, entry: &LogEntry) {
    for change in &entry.changes {
        let (table, id) = change.record().expect("only records in this test");
        let key = (table.to_owned(), id.to_owned());
        match &change.value {
            Some(value) => {
                model.insert(
                    key,
                    (
                        value.clone(),
                        change.create_revision,
                        entry.revision,
                        change.version,
                    ),
                );
            }
            None => {
                model.remove(&key);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_at_a_revision_and_the_watch_after_it_rebuild_the_state_exactly() {
    let cluster = EtcdCluster::start(3);
    let options = EtcdOptions {
        // Pages of 7 records: every read below takes several.
        read_page: 7,
        ..EtcdOptions::default()
    };
    let log = EtcdLog::connect_with(&cluster.endpoints(), DEFAULT_PREFIX, options)
        .await
        .unwrap();
    let began = Instant::now();
    // 150 commits of 1–3 puts or deletes over 3 tables and 30 ids (the mqtt
    // table's ids hold '/'), chosen by a fixed LCG; the model follows.
    let mut model = Model::new();
    let mut at = Vec::new();
    let mut draw = lcg(0x2545_f491_4f6c_dd1d_u64);
    for n in 0..150 {
        let mut batch = Batch::new(format!("s-{n}"));
        let mut keys: Vec<(String, String)> = Vec::new();
        for _ in 0..=draw(3) {
            let table = ["signs", "mqtt", "t"][draw(3) as usize];
            let id = match table {
                "mqtt" => format!("site/{}/x", draw(10)),
                _ => format!("r{}", draw(10)),
            };
            let key = (table.to_owned(), id);
            if keys.contains(&key) {
                continue;
            }
            batch = if draw(4) == 0 {
                batch.delete(&key.0, &key.1)
            } else {
                batch.put(&key.0, &key.1, format!("{{\"n\":{n}}}"))
            };
            keys.push(key);
        }
        let rev = log.commit(&batch).await.unwrap().revision;
        for op in &batch.ops {
            match op {
                Op::Put {
                    key: Key::Record { table, id },
                    value,
                    ..
                } => {
                    let key = (table.clone(), id.clone());
                    let next = match model.get(&key) {
                        Some(&(_, create, _, version)) => (value.clone(), create, rev, version + 1),
                        None => (value.clone(), rev, rev, 1),
                    };
                    model.insert(key, next);
                }
                Op::Delete {
                    key: Key::Record { table, id },
                    ..
                } => {
                    model.remove(&(table.clone(), id.clone()));
                }
                other => panic!("not a record: {other:?}"),
            }
        }
        at.push((rev, model.clone()));
    }
    let (old, old_model) = at[49].clone();
    let (mid, mid_model) = at[99].clone();
    let (head, final_model) = at[149].clone();
    assert!(final_model.len() > 14, "too few records to page");

    // At an old revision: exactly that state, whatever came after.
    let snapshot = log.read_records(None, Some(old)).await.unwrap();
    assert_eq!(snapshot.revision, old);
    assert_eq!(model_of(&snapshot.records).len(), snapshot.records.len());
    assert_eq!(model_of(&snapshot.records), old_model);
    // One table's, at another.
    let mqtt = log.read_records(Some("mqtt"), Some(mid)).await.unwrap();
    let mut expected = mid_model.clone();
    expected.retain(|(table, _), _| table == "mqtt");
    assert_eq!(model_of(&mqtt.records), expected);
    // Now: the head, and the final state.
    let now = log.read_records(None, None).await.unwrap();
    assert_eq!(now.revision, head);
    assert_eq!(model_of(&now.records), final_model);

    // A cache built at `mid`, then fed by the watch from mid + 1, ends equal to the final state.
    let mut cache = model_of(&log.read_records(None, Some(mid)).await.unwrap().records);
    let mut watch = log.watch_from(mid + 1);
    let mut applied = 0;
    while watch.last_revision() < head {
        let entry = next(&mut watch).await;
        assert!(entry.revision > mid && entry.revision <= head);
        apply(&mut cache, &entry);
        applied += 1;
    }
    assert_eq!(applied, 50);
    assert_eq!(cache, final_model);

    // Single gets carry the same fields and the current revision.
    let ((table, id), (value, create, modified, version)) = final_model.iter().next().unwrap();
    let got = log.get(table, id).await.unwrap();
    assert_eq!(got.revision, head);
    let record = got.record.unwrap();
    assert_eq!(
        (
            &record.value,
            record.create_revision,
            record.mod_revision,
            record.version
        ),
        (value, *create, *modified, *version)
    );
    assert_eq!(log.get("signs", "never").await.unwrap().record, None);
    assert!(matches!(
        log.get("a/b", "x").await,
        Err(EtcdError::InvalidName(_))
    ));

    // Below the compaction floor: Compacted, with the floor.
    log.compact(mid).await.unwrap();
    assert_eq!(
        log.read_records(None, Some(old)).await,
        Err(EtcdError::Compacted {
            start: old,
            compact_revision: mid
        })
    );
    assert_eq!(
        model_of(&log.read_records(None, Some(mid)).await.unwrap().records),
        mid_model
    );
    let reads = began.elapsed();

    // 12 records of 1.4 MB: one page of them (read_page 7: 9.8 MB) fits the
    // 16 MiB message limit; 500 per page would not, and is halved until it fits.
    let big = EtcdLog::connect(&cluster.endpoints(), DEFAULT_PREFIX)
        .await
        .unwrap();
    for n in 0..12 {
        let value = vec![b'a' + n as u8; 1_400_000];
        let batch = Batch::new(format!("big-{n}")).put("big", &format!("b{n:02}"), value);
        big.commit(&batch).await.unwrap();
    }
    let wrote_big = began.elapsed() - reads;
    let records = big.read_records(Some("big"), None).await.unwrap().records;
    assert_eq!(records.len(), 12);
    for (n, record) in records.iter().enumerate() {
        assert_eq!(record.id, format!("b{n:02}"));
        assert_eq!(record.value.len(), 1_400_000);
        assert!(record.value.iter().all(|&b| b == b'a' + n as u8));
    }
    eprintln!(
        "etcd-figures: snapshot reads: 150 commits and 6 paged reads in {reads:?}; 12 x 1.4 MB written in {wrote_big:?}, read back (pages halved) in {:?}",
        began.elapsed() - reads - wrote_big
    );
}

/// The state of every kind in the tests' model: value, create, mod revision, version.
type StateModel = std::collections::BTreeMap<Key, (Vec<u8>, u64, u64, u64)>;

fn state_model(state: &marquee::store::etcd::State) -> StateModel {
    state
        .items
        .iter()
        .map(|i| {
            (
                i.key.clone(),
                (
                    i.value.clone(),
                    i.create_revision,
                    i.mod_revision,
                    i.version,
                ),
            )
        })
        .collect()
}

/// Applies one committed batch to `model`, as etcd does at revision `rev`.
fn commit_to_model(model: &mut StateModel, batch: &Batch, rev: u64) {
    for op in &batch.ops {
        match op {
            Op::Put { key, value, .. } => {
                let next = match model.get(key) {
                    Some(&(_, create, _, version)) => (value.clone(), create, rev, version + 1),
                    None => (value.clone(), rev, rev, 1),
                };
                model.insert(key.clone(), next);
            }
            Op::Delete { key, .. } => {
                model.remove(key);
            }
        }
    }
}

/// Applies one watched revision to `model`, as a node's cache would.
fn apply_state(model: &mut StateModel, entry: &LogEntry) {
    for change in &entry.changes {
        assert_eq!(change.mod_revision, entry.revision);
        match &change.value {
            Some(value) => {
                let state = (
                    value.clone(),
                    change.create_revision,
                    change.mod_revision,
                    change.version,
                );
                model.insert(change.key.clone(), state);
            }
            None => {
                model.remove(&change.key);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_is_one_revision_with_every_change_typed_and_each_publish_is_watched() {
    let cluster = EtcdCluster::start(3);
    let log = connect(&cluster).await;
    for kind in KeyKind::ALL {
        // The ownership watch covers `node/` to the end of `own/`.
        assert!(!kind.prefix().starts_with(['n', 'o']), "{kind:?}");
    }
    let start = log.current_revision().await.unwrap() + 1;
    let mut watch = log.watch_from(start);

    // A table declared with its first record, an account, a token, a session
    // and a transient publish: one batch, one revision, every change typed.
    let table = Key::Table("signs".into());
    let account = Key::Account("ann@example.com".into());
    let token = Key::Token("0a1b2c".into());
    let session = Key::Session("client/1".into());
    let publish = Key::Transient("node-a".into());
    let first = Batch::new("m-1")
        .with(Op::put(table.clone(), &b"{\"name\":\"signs\"}"[..]).expecting(Expect::Absent))
        .put("signs", "lobby", &b"{\"n\":1}"[..])
        .with(Op::put(account.clone(), &b"{\"role\":\"admin\"}"[..]).expecting(Expect::Absent))
        .with(Op::put(token.clone(), &b"ann@example.com"[..]))
        .with(Op::put(session.clone(), &b"{\"subs\":[]}"[..]))
        // The same name as another kind's is another key.
        .with(Op::put(Key::Session("signs".into()), &b"{}"[..]))
        .with(Op::put(publish.clone(), &b"hello"[..]));
    let declared = log.commit(&first).await.unwrap().revision;
    let entry = next(&mut watch).await;
    assert_eq!(entry.revision, declared);
    assert_eq!(entry.idempotency_key.as_deref(), Some("m-1"));
    let expected: Vec<Change> = first
        .ops
        .iter()
        .map(|op| {
            let Op::Put { key, value, .. } = op else {
                unreachable!()
            };
            Change {
                key: key.clone(),
                value: Some(value.clone()),
                mod_revision: declared,
                create_revision: declared,
                version: 1,
            }
        })
        .collect();
    assert_eq!(entry.changes, expected);
    assert_eq!(entry.changes[1].record(), Some(("signs", "lobby")));

    // Updates and deletes of several kinds, and a record written on the
    // condition that its table's declaration is the one known.
    let second = Batch::new("m-2")
        .with(
            Op::put(account.clone(), &b"{\"role\":\"viewer\"}"[..])
                .expecting(Expect::ModRevision(declared)),
        )
        .with(Op::delete(token.clone()))
        .with(Op::delete(session.clone()).expecting(Expect::ModRevision(declared)))
        .put("signs", "hall", &b"{\"n\":2}"[..])
        .require(table.clone(), Expect::ModRevision(declared));
    let updated = log.commit(&second).await.unwrap().revision;
    let entry = next(&mut watch).await;
    assert_eq!(entry.revision, updated);
    let change = |key: &Key, value: Option<&[u8]>, create: u64, version: u64| Change {
        key: key.clone(),
        value: value.map(<[u8]>::to_vec),
        mod_revision: updated,
        create_revision: create,
        version,
    };
    assert_eq!(
        entry.changes,
        vec![
            change(&account, Some(b"{\"role\":\"viewer\"}"), declared, 2),
            // Deletes carry neither create revision nor version.
            change(&token, None, 0, 0),
            change(&session, None, 0, 0),
            change(
                &Key::record("signs", "hall"),
                Some(b"{\"n\":2}"),
                updated,
                1
            ),
        ]
    );

    // A failed condition on a key of another kind names it; nothing is written.
    let stale = Batch::new("m-3")
        .put("signs", "x", &b"{}"[..])
        .require(account.clone(), Expect::ModRevision(declared));
    assert_eq!(
        log.commit(&stale).await,
        Err(EtcdError::ConditionFailed {
            key: account.clone(),
            expected: Expect::ModRevision(declared),
            current: updated,
        })
    );
    let recreate =
        Batch::new("m-4").with(Op::put(table.clone(), &b"{}"[..]).expecting(Expect::Absent));
    assert_eq!(
        log.commit(&recreate).await,
        Err(EtcdError::ConditionFailed {
            key: table.clone(),
            expected: Expect::Absent,
            current: declared,
        })
    );
    assert_eq!(log.current_revision().await.unwrap(), updated);
    // Keys each kind refuses, before sending.
    for bad in [
        Key::Token("0A1B".into()),
        Key::Table("a/b".into()),
        Key::Transient(String::new()),
        Key::Account(String::new()),
    ] {
        let batch = Batch::new("m-5").with(Op::put(bad.clone(), &b"{}"[..]));
        assert!(
            matches!(log.commit(&batch).await, Err(EtcdError::InvalidBatch(_))),
            "{bad:?}"
        );
    }
    // etcd's --max-txn-ops bounds the compares too: the idempotency key's
    // and 127 more fit; one more is refused before sending.
    let mut guarded = Batch::new("m-7").put("signs", "guarded", &b"{}"[..]);
    for n in 0..MAX_BATCH_CONDITIONS {
        guarded = guarded.require(Key::Account(format!("nobody{n}")), Expect::Absent);
    }
    let over = guarded
        .clone()
        .require(Key::Account("one-more".into()), Expect::Absent);
    assert_eq!(
        log.commit(&over).await,
        Err(EtcdError::TooManyConditions { conditions: 128 })
    );
    let guarded = log.commit(&guarded).await.unwrap().revision;
    let entry = next(&mut watch).await;
    assert_eq!((entry.revision, entry.changes.len()), (guarded, 1));
    let twice = Batch::new("m-6")
        .with(Op::put(session.clone(), &b"{}"[..]))
        .with(Op::delete(session.clone()));
    assert_eq!(
        log.commit(&twice).await,
        Err(EtcdError::DuplicateKey("sess/client/1".into()))
    );

    // Revisions of only the layer's own keys (a node's presence, a client's
    // owner) are empty entries: the position moves through them.
    let node = log.join("node-a", fast_lease()).await.unwrap();
    let claimed = node.claim("client/1").await.unwrap();
    for revision in [node.joined_at(), claimed] {
        let entry = next(&mut watch).await;
        assert_eq!(entry.revision, revision);
        assert!(entry.is_empty(), "{entry:?}");
    }
    assert_eq!(watch.last_revision(), claimed);

    // A transient publish overwritten N times, 8 at a time: N entries, each
    // with one change, its version one more than the last one watched.
    const N: usize = 200;
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < N || !tasks.is_empty() {
        while sent < N && tasks.len() < 8 {
            let (log, publish) = (log.clone(), publish.clone());
            let batch = Batch::new(format!("p-{sent}")).with(Op::put(publish, format!("{sent}")));
            tasks.spawn(async move { log.commit(&batch).await });
            sent += 1;
        }
        if let Some(done) = tasks.join_next().await {
            assert!(!done.unwrap().unwrap().replayed);
        }
    }
    let published = began.elapsed();
    let mut seen = vec![0u32; N];
    let mut last = claimed;
    for n in 0..N {
        let entry = next(&mut watch).await;
        assert!(entry.revision > last);
        last = entry.revision;
        assert_eq!(entry.changes.len(), 1, "{entry:?}");
        let change = &entry.changes[0];
        assert_eq!(change.key, publish);
        assert_eq!(change.version, n as u64 + 2);
        assert_eq!(change.create_revision, declared);
        let value: usize = std::str::from_utf8(change.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        seen[value] += 1;
    }
    assert!(seen.iter().all(|&count| count == 1), "{seen:?}");
    let state = log.read_state(None).await.unwrap();
    assert_eq!(state.revision, last);
    assert_eq!(state.of(KeyKind::Transient).count(), 1);
    eprintln!(
        "etcd-figures: {N} transient publishes, 8 in flight: {published:?}, each watched once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_snapshot_at_an_old_revision_holds_every_kind_as_the_model() {
    let cluster = EtcdCluster::start(3);
    let options = EtcdOptions {
        // Pages of 2 keys: every kind's read takes several.
        read_page: 2,
        ..EtcdOptions::default()
    };
    let log = EtcdLog::connect_with(&cluster.endpoints(), DEFAULT_PREFIX, options)
        .await
        .unwrap();
    let node = log.join("n1", fast_lease()).await.unwrap();
    let began = Instant::now();
    // 120 commits of 1–4 puts or deletes over every kind, chosen by a fixed
    // LCG; the model follows. Ownership claims (the layer's own keys) between.
    let mut model = StateModel::new();
    let mut at = Vec::new();
    let mut draw = lcg(0x9e37_79b9_7f4a_7c15_u64);
    for n in 0..120 {
        let mut batch = Batch::new(format!("s-{n}"));
        for _ in 0..=draw(4) {
            let name = draw(8);
            let key = match draw(6) {
                0 => Key::record(["signs", "mqtt"][draw(2) as usize], format!("a/{name}")),
                1 => Key::Table(format!("t{name}")),
                2 => Key::Account(format!("u{name}@x")),
                3 => Key::Token(format!("{:02x}", name * 37)),
                4 => Key::Session(format!("c/{name}")),
                _ => Key::Transient(format!("node{}", name % 4)),
            };
            if batch.ops.iter().any(|op| op.key() == &key) {
                continue;
            }
            batch = if draw(4) == 0 {
                batch.with(Op::delete(key))
            } else {
                batch.with(Op::put(key, format!("{{\"n\":{n}}}")))
            };
        }
        let rev = log.commit(&batch).await.unwrap().revision;
        commit_to_model(&mut model, &batch, rev);
        at.push((rev, model.clone()));
        if n % 40 == 20 {
            node.claim(&format!("c/{n}")).await.unwrap();
        }
    }
    let (old, old_model) = at[39].clone();
    let (mid, mid_model) = at[79].clone();
    let (head, final_model) = at[119].clone();
    for kind in KeyKind::ALL {
        let count = final_model.keys().filter(|k| k.kind() == kind).count();
        assert!(count > 2, "{count} of {kind:?}: too few to page");
    }

    // At an old revision: exactly that state of every kind, whatever came after.
    let state = log.read_state(Some(old)).await.unwrap();
    assert_eq!(state.revision, old);
    assert_eq!(state_model(&state).len(), state.items.len());
    assert_eq!(state_model(&state), old_model);
    let in_order = state.items.windows(2).all(|w| {
        let key = |i: usize| log.key(&w[i].key);
        key(0) < key(1)
    });
    assert!(in_order, "items out of key order");
    // Now: the head's.
    let now = log.read_state(None).await.unwrap();
    assert_eq!(now.revision, head);
    assert_eq!(state_model(&now), final_model);
    let records = now.of(KeyKind::Record).count();
    assert_eq!(
        log.read_records(None, None).await.unwrap().records.len(),
        records
    );
    let some = &now.items[now.items.len() / 2];
    let got = log.get_key(&some.key).await.unwrap();
    assert_eq!((got.revision, got.item.as_ref()), (head, Some(some)));

    // A cache built at `mid`, fed by the watch from mid + 1, ends equal to the final state.
    let mut cache = state_model(&log.read_state(Some(mid)).await.unwrap());
    assert_eq!(cache, mid_model);
    let mut watch = log.watch_from(mid + 1);
    let (mut applied, mut empty) = (0, 0);
    while watch.last_revision() < head {
        let entry = next(&mut watch).await;
        assert!(entry.revision > mid && entry.revision <= head);
        apply_state(&mut cache, &entry);
        if entry.is_empty() {
            empty += 1;
        } else {
            applied += 1;
        }
    }
    assert_eq!((applied, empty), (40, 1));
    assert_eq!(cache, final_model);

    // Below the compaction floor: Compacted, with the floor.
    log.compact(mid).await.unwrap();
    assert_eq!(
        log.read_state(Some(old)).await,
        Err(EtcdError::Compacted {
            start: old,
            compact_revision: mid
        })
    );
    eprintln!(
        "etcd-figures: state snapshots: 120 mixed commits, 4 paged reads of 6 kinds in {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_drops_only_when_empty_and_a_write_racing_a_drop_fails() {
    let cluster = EtcdCluster::start(3);
    let log = connect(&cluster).await;
    let other = connect(&cluster).await;
    let declare = |name: &str| Batch::declare_table(format!("declare-{name}"), name, &b"{}"[..]);
    let write = |idem: &str, table: &str, id: &str, declared: u64| {
        Batch::new(idem)
            .put(table, id, &b"{}"[..])
            .require(Key::Table(table.into()), Expect::ModRevision(declared))
    };
    let table_exists = |name: &str| {
        let (log, key) = (log.clone(), Key::Table(name.into()));
        async move { log.get_key(&key).await.unwrap().item.is_some() }
    };

    // Never written: dropped (etcd 3.4's range compare is true on an empty range).
    let empty = log.commit(&declare("empty")).await.unwrap().revision;
    let dropped = log
        .commit(&Batch::drop_table(
            "drop-empty",
            "empty",
            Expect::ModRevision(empty),
            0,
        ))
        .await
        .unwrap();
    assert!(dropped.revision > empty);
    assert!(!table_exists("empty").await);

    // With records: refused, naming a record written after the revision. The
    // one before it in key order (a0, written first) does not count: etcd
    // filters the failed drop's read by revision before limiting it.
    let declared = log.commit(&declare("full")).await.unwrap().revision;
    let a0 = log
        .commit(&write("w-a0", "full", "a0", declared))
        .await
        .unwrap()
        .revision;
    let b1 = log
        .commit(&write("w-b1", "full", "b1/x", declared))
        .await
        .unwrap()
        .revision;
    for (idem, since, id, written) in [("drop-0", 0, "a0", a0), ("drop-a0", a0, "b1/x", b1)] {
        assert_eq!(
            log.commit(&Batch::drop_table(
                idem,
                "full",
                Expect::ModRevision(declared),
                since
            ))
            .await,
            Err(EtcdError::RecordWrittenAfter {
                table: "full".into(),
                id: id.into(),
                revision: since,
                written,
            })
        );
    }
    assert!(table_exists("full").await);
    // Records written at or before the revision do not stop it: the dropper
    // saw them then (a Store keeping tombstones drops a table of tombstones).
    let tombstones = Batch::drop_table("drop-b1", "full", Expect::ModRevision(declared), b1);
    log.commit(&tombstones).await.unwrap();
    assert!(!table_exists("full").await);
    assert_eq!(
        log.read_records(Some("full"), None)
            .await
            .unwrap()
            .records
            .len(),
        2
    );

    // Emptied by deletes: a read sees it empty at E, and the drop at E commits.
    let declared = log.commit(&declare("emptied")).await.unwrap().revision;
    log.commit(&write("w-e1", "emptied", "e1", declared))
        .await
        .unwrap();
    log.commit(&Batch::new("w-e1-del").delete("emptied", "e1"))
        .await
        .unwrap();
    let seen = log.read_records(Some("emptied"), None).await.unwrap();
    assert!(seen.records.is_empty());
    let drop = Batch::drop_table(
        "drop-emptied",
        "emptied",
        Expect::ModRevision(declared),
        seen.revision,
    );
    log.commit(&drop).await.unwrap();
    // A write that knew the declaration now fails: nothing lands in the dropped table.
    assert_eq!(
        other
            .commit(&write("w-late", "emptied", "e2", declared))
            .await,
        Err(EtcdError::ConditionFailed {
            key: Key::Table("emptied".into()),
            expected: Expect::ModRevision(declared),
            current: 0,
        })
    );
    assert!(log.get("emptied", "e2").await.unwrap().record.is_none());
    // Declared again: the old declaration's writers still fail.
    // (Another batch: `declare("emptied")` again would be a replay of the first.)
    let redeclare = Batch::declare_table("redeclare-emptied", "emptied", &b"{}"[..]);
    let again = log.commit(&redeclare).await.unwrap();
    assert!(!again.replayed);
    let again = again.revision;
    assert!(matches!(
        other.commit(&write("w-late-2", "emptied", "e2", declared)).await,
        Err(EtcdError::ConditionFailed { current, .. }) if current == again
    ));

    // Racing, from two connections: a write and a drop of an empty table.
    // Exactly one commits, and the state is the winner's.
    let (mut writes_won, mut drops_won) = (0, 0);
    for round in 0..12 {
        let name = format!("race{round}");
        let declared = log.commit(&declare(&name)).await.unwrap().revision;
        let empty_at = log.read_records(Some(&name), None).await.unwrap().revision;
        let w = write(&format!("w-{name}"), &name, "x", declared);
        let d = Batch::drop_table(
            format!("d-{name}"),
            &name,
            Expect::ModRevision(declared),
            empty_at,
        );
        let (written, dropped) = if round % 2 == 0 {
            tokio::join!(other.commit(&w), log.commit(&d))
        } else {
            let (d, w) = tokio::join!(log.commit(&d), other.commit(&w));
            (w, d)
        };
        let record = log.get(&name, "x").await.unwrap().record;
        match (written, dropped) {
            (Ok(w), Err(EtcdError::RecordWrittenAfter { id, written, .. })) => {
                assert_eq!((id.as_str(), written), ("x", w.revision));
                assert!(record.is_some() && table_exists(&name).await);
                writes_won += 1;
            }
            (
                Err(EtcdError::ConditionFailed {
                    key, current: 0, ..
                }),
                Ok(_),
            ) => {
                assert_eq!(key, Key::Table(name.clone()));
                assert!(record.is_none() && !table_exists(&name).await);
                drops_won += 1;
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    eprintln!(
        "etcd-figures: a write racing a drop of its table, 12 rounds: the write won {writes_won}, the drop {drops_won}; the loser always failed"
    );
    assert_eq!(writes_won + drops_won, 12);
}

/// A node lease that runs out 2 s after its last keep-alive (etcd's least TTL).
fn fast_lease() -> NodeOptions {
    NodeOptions {
        ttl: Duration::from_secs(2),
        keepalive_every: Duration::from_millis(500),
    }
}

/// Polls `done` every 10 ms for at most `limit`; panics with `what` if it never holds.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_compacts_at_a_time_and_another_takes_over_when_its_lease_ends() {
    let cluster = EtcdCluster::start(3);
    let (log_a, log_b) = (connect(&cluster).await, connect(&cluster).await);
    let a = log_a.join("a", fast_lease()).await.unwrap();
    let b = log_b.join("b", fast_lease()).await.unwrap();
    let mut live = log_a.live_nodes().await.unwrap();
    live.sort();
    assert_eq!(live, ["a", "b"]);

    // A writer keeps the head moving.
    let writing = Arc::new(AtomicUsize::new(1));
    let writer = {
        let (log, writing) = (log_a.clone(), writing.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) == 1 {
                let batch = Batch::new(format!("c-{n}")).put("t", "x", format!("{n}"));
                log.commit(&batch).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    let options = CompactorOptions {
        period: Duration::from_millis(200),
        window: 20,
    };
    let compactors = [
        a.spawn_compactor(options.clone()),
        b.spawn_compactor(options),
    ];
    // Both never lead at once: sampled every 10 ms throughout.
    let mut both = 0;
    let mut sample = |compactors: &[Compactor; 2]| {
        let leading = compactors.iter().filter(|c| c.status().leader).count();
        if leading > 1 {
            both += 1;
        }
        compactors.iter().any(|c| c.status().compactions >= 3)
    };
    wait_until("three compactions", Duration::from_secs(15), || {
        sample(&compactors)
    })
    .await;
    let leader = usize::from(!compactors[0].status().leader);
    let follower = 1 - leader;
    let first = compactors[leader].status();
    assert!(first.leader);
    assert_eq!(first.elections, 1);
    assert_eq!(compactors[follower].status().compactions, 0);
    assert_eq!(compactors[follower].status().elections, 0);
    // A watch from below the floor is refused with (at least) that floor.
    let mut below = log_b.watch_from(1);
    match tokio::time::timeout(Duration::from_secs(10), below.next()).await {
        Ok(Err(EtcdError::Compacted {
            start: 1,
            compact_revision,
        })) => assert!(
            compact_revision >= first.floor,
            "{compact_revision} < {first:?}"
        ),
        other => panic!("a watch from 1 after compaction: {other:?}"),
    }

    // The leader's node stops renewing its lease (as if stopped): the other
    // node takes over once etcd deletes the key, and the old one stops first.
    let nodes = [&a, &b];
    let halted = Instant::now();
    nodes[leader].halt();
    let stepped_down = wait_until("the old leader steps down", Duration::from_secs(10), || {
        !compactors[leader].status().leader
    })
    .await;
    let took_over = wait_until("the other node compacts", Duration::from_secs(15), || {
        sample(&compactors);
        compactors[follower].status().compactions > 0
    })
    .await
        + stepped_down;
    let old = compactors[leader].status();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        compactors[leader].status(),
        old,
        "the old leader compacted on"
    );
    let new = compactors[follower].status();
    assert!(new.leader && new.elections == 1, "{new:?}");
    assert_eq!(both, 0, "both nodes led at once in {both} samples");
    eprintln!(
        "etcd-figures: compactor: old leader stepped down {:?} after its keep-alives stopped, the other compacted {:?} after ({:?} since the halt)",
        stepped_down,
        took_over - stepped_down,
        halted.elapsed()
    );
    writing.store(0, Ordering::Relaxed);
    let commits = writer.await.unwrap();
    assert!(commits > 20, "{commits}");

    // A dropped node's compactor stops too.
    let [a, b] = [a, b];
    drop(if follower == 0 { a } else { b });
    wait_until(
        "a dropped node's compactor stops",
        Duration::from_secs(5),
        || !compactors[follower].status().leader,
    )
    .await;
}

/// Counts, every 5 ms until `sampling` is cleared, the samples in which
/// more than one of `held` reads `true`.
fn sample_holders(
    held: Arc<std::sync::Mutex<Vec<tokio::sync::watch::Receiver<bool>>>>,
    sampling: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut both = 0;
        while sampling.load(Ordering::Relaxed) == 1 {
            let holders = held.lock().unwrap().iter().filter(|h| *h.borrow()).count();
            if holders > 1 {
                both += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        both
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_a_role_and_another_takes_it_when_the_holder_resigns_or_loses_its_lease() {
    let cluster = EtcdCluster::start(3);
    let (log_a, log_b) = (connect(&cluster).await, connect(&cluster).await);
    let a = log_a.join("a", fast_lease()).await.unwrap();
    let b = log_b.join("b", fast_lease()).await.unwrap();
    for bad in ["", "x/y"] {
        assert!(
            matches!(
                a.campaign(bad, RoleOptions::default()),
                Err(EtcdError::InvalidName(_))
            ),
            "role name {bad:?}"
        );
    }
    let options = RoleOptions {
        recheck: Duration::from_millis(300),
    };
    let before = log_a.current_revision().await.unwrap();
    let mut watch = log_a.watch_from(before + 1);
    let nodes = [&a, &b];
    let roles = [
        a.campaign("player", options.clone()).unwrap(),
        b.campaign("player", options.clone()).unwrap(),
    ];
    let held = Arc::new(std::sync::Mutex::new(
        roles.iter().map(Role::held).collect::<Vec<_>>(),
    ));
    let sampling = Arc::new(AtomicUsize::new(1));
    let sampler = sample_holders(held.clone(), sampling.clone());
    wait_until("one node holds the role", Duration::from_secs(10), || {
        roles.iter().any(Role::holds)
    })
    .await;
    let holder = usize::from(!roles[0].holds());
    let other = 1 - holder;
    assert_eq!(roles[holder].name(), "player");
    assert_eq!(roles[holder].elections(), 1);
    assert_eq!(roles[other].elections(), 0);
    assert_eq!(roles[holder].confirm().await, Ok(true));
    assert_eq!(roles[other].confirm().await, Ok(false));
    // The role's key is the layer's own: the log shows its revision, empty.
    let entry = next(&mut watch).await;
    assert_eq!(entry.revision, before + 1);
    assert!(entry.is_empty(), "{entry:?}");

    // Resigning passes it on at once, well before any lease could end.
    let [role_a, role_b] = roles;
    let (holding, waiting) = match holder {
        0 => (role_a, role_b),
        _ => (role_b, role_a),
    };
    let resigned = Instant::now();
    holding.resign().await.unwrap();
    let passed = wait_until(
        "the other node takes the resigned role",
        Duration::from_secs(1),
        || waiting.holds(),
    )
    .await;
    let resignation = resigned.elapsed();
    assert_eq!(waiting.elections(), 1);

    // The new holder's node stops renewing its lease (as if stopped): it
    // steps down, and the first node, campaigning again, takes over.
    let again = nodes[holder].campaign("player", options).unwrap();
    held.lock().unwrap().push(again.held());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!again.holds(), "two holders");
    let halted = Instant::now();
    nodes[other].halt();
    let stepped_down = wait_until(
        "the halted holder steps down",
        Duration::from_secs(10),
        || !waiting.holds(),
    )
    .await;
    let took_over = wait_until("the first node takes over", Duration::from_secs(15), || {
        again.holds()
    })
    .await;
    sampling.store(0, Ordering::Relaxed);
    assert_eq!(sampler.await.unwrap(), 0, "two nodes held the role at once");
    eprintln!(
        "etcd-figures: role: passed on {passed:?} after a resignation returned ({resignation:?} with the call); a halted holder stepped down {stepped_down:?} after its keep-alives stopped, the other held it {took_over:?} after ({:?} since the halt)",
        halted.elapsed()
    );

    // A dropped node's role is not held any more.
    let flag = again.held();
    drop(b);
    drop(a);
    wait_until(
        "a dropped node's role is let go",
        Duration::from_secs(5),
        || !*flag.borrow(),
    )
    .await;
    drop(waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_elsewhere_tells_the_owner_once_and_one_survivor_gets_a_dead_nodes_will() {
    let cluster = EtcdCluster::start(3);
    let log = connect(&cluster).await;
    let a = connect(&cluster)
        .await
        .join("a", fast_lease())
        .await
        .unwrap();
    let b = connect(&cluster)
        .await
        .join("b", fast_lease())
        .await
        .unwrap();
    let c = connect(&cluster)
        .await
        .join("c", fast_lease())
        .await
        .unwrap();
    let start = c.joined_at() + 1;
    assert!(c.joined_at() > b.joined_at() && b.joined_at() > a.joined_at());
    let mut watches = [
        a.watch_ownership(start),
        b.watch_ownership(start),
        c.watch_ownership(start),
    ];
    async fn quiet(watch: &mut OwnershipWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(700), watch.next())
            .await
            .is_err()
    }
    async fn event(watch: &mut OwnershipWatch) -> OwnershipEvent {
        tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .expect("an ownership event within 15 s")
            .expect("the watch goes on")
    }

    for client in ["dev-1", "dev-2"] {
        a.claim(client).await.unwrap();
    }
    // site/x has a will: it comes with the orphan, whole.
    let will: Vec<u8> = [b"\0\x01 bytes".as_slice(), &[0xff; 300]].concat();
    a.claim_with_will("site/x", Some(&will)).await.unwrap();
    // B takes dev-1 over (a newer CONNECT there): A is told, once.
    let taken = b.claim("dev-1").await.unwrap();
    assert_eq!(
        event(&mut watches[0]).await,
        OwnershipEvent::TakenOver {
            client_id: "dev-1".into(),
            by: "b".into(),
            revision: taken
        }
    );
    // B claiming its own client again tells nobody.
    b.claim("dev-1").await.unwrap();
    for watch in &mut watches {
        assert!(quiet(watch).await);
    }

    // A stops renewing its lease: its presence and both its clients go in
    // one revision, and each survivor is told of both orphans.
    let halted = Instant::now();
    a.halt();
    let mut orphans = Vec::new();
    for watch in &mut watches[1..] {
        for _ in 0..2 {
            match event(watch).await {
                OwnershipEvent::Orphaned {
                    client_id,
                    owner,
                    revision,
                    will: left,
                } => {
                    assert_eq!(owner, "a");
                    let expected = (client_id == "site/x").then(|| will.clone());
                    assert_eq!(left, expected, "{client_id}'s will");
                    orphans.push((client_id, revision));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let expired = halted.elapsed();
    assert_eq!(orphans.len(), 4);
    assert!(orphans.iter().all(|o| o.1 == orphans[0].1), "{orphans:?}");
    assert_eq!(orphans[0], orphans[2]);
    assert_eq!(orphans[1], orphans[3]);
    let mut live = log.live_nodes().await.unwrap();
    live.sort();
    assert_eq!(live, ["b", "c"]);
    assert_eq!(a.lease(), None);
    assert!(matches!(
        a.claim("dev-9").await,
        Err(EtcdError::LeaseLost(_))
    ));
    // A's watch says nothing of its own clients' end.
    assert!(quiet(&mut watches[0]).await);

    // Both survivors race for each will: exactly one wins, and stays the winner.
    let mut wins = [0, 0];
    for (client, revision) in &orphans[..2] {
        let (for_b, for_c) = tokio::join!(
            b.claim_will(client, *revision),
            c.claim_will(client, *revision)
        );
        let (for_b, for_c) = (for_b.unwrap(), for_c.unwrap());
        assert!(for_b != for_c, "{client}: b {for_b}, c {for_c}");
        wins[usize::from(for_c)] += 1;
        assert_eq!(b.claim_will(client, *revision).await.unwrap(), for_b);
        assert_eq!(c.claim_will(client, *revision).await.unwrap(), for_c);
    }
    assert_eq!(wins[0] + wins[1], 2);

    // A clean release is no death: nobody is told.
    assert!(b.release("dev-1").await.unwrap());
    assert!(!c.release("dev-1").await.unwrap());
    for watch in &mut watches[1..] {
        assert!(quiet(watch).await);
    }

    // A continues (say, after a SIGSTOP): its lease is gone, so it joins again
    // on a new one, owning nothing until its clients connect again.
    let old_lease = *a.state().borrow();
    assert_eq!(old_lease, LeaseState::Lost);
    let resumed = Instant::now();
    a.resume();
    let mut state = a.state();
    let back = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| matches!(s, LeaseState::Alive { .. })),
    )
    .await
    .expect("A holds a lease again within 10 s")
    .map(|s| *s)
    .unwrap();
    let back_after = resumed.elapsed();
    assert!(matches!(back, LeaseState::Alive { .. }));
    let mut live = log.live_nodes().await.unwrap();
    live.sort();
    assert_eq!(live, ["a", "b", "c"]);
    let reclaimed = a.claim("dev-2").await.unwrap();
    assert!(quiet(&mut watches[1]).await);
    // B taking it again tells the new A.
    let taken = b.claim("dev-2").await.unwrap();
    assert!(taken > reclaimed);
    assert_eq!(
        event(&mut watches[0]).await,
        OwnershipEvent::TakenOver {
            client_id: "dev-2".into(),
            by: "b".into(),
            revision: taken
        }
    );
    eprintln!(
        "etcd-figures: ownership: a halted node's clients were orphaned {expired:?} after its keep-alives stopped (lease TTL 2 s); resumed, it held a new lease after {back_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_leases_and_the_ownership_watch_outlive_killing_the_etcd_leader() {
    let mut cluster = EtcdCluster::start(3);
    let leader = cluster.leader();
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(leader);
    // Everything starts on the leader that is killed.
    let options = EtcdOptions {
        start_on_first: true,
        ..EtcdOptions::default()
    };
    let log = EtcdLog::connect_with(&endpoints, DEFAULT_PREFIX, options)
        .await
        .unwrap();
    // The default lease: 10 s, renewed every 3.3 s; C's runs out 2 s after
    // its last keep-alive, and it stops them as the leader is killed.
    let a = log.join("a", NodeOptions::default()).await.unwrap();
    let b = log.join("b", NodeOptions::default()).await.unwrap();
    let c = log.join("c", fast_lease()).await.unwrap();
    let start = log.current_revision().await.unwrap() + 1;
    let mut watch = a.watch_ownership(start);
    a.claim("dev").await.unwrap();
    c.claim("dev-c").await.unwrap();
    let (lease_a, lease_b) = (a.lease().unwrap(), b.lease().unwrap());
    // A's view, timed as it arrives: B's takeover, C's death, B's leaving.
    let events = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let event = tokio::time::timeout(Duration::from_secs(40), watch.next())
                .await
                .expect("ownership events within 40 s")
                .unwrap();
            seen.push((event, Instant::now()));
        }
        seen
    });

    let killed = Instant::now();
    c.halt();
    cluster.kill9(leader);
    // 4 s: past a keep-alive or two of each node, through the election.
    let mut lost = 0;
    while killed.elapsed() < Duration::from_secs(4) {
        if a.lease() != Some(lease_a) || b.lease() != Some(lease_b) {
            lost += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lost, 0, "a node lease was counted lost in {lost} samples");
    let claimed = Instant::now();
    let taken = b.claim("dev").await.unwrap();
    cluster.restart(leader);
    // Still the same leases, a keep-alive period later; C gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!((a.lease(), b.lease()), (Some(lease_a), Some(lease_b)));
    let mut live = log.live_nodes().await.unwrap();
    live.sort();
    assert_eq!(live, ["a", "b"]);
    // B leaves cleanly: its lease is revoked, its clients go at once.
    let left = Instant::now();
    b.leave().await.unwrap();
    assert_eq!(log.live_nodes().await.unwrap(), ["a"]);

    let mut told = [None; 3];
    for (event, at) in events.await.unwrap() {
        match event {
            OwnershipEvent::TakenOver {
                client_id,
                by,
                revision,
            } => {
                assert_eq!(
                    (client_id.as_str(), by.as_str(), revision),
                    ("dev", "b", taken)
                );
                told[0] = Some(at.saturating_duration_since(claimed));
            }
            OwnershipEvent::Orphaned {
                client_id, owner, ..
            } if owner == "c" => {
                assert_eq!(client_id, "dev-c");
                told[1] = Some(at.saturating_duration_since(killed));
            }
            OwnershipEvent::Orphaned {
                client_id, owner, ..
            } => {
                assert_eq!((client_id.as_str(), owner.as_str()), ("dev", "b"));
                told[2] = Some(at.saturating_duration_since(left));
            }
        }
    }
    let [Some(takeover), Some(death), Some(leaving)] = told else {
        panic!("events missing: {told:?}");
    };
    eprintln!(
        "etcd-figures: leader kill -9: node leases (10 s) held throughout; a takeover was told {takeover:?} after the claim was sent; a node halted at the kill (2 s lease) was orphaned {death:?} after it (etcd 3.4 renews leases on a new leader); a clean leave was told {leaving:?} after it began"
    );
}

/// A fixed pseudo-random sequence (Knuth's MMIX LCG): `draw(n)` is in `0..n`,
/// the same every run, so a failure replays.
fn lcg(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    }
}
