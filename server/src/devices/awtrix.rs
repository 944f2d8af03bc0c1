//! AWTRIX 3 (DEVICES.md §1): Marquee's sign is a custom app named `marquee`
//! (`[P]/custom/marquee`) that Marquee switches to; its `lifetime` makes the
//! clock drop it if Marquee goes away. `[P]/stats` tells the firmware version
//! and uid; `[P]/stats/device` is presence (its LWT is `offline`); the left and
//! right buttons can step the sign's playlist. AWTRIX NG speaks another API
//! (`[P]/state/…`, `[P]/availability`) and is recognised, not driven.

use std::time::Duration;

use app::device::Device;
use app::render::{Frame, render};
use app::sign::{Align, Effect, Sign, TextColor};
use serde_json::{Value, json};

use super::adapter::{Heard, Outgoing, Showing, level_255, one_line, scalar_details, text_color};
use crate::auth::Grant;

/// The custom app's name on the clock.
pub const APP: &str = "marquee";
/// Seconds the clock keeps the app without an update.
pub const LIFETIME_SECS: u64 = 120;
/// Marquee updates the app well within its lifetime.
pub const REFRESH: Duration = Duration::from_secs(LIFETIME_SECS / 2);
/// AWTRIX 3's matrix.
pub const WIDTH: u16 = 32;
pub const HEIGHT: u16 = 8;

pub fn scope(prefix: &str) -> Vec<Grant> {
    vec![Grant::both(format!("{prefix}/#"))]
}

pub fn hear(prefix: &str, topic: &str, payload: &[u8]) -> Vec<Heard> {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Vec::new();
    };
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    match rest {
        "stats" => match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(stats)) => {
                let version = stats.get("version").and_then(Value::as_str);
                let details = scalar_details(
                    &stats,
                    &[
                        "version",
                        "uid",
                        "ip_address",
                        "app",
                        "bat",
                        "wifi_signal",
                        "uptime",
                    ],
                );
                vec![
                    Heard::Online,
                    Heard::Details {
                        firmware: Some(match version {
                            Some(v) => format!("AWTRIX 3 {v}"),
                            None => "AWTRIX 3".into(),
                        }),
                        details,
                        size: Some((WIDTH, HEIGHT)),
                    },
                ]
            }
            _ => vec![Heard::Unreadable(format!(
                "{topic}: stats that are not a JSON object"
            ))],
        },
        "stats/device" if text == "offline" => vec![Heard::Offline],
        "stats/device" => vec![Heard::Online, Heard::Hello],
        "stats/buttonLeft" if text == "1" => vec![Heard::Online, Heard::Step(-1)],
        "stats/buttonRight" if text == "1" => vec![Heard::Online, Heard::Step(1)],
        "availability" | "state/device" => vec![Heard::Unsupported(
            "this is AWTRIX NG, whose API differs from AWTRIX 3; Marquee does not drive it yet"
                .into(),
        )],
        // Messages to the clock (Marquee's own among them) come back on the bus too.
        r if is_command(r) => Vec::new(),
        _ => vec![Heard::Online],
    }
}

/// Topics the clock subscribes to: what anyone sends it, not what it says.
fn is_command(rest: &str) -> bool {
    let first = rest.split('/').next().unwrap_or("");
    matches!(
        first,
        "custom"
            | "notify"
            | "switch"
            | "settings"
            | "power"
            | "apps"
            | "nextapp"
            | "previousapp"
            | "sleep"
            | "moodlight"
            | "indicator1"
            | "indicator2"
            | "indicator3"
            | "sound"
            | "rtttl"
            | "r2d2"
            | "sendscreen"
            | "reboot"
            | "doupdate"
            | "brightness"
            | "cmd"
    )
}

pub fn show(device: &Device, showing: &Showing<'_>) -> Vec<Outgoing> {
    let prefix = &device.prefix;
    let app_topic = format!("{prefix}/custom/{APP}");
    let settings = Outgoing::json(
        format!("{prefix}/settings"),
        &json!({"BRI": level_255(showing.sign.brightness), "ABRI": false}),
    );
    let Some(message) = showing.message else {
        // A dark sign: the app goes, the clock's own apps come back.
        return vec![settings, Outgoing::new(app_topic, Vec::new())];
    };
    let static_text = matches!(message.effect, Effect::Static | Effect::Typewriter);
    let app = if device.exact_pixels && static_text {
        let sign = Sign {
            width: WIDTH,
            height: HEIGHT,
            ..showing.sign.clone()
        };
        pixels_app(&render(&sign, message, u64::MAX / 2), message.duration)
    } else {
        text_app(showing.sign, message)
    };
    let mut switch = Outgoing::json(format!("{prefix}/switch"), &json!({"name": APP}));
    switch.after_change = true;
    vec![settings, Outgoing::json(app_topic, &app), switch]
}

/// The message as AWTRIX draws text: its own font, colour, scrolling.
fn text_app(sign: &Sign, message: &app::sign::Message) -> Value {
    let mut app = json!({
        "text": one_line(&message.text),
        "textCase": 2,
        "duration": message.duration,
        "lifetime": LIFETIME_SECS,
        "center": message.align == Align::Center,
        // Speed 20 (Marquee's default) is AWTRIX's 100 %.
        "scrollSpeed": (u32::from(message.speed) * 5).clamp(10, 1000),
    });
    let Value::Object(fields) = &mut app else {
        return app;
    };
    match text_color(sign, message) {
        Some(rgb) => {
            fields.insert("color".into(), Value::String(rgb.to_hex().to_uppercase()));
        }
        None if message.color == TextColor::Rainbow => {
            fields.insert("rainbow".into(), Value::Bool(true));
        }
        None => {}
    }
    if message.background != app::render::Rgb::BLACK {
        fields.insert(
            "background".into(),
            Value::String(message.background.to_hex().to_uppercase()),
        );
    }
    match message.effect {
        Effect::Static | Effect::Typewriter => {
            fields.insert("noScroll".into(), Value::Bool(true));
        }
        Effect::Blink => {
            fields.insert("noScroll".into(), Value::Bool(true));
            fields.insert(
                "blinkText".into(),
                json!(app::render::blink_half_period_ms(message.speed)),
            );
        }
        Effect::ScrollLeft | Effect::ScrollUp => {}
    }
    app
}

/// Exact pixels: one `db` bitmap of the renderer's frame (DEVICES.md §1.4).
fn pixels_app(frame: &Frame, duration: u32) -> Value {
    let bitmap: Vec<u32> = frame
        .pixels
        .iter()
        .map(|p| (u32::from(p.r) << 16) | (u32::from(p.g) << 8) | u32::from(p.b))
        .collect();
    json!({
        "draw": [{"db": [0, 0, frame.width, frame.height, bitmap]}],
        "duration": duration,
        "lifetime": LIFETIME_SECS,
    })
}

pub fn clear(device: &Device) -> Vec<Outgoing> {
    vec![Outgoing::new(
        format!("{}/custom/{APP}", device.prefix),
        Vec::new(),
    )]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use app::sign::Message;

    #[test]
    fn a_message_becomes_a_custom_app_and_a_switch() {
        let device = Device {
            prefix: "awtrix_k".into(),
            ..Device::default()
        };
        let sign = Sign {
            brightness: 100,
            ..Sign::default()
        };
        let message = Message {
            text: "Hello\nworld".into(),
            ..Message::default()
        };
        let out = show(
            &device,
            &Showing {
                sign: &sign,
                message: Some(&message),
                t_ms: 0,
            },
        );
        let topics: Vec<&str> = out.iter().map(|o| o.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "awtrix_k/settings",
                "awtrix_k/custom/marquee",
                "awtrix_k/switch"
            ]
        );
        let app: Value = serde_json::from_slice(&out[1].payload).unwrap();
        assert_eq!(app["text"], "Hello world");
        assert_eq!(app["color"], "#FFB000");
        assert_eq!(app["lifetime"], 120);
        let settings: Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(settings["BRI"], 255);
    }

    #[test]
    fn exact_pixels_send_the_renderers_frame_as_one_bitmap() {
        let device = Device {
            prefix: "p".into(),
            exact_pixels: true,
            ..Device::default()
        };
        let sign = Sign {
            color_depth: app::sign::ColorDepth::Rgb,
            ..Sign::default()
        };
        let message = Message {
            text: "Hi".into(),
            ..Message::default()
        };
        let out = show(
            &device,
            &Showing {
                sign: &sign,
                message: Some(&message),
                t_ms: 0,
            },
        );
        let app: Value = serde_json::from_slice(&out[1].payload).unwrap();
        let bitmap = &app["draw"][0]["db"];
        assert_eq!(bitmap[2], 32);
        assert_eq!(bitmap[3], 8);
        let small = Sign {
            width: WIDTH,
            height: HEIGHT,
            ..sign
        };
        let frame = render(&small, &message, 0);
        let expected: Vec<u64> = frame
            .pixels
            .iter()
            .map(|p| (u64::from(p.r) << 16) | (u64::from(p.g) << 8) | u64::from(p.b))
            .collect();
        let sent: Vec<u64> = bitmap[4]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(sent, expected);
        assert!(frame.lit_count() > 0);
    }

    #[test]
    fn stats_tell_the_version_and_ng_is_recognised() {
        let heard = hear(
            "p",
            "p/stats",
            br#"{"version":"0.98","uid":"awtrix_a1b2c3","ram":1}"#,
        );
        assert!(
            matches!(&heard[1], Heard::Details { firmware: Some(f), details, .. }
            if f == "AWTRIX 3 0.98" && details["uid"] == "awtrix_a1b2c3" && !details.contains_key("ram"))
        );
        assert!(matches!(
            hear("p", "p/availability", b"online")[0],
            Heard::Unsupported(_)
        ));
        assert!(matches!(
            hear("p", "p/stats", b"garbage")[0],
            Heard::Unreadable(_)
        ));
        assert!(hear("p", "p/custom/marquee", b"{}").is_empty());
        assert_eq!(hear("p", "p/stats/device", b"offline"), [Heard::Offline]);
    }
}
