//! The inference dataflow: hourly feature records in, one prediction per record out.
//!
//! ```text
//!  weather-features                                                                 weather-predictions
//!  partition p ─> worker p mod peers                                                        ▲
//!     │                                                                                     │
//!  KafkaSource ─> ParseFeatures ─┬─> ForecastTemperature ─> ScoreAnomalies ─> encode ─┬─> KafkaSink ─> probe "acked"
//!   (epoch stamps,               │    (exchange by station: state per station,        │       │          │
//!    bounded polls)              │     input order, stale windows refused)            │       └─> weather-features-dlq
//!                                └─> dead letters (original bytes + reason) ──────────┘
//!        ▲                                                                                               │
//!        └────────────── commit consumer-group offsets of acknowledged epochs ───────────────────────────┘
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rdkafka::producer::BaseProducer;
use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};

use crate::anomaly::rules::AnomalyParams;
use crate::kafka::sink::DeliveryContext;
use crate::kafka::source::{kafka_source, PartitionReader};
use crate::kafka::{KafkaSink, KafkaSourceSpec};
use crate::metrics::Metrics;
use crate::operators::forecast::ForecastParams;
use crate::operators::{encode, ForecastTemperature, ParseFeatures, ScoreAnomalies};

/// Everything one worker needs to build the inference dataflow.
pub struct InferenceParts {
    /// Source settings.
    pub source: KafkaSourceSpec,
    /// This worker's partition reader.
    pub reader: Rc<RefCell<PartitionReader>>,
    /// This worker's producer.
    pub producer: BaseProducer<DeliveryContext>,
    /// Forecasting parameters.
    pub forecast: ForecastParams,
    /// Anomaly parameters.
    pub anomaly: AnomalyParams,
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
    let input = kafka_source(scope, parts.source, parts.reader, acked.clone(), m.clone());
    let (accepted, dead) = input.parse_features(topic.clone(), m.clone());
    accepted
        .forecast_temperature(parts.forecast, m.clone())
        .score_anomalies(parts.anomaly, interval, m.clone())
        .map(move |outcome| encode(outcome, &topic))
        .concat(dead)
        .kafka_sink(parts.producer, m)
        .probe_with(&acked);
    acked
}
