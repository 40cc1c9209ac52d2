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
use std::collections::{BTreeMap, HashSet, VecDeque};
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
    fn salt(self) -> u64 {
        self as u64 * 7919
    }
}

/// One record to produce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutRecord {
    /// Destination.
    pub topic: OutTopic,
    /// Deterministic id: the same input always yields the same id (see the module doc).
    pub id: String,
    /// Message key; it also chooses the partition.
    pub key: Option<Vec<u8>>,
    /// Message payload.
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

    /// The kind of the configured topic called `name`.
    fn kind(&self, name: &str) -> Option<OutTopic> {
        self.topics.iter().find(|(_, (n, _))| n == name).map(|(t, _)| *t)
    }

    /// The partition of a record: a fixed hash of its key (or its id when it has no key).
    pub fn partition(&self, r: &OutRecord) -> i32 {
        let n = self.topics.get(&r.topic).map(|(_, p)| *p).unwrap_or(1);
        let h = match &r.key {
            Some(k) => station_hash(&String::from_utf8_lossy(k)),
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
    topic: String,
    partition: i32,
    offset: i64,
    failed: Option<(KafkaError, FailedRecord)>,
}

/// What a failed delivery hands back to be sent again: payload, key, headers.
type FailedRecord = (Vec<u8>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Called with the id header (`<lineage>/<partition>:<offset>` of the input it answers) of every
/// record the broker acknowledged, at the moment the acknowledgement is handled. Installed through
/// [`crate::metrics::Metrics::ack_tap`] (the latency benchmark uses it); absent, it costs nothing.
pub type AckTap = std::sync::Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Collects delivery reports (called on the worker thread from `producer.poll`).
pub struct DeliveryContext {
    reports: Mutex<Vec<Delivery>>,
    tap: Option<AckTap>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        if let (Ok(m), Some(tap)) = (result, &self.tap) {
            if let Some(id) = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == ID_HEADER))
                .and_then(|h| h.value)
            {
                tap(id);
            }
        }
        let report = match result {
            Ok(m) => Delivery {
                epoch: epoch as u64,
                topic: m.topic().to_string(),
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
                    epoch: epoch as u64,
                    topic: m.topic().to_string(),
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
pub fn delivery_producer(
    brokers: &str,
    options: &BTreeMap<String, String>,
    tap: Option<AckTap>,
) -> Result<BaseProducer<DeliveryContext>, super::KafkaIoError> {
    super::client_config(brokers, options)
        .create_with_context(DeliveryContext {
            reports: Mutex::new(Vec::new()),
            tap,
        })
        .map_err(super::client_err("creating producer"))
}

/// Output positions of one writer, for checkpoints.
#[derive(Debug, Default)]
pub struct SinkProgress {
    /// topic -> partition -> offset after the last acknowledged record of checkpointed epochs.
    base: BTreeMap<String, BTreeMap<i32, i64>>,
    /// epoch -> (topic, partition) -> highest acknowledged offset of that epoch's records.
    by_epoch: BTreeMap<u64, BTreeMap<(String, i32), i64>>,
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
            for ((t, p), o) in m {
                let e = out.entry(t.clone()).or_default().entry(*p).or_insert(o + 1);
                *e = (*e).max(o + 1);
            }
        }
        out
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
            let mut backlog: VecDeque<Queued> = VecDeque::new();
            let mut failed: Vec<Queued> = Vec::new();
            let mut last_log = Instant::now() - Duration::from_secs(60);
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
                while let Some(e) = waiting.first_entry() {
                    if lowest.is_some_and(|l| l < *e.key()) {
                        break;
                    }
                    let (epoch, records) = e.remove_entry();
                    for record in records {
                        if published.remove(&record.id) {
                            metrics.dedup_skipped.fetch_add(1, Ordering::Relaxed);
                            if let Some(o) = open.get_mut(&epoch) {
                                o.1 -= 1;
                            }
                            continue;
                        }
                        let partition = topics.partition(&record);
                        backlog.push_back(Queued { epoch, record, partition, attempts: 0, not_before: None });
                    }
                }

                producer.poll(Duration::ZERO);
                let reports = producer.context().reports.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
                for d in reports {
                    match d.failed {
                        None => {
                            if let Some(e) = open.get_mut(&d.epoch) {
                                e.1 = e.1.saturating_sub(1);
                            }
                            {
                                let mut prog = progress.borrow_mut();
                                let slot = prog.by_epoch.entry(d.epoch).or_default().entry((d.topic.clone(), d.partition)).or_insert(d.offset);
                                *slot = (*slot).max(d.offset);
                            }
                            let counter = match topics.kind(&d.topic) {
                                Some(OutTopic::Dlq) => &metrics.dlq_acked,
                                Some(OutTopic::Features) => &metrics.features_acked,
                                Some(OutTopic::Late) => &metrics.late_acked,
                                _ => &metrics.predictions_acked,
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            metrics.ops.acked(topics.kind(&d.topic), &d.topic, d.partition, d.epoch); // per partition, latency (crate::ops)
                        }
                        Some((err, (payload, key, headers))) => {
                            metrics.delivery_retries.fetch_add(1, Ordering::Relaxed);
                            if last_log.elapsed() > Duration::from_secs(5) {
                                tracing::error!(worker, epoch = d.epoch, topic = %d.topic, partition = d.partition, error = %err, "delivery failed; re-queued (records are never dropped)");
                                last_log = Instant::now();
                            }
                            let id = headers
                                .iter()
                                .find(|(k, _)| k == ID_HEADER)
                                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                                .map(|v| v.split_once('/').map(|(_, id)| id.to_string()).unwrap_or(v))
                                .unwrap_or_default();
                            let headers = headers.into_iter().filter(|(k, _)| k != ID_HEADER).collect();
                            let topic = topics.kind(&d.topic).unwrap_or(OutTopic::Predictions);
                            let record = OutRecord { topic, id, key, payload, headers };
                            failed.push(Queued { epoch: d.epoch, record, partition: d.partition, attempts: 1, not_before: Some(Instant::now() + backoff(1)) });
                        }
                    }
                }
                // Failed deliveries go back to the front, in their original order, so a
                // partition's records stay in epoch order.
                for q in failed.drain(..).rev() {
                    backlog.push_front(q);
                }

                let now = Instant::now();
                let mut sent = 0usize;
                while let Some(mut q) = backlog.pop_front() {
                    if q.not_before.is_some_and(|t| t > now) {
                        backlog.push_front(q);
                        break;
                    }
                    let mut headers = OwnedHeaders::new_with_capacity(q.record.headers.len() + 1);
                    let id = format!("{lineage}/{}", q.record.id);
                    headers = headers.insert(Header { key: ID_HEADER, value: Some(id.as_bytes()) });
                    for (k, v) in &q.record.headers {
                        headers = headers.insert(Header { key: k, value: Some(v) });
                    }
                    let mut rec: BaseRecord<'_, [u8], [u8], usize> =
                        BaseRecord::with_opaque_to(topics.name(q.record.topic), q.epoch as usize).partition(q.partition).payload(&q.record.payload[..]).headers(headers);
                    if let Some(k) = &q.record.key {
                        rec = rec.key(&k[..]);
                    }
                    match producer.send(rec) {
                        Ok(()) => sent += 1,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            backlog.push_front(q);
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
                            backlog.push_front(q);
                            break;
                        }
                    }
                    if sent % 1024 == 0 {
                        producer.poll(Duration::ZERO);
                    }
                }

                // Release every epoch that is closed at the input and fully acknowledged.
                open.retain(|time, (_, outstanding)| *outstanding > 0 || frontier.less_equal(time));
                if !open.is_empty() || !backlog.is_empty() {
                    activator.activate_after(Duration::from_millis(1));
                }
            }
        })
    }
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
}

/// Reads output partitions from the given offsets to their end and returns the ids of `lineage`
/// found: records an earlier execution published after its last checkpoint. One topic at a time
/// (end-of-partition events name only the partition).
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
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(super::client_err("assign"))?;
            at_end.insert(*p, false);
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
