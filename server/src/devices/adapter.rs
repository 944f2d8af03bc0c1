//! What every firmware adapter does, and the one place that picks the adapter
//! for a device's kind. An adapter is pure: it turns what a sign shows into the
//! MQTT messages its firmware understands, and what the firmware sends into
//! what Marquee records about the device. The follower (`follow.rs`) does the
//! sending and the recording.

use std::time::Duration;

use app::device::{Device, DeviceKind};
use app::render::{Rgb, led_color};
use app::sign::{Message, Sign, TextColor};
use serde_json::{Map, Value};

use super::{awtrix, marquee, tasmota, wled};
use crate::auth::Grant;

/// What a device should show now.
#[derive(Clone, Copy, Debug)]
pub struct Showing<'a> {
    pub sign: &'a Sign,
    /// The message on the sign now; `None` when the sign is dark.
    pub message: Option<&'a Message>,
    /// Milliseconds since that message came up.
    pub t_ms: u64,
}

/// One MQTT message to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Sent again whenever a message before it in the same batch is sent
    /// (AWTRIX's `switch` after a new app), not only when it changed.
    pub after_change: bool,
}

impl Outgoing {
    pub fn new(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic,
            payload: payload.into(),
            after_change: false,
        }
    }

    pub fn json(topic: String, value: &Value) -> Self {
        Self::new(topic, value.to_string())
    }
}

/// Something a device said about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Heard {
    Online,
    Offline,
    /// Its firmware, other details, and its matrix size if it says.
    Details {
        firmware: Option<String>,
        details: Map<String, Value>,
        size: Option<(u16, u16)>,
    },
    /// A button asking for the next (`+1`) or previous (`-1`) playlist item.
    Step(i8),
    /// It announced itself afresh (a reboot): send it everything again.
    Hello,
    /// It speaks a dialect Marquee does not drive yet.
    Unsupported(String),
    /// A payload Marquee cannot read.
    Unreadable(String),
}

/// The topics a device account may reach, by its firmware (SECURITY.md §7.3).
pub fn scope(device: &Device) -> Vec<Grant> {
    let prefix = &device.prefix;
    match device.kind {
        DeviceKind::Awtrix3 => awtrix::scope(prefix),
        DeviceKind::Wled => wled::scope(prefix),
        DeviceKind::Tasmota => tasmota::scope_for(&device.full_topic, prefix),
        DeviceKind::Marquee => marquee::scope(prefix),
    }
}

/// The topic filters the follower listens on for what the device sends.
pub fn listens(device: &Device) -> Vec<String> {
    match device.kind {
        DeviceKind::Tasmota => tasmota::listens_for(&device.full_topic, &device.prefix),
        _ => vec![format!("{}/#", device.prefix)],
    }
}

/// What a message from the device on `topic` says.
pub fn hear(device: &Device, topic: &str, payload: &[u8]) -> Vec<Heard> {
    match device.kind {
        DeviceKind::Awtrix3 => awtrix::hear(&device.prefix, topic, payload),
        DeviceKind::Wled => wled::hear(&device.prefix, topic, payload),
        DeviceKind::Tasmota => tasmota::hear(device, topic, payload),
        DeviceKind::Marquee => marquee::hear(&device.prefix, topic, payload),
    }
}

/// The messages that make the device show `showing`.
pub fn show(device: &Device, showing: &Showing<'_>) -> Vec<Outgoing> {
    match device.kind {
        DeviceKind::Awtrix3 => awtrix::show(device, showing),
        DeviceKind::Wled => wled::show(device, showing),
        DeviceKind::Tasmota => tasmota::show(device, showing),
        DeviceKind::Marquee => marquee::show(device, showing),
    }
}

/// The messages that take away what Marquee put on the device.
pub fn clear(device: &Device) -> Vec<Outgoing> {
    match device.kind {
        DeviceKind::Awtrix3 => awtrix::clear(device),
        DeviceKind::Wled => wled::clear(device),
        DeviceKind::Tasmota => tasmota::clear(device),
        DeviceKind::Marquee => marquee::clear(device),
    }
}

/// How often everything is sent again even when nothing changed: AWTRIX drops
/// an app whose `lifetime` passes without an update.
pub fn refresh_every(kind: DeviceKind) -> Option<Duration> {
    match kind {
        DeviceKind::Awtrix3 => Some(awtrix::REFRESH),
        _ => None,
    }
}

/// Whether the device needs frames re-rendered as time passes (it shows pixels,
/// and the message moves).
pub fn animated(device: &Device, showing: &Showing<'_>) -> bool {
    device.kind == DeviceKind::Marquee
        && showing
            .message
            .is_some_and(|m| m.effect != app::sign::Effect::Static || m.color == TextColor::Rainbow)
}

/// The text colour as the sign shows it: a mono sign's LEDs have one colour.
pub fn text_color(sign: &Sign, message: &Message) -> Option<Rgb> {
    match (led_color(sign.color_depth), message.color) {
        (Some(led), _) => Some(led),
        (None, TextColor::Solid(rgb)) => Some(rgb),
        (None, TextColor::Rainbow) => None,
    }
}

/// The text on one line: firmwares show one row.
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A percentage (0–100) as a 0–255 level.
pub fn level_255(percent: u8) -> u8 {
    u8::try_from(u16::from(percent.min(100)) * 255 / 100).unwrap_or(u8::MAX)
}

/// The named fields of a device's report, dropping any that is not a short scalar.
pub fn scalar_details(object: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|key| {
            let value = object.get(*key)?;
            let keep = match value {
                Value::String(s) => s.len() <= 200,
                Value::Number(_) | Value::Bool(_) => true,
                _ => false,
            };
            keep.then(|| ((*key).to_owned(), value.clone()))
        })
        .collect()
}
