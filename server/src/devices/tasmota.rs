//! Tasmota with a display, MAX7219 dot matrix in mind (DEVICES.md §3):
//! `DisplayMode 0`, then `DisplayText`, `DisplayDimmer` and
//! `DisplayScrollDelay` as commands under the device's FullTopic. Presence is
//! its retained `tele/…/LWT` (`Online`/`Offline`); `INFO1..3` tell module,
//! version, host name and address; commands echo on `stat/…/RESULT`.

use app::device::Device;
use serde_json::{Map, Value};

use super::adapter::{Heard, Outgoing, Showing, one_line};
use crate::auth::Grant;

/// Tasmota's default FullTopic.
pub const DEFAULT_FULL_TOPIC: &str = "%prefix%/%topic%/";
/// The default GroupTopic every Tasmota also listens on.
pub const GROUP_TOPIC: &str = "tasmotas";

/// The topic of `command` (`cmnd`, `stat` or `tele`) for `topic`, ending in `/`.
fn base(full_topic: &str, prefix: &str, topic: &str) -> String {
    let pattern = if full_topic.is_empty() {
        DEFAULT_FULL_TOPIC
    } else {
        full_topic
    };
    let mut out = pattern
        .replace("%prefix%", prefix)
        .replace("%topic%", topic);
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

pub fn scope_for(full_topic: &str, topic: &str) -> Vec<Grant> {
    vec![
        Grant::read(format!("{}#", base(full_topic, "cmnd", topic))),
        Grant::write(format!("{}#", base(full_topic, "stat", topic))),
        Grant::write(format!("{}#", base(full_topic, "tele", topic))),
        Grant::read(format!("{}#", base(full_topic, "cmnd", GROUP_TOPIC))),
    ]
}

pub fn listens_for(full_topic: &str, topic: &str) -> Vec<String> {
    vec![
        format!("{}#", base(full_topic, "stat", topic)),
        format!("{}#", base(full_topic, "tele", topic)),
    ]
}

pub fn hear(device: &Device, topic_name: &str, payload: &[u8]) -> Vec<Heard> {
    let tele = base(&device.full_topic, "tele", &device.prefix);
    let stat = base(&device.full_topic, "stat", &device.prefix);
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    if let Some(rest) = topic_name.strip_prefix(&tele) {
        return match rest {
            "LWT" if text.eq_ignore_ascii_case("offline") => vec![Heard::Offline],
            "LWT" => vec![Heard::Online, Heard::Hello],
            "INFO1" | "INFO2" | "INFO3" => info(rest, payload),
            _ => vec![Heard::Online],
        };
    }
    if topic_name.starts_with(&stat) {
        return vec![Heard::Online];
    }
    Vec::new()
}

/// `INFO1..3`, wrapped (`{"Info1":{…}}`, today's firmware) or not (older).
fn info(which: &str, payload: &[u8]) -> Vec<Heard> {
    let Ok(Value::Object(outer)) = serde_json::from_slice::<Value>(payload) else {
        return vec![Heard::Unreadable(format!("{which}: not a JSON object"))];
    };
    let wrapper = format!("Info{}", which.trim_start_matches("INFO"));
    let fields = match outer.get(&wrapper) {
        Some(Value::Object(inner)) => inner.clone(),
        _ => outer,
    };
    let mut details = Map::new();
    for (from, to) in [
        ("Module", "module"),
        ("Version", "version"),
        ("Hostname", "hostname"),
        ("IPAddress", "ip_address"),
        ("RestartReason", "restart_reason"),
    ] {
        if let Some(Value::String(value)) = fields.get(from)
            && value.len() <= 200
        {
            details.insert(to.into(), Value::String(value.clone()));
        }
    }
    let firmware = fields
        .get("Version")
        .and_then(Value::as_str)
        .filter(|v| v.len() <= 100)
        .map(|v| format!("Tasmota {v}"));
    vec![
        Heard::Online,
        Heard::Details {
            firmware,
            details,
            size: None,
        },
    ]
}

pub fn show(device: &Device, showing: &Showing<'_>) -> Vec<Outgoing> {
    let cmnd = base(&device.full_topic, "cmnd", &device.prefix);
    let text = match showing.message {
        // A space: an empty payload would ask for the current text instead.
        None => " ".to_owned(),
        Some(message) => drawable(&one_line(&message.text)),
    };
    // The text moves one column every max(1, N) × 50 ms.
    let delay = showing
        .message
        .map_or(1, |m| (20 / u32::from(m.speed.max(1))).min(15));
    vec![
        Outgoing::new(format!("{cmnd}DisplayMode"), "0"),
        Outgoing::new(
            format!("{cmnd}DisplayDimmer"),
            showing.sign.brightness.min(100).to_string(),
        ),
        Outgoing::new(format!("{cmnd}DisplayScrollDelay"), delay.to_string()),
        Outgoing::new(format!("{cmnd}DisplayText"), text),
    ]
}

pub fn clear(device: &Device) -> Vec<Outgoing> {
    let cmnd = base(&device.full_topic, "cmnd", &device.prefix);
    vec![Outgoing::new(format!("{cmnd}DisplayClear"), Vec::new())]
}

/// What a MAX7219 matrix can draw: printable ASCII. Accented Latin letters
/// lose their accents; anything else becomes `?`.
fn drawable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c,
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'A',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'È' | 'É' | 'Ê' | 'Ë' => 'E',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'Ì' | 'Í' | 'Î' | 'Ï' => 'I',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => 'O',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'Ù' | 'Ú' | 'Û' | 'Ü' => 'U',
            'ç' => 'c',
            'Ç' => 'C',
            'ñ' => 'n',
            'Ñ' => 'N',
            'ß' => 's',
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            '\u{2013}' | '\u{2014}' => '-',
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use app::sign::{Message, Sign};

    #[test]
    fn text_goes_to_display_text_reduced_to_ascii() {
        let device = Device {
            prefix: "tasmota_x".into(),
            ..Device::default()
        };
        let message = Message {
            text: "Café ☕".into(),
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
        assert_eq!(out[0].topic, "cmnd/tasmota_x/DisplayMode");
        assert_eq!(out[3].topic, "cmnd/tasmota_x/DisplayText");
        assert_eq!(out[3].payload, b"Cafe ?");
    }

    #[test]
    fn info_is_read_wrapped_or_not_and_a_full_topic_moves_everything() {
        let device = Device {
            prefix: "t".into(),
            ..Device::default()
        };
        for payload in [
            br#"{"Info1":{"Module":"Generic","Version":"14.2.0(tasmota)"}}"#.as_slice(),
            br#"{"Module":"Generic","Version":"14.2.0(tasmota)"}"#,
        ] {
            let heard = hear(&device, "tele/t/INFO1", payload);
            assert!(
                matches!(&heard[1], Heard::Details { firmware: Some(f), .. } if f == "Tasmota 14.2.0(tasmota)")
            );
        }
        assert_eq!(hear(&device, "tele/t/LWT", b"Offline"), [Heard::Offline]);
        assert_eq!(scope_for("%topic%/%prefix%/", "t")[0].filter, "t/cmnd/#");
    }
}
