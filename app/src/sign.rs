//! The typed models of the built-in `signs` and `messages` tables, shared by the server
//! (which checks every write with [`Sign::from_json`] / [`Message::from_json`]) and the
//! browser (which edits them and renders them).
//!
//! Every field is snake_case and optional (a missing field takes its default), and an
//! unknown field is an error, so `{"name":"Lobby"}` is a whole sign and `{"nmae":"Lobby"}`
//! is rejected instead of silently ignored.
//!
//! A sign, with every default filled in:
//!
//! ```json
//! {"name": "", "width": 64, "height": 16, "color_depth": "mono_amber", "brightness": 80,
//!  "shows": null}
//! ```
//!
//! `shows` is one of
//! - `null` (or `{}`): nothing, the sign is dark;
//! - `{"message": "welcome"}`: one message, by its id in `messages`;
//! - `{"playlist": [{"message": "welcome", "duration": 15}, {"message": "menu"}],
//!   "position": 0}`: messages in turn; `duration` (seconds) overrides the message's own and
//!   may be left out; `position` (default 0) is the index of the item on the sign now.
//!
//! A message, with every default filled in:
//!
//! ```json
//! {"text": "", "color": "#ffb000", "background": "#000000", "effect": "static",
//!  "speed": 20, "duration": 10, "align": "center", "font": "small"}
//! ```
//!
//! `color` is `"#rrggbb"` or `"rainbow"`; `background` is `"#rrggbb"`.

// Input comes from the network: no indexing, unwrapping or panicking on it.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::render::Rgb;

pub const MIN_WIDTH: u16 = 1;
pub const MAX_WIDTH: u16 = 256;
pub const DEFAULT_WIDTH: u16 = 64;
pub const MIN_HEIGHT: u16 = 1;
pub const MAX_HEIGHT: u16 = 64;
pub const DEFAULT_HEIGHT: u16 = 16;
pub const MAX_BRIGHTNESS: u8 = 100;
pub const DEFAULT_BRIGHTNESS: u8 = 80;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_PLAYLIST_ITEMS: usize = 1000;
pub const MAX_TEXT_CHARS: usize = 1000;
/// LED columns per second (rows per second when scrolling up).
pub const MIN_SPEED: u16 = 1;
pub const MAX_SPEED: u16 = 500;
pub const DEFAULT_SPEED: u16 = 20;
/// Seconds.
pub const MIN_DURATION: u32 = 1;
pub const MAX_DURATION: u32 = 86_400;
pub const DEFAULT_DURATION: u32 = 10;
/// Amber, the colour a classic marquee sign is expected to have.
pub const DEFAULT_COLOR: Rgb = Rgb::new(0xff, 0xb0, 0x00);
/// Record ids are limited like the store's: 1 to this many bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why a sign or message was rejected: which field, and why, in words for a person.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("must be a JSON object")]
    NotAnObject,
    /// `field` is a path such as `width`, `shows.playlist[2].duration` or `shows.message`.
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl ModelError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> ModelError {
        ModelError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unknown(path: &str, expected: &[&str]) -> ModelError {
        ModelError::field(
            path,
            format!("unknown field (expected one of: {})", expected.join(", ")),
        )
    }

    /// The offending field's path, if the error is about one field.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            ModelError::NotAnObject => None,
            ModelError::Field { field, .. } => Some(field),
        }
    }
}

/// Enums stored as snake_case strings, with the list of names kept next to the variants
/// so that error messages can say exactly what is accepted.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident default $default:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use named_enum;

named_enum! {
    /// What colours the sign's LEDs can show: one fixed colour, or full colour.
    pub enum ColorDepth default MonoAmber {
        MonoAmber = "mono_amber",
        MonoRed = "mono_red",
        MonoGreen = "mono_green",
        Rgb = "rgb",
    }
}

impl ColorDepth {
    /// The depth as a person choosing a sign would say it.
    pub fn words(self) -> &'static str {
        match self {
            ColorDepth::Rgb => "Full colour",
            ColorDepth::MonoAmber => "Amber only",
            ColorDepth::MonoRed => "Red only",
            ColorDepth::MonoGreen => "Green only",
        }
    }
}

named_enum! {
    pub enum Effect default Static {
        /// Aligned horizontally, centred vertically, still.
        Static = "static",
        /// Enters at the right edge and moves left at `speed` columns per second, looping.
        ScrollLeft = "scroll_left",
        /// Enters at the bottom edge and moves up at `speed` rows per second, looping.
        ScrollUp = "scroll_up",
        /// Static, switched on and off at a rate that grows with `speed`.
        Blink = "blink",
        /// Static, revealed one more character per tick; the tick is the time `speed` takes
        /// to move one character width.
        Typewriter = "typewriter",
    }
}

named_enum! {
    pub enum Align default Center {
        Left = "left",
        Center = "center",
        Right = "right",
    }
}

named_enum! {
    pub enum Font default Small {
        /// 5×7 dot-matrix letters in a 6×10 cell (accents above, descenders below).
        Small = "small",
        /// 8×16 VGA-style letters.
        Tall = "tall",
    }
}

/// The colour of a message's text: one colour, or a rainbow that runs along the columns
/// and moves with time. On the wire `"#rrggbb"` or `"rainbow"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextColor {
    Solid(Rgb),
    Rainbow,
}

impl Default for TextColor {
    fn default() -> Self {
        TextColor::Solid(DEFAULT_COLOR)
    }
}

impl TextColor {
    pub fn parse(text: &str) -> Option<TextColor> {
        if text == "rainbow" {
            Some(TextColor::Rainbow)
        } else {
            Rgb::from_hex(text).map(TextColor::Solid)
        }
    }
}

impl fmt::Display for TextColor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextColor::Solid(rgb) => write!(f, "{rgb}"),
            TextColor::Rainbow => f.write_str("rainbow"),
        }
    }
}

impl Serialize for TextColor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TextColor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TextColor::parse(&text).ok_or_else(|| D::Error::custom(COLOR_REASON))
    }
}

const COLOR_REASON: &str = "must be \"#rrggbb\" or \"rainbow\"";
const HEX_REASON: &str = "must be \"#rrggbb\"";
const ID_REASON: &str =
    "must be a record id: 1 to 256 bytes without \"/\", \"+\", \"#\" or control characters";
const SHOWS_REASON: &str =
    "must be null, {\"message\": id} or {\"playlist\": [{\"message\": id, ...}], \"position\": n}";

/// One entry of a playlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaylistItem {
    /// Id of the message in `messages`.
    pub message: String,
    /// Seconds to show it; `None` uses the message's own `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
}

/// Messages shown in turn, and which one is up now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Playlist {
    pub items: Vec<PlaylistItem>,
    /// Index into `items` of the one on the sign now.
    pub position: usize,
}

impl Playlist {
    pub fn current(&self) -> Option<&PlaylistItem> {
        self.items.get(self.position)
    }
}

/// What a sign shows now. On the wire: `null`, `{"message": id}`, or
/// `{"playlist": [...], "position": n}` (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Shows {
    #[default]
    Nothing,
    Message(String),
    Playlist(Playlist),
}

impl Shows {
    /// Id of the message on the sign now, if any.
    pub fn current_message(&self) -> Option<&str> {
        match self {
            Shows::Nothing => None,
            Shows::Message(id) => Some(id),
            Shows::Playlist(playlist) => playlist.current().map(|item| item.message.as_str()),
        }
    }

    /// The one place that decides which key combinations make sense, for both the serde
    /// path and [`Sign::from_json`]. Errors are (path, reason).
    fn combine(
        message: Option<String>,
        playlist: Option<Vec<PlaylistItem>>,
        position: Option<usize>,
    ) -> Result<Shows, (&'static str, String)> {
        match (message, playlist, position) {
            (Some(_), Some(_), _) => Err((
                "shows",
                "give either \"message\" or \"playlist\", not both".to_owned(),
            )),
            (_, None, Some(_)) => {
                Err(("shows.position", "only goes with a \"playlist\"".to_owned()))
            }
            (Some(message), None, None) => Ok(Shows::Message(message)),
            (None, Some(items), position) => Ok(Shows::Playlist(Playlist {
                items,
                position: position.unwrap_or(0),
            })),
            (None, None, None) => Ok(Shows::Nothing),
        }
    }
}

impl Serialize for Shows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Shows::Nothing => serializer.serialize_none(),
            Shows::Message(id) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("message", id)?;
                map.end()
            }
            Shows::Playlist(playlist) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("playlist", &playlist.items)?;
                map.serialize_entry("position", &playlist.position)?;
                map.end()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowsWire {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    playlist: Option<Vec<PlaylistItem>>,
    #[serde(default)]
    position: Option<usize>,
}

impl<'de> Deserialize<'de> for Shows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Option::<ShowsWire>::deserialize(deserializer)? {
            None => Ok(Shows::Nothing),
            Some(wire) => Shows::combine(wire.message, wire.playlist, wire.position)
                .map_err(|(path, reason)| D::Error::custom(format!("{path}: {reason}"))),
        }
    }
}

/// A sign: an LED matrix and what it shows (`signs/{id}`). The devices that mirror it
/// name it in their own `sign` field.
///
/// Deserializing with serde checks types and field names only; [`Sign::from_json`] (or
/// [`Sign::validate`]) also checks ranges and names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sign {
    pub name: String,
    /// LED columns, 1..=256.
    pub width: u16,
    /// LED rows, 1..=64.
    pub height: u16,
    pub color_depth: ColorDepth,
    /// Percent, 0..=100.
    pub brightness: u8,
    pub shows: Shows,
}

impl Default for Sign {
    fn default() -> Self {
        Sign {
            name: String::new(),
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            color_depth: ColorDepth::default(),
            brightness: DEFAULT_BRIGHTNESS,
            shows: Shows::default(),
        }
    }
}

const SIGN_FIELDS: &[&str] = &[
    "name",
    "width",
    "height",
    "color_depth",
    "brightness",
    "shows",
];

impl Sign {
    /// Reads and checks a `signs` record: the entry point for anything from the network.
    pub fn from_json(value: &Value) -> Result<Sign, ModelError> {
        let object = value.as_object().ok_or(ModelError::NotAnObject)?;
        let mut sign = Sign::default();
        // Field by field rather than through serde, so that every error names its field.
        for (key, value) in object {
            match key.as_str() {
                "name" => sign.name = string("name", value)?,
                "width" => sign.width = int("width", value, MIN_WIDTH, MAX_WIDTH)?,
                "height" => sign.height = int("height", value, MIN_HEIGHT, MAX_HEIGHT)?,
                "color_depth" => sign.color_depth = choice("color_depth", value)?,
                "brightness" => sign.brightness = int("brightness", value, 0, MAX_BRIGHTNESS)?,
                "shows" => sign.shows = shows(value)?,
                // Signs once listed their devices; the binding now lives in each
                // device's `sign` field alone, and an old list is dropped on write.
                "devices" => {}
                _ => return Err(ModelError::unknown(key, SIGN_FIELDS)),
            }
        }
        sign.validate()?;
        Ok(sign)
    }

    /// The record as stored and sent: every field present, defaults filled in.
    pub fn to_json(&self) -> Value {
        // Serializing these types cannot fail (no maps with non-string keys, no custom
        // errors), so the fallback is unreachable; it only avoids a panic path.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Range checks on a sign built in code or through serde.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_chars("name", &self.name, MAX_NAME_CHARS)?;
        check_range("width", self.width, MIN_WIDTH, MAX_WIDTH)?;
        check_range("height", self.height, MIN_HEIGHT, MAX_HEIGHT)?;
        check_range("brightness", self.brightness, 0, MAX_BRIGHTNESS)?;
        match &self.shows {
            Shows::Nothing => {}
            Shows::Message(id) => check_id("shows.message", id)?,
            Shows::Playlist(playlist) => {
                if playlist.items.len() > MAX_PLAYLIST_ITEMS {
                    return Err(ModelError::field(
                        "shows.playlist",
                        format!("must have at most {MAX_PLAYLIST_ITEMS} items"),
                    ));
                }
                for (i, item) in playlist.items.iter().enumerate() {
                    check_id(&format!("shows.playlist[{i}].message"), &item.message)?;
                    if let Some(duration) = item.duration {
                        check_range(
                            &format!("shows.playlist[{i}].duration"),
                            duration,
                            MIN_DURATION,
                            MAX_DURATION,
                        )?;
                    }
                }
                let len = playlist.items.len();
                if playlist.position >= len.max(1) {
                    let reason = if len == 0 {
                        "must be 0 while the playlist is empty".to_owned()
                    } else {
                        format!("must be less than the number of playlist items ({len})")
                    };
                    return Err(ModelError::field("shows.position", reason));
                }
            }
        }
        Ok(())
    }
}

/// A message: text and how to show it (`messages/{id}`).
///
/// Deserializing with serde checks types and field names only; [`Message::from_json`] (or
/// [`Message::validate`]) also checks ranges and names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Message {
    /// What to show; `\n` starts a new line (scroll_left runs lines together).
    pub text: String,
    pub color: TextColor,
    /// The colour of an unlit LED.
    pub background: Rgb,
    pub effect: Effect,
    /// LED columns per second, 1..=500.
    pub speed: u16,
    /// Seconds to show the message in a playlist, 1..=86400.
    pub duration: u32,
    pub align: Align,
    pub font: Font,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            text: String::new(),
            color: TextColor::default(),
            background: Rgb::BLACK,
            effect: Effect::default(),
            speed: DEFAULT_SPEED,
            duration: DEFAULT_DURATION,
            align: Align::default(),
            font: Font::default(),
        }
    }
}

/// A message's fields by name: the model refuses others, the editor shows problems under these.
pub const MESSAGE_FIELDS: &[&str] = &[
    "text",
    "color",
    "background",
    "effect",
    "speed",
    "duration",
    "align",
    "font",
];

impl Message {
    /// Reads and checks a `messages` record: the entry point for anything from the network.
    pub fn from_json(value: &Value) -> Result<Message, ModelError> {
        let object = value.as_object().ok_or(ModelError::NotAnObject)?;
        let mut message = Message::default();
        for (key, value) in object {
            match key.as_str() {
                "text" => message.text = string("text", value)?,
                "color" => {
                    message.color = value
                        .as_str()
                        .and_then(TextColor::parse)
                        .ok_or_else(|| ModelError::field("color", COLOR_REASON))?;
                }
                "background" => {
                    message.background = value
                        .as_str()
                        .and_then(Rgb::from_hex)
                        .ok_or_else(|| ModelError::field("background", HEX_REASON))?;
                }
                "effect" => message.effect = choice("effect", value)?,
                "speed" => message.speed = int("speed", value, MIN_SPEED, MAX_SPEED)?,
                "duration" => {
                    message.duration = int("duration", value, MIN_DURATION, MAX_DURATION)?;
                }
                "align" => message.align = choice("align", value)?,
                "font" => message.font = choice("font", value)?,
                _ => return Err(ModelError::unknown(key, MESSAGE_FIELDS)),
            }
        }
        message.validate()?;
        Ok(message)
    }

    /// The record as stored and sent: every field present, defaults filled in.
    pub fn to_json(&self) -> Value {
        // As for `Sign::to_json`: cannot fail, the fallback only avoids a panic path.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Range checks on a message built in code or through serde.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_chars("text", &self.text, MAX_TEXT_CHARS)?;
        check_range("speed", self.speed, MIN_SPEED, MAX_SPEED)?;
        check_range("duration", self.duration, MIN_DURATION, MAX_DURATION)?;
        Ok(())
    }
}

pub(crate) fn check_range<T: Into<u64>>(
    path: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ModelError> {
    // Generic only here: one copy of the check and its wording for every type.
    check_range_u64(path, value.into(), min.into(), max.into())
}

fn check_range_u64(path: &str, value: u64, min: u64, max: u64) -> Result<(), ModelError> {
    if value < min || value > max {
        return Err(out_of_range(path, min, max));
    }
    Ok(())
}

fn out_of_range(path: &str, min: u64, max: u64) -> ModelError {
    ModelError::field(path, format!("must be between {min} and {max}"))
}

pub(crate) fn check_chars(path: &str, text: &str, max: usize) -> Result<(), ModelError> {
    if text.chars().count() > max {
        return Err(ModelError::field(
            path,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// The store's record id rules, repeated here so a sign cannot point at an id that no
/// record could ever have.
pub(crate) fn check_id(path: &str, id: &str) -> Result<(), ModelError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#') || crate::names::is_disallowed_in_name(c));
    if ok {
        Ok(())
    } else {
        Err(ModelError::field(path, ID_REASON))
    }
}

pub(crate) fn string(path: &str, value: &Value) -> Result<String, ModelError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ModelError::field(path, "must be a string"))
}

/// An integer field: a wrong type and a wrong size are told apart, because "between 1 and
/// 256" alone would puzzle someone who sent `"64"`.
pub(crate) fn int<T>(path: &str, value: &Value, min: T, max: T) -> Result<T, ModelError>
where
    T: Copy + Into<u64> + TryFrom<u64>,
{
    // Generic only here: one copy of the reading and its wording for every type.
    let (min, max) = (min.into(), max.into());
    let n = whole(path, value, min, max)?;
    T::try_from(n).map_err(|_| out_of_range(path, min, max))
}

fn whole(path: &str, value: &Value, min: u64, max: u64) -> Result<u64, ModelError> {
    let n = match (value.as_u64(), value.as_i64()) {
        (Some(n), _) => n,
        (None, Some(_)) => return Err(out_of_range(path, min, max)),
        (None, None) => {
            return Err(ModelError::field(
                path,
                format!("must be a whole number between {min} and {max}"),
            ));
        }
    };
    check_range_u64(path, n, min, max)?;
    Ok(n)
}

fn index(path: &str, value: &Value) -> Result<usize, ModelError> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ModelError::field(path, "must be a whole number, 0 or more"))
}

pub(crate) trait Named: Sized {
    fn lookup(name: &str) -> Option<Self>;
    fn names() -> &'static [&'static str];
}

macro_rules! named {
    ($($name:ident),+) => {
        $(impl Named for $name {
            fn lookup(name: &str) -> Option<Self> {
                $name::from_name(name)
            }
            fn names() -> &'static [&'static str] {
                $name::NAMES
            }
        })+
    };
}

named!(ColorDepth, Effect, Align, Font);

pub(crate) fn choice<T: Named>(path: &str, value: &Value) -> Result<T, ModelError> {
    value
        .as_str()
        .and_then(T::lookup)
        .ok_or_else(|| one_of(path, T::names()))
}

fn one_of(path: &str, names: &[&str]) -> ModelError {
    let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    ModelError::field(path, format!("must be one of {}", names.join(", ")))
}

fn shows(value: &Value) -> Result<Shows, ModelError> {
    let object = match value {
        Value::Null => return Ok(Shows::Nothing),
        Value::Object(object) => object,
        _ => return Err(ModelError::field("shows", SHOWS_REASON)),
    };
    let (mut message, mut playlist, mut position) = (None, None, None);
    for (key, value) in object {
        match key.as_str() {
            "message" => message = Some(record_id("shows.message", value)?),
            "playlist" => playlist = Some(playlist_items(value)?),
            "position" => position = Some(index("shows.position", value)?),
            _ => {
                return Err(ModelError::unknown(
                    &format!("shows.{key}"),
                    &["message", "playlist", "position"],
                ));
            }
        }
    }
    Shows::combine(message, playlist, position)
        .map_err(|(path, reason)| ModelError::field(path, reason))
}

pub(crate) fn record_id(path: &str, value: &Value) -> Result<String, ModelError> {
    let id = value
        .as_str()
        .ok_or_else(|| ModelError::field(path, ID_REASON))?;
    check_id(path, id)?;
    Ok(id.to_owned())
}

fn playlist_items(value: &Value) -> Result<Vec<PlaylistItem>, ModelError> {
    let items = value.as_array().ok_or_else(|| {
        ModelError::field(
            "shows.playlist",
            "must be a list of {\"message\": id, \"duration\": seconds}",
        )
    })?;
    if items.len() > MAX_PLAYLIST_ITEMS {
        return Err(ModelError::field(
            "shows.playlist",
            format!("must have at most {MAX_PLAYLIST_ITEMS} items"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| playlist_item(&format!("shows.playlist[{i}]"), item))
        .collect()
}

fn playlist_item(path: &str, value: &Value) -> Result<PlaylistItem, ModelError> {
    let object: &Map<String, Value> = value.as_object().ok_or_else(|| {
        ModelError::field(path, "must be {\"message\": id, \"duration\": seconds}")
    })?;
    let mut message = None;
    let mut duration = None;
    for (key, value) in object {
        let field_path = format!("{path}.{key}");
        match key.as_str() {
            "message" => message = Some(record_id(&field_path, value)?),
            "duration" => {
                duration = Some(int(&field_path, value, MIN_DURATION, MAX_DURATION)?);
            }
            _ => return Err(ModelError::unknown(&field_path, &["message", "duration"])),
        }
    }
    let message =
        message.ok_or_else(|| ModelError::field(format!("{path}.message"), "is required"))?;
    Ok(PlaylistItem { message, duration })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reason(result: Result<impl fmt::Debug, ModelError>) -> String {
        match result {
            Ok(value) => panic!("expected an error, got {value:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_sign_needs_only_a_name() {
        let sign = Sign::from_json(&json!({"name": "Lobby"})).unwrap();
        assert_eq!(
            sign,
            Sign {
                name: "Lobby".into(),
                ..Sign::default()
            }
        );
        assert_eq!((sign.width, sign.height, sign.brightness), (64, 16, 80));
        assert_eq!(sign.color_depth, ColorDepth::MonoAmber);
        assert_eq!(sign.shows, Shows::Nothing);
        // The serde path agrees on the defaults.
        let via_serde: Sign = serde_json::from_value(json!({"name": "Lobby"})).unwrap();
        assert_eq!(via_serde, sign);
    }

    #[test]
    fn a_message_needs_only_its_text() {
        let message = Message::from_json(&json!({"text": "Hello"})).unwrap();
        assert_eq!(message.text, "Hello");
        assert_eq!(message.color, TextColor::Solid(Rgb::new(0xff, 0xb0, 0x00)));
        assert_eq!(message.background, Rgb::BLACK);
        assert_eq!(message.effect, Effect::Static);
        assert_eq!((message.speed, message.duration), (20, 10));
        assert_eq!((message.align, message.font), (Align::Center, Font::Small));
        let via_serde: Message = serde_json::from_value(json!({"text": "Hello"})).unwrap();
        assert_eq!(via_serde, message);
    }

    #[test]
    fn to_json_fills_in_every_default() {
        assert_eq!(
            Sign::from_json(&json!({})).unwrap().to_json(),
            json!({"name": "", "width": 64, "height": 16, "color_depth": "mono_amber",
                   "brightness": 80, "shows": null})
        );
        assert_eq!(
            Message::from_json(&json!({})).unwrap().to_json(),
            json!({"text": "", "color": "#ffb000", "background": "#000000",
                   "effect": "static", "speed": 20, "duration": 10, "align": "center",
                   "font": "small"})
        );
    }

    #[test]
    fn full_records_round_trip() {
        let sign = json!({
            "name": "Café", "width": 128, "height": 32, "color_depth": "rgb", "brightness": 0,
            "shows": {"playlist": [{"message": "a", "duration": 5}, {"message": "b"}],
                      "position": 1},
        });
        let parsed = Sign::from_json(&sign).unwrap();
        assert_eq!(parsed.to_json(), sign);
        assert_eq!(parsed.shows.current_message(), Some("b"));
        assert_eq!(serde_json::from_value::<Sign>(sign).unwrap(), parsed);

        let message = json!({
            "text": "Hi\nthere", "color": "rainbow", "background": "#102030",
            "effect": "scroll_left", "speed": 500, "duration": 86400, "align": "right",
            "font": "tall",
        });
        let parsed = Message::from_json(&message).unwrap();
        assert_eq!(parsed.color, TextColor::Rainbow);
        assert_eq!(parsed.background, Rgb::new(0x10, 0x20, 0x30));
        assert_eq!(parsed.to_json(), message);
        assert_eq!(serde_json::from_value::<Message>(message).unwrap(), parsed);
    }

    #[test]
    fn shows_has_three_shapes() {
        let one = |v: Value| Sign::from_json(&json!({"shows": v})).map(|s| s.shows);
        assert_eq!(one(Value::Null).unwrap(), Shows::Nothing);
        assert_eq!(one(json!({})).unwrap(), Shows::Nothing);
        assert_eq!(
            one(json!({"message": "m1"})).unwrap(),
            Shows::Message("m1".into())
        );
        let playlist = one(json!({"playlist": [{"message": "m1"}]})).unwrap();
        assert_eq!(
            playlist,
            Shows::Playlist(Playlist {
                items: vec![PlaylistItem {
                    message: "m1".into(),
                    duration: None
                }],
                position: 0,
            })
        );
        assert_eq!(playlist.current_message(), Some("m1"));
        assert_eq!(
            reason(one(json!({"message": "a", "playlist": []}))),
            "shows: give either \"message\" or \"playlist\", not both"
        );
        assert_eq!(
            reason(one(json!({"message": "a", "position": 0}))),
            "shows.position: only goes with a \"playlist\""
        );
        assert_eq!(
            reason(one(json!({"playlist": [{"message": "a"}], "position": 1}))),
            "shows.position: must be less than the number of playlist items (1)"
        );
        assert_eq!(
            reason(one(
                json!({"playlist": [{"message": "a"}, {"message": "b", "duration": 0}]})
            )),
            "shows.playlist[1].duration: must be between 1 and 86400"
        );
        assert_eq!(
            reason(one(json!({"playlist": [{"duration": 5}]}))),
            "shows.playlist[0].message: is required"
        );
        assert!(
            reason(one(json!({"playlist": [{"message": "a", "time": 5}]})))
                .starts_with("shows.playlist[0].time: unknown field")
        );
        assert!(reason(one(json!({"message": "a/b"}))).starts_with("shows.message: must be"));
        assert!(reason(one(json!("m1"))).starts_with("shows: must be null"));
        // The serde path enforces the same combinations.
        let err =
            serde_json::from_value::<Sign>(json!({"shows": {"message": "a", "playlist": []}}))
                .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn width_300_is_rejected_with_the_field_named() {
        let err = Sign::from_json(&json!({"width": 300})).unwrap_err();
        assert_eq!(err.field_name(), Some("width"));
        assert_eq!(err.to_string(), "width: must be between 1 and 256");
        assert_eq!(
            reason(Sign::from_json(&json!({"width": 0}))),
            "width: must be between 1 and 256"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"width": 70000}))),
            "width: must be between 1 and 256"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"height": 65}))),
            "height: must be between 1 and 64"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"brightness": -1}))),
            "brightness: must be between 0 and 100"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"brightness": 101}))),
            "brightness: must be between 0 and 100"
        );
        // A typed sign out of range is caught by validate.
        let sign = Sign {
            width: 300,
            ..Sign::default()
        };
        assert_eq!(reason(sign.validate()), "width: must be between 1 and 256");
    }

    #[test]
    fn type_mismatches_name_the_field() {
        assert_eq!(
            reason(Sign::from_json(&json!({"width": "64"}))),
            "width: must be a whole number between 1 and 256"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"width": 6.5}))),
            "width: must be a whole number between 1 and 256"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"name": 5}))),
            "name: must be a string"
        );
        assert_eq!(
            reason(Sign::from_json(&json!({"color_depth": "blue"}))),
            "color_depth: must be one of \"mono_amber\", \"mono_red\", \"mono_green\", \"rgb\""
        );
        // A list of devices from before bindings moved to the devices is dropped.
        assert_eq!(
            Sign::from_json(&json!({"devices": ["d1"]})).unwrap(),
            Sign::default()
        );
        assert_eq!(
            reason(Message::from_json(&json!({"color": "red"}))),
            "color: must be \"#rrggbb\" or \"rainbow\""
        );
        assert_eq!(
            reason(Message::from_json(&json!({"background": "rainbow"}))),
            "background: must be \"#rrggbb\""
        );
        assert_eq!(
            reason(Message::from_json(&json!({"effect": "spin"}))),
            "effect: must be one of \"static\", \"scroll_left\", \"scroll_up\", \"blink\", \"typewriter\""
        );
        assert_eq!(
            reason(Message::from_json(&json!({"speed": 0}))),
            "speed: must be between 1 and 500"
        );
        assert_eq!(
            reason(Message::from_json(&json!({"text": "x".repeat(1001)}))),
            "text: must be at most 1000 characters"
        );
        assert_eq!(
            Message::from_json(&json!("Hello")).unwrap_err(),
            ModelError::NotAnObject
        );
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = Sign::from_json(&json!({"name": "Lobby", "colour": "red"})).unwrap_err();
        assert_eq!(err.field_name(), Some("colour"));
        assert!(
            err.to_string()
                .starts_with("colour: unknown field (expected one of: name,")
        );
        let err = Message::from_json(&json!({"txt": "Hi"})).unwrap_err();
        assert_eq!(err.field_name(), Some("txt"));
        // The serde path rejects them too, naming the field in its own words.
        let err = serde_json::from_value::<Message>(json!({"txt": "Hi"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `txt`"), "{err}");
    }

    #[test]
    fn enum_names_match_their_serde_names() {
        fn check<T: Serialize + Copy + fmt::Display>(all: &[T]) {
            for value in all {
                assert_eq!(
                    serde_json::to_value(value).unwrap(),
                    json!(value.to_string())
                );
            }
        }
        check(ColorDepth::ALL);
        check(Effect::ALL);
        check(Align::ALL);
        check(Font::ALL);
        assert_eq!(Effect::from_name("scroll_up"), Some(Effect::ScrollUp));
        assert_eq!(Effect::from_name("ScrollUp"), None);
    }

    #[test]
    fn colours_parse_strictly_and_print_lowercase() {
        assert_eq!(
            TextColor::parse("#FFb000"),
            Some(TextColor::Solid(Rgb::new(255, 176, 0)))
        );
        for bad in [
            "ffb000", "#ffb00", "#ffb0000", "#ggb000", "#+fb000", "Rainbow", "",
        ] {
            assert_eq!(TextColor::parse(bad), None, "{bad}");
        }
        assert_eq!(
            TextColor::Solid(Rgb::new(0xab, 0xcd, 0xef)).to_string(),
            "#abcdef"
        );
    }
}
