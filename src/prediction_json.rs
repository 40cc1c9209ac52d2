//! The JSON of a prediction on `weather-predictions`, written directly into one buffer.
//!
//! Encoding was the largest cost per record in the dataflow (profile in BENCHMARKS.md): a
//! prediction is about 3.6 KB of JSON holding 72 forecast numbers, and `serde_json` formats each
//! with the shortest round-trip representation of the full `f64` (up to 17 digits). A forecast
//! temperature is published to **0.01 degC** (its errors are around 0.5-3 degC), which is both
//! shorter on the wire and formattable as an integer number of hundredths.
//!
//! ```text
//!   Prediction ──encode──> {"station_id":..,"window_end":..,"issued_at":..,"model":{..},"interval":..,
//!                           "forecast":[{"lead_hours":1,"valid_at":..,"temperature":14.23,"lower":..,"upper":..},..],
//!                           "anomaly":{..},"observed_temperature":..,"source":{..}}
//!   forecast temperature/lower/upper: round to hundredths ──> integer digits (no float formatting)
//!   everything else: exactly what serde_json writes (strings escaped by serde_json, other floats by ryu)
//! ```
//!
//! The output is byte for byte `serde_json::to_vec` of [`rounded`]`(p)`: same field order, same
//! number text, `null` for missing or non-finite numbers (tests below check it on random inputs).

use chrono::{DateTime, Utc};

use crate::contract::{ForecastPoint, Prediction, SourcePosition};

/// A forecast number as published: rounded to 0.01 (and never `-0.0`).
pub fn round_centi(x: f64) -> f64 {
    (x * 100.0).round() / 100.0 + 0.0
}

/// `p` with its forecast numbers as published (what a consumer decodes from [`encode`]).
pub fn rounded(p: &Prediction) -> Prediction {
    let mut p = p.clone();
    for f in &mut p.forecast {
        for v in [&mut f.temperature, &mut f.lower, &mut f.upper] {
            *v = v.filter(|x| x.is_finite()).map(round_centi);
        }
    }
    p
}

/// The prediction's JSON.
pub fn encode(p: &Prediction) -> Vec<u8> {
    let mut o = Vec::with_capacity(320 + 112 * p.forecast.len());
    o.extend_from_slice(b"{\"station_id\":");
    string(&mut o, &p.station_id);
    o.extend_from_slice(b",\"window_end\":");
    time(&mut o, &p.window_end);
    o.extend_from_slice(b",\"issued_at\":");
    time(&mut o, &p.issued_at);
    o.extend_from_slice(b",\"model\":{\"forecast\":");
    string(&mut o, &p.model.forecast);
    o.extend_from_slice(b",\"anomaly\":");
    string(&mut o, &p.model.anomaly);
    o.extend_from_slice(b"},\"interval\":");
    float(&mut o, p.interval);
    o.extend_from_slice(b",\"forecast\":[");
    let mut last = LastTime::default();
    for (i, f) in p.forecast.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        point(&mut o, f, &mut last);
    }
    o.extend_from_slice(b"],\"anomaly\":{\"score\":");
    float(&mut o, p.anomaly.score);
    o.extend_from_slice(if p.anomaly.is_anomaly {
        b",\"is_anomaly\":true"
    } else {
        b",\"is_anomaly\":false"
    });
    o.extend_from_slice(b",\"reasons\":[");
    for (i, r) in p.anomaly.reasons.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        string(&mut o, r);
    }
    o.extend_from_slice(b"]},\"observed_temperature\":");
    match p.observed_temperature {
        Some(x) => float(&mut o, x),
        None => o.extend_from_slice(b"null"),
    }
    if let Some(SourcePosition { partition, offset }) = p.source {
        o.extend_from_slice(b",\"source\":{\"partition\":");
        signed(&mut o, partition as i64);
        o.extend_from_slice(b",\"offset\":");
        signed(&mut o, offset);
        o.push(b'}');
    }
    o.push(b'}');
    o
}

/// Bytes a forecast point can take on [`point`]'s fast path: the keys, a `u32`, a 20-byte time
/// and three numbers of at most 17 bytes written (`-`, 13 digits, `.` and 2 digits) come to 143.
const POINT_ROOM: usize = 160;

/// One forecast point's object. The usual point (a whole-second time, numbers below 1e12 or
/// missing) is written into a window of [`POINT_ROOM`] bytes at the buffer's end, then cut to
/// its length: stores at known offsets and digits two at a time, instead of a capacity check
/// and a length update per byte pushed (a prediction took 0.69 instead of 0.75 us to encode,
/// in a loop over 50,000 of the benchmark's). Anything else takes the general writers, which
/// give the same text.
fn point(o: &mut Vec<u8>, f: &ForecastPoint, last: &mut LastTime) {
    let text = last.whole_seconds(&f.valid_at);
    // NaN fails the comparison too, as it should: it is written as `null`.
    let small = |x: Option<f64>| x.is_none_or(|v| !(v.abs() >= 1e12));
    let text = match text {
        Some(text) if small(f.temperature) && small(f.lower) && small(f.upper) => text,
        _ => {
            o.extend_from_slice(b"{\"lead_hours\":");
            integer(o, u64::from(f.lead_hours));
            o.extend_from_slice(b",\"valid_at\":");
            quoted_time(o, text, &f.valid_at);
            o.extend_from_slice(b",\"temperature\":");
            centi(o, f.temperature);
            o.extend_from_slice(b",\"lower\":");
            centi(o, f.lower);
            o.extend_from_slice(b",\"upper\":");
            centi(o, f.upper);
            o.push(b'}');
            return;
        }
    };
    let start = o.len();
    o.resize(start + POINT_ROOM, 0);
    let w = &mut o[start..];
    let mut at = put(w, 0, b"{\"lead_hours\":");
    at = put_uint(w, at, u64::from(f.lead_hours));
    at = put(w, at, b",\"valid_at\":\"");
    at = put(w, at, &text);
    at = put(w, at, b"\",\"temperature\":");
    at = put_centi(w, at, f.temperature);
    at = put(w, at, b",\"lower\":");
    at = put_centi(w, at, f.lower);
    at = put(w, at, b",\"upper\":");
    at = put_centi(w, at, f.upper);
    at = put(w, at, b"}");
    o.truncate(start + at);
}

/// `"00" "01" .. "99"`: two digits per lookup.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Copies `s` to `w[at..]`; returns the end.
#[inline(always)]
fn put(w: &mut [u8], at: usize, s: &[u8]) -> usize {
    w[at..at + s.len()].copy_from_slice(s);
    at + s.len()
}

/// Writes `v` in decimal at `w[at..]`, two digits per step from the end; returns the end.
#[inline(always)]
fn put_uint(w: &mut [u8], at: usize, mut v: u64) -> usize {
    let end = at + v.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut i = end;
    while v >= 100 {
        let r = (v % 100) as usize;
        v /= 100;
        i -= 2;
        w[i..i + 2].copy_from_slice(&PAIRS[2 * r..2 * r + 2]);
    }
    if v >= 10 {
        w[i - 2..i].copy_from_slice(&PAIRS[2 * v as usize..2 * v as usize + 2]);
    } else {
        w[i - 1] = b'0' + v as u8;
    }
    end
}

/// [`centi`] at `w[at..]` for a number below 1e12 in magnitude or missing; returns the end.
#[inline(always)]
fn put_centi(w: &mut [u8], mut at: usize, x: Option<f64>) -> usize {
    let Some(v) = x.filter(|v| v.is_finite()) else {
        return put(w, at, b"null");
    };
    let k = round_small(v * 100.0);
    if k < 0 {
        w[at] = b'-';
        at += 1;
    }
    let k = k.unsigned_abs();
    at = put_uint(w, at, k / 100);
    let frac = (k % 100) as usize;
    // Both digits are written; the second is kept only when it is not 0.
    w[at] = b'.';
    w[at + 1] = PAIRS[2 * frac];
    w[at + 2] = PAIRS[2 * frac + 1];
    at + if frac % 10 != 0 { 3 } else { 2 }
}

fn string(o: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *o, s);
}

fn float(o: &mut Vec<u8>, x: f64) {
    // serde_json writes non-finite numbers as null.
    let _ = serde_json::to_writer(&mut *o, &x);
}

fn time(o: &mut Vec<u8>, t: &DateTime<Utc>) {
    let mut buf = [0u8; 30];
    match crate::utc_json::format(t, &mut buf) {
        // Whole seconds, the usual case: a copy of known length (inlined, no memcpy call).
        Some(20) => {
            o.push(b'"');
            o.extend_from_slice(&buf[..20]);
            o.push(b'"');
        }
        Some(n) => {
            o.push(b'"');
            o.extend_from_slice(&buf[..n]);
            o.push(b'"');
        }
        None => {
            let _ = serde_json::to_writer(&mut *o, t);
        }
    }
}

/// The last whole-second time written, to write the next one from it when it is one hour later
/// on the same day (the forecast's `valid_at` times are consecutive hours): a copy and two digits
/// instead of a calendar conversion. Anything else is written by [`time`].
#[derive(Default)]
struct LastTime {
    /// Date, seconds since midnight and text (`YYYY-MM-DDTHH:MM:SSZ`) of the last time.
    last: Option<(chrono::NaiveDate, u32, [u8; 20])>,
}

impl LastTime {
    /// `t` as text (`YYYY-MM-DDTHH:MM:SSZ`, unquoted) when it is a whole second of a year in
    /// 0..=9999, from the last one when it is an hour later on the same day; `None` otherwise.
    fn whole_seconds(&mut self, t: &DateTime<Utc>) -> Option<[u8; 20]> {
        use chrono::Timelike;
        let n = t.naive_utc();
        let (date, clock) = (n.date(), n.time());
        // nanosecond() is 0 for whole seconds, >= 1e9 inside a leap second.
        let secs = clock.num_seconds_from_midnight();
        if let Some((d, s, text)) = &mut self.last {
            if *d == date && clock.nanosecond() == 0 && secs == *s + 3600 {
                let hour = secs / 3600; // same day, so < 24; minutes and seconds unchanged
                text[11] = b'0' + (hour / 10) as u8;
                text[12] = b'0' + (hour % 10) as u8;
                *s = secs;
                return Some(*text);
            }
        }
        let mut buf = [0u8; 30];
        match crate::utc_json::format(t, &mut buf) {
            Some(20) => {
                let mut text = [0u8; 20];
                text.copy_from_slice(&buf[..20]);
                self.last = Some((date, secs, text));
                Some(text)
            }
            _ => {
                self.last = None;
                None
            }
        }
    }

    /// Writes `t` quoted, as [`time`] does.
    #[cfg(test)]
    fn time(&mut self, o: &mut Vec<u8>, t: &DateTime<Utc>) {
        let text = self.whole_seconds(t);
        quoted_time(o, text, t);
    }
}

/// `t` quoted: `text`, its form from [`LastTime::whole_seconds`], when it has one.
fn quoted_time(o: &mut Vec<u8>, text: Option<[u8; 20]>, t: &DateTime<Utc>) {
    match text {
        Some(text) => {
            o.push(b'"');
            o.extend_from_slice(&text[..]);
            o.push(b'"');
        }
        None => time(o, t),
    }
}

/// Appends `v` in decimal, as `Display` writes it.
fn integer(o: &mut Vec<u8>, v: u64) {
    // Written into a window at the end, as the points are: a u64 has at most 20 digits.
    let start = o.len();
    o.resize(start + 20, 0);
    let n = put_uint(&mut o[start..], 0, v);
    o.truncate(start + n);
}

/// `x.round() as i64` for `|x| < 2^52`, without a call to libm's `round` (not inlined on the
/// baseline x86-64 target): the fraction `x - trunc(x)` is exact in that range, so comparing it
/// with 0.5 rounds half away from zero exactly as `round` does.
fn round_small(x: f64) -> i64 {
    let t = x as i64;
    let frac = x - t as f64;
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// Appends `v` in decimal, as `Display` writes it.
pub(crate) fn signed(o: &mut Vec<u8>, v: i64) {
    if v < 0 {
        o.push(b'-');
    }
    integer(o, v.unsigned_abs());
}

/// A forecast number in hundredths, as ryu writes the rounded value: `14.23`, `14.2`, `14.0`,
/// `-0.05`, `0.0`.
fn centi(o: &mut Vec<u8>, x: Option<f64>) {
    match x.filter(|v| v.is_finite()) {
        // Beyond any temperature; keep the general path (ryu) for exactness.
        Some(v) if v.abs() >= 1e12 => float(o, round_centi(v)),
        _ => {
            // At most `-`, 13 digits (a value just below 1e12 can round to 1e12), `.` and 2 digits.
            let start = o.len();
            o.resize(start + 24, 0);
            let n = put_centi(&mut o[start..], 0, x);
            o.truncate(start + n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Anomaly, ForecastPoint, ModelNames};
    use chrono::TimeZone;

    #[test]
    fn round_small_is_round() {
        let mut x = 7u64;
        let mut values = vec![
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999999999999994,
            -0.49999999999999994,
            1e13 + 0.5,
            -0.0,
        ];
        for _ in 0..100_000 {
            values.push(((xorshift(&mut x) >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2e5);
            values.push((xorshift(&mut x) % 2_000_001) as f64 / 2.0 - 500_000.0);
        }
        for v in values {
            assert_eq!(round_small(v), v.round() as i64, "{v}");
        }
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn number(x: &mut u64) -> Option<f64> {
        let r = xorshift(x);
        match r % 23 {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(-0.001),
            3 => Some(0.0),
            4 => Some(((r >> 8) % 4000) as f64 / 100.0 - 20.0),
            5 => Some(-0.005),
            6 => Some(0.125),
            7 => Some(1e13 + 0.37),
            _ => Some(((r >> 11) as f64 / (1u64 << 53) as f64) * 120.0 - 60.0),
        }
    }

    fn random(seed: u64) -> Prediction {
        let mut x = seed | 1;
        let t0 = Utc.with_ymd_and_hms(2013, 10, 1, 12, 0, 0).unwrap();
        Prediction {
            station_id: ["JFK", "st\"a\\tion\n", "Zürich-Ø"][(seed % 3) as usize].into(),
            window_end: t0 + chrono::Duration::hours((seed % 1000) as i64),
            issued_at: t0 + chrono::Duration::nanoseconds((xorshift(&mut x) % 1_000_000_000_000) as i64),
            model: ModelNames {
                forecast: "ridge-per-lead/v1".into(),
                anomaly: "rules/v1".into(),
            },
            interval: [0.9, 0.5, 0.99][(seed % 3) as usize],
            forecast: (1..=24)
                .map(|h| ForecastPoint {
                    lead_hours: h,
                    valid_at: t0 + chrono::Duration::hours(h as i64),
                    temperature: number(&mut x),
                    lower: number(&mut x),
                    upper: number(&mut x),
                })
                .collect(),
            anomaly: Anomaly {
                score: (xorshift(&mut x) % 1000) as f64 / 997.0,
                is_anomaly: seed % 2 == 0,
                reasons: (0..seed % 3).map(|i| format!("reason {i}: \"quoted\"")).collect(),
            },
            observed_temperature: number(&mut x).filter(|v| v.is_finite()),
            source: (seed % 4 != 0).then_some(SourcePosition {
                partition: (seed % 7) as i32,
                offset: (seed * 7919) as i64,
            }),
        }
    }

    #[test]
    fn byte_for_byte_serde_of_the_rounded_prediction() {
        for seed in 0..3000u64 {
            let p = random(seed);
            let ours = encode(&p);
            let reference = serde_json::to_vec(&rounded(&p)).unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference), "seed {seed}");
            let back: Prediction = serde_json::from_slice(&ours).unwrap();
            assert_eq!(back, rounded(&p), "seed {seed}: decodes to the published values");
        }
    }

    #[test]
    fn consecutive_hours_are_written_as_chrono_writes_them() {
        use chrono::Datelike;
        // Runs of times, mostly an hour apart, across midnight, month and year ends, a leap day,
        // with minutes, seconds and fractions, a leap second, and gaps, repeats and the same hour
        // of another day in between.
        let starts = [
            Utc.with_ymd_and_hms(2013, 10, 1, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2012, 2, 28, 13, 30, 15).unwrap(),
            Utc.with_ymd_and_hms(2013, 12, 31, 0, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2016, 12, 31, 22, 0, 0).unwrap() + chrono::Duration::milliseconds(250),
            Utc.with_ymd_and_hms(9999, 12, 31, 5, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2016, 12, 31, 22, 59, 59).unwrap(),
        ];
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        let ten = Utc.with_ymd_and_hms(2013, 10, 1, 10, 0, 0).unwrap();
        let mut runs = vec![
            // An hour later, but inside a leap second or with a fraction: written in full.
            vec![leap - chrono::Duration::hours(1) - chrono::Duration::milliseconds(1500), leap],
            vec![ten, ten + chrono::Duration::hours(1) + chrono::Duration::milliseconds(250)],
            // The same time of day a day and an hour later.
            vec![ten, ten + chrono::Duration::hours(25), ten + chrono::Duration::hours(2)],
        ];
        let mut x = 11u64;
        for t0 in starts {
            let mut times = Vec::new();
            let mut t = t0;
            for _ in 0..200 {
                times.push(t);
                t = match xorshift(&mut x) % 12 {
                    0 => t,
                    1 => t + chrono::Duration::hours(2),
                    2 => t + chrono::Duration::seconds(3599),
                    3 => leap,
                    4 => t + chrono::Duration::hours(25),
                    5 => t - chrono::Duration::hours(23),
                    _ => t + chrono::Duration::hours(1),
                };
                if t.year() > 9999 {
                    t = t0;
                }
            }
            runs.push(times);
        }
        for (k, times) in runs.iter().enumerate() {
            let mut last = LastTime::default();
            let (mut ours, mut reference) = (Vec::new(), Vec::new());
            for t in times {
                last.time(&mut ours, t);
                ours.push(b',');
                serde_json::to_writer(&mut reference, t).unwrap();
                reference.push(b',');
            }
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&reference), "run {k}");
        }
    }

    #[test]
    fn hundredths_as_written() {
        let text = |v: f64| {
            let mut o = Vec::new();
            centi(&mut o, Some(v));
            String::from_utf8(o).unwrap()
        };
        assert_eq!(text(14.234), "14.23");
        assert_eq!(text(14.2), "14.2");
        assert_eq!(text(14.0), "14.0");
        assert_eq!(text(-0.05), "-0.05");
        assert_eq!(text(-0.004), "0.0");
        assert_eq!(text(-12.999), "-13.0");
        assert_eq!(round_centi(-0.004).to_bits(), 0.0f64.to_bits());
    }
}
