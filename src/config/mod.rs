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
use std::path::{Path, PathBuf};

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

mod sections;
mod validate;

pub use sections::*;

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
    /// Fallback forecaster tuning.
    pub fallback: crate::forecast::FallbackParams,
    /// Anomaly rule thresholds.
    pub anomaly: crate::anomaly::AnomalyParams,
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
            // librdkafka default (500 ms) caps throughput and adds latency. 5 rather than 10:
            // 14-19 ms off the p99 at half the maximum in interleaved runs, no throughput lost
            // (BENCHMARKS.md).
            ("fetch.wait.max.ms".to_string(), "5".to_string()),
        ]);
        m.extend(self.kafka.options.clone());
        m.extend(self.kafka.consumer.clone());
        m
    }

    /// librdkafka options for a producer: common options, then producer ones.
    ///
    /// Batches are compressed with lz4 by default: predictions are 2.7 KB of JSON that compress
    /// several times over, and compressing them costs less CPU than sending (and the broker
    /// storing) all the bytes (BENCHMARKS.md: 26-36 % more throughput, a third of the broker's
    /// CPU, and no runaway latency tail at half the maximum on the test broker).
    pub fn producer_options(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("enable.idempotence".to_string(), "true".to_string()),
            ("linger.ms".to_string(), "5".to_string()),
            ("compression.type".to_string(), "lz4".to_string()),
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
    fn fallback_and_anomaly_tuning_is_checked_and_resolved() {
        let raw = RawConfig::parse(
            "[fallback]\nphi = 1.5\nlevel_alpha = 0.0\noutlier_sigma = nan\n[anomaly]\nspike_sigma = -1.0\nstd_alpha = 2.0\n",
        )
        .unwrap();
        let problems = raw.validate();
        for (field, says) in [
            ("fallback.phi", "[0, 1]"),
            ("fallback.level_alpha", "[0.000001, 1]"),
            ("fallback.outlier_sigma", "[1, 1000000]"),
            ("anomaly.spike_sigma", "positive"),
            ("anomaly.std_alpha", "at most 1"),
        ] {
            let p = problems
                .iter()
                .find(|p| p.field == field)
                .unwrap_or_else(|| panic!("{field} missing from {problems:?}"));
            assert!(p.message.contains(says), "{field}: {}", p.message);
        }
        assert_eq!(problems.len(), 5, "{problems:?}");
        let e = RawConfig::parse("[anomaly]\nspike_sigmaa = 5.0\n").unwrap_err();
        assert!(e.contains("spike_sigmaa") && e.contains("spike_sigma"), "{e}");
        let s = RawConfig::parse("[fallback]\nphi = 0.97\n[anomaly]\nprecip_extreme_mm_per_h = 30.0\n")
            .unwrap()
            .resolve("t")
            .unwrap();
        assert_eq!(s.fallback.phi, 0.97);
        assert_eq!(s.fallback.outlier_sigma, crate::forecast::FallbackParams::default().outlier_sigma);
        assert_eq!(s.anomaly.precip_extreme_mm_per_h, 30.0);
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
