//! Marquee's own device protocol, for custom hardware (an ESP32 driving a
//! HUB75 panel, say) and `marquee device-sim`. Under the device's prefix `[P]`:
//!
//! | dir | topic | payload |
//! |---|---|---|
//! | dev → | `[P]/status` | `online` on connect, retained; its will is `offline`, retained |
//! | dev → | `[P]/hello` | `{"width":64,"height":16,"firmware":"…"}` on connect: send me everything |
//! | dev → | `[P]/button` | `next` or `previous`: step the sign's playlist |
//! | → dev | `[P]/frame` | the renderer's exact pixels ([`super::frame`]), only when they change |

use app::device::Device;
use app::render::{Frame, Rgb, render};
use serde_json::Value;

use super::adapter::{Heard, Outgoing, Showing, scalar_details};
use super::frame;
use crate::auth::Grant;

pub fn scope(prefix: &str) -> Vec<Grant> {
    vec![Grant::both(format!("{prefix}/#"))]
}

pub fn frame_topic(prefix: &str) -> String {
    format!("{prefix}/frame")
}

pub fn hear(prefix: &str, topic: &str, payload: &[u8]) -> Vec<Heard> {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Vec::new();
    };
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    match rest {
        "status" if text == "offline" => vec![Heard::Offline],
        "status" => vec![Heard::Online],
        "hello" => match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Object(hello)) => {
                let dimension = |key: &str, max: u16| {
                    hello
                        .get(key)
                        .and_then(Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| (1..=max).contains(n))
                };
                let size = dimension("width", app::device::MAX_DEVICE_WIDTH)
                    .zip(dimension("height", app::device::MAX_DEVICE_HEIGHT));
                let firmware = hello
                    .get("firmware")
                    .and_then(Value::as_str)
                    .filter(|f| f.len() <= 100)
                    .map(str::to_owned);
                vec![
                    Heard::Online,
                    Heard::Hello,
                    Heard::Details {
                        firmware,
                        details: scalar_details(&hello, &["width", "height", "color_depth"]),
                        size,
                    },
                ]
            }
            _ => vec![Heard::Unreadable(format!(
                "{topic}: a hello that is not a JSON object"
            ))],
        },
        "button" if text == "next" => vec![Heard::Online, Heard::Step(1)],
        "button" if text == "previous" => vec![Heard::Online, Heard::Step(-1)],
        "button" => vec![Heard::Unreadable(format!(
            "{topic}: a button is \"next\" or \"previous\""
        ))],
        "frame" => Vec::new(),
        _ => vec![Heard::Online],
    }
}

/// The frame the sign shows now, at the sign's size (the browser's pixels).
pub fn show(device: &Device, showing: &Showing<'_>) -> Vec<Outgoing> {
    let frame = match showing.message {
        Some(message) => render(showing.sign, message, showing.t_ms),
        None => Frame::new(showing.sign.width, showing.sign.height, Rgb::BLACK),
    };
    vec![Outgoing::new(
        frame_topic(&device.prefix),
        frame::encode(&frame, 0),
    )]
}

/// A dark frame of the device's own size.
pub fn clear(device: &Device) -> Vec<Outgoing> {
    let frame = Frame::new(device.width, device.height, Rgb::BLACK);
    vec![Outgoing::new(
        frame_topic(&device.prefix),
        frame::encode(&frame, 0),
    )]
}
