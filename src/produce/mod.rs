//! `weatherflow produce`: station observations to `weather-raw` (or a JSON-lines file), from the
//! three real data formats or from the seeded synthetic generator, at a chosen pace.
//!
//! ```text
//!   --format nyc|payerne|tmy3 --file F ──loaders (SI units)──> sorted by time ─┐
//!   --format synthetic --stations N --seed S ... ──generator (release order)───┤
//!                                                                              v
//!                      pace: fast | realtime | Nx (by event time) ──> Kafka topic (key = station_id,
//!                      progress bar on stderr (terminals only)         partition = fnv1a(station) mod n)
//!                                                                      or --output FILE (JSON lines)
//! ```
//!
//! Every message is one observation in the contract of `crate::observations::message` (SI units,
//! RFC 3339 time). Real files are replayed in time order (a stable sort: rows of equal time keep
//! their file order), as a live feed would deliver them; this also puts the months of a TMY3 file,
//! which come from different years, in calendar order (each row keeps its own year).

pub mod climate;
pub mod command;
pub mod rng;
pub mod synthetic;
pub mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::kafka::KafkaIoError;
use crate::observations::message::encode_observation;
use crate::observations::{load_file, LoadError, SourceFormat};
use synthetic::{FaultCounts, Generator, SyntheticConfig};
use writer::{FileWriter, KafkaWriter};

/// Errors of `produce`.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// An input file could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Kafka setup or production failed.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// The output file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record could not be delivered.
    #[error("delivery to {topic} failed after {attempts} attempt(s): {error}")]
    Undelivered {
        /// Topic.
        topic: String,
        /// Attempts made.
        attempts: usize,
        /// Last error.
        error: String,
    },
    /// The options do not make sense together.
    #[error("{0}")]
    Options(String),
}

/// How fast to publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as possible.
    Fast,
    /// Event time runs this many times faster than the wall clock (1 = real time).
    Scaled(f64),
}

impl FromStr for Pace {
    type Err = String;

    /// `fast`, `realtime`, or `<N>x` (e.g. `60x`, `0.5x`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "fast" | "max" => Ok(Pace::Fast),
            "realtime" | "real-time" | "1x" => Ok(Pace::Scaled(1.0)),
            _ => match t.strip_suffix('x').and_then(|n| n.parse::<f64>().ok()) {
                Some(n) if n.is_finite() && n > 0.0 => Ok(Pace::Scaled(n)),
                _ => Err(format!("pace {s:?}: expected fast, realtime or a speed-up like 60x")),
            },
        }
    }
}

/// Where the observations come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A real data file.
    File {
        /// Its format.
        format: SourceFormat,
        /// Its path.
        path: PathBuf,
    },
    /// The synthetic generator.
    Synthetic(SyntheticConfig),
}

/// Where they go.
#[derive(Clone, Debug)]
pub enum Output {
    /// A Kafka topic (which must exist).
    Kafka {
        /// Bootstrap brokers.
        brokers: String,
        /// Producer options.
        options: std::collections::BTreeMap<String, String>,
        /// Topic.
        topic: String,
    },
    /// A JSON-lines file.
    File(PathBuf),
}

/// Everything `produce` needs.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// Input.
    pub source: Source,
    /// Pace.
    pub pace: Pace,
    /// Stop after this many records.
    pub limit: Option<u64>,
    /// Output.
    pub output: Output,
    /// Show a progress bar (on terminals only).
    pub progress: bool,
}

/// What `produce` did.
#[derive(Clone, Debug, Default)]
pub struct ProduceSummary {
    /// Records written.
    pub records: u64,
    /// Distinct stations.
    pub stations: usize,
    /// Earliest and latest observation time.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// Synthetic faults injected into the records written.
    pub faults: Option<FaultCounts>,
    /// Deliveries sent again after a failure.
    pub retries: u64,
    /// Stopped early by Ctrl-C / SIGTERM.
    pub interrupted: bool,
}

/// One message to write, with its position in event time for pacing.
struct Outgoing {
    station: String,
    payload: Vec<u8>,
    time: DateTime<Utc>,
    release: DateTime<Utc>,
}

/// Loads a real file and orders it for replay: by time, ties in file order.
pub fn replay_order(format: SourceFormat, path: &std::path::Path) -> Result<Vec<crate::observations::Observation>, LoadError> {
    let mut obs = load_file(format, path)?;
    obs.sort_by_key(|o| o.time);
    Ok(obs)
}

/// The records to write, in order.
enum Items {
    File(std::vec::IntoIter<crate::observations::Observation>),
    /// The generator, and the faults of the records taken from it so far.
    Synthetic(Box<Generator>, FaultCounts),
}

impl Items {
    fn next(&mut self) -> Option<Outgoing> {
        match self {
            Items::File(it) => it.next().map(|ob| Outgoing {
                payload: encode_observation(&ob),
                time: ob.time,
                release: ob.time,
                station: ob.station_id,
            }),
            Items::Synthetic(g, taken) => g.next().map(|r| {
                taken.records += 1;
                for f in &r.faults {
                    *taken.slot(f) += 1;
                }
                Outgoing {
                    station: r.station_id,
                    payload: r.payload,
                    time: r.time,
                    release: r.release,
                }
            }),
        }
    }

    fn faults(&self) -> Option<FaultCounts> {
        match self {
            Items::File(_) => None,
            Items::Synthetic(g, taken) => {
                // Per-station and per-episode figures come from the generator (as generated).
                let all = g.counts();
                Some(FaultCounts {
                    stuck_episodes: all.stuck_episodes,
                    drifting_stations: all.drifting_stations,
                    missing_values: all.missing_values,
                    ..*taken
                })
            }
        }
    }
}

/// Publishes (or writes) the observations; stops early, cleanly, when `stop` is set.
pub fn produce(o: &ProduceOptions, stop: &AtomicBool) -> Result<ProduceSummary, ProduceError> {
    let (items, total) = match &o.source {
        Source::File { format, path } => {
            let obs = replay_order(*format, path)?;
            let n = obs.len() as u64;
            (Items::File(obs.into_iter()), n)
        }
        Source::Synthetic(cfg) => {
            if cfg.stations == 0 || cfg.duration <= chrono::Duration::zero() {
                return Err(ProduceError::Options(
                    "synthetic data needs at least one station and a positive duration".into(),
                ));
            }
            let g = Generator::new(cfg.clone());
            let n = g.total();
            (Items::Synthetic(Box::new(g), FaultCounts::default()), n)
        }
    };
    let total = o.limit.map_or(total, |l| l.min(total));
    run(o, items, total, stop)
}

enum Sink {
    Kafka(KafkaWriter),
    File(FileWriter),
}

fn run(o: &ProduceOptions, mut items: Items, total: u64, stop: &AtomicBool) -> Result<ProduceSummary, ProduceError> {
    let mut sink = match &o.output {
        Output::Kafka { brokers, options, topic } => Sink::Kafka(KafkaWriter::new(brokers, options, topic)?),
        Output::File(path) => Sink::File(FileWriter::create(path)?),
    };
    let bar = progress_bar(o.progress, total);
    let started = Instant::now();
    let mut first_release: Option<DateTime<Utc>> = None;
    let mut summary = ProduceSummary::default();
    let mut stations = std::collections::HashSet::new();
    let mut span: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    while o.limit.is_none_or(|l| summary.records < l) {
        let Some(item) = items.next() else { break };
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break;
        }
        if let Pace::Scaled(speed) = o.pace {
            let r0 = *first_release.get_or_insert(item.release);
            let ahead = (item.release - r0).num_milliseconds().max(0) as f64 / speed;
            let due = started + Duration::from_secs_f64(ahead / 1000.0);
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Sink::Kafka(k) = &mut sink {
                    k.poll()?;
                }
                std::thread::sleep(wait.min(Duration::from_millis(100)));
            }
        }
        match &mut sink {
            Sink::Kafka(k) => k.send(&item.station, &item.payload)?,
            Sink::File(f) => f.send(&item.payload)?,
        }
        summary.records += 1;
        if !stations.contains(&item.station) {
            stations.insert(item.station.clone());
        }
        span = Some(match span {
            None => (item.time, item.time),
            Some((a, b)) => (a.min(item.time), b.max(item.time)),
        });
        if summary.records % 1024 == 0 {
            bar.set_position(summary.records);
            bar.set_message(item.release.format("%Y-%m-%d %H:%M").to_string());
        }
    }
    match &mut sink {
        Sink::Kafka(k) => summary.retries = k.finish(Duration::from_secs(120))?,
        Sink::File(f) => f.finish()?,
    }
    bar.finish_and_clear();
    summary.stations = stations.len();
    summary.span = span;
    summary.elapsed = started.elapsed();
    summary.faults = items.faults();
    Ok(summary)
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} records, {eta} left, event time {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_parses() {
        assert_eq!("fast".parse::<Pace>(), Ok(Pace::Fast));
        assert_eq!("realtime".parse::<Pace>(), Ok(Pace::Scaled(1.0)));
        assert_eq!("60x".parse::<Pace>(), Ok(Pace::Scaled(60.0)));
        assert_eq!("0.5X".parse::<Pace>(), Ok(Pace::Scaled(0.5)));
        for bad in ["", "x", "0x", "-2x", "fastest", "nanx"] {
            assert!(bad.parse::<Pace>().is_err(), "{bad}");
        }
    }
}
