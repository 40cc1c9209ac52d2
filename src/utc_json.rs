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
//! Use with `#[serde(serialize_with = "crate::utc_json::serialize")]`.
//!
//! Parsing has the mirror fast path (`deserialize_with = "crate::utc_json::deserialize"`, or
//! `deserialize_opt` for `Option`): every feature record carries two timestamps, and chrono's
//! RFC 3339 parser was about a fifth of parsing one. The fast path takes only the exact form
//! `YYYY-MM-DDTHH:MM:SSZ` with a valid date and time; anything else (offsets, fractions, lower
//! case, leap seconds, invalid dates) goes to chrono's parser, so the accepted values and the
//! errors are chrono's.
//!
//! ```text
//!   "2013-10-01T13:00:00Z" ──20 bytes, digits and separators in place, valid date──> DateTime<Utc>
//!   any other string ─────────────────────────────────────────────────────────────> chrono's parse
//! ```

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::de::{self, Deserialize, Deserializer, Visitor};
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

/// Parses `YYYY-MM-DDTHH:MM:SSZ` exactly; `None` for every other string (left to chrono).
pub fn parse_fast(s: &str) -> Option<DateTime<Utc>> {
    parse_fast_bytes(s.as_bytes())
}

/// [`parse_fast`] of a string's bytes (anything but the ASCII form is `None`, so they need not
/// have been checked as UTF-8).
pub fn parse_fast_bytes(b: &[u8]) -> Option<DateTime<Utc>> {
    let b: &[u8; 20] = b.try_into().ok()?;
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let digit = |i: usize| -> Option<u32> { b[i].is_ascii_digit().then(|| u32::from(b[i] - b'0')) };
    let two = |i: usize| -> Option<u32> { Some(digit(i)? * 10 + digit(i + 1)?) };
    let year = two(0)? * 100 + two(2)?;
    let date = NaiveDate::from_ymd_opt(year as i32, two(5)?, two(8)?)?;
    Some(date.and_hms_opt(two(11)?, two(14)?, two(17)?)?.and_utc())
}

/// chrono's own parse of a `DateTime<Utc>` (what its `Deserialize` does).
fn parse_chrono(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    s.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc))
}

struct UtcVisitor;

impl Visitor<'_> for UtcVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<DateTime<Utc>, E> {
        match parse_fast(s) {
            Some(t) => Ok(t),
            None => parse_chrono(s).map_err(E::custom),
        }
    }
}

/// A `DateTime<Utc>` read through the fast path.
struct Fast(DateTime<Utc>);

impl<'de> Deserialize<'de> for Fast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fast, D::Error> {
        d.deserialize_str(UtcVisitor).map(Fast)
    }
}

/// `deserialize_with` for `DateTime<Utc>` fields: the same values and errors as chrono's.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(UtcVisitor)
}

/// `deserialize_with` for `Option<DateTime<Utc>>` fields (`null` is `None`).
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<Fast>::deserialize(d).map(|t| t.map(|f| f.0))
}

/// Random instants from year -1 to about 10,700, a third of them on whole seconds (the
/// fast paths' tests; the same sequence on every run).
#[cfg(test)]
pub(crate) fn random_times(count: usize) -> impl Iterator<Item = DateTime<Utc>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count).filter_map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let secs = (x % 400_000_000_000) as i64 - 62_000_000_000;
        let nanos = if x % 3 == 0 { 0 } else { (x >> 20) as u32 % 1_000_000_000 };
        DateTime::from_timestamp(secs, nanos)
    })
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
        for t in random_times(2000) {
            same(t);
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

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Parsed {
        #[serde(deserialize_with = "deserialize")]
        t: DateTime<Utc>,
        #[serde(default, deserialize_with = "deserialize_opt")]
        o: Option<DateTime<Utc>>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Chrono {
        t: DateTime<Utc>,
        #[serde(default)]
        o: Option<DateTime<Utc>>,
    }

    /// Both parsers accept the same strings with the same values.
    fn parses_the_same(text: &str) {
        let json = serde_json::to_string(text).unwrap();
        let fast = serde_json::from_str::<Parsed>(&format!("{{\"t\":{json},\"o\":{json}}}"));
        let slow = serde_json::from_str::<Chrono>(&format!("{{\"t\":{json},\"o\":{json}}}"));
        match (fast, slow) {
            (Ok(f), Ok(s)) => assert_eq!((f.t, f.o), (s.t, s.o), "{text}"),
            (Err(_), Err(_)) => {}
            (f, s) => panic!("{text}: fast {f:?}, chrono {s:?}"),
        }
    }

    #[test]
    fn parsing_matches_chrono() {
        for text in [
            "2013-01-01T05:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2000-02-29T12:00:00Z",
            "2001-02-29T12:00:00Z",
            "2013-13-01T00:00:00Z",
            "2013-00-10T00:00:00Z",
            "2013-01-32T00:00:00Z",
            "2013-01-01T24:00:00Z",
            "2013-01-01T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2013-01-01t05:00:00z",
            "2013-01-01 05:00:00Z",
            "2013-01-01T05:00:00+01:00",
            "2013-01-01T05:00:00.5Z",
            "2013-01-01T05:00:00",
            "2013-1-01T05:00:00Z",
            "2013-01-01T05:00:0xZ",
            "+013-01-01T05:00:00Z",
            "2013-01-01T05:00:00Z ",
            "",
        ] {
            parses_the_same(text);
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 300_000_000_000) as i64 - 62_000_000_000;
            if let Some(t) = DateTime::from_timestamp(secs, 0) {
                let mut buf = [0u8; 30];
                if let Some(n) = format(&t, &mut buf) {
                    let text = std::str::from_utf8(&buf[..n]).unwrap();
                    assert_eq!(parse_fast(text), Some(t), "{text}");
                    parses_the_same(text);
                    // Every single-byte change is parsed as chrono parses it.
                    let i = (x >> 40) as usize % n;
                    let mut bytes = buf[..n].to_vec();
                    bytes[i] = b"0123456789-:TZtz +."[(x >> 50) as usize % 19];
                    parses_the_same(std::str::from_utf8(&bytes).unwrap());
                }
            }
        }
    }

    #[test]
    fn null_and_absent_are_none_and_wrong_types_are_errors() {
        let p: Parsed = serde_json::from_str(r#"{"t":"2013-01-01T05:00:00Z","o":null}"#).unwrap();
        assert_eq!(p.o, None);
        let p: Parsed = serde_json::from_str(r#"{"t":"2013-01-01T05:00:00Z"}"#).unwrap();
        assert_eq!(p.o, None);
        assert!(serde_json::from_str::<Parsed>(r#"{"t":5}"#).is_err());
        assert!(serde_json::from_str::<Parsed>(r#"{"t":null}"#).is_err());
        assert!(serde_json::from_str::<Parsed>(r#"{"t":"2013-01-01T05:00:00Z","o":[]}"#).is_err());
    }
}
