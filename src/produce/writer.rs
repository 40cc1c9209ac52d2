//! Where `produce` writes: a Kafka topic (idempotent producer, partition chosen by a fixed hash
//! of the station, failed deliveries re-sent) or a JSON-lines file.
//!
//! ```text
//!   (station, payload) ──> KafkaWriter ──partition = fnv1a(station) mod n──> librdkafka ──ack──> counted
//!                              ^                                                 │
//!                              └──────── failed delivery: re-sent (5 attempts) ──┘  then an error, never dropped
//!   (station, payload) ──> FileWriter ──> payload + "\n"
//! ```
//!
//! The partition of a station is the same function the rest of weatherflow uses
//! ([`station_hash`]), so a station's observations all land in one partition, in order: what the
//! features stage's per-partition watermark needs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::Message;

use super::ProduceError;
use crate::kafka::assign::station_hash;
use crate::kafka::{client_config, KafkaIoError};

/// Most attempts per record before `produce` gives up with an error.
const MAX_ATTEMPTS: usize = 5;

/// A failed delivery: key, payload, partition, attempts so far, error.
type Failed = (Vec<u8>, Vec<u8>, i32, usize, KafkaError);

/// Counts acknowledgements and keeps failed records for another attempt.
struct Deliveries {
    acked: AtomicU64,
    failed: Mutex<Vec<Failed>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, attempts: usize) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                let key = m.key().map(<[u8]>::to_vec).unwrap_or_default();
                let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
                if let Ok(mut f) = self.failed.lock() {
                    f.push((key, payload, m.partition(), attempts, e.clone()));
                }
            }
        }
    }
}

/// A Kafka topic as the destination.
pub struct KafkaWriter {
    producer: BaseProducer<Deliveries>,
    topic: String,
    partitions: i32,
    sent: u64,
    retries: u64,
}

impl KafkaWriter {
    /// Connects and reads the topic's partition count (the topic must exist).
    pub fn new(brokers: &str, options: &BTreeMap<String, String>, topic: &str) -> Result<Self, ProduceError> {
        let producer: BaseProducer<Deliveries> = client_config(brokers, options)
            .create_with_context(Deliveries {
                acked: AtomicU64::new(0),
                failed: Mutex::new(Vec::new()),
            })
            .map_err(|source| KafkaIoError::Client {
                context: "creating producer".into(),
                source,
            })?;
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))
            .map_err(|source| KafkaIoError::Client {
                context: format!("metadata for {topic}"),
                source,
            })?;
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .filter(|n| *n > 0)
            .ok_or_else(|| KafkaIoError::TopicMissing {
                topic: topic.into(),
                brokers: brokers.into(),
                waited: Duration::from_secs(10),
            })?;
        Ok(KafkaWriter {
            producer,
            topic: topic.into(),
            partitions,
            sent: 0,
            retries: 0,
        })
    }

    /// The partition a station's records go to.
    pub fn partition_of(&self, station: &str) -> i32 {
        (station_hash(station) % self.partitions as u64) as i32
    }

    /// Queues one record (waiting while librdkafka's queue is full) and serves delivery reports.
    pub fn send(&mut self, station: &str, payload: &[u8]) -> Result<(), ProduceError> {
        let partition = self.partition_of(station);
        self.send_to(station.as_bytes(), payload, partition, 1)?;
        self.sent += 1;
        self.poll()
    }

    fn send_to(&self, key: &[u8], payload: &[u8], partition: i32, attempts: usize) -> Result<(), ProduceError> {
        let mut rec = BaseRecord::with_opaque_to(&self.topic, attempts)
            .key(key)
            .payload(payload)
            .partition(partition);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(ProduceError::Kafka(KafkaIoError::Client {
                        context: format!("producing to {}", self.topic),
                        source: e,
                    }))
                }
            }
        }
    }

    /// Serves delivery reports; re-sends failed records, or errors once one failed too often.
    pub fn poll(&mut self) -> Result<(), ProduceError> {
        self.producer.poll(Duration::ZERO);
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        for (key, payload, partition, attempts, error) in failed {
            if attempts >= MAX_ATTEMPTS {
                return Err(ProduceError::Undelivered {
                    topic: self.topic.clone(),
                    attempts,
                    error: error.to_string(),
                });
            }
            self.retries += 1;
            tracing::warn!(topic = %self.topic, partition, attempts, %error, "delivery failed; sending again");
            self.send_to(&key, &payload, partition, attempts + 1)?;
        }
        Ok(())
    }

    /// Waits until every record is acknowledged (re-sending failed ones).
    pub fn finish(&mut self, patience: Duration) -> Result<u64, ProduceError> {
        let deadline = Instant::now() + patience;
        while self.producer.context().acked.load(Ordering::Relaxed) < self.sent {
            if Instant::now() > deadline {
                return Err(ProduceError::Undelivered {
                    topic: self.topic.clone(),
                    attempts: 0,
                    error: format!(
                        "{} of {} records not acknowledged within {patience:?}",
                        self.sent - self.producer.context().acked.load(Ordering::Relaxed),
                        self.sent
                    ),
                });
            }
            self.producer.poll(Duration::from_millis(50));
            self.poll()?;
        }
        Ok(self.retries)
    }
}

/// A JSON-lines file as the destination.
pub struct FileWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl FileWriter {
    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> Result<Self, ProduceError> {
        let io = |source| ProduceError::Io {
            path: path.to_path_buf(),
            source,
        };
        Ok(FileWriter {
            out: BufWriter::new(File::create(path).map_err(io)?),
            path: path.to_path_buf(),
        })
    }

    /// Writes one message as a line.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ProduceError> {
        let io = |source| ProduceError::Io {
            path: self.path.clone(),
            source,
        };
        self.out.write_all(payload).map_err(io)?;
        self.out.write_all(b"\n").map_err(io)
    }

    /// Flushes to disk.
    pub fn finish(&mut self) -> Result<(), ProduceError> {
        self.out.flush().map_err(|source| ProduceError::Io {
            path: self.path.clone(),
            source,
        })
    }
}
