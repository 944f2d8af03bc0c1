//! Pairing real signs, as their owners do it: the admin pairs a device over
//! the API, a firmware simulator (tests/common/firmware.rs, built from
//! DEVICES.md) connects with the card's values, the device is bound to a
//! sign, and what people write through REST, WebSockets and playlists
//! reaches the simulated display within a second. Also SECURITY.md §8 cases
//! 42–45: device scopes, regenerated passwords, firmwares falling back to no
//! login, and devices misbehaving without disturbing the others.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::firmware::{Card, Firmware, Kind};
use common::{TestServer, WsClient};
use marquee::access::{Access, Mode};
use reqwest::Method;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ADMIN_PASSWORD: &str = "admin pass 1";
/// "Within a second", plus a little for a loaded test machine.
const SOON: Duration = Duration::from_millis(1500);
const CONNECT: Duration = Duration::from_secs(5);

struct Env {
    server: TestServer,
    cookie: String,
}

impl Env {
    async fn start() -> Self {
        let server = TestServer::start_with(|config| {
            config.access = Access::new(Mode::Accounts, false, Vec::new()).unwrap();
            config.admin_bootstrap = Some(marquee::config::AdminBootstrap {
                username: "admin".into(),
                password: ADMIN_PASSWORD.into(),
            });
        })
        .await;
        let response = reqwest::Client::new()
            .post(format!("{}/api/auth/login", server.url))
            .header(ORIGIN, &server.url)
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let cookie = response.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        Self { server, cookie }
    }

    fn mqtt(&self) -> SocketAddr {
        self.server.mqtt_addr()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.server.url))
            .header(COOKIE, &self.cookie)
            .header(ORIGIN, &self.server.url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) {
        let (status, answer) = self.call(Method::PUT, path, Some(body)).await;
        assert!(
            status == 200 || status == 201,
            "PUT {path}: {status} {answer}"
        );
    }

    async fn patch(&self, path: &str, body: Value) {
        let (status, answer) = self.call(Method::PATCH, path, Some(body)).await;
        assert_eq!(status, 200, "PATCH {path}: {answer}");
    }

    /// Pairs a device; the card as JSON.
    async fn pair(&self, kind: &str, name: &str, extra: Value) -> Value {
        let mut body = json!({"kind": kind, "name": name});
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let (status, card) = self.call(Method::POST, "/api/devices/", Some(body)).await;
        assert_eq!(status, 201, "pairing: {card}");
        card
    }

    async fn device(&self, id: &str) -> Value {
        let (status, device) = self
            .call(Method::GET, &format!("/api/devices/{id}"), None)
            .await;
        assert_eq!(status, 200, "{device}");
        device
    }

    /// Polls the device's record until `check` holds; whether it did in time.
    async fn wait_device(
        &self,
        id: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if check(&self.device(id).await) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Two messages and a sign showing the first.
    async fn sign_with_messages(&self, sign: &str) {
        self.put("/api/messages/hello", json!({"text": "Hello"}))
            .await;
        self.put(
            "/api/messages/world",
            json!({"text": "World", "color": "#00ff00"}),
        )
        .await;
        self.put(
            &format!("/api/signs/{sign}"),
            json!({"name": "Lobby", "width": 32, "height": 8, "color_depth": "rgb",
                   "shows": {"message": "hello"}}),
        )
        .await;
    }

    /// A WebSocket as the web app opens it: the session cookie, from a page of this server.
    async fn ws(&self) -> WsClient {
        let mut request = self.server.ws_url("/api/ws").into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("cookie", self.cookie.parse().unwrap());
        headers.insert("origin", self.server.url.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        WsClient { socket }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn kind_of(kind: &str) -> Kind {
    match kind {
        "awtrix3" => Kind::Awtrix3,
        "wled" => Kind::Wled,
        "tasmota" => Kind::Tasmota,
        _ => Kind::Marquee,
    }
}

/// Pair, connect, bind; then a REST write, a WebSocket write and a playlist
/// step each reach the display within a second; unbinding clears it; the
/// device killed shows offline.
async fn pair_bind_and_mirror(kind: &str, firmware: &str) {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let card = env.pair(kind, "Kitchen", json!({})).await;
    let id = card["id"].as_str().unwrap().to_owned();
    assert_eq!(card["broker_port"], env.mqtt().port());
    assert!(card["password"].as_str().unwrap().len() >= 20);
    // Loopback-only broker: the card says devices cannot reach it, and how to fix it.
    assert!(
        card["broker_warning"]
            .as_str()
            .unwrap()
            .contains("--mqtt 0.0.0.0"),
        "{card}"
    );
    // The password is in the pairing answer only.
    let (_, again) = env
        .call(Method::GET, &format!("/api/devices/{id}/pairing"), None)
        .await;
    assert_eq!(again["username"], card["username"]);
    assert!(again.get("password").is_none(), "{again}");
    assert!(
        !env.device(&id)
            .await
            .to_string()
            .contains(card["password"].as_str().unwrap())
    );

    let sim = Firmware::start(kind_of(kind), env.mqtt(), &Card::of(&card));
    assert!(
        sim.wait_connected(CONNECT).await,
        "{kind} could not connect"
    );
    assert!(
        env.wait_device(&id, SOON, |d| d["online"] == true
            && d["firmware"]
                .as_str()
                .is_some_and(|f| f.starts_with(firmware)))
            .await,
        "{kind}: not online with its firmware: {}",
        env.device(&id).await
    );

    // Bind: it shows the sign's message.
    env.patch(&format!("/api/devices/{id}"), json!({"sign": "lobby"}))
        .await;
    assert!(
        sim.wait_showing("Hello", SOON).await,
        "{kind} after binding: {:?}",
        sim.display()
    );

    // A REST write.
    env.put("/api/messages/hello", json!({"text": "Hello again"}))
        .await;
    assert!(
        sim.wait_showing("Hello again", SOON).await,
        "{kind} after REST: {:?}",
        sim.display()
    );

    // A WebSocket write, as the web app makes it.
    let mut ws = env.ws().await;
    ws.send(
        json!({"type": "put", "req": "w", "table": "messages", "id": "hello",
                   "value": {"text": "From the browser"}}),
    )
    .await;
    let mut others = Vec::new();
    assert_eq!(ws.reply("w", &mut others).await["type"], "ack");
    assert!(
        sim.wait_showing("From the browser", SOON).await,
        "{kind} after WS: {:?}",
        sim.display()
    );

    // A playlist step, made by the server's player after one second.
    env.put(
        "/api/signs/lobby",
        json!({"name": "Lobby", "width": 32, "height": 8, "color_depth": "rgb",
               "shows": {"playlist": [{"message": "hello", "duration": 1}, {"message": "world", "duration": 30}]}}),
    )
    .await;
    assert!(sim.wait_showing("From the browser", SOON).await);
    let stepped = Instant::now();
    assert!(
        sim.wait_showing("World", Duration::from_secs(1) + SOON)
            .await,
        "{kind} after the playlist step: {:?}",
        sim.display()
    );
    assert!(stepped.elapsed() < Duration::from_secs(1) + SOON);

    // Unbind: what Marquee put there goes.
    env.patch(&format!("/api/devices/{id}"), json!({"sign": null}))
        .await;
    assert!(
        sim.wait_for(SOON, |d| sim_cleared(kind_of(kind), d)).await,
        "{kind} after unbinding: {:?}",
        sim.display()
    );
    // And nothing more is sent to it.
    let before = sim.received().len();
    env.put("/api/messages/world", json!({"text": "Not for you"}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sim.received().len(),
        before,
        "{kind} got messages after unbinding"
    );

    // Killed: the broker publishes its will and the device shows offline.
    sim.kill();
    assert!(
        env.wait_device(&id, SOON, |d| d["online"] == false).await,
        "{kind} still online after it went away"
    );
    env.stop().await;
}

/// Whether the display no longer shows anything of Marquee's.
fn sim_cleared(kind: Kind, display: &common::firmware::Display) -> bool {
    match kind {
        Kind::Awtrix3 => !display.apps.contains_key("marquee"),
        Kind::Wled => !display.on && display.segment_name.as_deref() == Some(""),
        Kind::Tasmota => display.text.as_deref() == Some(""),
        Kind::Marquee => display.frame.as_ref().is_some_and(|f| f.lit_count() == 0),
    }
}

#[tokio::test]
async fn an_awtrix_clock_pairs_binds_and_mirrors_its_sign() {
    pair_bind_and_mirror("awtrix3", "AWTRIX 3 0.98").await;
}

#[tokio::test]
async fn a_wled_matrix_pairs_binds_and_mirrors_its_sign() {
    pair_bind_and_mirror("wled", "WLED").await;
}

#[tokio::test]
async fn a_tasmota_display_pairs_binds_and_mirrors_its_sign() {
    pair_bind_and_mirror("tasmota", "Tasmota 14.2.0").await;
}

/// What each firmware gets, beyond the text: AWTRIX a custom app with a
/// lifetime, switched to, and the sign's brightness; WLED the Scrolling Text
/// effect with colour and brightness; Tasmota text mode and dimmer.
#[tokio::test]
async fn each_firmware_gets_its_own_payloads() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    env.patch(
        "/api/signs/lobby",
        json!({"brightness": 50, "shows": {"message": "world"}}),
    )
    .await;
    let mut sims = Vec::new();
    for kind in ["awtrix3", "wled", "tasmota"] {
        let card = env.pair(kind, kind, json!({"sign": "lobby"})).await;
        let sim = Firmware::start(kind_of(kind), env.mqtt(), &Card::of(&card));
        assert!(
            sim.wait_showing("World", CONNECT).await,
            "{kind}: {:?}",
            sim.display()
        );
        sims.push(sim);
    }
    let awtrix = sims[0].display();
    let app = &awtrix.apps["marquee"];
    assert_eq!(app["color"], "#00FF00");
    assert_eq!(app["lifetime"], 120);
    assert_eq!(awtrix.current_app.as_deref(), Some("marquee"));
    assert_eq!(awtrix.brightness, Some(127));
    let wled = sims[1].display();
    assert_eq!(wled.effect, Some(122));
    assert_eq!(wled.brightness, Some(127));
    assert_eq!(wled.segment.as_ref().unwrap()["col"][0], json!([0, 255, 0]));
    let tasmota = sims[2].display();
    assert_eq!(tasmota.mode.as_deref(), Some("0"));
    assert_eq!(tasmota.brightness, Some(50));
    env.stop().await;
}

/// A Marquee device receives the renderer's exact frame for its sign.
#[tokio::test]
async fn a_marquee_device_receives_the_renderers_exact_frames() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let card = env.pair("marquee", "Panel", json!({"sign": "lobby"})).await;
    let id = card["id"].as_str().unwrap().to_owned();
    let sim = Firmware::start(Kind::Marquee, env.mqtt(), &Card::of(&card));
    let sign: app::sign::Sign =
        serde_json::from_value(env.call(Method::GET, "/api/signs/lobby", None).await.1).unwrap();
    let message: app::sign::Message =
        serde_json::from_value(env.call(Method::GET, "/api/messages/hello", None).await.1).unwrap();
    let expected = app::render::render(&sign, &message, 0);
    assert!(expected.lit_count() > 0);
    assert!(
        sim.wait_for(CONNECT, |d| d
            .frame
            .as_ref()
            .is_some_and(|f| f.pixels == expected.pixels))
            .await,
        "the device's frame differs from the renderer's"
    );
    // Its hello told its size and firmware.
    assert!(
        env.wait_device(&id, SOON, |d| d["width"] == 64
            && d["height"] == 16
            && d["firmware"] == "test-sim 1")
            .await
    );
    // A static message is sent once, not at the frame rate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let frames = sim.display().frames;
    assert!(frames <= 2, "{frames} frames for a still message");
    // A scrolling one moves, frame after frame, at most at the frame rate (10/s).
    env.put(
        "/api/messages/hello",
        json!({"text": "Hello", "effect": "scroll_left", "speed": 40}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moving = sim.display().frames - frames;
    assert!(
        (3..=13).contains(&moving),
        "{moving} frames in a second of scrolling"
    );
    env.stop().await;
}

/// SECURITY.md §8 cases 19, 43, 44: a device reaches its own topics only.
#[tokio::test]
async fn a_device_cannot_reach_another_devices_topics() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let a = env.pair("awtrix3", "A", json!({"sign": "lobby"})).await;
    let b = env.pair("awtrix3", "B", json!({"sign": "lobby"})).await;
    let wled = env.pair("wled", "W", json!({})).await;
    let tasmota = env.pair("tasmota", "T", json!({})).await;
    let sim_a = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&a));
    let sim_b = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&b));
    assert!(sim_a.wait_showing("Hello", CONNECT).await);
    assert!(sim_b.wait_showing("Hello", CONNECT).await);
    let pb = Card::of(&b).prefix;

    // A writes into B's topics: refused; B's display is untouched.
    sim_a
        .publish(
            &format!("{pb}/custom/marquee"),
            json!({"text": "Hijacked"}).to_string(),
            false,
        )
        .await;
    sim_a
        .publish(&format!("{pb}/switch"), r#"{"name":"marquee"}"#, false)
        .await;
    // A reads B's topics, everything, or system topics: refused per filter.
    for filter in [
        format!("{pb}/#"),
        "#".into(),
        "+/custom/#".into(),
        "$SYS/#".into(),
    ] {
        sim_a.subscribe(&filter).await;
    }
    let acks = sim_a.subacks(6 + 4, CONNECT).await;
    let refused = acks
        .iter()
        .skip(6)
        .filter(|codes| {
            codes
                .iter()
                .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        })
        .count();
    assert_eq!(refused, 4, "{acks:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim_b.showing().as_deref(), Some("Hello"));
    assert!(
        sim_b
            .received()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.payload).contains("Hijacked"))
    );
    // A's card says what it tried.
    let id_a = a["id"].as_str().unwrap();
    assert!(
        env.wait_device(id_a, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("outside its topics")))
            .await,
        "{}",
        env.device(id_a).await
    );
    // B did nothing wrong.
    assert!(env.device(b["id"].as_str().unwrap()).await["warning"].is_null());

    // WLED: reads its group topic, cannot write it, cannot read another WLED's api.
    let sim_w = Firmware::start(Kind::Wled, env.mqtt(), &Card::of(&wled));
    let acks = sim_w.subacks(6, CONNECT).await;
    assert!(
        acks.iter().all(|codes| codes
            .iter()
            .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure))),
        "WLED's own subscriptions, group topic included: {acks:?}"
    );
    sim_w.subscribe("wled/someone-else/api").await;
    let acks = sim_w.subacks(7, CONNECT).await;
    assert!(matches!(acks[6][0], rumqttc::SubscribeReasonCode::Failure));
    sim_w
        .publish("wled/all/api", r#"{"on":false}"#, false)
        .await;
    let id_w = wled["id"].as_str().unwrap();
    assert!(
        env.wait_device(id_w, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("wled/all/api")))
            .await,
        "{}",
        env.device(id_w).await
    );

    // Tasmota: its own cmnd/ to read, stat/ and tele/ to write; not another's.
    let sim_t = Firmware::start(Kind::Tasmota, env.mqtt(), &Card::of(&tasmota));
    let acks = sim_t.subacks(3, CONNECT).await;
    assert!(
        !matches!(acks[0][0], rumqttc::SubscribeReasonCode::Failure),
        "cmnd/<own>/#"
    );
    assert!(
        !matches!(acks[1][0], rumqttc::SubscribeReasonCode::Failure),
        "cmnd/tasmotas/#"
    );
    assert!(
        matches!(acks[2][0], rumqttc::SubscribeReasonCode::Failure),
        "the fallback topic is not its scope"
    );
    sim_t.publish("stat/other/POWER", "ON", false).await;
    let id_t = tasmota["id"].as_str().unwrap();
    assert!(
        env.wait_device(id_t, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("stat/other/POWER")))
            .await,
        "{}",
        env.device(id_t).await
    );
    // Its own commands are for Marquee to send, not for it.
    let own = format!("cmnd/{}/POWER", Card::of(&tasmota).prefix);
    sim_t.publish(&own, "ON", false).await;
    assert!(
        env.wait_device(id_t, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains(&own)))
            .await,
        "{}",
        env.device(id_t).await
    );
    env.stop().await;
}

/// SECURITY.md §8 case 42: a new password cuts off the old one at once.
#[tokio::test]
async fn regenerating_a_password_cuts_off_the_old_one() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    for kind in ["awtrix3", "wled", "tasmota"] {
        let card = env.pair(kind, kind, json!({"sign": "lobby"})).await;
        let id = card["id"].as_str().unwrap();
        let old = Card::of(&card);
        let sim = Firmware::start(kind_of(kind), env.mqtt(), &old);
        assert!(sim.wait_showing("Hello", CONNECT).await, "{kind}");
        let (status, new_card) = env
            .call(
                Method::POST,
                &format!("/api/devices/{id}/password"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 200, "{new_card}");
        let new = Card::of(&new_card);
        assert_ne!(new.password, old.password);
        // The live session made with the old password ends.
        assert!(
            sim.wait_ended(CONNECT).await.is_some(),
            "{kind}: still connected"
        );
        // The old password no longer gets in; the new one does.
        let stale = Firmware::start(kind_of(kind), env.mqtt(), &old);
        let why = stale.wait_ended(CONNECT).await.unwrap_or_default();
        assert!(
            why.contains("refused") || why.contains("Refused"),
            "{kind}: {why}"
        );
        let fresh = Firmware::start(kind_of(kind), env.mqtt(), &new);
        assert!(
            fresh.wait_showing("Hello", CONNECT).await,
            "{kind} with the new password"
        );
    }
    env.stop().await;
}

/// SECURITY.md §8 case 45: a firmware with an empty field connects without
/// a login; it is refused, and its card says why.
#[tokio::test]
async fn a_device_without_credentials_is_refused_and_its_card_says_so() {
    let env = Env::start().await;
    let card = env.pair("awtrix3", "Clock", json!({})).await;
    let id = card["id"].as_str().unwrap();
    let sim = Firmware::start_with(Kind::Awtrix3, env.mqtt(), &Card::of(&card), 15, false);
    let why = sim.wait_ended(CONNECT).await.unwrap_or_default();
    assert!(why.contains("refused") || why.contains("Refused"), "{why}");
    assert!(
        env.wait_device(id, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("without credentials")))
            .await,
        "{}",
        env.device(id).await
    );
    // With its credentials typed in, it connects and the warning goes.
    let sim = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&card));
    assert!(sim.wait_connected(CONNECT).await);
    assert!(
        env.wait_device(id, SOON, |d| d["warning"].is_null() && d["online"] == true)
            .await
    );
    env.stop().await;
}

/// Garbage and floods from one device are refused or ignored, shown on its
/// card, and do not slow the others.
#[tokio::test]
async fn a_misbehaving_device_does_not_disturb_the_others() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let bad = env.pair("awtrix3", "Bad", json!({"sign": "lobby"})).await;
    let good = env.pair("wled", "Good", json!({"sign": "lobby"})).await;
    let bad_sim = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&bad));
    let good_sim = Firmware::start(Kind::Wled, env.mqtt(), &Card::of(&good));
    assert!(bad_sim.wait_showing("Hello", CONNECT).await);
    assert!(good_sim.wait_showing("Hello", CONNECT).await);
    let prefix = Card::of(&bad).prefix;
    bad_sim
        .publish(
            &format!("{prefix}/stats"),
            b"\xff\x00not json".to_vec(),
            false,
        )
        .await;
    let id = bad["id"].as_str().unwrap();
    assert!(
        env.wait_device(id, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("cannot read")))
            .await
    );
    // A flood: 2,000 stats messages as fast as the client sends them.
    for i in 0..2000 {
        bad_sim
            .publish(
                &format!("{prefix}/stats"),
                format!("{{\"uptime\":{i}}}"),
                false,
            )
            .await;
    }
    env.put("/api/messages/hello", json!({"text": "Still here"}))
        .await;
    assert!(
        good_sim.wait_showing("Still here", SOON).await,
        "{:?}",
        good_sim.display()
    );
    assert!(
        env.wait_device(id, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("in a second")))
            .await,
        "{}",
        env.device(id).await
    );
    env.stop().await;
}

/// Two different devices and a browser on one sign: a playlist step reaches
/// all of them within a second of each other.
#[tokio::test]
async fn a_playlist_step_reaches_every_device_and_the_browser_together() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let awtrix = env.pair("awtrix3", "Clock", json!({"sign": "lobby"})).await;
    let tasmota = env.pair("tasmota", "Board", json!({"sign": "lobby"})).await;
    let a = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&awtrix));
    let t = Firmware::start(Kind::Tasmota, env.mqtt(), &Card::of(&tasmota));
    assert!(a.wait_showing("Hello", CONNECT).await);
    assert!(t.wait_showing("Hello", CONNECT).await);
    let mut browser = env.ws().await;
    browser
        .send(json!({"type": "subscribe", "req": "s", "filter": "signs/lobby"}))
        .await;
    browser.until_sync().await;
    env.put(
        "/api/signs/lobby",
        json!({"name": "Lobby", "width": 32, "height": 8,
               "shows": {"playlist": [{"message": "hello", "duration": 1}, {"message": "world", "duration": 30}]}}),
    )
    .await;
    // The browser learns the step from the sign's record.
    let deadline = Instant::now() + Duration::from_secs(4);
    let browser_at = loop {
        let message = browser
            .next_within(Duration::from_secs(4))
            .await
            .expect("a change");
        if message["value"]["shows"]["position"] == 1 {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the browser never saw the step");
    };
    assert!(a.wait_showing("World", SOON).await);
    assert!(t.wait_showing("World", SOON).await);
    let at = |sim: &Firmware, text: &str| {
        sim.received()
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.payload).contains(text))
            .map(|r| r.at)
            .next()
            .unwrap()
    };
    let times = [browser_at, at(&a, "World"), at(&t, "World")];
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(
        last - first < Duration::from_secs(1),
        "spread {:?} between the browser and the devices",
        last - first
    );
    env.stop().await;
}

/// A device that goes silent (power lost, socket left open) shows offline
/// within 1.5 × its keep-alive, when the broker gives up on it.
#[tokio::test]
async fn a_silent_device_goes_offline_after_its_keep_alive() {
    use common::mqtt::{Raw, connect_packet};
    use marquee::mqtt::{ProtocolVersion, QoS, Will, WillProperties};
    let env = Env::start().await;
    let card = env.pair("wled", "Silent", json!({})).await;
    let id = card["id"].as_str().unwrap();
    let c = Card::of(&card);
    let mut connect = connect_packet(ProtocolVersion::V311, "WLED-silent", true);
    connect.keep_alive = 2;
    connect.username = Some(c.username.clone());
    connect.password = Some(c.password.clone().into_bytes().into());
    connect.will = Some(Will {
        topic: format!("{}/status", c.prefix),
        payload: "offline".into(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    let (mut raw, ack) = Raw::connect(env.mqtt(), connect).await;
    assert_eq!(ack.reason_code, marquee::mqtt::ReasonCode::Success);
    raw.send(&common::mqtt::publish(
        &format!("{}/status", c.prefix),
        QoS::AtMostOnce,
        0,
        true,
        b"online",
    ))
    .await;
    assert!(env.wait_device(id, SOON, |d| d["online"] == true).await);
    let silent = Instant::now();
    assert!(
        env.wait_device(id, Duration::from_secs(5), |d| d["online"] == false)
            .await,
        "still online"
    );
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "offline after {took:?}, before the keep-alive ran out"
    );
    drop(raw);
    env.stop().await;
}

/// Removing a device removes its account: its connection ends, its
/// credentials stop working, and it is cleared first.
#[tokio::test]
async fn removing_a_device_removes_its_account() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let card = env.pair("awtrix3", "Gone", json!({"sign": "lobby"})).await;
    let id = card["id"].as_str().unwrap();
    let sim = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&card));
    assert!(sim.wait_showing("Hello", CONNECT).await);
    let (status, body) = env
        .call(Method::DELETE, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(sim.wait_ended(CONNECT).await.is_some(), "still connected");
    assert!(
        !sim.display().apps.contains_key("marquee"),
        "{:?}",
        sim.display()
    );
    let again = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&card));
    let why = again.wait_ended(CONNECT).await.unwrap_or_default();
    assert!(why.contains("efused"), "{why}");
    let (status, _) = env
        .call(
            Method::GET,
            &format!("/api/accounts/{}", card["username"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 404);
    env.stop().await;
}

/// Pairing is for admins, checks what it is given, and refuses a prefix in use.
#[tokio::test]
async fn pairing_refuses_what_it_cannot_do() {
    let env = Env::start().await;
    let (status, body) = env
        .call(Method::POST, "/api/devices/", Some(json!({"kind": "lamp"})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = env
        .call(
            Method::POST,
            "/api/devices/",
            Some(json!({"kind": "wled", "prefix": "wled/#"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    env.pair("wled", "One", json!({"prefix": "wled/hall"}))
        .await;
    let (status, body) = env
        .call(
            Method::POST,
            "/api/devices/",
            Some(json!({"kind": "wled", "prefix": "wled/hall"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // Nor one inside another device's topics, nor one over a table's records.
    let (status, body) = env
        .call(
            Method::POST,
            "/api/devices/",
            Some(json!({"kind": "wled", "prefix": "wled/hall/x"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = env
        .call(
            Method::POST,
            "/api/devices/",
            Some(json!({"kind": "awtrix3", "prefix": "signs"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // An editor may bind, not pair.
    env.call(
        Method::POST,
        "/api/accounts",
        Some(json!({"username": "ed", "role": "editor", "password": "editor pass 1"})),
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/auth/login", env.server.url))
        .header(ORIGIN, &env.server.url)
        .json(&json!({"username": "ed", "password": "editor pass 1"}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let status = reqwest::Client::new()
        .post(format!("{}/api/devices/", env.server.url))
        .header(COOKIE, &cookie)
        .header(ORIGIN, &env.server.url)
        .json(&json!({"kind": "wled"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    env.stop().await;
}

/// `marquee device-sim` connects with a card's values and holds the frame
/// the renderer makes for its sign.
#[tokio::test]
async fn device_sim_holds_the_renderers_frame() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let card = env.pair("marquee", "Sim", json!({"sign": "lobby"})).await;
    let c = Card::of(&card);
    let dump = env.server.dir.path().join("frame.rgb");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args([
            "device-sim",
            "--broker",
            &format!("127.0.0.1:{}", env.mqtt().port()),
            "--username",
            &c.username,
            "--prefix",
            &c.prefix,
            "--frames",
            "1",
            "--quiet",
            "--dump",
        ])
        .arg(&dump)
        .env("MARQUEE_DEVICE_PASSWORD", &c.password)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("device-sim ends after one frame")
        .unwrap();
    assert!(status.success());
    let sign: app::sign::Sign =
        serde_json::from_value(env.call(Method::GET, "/api/signs/lobby", None).await.1).unwrap();
    let message: app::sign::Message =
        serde_json::from_value(env.call(Method::GET, "/api/messages/hello", None).await.1).unwrap();
    let expected = marquee::device_sim::rgb_bytes(&app::render::render(&sign, &message, 0));
    assert_eq!(std::fs::read(&dump).unwrap(), expected);
    env.stop().await;
}

/// AWTRIX's buttons step the sign's playlist when the device is set to; an
/// AWTRIX NG clock is recognised and sent nothing it would misread.
#[tokio::test]
async fn awtrix_buttons_step_the_playlist_and_awtrix_ng_is_left_alone() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    env.put(
        "/api/signs/lobby",
        json!({"name": "Lobby", "width": 32, "height": 8,
               "shows": {"playlist": [{"message": "hello", "duration": 60}, {"message": "world", "duration": 60}]}}),
    )
    .await;
    let card = env.pair("awtrix3", "Clock", json!({"sign": "lobby"})).await;
    let id = card["id"].as_str().unwrap();
    let sim = Firmware::start(Kind::Awtrix3, env.mqtt(), &Card::of(&card));
    assert!(sim.wait_showing("Hello", CONNECT).await);
    let prefix = Card::of(&card).prefix;
    let press = |button: &'static str| {
        let topic = format!("{prefix}/stats/{button}");
        let sim = &sim;
        async move {
            sim.publish(&topic, "1", false).await;
            sim.publish(&topic, "0", false).await;
        }
    };
    // Not asked to: a press changes nothing.
    press("buttonRight").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sim.showing().as_deref(), Some("Hello"));
    env.patch(
        &format!("/api/devices/{id}"),
        json!({"buttons_step_playlist": true}),
    )
    .await;
    press("buttonRight").await;
    assert!(sim.wait_showing("World", SOON).await, "{:?}", sim.display());
    let (_, sign) = env.call(Method::GET, "/api/signs/lobby", None).await;
    assert_eq!(sign["shows"]["position"], 1);
    press("buttonLeft").await;
    assert!(sim.wait_showing("Hello", SOON).await, "{:?}", sim.display());

    // AWTRIX NG announces itself differently.
    let ng = env
        .pair("awtrix3", "New clock", json!({"sign": "lobby"}))
        .await;
    let ng_card = Card::of(&ng);
    let mut options = rumqttc::MqttOptions::new("awtrix-ng", "127.0.0.1", env.mqtt().port());
    options.set_credentials(ng_card.username.clone(), ng_card.password.clone());
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe(
            format!("{}/custom/#", ng_card.prefix),
            rumqttc::QoS::AtMostOnce,
        )
        .await
        .unwrap();
    client
        .publish(
            format!("{}/availability", ng_card.prefix),
            rumqttc::QoS::AtMostOnce,
            true,
            "online",
        )
        .await
        .unwrap();
    let ng_id = ng["id"].as_str().unwrap().to_owned();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let pump = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = event {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    assert!(
        env.wait_device(&ng_id, SOON, |d| d["warning"]
            .as_str()
            .is_some_and(|w| w.contains("AWTRIX NG")))
            .await,
        "{}",
        env.device(&ng_id).await
    );
    let before = received.load(std::sync::atomic::Ordering::SeqCst);
    env.put("/api/messages/hello", json!({"text": "Not for NG"}))
        .await;
    assert!(sim.wait_showing("Not for NG", SOON).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), before);
    pump.abort();
    env.stop().await;
}

/// A device whose sign is deleted is cleared, as if unbound.
#[tokio::test]
async fn deleting_a_sign_clears_its_devices() {
    let env = Env::start().await;
    env.sign_with_messages("lobby").await;
    let card = env.pair("wled", "Hall", json!({"sign": "lobby"})).await;
    let sim = Firmware::start(Kind::Wled, env.mqtt(), &Card::of(&card));
    assert!(sim.wait_showing("Hello", CONNECT).await);
    let (status, body) = env.call(Method::DELETE, "/api/signs/lobby", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        sim.wait_for(SOON, |d| !d.on && d.segment_name.as_deref() == Some(""))
            .await,
        "{:?}",
        sim.display()
    );
    env.stop().await;
}
