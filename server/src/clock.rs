//! Wall-clock timestamps for change events, as RFC 3339 UTC with milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, formatted like `2026-11-28T10:00:00.000Z`.
pub fn now_rfc3339() -> String {
    format_millis(now_millis())
}

/// Formats milliseconds since the Unix epoch (proleptic Gregorian calendar).
pub fn format_millis(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z");
    }
    // Every write stamps its change: digits pushed straight into the one
    // allocation are several times cheaper than `format!`'s machinery.
    let mut out = String::with_capacity(24);
    for (value, width, separator) in [
        (y, 4, '-'),
        (i64::from(m), 2, '-'),
        (i64::from(d), 2, 'T'),
        (hh, 2, ':'),
        (mm, 2, ':'),
        (ss, 2, '.'),
        (ms, 3, 'Z'),
    ] {
        push_digits(&mut out, value, width);
        out.push(separator);
    }
    out
}

/// Pushes the last `width` decimal digits of `value` (0 or more), zero-padded.
fn push_digits(out: &mut String, value: i64, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10_i64.pow(place)).rem_euclid(10) as u8;
        out.push(char::from(b'0' + digit));
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads back a timestamp made by [`format_millis`] (`2026-11-28T10:00:00.000Z`); any
/// other shape is `None`, since only our own stored timestamps are ever parsed.
pub fn parse_millis(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 24 || !text.is_ascii() {
        return None;
    }
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    if separators.iter().any(|&(i, c)| bytes.get(i) != Some(&c)) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = text.get(from..to)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let (y, m, d) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hh, mm, ss, ms) = (
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 23)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// Howard Hinnant's civil-to-days algorithm, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_millis(1_795_860_000_000), "2026-11-28T10:00:00.000Z");
        assert_eq!(format_millis(1_795_873_599_999), "2026-11-28T13:46:39.999Z");
        // Outside years 0–9999 the general formatting takes over.
        assert_eq!(
            format_millis(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        for millis in [0, 951_782_400_123, 1_795_860_000_000, 1_795_860_012_345] {
            assert_eq!(parse_millis(&format_millis(millis)), Some(millis));
        }
        assert_eq!(parse_millis("2026-11-28T10:00:00Z"), None);
        assert_eq!(parse_millis("2026-13-28T10:00:00.000Z"), None);
        assert_eq!(parse_millis("2026-11-28T10:00:+0.000Z"), None);
        assert_eq!(parse_millis("2026-11-28T10:00:00.000ZZ"), None);
    }
}
