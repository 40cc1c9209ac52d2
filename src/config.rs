//! Configuration: `cluster.toml` as written by the operator ([`RawConfig`]), checked as a whole
//! ([`RawConfig::validate`] returns every problem, each naming the field and the fix), then
//! resolved with command-line overrides into [`Settings`], from which the `timely::Config` of one
//! process is derived.
//!
//! ```text
//!   cluster.toml ──toml+serde──> RawConfig ──validate()──> Settings ──timely_config(process)──> timely::Config
//!                 (unknown fields                (+ CLI overrides:
//!                  are errors)                    --processes --workers --brokers)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem: which field, what is wrong, and what is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `cluster.workers`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Errors loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or has a field of the wrong type or an unknown field.
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    /// The values are inconsistent or out of range; every problem is listed.
    #[error("config {origin} has {} problem(s):\n{}", problems.len(), format_problems(problems))]
    Invalid { origin: String, problems: Vec<Problem> },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

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
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            max_poll_records: 1000,
            start: StartFrom::Committed,
            stop_at_end: false,
            metadata_refresh_ms: 30_000,
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

/// Command-line overrides applied on top of the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Run this many local processes on consecutive ports (127.0.0.1).
    pub processes: Option<usize>,
    /// Worker threads per process.
    pub workers: Option<usize>,
    /// Bootstrap brokers.
    pub brokers: Option<String>,
    /// Stop at the end of the input.
    pub stop_at_end: bool,
}

/// The resolved configuration every part of the program uses.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Process addresses (index = process id).
    pub processes: Vec<String>,
    /// Worker threads per process.
    pub workers: usize,
    /// Kafka settings.
    pub kafka: KafkaSection,
    /// Topics.
    pub topics: TopicsSection,
    /// Source settings.
    pub source: SourceSection,
    /// Dataflow settings.
    pub dataflow: DataflowSection,
    /// Model settings.
    pub models: ModelsSection,
    /// Checkpoint settings.
    pub checkpoint: CheckpointSection,
    /// Launcher failure policy.
    pub on_failure: OnFailure,
    /// Launcher restart budget.
    pub max_restarts: u32,
    /// Features stage windows.
    pub features: FeaturesSection,
    /// Stages to run.
    pub pipeline: PipelineSection,
    /// HTTP server.
    pub http: crate::ops::settings::HttpSection,
    /// Monitoring stage.
    pub monitoring: crate::ops::settings::MonitoringSection,
}

impl RawConfig {
    /// Reads and parses a file (no validation yet).
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    /// Parses TOML text; the message names the field and its line on error.
    pub fn parse(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(n) = o.processes {
            let (host, base) = self
                .cluster
                .processes
                .first()
                .and_then(|a| a.rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>().ok())))
                .and_then(|(h, p)| p.map(|p| (h, p)))
                .unwrap_or(("127.0.0.1".to_string(), 2101));
            self.cluster.processes = (0..n).map(|i| format!("{host}:{}", base as usize + i)).collect();
        }
        if let Some(w) = o.workers {
            self.cluster.workers = w;
        }
        if let Some(b) = &o.brokers {
            self.kafka.brokers = b.clone();
        }
        if o.stop_at_end {
            self.source.stop_at_end = true;
        }
    }

    /// Every problem in the configuration, each naming the field and what is expected.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| {
            out.push(Problem {
                field: field.into(),
                message,
            })
        };
        if self.cluster.processes.is_empty() {
            bad("cluster.processes", "must list at least one \"host:port\" address".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.cluster.processes.iter().enumerate() {
            match a.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().map(|p| p > 0).unwrap_or(false) => {
                    if a.parse::<SocketAddr>().is_err() && host.contains(' ') {
                        bad(&format!("cluster.processes[{i}]"), format!("{a:?} is not \"host:port\""));
                    }
                }
                _ => bad(
                    &format!("cluster.processes[{i}]"),
                    format!("{a:?} is not \"host:port\" with a port 1-65535"),
                ),
            }
            if !seen.insert(a) {
                bad(
                    &format!("cluster.processes[{i}]"),
                    format!("{a:?} is listed twice; every process needs its own address"),
                );
            }
        }
        if self.cluster.workers == 0 || self.cluster.workers > 256 {
            bad(
                "cluster.workers",
                format!("is {}; expected 1 to 256 worker threads per process", self.cluster.workers),
            );
        }
        if self.kafka.brokers.trim().is_empty() {
            bad(
                "kafka.brokers",
                "is empty; expected \"host:port[,host:port]\", e.g. \"127.0.0.1:9092\"".into(),
            );
        }
        for (i, b) in self.kafka.brokers.split(',').enumerate().filter(|(_, b)| !b.trim().is_empty()) {
            if b.trim().rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                bad("kafka.brokers", format!("entry {i} {b:?} is not host:port"));
            }
        }
        if self.kafka.group_id.trim().is_empty() {
            bad(
                "kafka.group_id",
                "is empty; expected a consumer group name such as \"weatherflow\"".into(),
            );
        }
        for (section, map) in [
            ("kafka.options", &self.kafka.options),
            ("kafka.consumer", &self.kafka.consumer),
            ("kafka.producer", &self.kafka.producer),
        ] {
            for key in map.keys() {
                if MANAGED_OPTIONS.contains(&key.as_str()) {
                    bad(
                        &format!("{section}.\"{key}\""),
                        format!("is set by weatherflow itself ({}); remove it", managed_reason(key)),
                    );
                }
            }
        }
        let topics = [
            ("topics.features", &self.topics.features),
            ("topics.predictions", &self.topics.predictions),
            ("topics.dlq", &self.topics.dlq),
            ("topics.raw", &self.topics.raw),
            ("topics.raw_dlq", &self.topics.raw_dlq),
            ("topics.late", &self.topics.late),
        ];
        for (field, name) in topics {
            if !valid_topic(name) {
                bad(field, format!("{name:?} is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"));
            }
        }
        if self.topics.features == self.topics.predictions
            || self.topics.features == self.topics.dlq
            || self.topics.predictions == self.topics.dlq
        {
            bad("topics", "features, predictions and dlq must be three different topics".into());
        }
        if self.topics.partitions < 1 {
            bad("topics.partitions", format!("is {}; expected at least 1", self.topics.partitions));
        }
        if self.topics.replication < 1 {
            bad("topics.replication", format!("is {}; expected at least 1", self.topics.replication));
        }
        if self.source.max_poll_records == 0 {
            bad("source.max_poll_records", "is 0; expected at least 1 (e.g. 1000)".into());
        }
        if self.source.metadata_refresh_ms < 100 {
            bad(
                "source.metadata_refresh_ms",
                format!("is {}; expected at least 100 ms", self.source.metadata_refresh_ms),
            );
        }
        if self.dataflow.epoch_ms == 0 || self.dataflow.epoch_ms > 600_000 {
            bad(
                "dataflow.epoch_ms",
                format!("is {}; expected 1 to 600000 ms", self.dataflow.epoch_ms),
            );
        }
        if !(self.models.interval > 0.0 && self.models.interval < 1.0) {
            bad(
                "models.interval",
                format!(
                    "is {}; expected a probability strictly between 0 and 1, e.g. 0.9",
                    self.models.interval
                ),
            );
        }
        if self.models.reload_ms > 3_600_000 {
            bad(
                "models.reload_ms",
                format!("is {}; expected 0 (every epoch) to 3600000 ms", self.models.reload_ms),
            );
        }
        if self.checkpoint.dir.as_os_str().is_empty() {
            bad("checkpoint.dir", "is empty; expected a directory path".into());
        }
        if self.checkpoint.interval_ms < self.dataflow.epoch_ms.max(1) {
            bad(
                "checkpoint.interval_ms",
                format!(
                    "is {}; expected at least dataflow.epoch_ms ({})",
                    self.checkpoint.interval_ms, self.dataflow.epoch_ms
                ),
            );
        }
        if self.checkpoint.retain == 0 {
            bad(
                "checkpoint.retain",
                "is 0; expected at least 1 complete checkpoint to keep (e.g. 3)".into(),
            );
        }
        if self.checkpoint.max_lead_ms < self.checkpoint.interval_ms {
            bad(
                "checkpoint.max_lead_ms",
                format!(
                    "is {}; expected at least checkpoint.interval_ms ({})",
                    self.checkpoint.max_lead_ms, self.checkpoint.interval_ms
                ),
            );
        }
        self.validate_features_stage(&mut out);
        crate::ops::settings::validate(self, &mut out);
        out
    }

    /// Problems of `[features]`, `[pipeline]` and the features stage's topics.
    fn validate_features_stage(&self, out: &mut Vec<Problem>) {
        let mut bad = |field: &str, message: String| {
            out.push(Problem {
                field: field.into(),
                message,
            })
        };
        let t = &self.topics;
        let named = [("raw", &t.raw), ("raw_dlq", &t.raw_dlq), ("late", &t.late)];
        let others = [("features", &t.features), ("predictions", &t.predictions), ("dlq", &t.dlq)];
        for (i, (field, name)) in named.iter().enumerate() {
            let clash = named[..i].iter().chain(others.iter()).find(|(_, n)| n == name);
            if let Some((other, _)) = clash {
                bad(
                    &format!("topics.{field}"),
                    format!("{name:?} is also topics.{other}; every topic must be different"),
                );
            }
        }
        let f = &self.features;
        if f.window_s == 0 || f.window_s > 86_400 {
            bad(
                "features.window_s",
                format!("is {}; expected 1 to 86400 seconds (a feature window is at most 24 h)", f.window_s),
            );
        }
        if f.allowed_lateness_s > 7 * 86_400 {
            bad(
                "features.allowed_lateness_s",
                format!("is {}; expected 0 to 604800 seconds (7 days)", f.allowed_lateness_s),
            );
        }
        if f.idle_timeout_ms < 10 || f.idle_timeout_ms > 86_400_000 {
            bad(
                "features.idle_timeout_ms",
                format!("is {}; expected 10 to 86400000 ms", f.idle_timeout_ms),
            );
        }
        let stages = &self.pipeline.stages;
        if stages.is_empty() {
            bad(
                "pipeline.stages",
                "is empty; expected [\"inference\"], [\"features\"], [\"features\", \"inference\"] (and/or \"monitoring\")".into(),
            );
        }
        for (i, s) in stages.iter().enumerate() {
            if stages[..i].contains(s) {
                bad("pipeline.stages", format!("lists \"{}\" twice; list each stage once", s.as_str()));
            }
        }
    }

    /// Validates and resolves.
    pub fn resolve(self, origin: &str) -> Result<Settings, ConfigError> {
        let problems = self.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                problems,
            });
        }
        Ok(Settings {
            processes: self.cluster.processes,
            workers: self.cluster.workers,
            kafka: self.kafka,
            topics: self.topics,
            source: self.source,
            dataflow: self.dataflow,
            models: self.models,
            checkpoint: self.checkpoint,
            on_failure: self.cluster.on_failure,
            max_restarts: self.cluster.max_restarts,
            features: self.features,
            pipeline: self.pipeline,
            http: self.http,
            monitoring: self.monitoring,
        })
    }
}

/// librdkafka options weatherflow sets itself and does not let a config override.
const MANAGED_OPTIONS: [&str; 4] = ["enable.auto.commit", "bootstrap.servers", "group.id", "enable.auto.offset.store"];

fn managed_reason(key: &str) -> &'static str {
    match key {
        "bootstrap.servers" => "use kafka.brokers",
        "group.id" => "use kafka.group_id",
        _ => "offsets are committed only after outputs are acknowledged",
    }
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Settings {
    /// Loads, applies overrides, validates; the one call the CLI needs.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let (mut raw, origin) = match path {
            Some(p) => (RawConfig::load(p)?, p.display().to_string()),
            None => (RawConfig::default(), "defaults".to_string()),
        };
        raw.apply(overrides);
        raw.resolve(&origin)
    }

    /// Checkpoint interval in epochs (at least 1).
    pub fn checkpoint_every_epochs(&self) -> u64 {
        (self.checkpoint.interval_ms / self.dataflow.epoch_ms.max(1)).max(1)
    }

    /// How many epochs reading may lead the last durable checkpoint.
    pub fn checkpoint_lead_epochs(&self) -> u64 {
        (self.checkpoint.max_lead_ms / self.dataflow.epoch_ms.max(1)).max(1)
    }

    /// Total workers across the cluster.
    pub fn peers(&self) -> usize {
        self.processes.len() * self.workers
    }

    /// The `timely::Config` for process `process`.
    pub fn timely_config(&self, process: usize) -> timely::Config {
        let communication = if self.processes.len() == 1 {
            timely::CommunicationConfig::Process(self.workers)
        } else {
            timely::CommunicationConfig::Cluster {
                threads: self.workers,
                process,
                addresses: self.processes.clone(),
                report: false,
                zerocopy: false,
            }
        };
        timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        }
    }

    /// librdkafka options for a consumer: common options, then consumer ones.
    pub fn consumer_options(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            // Tansu and other brokers hold a fetch up to this long even when data waits; the
            // librdkafka default (500 ms) caps throughput and adds latency.
            ("fetch.wait.max.ms".to_string(), "10".to_string()),
        ]);
        m.extend(self.kafka.options.clone());
        m.extend(self.kafka.consumer.clone());
        m
    }

    /// librdkafka options for a producer: common options, then producer ones.
    pub fn producer_options(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("enable.idempotence".to_string(), "true".to_string()),
            ("linger.ms".to_string(), "5".to_string()),
            ("compression.type".to_string(), "none".to_string()),
        ]);
        m.extend(self.kafka.options.clone());
        m.extend(self.kafka.producer.clone());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(RawConfig::default().validate().is_empty());
    }

    #[test]
    fn shipped_cluster_toml_is_valid() {
        let raw = RawConfig::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.toml"))).unwrap();
        assert_eq!(raw.validate(), vec![]);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = RawConfig::parse("[cluster]\nworkrs = 2\n").unwrap_err();
        assert!(e.contains("workrs"), "{e}");
        assert!(e.contains("workers"), "the message lists the expected fields: {e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = RawConfig::parse("[cluster]\nworkers = \"two\"\n").unwrap_err();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let raw = RawConfig::parse(
            "[cluster]\nprocesses = [\"a:1\", \"nope\"]\nworkers = 0\n[kafka]\nbrokers = \"\"\n[kafka.options]\n\"enable.auto.commit\" = \"true\"\n[topics]\nfeatures = \"bad topic\"\npartitions = 0\n[models]\ninterval = 1.5\n",
        )
        .unwrap();
        let fields: Vec<String> = raw.validate().into_iter().map(|p| p.field).collect();
        for f in [
            "cluster.processes[1]",
            "cluster.workers",
            "kafka.brokers",
            "kafka.options.\"enable.auto.commit\"",
            "topics.features",
            "topics.partitions",
            "models.interval",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        let msg = raw.resolve("test").unwrap_err().to_string();
        assert!(msg.contains("7 problem(s)") || msg.contains("problem(s)"), "{msg}");
    }

    #[test]
    fn overrides_make_local_cluster() {
        let mut raw = RawConfig::default();
        raw.apply(&Overrides {
            processes: Some(3),
            workers: Some(2),
            brokers: Some("h:1".into()),
            stop_at_end: true,
        });
        let s = raw.resolve("t").unwrap();
        assert_eq!(s.processes, vec!["127.0.0.1:2101", "127.0.0.1:2102", "127.0.0.1:2103"]);
        assert_eq!(s.peers(), 6);
        assert_eq!(s.kafka.brokers, "h:1");
        assert!(s.source.stop_at_end);
        assert!(matches!(
            s.timely_config(1).communication,
            timely::CommunicationConfig::Cluster {
                process: 1,
                threads: 2,
                ..
            }
        ));
    }
}
