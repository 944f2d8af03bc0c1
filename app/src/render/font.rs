//! The built-in bitmap fonts: glyph lookup for printable ASCII and Latin-1, with a hollow
//! box for every character a font cannot draw so that missing glyphs stay visible.

use super::{font_small, font_tall};
use crate::sign::Font;

/// A fixed-width bitmap font whose glyphs are packed one `u128` each, one byte per row.
#[derive(Debug)]
pub(super) struct BitmapFont {
    /// Columns a character advances by, spacing included.
    pub(super) advance: u16,
    /// Rows of a line: accents above and descenders below included.
    pub(super) height: u16,
    /// Blank columns at the right of the glyphs: dropped when measuring text so that
    /// centred and right-aligned text lines up with what is actually lit.
    pub(super) trailing_gap: u16,
    glyphs: &'static [u128; GLYPH_COUNT],
    replacement: u128,
}

/// Printable ASCII (95) plus the Latin-1 supplement from U+00A0 (96).
const GLYPH_COUNT: usize = 191;

pub(super) const SMALL: BitmapFont = BitmapFont {
    advance: 6,
    height: 10,
    trailing_gap: 1,
    glyphs: &font_small::GLYPHS,
    // The size of a capital, so it reads as "a character is here" without looking like one.
    replacement: 0x00_f8_88_88_88_88_88_f8_00_00,
};

pub(super) const TALL: BitmapFont = BitmapFont {
    advance: 8,
    height: 16,
    trailing_gap: 1,
    glyphs: &font_tall::GLYPHS,
    replacement: 0x00_00_fe_82_82_82_82_82_82_82_82_fe_00_00_00_00,
};

pub(super) fn font(font: Font) -> &'static BitmapFont {
    match font {
        Font::Small => &SMALL,
        Font::Tall => &TALL,
    }
}

/// One glyph's rows, ready to test pixels in.
#[derive(Clone, Copy, Debug)]
pub(super) struct Glyph {
    bits: u128,
    height: u16,
}

impl Glyph {
    /// Whether the glyph lights (`x`, `y`) of its cell; outside the cell nothing is lit.
    #[cfg(test)]
    pub(super) fn lit(self, x: u16, y: u16) -> bool {
        if x >= 8 || y >= self.height {
            return false;
        }
        let row = (self.bits >> (8 * u32::from(self.height - 1 - y))) & 0xff;
        row & (0x80 >> x) != 0
    }

    /// The glyph's row `y` as a byte, bit 7 the leftmost column.
    pub(super) fn row(self, y: u16) -> u8 {
        if y >= self.height {
            return 0;
        }
        // The mask keeps one byte, so the narrowing cannot lose anything.
        ((self.bits >> (8 * u32::from(self.height - 1 - y))) & 0xff) as u8
    }
}

/// Where `c`'s glyph is in a font's table, if the fonts have one.
fn glyph_index(c: char) -> Option<u32> {
    let code = u32::from(c);
    match code {
        0x20..=0x7e => Some(code - 0x20),
        0xa0..=0xff => Some(code - 0xa0 + 95),
        // A tab has no glyph of its own but is plainly meant as white space.
        0x09 => Some(0),
        _ => None,
    }
}

impl BitmapFont {
    pub(super) fn glyph(&self, c: char) -> Glyph {
        let bits = glyph_index(c)
            .and_then(|i| self.glyphs.get(i as usize))
            .copied()
            .unwrap_or(self.replacement);
        Glyph {
            bits,
            height: self.height,
        }
    }

    /// Whether the font has a glyph of its own for `c` (else it draws the hollow box).
    pub(super) fn draws(&self, c: char) -> bool {
        glyph_index(c).is_some_and(|i| (i as usize) < self.glyphs.len())
    }

    /// Width of `chars` characters set in one line, without the spacing after the last.
    pub(super) fn text_width(&self, chars: usize) -> u32 {
        if chars == 0 {
            return 0;
        }
        let chars = u32::try_from(chars).unwrap_or(u32::MAX);
        chars
            .saturating_mul(u32::from(self.advance))
            .saturating_sub(u32::from(self.trailing_gap))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn art(font: &BitmapFont, c: char) -> Vec<String> {
        let g = font.glyph(c);
        (0..font.height)
            .map(|y| {
                (0..font.advance)
                    .map(|x| if g.lit(x, y) { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn small_capital_a_is_the_classic_5x7_shape() {
        assert_eq!(
            art(&SMALL, 'A'),
            [
                "......", "..#...", ".#.#..", "#...#.", "#...#.", "#####.", "#...#.", "#...#.",
                "......", "......",
            ]
        );
    }

    #[test]
    fn small_accented_capital_keeps_its_accent_above_the_letter() {
        let a = art(&SMALL, 'É');
        assert_eq!(a[0], "...#..");
        assert_eq!(a[1], "#####.");
        assert_eq!(a[7], "#####.");
    }

    #[test]
    fn small_descender_uses_the_rows_below_the_baseline() {
        let g = art(&SMALL, 'g');
        assert_eq!(g[7], "....#.");
        assert_eq!(g[8], "#...#.");
        assert_eq!(g[9], ".###..");
    }

    #[test]
    fn tall_capital_h_is_two_pixel_strokes() {
        let h = art(&TALL, 'H');
        assert_eq!(h[2], "##...##.");
        assert_eq!(h[6], "#######.");
        assert_eq!(h[11], "##...##.");
        assert_eq!(h[12], "........");
    }

    #[test]
    fn every_printable_ascii_and_latin1_character_has_a_glyph() {
        for font in [&SMALL, &TALL] {
            for c in (' '..='~').chain('\u{a0}'..='\u{ff}') {
                let g = font.glyph(c);
                assert_ne!(g.bits, font.replacement, "{c:?}");
                let blank = c == ' ' || c == '\u{a0}';
                assert_eq!(g.bits == 0, blank, "{c:?}");
            }
        }
    }

    #[test]
    fn characters_outside_the_fonts_get_the_hollow_box() {
        for c in ['€', '→', '\u{7f}', '\u{1}', '日'] {
            assert_eq!(SMALL.glyph(c).bits, SMALL.replacement);
            assert_eq!(TALL.glyph(c).bits, TALL.replacement);
        }
        assert_eq!(
            art(&SMALL, '€')[1..8],
            [
                "#####.", "#...#.", "#...#.", "#...#.", "#...#.", "#...#.", "#####."
            ]
        );
    }

    #[test]
    fn text_width_drops_the_spacing_after_the_last_character() {
        assert_eq!(SMALL.text_width(0), 0);
        assert_eq!(SMALL.text_width(1), 5);
        assert_eq!(SMALL.text_width(3), 17);
        assert_eq!(TALL.text_width(2), 15);
    }
}
