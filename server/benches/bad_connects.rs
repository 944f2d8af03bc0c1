//! SECURITY.md §8 case 12, the memory part: 10,000 concurrent MQTT
//! CONNECTs with wrong passwords (and then 2,000 bad HTTP logins), all
//! from 127.0.0.2, against `marquee` in `accounts` mode, while the real
//! admin signs in over HTTP from 127.0.0.1 every half second. Prints the
//! server's memory (VmRSS, VmHWM) before, during (peak of 50 ms samples)
//! and after, how the CONNECTs were answered, and the admin's sign-in
//! times. Bounded: each phase stops after two minutes whatever happens.
//!
//! `cargo bench -p marquee --bench bad_connects` (release); for a quick
//! look on a debug build, `cargo test -p marquee --bench bad_connects`.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use marquee::mqtt::{
    Connect, ConnectProperties, Packet, ProtocolVersion, decode_as_client, encode,
};
use support::{BenchDir, Marquee, load_average, percentile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

const PASSWORD: &str = "bench admin pass";
const CONNECTS: usize = 10_000;
const LOGINS: usize = 2_000;
const PHASE_LIMIT: Duration = Duration::from_secs(120);
const ATTACKER: &str = "127.0.0.2";

/// VmRSS and VmHWM of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// One bad CONNECT from the attacker's address: how it was answered.
async fn bad_connect(addr: SocketAddr, i: usize) -> String {
    let socket = match TcpSocket::new_v4() {
        Ok(s) => s,
        Err(e) => return format!("socket: {}", e.kind()),
    };
    if let Err(e) = socket.bind(SocketAddr::new(ATTACKER.parse::<IpAddr>().unwrap(), 0)) {
        return format!("bind: {}", e.kind());
    }
    let mut stream = match socket.connect(addr).await {
        Ok(s) => s,
        Err(e) => return format!("connect: {}", e.kind()),
    };
    // Half guess the admin's password, half try made-up accounts.
    let username = if i.is_multiple_of(2) {
        "admin".to_owned()
    } else {
        format!("user{i}")
    };
    let connect = Packet::Connect(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: format!("attacker-{i}"),
        will: None,
        username: Some(username),
        password: Some(Bytes::from(format!("guess {i}"))),
        properties: ConnectProperties::default(),
    });
    let mut out = BytesMut::new();
    encode(&connect, ProtocolVersion::V5, &mut out).unwrap();
    if stream.write_all(&out).await.is_err() {
        return "write failed".into();
    }
    let mut buf = BytesMut::with_capacity(64);
    loop {
        match decode_as_client(&mut buf, ProtocolVersion::V5, 1 << 16) {
            Ok(Some(Packet::ConnAck(ack))) => return format!("CONNACK {:?}", ack.reason_code),
            Ok(Some(other)) => return format!("{:?}", other.packet_type()),
            Ok(None) => {}
            Err(e) => return format!("undecodable: {e}"),
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return "closed without CONNACK".into(),
            Ok(_) => {}
            Err(e) => return format!("read: {}", e.kind()),
        }
    }
}

/// The admin signs in from 127.0.0.1 every half second until `stop`; the times.
async fn admin_logins(url: String, stop: Arc<AtomicBool>) -> Vec<(Duration, u16)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut times = Vec::new();
    let deadline = Instant::now() + PHASE_LIMIT;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let started = Instant::now();
        let status = client
            .post(format!("{url}/api/auth/login"))
            .header("origin", &url)
            .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        times.push((started.elapsed(), status));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    times
}

/// Samples the peak VmRSS every 50 ms until `stop`.
async fn sample_peak(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        peak.fetch_max(memory(pid).0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report_logins(what: &str, times: &[(Duration, u16)]) {
    let mut ok: Vec<Duration> = times
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(d, _)| *d)
        .collect();
    ok.sort_unstable();
    let failed = times.len() - ok.len();
    println!(
        "  admin sign-ins {what}: {} ok, {failed} not ok; median {:.0} ms, max {:.0} ms",
        ok.len(),
        percentile(&ok, 0.5).as_secs_f64() * 1000.0,
        ok.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    if failed > 0 {
        let statuses: Vec<u16> = times
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| *s != 200)
            .collect();
        println!("    statuses of the failed ones: {statuses:?}");
    }
}

/// Runs `work` (the attack) with the sampler and the admin's sign-ins
/// alongside; prints the figures.
async fn phase<F: std::future::Future<Output = BTreeMap<String, usize>>>(
    name: &str,
    server: &Marquee,
    work: F,
) {
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn(sample_peak(pid, stop.clone(), peak.clone()));
    let admin = tokio::spawn(admin_logins(server.url.clone(), stop.clone()));
    let (rss_before, hwm_before) = memory(pid);
    let started = Instant::now();
    let outcomes = tokio::time::timeout(PHASE_LIMIT, work).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let admin = admin.await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, hwm_after) = memory(pid);
    println!("\n{name}: {:.1} s", took.as_secs_f64());
    match outcomes {
        Ok(outcomes) => {
            for (outcome, n) in outcomes {
                println!("  {n:>6}  {outcome}");
            }
        }
        Err(_) => println!("  stopped after {PHASE_LIMIT:?} (bounded)"),
    }
    println!(
        "  server VmRSS before {}  peak during {}  2 s after {}   VmHWM before {} after {}",
        mib(rss_before),
        mib(peak.load(Ordering::Relaxed)),
        mib(rss_after),
        mib(hwm_before),
        mib(hwm_after)
    );
    report_logins("during", &admin);
}

#[tokio::main]
async fn main() {
    let dir = BenchDir::new("bad-connects");
    let server = Marquee::start_with(
        dir.path(),
        &["--auth-mode", "accounts"],
        &[
            ("MARQUEE_ADMIN_USER", "admin"),
            ("MARQUEE_ADMIN_PASSWORD", PASSWORD),
        ],
    );
    let limit = open_files_limit();
    // Our sockets and the server's each count against their own process's
    // limit (the server inherits ours); keep some for everything else.
    let concurrency = CONNECTS.min(limit.saturating_sub(256)).max(1);
    println!(
        "bad CONNECTs against marquee (accounts mode) from {ATTACKER}; the admin signs in from 127.0.0.1"
    );
    println!(
        "cores {}   load average {}   open-files limit {limit} -> {concurrency} CONNECTs at once{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        if concurrency < CONNECTS {
            " (raise `ulimit -n` for all 10,000 at once)"
        } else {
            ""
        }
    );
    // The admin on a quiet server, for comparison.
    let (rss, hwm) = memory(server.pid());
    println!("idle: VmRSS {}  VmHWM {}", mib(rss), mib(hwm));
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = client
            .post(format!("{}/api/auth/login", server.url))
            .header("origin", &server.url)
            .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        times.push((started.elapsed(), status));
    }
    report_logins("on a quiet server", &times);

    let addr = server.mqtt;
    phase(
        &format!("{CONNECTS} bad MQTT 5 CONNECTs"),
        &server,
        async move {
            let permits = Arc::new(Semaphore::new(concurrency));
            let mut joins = tokio::task::JoinSet::new();
            for i in 0..CONNECTS {
                let permit = permits.clone().acquire_owned().await.unwrap();
                joins.spawn(async move {
                    let outcome =
                        tokio::time::timeout(Duration::from_secs(60), bad_connect(addr, i))
                            .await
                            .unwrap_or_else(|_| "no answer in 60 s".into());
                    drop(permit);
                    outcome
                });
            }
            let mut outcomes = BTreeMap::new();
            while let Some(done) = joins.join_next().await {
                *outcomes
                    .entry(done.unwrap_or_else(|e| format!("task: {e}")))
                    .or_insert(0) += 1;
            }
            outcomes
        },
    )
    .await;

    let url = server.url.clone();
    phase(&format!("{LOGINS} bad HTTP logins"), &server, async move {
        let client = reqwest::Client::builder()
            .local_address(ATTACKER.parse::<IpAddr>().unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut joins = tokio::task::JoinSet::new();
        for i in 0..LOGINS {
            let client = client.clone();
            let url = url.clone();
            joins.spawn(async move {
                client
                    .post(format!("{url}/api/auth/login"))
                    .json(&serde_json::json!({"username": if i.is_multiple_of(2) { "admin".to_owned() } else { format!("user{i}") }, "password": format!("guess {i}")}))
                    .send()
                    .await
                    .map_or_else(|e| format!("error: {e}"), |r| format!("HTTP {}", r.status().as_u16()))
            });
        }
        let mut outcomes = BTreeMap::new();
        while let Some(done) = joins.join_next().await {
            *outcomes.entry(done.unwrap_or_else(|e| format!("task: {e}"))).or_insert(0) += 1;
        }
        outcomes
    })
    .await;

    let alive = std::fs::metadata(format!("/proc/{}", server.pid())).is_ok();
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .map_or(0, |r| r.status().as_u16());
    println!("\nserver alive afterwards: {alive} (/healthz {health})");
}
