//! Fast serialisation of UTC timestamps in the JSON contracts, byte for byte what chrono's own
//! `Serialize` writes (RFC 3339, `Z`, a fraction of 3, 6 or 9 digits only when needed), without
//! chrono's `fmt` machinery: a prediction carries 26 timestamps, and formatting them through
//! `collect_str` was a large share of the cost of serialising one (profiled while writing this).
//!
//! ```text
//!   DateTime<Utc> ──year in 0..=9999, no leap second──> "2013-10-01T13:00:00Z" (fixed-size buffer) ──> serialize_str
//!                 └─otherwise──────────────────────────> chrono's Serialize (identical text)
//! ```
//!
//! Use with `#[serde(serialize_with = "crate::utc_json::serialize")]`; deserialisation is
//! unchanged (chrono's).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

fn two(b: &mut [u8], at: usize, v: u32) {
    b[at] = b'0' + (v / 10 % 10) as u8;
    b[at + 1] = b'0' + (v % 10) as u8;
}

/// Writes `t` into `buf` as chrono's serialiser would; returns the length, or `None` for the
/// cases left to chrono (years outside 0..=9999, leap seconds).
pub fn format(t: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    // One conversion to the calendar; DateTime<Utc>'s own accessors convert on every call.
    let n = t.naive_utc();
    let year = n.year();
    let nano = n.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    buf[..20].copy_from_slice(b"0000-00-00T00:00:00Z");
    two(buf, 0, year as u32 / 100);
    two(buf, 2, year as u32 % 100);
    two(buf, 5, n.month());
    two(buf, 8, n.day());
    two(buf, 11, n.hour());
    two(buf, 14, n.minute());
    two(buf, 17, n.second());
    let (digits, mut frac) = match nano {
        0 => return Some(20),
        n if n % 1_000_000 == 0 => (3, n / 1_000_000),
        n if n % 1_000 == 0 => (6, n / 1_000),
        n => (9, n),
    };
    buf[19] = b'.';
    for i in (0..digits).rev() {
        buf[20 + i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    buf[20 + digits] = b'Z';
    Some(21 + digits)
}

/// `serialize_with` for `DateTime<Utc>` fields.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match format(t, &mut buf) {
        // Only ASCII digits and separators were written.
        Some(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default()),
        None => t.serialize(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(Serialize)]
    struct Fast(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    fn same(t: DateTime<Utc>) {
        assert_eq!(
            serde_json::to_string(&Fast(t)).unwrap(),
            serde_json::to_string(&t).unwrap(),
            "{t:?}"
        );
    }

    #[test]
    fn identical_to_chrono() {
        let base = Utc.with_ymd_and_hms(2013, 10, 1, 12, 0, 0).unwrap();
        for ns in [
            0,
            1,
            7,
            999,
            1_000,
            123_000,
            999_999,
            1_000_000,
            5_000_000,
            120_000_000,
            999_999_999,
            123_456_789,
        ] {
            same(base + chrono::Duration::nanoseconds(ns));
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 400_000_000_000) as i64 - 62_000_000_000;
            let nanos = if x % 3 == 0 { 0 } else { (x >> 20) as u32 % 1_000_000_000 };
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                same(t);
            }
        }
        for (y, m, d) in [(0, 1, 1), (9999, 12, 31), (-1, 1, 1), (10000, 1, 1), (1970, 1, 1), (2000, 2, 29)] {
            if let Some(t) = Utc.with_ymd_and_hms(y, m, d, 23, 59, 59).single() {
                same(t);
            }
        }
    }

    #[test]
    fn leap_seconds_fall_back_to_chrono() {
        let t = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        let mut buf = [0u8; 30];
        assert!(format(&t, &mut buf).is_none());
        same(t);
    }
}
