//! MQTT shared subscriptions across two Marquee nodes on one three-member
//! etcd: a group with members on both nodes gets each message once in all
//! (MQTT 5 §4.8.2), whichever node it was published on and at either QoS,
//! while a plain subscriber gets every one; members coming and going on one
//! node, a node leaving, and a node restarting on its cache do not make a
//! message go to two members.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::TestServer;
use common::etcd::EtcdCluster;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const GROUP: &str = "$share/workers/jobs/#";
const WAIT: Duration = Duration::from_secs(10);

/// Deliveries per job number (a job's payload is its number).
type Counts = Arc<Vec<AtomicUsize>>;

fn counts(n: usize) -> Counts {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn total(counts: &Counts, jobs: std::ops::Range<usize>) -> usize {
    jobs.map(|j| counts[j].load(Ordering::Acquire)).sum()
}

/// A rumqttc client (MQTT 3.1.1, clean session) that counts every job it is
/// sent into `counts`; rumqttc acknowledges QoS 1 itself.
struct Counter {
    client: AsyncClient,
    received: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    async fn subscribe(addr: SocketAddr, id: &str, filter: &str, counts: &Counts) -> Self {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 64);
        let (acks, mut acked) = mpsc::unbounded_channel();
        let received = Arc::new(AtomicUsize::new(0));
        let (into, count) = (counts.clone(), received.clone());
        let name = id.to_owned();
        let task = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let job: usize = std::str::from_utf8(&p.payload)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_else(|| panic!("{name}: not a job: {:?}", p.payload));
                        into[job].fetch_add(1, Ordering::AcqRel);
                        count.fetch_add(1, Ordering::AcqRel);
                    }
                    Event::Incoming(packet @ (Packet::ConnAck(_) | Packet::SubAck(_))) => {
                        let _ = acks.send(packet);
                    }
                    _ => {}
                }
            }
        });
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        for _ in 0..2 {
            match tokio::time::timeout(WAIT, acked.recv()).await {
                Ok(Some(Packet::ConnAck(_))) => {}
                Ok(Some(Packet::SubAck(ack))) => assert_eq!(
                    ack.return_codes,
                    vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                    "{id}"
                ),
                other => panic!("{id}: no CONNACK and SUBACK: {other:?}"),
            }
        }
        Self {
            client,
            received,
            task,
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Acquire)
    }

    /// Disconnects (ending its clean session, so it leaves its group) and
    /// returns what it received.
    async fn leave(self) -> usize {
        let _ = self.client.disconnect().await;
        let received = self.received.clone();
        let _ = tokio::time::timeout(WAIT, self.task).await;
        received.load(Ordering::Acquire)
    }
}

/// A rumqttc publisher of jobs on one node.
struct Publisher {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 64);
        let task = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        Self { client, task }
    }

    /// Jobs `jobs`, even ones at QoS 1, odd ones at QoS 0, `pause` apart.
    async fn publish(&self, jobs: std::ops::Range<usize>, pause: Duration) {
        for job in jobs {
            let qos = match job % 2 {
                0 => QoS::AtLeastOnce,
                _ => QoS::AtMostOnce,
            };
            self.client
                .publish(format!("jobs/{}", job % 7), qos, false, job.to_string())
                .await
                .unwrap();
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Jobs `jobs` as retained QoS 1 publishes, each on a topic of its own:
    /// records, not transient messages.
    async fn publish_retained(&self, jobs: std::ops::Range<usize>) {
        for job in jobs {
            self.client
                .publish(
                    format!("jobs/kept/{job}"),
                    QoS::AtLeastOnce,
                    true,
                    job.to_string(),
                )
                .await
                .unwrap();
        }
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

async fn node(cluster: &EtcdCluster) -> TestServer {
    TestServer::on_etcd(cluster, |_| {}).await
}

/// Waits until `counts` add up to `expected` over `jobs` (or stop growing
/// for two seconds: some were lost), then a while longer, so that a job
/// delivered twice shows.
async fn settle(counts: &Counts, jobs: std::ops::Range<usize>, expected: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = (0, tokio::time::Instant::now());
    loop {
        let now = tokio::time::Instant::now();
        let sum = total(counts, jobs.clone());
        if sum != last.0 {
            last = (sum, now);
        }
        if sum >= expected || now >= deadline || now - last.1 >= Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
}

/// The jobs of `jobs` delivered other than `want` times: (job, deliveries).
fn off(counts: &Counts, jobs: std::ops::Range<usize>, want: usize) -> Vec<(usize, usize)> {
    jobs.map(|j| (j, counts[j].load(Ordering::Acquire)))
        .filter(|(_, n)| *n != want)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_members_on_two_nodes_gets_each_message_once() {
    let cluster = EtcdCluster::start(3);
    let a = node(&cluster).await;
    let b = node(&cluster).await;
    const N: usize = 400;
    const KEPT: usize = 40;
    let shared = counts(3 * N + KEPT);
    let plain = counts(3 * N + KEPT);

    // A's members first, so that A's key is in before B's: two nodes whose
    // first members join at once may both take the first messages.
    let a1 = Counter::subscribe(a.mqtt_addr(), "a1", GROUP, &shared).await;
    let a2 = Counter::subscribe(a.mqtt_addr(), "a2", GROUP, &shared).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b1 = Counter::subscribe(b.mqtt_addr(), "b1", GROUP, &shared).await;
    let everything = Counter::subscribe(b.mqtt_addr(), "everything", "jobs/#", &plain).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // N from each node at once, half at QoS 1, half at QoS 0.
    let on_a = Publisher::connect(a.mqtt_addr(), "boss-a").await;
    let on_b = Publisher::connect(b.mqtt_addr(), "boss-b").await;
    tokio::join!(
        on_a.publish(0..N, Duration::ZERO),
        on_b.publish(N..2 * N, Duration::ZERO)
    );
    settle(&shared, 0..2 * N, 2 * N).await;
    settle(&plain, 0..2 * N, 2 * N).await;
    let per_member = [a1.received(), a2.received(), b1.received()];
    let wrong = off(&shared, 0..2 * N, 1);
    assert!(
        wrong.is_empty(),
        "{} of {} jobs not delivered once to the group, e.g. (job, times) {:?}; per member {per_member:?}",
        wrong.len(),
        2 * N,
        &wrong[..wrong.len().min(8)]
    );
    assert_eq!(per_member.iter().sum::<usize>(), 2 * N);
    assert!(
        per_member[0] + per_member[1] > 0 && per_member[2] > 0,
        "both nodes' members get some: {per_member:?}"
    );
    let wrong = off(&plain, 0..2 * N, 1);
    assert!(
        wrong.is_empty(),
        "a plain subscriber gets every job once: {:?}",
        &wrong[..wrong.len().min(8)]
    );
    eprintln!("per member (a1, a2, b1): {per_member:?}");

    // Retained publishes are records, named alike on every node by their seq.
    let kept = 3 * N..3 * N + KEPT;
    tokio::join!(
        on_a.publish_retained(3 * N..3 * N + KEPT / 2),
        on_b.publish_retained(3 * N + KEPT / 2..3 * N + KEPT)
    );
    settle(&shared, kept.clone(), KEPT).await;
    settle(&plain, kept.clone(), KEPT).await;
    let wrong = off(&shared, kept.clone(), 1);
    assert!(
        wrong.is_empty(),
        "retained jobs not delivered once to the group: {wrong:?}"
    );
    let wrong = off(&plain, kept, 1);
    assert!(
        wrong.is_empty(),
        "retained jobs to a plain subscriber: {wrong:?}"
    );

    // B leaves (its lease revoked, its key gone at once): A takes everything.
    b1.leave().await;
    everything.leave().await;
    on_b.stop().await;
    b.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    on_a.publish(2 * N..3 * N, Duration::ZERO).await;
    settle(&shared, 2 * N..3 * N, N).await;
    let wrong = off(&shared, 2 * N..3 * N, 1);
    assert!(
        wrong.is_empty(),
        "after B left, A's members get each job once: {:?}",
        &wrong[..wrong.len().min(8)]
    );

    a1.leave().await;
    a2.leave().await;
    on_a.stop().await;
    a.stop().await;
}

/// A member that comes and goes on B, B's only one, so that B's key comes
/// and goes too, while jobs flow: no job goes to two members, the few chosen
/// for B while it had no member left are the only ones lost, and once the
/// member stays, every job arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_coming_and_going_on_one_node_makes_no_duplicates() {
    let cluster = EtcdCluster::start(3);
    let a = node(&cluster).await;
    let b = node(&cluster).await;
    const CHURN: usize = 1500;
    const AFTER: usize = 400;
    let shared = counts(CHURN + AFTER);

    let steady = Counter::subscribe(a.mqtt_addr(), "steady", GROUP, &shared).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let churner = {
        let (addr, shared, stop) = (b.mqtt_addr(), shared.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0u64;
            let mut received = 0;
            while !stop.load(Ordering::Acquire) {
                let member = Counter::subscribe(addr, "churner", GROUP, &shared).await;
                tokio::time::sleep(Duration::from_millis(150 + (rounds * 37) % 200)).await;
                received += member.leave().await;
                rounds += 1;
                // Long enough away that a node which kept its key while it
                // had no member would lose a good share of the jobs.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (rounds, received)
        })
    };

    let publisher = Publisher::connect(a.mqtt_addr(), "boss").await;
    publisher.publish(0..CHURN, Duration::from_millis(2)).await;
    stop.store(true, Ordering::Release);
    let (rounds, churned) = churner.await.unwrap();
    settle(&shared, 0..CHURN, CHURN).await;
    let twice: Vec<_> = off(&shared, 0..CHURN, 1)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    let lost = off(&shared, 0..CHURN, 1)
        .into_iter()
        .filter(|(_, n)| *n == 0)
        .count();
    eprintln!(
        "{rounds} rounds of B's member; of {CHURN} jobs it got {churned}, {lost} lost, {} twice",
        twice.len()
    );
    assert!(
        twice.is_empty(),
        "{} delivered twice, e.g. (job, times) {:?}",
        twice.len(),
        &twice[..twice.len().min(8)]
    );
    assert!(rounds >= 3, "the member came and went only {rounds} times");
    // Each leave loses what was chosen for B between its member's going
    // and its key's delete (a commit); a key kept while away would lose
    // about half of what was published then (a third of the time).
    assert!(
        lost <= CHURN / 10,
        "{lost} of {CHURN} lost while B's only member came and went {rounds} times"
    );

    // The member stays now: every job once, and B's member gets some.
    let stays = Counter::subscribe(b.mqtt_addr(), "stays", GROUP, &shared).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = steady.received();
    publisher
        .publish(CHURN..CHURN + AFTER, Duration::ZERO)
        .await;
    settle(&shared, CHURN..CHURN + AFTER, AFTER).await;
    let wrong = off(&shared, CHURN..CHURN + AFTER, 1);
    assert!(
        wrong.is_empty(),
        "once settled, each job once: {:?}",
        &wrong[..wrong.len().min(8)]
    );
    let on_b = stays.received();
    assert!(
        on_b > 0 && steady.received() > before,
        "both nodes' members get some: A {}, B {on_b}",
        steady.received() - before
    );

    stays.leave().await;
    steady.leave().await;
    publisher.stop().await;
    b.stop().await;
    a.stop().await;
}

/// A node that restarts on its data dir resumes etcd's log from its cache:
/// it must still know that A has members of the group (A's key was put
/// before the revision it resumes from), or it takes every job while A
/// takes its share too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_its_cache_knows_which_nodes_have_members() {
    let cluster = EtcdCluster::start(3);
    let kept = tempfile::tempdir().unwrap();
    let b_data = kept.path().join("b");
    let on_b_data =
        |data: std::path::PathBuf| move |config: &mut marquee::Config| config.data_dir = data;
    const N: usize = 300;
    let shared = counts(2 * N);
    let a = node(&cluster).await;
    let a1 = Counter::subscribe(a.mqtt_addr(), "a1", GROUP, &shared).await;
    let b = TestServer::on_etcd(&cluster, on_b_data(b_data.clone())).await;
    let b1 = Counter::subscribe(b.mqtt_addr(), "b1", GROUP, &shared).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = Publisher::connect(a.mqtt_addr(), "boss").await;
    publisher.publish(0..N, Duration::ZERO).await;
    settle(&shared, 0..N, N).await;
    assert!(off(&shared, 0..N, 1).is_empty());
    b1.leave().await;
    b.stop().await;

    let b = TestServer::on_etcd(&cluster, on_b_data(b_data)).await;
    let b2 = Counter::subscribe(b.mqtt_addr(), "b2", GROUP, &shared).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = a1.received();
    publisher.publish(N..2 * N, Duration::ZERO).await;
    settle(&shared, N..2 * N, N).await;
    let wrong = off(&shared, N..2 * N, 1);
    assert!(
        wrong.is_empty(),
        "{} jobs not delivered once after B restarted, e.g. (job, times) {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );
    assert!(a1.received() > before && b2.received() > 0);

    b2.leave().await;
    a1.leave().await;
    publisher.stop().await;
    b.stop().await;
    a.stop().await;
}
