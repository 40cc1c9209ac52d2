//! Where the time goes: every stage of the inference path timed in isolation on one thread, on
//! the same records, chunk by chunk (each stage consumes the previous stage's outputs; the bench
//! uses chunks of [`RELEASE_CHUNK`](crate::operators::keyed::RELEASE_CHUNK) records, what the
//! keyed operators hand downstream at once, so that the stages find their inputs in cache as
//! they do in the dataflow).
//!
//! ```text
//!   payload ──parse──> Accepted ──forecast──> Forecasted ──score+assemble──> Outcome ──encode──> OutRecord
//!                                    (state lookups included, as in the operators)
//!   exchange (between processes only): timely's bincode of each exchanged record, out and back
//!   dataflow overhead = engine-only time per record (1 worker) − the sum of the stages above
//! ```
//!
//! Within one process timely moves exchanged records between workers as typed values (no
//! serialisation); between processes it serialises them with bincode, which is what the
//! `exchange_*` stages measure. Consuming and producing through the broker are timed in the
//! end-to-end part (`broker.rs`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;
use timely::bytes::arc::BytesMut;
use timely::communication::Bytesable;
use timely::Bincode;

use super::data::Dataset;
use super::model::Sequential;
use crate::contract::{FeatureRecord, SourcePosition};
use crate::kafka::OutRecord;
use crate::models::serving::Serving;
use crate::operators::forecast::{Epoched, ForecastParams};
use crate::operators::{encode, Accepted, Forecasted, Outcome};

/// Microseconds per record of each stage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StageTimes {
    /// Records profiled.
    pub records: u64,
    /// `FeatureRecord::parse` (serde + validation).
    pub parse_us: f64,
    /// Forecast state lookup and `observe_with` (the fallback forecaster).
    pub forecast_us: f64,
    /// Anomaly state lookup, rules, and assembling the `Prediction`.
    pub anomaly_us: f64,
    /// `operators::encode`: JSON of the prediction, id, key.
    pub encode_us: f64,
    /// bincode out and back of an `Epoched<Accepted>` (exchange to the forecast operator).
    pub exchange_accepted_us: f64,
    /// bincode out and back of a `Forecasted`: what it would cost to exchange forecasts to the
    /// anomaly operator, which no record pays (that operator scores each forecast on the worker
    /// that made it, through a pipeline).
    pub exchange_forecasted_us: f64,
    /// bincode out and back of an `OutRecord` (exchange to the sink's writer).
    pub exchange_out_us: f64,
}

impl StageTimes {
    /// Sum of the stages that run on every worker in one process.
    pub fn compute_us(&self) -> f64 {
        self.parse_us + self.forecast_us + self.anomaly_us + self.encode_us
    }

    /// Sum of the serialisation costs of the two exchanges a record can cross between processes
    /// (to the forecast operator's worker, to the sink's writer).
    pub fn exchange_us(&self) -> f64 {
        self.exchange_accepted_us + self.exchange_out_us
    }
}

fn roundtrip<T: timely::ExchangeData + Clone>(batch: Vec<T>) -> Duration {
    let t = Instant::now();
    let wrapped = Bincode::from(batch);
    let mut buf = Vec::with_capacity(wrapped.length_in_bytes());
    wrapped.into_bytes(&mut buf);
    let back: Bincode<Vec<T>> = Bincode::from_bytes(BytesMut::from(buf).freeze());
    black_box(back);
    t.elapsed()
}

/// Times each stage over every record of `data`, in chunks of `chunk`.
pub fn stages(data: &Dataset, params: ForecastParams, serving: Serving, chunk: usize) -> StageTimes {
    let mut seq = Sequential::new(params, serving);
    let all: Vec<_> = data.iter().collect();
    let mut d = [Duration::ZERO; 7];
    for part in all.chunks(chunk.max(1)) {
        let t = Instant::now();
        let accepted: Vec<Accepted> = part
            .iter()
            .filter_map(|(p, o, m)| {
                FeatureRecord::parse(&m.payload).ok().map(|record| Accepted {
                    record: Box::new(record),
                    source: SourcePosition { partition: *p, offset: *o },
                })
            })
            .collect();
        d[0] += t.elapsed();
        d[4] += roundtrip(
            accepted
                .iter()
                .map(|a| Epoched {
                    epoch: 1,
                    record: a.clone(),
                })
                .collect(),
        );
        let t = Instant::now();
        let forecasted: Vec<Forecasted> = accepted.into_iter().map(|a| seq.forecast(a)).collect();
        d[1] += t.elapsed();
        d[5] += roundtrip(forecasted.clone());
        let t = Instant::now();
        let outcomes: Vec<Outcome> = forecasted.into_iter().map(|f| seq.score(f)).collect();
        d[2] += t.elapsed();
        let t = Instant::now();
        let out: Vec<OutRecord> = outcomes.into_iter().map(|o| encode(o, "bench-features")).collect();
        d[3] += t.elapsed();
        d[6] += roundtrip(out);
    }
    let n = all.len().max(1) as f64;
    let us = |x: Duration| x.as_secs_f64() * 1e6 / n;
    StageTimes {
        records: all.len() as u64,
        parse_us: us(d[0]),
        forecast_us: us(d[1]),
        anomaly_us: us(d[2]),
        encode_us: us(d[3]),
        exchange_accepted_us: us(d[4]),
        exchange_forecasted_us: us(d[5]),
        exchange_out_us: us(d[6]),
    }
}
