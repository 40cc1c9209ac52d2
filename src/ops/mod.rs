//! Operations: per-process metrics, the HTTP server (Prometheus `/metrics`, JSON API, dashboard),
//! `weatherflow status`, and the model-monitoring stage.
//!
//! ```text
//!   run_process ──OpsProcess::start──> HTTP server thread (127.0.0.1 by default) ──> /metrics, /api/*, /
//!        │                                  ▲ reads
//!        │                 OpsShared: stage Metrics (+ ops counters), worker loads, View, rate samples
//!        │                                  ▲ writes
//!        └─ each worker: OpsProcess::worker ──> park/unpark logger (load)
//!                                          └──> monitoring dataflow (stage "monitoring") ──> View, weather-model-metrics
//!           worker loop: WorkerOps::tick (epoch completion)   end: WorkerOps::finish (run/drain monitoring)
//! ```
//!
//! The runner calls [`OpsProcess::start`], [`OpsProcess::worker`], [`WorkerOps::tick`] and
//! [`WorkerOps::finish`]; everything else about operations lives here.

pub mod api;
pub mod command;
pub mod counters;
pub mod http;
pub mod monitor;
pub mod prometheus;
pub mod redact;
pub mod settings;
pub mod status;
pub mod view;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use timely::dataflow::ProbeHandle;
use timely::logging::{ParkEvent, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

use crate::config::{Settings, Stage};
use crate::kafka::{self, KafkaIoError};
use crate::metrics::Metrics;
use crate::models::ModelStore;
use counters::{unix_ms, OpsMetrics};
use http::{HttpError, HttpServer};
use monitor::stage::{self as monitoring_stage, MonitoringRun};
use status::{CheckpointStatus, ModelUse, ProcessStatus, StageStatus, WorkerStatus};
use view::{View, ViewRoute};

/// Errors starting the operations side of a process.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Creating the model-metrics topic failed.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// The endpoint file could not be written.
    #[error("recording the HTTP endpoint in {path}: {source}")]
    Endpoint {
        /// The endpoint file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What the model store serves per kind, and when that was read.
type StoreChoice = Option<(Instant, Vec<(String, String)>)>;

/// Rate samples kept (one a second).
const SAMPLES: usize = 11;

struct Sample {
    at: Instant,
    stages: BTreeMap<&'static str, (u64, u64)>,
    workers: BTreeMap<usize, (f64, f64)>,
}

/// What the HTTP server and the workers of one process share.
pub struct OpsShared {
    settings: Settings,
    process: usize,
    started: Instant,
    started_at: DateTime<Utc>,
    address: Mutex<Option<SocketAddr>>,
    stages: Vec<(&'static str, Arc<Metrics>)>,
    inference: Arc<Metrics>,
    monitoring: Arc<Metrics>,
    loads: OpsMetrics,
    view: Arc<Mutex<View>>,
    samples: Mutex<VecDeque<Sample>>,
    store: Mutex<StoreChoice>,
}

impl OpsShared {
    /// The settings of the run.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the monitoring stage runs in this cluster.
    pub fn monitoring_runs(&self) -> bool {
        self.settings.pipeline.runs(Stage::Monitoring)
    }

    /// The monitoring view (locked).
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn model_store(&self) -> Vec<(String, String)> {
        let mut cache = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, v)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(30) {
                return v.clone();
            }
        }
        let store = ModelStore::new(&self.settings.models.dir);
        let v: Vec<(String, String)> = ["forecast", "anomaly"]
            .iter()
            .map(|k| (k.to_string(), store.describe_choice(k)))
            .collect();
        *cache = Some((Instant::now(), v.clone()));
        v
    }

    /// `/metrics`.
    pub fn render_metrics(&self) -> String {
        let view = self.view().clone();
        prometheus::render(&prometheus::Exposition {
            process: self.process,
            started_at_s: self.started_at.timestamp_millis() as f64 / 1000.0,
            stages: self.stages.iter().map(|(n, m)| (*n, m.as_ref())).collect(),
            workers: self.loads.worker_loads(),
            store: self.model_store(),
            view: &view,
        })
    }

    fn sample(&self) {
        let s = Sample {
            at: Instant::now(),
            stages: self
                .stages
                .iter()
                .map(|(n, m)| {
                    let parts = m.ops.partitions();
                    (*n, (parts.iter().map(|p| p.records_in).sum(), parts.iter().map(|p| p.acked).sum()))
                })
                .collect(),
            workers: self.loads.worker_loads().into_iter().map(|(w, up, busy)| (w, (up, busy))).collect(),
        };
        let mut v = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        v.push_back(s);
        while v.len() > SAMPLES {
            v.pop_front();
        }
    }

    /// `/api/status`.
    pub fn status(&self) -> ProcessStatus {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let span = samples.front().zip(samples.back()).filter(|(a, b)| b.at > a.at);
        let rate = |stage: &str, pick: fn(&(u64, u64)) -> u64| -> f64 {
            let Some((a, b)) = span else { return 0.0 };
            let (x, y) = (
                a.stages.get(stage).map(pick).unwrap_or(0),
                b.stages.get(stage).map(pick).unwrap_or(0),
            );
            y.saturating_sub(x) as f64 / b.at.duration_since(a.at).as_secs_f64()
        };
        let mut stages = BTreeMap::new();
        for (name, m) in &self.stages {
            let parts = m.ops.partitions();
            let lags: Vec<i64> = parts.iter().filter_map(|p| p.lag()).collect();
            let sum = |k: Option<counters::OutKind>| parts.iter().filter(|p| p.kind == k).map(|p| p.acked).sum();
            // The stage's main output (predictions, features) is the topic with the most records.
            let main = m
                .ops
                .latencies()
                .into_iter()
                .map(|(_, h)| h)
                .filter(|h| h.count > 0)
                .max_by_key(|h| h.count);
            stages.insert(
                name.to_string(),
                StageStatus {
                    records_in: parts.iter().map(|p| p.records_in).sum(),
                    records_out: sum(Some(counters::OutKind::Out)),
                    dlq: sum(Some(counters::OutKind::Dlq)),
                    late: sum(Some(counters::OutKind::Late)),
                    in_per_s: rate(name, |x| x.0),
                    out_per_s: rate(name, |x| x.1),
                    lag: (!lags.is_empty()).then(|| lags.iter().sum()),
                    latency_p50_s: main.as_ref().and_then(|h| h.quantile(0.5)),
                    latency_p99_s: main.as_ref().and_then(|h| h.quantile(0.99)),
                    partitions: parts,
                },
            );
        }
        let workers_load = self
            .loads
            .worker_loads()
            .into_iter()
            .map(|(w, _, _)| WorkerStatus {
                worker: w,
                busy_ratio: span.and_then(|(a, b)| {
                    let ((u0, b0), (u1, b1)) = (a.workers.get(&w)?, b.workers.get(&w)?);
                    (u1 > u0).then(|| ((b1 - b0) / (u1 - u0)).clamp(0.0, 1.0))
                }),
            })
            .collect();
        drop(samples);
        let last_checkpoint = self
            .stages
            .iter()
            .filter_map(|(_, m)| m.ops.last_checkpoint())
            .max_by_key(|c| c.written_at_ms)
            .map(|c| CheckpointStatus {
                epoch: (c.epoch != u64::MAX).then_some(c.epoch),
                written_at: DateTime::from_timestamp_millis(c.written_at_ms as i64).unwrap_or_default(),
                age_s: unix_ms().saturating_sub(c.written_at_ms) as f64 / 1000.0,
                took_ms: c.took_ms,
            });
        let view = self.view();
        ProcessStatus {
            process: self.process,
            processes: self.settings.processes.len(),
            workers: self.settings.workers,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: self.address.lock().ok().and_then(|a| a.map(|a| a.to_string())).unwrap_or_default(),
            started_at: self.started_at,
            uptime_s: self.started.elapsed().as_secs_f64(),
            stages,
            last_checkpoint,
            model_store: self.model_store().into_iter().collect(),
            models_in_use: view
                .models_in_use()
                .into_iter()
                .map(|((kind, model), stations)| ModelUse { kind, model, stations })
                .collect(),
            workers_load,
            monitored_stations: view.stations().len(),
        }
    }
}

/// The operations side of one process: shared state and the HTTP server.
pub struct OpsProcess {
    shared: Arc<OpsShared>,
    server: Mutex<Option<HttpServer>>,
    endpoint_file: Option<std::path::PathBuf>,
}

impl OpsProcess {
    /// Creates the monitoring topic (process 0), starts the HTTP server and records its address.
    /// `inference` and `features` are the counters of those stages; they are reported when the
    /// stage runs.
    pub fn start(
        settings: &Settings,
        process: usize,
        inference: &Arc<Metrics>,
        features: &Arc<Metrics>,
    ) -> Result<Arc<OpsProcess>, OpsError> {
        let monitoring = Arc::new(Metrics::default());
        let mut stages = Vec::new();
        for (stage, name, m) in [
            (Stage::Features, "features", features),
            (Stage::Inference, "inference", inference),
            (Stage::Monitoring, "monitoring", &monitoring),
        ] {
            if settings.pipeline.runs(stage) {
                m.ops.set_epoch_ms(settings.dataflow.epoch_ms);
                stages.push((name, m.clone()));
            }
        }
        let t = &settings.topics;
        if process == 0 && t.create && settings.pipeline.runs(Stage::Monitoring) {
            kafka::ensure_topics(
                &settings.kafka.brokers,
                &settings.kafka.options,
                &[&t.model_metrics],
                t.partitions,
                t.replication,
            )?;
        }
        tracing::info!(
            process,
            brokers = %settings.kafka.brokers,
            kafka_options = %redact::describe_options(&settings.kafka.options),
            consumer_options = %redact::describe_options(&settings.consumer_options()),
            producer_options = %redact::describe_options(&settings.producer_options()),
            "kafka client settings"
        );
        let shared = Arc::new(OpsShared {
            settings: settings.clone(),
            process,
            started: Instant::now(),
            started_at: Utc::now(),
            address: Mutex::new(None),
            stages,
            inference: inference.clone(),
            monitoring,
            loads: OpsMetrics::default(),
            view: Arc::new(Mutex::new(View::default())),
            samples: Mutex::new(VecDeque::new()),
            store: Mutex::new(None),
        });
        let mut ops = OpsProcess {
            shared: shared.clone(),
            server: Mutex::new(None),
            endpoint_file: None,
        };
        if settings.http.enabled {
            let addr = settings.http.address(process).ok_or_else(|| {
                OpsError::Http(HttpError::Client {
                    addr: settings.http.bind.clone(),
                    path: String::new(),
                    message: "http.bind is not ip:port".into(),
                })
            })?;
            let (for_handler, for_tick) = (shared.clone(), shared.clone());
            let server = HttpServer::start(addr, Arc::new(move |r| api::handle(&for_handler, r)), move || for_tick.sample())?;
            let bound = server.addr();
            *shared.address.lock().unwrap_or_else(|e| e.into_inner()) = Some(bound);
            if !bound.ip().is_loopback() {
                tracing::warn!(process, address = %bound, "HTTP endpoints have no authentication and are bound to a non-loopback address");
            }
            tracing::info!(process, address = %bound, "serving http://{bound}/ (dashboard), /metrics, /api/status");
            ops.endpoint_file = Some(record_endpoint(settings, process, bound)?);
            *ops.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
        }
        Ok(Arc::new(ops))
    }

    /// The shared state (for tests and the demo).
    pub fn shared(&self) -> &Arc<OpsShared> {
        &self.shared
    }

    /// The address HTTP is served on.
    pub fn address(&self) -> Option<SocketAddr> {
        *self.shared.address.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets up operations on one worker: its load probe, and the monitoring dataflow when the
    /// stage runs now (see [`monitor::stage::deferred`]). Call before building other dataflows.
    pub fn worker(&self, worker: &mut Worker, shutdown: &Arc<AtomicBool>) -> Result<WorkerOps, String> {
        let index = worker.index();
        let load = self.shared.loads.worker_load(index);
        let mut parked_at: Option<Duration> = None;
        if let Some(mut registry) = worker.log_register() {
            registry.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
                for (t, e) in data.iter().flatten() {
                    match e {
                        TimelyEvent::Park(ParkEvent::Park(_)) => parked_at = Some(*t),
                        TimelyEvent::Park(ParkEvent::Unpark) => {
                            if let Some(p) = parked_at.take() {
                                load.add_parked(t.saturating_sub(p));
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
        let s = &self.shared.settings;
        let mut w = WorkerOps {
            shared: self.shared.clone(),
            index,
            first_in_process: index % s.workers.max(1) == 0,
            monitoring: None,
            shutdown: shutdown.clone(),
            last_frontier: None,
        };
        if s.pipeline.runs(Stage::Monitoring) && !monitoring_stage::deferred(s) {
            w.start_monitoring(worker)?;
        }
        Ok(w)
    }

    /// Stops the HTTP server and removes the endpoint record.
    pub fn stop(&self) {
        if let Some(mut s) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.stop();
        }
        if let Some(f) = &self.endpoint_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for OpsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn record_endpoint(s: &Settings, process: usize, addr: SocketAddr) -> Result<std::path::PathBuf, OpsError> {
    let path = status::endpoint_file(&s.checkpoint.dir, process);
    let err = |source| OpsError::Endpoint {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let body = serde_json::json!({"process": process, "address": addr.to_string(), "pid": std::process::id(), "started_at": Utc::now()});
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, body.to_string()).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

/// Operations on one worker (see [`OpsProcess::worker`]).
pub struct WorkerOps {
    shared: Arc<OpsShared>,
    index: usize,
    first_in_process: bool,
    monitoring: Option<MonitoringRun>,
    shutdown: Arc<AtomicBool>,
    last_frontier: Option<u64>,
}

impl WorkerOps {
    fn start_monitoring(&mut self, worker: &mut Worker) -> Result<(), String> {
        let s = &self.shared.settings;
        let route = ViewRoute {
            view: self.shared.view.clone(),
            processes: s.processes.len(),
            workers: s.workers,
        };
        let run = MonitoringRun::start(worker, s, &self.shutdown, &self.shared.monitoring, route)
            .map_err(|e| format!("worker {}: monitoring stage: {e}", self.index))?;
        self.monitoring = Some(run);
        Ok(())
    }

    /// Called from the inference worker loop: observes how long after its end each epoch was
    /// fully acknowledged (once per process).
    pub fn tick(&mut self, acked: &ProbeHandle<u64>) {
        if !self.first_in_process {
            return;
        }
        let Some(f) = acked.with_frontier(|f| f.iter().next().copied()) else {
            return;
        };
        if self.last_frontier.is_some_and(|last| f > last) {
            let epoch_ms = self.shared.inference.ops.epoch_ms();
            let ended_ms = f.saturating_mul(epoch_ms);
            let delay = unix_ms().saturating_sub(ended_ms) as f64 / 1000.0;
            self.shared.inference.ops.epoch_completion.observe(delay);
        }
        self.last_frontier = Some(f);
    }

    /// Runs the monitoring stage to its end: starts it now if it waited for the other stages,
    /// then steps the worker until it has drained and commits its offsets.
    pub fn finish(&mut self, worker: &mut Worker) -> Result<(), String> {
        let s = &self.shared.settings;
        if self.monitoring.is_none() && s.pipeline.runs(Stage::Monitoring) && monitoring_stage::deferred(s) {
            self.start_monitoring(worker)?;
        }
        if let Some(run) = self.monitoring.take() {
            run.drain(worker);
            if self.first_in_process {
                let m = self.shared.monitoring.snapshot();
                tracing::info!(
                    worker = self.index,
                    "monitoring stage finished: read {} records ({} undecodable), published {} metric records",
                    m.records_in,
                    m.rejected_invalid,
                    m.predictions_acked
                );
            }
        }
        Ok(())
    }
}
