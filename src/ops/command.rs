//! `weatherflow status`, and the operations part of `check-config` (HTTP endpoints, librdkafka
//! options with secrets redacted and checked by librdkafka itself).
//!
//! ```text
//!   status ──Settings──> status::gather (GET /api/status of every process) ──> table | --json
//!                                                                          └─> exit 1 when a process is down
//! ```

use std::time::Duration;

use clap::Args;

use super::{redact, status};
use crate::cli::ConfigArgs;
use crate::config::{Overrides, Settings};
use crate::kafka;

/// `status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each process to answer.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
}

/// Errors of the operations commands.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Some processes did not answer.
    #[error("{down} of {total} process(es) down")]
    Down {
        /// Processes that did not answer.
        down: usize,
        /// Processes in the config.
        total: usize,
    },
    /// The config could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// librdkafka refused the client options.
    #[error("librdkafka refuses the {client} options: {message}")]
    Client {
        /// `consumer` or `producer`.
        client: &'static str,
        /// librdkafka's reason.
        message: String,
    },
}

/// Prints the cluster's status; fails when a process is down.
pub fn run_status(a: &StatusArgs, mut out: impl std::io::Write) -> Result<(), CommandError> {
    let s = Settings::load(
        a.common.config.as_deref(),
        &Overrides {
            brokers: a.common.brokers.clone(),
            ..Overrides::default()
        },
    )?;
    let c = status::gather(&s, Duration::from_secs_f64(a.timeout.clamp(0.1, 60.0)));
    let text = if a.json {
        serde_json::to_string_pretty(&c).unwrap_or_default() + "\n"
    } else {
        status::format_human(&c)
    };
    let _ = out.write_all(text.as_bytes());
    let total = c.processes.len();
    if c.up < total {
        return Err(CommandError::Down { down: total - c.up, total });
    }
    Ok(())
}

/// Lines `check-config` adds: where each process serves HTTP, and the effective librdkafka
/// options (secrets redacted), after librdkafka itself accepted them for a consumer and a
/// producer (no connection is made).
pub fn check_config_lines(s: &Settings) -> Result<Vec<String>, CommandError> {
    let probe = |client: &'static str, options: &std::collections::BTreeMap<String, String>| -> Result<(), CommandError> {
        let r = match client {
            "consumer" => kafka::consumer(&s.kafka.brokers, &s.kafka.group_id, options).map(drop),
            _ => kafka::simple_producer(&s.kafka.brokers, options).map(drop),
        };
        r.map_err(|e| CommandError::Client {
            client,
            message: e.to_string(),
        })
    };
    probe("consumer", &s.consumer_options())?;
    probe("producer", &s.producer_options())?;
    let mut lines = Vec::new();
    if s.http.enabled {
        let eps: Vec<String> = (0..s.processes.len())
            .map(|i| match s.http.address(i) {
                Some(a) if a.port() == 0 => format!("{i}: {}:<ephemeral>", a.ip()),
                Some(a) => format!("{i}: http://{a}/"),
                None => format!("{i}: ?"),
            })
            .collect();
        lines.push(format!("http: {}", eps.join(", ")));
    } else {
        lines.push("http: disabled".into());
    }
    lines.push(format!(
        "librdkafka {} built with: {}",
        rdkafka::util::get_rdkafka_version().1,
        builtin_features()
    ));
    lines.push(format!(
        "kafka consumer options: {}",
        redact::describe_options(&s.consumer_options())
    ));
    lines.push(format!(
        "kafka producer options: {}",
        redact::describe_options(&s.producer_options())
    ));
    Ok(lines)
}

/// The features librdkafka was built with (`builtin.features`: ssl, sasl_plain, sasl_scram, ...).
pub fn builtin_features() -> String {
    rdkafka::config::ClientConfig::new()
        .create_native_config()
        .ok()
        .and_then(|c| c.get("builtin.features").ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    #[test]
    fn sasl_ssl_settings_pass_through_to_librdkafka() {
        let f = builtin_features();
        for needed in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"] {
            assert!(f.split(',').any(|x| x == needed), "librdkafka lacks {needed}: {f}");
        }
        let raw = RawConfig::parse(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"s3cret\"\n\"ssl.endpoint.identification.algorithm\" = \"https\"\n",
        )
        .unwrap();
        let s = raw.resolve("test").unwrap();
        let lines = check_config_lines(&s).expect("librdkafka accepts SASL_SSL with SCRAM");
        let text = lines.join("\n");
        assert!(
            text.contains("security.protocol=SASL_SSL") && text.contains("sasl.password=<redacted>"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!format!("{:?}", s.kafka).contains("s3cret"), "Debug of the kafka settings redacts");
        let bad = RawConfig::parse("[kafka.options]\n\"security.protocol\" = \"SASL_TLS\"\n")
            .unwrap()
            .resolve("t")
            .unwrap();
        let e = check_config_lines(&bad).unwrap_err().to_string();
        assert!(e.contains("security.protocol"), "{e}");
    }
}
