//! The sections of `cluster.toml` as the operator writes them: serde structs with
//! `deny_unknown_fields`, a doc comment per field, and the defaults a missing field takes.
//!
//! ```text
//!   cluster.toml ──toml+serde──> RawConfig { cluster, kafka, topics, source, dataflow, models,
//!                                            fallback, anomaly, checkpoint, features, pipeline,
//!                                            http, monitoring }
//!   (http and monitoring are defined with the operations code, in crate::ops::settings;
//!    fallback and anomaly with the maths they tune: FallbackParams, AnomalyParams)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole `cluster.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// The timely cluster: its processes and worker threads.
    pub cluster: ClusterSection,
    /// Kafka connection and client options.
    pub kafka: KafkaSection,
    /// Topic names and how to create them.
    pub topics: TopicsSection,
    /// How the Kafka source reads.
    pub source: SourceSection,
    /// Dataflow progress settings.
    pub dataflow: DataflowSection,
    /// Models and prediction settings.
    pub models: ModelsSection,
    /// Tuning of the statistical fallback forecaster (defaults tuned on the NYC 2013 data).
    pub fallback: crate::forecast::FallbackParams,
    /// Thresholds of the anomaly rules.
    pub anomaly: crate::anomaly::AnomalyParams,
    /// Checkpoint storage.
    pub checkpoint: CheckpointSection,
    /// Event-time windows of the features stage.
    pub features: FeaturesSection,
    /// Which dataflows `run` starts.
    pub pipeline: PipelineSection,
    /// The per-process HTTP server: `/metrics`, JSON API, dashboard (`crate::ops`).
    pub http: crate::ops::settings::HttpSection,
    /// The model-monitoring stage (`dataflows/monitoring.rs`).
    pub monitoring: crate::ops::settings::MonitoringSection,
}

/// `[cluster]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `host:port` of every timely process, in process-index order. Process `i` listens on
    /// `processes[i]`; all processes must list the same addresses in the same order.
    pub processes: Vec<String>,
    /// Worker threads per process (each worker reads its share of the partitions).
    pub workers: usize,
    /// What the local launcher does when a process dies: "stop" the others and exit with an
    /// error, or "restart" the whole cluster, which resumes from the last checkpoint.
    pub on_failure: OnFailure,
    /// Most restarts the launcher makes in one run before giving up.
    pub max_restarts: u32,
}

/// Launcher policy when a cluster process dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop every process and exit non-zero.
    Stop,
    /// Stop every process and start the cluster again (it resumes from the last checkpoint).
    Restart,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            processes: vec!["127.0.0.1:2101".into()],
            workers: 1,
            on_failure: OnFailure::Stop,
            max_restarts: 100,
        }
    }
}

/// `[kafka]` (its `Debug` output redacts credentials: see `crate::ops::redact`)
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Consumer group id. Offsets are committed to it after outputs are acknowledged, for
    /// monitoring (lag) only.
    pub group_id: String,
    /// Any librdkafka option for every client (e.g. `security.protocol`, `sasl.mechanism`).
    pub options: BTreeMap<String, String>,
    /// librdkafka options for consumers only (they override `options`).
    pub consumer: BTreeMap<String, String>,
    /// librdkafka options for producers only (they override `options`).
    pub producer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::ops::redact::redact_options;
        f.debug_struct("KafkaSection")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("options", &redact_options(&self.options))
            .field("consumer", &redact_options(&self.consumer))
            .field("producer", &redact_options(&self.producer))
            .finish()
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: "127.0.0.1:9092".into(),
            group_id: "weatherflow".into(),
            options: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

/// `[topics]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSection {
    /// Input: hourly feature records.
    pub features: String,
    /// Output: one prediction per accepted feature record.
    pub predictions: String,
    /// Dead letters: refused input with the original bytes and the reason in headers.
    pub dlq: String,
    /// Features stage input: raw station observations (JSON, key = station_id).
    pub raw: String,
    /// Features stage dead letters: refused observations, original bytes, reason in headers.
    pub raw_dlq: String,
    /// Features stage: observations that arrived after their window was emitted, with the reason.
    pub late: String,
    /// Monitoring stage output: rolling forecast verification and skill alerts (JSON).
    pub model_metrics: String,
    /// Create missing topics at start (process 0 does it; the others wait for them).
    pub create: bool,
    /// Partitions of topics created by weatherflow.
    pub partitions: i32,
    /// Replication factor of topics created by weatherflow.
    pub replication: i32,
}

impl Default for TopicsSection {
    fn default() -> Self {
        TopicsSection {
            features: "weather-features".into(),
            predictions: "weather-predictions".into(),
            dlq: "weather-features-dlq".into(),
            raw: "weather-raw".into(),
            raw_dlq: "weather-raw-dlq".into(),
            late: "weather-raw-late".into(),
            model_metrics: "weather-model-metrics".into(),
            create: true,
            partitions: 4,
            replication: 1,
        }
    }
}

/// `[features]`: event-time tumbling windows of the features stage (`dataflows/features.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesSection {
    /// Window size in seconds; windows are hour-ending `(end - size, end]`, aligned to the epoch.
    pub window_s: u64,
    /// Allowed lateness in seconds: a partition's watermark is its newest event time minus this;
    /// observations whose window ends at or before the watermark go to `topics.late`.
    pub allowed_lateness_s: u64,
    /// A partition with no new record for this long (ms, wall clock) has its watermark advanced
    /// with the wall clock, so the last windows of a quiet partition are emitted.
    pub idle_timeout_ms: u64,
    /// Observations stamped more than this many seconds ahead of the wall clock are refused (a
    /// clock fault would otherwise push the watermark into the future); 0 = no limit.
    pub max_future_s: u64,
}

impl Default for FeaturesSection {
    fn default() -> Self {
        FeaturesSection {
            window_s: 3600,
            allowed_lateness_s: 600,
            idle_timeout_ms: 30_000,
            max_future_s: 86_400,
        }
    }
}

/// A dataflow `run` can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `topics.raw` -> `topics.features`: event-time windows per station.
    Features,
    /// `topics.features` -> `topics.predictions`: forecasts and anomalies.
    Inference,
    /// `topics.predictions` + `topics.features` -> `topics.model_metrics`: forecast verification.
    Monitoring,
}

impl Stage {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Features => "features",
            Stage::Inference => "inference",
            Stage::Monitoring => "monitoring",
        }
    }
}

/// `[pipeline]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// The stages this cluster runs: `["inference"]` (default), `["features"]`, or both, which runs
    /// the chain raw -> features -> predictions in one cluster.
    pub stages: Vec<Stage>,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            stages: vec![Stage::Inference],
        }
    }
}

impl PipelineSection {
    /// Whether `stage` runs.
    pub fn runs(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }
}

/// Where a partition starts when no position is known for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The consumer group's committed offset, else the earliest offset.
    Committed,
    /// The earliest offset, ignoring commits.
    Earliest,
    /// The end of the partition, ignoring commits.
    Latest,
}

/// `[source]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSection {
    /// Most messages one worker takes from Kafka per activation before yielding to other operators.
    pub max_poll_records: usize,
    /// Where partitions start: "committed", "earliest" or "latest".
    pub start: StartFrom,
    /// Stop once every assigned partition has been read to its end (batch runs, tests, demo).
    pub stop_at_end: bool,
    /// How often (ms) partition counts are re-read, so added partitions are picked up.
    pub metadata_refresh_ms: u64,
    /// Inference stage: most records one worker keeps read but not yet answered (outputs
    /// acknowledged by the broker); at this bound the source stops reading until acknowledgements catch up, which
    /// bounds memory when a backlog is read. 0 = no bound. Records of an epoch are answered only
    /// after it ends, so keep it above what a worker reads in two epochs at the rate you need.
    pub max_in_flight: usize,
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            max_poll_records: 1000,
            start: StartFrom::Committed,
            stop_at_end: false,
            metadata_refresh_ms: 30_000,
            max_in_flight: 200_000,
        }
    }
}

/// `[dataflow]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataflowSection {
    /// Epoch length in ms: records read in the same epoch are released together once every
    /// worker has passed it. Shorter epochs lower latency; longer ones amortise coordination.
    pub epoch_ms: u64,
    /// Seconds between progress log lines (0 disables them).
    pub log_every_s: u64,
}

impl Default for DataflowSection {
    fn default() -> Self {
        DataflowSection {
            epoch_ms: 100,
            log_every_s: 10,
        }
    }
}

/// `[models]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsSection {
    /// Versioned model store (`<dir>/<kind>/<version>/`, `<dir>/<kind>/latest`).
    pub dir: PathBuf,
    /// Probability of the forecast intervals, in (0, 1).
    pub interval: f64,
    /// How often (ms) each worker re-reads the store's `latest` pointers to pick up a promoted
    /// or rolled-back model (checked at the start of an epoch; 0 = every epoch).
    pub reload_ms: u64,
}

impl Default for ModelsSection {
    fn default() -> Self {
        ModelsSection {
            dir: PathBuf::from("models"),
            interval: 0.9,
            reload_ms: 5000,
        }
    }
}

/// `[checkpoint]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Write checkpoints (exactly-once output, state survives restarts). Off: at-least-once
    /// after a crash, state starts afresh.
    pub enabled: bool,
    /// Directory for checkpoints (created if missing). Every process of a cluster must see the
    /// same directory (one machine, or shared storage).
    pub dir: PathBuf,
    /// Checkpoint interval in ms; a multiple of `dataflow.epoch_ms` is used.
    pub interval_ms: u64,
    /// Complete checkpoints kept; older ones are removed.
    pub retain: usize,
    /// How far (ms) reading may run ahead of the last durable checkpoint before the source
    /// pauses (backpressure when checkpoints are slow).
    pub max_lead_ms: u64,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            enabled: true,
            dir: PathBuf::from("checkpoints"),
            interval_ms: 1000,
            retain: 3,
            max_lead_ms: 10_000,
        }
    }
}
