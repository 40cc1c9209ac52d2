//! Operational counters of one pipeline stage: the `ops` field of [`crate::metrics::Metrics`],
//! filled by small hooks in the Kafka source and sink, the checkpoint writer and the worker loop,
//! and read by [`super::prometheus`] (`/metrics`) and [`super::status`] (`/api/status`).
//!
//! ```text
//!   KafkaSource  ── records_in(worker, topic, p, n) ─────────┐
//!   KafkaSource  ── sample_lag(worker, topic, reader) ───────┤  lag = high watermark of the last fetch
//!   KafkaSink    ── acked(kind, topic, p, epoch, n) ─────────┤        response − next offset to read
//!   Checkpointer ── checkpoint_written(worker, epoch, took) ─┼──> OpsMetrics ──> /metrics, /api/status
//!   worker loop  ── epoch_completed(delay)                   │
//!   timely log   ── park / unpark (load) ────────────────────┘
//! ```
//!
//! Every hot-path update is a read lock plus an atomic add: partitions and workers are created
//! on first sight under the write lock, never removed. The source and sink call these once per
//! poll batch and partition (with a count), not once per record: the lock and counters are shared
//! by the workers, and per-record updates made their cores contend for the same cache lines.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer;

use crate::kafka::source::PartitionReader;
use crate::kafka::{OutTopic, WfConsumer};

/// Buckets (seconds) of the end-to-end latency and epoch completion histograms.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
/// Buckets (seconds) of the checkpoint write histogram.
pub const CHECKPOINT_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Least time between two lag samples of one worker's partitions of one topic.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// A Prometheus-style histogram with fixed buckets, updated lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets (seconds), without `+Inf`.
    pub bounds: Vec<f64>,
    /// Cumulative counts per bound, then the `+Inf` count (= `count`).
    pub cumulative: Vec<u64>,
    /// Sum of the observations (seconds).
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation of `seconds` (negative values count as 0).
    pub fn observe(&self, seconds: f64) {
        self.observe_n(seconds, 1);
    }

    /// Records `n` observations of the same `seconds`.
    pub fn observe_n(&self, seconds: f64, n: u64) {
        let s = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        let i = self.bounds.iter().position(|b| s <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(n, Ordering::Relaxed);
        self.sum_micros.fetch_add((s * 1e6).round() as u64 * n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            cumulative,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// The `q` quantile (0..1) estimated as the upper bound of the bucket that holds it (`None`
    /// without observations; `+Inf` bucket reported as the largest bound).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let i = self.cumulative.iter().position(|c| *c >= rank).unwrap_or(self.bounds.len());
        Some(*self.bounds.get(i).or(self.bounds.last()).unwrap_or(&0.0))
    }
}

/// What an output partition receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutKind {
    /// Regular output (predictions, features, model metrics).
    Out = 1,
    /// Dead letters.
    Dlq = 2,
    /// Late observations.
    Late = 3,
}

impl OutKind {
    fn from_code(c: u8) -> Option<OutKind> {
        match c {
            1 => Some(OutKind::Out),
            2 => Some(OutKind::Dlq),
            3 => Some(OutKind::Late),
            _ => None,
        }
    }
}

/// Counters of one topic-partition.
#[derive(Debug)]
struct PartitionStats {
    records_in: AtomicU64,
    acked: AtomicU64,
    kind: AtomicU8,
    worker: AtomicI64,
    position: AtomicI64,
    high_watermark: AtomicI64,
}

impl Default for PartitionStats {
    fn default() -> Self {
        PartitionStats {
            records_in: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            kind: AtomicU8::new(0),
            worker: AtomicI64::new(-1),
            position: AtomicI64::new(-1),
            high_watermark: AtomicI64::new(-1),
        }
    }
}

/// A point-in-time copy of one topic-partition's counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionSnapshot {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Messages read from it (input partitions).
    pub records_in: u64,
    /// Records the broker acknowledged into it (output partitions).
    pub acked: u64,
    /// What it receives, when it is an output partition.
    #[serde(skip)]
    pub kind: Option<OutKind>,
    /// The worker reading it (input partitions).
    pub worker: Option<usize>,
    /// Next offset to read (input partitions).
    pub position: Option<i64>,
    /// High watermark of the last fetch response (input partitions).
    pub high_watermark: Option<i64>,
}

impl PartitionSnapshot {
    /// Records not read yet: high watermark − position (`None` until both are known).
    pub fn lag(&self) -> Option<i64> {
        Some((self.high_watermark? - self.position?).max(0))
    }
}

/// Busy time of one worker thread, from timely's park/unpark events.
#[derive(Debug)]
pub struct WorkerLoad {
    started: Instant,
    parked_nanos: AtomicU64,
}

impl WorkerLoad {
    /// Adds time the worker spent parked (idle).
    pub fn add_parked(&self, d: Duration) {
        self.parked_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// `(seconds since the worker started, seconds of that not parked)`.
    pub fn read(&self) -> (f64, f64) {
        let up = self.started.elapsed().as_secs_f64();
        let parked = self.parked_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (up, (up - parked).max(0.0))
    }
}

/// The newest checkpoint written by a worker of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointInfo {
    /// The checkpoint's epoch (`u64::MAX` for the final checkpoint of a drained run).
    pub epoch: u64,
    /// When it was written (unix ms).
    pub written_at_ms: u64,
    /// How long the write took (ms).
    pub took_ms: u64,
    /// The worker that wrote it.
    pub worker: usize,
}

/// Operational counters of one stage (see the module doc).
#[derive(Debug)]
pub struct OpsMetrics {
    epoch_ms: AtomicU64,
    partitions: RwLock<HashMap<String, Vec<Arc<PartitionStats>>>>,
    latency: RwLock<BTreeMap<String, Arc<Histogram>>>,
    /// Delay from an epoch's end (wall clock) to the moment all its outputs were acknowledged.
    pub epoch_completion: Histogram,
    /// Time to write one worker's checkpoint file.
    pub checkpoint_write: Histogram,
    last_checkpoint: Mutex<Option<CheckpointInfo>>,
    workers: RwLock<BTreeMap<usize, Arc<WorkerLoad>>>,
    lag_sampled: Mutex<HashMap<usize, HashMap<String, Instant>>>,
}

impl Default for OpsMetrics {
    fn default() -> Self {
        OpsMetrics {
            epoch_ms: AtomicU64::new(0),
            partitions: RwLock::new(HashMap::new()),
            latency: RwLock::new(BTreeMap::new()),
            epoch_completion: Histogram::new(&LATENCY_BUCKETS),
            checkpoint_write: Histogram::new(&CHECKPOINT_BUCKETS),
            last_checkpoint: Mutex::new(None),
            workers: RwLock::new(BTreeMap::new()),
            lag_sampled: Mutex::new(HashMap::new()),
        }
    }
}

/// Milliseconds since the unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl OpsMetrics {
    /// Sets the epoch length, which turns an epoch number back into wall-clock time.
    pub fn set_epoch_ms(&self, ms: u64) {
        self.epoch_ms.store(ms, Ordering::Relaxed);
    }

    /// The epoch length (0 until set).
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms.load(Ordering::Relaxed)
    }

    fn with_partition(&self, topic: &str, partition: i32, f: impl FnOnce(&PartitionStats)) {
        let Ok(p) = usize::try_from(partition) else { return };
        if let Ok(map) = self.partitions.read() {
            if let Some(s) = map.get(topic).and_then(|v| v.get(p)) {
                f(s);
                return;
            }
        }
        let Ok(mut map) = self.partitions.write() else { return };
        let v = map.entry(topic.to_string()).or_default();
        while v.len() <= p {
            v.push(Arc::new(PartitionStats::default()));
        }
        f(&v[p]);
    }

    /// `n` messages read from `topic`/`partition` by `worker` (callers count per poll batch, not
    /// per record: the counters are shared between workers).
    pub fn records_in(&self, worker: usize, topic: &str, partition: i32, n: u64) {
        self.with_partition(topic, partition, |s| {
            s.records_in.fetch_add(n, Ordering::Relaxed);
            s.worker.store(worker as i64, Ordering::Relaxed);
        });
    }

    /// `n` records acknowledged into `topic`/`partition`; they were read in `epoch`, so their
    /// end-to-end latency is measured from that epoch's start (resolution: one epoch).
    pub fn acked(&self, kind: OutTopic, topic: &str, partition: i32, epoch: u64, n: u64) {
        let k = match kind {
            OutTopic::Dlq => OutKind::Dlq,
            OutTopic::Late => OutKind::Late,
            OutTopic::Predictions | OutTopic::Features => OutKind::Out,
        };
        self.with_partition(topic, partition, |s| {
            s.acked.fetch_add(n, Ordering::Relaxed);
            s.kind.store(k as u8, Ordering::Relaxed);
        });
        let epoch_ms = self.epoch_ms();
        if epoch_ms == 0 {
            return;
        }
        let read_at = epoch.saturating_mul(epoch_ms);
        let seconds = unix_ms().saturating_sub(read_at) as f64 / 1000.0;
        let found = self.latency.read().ok().and_then(|m| m.get(topic).cloned());
        let h = match found {
            Some(h) => h,
            None => match self.latency.write() {
                Ok(mut m) => m
                    .entry(topic.to_string())
                    .or_insert_with(|| Arc::new(Histogram::new(&LATENCY_BUCKETS)))
                    .clone(),
                Err(_) => return,
            },
        };
        h.observe_n(seconds, n);
    }

    /// Samples the lag of the partitions `reader` reads (at most every 500 ms per worker and
    /// topic): the next offset to read against the high watermark librdkafka cached from its
    /// last fetch response. (A ListOffsets query is not used: Tansu answers "latest" wrongly.)
    pub fn sample_lag(&self, worker: usize, topic: &str, reader: &PartitionReader) {
        {
            let Ok(mut last) = self.lag_sampled.lock() else { return };
            let now = Instant::now();
            let mine = last.entry(worker).or_default();
            match mine.get_mut(topic) {
                Some(t) if now.duration_since(*t) < LAG_SAMPLE_EVERY => return,
                Some(t) => *t = now,
                None => {
                    mine.insert(topic.to_string(), now);
                }
            }
        }
        let positions = reader.positions_as_of(u64::MAX);
        for p in reader.partitions() {
            let wm = cached_watermarks(reader.consumer(), topic, p);
            let hw = wm.map(|(_, high)| high);
            // Nothing read yet from an empty partition: the position is its end.
            let pos = positions
                .get(&p)
                .copied()
                .or_else(|| wm.filter(|(low, high)| low == high).map(|(_, high)| high));
            self.with_partition(topic, p, |s| {
                s.worker.store(worker as i64, Ordering::Relaxed);
                s.position.store(pos.unwrap_or(-1), Ordering::Relaxed);
                s.high_watermark.store(hw.unwrap_or(-1), Ordering::Relaxed);
            });
        }
    }

    /// A worker wrote its part of the checkpoint at `epoch` in `took`.
    pub fn checkpoint_written(&self, worker: usize, epoch: u64, took: Duration) {
        self.checkpoint_write.observe(took.as_secs_f64());
        if let Ok(mut last) = self.last_checkpoint.lock() {
            *last = Some(CheckpointInfo {
                epoch,
                written_at_ms: unix_ms(),
                took_ms: took.as_millis() as u64,
                worker,
            });
        }
    }

    /// The newest checkpoint written in this process.
    pub fn last_checkpoint(&self) -> Option<CheckpointInfo> {
        self.last_checkpoint.lock().ok().and_then(|l| *l)
    }

    /// The load record of `worker`, created on first use.
    pub fn worker_load(&self, worker: usize) -> Arc<WorkerLoad> {
        if let Some(w) = self.workers.read().ok().and_then(|m| m.get(&worker).cloned()) {
            return w;
        }
        let mut m = self.workers.write().unwrap_or_else(|e| e.into_inner());
        m.entry(worker)
            .or_insert_with(|| {
                Arc::new(WorkerLoad {
                    started: Instant::now(),
                    parked_nanos: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// `(worker, uptime s, busy s)` of every worker seen.
    pub fn worker_loads(&self) -> Vec<(usize, f64, f64)> {
        let m = self.workers.read().map(|m| m.clone()).unwrap_or_default();
        m.iter()
            .map(|(w, l)| {
                let (up, busy) = l.read();
                (*w, up, busy)
            })
            .collect()
    }

    /// Every topic-partition seen, sorted by topic then partition.
    pub fn partitions(&self) -> Vec<PartitionSnapshot> {
        let map = match self.partitions.read() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        let mut out = Vec::new();
        for (topic, v) in map.iter() {
            for (p, s) in v.iter().enumerate() {
                let opt = |x: i64| (x >= 0).then_some(x);
                let snap = PartitionSnapshot {
                    topic: topic.clone(),
                    partition: p as i32,
                    records_in: s.records_in.load(Ordering::Relaxed),
                    acked: s.acked.load(Ordering::Relaxed),
                    kind: OutKind::from_code(s.kind.load(Ordering::Relaxed)),
                    worker: opt(s.worker.load(Ordering::Relaxed)).map(|w| w as usize),
                    position: opt(s.position.load(Ordering::Relaxed)),
                    high_watermark: opt(s.high_watermark.load(Ordering::Relaxed)),
                };
                // Slots created only to reach a higher partition number carry nothing.
                if snap.records_in > 0 || snap.acked > 0 || snap.worker.is_some() {
                    out.push(snap);
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// End-to-end latency histograms by output topic.
    pub fn latencies(&self) -> Vec<(String, HistogramSnapshot)> {
        let m = self.latency.read().map(|m| m.clone()).unwrap_or_default();
        m.iter().map(|(t, h)| (t.clone(), h.snapshot())).collect()
    }
}

/// The (low, high) watermarks librdkafka cached for `topic`/`partition` from its last fetch
/// response (`None` before the first fetch).
pub fn cached_watermarks(consumer: &WfConsumer, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed; `topic` is a
    // NUL-terminated string that outlives the call; `low`/`high` are valid out-pointers.
    // rd_kafka_get_watermark_offsets only reads cached state under the partition's lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(consumer.client().native_ptr(), topic.as_ptr(), partition, &mut low, &mut high)
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low.max(0), high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_quantiles_are_bucket_bounds() {
        let h = Histogram::new(&LATENCY_BUCKETS);
        for s in [0.001, 0.02, 0.02, 0.3, 7200.0] {
            h.observe(s);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.cumulative.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.cumulative[0], 1, "0.001 <= 0.005");
        assert_eq!(s.cumulative[2], 3, "two more <= 0.025");
        assert_eq!(s.cumulative[LATENCY_BUCKETS.len() - 1], 4, "7200 s is above every bound");
        assert_eq!(*s.cumulative.last().unwrap(), 5);
        assert!((s.sum - 7200.341).abs() < 1e-6, "{}", s.sum);
        assert_eq!(s.quantile(0.5), Some(0.025));
        assert_eq!(s.quantile(1.0), Some(3600.0));
        assert_eq!(Histogram::new(&LATENCY_BUCKETS).snapshot().quantile(0.5), None);
    }

    #[test]
    fn partitions_count_in_and_out_separately() {
        let m = OpsMetrics::default();
        m.set_epoch_ms(100);
        m.records_in(1, "in", 2, 1);
        m.records_in(1, "in", 2, 1);
        m.acked(OutTopic::Dlq, "dlq", 0, crate::kafka::source::epoch_now(100), 1);
        m.acked(OutTopic::Predictions, "out", 3, crate::kafka::source::epoch_now(100), 3);
        let p = m.partitions();
        let get = |t: &str, n: i32| p.iter().find(|s| s.topic == t && s.partition == n).cloned().unwrap();
        assert_eq!(get("in", 2).records_in, 2);
        assert_eq!(get("in", 2).worker, Some(1));
        assert_eq!(get("dlq", 0).kind, Some(OutKind::Dlq));
        assert_eq!(get("out", 3).acked, 3);
        assert_eq!(p.len(), 3, "placeholder slots below partition 2 and 3 are not reported: {p:?}");
        let lat = m.latencies();
        assert_eq!(lat.len(), 2);
        let count = |t: &str| lat.iter().find(|(n, _)| n == t).map(|(_, h)| h.count);
        assert_eq!((count("dlq"), count("out")), (Some(1), Some(3)), "{lat:?}");
        assert!(lat.iter().all(|(_, h)| h.sum < 3.0), "{lat:?}");
    }
}
