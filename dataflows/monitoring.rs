//! The model-monitoring dataflow: verifies every published prediction against the actual
//! feature records of the 1 to 24 hours that follow it, keeps rolling MAE per lead and interval
//! coverage per station and overall, publishes them to `weather-model-metrics` and to every
//! process's HTTP view, and raises a skill alert when a station does worse than persistence.
//!
//! ```text
//!  weather-predictions ─KafkaSource─> decode ─┐
//!  weather-features ────KafkaSource─> decode ─┴─ Tracked events ─┬─> VerificationWindow (per station, rolling)
//!                                                                │     ├─ points  ((station, valid_at), forecast)  ─ arrange_by_key ─┐
//!                                                                │     └─ actuals ((station, valid_at), temperature) ─ arrange_by_key ─┴─ join_core
//!                                                                │                                                                      │
//!                                                                │        explode to Stats per (station, lead) and ("", lead) <─────────┘
//!                                                                │        count_total (incremental sums, exact retractions)
//!                                                                └─> ModelBoard (per station) <─┘
//!                                                                      ├─> metrics, skill alerts ─> KafkaSink ─> weather-model-metrics ─┐
//!                                                                      └─> charts, anomalies ───> every process's View (HTTP) ──────────┴─> probe
//! ```
//!
//! It is its own stage (`[pipeline] stages = [..., "monitoring"]`) with its own consumer group
//! (`<kafka.group_id>-monitoring`); it reads what the inference stage has *published*, so it can
//! run in the inference cluster or in a separate one. It is not checkpointed: on start it reads
//! both topics from `monitoring.start` (default: the earliest retained record) and rebuilds its
//! windows; metric records are snapshots (the newest per key wins), so a repeat after a restart is
//! harmless.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::operators::CountTotal;
use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::contract::{FeatureRecord, Prediction};
use crate::kafka::sink::SinkParts;
use crate::kafka::source::{kafka_source, Gate, InputMessage, PartitionReader};
use crate::kafka::{KafkaSink, KafkaSourceSpec, OutRecord, OutTopic};
use crate::metrics::Metrics;
use crate::ops::monitor::board::PublishBoard;
use crate::ops::monitor::window::VerificationWindow;
use crate::ops::monitor::{Event, MonitorParams, Observation, Published, Stats, Tracked, OVERALL};
use crate::ops::view::{SinkToViews, ViewRoute};

/// Everything one worker needs to build the monitoring dataflow.
pub struct MonitoringParts {
    /// Source of `topics.predictions`.
    pub predictions: KafkaSourceSpec,
    /// Its reader.
    pub predictions_reader: Rc<RefCell<PartitionReader>>,
    /// Source of `topics.features` (the actuals).
    pub features: KafkaSourceSpec,
    /// Its reader.
    pub features_reader: Rc<RefCell<PartitionReader>>,
    /// Sink to `topics.model_metrics`.
    pub sink: SinkParts,
    /// Window, publication and alert settings.
    pub params: MonitorParams,
    /// Where this process's HTTP view is.
    pub views: ViewRoute,
    /// The stage's counters.
    pub metrics: Arc<Metrics>,
}

/// Builds the dataflow in `scope`; the returned probe is done once both sources finished and
/// every publication was acknowledged and applied to the views.
pub fn build(scope: Scope<'_, u64>, parts: MonitoringParts) -> ProbeHandle<u64> {
    let acked = ProbeHandle::new();
    let m = parts.metrics;
    let predictions = kafka_source(
        scope,
        parts.predictions,
        parts.predictions_reader,
        acked.clone(),
        Gate::open(),
        false,
        m.clone(),
    );
    let features = kafka_source(
        scope,
        parts.features,
        parts.features_reader,
        acked.clone(),
        Gate::open(),
        false,
        m.clone(),
    );
    let events = decode(predictions, 0, m.clone()).concat(decode(features, 1, m));
    let published = monitor(events, &parts.params);
    published.clone().sink_to_views(parts.views).probe_with(&acked);
    let worker = scope.index();
    let mut seq = 0u64;
    published
        .flat_map(move |p| {
            seq += 1;
            encode(&p, worker, seq)
        })
        .kafka_sink(parts.sink)
        .probe_with(&acked);
    acked
}

/// The monitoring computation without Kafka: events in, publications out.
pub fn monitor<'s>(events: StreamVec<'s, u64, Tracked>, params: &MonitorParams) -> StreamVec<'s, u64, Published> {
    let (points, actuals) = events.clone().verification_window(params.window_hours);
    let points = points.as_collection().arrange_by_key();
    let actuals = actuals.as_collection().arrange_by_key();
    let stats = points
        .join_core(actuals, |(station, _valid_at), point, actual| {
            Some((station.clone(), point.lead, Stats::of(point, *actual)))
        })
        .explode(|(station, lead, s): (String, u32, Stats)| [((station, lead), s), ((OVERALL.to_string(), lead), s)])
        .count_total();
    events.board(stats.inner, params.clone())
}

/// Decodes the messages of input `input` (0 predictions, 1 features); undecodable ones are
/// counted as `rejected_invalid` and skipped (the inference stage already dead-lettered bad input).
fn decode<'s>(stream: StreamVec<'s, u64, InputMessage>, input: u8, metrics: Arc<Metrics>) -> StreamVec<'s, u64, Tracked> {
    stream.flat_map(move |m| {
        let event = if input == 0 {
            serde_json::from_slice::<Prediction>(&m.payload).ok().map(Event::predicted)
        } else {
            FeatureRecord::parse(&m.payload).ok().map(|r| {
                Event::Observed(Observation {
                    station_id: r.station_id,
                    window_end: r.window_end,
                    temperature: r.temperature_mean,
                })
            })
        };
        if event.is_none() {
            metrics.rejected_invalid.fetch_add(1, Ordering::Relaxed);
        }
        event.map(|event| Tracked {
            event,
            input,
            partition: m.partition,
            offset: m.offset,
        })
    })
}

/// The `weather-model-metrics` record of a publication (`None` for view-only ones): JSON with a
/// `type` field (`station_metrics`, `overall_metrics`, `skill_alert`) and `published_at`, keyed
/// by station (`_overall` for all stations).
pub fn encode(p: &Published, worker: usize, seq: u64) -> Option<OutRecord> {
    if !p.to_kafka() {
        return None;
    }
    let mut v = p.to_json();
    v.as_object_mut()?
        .insert("published_at".into(), serde_json::Value::String(chrono::Utc::now().to_rfc3339()));
    Some(OutRecord {
        topic: OutTopic::Predictions,
        id: format!("monitoring/{worker}/{}/{seq}", crate::ops::counters::unix_ms()),
        key: Some(p.key().into_bytes()),
        payload: serde_json::to_vec(&v).ok()?,
        headers: Vec::new(),
    })
}
