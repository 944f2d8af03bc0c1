//! `make bench` (MQTT part): fan-out from one publisher to 1, 10 and 100
//! subscribers at QoS 0 and 1, on Marquee and on Debian's Mosquitto 2.0
//! started here on a loopback port, with the same clients in the same run:
//! - latency (publish → delivery) p50/p99/max, open loop at a fixed offered
//!   rate: counted from each message's scheduled send time;
//! - deliveries/s at saturation, and deliveries per CPU-second of the broker.
//!
//! Marquee runs twice: with transient messages (what Mosquitto does) and with
//! retained ones, each of which is a durable write to the store. Both brokers
//! hold at most 4,096 messages for a subscriber and 64 in flight (Marquee's
//! defaults): past that Mosquitto drops messages and Marquee cuts the
//! subscriber off, so "got n/m" marks a run where a subscriber fell behind.
//! Every loop is bounded in count and time; nothing here asserts a figure.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use marquee::mqtt::{
    Ack, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    Subscribe, Subscription, decode_as_client, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

mod support;
use support::{BenchDir, Marquee, load_average, print_environment, process_cpu};

const V: ProtocolVersion = ProtocolVersion::V311;
const LATENCY_PHASE: Duration = Duration::from_secs(3);
const PHASE_LIMIT: Duration = Duration::from_secs(30);

struct Broker {
    name: &'static str,
    pid: u32,
    addr: SocketAddr,
    retain: bool,
    /// Keeps the process alive, and kills it when dropped.
    _process: Box<dyn std::any::Any>,
}

/// Mosquitto, killed when dropped.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mosquitto(dir: &std::path::Path) -> Option<(Child, SocketAddr)> {
    // A free port: bind, read it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 4096\nmax_inflight_messages 64\nlog_dest none\n"
        ),
    )
    .ok()?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    for _ in 0..50 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some((child, addr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A 64-byte payload carrying `at` (nanoseconds since the epoch): the
/// scheduled send time when paced, else the time of sending.
fn stamp(at: Duration) -> Bytes {
    let nanos = at.as_nanos() as u64;
    let mut payload = nanos.to_le_bytes().to_vec();
    payload.extend_from_slice(&[b'x'; 56]); // 64-byte messages
    Bytes::from(payload)
}

fn age(payload: &[u8]) -> Duration {
    let sent = payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    epoch().elapsed().saturating_sub(Duration::from_nanos(sent))
}

async fn connect(addr: SocketAddr, id: &str) -> (OwnedReadHalf, OwnedWriteHalf, BytesMut) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let (mut read, mut write) = stream.into_split();
    let mut out = BytesMut::new();
    encode(
        &Packet::Connect(Connect {
            protocol: V,
            clean_start: true,
            keep_alive: 60,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }),
        V,
        &mut out,
    )
    .expect("encode");
    write.write_all(&out).await.expect("send CONNECT");
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = decode_as_client(&mut buf, V, 1 << 20).expect("decode") {
            assert!(matches!(packet, Packet::ConnAck(_)), "{packet:?}");
            return (read, write, buf);
        }
        read.read_buf(&mut buf).await.expect("read CONNACK");
    }
}

/// A subscriber: counts deliveries and their latency until it has `expect`
/// or the phase limit passes, then reports.
async fn subscriber(
    addr: SocketAddr,
    id: String,
    topic: String,
    qos: QoS,
    expect: usize,
    ready: mpsc::Sender<()>,
    done: mpsc::Sender<Vec<Duration>>,
) {
    let (mut read, mut write, mut buf) = connect(addr, &id).await;
    let mut out = BytesMut::new();
    encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 1.try_into().expect("id"),
            subscriptions: vec![Subscription::new(topic, qos)],
            properties: Default::default(),
        }),
        V,
        &mut out,
    )
    .expect("encode");
    write.write_all(&out).await.expect("subscribe");
    let mut latencies = Vec::with_capacity(expect);
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    let mut subscribed = false;
    while latencies.len() < expect {
        out.clear();
        while let Ok(Some(packet)) = decode_as_client(&mut buf, V, 1 << 20) {
            match packet {
                Packet::SubAck(_) if !subscribed => {
                    subscribed = true;
                    let _ = ready.send(()).await;
                }
                Packet::Publish(p) if !p.retain => {
                    latencies.push(age(&p.payload));
                    if let Some(id) = p.packet_id {
                        let _ = encode(&Packet::PubAck(Ack::new(id)), V, &mut out);
                    }
                }
                _ => {}
            }
        }
        if !out.is_empty() && write.write_all(&out).await.is_err() {
            break;
        }
        if latencies.len() >= expect {
            break;
        }
        match tokio::time::timeout_at(deadline, read.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    let _ = done.send(latencies).await;
}

/// Publishes `count` messages at `rate` per second (`None`: as fast as the
/// socket takes them), then waits until the broker has handled them all
/// (every PUBACK, or the PINGRESP that follows them) and disconnects cleanly.
async fn publisher(
    addr: SocketAddr,
    topic: &str,
    qos: QoS,
    retain: bool,
    count: usize,
    rate: Option<u64>,
) {
    let (mut read, mut write, _) = connect(addr, "bench-publisher").await;
    let expect_acks = if qos == QoS::AtMostOnce { 0 } else { count };
    let acks = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(1 << 16);
        let (mut acked, mut pong) = (0, false);
        while acked < expect_acks || !pong {
            match tokio::time::timeout(PHASE_LIMIT, read.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
            while let Ok(Some(packet)) = decode_as_client(&mut buf, V, 1 << 20) {
                match packet {
                    Packet::PubAck(_) | Packet::PubComp(_) => acked += 1,
                    Packet::PingResp => pong = true,
                    _ => {}
                }
            }
        }
        read
    });
    // Open loop when paced: message `n` is due at `start + n / rate`, is sent
    // then whatever came before, and carries its due time, so latency counts
    // from the schedule and a stall shows in p99/max.
    let period = rate.map(|r| Duration::from_nanos(1_000_000_000 / r.max(1)));
    let start = epoch().elapsed() + Duration::from_millis(10);
    let mut out = BytesMut::new();
    let mut next_id: u16 = 1;
    let mut sent = 0;
    while sent < count {
        let due = period.map(|p| start + p * sent as u32);
        if let Some(due) = due {
            tokio::time::sleep_until((epoch() + due).into()).await;
        }
        out.clear();
        // Unpaced: write in batches of 64 packets, as a busy client would.
        let batch = if period.is_some() {
            1
        } else {
            64.min(count - sent)
        };
        for _ in 0..batch {
            let packet_id = (qos != QoS::AtMostOnce).then(|| {
                let id = next_id;
                next_id = next_id.checked_add(1).unwrap_or(1);
                id.try_into().expect("nonzero")
            });
            let _ = encode(
                &Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain,
                    topic: topic.into(),
                    packet_id,
                    payload: stamp(due.unwrap_or_else(|| epoch().elapsed())),
                    properties: PublishProperties::default(),
                }),
                V,
                &mut out,
            );
        }
        if write.write_all(&out).await.is_err() {
            break;
        }
        sent += batch;
    }
    out.clear();
    let _ = encode(&Packet::PingReq, V, &mut out);
    let _ = write.write_all(&out).await;
    // Closing with unread acknowledgements would reset the connection and
    // throw away what the broker has not read yet.
    let _read = acks.await;
    out.clear();
    let _ = encode(&Packet::Disconnect(Default::default()), V, &mut out);
    let _ = write.write_all(&out).await;
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    received: usize,
    expected: usize,
}

/// One phase: `subscribers` clients on a fresh topic, one publisher.
async fn phase(
    broker: &Broker,
    tag: &str,
    qos: QoS,
    subscribers: usize,
    count: usize,
    rate: Option<u64>,
) -> (Figures, Duration, Duration) {
    let topic = format!("bench/{tag}/{}", broker.name);
    let (ready_tx, mut ready) = mpsc::channel(subscribers);
    let (done_tx, mut done) = mpsc::channel(subscribers);
    for i in 0..subscribers {
        tokio::spawn(subscriber(
            broker.addr,
            format!("bench-sub-{tag}-{i}"),
            topic.clone(),
            qos,
            count,
            ready_tx.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    for _ in 0..subscribers {
        ready.recv().await;
    }
    let pid = broker.pid;
    let cpu_before = process_cpu(pid);
    let started = Instant::now();
    publisher(broker.addr, &topic, qos, broker.retain, count, rate).await;
    let mut all = Vec::with_capacity(count * subscribers);
    while let Some(latencies) = done.recv().await {
        all.extend(latencies);
    }
    let elapsed = started.elapsed();
    let cpu_used = process_cpu(pid).saturating_sub(cpu_before);
    all.sort_unstable();
    let pick = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (
        Figures {
            p50: pick(0.5),
            p99: pick(0.99),
            max: all.last().copied().unwrap_or_default(),
            received: all.len(),
            expected: count * subscribers,
        },
        elapsed,
        cpu_used,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let dir = BenchDir::new("mqtt");
    epoch();
    let mut brokers = Vec::new();
    for (name, retain) in [("marquee", false), ("marquee-retained", true)] {
        let marquee = Marquee::start(&dir.path().join(name));
        brokers.push(Broker {
            name,
            pid: marquee.pid(),
            addr: marquee.mqtt,
            retain,
            _process: Box::new(marquee),
        });
    }
    match start_mosquitto(dir.path()) {
        Some((child, addr)) => brokers.push(Broker {
            name: "mosquitto",
            pid: child.id(),
            addr,
            retain: false,
            _process: Box::new(Mosquitto(child)),
        }),
        None => println!(
            "mosquitto not found: install Debian's mosquitto (make bench does) for the comparison"
        ),
    }
    println!("MQTT fan-out benchmark, 64-byte messages, MQTT 3.1.1 clients in this process");
    print_environment(dir.path());
    println!("marquee-retained: every publish is retained, i.e. a durable write to the store\n");
    println!(
        "{:<17} {:>3} {:>5} | {:>9} {:>9} {:>9} {:>9} | {:>12} {:>11} {:>14}",
        "broker",
        "qos",
        "subs",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "sat. deliv/s",
        "CPU s",
        "deliv/CPU-s"
    );
    for (subscribers, rate, saturation_count) in [
        (1usize, 1000u64, 20_000usize),
        (10, 1000, 5_000),
        (100, 100, 1_000),
    ] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for broker in &brokers {
                let tag = format!("q{}s{subscribers}", qos.as_u8());
                let latency_count = (rate * LATENCY_PHASE.as_secs()) as usize;
                let (lat, _, _) = phase(
                    broker,
                    &format!("{tag}l"),
                    qos,
                    subscribers,
                    latency_count,
                    Some(rate),
                )
                .await;
                let (sat, elapsed, cpu_used) = phase(
                    broker,
                    &format!("{tag}s"),
                    qos,
                    subscribers,
                    saturation_count,
                    None,
                )
                .await;
                let per_second = sat.received as f64 / elapsed.as_secs_f64();
                let per_cpu = if cpu_used.is_zero() {
                    f64::NAN
                } else {
                    sat.received as f64 / cpu_used.as_secs_f64()
                };
                let lost = if lat.received < lat.expected || sat.received < sat.expected {
                    format!(
                        "  (got {}/{} and {}/{})",
                        lat.received, lat.expected, sat.received, sat.expected
                    )
                } else {
                    String::new()
                };
                println!(
                    "{:<17} {:>3} {:>5} | {:>9} {:>9} {:>9} {:>9} | {:>12.0} {:>11.2} {:>14.0}{lost}",
                    broker.name,
                    qos.as_u8(),
                    subscribers,
                    rate,
                    ms(lat.p50),
                    ms(lat.p99),
                    ms(lat.max),
                    per_second,
                    cpu_used.as_secs_f64(),
                    per_cpu
                );
            }
        }
    }
    println!("\nload average at the end {}", load_average());
}
