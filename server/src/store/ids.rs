//! Server-made record ids (`POST /api/{table}/`): ULIDs (<https://github.com/ulid/spec>),
//! 26 characters of Crockford base32, a 48-bit millisecond time and then 80 random bits.
//!
//! They sort by creation, like the zero-padded seq they replace, but need nothing from the
//! store: a shared store (etcd) knows a write's revision only after it commits, and nodes
//! making ids at once must not collide.

use std::cell::Cell;

/// Crockford's base32: no I, L, O or U, so an id read aloud or retyped stays the same.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Makes ids that sort after every id it made before: within one millisecond the last
/// id plus one (the spec's monotonic mode), and the same when the wall clock steps back.
#[derive(Debug, Default)]
pub struct IdMaker {
    last: Cell<u128>,
}

impl IdMaker {
    /// The next id at `now_ms` (milliseconds since the Unix epoch), from 80 random bits.
    pub fn next(&self, now_ms: u64, random: [u8; 10]) -> String {
        let mut bits = [0u8; 16];
        bits[6..].copy_from_slice(&random);
        let time = u128::from(now_ms & ((1 << 48) - 1)) << 80;
        let fresh = time | u128::from_be_bytes(bits);
        let id = if fresh > self.last.get() {
            fresh
        } else {
            self.last.get().wrapping_add(1)
        };
        self.last.set(id);
        encode(id)
    }
}

/// 128 bits as 26 base32 digits, most significant first (the first digit holds 3 bits).
fn encode(mut value: u128) -> String {
    let mut digits = [b'0'; 26];
    for digit in digits.iter_mut().rev() {
        // `value & 31` is always a digit of the alphabet.
        *digit = ALPHABET.get((value & 31) as usize).copied().unwrap_or(b'0');
        value >>= 5;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_part_is_the_specs_own_example() {
        // The spec's README: 01ARZ3NDEK is the time 1469922850259.
        let id = IdMaker::default().next(1_469_922_850_259, [0; 10]);
        assert_eq!(id, "01ARZ3NDEK0000000000000000");
        let id = IdMaker::default().next((1 << 48) - 1, [0xff; 10]);
        assert_eq!(id, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    }

    #[test]
    fn ids_sort_in_the_order_they_were_made() {
        let maker = IdMaker::default();
        let made = [
            maker.next(1_000, [9; 10]),
            // Same millisecond, smaller random part: still after the last one.
            maker.next(1_000, [1; 10]),
            // The clock stepped back.
            maker.next(999, [0xff; 10]),
            maker.next(1_001, [0; 10]),
        ];
        for pair in made.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        // Both stayed in the last id's millisecond rather than jump or go back.
        assert_eq!(made[1][..10], made[0][..10]);
        assert_eq!(made[2][..10], made[0][..10]);
        assert!(made.iter().all(|id| id.len() == 26));
    }
}
