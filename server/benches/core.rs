//! `make bench`: figures for this machine. Starts the release `marquee` binary
//! on a loopback port with a fresh data directory and measures, as clients see it:
//! - durable REST writes/s and ack latency with 1 and 64 concurrent writers;
//! - REST write → SSE and → WebSocket delivery latency at a fixed 1,000 writes/s.
//!
//! Every loop is bounded in count and time; nothing here asserts a figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

mod support;
use support::{Marquee, process_cpu};

const WRITE_PHASE: Duration = Duration::from_secs(5);
const OFFERED_RATE: u64 = 1000;
const DELIVERY_WRITES: u64 = 5000;

/// A bare HTTP/1.1 keep-alive client: the load generator shares the machine's
/// cores with the server, so it should cost as little as possible.
struct RawHttp {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl RawHttp {
    async fn connect(addr: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: tokio::io::BufReader::new(stream),
            host: addr.to_owned(),
        }
    }

    /// Sends a PUT and reads the whole response; returns its status.
    async fn put(&mut self, path: &str, body: &str) -> u16 {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.expect("body");
        status
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn write_throughput(url: &str, pid: u32, writers: usize) {
    let cpu_before = process_cpu(pid);
    let deadline = Instant::now() + WRITE_PHASE;
    let started = Instant::now();
    let addr = url.trim_start_matches("http://").to_owned();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut connection = RawHttp::connect(&addr).await;
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline && i < 1_000_000 {
                    let body = json!({"writer": w, "i": i, "text": "Hello, lobby"}).to_string();
                    let sent = Instant::now();
                    let status = connection
                        .put(&format!("/api/bench/w{w}-{}", i % 64), &body)
                        .await;
                    assert!((200..300).contains(&status), "write failed: {status}");
                    latencies.push(sent.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu(pid).saturating_sub(cpu_before);
    latencies.sort_unstable();
    println!(
        "REST durable writes, {writers:>2} writer(s): {:>8.0} writes/s   ack p50 {}   p99 {}   ({} writes in {:.1} s; server CPU {:.1} s = {:.0} writes per server CPU-second)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        latencies.len(),
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        latencies.len() as f64 / cpu.as_secs_f64().max(0.001),
    );
}

async fn delivery_latency(url: &str) {
    let base = Instant::now();
    let http = reqwest::Client::new();

    // SSE subscriber.
    let response = http
        .get(format!("{url}/api/latency/"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE");
    let mut body = response.bytes_stream();
    let sse_latencies = Arc::new(Mutex::new(Vec::new()));
    let sse_task = {
        let latencies = sse_latencies.clone();
        tokio::spawn(async move {
            let mut buffer = String::new();
            let give_up = Instant::now() + Duration::from_secs(30);
            while Instant::now() < give_up {
                let Ok(Some(Ok(chunk))) =
                    tokio::time::timeout(Duration::from_secs(5), body.next()).await
                else {
                    break;
                };
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if !block.contains("event: put") {
                        continue;
                    }
                    if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                        && let Ok(event) = serde_json::from_str::<Value>(data)
                        && let Some(sent) = event["value"]["sent_us"].as_u64()
                    {
                        let now = base.elapsed().as_micros() as u64;
                        let mut l = latencies.lock().await;
                        l.push(Duration::from_micros(now.saturating_sub(sent)));
                        if l.len() as u64 >= DELIVERY_WRITES {
                            return;
                        }
                    }
                }
            }
        })
    };

    // WebSocket subscriber.
    let ws_url = format!("{}/api/latency/", url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("WS");
    let ws_latencies = Arc::new(Mutex::new(Vec::new()));
    let ws_task = {
        let latencies = ws_latencies.clone();
        tokio::spawn(async move {
            let give_up = Instant::now() + Duration::from_secs(30);
            while Instant::now() < give_up {
                let Ok(Some(Ok(message))) =
                    tokio::time::timeout(Duration::from_secs(5), socket.next()).await
                else {
                    break;
                };
                let Ok(text) = message.to_text() else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                if let Some(sent) = event["value"]["sent_us"].as_u64() {
                    let now = base.elapsed().as_micros() as u64;
                    let mut l = latencies.lock().await;
                    l.push(Duration::from_micros(now.saturating_sub(sent)));
                    if l.len() as u64 >= DELIVERY_WRITES {
                        return;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Offer a fixed rate, whatever the acks do.
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / OFFERED_RATE));
    let limiter = Arc::new(tokio::sync::Semaphore::new(256));
    let mut writes = Vec::new();
    for i in 0..DELIVERY_WRITES {
        ticker.tick().await;
        let permit = limiter.clone().acquire_owned().await.expect("semaphore");
        let http = http.clone();
        let url = url.to_owned();
        writes.push(tokio::spawn(async move {
            let sent_us = base.elapsed().as_micros() as u64;
            let _ = http
                .put(format!("{url}/api/latency/r{}", i % 16))
                .json(&json!({"i": i, "sent_us": sent_us}))
                .send()
                .await;
            drop(permit);
        }));
    }
    for write in writes {
        let _ = write.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(35), sse_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(35), ws_task).await;
    for (name, latencies) in [("SSE", sse_latencies), ("WS ", ws_latencies)] {
        let mut l = latencies.lock().await.clone();
        l.sort_unstable();
        println!(
            "REST write -> {name} delivery at {OFFERED_RATE} writes/s: p50 {}   p99 {}   max {}   ({} of {DELIVERY_WRITES} delivered)",
            ms(percentile(&l, 0.50)),
            ms(percentile(&l, 0.99)),
            ms(l.last().copied().unwrap_or_default()),
            l.len()
        );
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let dir = tempfile::tempdir().expect("temp dir");
    let marquee = Marquee::start(dir.path());
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
    println!(
        "Marquee core benchmark ({} cores), server at {url}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let pid = marquee.pid();
    write_throughput(&url, pid, 1).await;
    write_throughput(&url, pid, 64).await;
    delivery_latency(&url).await;
}
