//! The playlist player with two Marquee nodes on one three-member etcd: one
//! node plays for both (the holder of the store's `player` role), so each
//! step of a playlist is written once, by that node alone; when it stops (or
//! is killed, once its lease ends), the other node takes the role over and
//! the playlist goes on from where it was.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::{ChildServer, SseClient, TestServer, client, put};
use marquee::player::ROLE;
use serde_json::{Value, json};
use tokio::sync::watch;

fn store(server: &TestServer) -> &marquee::store::Store {
    server.server.as_ref().expect("running").store()
}

fn leadership(server: &TestServer) -> watch::Receiver<bool> {
    store(server).leadership(ROLE).expect("a valid role name")
}

/// Commits this node has made (writes whose etcd transaction succeeded).
fn commits(server: &TestServer) -> u64 {
    store(server).metrics().commits.get()
}

/// Asserts that `server` has made exactly `expected` commits: a writer
/// counts its commit when etcd's answer reaches it, which may be a moment
/// after the change is on the bus and the test has seen it, so this waits
/// (at most 1 s, under an item's time) for the count to catch up.
async fn assert_commits(server: &TestServer, expected: u64, what: &str) {
    let began = Instant::now();
    while commits(server) < expected && began.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(commits(server), expected, "{what}");
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

/// One step the player took, as the sign's SSE stream told it.
#[derive(Debug)]
struct Step {
    version: u64,
    position: u64,
    at: Instant,
}

async fn next_step(sse: &mut SseClient, playlist: &Value) -> Step {
    let event = sse.next().await.expect("a change within 10 s");
    let change = event.json();
    assert_eq!(change["type"], "patch", "{change}");
    assert_eq!(change["origin"], "system", "{change}");
    // Only the position moves; the playlist itself is left as the user wrote it.
    assert_eq!(change["value"]["shows"]["playlist"], *playlist, "{change}");
    Step {
        version: change["version"].as_u64().expect("a version"),
        position: change["value"]["shows"]["position"]
            .as_u64()
            .expect("a position"),
        at: Instant::now(),
    }
}

/// Each step follows the one before: the next position, the next version
/// (a step written twice would skip a version or repeat a position).
fn assert_one_at_a_time(steps: &[Step], items: u64) {
    for pair in steps.windows(2) {
        let [before, after] = pair else { continue };
        assert_eq!(after.version, before.version + 1, "{steps:?}");
        assert_eq!(after.position, (before.position + 1) % items, "{steps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_plays_each_playlist_and_the_other_takes_over_when_it_stops() {
    let cluster = EtcdCluster::start(3);
    let a = TestServer::on_etcd(&cluster, |_| {}).await;
    let b = TestServer::on_etcd(&cluster, |_| {}).await;
    let (held_a, held_b) = (leadership(&a), leadership(&b));
    wait_until(
        "one node holds the player role",
        Duration::from_secs(10),
        || *held_a.borrow() || *held_b.borrow(),
    )
    .await;

    // Never both at once: sampled every 5 ms throughout.
    let both = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (both, sampling) = (both.clone(), sampling.clone());
        let (held_a, held_b) = (held_a.clone(), held_b.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if *held_a.borrow() && *held_b.borrow() {
                    both.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let leading_a = *held_a.borrow();
    let (leader, follower, held_follower) = match leading_a {
        true => (a, b, held_b),
        false => (b, a, held_a),
    };

    let http = client();
    for id in ["x", "y", "z"] {
        let message = json!({"text": id, "duration": 1});
        let response = put(&http, &leader.url, &format!("/api/messages/{id}"), &message).await;
        assert!(response.status().is_success(), "{}", response.status());
    }
    // Watched on the follower, which stays up throughout.
    let mut sse = SseClient::connect(&format!("{}/api/signs/hall", follower.url), None).await;
    sse.until_sync().await;
    let playlist = json!([{"message": "x"}, {"message": "y"}, {"message": "z"}]);
    let sign = json!({"shows": {"playlist": playlist}});
    let response = put(&http, &follower.url, "/api/signs/hall", &sign).await;
    assert_eq!(response.status(), 201);
    let first = sse.next().await.expect("the sign's put").json();
    assert_eq!(first["type"], "put");
    let mut steps = vec![Step {
        version: first["version"].as_u64().expect("a version"),
        position: 0,
        at: Instant::now(),
    }];
    let (leader_before, follower_before) = (commits(&leader), commits(&follower));

    // Six steps, two rounds of the playlist, each about an item's time apart.
    for _ in 0..6 {
        steps.push(next_step(&mut sse, &playlist).await);
    }
    assert_one_at_a_time(&steps, 3);
    for pair in steps.windows(2) {
        let [before, after] = pair else { continue };
        let gap = after.at - before.at;
        assert!(
            gap >= Duration::from_millis(500) && gap <= Duration::from_millis(2500),
            "an item was up for {gap:?}, not about 1 s: {steps:?}"
        );
    }
    // Every step is the leader's write; the follower wrote none (a player
    // there would have won some of the races for a step).
    assert_commits(&leader, leader_before + 6, "the leader's writes").await;
    assert_eq!(commits(&follower), follower_before, "the follower wrote");

    // The leader stops: its node leaves, the role passes to the follower,
    // which goes on from the position and the time the leader left.
    let played = steps.len();
    let stopping = Instant::now();
    leader.stop().await;
    let stopped = stopping.elapsed();
    let took_over = wait_until(
        "the follower takes the role",
        Duration::from_secs(10),
        || *held_follower.borrow(),
    )
    .await;
    for _ in 0..4 {
        steps.push(next_step(&mut sse, &playlist).await);
    }
    assert_one_at_a_time(&steps, 3);
    let around = steps
        .get(played - 1..=played)
        .expect("the steps around the stop");
    let [before, after] = around else {
        panic!("two steps around the stop: {around:?}")
    };
    let handover_gap = after.at - before.at;
    // The item up when the leader stopped gets only the rest of its time.
    assert!(
        handover_gap <= Duration::from_millis(2500) + stopped + took_over,
        "the handover held an item for {handover_gap:?}: {steps:?}"
    );
    for pair in steps.get(played..).unwrap_or_default().windows(2) {
        let [before, after] = pair else { continue };
        let gap = after.at - before.at;
        assert!(
            gap >= Duration::from_millis(500) && gap <= Duration::from_millis(2500),
            "an item was up for {gap:?} after the handover: {steps:?}"
        );
    }
    assert_commits(&follower, follower_before + 4, "the new player's writes").await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("the sampler");
    assert_eq!(
        both.load(Ordering::Relaxed),
        0,
        "both nodes held the player role at once"
    );
    eprintln!(
        "etcd-figures: player handover: the leader's shutdown took {stopped:?}, the follower held the role {took_over:?} after, and the item up then stayed {handover_gap:?}"
    );
    follower.stop().await;
}

/// The node that plays is killed with -9, so it never leaves: the other node
/// takes the role over once etcd ends the dead node's lease (a 10 s TTL), and
/// the playlist goes on from where it was, no step skipped or written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_players_role_passes_once_its_lease_ends_and_the_playlist_goes_on() {
    let cluster = EtcdCluster::start(3);
    let dirs = tempfile::tempdir().expect("tempdir");
    let store = format!("etcd://{}/marquee/", cluster.endpoints().join(","));
    // Alone at first, so it is the player.
    let mut killed = ChildServer::spawn(&dirs.path().join("a"), &["--store", store.as_str()]);
    let http = client();
    for id in ["x", "y"] {
        let message = json!({"text": id, "duration": 1});
        let response = put(&http, &killed.url, &format!("/api/messages/{id}"), &message).await;
        assert!(response.status().is_success(), "{}", response.status());
    }
    let playlist = json!([{"message": "x"}, {"message": "y"}]);
    let sign = json!({"shows": {"playlist": playlist}});
    let response = put(&http, &killed.url, "/api/signs/hall", &sign).await;
    assert_eq!(response.status(), 201);

    let survivor = TestServer::on_etcd(&cluster, |_| {}).await;
    let held = leadership(&survivor);
    let mut sse = SseClient::connect(&format!("{}/api/signs/hall", survivor.url), None).await;
    let state = sse.until_sync().await;
    let now = state.first().expect("the sign").json();
    let mut steps = vec![Step {
        version: now["version"].as_u64().expect("a version"),
        position: now["value"]["shows"]["position"]
            .as_u64()
            .expect("a position"),
        at: Instant::now(),
    }];
    let before = commits(&survivor);
    for _ in 0..3 {
        steps.push(next_step(&mut sse, &playlist).await);
    }
    assert!(!*held.borrow(), "the second node holds the role too");
    assert_eq!(commits(&survivor), before, "the second node wrote");

    let killing = Instant::now();
    killed.kill();
    let played = steps.len();
    let event = sse
        .next_within(Duration::from_secs(20))
        .await
        .expect("a step within 20 s of the kill");
    let took_over = killing.elapsed();
    assert!(*held.borrow(), "a step, but not by the survivor");
    let change = event.json();
    assert_eq!(change["origin"], "system", "{change}");
    steps.push(Step {
        version: change["version"].as_u64().expect("a version"),
        position: change["value"]["shows"]["position"]
            .as_u64()
            .expect("a position"),
        at: Instant::now(),
    });
    for _ in 0..3 {
        steps.push(next_step(&mut sse, &playlist).await);
    }
    assert_one_at_a_time(&steps, 2);
    assert_commits(&survivor, before + 4, "the survivor's writes").await;
    for pair in steps.get(played..).unwrap_or_default().windows(2) {
        let [before, after] = pair else { continue };
        let gap = after.at - before.at;
        assert!(
            gap >= Duration::from_millis(500) && gap <= Duration::from_millis(2500),
            "an item was up for {gap:?} after the takeover: {steps:?}"
        );
    }
    eprintln!(
        "etcd-figures: player takeover after a kill -9: the next step came {took_over:?} after the kill"
    );
    survivor.stop().await;
}
