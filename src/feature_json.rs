//! The fast path for reading a feature record from `weather-features`: one pass over the bytes
//! for the flat object the contract describes, without serde's visitor machinery.
//!
//! Parsing was the largest single stage of a prediction after encoding (profile in
//! BENCHMARKS.md), and a feature record is a flat object of thirteen known fields: two strings
//! and two timestamps, one integer and nine numbers or `null`s.
//!
//! ```text
//!   bytes ──read──┬── the plain form (below) ──> FeatureRecord, the same values serde_json gives
//!                 └── anything else ───────────> None: the caller parses with serde_json, whose
//!                                                 values and errors stay the contract's
//! ```
//!
//! The plain form is a JSON object, with any JSON whitespace, whose keys are contract fields
//! (each at most once, in any order) written without escapes, where
//! - `station_id` is a string without escapes or control characters,
//! - `window_end` (and `window_start`, which may also be `null` or absent) is a string in the
//!   exact form `YYYY-MM-DDTHH:MM:SSZ` with a valid date and time ([`utc_json::parse_fast`]),
//! - `count` is an integer literal of at most 19 digits,
//! - every other field is `null` or a JSON number of at most 19 digits before its exponent and
//!   at most 3 in it, whose value is finite.
//!
//! Anything outside it (unknown or repeated keys, escapes, other types, longer numbers, trailing
//! bytes, broken JSON) returns `None`, so what is accepted, and why the rest is refused, is
//! decided by serde_json exactly as before. On the plain form the values are the ones serde_json
//! gives (it parses with `float_roundtrip`, i.e. correctly rounded): a number whose digits `m`
//! are below 2^53 and whose decimal exponent `e` is within +-22 is computed as `m * 10^e` or
//! `m / 10^-e`, one IEEE operation on exact operands and so correctly rounded; any other by the
//! standard library's correctly rounded parser; an integer literal becomes `m as f64` with its
//! sign, as serde_json's `visit_u64` / `visit_i64` make it. Tests compare both parsers' values
//! bit for bit on every record of the NYC data, random number texts and random corruptions.

use chrono::{DateTime, Utc};

use crate::contract::FeatureRecord;
use crate::utc_json;

/// `10^k` for `k <= 22`: every one exact in `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The record in `bytes` when it is in the plain form (module doc), else `None`.
pub fn read(bytes: &[u8]) -> Option<FeatureRecord> {
    let mut c = Cursor { b: bytes, i: 0 };
    let mut seen = 0u16;
    let mut station_id = None;
    let mut window_start = None;
    let mut window_end = None;
    let mut count = None;
    let mut numbers = [None; 9];
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek()? == b'}' {
        return None; // required fields missing: serde_json says which
    }
    let mut expected = 0;
    loop {
        let field = c.key(expected)?;
        expected = field + 1;
        if seen & (1 << field) != 0 {
            return None;
        }
        seen |= 1 << field;
        c.ws();
        c.eat(b':')?;
        c.ws();
        match field {
            0 => station_id = Some(c.string()?),
            1 => window_start = c.null_or(|c| c.time())?,
            2 => window_end = Some(c.time()?),
            3 => count = Some(c.count()?),
            k => numbers[k as usize - 4] = c.null_or(Cursor::number)?,
        }
        c.ws();
        match c.next()? {
            b',' => c.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    c.ws();
    if c.i != bytes.len() {
        return None;
    }
    Some(FeatureRecord::from_parts(
        station_id?.to_owned(),
        window_start,
        window_end?,
        count?,
        numbers,
    ))
}

/// The contract's fields, quoted, in the struct's order (numbers from index 4).
const FIELDS: [&[u8]; 13] = [
    b"\"station_id\"",
    b"\"window_start\"",
    b"\"window_end\"",
    b"\"count\"",
    b"\"temperature_mean\"",
    b"\"temperature_min\"",
    b"\"temperature_max\"",
    b"\"temperature_std\"",
    b"\"humidity_mean\"",
    b"\"pressure_mean\"",
    b"\"wind_speed_mean\"",
    b"\"wind_speed_max\"",
    b"\"precipitation_sum\"",
];

/// A position in the message.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

/// A JSON number's parts: sign, up to 19 significant digits, decimal exponent, and whether it
/// was written as an integer.
struct Number {
    negative: bool,
    digits: u64,
    exponent: i32,
    integer: bool,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The index of the key here in [`FIELDS`], trying `expected` first (the fields' order as
    /// serialised) before comparing with each.
    fn key(&mut self, expected: u32) -> Option<u32> {
        let rest = &self.b[self.i..];
        let at = |k: usize| rest.starts_with(FIELDS[k]).then_some(k);
        let k = at(expected as usize % FIELDS.len()).or_else(|| (0..FIELDS.len()).find_map(at))?;
        self.i += FIELDS[k].len();
        Some(k as u32)
    }

    /// A string's bytes, when it has no escapes or control characters.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.b[self.i..];
        let n = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[n] != b'"' {
            return None;
        }
        self.i += n + 1;
        Some(&rest[..n])
    }

    /// A string without escapes or control characters, as valid UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A timestamp string in the fast form (20 bytes, all ASCII digits and separators).
    fn time(&mut self) -> Option<DateTime<Utc>> {
        let s = self.b.get(self.i..self.i + 22)?;
        if s[0] != b'"' || s[21] != b'"' {
            return None;
        }
        self.i += 22;
        utc_json::parse_fast_bytes(&s[1..21])
    }

    /// `null` as `Some(None)`, else what `value` reads, as `Some(Some(_))`.
    fn null_or<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            let end = self.i + 4;
            (self.b.get(self.i..end)? == b"null").then(|| self.i = end)?;
            return Some(None);
        }
        value(self).map(Some)
    }

    /// `count`: an integer literal (what serde_json reads as a `u64`).
    fn count(&mut self) -> Option<u64> {
        let n = self.parts()?;
        (n.integer && !n.negative && n.exponent == 0).then_some(n.digits)
    }

    /// A finite number, with serde_json's value.
    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        let n = self.parts()?;
        let magnitude = if n.integer {
            n.digits as f64
        } else if n.digits < 1 << 53 && (-22..=22).contains(&n.exponent) {
            if n.exponent < 0 {
                n.digits as f64 / POW10[(-n.exponent) as usize]
            } else {
                n.digits as f64 * POW10[n.exponent as usize]
            }
        } else {
            let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
            let v: f64 = text.parse().ok()?;
            return v.is_finite().then_some(v);
        };
        Some(if n.negative { -magnitude } else { magnitude })
    }

    /// Reads a number in JSON's grammar, `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, with
    /// at most 19 digits before the exponent and at most 3 in it.
    fn parts(&mut self) -> Option<Number> {
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let mut n = Number {
            negative,
            digits: 0,
            exponent: 0,
            integer: true,
        };
        let mut count = 0u32;
        let first = self.peek()?;
        if first == b'0' {
            self.i += 1;
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return None; // a leading zero: serde_json refuses it
            }
        } else {
            count += self.digits(&mut n.digits);
            if count == 0 {
                return None;
            }
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let after = self.digits(&mut n.digits);
            if after == 0 {
                return None;
            }
            count += after;
            n.exponent = -(after as i32);
            n.integer = false;
        }
        if count > 19 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let negative_exp = match self.peek()? {
                b'-' => {
                    self.i += 1;
                    true
                }
                b'+' => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let mut e = 0u64;
            let len = self.digits(&mut e);
            if len == 0 || len > 3 {
                return None;
            }
            n.exponent += if negative_exp { -(e as i32) } else { e as i32 };
            n.integer = false;
        }
        Some(n)
    }

    /// Appends the decimal digits here to `acc` (wrapping past 19: the caller refuses those) and
    /// returns how many there were.
    fn digits(&mut self, acc: &mut u64) -> u32 {
        let mut len = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            *acc = acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
            len += 1;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::iforest::SplitMix64;

    /// serde_json's reading of `bytes` (what `FeatureRecord::parse` did before the fast path).
    fn serde(bytes: &[u8]) -> Option<FeatureRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// Equal, numbers bit for bit (`-0.0` is not `0.0` here).
    fn same(a: &FeatureRecord, b: &FeatureRecord) -> bool {
        let bits = |r: &FeatureRecord| r.numeric_fields().map(|(_, v)| v.map(f64::to_bits));
        a == b && bits(a) == bits(b)
    }

    /// Whatever the fast path reads, serde_json reads the same; whatever serde_json refuses,
    /// the fast path leaves to it. Returns whether the fast path read it.
    fn agree(bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes);
        match (read(bytes), serde(bytes)) {
            (Some(fast), Some(slow)) => {
                assert!(same(&fast, &slow), "{text}\nfast {fast:?}\nserde {slow:?}");
                true
            }
            (Some(fast), None) => panic!("the fast path read what serde_json refuses: {text}\n{fast:?}"),
            (None, _) => false,
        }
    }

    const PLAIN: &str = r#"{"station_id":"EWR","window_start":"2013-01-01T05:00:00Z","window_end":"2013-01-01T06:00:00Z","count":1,"temperature_mean":3.9000000000000017,"temperature_min":3.9000000000000017,"temperature_max":3.9000000000000017,"temperature_std":0.0,"humidity_mean":59.37,"pressure_mean":1012.0,"wind_speed_mean":4.630002220799999,"wind_speed_max":4.630002220799999,"precipitation_sum":0.0}"#;

    #[test]
    fn every_record_of_the_nyc_data_reads_as_serde_json_reads_it() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/features/nyc_2013.jsonl")).unwrap();
        let mut n = 0;
        for line in text.lines() {
            assert!(agree(line.as_bytes()), "left to serde_json: {line}");
            n += 1;
        }
        assert!(n > 20_000, "{n} records");
    }

    #[test]
    fn other_layouts_of_the_plain_form_are_read_and_the_rest_is_left_to_serde_json() {
        let read_by_fast_path = [
            PLAIN.to_string(),
            // whitespace everywhere JSON allows it, keys in another order, nulls, no window_start
            " {\n\t\"count\" : 3 ,\r\n\"window_end\":\"2013-01-01T06:00:00Z\", \"station_id\":\"ÄÖ-1\",\"temperature_mean\":null,\"window_start\":null} \n".into(),
            r#"{"station_id":"X","window_end":"2013-01-01T06:00:00Z","count":0,"pressure_mean":-0,"humidity_mean":-0.0,"wind_speed_mean":1E2,"wind_speed_max":1.5e+300,"temperature_std":2e-3,"precipitation_sum":1234567890123456789e-5}"#
                .into(),
        ];
        for s in &read_by_fast_path {
            assert!(agree(s.as_bytes()), "not read: {s}");
        }
        let r = read(read_by_fast_path[2].as_bytes()).unwrap();
        assert_eq!(
            r.pressure_mean.map(f64::to_bits),
            Some((-0.0f64).to_bits()),
            "-0 is -0.0, as serde_json makes it"
        );
        let left_to_serde = [
            PLAIN.replace("\"EWR\"", r#""E\u0057R""#),                      // an escape
            PLAIN.replace("\"count\":1", "\"count\":1,\"extra\":[1,2]"),    // an unknown field
            PLAIN.replace("\"count\":1", "\"count\":1,\"count\":2"),        // a repeated field
            PLAIN.replace("\"count\":1", "\"count\":1.0"),                  // count not an integer
            PLAIN.replace("\"count\":1", "\"count\":-1"),                   // count negative
            PLAIN.replace("\"count\":1", "\"count\":12345678901234567890"), // 20 digits
            PLAIN.replace("59.37", "059.37"),                               // a leading zero
            PLAIN.replace("59.37", "59."),                                  // no fraction digits
            PLAIN.replace("59.37", "1e400"),                                // infinite
            PLAIN.replace("59.37", "1e0001"),                               // four exponent digits
            PLAIN.replace("59.37", "\"59.37\""),                            // a string
            PLAIN.replace("59.37", "true"),                                 // a boolean
            PLAIN.replace("59.37", "nul"),                                  // broken
            PLAIN.replace("T06:00:00Z", "T06:00:00+00:00"),                 // chrono's form
            PLAIN.replace("T06:00:00Z", "T06:00:00.5Z"),                    // a fraction
            PLAIN.replace("\"window_end\":\"2013-01-01T06:00:00Z\",", ""),  // required field missing
            PLAIN.replace("}", ",}"),                                       // trailing comma
            format!("{PLAIN}x"),                                            // trailing bytes
            format!("[{PLAIN}]"),                                           // not an object
            "{}".into(),
            "".into(),
        ];
        for s in &left_to_serde {
            assert!(!agree(s.as_bytes()), "the fast path read {s}");
        }
        // Some of those serde_json reads (escapes, unknown fields, chrono's forms); the values are
        // then its own.
        assert!(serde(left_to_serde[0].as_bytes()).is_some() && serde(left_to_serde[1].as_bytes()).is_some());
    }

    /// A JSON number's text: random digits, fraction, exponent and sign, sometimes outside the
    /// grammar (leading zeros, empty parts) or the fast path's limits.
    fn number_text(rng: &mut SplitMix64) -> String {
        fn digits(rng: &mut SplitMix64, below: usize) -> String {
            let n = rng.below(below);
            (0..n).map(|_| char::from(b'0' + rng.below(10) as u8)).collect()
        }
        let mut s = String::new();
        if rng.below(3) == 0 {
            s.push('-');
        }
        match rng.below(6) {
            0 => s.push('0'),
            1 => s.push_str(&digits(rng, 23)), // may be empty or start with 0
            _ => {
                s.push(char::from(b'1' + rng.below(9) as u8));
                s.push_str(&digits(rng, 19));
            }
        }
        if rng.below(3) > 0 {
            s.push('.');
            s.push_str(&digits(rng, 20));
        }
        if rng.below(3) == 0 {
            s.push(['e', 'E'][rng.below(2)]);
            s.push_str(["", "+", "-"][rng.below(3)]);
            s.push_str(&digits(rng, 5));
        }
        s
    }

    #[test]
    fn random_numbers_read_to_serde_jsons_bits() {
        let mut rng = SplitMix64::new(0x5eed_f00d);
        let (mut fast, mut total) = (0, 0);
        for k in 0..200_000 {
            let text = if k % 2 == 0 {
                number_text(&mut rng)
            } else {
                // the shortest text of a random double (what serialisers write), any magnitude
                let x = f64::from_bits(rng.next_u64());
                if !x.is_finite() {
                    continue;
                }
                serde_json::to_string(&x).unwrap()
            };
            let field = ["temperature_mean", "pressure_mean", "count"][rng.below(3)];
            let msg = format!(r#"{{"station_id":"S","window_end":"2013-01-01T06:00:00Z","count":1,"{field}":{text}}}"#);
            let msg = if field == "count" {
                msg.replacen("\"count\":1,", "", 1)
            } else {
                msg
            };
            fast += usize::from(agree(msg.as_bytes()));
            total += 1;
        }
        assert!(fast > total / 3, "the fast path read {fast} of {total}");
    }

    #[test]
    fn random_corruptions_are_read_as_serde_json_reads_them_or_left_to_it() {
        let mut rng = SplitMix64::new(0xc0ff_ee00);
        let alphabet = b"{}[]:,\"\\ \t\n0123456789.-+eEnul truefalsxyzZT\x01\x7f\xc3\xa4\xff";
        for _ in 0..100_000 {
            let mut b = PLAIN.as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(b.len() + 1);
                let c = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 if at < b.len() => b[at] = c,
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.insert(at, c),
                }
            }
            agree(&b);
        }
    }
}
