//! Two Marquee nodes on a three-member etcd, with writers running, through
//! faults: the etcd leader killed, an etcd member paused, a Marquee node
//! killed, a node away past the window. After each: no acknowledged write
//! missing, none applied twice, every node's records the same.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::etcd::EtcdCluster;
use common::rumqtt::{self, Mqtt};
use common::{ChildServer, SseClient, TestServer, client, get_json, seq_of};
use rumqttc::{LastWill, QoS};
use serde_json::{Value, json};

async fn server_on(cluster: &EtcdCluster) -> TestServer {
    TestServer::on_etcd(cluster, |config| {
        config.tables.push(marquee::store::TableDecl {
            name: "sensors".into(),
            schema: None,
        });
    })
    .await
}

/// `marquee` child processes on `cluster`, each with a data dir of its name,
/// all declaring the `sensors` table.
struct ChildNodes {
    dirs: tempfile::TempDir,
    args: Vec<String>,
}

impl ChildNodes {
    fn new(cluster: &EtcdCluster) -> Self {
        let dirs = tempfile::tempdir().expect("tempdir");
        let config = dirs.path().join("marquee.toml");
        std::fs::write(&config, "[[tables]]\nname = \"sensors\"\n").expect("config");
        let args = vec![
            "--store".to_owned(),
            cluster.store_flag(),
            "--config".to_owned(),
            config.to_string_lossy().into_owned(),
        ];
        Self { dirs, args }
    }

    /// Starts (or starts again) the node `name` on its data dir.
    fn spawn(&self, name: &str) -> ChildServer {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        ChildServer::spawn(&self.dirs.path().join(name), &args)
    }
}

/// What writers got: each key written once, by one writer.
#[derive(Default)]
struct Outcome {
    /// Key → the seq its acknowledged write was given.
    acked: BTreeMap<String, u64>,
    /// Writes that failed (they may or may not have been applied).
    failed: usize,
}

/// `writers` writers, each writing `per_writer` distinct keys of `sensors`
/// to the first of `urls` that answers (a client fails over to the next
/// node when its node is gone), each write tried once.
async fn write_load(
    urls: Vec<String>,
    writers: usize,
    per_writer: usize,
    pace: Duration,
) -> Outcome {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut urls = urls.clone();
        let turn = w % urls.len().max(1);
        urls.rotate_left(turn);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client");
            let mut outcome = Outcome::default();
            let mut node = 0;
            for i in 0..per_writer {
                let key = format!("w{w}-{i}");
                let url = &urls[node % urls.len()];
                let answer = http
                    .put(format!("{url}/api/sensors/{key}"))
                    .json(&json!({"w": w, "i": i}))
                    .send()
                    .await;
                match answer {
                    Ok(response) if response.status().is_success() => {
                        let change: Value = response.json().await.expect("a change");
                        outcome.acked.insert(key, seq_of(&change));
                    }
                    Ok(_) => outcome.failed += 1,
                    Err(_) => {
                        outcome.failed += 1;
                        node += 1;
                    }
                }
                tokio::time::sleep(pace).await;
            }
            outcome
        }));
    }
    let mut total = Outcome::default();
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("writers finish within 3 minutes")
            .expect("writer task");
        total.acked.extend(outcome.acked);
        total.failed += outcome.failed;
    }
    total
}

/// Every record of `sensors` on the node at `url`: id → (version, seq, value).
async fn records(url: &str) -> BTreeMap<String, (u64, u64, Value)> {
    let http = client();
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/api/sensors/?after={after}&limit=1000"),
            None => "/api/sensors/?limit=1000".to_owned(),
        };
        let (status, page) = get_json(&http, url, &path).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            let id = item["id"].as_str().expect("id").to_owned();
            let version = item["version"].as_u64().expect("version");
            out.insert(id, (version, seq_of(item), item["value"].clone()));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// No acknowledged write missing, none applied twice (every record is at
/// version 1: each key was written once), the same records on every node.
async fn check(outcome: &Outcome, urls: &[&str]) {
    let first = records(urls[0]).await;
    for url in &urls[1..] {
        let other = records(url).await;
        assert!(other == first, "the nodes' records differ");
    }
    for (key, seq) in &outcome.acked {
        let (version, stored_seq, _) = first
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged write {key} (seq {seq}) is missing"));
        assert_eq!(*version, 1, "{key} was applied more than once");
        assert_eq!(stored_seq, seq, "{key} is at another seq than acknowledged");
    }
    assert!(
        first.len() <= outcome.acked.len() + outcome.failed,
        "{} records from {} acknowledged and {} failed writes",
        first.len(),
        outcome.acked.len(),
        outcome.failed
    );
    for (key, (version, _, _)) in &first {
        assert_eq!(*version, 1, "{key} was applied more than once");
    }
}

/// Waits until both nodes have applied everything (a write made on one is
/// on the other shortly after it is acknowledged).
async fn settle(urls: &[&str]) {
    for _ in 0..100 {
        let mut seen = Vec::new();
        for url in urls {
            seen.push(records(url).await.len());
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers on two nodes; 700 ms in, `fault` is done to the cluster's leader,
/// and `mend` after `lasting`; then every check.
async fn etcd_fault_under_load(
    what: &str,
    fault: fn(&mut EtcdCluster, usize),
    lasting: Duration,
    mend: fn(&mut EtcdCluster, usize),
) {
    let mut cluster = EtcdCluster::start(3);
    let a = server_on(&cluster).await;
    let b = server_on(&cluster).await;
    let load = tokio::spawn(write_load(
        vec![a.url.clone(), b.url.clone()],
        8,
        150,
        Duration::from_millis(10),
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The leader: the member every write waits on.
    let leader = cluster.leader();
    fault(&mut cluster, leader);
    tokio::time::sleep(lasting).await;
    mend(&mut cluster, leader);
    let outcome = load.await.expect("load");
    eprintln!(
        "{what}: {} acknowledged, {} failed",
        outcome.acked.len(),
        outcome.failed
    );
    assert!(outcome.acked.len() > 600, "the nodes went on writing");
    settle(&[&a.url, &b.url]).await;
    check(&outcome, &[&a.url, &b.url]).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_under_load_loses_no_acknowledged_write() {
    etcd_fault_under_load(
        "leader kill",
        EtcdCluster::kill9,
        Duration::from_secs(2),
        EtcdCluster::restart,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_the_etcd_leader_under_load_loses_no_acknowledged_write() {
    etcd_fault_under_load(
        "leader pause",
        EtcdCluster::pause,
        Duration::from_secs(3),
        EtcdCluster::resume,
    )
    .await;
}

/// A Marquee node killed with -9 under load: its writers fail over to the
/// other node, and an SSE client on it resumes there from its last event id
/// with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_marquee_node_its_clients_resume_on_the_other() {
    let cluster = EtcdCluster::start(3);
    let nodes = ChildNodes::new(&cluster);
    let mut a = nodes.spawn("a");
    let b = nodes.spawn("b");

    let mut stream = SseClient::connect(&format!("{}/api/sensors/", a.url), None).await;
    stream.until_sync().await;
    let load = tokio::spawn(write_load(
        vec![a.url.clone(), b.url.clone()],
        6,
        150,
        Duration::from_millis(10),
    ));
    let mut seen: Vec<u64> = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        if let Some(event) = stream.next_within(Duration::from_millis(200)).await
            && let Some(seq) = change_seq(&event)
        {
            seen.push(seq);
        }
    }
    a.kill();
    // The stream on A ends; the client resumes on B from its last event.
    while let Some(event) = stream.next_within(Duration::from_secs(5)).await {
        if let Some(seq) = change_seq(&event) {
            seen.push(seq);
        }
    }
    let last = seen.last().copied().expect("events before the kill");
    let mut resumed =
        SseClient::connect(&format!("{}/api/sensors/", b.url), Some(&last.to_string())).await;
    let outcome = load.await.expect("load");
    eprintln!(
        "node kill: {} acknowledged, {} failed, {} seen on A",
        outcome.acked.len(),
        outcome.failed,
        seen.len()
    );
    settle(&[&b.url]).await;
    let written = records(&b.url).await;
    while seen.len() < written.len() {
        let event = resumed
            .next_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{} of {} changes", seen.len(), written.len()));
        assert_ne!(
            event.kind(),
            "reset",
            "a resume within the window is no gap"
        );
        if let Some(seq) = change_seq(&event) {
            seen.push(seq);
        }
    }
    common::assert_strictly_increasing(&seen, "seqs before and after the failover");
    let mut stored: Vec<u64> = written.values().map(|(_, seq, _)| *seq).collect();
    stored.sort_unstable();
    assert_eq!(seen, stored, "every change once, across the failover");
    for (key, seq) in &outcome.acked {
        assert_eq!(
            written.get(key).map(|(_, s, _)| s),
            Some(seq),
            "acknowledged {key}"
        );
    }
}

/// A Marquee node killed with -9 while MQTT clients are on it: one of the
/// two surviving nodes sends the will of a client it had, once, once the
/// node's lease has run out (and not the will of a client that had left
/// cleanly); the client's persistent session then carries on on another
/// node with its subscription, and gets what was written while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_marquee_node_its_mqtt_wills_go_out_once_and_sessions_carry_on() {
    let cluster = EtcdCluster::start(3);
    let nodes = ChildNodes::new(&cluster);
    let mut a = nodes.spawn("a");
    let b = nodes.spawn("b");
    let c = nodes.spawn("c");
    let mut watch_b = Mqtt::connect(b.mqtt, "watch-b").await;
    watch_b.subscribe("gone/#").await;
    let mut watch_c = Mqtt::connect(c.mqtt, "watch-c").await;
    watch_c.subscribe("gone/#").await;

    let with_will = |id: &str| {
        let mut options = rumqtt::options(a.mqtt, id);
        options.set_last_will(LastWill::new(
            format!("gone/{id}"),
            format!("{id} lost"),
            QoS::AtLeastOnce,
            false,
        ));
        options
    };
    let mut options = with_will("keeper");
    options.set_clean_session(false);
    let mut keeper = Mqtt::connect_with(options).await;
    keeper.subscribe("sensors/#").await;
    let polite = Mqtt::connect_with(with_will("polite")).await;
    polite.client.disconnect().await.expect("DISCONNECT sent");
    // The polite client's DISCONNECT has been dealt with on A when a
    // client connecting after it is answered.
    tokio::time::sleep(Duration::from_millis(300)).await;

    a.kill();
    // While the keeper is away: a change it is subscribed to.
    let response = common::put(
        &client(),
        &c.url,
        "/api/sensors/while-away",
        &json!({"n": 1}),
    )
    .await;
    assert!(response.status().is_success(), "{}", response.status());

    // A's lease (10 s) runs out; then a survivor sends the keeper's will.
    let mut wills: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut quiet_since: Option<std::time::Instant> = None;
    while std::time::Instant::now() < deadline {
        // After the first will, 3 s more to catch a second sending.
        if quiet_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        for (name, watcher) in [("b", &mut watch_b), ("c", &mut watch_c)] {
            if let Some(will) = watcher.next(Duration::from_millis(100)).await {
                *wills.entry(format!("{name} {}", will.topic)).or_default() += 1;
                quiet_since.get_or_insert_with(std::time::Instant::now);
            }
        }
    }
    let expected: BTreeMap<String, usize> = [
        ("b gone/keeper".to_owned(), 1),
        ("c gone/keeper".to_owned(), 1),
    ]
    .into();
    assert_eq!(wills, expected, "each watcher gets the keeper's will once");

    // The keeper comes back on B: its session, with its subscription.
    drop(keeper);
    let mut options = rumqtt::options(b.mqtt, "keeper");
    options.set_clean_session(false);
    let mut keeper = Mqtt::connect_with(options).await;
    assert!(keeper.session_present, "the session outlived its node");
    let missed = keeper
        .next(Duration::from_secs(10))
        .await
        .expect("the change written while the keeper was away");
    assert_eq!(missed.topic, "sensors/while-away");
    let response = common::put(&client(), &c.url, "/api/sensors/after", &json!({"n": 2})).await;
    assert!(response.status().is_success(), "{}", response.status());
    let mut topics = Vec::new();
    while let Some(publish) = keeper.next(Duration::from_secs(2)).await {
        topics.push(publish.topic);
    }
    assert_eq!(
        topics,
        ["sensors/after"],
        "live changes, without subscribing again"
    );
}

/// A change's seq; `None` for control events (`sync` carries the seq it
/// synced through as its id too).
fn change_seq(event: &common::SseEvent) -> Option<u64> {
    (event.event == "message").then(|| event.seq()).flatten()
}

/// A node stopped while etcd's history moved past it: on its return it reads
/// the records again, and a client resuming on it from before is told to
/// resync (`reset`) rather than given a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_past_the_window_reports_the_gap_then_resyncs() {
    let cluster = EtcdCluster::start(3);
    let nodes = ChildNodes::new(&cluster);
    let a = nodes.spawn("a");
    let mut b = nodes.spawn("b");
    let http = client();
    let first = common::put_seq(&http, &b.url, "/api/sensors/before", &json!({"n": 0})).await;
    b.kill();

    // While B is away: writes on A, then etcd's history compacted past them.
    for n in 1..=20 {
        common::put_seq(
            &http,
            &a.url,
            &format!("/api/sensors/s{n}"),
            &json!({"n": n}),
        )
        .await;
    }
    let log = marquee::store::etcd::EtcdLog::connect(&cluster.endpoints(), "/marquee/")
        .await
        .expect("connect");
    let head = log.current_revision().await.expect("head");
    log.compact(head).await.expect("compact");

    let b = nodes.spawn("b");
    settle(&[&a.url, &b.url]).await;
    check(
        &Outcome {
            acked: BTreeMap::new(),
            failed: 21,
        },
        &[&a.url, &b.url],
    )
    .await;
    assert_eq!(records(&b.url).await.len(), 21, "B has every record again");
    let mut resumed =
        SseClient::connect(&format!("{}/api/sensors/", b.url), Some(&first.to_string())).await;
    let event = resumed.next().await.expect("an answer to the resume");
    assert_eq!(event.kind(), "reset", "{event:?}");
    drop(a);
}
