//! Cluster configurations for the broker parts of the benchmark: one TOML text per run, parsed
//! by the same code as `weatherflow run --config` (so in-process runs and launched processes see
//! identical settings), with run-unique topics, consumer group and checkpoint directory.
//!
//! ```text
//!   ClusterSpec ──toml()──> cluster.toml text ──RawConfig::parse + resolve──> Settings (in-process runner)
//!                                   └──written to <work_dir>/<name>.toml──> weatherflow run --config (launcher)
//! ```

use std::path::{Path, PathBuf};

use crate::config::{RawConfig, Settings};

/// A run-unique name: `bench-<what>-<pid>-<nanos>`.
pub fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!("bench-{what}-{}-{nanos}", std::process::id())
}

/// Everything that varies between the benchmark's cluster runs.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// `host:port` of every timely process (one entry: a single process, no network).
    pub processes: Vec<String>,
    /// Worker threads per process.
    pub workers: usize,
    /// Kafka bootstrap brokers.
    pub brokers: String,
    /// Input topic.
    pub features: String,
    /// Predictions topic.
    pub predictions: String,
    /// Dead-letter topic.
    pub dlq: String,
    /// Partitions of the topics the runner creates.
    pub partitions: i32,
    /// Epoch length, ms.
    pub epoch_ms: u64,
    /// Checkpoints on or off.
    pub checkpoint: bool,
    /// Checkpoint directory.
    pub checkpoint_dir: PathBuf,
    /// Checkpoint interval, ms.
    pub checkpoint_ms: u64,
    /// Model store directory.
    pub models_dir: PathBuf,
    /// Local launcher restarts the cluster when a process dies.
    pub restart: bool,
    /// Stop once the input is read to its end.
    pub stop_at_end: bool,
    /// `source.max_in_flight` (`None`: weatherflow's default).
    pub max_in_flight: Option<usize>,
    /// Consumer group.
    pub group: String,
    /// Extra librdkafka consumer options (`[kafka.consumer]`).
    pub consumer: Vec<(String, String)>,
    /// Extra librdkafka producer options (`[kafka.producer]`).
    pub producer: Vec<(String, String)>,
}

impl ClusterSpec {
    /// A single-process spec with fresh output topics, group and checkpoint dir under `work`.
    pub fn single(brokers: &str, features: &str, workers: usize, work: &Path, tag: &str) -> Self {
        let u = unique(tag);
        ClusterSpec {
            processes: vec!["127.0.0.1:2101".into()],
            workers,
            brokers: brokers.into(),
            features: features.into(),
            predictions: format!("{u}-predictions"),
            dlq: format!("{u}-dlq"),
            partitions: 4,
            epoch_ms: 100,
            checkpoint: true,
            checkpoint_dir: work.join(format!("{u}-ckpt")),
            checkpoint_ms: 1000,
            models_dir: work.join("no-models"),
            restart: false,
            stop_at_end: true,
            max_in_flight: None,
            group: format!("{u}-group"),
            consumer: Vec::new(),
            producer: Vec::new(),
        }
    }

    /// The configuration file text.
    pub fn toml(&self) -> String {
        let quote = |v: &str| format!("{v:?}");
        let processes: Vec<String> = self.processes.iter().map(|p| quote(p)).collect();
        let table = |name: &str, opts: &[(String, String)]| {
            let lines: String = opts.iter().map(|(k, v)| format!("{} = {}\n", quote(k), quote(v))).collect();
            format!("[kafka.{name}]\n{lines}")
        };
        let mut text = format!(
            "[cluster]\nprocesses = [{}]\nworkers = {}\non_failure = {}\nmax_restarts = 1000\n\
             [kafka]\nbrokers = {}\ngroup_id = {}\n\
             [topics]\nfeatures = {}\npredictions = {}\ndlq = {}\npartitions = {}\n\
             [source]\nstart = \"earliest\"\nstop_at_end = {}\n{}\
             [dataflow]\nepoch_ms = {}\nlog_every_s = 0\n\
             [models]\ndir = {}\n\
             [checkpoint]\nenabled = {}\ndir = {}\ninterval_ms = {}\n",
            processes.join(", "),
            self.workers,
            quote(if self.restart { "restart" } else { "stop" }),
            quote(&self.brokers),
            quote(&self.group),
            quote(&self.features),
            quote(&self.predictions),
            quote(&self.dlq),
            self.partitions,
            self.stop_at_end,
            self.max_in_flight.map(|n| format!("max_in_flight = {n}\n")).unwrap_or_default(),
            self.epoch_ms,
            quote(&self.models_dir.display().to_string()),
            self.checkpoint,
            quote(&self.checkpoint_dir.display().to_string()),
            self.checkpoint_ms,
        );
        text.push_str(&table("consumer", &self.consumer));
        text.push_str(&table("producer", &self.producer));
        text
    }

    /// Resolved settings, validated like a config file.
    pub fn settings(&self) -> Result<Settings, String> {
        let raw = RawConfig::parse(&self.toml())?;
        raw.resolve("bench").map_err(|e| e.to_string())
    }

    /// Writes the configuration to `<dir>/<name>.toml`.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, self.toml())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_a_valid_config() {
        let mut s = ClusterSpec::single("127.0.0.1:9092", "in", 2, Path::new("/tmp/w"), "t");
        s.checkpoint = false;
        s.epoch_ms = 10;
        let settings = s.settings().unwrap();
        assert_eq!(settings.workers, 2);
        assert_eq!(settings.dataflow.epoch_ms, 10);
        assert!(!settings.checkpoint.enabled);
        assert!(settings.source.stop_at_end);
        assert_eq!(settings.topics.features, "in");
        s.consumer.push(("fetch.wait.max.ms".into(), "2".into()));
        s.producer.push(("linger.ms".into(), "1".into()));
        let settings = s.settings().unwrap();
        assert_eq!(settings.consumer_options()["fetch.wait.max.ms"], "2");
        assert_eq!(settings.producer_options()["linger.ms"], "1");
    }
}
