//! The features dataflow: raw station observations in, one hourly (by default) feature record per
//! station-window out, in exactly the input contract of the inference dataflow. It replaces the
//! Spark Structured Streaming job of the original system.
//!
//! ```text
//!  weather-raw (key = station)                                                      weather-features
//!  partition p ─> worker p mod peers                                                 (key = station)
//!     │                                                                                     ▲
//!  KafkaSource ─> AssignWatermarks ─┬─ on-time obs ─exchange(station)─> WindowFeatures ─┐   │
//!   (epoch stamps, │ parse, validate │                                  (per station:   ├─> KafkaSink ─> probe "acked"
//!    bounded polls)│ partition clock ├─ marks (p, W) ─broadcast────────> open windows,  │     │    │
//!                  │ lateness        │                                   close at W,    │     │    └─> weather-raw-late
//!                  │                 │                                   flush at end)  │     └─> weather-raw-dlq
//!                  │                 └─ dead letters, late records ──────────────────────┘
//!        ▲                                                                                        │
//!        └───────────── commit consumer-group offsets of acknowledged epochs ─────────────────────┘
//! ```
//!
//! The stage runs alone or with the inference dataflow in the same cluster (`[pipeline] stages`);
//! the two talk through `weather-features`, so each keeps its own delivery guarantees and
//! offsets. It is not checkpointed: the source commits offsets once their epochs' outputs are
//! acknowledged, open windows are emitted when the input ends (a clean stop included), so nothing
//! read is lost, and the window state types are serialisable for the recovery work.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};

use crate::features::event_time::StationWindows;
use crate::kafka::sink::SinkParts;
use crate::kafka::source::{kafka_source, Gate, PartitionReader};
use crate::kafka::{KafkaSink, KafkaSourceSpec};
use crate::metrics::Metrics;
use crate::operators::keyed::KeyedCheckpoint;
use crate::operators::window::{AssignWatermarks, ClockCheckpoint, WindowFeatures, WindowParams};

/// Everything one worker needs to build the features dataflow.
pub struct FeaturesParts {
    /// Source settings (topic `weather-raw`).
    pub source: KafkaSourceSpec,
    /// This worker's partition reader.
    pub reader: Rc<RefCell<PartitionReader>>,
    /// Source flow control (checkpoint backpressure).
    pub gate: Gate,
    /// Whether checkpoints are written.
    pub checkpointing: bool,
    /// Partition clocks to start from, and their snapshots.
    pub clocks: ClockCheckpoint,
    /// Open windows to start from, and their snapshots.
    pub windows: KeyedCheckpoint<StationWindows>,
    /// Emit windows still open when the input ends (batch runs); else keep them (streaming stop).
    pub flush_at_end: bool,
    /// This worker's sink (features, raw DLQ, late topic).
    pub sink: SinkParts,
    /// Window size, lateness, idle timeout.
    pub window: WindowParams,
    /// Counters of this stage.
    pub metrics: Arc<Metrics>,
}

/// Builds the dataflow in `scope`; returns the probe whose frontier passes an epoch once every
/// output of it has been acknowledged by the broker.
pub fn build(scope: Scope<'_, u64>, mut parts: FeaturesParts) -> ProbeHandle<u64> {
    let acked = ProbeHandle::new();
    let m = parts.metrics;
    // No in-flight bound here: an observation is answered only when its window closes, which
    // takes reading further (the watermark moves with what is read), so a bound could stall the
    // stage. Its memory is bounded by the open windows instead.
    parts.source.max_in_flight = 0;
    let input = kafka_source(
        scope,
        parts.source,
        parts.reader,
        acked.clone(),
        parts.gate,
        parts.checkpointing,
        m.clone(),
    );
    let (observations, marks, refused) = input.assign_watermarks_with(&parts.window, m.clone(), parts.clocks);
    observations
        .window_features_with(marks, &parts.window, m, parts.windows, parts.flush_at_end)
        .concat(refused)
        .kafka_sink(parts.sink)
        .probe_with(&acked);
    acked
}
