//! Test harness: a Marquee server in-process or as a child process, on
//! ephemeral loopback ports, and small real clients for SSE and WebSockets.

#![allow(dead_code)]

pub mod etcd;
pub mod firmware;
pub mod malformed;
pub mod mqtt;
pub mod rumqtt;

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use marquee::{Config, Server};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A config file (written into `dir`) declaring a free-form table `things`
/// (any JSON object), for a child server's `--config`.
pub fn things_table(dir: &Path) -> String {
    let path = dir.join("things.toml");
    std::fs::write(&path, "[[tables]]\nname = \"things\"\n").expect("config file");
    path.display().to_string()
}

/// A server running inside the test process, with its own data directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The second node, when the suites run on two nodes (see [`nodes`]).
    pub second: Option<Server>,
    mqtt: std::net::SocketAddr,
    /// Deal connections to the two nodes in turn; stopped with the server.
    proxies: Vec<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            Config::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).unwrap();
        // Most tests are about records and protocols, not accounts: they run
        // in `open` mode (loopback only), as the outside suites do. Tests of
        // sign-in and access set `accounts` mode in `tweak`.
        config.access =
            marquee::access::Access::new(marquee::access::Mode::Open, true, Vec::new()).unwrap();
        tweak(&mut config);
        on_test_store(&mut config);
        let two = nodes() == 2 && config.store != marquee::store::StoreAddress::Embedded;
        // The proxies are bound first: their addresses are what the nodes
        // are configured to tell people and devices, as behind a load balancer.
        let fronts = match two {
            true => Some((listen().await, listen().await)),
            false => None,
        };
        if let Some((http, mqtt)) = &fronts {
            let http = http.local_addr().expect("proxy address");
            let mqtt = mqtt.local_addr().expect("proxy address");
            // Setup links point at the proxy; pages from it (by any name a
            // loopback listener answers to) are trusted origins.
            config
                .public_url
                .get_or_insert_with(|| format!("http://{http}"));
            config
                .allowed_origins
                .extend(marquee::http::own_origins(http));
            // Pairing cards give devices the proxy's broker, not a node's.
            config
                .public_host
                .get_or_insert_with(|| mqtt.ip().to_string());
            config.public_mqtt_port.get_or_insert(mqtt.port());
        }
        let second_config = two.then(|| {
            let mut second = config.clone();
            second.data_dir = dir.path().join("data-b");
            second
        });
        let server = Server::start(config).await.expect("server starts");
        let mut url = format!("http://{}", server.http_addr());
        let mut mqtt = server.mqtt_addr();
        let mut second = None;
        let mut proxies = Vec::new();
        if let (Some(config), Some((http_front, mqtt_front))) = (second_config, fronts) {
            let other = Server::start(config).await.expect("second node starts");
            let (http, http_proxy) = alternate(http_front, server.http_addr(), other.http_addr());
            let (broker, mqtt_proxy) = alternate(mqtt_front, server.mqtt_addr(), other.mqtt_addr());
            url = format!("http://{http}");
            mqtt = broker;
            proxies = vec![http_proxy, mqtt_proxy];
            second = Some(other);
        }
        Self {
            server: Some(server),
            url,
            dir,
            second,
            mqtt,
            proxies,
        }
    }

    /// A node of the store on `cluster` (under the default prefix, shared by
    /// every node started this way on it), then `tweak`ed.
    pub async fn on_etcd(cluster: &etcd::EtcdCluster, tweak: impl FnOnce(&mut Config)) -> Self {
        let endpoints = cluster.endpoints();
        Self::start_with(move |config| {
            config.store = marquee::store::StoreAddress::Etcd(marquee::store::EtcdAddress {
                endpoints,
                prefix: marquee::store::etcd::DEFAULT_PREFIX.into(),
            });
            tweak(config);
        })
        .await
    }

    /// The first-admin setup link that works: each node's start issues a
    /// new one and revokes those before it, so on two nodes it is the
    /// second's (the one started last).
    pub fn setup_link(&self) -> Option<&str> {
        self.second
            .as_ref()
            .or(self.server.as_ref())
            .and_then(Server::setup_link)
    }

    /// Waits until every node has applied every write acknowledged before
    /// the call (at once on one node). Two nodes share a write within
    /// milliseconds, not at once, and the server has no cross-node
    /// read-after-write yet (SCALE-OUT.md, BUS): a test whose next request
    /// may reach the other node, and must see the write there, settles first.
    pub async fn settle(&self) {
        for node in self.server.iter().chain(self.second.iter()) {
            node.store().caught_up().await.expect("the node catches up");
        }
    }

    /// Where MQTT clients connect (on two nodes, to each in turn).
    pub fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.mqtt
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.url.replacen("http://", "ws://", 1))
    }

    pub async fn stop(mut self) {
        for proxy in self.proxies.drain(..) {
            proxy.abort();
        }
        if let Some(server) = self.second.take() {
            server.shutdown().await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.abort();
        }
    }
}

/// How many nodes each TestServer runs: MARQUEE_TEST_NODES=2 (with
/// MARQUEE_TEST_ETCD) runs every suite against two nodes on one etcd store,
/// each client connection dealt to one of them in turn; 1 while this
/// thread holds a [`one_node`] guard.
pub fn nodes() -> usize {
    if ONE_NODE.with(Cell::get) > 0 {
        return 1;
    }
    std::env::var("MARQUEE_TEST_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

thread_local! {
    /// How many [`OneNode`] guards this thread holds.
    static ONE_NODE: Cell<usize> = const { Cell::new(0) };
}

/// While held, every TestServer this thread starts is one node, even in
/// two-node mode (its store still on etcd when the suite runs there).
///
/// For behaviour that is per node by design, where a proxy dealing
/// connections to two nodes would halve what each one sees: connection
/// limits, sign-in and CONNECT throttles, `$SYS` counts, `max_sessions`.
/// The test says why it needs it. Call it first in the test's body (a
/// `#[tokio::test]` body runs on the test's own thread, where the servers
/// it starts read the guard): `let _one = common::one_node();`.
#[must_use = "the guard only acts while it is held"]
pub fn one_node() -> OneNode {
    ONE_NODE.with(|n| n.set(n.get() + 1));
    OneNode(())
}

/// See [`one_node`].
pub struct OneNode(());

impl Drop for OneNode {
    fn drop(&mut self) {
        ONE_NODE.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// A listener on a free loopback port.
async fn listen() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy listener")
}

/// Forwards each connection `listener` accepts to `a` and `b` in turn, byte
/// for byte (as a TCP load balancer would). A client on a loopback address
/// reaches the node from that same address (all of 127/8 is ours to bind),
/// as if the balancer kept client addresses (PROXY protocol, transparent
/// mode): per-address throttles see the real client, not the proxy.
fn alternate(
    listener: tokio::net::TcpListener,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let addr = listener.local_addr().expect("proxy address");
    let task = tokio::spawn(async move {
        let mut turn = 0usize;
        while let Ok((mut client, peer)) = listener.accept().await {
            let backend = if turn.is_multiple_of(2) { a } else { b };
            turn += 1;
            tokio::spawn(async move {
                if let Ok(mut server) = connect_from(peer.ip(), backend).await {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, task)
}

/// A connection to `to` from `from` (any free port) when `from` is a
/// loopback address of the same family, else from wherever the system picks.
async fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match to {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if from.is_loopback() && from.is_ipv4() == to.is_ipv4() {
        socket.bind(std::net::SocketAddr::new(from, 0))?;
    }
    socket.connect(to).await
}

/// The `marquee` binary as a child process.
/// With MARQUEE_TEST_ETCD=host:port,... set, puts a test server's store on
/// that etcd, under a prefix named after its data dir (so a restart on the
/// same data dir finds the same store); else leaves it embedded.
pub fn on_test_store(config: &mut Config) {
    if let Ok(endpoints) = std::env::var("MARQUEE_TEST_ETCD")
        && config.store == marquee::store::StoreAddress::Embedded
    {
        let name: String = config
            .data_dir
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        config.store = marquee::store::StoreAddress::Etcd(marquee::store::EtcdAddress {
            endpoints: endpoints.split(',').map(str::to_owned).collect(),
            prefix: format!("/test{name}/"),
        });
    }
}

pub struct ChildServer {
    pub child: Child,
    pub url: String,
    pub mqtt: std::net::SocketAddr,
}

impl ChildServer {
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn_with_env(data_dir, extra, &[])
    }

    /// Starts `marquee` in `open` mode unless `extra` names `--auth-mode`.
    pub fn spawn_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mode: &[&str] = if extra.contains(&"--auth-mode") {
            &[]
        } else {
            &["--auth-mode", "open"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_marquee"))
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
            .args(mode)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn marquee");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read address line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        let mqtt = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mqtt://"))
            .and_then(|a| a.trim_end_matches([',', ')']).parse().ok())
            .unwrap_or_else(|| panic!("no MQTT address in {line:?}"));
        Self { child, url, mqtt }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most `limit`) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The server's `/metrics` page, as Prometheus would scrape it.
pub async fn metrics_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics page")
}

pub async fn put(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .put(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .expect("PUT")
}

/// A `PUT` that must succeed; the `seq` the server gave the change.
///
/// Tests take seqs from what the server said, never from counting writes:
/// a seq is strictly increasing and unique, but only the embedded store makes
/// it gap-free (on etcd it is the revision, which other keys also advance).
pub async fn put_seq(client: &reqwest::Client, url: &str, path: &str, body: &Value) -> u64 {
    let response = put(client, url, path, body).await;
    assert!(
        response.status().is_success(),
        "PUT {path}: {}",
        response.status()
    );
    let event: Value = response.json().await.expect("PUT answers with its change");
    seq_of(&event)
}

/// A change's (or an ack's, or a sync's) `seq` field.
pub fn seq_of(value: &Value) -> u64 {
    value["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {value}"))
}

/// A `/api/changes` page's changes, in order, as (seq, the value's `field`).
pub fn changes_with(page: &Value, field: &str) -> Vec<(u64, Value)> {
    page["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes in {page}"))
        .iter()
        .map(|c| (seq_of(c), c["value"][field].clone()))
        .collect()
}

/// Asserts `seqs` strictly increase: one order, no change twice. Says
/// nothing about the steps between them, which may be more than 1.
pub fn assert_strictly_increasing(seqs: &[u64], what: &str) {
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "{what}: seqs not strictly increasing: {seqs:?}"
    );
}

pub async fn get_json(client: &reqwest::Client, url: &str, path: &str) -> (u16, Value) {
    let response = client
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// What the event is: a control event's name (`sync`, `reset`, `error`),
    /// else — for an unnamed record or change event — the change's `type`.
    pub fn kind(&self) -> String {
        if self.event == "message" {
            self.json()["type"].as_str().unwrap_or("").to_owned()
        } else {
            self.event.clone()
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The event's `id:` as a seq; `None` for events without one.
    pub fn seq(&self) -> Option<u64> {
        self.id
            .as_deref()
            .map(|id| id.parse().unwrap_or_else(|_| panic!("id {id:?} is no seq")))
    }
}

/// A minimal SSE client over a real HTTP connection.
pub struct SseClient {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseClient {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let client = reqwest::Client::new();
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("SSE connect");
        assert_eq!(response.status(), 200, "SSE status for {url}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type}"
        );
        Self {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// A stream from a request of the caller's making (cookie, bearer
    /// token, `Last-Event-ID`); the response itself when it is not a 200.
    pub async fn open(request: reqwest::RequestBuilder) -> Result<Self, reqwest::Response> {
        let response = request
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("SSE connect");
        if response.status() != 200 {
            return Err(response);
        }
        Ok(Self {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        })
    }

    /// The next event (comments skipped); `None` when the stream ends or 10 s pass.
    pub async fn next(&mut self) -> Option<SseEvent> {
        self.next_within(Duration::from_secs(10)).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                // An event without an `event:` field is a "message" (the SSE spec).
                let mut event = SseEvent {
                    event: "message".into(),
                    ..SseEvent::default()
                };
                let mut has_field = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    has_field = true;
                    match field {
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = value.to_owned(),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if has_field {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events up to and including the first `sync`.
    pub async fn until_sync(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(event) = self.next().await {
            let done = event.kind() == "sync";
            out.push(event);
            if done {
                return out;
            }
        }
        panic!("stream ended before sync: {out:?}");
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A JSON WebSocket client.
pub struct WsClient {
    pub socket: WsStream,
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WS connect");
        Self { socket }
    }

    pub async fn send(&mut self, value: Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("WS send");
    }

    /// The next JSON message; `None` on close or after 10 s.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(10)).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Messages up to and including the first `sync` (or error).
    pub async fn until_sync(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(message) = self.next().await {
            let done = message["type"] == "sync" || message["type"] == "error";
            out.push(message);
            if done {
                return out;
            }
        }
        panic!("socket closed before sync: {out:?}");
    }

    /// Waits for the reply (ack or error) to request `req`, collecting other messages.
    pub async fn reply(&mut self, req: &str, others: &mut Vec<Value>) -> Value {
        while let Some(message) = self.next().await {
            if message["req"] == req && (message["type"] == "ack" || message["type"] == "error") {
                return message;
            }
            others.push(message);
        }
        panic!("no reply to {req}");
    }
}

pub fn data_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data")
}

/// A process's resident set size in KiB (VmRSS), 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The store of a data directory no server holds, opened in this process.
pub fn open_store(data_dir: &Path) -> marquee::store::Store {
    let metrics = std::sync::Arc::new(marquee::metrics::Metrics::default());
    marquee::store::Store::open(
        marquee::store::StoreOptions {
            data_dir: data_dir.to_path_buf(),
            // Large enough never to trim the log the server kept.
            change_log_window: u64::MAX,
            tables: Vec::new(),
            fail_persist_after: None,
            address: Default::default(),
        },
        marquee::bus::Bus::new(marquee::bus::QueueLimit::events(8), metrics.clone()),
        metrics,
    )
    .expect("open the store")
}
