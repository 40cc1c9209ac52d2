//! How records cross process boundaries. Timely serialises the data it exchanges between
//! processes with bincode, a binary format that is not self-describing; two of the contracts'
//! serde forms do not suit it:
//!
//! ```text
//!   Accepted.record: FeatureRecord   JSON form: window_start omitted when absent ──bincode──>
//!                                    every later field shifts: the receiving process cannot
//!                                    decode the batch (timely panics, the cluster restarts, and
//!                                    meets the same record again)
//!                                    timestamps as RFC 3339 text: formatted and parsed per record
//!   OutRecord.payload / key: Vec<u8> a sequence: one serde call per byte (2.7 KB per prediction)
//! ```
//!
//! [`record`] (for `Box<FeatureRecord>` fields) gives binary serializers a fixed layout with the
//! timestamps as (seconds, nanoseconds), and human-readable ones (JSON) the record's own form;
//! [`utc`] does the same for single timestamps (the observations the features dataflow
//! exchanges by station); [`bytes`] and [`opt_bytes`] write byte buffers as one byte string,
//! which serde_json writes as the same array of numbers as before.

use chrono::{DateTime, Utc};
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::contract::FeatureRecord;

/// An instant as seconds since the epoch and nanoseconds (up to 1,999,999,999 in a leap second,
/// as chrono counts them).
type Instant = (i64, u32);

fn instant(t: &DateTime<Utc>) -> Instant {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn from_instant<E: serde::de::Error>((secs, nanos): Instant) -> Result<DateTime<Utc>, E> {
    DateTime::from_timestamp(secs, nanos).ok_or_else(|| E::custom(format!("instant {secs} s {nanos} ns is out of range")))
}

/// `serde(with)` for `DateTime<Utc>` fields of exchanged records: chrono's RFC 3339 text for
/// human-readable formats (unchanged), (seconds, nanoseconds) for binary ones.
pub mod utc {
    use super::*;

    /// Serialises `t` (see the module doc).
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            instant(t).serialize(s)
        }
    }

    /// Deserialises what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            DateTime::<Utc>::deserialize(d)
        } else {
            from_instant(Instant::deserialize(d)?)
        }
    }
}

/// `serde(with)` for `Box<FeatureRecord>` fields of exchanged records (see the module doc).
pub mod record {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Binary {
        station_id: String,
        window_start: Option<Instant>,
        window_end: Instant,
        count: u64,
        /// In the order of `FeatureRecord::numeric_fields`.
        values: [Option<f64>; 9],
    }

    /// Serialises `r` (see the module doc).
    pub fn serialize<S: Serializer>(r: &FeatureRecord, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return r.serialize(s);
        }
        Binary {
            station_id: r.station_id.clone(),
            window_start: r.window_start.as_ref().map(instant),
            window_end: instant(&r.window_end),
            count: r.count,
            values: r.numeric_fields().map(|(_, v)| v),
        }
        .serialize(s)
    }

    /// Deserialises what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<FeatureRecord>, D::Error> {
        if d.is_human_readable() {
            return FeatureRecord::deserialize(d).map(Box::new);
        }
        let b = Binary::deserialize(d)?;
        Ok(Box::new(FeatureRecord::from_parts(
            b.station_id,
            b.window_start.map(from_instant).transpose()?,
            from_instant(b.window_end)?,
            b.count,
            b.values,
        )))
    }
}

/// A byte slice serialised as one byte string.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A byte buffer read from a byte string or a sequence of numbers.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(ByteBufVisitor).map(ByteBuf)
    }
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(v)
    }
}

/// `serde(with)` for `Vec<u8>` fields: one byte string instead of a sequence of numbers.
pub mod bytes {
    use super::*;

    /// Serialises `v` as a byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        Bytes(v).serialize(s)
    }

    /// Reads a byte string (or a sequence of numbers).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        ByteBuf::deserialize(d).map(|b| b.0)
    }
}

/// `serde(with)` for `Option<Vec<u8>>` fields (see [`bytes`]).
pub mod opt_bytes {
    use super::*;

    /// Serialises `v` as an optional byte string.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(Bytes).serialize(s)
    }

    /// Reads an optional byte string (or sequence of numbers).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<ByteBuf>::deserialize(d).map(|b| b.map(|b| b.0))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use timely::bytes::arc::BytesMut;
    use timely::communication::Bytesable;
    use timely::Bincode;

    use crate::contract::SourcePosition;
    use crate::kafka::{OutRecord, OutTopic};
    use crate::operators::Accepted;

    use super::*;

    /// Through timely's own encoding between processes, out and back.
    fn across<T: timely::ExchangeData + Clone>(v: Vec<T>) -> Vec<T> {
        let wrapped = Bincode::from(v);
        let mut buf = Vec::new();
        wrapped.into_bytes(&mut buf);
        let back: Bincode<Vec<T>> = Bincode::from_bytes(BytesMut::from(buf).freeze());
        back.payload
    }

    fn record(line: &str) -> FeatureRecord {
        FeatureRecord::parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn feature_records_cross_processes_with_or_without_their_optional_fields() {
        let full = record(
            r#"{"station_id":"JFK","window_start":"2013-10-01T11:00:00Z","window_end":"2013-10-01T12:00:00Z","count":3,
               "temperature_mean":10.5,"temperature_min":9.0,"temperature_max":11.0,"temperature_std":0.4,"humidity_mean":81.0,
               "pressure_mean":1012.3,"wind_speed_mean":3.2,"wind_speed_max":6.0,"precipitation_sum":0.2}"#,
        );
        // No window_start: its JSON form omits the field, which bincode cannot represent.
        let bare = record(r#"{"station_id":"EWR","window_end":"2013-10-01T12:00:00Z","count":1}"#);
        let mut leap = full.clone();
        leap.window_end = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .unwrap()
            .and_utc();
        leap.window_start = Some(Utc.timestamp_opt(1_483_228_700, 123_456_789).unwrap());
        let mut sent = Vec::new();
        for (i, r) in [full, bare, leap].into_iter().enumerate() {
            sent.push(Accepted {
                record: Box::new(r),
                source: SourcePosition {
                    partition: i as i32,
                    offset: 7 + i as i64,
                },
            });
        }
        assert!(sent[2].record.window_end.timestamp_subsec_nanos() >= 1_000_000_000, "a leap second");
        assert_eq!(across(sent.clone()), sent);
        // JSON keeps the record's own form.
        let json = serde_json::to_string(&sent[1]).unwrap();
        assert!(
            json.contains(r#""record":{"station_id":"EWR","window_end":"2013-10-01T12:00:00Z","count":1"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Accepted>(&json).unwrap(), sent[1]);
    }

    #[test]
    fn observations_cross_processes_with_binary_timestamps_and_keep_their_json() {
        use crate::observations::Observation;
        use crate::operators::window::Stamped;
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_250_000_000))
            .unwrap()
            .and_utc();
        let mut obs = Observation::new("PAY", leap);
        obs.temperature = Some(-3.25);
        let sent = vec![
            Stamped {
                obs: obs.clone(),
                source: SourcePosition { partition: 1, offset: 9 },
                window_end: Utc.with_ymd_and_hms(2017, 1, 1, 0, 0, 0).unwrap(),
            },
            Stamped {
                obs: Observation::new("EWR", Utc.timestamp_opt(-86_400 * 365, 7).unwrap()),
                source: SourcePosition { partition: 0, offset: 0 },
                window_end: Utc.with_ymd_and_hms(1969, 1, 1, 1, 0, 0).unwrap(),
            },
        ];
        assert_eq!(across(sent.clone()), sent);
        // The raw topic's JSON contract is the observation's serde form: unchanged.
        let json = serde_json::to_string(&obs).unwrap();
        assert!(json.contains(r#""time":"2016-12-31T23:59:60.250Z""#), "{json}");
        assert_eq!(serde_json::from_str::<Observation>(&json).unwrap(), obs);
    }

    #[test]
    fn output_records_cross_processes_as_byte_strings() {
        let out = vec![
            OutRecord {
                topic: OutTopic::Predictions,
                id: "0:17".into(),
                key: Some(b"JFK".to_vec()),
                payload: (0..=255u8).cycle().take(2_700).collect(),
                headers: vec![("h".into(), vec![1, 2])],
            },
            OutRecord {
                topic: OutTopic::Dlq,
                id: "1:2".into(),
                key: None,
                payload: Vec::new(),
                headers: Vec::new(),
            },
        ];
        assert_eq!(across(out.clone()), out);
        // JSON is unchanged: byte buffers are arrays of numbers either way.
        let json = serde_json::to_string(&out[0]).unwrap();
        assert!(json.contains(r#""key":[74,70,75]"#), "{json}");
        assert_eq!(serde_json::from_str::<OutRecord>(&json).unwrap(), out[0]);
    }
}
