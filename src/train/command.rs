//! `weatherflow train forecast|anomaly`: command-line arguments (clap derive) and their
//! translation into [`TrainOptions`].
//!
//! ```text
//!   argv ──clap──> TrainCommand { Forecast | Anomaly }(TrainArgs) ──options()──> TrainOptions ──> train_forecast / train_anomaly
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::loader::{DataSource, KafkaRange};
use super::{parse_period, parse_time, Periods, TrainConfig, TrainError, TrainOptions, TrainOutcome};
use crate::observations::SourceFormat;

/// `weatherflow train ...`
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Train, calibrate and evaluate a temperature forecaster (one model per lead hour).
    Forecast(Box<TrainArgs>),
    /// Train and evaluate an anomaly model on normal data (with injected faults for the report).
    Anomaly(Box<TrainArgs>),
}

/// Arguments shared by both training jobs.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Feature records, one JSON object per line.
    #[arg(long, conflicts_with_all = ["raw", "topic"])]
    pub features: Option<PathBuf>,
    /// Raw observation file, aggregated into hour-ending windows (needs --format).
    #[arg(long, requires = "format", conflicts_with = "topic")]
    pub raw: Option<PathBuf>,
    /// Format of --raw: nyc, payerne or tmy3.
    #[arg(long)]
    pub format: Option<String>,
    /// Kafka topic of feature records to read a range of.
    #[arg(long)]
    pub topic: Option<String>,
    /// Kafka brokers for --topic.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// First offset to read, on every partition (--topic).
    #[arg(long, conflicts_with_all = ["from_time", "to_time"])]
    pub from_offset: Option<i64>,
    /// End offset (exclusive), on every partition (--topic).
    #[arg(long, conflicts_with_all = ["from_time", "to_time"])]
    pub to_offset: Option<i64>,
    /// First message timestamp to read, YYYY-MM-DD or RFC 3339 (--topic).
    #[arg(long)]
    pub from_time: Option<String>,
    /// End message timestamp (exclusive), YYYY-MM-DD or RFC 3339 (--topic).
    #[arg(long)]
    pub to_time: Option<String>,
    /// Training period FROM..TO (dates or RFC 3339 times; TO exclusive).
    #[arg(long, default_value = "2013-01-01..2013-09-01")]
    pub train: String,
    /// Calibration period FROM..TO.
    #[arg(long, default_value = "2013-09-01..2013-10-01")]
    pub calibrate: String,
    /// Held-out test period FROM..TO.
    #[arg(long, default_value = "2013-10-01..2014-01-01")]
    pub test: String,
    /// Training config (TOML with [forecast] and [anomaly] tables; see MODELS.md).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Model type (overrides the config), e.g. ridge-per-lead, elastic-net-per-lead, robust-iforest.
    #[arg(long)]
    pub model: Option<String>,
    /// Hyperparameter KEY=VALUE (overrides the config; repeatable), e.g. --param alpha=2.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Model store directory.
    #[arg(long, default_value = "models")]
    pub store: PathBuf,
    /// Version name (default: the next v<N>).
    #[arg(long)]
    pub version: Option<String>,
    /// Promote the new version (the running dataflow switches to it).
    #[arg(long)]
    pub promote: bool,
    /// Evaluate only; store nothing (write the report to --report-dir if given).
    #[arg(long)]
    pub dry_run: bool,
    /// Where --dry-run writes the report and plots.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Interval probability to evaluate.
    #[arg(long, default_value_t = 0.9)]
    pub interval: f64,
    /// Anomaly: the forecast version whose expectations feed the evidence (default: the promoted
    /// one; "fallback" for the statistical fallback).
    #[arg(long)]
    pub forecast_version: Option<String>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The options of a run of `kind` ("forecast" or "anomaly").
    pub fn options(&self, kind: &str) -> Result<TrainOptions, TrainError> {
        let source = match (&self.features, &self.raw, &self.topic) {
            (Some(f), None, None) => DataSource::Features(f.clone()),
            (None, Some(r), None) => {
                let fmt = self.format.as_deref().unwrap_or_default();
                let format: SourceFormat = fmt
                    .parse()
                    .map_err(|e: crate::observations::UnknownFormat| TrainError::Periods(e.to_string()))?;
                DataSource::Raw { format, path: r.clone() }
            }
            (None, None, Some(t)) => {
                let range = if self.from_time.is_some() || self.to_time.is_some() {
                    KafkaRange::Time {
                        from: self.from_time.as_deref().map(parse_time).transpose()?,
                        to: self.to_time.as_deref().map(parse_time).transpose()?,
                    }
                } else {
                    KafkaRange::Offsets {
                        from: self.from_offset,
                        to: self.to_offset,
                    }
                };
                DataSource::Kafka {
                    brokers: self.brokers.clone(),
                    options: Default::default(),
                    topic: t.clone(),
                    range,
                    patience: Duration::from_secs(120),
                }
            }
            _ => {
                return Err(TrainError::Periods(
                    "give exactly one data source: --features FILE, --raw FILE --format F, or --topic T".into(),
                ))
            }
        };
        let periods = Periods {
            train: parse_period(&self.train)?,
            calibration: parse_period(&self.calibrate)?,
            test: parse_period(&self.test)?,
        };
        periods.validate()?;
        if !(self.interval > 0.5 && self.interval < 0.99) {
            return Err(TrainError::Periods(format!(
                "--interval {} must be between 0.5 and 0.99",
                self.interval
            )));
        }
        let config = TrainConfig::load(self.config.as_deref(), kind, self.model.as_deref(), &self.params)?;
        Ok(TrainOptions {
            source,
            periods,
            config,
            store: self.store.clone(),
            version: self.version.clone(),
            promote: self.promote,
            dry_run: self.dry_run,
            report_dir: self.report_dir.clone(),
            interval: self.interval,
            forecast_version: self.forecast_version.clone(),
            quiet: self.quiet,
        })
    }
}

/// Runs a `train` subcommand; prints the report and where the version went.
pub fn run(cmd: &TrainCommand) -> Result<TrainOutcome, TrainError> {
    let outcome = match cmd {
        TrainCommand::Forecast(a) => super::forecast::train_forecast(&a.options("forecast")?)?,
        TrainCommand::Anomaly(a) => super::anomaly::train_anomaly(&a.options("anomaly")?)?,
    };
    println!("{}", outcome.report);
    match (&outcome.version, &outcome.dir) {
        (Some(v), Some(d)) => println!(
            "stored {v} in {}{}",
            d.display(),
            if outcome.promoted {
                " and promoted it (latest)"
            } else {
                " (not promoted: weatherflow models promote KIND VERSION)"
            }
        ),
        (None, Some(d)) => println!("dry run: report written to {}", d.display()),
        _ => println!("dry run: nothing stored"),
    }
    Ok(outcome)
}
