//! Training jobs: `weatherflow train forecast` and `weatherflow train anomaly`.
//!
//! ```text
//!   DataSource ──loader──> Dataset ──simulate::replay (the served stack)──> rows / evidence
//!        │                                     │
//!        │             TrainConfig (factory) ──┴──> fit on the training period
//!        │                                          calibrate / set thresholds on the calibration period
//!        │                                          evaluate on the held-out test period (report, plots)
//!        └──────────────────────────────────────────> ModelStore::create_version (+ promote)
//! ```
//!
//! Every run writes a new immutable version `models/<kind>/<version>/` with the model, its
//! metadata, the evaluation report (`report.md`, `metrics.json`) and SVG plots, prints the report,
//! and promotes the version only when asked (`--promote`).

pub mod anomaly;
pub mod command;
pub mod eval;
pub mod factory;
pub mod faults;
pub mod forecast;
pub mod loader;
pub mod progress;
pub mod report;
pub mod simulate;

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::models::{ModelError, Period};
pub use factory::{FactoryError, TrainConfig};
pub use loader::{DataSource, Dataset, KafkaRange, LoadDataError};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Loading the data failed.
    #[error(transparent)]
    Load(#[from] LoadDataError),
    /// The configuration or a fit failed.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// The model store failed.
    #[error(transparent)]
    Store(#[from] ModelError),
    /// A period is empty or the periods overlap.
    #[error("periods: {0}")]
    Periods(String),
    /// Not enough data in a period.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// A time could not be parsed.
    #[error("{0:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")]
    BadTime(String),
}

/// Training, calibration and held-out test periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periods {
    /// Fit on origins (and targets) in this period.
    pub train: Period,
    /// Calibrate intervals / thresholds here.
    pub calibration: Period,
    /// Evaluate here.
    pub test: Period,
}

impl Periods {
    /// Checks each period is non-empty and they do not overlap.
    pub fn validate(&self) -> Result<(), TrainError> {
        for (name, p) in [("train", self.train), ("calibration", self.calibration), ("test", self.test)] {
            if p.from >= p.to {
                return Err(TrainError::Periods(format!("{name} period {p} is empty")));
            }
        }
        let overlap = |a: Period, b: Period| a.from < b.to && b.from < a.to;
        if overlap(self.train, self.calibration) || overlap(self.train, self.test) || overlap(self.calibration, self.test) {
            return Err(TrainError::Periods(format!(
                "train {}, calibration {} and test {} must not overlap",
                self.train, self.calibration, self.test
            )));
        }
        Ok(())
    }

    /// The NYC 2013 protocol: train Jan-Aug, calibrate Sep, test Oct-Dec 2013.
    pub fn nyc_2013() -> Periods {
        let d = |y, m| Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or_default();
        Periods {
            train: Period {
                from: d(2013, 1),
                to: d(2013, 9),
            },
            calibration: Period {
                from: d(2013, 9),
                to: d(2013, 10),
            },
            test: Period {
                from: d(2013, 10),
                to: d(2014, 1),
            },
        }
    }
}

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, TrainError> {
    let t = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|n| Utc.from_utc_datetime(&n))
            .ok_or_else(|| TrainError::BadTime(s.into()));
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| TrainError::BadTime(s.into()))
}

/// Parses a period `FROM..TO`.
pub fn parse_period(s: &str) -> Result<Period, TrainError> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| TrainError::Periods(format!("{s:?} is not FROM..TO, e.g. 2013-01-01..2013-09-01")))?;
    Ok(Period {
        from: parse_time(a)?,
        to: parse_time(b)?,
    })
}

/// Everything a training run needs.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Where the records come from.
    pub source: DataSource,
    /// Periods.
    pub periods: Periods,
    /// Model type and hyperparameters.
    pub config: TrainConfig,
    /// The model store.
    pub store: PathBuf,
    /// Version name (default: the next `v<N>`).
    pub version: Option<String>,
    /// Promote the new version.
    pub promote: bool,
    /// Evaluate only: write the report to `report_dir` (if set), store nothing.
    pub dry_run: bool,
    /// Where a dry run writes its report and plots.
    pub report_dir: Option<PathBuf>,
    /// Interval probability evaluated (the model serves any in 0.5..0.99).
    pub interval: f64,
    /// Anomaly training: the forecast version whose expectations the evidence uses (default:
    /// the promoted one; "fallback" for the statistical fallback).
    pub forecast_version: Option<String>,
    /// No progress output.
    pub quiet: bool,
}

/// What a training run produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Version created (`None` for a dry run).
    pub version: Option<String>,
    /// Its directory.
    pub dir: Option<PathBuf>,
    /// Whether it was promoted.
    pub promoted: bool,
    /// The evaluation report (Markdown).
    pub report: String,
    /// Summary metrics (also in the metadata).
    pub metrics: serde_json::Value,
}

/// Stores a trained version (metadata and files), promotes it if asked, and reports it.
pub(crate) fn store_version(
    store: &crate::models::ModelStore,
    meta: crate::models::ModelMeta,
    files: &[(&str, Vec<u8>)],
    promote: bool,
    report: String,
    metrics: serde_json::Value,
) -> Result<TrainOutcome, TrainError> {
    let (kind, version) = (meta.kind.clone(), meta.version.clone());
    let dir = store.create_version(meta, files)?;
    if promote {
        store.promote(&kind, &version)?;
    }
    Ok(TrainOutcome {
        version: Some(version),
        dir: Some(dir),
        promoted: promote,
        report,
        metrics,
    })
}

/// Writes the files of a dry run to `dir`.
pub(crate) fn write_report_dir(dir: &std::path::Path, files: &[(&str, Vec<u8>)]) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|error| ModelError::Io { path: dir.into(), error })?;
    for (name, content) in files {
        let p = dir.join(name);
        std::fs::write(&p, content).map_err(|error| ModelError::Io { path: p, error })?;
    }
    Ok(())
}
