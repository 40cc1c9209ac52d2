//! The Kafka sink: each output partition has exactly one writer worker, which produces its
//! records in epoch order, holds each epoch's capability until the broker acknowledged every
//! record of it, and skips records a previous execution already published.
//!
//! ```text
//!   OutRecord @ e ──Exchange(writer of its output partition)──> waiting[e] ──(input frontier >= e)──> backlog
//!      backlog ──send──> librdkafka ──ack──> outstanding[e] -= 1, acked offset of (topic, partition) @ e
//!         ^                   │
//!         └── failed: front of the queue, after a backoff ───┘   (records are never dropped)
//!      record id already published before a restart ──> skipped, counted as acknowledged
//!
//!   output frontier = least epoch with unacknowledged records ("acknowledged" probe)
//! ```
//!
//! Exactly-once without broker transactions: every record carries a deterministic id
//! (`weatherflow.id` header: `<lineage>/<input position it answers>`; the lineage is created with
//! the checkpoint directory, so a deliberate reprocessing after wiping it is not deduplicated). A checkpoint records, per output
//! partition, the offset after the writer's last record of the checkpointed epochs; because one
//! writer sends in epoch order, every record after that offset belongs to a later epoch. On
//! restart the writer reads its partitions from there to the end, collects the ids, and skips
//! those records when the replay regenerates them. The producer is idempotent, so librdkafka's
//! own retries do not duplicate.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::assign::station_hash;
use super::pacing::{Lane, Pacing, RECORD_OVERHEAD};
use crate::metrics::Metrics;

/// Header carrying a record's deterministic id.
pub const ID_HEADER: &str = "weatherflow.id";

/// Which configured topic a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OutTopic {
    /// `topics.predictions`
    Predictions,
    /// `topics.dlq` (the features stage maps it to `topics.raw_dlq`)
    Dlq,
    /// `topics.features`, written by the features stage
    Features,
    /// `topics.late`: observations that missed their window's watermark
    Late,
}

impl OutTopic {
    const ALL: [OutTopic; 4] = [OutTopic::Predictions, OutTopic::Dlq, OutTopic::Features, OutTopic::Late];

    fn salt(self) -> u64 {
        self as u64 * 7919
    }
}

// A delivery's opaque value carries the record's epoch and its topic kind (two top bits), so an
// acknowledgement is handled without reading the topic name back from librdkafka.
const _: () = assert!(usize::BITS == 64, "the delivery opaque packs 64 bits");
const KIND_SHIFT: u32 = 62;
const EPOCH_MASK: u64 = (1 << KIND_SHIFT) - 1;

fn pack_opaque(epoch: u64, kind: OutTopic) -> usize {
    (epoch.min(EPOCH_MASK) | (kind as u64) << KIND_SHIFT) as usize
}

fn unpack_opaque(opaque: usize) -> (u64, OutTopic) {
    let v = opaque as u64;
    (v & EPOCH_MASK, OutTopic::ALL[(v >> KIND_SHIFT) as usize])
}

/// One record to produce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutRecord {
    /// Destination.
    pub topic: OutTopic,
    /// Deterministic id: the same input always yields the same id (see the module doc).
    pub id: String,
    /// Message key; it also chooses the partition.
    #[serde(with = "crate::exchange::opt_bytes")]
    pub key: Option<Vec<u8>>,
    /// Message payload (a byte string between processes: [`crate::exchange::bytes`]).
    #[serde(with = "crate::exchange::bytes")]
    pub payload: Vec<u8>,
    /// Message headers (the id header is added by the sink).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Names and partition counts of the output topics.
#[derive(Clone, Debug, Default)]
pub struct SinkTopics {
    topics: BTreeMap<OutTopic, (String, i32)>,
}

impl SinkTopics {
    /// Adds a topic.
    pub fn with(mut self, t: OutTopic, name: &str, partitions: i32) -> Self {
        self.topics.insert(t, (name.to_string(), partitions.max(1)));
        self
    }

    fn name(&self, t: OutTopic) -> &str {
        self.topics.get(&t).map(|(n, _)| n.as_str()).unwrap_or("unconfigured-topic")
    }

    /// The partition of a record: a fixed hash of its key (or its id when it has no key).
    pub fn partition(&self, r: &OutRecord) -> i32 {
        let n = self.topics.get(&r.topic).map(|(_, p)| *p).unwrap_or(1);
        let h = match &r.key {
            // A UTF-8 key hashes its bytes; any other key its lossy text, as it always did.
            Some(k) => match std::str::from_utf8(k) {
                Ok(text) => station_hash(text),
                Err(_) => station_hash(&String::from_utf8_lossy(k)),
            },
            None => station_hash(&r.id),
        };
        (h % n as u64) as i32
    }

    /// The worker (of `peers`) that writes `partition` of `t`.
    pub fn writer(t: OutTopic, partition: i32, peers: usize) -> usize {
        ((t.salt() + partition as u64) % peers.max(1) as u64) as usize
    }

    /// `(topic, name, partition)` of every output partition written by `worker`.
    pub fn owned(&self, worker: usize, peers: usize) -> Vec<(OutTopic, String, i32)> {
        let mut v = Vec::new();
        for (t, (name, n)) in &self.topics {
            for p in 0..*n {
                if Self::writer(*t, p, peers) == worker {
                    v.push((*t, name.clone(), p));
                }
            }
        }
        v
    }
}

/// A delivery report, collected by the producer context and handled by the operator.
struct Delivery {
    epoch: u64,
    kind: OutTopic,
    partition: i32,
    offset: i64,
    failed: Option<(KafkaError, FailedRecord)>,
}

/// What a failed delivery hands back to be sent again: payload, key, headers.
type FailedRecord = (Vec<u8>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Called with the id header (`<lineage>/<partition>:<offset>` of the input it answers) and the
/// message timestamp (ms since the epoch: when the sink handed it to the producer; 0 if absent) of
/// every record the broker acknowledged, at the moment the acknowledgement is handled. Installed
/// through [`crate::metrics::Metrics::ack_tap`] (the latency benchmark uses it); absent, it costs
/// nothing.
pub type AckTap = std::sync::Arc<dyn Fn(&[u8], i64) + Send + Sync>;

/// Collects delivery reports (called on the worker thread from `producer.poll`).
pub struct DeliveryContext {
    reports: Mutex<Vec<Delivery>>,
    tap: Option<AckTap>,
    /// How the sink hands this producer its records (`super::pacing`).
    pacing: Pacing,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (epoch, kind) = unpack_opaque(opaque);
        if let (Ok(m), Some(tap)) = (result, &self.tap) {
            if let Some(id) = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == ID_HEADER))
                .and_then(|h| h.value)
            {
                tap(id, m.timestamp().to_millis().unwrap_or(0));
            }
        }
        let report = match result {
            Ok(m) => Delivery {
                epoch,
                kind,
                partition: m.partition(),
                offset: m.offset(),
                failed: None,
            },
            Err((e, m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|hd| (hd.key.to_string(), hd.value.map(<[u8]>::to_vec).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
                Delivery {
                    epoch,
                    kind,
                    partition: m.partition(),
                    offset: -1,
                    failed: Some((e.clone(), (payload, m.key().map(<[u8]>::to_vec), headers))),
                }
            }
        };
        if let Ok(mut r) = self.reports.lock() {
            r.push(report);
        }
    }
}

/// Creates the producer the sink uses.
///
/// An idempotent producer sends nothing before the broker assigned it a producer id, and
/// librdkafka first asks for one 500 ms after the producer is created (again 500 ms later if no
/// broker connection was up yet), unless a metadata response arrives first: so a metadata request
/// is made here, and the id is requested as soon as the broker answers it. Without it the first
/// outputs waited 0.5-1 s after the first input was read (BENCHMARKS.md).
///
/// The configured `linger.ms` becomes the sink's own (`super::pacing`): librdkafka keeps
/// [`super::pacing::HANDOFF`], the time a group needs to leave as one request.
pub fn delivery_producer(
    brokers: &str,
    options: &BTreeMap<String, String>,
    tap: Option<AckTap>,
) -> Result<BaseProducer<DeliveryContext>, super::KafkaIoError> {
    let (pacing, options) = Pacing::split(options);
    let producer: BaseProducer<DeliveryContext> = super::client_config(brokers, &options)
        .create_with_context(DeliveryContext {
            reports: Mutex::new(Vec::new()),
            tap,
            pacing,
        })
        .map_err(super::client_err("creating producer"))?;
    if let Err(e) = producer.client().fetch_metadata(None, Duration::from_secs(10)) {
        // Not fatal: librdkafka keeps trying on its own timer.
        tracing::warn!(error = %e, "producer: no metadata yet; the producer id will be requested later");
    }
    Ok(producer)
}

/// Output positions of one writer, for checkpoints.
#[derive(Debug, Default)]
pub struct SinkProgress {
    /// topic -> partition -> offset after the last acknowledged record of checkpointed epochs.
    base: BTreeMap<String, BTreeMap<i32, i64>>,
    /// epoch -> topic -> partition -> highest acknowledged offset of that epoch's records.
    by_epoch: BTreeMap<u64, BTreeMap<String, BTreeMap<i32, i64>>>,
}

impl SinkProgress {
    /// Starts from the positions of a restored checkpoint (for the partitions this worker owns).
    pub fn restored(base: BTreeMap<String, BTreeMap<i32, i64>>) -> Self {
        SinkProgress {
            base,
            by_epoch: BTreeMap::new(),
        }
    }

    /// Positions as of `epoch`: every record of epochs `<= epoch` lies before them.
    pub fn as_of(&self, epoch: u64) -> BTreeMap<String, BTreeMap<i32, i64>> {
        let mut out = self.base.clone();
        for (_, m) in self.by_epoch.range(..=epoch) {
            for (t, offsets) in m {
                let positions = out.entry(t.clone()).or_default();
                for (p, o) in offsets {
                    let e = positions.entry(*p).or_insert(o + 1);
                    *e = (*e).max(o + 1);
                }
            }
        }
        out
    }

    /// Notes that the records of `epoch` up to `offset` in `topic`/`partition` were acknowledged.
    fn acked(&mut self, epoch: u64, topic: &str, partition: i32, offset: i64) {
        let topics = self.by_epoch.entry(epoch).or_default();
        let offsets = match topics.get_mut(topic) {
            Some(o) => o,
            None => topics.entry(topic.to_string()).or_default(),
        };
        let slot = offsets.entry(partition).or_insert(offset);
        *slot = (*slot).max(offset);
    }

    /// Folds epochs `<= epoch` into the base once their checkpoint is durable.
    pub fn fold_through(&mut self, epoch: u64) {
        self.base = self.as_of(epoch);
        self.by_epoch = self.by_epoch.split_off(&epoch.saturating_add(1));
    }
}

/// What the sink of one worker needs.
pub struct SinkParts {
    /// Lineage of the checkpoint directory; prefixes every record id in the id header.
    pub lineage: String,
    /// The producer.
    pub producer: BaseProducer<DeliveryContext>,
    /// Output topics.
    pub topics: SinkTopics,
    /// Ids already published by an earlier execution (read back at start).
    pub published: HashSet<String>,
    /// Output positions, shared with the checkpoint writer.
    pub progress: Rc<RefCell<SinkProgress>>,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
}

/// Extension trait: sink a stream of [`OutRecord`]s into Kafka.
pub trait KafkaSink<'s> {
    /// Produces every record; the returned (empty) stream's frontier passes an epoch only when
    /// all records of that epoch and earlier were acknowledged by the broker.
    fn kafka_sink(self, parts: SinkParts) -> StreamVec<'s, u64, ()>;
}

struct Queued {
    epoch: u64,
    record: OutRecord,
    partition: i32,
    attempts: u32,
    not_before: Option<Instant>,
}

impl Queued {
    /// What the record is counted for in its produce request (`super::pacing`).
    fn bytes(&self, lineage: &str) -> usize {
        let r = &self.record;
        let headers: usize = r.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        r.payload.len() + r.key.as_ref().map_or(0, Vec::len) + headers + ID_HEADER.len() + lineage.len() + 1 + r.id.len() + RECORD_OVERHEAD
    }
}

impl<'s> KafkaSink<'s> for StreamVec<'s, u64, OutRecord> {
    fn kafka_sink(self, parts: SinkParts) -> StreamVec<'s, u64, ()> {
        let scope = self.scope();
        let route = parts.topics.clone();
        let exchange = Exchange::new(move |r: &OutRecord| r.topic.salt() + route.partition(r) as u64);
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(exchange, "KafkaSink", move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let worker = scope.index();
            let SinkParts { lineage, producer, topics, mut published, progress, metrics } = parts;
            // epoch -> (capability, records not yet acknowledged)
            let mut open: BTreeMap<u64, (Capability<u64>, usize)> = BTreeMap::new();
            let mut waiting: BTreeMap<u64, Vec<OutRecord>> = BTreeMap::new();
            // Released records, per output partition, in epoch order (`super::pacing`).
            let pacing = producer.context().pacing;
            let mut lanes: BTreeMap<(OutTopic, i32), Lane<Queued>> = BTreeMap::new();
            let mut failed: Vec<Queued> = Vec::new();
            let mut last_log = Instant::now() - Duration::from_secs(60);
            let mut id = String::new(); // the id header's value, reused
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(time) = cap.least().copied() else { return };
                    let entry = match open.entry(time) {
                        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::btree_map::Entry::Vacant(v) => match cap.retain_least(output.output_index()) {
                            Some(c) => v.insert((c, 0)),
                            None => return,
                        },
                    };
                    let w = waiting.entry(time).or_default();
                    for batch in data {
                        entry.1 += batch.len();
                        w.append(batch);
                    }
                });
                // Epoch order per writer: an epoch's records go out once no earlier epoch can
                // still bring records.
                let lowest = frontier.frontier().iter().next().copied();
                let now = Instant::now();
                while let Some(e) = waiting.first_entry() {
                    if lowest.is_some_and(|l| l < *e.key()) {
                        break;
                    }
                    let (epoch, records) = e.remove_entry();
                    for record in records {
                        if !published.is_empty() && published.remove(&record.id) {
                            metrics.dedup_skipped.fetch_add(1, Ordering::Relaxed);
                            if let Some(o) = open.get_mut(&epoch) {
                                o.1 -= 1;
                            }
                            continue;
                        }
                        let partition = topics.partition(&record);
                        let q = Queued { epoch, record, partition, attempts: 0, not_before: None };
                        let bytes = q.bytes(&lineage);
                        lanes.entry((q.record.topic, partition)).or_default().push_back(q, bytes, now);
                    }
                }

                producer.poll(Duration::ZERO);
                let reports = producer.context().reports.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
                // Consecutive acknowledgements of one epoch and partition are booked as one run.
                let mut run: Option<AckRun> = None;
                for d in reports {
                    if let Some(lane) = lanes.get_mut(&(d.kind, d.partition)) {
                        lane.delivered();
                    }
                    match d.failed {
                        None => {
                            if let Some(e) = open.get_mut(&d.epoch) {
                                e.1 = e.1.saturating_sub(1);
                            }
                            match &mut run {
                                Some(r) if r.extends(&d) => r.add(d.offset),
                                _ => {
                                    if let Some(r) = run.replace(AckRun::start(&d)) {
                                        r.book(&topics, &progress, &metrics);
                                    }
                                }
                            }
                        }
                        Some((err, (payload, key, headers))) => {
                            metrics.delivery_retries.fetch_add(1, Ordering::Relaxed);
                            if last_log.elapsed() > Duration::from_secs(5) {
                                tracing::error!(worker, epoch = d.epoch, topic = %topics.name(d.kind), partition = d.partition, error = %err, "delivery failed; re-queued (records are never dropped)");
                                last_log = Instant::now();
                            }
                            let id = headers
                                .iter()
                                .find(|(k, _)| k == ID_HEADER)
                                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                                .map(|v| v.split_once('/').map(|(_, id)| id.to_string()).unwrap_or(v))
                                .unwrap_or_default();
                            let headers = headers.into_iter().filter(|(k, _)| k != ID_HEADER).collect();
                            let record = OutRecord { topic: d.kind, id, key, payload, headers };
                            failed.push(Queued { epoch: d.epoch, record, partition: d.partition, attempts: 1, not_before: Some(Instant::now() + backoff(1)) });
                        }
                    }
                }
                if let Some(r) = run {
                    r.book(&topics, &progress, &metrics);
                }
                // Failed deliveries go back to the front, in their original order, so a
                // partition's records stay in epoch order.
                for q in failed.drain(..).rev() {
                    let bytes = q.bytes(&lineage);
                    lanes.entry((q.record.topic, q.partition)).or_default().push_front(q, bytes, now);
                }

                // Each due partition hands librdkafka one group (`super::pacing`).
                let mut sent = 0usize;
                let mut queue_full = false;
                for lane in lanes.values_mut() {
                    if queue_full {
                        break;
                    }
                    if !lane.due(&pacing, now) {
                        continue;
                    }
                    let (mut taken, mut bytes) = (0usize, 0usize);
                    while let Some((since, b, mut q)) = lane.next(&pacing, taken, bytes) {
                        if q.not_before.is_some_and(|t| t > now) {
                            lane.push_front(q, b, since);
                            break;
                        }
                    let mut headers = OwnedHeaders::new_with_capacity(q.record.headers.len() + 1);
                    id.clear();
                    id.push_str(&lineage);
                    id.push('/');
                    id.push_str(&q.record.id);
                    headers = headers.insert(Header { key: ID_HEADER, value: Some(id.as_bytes()) });
                    for (k, v) in &q.record.headers {
                        headers = headers.insert(Header { key: k, value: Some(v) });
                    }
                    let mut rec: BaseRecord<'_, [u8], [u8], usize> =
                        BaseRecord::with_opaque_to(topics.name(q.record.topic), pack_opaque(q.epoch, q.record.topic)).partition(q.partition).payload(&q.record.payload[..]).headers(headers);
                    if let Some(k) = &q.record.key {
                        rec = rec.key(&k[..]);
                    }
                        match producer.send(rec) {
                            Ok(()) => {
                                lane.handed();
                                sent += 1;
                                taken += 1;
                                bytes += b;
                            }
                            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                                lane.push_front(q, b, since);
                                queue_full = true;
                                break;
                            }
                            Err((e, _)) => {
                                q.attempts += 1;
                                metrics.delivery_retries.fetch_add(1, Ordering::Relaxed);
                                if last_log.elapsed() > Duration::from_secs(5) {
                                    tracing::error!(worker, error = %e, attempts = q.attempts, "produce refused; will retry");
                                    last_log = Instant::now();
                                }
                                q.not_before = Some(now + backoff(q.attempts));
                                lane.push_front(q, b, since);
                                break;
                            }
                        }
                        if sent % 1024 == 0 {
                            producer.poll(Duration::ZERO);
                        }
                    }
                }

                // Release every epoch that is closed at the input and fully acknowledged.
                open.retain(|time, (_, outstanding)| *outstanding > 0 || frontier.less_equal(time));
                if !open.is_empty() || lanes.values().any(|l| l.queued() > 0) {
                    activator.activate_after(Duration::from_millis(1));
                }
            }
        })
    }
}

/// Acknowledgements of consecutive records of one epoch, topic and partition.
struct AckRun {
    epoch: u64,
    kind: OutTopic,
    partition: i32,
    offset: i64,
    n: u64,
}

impl AckRun {
    fn start(d: &Delivery) -> Self {
        AckRun {
            epoch: d.epoch,
            kind: d.kind,
            partition: d.partition,
            offset: d.offset,
            n: 1,
        }
    }

    fn extends(&self, d: &Delivery) -> bool {
        (self.epoch, self.kind, self.partition) == (d.epoch, d.kind, d.partition)
    }

    fn add(&mut self, offset: i64) {
        self.offset = self.offset.max(offset);
        self.n += 1;
    }

    /// Output positions for checkpoints, the acknowledgement counters and the per-partition
    /// metrics (`crate::ops`: counts and latency).
    fn book(self, topics: &SinkTopics, progress: &RefCell<SinkProgress>, metrics: &Metrics) {
        let name = topics.name(self.kind);
        progress.borrow_mut().acked(self.epoch, name, self.partition, self.offset);
        let counter = match self.kind {
            OutTopic::Dlq => &metrics.dlq_acked,
            OutTopic::Features => &metrics.features_acked,
            OutTopic::Late => &metrics.late_acked,
            OutTopic::Predictions => &metrics.predictions_acked,
        };
        counter.fetch_add(self.n, Ordering::Relaxed);
        metrics.ops.acked(self.kind, name, self.partition, self.epoch, self.n);
    }
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
}

/// Reads output partitions from the given offsets to their end and returns the ids of `lineage`
/// found: records an earlier execution published after its last checkpoint. One topic at a time
/// (end-of-partition events name only the partition). Partitions never written to (every one on a
/// first start) are skipped: waiting for their end-of-partition events cost about 0.5 s per topic
/// before the worker could start. Only a high watermark of 0 is trusted for that: the test
/// broker's (Tansu 0.6.0) ListOffsets answers the last batch's base offset + 1, not the end.
pub fn published_ids(
    consumer: &super::WfConsumer,
    lineage: &str,
    partitions: &[(String, i32, i64)],
    patience: Duration,
) -> Result<HashSet<String>, super::KafkaIoError> {
    let prefix = format!("{lineage}/");
    use rdkafka::consumer::Consumer;
    use rdkafka::{Offset, TopicPartitionList};
    let mut ids = HashSet::new();
    let topics: std::collections::BTreeSet<&String> = partitions.iter().map(|(t, _, _)| t).collect();
    let deadline = Instant::now() + patience;
    for topic in topics {
        let mut tpl = TopicPartitionList::new();
        let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
        for (_, p, o) in partitions.iter().filter(|(t, _, _)| t == topic) {
            let (_, high) = consumer
                .fetch_watermarks(topic, *p, deadline.saturating_duration_since(Instant::now()))
                .map_err(super::client_err("reading output watermarks"))?;
            if high == 0 {
                continue; // never written to
            }
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(super::client_err("assign"))?;
            at_end.insert(*p, false);
        }
        if at_end.is_empty() {
            continue;
        }
        consumer.assign(&tpl).map_err(super::client_err("assign"))?;
        while at_end.values().any(|e| !e) {
            if Instant::now() > deadline {
                return Err(super::KafkaIoError::ReadBack { waited: patience });
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    if let Some(v) = m
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == ID_HEADER))
                        .and_then(|h| h.value)
                    {
                        if let Some(id) = String::from_utf8_lossy(v).strip_prefix(&prefix) {
                            ids.insert(id.to_string());
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p, true);
                }
                Some(Err(e)) => tracing::warn!(%topic, error = %e, "reading back published outputs; retrying"),
            }
        }
    }
    consumer.unassign().map_err(super::client_err("unassign"))?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_opaque_carries_epoch_and_topic_kind() {
        for kind in OutTopic::ALL {
            for epoch in [0, 1, 17_643_000_000_000 / 100, EPOCH_MASK] {
                assert_eq!(unpack_opaque(pack_opaque(epoch, kind)), (epoch, kind));
            }
        }
    }

    #[test]
    fn output_positions_are_the_offset_after_the_highest_acknowledged_record_per_epoch() {
        let mut base = BTreeMap::new();
        base.insert("out".to_string(), BTreeMap::from([(0, 10)]));
        let mut p = SinkProgress::restored(base);
        p.acked(5, "out", 0, 12);
        p.acked(5, "out", 0, 11);
        p.acked(5, "dlq", 1, 3);
        p.acked(6, "out", 0, 20);
        assert_eq!(p.as_of(4)["out"][&0], 10);
        assert_eq!(p.as_of(5)["out"][&0], 13);
        assert_eq!(p.as_of(5)["dlq"][&1], 4);
        assert_eq!(p.as_of(6)["out"][&0], 21);
        p.fold_through(5);
        assert_eq!(p.as_of(5)["out"][&0], 13);
        assert_eq!(p.as_of(u64::MAX)["out"][&0], 21);
    }

    #[test]
    fn a_key_that_is_not_utf8_keeps_its_partition() {
        let topics = SinkTopics::default().with(OutTopic::Dlq, "dlq", 8);
        let rec = |key: &[u8]| OutRecord {
            topic: OutTopic::Dlq,
            id: "0:1".into(),
            key: Some(key.to_vec()),
            payload: Vec::new(),
            headers: Vec::new(),
        };
        let lossy = |key: &[u8]| (station_hash(&String::from_utf8_lossy(key)) % 8) as i32;
        for key in [&b"KNYC"[..], &b"\xff\xfeA"[..], &[0xff, 0x41, 0xc3][..], &b""[..]] {
            assert_eq!(topics.partition(&rec(key)), lossy(key), "{key:?}");
        }
    }
}
