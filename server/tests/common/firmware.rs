//! Firmware simulators built from DEVICES.md: MQTT clients (rumqttc) that
//! connect, subscribe and publish as AWTRIX 3, WLED, Tasmota and a Marquee
//! device do — the same CONNECT shape (3.1.1, clean session, keep-alive,
//! will), the same topics, the same quirks — and keep what their display
//! would show, so tests assert what a person would see on the device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::render::Frame;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Awtrix3,
    Wled,
    Tasmota,
    Marquee,
}

/// The values of a pairing card.
#[derive(Clone, Debug)]
pub struct Card {
    pub username: String,
    pub password: String,
    pub prefix: String,
}

impl Card {
    pub fn of(pairing: &Value) -> Self {
        Self {
            username: pairing["username"].as_str().unwrap().to_owned(),
            password: pairing["password"].as_str().unwrap_or_default().to_owned(),
            prefix: pairing["prefix"].as_str().unwrap().to_owned(),
        }
    }
}

/// What the device's display holds, as its firmware would have it.
#[derive(Clone, Debug, Default)]
pub struct Display {
    /// AWTRIX: custom apps by name, and the app on screen.
    pub apps: HashMap<String, Value>,
    pub current_app: Option<String>,
    /// AWTRIX `BRI` / WLED `bri` / Tasmota `DisplayDimmer`.
    pub brightness: Option<u64>,
    /// WLED: power, effect, segment name.
    pub on: bool,
    pub effect: Option<u64>,
    pub segment_name: Option<String>,
    pub segment: Option<Value>,
    /// Tasmota: display mode and text.
    pub mode: Option<String>,
    pub text: Option<String>,
    /// Marquee device: the frame last received.
    pub frame: Option<Frame>,
    pub frames: usize,
}

/// One message the device received.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    display: Mutex<Display>,
    received: Mutex<Vec<Received>>,
    suback: Mutex<Vec<Vec<rumqttc::SubscribeReasonCode>>>,
    /// Set when the connection ended, with why.
    ended: Mutex<Option<String>>,
    connected: Mutex<bool>,
    changed: Notify,
}

/// A simulated device, connected (or trying to) to the broker.
pub struct Firmware {
    pub kind: Kind,
    pub prefix: String,
    pub client: AsyncClient,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What each firmware does by default (DEVICES.md §1.1, §2.1, §3.1).
fn default_keep_alive(kind: Kind) -> u64 {
    match kind {
        Kind::Awtrix3 => 15,
        Kind::Wled => 60,
        Kind::Tasmota => 30,
        Kind::Marquee => 15,
    }
}

impl Firmware {
    /// Connects as `kind` with the card's credentials and the firmware's keep-alive.
    pub fn start(kind: Kind, broker: SocketAddr, card: &Card) -> Self {
        Self::start_with(kind, broker, card, default_keep_alive(kind), true)
    }

    /// `with_login` false: the firmware fallback when a field was left empty.
    pub fn start_with(
        kind: Kind,
        broker: SocketAddr,
        card: &Card,
        keep_alive: u64,
        with_login: bool,
    ) -> Self {
        let prefix = card.prefix.clone();
        let client_id = match kind {
            Kind::Awtrix3 => format!("awtrix_{}", &hex_suffix(&prefix)),
            Kind::Wled => format!("WLED-{}", hex_suffix(&prefix)),
            Kind::Tasmota => format!("DVES_{}", hex_suffix(&prefix).to_uppercase()),
            Kind::Marquee => format!("marquee-{}", hex_suffix(&prefix)),
        };
        let mut options = MqttOptions::new(client_id.clone(), "127.0.0.1", broker.port());
        options.set_keep_alive(Duration::from_secs(keep_alive));
        options.set_clean_session(true);
        options.set_max_packet_size(64 * 1024, 64 * 1024);
        if with_login {
            options.set_credentials(card.username.clone(), card.password.clone());
        }
        let will = match kind {
            Kind::Awtrix3 => LastWill::new(
                format!("{prefix}/stats/device"),
                "offline",
                QoS::AtMostOnce,
                false,
            ),
            Kind::Wled => {
                LastWill::new(format!("{prefix}/status"), "offline", QoS::AtMostOnce, true)
            }
            Kind::Tasmota => LastWill::new(
                format!("tele/{prefix}/LWT"),
                "Offline",
                QoS::AtLeastOnce,
                true,
            ),
            Kind::Marquee => LastWill::new(
                format!("{prefix}/status"),
                "offline",
                QoS::AtLeastOnce,
                true,
            ),
        };
        options.set_last_will(will);
        let (client, mut events) = AsyncClient::new(options, 64);
        let shared = Arc::new(Shared::default());
        let task = {
            let shared = shared.clone();
            let client = client.clone();
            let prefix = prefix.clone();
            tokio::spawn(async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            *shared.connected.lock().unwrap() = true;
                            on_connect(kind, &client, &prefix, &client_id).await;
                            shared.changed.notify_waiters();
                        }
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            shared.suback.lock().unwrap().push(ack.return_codes);
                            shared.changed.notify_waiters();
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let received = Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                at: Instant::now(),
                            };
                            {
                                let mut display = shared.display.lock().unwrap();
                                apply(kind, &prefix, &mut display, &received);
                            }
                            if kind == Kind::Tasmota {
                                echo(&client, &prefix, &received).await;
                            }
                            shared.received.lock().unwrap().push(received);
                            shared.changed.notify_waiters();
                        }
                        Ok(Event::Incoming(Packet::Disconnect)) => {
                            *shared.ended.lock().unwrap() = Some("DISCONNECT".into());
                            shared.changed.notify_waiters();
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // Firmwares reconnect; a test wants to see the end instead.
                            *shared.ended.lock().unwrap() = Some(e.to_string());
                            shared.changed.notify_waiters();
                            break;
                        }
                    }
                }
            })
        };
        Self {
            kind,
            prefix,
            client,
            shared,
            task,
        }
    }

    /// Waits until `check` holds for the display, up to `within`; returns
    /// whether it did.
    pub async fn wait_for(&self, within: Duration, check: impl Fn(&Display) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.changed.notified();
            if check(&self.shared.display.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.shared.display.lock().unwrap());
            }
        }
    }

    /// Waits until the device shows `text`; returns whether it did in time.
    pub async fn wait_showing(&self, text: &str, within: Duration) -> bool {
        let kind = self.kind;
        self.wait_for(within, |d| showing(kind, d).as_deref() == Some(text))
            .await
    }

    /// What a person reads on the device now.
    pub fn showing(&self) -> Option<String> {
        showing(self.kind, &self.shared.display.lock().unwrap())
    }

    pub fn display(&self) -> Display {
        self.shared.display.lock().unwrap().clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many messages arrived on `topic`.
    pub fn count(&self, topic: &str) -> usize {
        self.received().iter().filter(|r| r.topic == topic).count()
    }

    pub async fn wait_connected(&self, within: Duration) -> bool {
        let shared = self.shared.clone();
        self.wait_until(within, move || *shared.connected.lock().unwrap())
            .await
    }

    /// Waits for the connection to end; returns why.
    pub async fn wait_ended(&self, within: Duration) -> Option<String> {
        let shared = self.shared.clone();
        self.wait_until(within, move || shared.ended.lock().unwrap().is_some())
            .await;
        self.shared.ended.lock().unwrap().clone()
    }

    /// The SUBACK return codes received so far, in order.
    pub async fn subacks(
        &self,
        at_least: usize,
        within: Duration,
    ) -> Vec<Vec<rumqttc::SubscribeReasonCode>> {
        let shared = self.shared.clone();
        self.wait_until(within, move || {
            shared.suback.lock().unwrap().len() >= at_least
        })
        .await;
        self.shared.suback.lock().unwrap().clone()
    }

    async fn wait_until(&self, within: Duration, check: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.shared.changed.notified();
            if check() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check();
            }
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtMostOnce, retain, payload.into())
            .await
            .unwrap();
    }

    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtMostOnce)
            .await
            .unwrap();
    }

    /// The device loses power: the socket goes without a DISCONNECT.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stable 6-hex-digit id from the prefix, as firmwares use MAC bytes.
fn hex_suffix(prefix: &str) -> String {
    let sum = prefix.bytes().fold(0u32, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u32::from(b))
    });
    format!("{:06x}", sum & 0xff_ffff)
}

/// What each firmware does right after CONNACK.
async fn on_connect(kind: Kind, client: &AsyncClient, prefix: &str, client_id: &str) {
    let sub = |f: String| async move {
        let _ = client.subscribe(f, QoS::AtMostOnce).await;
    };
    let publish = |topic: String, payload: String, retain: bool| async move {
        let _ = client
            .publish(topic, QoS::AtMostOnce, retain, payload)
            .await;
    };
    match kind {
        Kind::Awtrix3 => {
            // One subscription per topic, as `onMqttConnected` does.
            for topic in [
                "custom/#",
                "notify",
                "notify/dismiss",
                "switch",
                "settings",
                "power",
            ] {
                sub(format!("{prefix}/{topic}")).await;
            }
            publish(format!("{prefix}/stats/device"), "online".into(), false).await;
            let stats = json!({"bat":98,"bat_raw":660,"type":0,"lux":12,"ldr_raw":130,"ram":140000,
                "bri":80,"temp":22,"hum":41,"uptime":60,"wifi_signal":-58,"messages":0,
                "version":"0.98","indicator1":false,"indicator2":false,"indicator3":false,
                "app":"Time","uid":client_id,"matrix":true,"ip_address":"192.168.1.50"});
            publish(format!("{prefix}/stats"), stats.to_string(), false).await;
        }
        Kind::Wled => {
            for topic in [
                prefix.to_owned(),
                format!("{prefix}/col"),
                format!("{prefix}/api"),
                "wled/all".into(),
                "wled/all/col".into(),
                "wled/all/api".into(),
            ] {
                sub(topic).await;
            }
            publish(format!("{prefix}/status"), "online".into(), true).await;
            publish(format!("{prefix}/g"), "128".into(), false).await;
            publish(format!("{prefix}/c"), "#FFA000".into(), false).await;
        }
        Kind::Tasmota => {
            sub(format!("cmnd/{prefix}/#")).await;
            sub("cmnd/tasmotas/#".into()).await;
            sub(format!("cmnd/{client_id}_fb/#")).await;
            publish(format!("tele/{prefix}/LWT"), "Online".into(), true).await;
            let info1 = json!({"Info1":{"Module":"Generic","Version":"14.2.0(display)",
                "FallbackTopic":format!("cmnd/{client_id}_fb/"),"GroupTopic":"cmnd/tasmotas/"}});
            publish(format!("tele/{prefix}/INFO1"), info1.to_string(), false).await;
            let info2 = json!({"Info2":{"WebServerMode":"Admin","Hostname":"tasmota-display","IPAddress":"192.168.1.60"}});
            publish(format!("tele/{prefix}/INFO2"), info2.to_string(), false).await;
        }
        Kind::Marquee => {
            sub(format!("{prefix}/frame")).await;
            publish(format!("{prefix}/status"), "online".into(), true).await;
            let hello =
                json!({"width": 64, "height": 16, "color_depth": "rgb", "firmware": "test-sim 1"});
            publish(format!("{prefix}/hello"), hello.to_string(), false).await;
        }
    }
}

/// A command received, applied as the firmware applies it.
fn apply(kind: Kind, prefix: &str, display: &mut Display, received: &Received) {
    let payload = &received.payload;
    let json = || serde_json::from_slice::<Value>(payload).ok();
    match kind {
        Kind::Awtrix3 => {
            let Some(rest) = received.topic.strip_prefix(&format!("{prefix}/")) else {
                return;
            };
            if let Some(app) = rest.strip_prefix("custom/") {
                // Empty or `{}` deletes the app (`parseCustomPage`).
                match json() {
                    Some(Value::Object(o)) if !o.is_empty() => {
                        display.apps.insert(app.to_owned(), Value::Object(o));
                    }
                    _ if payload.is_empty() || payload.as_slice() == b"{}" => {
                        display.apps.remove(app);
                        if display.current_app.as_deref() == Some(app) {
                            display.current_app = Some("Time".into());
                        }
                    }
                    _ => {}
                }
            } else if rest == "switch" {
                if let Some(name) = json().and_then(|v| v["name"].as_str().map(str::to_owned))
                    && (display.apps.contains_key(&name) || name == "Time")
                {
                    display.current_app = Some(name);
                }
            } else if rest == "settings" {
                if let Some(bri) = json().and_then(|v| v["BRI"].as_u64()) {
                    display.brightness = Some(bri);
                }
            } else if rest == "notify" {
                // Dropped unless it starts with `{` and ends with `}`.
                let text = String::from_utf8_lossy(payload);
                if text.trim_start().starts_with('{') && text.trim_end().ends_with('}') {
                    display.current_app = Some("Notification".into());
                }
            }
        }
        Kind::Wled => {
            if received.topic == format!("{prefix}/api")
                && payload.first() == Some(&b'{')
                && let Some(state) = json()
            {
                if let Some(on) = state["on"].as_bool() {
                    display.on = on;
                }
                if let Some(bri) = state["bri"].as_u64() {
                    display.brightness = Some(bri);
                }
                if let Some(seg) = state["seg"].get(0) {
                    if let Some(fx) = seg["fx"].as_u64() {
                        display.effect = Some(fx);
                    }
                    if let Some(n) = seg["n"].as_str() {
                        display.segment_name = Some(n.to_owned());
                    }
                    display.segment = Some(seg.clone());
                }
            }
        }
        Kind::Tasmota => {
            let Some(command) = received.topic.strip_prefix(&format!("cmnd/{prefix}/")) else {
                return;
            };
            let text = String::from_utf8_lossy(payload).into_owned();
            match command {
                "DisplayText" => display.text = Some(text),
                "DisplayMode" => display.mode = Some(text),
                "DisplayDimmer" => display.brightness = text.parse().ok(),
                "DisplayClear" => display.text = Some(String::new()),
                _ => {}
            }
        }
        Kind::Marquee => {
            if received.topic == format!("{prefix}/frame")
                && let Ok((frame, _)) = marquee::devices::frame::decode(payload)
            {
                display.frame = Some(frame);
                display.frames += 1;
            }
        }
    }
}

/// Tasmota answers every command on `stat/<topic>/RESULT`.
async fn echo(client: &AsyncClient, prefix: &str, received: &Received) {
    let Some(command) = received.topic.strip_prefix(&format!("cmnd/{prefix}/")) else {
        return;
    };
    let value = String::from_utf8_lossy(&received.payload).into_owned();
    let result = json!({ command: value });
    let _ = client
        .publish(
            format!("stat/{prefix}/RESULT"),
            QoS::AtMostOnce,
            false,
            result.to_string(),
        )
        .await;
}

/// The text a person reads on the device.
pub fn showing(kind: Kind, display: &Display) -> Option<String> {
    match kind {
        Kind::Awtrix3 => {
            let app = display.apps.get(display.current_app.as_deref()?)?;
            match &app["text"] {
                Value::String(text) => Some(text.clone()),
                Value::Array(fragments) => Some(
                    fragments
                        .iter()
                        .filter_map(|f| f["t"].as_str())
                        .collect::<String>(),
                ),
                _ => None,
            }
        }
        Kind::Wled => (display.on && display.effect == Some(122))
            .then(|| display.segment_name.clone())
            .flatten(),
        Kind::Tasmota => (display.mode.as_deref() == Some("0"))
            .then(|| display.text.clone())
            .flatten()
            .filter(|t| !t.trim().is_empty()),
        Kind::Marquee => None,
    }
}
