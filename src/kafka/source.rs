//! The Kafka source: a timely source operator per worker that reads the partitions assigned to it
//! (see [`super::assign`]) and stamps each message with the current epoch.
//!
//! ```text
//!            ┌──────────────── KafkaSource (worker w) ────────────────┐
//!  Kafka ──> │ poll ≤ max_poll_records │ stamp epoch │ note next offset │ ──> InputMessage @ epoch
//!            │ downgrade capability to wall-clock epoch (even when idle) │
//!            │ commit offsets of epochs the sink acknowledged ───────────┼──> consumer group (monitoring)
//!            └───────────────────────────────────────────────────────────┘
//! ```
//!
//! Epochs are wall-clock aligned (`unix_ms / epoch_ms`), so workers with or without partitions
//! advance together and the frontier moves even when no data arrives. Polling is bounded per
//! activation; the operator re-activates itself at once when it hit the bound. An idle source is
//! woken by the consumer when a message arrives (librdkafka's queue callback), and by a timer
//! just after the next epoch boundary (at most 5 ms), so neither a new record nor the end of an
//! epoch waits for a polling interval. Reading pauses while `max_in_flight` records read by this
//! worker await their acknowledged outputs (`InFlight`; inference stage) and beyond the
//! checkpoint gate ([`Gate`]). With `stop_at_end` the source finishes once every assigned
//! partition reported its end; on shutdown it finishes at once. Either way the dataflow then
//! drains: every record already read is processed and acknowledged before the worker exits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use super::assign::partitions_for_worker;
use super::{client_err, partition_count, KafkaIoError, WfConsumer};
use crate::config::StartFrom;
use crate::metrics::Metrics;

/// One message read from Kafka.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputMessage {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message payload (empty for a null payload).
    pub payload: Vec<u8>,
}

/// What one worker's source needs.
pub struct KafkaSourceSpec {
    /// Topic to read.
    pub topic: String,
    /// Most messages per activation.
    pub max_poll_records: usize,
    /// Most records read and not yet answered (0 = no bound; `source.max_in_flight`).
    pub max_in_flight: usize,
    /// Where partitions without a known position start.
    pub start: StartFrom,
    /// Finish when all assigned partitions are at their end.
    pub stop_at_end: bool,
    /// Epoch length.
    pub epoch_ms: u64,
    /// Partition-count refresh interval.
    pub metadata_refresh: Duration,
    /// Set to stop reading (Ctrl-C, SIGTERM).
    pub shutdown: Arc<AtomicBool>,
}

/// The epoch containing the current wall-clock time.
pub fn epoch_now(epoch_ms: u64) -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms / epoch_ms.max(1)
}

/// Longest wait of an idle source before it looks again (shutdown, metadata, the gate); new
/// messages wake it at once ([`PartitionReader::wake_on_message`]).
const IDLE_POLL: Duration = Duration::from_millis(5);

/// How long an idle source sleeps: until just past the next epoch boundary (so the frontier
/// moves as soon as the epoch is over), at most [`IDLE_POLL`].
fn idle_delay(epoch_ms: u64, now: SystemTime) -> Duration {
    let epoch_us = epoch_ms.max(1) * 1000;
    let now_us = now.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let until_next = epoch_us - now_us % epoch_us + 50;
    Duration::from_micros(until_next).min(IDLE_POLL)
}

/// Per-worker reader state, shared between the source operator and the worker loop (which does
/// the final offset commit after the dataflow has drained).
pub struct PartitionReader {
    consumer: WfConsumer,
    topic: String,
    worker: usize,
    peers: usize,
    start: StartFrom,
    /// Next offset to read per assigned partition (`None`: position not known yet).
    next: BTreeMap<i32, Option<i64>>,
    /// Partitions that reported their end since their last message.
    at_end: BTreeMap<i32, bool>,
    /// Next offsets reached in each epoch that is not yet folded into `base`.
    pending: BTreeMap<u64, BTreeMap<i32, i64>>,
    /// Next offsets as of the last checkpointed (or, without checkpoints, acknowledged) epoch.
    base: BTreeMap<i32, i64>,
    /// `base` changed since the last commit to the consumer group.
    uncommitted: bool,
    /// Positions restored from a checkpoint (they override `start`).
    restored: BTreeMap<i32, i64>,
    last_metadata: Instant,
}

impl PartitionReader {
    /// Creates the reader for worker `worker` of `peers`: reads the partition count and assigns
    /// this worker's share.
    /// `restored` holds next offsets from a checkpoint; they win over `start`.
    pub fn new(
        consumer: WfConsumer,
        topic: &str,
        partitions: usize,
        worker: usize,
        peers: usize,
        start: StartFrom,
        restored: BTreeMap<i32, i64>,
    ) -> Result<Self, KafkaIoError> {
        let mut r = PartitionReader {
            consumer,
            topic: topic.into(),
            worker,
            peers,
            start,
            next: BTreeMap::new(),
            at_end: BTreeMap::new(),
            pending: BTreeMap::new(),
            base: BTreeMap::new(),
            uncommitted: false,
            restored,
            last_metadata: Instant::now(),
        };
        r.assign(partitions)?;
        Ok(r)
    }

    /// The partitions this worker reads.
    pub fn partitions(&self) -> Vec<i32> {
        self.next.keys().copied().collect()
    }

    /// Calls `wake` (from a librdkafka thread) whenever the consumer's queue goes from empty to
    /// non-empty, so an idle source reads a new message at once rather than at its next poll.
    pub fn wake_on_message(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        self.consumer.set_nonempty_callback(wake);
    }

    /// The consumer, read only (lag metrics read the high watermarks it cached from fetches).
    pub fn consumer(&self) -> &WfConsumer {
        &self.consumer
    }

    fn assign(&mut self, partitions: usize) -> Result<(), KafkaIoError> {
        let mine = partitions_for_worker(partitions, self.worker, self.peers);
        let new: Vec<i32> = mine.iter().copied().filter(|p| !self.next.contains_key(p)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut starts: BTreeMap<i32, Offset> = BTreeMap::new();
        let default = match self.start {
            StartFrom::Latest => Offset::End,
            _ => Offset::Beginning,
        };
        for p in &new {
            if let Some(o) = self.restored.get(p) {
                starts.insert(*p, Offset::Offset(*o));
            }
        }
        let unknown: Vec<i32> = new.iter().copied().filter(|p| !starts.contains_key(p)).collect();
        if self.start == StartFrom::Committed && !unknown.is_empty() {
            let mut q = TopicPartitionList::new();
            for p in &unknown {
                q.add_partition(&self.topic, *p);
            }
            let committed = self
                .consumer
                .committed_offsets(q, Duration::from_secs(10))
                .map_err(client_err("reading committed offsets"))?;
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    starts.insert(e.partition(), Offset::Offset(o));
                }
            }
        }
        for p in &new {
            let s = *starts.get(p).unwrap_or(&default);
            self.next.insert(*p, if let Offset::Offset(o) = s { Some(o) } else { None });
            if let Offset::Offset(o) = s {
                self.base.insert(*p, o);
            }
            self.at_end.insert(*p, false);
            tracing::info!(worker = self.worker, partition = *p, topic = %self.topic, start = ?s, "assigned partition");
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &self.next {
            let off = match next {
                Some(o) => Offset::Offset(*o),
                None => *starts.get(p).unwrap_or(&default),
            };
            tpl.add_partition_offset(&self.topic, *p, off)
                .map_err(client_err("building assignment"))?;
        }
        self.consumer.assign(&tpl).map_err(client_err("assigning partitions"))
    }

    fn refresh_metadata(&mut self, every: Duration) {
        if self.last_metadata.elapsed() < every {
            return;
        }
        self.last_metadata = Instant::now();
        match partition_count(&self.consumer, &self.topic, Duration::from_millis(500)) {
            Ok(Some(n)) => {
                if let Err(e) = self.assign(n) {
                    tracing::warn!(worker = self.worker, error = %e, "could not assign new partitions");
                }
            }
            Ok(None) => tracing::warn!(worker = self.worker, topic = %self.topic, "topic vanished from metadata"),
            Err(e) => tracing::warn!(worker = self.worker, error = %e, "metadata refresh failed"),
        }
    }

    fn all_at_end(&self) -> bool {
        self.at_end.values().all(|e| *e)
    }

    /// Next offsets as of `epoch`: everything read in epochs `<= epoch`, on top of `base`.
    pub fn positions_as_of(&self, epoch: u64) -> BTreeMap<i32, i64> {
        let mut out = self.base.clone();
        for offs in self.pending.range(..=epoch).map(|(_, m)| m) {
            for (p, o) in offs {
                let slot = out.entry(*p).or_insert(*o);
                *slot = (*slot).max(*o);
            }
        }
        out
    }

    /// Folds epochs `<= epoch` into `base` (they are checkpointed, or acknowledged).
    pub fn fold_through(&mut self, epoch: u64) {
        let base = self.positions_as_of(epoch);
        self.uncommitted |= base != self.base;
        self.base = base;
        self.pending = self.pending.split_off(&epoch.saturating_add(1));
    }

    /// Without checkpoints: folds every epoch the acknowledgement frontier has passed.
    pub fn fold_acknowledged(&mut self, acked: &ProbeHandle<u64>) {
        let done: Vec<u64> = self.pending.keys().copied().filter(|e| !acked.less_equal(e)).collect();
        if let Some(last) = done.last() {
            self.fold_through(*last);
        }
    }

    /// Commits `base` to the consumer group (monitoring and `start = "committed"` only; the
    /// checkpoint is the system of record). Failures are logged, not fatal.
    pub fn commit(&mut self, mode: CommitMode) {
        if !self.uncommitted || self.base.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.base {
            if tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o)).is_err() {
                return;
            }
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => self.uncommitted = false,
            Err(e) => tracing::warn!(worker = self.worker, error = %e, "offset commit failed; will retry"),
        }
    }
}

/// How soon a source paused by `max_in_flight` looks again.
const THROTTLED_POLL: Duration = Duration::from_millis(1);

/// Records this worker read and whose outputs are not yet all acknowledged, by epoch: the
/// source's bound on memory under a backlog (`source.max_in_flight`). An epoch counts until the
/// acknowledgement probe passes it, so the count is exact at epoch granularity.
#[derive(Debug, Default)]
struct InFlight {
    epochs: std::collections::VecDeque<(u64, usize)>,
    total: usize,
}

impl InFlight {
    /// Forgets epochs the acknowledgement frontier has passed.
    fn answered(&mut self, acked: &ProbeHandle<u64>) {
        self.answered_where(|e| !acked.less_equal(e));
    }

    fn answered_where(&mut self, passed: impl Fn(&u64) -> bool) {
        while let Some((e, n)) = self.epochs.front() {
            if !passed(e) {
                break;
            }
            self.total -= n;
            self.epochs.pop_front();
        }
    }

    /// How many records may be read now: at most `per_poll`, and none past `max` (0 = no bound).
    fn budget(&self, max: usize, per_poll: usize) -> usize {
        if max == 0 {
            per_poll
        } else {
            per_poll.min(max.saturating_sub(self.total))
        }
    }

    fn read(&mut self, epoch: u64, n: usize) {
        if n == 0 {
            return;
        }
        match self.epochs.back_mut() {
            Some((e, count)) if *e == epoch => *count += n,
            _ => self.epochs.push_back((epoch, n)),
        }
        self.total += n;
    }
}

/// What one activation read, per partition: the reader's positions and the shared counters are
/// updated once per partition and activation rather than once per record.
#[derive(Debug, Default)]
struct PollBatch {
    /// (partition, last offset read) not yet applied to the reader.
    unapplied: Vec<(i32, i64)>,
    /// (partition, records read) not yet added to the counters.
    uncounted: Vec<(i32, u64)>,
}

impl PollBatch {
    fn note(&mut self, partition: i32, offset: i64) {
        match self.unapplied.iter_mut().find(|(p, _)| *p == partition) {
            Some(slot) => slot.1 = offset,
            None => self.unapplied.push((partition, offset)),
        }
        match self.uncounted.iter_mut().find(|(p, _)| *p == partition) {
            Some(slot) => slot.1 += 1,
            None => self.uncounted.push((partition, 1)),
        }
    }

    /// Moves the reader's positions past what was read, in `epoch` (before an end-of-partition
    /// event of the same partition is applied, so the event wins over the messages before it).
    fn apply(&mut self, reader: &mut PartitionReader, epoch: u64) {
        if self.unapplied.is_empty() {
            return;
        }
        let pending = reader.pending.entry(epoch).or_default();
        for (p, o) in &self.unapplied {
            pending.insert(*p, o + 1);
        }
        for (p, o) in self.unapplied.drain(..) {
            reader.next.insert(p, Some(o + 1));
            reader.at_end.insert(p, false);
        }
    }

    fn count(&mut self, metrics: &Metrics, worker: usize, topic: &str) {
        for (p, n) in self.uncounted.drain(..) {
            metrics.records_in.fetch_add(n, Ordering::Relaxed);
            metrics.ops.records_in(worker, topic, p, n);
        }
    }
}

/// Flow control between the source and the checkpoint writer: the source reads no epoch beyond
/// `limit` (the last durable checkpoint plus the allowed lead).
#[derive(Clone, Debug)]
pub struct Gate(pub Rc<std::cell::Cell<u64>>);

impl Gate {
    /// A gate that never closes.
    pub fn open() -> Self {
        Gate(Rc::new(std::cell::Cell::new(u64::MAX)))
    }
}

/// Builds the source operator for this worker.
///
/// With `checkpointing`, offsets reach the consumer group only through the checkpoint writer;
/// without it they are folded and committed here once acknowledged.
pub fn kafka_source<'s>(
    scope: Scope<'s, u64>,
    spec: KafkaSourceSpec,
    reader: Rc<RefCell<PartitionReader>>,
    acked: ProbeHandle<u64>,
    gate: Gate,
    checkpointing: bool,
    metrics: Arc<Metrics>,
) -> StreamVec<'s, u64, InputMessage> {
    source(scope, "KafkaSource", move |capability, info| {
        let activator = scope.activator_for(info.address.clone());
        let wake = scope.worker().sync_activator_for(info.address.to_vec());
        reader.borrow_mut().wake_on_message(move || {
            let _ = wake.activate(); // fails only once the worker is gone
        });
        let mut cap = Some(capability);
        let worker = scope.index();
        let mut last_error_log = Instant::now() - Duration::from_secs(60);
        let mut suppressed_errors = 0u64;
        let mut read = PollBatch::default();
        let mut in_flight = InFlight::default();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let mut reader = reader.borrow_mut();
            let epoch = epoch_now(spec.epoch_ms).max(*c.time());
            if epoch > *c.time() {
                c.downgrade(&epoch);
            }
            reader.refresh_metadata(spec.metadata_refresh);
            let mut polled = 0;
            let gated = epoch > gate.0.get();
            if gated {
                metrics.source_gated.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.answered(&acked);
            let budget = in_flight.budget(spec.max_in_flight, spec.max_poll_records);
            let throttled = !gated && budget == 0;
            if throttled {
                metrics.source_throttled.fetch_add(1, Ordering::Relaxed);
            }
            {
                let mut session = output.session(&*c);
                while !gated && polled < budget {
                    match reader.consumer.poll(Duration::ZERO) {
                        None => break,
                        Some(Ok(m)) => {
                            polled += 1;
                            let (p, o) = (m.partition(), m.offset());
                            session.give(InputMessage {
                                partition: p,
                                offset: o,
                                key: m.key().map(<[u8]>::to_vec),
                                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                            });
                            drop(m);
                            read.note(p, o);
                        }
                        Some(Err(KafkaError::PartitionEOF(p))) => {
                            read.apply(&mut reader, epoch);
                            reader.at_end.insert(p, true);
                        }
                        Some(Err(e)) => {
                            metrics.source_errors.fetch_add(1, Ordering::Relaxed);
                            if last_error_log.elapsed() > Duration::from_secs(5) {
                                tracing::warn!(worker, error = %e, suppressed = suppressed_errors, "kafka consumer error; retrying");
                                last_error_log = Instant::now();
                                suppressed_errors = 0;
                            } else {
                                suppressed_errors += 1;
                            }
                            break;
                        }
                    }
                }
            }
            read.apply(&mut reader, epoch);
            read.count(&metrics, worker, &spec.topic); // per-partition counts (crate::ops)
            in_flight.read(epoch, polled);
            metrics.ops.sample_lag(worker, &spec.topic, &reader); // consumer lag (crate::ops)
            if !checkpointing {
                reader.fold_acknowledged(&acked);
                reader.commit(CommitMode::Async);
            }
            let finished = spec.shutdown.load(Ordering::Relaxed) || (spec.stop_at_end && reader.all_at_end());
            if finished {
                tracing::info!(worker, partitions = ?reader.partitions(), "source finished; draining");
                cap = None;
            } else if polled >= spec.max_poll_records {
                activator.activate();
            } else if throttled {
                activator.activate_after(THROTTLED_POLL);
            } else {
                activator.activate_after(idle_delay(spec.epoch_ms, SystemTime::now()));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_records_bound_reading_until_their_epoch_is_answered() {
        let mut f = InFlight::default();
        assert_eq!(f.budget(0, 1000), 1000, "0 = no bound");
        assert_eq!(f.budget(2500, 1000), 1000);
        f.read(7, 1000);
        f.read(7, 1000);
        f.read(8, 400);
        assert_eq!(f.budget(2500, 1000), 100);
        f.read(8, 100);
        assert_eq!(f.budget(2500, 1000), 0, "at the bound");
        f.answered_where(|e| *e < 7);
        assert_eq!(f.budget(2500, 1000), 0, "epoch 7 not answered yet");
        f.answered_where(|e| *e < 8);
        assert_eq!(f.budget(2500, 1000), 1000, "epoch 7's 2000 records answered");
        assert_eq!(f.total, 500);
        f.answered_where(|_| true);
        assert_eq!((f.total, f.epochs.len()), (0, 0));
    }

    #[test]
    fn an_idle_source_wakes_just_after_the_next_epoch_boundary_or_after_the_idle_poll() {
        let at = |ms: u64, us: u64| UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_micros(us);
        // 10 ms epochs, 7.5 ms into one: 2.5 ms (+50 us) to the boundary
        assert_eq!(idle_delay(10, at(1_000_007, 500)), Duration::from_micros(2_550));
        // 1 s epochs: never longer than the idle poll
        assert_eq!(idle_delay(1000, at(1_000_100, 0)), IDLE_POLL);
        // exactly on a boundary: the whole next epoch, capped
        assert_eq!(idle_delay(2, at(1_000_000, 0)), Duration::from_micros(2_050));
        // the new epoch has begun when it fires
        let now = at(1_000_003, 0);
        let fired = now + idle_delay(4, now);
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(ms(fired) / 4, ms(now) / 4 + 1);
    }
}
