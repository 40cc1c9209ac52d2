//! Kafka I/O: client construction, topic administration, the timely source and sink.
//!
//! ```text
//!   Kafka partitions ──(partition p -> worker p mod peers)──> KafkaSource ──> … dataflow … ──> KafkaSink ──> topics
//!                                      ^                                                         │
//!                                      └──── commit offsets of epochs the sink has acknowledged ─┘
//! ```
//!
//! Auto-commit is off. The consumer group's committed offsets are written only after the broker
//! acknowledged every output of the records before them, so they never run ahead of the outputs.

pub mod assign;
pub mod pacing;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::util::Timeout;
use rdkafka::Message;

pub use sink::{KafkaSink, OutRecord, OutTopic};
pub use source::{InputMessage, KafkaSourceSpec};

/// Errors of the Kafka layer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIoError {
    /// librdkafka refused a client configuration or an operation.
    #[error("kafka {context}: {source}")]
    Client { context: String, source: KafkaError },
    /// A topic did not appear in time.
    #[error("topic {topic} not found on {brokers} after {waited:?}; create it, or set topics.create = true")]
    TopicMissing { topic: String, brokers: String, waited: Duration },
    /// Reading back the outputs of an earlier execution did not finish in time.
    #[error("reading back published outputs did not reach the end within {waited:?}")]
    ReadBack { waited: Duration },
    /// A checkpoint could not be restored.
    #[error("restoring the checkpoint: {0}")]
    Restore(String),
    /// Creating a topic failed.
    #[error("creating topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
}

pub(crate) fn client_err(context: impl Into<String>) -> impl FnOnce(KafkaError) -> KafkaIoError {
    let context = context.into();
    move |source| KafkaIoError::Client { context, source }
}

/// A librdkafka client configuration from brokers plus options.
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in options {
        c.set(k, v);
    }
    c
}

/// Consumer context: like librdkafka's default, but end-of-partition events (which weatherflow
/// asks for, to know when a partition is read to its end) are not logged as errors.
pub struct QuietEofContext;

impl ClientContext for QuietEofContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            e => tracing::error!(target: "librdkafka", "librdkafka: {e}: {reason}"),
        }
    }
}

impl ConsumerContext for QuietEofContext {}

/// The consumer type weatherflow uses.
pub type WfConsumer = BaseConsumer<QuietEofContext>;

/// A consumer with manual partition assignment and auto-commit off.
pub fn consumer(brokers: &str, group: &str, options: &BTreeMap<String, String>) -> Result<WfConsumer, KafkaIoError> {
    let mut c = client_config(brokers, options);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    if c.get("auto.offset.reset").is_none() {
        c.set("auto.offset.reset", "earliest");
    }
    c.create_with_context(QuietEofContext).map_err(client_err("creating consumer"))
}

/// A plain producer (no delivery tracking), for tools and tests.
pub fn simple_producer(brokers: &str, options: &BTreeMap<String, String>) -> Result<BaseProducer, KafkaIoError> {
    client_config(brokers, options).create().map_err(client_err("creating producer"))
}

/// Number of partitions of `topic`, or `None` if the broker does not know it.
pub fn partition_count(consumer: &WfConsumer, topic: &str, timeout: Duration) -> Result<Option<usize>, KafkaIoError> {
    let md = consumer
        .fetch_metadata(Some(topic), Timeout::After(timeout))
        .map_err(client_err(format!("metadata for {topic}")))?;
    Ok(md.topics().iter().find(|t| t.name() == topic).and_then(|t| {
        if t.error().is_some() || t.partitions().is_empty() {
            None
        } else {
            Some(t.partitions().len())
        }
    }))
}

/// Waits until `topic` exists, returning its partition count.
pub fn wait_for_topic(consumer: &WfConsumer, brokers: &str, topic: &str, patience: Duration) -> Result<usize, KafkaIoError> {
    let start = Instant::now();
    loop {
        match partition_count(consumer, topic, Duration::from_secs(5)) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {}
            Err(e) if start.elapsed() >= patience => return Err(e),
            Err(e) => tracing::warn!(%topic, error = %e, "metadata request failed; retrying"),
        }
        if start.elapsed() >= patience {
            return Err(KafkaIoError::TopicMissing {
                topic: topic.into(),
                brokers: brokers.into(),
                waited: patience,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates the topics that do not exist yet. Existing topics are left as they are.
pub fn ensure_topics(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaIoError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, options)
        .create()
        .map_err(client_err("creating admin client"))?;
    let probe = consumer(brokers, "weatherflow-admin", options)?;
    let mut missing = Vec::new();
    for t in topics {
        if partition_count(&probe, t, Duration::from_secs(10))?.is_none() {
            missing.push(*t);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin.create_topics(new.iter(), &opts)).map_err(client_err("create topics"))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic = %name, "topic already exists"),
            Err((name, code)) => {
                return Err(KafkaIoError::CreateTopic {
                    topic: name,
                    message: code.to_string(),
                })
            }
        }
    }
    for t in missing {
        wait_for_topic(&probe, brokers, t, Duration::from_secs(30))?;
    }
    Ok(())
}

/// Publishes `(key, payload)` pairs and waits until all are acknowledged. For tools and tests.
pub fn publish_all<'a>(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    records: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8])>,
) -> Result<usize, KafkaIoError> {
    use rdkafka::producer::BaseRecord;
    let mut opts = options.clone();
    opts.entry("enable.idempotence".into()).or_insert_with(|| "true".into());
    let producer = simple_producer(brokers, &opts)?;
    let mut n = 0;
    for (key, payload) in records {
        let mut rec: BaseRecord<[u8], [u8]> = BaseRecord::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(KafkaIoError::Client {
                        context: format!("producing to {topic}"),
                        source: e,
                    })
                }
            }
        }
        n += 1;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(client_err(format!("flushing to {topic}")))?;
    Ok(n)
}

/// Reads every message currently in `topic` (all partitions, from the beginning, to the end).
/// Returns `(partition, offset, key, payload, headers)` tuples. For tools and tests.
pub fn read_to_end(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    patience: Duration,
) -> Result<Vec<ReadMessage>, KafkaIoError> {
    use rdkafka::message::Headers;
    use rdkafka::{Offset, TopicPartitionList};
    let c = consumer(brokers, "weatherflow-reader", options)?;
    let n = wait_for_topic(&c, brokers, topic, patience)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(client_err("assign"))?;
    }
    c.assign(&tpl).map_err(client_err("assign"))?;
    let mut at_end = vec![false; n];
    let mut out = Vec::new();
    let deadline = Instant::now() + patience;
    while at_end.iter().any(|e| !e) {
        if Instant::now() > deadline {
            break;
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|hd| (hd.key.to_string(), hd.value.map(<[u8]>::to_vec).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadMessage {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = at_end.get_mut(p as usize) {
                    *e = true;
                }
            }
            Some(Err(e)) => tracing::warn!(%topic, error = %e, "read error; retrying"),
        }
    }
    Ok(out)
}

/// A message read by [`read_to_end`].
#[derive(Clone, Debug)]
pub struct ReadMessage {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Headers (key, value).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadMessage {
    /// Value of header `key`, as UTF-8 (lossy).
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}
