//! `make soak`: a bounded soak of the release `marquee` binary (a child process
//! on loopback ports, data under `target/bench-data/`). For `SOAK_MINUTES`
//! (default 30) it runs, at once:
//! - writers on REST, WebSocket (`/api/ws`) and MQTT (retained QoS 1, i.e.
//!   durable puts), each at `SOAK_RATE` writes/s (default 50), every write
//!   carrying a unique tag;
//! - verified subscribers that stay connected the whole run: SSE, WebSocket,
//!   MQTT QoS 1, and one deliberately slow SSE reader (a tiny receive buffer,
//!   a few hundred bytes read every 200 ms) that the server is expected to cut
//!   off; SSE and WS resume by `Last-Event-ID` / `since` and are counted across
//!   their resumes;
//! - churn: subscribers on every protocol that connect, read a little and leave.
//!
//! Every minute it prints the server's RSS. At the end it reads the change log
//! and reports, per verified subscriber, the changes it missed or saw twice;
//! it exits non-zero if any is not 0 (a cut-off is reported, not a failure).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use marquee::mqtt::{
    Ack, Connect, ConnectProperties, Packet, ProtocolVersion, Publish, PublishProperties, QoS,
    Subscribe, Subscription, decode_as_client, encode,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{BenchDir, Marquee, load_average, print_environment, process_cpu, rss_kib};

const V: ProtocolVersion = ProtocolVersion::V311;
const TABLE: &str = "soak";
/// After the writers stop, how long subscribers may take to catch up.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Shared run state.
struct Run {
    /// The writers stop (and the slow reader speeds up) when set.
    stop: AtomicBool,
    /// Set once `end_seq` is known: verified subscribers leave once they reach it.
    end_seq: AtomicU64,
    drained: AtomicBool,
    written: AtomicU64,
    write_errors: AtomicU64,
    churn_connects: AtomicU64,
    churn_errors: AtomicU64,
}

impl Run {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// A verified subscriber at `seq` may leave.
    fn done(&self, seq: u64) -> bool {
        let end = self.end_seq.load(Ordering::Relaxed);
        self.drained.load(Ordering::Relaxed) || (end > 0 && seq >= end)
    }
}

/// What a verified subscriber saw.
#[derive(Default)]
struct Seen {
    name: String,
    /// Changes after this seq are expected (SSE/WS: the first sync; MQTT:
    /// just before the first live change it received).
    start_seq: Option<u64>,
    /// Tags of the changes received, in order, across resumes.
    tags: Vec<String>,
    /// Times the server ended its stream (a slow reader's cut-off).
    cut_offs: u32,
    resets: u32,
    notes: Vec<String>,
}

fn tag_of(value: &Value) -> Option<String> {
    value["tag"].as_str().map(str::to_owned)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- writers

fn body(tag: &str) -> Value {
    json!({"tag": tag, "text": "Soak test message for the lobby sign", "n": 0})
}

async fn rest_writer(url: String, run: Arc<Run>, rate: u64) {
    let http = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut n = 0u64;
    while !run.stopped() {
        ticker.tick().await;
        let tag = format!("rest-{n}");
        let ok = http
            .put(format!("{url}/api/{TABLE}/rest-{}", n % 50))
            .json(&body(&tag))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        count_write(&run, ok);
        n += 1;
    }
}

fn count_write(run: &Run, ok: bool) {
    if ok {
        run.written.fetch_add(1, Ordering::Relaxed);
    } else {
        run.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes on `/api/ws` (no subscription: the socket only gets its acks).
async fn ws_writer(url: String, run: Arc<Run>, rate: u64) {
    let ws_url = format!("{}/api/ws", url.replacen("http", "ws", 1));
    let Ok((socket, _)) = tokio_tungstenite::connect_async(ws_url).await else {
        run.write_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (mut sink, mut stream) = socket.split();
    let sent = Arc::new(AtomicU64::new(0));
    let reader = {
        let (run, sent) = (run.clone(), sent.clone());
        tokio::spawn(async move {
            let mut replies = 0u64;
            loop {
                if run.stopped() && replies >= sent.load(Ordering::Relaxed) {
                    break;
                }
                let message =
                    match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(message))) => message,
                        Ok(_) => break,
                    };
                let Ok(text) = message.to_text() else {
                    continue;
                };
                let Ok(reply) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                match reply["type"].as_str() {
                    Some("ack") => count_write(&run, true),
                    Some("error") => count_write(&run, false),
                    _ => continue,
                }
                replies += 1;
            }
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut n = 0u64;
    while !run.stopped() {
        ticker.tick().await;
        let tag = format!("ws-{n}");
        let message = json!({"type": "put", "req": n.to_string(), "table": TABLE,
            "id": format!("ws-{}", n % 50), "value": body(&tag)});
        if sink.send(Message::text(message.to_string())).await.is_err() {
            run.write_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        n += 1;
        sent.store(n, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    let _ = sink.close().await;
}

async fn mqtt_connect(addr: SocketAddr, id: &str, clean: bool) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true).ok();
    let mut out = BytesMut::new();
    let connect = Packet::Connect(Connect {
        protocol: V,
        clean_start: clean,
        keep_alive: 120,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    });
    encode(&connect, V, &mut out).map_err(std::io::Error::other)?;
    stream.write_all(&out).await?;
    Ok(stream)
}

fn encoded(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    let _ = encode(packet, V, &mut out);
    out
}

/// Retained QoS 1 publishes on `soak/mqtt-K`: each is a durable put.
async fn mqtt_writer(addr: SocketAddr, run: Arc<Run>, rate: u64) {
    let Ok(stream) = mqtt_connect(addr, "soak-writer", true).await else {
        run.write_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let (mut read, mut write) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let reader = {
        let (run, sent) = (run.clone(), sent.clone());
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let mut acked = 0u64;
            loop {
                while let Ok(Some(packet)) = decode_as_client(&mut buf, V, 1 << 20) {
                    if matches!(packet, Packet::PubAck(_)) {
                        acked += 1;
                        count_write(&run, true);
                    }
                }
                if run.stopped() && acked >= sent.load(Ordering::Relaxed) {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(1), read.read_buf(&mut buf)).await {
                    Err(_) => {}
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
            }
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut n = 0u64;
    while !run.stopped() {
        ticker.tick().await;
        let tag = format!("mqtt-{n}");
        let packet_id = ((n % 60000) as u16 + 1).try_into().expect("nonzero");
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: format!("{TABLE}/mqtt-{}", n % 50),
            packet_id: Some(packet_id),
            payload: body(&tag).to_string().into(),
            properties: PublishProperties::default(),
        });
        if write.write_all(&encoded(&publish)).await.is_err() {
            run.write_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        n += 1;
        sent.store(n, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    let _ = write
        .write_all(&encoded(&Packet::Disconnect(Default::default())))
        .await;
}

// ---------------------------------------------------------- subscribers

/// An SSE subscriber on the table; `slow` reads a few hundred bytes every
/// 200 ms through a 4 KiB receive buffer while the writers run. Resumes with
/// `Last-Event-ID` when the server ends the stream.
async fn sse_subscriber(addr: SocketAddr, run: Arc<Run>, name: &str, slow: bool) -> Seen {
    let mut seen = Seen {
        name: name.into(),
        ..Seen::default()
    };
    let mut last_id: Option<u64> = None;
    let deadline_after_stop = || Instant::now() + DRAIN_LIMIT;
    let mut give_up: Option<Instant> = None;
    'connection: loop {
        if run.done(last_id.unwrap_or(0)) && last_id.is_some() {
            break;
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if slow {
            let _ = socket.set_recv_buffer_size(4096);
        }
        let Ok(mut stream) = socket.connect(addr).await else {
            seen.notes.push("connect failed".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let resume = last_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /api/{TABLE}/ HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        let mut raw = Vec::new();
        let mut parser = SseParser::default();
        let mut headers_done = false;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            if run.stopped() && give_up.is_none() {
                give_up = Some(deadline_after_stop());
            }
            if give_up.is_some_and(|g| Instant::now() > g) {
                seen.notes.push("gave up draining".into());
                break 'connection;
            }
            if last_id.is_some_and(|id| run.done(id)) {
                break 'connection;
            }
            let slow_now = slow && !run.stopped();
            let want = if slow_now { 300 } else { chunk.len() };
            if slow_now {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let n =
                match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk[..want]))
                    .await
                {
                    Err(_) => continue, // idle; check the flags again
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        seen.cut_offs += 1;
                        continue 'connection;
                    }
                    Ok(Ok(n)) => n,
                };
            let mut bytes = &chunk[..n];
            if !headers_done {
                raw.extend_from_slice(bytes);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_string();
                if !head.starts_with("HTTP/1.1 200") {
                    seen.notes.push(format!(
                        "stream refused: {}",
                        head.lines().next().unwrap_or("")
                    ));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue 'connection;
                }
                raw.drain(..end + 4);
                headers_done = true;
                bytes = &raw[..];
            }
            let blocks = parser.push(bytes);
            raw.clear();
            let ended = parser.ended;
            for block in blocks {
                let mut id = None;
                let mut event = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                match event.as_deref() {
                    Some("sync") => {
                        if seen.start_seq.is_none() {
                            seen.start_seq = id;
                        }
                        if last_id.is_none() {
                            last_id = id;
                        }
                    }
                    Some("reset") => seen.resets += 1,
                    Some("error") => {
                        if data.contains("lagged") {
                            // The stream ends next; the read sees it.
                        } else {
                            seen.notes.push(format!("error event: {data}"));
                        }
                    }
                    Some(other) => seen.notes.push(format!("unexpected event {other}")),
                    None => {
                        // A change has an id; a state record has none.
                        let Some(id) = id else { continue };
                        if let Ok(change) = serde_json::from_str::<Value>(&data)
                            && let Some(tag) = tag_of(&change["value"])
                        {
                            seen.tags.push(tag);
                        }
                        last_id = Some(id);
                    }
                }
            }
            if ended {
                // The server ended the stream (a slow reader's cut-off):
                // resume with Last-Event-ID.
                seen.cut_offs += 1;
                continue 'connection;
            }
        }
    }
    seen
}

/// An HTTP/1.1 chunked SSE response, fed raw bytes: the chunk-size lines
/// are removed and whole events (ending in a blank line) come out.
#[derive(Default)]
struct SseParser {
    raw: Vec<u8>,
    text: String,
    /// The zero-size chunk came: the response is over, though the
    /// keep-alive connection stays open.
    ended: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.raw.extend_from_slice(bytes);
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
                break;
            };
            if self.raw.len() < line_end + 2 + size + 2 {
                break;
            }
            if size == 0 {
                self.ended = true;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.text.push_str(&String::from_utf8_lossy(&data));
            self.raw.drain(..line_end + 2 + size + 2);
        }
        let mut blocks = Vec::new();
        while let Some(end) = self.text.find("\n\n") {
            blocks.push(self.text.drain(..end + 2).collect());
        }
        blocks
    }
}

/// A WebSocket subscriber on `/api/ws` to `soak/#`; when cut off (`lagged`)
/// or closed it reconnects and subscribes with `since` = the last seq seen.
async fn ws_subscriber(url: String, run: Arc<Run>) -> Seen {
    let mut seen = Seen {
        name: "WS (/api/ws)".into(),
        ..Seen::default()
    };
    let ws_url = format!("{}/api/ws", url.replacen("http", "ws", 1));
    let mut last: Option<u64> = None;
    let mut give_up: Option<Instant> = None;
    'connection: loop {
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(ws_url.as_str()).await else {
            seen.notes.push("connect failed".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            if run.stopped() && give_up.is_some_and(|g| Instant::now() > g) {
                break;
            }
            continue;
        };
        let mut subscribe =
            json!({"type": "subscribe", "req": "s", "filter": format!("{TABLE}/#")});
        if let Some(seq) = last {
            subscribe["since"] = json!(seq);
        }
        if socket
            .send(Message::text(subscribe.to_string()))
            .await
            .is_err()
        {
            continue;
        }
        // On the first connection the current state comes before the sync;
        // with `since` only changes do.
        let mut live = last.is_some();
        loop {
            if run.stopped() && give_up.is_none() {
                give_up = Some(Instant::now() + DRAIN_LIMIT);
            }
            if give_up.is_some_and(|g| Instant::now() > g) {
                seen.notes.push("gave up draining".into());
                break 'connection;
            }
            if last.is_some_and(|seq| run.done(seq)) {
                let _ = socket.close(None).await;
                break 'connection;
            }
            let message = match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(message))) => message,
                Ok(_) => {
                    seen.cut_offs += 1;
                    continue 'connection;
                }
            };
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            match event["type"].as_str() {
                Some("sync") => {
                    if seen.start_seq.is_none() {
                        seen.start_seq = event["seq"].as_u64();
                    }
                    if last.is_none() {
                        last = event["seq"].as_u64();
                    }
                    live = true;
                }
                Some("reset") => seen.resets += 1,
                Some("error") if event["error"]["code"] != "lagged" => {
                    seen.notes.push(format!("error: {event}"));
                }
                Some("error") => {}
                Some("put" | "patch" | "delete") if live => {
                    if let Some(tag) = tag_of(&event["value"]) {
                        seen.tags.push(tag);
                    }
                    if let Some(seq) = event["seq"].as_u64() {
                        last = Some(seq);
                    }
                }
                _ => {}
            }
        }
    }
    seen
}

/// An MQTT 3.1.1 QoS 1 subscriber to `soak/#` (clean session). It skips the
/// retained records it gets on subscribing; its first live change marks its
/// start. A cut-off ends it (reported).
async fn mqtt_subscriber(addr: SocketAddr, run: Arc<Run>) -> Seen {
    let mut seen = Seen {
        name: "MQTT QoS 1".into(),
        ..Seen::default()
    };
    let Ok(mut stream) = mqtt_connect(addr, "soak-subscriber", true).await else {
        seen.notes.push("connect failed".into());
        return seen;
    };
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1.try_into().expect("id"),
        subscriptions: vec![Subscription::new(format!("{TABLE}/#"), QoS::AtLeastOnce)],
        properties: Default::default(),
    });
    if stream.write_all(&encoded(&subscribe)).await.is_err() {
        seen.notes.push("subscribe failed".into());
        return seen;
    }
    let mut buf = BytesMut::new();
    let mut quiet_since = Instant::now();
    let mut give_up: Option<Instant> = None;
    loop {
        let mut out = BytesMut::new();
        while let Ok(Some(packet)) = decode_as_client(&mut buf, V, 1 << 20) {
            if let Packet::Publish(p) = packet {
                if let Some(id) = p.packet_id {
                    let _ = encode(&Packet::PubAck(Ack::new(id)), V, &mut out);
                }
                if !p.retain
                    && let Ok(value) = serde_json::from_slice::<Value>(&p.payload)
                    && let Some(tag) = tag_of(&value)
                {
                    seen.tags.push(tag);
                    quiet_since = Instant::now();
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            seen.cut_offs += 1;
            break;
        }
        if run.stopped() && give_up.is_none() {
            give_up = Some(Instant::now() + DRAIN_LIMIT);
        }
        // MQTT carries no seq: once the end is known, 5 quiet seconds end it.
        if run.end_seq.load(Ordering::Relaxed) > 0 && quiet_since.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        if give_up.is_some_and(|g| Instant::now() > g) {
            seen.notes.push("gave up draining".into());
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read_buf(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                seen.cut_offs += 1;
                seen.notes
                    .push("connection closed by the server (not resumed)".into());
                break;
            }
        }
    }
    let _ = stream
        .write_all(&encoded(&Packet::Disconnect(Default::default())))
        .await;
    seen
}

// ---------------------------------------------------------------- churn

/// Subscribers that come and go: every ~second one of SSE, WS or MQTT
/// connects, reads for 0.5–2 s and leaves (sometimes by just dropping the
/// socket).
async fn churn(url: String, addr: SocketAddr, mqtt: SocketAddr, run: Arc<Run>) {
    let ws_url = format!("{}/api/{TABLE}/", url.replacen("http", "ws", 1));
    let mut i = 0u64;
    while !run.stopped() {
        let stay = Duration::from_millis(500 + (i * 377) % 1500);
        let ok = match i % 3 {
            0 => {
                let ok = async {
                    let mut s = TcpStream::connect(addr).await.ok()?;
                    let req = format!(
                        "GET /api/{TABLE}/ HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                    );
                    s.write_all(req.as_bytes()).await.ok()?;
                    let mut chunk = vec![0; 1 << 16];
                    let until = Instant::now() + stay;
                    while Instant::now() < until {
                        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => return None,
                            _ => {}
                        }
                    }
                    Some(())
                }
                .await;
                ok.is_some()
            }
            1 => match tokio_tungstenite::connect_async(ws_url.as_str()).await {
                Ok((mut socket, _)) => {
                    let until = Instant::now() + stay;
                    while Instant::now() < until {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
                    }
                    if i.is_multiple_of(2) {
                        let _ = socket.close(None).await;
                    }
                    true
                }
                Err(_) => false,
            },
            _ => match mqtt_connect(mqtt, &format!("soak-churn-{i}"), true).await {
                Ok(mut stream) => {
                    let sub = Packet::Subscribe(Subscribe {
                        packet_id: 1.try_into().expect("id"),
                        subscriptions: vec![Subscription::new(
                            format!("{TABLE}/#"),
                            QoS::AtMostOnce,
                        )],
                        properties: Default::default(),
                    });
                    let _ = stream.write_all(&encoded(&sub)).await;
                    let mut buf = BytesMut::new();
                    let until = Instant::now() + stay;
                    while Instant::now() < until {
                        let _ = tokio::time::timeout(
                            Duration::from_millis(200),
                            stream.read_buf(&mut buf),
                        )
                        .await;
                        buf.clear();
                    }
                    if i.is_multiple_of(2) {
                        let _ = stream
                            .write_all(&encoded(&Packet::Disconnect(Default::default())))
                            .await;
                    }
                    true
                }
                Err(_) => false,
            },
        };
        if ok {
            run.churn_connects.fetch_add(1, Ordering::Relaxed);
        } else {
            run.churn_errors.fetch_add(1, Ordering::Relaxed);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ------------------------------------------------------------ the run

/// Every change to the table after `since`, up to `end`: seq → tag.
async fn change_log(url: &str, since: u64, end: u64) -> HashMap<String, u64> {
    let http = reqwest::Client::new();
    let mut tags = HashMap::new();
    let mut at = since;
    while at < end {
        let Ok(response) = http
            .get(format!("{url}/api/changes?since={at}&limit=1000"))
            .send()
            .await
        else {
            break;
        };
        let Ok(page) = response.json::<Value>().await else {
            break;
        };
        let changes = page["changes"].as_array().cloned().unwrap_or_default();
        if changes.is_empty() {
            break;
        }
        for change in &changes {
            let seq = change["seq"].as_u64().unwrap_or(0);
            if seq > end {
                return tags;
            }
            if change["table"] == TABLE
                && let Some(tag) = tag_of(&change["value"])
            {
                tags.insert(tag, seq);
            }
            at = at.max(seq);
        }
        if let Some(next) = page["next"].as_u64() {
            at = at.max(next);
        }
    }
    tags
}

async fn last_seq(url: &str) -> u64 {
    let Ok(r) = reqwest::get(format!("{url}/api/changes?limit=1&since=0")).await else {
        return 0;
    };
    r.json::<Value>()
        .await
        .ok()
        .and_then(|v| v["last_seq"].as_u64())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let minutes = env_u64("SOAK_MINUTES", 30);
    let rate = env_u64("SOAK_RATE", 50).max(1);
    let dir = BenchDir::new("soak");
    let marquee = Marquee::start(&dir.path().join("data"));
    let url = marquee.url.clone();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("HTTP address");
    let pid = marquee.pid();
    println!(
        "Marquee soak: {minutes} min, {rate} writes/s each on REST, WS and MQTT (retained QoS 1); server at {url}, pid {pid}"
    );
    print_environment(dir.path());
    let r = reqwest::Client::new()
        .post(format!("{url}/api/_tables"))
        .json(&json!({"name": TABLE}))
        .send()
        .await
        .expect("declare table");
    assert!(r.status().is_success(), "declare table: {}", r.status());

    let run = Arc::new(Run {
        stop: AtomicBool::new(false),
        end_seq: AtomicU64::new(0),
        drained: AtomicBool::new(false),
        written: AtomicU64::new(0),
        write_errors: AtomicU64::new(0),
        churn_connects: AtomicU64::new(0),
        churn_errors: AtomicU64::new(0),
    });
    let subscribers = vec![
        tokio::spawn(sse_subscriber(addr, run.clone(), "SSE", false)),
        tokio::spawn(sse_subscriber(addr, run.clone(), "SSE (slow reader)", true)),
        tokio::spawn(ws_subscriber(url.clone(), run.clone())),
        tokio::spawn(mqtt_subscriber(marquee.mqtt, run.clone())),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writers = vec![
        tokio::spawn(rest_writer(url.clone(), run.clone(), rate)),
        tokio::spawn(ws_writer(url.clone(), run.clone(), rate)),
        tokio::spawn(mqtt_writer(marquee.mqtt, run.clone(), rate)),
        tokio::spawn(churn(url.clone(), addr, marquee.mqtt, run.clone())),
    ];

    let started = Instant::now();
    let cpu_start = process_cpu(pid);
    println!("minute   server RSS   writes acked   write errors   churn connects   load average");
    let report = |minute: u64, run: &Run| {
        println!(
            "{minute:>6}   {:>7} KiB   {:>12}   {:>12}   {:>14}   {}",
            rss_kib(pid),
            run.written.load(Ordering::Relaxed),
            run.write_errors.load(Ordering::Relaxed),
            run.churn_connects.load(Ordering::Relaxed),
            load_average()
        );
    };
    report(0, &run);
    for minute in 1..=minutes {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        report(minute, &run);
    }
    run.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = tokio::time::timeout(Duration::from_secs(60), writer).await;
    }
    // Writes still in the writer's queue are acknowledged by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = last_seq(&url).await;
    run.end_seq.store(end, Ordering::Relaxed);
    println!(
        "writers stopped after {:.1} min at seq {end}; server CPU {:.1} s; draining subscribers",
        started.elapsed().as_secs_f64() / 60.0,
        process_cpu(pid).saturating_sub(cpu_start).as_secs_f64()
    );
    let mut results = Vec::new();
    let drain_end = Instant::now() + DRAIN_LIMIT + Duration::from_secs(10);
    for subscriber in subscribers {
        match tokio::time::timeout_at(drain_end.into(), subscriber).await {
            Ok(Ok(seen)) => results.push(seen),
            _ => {
                run.drained.store(true, Ordering::Relaxed);
                println!("a subscriber did not finish draining");
            }
        }
    }
    println!(
        "server RSS at the end {} KiB; {} writes acked, {} write errors, {} churn connects ({} failed)",
        rss_kib(pid),
        run.written.load(Ordering::Relaxed),
        run.write_errors.load(Ordering::Relaxed),
        run.churn_connects.load(Ordering::Relaxed),
        run.churn_errors.load(Ordering::Relaxed),
    );

    let since = results
        .iter()
        .filter_map(|s| s.start_seq)
        .min()
        .unwrap_or(0);
    let log = change_log(&url, since.saturating_sub(1), end).await;
    let mut failed = false;
    println!(
        "\nsubscriber            from seq   expected   received   missed   twice   unknown   cut off   notes"
    );
    for seen in &results {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for tag in &seen.tags {
            *counts.entry(tag.as_str()).or_default() += 1;
        }
        // MQTT has no sync seq: it starts just before its first live change.
        let start = seen.start_seq.or_else(|| {
            seen.tags
                .first()
                .and_then(|t| log.get(t))
                .map(|s| s.saturating_sub(1))
        });
        let Some(start) = start else {
            println!(
                "{:<20} never started   {}",
                seen.name,
                seen.notes.join("; ")
            );
            failed = true;
            continue;
        };
        let expected: HashSet<&str> = log
            .iter()
            .filter(|(_, seq)| **seq > start && **seq <= end)
            .map(|(tag, _)| tag.as_str())
            .collect();
        let missed = expected.iter().filter(|t| !counts.contains_key(*t)).count();
        let twice: u32 = counts.values().map(|c| c - 1).sum();
        let unknown = counts.keys().filter(|t| !log.contains_key(**t)).count();
        // A subscriber cut off and not resumed (MQTT) is judged only on
        // what it received before the cut.
        let resumable = seen.name.starts_with("SSE") || seen.name.starts_with("WS");
        let missed_counted = if seen.cut_offs > 0 && !resumable {
            let last = seen
                .tags
                .iter()
                .filter_map(|t| log.get(t))
                .max()
                .copied()
                .unwrap_or(start);
            expected
                .iter()
                .filter(|t| log[**t] <= last && !counts.contains_key(*t))
                .count()
        } else {
            missed
        };
        if missed_counted > 0 || twice > 0 || seen.resets > 0 {
            failed = true;
        }
        let mut notes = seen.notes.clone();
        if seen.resets > 0 {
            notes.push(format!("{} reset(s)", seen.resets));
        }
        if missed_counted != missed {
            notes.push(format!("{missed} after its cut-off, not resumed"));
        }
        println!(
            "{:<20} {:>9}   {:>8}   {:>8}   {:>6}   {:>5}   {:>7}   {:>7}   {}",
            seen.name,
            start,
            expected.len(),
            seen.tags.len(),
            missed_counted,
            twice,
            unknown,
            seen.cut_offs,
            notes.join("; ")
        );
    }
    println!("load average at the end {}", load_average());
    drop(marquee);
    drop(dir);
    if failed || results.len() < 4 {
        println!("SOAK FAILED: a subscriber missed or duplicated a change");
        std::process::exit(1);
    }
    println!("soak passed: every subscriber that stayed connected saw every change exactly once");
}
