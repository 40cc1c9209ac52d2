//! The `produce` subcommand's arguments and its run: turns the command line and the config into
//! [`ProduceOptions`](super::ProduceOptions), creates the topic if the config says so, runs
//! [`produce`](super::produce) and prints a summary.
//!
//! ```text
//!   ProduceArgs + Settings ──options()──> ProduceOptions ──produce()──> summary on stdout
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, Utc};
use clap::Args;

use super::synthetic::{FaultRates, SyntheticConfig};
use super::{produce, Output, Pace, ProduceOptions, Source};
use crate::cli::ConfigArgs;
use crate::config::Settings;
use crate::kafka;
use crate::observations::SourceFormat;

/// What to publish: a real data format, or the synthetic generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A real data file of this format.
    Real(SourceFormat),
    /// The seeded generator.
    Synthetic,
}

impl FromStr for Input {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("synthetic") {
            return Ok(Input::Synthetic);
        }
        SourceFormat::from_str(s)
            .map(Input::Real)
            .map_err(|_| format!("unknown format {s:?} (expected nyc, payerne, tmy3 or synthetic)"))
    }
}

/// `produce`
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Input: nyc, payerne, tmy3 (a real data file, converted to SI units) or synthetic.
    #[arg(long)]
    pub format: Input,
    /// Real data file (default: the shared file of the format under data/raw/).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Topic (default: topics.raw of the config).
    #[arg(long)]
    pub topic: Option<String>,
    /// Write JSON lines to this file instead of Kafka.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Pace by event time: fast, realtime, or a speed-up such as 60x.
    #[arg(long, default_value = "fast")]
    pub pace: Pace,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Synthetic: seed (same seed and options, same records).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Synthetic: number of stations.
    #[arg(long, default_value_t = 100)]
    pub stations: usize,
    /// Synthetic: first time, RFC 3339, or "now" (with --pace realtime: a live feed).
    #[arg(long, default_value = "2024-01-01T00:00:00Z")]
    pub start: String,
    /// Synthetic: hours of data.
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Synthetic: reporting interval of every station, minutes.
    #[arg(long, default_value_t = 10)]
    pub interval_minutes: u32,
    /// Synthetic: probability that a measured value is missing.
    #[arg(long, default_value_t = 0.002)]
    pub missing: f64,
    /// Synthetic: start from typical fault rates (the rates below override them).
    #[arg(long)]
    pub typical_faults: bool,
    /// Synthetic: probability of a temperature spike (8-20 degC) per reading.
    #[arg(long)]
    pub spike_rate: Option<f64>,
    /// Synthetic: probability that a stuck-sensor episode (6-36 readings) starts, per reading.
    #[arg(long)]
    pub stuck_rate: Option<f64>,
    /// Synthetic: fraction of stations whose temperature sensor drifts.
    #[arg(long)]
    pub drift_fraction: Option<f64>,
    /// Synthetic: probability of a value in the wrong unit (degF, K, Pa, km/h, knots) per reading.
    #[arg(long)]
    pub unit_error_rate: Option<f64>,
    /// Synthetic: probability that a record is delivered out of order (within --out-of-order-max-s).
    #[arg(long)]
    pub out_of_order_rate: Option<f64>,
    /// Synthetic: probability that a record is delivered late (--late-delay-minutes after its time).
    #[arg(long)]
    pub late_rate: Option<f64>,
    /// Synthetic: probability of a malformed message.
    #[arg(long)]
    pub invalid_rate: Option<f64>,
    /// Synthetic: longest out-of-order delay, seconds (keep it below features.allowed_lateness_s).
    #[arg(long, default_value_t = 300)]
    pub out_of_order_max_s: u64,
    /// Synthetic: delay of late records, minutes (keep it above window + interval + lateness).
    #[arg(long, default_value_t = 180)]
    pub late_delay_minutes: u64,
    /// Synthetic: label faulty records with "injected_faults" (ground truth for evaluations).
    #[arg(long)]
    pub label_faults: bool,
}

/// The shared data file of a format, as given or relative to the crate.
fn default_file(format: SourceFormat) -> PathBuf {
    let name = match format {
        SourceFormat::NycAsos => "nyc_asos_2013_hourly.csv",
        SourceFormat::PayerneBsrn => "payerne_2016-06_1min.csv",
        SourceFormat::Tmy3 => "greensboro_tmy3_hourly.csv",
    };
    let rel = Path::new("data/raw").join(name);
    if rel.exists() {
        rel
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

impl ProduceArgs {
    /// The synthetic configuration the arguments describe.
    pub fn synthetic_config(&self) -> anyhow::Result<SyntheticConfig> {
        let start: DateTime<Utc> = if self.start.trim().eq_ignore_ascii_case("now") {
            let now = Utc::now();
            DateTime::from_timestamp(now.timestamp() - now.timestamp() % 60, 0).unwrap_or(now)
        } else {
            DateTime::parse_from_rfc3339(self.start.trim())
                .with_context(|| format!("--start {:?} is not RFC 3339 (or \"now\")", self.start))?
                .with_timezone(&Utc)
        };
        if !(self.hours > 0.0 && self.hours <= 24.0 * 366.0 * 10.0) {
            bail!("--hours is {}; expected more than 0 and at most ten years", self.hours);
        }
        if self.interval_minutes == 0 || self.interval_minutes > 1440 {
            bail!("--interval-minutes is {}; expected 1 to 1440", self.interval_minutes);
        }
        if self.hours * 60.0 < f64::from(self.interval_minutes) {
            bail!(
                "--hours {} is shorter than one reporting interval (--interval-minutes {})",
                self.hours,
                self.interval_minutes
            );
        }
        if self.stations == 0 || self.stations > 1_000_000 {
            bail!("--stations is {}; expected 1 to 1000000", self.stations);
        }
        let base = if self.typical_faults {
            FaultRates::typical()
        } else {
            FaultRates::default()
        };
        let pick = |name: &str, v: Option<f64>, default: f64| -> anyhow::Result<f64> {
            let x = v.unwrap_or(default);
            if !(0.0..=1.0).contains(&x) {
                bail!("--{name} is {x}; expected a probability from 0 to 1");
            }
            Ok(x)
        };
        let faults = FaultRates {
            spike: pick("spike-rate", self.spike_rate, base.spike)?,
            stuck: pick("stuck-rate", self.stuck_rate, base.stuck)?,
            drift: pick("drift-fraction", self.drift_fraction, base.drift)?,
            unit_error: pick("unit-error-rate", self.unit_error_rate, base.unit_error)?,
            out_of_order: pick("out-of-order-rate", self.out_of_order_rate, base.out_of_order)?,
            late: pick("late-rate", self.late_rate, base.late)?,
            invalid: pick("invalid-rate", self.invalid_rate, base.invalid)?,
            out_of_order_max: Duration::seconds(self.out_of_order_max_s.max(1) as i64),
            late_delay: Duration::minutes(self.late_delay_minutes.max(1) as i64),
        };
        Ok(SyntheticConfig {
            seed: self.seed,
            stations: self.stations,
            start,
            duration: Duration::seconds((self.hours * 3600.0).round() as i64),
            interval: Duration::minutes(i64::from(self.interval_minutes)),
            missing: pick("missing", Some(self.missing), 0.0)?,
            faults,
            label_faults: self.label_faults,
        })
    }
}

/// Runs `produce` with the loaded settings; `shutdown` stops it early (what was sent is flushed).
pub fn run(a: &ProduceArgs, s: &Settings, shutdown: Arc<AtomicBool>) -> anyhow::Result<()> {
    let source = match a.format {
        Input::Real(format) => {
            let path = a.file.clone().unwrap_or_else(|| default_file(format));
            Source::File { format, path }
        }
        Input::Synthetic => {
            if a.file.is_some() {
                bail!("--file is for real data formats; synthetic data is generated");
            }
            Source::Synthetic(a.synthetic_config()?)
        }
    };
    let output = match &a.output {
        Some(path) => Output::File(path.clone()),
        None => {
            let topic = a.topic.clone().unwrap_or_else(|| s.topics.raw.clone());
            if s.topics.create {
                kafka::ensure_topics(
                    &s.kafka.brokers,
                    &s.kafka.options,
                    &[&topic],
                    s.topics.partitions,
                    s.topics.replication,
                )?;
            }
            Output::Kafka {
                brokers: s.kafka.brokers.clone(),
                options: s.producer_options(),
                topic,
            }
        }
    };
    let dest = match &output {
        Output::File(p) => format!("file {}", p.display()),
        Output::Kafka { brokers, topic, .. } => format!("topic {topic} at {brokers}"),
    };
    let o = ProduceOptions {
        source,
        pace: a.pace,
        limit: a.limit,
        output,
        progress: !a.quiet,
    };
    let sum = produce(&o, &shutdown)?;
    let secs = sum.elapsed.as_secs_f64().max(1e-9);
    let span = sum
        .span
        .map(|(a, b)| format!(", {} .. {}", a.to_rfc3339(), b.to_rfc3339()))
        .unwrap_or_default();
    println!(
        "produced {} observations of {} station(s){span} to {dest} in {secs:.1} s ({:.0} records/s){}",
        sum.records,
        sum.stations,
        sum.records as f64 / secs,
        if sum.interrupted { " (interrupted)" } else { "" }
    );
    if let Some(f) = sum.faults {
        println!("injected faults: {f}");
    }
    if sum.retries > 0 {
        println!("deliveries sent again after a failure: {}", sum.retries);
    }
    Ok(())
}
