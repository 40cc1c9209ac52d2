//! The Kafka sink: produces each worker's output records and holds the epoch's capability until
//! the broker has acknowledged every record of that epoch.
//!
//! ```text
//!   OutRecord @ e ──> [ backlog ] ──send──> librdkafka ──ack──> outstanding[e] -= 1
//!                         ^                      │
//!                         └──── retry (backoff) ─┘ failed delivery: re-queued, counted, logged
//!
//!   output frontier = least epoch with outstanding records (or whose input is still open)
//!                   = "everything before it is acknowledged"  ──> probe ──> source commits offsets
//! ```
//!
//! A record is done only when the broker acknowledged it. A failed delivery is never dropped: it
//! is re-queued with exponential backoff (100 ms doubling to 5 s), counted in
//! `delivery_retries` and logged, and its epoch stays open, so the stall is visible through the
//! frontier, the progress log and the committed offsets. The producer is idempotent by default, so
//! librdkafka's own retries do not duplicate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::metrics::Metrics;

/// Which configured topic a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutTopic {
    /// `topics.predictions`
    Predictions,
    /// `topics.dlq`
    Dlq,
}

/// One record to produce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutRecord {
    /// Destination.
    pub topic: OutTopic,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message payload.
    pub payload: Vec<u8>,
    /// Message headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Topic names for [`OutTopic`].
#[derive(Clone, Debug)]
pub struct SinkTopics {
    /// Name of the predictions topic.
    pub predictions: String,
    /// Name of the dead-letter topic.
    pub dlq: String,
}

impl SinkTopics {
    fn name(&self, t: OutTopic) -> &str {
        match t {
            OutTopic::Predictions => &self.predictions,
            OutTopic::Dlq => &self.dlq,
        }
    }
    fn kind(&self, name: &str) -> OutTopic {
        if name == self.dlq {
            OutTopic::Dlq
        } else {
            OutTopic::Predictions
        }
    }
}

/// A delivery report, collected by the producer context and handled by the operator.
struct Delivery {
    epoch: u64,
    topic: OutTopic,
    failed: Option<(KafkaError, OutRecord)>,
}

/// Collects delivery reports (called on the worker thread from `producer.poll`).
pub struct DeliveryContext {
    topics: SinkTopics,
    reports: Mutex<Vec<Delivery>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        let report = match result {
            Ok(m) => Delivery {
                epoch: epoch as u64,
                topic: self.topics.kind(m.topic()),
                failed: None,
            },
            Err((e, m)) => {
                let topic = self.topics.kind(m.topic());
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|hd| (hd.key.to_string(), hd.value.map(<[u8]>::to_vec).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                let rec = OutRecord {
                    topic,
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                };
                Delivery {
                    epoch: epoch as u64,
                    topic,
                    failed: Some((e.clone(), rec)),
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
    topics: SinkTopics,
) -> Result<BaseProducer<DeliveryContext>, super::KafkaIoError> {
    super::client_config(brokers, options)
        .create_with_context(DeliveryContext {
            topics,
            reports: Mutex::new(Vec::new()),
        })
        .map_err(super::client_err("creating producer"))
}

/// Extension trait: sink a stream of [`OutRecord`]s into Kafka.
pub trait KafkaSink<'s> {
    /// Produces every record; the returned (empty) stream's frontier passes an epoch only when
    /// all records of that epoch and earlier were acknowledged by the broker.
    fn kafka_sink(self, producer: BaseProducer<DeliveryContext>, metrics: Arc<Metrics>) -> StreamVec<'s, u64, ()>;
}

struct Queued {
    epoch: u64,
    record: OutRecord,
    attempts: u32,
    not_before: Option<Instant>,
}

impl<'s> KafkaSink<'s> for StreamVec<'s, u64, OutRecord> {
    fn kafka_sink(self, producer: BaseProducer<DeliveryContext>, metrics: Arc<Metrics>) -> StreamVec<'s, u64, ()> {
        let scope = self.scope();
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "KafkaSink", move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let worker = scope.index();
            // epoch -> (capability, records not yet acknowledged)
            let mut open: BTreeMap<u64, (Capability<u64>, usize)> = BTreeMap::new();
            let mut backlog: VecDeque<Queued> = VecDeque::new();
            let mut failed: Vec<Queued> = Vec::new();
            let topics = producer.context().topics.clone();
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
                    for batch in data {
                        entry.1 += batch.len();
                        backlog.extend(batch.drain(..).map(|record| Queued { epoch: time, record, attempts: 0, not_before: None }));
                    }
                });

                producer.poll(Duration::ZERO);
                let reports = producer.context().reports.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
                for d in reports {
                    match d.failed {
                        None => {
                            if let Some(e) = open.get_mut(&d.epoch) {
                                e.1 = e.1.saturating_sub(1);
                            }
                            let counter = match d.topic {
                                OutTopic::Predictions => &metrics.predictions_acked,
                                OutTopic::Dlq => &metrics.dlq_acked,
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((err, record)) => {
                            metrics.delivery_retries.fetch_add(1, Ordering::Relaxed);
                            if last_log.elapsed() > Duration::from_secs(5) {
                                tracing::error!(worker, epoch = d.epoch, error = %err, "delivery failed; re-queued (records are never dropped)");
                                last_log = Instant::now();
                            }
                            failed.push(Queued { epoch: d.epoch, record, attempts: 1, not_before: Some(Instant::now() + backoff(1)) });
                        }
                    }
                }
                // Failed deliveries go back to the front of the queue, after their backoff.
                for q in failed.drain(..).rev() {
                    backlog.push_front(q);
                }

                let now = Instant::now();
                let mut sent = 0usize;
                while let Some(mut q) = backlog.pop_front() {
                    if q.not_before.map(|t| t > now).unwrap_or(false) {
                        backlog.push_front(q);
                        break;
                    }
                    let topic = topics.name(q.record.topic);
                    let mut headers = OwnedHeaders::new_with_capacity(q.record.headers.len());
                    for (k, v) in &q.record.headers {
                        headers = headers.insert(Header { key: k, value: Some(v) });
                    }
                    let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, q.epoch as usize).payload(&q.record.payload[..]);
                    if let Some(k) = &q.record.key {
                        rec = rec.key(&k[..]);
                    }
                    if !q.record.headers.is_empty() {
                        rec = rec.headers(headers);
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
