//! The inference dataflow: hourly feature records in, one prediction per record out.
//!
//! ```text
//!  weather-features                                                                 weather-predictions
//!  partition p ─> worker p mod peers                                                        ▲
//!     │                                                                                     │
//!  KafkaSource ─> ParseFeatures ─┬─> ForecastTemperature ─> ScoreAnomalies ─> encode ─┬─> KafkaSink ─> probe "acked"
//!   (epoch stamps,               │    (exchange by station: state per station,        │  (one writer per  │
//!    bounded polls,              │     input order, stale windows refused,            │   output partition)
//!    gated by checkpoints)       │     snapshots at checkpoint boundaries)            │       └─> weather-features-dlq
//!                                └─> dead letters (original bytes + reason) ──────────┘
//!        ▲                                                                                               │
//!        └──────── the checkpoint writer (runner) reads offsets, snapshots and output positions ─────────┘
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};

use crate::anomaly::rules::{AnomalyParams, StationAnomaly};
use crate::kafka::sink::SinkParts;
use crate::kafka::source::{kafka_source, Gate, PartitionReader};
use crate::kafka::{KafkaSink, KafkaSourceSpec};
use crate::metrics::Metrics;
use crate::operators::forecast::{ForecastParams, StationForecastState};
use crate::operators::keyed::KeyedCheckpoint;
use crate::operators::{encode, ForecastTemperature, ParseFeatures, ScoreAnomalies};

/// Everything one worker needs to build the inference dataflow.
pub struct InferenceParts {
    /// Source settings.
    pub source: KafkaSourceSpec,
    /// This worker's partition reader.
    pub reader: Rc<RefCell<PartitionReader>>,
    /// Source flow control (checkpoint backpressure).
    pub gate: Gate,
    /// Whether checkpoints are written.
    pub checkpointing: bool,
    /// This worker's sink.
    pub sink: SinkParts,
    /// Forecasting parameters.
    pub forecast: ForecastParams,
    /// Forecast operator checkpointing.
    pub forecast_ckpt: KeyedCheckpoint<StationForecastState>,
    /// Anomaly parameters.
    pub anomaly: AnomalyParams,
    /// Anomaly operator checkpointing.
    pub anomaly_ckpt: KeyedCheckpoint<StationAnomaly>,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
}

/// Builds the dataflow in `scope`; returns the probe whose frontier passes an epoch once every
/// output of it has been acknowledged by the broker.
pub fn build(scope: Scope<'_, u64>, parts: InferenceParts) -> ProbeHandle<u64> {
    let acked = ProbeHandle::new();
    let topic = parts.source.topic.clone();
    let interval = parts.forecast.interval;
    let m = parts.metrics;
    let input = kafka_source(
        scope,
        parts.source,
        parts.reader,
        acked.clone(),
        parts.gate,
        parts.checkpointing,
        m.clone(),
    );
    let (accepted, dead) = input.parse_features(topic.clone(), m.clone());
    accepted
        .forecast_temperature(parts.forecast, m.clone(), parts.forecast_ckpt)
        .score_anomalies(parts.anomaly, interval, m.clone(), parts.anomaly_ckpt)
        .map(move |outcome| encode(outcome, &topic))
        .concat(dead)
        .kafka_sink(parts.sink)
        .probe_with(&acked);
    acked
}
