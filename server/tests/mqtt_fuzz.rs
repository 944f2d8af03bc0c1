//! Fuzzing the broker's connection state machine over real sockets: random
//! sequences of (mostly well-formed, sometimes corrupted) packets after a
//! CONNECT, checking that no connection task panics, that every connection
//! ends or answers, and that the broker keeps serving. The seed corpus is
//! every refused input of `common/malformed.rs`: each is sent once as it is,
//! then a share of the cases start from one (after its CONNECT, with random
//! packets around it, often corrupted). Runs a bounded number of cases in
//! `make test`; `MARQUEE_FUZZ_SECS=1800` runs it for 30 minutes and prints
//! the figures.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::TestServer;
use common::malformed::{self, Case};
use marquee::mqtt::{
    Ack, Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion, Publish,
    PublishProperties, QoS, ReasonCode, Subscribe, SubscribeProperties, Subscription, Unsubscribe,
    UnsubscribeProperties, Will, WillProperties, decode_as_client, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A small, seedable PRNG (xorshift64*): reproducible cases without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn qos(&mut self) -> QoS {
        *self.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
    }
    fn id(&mut self) -> std::num::NonZeroU16 {
        std::num::NonZeroU16::new(1 + self.below(20) as u16).unwrap()
    }
}

const TOPICS: &[&str] = &[
    "signs/lobby",
    "signs/hall",
    "messages/m1",
    "devices/d1",
    "home/a/b",
    "mqtt/x",
    "$app/status",
    "$SYS/broker/uptime",
    "a",
    "/leading",
    "trailing/",
    "signs/lobby/extra",
];
const FILTERS: &[&str] = &[
    "#",
    "+",
    "signs/+",
    "signs/#",
    "+/+",
    "home/#",
    "$app/#",
    "$share/g/signs/+",
    "a/#/b",
    "a+",
    "",
    "mqtt/#",
];
const PAYLOADS: &[&[u8]] = &[
    b"",
    br#"{"name":"x"}"#,
    br#"{"width":9999}"#,
    b"not json",
    &[0xff, 0xfe, 0x00],
    br#"[1,2]"#,
];

fn random_packet(rng: &mut Rng) -> Packet {
    match rng.below(12) {
        0..=3 => {
            let qos = rng.qos();
            let mut properties = PublishProperties::default();
            if rng.chance(20) {
                properties.topic_alias = std::num::NonZeroU16::new(rng.below(100) as u16);
            }
            if rng.chance(20) {
                properties.message_expiry_interval = Some(rng.below(3) as u32);
            }
            if rng.chance(20) {
                properties.user_properties = vec![("k".into(), "v".into())];
            }
            let mut topic = (*rng.pick(TOPICS)).to_string();
            if properties.topic_alias.is_some() && rng.chance(50) {
                topic.clear();
            }
            Packet::Publish(Publish {
                dup: rng.chance(10),
                qos,
                retain: rng.chance(50),
                topic,
                packet_id: (qos != QoS::AtMostOnce).then(|| rng.id()),
                payload: Bytes::from_static(rng.pick::<&[u8]>(PAYLOADS)),
                properties,
            })
        }
        4 => Packet::Subscribe(Subscribe {
            packet_id: rng.id(),
            subscriptions: (0..1 + rng.below(3))
                .map(|_| {
                    let mut s = Subscription::new(*rng.pick(FILTERS), rng.qos());
                    s.options.no_local = rng.chance(30);
                    s.options.retain_as_published = rng.chance(30);
                    s
                })
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: std::num::NonZeroU32::new(rng.below(3) as u32),
                ..Default::default()
            },
        }),
        5 => Packet::Unsubscribe(Unsubscribe {
            packet_id: rng.id(),
            filters: vec![(*rng.pick(FILTERS)).to_string()],
            properties: UnsubscribeProperties::default(),
        }),
        6 => Packet::PubAck(Ack::new(rng.id())),
        7 => Packet::PubRec(Ack::new(rng.id())),
        8 => Packet::PubRel(Ack::new(rng.id())),
        9 => Packet::PubComp(Ack::new(rng.id())),
        10 => Packet::PingReq,
        _ => Packet::Disconnect(Disconnect {
            reason_code: *rng.pick(&[ReasonCode::Success, ReasonCode::DisconnectWithWillMessage]),
            properties: Default::default(),
        }),
    }
}

fn random_connect(rng: &mut Rng, version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: rng.chance(70),
        keep_alive: rng.below(3) as u16,
        client_id: format!("fuzz-{}", rng.below(4)),
        will: rng.chance(30).then(|| Will {
            topic: (*rng.pick(TOPICS)).to_string(),
            payload: Bytes::from_static(rng.pick::<&[u8]>(PAYLOADS)),
            qos: rng.qos(),
            retain: rng.chance(50),
            properties: WillProperties {
                will_delay_interval: rng.chance(20).then_some(1),
                ..Default::default()
            },
        }),
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: rng.chance(30).then(|| rng.below(5) as u32),
            receive_maximum: std::num::NonZeroU16::new(rng.below(4) as u16),
            maximum_packet_size: std::num::NonZeroU32::new(if rng.chance(20) { 30 } else { 0 }),
            ..Default::default()
        },
    }
}

/// Flips, drops, truncates or inserts bytes.
fn corrupt(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(4) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => {
                bytes.remove(at);
            }
            2 => bytes.truncate(at.max(1)),
            _ => bytes.insert(at, rng.next() as u8),
        }
        if bytes.is_empty() {
            return;
        }
    }
}

/// Appends `count` random packets in `version`'s encoding.
fn random_packets(rng: &mut Rng, version: ProtocolVersion, count: usize, bytes: &mut Vec<u8>) {
    let mut buf = BytesMut::new();
    for _ in 0..count {
        buf.clear();
        if encode(&random_packet(rng), version, &mut buf).is_ok() {
            bytes.extend_from_slice(&buf);
        }
    }
}

/// A random CONNECT in `version`'s encoding.
fn connect_bytes(rng: &mut Rng, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let connect = Packet::Connect(random_connect(rng, version));
    match encode(&connect, version, &mut buf) {
        Ok(()) => buf.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The bytes a seed case sends: its CONNECT (a random one, when the seed
/// comes after it) and the seed.
fn seed_bytes(rng: &mut Rng, seed: &Case) -> Vec<u8> {
    let mut bytes = if seed.after_connect {
        connect_bytes(rng, seed.version)
    } else {
        Vec::new()
    };
    bytes.extend_from_slice(&seed.bytes);
    bytes
}

/// One case: CONNECT, then a random sequence; or, one case in four, a seed
/// from the corpus with random packets before and after it. Corrupted now
/// and then. Returns the number of packets sent.
async fn run_case(addr: SocketAddr, rng: &mut Rng, seeds: &[Case]) -> usize {
    let (version, mut bytes, count) = if rng.chance(25) && !seeds.is_empty() {
        let seed = rng.pick(seeds);
        let mut bytes = seed_bytes(rng, seed);
        if seed.after_connect {
            // Packets before the seed go between it and its CONNECT.
            let (connect_len, before) = (bytes.len() - seed.bytes.len(), rng.below(3) as usize);
            let mut around = Vec::new();
            random_packets(rng, seed.version, before, &mut around);
            bytes.splice(connect_len..connect_len, around);
        }
        let after = rng.below(3) as usize;
        random_packets(rng, seed.version, after, &mut bytes);
        (seed.version, bytes, 1 + after)
    } else {
        let version = *rng.pick(&[ProtocolVersion::V311, ProtocolVersion::V5]);
        let mut bytes = connect_bytes(rng, version);
        let count = 1 + rng.below(20) as usize;
        random_packets(rng, version, count, &mut bytes);
        (version, bytes, count)
    };
    if rng.chance(30) {
        corrupt(rng, &mut bytes);
    }
    send_case(addr, version, &bytes).await;
    count
}

/// Sends `bytes` on a new connection and reads whatever comes back until
/// the server closes or goes quiet.
async fn send_case(addr: SocketAddr, version: ProtocolVersion, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = stream.write_all(bytes).await;
    // Read until the server closes or is quiet for a moment.
    let mut input = BytesMut::new();
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(50), stream.read_buf(&mut input)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {
                // Whatever the server says must itself be well-formed.
                while let Ok(Some(_)) = decode_as_client(&mut input, version, 1 << 24) {}
            }
            Err(_) => break,
        }
    }
}

/// A well-behaved client still gets CONNACK and PINGRESP.
async fn still_serving(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 10,
        client_id: "health".into(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    encode(&Packet::Connect(connect), ProtocolVersion::V5, &mut out).unwrap();
    encode(&Packet::PingReq, ProtocolVersion::V5, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut input = BytesMut::new();
    let mut got_pong = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got_pong && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read_buf(&mut input)).await;
        while let Ok(Some(packet)) = decode_as_client(&mut input, ProtocolVersion::V5, 1 << 24) {
            got_pong |= matches!(packet, Packet::PingResp);
        }
    }
    assert!(got_pong, "the broker stopped answering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_packet_sequences_never_panic_the_broker() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = TestServer::start().await;
    let addr = server.mqtt_addr();
    let budget = std::env::var("MARQUEE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let seed = std::env::var("MARQUEE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_1234_u64);
    let mut rng = Rng(seed);
    let started = Instant::now();
    let seeds = Arc::new(malformed::cases());
    // Every seed once, as it is.
    for case in seeds.iter() {
        let bytes = seed_bytes(&mut rng, case);
        send_case(addr, case.version, &bytes).await;
    }
    still_serving(addr).await;
    let (mut cases, mut packets) = (0u64, 0u64);
    // Several clients at once, so takeovers and shared ids interleave.
    loop {
        let batch: Vec<_> = (0..4)
            .map(|_| {
                let mut case_rng = Rng(rng.next() | 1);
                let seeds = seeds.clone();
                tokio::spawn(async move { run_case(addr, &mut case_rng, &seeds).await })
            })
            .collect();
        for case in batch {
            packets += case.await.expect("case task") as u64;
            cases += 1;
        }
        if cases % 200 == 0 {
            still_serving(addr).await;
        }
        let done = match budget {
            Some(budget) => started.elapsed() >= budget,
            None => cases >= 400,
        };
        if done {
            break;
        }
    }
    still_serving(addr).await;
    eprintln!(
        "mqtt fuzz: {} seeds, then {cases} connections, {packets} packets in {:.1?} (seed {seed:#x})",
        seeds.len(),
        started.elapsed()
    );
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "a connection task panicked"
    );
    server.stop().await;
}
