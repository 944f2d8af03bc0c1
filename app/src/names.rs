//! Which characters a name may hold: record ids, MQTT client ids, user
//! names, topics and filters all follow one rule, so a record any protocol
//! accepts can be named on every other (an id the MQTT codec would refuse as a
//! topic would be stored and never delivered).

/// Whether `c` is a code point a name must not hold: a control character
/// (U+0000–U+001F, U+007F–U+009F, exactly Rust's `char::is_control`) or a
/// Unicode non-character (U+FDD0–U+FDEF, U+nFFFE and U+nFFFF in every plane).
/// MQTT 5.0 §1.5.4 makes U+0000 malformed and says the rest SHOULD NOT
/// appear; they break logs and topic trees, so Marquee refuses them everywhere.
pub fn is_disallowed_in_name(c: char) -> bool {
    let code = u32::from(c);
    c.is_control() || (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::is_disallowed_in_name;

    #[test]
    fn controls_and_non_characters_are_refused_and_their_neighbours_kept() {
        for c in [
            '\0',
            '\u{1}',
            '\n',
            '\u{7f}',
            '\u{9f}',
            '\u{fdd0}',
            '\u{fdef}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{1fffe}',
            '\u{10ffff}',
        ] {
            assert!(is_disallowed_in_name(c), "{c:?} must be refused");
        }
        for c in [
            ' ',
            '~',
            '\u{a0}',
            'é',
            '\u{fdcf}',
            '\u{fdf0}',
            '\u{fffd}',
            '日',
            '\u{1f600}',
        ] {
            assert!(!is_disallowed_in_name(c), "{c:?} must be kept");
        }
    }
}
