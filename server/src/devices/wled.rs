//! WLED on a 2D matrix (DEVICES.md §2): the JSON API on `[D]/api` with the
//! Scrolling Text effect (id 122), whose text is the segment's name. WLED never
//! answers on MQTT; presence is its retained `[D]/status` (LWT `offline`), and
//! its matrix size cannot be read over MQTT, so pairing asks for it.

use app::device::Device;
use app::sign::TextColor;
use serde_json::{Map, Value, json};

use super::adapter::{Heard, Outgoing, Showing, level_255, one_line, text_color};
use crate::auth::Grant;

/// The Scrolling Text effect.
pub const SCROLLING_TEXT: u8 = 122;
/// The segment name holds at most 32 characters on ESP8266 (64 on ESP32);
/// MQTT does not say which chip it is, so the shorter.
pub const MAX_TEXT_CHARS: usize = 32;
/// WLED's default group topic, which every WLED also listens on.
pub const GROUP_TOPIC: &str = "wled/all";

pub fn scope(prefix: &str) -> Vec<Grant> {
    vec![
        Grant::both(format!("{prefix}/#")),
        Grant::read(format!("{GROUP_TOPIC}/#")),
    ]
}

pub fn hear(prefix: &str, topic: &str, payload: &[u8]) -> Vec<Heard> {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Vec::new();
    };
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    match rest {
        "status" if text == "offline" => vec![Heard::Offline],
        "status" => vec![
            Heard::Online,
            Heard::Hello,
            Heard::Details {
                firmware: Some("WLED".into()),
                details: Map::new(),
                size: None,
            },
        ],
        "v" => {
            let mut details = Map::new();
            for (tag, key) in [
                ("ds", "description"),
                ("fx", "effect"),
                ("ac", "brightness"),
            ] {
                if let Some(value) = xml_field(text, tag) {
                    details.insert(key.into(), Value::String(value.to_owned()));
                }
            }
            vec![
                Heard::Online,
                Heard::Details {
                    firmware: Some("WLED".into()),
                    details,
                    size: None,
                },
            ]
        }
        // What is sent to it, Marquee's own `api` included.
        "api" | "col" => Vec::new(),
        _ => vec![Heard::Online],
    }
}

/// `<tag>value</tag>` from WLED's XML state, if short.
fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let rest = xml.get(start..)?;
    let end = rest.find('<')?;
    rest.get(..end).filter(|v| v.len() <= 100)
}

pub fn show(device: &Device, showing: &Showing<'_>) -> Vec<Outgoing> {
    let topic = format!("{}/api", device.prefix);
    let Some(message) = showing.message else {
        return vec![Outgoing::json(topic, &json!({"on": false}))];
    };
    let rgb = |c: app::render::Rgb| json!([c.r, c.g, c.b]);
    let background = rgb(message.background);
    let mut segment = json!({
        "id": 0,
        "fx": SCROLLING_TEXT,
        "n": fit(&one_line(&message.text)),
        // Speed 20 (Marquee's default) is WLED's default 128.
        "sx": (u32::from(message.speed) * 128 / 20).min(255),
    });
    if let Value::Object(fields) = &mut segment {
        let colours = match text_color(showing.sign, message) {
            Some(c) => json!([rgb(c), background]),
            // No rainbow text in WLED: its gradient option, red to blue.
            None if message.color == TextColor::Rainbow => {
                fields.insert("o1".into(), Value::Bool(true));
                json!([[255, 0, 0], background, [0, 0, 255]])
            }
            None => json!([[255, 255, 255], background]),
        };
        fields.insert("col".into(), colours);
    }
    vec![Outgoing::json(
        topic,
        &json!({"on": true, "bri": level_255(showing.sign.brightness), "seg": [segment]}),
    )]
}

/// The text within the segment name's limit, cut visibly.
fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_TEXT_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

pub fn clear(device: &Device) -> Vec<Outgoing> {
    vec![Outgoing::json(
        format!("{}/api", device.prefix),
        &json!({"on": false, "seg": [{"id": 0, "fx": 0, "n": ""}]}),
    )]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use app::sign::{Message, Sign};

    #[test]
    fn long_text_is_cut_visibly_within_the_segment_name() {
        let device = Device {
            prefix: "wled/hall".into(),
            ..Device::default()
        };
        let message = Message {
            text: "x".repeat(40),
            ..Message::default()
        };
        let out = show(
            &device,
            &Showing {
                sign: &Sign::default(),
                message: Some(&message),
                t_ms: 0,
            },
        );
        assert_eq!(out[0].topic, "wled/hall/api");
        let api: Value = serde_json::from_slice(&out[0].payload).unwrap();
        let name = api["seg"][0]["n"].as_str().unwrap();
        assert_eq!(name.chars().count(), 32);
        assert!(name.ends_with("..."));
        assert_eq!(api["seg"][0]["fx"], 122);
        assert_eq!(api["seg"][0]["col"][0], json!([255, 176, 0]));
    }

    #[test]
    fn status_is_presence() {
        assert_eq!(hear("w", "w/status", b"offline"), [Heard::Offline]);
        assert_eq!(hear("w", "w/status", b"online")[0], Heard::Online);
        assert!(hear("w", "w/api", b"{}").is_empty());
    }
}
