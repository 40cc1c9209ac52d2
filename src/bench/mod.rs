//! `weatherflow bench`: the benchmark suite (issue 7) and the cost of recovery (issue 5),
//! measured as ratios against baselines taken in the same run, because the machine is shared.
//!
//! ```text
//!   memory    100,000 stations' states: RSS delta, checkpoint bytes, inline size      (memory.rs)
//!   engine    memory -> real operators -> counting sink, 1 and 2 workers   } interleaved,
//!             serde limit: parse inputs + serialise outputs, one thread    } medians   (engine.rs)
//!   sweep     engine-only throughput by number of stations and workers                (engine.rs)
//!   profile   parse / forecast / anomaly / encode / exchange serialisation per record (profile.rs)
//!   e2e       real broker: passthrough vs weatherflow with and without checkpoints,
//!             consume-only, produce-only                                              (broker.rs)
//!   latency   p50/p99/max at half the measured maximum, checkpoints on and off         (latency.rs)
//!   recovery  kill -9 under the launcher's restart policy: time to outputs again      (recovery.rs)
//! ```
//!
//! Every measurement is repeated `--repeats` times, interleaved with the baseline it is compared
//! with, and reported as the median; the report (`report.rs`) lists every run and the targets.

pub mod broker;
pub mod cluster;
pub mod data;
pub mod engine;
pub mod latency;
pub mod memory;
pub mod model;
pub mod profile;
pub mod recovery;
pub mod report;
pub mod stats;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use crate::models::serving::{ModelSource, Serving};
use crate::operators::forecast::ForecastParams;
use crate::operators::keyed::RELEASE_CHUNK;
use cluster::{unique, ClusterSpec};
use data::{BaseSeries, Dataset};
use report::{E2eSection, EngineSection, ProfileSection, Report, SweepPoint};
use stats::median;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The input could not be loaded.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// A part failed.
    #[error("bench {part}: {message}")]
    Part { part: &'static str, message: String },
    /// The work directory could not be created.
    #[error("bench work dir {0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
}

fn part_err(part: &'static str) -> impl Fn(String) -> BenchError {
    move |message| BenchError::Part { part, message }
}

/// Parts of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Memory per station.
    Memory,
    /// Engine-only throughput and the serde limit.
    Engine,
    /// Engine-only throughput by number of stations.
    Sweep,
    /// Time per stage.
    Profile,
    /// End-to-end through the broker vs passthrough, checkpoints on and off.
    E2e,
    /// Latency percentiles at half the maximum throughput.
    Latency,
    /// Recovery time after kill -9.
    Recovery,
}

/// `weatherflow bench` options.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Parts to run, comma-separated (default: all, in this order).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,engine,sweep,profile,e2e,latency,recovery"
    )]
    pub parts: Vec<Part>,
    /// Feature file the input is generated from (stations renamed to scale).
    #[arg(long, default_value = "data/features/nyc_2013.jsonl")]
    pub file: PathBuf,
    /// Records per engine-only run.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,
    /// Stations the input is spread over (engine, profile, e2e, latency).
    #[arg(long, default_value_t = 1000)]
    pub stations: usize,
    /// Worker counts of the engine-only runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Station counts of the sweep (each run has at least 5 records per station).
    #[arg(long, value_delimiter = ',', default_value = "3,1000,100000")]
    pub sweep_stations: Vec<usize>,
    /// Repetitions of every measurement (interleaved with its baseline; medians reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Records per epoch fed to the engine-only dataflow.
    #[arg(long, default_value_t = 4096)]
    pub epoch_records: usize,
    /// Model store with promoted trained models: engine-only runs are repeated serving them.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Kafka bootstrap brokers (e2e, latency, recovery).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Records per end-to-end run.
    #[arg(long, default_value_t = 100_000)]
    pub e2e_records: usize,
    /// Jobs of the e2e part, comma-separated (`weatherflow+models`: checkpoints on, serving
    /// the trained models of `--models`; skipped without it).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "passthrough,weatherflow,weatherflow+checkpoints,weatherflow+models,baselines"
    )]
    pub e2e_jobs: Vec<String>,
    /// Workers of the end-to-end and latency runs (and threads of the passthrough job).
    #[arg(long, default_value_t = 2)]
    pub e2e_workers: usize,
    /// Epoch length (ms) of the runs through the broker.
    #[arg(long, default_value_t = 100)]
    pub epoch_ms: u64,
    /// Checkpoint interval (ms) of the runs with checkpoints.
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_ms: u64,
    /// `source.max_in_flight` of the runs through the broker (default: weatherflow's default).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// librdkafka consumer option KEY=VALUE for every run through the broker (repeatable).
    #[arg(long = "consumer-option", value_parser = key_value)]
    pub consumer_options: Vec<(String, String)>,
    /// librdkafka producer option KEY=VALUE for every run through the broker (repeatable).
    #[arg(long = "producer-option", value_parser = key_value)]
    pub producer_options: Vec<(String, String)>,
    /// Offered load of the latency runs, records/s (default: half the e2e maximum with checkpoints).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Seconds of offered load per latency run.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    /// Also read every prediction back in the latency runs (send -> fetchable downstream; costs
    /// the broker and this process a second consumer's CPU).
    #[arg(long)]
    pub latency_visible: bool,
    /// linger.ms of the latency runs' load generator (librdkafka's default is 5).
    #[arg(long, default_value_t = 5)]
    pub latency_producer_linger_ms: u64,
    /// Make the latency runs' load generator an idempotent producer, as weatherflow's sink is
    /// (default: a plain one; librdkafka's idempotent producer polls without sleeping while a
    /// request is unanswered for longer than linger.ms, which took 0.25-0.40 cores of this process
    /// once the test broker slowed: BENCHMARKS.md).
    #[arg(long)]
    pub latency_idempotent_input: bool,
    /// compression.type of the feature records' producer (the e2e prefill, the latency load
    /// generator), the upstream writer's choice. Uncompressed by default: with librdkafka's
    /// default fetch backoffs, reading lz4-compressed input from the test broker was capped near
    /// 280,000 rec/s whatever read it, which capped the passthrough too (BENCHMARKS.md).
    #[arg(long, default_value = "none")]
    pub input_compression: String,
    /// Epoch lengths (ms) of the latency runs (5 ms, checkpoints on: p99 at half the maximum in
    /// 19 runs of 10 s median 36, 12 under 50, two ran away to 0.9 and 1.1 s, where 10 ms gave
    /// 37-92 ms; 100 ms, the runner's default, for comparison).
    #[arg(long, value_delimiter = ',', default_value = "5,100")]
    pub latency_epoch_ms: Vec<u64>,
    /// Processes killed (one at a time) in the recovery part.
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// Input rate during the recovery part, records/s.
    #[arg(long, default_value_t = 2000.0)]
    pub recovery_rate: f64,
    /// Stations in state for the memory part.
    #[arg(long, default_value_t = 100_000)]
    pub memory_stations: usize,
    /// Records applied per station in the memory part.
    #[arg(long, default_value_t = 3)]
    pub memory_hours: usize,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory for generated configs, checkpoints and logs.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// A single-process spec with the options of `a` applied.
fn spec_for(a: &BenchArgs, features: &str, work: &std::path::Path, tag: &str) -> ClusterSpec {
    let mut s = ClusterSpec::single(&a.brokers, features, a.e2e_workers, work, tag);
    s.consumer = a.consumer_options.clone();
    s.producer = a.producer_options.clone();
    s.checkpoint_ms = a.checkpoint_ms;
    s.epoch_ms = a.epoch_ms;
    s.max_in_flight = a.max_in_flight;
    s
}

fn fallback_params(models: ModelSource) -> ForecastParams {
    ForecastParams {
        interval: 0.9,
        fallback: Default::default(),
        models,
    }
}

/// Runs the selected parts and returns the report.
pub fn run(a: &BenchArgs) -> Result<Report, BenchError> {
    let base = BaseSeries::load(&a.file)?;
    std::fs::create_dir_all(&a.work_dir).map_err(|e| BenchError::WorkDir(a.work_dir.clone(), e))?;
    let work = std::fs::canonicalize(&a.work_dir).map_err(|e| BenchError::WorkDir(a.work_dir.clone(), e))?;
    stats::set_broker(&a.brokers);
    let mut r = Report::new(a);
    let has = |p: Part| a.parts.contains(&p);
    let repeats = a.repeats.max(1);
    if has(Part::Memory) {
        tracing::info!(stations = a.memory_stations, "bench: memory");
        r.memory = Some(memory::measure(&base, a.memory_stations, a.memory_hours.max(1)));
    }
    if has(Part::Engine) {
        r.engine = Some(engine_part(&base, a, &work, repeats)?);
    }
    if has(Part::Sweep) {
        r.sweep = sweep_part(&base, a, repeats)?;
    }
    if has(Part::Profile) {
        tracing::info!("bench: profile");
        let data = base.generate(a.records, a.stations, 4);
        let runs: Vec<_> = (0..repeats)
            .map(|_| {
                profile::stages(
                    &data,
                    fallback_params(ModelSource::fallback_only()),
                    Serving::default(),
                    RELEASE_CHUNK,
                )
            })
            .collect();
        let mut section = ProfileSection::new(runs, r.engine.as_ref());
        if let Some(d) = &a.models {
            tracing::info!("bench: profile, trained models");
            let served = store::for_generated_stations(d, &base, a.stations, &work).map_err(|e| part_err("profile")(e.to_string()))?;
            let runs: Vec<_> = (0..repeats)
                .map(|_| {
                    profile::stages(
                        &data,
                        fallback_params(ModelSource::fallback_only()),
                        store::serving(&served),
                        RELEASE_CHUNK,
                    )
                })
                .collect();
            let _ = std::fs::remove_dir_all(&served);
            section = section.with_trained(runs, r.engine.as_ref());
        }
        r.profile = Some(section);
    }
    if has(Part::E2e) {
        r.e2e = Some(e2e_part(&base, a, &work, repeats)?);
    }
    if has(Part::Latency) {
        let rate = match (a.latency_rate, &r.e2e) {
            (Some(x), _) => x,
            (None, Some(e)) => e.median("weatherflow+checkpoints") / 2.0,
            (None, None) => return Err(part_err("latency")("needs the e2e part in the same run, or --latency-rate".into())),
        };
        r.latency_rate = rate;
        let opts = latency::LatencyOptions {
            visible: a.latency_visible,
            producer_linger_ms: a.latency_producer_linger_ms,
            input_compression: a.input_compression.clone(),
            idempotent_input: a.latency_idempotent_input,
        };
        for rep in 0..repeats.min(2) {
            tracing::info!(rate, "bench: latency, the broker alone");
            let data = base.generate((rate * a.latency_seconds) as usize + 1000, a.stations, 4);
            let spec = spec_for(a, &format!("{}-features", unique("latency")), &work, "latency");
            let run = latency::broker_hop(&spec, &data, rate, a.latency_seconds, &opts);
            broker::delete_topics(&a.brokers, &[&spec.features]);
            r.latency_broker.push(run.map_err(part_err("latency"))?);
            for &epoch_ms in &a.latency_epoch_ms {
                for ckpt in if rep % 2 == 0 { [true, false] } else { [false, true] } {
                    tracing::info!(rate, epoch_ms, checkpoints = ckpt, "bench: latency");
                    let records = (rate * a.latency_seconds) as usize + 1000;
                    let data = base.generate(records, a.stations, 4);
                    let mut spec = spec_for(a, &format!("{}-features", unique("latency")), &work, "latency");
                    spec.stop_at_end = false;
                    spec.checkpoint = ckpt;
                    spec.epoch_ms = epoch_ms;
                    spec.checkpoint_ms = a.checkpoint_ms.max(epoch_ms);
                    let run = latency::run(&spec, &data, rate, a.latency_seconds, &opts);
                    broker::delete_topics(&a.brokers, &[&spec.features, &spec.predictions, &spec.dlq]);
                    let _ = std::fs::remove_dir_all(&spec.checkpoint_dir);
                    r.latency.push(run.map_err(part_err("latency"))?);
                }
            }
        }
    }
    if has(Part::Recovery) {
        tracing::info!(kills = a.kills, "bench: recovery");
        let o = recovery::RecoveryOptions {
            kills: a.kills,
            rate: a.recovery_rate,
            stations: a.stations,
            epoch_ms: a.epoch_ms,
            checkpoint_ms: a.checkpoint_ms,
            spec: spec_for(a, "unused", &work, "recovery"),
        };
        r.recovery = Some(recovery::run(&a.brokers, &base, &o, &work).map_err(part_err("recovery"))?);
    }
    if has(Part::E2e) || has(Part::Latency) || has(Part::Recovery) {
        let left = broker::topics_with_prefix(&a.brokers, &format!("bench-{}-", "e2e"))
            .into_iter()
            .chain(broker::topics_with_prefix(&a.brokers, "bench-latency-"))
            .chain(broker::topics_with_prefix(&a.brokers, "bench-recovery-"))
            .filter(|t| t.contains(&format!("-{}-", std::process::id())))
            .collect::<Vec<_>>();
        if !left.is_empty() {
            tracing::warn!(topics = ?left, "bench: topics of this run were not deleted");
        }
    }
    r.finish();
    Ok(r)
}

fn engine_part(base: &BaseSeries, a: &BenchArgs, work: &Path, repeats: usize) -> Result<EngineSection, BenchError> {
    let data = Arc::new(base.generate(a.records, a.stations, 4));
    let mut s = EngineSection::new(&data);
    let mut trained = None;
    if let Some(d) = &a.models {
        let store = crate::models::ModelStore::new(d);
        s.trained_models = Some(format!(
            "forecast: {}; anomaly: {} (the forecaster's climatology given to all {} stations)",
            store.describe_choice("forecast"),
            store.describe_choice("anomaly"),
            data.stations
        ));
        let served = store::for_generated_stations(d, base, a.stations, work).map_err(|e| part_err("engine")(e.to_string()))?;
        let share = store::trained_share(&served, &data, 3 * data.stations);
        if let Some(t) = &mut s.trained_models {
            t.push_str(&format!(
                "; the trained forecaster made {:.0} % of the first records' predictions",
                share * 100.0
            ));
        }
        trained = Some(ModelSource::store(served, 5000));
    }
    let result = engine_runs(&data, a, trained.as_ref(), repeats, &mut s);
    if let Some(dir) = trained.and_then(|t| t.dir) {
        let _ = std::fs::remove_dir_all(dir);
    }
    result.map(|()| s)
}

fn engine_runs(
    data: &Arc<Dataset>,
    a: &BenchArgs,
    trained: Option<&ModelSource>,
    repeats: usize,
    s: &mut EngineSection,
) -> Result<(), BenchError> {
    for rep in 0..repeats {
        tracing::info!(rep, "bench: engine");
        s.serde.push(engine::serde_limit(data, 8192));
        let mut order = a.workers.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for &w in &order {
            s.fallback
                .push(engine::run(data, w, &ModelSource::fallback_only(), a.epoch_records).map_err(part_err("engine"))?);
            if let Some(t) = trained {
                s.trained
                    .push(engine::run(data, w, t, a.epoch_records).map_err(part_err("engine"))?);
            }
        }
    }
    Ok(())
}

fn sweep_part(base: &BaseSeries, a: &BenchArgs, repeats: usize) -> Result<Vec<SweepPoint>, BenchError> {
    let mut points = Vec::new();
    for &stations in &a.sweep_stations {
        let records = a.records.max(5 * stations);
        let data = Arc::new(base.generate(records, stations, 4));
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); a.workers.len()];
        for rep in 0..repeats {
            tracing::info!(stations, rep, "bench: sweep");
            for (i, &w) in a.workers.iter().enumerate() {
                let run = engine::run(&data, w, &ModelSource::fallback_only(), a.epoch_records).map_err(part_err("sweep"))?;
                rates[i].push(run.rate);
            }
        }
        for (i, &w) in a.workers.iter().enumerate() {
            points.push(SweepPoint {
                stations,
                records,
                workers: w,
                rates: rates[i].clone(),
                median_rate: median(&rates[i]),
            });
        }
    }
    Ok(points)
}

/// Each input's output payload (its prediction's JSON, as weatherflow's sink would send it), by
/// partition and offset: the passthrough and produce-only jobs send these very bytes, so that
/// with a compressing producer they cost what weatherflow's outputs cost.
fn output_payloads(data: &Dataset) -> broker::Outputs {
    let mut seq = model::Sequential::new(fallback_params(ModelSource::fallback_only()), Serving::default());
    let by_partition = data
        .by_partition
        .iter()
        .enumerate()
        .map(|(p, msgs)| {
            msgs.iter()
                .enumerate()
                .map(|(o, m)| {
                    let Ok(record) = crate::contract::FeatureRecord::parse(&m.payload) else {
                        return m.payload.clone();
                    };
                    let source = crate::contract::SourcePosition {
                        partition: p as i32,
                        offset: o as i64,
                    };
                    let f = seq.forecast(crate::operators::Accepted {
                        record: Box::new(record),
                        source,
                    });
                    crate::operators::encode(seq.score(f), "bench").payload
                })
                .collect()
        })
        .collect();
    broker::Outputs { by_partition }
}

fn e2e_part(base: &BaseSeries, a: &BenchArgs, work: &std::path::Path, repeats: usize) -> Result<E2eSection, BenchError> {
    let err = part_err("e2e");
    let data = base.generate(a.e2e_records, a.stations, 4);
    let outputs = Arc::new(output_payloads(&data));
    let input = format!("{}-features", unique("e2e"));
    let spec = |ckpt: bool| {
        let mut s = spec_for(a, &input, work, "e2e");
        s.checkpoint = ckpt;
        s.checkpoint_ms = a.checkpoint_ms.max(a.epoch_ms);
        s
    };
    let settings = spec(false).settings().map_err(&err)?;
    tracing::info!(records = data.records, topic = %input, "bench: e2e prefill");
    let mut section = E2eSection::new(&data, &outputs);
    let mut upstream = settings.producer_options();
    upstream.insert("compression.type".into(), a.input_compression.clone());
    let outputs_compression = settings.producer_options().get("compression.type").cloned().unwrap_or_default();
    section.compression = (a.input_compression.clone(), outputs_compression);
    section.prefill_seconds = broker::prefill(&a.brokers, &upstream, &input, &data).map_err(&err)?;
    // The trained models, with the forecaster's climatology given to every generated station
    // (as the engine-only runs serve them).
    let served = match &a.models {
        Some(d) if a.e2e_jobs.iter().any(|j| j == "weatherflow+models") => {
            Some(store::for_generated_stations(d, base, a.stations, work).map_err(|e| err(e.to_string()))?)
        }
        _ => None,
    };
    let result = (|| -> Result<(), String> {
        for rep in 0..repeats {
            let mut jobs: Vec<&str> = ["passthrough", "weatherflow", "weatherflow+checkpoints", "weatherflow+models"]
                .into_iter()
                .filter(|j| a.e2e_jobs.iter().any(|x| x == j))
                .filter(|j| *j != "weatherflow+models" || served.is_some())
                .collect();
            let n = jobs.len().max(1);
            jobs.rotate_left(rep % n);
            for job in jobs {
                tracing::info!(rep, job, "bench: e2e");
                let run = match job {
                    "passthrough" => {
                        let out = format!("{}-passthrough", unique("e2e"));
                        let r = broker::passthrough(&settings, &input, &out, &outputs, a.e2e_workers);
                        broker::delete_topics(&a.brokers, &[&out]);
                        r?
                    }
                    _ => {
                        let mut s = spec(job != "weatherflow");
                        if let (true, Some(d)) = (job == "weatherflow+models", &served) {
                            s.models_dir = d.clone();
                        }
                        let r = broker::weatherflow(&s.settings()?, data.records as u64, job);
                        broker::delete_topics(&a.brokers, &[&s.predictions, &s.dlq]);
                        let _ = std::fs::remove_dir_all(&s.checkpoint_dir);
                        r?
                    }
                };
                section.runs.push(run);
            }
            if a.e2e_jobs.iter().any(|j| j == "baselines") {
                section.runs.push(broker::consume_only(&settings, &input, 4)?);
                let out = format!("{}-produce", unique("e2e"));
                let r = broker::produce_only(&settings, &data, &outputs, &out);
                broker::delete_topics(&a.brokers, &[&out]);
                section.runs.push(r?);
            }
        }
        Ok(())
    })();
    broker::delete_topics(&a.brokers, &[&input]);
    if let Some(d) = &served {
        let _ = std::fs::remove_dir_all(d);
    }
    result.map_err(err)?;
    Ok(section)
}
