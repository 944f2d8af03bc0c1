//! Accounts and access as users meet them (SECURITY.md §8, hostile cases
//! 1–40, 46, 47; 41 is the browser suite's, 42–45 are device pairing): a
//! real server in `accounts` mode, and real clients — reqwest, WebSockets
//! with and without Origin and cookie, SSE, raw MQTT 3.1.1 and 5 over TCP
//! and `/mqtt`, rumqttc, and Debian's `mosquitto_pub`/`mosquitto_sub`.
//!
//! Attacks come from another loopback address (127.0.0.2 and up; Linux
//! routes all of 127/8 to lo), so the throttle they earn never stands in
//! the way of the legitimate admin on 127.0.0.1. "Nothing delivered" is
//! always asserted after a positive control proved the pipe works, and for
//! a bounded time.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mqtt::{Raw, connect_packet, publish};
use common::{SseClient, TestServer, WsClient, metrics_text};
use futures_util::StreamExt as _;
use marquee::access::{Access, AclRule, Mode};
use marquee::auth::Role;
use marquee::mqtt::{
    Ack, ConnAck, Connect, Packet, ProtocolVersion, PublishProperties, QoS, ReasonCode,
    Subscription, Will, WillProperties,
};
use reqwest::Method;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ADMIN_PASSWORD: &str = "admin pass 1";
const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// How long "nothing arrives" is waited for, after a positive control.
const QUIET: Duration = Duration::from_millis(700);

// ------------------------------------------------------------ the server

/// A server in `accounts` mode with the admin `admin` and these rules.
struct Env {
    server: TestServer,
    /// The admin's session cookie (`name=value`).
    admin: String,
}

/// Who makes an HTTP request.
#[derive(Clone, Debug)]
enum Who {
    Nobody,
    /// The session cookie, from a page of this server (Origin).
    Browser(String),
    /// An API token as `Authorization: Bearer`.
    Script(String),
}

fn accounts_mode(config: &mut marquee::Config, rules: Vec<AclRule>) {
    config.access = Access::new(Mode::Accounts, false, rules).unwrap();
    config.admin_bootstrap = Some(marquee::config::AdminBootstrap {
        username: "admin".into(),
        password: ADMIN_PASSWORD.into(),
    });
}

impl Env {
    async fn start(rules: Vec<AclRule>) -> Self {
        Self::start_with(rules, |_| {}).await
    }

    async fn start_with(rules: Vec<AclRule>, tweak: impl FnOnce(&mut marquee::Config)) -> Self {
        let server = TestServer::start_with(|config| {
            accounts_mode(config, rules);
            tweak(config);
        })
        .await;
        let mut env = Self {
            server,
            admin: String::new(),
        };
        env.admin = env.sign_in("admin", ADMIN_PASSWORD).await;
        env
    }

    fn url(&self) -> &str {
        &self.server.url
    }

    fn mqtt(&self) -> SocketAddr {
        self.server.mqtt_addr()
    }

    fn ws(&self, path: &str) -> String {
        self.server.ws_url(path)
    }

    fn admin(&self) -> Who {
        Who::Browser(self.admin.clone())
    }

    fn request(&self, method: Method, path: &str, who: &Who) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().request(method, format!("{}{path}", self.url()));
        match who {
            Who::Nobody => request,
            Who::Browser(cookie) => request.header(COOKIE, cookie).header(ORIGIN, self.url()),
            Who::Script(token) => request.bearer_auth(token),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        who: &Who,
    ) -> (u16, Value) {
        let mut request = self.request(method, path, who);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/auth/login` from a page of this server.
    async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/api/auth/login", self.url()))
            .header(ORIGIN, self.url())
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    async fn sign_in(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "{username} cannot sign in");
        cookie_of(&response)
    }

    /// The admin makes an account.
    async fn account(&self, username: &str, role: &str, password: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/accounts",
                Some(json!({"username": username, "role": role, "password": password})),
                &self.admin(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// The admin changes an account (`{"role"}`, `{"disabled"}`), and the
    /// change has reached every node.
    /// On two nodes the other node accepts a revoked token (with the old
    /// role) until it has applied the change, milliseconds later, as the
    /// README says (only a token a node does not know makes it catch up):
    /// the cases check what happens once the change is everywhere.
    async fn change_account(&self, username: &str, change: Value) {
        let (status, body) = self
            .call(
                Method::PATCH,
                &format!("/api/accounts/{username}"),
                Some(change),
                &self.admin(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        self.server.settle().await;
    }

    /// A new API token of the account signed in with `cookie`.
    async fn token(&self, cookie: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/tokens",
                Some(json!({"name": "script"})),
                &Who::Browser(cookie.to_owned()),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// The admin writes a record.
    async fn put(&self, path: &str, value: Value) {
        let (status, body) = self
            .call(Method::PUT, path, Some(value), &self.admin())
            .await;
        assert!(
            status == 200 || status == 201,
            "PUT {path}: {status} {body}"
        );
    }

    /// A record as the admin reads it (Null if there is none).
    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None, &self.admin()).await;
        if status == 200 { body } else { Value::Null }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// The `name=value` of the session cookie a response sets.
fn cookie_of(response: &reqwest::Response) -> String {
    let set = response
        .headers()
        .get(SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().trim().to_owned()
}

fn rule(filter: &str, publish: Option<bool>, subscribe: Option<bool>) -> AclRule {
    AclRule {
        filter: filter.into(),
        publish,
        subscribe,
        ..AclRule::default()
    }
}

// ------------------------------------------------------------ MQTT clients

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// CONNECT with a user name and password.
fn login(version: ProtocolVersion, id: &str, username: &str, password: &str) -> Connect {
    Connect {
        username: Some(username.into()),
        password: Some(Bytes::copy_from_slice(password.as_bytes())),
        ..connect_packet(version, id, true)
    }
}

/// Connects from `from` and returns the client and its CONNACK (`None`:
/// the server closed without one).
async fn mqtt_from(from: &str, addr: SocketAddr, connect: Connect) -> (Raw, Option<ConnAck>) {
    let mut raw = Raw::from_tcp(tcp_from(from, addr).await, connect.protocol);
    let ack = raw.try_handshake(connect).await;
    (raw, ack)
}

/// Connects from 127.0.0.1 and asserts success.
async fn mqtt_ok(addr: SocketAddr, connect: Connect) -> Raw {
    let (raw, ack) = mqtt_from("127.0.0.1", addr, connect).await;
    let ack = ack.expect("a CONNACK");
    assert_eq!(ack.reason_code, ReasonCode::Success);
    raw
}

/// The CONNACK code a CONNECT from `from` gets (`None`: closed without one).
async fn connack_code(from: &str, addr: SocketAddr, connect: Connect) -> Option<ReasonCode> {
    mqtt_from(from, addr, connect)
        .await
        .1
        .map(|a| a.reason_code)
}

/// MQTT 5 over `/mqtt`, with these upgrade headers; the HTTP status of a
/// refused upgrade.
async fn mqtt_ws(url: &str, headers: &[(&str, &str)]) -> Result<Raw, u16> {
    let request = ws_request(url, headers);
    match Raw::open_ws_request(request, V5).await {
        Ok(raw) => Ok(raw),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn ws_request(url: &str, headers: &[(&str, &str)]) -> tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

/// A JSON WebSocket with these upgrade headers; the HTTP status of a refused upgrade.
async fn ws_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, u16> {
    match tokio_tungstenite::connect_async(ws_request(url, headers)).await {
        Ok((socket, _)) => Ok(WsClient { socket }),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// SUBSCRIBE at QoS 1 and the SUBACK codes.
async fn subscribe(raw: &mut Raw, id: u16, filters: &[&str]) -> Vec<ReasonCode> {
    raw.subscribe(
        id,
        filters
            .iter()
            .map(|f| Subscription::new(*f, QoS::AtLeastOnce))
            .collect(),
    )
    .await
}

/// A QoS 1 publish and its PUBACK code (acknowledging deliveries on the way).
async fn publish_acked(
    raw: &mut Raw,
    id: u16,
    topic: &str,
    retain: bool,
    payload: &[u8],
) -> ReasonCode {
    raw.send(&publish(topic, QoS::AtLeastOnce, id, retain, payload))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match raw.recv().await {
            Some(Packet::PubAck(ack)) if ack.packet_id.get() == id => return ack.reason_code,
            Some(Packet::Publish(p)) => ack_delivery(raw, &p).await,
            Some(_) => {}
            None => break,
        }
    }
    panic!("no PUBACK for {topic}");
}

async fn ack_delivery(raw: &mut Raw, p: &marquee::mqtt::Publish) {
    if let Some(id) = p.packet_id {
        raw.send(&Packet::PubAck(Ack::new(id))).await;
    }
}

/// The topics (and payloads) of the PUBLISHes that arrive within `within`, acknowledged.
async fn deliveries(raw: &mut Raw, within: Duration) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        match raw.recv_within(left).await {
            Some(Packet::Publish(p)) => {
                ack_delivery(raw, &p).await;
                got.push((
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                ));
            }
            Some(_) => {}
            None => return got,
        }
    }
}

/// The next PUBLISH's topic within 5 s.
async fn next_topic(raw: &mut Raw) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match raw.recv_within(left).await? {
            Packet::Publish(p) => {
                ack_delivery(raw, &p).await;
                return Some(p.topic);
            }
            _ => continue,
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Whether two latencies are within ±20% of each other.
fn alike(a: Duration, b: Duration) -> bool {
    let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
    (a - b).abs() <= 0.2 * a.max(b)
}

// ------------------------------------------------------------ authentication

/// Cases 1, 2, 3, 7: a wrong password, an unknown user, half the
/// credentials, another device's password: the same refusal, in the same
/// time, the socket closed, and no session left behind.
#[tokio::test]
async fn mqtt_refuses_wrong_passwords_unknown_users_and_half_credentials_alike() {
    let env = Env::start(Vec::new()).await;
    let addr = env.mqtt();
    env.account("sign-a", "device", "device a pass").await;
    env.account("sign-b", "device", "device b pass").await;

    for (version, bad) in [
        (V311, ReasonCode::BadUserNameOrPassword),
        (V5, ReasonCode::BadUserNameOrPassword),
    ] {
        // Case 1: the right user, a wrong password; a durable session asked for.
        let ghost = format!("ghost-{version:?}");
        let mut connect = login(version, &ghost, "admin", "not the password");
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(300);
        let (mut raw, ack) = mqtt_from("127.0.0.2", addr, connect).await;
        assert_eq!(ack.map(|a| a.reason_code), Some(bad), "{version:?}");
        let (closed, after) = raw.closed().await;
        assert!(closed && after.is_empty(), "{version:?}: {after:?}");
        // Case 7: device A's password with device B's name.
        assert_eq!(
            connack_code(
                "127.0.0.2",
                addr,
                login(version, "a7", "sign-b", "device a pass")
            )
            .await,
            Some(bad),
            "{version:?}"
        );
        // Case 3: a user name with an empty password.
        assert_eq!(
            connack_code("127.0.0.3", addr, login(version, "a3", "admin", "")).await,
            Some(bad),
            "{version:?}"
        );
        // The refused CONNECT left no session for its client id.
        let mut connect = login(version, &ghost, "admin", ADMIN_PASSWORD);
        connect.clean_start = false;
        connect.properties.session_expiry_interval = Some(300);
        let (mut raw, ack) = mqtt_from("127.0.0.1", addr, connect).await;
        let ack = ack.unwrap();
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(
            !ack.session_present,
            "{version:?}: a refused CONNECT made a session"
        );
        raw.send(&Packet::Disconnect(Default::default())).await;
    }
    // Case 3: MQTT 5 allows a password without a user name — refused.
    let mut connect = connect_packet(V5, "a3b", true);
    connect.password = Some(Bytes::from_static(ADMIN_PASSWORD.as_bytes()));
    assert_eq!(
        connack_code("127.0.0.3", addr, connect).await,
        Some(ReasonCode::BadUserNameOrPassword)
    );
    // 3.1.1 forbids the flags (password without user name): even the
    // admin's password gets no session, only a closed socket.
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x1e];
    body.extend_from_slice(&[0x00, 0x01, b'c', 0x00, ADMIN_PASSWORD.len() as u8]);
    body.extend_from_slice(ADMIN_PASSWORD.as_bytes());
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    let mut raw = Raw::from_tcp(tcp_from("127.0.0.3", addr).await, V311);
    raw.send_bytes(&frame).await;
    let (closed, seen) = raw.closed().await;
    assert!(closed, "the server kept a malformed CONNECT open");
    assert!(
        !seen
            .iter()
            .any(|p| matches!(p, Packet::ConnAck(a) if a.reason_code == ReasonCode::Success)),
        "{seen:?}"
    );

    // Case 2: an unknown user costs what a wrong password costs (±20%).
    let timed = |username: &'static str, from: &'static str| async move {
        let started = Instant::now();
        let code = connack_code(from, addr, login(V5, "t", username, "wrong wrong")).await;
        assert_eq!(code, Some(ReasonCode::BadUserNameOrPassword), "{username}");
        started.elapsed()
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..3 {
        known.push(timed("sign-a", "127.0.0.4").await);
        unknown.push(timed("nobody-here", "127.0.0.4").await);
    }
    let (known, unknown) = (median(known), median(unknown));
    assert!(
        alike(known, unknown),
        "wrong password {known:?} vs unknown user {unknown:?}"
    );
    assert!(
        known >= Duration::from_millis(450),
        "{known:?}: no failure delay"
    );
    env.stop().await;
}

/// Cases 4, 5: no credentials at all, where no rule admits the anonymous,
/// is "not authorized" (over TCP and `/mqtt`); an enhanced-auth method is
/// "bad authentication method" even with the right password. A rule for
/// the anonymous lets them in, to what it grants only.
#[tokio::test]
async fn anonymous_mqtt_clients_are_refused_unless_a_rule_admits_them() {
    let env = Env::start(Vec::new()).await;
    let addr = env.mqtt();
    assert_eq!(
        connack_code("127.0.0.1", addr, connect_packet(V311, "anon", true)).await,
        Some(ReasonCode::NotAuthorized)
    );
    assert_eq!(
        connack_code("127.0.0.1", addr, connect_packet(V5, "anon", true)).await,
        Some(ReasonCode::NotAuthorized)
    );
    let mut raw = mqtt_ws(&env.ws("/mqtt"), &[]).await.unwrap();
    assert_eq!(
        raw.try_handshake(connect_packet(V5, "anon-ws", true))
            .await
            .map(|a| a.reason_code),
        Some(ReasonCode::NotAuthorized)
    );
    let mut scram = login(V5, "scram", "admin", ADMIN_PASSWORD);
    scram.properties.authentication_method = Some("SCRAM-SHA-256".into());
    scram.properties.authentication_data = Some(Bytes::from_static(b"n,,n=admin,r=abc"));
    assert_eq!(
        connack_code("127.0.0.1", addr, scram).await,
        Some(ReasonCode::BadAuthenticationMethod)
    );
    // The positive control: the same CONNECT without the method.
    mqtt_ok(addr, login(V5, "scram", "admin", ADMIN_PASSWORD)).await;
    env.stop().await;

    let env = Env::start(vec![AclRule {
        anonymous: Some(true),
        ..rule("public/#", None, Some(true))
    }])
    .await;
    let addr = env.mqtt();
    let mut anon = mqtt_ok(addr, connect_packet(V5, "anon", true)).await;
    assert_eq!(
        subscribe(&mut anon, 1, &["public/#", "signs/#"]).await,
        vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized]
    );
    assert_eq!(
        publish_acked(&mut anon, 2, "public/x", false, b"hi").await,
        ReasonCode::NotAuthorized
    );
    env.stop().await;
}

/// Cases 6, 27: disabling a device drops its live MQTT 5 session with
/// DISCONNECT 0x98 and refuses it with the right password; enabling lets
/// it back in. A role change stops an editor's deliveries at once: its
/// MQTT 5 client gets 0x98, its 3.1.1 client a closed socket, its
/// WebSocket close 1008 and its SSE stream an error event.
#[tokio::test]
async fn disabling_or_demoting_an_account_ends_its_live_connections() {
    let env = Env::start(vec![AclRule {
        role: Some(Role::Device),
        ..rule("devices/%u/#", Some(true), Some(true))
    }])
    .await;
    let addr = env.mqtt();
    env.account("sign-1", "device", "device pass 1").await;
    let mut device = mqtt_ok(addr, login(V5, "sign-1", "sign-1", "device pass 1")).await;
    assert_eq!(
        publish_acked(&mut device, 1, "devices/sign-1/status", false, b"up").await,
        ReasonCode::Success
    );
    env.change_account("sign-1", json!({"disabled": true}))
        .await;
    let (closed, seen) = device.closed().await;
    assert!(closed, "a disabled device stayed connected");
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::AdministrativeAction),
        "{seen:?}"
    );
    for version in [V311, V5] {
        assert_eq!(
            connack_code(
                "127.0.0.1",
                addr,
                login(version, "sign-1", "sign-1", "device pass 1")
            )
            .await,
            Some(ReasonCode::NotAuthorized),
            "{version:?}"
        );
    }
    env.change_account("sign-1", json!({"disabled": false}))
        .await;
    mqtt_ok(addr, login(V311, "sign-1", "sign-1", "device pass 1")).await;

    // Case 27: an editor on every live protocol, then made a viewer.
    env.account("ed", "editor", "editor pass").await;
    let ed = env.sign_in("ed", "editor pass").await;
    let mut v5 = mqtt_ok(addr, login(V5, "ed-v5", "ed", "editor pass")).await;
    let mut v311 = mqtt_ok(addr, login(V311, "ed-v311", "ed", "editor pass")).await;
    assert_eq!(
        subscribe(&mut v5, 1, &["signs/#"]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    assert_eq!(
        subscribe(&mut v311, 1, &["signs/#"]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let mut ws = ws_with(
        &env.ws("/api/ws"),
        &[("cookie", &ed), ("origin", env.url())],
    )
    .await
    .unwrap();
    ws.send(json!({"type": "subscribe", "req": "s", "filter": "signs/#"}))
        .await;
    ws.until_sync().await;
    let mut sse =
        SseClient::open(env.request(Method::GET, "/api/signs/", &Who::Browser(ed.clone())))
            .await
            .unwrap_or_else(|r| panic!("SSE {}", r.status()));
    sse.until_sync().await;
    env.put("/api/signs/lobby", json!({"name": "Lobby"})).await;
    assert_eq!(next_topic(&mut v5).await.as_deref(), Some("signs/lobby"));
    assert_eq!(next_topic(&mut v311).await.as_deref(), Some("signs/lobby"));
    assert_eq!(ws.next().await.unwrap()["id"], "lobby");
    assert_eq!(sse.next().await.unwrap().json()["id"], "lobby");

    env.change_account("ed", json!({"role": "viewer"})).await;
    let (closed, seen) = v5.closed().await;
    assert!(closed, "MQTT 5 stayed open");
    assert!(
        matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::AdministrativeAction),
        "{seen:?}"
    );
    let (closed, seen) = v311.closed().await;
    assert!(closed && seen.is_empty(), "MQTT 3.1.1: {closed} {seen:?}");
    let mut close = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.socket.next()).await {
        if let tungstenite::Message::Close(frame) = message {
            close = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close, Some(1008), "the WebSocket's close code");
    let event = sse.next().await.expect("an SSE error event");
    assert_eq!(
        (event.event.as_str(), event.json()["code"].as_str()),
        ("error", Some("unauthenticated"))
    );
    assert!(
        sse.next_within(Duration::from_secs(2)).await.is_none(),
        "the stream went on"
    );
    // Nothing the old streams could still get: a write after the change.
    env.put("/api/signs/lobby", json!({"name": "Lobby 2"}))
        .await;
    env.stop().await;
}

/// Cases 8, 9, 10, 11 over HTTP: a wrong user and a wrong password look and
/// take the same; forged, truncated and odd tokens are 401, never 500;
/// tokens from before a sign-out, a password change or a disabling are
/// dead; a cookie planted before sign-in is replaced.
#[tokio::test]
async fn http_sign_in_tells_nothing_and_old_or_forged_tokens_are_dead() {
    let env = Env::start(Vec::new()).await;
    env.account("ed", "editor", "editor pass").await;

    // Case 8 (status and body are in tests/auth.rs; here the time too).
    let attempt = |username: &'static str| {
        let url = env.url().to_owned();
        async move {
            let started = Instant::now();
            let response = reqwest::Client::builder()
                .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
                .build()
                .unwrap()
                .post(format!("{url}/api/auth/login"))
                .json(&json!({"username": username, "password": "wrong wrong"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            (status, body, started.elapsed())
        }
    };
    let mut times = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (s1, b1, t1) = attempt("ed").await;
        let (s2, b2, t2) = attempt("no-such-user").await;
        assert_eq!(
            (s1, &b1),
            (s2, &b2),
            "a wrong user and a wrong password differ"
        );
        assert_eq!(s1, 401);
        times.0.push(t1);
        times.1.push(t2);
    }
    let (wrong_password, wrong_user) = (median(times.0), median(times.1));
    assert!(
        alike(wrong_password, wrong_user),
        "wrong password {wrong_password:?} vs wrong user {wrong_user:?}"
    );

    // Case 9: forged and malformed tokens, as cookie and as bearer.
    let random: String = std::iter::repeat_n('A', 43).collect();
    let forged = [
        format!("mqs_{random}"),
        format!("mqt_{random}"),
        "mqs_".to_owned(),
        "mqs_abc".to_owned(),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl".to_owned(),
        String::new(),
        "x".repeat(10_000),
        env.admin.trim_start_matches("marquee_session=")[..20].to_owned(),
    ];
    for token in &forged {
        for who in [
            Who::Script(token.clone()),
            Who::Browser(format!("marquee_session={token}")),
        ] {
            let (status, body) = env.call(Method::GET, "/api/signs/", None, &who).await;
            assert_eq!(status, 401, "{who:?}: {body}");
            let (status, _) = env.call(Method::GET, "/api/auth/me", None, &who).await;
            assert_eq!(status, 401, "{who:?}");
        }
    }

    // Case 10: a token from before a sign-out, a password change, a disabling.
    let ed = env.sign_in("ed", "editor pass").await;
    let ed_token = env.token(&ed).await;
    let (status, _) = env
        .call(
            Method::POST,
            "/api/auth/logout",
            Some(json!({})),
            &Who::Browser(ed.clone()),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        env.call(Method::GET, "/api/signs/", None, &Who::Browser(ed))
            .await
            .0,
        401
    );
    assert_eq!(
        env.call(
            Method::GET,
            "/api/signs/",
            None,
            &Who::Script(ed_token.clone())
        )
        .await
        .0,
        200,
        "signing out one browser ended a script's token"
    );
    let ed = env.sign_in("ed", "editor pass").await;
    let (status, _) = env
        .call(
            Method::POST,
            "/api/auth/password",
            Some(json!({"current": "editor pass", "new": "editor pass 2"})),
            &Who::Browser(ed.clone()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        env.call(Method::GET, "/api/signs/", None, &Who::Script(ed_token))
            .await
            .0,
        401
    );
    assert_eq!(
        env.call(Method::GET, "/api/signs/", None, &Who::Browser(ed))
            .await
            .0,
        401
    );
    assert_eq!(
        connack_code(
            "127.0.0.1",
            env.mqtt(),
            login(V5, "ed", "ed", "editor pass")
        )
        .await,
        Some(ReasonCode::BadUserNameOrPassword),
        "the old password still opens MQTT"
    );
    let ed = env.sign_in("ed", "editor pass 2").await;
    let ed_token = env.token(&ed).await;
    env.change_account("ed", json!({"disabled": true})).await;
    for who in [Who::Browser(ed), Who::Script(ed_token.clone())] {
        assert_eq!(
            env.call(Method::GET, "/api/signs/", None, &who).await.0,
            401,
            "{who:?}"
        );
    }
    assert_ne!(
        connack_code("127.0.0.1", env.mqtt(), login(V5, "ed", "ed", &ed_token)).await,
        Some(ReasonCode::Success),
        "a disabled account's token opens MQTT"
    );
    env.change_account("ed", json!({"disabled": false})).await;
    assert_eq!(
        env.call(Method::GET, "/api/signs/", None, &Who::Script(ed_token))
            .await
            .0,
        401,
        "a token came back to life with its account"
    );

    // Case 11: a cookie planted before sign-in is replaced, and stays worthless.
    let planted = format!("marquee_session=mqs_{random}");
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/login", env.url()))
        .header(ORIGIN, env.url())
        .header(COOKIE, &planted)
        .json(&json!({"username": "ed", "password": "editor pass 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let fresh = cookie_of(&response);
    assert_ne!(fresh, planted);
    assert!(fresh.starts_with("marquee_session=mqs_"), "{fresh}");
    assert_eq!(
        env.call(Method::GET, "/api/auth/me", None, &Who::Browser(planted))
            .await
            .0,
        401
    );
    assert_eq!(
        env.call(Method::GET, "/api/auth/me", None, &Who::Browser(fresh))
            .await
            .0,
        200
    );
    env.stop().await;
}

/// Case 13: the sixth failure for an account from one address is refused
/// (0x9F / 0x05 / 429), the right password too while it lasts, and works
/// after; other accounts, and the same account from elsewhere, are not
/// held up. Twenty failures from one address, for any accounts, refuse
/// that address for everyone for a minute, and only that address.
#[tokio::test]
async fn repeated_failures_are_throttled_per_account_and_address() {
    // Failures are counted in each node's memory (auth::throttle): behind
    // a balancer a guesser's tries are spread over the nodes.
    let _one = common::one_node();
    let env = Env::start(Vec::new()).await;
    let addr = env.mqtt();
    env.account("ed", "editor", "editor pass").await;
    for i in 0..5 {
        assert_eq!(
            connack_code("127.0.0.2", addr, login(V5, "t", "admin", "guess guess")).await,
            Some(ReasonCode::BadUserNameOrPassword),
            "failure {i}"
        );
    }
    // The sixth is still checked (and fails); from then on, refused unheard.
    assert_eq!(
        connack_code("127.0.0.2", addr, login(V311, "t", "admin", "guess guess")).await,
        Some(ReasonCode::BadUserNameOrPassword)
    );
    assert_eq!(
        connack_code("127.0.0.2", addr, login(V5, "t", "admin", "guess guess")).await,
        Some(ReasonCode::ConnectionRateExceeded)
    );
    assert_eq!(
        connack_code("127.0.0.2", addr, login(V5, "t", "admin", ADMIN_PASSWORD)).await,
        Some(ReasonCode::ConnectionRateExceeded),
        "the right password during the wait"
    );
    assert_eq!(
        connack_code("127.0.0.2", addr, login(V311, "t", "admin", ADMIN_PASSWORD)).await,
        Some(ReasonCode::NotAuthorized),
        "3.1.1 has no 0x9F: 0x05"
    );
    let response = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{}/api/auth/login", env.url()))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "HTTP shares the MQTT throttle");
    // Others are not held up: another account from there, the admin from here.
    mqtt_ok(addr, login(V5, "ok", "admin", ADMIN_PASSWORD)).await;
    let (_, ack) = mqtt_from("127.0.0.2", addr, login(V5, "ed", "ed", "editor pass")).await;
    assert_eq!(ack.unwrap().reason_code, ReasonCode::Success);
    // The wait is over after two seconds (first step of the doubling).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, ack) = mqtt_from("127.0.0.2", addr, login(V5, "t", "admin", ADMIN_PASSWORD)).await;
    assert_eq!(
        ack.unwrap().reason_code,
        ReasonCode::Success,
        "after the wait"
    );

    // Per address: twenty failures, any accounts, from 127.0.0.3 (MQTT and HTTP alike).
    let from3 = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    // Four at a time: one address gets no more checks under way at once.
    for batch in [0..4, 4..8, 8..10] {
        let mut joins = Vec::new();
        for i in batch {
            joins.push(tokio::spawn(connack_code(
                "127.0.0.3",
                addr,
                login(V5, "x", &format!("user{i}"), "guess guess"),
            )));
        }
        for join in joins {
            assert_eq!(join.await.unwrap(), Some(ReasonCode::BadUserNameOrPassword));
        }
    }
    for i in 10..20 {
        let status = from3
            .post(format!("{}/api/auth/login", env.url()))
            .json(&json!({"username": format!("user{i}"), "password": "guess guess"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "failure {i}");
    }
    let status = from3
        .post(format!("{}/api/auth/login", env.url()))
        .json(&json!({"username": "ed", "password": "editor pass"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 429, "the address is refused for every account");
    assert_eq!(
        connack_code("127.0.0.3", addr, login(V5, "ed", "ed", "editor pass")).await,
        Some(ReasonCode::ConnectionRateExceeded)
    );
    let (_, ack) = mqtt_from("127.0.0.4", addr, login(V5, "ed", "ed", "editor pass")).await;
    assert_eq!(
        ack.unwrap().reason_code,
        ReasonCode::Success,
        "another address"
    );
    env.stop().await;
}

/// Case 12, the part a user notices (the memory figures are the
/// `bad_connects` bench): a flood of bad CONNECTs and logins from one
/// address, and the admin still signs in, over HTTP and MQTT, within
/// seconds, and the server lives on.
#[tokio::test]
async fn a_flood_of_bad_sign_ins_does_not_keep_the_admin_out() {
    let env = Env::start(Vec::new()).await;
    let addr = env.mqtt();
    let url = env.url().to_owned();
    let flood = tokio::spawn(async move {
        let mut joins = tokio::task::JoinSet::new();
        for i in 0..300 {
            let url = url.clone();
            joins.spawn(async move {
                if i % 3 == 0 {
                    let client = reqwest::Client::builder()
                        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
                        .timeout(Duration::from_secs(60))
                        .build()
                        .unwrap();
                    let _ = client
                        .post(format!("{url}/api/auth/login"))
                        .json(&json!({"username": format!("u{i}"), "password": "guess guess"}))
                        .send()
                        .await;
                } else {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        connack_code(
                            "127.0.0.2",
                            addr,
                            login(V5, "x", &format!("u{i}"), "guess guess"),
                        ),
                    )
                    .await;
                }
            });
        }
        let mut done = 0;
        while joins.join_next().await.is_some() {
            done += 1;
        }
        done
    });
    // Let the flood get going, then sign in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    env.sign_in("admin", ADMIN_PASSWORD).await;
    let http = started.elapsed();
    let started = Instant::now();
    mqtt_ok(addr, login(V5, "admin", "admin", ADMIN_PASSWORD)).await;
    let mqtt = started.elapsed();
    assert!(
        http < Duration::from_secs(3) && mqtt < Duration::from_secs(3),
        "during the flood the admin waited {http:?} (HTTP) and {mqtt:?} (MQTT)"
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(120), flood)
            .await
            .unwrap()
            .unwrap(),
        300
    );
    let (status, _) = env
        .call(Method::GET, "/api/signs/", None, &env.admin())
        .await;
    assert_eq!(status, 200, "the server after the flood");
    env.stop().await;
}

// ------------------------------------------------------------ bootstrap

/// A fresh server with no admin: its setup link's token.
async fn fresh() -> (TestServer, String) {
    let server = TestServer::start_with(|config| {
        config.access = Access::new(Mode::Accounts, false, Vec::new()).unwrap();
        config.admin_bootstrap = None;
    })
    .await;
    let link = server.setup_link().expect("a setup link").to_owned();
    assert!(
        link.starts_with(&format!("{}/setup#mqx_", server.url)),
        "{link}"
    );
    let token = link.split_once('#').unwrap().1.to_owned();
    (server, token)
}

async fn setup(url: &str, from: &str, token: &str, username: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{url}/api/auth/setup"))
        .header(ORIGIN, url)
        .json(&json!({"token": token, "username": username, "password": "first admin pass"}))
        .send()
        .await
        .unwrap()
}

/// Case 14: before the first admin, data is `setup_required` on every
/// protocol; a wrong link is 403; the right one works once (its throttle is
/// the next test's). (Its 30-minute expiry is the tokens unit test's: no
/// clock to turn here.)
#[tokio::test]
async fn a_fresh_server_waits_for_its_setup_link_and_takes_it_once() {
    let (server, token) = fresh().await;
    let url = server.url.clone();
    let addr = server.mqtt_addr();
    let http = reqwest::Client::new();
    for path in [
        "/api/signs/",
        "/api/signs/lobby",
        "/api/_tables",
        "/api/changes",
        "/api/auth/me",
    ] {
        let response = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "setup_required", "{path}");
    }
    assert_eq!(
        ws_with(&server.ws_url("/api/ws"), &[]).await.err(),
        Some(401)
    );
    for version in [V311, V5] {
        assert_eq!(
            connack_code(
                "127.0.0.1",
                addr,
                login(version, "c", "admin", "first admin pass")
            )
            .await,
            Some(ReasonCode::NotAuthorized),
            "{version:?}"
        );
        assert_eq!(
            connack_code("127.0.0.1", addr, connect_packet(version, "c", true)).await,
            Some(ReasonCode::NotAuthorized),
            "{version:?}"
        );
    }
    // A wrong link: 403.
    let wrong = format!("mqx_{}", "A".repeat(43));
    let response = setup(&url, "127.0.0.2", &wrong, "mallory").await;
    assert_eq!(response.status(), 403, "a wrong link");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_setup_token");
    // The right link works, once.
    let response = setup(&url, "127.0.0.1", &token, "Root").await;
    assert_eq!(response.status(), 201);
    let cookie = cookie_of(&response);
    let me: Value = http
        .get(format!("{url}/api/auth/me"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&me["username"], &me["role"]),
        (&json!("root"), &json!("admin"))
    );
    let again = setup(&url, "127.0.0.1", &token, "other").await;
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "setup_done");
    let (status, _) = {
        let response = http.get(format!("{url}/api/signs/")).send().await.unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 401);
    mqtt_ok(addr, login(V5, "c", "root", "first admin pass")).await;
    server.stop().await;
}

/// Case 14, the throttle: the sixth wrong link from one address waits, and
/// so does the right link from there; from elsewhere the right link works.
#[tokio::test]
async fn a_guessed_setup_link_is_throttled_per_address() {
    // Failures are counted in each node's memory (auth::throttle): behind
    // a balancer a guesser's tries are spread over the nodes.
    let _one = common::one_node();
    let (server, token) = fresh().await;
    let url = server.url.clone();
    let wrong = format!("mqx_{}", "A".repeat(43));
    for i in 0..6 {
        let response = setup(&url, "127.0.0.2", &wrong, "mallory").await;
        assert_eq!(response.status(), 403, "wrong link {i}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_setup_token");
    }
    let response = setup(&url, "127.0.0.2", &token, "mallory").await;
    assert_eq!(
        response.status(),
        429,
        "even the right link from a guessing address"
    );
    let response = setup(&url, "127.0.0.1", &token, "Root").await;
    assert_eq!(response.status(), 201, "the right link from elsewhere");
    server.stop().await;
}

/// Case 15: two browsers racing the link: exactly one admin.
#[tokio::test]
async fn two_browsers_racing_the_setup_link_make_one_admin() {
    let (server, token) = fresh().await;
    let url = server.url.clone();
    let (a, b) = tokio::join!(
        setup(&url, "127.0.0.1", &token, "alice"),
        setup(&url, "127.0.0.1", &token, "bob")
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert!(
        statuses == [201, 403] || statuses == [201, 409],
        "{statuses:?}"
    );
    let store = server.server.as_ref().unwrap().store().clone();
    let accounts = marquee::auth::Accounts::new(store, marquee::auth::Passwords::new());
    let admins: Vec<String> = accounts
        .list()
        .unwrap()
        .into_iter()
        .filter(|a| a.role == Role::Admin)
        .map(|a| a.username)
        .collect();
    assert_eq!(admins.len(), 1, "{admins:?}");
    server.stop().await;
}

/// Case 17: `open` mode refuses to start on a listener beyond loopback.
/// (Case 16, the environment's admin when one exists, is
/// `admin::the_environment_seeds_the_first_admin_and_only_the_first`.)
#[tokio::test]
async fn open_mode_will_not_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for (http, mqtt) in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")] {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--auth-mode", "open", "--http", http, "--mqtt", mqtt])
                .env("RUST_LOG", "warn")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("marquee exits by itself")
        .unwrap();
        assert!(!output.status.success(), "started open on {http} / {mqtt}");
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("listening"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("loopback"), "{stderr}");
    }
    // The same in accounts mode starts (the positive control).
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--auth-mode",
            "accounts",
            "--http",
            "0.0.0.0:0",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("accounts mode starts on 0.0.0.0")
        .unwrap()
        .unwrap_or_default();
    assert!(line.contains("listening"), "{line}");
    child.kill().await.unwrap();
}

// ------------------------------------------------------------ authorization

fn will(topic: &str) -> Option<Will> {
    Some(Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    })
}

/// Cases 19, 20, 21, 22: a device scoped to `awtrix/kitchen` reaches
/// nothing else by wildcard, sibling or `$` topic, on publish, subscribe
/// or will; a rule `#` never reaches `$` topics; odd user names and client
/// ids are refused as accounts and never widen a `%u`/`%c` rule.
#[tokio::test]
async fn a_device_reaches_its_own_topics_and_nothing_by_wildcards_names_or_dollars() {
    let env = Env::start(vec![
        AclRule {
            user: Some("kitchen".into()),
            ..rule("awtrix/kitchen/#", Some(true), Some(true))
        },
        AclRule {
            role: Some(Role::Device),
            ..rule("clients/%c/#", Some(true), Some(true))
        },
        AclRule {
            user: Some("wide".into()),
            ..rule("#", Some(true), Some(true))
        },
    ])
    .await;
    let addr = env.mqtt();
    env.account("kitchen", "device", "kitchen pass").await;
    env.account("wide", "device", "wide pass").await;
    let mut watcher = mqtt_ok(addr, login(V5, "watcher", "admin", ADMIN_PASSWORD)).await;
    assert_eq!(
        subscribe(
            &mut watcher,
            1,
            &[
                "awtrix/#",
                "+/kitchen/#",
                "clients/#",
                "plain/#",
                "$CONTROL/#",
                "$SYS/x"
            ]
        )
        .await,
        vec![ReasonCode::GrantedQoS1; 6]
    );

    // Case 19.
    let mut kitchen = mqtt_ok(addr, login(V5, "k5", "kitchen", "kitchen pass")).await;
    assert_eq!(
        publish_acked(&mut kitchen, 1, "awtrix/kitchen/notify", false, b"ok").await,
        ReasonCode::Success
    );
    assert_eq!(
        next_topic(&mut watcher).await.as_deref(),
        Some("awtrix/kitchen/notify")
    );
    assert_eq!(
        publish_acked(&mut kitchen, 2, "awtrix/kitchen2/x", false, b"no").await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        publish_acked(&mut kitchen, 3, "awtrix/kitchen2/x", true, b"no").await,
        ReasonCode::NotAuthorized
    );
    // Wildcards in a Topic Name (our encoder will not write them: by hand).
    for topic in ["awtrix/#", "awtrix/+/notify", "+/kitchen/x"] {
        let mut sneaky = mqtt_ok(addr, login(V5, "k5w", "kitchen", "kitchen pass")).await;
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&[0x00, 0x07, 0x00]);
        body.extend_from_slice(b"no");
        let mut frame = vec![0x32, body.len() as u8];
        frame.extend_from_slice(&body);
        sneaky.send_bytes(&frame).await;
        match sneaky.recv().await {
            Some(Packet::PubAck(ack)) => assert!(ack.reason_code.is_error(), "{topic}: {ack:?}"),
            Some(Packet::Disconnect(d)) => assert!(d.reason_code.is_error(), "{topic}: {d:?}"),
            None => {}
            other => panic!("{topic}: {other:?}"),
        }
    }
    assert_eq!(
        subscribe(
            &mut kitchen,
            20,
            &["#", "+/#", "awtrix/+", "$SYS/#", "awtrix/kitchen/#"]
        )
        .await,
        vec![
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::GrantedQoS1,
        ]
    );
    let mut k311 = mqtt_ok(addr, login(V311, "k3", "kitchen", "kitchen pass")).await;
    assert_eq!(
        subscribe(
            &mut k311,
            1,
            &["#", "+/#", "awtrix/+", "$SYS/#", "awtrix/kitchen/#"]
        )
        .await,
        vec![
            ReasonCode::UnspecifiedError,
            ReasonCode::UnspecifiedError,
            ReasonCode::UnspecifiedError,
            ReasonCode::UnspecifiedError,
            ReasonCode::GrantedQoS1,
        ],
        "3.1.1 SUBACK 0x80"
    );
    // 3.1.1 cannot refuse a publish: acknowledged, and dropped.
    assert_eq!(
        publish_acked(&mut k311, 2, "awtrix/kitchen2/x", true, b"no").await,
        ReasonCode::Success
    );

    // Case 21: `#` is no `$` rule.
    let mut wide = mqtt_ok(addr, login(V5, "w5", "wide", "wide pass")).await;
    for (i, topic) in ["$CONTROL/x", "$SYS/x"].into_iter().enumerate() {
        assert_eq!(
            publish_acked(&mut wide, 1 + i as u16, topic, false, b"no").await,
            ReasonCode::NotAuthorized,
            "{topic}"
        );
    }
    assert_eq!(
        subscribe(&mut wide, 5, &["$SYS/#", "$CONTROL/#"]).await,
        vec![ReasonCode::NotAuthorized; 2]
    );
    assert_eq!(
        publish_acked(&mut wide, 6, "plain/x", false, b"ok").await,
        ReasonCode::Success
    );
    assert_eq!(next_topic(&mut watcher).await.as_deref(), Some("plain/x"));

    // Case 22: wills outside the scope, or on `$` topics, refuse the CONNECT.
    for (version, refused) in [
        (V311, ReasonCode::NotAuthorized),
        (V5, ReasonCode::NotAuthorized),
    ] {
        let mut connect = login(version, "kw", "kitchen", "kitchen pass");
        connect.will = will("awtrix/other/status");
        assert_eq!(
            connack_code("127.0.0.1", addr, connect).await,
            Some(refused),
            "{version:?}"
        );
        let mut connect = login(version, "ww", "wide", "wide pass");
        connect.will = will("$CONTROL/x");
        assert_eq!(
            connack_code("127.0.0.1", addr, connect).await,
            Some(refused),
            "{version:?}"
        );
        let mut connect = login(version, "aw", "admin", ADMIN_PASSWORD);
        connect.will = will("$SYS/broker/x");
        assert_eq!(
            connack_code("127.0.0.1", addr, connect).await,
            Some(refused),
            "{version:?}"
        );
        let mut connect = login(version, "kw", "kitchen", "kitchen pass");
        connect.will = will("awtrix/kitchen/status");
        let (mut raw, ack) = mqtt_from("127.0.0.1", addr, connect).await;
        assert_eq!(
            ack.map(|a| a.reason_code),
            Some(ReasonCode::Success),
            "{version:?}: a will in scope"
        );
        // Leaving cleanly: no will.
        raw.send(&Packet::Disconnect(Default::default())).await;
        assert!(raw.closed().await.0);
    }

    // Case 20: odd client ids never widen `clients/%c/#`.
    let mut c1 = mqtt_ok(addr, login(V5, "c1", "kitchen", "kitchen pass")).await;
    assert_eq!(
        publish_acked(&mut c1, 1, "clients/c1/x", false, b"ok").await,
        ReasonCode::Success
    );
    assert_eq!(
        next_topic(&mut watcher).await.as_deref(),
        Some("clients/c1/x")
    );
    for id in ["+", "#", "a/b", "$SYS", "..", "%c"] {
        let mut odd = mqtt_ok(addr, login(V5, id, "kitchen", "kitchen pass")).await;
        assert_eq!(
            subscribe(&mut odd, 1, &["clients/#", "clients/+/x"]).await,
            vec![ReasonCode::NotAuthorized; 2],
            "client id {id:?}"
        );
        for (i, topic) in ["clients/x/y", "clients/a/b/x"].into_iter().enumerate() {
            assert_eq!(
                publish_acked(&mut odd, 2 + i as u16, topic, false, b"no").await,
                ReasonCode::NotAuthorized,
                "client id {id:?} on {topic}"
            );
        }
    }
    // Odd user names: no account is made; CONNECT with them is refused.
    let long = "a".repeat(65_000);
    let odd_names = [
        "+",
        "#",
        "a/b",
        "..",
        "%u",
        "$SYS",
        "a\u{0}b",
        long.as_str(),
        "\u{0455}ign",
        "sign:1",
    ];
    for name in odd_names {
        let (status, body) = env
            .call(
                Method::POST,
                "/api/accounts",
                Some(json!({"username": name, "role": "device", "password": "device pass"})),
                &env.admin(),
            )
            .await;
        assert_eq!(status, 400, "{:?}: {body}", &name[..name.len().min(20)]);
    }
    // (A NUL is no MQTT string at all: our encoder will not even write it.)
    for (i, name) in odd_names
        .into_iter()
        .filter(|n| !n.contains('\0'))
        .enumerate()
    {
        let from = format!("127.0.0.{}", 10 + i);
        let code = connack_code(&from, addr, login(V5, "odd", name, "device pass")).await;
        assert_ne!(
            code,
            Some(ReasonCode::Success),
            "{:?}",
            &name[..name.len().min(20)]
        );
    }
    let (_, list) = env
        .call(Method::GET, "/api/accounts", None, &env.admin())
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");

    // Nothing of the refused reached the watcher.
    let extra = deliveries(&mut watcher, QUIET).await;
    assert!(extra.is_empty(), "{extra:?}");
    env.stop().await;
}

/// A durable MQTT 5 session: clean start off, five minutes' expiry.
fn durable(id: &str, username: &str, password: &str) -> Connect {
    let mut connect = login(V5, id, username, password);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(300);
    connect
}

/// Cases 23, 24, 25, 26: a retained message, a shared subscription, a
/// topic alias and a stored session each go through the same read and
/// write decision as a plain subscription or publish.
#[tokio::test]
async fn retained_shared_aliased_and_stored_messages_obey_the_same_rules() {
    let env = Env::start(vec![
        AclRule {
            role: Some(Role::Viewer),
            ..rule("secret/private", None, Some(false))
        },
        AclRule {
            role: Some(Role::Viewer),
            ..rule("vault/#", None, Some(false))
        },
        AclRule {
            user: Some("kitchen".into()),
            ..rule("awtrix/kitchen/#", Some(true), Some(true))
        },
    ])
    .await;
    let addr = env.mqtt();
    env.account("vi", "viewer", "viewer pass").await;
    env.account("kitchen", "device", "kitchen pass").await;
    let mut admin = mqtt_ok(addr, login(V5, "admin", "admin", ADMIN_PASSWORD)).await;

    // Case 23: retained messages at SUBSCRIBE time.
    for topic in ["secret/private", "secret/public"] {
        assert_eq!(
            publish_acked(&mut admin, 1, topic, true, topic.as_bytes()).await,
            ReasonCode::Success
        );
    }
    for version in [V311, V5] {
        let mut vi = mqtt_ok(addr, login(version, "vi", "vi", "viewer pass")).await;
        let codes = subscribe(&mut vi, 1, &["secret/#"]).await;
        assert_eq!(codes, vec![ReasonCode::GrantedQoS1], "{version:?}");
        let got = deliveries(&mut vi, Duration::from_millis(1500)).await;
        let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, vec!["secret/public"], "{version:?}");
    }

    // Case 24: `$share/g/…` is judged as the filter it shares.
    let mut shared = mqtt_ok(addr, login(V5, "vi-shared", "vi", "viewer pass")).await;
    assert_eq!(
        subscribe(
            &mut shared,
            1,
            &["$share/g/vault/#", "vault/#", "$share/g/secret/#"]
        )
        .await,
        vec![
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::GrantedQoS1
        ]
    );
    for (i, topic) in ["vault/a", "secret/private", "secret/public"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            publish_acked(&mut admin, 2 + i as u16, topic, false, b"live").await,
            ReasonCode::Success
        );
    }
    let got = deliveries(&mut shared, Duration::from_millis(1500)).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["secret/public"], "the shared subscription");

    // Case 25: an alias set on an allowed topic, then set again on a denied one.
    let mut watcher = mqtt_ok(addr, login(V5, "watcher", "admin", ADMIN_PASSWORD)).await;
    assert_eq!(
        subscribe(&mut watcher, 1, &["awtrix/#"]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let mut kitchen = mqtt_ok(addr, login(V5, "k", "kitchen", "kitchen pass")).await;
    let aliased = |id: u16, topic: &str| {
        let mut packet = publish(topic, QoS::AtLeastOnce, id, false, b"aliased");
        if let Packet::Publish(p) = &mut packet {
            p.properties = PublishProperties {
                topic_alias: Some(1.try_into().unwrap()),
                ..PublishProperties::default()
            };
        }
        packet
    };
    let mut codes = Vec::new();
    for (id, topic) in [
        (1, "awtrix/kitchen/a"),
        (2, ""),
        (3, "awtrix/other/x"),
        (4, ""),
    ] {
        kitchen.send(&aliased(id, topic)).await;
        match kitchen.recv().await {
            Some(Packet::PubAck(ack)) => codes.push(ack.reason_code),
            other => panic!("{topic:?}: {other:?}"),
        }
    }
    assert_eq!(
        codes,
        vec![
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized
        ]
    );
    let got = deliveries(&mut watcher, QUIET).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["awtrix/kitchen/a", "awtrix/kitchen/a"]);

    // Case 26: two editors' stored sessions, one of them demoted while away.
    env.account("ed", "editor", "editor pass").await;
    env.account("ed2", "editor", "editor pass").await;
    let mut clients = Vec::new();
    for name in ["ed", "ed2"] {
        let mut raw = mqtt_ok(addr, durable(name, name, "editor pass")).await;
        assert_eq!(
            subscribe(&mut raw, 1, &["x/#"]).await,
            vec![ReasonCode::GrantedQoS1]
        );
        clients.push(raw);
    }
    // In flight, never acknowledged.
    assert_eq!(
        publish_acked(&mut admin, 10, "x/1", false, b"one").await,
        ReasonCode::Success
    );
    for raw in &mut clients {
        match raw.recv().await {
            Some(Packet::Publish(p)) => assert_eq!(p.topic, "x/1"),
            other => panic!("{other:?}"),
        }
    }
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Queued while away.
    assert_eq!(
        publish_acked(&mut admin, 11, "x/2", true, b"two").await,
        ReasonCode::Success
    );
    env.change_account("ed", json!({"role": "device"})).await;
    let mut ed2 = Raw::from_tcp(tcp_from("127.0.0.1", addr).await, V5);
    let ack = ed2
        .try_handshake(durable("ed2", "ed2", "editor pass"))
        .await
        .unwrap();
    assert!(
        ack.session_present && ack.reason_code == ReasonCode::Success,
        "{ack:?}"
    );
    let got = deliveries(&mut ed2, Duration::from_millis(1500)).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["x/1", "x/2"], "the control session");
    let mut ed = Raw::from_tcp(tcp_from("127.0.0.1", addr).await, V5);
    let ack = ed
        .try_handshake(durable("ed", "ed", "editor pass"))
        .await
        .unwrap();
    assert!(
        ack.session_present && ack.reason_code == ReasonCode::Success,
        "{ack:?}"
    );
    assert_eq!(
        publish_acked(&mut admin, 12, "x/3", false, b"three").await,
        ReasonCode::Success
    );
    assert_eq!(next_topic(&mut ed2).await.as_deref(), Some("x/3"));
    let got = deliveries(&mut ed, QUIET).await;
    assert!(got.is_empty(), "the demoted session got {got:?}");
    env.stop().await;
}

/// Cases 28, 29, 30, 31: a viewer denied one table gets 403 for it —
/// and for a denied table that does not exist, so existence leaks not —
/// whatever the spelling of the path; the change log, a multiplexed
/// socket and a resumed SSE stream leave out the records it may not read.
#[tokio::test]
async fn a_viewer_denied_a_table_sees_nothing_of_it_by_any_path_or_stream() {
    let env = Env::start(vec![
        AclRule {
            role: Some(Role::Viewer),
            ..rule("vault/#", None, Some(false))
        },
        AclRule {
            role: Some(Role::Viewer),
            ..rule("ghost/#", None, Some(false))
        },
        AclRule {
            role: Some(Role::Viewer),
            ..rule("notes/private", None, Some(false))
        },
    ])
    .await;
    for table in ["vault", "notes"] {
        let (status, body) = env
            .call(
                Method::POST,
                "/api/_tables",
                Some(json!({"name": table})),
                &env.admin(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    env.put("/api/vault/a", json!({"secret": "S3CRET"})).await;
    env.account("vi", "viewer", "viewer pass").await;
    let vi = Who::Browser(env.sign_in("vi", "viewer pass").await);

    // Case 28: 403 for the table, existing or not; 401 for the anonymous alike.
    for path in [
        "/api/vault/",
        "/api/vault",
        "/api/ghost/",
        "/api/vault/a",
        "/api/ghost/a",
    ] {
        let (status, body) = env.call(Method::GET, path, None, &vi).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("forbidden")),
            "{path}"
        );
    }
    for path in ["/api/vault/", "/api/nosuch/", "/api/signs/"] {
        assert_eq!(
            env.call(Method::GET, path, None, &Who::Nobody).await.0,
            401,
            "{path}"
        );
    }
    assert_eq!(
        env.call(Method::GET, "/api/signs/", None, &vi).await.0,
        200,
        "the control"
    );
    env.put("/api/signs/a", json!({"name": "A"})).await;
    let (status, page) = env
        .call(Method::GET, "/api/changes?since=0", None, &vi)
        .await;
    assert_eq!(status, 200);
    let seen: Vec<String> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["table"].as_str().unwrap(),
                c["id"].as_str().unwrap()
            )
        })
        .collect();
    assert!(seen.contains(&"signs/a".to_owned()), "{seen:?}");
    assert!(!seen.iter().any(|t| t.starts_with("vault/")), "{seen:?}");

    // Case 29: other spellings of the same path.
    for path in [
        "/api/vault/%61",
        "/api/vault%2Fa",
        "/api/vault/a/",
        "/api/Vault/a",
        "/api/VAULT/",
        "/api/vault/a%2F",
        "/api/signs/%2e%2e/vault/a",
        "/api/signs/..%2Fvault%2Fa",
        "/api/%2e%2e/api/vault/a",
        "/api/./vault/a",
        "/api//vault/a",
    ] {
        let response = env.request(Method::GET, path, &vi).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            [400, 403, 404, 405].contains(&status) && !body.contains("S3CRET"),
            "{path}: {status} {body}"
        );
        let events = env
            .request(Method::GET, path, &vi)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_ne!(events.status(), 200, "{path} as a stream");
    }
    for path in ["/api/vault/%61", "/api/vault%2Fa", "/api/vault/"] {
        assert_eq!(
            env.call(Method::GET, path, None, &vi).await.0,
            403,
            "{path}"
        );
    }

    // Case 30: allowed and denied filters on one socket.
    let Who::Browser(cookie) = &vi else {
        unreachable!()
    };
    let mut ws = ws_with(
        &env.ws("/api/ws"),
        &[("cookie", cookie), ("origin", env.url())],
    )
    .await
    .unwrap();
    ws.send(json!({"type": "subscribe", "req": "ok", "filter": "signs/#"}))
        .await;
    ws.until_sync().await;
    ws.send(json!({"type": "subscribe", "req": "no", "filter": "vault/#"}))
        .await;
    let mut others = Vec::new();
    let refused = ws.reply("no", &mut others).await;
    assert_eq!(
        (&refused["type"], &refused["error"]["code"]),
        (&json!("error"), &json!("forbidden"))
    );
    ws.send(json!({"type": "subscribe", "req": "all", "filter": "#"}))
        .await;
    let mut state = ws.until_sync().await;
    state.extend(others);
    assert!(
        !state.iter().any(|m| m["table"] == "vault"),
        "the state of `#` showed the vault: {state:?}"
    );
    env.put("/api/vault/b", json!({"secret": "S3CRET"})).await;
    env.put("/api/signs/b", json!({"name": "B"})).await;
    let mut got = Vec::new();
    while let Some(message) = ws.next_within(QUIET).await {
        got.push(message);
    }
    let ids: Vec<String> = got
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["table"].as_str().unwrap_or("?"),
                m["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(ids, vec!["signs/b"], "once, and none from the vault");

    // Case 31: an editor's stream, resumed after it became a viewer.
    env.account("ed", "editor", "editor pass").await;
    let ed = env.sign_in("ed", "editor pass").await;
    let ed_token = env.token(&ed).await;
    let mut sse =
        SseClient::open(env.request(Method::GET, "/api/notes/", &Who::Script(ed_token.clone())))
            .await
            .unwrap();
    let synced = sse.until_sync().await;
    let seq = synced.last().unwrap().id.clone().unwrap();
    drop(sse);
    env.put("/api/notes/private", json!({"text": "S3CRET"}))
        .await;
    env.put("/api/notes/public", json!({"text": "hello"})).await;
    env.change_account("ed", json!({"role": "viewer"})).await;
    let stale = SseClient::open(
        env.request(Method::GET, "/api/notes/", &Who::Script(ed_token))
            .header("last-event-id", &seq),
    )
    .await;
    assert_eq!(
        stale.err().map(|r| r.status().as_u16()),
        Some(401),
        "the old token"
    );
    let viewer = Who::Browser(env.sign_in("ed", "editor pass").await);
    let mut sse = SseClient::open(
        env.request(Method::GET, "/api/notes/", &viewer)
            .header("last-event-id", &seq),
    )
    .await
    .unwrap();
    let replay = sse.until_sync().await;
    let ids: Vec<String> = replay
        .iter()
        .filter(|e| e.kind() == "put")
        .map(|e| e.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec!["public"], "{replay:?}");
    let vault = SseClient::open(
        env.request(Method::GET, "/api/vault/", &viewer)
            .header("last-event-id", &seq),
    )
    .await;
    assert_eq!(vault.err().map(|r| r.status().as_u16()), Some(403));
    env.stop().await;
}

/// Cases 32, 33: a device cannot sign in to the web app; an editor cannot
/// make accounts or change its own; the last admin stays.
#[tokio::test]
async fn devices_and_editors_cannot_reach_account_management() {
    let env = Env::start(Vec::new()).await;
    env.account("sign-1", "device", "device pass").await;
    env.account("ed", "editor", "editor pass").await;
    let response = env.login("sign-1", "device pass").await;
    assert_eq!(response.status(), 403);
    assert!(
        response.headers().get(SET_COOKIE).is_none(),
        "a device got a session"
    );
    assert_eq!(env.login("sign-1", "not the password").await.status(), 401);
    assert_eq!(
        env.call(
            Method::GET,
            "/api/accounts",
            None,
            &Who::Script("device pass".into())
        )
        .await
        .0,
        401
    );

    let ed = Who::Browser(env.sign_in("ed", "editor pass").await);
    for (method, path, body) in [
        (
            Method::POST,
            "/api/accounts",
            json!({"username": "evil", "role": "admin", "password": "evil pass 1"}),
        ),
        (Method::PATCH, "/api/accounts/ed", json!({"role": "admin"})),
        (
            Method::PATCH,
            "/api/accounts/admin",
            json!({"disabled": true}),
        ),
        (
            Method::POST,
            "/api/accounts/admin/password",
            json!({"password": "taken over"}),
        ),
        (Method::POST, "/api/_tables", json!({"name": "mine"})),
    ] {
        let (status, reply) = env.call(method.clone(), path, Some(body), &ed).await;
        assert_eq!(status, 403, "{method} {path}: {reply}");
    }
    for path in [
        "/api/accounts",
        "/api/accounts/admin",
        "/api/audit",
        "/api/tokens?all=true",
    ] {
        let (status, body) = env.call(Method::GET, path, None, &ed).await;
        if path.starts_with("/api/tokens") {
            assert_eq!(
                (status, body["items"].as_array().map(Vec::len)),
                (200, Some(0)),
                "{path}"
            );
        } else {
            assert_eq!(status, 403, "{path}");
        }
    }
    let (_, me) = env.call(Method::GET, "/api/auth/me", None, &ed).await;
    assert_eq!(me["role"], "editor", "the editor changed itself");
    assert_eq!(
        env.login("admin", ADMIN_PASSWORD).await.status(),
        200,
        "the admin was taken over"
    );
    let (status, body) = env
        .call(Method::DELETE, "/api/accounts/admin", None, &env.admin())
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("last_admin"))
    );
    env.stop().await;
}

// ------------------------------------------------------------ browsers

/// Cases 34–40: the session cookie only works from this server's own
/// pages. WebSocket upgrades (`/api/ws`, a record's socket, `/mqtt`) with
/// another site's Origin, another local port's, `null`, or none are 403
/// before any 101; a bearer token needs no Origin. A rebinding Host, a
/// cross-site form, a CORS preflight get nothing; the cookie is HttpOnly,
/// SameSite=Strict, Path=/, and not Secure over plain http.
#[tokio::test]
async fn a_session_cookie_works_only_from_this_servers_own_pages() {
    let env = Env::start(Vec::new()).await;
    env.put("/api/signs/lobby", json!({"name": "Lobby"})).await;
    let cookie = env.admin.clone();
    let port = env.url().rsplit(':').next().unwrap().to_owned();
    let token = env.token(&cookie).await;
    let bearer = format!("Bearer {token}");
    for path in ["/api/ws", "/api/signs/lobby", "/mqtt"] {
        let url = env.ws(path);
        let upgrade = |headers: Vec<(&'static str, String)>| {
            let url = url.clone();
            async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                if path == "/mqtt" {
                    mqtt_ws(&url, &headers).await.map(|_| ())
                } else {
                    ws_with(&url, &headers).await.map(|_| ())
                }
            }
        };
        for origin in [
            Some("http://evil.example".to_owned()),
            Some("http://127.0.0.1:5173".to_owned()),
            Some(format!("http://127.0.0.1:{port}.evil.example")),
            Some(format!("https://127.0.0.1:{port}")),
            Some("null".to_owned()),
            None,
        ] {
            let mut headers = vec![("cookie", cookie.clone())];
            if let Some(origin) = &origin {
                headers.push(("origin", origin.clone()));
            }
            assert_eq!(upgrade(headers).await, Err(403), "{path} from {origin:?}");
        }
        // Case 37: a rebinding name, with its own matching Origin.
        let rebound = vec![
            ("cookie", cookie.clone()),
            ("host", format!("evil.example:{port}")),
            ("origin", format!("http://evil.example:{port}")),
        ];
        assert_eq!(upgrade(rebound).await, Err(403), "{path} rebound");
        // The controls: our own page with the cookie; a script with no Origin.
        for origin in [env.url().to_owned(), format!("http://localhost:{port}")] {
            assert_eq!(
                upgrade(vec![("cookie", cookie.clone()), ("origin", origin.clone())]).await,
                Ok(()),
                "{path} from {origin}"
            );
        }
        assert_eq!(
            upgrade(vec![("authorization", bearer.clone())]).await,
            Ok(()),
            "{path} bearer"
        );
    }

    // Case 37 over REST.
    let response = reqwest::Client::new()
        .put(format!("{}/api/signs/lobby", env.url()))
        .header("host", format!("evil.example:{port}"))
        .header(ORIGIN, format!("http://evil.example:{port}"))
        .header(COOKIE, &cookie)
        .json(&json!({"name": "Rebound"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // Case 38: a cross-site form (text/plain), and one without Origin but
    // marked cross-site by the browser; GET never signs out.
    for path in [
        "/api/signs",
        "/api/signs/lobby/publish",
        "/api/auth/logout",
        "/api/tokens",
    ] {
        for (origin, site) in [
            (Some("http://evil.example"), "cross-site"),
            (None, "cross-site"),
        ] {
            let mut request = reqwest::Client::new()
                .post(format!("{}{path}", env.url()))
                .header(COOKIE, &cookie)
                .header("content-type", "text/plain")
                .header("sec-fetch-site", site)
                .body("name=Hacked");
            if let Some(origin) = origin {
                request = request.header(ORIGIN, origin);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 403, "{path} from {origin:?}");
        }
    }
    let response = env
        .request(Method::GET, "/api/auth/logout", &env.admin())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        env.call(Method::GET, "/api/auth/me", None, &env.admin())
            .await
            .0,
        200,
        "signed out"
    );
    assert_eq!(env.get("/api/signs/lobby").await["name"], "Lobby");

    // Case 39: a preflight from elsewhere learns nothing.
    let response = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/api/signs/lobby", env.url()))
        .header(ORIGIN, "http://evil.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    assert!(
        headers.get("access-control-allow-credentials").is_none(),
        "{headers:?}"
    );
    assert!(
        headers
            .get("access-control-allow-origin")
            .is_none_or(|v| v != "http://evil.example" && v != "*"),
        "{headers:?}"
    );

    // Case 40: over plain http.
    let response = env.login("admin", ADMIN_PASSWORD).await;
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        set.starts_with("marquee_session=") && !set.contains("Secure"),
        "{set}"
    );
    env.stop().await;
}

// ------------------------------------------------------------ the matrix

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Rest,
    Sse,
    Ws,
    Mqtt311,
    Mqtt5,
    Mqtt5Ws,
}

/// What `role` gets on `proto` for `signs/lobby`: (read, write); `None`
/// where the protocol cannot write (SSE).
async fn try_role(
    env: &Env,
    role: &str,
    creds: Option<(&str, &str)>,
    proto: Proto,
) -> (bool, Option<bool>) {
    let value = format!("{proto:?}-{role}");
    let written = || async { env.get("/api/signs/lobby").await["name"] == value.as_str() };
    // Browsers: a session cookie, when the account may have one.
    let who = match creds {
        Some((user, password)) => {
            let response = env.login(user, password).await;
            match response.status().as_u16() {
                200 => Who::Browser(cookie_of(&response)),
                403 => Who::Nobody,
                s => panic!("{role} login: {s}"),
            }
        }
        None => Who::Nobody,
    };
    match proto {
        Proto::Rest => {
            let (status, body) = env.call(Method::GET, "/api/signs/lobby", None, &who).await;
            assert!(
                [200, 401, 403].contains(&status),
                "{role} GET: {status} {body}"
            );
            let read = status == 200 && body["name"].is_string();
            let (status, body) = env
                .call(
                    Method::PUT,
                    "/api/signs/lobby",
                    Some(json!({"name": value})),
                    &who,
                )
                .await;
            assert!(
                [200, 401, 403].contains(&status),
                "{role} PUT: {status} {body}"
            );
            (read, Some(written().await))
        }
        Proto::Sse => {
            let read =
                match SseClient::open(env.request(Method::GET, "/api/signs/lobby", &who)).await {
                    Ok(mut sse) => {
                        let events = sse.until_sync().await;
                        events
                            .iter()
                            .any(|e| e.kind() == "put" && e.json()["id"] == "lobby")
                    }
                    Err(response) => {
                        assert!(
                            [401, 403].contains(&response.status().as_u16()),
                            "{role} SSE"
                        );
                        false
                    }
                };
            (read, None)
        }
        Proto::Ws => {
            let mut headers = vec![("origin", env.url().to_owned())];
            if let Who::Browser(cookie) = &who {
                headers.push(("cookie", cookie.clone()));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let Ok(mut ws) = ws_with(&env.ws("/api/ws"), &headers).await else {
                return (false, Some(written().await));
            };
            ws.send(json!({"type": "subscribe", "req": "r", "filter": "signs/lobby"}))
                .await;
            let got = ws.until_sync().await;
            let read = got.iter().any(|m| m["type"] == "put" && m["id"] == "lobby");
            ws.send(json!({"type": "put", "req": "w", "table": "signs", "id": "lobby", "value": {"name": value}}))
                .await;
            let mut others = Vec::new();
            let reply = ws.reply("w", &mut others).await;
            assert!(
                reply["type"] == "ack" || reply["error"]["code"] == "forbidden",
                "{role}: {reply}"
            );
            (read, Some(written().await))
        }
        Proto::Mqtt311 | Proto::Mqtt5 | Proto::Mqtt5Ws => {
            let version = if proto == Proto::Mqtt311 { V311 } else { V5 };
            let connect = match creds {
                Some((user, password)) => login(version, &format!("m-{role}"), user, password),
                None => connect_packet(version, &format!("m-{role}"), true),
            };
            let (mut raw, ack) = if proto == Proto::Mqtt5Ws {
                let mut raw = mqtt_ws(&env.ws("/mqtt"), &[]).await.unwrap();
                let ack = raw.try_handshake(connect).await;
                (raw, ack)
            } else {
                mqtt_from("127.0.0.1", env.mqtt(), connect).await
            };
            if ack.map(|a| a.reason_code) != Some(ReasonCode::Success) {
                return (false, Some(written().await));
            }
            let codes = subscribe(&mut raw, 1, &["signs/lobby"]).await;
            let got = deliveries(&mut raw, Duration::from_millis(500)).await;
            let read = got.iter().any(|(t, _)| t == "signs/lobby");
            assert_eq!(
                read,
                codes == vec![ReasonCode::GrantedQoS1],
                "{role} {proto:?}: SUBACK {codes:?} but got {got:?}"
            );
            let payload = json!({"name": value}).to_string();
            let code = publish_acked(&mut raw, 2, "signs/lobby", true, payload.as_bytes()).await;
            let written = written().await;
            if version == V5 {
                assert_eq!(
                    written,
                    code == ReasonCode::Success,
                    "{role} {proto:?}: PUBACK {code:?}"
                );
            }
            (read, Some(written))
        }
    }
}

/// Case 18 and the role table (SECURITY.md §7.2) on every protocol: the
/// same record, read and written by an admin, an editor, a viewer, a
/// device no rule grants anything, and the anonymous — over REST, SSE,
/// `/api/ws`, MQTT 3.1.1 and 5 over TCP, and MQTT 5 over `/mqtt`.
#[tokio::test]
async fn every_role_gets_exactly_its_grant_on_every_protocol() {
    let env = Env::start(Vec::new()).await;
    env.account("ed", "editor", "editor pass").await;
    env.account("vi", "viewer", "viewer pass").await;
    env.account("dev", "device", "device pass").await;
    type Row<'a> = (&'a str, Option<(&'a str, &'a str)>, bool, bool);
    let roles: [Row; 5] = [
        ("admin", Some(("admin", ADMIN_PASSWORD)), true, true),
        ("editor", Some(("ed", "editor pass")), true, true),
        ("viewer", Some(("vi", "viewer pass")), true, false),
        ("device", Some(("dev", "device pass")), false, false),
        ("anonymous", None, false, false),
    ];
    let protos = [
        Proto::Rest,
        Proto::Sse,
        Proto::Ws,
        Proto::Mqtt311,
        Proto::Mqtt5,
        Proto::Mqtt5Ws,
    ];
    let mut table = String::from("role       protocol  read(exp)     write(exp)\n");
    let mut wrong = 0;
    for (role, creds, read, write) in roles {
        for proto in protos {
            env.put("/api/signs/lobby", json!({"name": "Lobby"})).await;
            let (got_read, got_write) = try_role(&env, role, creds, proto).await;
            let expected_write = (proto != Proto::Sse).then_some(write);
            let ok = got_read == read && got_write == expected_write;
            wrong += usize::from(!ok);
            let cell = |got: Option<bool>, exp: Option<bool>| match (got, exp) {
                (None, _) => "n/a".to_owned(),
                (Some(g), Some(e)) => format!("{}({})", yes(g), yes(e)),
                (Some(g), None) => format!("{}(n/a)", yes(g)),
            };
            table.push_str(&format!(
                "{role:<10} {:<9} {:<13} {:<13}{}\n",
                format!("{proto:?}"),
                cell(Some(got_read), Some(read)),
                cell(got_write, expected_write),
                if ok { "" } else { "  <-- WRONG" }
            ));
        }
    }
    if wrong > 0 {
        eprintln!("{table}");
    }
    assert_eq!(
        wrong, 0,
        "{wrong} cells differ from the role table:\n{table}"
    );
    env.stop().await;
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

// ------------------------------------------------------------ outside clients

/// `mosquitto_pub`/`mosquitto_sub` with `-u`/`-P`, 3.1.1 and 5: the right
/// password works, a wrong one is refused, an API token works as the
/// password; a rumqttc client alike.
#[tokio::test]
async fn mosquitto_clients_and_rumqttc_sign_in_with_passwords_and_api_tokens() {
    use tokio::process::Command;
    let env = Env::start(Vec::new()).await;
    env.account("vi", "viewer", "viewer pass").await;
    let token = env.token(&env.admin).await;
    let addr = env.mqtt();
    let base = |tool: &str, user: &str, password: &str, version: &str| {
        let mut command = Command::new(tool);
        command
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args([
                "-V",
                version,
                "-u",
                user,
                "-P",
                password,
                "-i",
                &format!("{tool}-{version}"),
            ])
            .kill_on_drop(true);
        command
    };
    for version in ["mqttv311", "mqttv5"] {
        let value = format!("{{\"name\":\"{version}\"}}");
        let output = base("mosquitto_pub", "admin", ADMIN_PASSWORD, version)
            .args(["-t", "signs/lobby", "-r", "-q", "1", "-m", &value])
            .output()
            .await
            .expect("mosquitto_pub (Debian mosquitto-clients)");
        assert!(
            output.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(env.get("/api/signs/lobby").await["name"], version);

        let output = base("mosquitto_sub", "vi", "viewer pass", version)
            .args(["-t", "signs/lobby", "-C", "1", "-W", "5"])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let got: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(got["name"], version);

        let output = base("mosquitto_pub", "vi", "viewer pass", version)
            .args([
                "-t",
                "signs/lobby",
                "-r",
                "-q",
                "1",
                "-m",
                "{\"name\":\"viewer\"}",
            ])
            .output()
            .await
            .unwrap();
        if version == "mqttv5" {
            // mosquitto_pub exits 0 either way; it says what the PUBACK said.
            let said = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(said.contains("not authori"), "a viewer's publish: {said:?}");
        }
        assert_eq!(
            env.get("/api/signs/lobby").await["name"],
            version,
            "a viewer wrote"
        );

        for (user, password) in [
            ("admin", "wrong password"),
            ("nobody", "viewer pass"),
            ("vi", ""),
        ] {
            let output = base("mosquitto_pub", user, password, version)
                .args([
                    "-t",
                    "signs/lobby",
                    "-r",
                    "-q",
                    "1",
                    "-m",
                    "{\"name\":\"intruder\"}",
                ])
                .output()
                .await
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr).to_lowercase();
            assert!(!output.status.success(), "{version} {user}: {said}");
            assert!(
                said.contains("bad user name or password") || said.contains("not authori"),
                "{version} {user}: {said}"
            );
        }
        assert_eq!(env.get("/api/signs/lobby").await["name"], version);

        let value = format!("{{\"name\":\"token-{version}\"}}");
        let output = base("mosquitto_pub", "admin", &token, version)
            .args(["-t", "signs/lobby", "-r", "-q", "1", "-m", &value])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "token {version}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            env.get("/api/signs/lobby").await["name"],
            format!("token-{version}")
        );
        let output = base("mosquitto_pub", "vi", &token, version)
            .args([
                "-t",
                "signs/lobby",
                "-r",
                "-q",
                "1",
                "-m",
                "{\"name\":\"x\"}",
            ])
            .output()
            .await
            .unwrap();
        assert!(
            !output.status.success(),
            "the admin's token under another name"
        );
    }

    // rumqttc (3.1.1) with the token as its password.
    let mut options = rumqttc::MqttOptions::new("rumqttc", "127.0.0.1", addr.port());
    options.set_credentials("admin", token.as_str());
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    client
        .publish(
            "signs/lobby",
            rumqttc::QoS::AtLeastOnce,
            true,
            br#"{"name":"rumqttc"}"#.to_vec(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("rumqttc: {other:?}"),
        }
    }
    assert_eq!(env.get("/api/signs/lobby").await["name"], "rumqttc");
    let mut options = rumqttc::MqttOptions::new("rumqttc-bad", "127.0.0.1", addr.port());
    options.set_credentials("admin", "wrong password");
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 16);
    match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
        Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("rumqttc with a wrong password: {other:?}"),
    }
    env.stop().await;
}

// ------------------------------------------------------------ audit and secrecy

/// A `marquee` child in accounts mode whose log (at debug) goes to `log`.
struct Logged {
    child: tokio::process::Child,
    url: String,
    mqtt: SocketAddr,
}

async fn spawn_logged(data: &std::path::Path, log: &std::path::Path) -> Logged {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .arg("--data-dir")
        .arg(data)
        .args([
            "--auth-mode",
            "accounts",
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
        ])
        .env("MARQUEE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let mqtt = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mqtt://"))
        .and_then(|a| a.trim_end_matches([',', ')']).parse().ok())
        .unwrap();
    Logged { child, url, mqtt }
}

/// Case 46: every failure, throttle and account change is one audit row
/// with its peer and protocol; no password, token or cookie value is in
/// the log (at debug), the audit, `/metrics`, an error body or `$SYS`.
#[tokio::test]
async fn the_audit_has_every_failure_and_nothing_anywhere_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("marquee.log");
    let mut server = spawn_logged(&dir.path().join("data"), &log).await;
    let url = server.url.clone();
    let addr = server.mqtt;
    let http = reqwest::Client::new();
    let mut seen = String::new();
    let mut remember = |text: &str| {
        seen.push_str(text);
        seen.push('\n');
    };

    let response = http
        .post(format!("{url}/api/auth/login"))
        .header(ORIGIN, &url)
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let admin = cookie_of(&response);
    let admin_secret = admin.trim_start_matches("marquee_session=").to_owned();
    let as_admin = |method: Method, path: &str| {
        http.request(method, format!("{url}{path}"))
            .header(COOKIE, &admin)
            .header(ORIGIN, &url)
    };
    let created: Value = as_admin(Method::POST, "/api/accounts")
        .json(&json!({"username": "ed", "role": "editor", "password": "editor pass 46"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    remember(&created.to_string());
    let generated: Value = as_admin(Method::POST, "/api/accounts")
        .json(&json!({"username": "sign-1", "role": "device"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_password = generated["password"].as_str().unwrap().to_owned();
    let made: Value = as_admin(Method::POST, "/api/tokens")
        .json(&json!({"name": "audit script"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    let status = as_admin(Method::PATCH, "/api/accounts/sign-1")
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // Failures: one over HTTP and one over MQTT for the admin from
    // 127.0.0.2; six for ed from 127.0.0.3, then one throttled.
    let wrong = "wrong-sekrit-46";
    let response = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"username": "admin", "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    remember(&response.text().await.unwrap());
    assert_eq!(
        connack_code("127.0.0.2", addr, login(V5, "a", "admin", wrong)).await,
        Some(ReasonCode::BadUserNameOrPassword)
    );
    for _ in 0..6 {
        assert_eq!(
            connack_code("127.0.0.3", addr, login(V5, "e", "ed", wrong)).await,
            Some(ReasonCode::BadUserNameOrPassword)
        );
    }
    assert_eq!(
        connack_code("127.0.0.3", addr, login(V5, "e", "ed", "editor pass 46")).await,
        Some(ReasonCode::ConnectionRateExceeded)
    );
    // Secrets in use, rightly: the token over MQTT and HTTP; bad tokens' errors.
    let mut admin_mqtt = mqtt_ok(addr, login(V5, "admin-sys", "admin", &token)).await;
    assert_eq!(
        subscribe(&mut admin_mqtt, 1, &["$SYS/#"]).await,
        vec![ReasonCode::GrantedQoS1]
    );
    for who in [format!("Bearer {token}x"), format!("Bearer {admin_secret}")] {
        let response = http
            .get(format!("{url}/api/signs/"))
            .header("authorization", who)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        remember(&format!("{:?}", response.headers()));
        remember(&response.text().await.unwrap());
    }
    // `$SYS` goes out every ten seconds: wait for one round.
    let mut sys = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while sys.is_empty() && tokio::time::Instant::now() < deadline {
        sys = deliveries(&mut admin_mqtt, Duration::from_millis(500)).await;
    }
    assert!(!sys.is_empty(), "no $SYS messages to look through");
    for (topic, payload) in &sys {
        remember(&format!("{topic} {payload}"));
    }
    remember(&metrics_text(&http, &url).await);
    let audit: Value = as_admin(Method::GET, "/api/audit?limit=10000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    remember(&audit.to_string());

    let rows = audit["items"].as_array().unwrap();
    let count = |actor: &str, protocol: &str, action: &str, outcome: &str, peer: &str| {
        rows.iter()
            .filter(|r| {
                r["actor"] == actor
                    && r["protocol"] == protocol
                    && r["action"] == action
                    && r["outcome"] == outcome
                    && r["peer"].as_str().is_some_and(|p| p.starts_with(peer))
            })
            .count()
    };
    let table = serde_json::to_string_pretty(rows).unwrap();
    assert_eq!(
        count("admin", "http", "sign_in", "failed", "127.0.0.2:"),
        1,
        "{table}"
    );
    assert_eq!(
        count("admin", "mqtt", "sign_in", "failed", "127.0.0.2:"),
        1,
        "{table}"
    );
    assert_eq!(
        count("ed", "mqtt", "sign_in", "failed", "127.0.0.3:"),
        6,
        "{table}"
    );
    assert_eq!(
        count("ed", "mqtt", "sign_in", "throttled", "127.0.0.3:"),
        1,
        "{table}"
    );
    assert_eq!(
        count("admin", "mqtt", "sign_in", "ok", "127.0.0.1:"),
        1,
        "{table}"
    );
    for (action, target) in [
        ("create_account", "ed"),
        ("create_account", "sign-1"),
        ("update_account", "sign-1"),
        ("create_token", "audit script"),
    ] {
        let n = rows
            .iter()
            .filter(|r| r["action"] == action && r["target"] == target && r["actor"] == "admin")
            .filter(|r| {
                r["protocol"] == "http"
                    && r["peer"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("127.0.0.1:"))
            })
            .count();
        assert_eq!(n, 1, "{action} {target}: {table}");
    }

    server.child.kill().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("audit"),
        "the log has no audit lines at all"
    );
    let secrets = [
        ADMIN_PASSWORD,
        "editor pass 46",
        wrong,
        device_password.as_str(),
        token.as_str(),
        &token[4..],
        admin_secret.as_str(),
        &admin_secret[4..],
    ];
    for secret in secrets {
        for (place, text) in [
            ("the log", logged.as_str()),
            ("an answer, $SYS or /metrics", seen.as_str()),
        ] {
            assert!(
                !text.contains(secret),
                "{place} holds a secret ({} chars)",
                secret.len()
            );
        }
    }
}

/// Case 47: passwords are kept as argon2id with OWASP's parameters; a
/// hash made with other (older) parameters still signs in, and is made
/// anew with today's on that sign-in — without ending anyone's sessions.
#[tokio::test]
async fn password_hashes_are_argon2id_and_old_parameters_are_rehashed_at_sign_in() {
    use argon2::password_hash::PasswordHasher;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("marquee.log");
    let mut server = spawn_logged(&data, &log).await;
    let url = server.url.clone();
    let response = reqwest::Client::new()
        .post(format!("{url}/api/auth/login"))
        .header(ORIGIN, &url)
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.child.kill().await.unwrap();
    server.child.wait().await.unwrap();

    let read_hash = |store: &marquee::store::Store, name: &str| -> Value {
        serde_json::from_slice(&store.account(name).unwrap().unwrap()).unwrap()
    };
    let current = "$argon2id$v=19$m=19456,t=2,p=1$";
    {
        let store = common::open_store(&data);
        let admin = read_hash(&store, "admin");
        let hash = admin["password_hash"].as_str().unwrap();
        assert!(hash.starts_with(current), "{hash}");
        // An account from "an older release": cheaper parameters.
        let old = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"old times pass")
        .unwrap()
        .to_string();
        let mut account = admin.clone();
        account["username"] = json!("old");
        account["role"] = json!("editor");
        account["password_hash"] = json!(old);
        store
            .put_account("old", serde_json::to_vec(&account).unwrap(), true)
            .await
            .unwrap();
        store.shutdown().await;
    }
    let mut server = spawn_logged(&data, &log).await;
    let url = server.url.clone();
    let sign_in = |password: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/api/auth/login"))
                .header(ORIGIN, &url)
                .json(&json!({"username": "old", "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = sign_in("old times pass").await;
    assert_eq!(first.status(), 200, "an old hash no longer verifies");
    let first = cookie_of(&first);
    assert_eq!(
        sign_in("old times pass").await.status(),
        200,
        "after the re-hash"
    );
    let me = reqwest::Client::new()
        .get(format!("{url}/api/auth/me"))
        .header(COOKIE, &first)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "the re-hash ended a session");
    server.child.kill().await.unwrap();
    server.child.wait().await.unwrap();
    let store = common::open_store(&data);
    let old = read_hash(&store, "old");
    let hash = old["password_hash"].as_str().unwrap();
    assert!(
        hash.starts_with(current),
        "not re-hashed at sign-in: {hash}"
    );
    store.shutdown().await;
}
