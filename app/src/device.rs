//! The typed model of the built-in `devices` table: a real sign (an AWTRIX 3 pixel clock, a
//! WLED matrix, a Tasmota display, or custom hardware speaking Marquee's own device
//! protocol) that mirrors one of Marquee's signs over MQTT. Shared by the server (which
//! checks every write with [`Device::from_json`] and drives the device) and the browser
//! (which pairs, binds and watches it).
//!
//! A device, with every default filled in:
//!
//! ```json
//! {"name": "", "kind": "marquee", "username": "", "prefix": "", "full_topic": "", "sign": null,
//!  "width": 32, "height": 8, "buttons_step_playlist": false, "exact_pixels": false,
//!  "online": false, "last_seen": null, "firmware": null, "details": {}, "warning": null}
//! ```
//!
//! `sign` is the one place a binding lives. `online`, `last_seen`, `firmware`, `details`
//! and `warning` are what Marquee saw of the device; it writes them itself, so they
//! arrive live on every protocol like any other change.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sign::{
    ModelError, Named, check_chars, check_id, check_range, choice, int, named_enum, record_id,
    string,
};

pub const MAX_PREFIX_BYTES: usize = 64;
/// A device's matrix is at most this wide and tall (WLED matrices, HUB75 chains).
pub const MAX_DEVICE_WIDTH: u16 = 256;
pub const MAX_DEVICE_HEIGHT: u16 = 64;
pub const MAX_WARNING_CHARS: usize = 500;
pub const MAX_DETAILS_BYTES: usize = 4096;

named_enum! {
    /// The firmware a device runs, which decides the topics and payloads it speaks.
    pub enum DeviceKind default Marquee {
        /// AWTRIX 3 (Ulanzi TC001 and DIY builds): custom apps under `[P]/custom/…`.
        Awtrix3 = "awtrix3",
        /// WLED on a 2D matrix: JSON on `[D]/api` with the Scrolling Text effect.
        Wled = "wled",
        /// Tasmota with a display (MAX7219 dot matrix): `cmnd/[T]/DisplayText`.
        Tasmota = "tasmota",
        /// Marquee's own protocol: the device receives the renderer's exact frames.
        Marquee = "marquee",
    }
}

impl Named for DeviceKind {
    fn lookup(name: &str) -> Option<Self> {
        DeviceKind::from_name(name)
    }
    fn names() -> &'static [&'static str] {
        DeviceKind::NAMES
    }
}

impl DeviceKind {
    /// The firmware's own name, as its owner knows it.
    pub fn label(self) -> &'static str {
        match self {
            DeviceKind::Awtrix3 => "AWTRIX 3",
            DeviceKind::Wled => "WLED",
            DeviceKind::Tasmota => "Tasmota display",
            DeviceKind::Marquee => "Marquee device",
        }
    }

    /// The matrix size a device of this kind has unless told otherwise.
    pub fn default_size(self) -> (u16, u16) {
        match self {
            // AWTRIX 3 is always 32×8; a MAX7219 board is four 8×8 modules.
            DeviceKind::Awtrix3 | DeviceKind::Tasmota | DeviceKind::Wled => (32, 8),
            DeviceKind::Marquee => (64, 16),
        }
    }

    /// The topic prefix Marquee gives a new device of this kind, in the shape its firmware
    /// uses by default (`awtrix_…`, `wled/…`, a Tasmota Topic, `marquee/…`).
    pub fn default_prefix(self, id: &str) -> String {
        let slug: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        match self {
            DeviceKind::Awtrix3 => format!("awtrix_{slug}"),
            DeviceKind::Wled => format!("wled/{slug}"),
            DeviceKind::Tasmota => format!("tasmota_{slug}"),
            DeviceKind::Marquee => format!("marquee/{slug}"),
        }
    }
}

/// A device (`devices/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Device {
    pub name: String,
    pub kind: DeviceKind,
    /// Its MQTT user name, made at pairing; empty for a device entered by hand.
    pub username: String,
    /// Where its topics live: AWTRIX "Prefix", WLED "Device Topic", Tasmota "Topic",
    /// or a Marquee device's prefix.
    pub prefix: String,
    /// Tasmota's FullTopic, when not its default `%prefix%/%topic%/`.
    pub full_topic: String,
    /// The sign it mirrors.
    pub sign: Option<String>,
    /// Its matrix in LEDs.
    pub width: u16,
    pub height: u16,
    /// AWTRIX: its buttons (left, right) step the sign's playlist.
    pub buttons_step_playlist: bool,
    /// AWTRIX: static messages are sent as the renderer's exact pixels (`draw` bitmap)
    /// instead of as text in the clock's own font.
    pub exact_pixels: bool,
    pub online: bool,
    /// When a message from it last arrived (RFC 3339).
    pub last_seen: Option<String>,
    /// The firmware and version it reported, e.g. `AWTRIX 3 0.98`.
    pub firmware: Option<String>,
    /// What else it reported (uid, IP address, …), as it reported it.
    pub details: Map<String, Value>,
    /// Why it needs attention: it connected without credentials, reached outside its
    /// topics, sent payloads Marquee cannot read, or runs a firmware not supported yet.
    pub warning: Option<String>,
}

impl Default for Device {
    fn default() -> Self {
        let kind = DeviceKind::default();
        let (width, height) = kind.default_size();
        Device {
            name: String::new(),
            kind,
            username: String::new(),
            prefix: String::new(),
            full_topic: String::new(),
            sign: None,
            width,
            height,
            buttons_step_playlist: false,
            exact_pixels: false,
            online: false,
            last_seen: None,
            firmware: None,
            details: Map::new(),
            warning: None,
        }
    }
}

const DEVICE_FIELDS: &[&str] = &[
    "name",
    "kind",
    "username",
    "prefix",
    "full_topic",
    "sign",
    "width",
    "height",
    "buttons_step_playlist",
    "exact_pixels",
    "online",
    "last_seen",
    "firmware",
    "details",
    "warning",
];

impl Device {
    /// Reads and checks a `devices` record: the entry point for anything from the network.
    pub fn from_json(value: &Value) -> Result<Device, ModelError> {
        let object = value.as_object().ok_or(ModelError::NotAnObject)?;
        let mut device = Device::default();
        if let Some(kind) = object.get("kind") {
            device.kind = choice("kind", kind)?;
            (device.width, device.height) = device.kind.default_size();
        }
        for (key, value) in object {
            match key.as_str() {
                "kind" => {}
                "name" => device.name = string("name", value)?,
                "username" => device.username = string("username", value)?,
                "prefix" => device.prefix = string("prefix", value)?,
                "full_topic" => device.full_topic = string("full_topic", value)?,
                "sign" => device.sign = optional(value, |v| record_id("sign", v))?,
                "width" => device.width = int("width", value, 1, MAX_DEVICE_WIDTH)?,
                "height" => device.height = int("height", value, 1, MAX_DEVICE_HEIGHT)?,
                "buttons_step_playlist" => {
                    device.buttons_step_playlist = boolean("buttons_step_playlist", value)?;
                }
                "exact_pixels" => device.exact_pixels = boolean("exact_pixels", value)?,
                "online" => device.online = boolean("online", value)?,
                "last_seen" => device.last_seen = optional(value, |v| string("last_seen", v))?,
                "firmware" => device.firmware = optional(value, |v| string("firmware", v))?,
                "details" => {
                    device.details = value
                        .as_object()
                        .cloned()
                        .ok_or_else(|| ModelError::field("details", "must be an object"))?;
                }
                "warning" => device.warning = optional(value, |v| string("warning", v))?,
                _ => return Err(ModelError::unknown(key, DEVICE_FIELDS)),
            }
        }
        device.validate()?;
        Ok(device)
    }

    /// The record as stored and sent: every field present, defaults filled in.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Range checks on a device built in code or through serde.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_chars("name", &self.name, crate::sign::MAX_NAME_CHARS)?;
        check_chars("username", &self.username, 64)?;
        check_prefix(&self.prefix).map_err(|reason| ModelError::field("prefix", reason))?;
        check_full_topic(&self.full_topic)
            .map_err(|reason| ModelError::field("full_topic", reason))?;
        if let Some(sign) = &self.sign {
            check_id("sign", sign)?;
        }
        check_range("width", self.width, 1, MAX_DEVICE_WIDTH)?;
        check_range("height", self.height, 1, MAX_DEVICE_HEIGHT)?;
        if let Some(warning) = &self.warning {
            check_chars("warning", warning, MAX_WARNING_CHARS)?;
        }
        for (field, text) in [("last_seen", &self.last_seen), ("firmware", &self.firmware)] {
            if let Some(text) = text {
                check_chars(field, text, crate::sign::MAX_NAME_CHARS)?;
            }
        }
        let details = serde_json::to_string(&self.details).map_or(0, |s| s.len());
        if details > MAX_DETAILS_BYTES {
            return Err(ModelError::field(
                "details",
                format!("must be at most {MAX_DETAILS_BYTES} bytes of JSON"),
            ));
        }
        Ok(())
    }
}

/// A topic prefix: MQTT topic levels without wildcards, `$` or empty levels, so that
/// `{prefix}/#` is exactly this device's topics.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = prefix.len() > MAX_PREFIX_BYTES
        || prefix.starts_with('$')
        || prefix
            .split('/')
            .any(|level| level.is_empty() || level.contains(['+', '#']))
        || prefix.chars().any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(format!(
            "must be 1–{MAX_PREFIX_BYTES} bytes of topic levels separated by '/', without \
             spaces, '+', '#', a leading '$' or empty levels"
        ));
    }
    Ok(())
}

/// A Tasmota FullTopic: empty (the default), or a pattern naming `%prefix%`
/// and `%topic%`, without wildcards.
pub fn check_full_topic(pattern: &str) -> Result<(), String> {
    let ok = pattern.is_empty()
        || (pattern.len() <= MAX_PREFIX_BYTES
            && pattern.contains("%prefix%")
            && pattern.contains("%topic%")
            && !pattern.contains(['+', '#', '$'])
            && !pattern.chars().any(|c| c.is_control() || c.is_whitespace())
            && !pattern
                .replace("%prefix%", "p")
                .replace("%topic%", "t")
                .contains('%'));
    if ok {
        Ok(())
    } else {
        Err(
            "must name %prefix% and %topic% (Tasmota's default is %prefix%/%topic%/), \
             without '+', '#', '$', spaces or other % tokens"
                .into(),
        )
    }
}

/// What pairing answers, once: everything the device's own settings page asks for.
/// `password` is only ever in the answer to a pairing or a password regeneration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pairing {
    pub id: String,
    pub kind: DeviceKind,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub prefix: String,
    /// An address a device on the network can reach the broker at.
    pub broker_host: String,
    pub broker_port: u16,
    /// Every address this machine could be reached at, best first.
    pub broker_hosts: Vec<String>,
    /// Set when no device elsewhere on the network can reach the broker: why, and the fix.
    pub broker_warning: Option<String>,
}

impl Pairing {
    /// The fields of the firmware's own settings page, named as it names them, in its order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let password = self
            .password
            .clone()
            .unwrap_or_else(|| "(shown once; regenerate to see a new one)".into());
        let port = self.broker_port.to_string();
        match self.kind {
            DeviceKind::Awtrix3 => vec![
                ("Broker", self.broker_host.clone()),
                ("Port", port),
                ("Username", self.username.clone()),
                ("Password", password),
                ("Prefix", self.prefix.clone()),
            ],
            DeviceKind::Wled => vec![
                ("Broker", self.broker_host.clone()),
                ("Port", port),
                ("Username", self.username.clone()),
                ("Password", password),
                ("Device Topic", self.prefix.clone()),
            ],
            DeviceKind::Tasmota => vec![
                ("Host", self.broker_host.clone()),
                ("Port", port),
                ("User", self.username.clone()),
                ("Password", password),
                ("Topic", self.prefix.clone()),
            ],
            DeviceKind::Marquee => vec![
                ("Broker", self.broker_host.clone()),
                ("Port", port),
                ("Username", self.username.clone()),
                ("Password", password),
                ("Prefix", self.prefix.clone()),
            ],
        }
    }
}

fn optional<T>(
    value: &Value,
    read: impl FnOnce(&Value) -> Result<T, ModelError>,
) -> Result<Option<T>, ModelError> {
    match value {
        Value::Null => Ok(None),
        value => read(value).map(Some),
    }
}

fn boolean(path: &str, value: &Value) -> Result<bool, ModelError> {
    value
        .as_bool()
        .ok_or_else(|| ModelError::field(path, "must be true or false"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_device_needs_nothing_and_takes_its_kinds_size() {
        let device = Device::from_json(&json!({"kind": "awtrix3", "name": "Kitchen"})).unwrap();
        assert_eq!((device.width, device.height), (32, 8));
        assert_eq!(device.sign, None);
        let marquee = Device::from_json(&json!({})).unwrap();
        assert_eq!((marquee.width, marquee.height), (64, 16));
        let round = Device::from_json(&device.to_json()).unwrap();
        assert_eq!(round, device);
    }

    #[test]
    fn bad_devices_are_refused_naming_the_field() {
        let reason = |v: Value| Device::from_json(&v).unwrap_err().to_string();
        assert!(reason(json!({"kind": "lamp"})).starts_with("kind: must be one of"));
        assert!(reason(json!({"prefix": "a/+/b"})).starts_with("prefix:"));
        assert!(reason(json!({"prefix": "$SYS"})).starts_with("prefix:"));
        assert!(reason(json!({"prefix": "a//b"})).starts_with("prefix:"));
        assert!(reason(json!({"sign": "a/b"})).starts_with("sign:"));
        assert!(reason(json!({"width": 0})).starts_with("width:"));
        assert!(reason(json!({"colour": 1})).starts_with("colour: unknown field"));
        assert!(Device::from_json(&json!({"sign": null})).is_ok());
    }

    #[test]
    fn each_firmware_gets_its_own_field_names() {
        let mut pairing = Pairing {
            kind: DeviceKind::Tasmota,
            password: Some("pw".into()),
            ..Pairing::default()
        };
        let names = |p: &Pairing| p.fields().iter().map(|(n, _)| *n).collect::<Vec<_>>();
        assert_eq!(
            names(&pairing),
            ["Host", "Port", "User", "Password", "Topic"]
        );
        pairing.kind = DeviceKind::Wled;
        assert_eq!(names(&pairing).last(), Some(&"Device Topic"));
        pairing.kind = DeviceKind::Awtrix3;
        assert_eq!(names(&pairing).last(), Some(&"Prefix"));
    }

    #[test]
    fn default_prefixes_look_like_the_firmwares_own() {
        assert_eq!(
            DeviceKind::Awtrix3.default_prefix("Kitchen 1"),
            "awtrix_kitchen_1"
        );
        assert_eq!(DeviceKind::Wled.default_prefix("hall"), "wled/hall");
        assert!(check_prefix(&DeviceKind::Marquee.default_prefix("x/y")).is_ok());
    }
}
