//! Scale-out figures (issue 11): the release `marquee` binary as child
//! processes, its store (1) embedded (fjall), (2) on a 3-member etcd with one
//! node, (3) on a 3-member etcd with two nodes, all measured in one run:
//! - durable REST writes/s and ack p50/p99 with 1 and 64 keep-alive writers
//!   (spread over both nodes in (3)), with the nodes' and etcd's CPU time;
//! - REST write -> SSE delivery, open loop at 200 writes/s on node A, on a
//!   subscriber on A and (in (3)) on B;
//! - with two nodes under a steady open-loop write load, the etcd leader
//!   killed (`kill -9`): the longest gap between consecutive acknowledgements,
//!   the longest single ack, and how many writes failed.
//!
//! Everything lives under `target/bench-data/` (a real disk: etcd's WAL fsync
//! is part of every write). Without an `etcd` binary only (1) is measured.
//! Every loop is bounded in count and time; nothing here asserts a figure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use support::etcd::{self, EtcdCluster};
use support::{
    BenchDir, Marquee, PacedOutcome, PacedWrites, fsync_probe, load_average, now_us, percentile,
    print_environment, process_cpu, rest_writers, sse_subscriber,
};

const WRITE_PHASE: Duration = Duration::from_secs(5);
/// Open-loop delivery: 1,000 writes at 200/s on node A.
const DELIVERY_RATE: u64 = 200;
const DELIVERY_WRITES: usize = 1000;
/// The leader kill: each node takes 100 writes/s for 10 s; the leader dies 3 s in.
const FAULT_RATE_PER_NODE: u64 = 100;
const FAULT_WRITES_PER_NODE: usize = 1000;
const KILL_AFTER: Duration = Duration::from_secs(3);

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn ms_us(us: u64) -> String {
    ms(Duration::from_micros(us))
}

/// One configuration under test: its nodes and (on etcd) its cluster.
struct Setup {
    name: &'static str,
    nodes: Vec<Marquee>,
    /// Dropped after the nodes (fields drop in order), so no node sees its
    /// store vanish while it is being killed.
    cluster: Option<EtcdCluster>,
}

impl Setup {
    fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.url.trim_start_matches("http://").to_owned())
            .collect()
    }

    /// CPU time so far of the Marquee nodes, and of the etcd members.
    fn cpu(&self) -> (Duration, Duration) {
        let nodes = self.nodes.iter().map(|n| process_cpu(n.pid())).sum();
        let etcd = self
            .cluster
            .iter()
            .flat_map(EtcdCluster::pids)
            .map(process_cpu)
            .sum();
        (nodes, etcd)
    }
}

/// A config file declaring the two tables the bench writes, so every node
/// starts with them (a table declared over REST on one node would have to
/// reach the other first).
fn config_file(dir: &Path) -> PathBuf {
    let path = dir.join("marquee.toml");
    std::fs::write(
        &path,
        "[[tables]]\nname = \"bench\"\n\n[[tables]]\nname = \"latency\"\n",
    )
    .expect("config file");
    path
}

fn start_node(dir: &Path, config: &Path, store: &str) -> Marquee {
    let config = config.to_str().expect("UTF-8 path");
    Marquee::start_with(
        dir,
        &["--auth-mode", "open", "--config", config, "--store", store],
        &[],
    )
}

/// `nodes` Marquee nodes on a fresh 3-member etcd, or why not.
fn etcd_setup(
    name: &'static str,
    dir: &Path,
    config: &Path,
    nodes: usize,
) -> Result<Setup, String> {
    let cluster = EtcdCluster::start_in(3, &dir.join("etcd"))?;
    let store = cluster.store_flag();
    let nodes = (0..nodes)
        .map(|i| start_node(&dir.join(format!("node{i}")), config, &store))
        .collect();
    Ok(Setup {
        name,
        nodes,
        cluster: Some(cluster),
    })
}

struct WriteRow {
    setup: &'static str,
    writers: usize,
    writes: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    node_cpu: Duration,
    etcd_cpu: Duration,
    /// The disk's fsync median just before: it varies by 100x on this
    /// shared VM from one minute to the next, and both stores wait for it.
    fsync: Duration,
}

async fn throughput(setup: &Setup, dir: &Path, writers: usize) -> WriteRow {
    let (fsync, _) = fsync_probe(dir, 50);
    let (nodes_before, etcd_before) = setup.cpu();
    let (mut latencies, elapsed) =
        rest_writers(&setup.addrs(), "bench", writers, 1, WRITE_PHASE).await;
    let (nodes_after, etcd_after) = setup.cpu();
    latencies.sort_unstable();
    let row = WriteRow {
        setup: setup.name,
        writers,
        writes: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        node_cpu: nodes_after.saturating_sub(nodes_before),
        etcd_cpu: etcd_after.saturating_sub(etcd_before),
        fsync,
    };
    println!(
        "{}: {writers:>2} writer(s) {:>7.0} writes/s   ack p50 {}   p99 {}   ({} writes in {:.1} s; Marquee CPU {:.1} s, etcd CPU {:.1} s; fsync median {} just before; load {})",
        row.setup,
        row.per_second,
        ms(row.p50),
        ms(row.p99),
        row.writes,
        elapsed.as_secs_f64(),
        row.node_cpu.as_secs_f64(),
        row.etcd_cpu.as_secs_f64(),
        ms(row.fsync),
        load_average()
    );
    row
}

struct DeliveryRow {
    setup: &'static str,
    subscriber: &'static str,
    delivered: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    ack_p50: Duration,
    ack_p99: Duration,
}

/// Writes on node A, open loop at [`DELIVERY_RATE`]; an SSE subscriber on
/// every node. `phase` tells this run's records from earlier ones.
async fn delivery(setup: &Setup, base: Instant, phase: u64) -> Vec<DeliveryRow> {
    let mut subscribers = Vec::new();
    for (node, name) in setup.nodes.iter().zip(["on A", "on B"]) {
        subscribers.push((
            name,
            sse_subscriber(&node.url, base, phase, DELIVERY_WRITES).await,
        ));
    }
    // Let every stream be in place (and B's node caught up) before the first write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = PacedWrites {
        addr: setup.addrs()[0].clone(),
        extra_headers: String::new(),
        connections: 16,
        base,
        start_us: now_us(base) + 10_000,
        period_us: 1_000_000 / DELIVERY_RATE,
        count: DELIVERY_WRITES,
    };
    let outcome = tokio::task::spawn_blocking(move || {
        writes.run(move |i, due_us| {
            let body = json!({"phase": phase, "i": i, "sched_us": due_us, "sent_us": now_us(base)});
            (
                "PUT",
                format!("/api/latency/p{phase}-r{}", i % 16),
                body.to_string(),
            )
        })
    })
    .await
    .expect("paced writes");
    let mut rows = Vec::new();
    for (subscriber, arrivals) in subscribers {
        let arrivals = tokio::time::timeout(Duration::from_secs(70), arrivals)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut latencies: Vec<Duration> = arrivals.into_iter().map(|(l, _)| l).collect();
        latencies.sort_unstable();
        let row = DeliveryRow {
            setup: setup.name,
            subscriber,
            delivered: latencies.len(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            ack_p50: percentile(&outcome.acks, 0.50),
            ack_p99: percentile(&outcome.acks, 0.99),
        };
        println!(
            "{}: write on A -> SSE {subscriber} at {DELIVERY_RATE}/s: p50 {}   p99 {}   max {}   ({} of {DELIVERY_WRITES} delivered; ack p50 {} p99 {}; sender at most {} late; {} failed; load {})",
            row.setup,
            ms(row.p50),
            ms(row.p99),
            ms(row.max),
            row.delivered,
            ms(row.ack_p50),
            ms(row.ack_p99),
            ms(outcome.late),
            outcome.failed,
            load_average()
        );
        rows.push(row);
    }
    rows
}

/// Both nodes take [`FAULT_RATE_PER_NODE`] writes/s (distinct keys) while the
/// etcd leader is killed [`KILL_AFTER`] in; prints what the writers saw.
async fn leader_kill(setup: &mut Setup, base: Instant) -> Vec<String> {
    let addrs = setup.addrs();
    let nodes = addrs.len();
    let cluster = setup.cluster.as_mut().expect("an etcd setup");
    let Some(leader) = cluster.leader_within(Duration::from_secs(15)) else {
        return vec!["no etcd leader before the kill: not measured".into()];
    };
    let start_us = now_us(base) + 10_000;
    let writers: Vec<_> = addrs
        .into_iter()
        .enumerate()
        .map(|(node, addr)| {
            let writes = PacedWrites {
                addr,
                extra_headers: String::new(),
                connections: 16,
                base,
                start_us,
                period_us: 1_000_000 / FAULT_RATE_PER_NODE,
                count: FAULT_WRITES_PER_NODE,
            };
            tokio::task::spawn_blocking(move || {
                writes.run(move |i, _| {
                    (
                        "PUT",
                        format!("/api/bench/kill-n{node}-{i}"),
                        json!({"node": node, "i": i}).to_string(),
                    )
                })
            })
        })
        .collect();
    let kill_at = base + Duration::from_micros(start_us) + KILL_AFTER;
    tokio::time::sleep_until(kill_at.into()).await;
    let kill_us = now_us(base);
    cluster.kill9(leader);
    // Polling etcd's metrics blocks; this task has nothing else to do meanwhile.
    let new_leader = cluster.leader_within(Duration::from_secs(15));
    let elected = Duration::from_micros(now_us(base) - kill_us);
    let mut outcomes: Vec<PacedOutcome> = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.expect("paced writes"));
    }

    // (began, answered, node) of every acknowledged write, in answer order.
    let mut answers: Vec<(u64, u64, usize)> = outcomes
        .iter()
        .enumerate()
        .flat_map(|(node, o)| o.answers.iter().map(move |&(b, a)| (b, a, node)))
        .collect();
    answers.sort_unstable_by_key(|&(_, answered, _)| answered);
    let gaps = answers.windows(2).map(|w| (w[0].1, w[1].1));
    let before = gaps
        .clone()
        .filter(|&(_, to)| to < kill_us)
        .map(|(from, to)| to - from)
        .max()
        .unwrap_or(0);
    let (gap_from, gap_to) = gaps.max_by_key(|&(from, to)| to - from).unwrap_or((0, 0));
    let (slow_began, slow_answered, slow_node) = answers
        .iter()
        .copied()
        .max_by_key(|&(b, a, _)| a - b)
        .unwrap_or((0, 0, 0));
    let relative = |us: u64| format!("{:+.3} s", (us as f64 - kill_us as f64) / 1e6);
    let failed: usize = outcomes.iter().map(|o| o.failed).sum();
    let mut acks: Vec<Duration> = outcomes.iter().flat_map(|o| o.acks.clone()).collect();
    acks.sort_unstable();
    let lines = vec![
        format!(
            "etcd leader (member m{leader}) killed with SIGKILL {:.0} s into {} x {FAULT_WRITES_PER_NODE} writes at {FAULT_RATE_PER_NODE}/s on each of 2 nodes; a new leader {} {:.2} s after the kill",
            KILL_AFTER.as_secs_f64(),
            nodes,
            match new_leader {
                Some(i) => format!("(m{i}) was seen"),
                None => "was not seen within 15 s, checked".into(),
            },
            elected.as_secs_f64()
        ),
        format!(
            "  longest gap between consecutive acks: {} (from {} to {} after the kill); before the kill at most {}",
            ms_us(gap_to - gap_from),
            relative(gap_from),
            relative(gap_to),
            ms_us(before)
        ),
        format!(
            "  longest ack: {} (a write to node {} sent {} after the kill); ack p50 {}  p99 {} over all",
            ms_us(slow_answered - slow_began),
            ["A", "B"][slow_node.min(1)],
            relative(slow_began),
            ms(percentile(&acks, 0.50)),
            ms(percentile(&acks, 0.99)),
        ),
        format!(
            "  {} of {} writes acknowledged, {failed} failed; sender at most {} late; load {}",
            answers.len(),
            FAULT_WRITES_PER_NODE * nodes,
            ms(outcomes.iter().map(|o| o.late).max().unwrap_or_default()),
            load_average()
        ),
    ];
    for line in &lines {
        println!("{line}");
    }
    lines
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let dir = BenchDir::new("scale");
    let config = config_file(dir.path());
    println!("Marquee scale-out benchmark (issue 11)");
    print_environment(dir.path());
    let etcd_version = etcd::installed();
    match &etcd_version {
        Some(version) => println!(
            "{version}; each member's data under {}",
            dir.path().display()
        ),
        None => println!("etcd is not installed (Debian: etcd-server): the etcd rows are skipped"),
    }
    let base = Instant::now();
    let mut writes = Vec::new();
    let mut deliveries = Vec::new();
    let mut fault = Vec::new();

    let fjall = Setup {
        name: "fjall, 1 node",
        nodes: vec![start_node(&dir.path().join("fjall"), &config, "embedded")],
        cluster: None,
    };
    // Delivery first in each setup: measured on a store with no work left
    // over from a throughput burst (memtable flushes, compaction).
    deliveries.extend(delivery(&fjall, base, 1).await);
    writes.push(throughput(&fjall, dir.path(), 1).await);
    writes.push(throughput(&fjall, dir.path(), 64).await);
    drop(fjall);

    if etcd_version.is_some() {
        match etcd_setup("etcd, 1 node", &dir.path().join("etcd1"), &config, 1) {
            Ok(one) => {
                deliveries.extend(delivery(&one, base, 2).await);
                writes.push(throughput(&one, dir.path(), 1).await);
                writes.push(throughput(&one, dir.path(), 64).await);
            }
            Err(why) => println!("etcd, 1 node: not measured: {why}"),
        }
        match etcd_setup("etcd, 2 nodes", &dir.path().join("etcd2"), &config, 2) {
            Ok(mut two) => {
                deliveries.extend(delivery(&two, base, 3).await);
                writes.push(throughput(&two, dir.path(), 1).await);
                writes.push(throughput(&two, dir.path(), 64).await);
                fault = leader_kill(&mut two, base).await;
            }
            Err(why) => println!("etcd, 2 nodes: not measured: {why}"),
        }
    }

    println!();
    println!(
        "{:<15} {:>7} {:>10} {:>9} {:>9} {:>8} {:>12} {:>9} {:>10}",
        "store",
        "writers",
        "writes/s",
        "ack p50",
        "ack p99",
        "writes",
        "Marquee CPU",
        "etcd CPU",
        "fsync p50"
    );
    for r in &writes {
        println!(
            "{:<15} {:>7} {:>10.0} {:>9} {:>9} {:>8} {:>10.1} s {:>7.1} s {:>10}",
            r.setup,
            r.writers,
            r.per_second,
            ms(r.p50),
            ms(r.p99),
            r.writes,
            r.node_cpu.as_secs_f64(),
            r.etcd_cpu.as_secs_f64(),
            ms(r.fsync)
        );
    }
    println!();
    println!(
        "write on A -> SSE delivery, open loop at {DELIVERY_RATE}/s ({DELIVERY_WRITES} writes), from each write's scheduled time:"
    );
    println!(
        "{:<15} {:<10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "store", "subscriber", "p50", "p99", "max", "delivered", "ack p50", "ack p99"
    );
    for r in &deliveries {
        println!(
            "{:<15} {:<10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}",
            r.setup,
            r.subscriber,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            format!("{}/{DELIVERY_WRITES}", r.delivered),
            ms(r.ack_p50),
            ms(r.ack_p99)
        );
    }
    if !fault.is_empty() {
        println!();
        for line in &fault {
            println!("{line}");
        }
    }
    println!("load average at the end {}", load_average());
}
