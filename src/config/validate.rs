//! Checking a [`RawConfig`] as a whole and resolving it into [`Settings`]: every problem is
//! collected (field, what is wrong, the fix), never just the first.
//!
//! ```text
//!   text ──parse──> RawConfig ──apply(overrides)──> RawConfig ──validate()──> [Problem] ──resolve()──> Settings
//! ```

use std::net::SocketAddr;
use std::path::Path;

use super::*;

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
        self.validate_tuning(&mut out);
        crate::ops::settings::validate(self, &mut out);
        out
    }

    /// `[fallback]` and `[anomaly]`: every number finite and in the range the maths takes
    /// (the ranges are the parameter types' own, `FallbackParams::bounded`, `AnomalyParams::bounded`).
    fn validate_tuning(&self, out: &mut Vec<Problem>) {
        let (mut f, mut d) = (self.fallback.clone(), crate::forecast::FallbackParams::default());
        for ((name, v, lo, hi), (_, dv, _, _)) in f.bounded().into_iter().zip(d.bounded()) {
            if !(v.is_finite() && (lo..=hi).contains(&*v)) {
                out.push(Problem {
                    field: format!("fallback.{name}"),
                    message: format!("is {v}; expected a number in [{lo}, {hi}] (default {dv:?})"),
                });
            }
        }
        let (mut a, mut d) = (self.anomaly.clone(), crate::anomaly::AnomalyParams::default());
        for ((name, v, rate), (_, dv, _)) in a.bounded().into_iter().zip(d.bounded()) {
            if !(v.is_finite() && *v > 0.0 && (!rate || *v <= 1.0)) {
                let expected = if rate {
                    "a positive number, at most 1"
                } else {
                    "a positive number"
                };
                out.push(Problem {
                    field: format!("anomaly.{name}"),
                    message: format!("is {v}; expected {expected} (default {dv:?})"),
                });
            }
        }
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
            fallback: self.fallback,
            anomaly: self.anomaly,
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
