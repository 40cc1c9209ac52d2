//! The features stage's operators: observations in, one feature record per station-window out,
//! on event-time tumbling windows (maths in `crate::features::event_time`, per-window statistics
//! in `crate::features::window`).
//!
//! ```text
//!   InputMessage ──AssignWatermarks (reading worker, offset order)──┬── Stamped obs ──exchange(station)──┐
//!                  parse + validate, partition clock, lateness      ├── Mark(p, W) ───broadcast──────────┤
//!                                                                    └── OutRecord: DLQ (invalid),       │
//!                                                                        late topic (window already     │
//!                                                                        past the watermark)            v
//!                                   WindowFeatures (station worker): per epoch, items sorted by (partition, offset),
//!                                   obs -> open window, mark -> close windows of that partition with end <= W,
//!                                   end of input -> flush ──> OutRecord: weather-features (key = station)
//! ```
//!
//! Like the inference operators, `WindowFeatures` applies an epoch only once the frontier has
//! passed it, in input order, so a station's windows see the same records in the same order on any
//! number of workers; lateness is decided before the exchange from the partition's own clock, so
//! the emitted features do not depend on the cluster's shape (tested: 1 x 1 equals 2 x 2).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map, Partition};
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;

use super::{dead_letter, dlq_headers, output_id};
use crate::contract::{FeatureRecord, RejectKind, Rejection, SourcePosition};
use crate::features::event_time::{Admission, Mark, PartitionClock, PartitionClocks, StationWindows, WindowBook, WindowSpec};
use crate::kafka::assign::station_hash;
use crate::kafka::{InputMessage, OutRecord, OutTopic};
use crate::metrics::Metrics;
use crate::observations::message::{encode_observation, parse_observation};
use crate::observations::Observation;
use crate::operators::keyed::{BoundarySnapshots, KeyedCheckpoint, OperatorCheckpoint};

/// Headers of records on the late topic, besides the DLQ ones (`weatherflow.error`, `.kind` =
/// `late_record`, `weatherflow.source.topic/.partition/.offset`).
pub mod late_headers {
    /// Error kind of every late record.
    pub const KIND_VALUE: &str = "late_record";
    /// End of the window the record belongs to (RFC 3339).
    pub const WINDOW_END: &str = "weatherflow.late.window_end";
    /// The watermark it missed (RFC 3339).
    pub const WATERMARK: &str = "weatherflow.late.watermark";
}

/// Settings of the features stage's operators.
#[derive(Clone, Debug)]
pub struct WindowParams {
    /// Window size and allowed lateness.
    pub spec: WindowSpec,
    /// Wall-clock time without records after which a partition's watermark advances by itself.
    pub idle_timeout: StdDuration,
    /// Observations stamped further than this ahead of the wall clock are refused (`None`: no limit).
    pub max_future: Option<Duration>,
    /// Input topic name (for DLQ and late-record headers).
    pub source_topic: String,
}

/// An on-time observation on its way to its station's worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// The observation.
    pub obs: Observation,
    /// Where it was read.
    pub source: SourcePosition,
    /// End of its window.
    #[serde(with = "crate::exchange::utc")]
    pub window_end: DateTime<Utc>,
}

/// What `AssignWatermarks` emits, before it is split into three streams.
#[derive(Clone, Debug)]
enum Admitted {
    Obs(Stamped),
    Mark(Mark),
    Out(OutRecord),
}

/// The id of a feature record on `weather-features` (one per station-window).
pub fn feature_id(r: &FeatureRecord) -> String {
    format!("{}@{}", r.station_id, r.window_end.timestamp())
}

/// Encodes a feature record for `weather-features` (key = station).
pub fn encode_feature(r: &FeatureRecord) -> OutRecord {
    OutRecord {
        topic: OutTopic::Features,
        id: feature_id(r),
        key: Some(r.station_id.as_bytes().to_vec()),
        // Serialising our own type cannot fail (string keys, finite or null numbers).
        payload: serde_json::to_vec(r).unwrap_or_default(),
        headers: Vec::new(),
    }
}

/// A record for the late topic: the payload, the reason and where it came from.
pub fn late_record(
    source_topic: &str,
    pos: SourcePosition,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    reason: String,
    window_end: DateTime<Utc>,
    watermark: DateTime<Utc>,
) -> OutRecord {
    OutRecord {
        topic: OutTopic::Late,
        id: output_id(pos),
        key,
        payload,
        headers: vec![
            (dlq_headers::ERROR.into(), reason.into_bytes()),
            (dlq_headers::KIND.into(), late_headers::KIND_VALUE.as_bytes().to_vec()),
            (dlq_headers::TOPIC.into(), source_topic.as_bytes().to_vec()),
            (dlq_headers::PARTITION.into(), pos.partition.to_string().into_bytes()),
            (dlq_headers::OFFSET.into(), pos.offset.to_string().into_bytes()),
            (late_headers::WINDOW_END.into(), window_end.to_rfc3339().into_bytes()),
            (late_headers::WATERMARK.into(), watermark.to_rfc3339().into_bytes()),
        ],
    }
}

fn human(d: Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s % 3600 == 0 && s != 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s != 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Extension trait: parse, validate and judge raw observation messages on the worker that read
/// them (offset order per partition).
pub trait AssignWatermarks<'s> {
    /// Splits into on-time observations, watermark marks and records for the DLQ or late topic.
    #[allow(clippy::type_complexity)]
    fn assign_watermarks(
        self,
        params: &WindowParams,
        metrics: Arc<Metrics>,
    ) -> (StreamVec<'s, u64, Stamped>, StreamVec<'s, u64, Mark>, StreamVec<'s, u64, OutRecord>)
    where
        Self: Sized,
    {
        self.assign_watermarks_with(params, metrics, OperatorCheckpoint::disabled())
    }

    /// As [`AssignWatermarks::assign_watermarks`], starting from checkpointed partition clocks
    /// (`[partition, clock]` pairs of the partitions this worker reads) and snapshotting them at
    /// checkpoint boundaries.
    #[allow(clippy::type_complexity)]
    fn assign_watermarks_with(
        self,
        params: &WindowParams,
        metrics: Arc<Metrics>,
        ckpt: ClockCheckpoint,
    ) -> (StreamVec<'s, u64, Stamped>, StreamVec<'s, u64, Mark>, StreamVec<'s, u64, OutRecord>);
}

/// Checkpointing of the partition clocks: `[partition as string, clock]` pairs.
pub type ClockCheckpoint = OperatorCheckpoint<Vec<(String, PartitionClock)>>;

/// Name of the watermark operator (and of its state in checkpoints).
pub const CLOCKS_OPERATOR: &str = "AssignWatermarks";
/// Name of the window operator (and of its state in checkpoints).
pub const WINDOWS_OPERATOR: &str = "WindowFeatures";

fn clocks_json(clocks: &PartitionClocks) -> String {
    let v: Vec<(String, &PartitionClock)> = clocks.states().iter().map(|(p, c)| (p.to_string(), c)).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

fn windows_json(book: &WindowBook) -> String {
    let mut v = book.states();
    v.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

impl<'s> AssignWatermarks<'s> for StreamVec<'s, u64, InputMessage> {
    fn assign_watermarks_with(
        self,
        params: &WindowParams,
        metrics: Arc<Metrics>,
        ckpt: ClockCheckpoint,
    ) -> (StreamVec<'s, u64, Stamped>, StreamVec<'s, u64, Mark>, StreamVec<'s, u64, OutRecord>) {
        let scope = self.scope();
        let p = params.clone();
        let admitted = self.unary_frontier::<CapacityContainerBuilder<Vec<Admitted>>, _, _, _>(Pipeline, "AssignWatermarks", move |cap, info| {
            let activator = scope.activator_for(info.address);
            let worker = scope.index();
            let restored = ckpt.restored.into_iter().filter_map(|(k, c)| Some((k.parse::<i32>().ok()?, c))).collect();
            let mut clocks = PartitionClocks::restored(p.spec, restored);
            let mut snaps = BoundarySnapshots::new(ckpt.book, ckpt.every);
            // Held at the input frontier: lets idle advances be emitted while no data arrives.
            let mut held: Option<Capability<u64>> = Some(cap);
            let recheck = (p.idle_timeout / 4).clamp(StdDuration::from_millis(10), StdDuration::from_secs(1));
            move |(input, frontier), output| {
                let now = Instant::now();
                let latest = p.max_future.and_then(|h| Utc::now().checked_add_signed(h));
                input.for_each(|cap, data| {
                    // Clocks as of every boundary before this batch's epoch (batches arrive in
                    // epoch order from this worker's source).
                    if let Some(t) = cap.least().copied() {
                        snaps.take(Some(t), || clocks_json(&clocks));
                        // Idle marks computed after this batch must not overtake it downstream.
                        if let Some(h) = held.as_mut() {
                            if *h.time() < t {
                                h.downgrade(&t);
                            }
                        }
                    }
                    snaps.mark_dirty();
                    let mut session = output.session(&cap);
                    for m in data.drain(..) {
                        let pos = SourcePosition { partition: m.partition, offset: m.offset };
                        let obs = match parse_observation(&m.payload, latest) {
                            Ok(o) => o,
                            Err(why) => {
                                metrics.rejected_invalid.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(worker, partition = m.partition, offset = m.offset, reason = %why, "refused observation");
                                session.give(Admitted::Out(dead_letter(&p.source_topic, pos, m.key, m.payload, &why)));
                                continue;
                            }
                        };
                        match clocks.admit(m.partition, m.offset, obs.time, now) {
                            Admission::OnTime { window_end } => session.give(Admitted::Obs(Stamped { obs, source: pos, window_end })),
                            Admission::Late { window_end, watermark, max_event } => {
                                metrics.rejected_late.fetch_add(1, Ordering::Relaxed);
                                let reason = format!(
                                    "late_record: observation at {} of station {} belongs to the window ending {}, but partition {} is at watermark {} \
                                     (newest event time {} minus the allowed lateness of {}): that window is already emitted",
                                    obs.time.to_rfc3339(),
                                    obs.station_id,
                                    window_end.to_rfc3339(),
                                    m.partition,
                                    watermark.to_rfc3339(),
                                    max_event.to_rfc3339(),
                                    human(p.spec.allowed_lateness)
                                );
                                tracing::debug!(worker, partition = m.partition, offset = m.offset, %reason, "late observation");
                                session.give(Admitted::Out(late_record(&p.source_topic, pos, m.key, m.payload, reason, window_end, watermark)));
                            }
                            Admission::OutOfRange => {
                                metrics.rejected_invalid.fetch_add(1, Ordering::Relaxed);
                                let why = Rejection::new(RejectKind::Impossible, format!("time {} has no representable window", obs.time));
                                session.give(Admitted::Out(dead_letter(&p.source_topic, pos, m.key, m.payload, &why)));
                            }
                        }
                    }
                    session.give_iterator(clocks.take_marks().into_iter().map(Admitted::Mark));
                });
                snaps.take(frontier.frontier().iter().next().copied(), || clocks_json(&clocks));
                match frontier.frontier().iter().next() {
                    Some(t) => {
                        if let Some(h) = held.as_mut() {
                            if h.time() < t {
                                h.downgrade(t);
                            }
                        }
                    }
                    None => held = None,
                }
                if let Some(h) = &held {
                    if clocks.advance_idle(now, p.idle_timeout) > 0 {
                        snaps.mark_dirty();
                        let marks = clocks.take_marks();
                        tracing::debug!(worker, ?marks, "idle partitions: watermark advanced with the wall clock");
                        output.session(h).give_iterator(marks.into_iter().map(Admitted::Mark));
                    }
                    if clocks.tracked() > 0 {
                        activator.activate_after(recheck);
                    }
                }
            }
        });
        let mut parts = admitted.partition(3, |a| match a {
            Admitted::Obs(o) => (0, Admitted::Obs(o)),
            Admitted::Mark(m) => (1, Admitted::Mark(m)),
            Admitted::Out(r) => (2, Admitted::Out(r)),
        });
        let out = parts
            .pop()
            .map(|s| s.flat_map(|a| if let Admitted::Out(r) = a { Some(r) } else { None }));
        let marks = parts
            .pop()
            .map(|s| s.flat_map(|a| if let Admitted::Mark(m) = a { Some(m) } else { None }));
        let obs = parts
            .pop()
            .map(|s| s.flat_map(|a| if let Admitted::Obs(o) = a { Some(o) } else { None }));
        match (obs, marks, out) {
            (Some(o), Some(m), Some(r)) => (o, m, r),
            // `partition(3, ..)` always returns three streams.
            _ => unreachable!("partition returned fewer than three streams"),
        }
    }
}

/// An item of one epoch at a station worker, ordered by its input position.
enum Item {
    Obs(Stamped),
    Mark(Mark),
}

impl Item {
    fn order(&self) -> (i32, i64, u8, DateTime<Utc>) {
        match self {
            Item::Obs(s) => (s.source.partition, s.source.offset, 0, s.window_end),
            Item::Mark(m) => (m.partition, m.offset, 1, m.watermark),
        }
    }
}

/// The buffer of the epoch of `cap`, retaining a capability for it on first sight. Messages
/// without a time (an empty stamp) make no progress claim and are not buffered.
fn slot<'a>(
    pending: &'a mut BTreeMap<u64, (Capability<u64>, Vec<Item>)>,
    cap: &InputCapability<u64>,
    port: usize,
) -> Option<&'a mut Vec<Item>> {
    let time = *cap.least()?;
    if let std::collections::btree_map::Entry::Vacant(v) = pending.entry(time) {
        v.insert((cap.retain_least(port)?, Vec::new()));
    }
    pending.get_mut(&time).map(|e| &mut e.1)
}

/// Extension trait: per-station event-time windows.
pub trait WindowFeatures<'s> {
    /// One `weather-features` record per station-window (and late records for windows already
    /// emitted, which only a station spread over several partitions can produce). Open windows
    /// are emitted when the input ends.
    fn window_features(self, marks: StreamVec<'s, u64, Mark>, params: &WindowParams, metrics: Arc<Metrics>) -> StreamVec<'s, u64, OutRecord>
    where
        Self: Sized,
    {
        self.window_features_with(marks, params, metrics, KeyedCheckpoint::disabled(), true)
    }

    /// As [`WindowFeatures::window_features`], starting from checkpointed open windows and
    /// snapshotting them at checkpoint boundaries. With `flush_at_end` false, windows still open
    /// when the input ends stay open (a streaming stop: they live on in the final checkpoint and
    /// complete after the restart) instead of being emitted incomplete.
    fn window_features_with(
        self,
        marks: StreamVec<'s, u64, Mark>,
        params: &WindowParams,
        metrics: Arc<Metrics>,
        ckpt: KeyedCheckpoint<StationWindows>,
        flush_at_end: bool,
    ) -> StreamVec<'s, u64, OutRecord>;
}

impl<'s> WindowFeatures<'s> for StreamVec<'s, u64, Stamped> {
    fn window_features_with(
        self,
        marks: StreamVec<'s, u64, Mark>,
        params: &WindowParams,
        metrics: Arc<Metrics>,
        ckpt: KeyedCheckpoint<StationWindows>,
        flush_at_end: bool,
    ) -> StreamVec<'s, u64, OutRecord> {
        let scope = self.scope();
        let p = params.clone();
        let exchange = Exchange::new(|s: &Stamped| station_hash(&s.obs.station_id));
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<OutRecord>>, _, _, _, _>(
            marks.broadcast(),
            exchange,
            Pipeline,
            "WindowFeatures",
            move |cap, _info| {
                let worker = scope.index();
                let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Item>)> = BTreeMap::new();
                let mut book = WindowBook::restored(p.spec.size, ckpt.restored);
                let mut snaps = BoundarySnapshots::new(ckpt.book, ckpt.every);
                let mut held: Option<Capability<u64>> = Some(cap);
                let mut features: Vec<FeatureRecord> = Vec::new();
                move |(obs_in, obs_frontier), (mark_in, mark_frontier), output| {
                    let port = output.output_index();
                    obs_in.for_each(|cap, data| {
                        if let Some(v) = slot(&mut pending, &cap, port) {
                            v.extend(data.drain(..).map(Item::Obs));
                        }
                    });
                    mark_in.for_each(|cap, data| {
                        if let Some(v) = slot(&mut pending, &cap, port) {
                            v.extend(data.drain(..).map(Item::Mark));
                        }
                    });
                    let complete = |t: &u64| !obs_frontier.less_equal(t) && !mark_frontier.less_equal(t);
                    while let Some(entry) = pending.first_entry() {
                        if !complete(entry.key()) {
                            break;
                        }
                        snaps.take(Some(*entry.key()), || windows_json(&book));
                        snaps.mark_dirty();
                        let (cap, mut items) = entry.remove();
                        // Windows flushed at the end of input go out at an epoch no earlier than
                        // any window before them, so each station's windows stay in order downstream.
                        if let Some(h) = held.as_mut() {
                            if h.time() < cap.time() {
                                h.downgrade(cap.time());
                            }
                        }
                        items.sort_by_key(Item::order);
                        let mut session = output.session(&cap);
                        for item in items {
                            match item {
                                Item::Obs(s) => {
                                    if let Err(done) = book.add(&s.obs, s.window_end, s.source.partition) {
                                        metrics.rejected_late.fetch_add(1, Ordering::Relaxed);
                                        let reason = format!(
                                            "late_record: observation at {} belongs to the window ending {}, but station {} has already emitted its windows through {}",
                                            s.obs.time.to_rfc3339(),
                                            s.window_end.to_rfc3339(),
                                            s.obs.station_id,
                                            done.emitted_through.to_rfc3339()
                                        );
                                        let key = Some(s.obs.station_id.as_bytes().to_vec());
                                        session.give(late_record(
                                            &p.source_topic,
                                            s.source,
                                            key,
                                            encode_observation(&s.obs),
                                            reason,
                                            s.window_end,
                                            done.emitted_through,
                                        ));
                                    }
                                }
                                Item::Mark(m) => book.close_through(m.partition, m.watermark, &mut features),
                            }
                        }
                        metrics.windows_emitted.fetch_add(features.len() as u64, Ordering::Relaxed);
                        session.give_iterator(features.drain(..).map(|r| encode_feature(&r)));
                    }
                    let lowest = [obs_frontier.frontier().iter().next(), mark_frontier.frontier().iter().next()]
                        .into_iter()
                        .flatten()
                        .min()
                        .copied();
                    if lowest.is_some() {
                        snaps.take(lowest, || windows_json(&book));
                    }
                    match lowest {
                        Some(t) => {
                            if let Some(h) = held.as_mut() {
                                if *h.time() < t {
                                    h.downgrade(&t);
                                }
                            }
                        }
                        None => {
                            // End of input: every open window is complete as far as it will ever be.
                            if let Some(h) = held.take() {
                                if flush_at_end {
                                    book.flush(&mut features);
                                    snaps.mark_dirty();
                                }
                                if !features.is_empty() {
                                    tracing::info!(worker, windows = features.len(), "input finished: flushing open windows");
                                }
                                metrics.windows_emitted.fetch_add(features.len() as u64, Ordering::Relaxed);
                                output.session(&h).give_iterator(features.drain(..).map(|r| encode_feature(&r)));
                            }
                            snaps.take(None, || windows_json(&book));
                        }
                    }
                }
            },
        )
    }
}
