//! Training data loader: hourly feature records from a JSON-lines file, from raw observation
//! files (aggregated by the same window code as the features dataflow), or from a range of a
//! Kafka topic.
//!
//! ```text
//!   --features FILE.jsonl ──FeatureRecord::parse (line by line)──────────────────────┐
//!   --raw FILE --format nyc|payerne|tmy3 ──observations::load_file──> features::       ├─> Dataset
//!                                          features_in_input_order (hour-ending windows)│   (records in input
//!   --topic T [--from-offset/--to-offset | --from-time/--to-time] ──Kafka, assigned ──┘    order, per station)
//!      partitions, read from the start of the range to its end, FeatureRecord::parse
//! ```
//!
//! A file line or Kafka message that is not a valid feature record stops a file load with the
//! line number (files are curated inputs) and is counted and skipped for Kafka (a topic may hold
//! what the dataflow sends to the DLQ).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::contract::FeatureRecord;
use crate::features::{features_in_input_order, DEFAULT_WINDOW};
use crate::kafka::{self, KafkaIoError};
use crate::observations::{load_file, LoadError, SourceFormat};

/// Errors loading training data.
#[derive(Debug, thiserror::Error)]
pub enum LoadDataError {
    /// A file could not be read.
    #[error("reading {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A line of a features file is not a valid feature record.
    #[error("{path}:{line}: not a valid feature record: {message}")]
    BadRecord { path: PathBuf, line: usize, message: String },
    /// A raw observation file could not be loaded.
    #[error(transparent)]
    Raw(#[from] LoadError),
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// Reading a Kafka range did not finish.
    #[error("reading {topic}: not at the end of the range after {waited:?} ({read} messages read)")]
    KafkaTimeout { topic: String, waited: Duration, read: usize },
    /// The source holds no record.
    #[error("{0} holds no feature record")]
    Empty(String),
}

/// A range of a Kafka topic, the same on every partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaRange {
    /// Offsets `[from, to)` (defaults: the beginning and the current end).
    Offsets {
        /// First offset.
        from: Option<i64>,
        /// End offset (exclusive).
        to: Option<i64>,
    },
    /// Message timestamps `[from, to)`.
    Time {
        /// First timestamp.
        from: Option<DateTime<Utc>>,
        /// End (exclusive).
        to: Option<DateTime<Utc>>,
    },
}

/// Where training records come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// Hourly feature records, one JSON object per line.
    Features(PathBuf),
    /// Raw observations in a loader format, aggregated into hour-ending windows.
    Raw {
        /// Format of the file.
        format: SourceFormat,
        /// The file.
        path: PathBuf,
    },
    /// A Kafka topic range.
    Kafka {
        /// Bootstrap brokers.
        brokers: String,
        /// librdkafka options.
        options: BTreeMap<String, String>,
        /// Topic of feature records.
        topic: String,
        /// Which messages.
        range: KafkaRange,
        /// Give up after this long.
        patience: Duration,
    },
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Features(p) => write!(f, "features file {}", p.display()),
            DataSource::Raw { format, path } => write!(f, "raw {format} observations {} (hourly windows)", path.display()),
            DataSource::Kafka { topic, range, brokers, .. } => write!(f, "kafka topic {topic} on {brokers}, {range:?}"),
        }
    }
}

/// Loaded training records.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Records in input order.
    pub records: Vec<FeatureRecord>,
    /// Description of the source.
    pub source: String,
    /// Kafka messages skipped because they are not valid feature records.
    pub skipped: usize,
}

impl Dataset {
    /// Records grouped by station, each group in input order.
    pub fn by_station(&self) -> BTreeMap<&str, Vec<&FeatureRecord>> {
        let mut out: BTreeMap<&str, Vec<&FeatureRecord>> = BTreeMap::new();
        for r in &self.records {
            out.entry(r.station_id.as_str()).or_default().push(r);
        }
        out
    }

    /// Station ids, sorted.
    pub fn stations(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| r.station_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Earliest and latest window_end.
    pub fn span(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let lo = self.records.iter().map(|r| r.window_end).min()?;
        let hi = self.records.iter().map(|r| r.window_end).max()?;
        Some((lo, hi))
    }
}

/// Loads every record of `source`.
pub fn load(source: &DataSource) -> Result<Dataset, LoadDataError> {
    let (records, skipped) = match source {
        DataSource::Features(path) => (load_features(path)?, 0),
        DataSource::Raw { format, path } => (features_in_input_order(&load_file(*format, path)?, DEFAULT_WINDOW), 0),
        DataSource::Kafka {
            brokers,
            options,
            topic,
            range,
            patience,
        } => load_kafka(brokers, options, topic, range, *patience)?,
    };
    if records.is_empty() {
        return Err(LoadDataError::Empty(source.to_string()));
    }
    Ok(Dataset {
        records,
        source: source.to_string(),
        skipped,
    })
}

fn load_features(path: &PathBuf) -> Result<Vec<FeatureRecord>, LoadDataError> {
    let io = |error| LoadDataError::Io { path: path.clone(), error };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = FeatureRecord::parse(line.as_bytes()).map_err(|e| LoadDataError::BadRecord {
            path: path.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(rec);
    }
    Ok(out)
}

fn load_kafka(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    range: &KafkaRange,
    patience: Duration,
) -> Result<(Vec<FeatureRecord>, usize), LoadDataError> {
    let err = |context: &str| {
        let context = format!("{context} {topic}");
        move |source: KafkaError| KafkaIoError::Client { context, source }
    };
    let c = kafka::consumer(brokers, "weatherflow-train", options)?;
    let n = kafka::wait_for_topic(&c, brokers, topic, patience)?;
    let timeout = Duration::from_secs(10);
    let (mut start, mut end) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut start_time, mut stop_time): (Option<i64>, Option<i64>) = (None, None);
    for p in 0..n as i32 {
        let (low, high) = c.fetch_watermarks(topic, p, timeout).map_err(err("watermarks of"))?;
        let (s, e) = match range {
            KafkaRange::Offsets { from, to } => (from.unwrap_or(low).clamp(low, high), to.unwrap_or(high).clamp(low, high)),
            KafkaRange::Time { from, to } => {
                start_time = from.map(|t| t.timestamp_millis());
                stop_time = to.map(|t| t.timestamp_millis());
                // The broker's time index is only a shortcut: messages before `from` are also
                // skipped while reading, so a broker without one (or a wrong answer) costs time,
                // never correctness.
                let s = match from {
                    None => low,
                    Some(t) => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(topic, p, Offset::Offset(t.timestamp_millis()))
                            .map_err(err("offsets of"))?;
                        let found = c.offsets_for_times(tpl, timeout).map_err(err("offsets for times of"))?;
                        match found.find_partition(topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) if (low..high).contains(&o) => o,
                            _ => low,
                        }
                    }
                };
                (s.clamp(low, high), high)
            }
        };
        start.push(s);
        end.push(e.max(s));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        if start[p] < end[p] {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(start[p]))
                .map_err(err("assigning"))?;
        }
    }
    let mut done: Vec<bool> = (0..n).map(|p| start[p] >= end[p]).collect();
    let mut messages: Vec<(i32, i64, FeatureRecord)> = Vec::new();
    let mut skipped = 0;
    if done.iter().all(|d| *d) {
        return Ok((Vec::new(), 0));
    }
    c.assign(&tpl).map_err(err("assigning"))?;
    let deadline = Instant::now() + patience;
    let mut read = 0;
    while !done.iter().all(|d| *d) {
        if Instant::now() > deadline {
            return Err(LoadDataError::KafkaTimeout {
                topic: topic.into(),
                waited: patience,
                read,
            });
        }
        match c.poll(Duration::from_millis(200)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(%topic, error = %e, "read error; retrying"),
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                if p >= n || done[p] {
                    continue;
                }
                read += 1;
                let ts = m.timestamp().to_millis();
                let past_time = stop_time.is_some_and(|t| ts.is_some_and(|ts| ts >= t));
                if m.offset() >= end[p] || past_time {
                    done[p] = true;
                    continue;
                }
                let before = start_time.is_some_and(|t| ts.is_none_or(|ts| ts < t));
                if !before {
                    match FeatureRecord::parse(m.payload().unwrap_or_default()) {
                        Ok(r) => messages.push((m.partition(), m.offset(), r)),
                        Err(_) => skipped += 1,
                    }
                }
                if m.offset() + 1 >= end[p] {
                    done[p] = true;
                }
            }
        }
    }
    messages.sort_by_key(|(p, o, _)| (*p, *o));
    Ok((messages.into_iter().map(|(_, _, r)| r).collect(), skipped))
}
