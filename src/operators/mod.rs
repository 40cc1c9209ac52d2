//! The inference operators, one per file, each an extension trait on a timely stream, and the
//! records that flow between them.
//!
//! ```text
//!  InputMessage ─ParseFeatures─┬─ Accepted ─ForecastTemperature─ Forecasted ─ScoreAnomalies─ Outcome ─encode─ OutRecord
//!                              └─ dead letters (OutRecord, original bytes + reason) ─────────────────────────┘
//! ```

pub mod anomaly;
pub mod forecast;
pub mod keyed;
pub mod parse;
pub mod window;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::contract::{FeatureRecord, ForecastPoint, Prediction, RejectKind, Rejection, SourcePosition};
use crate::forecast::Expectation;
use crate::kafka::{OutRecord, OutTopic};
pub use anomaly::ScoreAnomalies;
pub use forecast::ForecastTemperature;
pub use keyed::StationRecord;
pub use parse::ParseFeatures;

/// A valid feature record and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The record. Boxed: a record is moved some ten times on its way through the operators
    /// (container pushes, exchange buffers, the per-station buffer and its sort), and inline its
    /// 200 bytes made each move a copy; boxed, one allocation replaces them (BENCHMARKS.md).
    /// Between processes it travels in the compact form of [`crate::exchange::record`].
    #[serde(with = "crate::exchange::record")]
    pub record: Box<FeatureRecord>,
    /// Its input position.
    pub source: SourcePosition,
}

impl StationRecord for Accepted {
    fn station(&self) -> &str {
        &self.record.station_id
    }
    fn position(&self) -> (i32, i64) {
        (self.source.partition, self.source.offset)
    }
}

/// A record refused by a stateful operator because its station already processed a window at or
/// after it. It goes to the DLQ as re-serialised JSON with reason `stale_window`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stale {
    /// The refused record (boxed, as in [`Accepted`]).
    pub record: Box<FeatureRecord>,
    /// Its input position.
    pub source: SourcePosition,
    /// The newest window_end already processed for the station.
    pub newest: DateTime<Utc>,
}

/// A forecast made for an accepted record, not yet scored for anomalies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The input record (boxed, as in [`Accepted`]).
    pub record: Box<FeatureRecord>,
    /// Its input position.
    pub source: SourcePosition,
    /// The 24 forecast points.
    pub points: Vec<ForecastPoint>,
    /// What the forecaster expected for this window before it arrived.
    pub expected: Option<Expectation>,
    /// Name/version of the forecasting model.
    pub model: String,
    /// The served trained anomaly model's verdict (`None`: rules only).
    #[serde(default)]
    pub anomaly_verdict: Option<crate::anomaly::trained::ModelVerdict>,
}

/// Output of the forecasting operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Forecasted {
    /// A forecast to score.
    Made(Forecast),
    /// A stale record, passed on to the DLQ.
    Stale(Stale),
}

impl StationRecord for Forecasted {
    fn station(&self) -> &str {
        match self {
            Forecasted::Made(f) => &f.record.station_id,
            Forecasted::Stale(s) => &s.record.station_id,
        }
    }
    fn position(&self) -> (i32, i64) {
        let s = match self {
            Forecasted::Made(f) => f.source,
            Forecasted::Stale(s) => s.source,
        };
        (s.partition, s.offset)
    }
}

/// Output of the anomaly operator: what the sink writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// A complete prediction.
    Predicted(Prediction),
    /// A stale record.
    Stale(Stale),
}

/// Headers weatherflow puts on dead letters.
pub mod dlq_headers {
    /// Human-readable reason.
    pub const ERROR: &str = "weatherflow.error";
    /// Stable reason code (see `RejectKind`).
    pub const KIND: &str = "weatherflow.error.kind";
    /// Source topic.
    pub const TOPIC: &str = "weatherflow.source.topic";
    /// Source partition.
    pub const PARTITION: &str = "weatherflow.source.partition";
    /// Source offset.
    pub const OFFSET: &str = "weatherflow.source.offset";
}

/// The deterministic id of the output answering the input at `pos` (each input message yields
/// exactly one output: a prediction or a dead letter).
pub fn output_id(pos: SourcePosition) -> String {
    // Written by hand: `format!` was a visible share of encoding an output.
    let mut id = Vec::with_capacity(24);
    crate::prediction_json::signed(&mut id, i64::from(pos.partition));
    id.push(b':');
    crate::prediction_json::signed(&mut id, pos.offset);
    String::from_utf8(id).unwrap_or_default() // ASCII digits, '-' and ':' only
}

/// A dead letter: the original key and bytes, the reason and the source position in headers.
pub fn dead_letter(source_topic: &str, pos: SourcePosition, key: Option<Vec<u8>>, payload: Vec<u8>, why: &Rejection) -> OutRecord {
    OutRecord {
        topic: OutTopic::Dlq,
        id: output_id(pos),
        key,
        payload,
        headers: vec![
            (dlq_headers::ERROR.into(), why.to_string().into_bytes()),
            (dlq_headers::KIND.into(), why.kind.as_str().as_bytes().to_vec()),
            (dlq_headers::TOPIC.into(), source_topic.as_bytes().to_vec()),
            (dlq_headers::PARTITION.into(), pos.partition.to_string().into_bytes()),
            (dlq_headers::OFFSET.into(), pos.offset.to_string().into_bytes()),
        ],
    }
}

/// Encodes an outcome as the record to produce.
pub fn encode(outcome: Outcome, source_topic: &str) -> OutRecord {
    match outcome {
        Outcome::Predicted(p) => {
            let id = match p.source {
                Some(pos) => output_id(pos),
                None => format!("{}@{}", p.station_id, p.window_end.timestamp()),
            };
            // Forecast numbers to 0.01 degC; byte for byte serde_json of the rounded prediction.
            let payload = crate::prediction_json::encode(&p);
            OutRecord {
                topic: OutTopic::Predictions,
                id,
                key: Some(p.station_id.into_bytes()), // the station id's own buffer, not a copy
                payload,
                headers: Vec::new(),
            }
        }
        Outcome::Stale(s) => {
            let why = Rejection::new(
                RejectKind::StaleWindow,
                format!(
                    "window_end {} is not after {}, the newest window already processed for station {}",
                    s.record.window_end, s.newest, s.record.station_id
                ),
            );
            let payload = serde_json::to_vec(&s.record).unwrap_or_default();
            dead_letter(source_topic, s.source, Some(s.record.station_id.as_bytes().to_vec()), payload, &why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_id_is_partition_colon_offset() {
        for (partition, offset) in [
            (0, 0),
            (7, 42),
            (-1, -1),
            (i32::MAX, i64::MAX),
            (i32::MIN, i64::MIN),
            (12, 1_000_000_007),
            (3, 9),
            (3, 10),
        ] {
            let pos = SourcePosition { partition, offset };
            assert_eq!(output_id(pos), format!("{partition}:{offset}"));
        }
    }
}
