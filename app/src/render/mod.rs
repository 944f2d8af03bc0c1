//! The renderer: a pure, deterministic function from (sign, message, time) to one frame of
//! LED colours. The browser calls it for every animation frame, the server for previews
//! and for devices that take raw frames, so both show exactly the same thing.
//!
//! Layout: `static`, `blink` and `typewriter` set each line (`\n` separates lines) at the
//! message's alignment and centre the block vertically; `scroll_left` runs the lines
//! together on one vertically centred line entering at the right edge; `scroll_up` moves the
//! aligned block in from the bottom edge. Scrolling loops once the text has left the sign.

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

mod font;
mod font_small;
mod font_tall;

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sign::{
    Align, ColorDepth, Effect, MAX_BRIGHTNESS, MAX_HEIGHT, MAX_WIDTH, MIN_HEIGHT, MIN_WIDTH,
    Message, Sign, TextColor,
};
use font::{BitmapFont, Glyph};

/// One LED's colour. On the wire (message colours) it is `"#rrggbb"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Rgb {
    pub const BLACK: Rgb = Rgb::new(0, 0, 0);

    pub const fn new(r: u8, g: u8, b: u8) -> Rgb {
        Rgb { r, g, b }
    }

    /// Parses `"#rrggbb"` (either case); anything else is `None`.
    pub fn from_hex(text: &str) -> Option<Rgb> {
        let digits = text.strip_prefix('#')?;
        // from_str_radix alone would accept a leading '+'.
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = u32::from_str_radix(digits, 16).ok()?;
        let [_, r, g, b] = value.to_be_bytes();
        Some(Rgb::new(r, g, b))
    }

    /// `"#rrggbb"`, lowercase.
    pub fn to_hex(self) -> String {
        self.to_string()
    }

    /// Each channel times `num / den`, rounded; `num <= den` keeps it within a byte.
    fn scale(self, num: u32, den: u32) -> Rgb {
        let channel = |c: u8| {
            let scaled = (u32::from(c) * num + den / 2) / den.max(1);
            u8::try_from(scaled).unwrap_or(u8::MAX)
        };
        Rgb::new(channel(self.r), channel(self.g), channel(self.b))
    }
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl Serialize for Rgb {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rgb {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Rgb::from_hex(&text).ok_or_else(|| D::Error::custom("must be \"#rrggbb\""))
    }
}

/// The colour a mono sign's LEDs have at full intensity; `None` for full colour.
pub fn led_color(depth: ColorDepth) -> Option<Rgb> {
    match depth {
        ColorDepth::MonoAmber => Some(Rgb::new(0xff, 0xb0, 0x00)),
        ColorDepth::MonoRed => Some(Rgb::new(0xff, 0x20, 0x10)),
        ColorDepth::MonoGreen => Some(Rgb::new(0x30, 0xff, 0x50)),
        ColorDepth::Rgb => None,
    }
}

/// One frame: `width × height` LED colours, row-major from the top-left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub width: u16,
    pub height: u16,
    /// The colour of an unlit LED in this frame (the message's background, after the sign's
    /// colour depth and brightness).
    pub background: Rgb,
    pub pixels: Vec<Rgb>,
}

impl Frame {
    /// A frame of unlit LEDs.
    pub fn new(width: u16, height: u16, background: Rgb) -> Frame {
        Frame {
            width,
            height,
            background,
            pixels: vec![background; usize::from(width) * usize::from(height)],
        }
    }

    pub fn get(&self, x: u16, y: u16) -> Option<Rgb> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let index = usize::from(y) * usize::from(self.width) + usize::from(x);
        self.pixels.get(index).copied()
    }

    /// LEDs whose colour differs from the background.
    pub fn lit_count(&self) -> usize {
        self.pixels
            .iter()
            .filter(|&&p| p != self.background)
            .count()
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        let (Ok(x), Ok(y)) = (usize::try_from(x), usize::try_from(y)) else {
            return;
        };
        let width = usize::from(self.width);
        if x >= width || y >= usize::from(self.height) {
            return;
        }
        if let Some(pixel) = self.pixels.get_mut(y * width + x) {
            *pixel = color;
        }
    }
}

/// How long the rainbow takes to run once through every hue.
pub const RAINBOW_CYCLE_MS: u64 = 3000;

/// Renders `message` on `sign` at `t_ms` milliseconds after the message came up.
pub fn render(sign: &Sign, message: &Message, t_ms: u64) -> Frame {
    let mut frame = Frame::default();
    render_into(&mut frame, sign, message, t_ms);
    frame
}

/// [`render`] into an existing frame, reusing its pixel buffer: an animation loop calling
/// this allocates nothing after the first frame.
///
/// The sign's size, brightness and the message's speed are clamped to their valid ranges,
/// so a model that skipped validation still renders a bounded frame.
pub fn render_into(frame: &mut Frame, sign: &Sign, message: &Message, t_ms: u64) {
    let width = sign.width.clamp(MIN_WIDTH, MAX_WIDTH);
    let height = sign.height.clamp(MIN_HEIGHT, MAX_HEIGHT);
    let paint = Paint::new(sign, message, width, t_ms);
    frame.width = width;
    frame.height = height;
    frame.background = paint.background;
    frame.pixels.clear();
    frame
        .pixels
        .resize(usize::from(width) * usize::from(height), paint.background);

    let font = font::font(message.font);
    let speed = u64::from(message.speed.max(1));
    let text = message.text.as_str();
    let (w, h) = (i64::from(width), i64::from(height));
    let mut canvas = Canvas {
        frame,
        paint: &paint,
        font,
        limit: usize::MAX,
    };
    match message.effect {
        Effect::Static => canvas.block(text, message.align, centred(h, block_height(font, text))),
        Effect::Blink => {
            if (t_ms / blink_half_period_ms(message.speed)).is_multiple_of(2) {
                canvas.block(text, message.align, centred(h, block_height(font, text)));
            }
        }
        Effect::Typewriter => {
            let tick = typewriter_tick_ms(message);
            let chars = text.chars().filter(|c| !is_line_break(*c)).count();
            let chars_u64 = u64::try_from(chars).unwrap_or(u64::MAX);
            // Restarts every `duration`, but never before the text has stood complete for
            // a moment, so a long text is not cut off while it is still being typed.
            let cycle = (u64::from(message.duration).saturating_mul(1000))
                .max(
                    chars_u64
                        .saturating_add(TYPEWRITER_HOLD_TICKS)
                        .saturating_mul(tick),
                )
                .max(1);
            canvas.limit = usize::try_from((t_ms % cycle) / tick).unwrap_or(usize::MAX);
            canvas.block(text, message.align, centred(h, block_height(font, text)));
        }
        Effect::ScrollLeft => {
            let chars = text.chars().filter(|&c| c != '\r').count();
            let period = u64::try_from(w)
                .unwrap_or(0)
                .saturating_add(u64::from(font.text_width(chars)));
            let offset = scroll_offset(t_ms, speed, period);
            canvas.line(
                text.chars().filter(|&c| c != '\r'),
                w - offset,
                centred(h, i64::from(font.height)),
            );
        }
        Effect::ScrollUp => {
            let block = block_height(font, text);
            let period = u64::try_from(h.saturating_add(block)).unwrap_or(0);
            let offset = scroll_offset(t_ms, speed, period);
            canvas.block(text, message.align, h - offset);
        }
    }
}

/// Ticks the finished text stays up before a typewriter message starts over, at least.
const TYPEWRITER_HOLD_TICKS: u64 = 4;

/// One character per tick, a tick being the time the message's speed takes to move one
/// character width, so a typewriter and a scroll at the same speed feel alike.
pub fn typewriter_tick_ms(message: &Message) -> u64 {
    let advance = u64::from(font::font(message.font).advance);
    (advance * 1000 / u64::from(message.speed.max(1))).max(1)
}

/// Half a blink cycle (on, then off for as long): 10 s divided by the speed, so the
/// default speed of 20 blinks once a second, kept between a flicker and a crawl.
pub fn blink_half_period_ms(speed: u16) -> u64 {
    (10_000 / u64::from(speed.max(1))).clamp(100, 2000)
}

fn scroll_offset(t_ms: u64, speed: u64, period: u64) -> i64 {
    let moved = u128::from(t_ms) * u128::from(speed) / 1000;
    let offset = moved % u128::from(period.max(1));
    i64::try_from(offset).unwrap_or(0)
}

fn is_line_break(c: char) -> bool {
    c == '\n' || c == '\r'
}

fn block_height(font: &BitmapFont, text: &str) -> i64 {
    let lines = i64::try_from(text.split('\n').count()).unwrap_or(i64::MAX);
    lines.saturating_mul(i64::from(font.height))
}

/// Top of something `size` tall centred in `space`; rounds up-and-left when it cannot be
/// exact, also when the text is larger than the sign.
fn centred(space: i64, size: i64) -> i64 {
    (space - size).div_euclid(2)
}

/// Turns "this LED is lit" into its colour: the message colour (or rainbow), mapped to the
/// sign's mono colour by intensity, then scaled by the sign's brightness.
struct Paint {
    mono: Option<Rgb>,
    brightness: u32,
    /// The final colour of a lit LED, unless it depends on the column (rainbow).
    solid: Option<Rgb>,
    background: Rgb,
    width: u64,
    hue_shift: u64,
}

/// The characters of `text` that `font` cannot draw (each once, in order of
/// appearance): the sign shows a hollow box for each, so the editor warns first.
pub fn undrawable_chars(text: &str, font: crate::sign::Font) -> Vec<char> {
    let font = font::font(font);
    let mut missing = Vec::new();
    for c in text.chars() {
        if !is_line_break(c) && !font.draws(c) && !missing.contains(&c) {
            missing.push(c);
        }
    }
    missing
}

/// Hues step through 6 × 256 values: one full ramp of a channel per sixth of the circle.
const HUES: u64 = 6 * 256;

impl Paint {
    fn new(sign: &Sign, message: &Message, width: u16, t_ms: u64) -> Paint {
        let mut paint = Paint {
            mono: led_color(sign.color_depth),
            brightness: u32::from(sign.brightness.min(MAX_BRIGHTNESS)),
            solid: None,
            background: Rgb::BLACK,
            width: u64::from(width.max(1)),
            hue_shift: (t_ms % RAINBOW_CYCLE_MS) * HUES / RAINBOW_CYCLE_MS,
        };
        paint.background = paint.finish(message.background);
        if let TextColor::Solid(color) = message.color {
            paint.solid = Some(paint.finish(color));
        }
        paint
    }

    fn finish(&self, color: Rgb) -> Rgb {
        let color = match self.mono {
            // A mono LED can only be brighter or dimmer: take the colour's intensity.
            Some(led) => led.scale(u32::from(color.r.max(color.g).max(color.b)), 255),
            None => color,
        };
        color.scale(self.brightness, u32::from(MAX_BRIGHTNESS))
    }

    fn at(&self, x: i64) -> Rgb {
        if let Some(color) = self.solid {
            return color;
        }
        let column = u64::try_from(x).unwrap_or(0);
        let hue = (column * HUES / self.width + self.hue_shift) % HUES;
        self.finish(hue_to_rgb(hue))
    }
}

/// A fully saturated, full-value colour for `hue` in `0..HUES`.
fn hue_to_rgb(hue: u64) -> Rgb {
    let ramp = u8::try_from(hue % 256).unwrap_or(u8::MAX);
    let fall = u8::MAX - ramp;
    match hue / 256 {
        0 => Rgb::new(255, ramp, 0),
        1 => Rgb::new(fall, 255, 0),
        2 => Rgb::new(0, 255, ramp),
        3 => Rgb::new(0, fall, 255),
        4 => Rgb::new(ramp, 0, 255),
        _ => Rgb::new(255, 0, fall),
    }
}

struct Canvas<'a> {
    frame: &'a mut Frame,
    paint: &'a Paint,
    font: &'static BitmapFont,
    /// Characters still to draw (the typewriter's reveal); line breaks do not count.
    limit: usize,
}

impl Canvas<'_> {
    /// Lines stacked from `top`, each placed by `align`.
    fn block(&mut self, text: &str, align: Align, top: i64) {
        let width = i64::from(self.frame.width);
        let line_height = i64::from(self.font.height);
        let mut y = top;
        for line in text.split('\n') {
            let chars = line.chars().filter(|&c| c != '\r');
            let line_width = i64::from(self.font.text_width(chars.clone().count()));
            let x = match align {
                Align::Left => 0,
                Align::Center => centred(width, line_width),
                Align::Right => width - line_width,
            };
            self.line(chars, x, y);
            y = y.saturating_add(line_height);
        }
    }

    /// One line of characters from (`left`, `top`); a line break inside draws as a space.
    fn line(&mut self, chars: impl Iterator<Item = char>, left: i64, top: i64) {
        let advance = i64::from(self.font.advance);
        let width = i64::from(self.frame.width);
        let mut x = left;
        for c in chars {
            if self.limit == 0 {
                return;
            }
            // Characters off the sign still count, so the typewriter's next line starts
            // where it should; skipping their glyph lookup keeps long scrolls cheap.
            self.limit -= 1;
            if x < width && x + 8 > 0 && c != '\n' {
                self.glyph(self.font.glyph(c), x, top);
            }
            x = x.saturating_add(advance);
        }
    }

    fn glyph(&mut self, glyph: Glyph, left: i64, top: i64) {
        let height = i64::from(self.frame.height);
        for gy in 0..self.font.height {
            let y = top + i64::from(gy);
            if y < 0 || y >= height {
                continue;
            }
            let row = glyph.row(gy);
            for gx in 0..8 {
                if row & (0x80 >> gx) != 0 {
                    let x = left + gx;
                    self.frame.set(x, y, self.paint.at(x));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::sign::Font;

    const WHITE: Rgb = Rgb::new(255, 255, 255);

    fn rgb_sign(width: u16, height: u16) -> Sign {
        Sign {
            width,
            height,
            color_depth: ColorDepth::Rgb,
            brightness: 100,
            ..Sign::default()
        }
    }

    fn message(text: &str, effect: Effect, font: Font) -> Message {
        Message {
            text: text.into(),
            color: TextColor::Solid(WHITE),
            effect,
            font,
            ..Message::default()
        }
    }

    /// The lit LEDs as (x, y).
    fn lit(frame: &Frame) -> BTreeSet<(u16, u16)> {
        let mut out = BTreeSet::new();
        for y in 0..frame.height {
            for x in 0..frame.width {
                if frame.get(x, y) != Some(frame.background) {
                    out.insert((x, y));
                }
            }
        }
        out
    }

    fn columns(frame: &Frame) -> BTreeSet<u16> {
        lit(frame).into_iter().map(|(x, _)| x).collect()
    }

    fn shifted(points: &BTreeSet<(u16, u16)>, dx: i32, dy: i32) -> BTreeSet<(u16, u16)> {
        points
            .iter()
            .map(|&(x, y)| {
                let x = u16::try_from(i32::from(x) + dx).unwrap();
                let y = u16::try_from(i32::from(y) + dy).unwrap();
                (x, y)
            })
            .collect()
    }

    /// ASCII art of the lit LEDs, for readable failures.
    fn art(frame: &Frame) -> String {
        let mut out = String::new();
        for y in 0..frame.height {
            for x in 0..frame.width {
                out.push(if frame.get(x, y) == Some(frame.background) {
                    '.'
                } else {
                    '#'
                });
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn small_i_static_lights_exactly_its_strokes() {
        let frame = render(
            &rgb_sign(64, 16),
            &message("I", Effect::Static, Font::Small),
            0,
        );
        assert_eq!(
            (frame.width, frame.height, frame.pixels.len()),
            (64, 16, 1024)
        );
        // "I" is 5 columns wide: starts at (64 - 5) / 2 = 29; the 10-row cell starts at
        // (16 - 10) / 2 = 3, and the letter occupies cell rows 1 to 7.
        let mut expected = BTreeSet::new();
        for x in 30..=32 {
            expected.insert((x, 4));
            expected.insert((x, 10));
        }
        for y in 5..=9 {
            expected.insert((31, y));
        }
        assert_eq!(lit(&frame), expected, "\n{}", art(&frame));
        assert_eq!(frame.lit_count(), 11);
        assert_eq!(columns(&frame), BTreeSet::from([30, 31, 32]));
        assert_eq!(frame.get(31, 5), Some(WHITE));
        assert_eq!(frame.get(0, 0), Some(Rgb::BLACK));
    }

    #[test]
    fn tall_i_static_lights_exactly_its_strokes() {
        let frame = render(
            &rgb_sign(64, 16),
            &message("I", Effect::Static, Font::Tall),
            0,
        );
        // 7 columns wide from (64 - 7) / 2 = 28; the 16-row cell fills the sign.
        let mut expected = BTreeSet::new();
        for x in 30..=33 {
            expected.insert((x, 2));
            expected.insert((x, 11));
        }
        for y in 3..=10 {
            expected.insert((31, y));
            expected.insert((32, y));
        }
        assert_eq!(lit(&frame), expected, "\n{}", art(&frame));
        assert_eq!(frame.lit_count(), 24);
    }

    #[test]
    fn alignment_moves_the_text_to_either_edge() {
        let mut m = message("I", Effect::Static, Font::Small);
        m.align = Align::Left;
        let left = render(&rgb_sign(64, 16), &m, 0);
        assert_eq!(columns(&left), BTreeSet::from([1, 2, 3]));
        m.align = Align::Right;
        let right = render(&rgb_sign(64, 16), &m, 0);
        // The glyph's 5 columns end at the right edge: 59..=63, lit 60..=62.
        assert_eq!(columns(&right), BTreeSet::from([60, 61, 62]));
    }

    #[test]
    fn lines_stack_and_centre_as_a_block() {
        let frame = render(
            &rgb_sign(16, 32),
            &message("I\nI", Effect::Static, Font::Small),
            0,
        );
        // Two 10-row lines in 32 rows start at row 6; each I spans cell rows 1..=7.
        let rows: BTreeSet<u16> = lit(&frame).into_iter().map(|(_, y)| y).collect();
        let expected: BTreeSet<u16> = (7..=13).chain(17..=23).collect();
        assert_eq!(rows, expected, "\n{}", art(&frame));
    }

    #[test]
    fn scroll_left_enters_from_the_right_and_moves_at_speed() {
        let sign = rgb_sign(64, 16);
        let mut m = message("H", Effect::ScrollLeft, Font::Small);
        m.speed = 20;
        assert_eq!(render(&sign, &m, 0).lit_count(), 0);
        // After 50 ms the text has moved one column: only its first column is on the sign.
        let entering = render(&sign, &m, 50);
        assert_eq!(columns(&entering), BTreeSet::from([63]));
        assert_eq!(entering.lit_count(), 7);
        // After 1 s it has moved speed × t = 20 columns: its left edge is at 64 - 20 = 44.
        let later = render(&sign, &m, 1000);
        let mut at_left = m.clone();
        at_left.effect = Effect::Static;
        at_left.align = Align::Left;
        let reference = lit(&render(&sign, &at_left, 0));
        assert_eq!(lit(&later), shifted(&reference, 44, 0), "\n{}", art(&later));
        // It loops once the text is gone: 64 + 5 columns later it starts over.
        let period_ms = (64 + 5) * 1000 / 20;
        assert_eq!(render(&sign, &m, period_ms).lit_count(), 0);
        assert_eq!(lit(&render(&sign, &m, period_ms + 1000)), lit(&later));
        // Just before the loop, only the text's last column is left, at the left edge.
        let leaving = render(&sign, &m, period_ms - 50);
        assert_eq!(columns(&leaving), BTreeSet::from([0]));
    }

    #[test]
    fn scroll_left_runs_lines_together() {
        let sign = rgb_sign(64, 16);
        let m = message("A\nB", Effect::ScrollLeft, Font::Small);
        let one_line = message("A B", Effect::ScrollLeft, Font::Small);
        for t in [0, 700, 1500, 3000] {
            assert_eq!(render(&sign, &m, t), render(&sign, &one_line, t));
        }
    }

    #[test]
    fn scroll_up_enters_from_the_bottom() {
        let sign = rgb_sign(64, 16);
        let m = message("I", Effect::ScrollUp, Font::Small);
        assert_eq!(render(&sign, &m, 0).lit_count(), 0);
        // 100 ms at 20 rows/s: 2 rows up, so the cell's top is at row 14 and its first
        // lit row (cell row 1) at row 15.
        let frame = render(&sign, &m, 100);
        assert_eq!(
            lit(&frame),
            BTreeSet::from([(30, 15), (31, 15), (32, 15)]),
            "\n{}",
            art(&frame)
        );
        // After 1 s it has moved 20 rows: cell top at 16 - 20 = -4.
        let frame = render(&sign, &m, 1000);
        let mut at_top = m.clone();
        at_top.effect = Effect::Static;
        let reference = lit(&render(&sign, &at_top, 0)); // cell top at row 3
        let expected: BTreeSet<_> = shifted(
            &reference.into_iter().filter(|&(_, y)| y >= 7).collect(),
            0,
            -7,
        );
        assert_eq!(lit(&frame), expected, "\n{}", art(&frame));
    }

    #[test]
    fn blink_alternates_between_static_and_dark() {
        let sign = rgb_sign(64, 16);
        let m = message("Hi", Effect::Blink, Font::Small);
        let half = blink_half_period_ms(m.speed);
        assert_eq!(half, 500);
        let mut still = m.clone();
        still.effect = Effect::Static;
        let on = render(&sign, &still, 0);
        assert_eq!(render(&sign, &m, 0), on);
        assert_eq!(render(&sign, &m, half - 1), on);
        assert_eq!(render(&sign, &m, half).lit_count(), 0);
        assert_eq!(render(&sign, &m, 2 * half - 1).lit_count(), 0);
        assert_eq!(render(&sign, &m, 2 * half), on);
    }

    #[test]
    fn typewriter_reveals_one_character_per_tick_in_place() {
        let sign = rgb_sign(64, 16);
        let m = message("HI", Effect::Typewriter, Font::Small);
        let tick = typewriter_tick_ms(&m);
        assert_eq!(tick, 300); // 6 columns at 20 columns per second
        assert_eq!(render(&sign, &m, 0).lit_count(), 0);
        assert_eq!(render(&sign, &m, tick - 1).lit_count(), 0);

        let mut full = m.clone();
        full.effect = Effect::Static;
        let all = lit(&render(&sign, &full, 0));
        // "HI" is 11 columns from (64 - 11) / 2 = 26: H in 26..=30, I in 32..=36.
        let first: BTreeSet<_> = all.iter().copied().filter(|&(x, _)| x < 32).collect();
        let frame = render(&sign, &m, tick);
        assert_eq!(lit(&frame), first, "\n{}", art(&frame));
        assert_eq!(frame.lit_count(), 7 + 7 + 3); // H: two uprights and a bar
        assert_eq!(lit(&render(&sign, &m, 2 * tick)), all);
        // It holds the whole text until `duration` (10 s), then starts over.
        assert_eq!(lit(&render(&sign, &m, 9_999)), all);
        assert_eq!(render(&sign, &m, 10_000).lit_count(), 0);
        assert_eq!(lit(&render(&sign, &m, 10_000 + tick)), first);
    }

    #[test]
    fn typewriter_does_not_count_line_breaks() {
        let sign = rgb_sign(16, 32);
        let m = message("I\nI", Effect::Typewriter, Font::Small);
        let tick = typewriter_tick_ms(&m);
        assert_eq!(render(&sign, &m, tick).lit_count(), 11);
        assert_eq!(render(&sign, &m, 2 * tick).lit_count(), 22);
    }

    #[test]
    fn the_editor_learns_which_characters_show_as_boxes() {
        assert_eq!(
            undrawable_chars("OK ✓ 日本 ✓\nCafé\t!", Font::Small),
            vec!['✓', '日', '本']
        );
        assert!(undrawable_chars("Ünïcödé ½ line\r\nbreak", Font::Tall).is_empty());
    }

    #[test]
    fn unknown_characters_light_the_replacement_box() {
        let frame = render(
            &rgb_sign(64, 16),
            &message("€", Effect::Static, Font::Small),
            0,
        );
        // A hollow 5×7 box at the letter's place: 5 + 5 across, 5 + 5 down the sides.
        let mut expected = BTreeSet::new();
        for x in 29..=33 {
            expected.insert((x, 4));
            expected.insert((x, 10));
        }
        for y in 5..=9 {
            expected.insert((29, y));
            expected.insert((33, y));
        }
        assert_eq!(lit(&frame), expected, "\n{}", art(&frame));
        let tall = render(
            &rgb_sign(64, 16),
            &message("日", Effect::Static, Font::Tall),
            0,
        );
        assert_eq!(tall.lit_count(), 7 * 2 + 8 * 2);
    }

    #[test]
    fn latin1_letters_render_with_their_accents() {
        let plain = render(
            &rgb_sign(64, 16),
            &message("E", Effect::Static, Font::Small),
            0,
        );
        let accented = render(
            &rgb_sign(64, 16),
            &message("É", Effect::Static, Font::Small),
            0,
        );
        // The accent sits in the row above the capital (cell row 0, sign row 3).
        let extra: BTreeSet<_> = lit(&accented).difference(&lit(&plain)).copied().collect();
        assert_eq!(extra, BTreeSet::from([(32, 3)]), "\n{}", art(&accented));
        for text in ["ñ", "ß", "Ø", "¿", "ÿ", "©"] {
            let frame = render(
                &rgb_sign(64, 16),
                &message(text, Effect::Static, Font::Tall),
                0,
            );
            let replacement = render(
                &rgb_sign(64, 16),
                &message("€", Effect::Static, Font::Tall),
                0,
            );
            assert!(frame.lit_count() > 0, "{text}");
            assert_ne!(lit(&frame), lit(&replacement), "{text}");
        }
    }

    #[test]
    fn mono_signs_show_their_own_colour_by_intensity() {
        let mut sign = rgb_sign(64, 16);
        sign.color_depth = ColorDepth::MonoAmber;
        let mut m = message("I", Effect::Static, Font::Small);
        m.color = TextColor::Solid(Rgb::new(0, 0, 255)); // full intensity, any hue
        let amber = led_color(ColorDepth::MonoAmber).unwrap();
        assert_eq!(render(&sign, &m, 0).get(31, 5), Some(amber));
        m.color = TextColor::Solid(Rgb::new(0x80, 0, 0)); // about half intensity
        assert_eq!(
            render(&sign, &m, 0).get(31, 5),
            Some(Rgb::new(0x80, 0x58, 0x00))
        );
        sign.color_depth = ColorDepth::MonoGreen;
        m.color = TextColor::Rainbow;
        assert_eq!(
            render(&sign, &m, 0).get(31, 5),
            led_color(ColorDepth::MonoGreen)
        );
    }

    #[test]
    fn brightness_scales_text_and_background() {
        let mut sign = rgb_sign(64, 16);
        sign.brightness = 50;
        let mut m = message("I", Effect::Static, Font::Small);
        m.background = Rgb::new(0, 0, 100);
        let frame = render(&sign, &m, 0);
        assert_eq!(frame.get(31, 5), Some(Rgb::new(128, 128, 128)));
        assert_eq!(frame.background, Rgb::new(0, 0, 50));
        assert_eq!(frame.get(0, 0), Some(Rgb::new(0, 0, 50)));
        assert_eq!(frame.lit_count(), 11);
        sign.brightness = 0;
        assert_eq!(render(&sign, &m, 0).lit_count(), 0);
    }

    #[test]
    fn rainbow_varies_by_column_and_time() {
        let sign = rgb_sign(64, 16);
        let mut m = message("HHHHHHHHHH", Effect::Static, Font::Small);
        m.color = TextColor::Rainbow;
        let frame = render(&sign, &m, 0);
        let colours: BTreeSet<_> = lit(&frame)
            .into_iter()
            .map(|(x, y)| frame.get(x, y).map(|c| (c.r, c.g, c.b)))
            .collect();
        assert!(colours.len() > 10, "{colours:?}");
        // Within a column the colour is the same.
        assert_eq!(frame.get(2, 4), frame.get(2, 10));
        let later = render(&sign, &m, RAINBOW_CYCLE_MS / 3);
        assert_ne!(frame.get(2, 4), later.get(2, 4));
        assert_eq!(lit(&frame), lit(&later));
        // One full cycle later it is the same again.
        assert_eq!(render(&sign, &m, RAINBOW_CYCLE_MS), frame);
    }

    #[test]
    fn out_of_range_models_render_bounded_frames() {
        let mut sign = rgb_sign(0, 60_000);
        sign.brightness = 255;
        let mut m = message("X", Effect::ScrollLeft, Font::Tall);
        m.speed = 0;
        m.duration = 0;
        let frame = render(&sign, &m, u64::MAX);
        assert_eq!((frame.width, frame.height), (1, 64));
        for effect in Effect::ALL {
            m.effect = *effect;
            let _ = render(&sign, &m, u64::MAX);
            let _ = render(&sign, &m, 0);
        }
        let _ = render(
            &rgb_sign(256, 64),
            &message(&"W".repeat(1000), Effect::ScrollUp, Font::Small),
            12_345,
        );
    }

    #[test]
    fn render_into_reuses_the_buffer() {
        let sign = rgb_sign(256, 64);
        let m = message("Hello", Effect::ScrollLeft, Font::Tall);
        let mut frame = Frame::default();
        render_into(&mut frame, &sign, &m, 0);
        let buffer = frame.pixels.as_ptr();
        for t in (0..3000).step_by(33) {
            render_into(&mut frame, &sign, &m, t);
            assert_eq!(frame, render(&sign, &m, t));
        }
        assert_eq!(frame.pixels.as_ptr(), buffer);
    }

    #[test]
    fn frame_get_is_none_outside() {
        let frame = Frame::new(4, 2, Rgb::BLACK);
        assert_eq!(frame.get(3, 1), Some(Rgb::BLACK));
        assert_eq!(frame.get(4, 0), None);
        assert_eq!(frame.get(0, 2), None);
        assert_eq!(frame.lit_count(), 0);
    }

    #[test]
    fn hex_colours_round_trip() {
        let c = Rgb::from_hex("#0A1b2C").unwrap();
        assert_eq!(c, Rgb::new(10, 27, 44));
        assert_eq!(c.to_hex(), "#0a1b2c");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"#0a1b2c\"");
        assert_eq!(serde_json::from_str::<Rgb>("\"#0a1b2c\"").unwrap(), c);
        assert!(serde_json::from_str::<Rgb>("\"0a1b2c\"").is_err());
    }
}
