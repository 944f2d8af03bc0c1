//! `make bench`: figures for this machine. Starts the release `marquee` binary
//! on a loopback port with a fresh data directory and measures, as clients see it:
//! - durable REST writes/s and ack latency with 1 and 64 concurrent writers,
//!   and 16 writers pipelining 16 requests each (a load generator that costs
//!   less per write than the server); writes per server CPU-second and the
//!   load generator's own CPU next to each, so figures hold on a shared machine;
//! - REST write → WebSocket, SSE and MQTT delivery latency, open loop at 100 and
//!   1,000 writes/s (measured from each write's scheduled send time).
//!
//! Data lives under `target/bench-data/` (a real disk, not a tmpfs `/tmp`), and
//! the filesystem, a measured fsync and the load average are printed first.
//!
//! Every loop is bounded in count and time; nothing here asserts a figure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

mod support;
use support::{
    Arrivals, BenchDir, Marquee, PacedWrites, arrival, began, load_average, mqtt_arrivals, now_us,
    percentile, print_environment, process_cpu, rest_writers, scheduled, sse_subscriber,
};

const WRITE_PHASE: Duration = Duration::from_secs(5);
/// (writes/s, writes): 10 s at 100/s, 5 s at 1,000/s.
const DELIVERY_PHASES: [(u64, usize); 2] = [(100, 1000), (1000, 5000)];

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `writers` connections write for [`WRITE_PHASE`]; each sends `depth`
/// requests at once (see [`rest_writers`]).
async fn write_throughput(url: &str, pid: u32, writers: usize, depth: usize) {
    let cpu_before = process_cpu(pid);
    let own_cpu_before = process_cpu(std::process::id());
    let addr = url.trim_start_matches("http://").to_owned();
    let (mut latencies, elapsed) =
        rest_writers(&[addr], "bench", writers, depth, WRITE_PHASE).await;
    let cpu = process_cpu(pid).saturating_sub(cpu_before);
    let own_cpu = process_cpu(std::process::id()).saturating_sub(own_cpu_before);
    latencies.sort_unstable();
    let how = if depth > 1 {
        format!("{writers:>2} writer(s) x {depth} pipelined")
    } else {
        format!("{writers:>2} writer(s)")
    };
    println!(
        "REST durable writes, {how}: {:>8.0} writes/s   ack p50 {}   p99 {}   ({} writes in {:.1} s; server CPU {:.1} s = {:.0} writes per server CPU-second; load generator CPU {:.1} s; load {})",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        latencies.len(),
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        latencies.len() as f64 / cpu.as_secs_f64().max(0.001),
        own_cpu.as_secs_f64(),
        load_average(),
    );
}

async fn ws_subscriber(url: &str, base: Instant, phase: u64, count: usize) -> Arrivals {
    let ws_url = format!("{}/api/latency/", url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("WS");
    tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count);
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut synced = false;
        while Instant::now() < give_up && latencies.len() < count {
            let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(10), socket.next()).await
            else {
                break;
            };
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if event["type"] == "sync" {
                synced = true;
            } else if synced && let Some(sent) = scheduled(&event["value"], phase) {
                let began = began(&event["value"]).unwrap_or(sent);
                latencies.push(arrival(now_us(base), sent, began));
            }
        }
        latencies
    })
}

/// An MQTT 3.1.1 QoS 0 subscriber to `latency/#`: a record arrives as its JSON.
async fn mqtt_subscriber(addr: SocketAddr, base: Instant, phase: u64, count: usize) -> Arrivals {
    use marquee::mqtt::{
        Connect, ConnectProperties, Packet, ProtocolVersion, QoS, Subscribe, Subscription,
        decode_as_client, encode,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const V: ProtocolVersion = ProtocolVersion::V311;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("MQTT");
    stream.set_nodelay(true).ok();
    let mut out = bytes::BytesMut::new();
    for packet in [
        Packet::Connect(Connect {
            protocol: V,
            clean_start: true,
            keep_alive: 120,
            client_id: format!("latency-{phase}"),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 1.try_into().expect("id"),
            subscriptions: vec![Subscription::new("latency/#", QoS::AtMostOnce)],
            properties: Default::default(),
        }),
    ] {
        encode(&packet, V, &mut out).expect("encode");
    }
    stream.write_all(&out).await.expect("send");
    let mut buf = bytes::BytesMut::new();
    // Wait for the SUBACK, so the subscription is in place before the writes start.
    'suback: loop {
        while let Some(packet) = decode_as_client(&mut buf, V, 1 << 20).expect("decode") {
            if matches!(packet, Packet::SubAck(_)) {
                break 'suback;
            }
        }
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            break;
        }
    }
    // Retained copies (the state at subscribe time) are not deliveries.
    tokio::spawn(mqtt_arrivals(stream, buf, count, base, move |p, now| {
        if p.retain {
            return None;
        }
        let value = serde_json::from_slice(&p.payload).ok()?;
        let sent = scheduled(&value, phase)?;
        let began = began(&value).unwrap_or(sent);
        Some(arrival(now, sent, began))
    }))
}

/// Open loop: write `i` is due at `start + i / rate` and is sent then, whether
/// or not earlier writes have been answered; its latency is counted from that
/// scheduled time to its arrival at each subscriber, so a stall anywhere
/// (server, fsync, or this load generator falling behind) shows in p99/max.
async fn delivery_latency(url: &str, mqtt: SocketAddr, base: Instant, rate: u64, count: usize) {
    let sse = sse_subscriber(url, base, rate, count).await;
    let ws = ws_subscriber(url, base, rate, count).await;
    let mqtt = mqtt_subscriber(mqtt, base, rate, count).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let period_us = 1_000_000 / rate;
    let outcome = tokio::task::spawn_blocking({
        let writes = PacedWrites {
            addr: url.trim_start_matches("http://").to_owned(),
            extra_headers: String::new(),
            // Round robin: at 1,000/s each socket has 16 ms for its answer.
            connections: 16,
            base,
            start_us: now_us(base) + 10_000,
            period_us,
            count,
        };
        move || {
            writes.run(move |i, due_us| {
                let body =
                    json!({"phase": rate, "i": i, "sched_us": due_us, "sent_us": now_us(base)});
                (
                    "PUT",
                    format!("/api/latency/p{rate}-r{}", i % 16),
                    body.to_string(),
                )
            })
        }
    })
    .await
    .expect("paced writes");
    for (name, arrivals) in [("WS  ", ws), ("SSE ", sse), ("MQTT", mqtt)] {
        let arrivals = tokio::time::timeout(Duration::from_secs(70), arrivals)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let (mut l, mut from_send): (Vec<_>, Vec<_>) = arrivals.into_iter().unzip();
        l.sort_unstable();
        from_send.sort_unstable();
        println!(
            "REST write -> {name} delivery, open loop at {rate:>4} writes/s: p50 {}   p99 {}   max {}   ({} of {count} delivered; from the actual send: p50 {}   p99 {})",
            ms(percentile(&l, 0.50)),
            ms(percentile(&l, 0.99)),
            ms(l.last().copied().unwrap_or_default()),
            l.len(),
            ms(percentile(&from_send, 0.50)),
            ms(percentile(&from_send, 0.99)),
        );
    }
    println!(
        "    (write acknowledged p50 {}   p99 {}; sender at most {} behind its schedule; {} writes failed; load average {})",
        ms(percentile(&outcome.acks, 0.50)),
        ms(percentile(&outcome.acks, 0.99)),
        ms(outcome.late),
        outcome.failed,
        load_average()
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let dir = BenchDir::new("core");
    let data = dir.path().join("data");
    let marquee = Marquee::start(&data);
    let url = marquee.url.clone();
    let http = reqwest::Client::new();
    for table in ["bench", "latency"] {
        let r = http
            .post(format!("{url}/api/_tables"))
            .json(&json!({"name": table}))
            .send()
            .await
            .expect("declare table");
        assert!(r.status().is_success());
    }
    println!("Marquee core benchmark, server at {url}");
    print_environment(dir.path());
    let pid = marquee.pid();
    // MARQUEE_BENCH_ONLY=delivery skips the throughput phases (issue 13's
    // write -> delivery latency alone, e.g. while tuning the write path);
    // MARQUEE_BENCH_ONLY=writes skips the delivery phases (writes per server
    // CPU-second alone, for quick A/B runs of the write path's cost).
    let only = std::env::var("MARQUEE_BENCH_ONLY").unwrap_or_default();
    if only != "delivery" {
        write_throughput(&url, pid, 1, 1).await;
        write_throughput(&url, pid, 64, 1).await;
        write_throughput(&url, pid, 16, 16).await;
    }
    if only == "writes" {
        return;
    }
    let base = Instant::now();
    for (rate, count) in DELIVERY_PHASES {
        delivery_latency(&url, marquee.mqtt, base, rate, count).await;
    }
    println!("load average at the end {}", load_average());
}
