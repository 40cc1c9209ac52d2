//! Runs one process of the inference cluster: creates missing topics (process 0), restores the
//! newest complete checkpoint, starts the timely workers, builds the dataflow on each, steps it
//! while writing checkpoints, and writes a final checkpoint when it drains.
//!
//! ```text
//!  run_process(settings, i) ──> [process 0: ensure topics] ──> load newest complete checkpoint
//!      ──> timely::execute(config(i))
//!          worker w: reader (partitions p ≡ w mod peers, offsets from the checkpoint)
//!                    sink   (output partitions it writes; ids published after the checkpoint read back)
//!                    operators (stations hashing to w, states from the checkpoint)
//!                    build dataflows/inference.rs ──> step; checkpoint at every boundary ──> final checkpoint
//! ```
//!
//! The dataflow completes when every source has finished (shutdown flag, or `stop_at_end` and all
//! partitions read) and every output has been acknowledged. If a peer process dies, timely's
//! network threads fail; this process then reports it in one line and exits non-zero (never
//! hangs), and a restarted cluster resumes from the last complete checkpoint.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, Restored};
use crate::checkpointer::Checkpointer;
use crate::config::Settings;
use crate::dataflows::inference::{self, InferenceParts};
use crate::kafka::assign::station_hash;
use crate::kafka::sink::OutTopic;
use crate::kafka::source::PartitionReader;
use crate::kafka::{self, KafkaIoError};
use crate::metrics::{Metrics, Snapshot};
use crate::models::ModelStore;
use crate::operators::keyed::{KeyedCheckpoint, SnapshotBook};
use crate::operators::{anomaly, forecast::ForecastParams, forecast::OPERATOR_NAME as FORECAST_OP};
use crate::stage::{StageIo, StageSpec};

/// Errors running a process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka setup failed.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// timely could not start (e.g. a peer address could not be bound or reached).
    #[error("timely cluster: {0}")]
    Timely(String),
    /// One or more workers failed.
    #[error("worker(s) failed: {0}")]
    Workers(String),
    /// A peer process died or became unreachable.
    #[error("lost the connection to a peer process; stopped (a restarted cluster resumes from the last complete checkpoint)")]
    PeerLost,
    /// The checkpoint directory belongs to another pipeline.
    #[error("checkpoint.dir {dir} holds checkpoints of input topic {found:?}, but this run reads {configured:?}; use another checkpoint.dir, or remove it to start afresh")]
    CheckpointMismatch { dir: String, found: String, configured: String },
    /// The process index is not in the cluster.
    #[error("process {process} is not in the cluster (it has {processes} process(es): 0..{processes})")]
    NoSuchProcess { process: usize, processes: usize },
    /// The operations side (HTTP server, monitoring topic) could not start.
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
}

/// Runs process `process` until the dataflow completes; returns this process's counters.
pub fn run_process(settings: &Settings, process: usize, shutdown: Arc<AtomicBool>) -> Result<Snapshot, RunError> {
    run_process_with(settings, process, shutdown, Arc::new(Metrics::default()))
}

static PEER_LOST: AtomicBool = AtomicBool::new(false);

/// Turns timely's cascade of network panics into one clear line, and makes sure the process
/// exits even if a thread stays blocked.
fn install_peer_failure_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if msg.contains("timely communication error") || msg.contains("MergeQueue poisoned") || msg.contains("Send thread panic") {
                if !PEER_LOST.swap(true, Ordering::SeqCst) {
                    tracing::error!("a peer process is gone ({msg}); stopping this process");
                    std::thread::spawn(|| {
                        std::thread::sleep(Duration::from_secs(15));
                        eprintln!("error: lost a peer process and did not stop within 15 s; exiting");
                        std::process::exit(3);
                    });
                }
                return;
            }
            default(info)
        }));
    });
}

/// As [`run_process`], with caller-owned counters (the demo watches them live).
pub fn run_process_with(
    settings: &Settings,
    process: usize,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<Snapshot, RunError> {
    if process >= settings.processes.len() {
        return Err(RunError::NoSuchProcess {
            process,
            processes: settings.processes.len(),
        });
    }
    let t = &settings.topics;
    if process == 0 && t.create {
        kafka::ensure_topics(
            &settings.kafka.brokers,
            &settings.kafka.options,
            &crate::pipeline::topics_to_create(settings),
            t.partitions,
            t.replication,
        )?;
    }
    install_peer_failure_hook();
    if process == 0 && settings.checkpoint.enabled {
        // Each stage checkpoints in its own namespace under checkpoint.dir, with its own lineage.
        checkpoint::lineage(&inference_dir(settings), true).map_err(|e| KafkaIoError::Restore(e.to_string()))?;
        if settings.pipeline.runs(crate::config::Stage::Features) {
            checkpoint::lineage(&crate::pipeline::features_dir(settings), true).map_err(|e| KafkaIoError::Restore(e.to_string()))?;
        }
    }
    let store = ModelStore::new(&settings.models.dir);
    let forecast_model = store.describe_choice("forecast");
    let anomaly_model = store.describe_choice("anomaly");
    let restored: Option<Arc<Restored>> = if settings.checkpoint.enabled {
        checkpoint::load_latest(&inference_dir(settings)).map(Arc::new)
    } else {
        None
    };
    if let Some(r) = &restored {
        let inputs: Vec<&String> = r.parts.iter().flat_map(|p| p.inputs.keys()).collect();
        if !inputs.iter().all(|t| **t == settings.topics.features) {
            return Err(RunError::CheckpointMismatch {
                dir: settings.checkpoint.dir.display().to_string(),
                found: inputs.first().map(|t| t.to_string()).unwrap_or_default(),
                configured: settings.topics.features.clone(),
            });
        }
    }
    let execution = restored.as_ref().map(|r| r.id.execution + 1).unwrap_or(1);
    match &restored {
        Some(r) => tracing::info!(process, checkpoint = ?r.id, written_by_workers = r.peers, execution, "resuming from checkpoint"),
        None if settings.checkpoint.enabled => tracing::info!(process, execution, "no checkpoint found; starting from source.start"),
        None => tracing::info!(process, "checkpoints disabled: at-least-once after a crash"),
    }
    tracing::info!(process, processes = settings.processes.len(), workers = settings.workers, forecast = %forecast_model, anomaly = %anomaly_model, "starting");

    let settings = Arc::new(settings.clone());
    let worker_metrics = metrics.clone();
    let features_metrics = Arc::new(Metrics::default()); // features stage (issue 3): its own counters

    // ── operations (issue 6, crate::ops): HTTP /metrics, API and dashboard; monitoring stage ──
    let ops = crate::ops::OpsProcess::start(&settings, process, &metrics, &features_metrics)?;
    let worker_ops = ops.clone();
    // ── end operations ──
    let guards = timely::execute(settings.timely_config(process), move |worker| -> Result<(), String> {
        let s = &settings;
        let index = worker.index();
        let peers = worker.peers();
        // operations (issue 6): load probe; the monitoring stage when it runs beside the others
        let mut wops = worker_ops.worker(worker, &shutdown)?;
        // ── features stage (issue 3, crate::pipeline): raw -> features, before or beside inference ──
        let mut features = crate::pipeline::start_features(worker, s, &shutdown, &features_metrics)?;
        if !s.pipeline.runs(crate::config::Stage::Inference) {
            crate::pipeline::finish_features(worker, features, s.dataflow.log_every_s)?;
            wops.finish(worker)?; // operations (issue 6): run or drain the monitoring stage
            return Ok(());
        }
        // ── end features stage ──
        let setup = build_worker_parts(s, index, peers, restored.as_deref(), &shutdown, &worker_metrics, execution)
            .map_err(|e| format!("worker {index}: {e}"))?;
        let WorkerParts {
            parts,
            mut checkpointer,
            reader,
        } = setup;
        let probe = worker.dataflow(|scope| inference::build(scope, parts));
        let log_every = Duration::from_secs(s.dataflow.log_every_s);
        let mut last_log = Instant::now();
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
            wops.tick(&probe); // operations (issue 6): epoch completion times
            if let Some(f) = features.as_mut() {
                f.poll_checkpoint()?; // features stage (issue 3): its checkpoints
            }
            if let Some(c) = checkpointer.as_mut() {
                c.poll(&probe).map_err(|e| format!("worker {index}: {e}"))?;
            }
            if index == process * s.workers && !log_every.is_zero() && last_log.elapsed() >= log_every {
                last_log = Instant::now();
                tracing::info!(process, "progress: {}", worker_metrics.snapshot());
            }
        }
        match checkpointer.as_mut() {
            Some(c) => c.finish().map_err(|e| format!("worker {index}: final checkpoint: {e}"))?,
            None => {
                let mut r = reader.borrow_mut();
                r.fold_through(checkpoint::FINAL_EPOCH);
                r.commit(rdkafka::consumer::CommitMode::Sync);
            }
        }
        crate::pipeline::finish_features(worker, features, s.dataflow.log_every_s)?; // features stage (issue 3)
        wops.finish(worker)?; // operations (issue 6): run or drain the monitoring stage
        Ok(())
    })
    .map_err(RunError::Timely)?;
    let failures: Vec<String> = guards
        .join()
        .into_iter()
        .filter_map(|r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(e),
        })
        .collect();
    ops.stop(); // operations (issue 6): HTTP server
    if PEER_LOST.load(Ordering::SeqCst) {
        return Err(RunError::PeerLost);
    }
    if !failures.is_empty() {
        return Err(RunError::Workers(failures.join("; ")));
    }
    let snap = metrics.snapshot();
    tracing::info!(process, "finished: {snap}");
    Ok(snap)
}

struct WorkerParts {
    parts: InferenceParts,
    checkpointer: Option<Checkpointer>,
    reader: Rc<RefCell<PartitionReader>>,
}

fn build_worker_parts(
    s: &Settings,
    index: usize,
    peers: usize,
    restored: Option<&Restored>,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
    execution: u64,
) -> Result<WorkerParts, KafkaIoError> {
    let ckpt = s.checkpoint.enabled;
    let spec = StageSpec {
        name: "inference",
        input: &s.topics.features,
        outputs: vec![(OutTopic::Predictions, &s.topics.predictions), (OutTopic::Dlq, &s.topics.dlq)],
        checkpoint_dir: inference_dir(s),
        readback_group: format!("{}-readback", s.kafka.group_id),
    };
    let io = StageIo::connect(s, &spec, index, peers, restored, shutdown, metrics)?;
    tracing::info!(worker = index, partitions = ?io.reader.borrow().partitions(), "worker ready");

    let every = s.checkpoint_every_epochs();
    let mine = |station: &str| station_hash(station) % peers as u64 == index as u64;
    let states_err = |e: checkpoint::CheckpointError| KafkaIoError::Restore(e.to_string());
    let forecast_book = Rc::new(RefCell::new(SnapshotBook::default()));
    let anomaly_book = Rc::new(RefCell::new(SnapshotBook::default()));
    let forecast_ckpt = KeyedCheckpoint {
        restored: restored
            .map(|r| r.states(FORECAST_OP, mine))
            .transpose()
            .map_err(states_err)?
            .unwrap_or_default(),
        book: ckpt.then(|| forecast_book.clone()),
        every,
    };
    let anomaly_ckpt = KeyedCheckpoint {
        restored: restored
            .map(|r| r.states(anomaly::OPERATOR_NAME, mine))
            .transpose()
            .map_err(states_err)?
            .unwrap_or_default(),
        book: ckpt.then(|| anomaly_book.clone()),
        every,
    };
    let books = vec![(FORECAST_OP, forecast_book), (anomaly::OPERATOR_NAME, anomaly_book)];
    let checkpointer = io.checkpointer(s, &spec, index, peers, execution, books, metrics);
    let reader_handle = io.reader.clone();
    let parts = InferenceParts {
        source: io.source,
        reader: io.reader,
        gate: io.gate,
        checkpointing: ckpt,
        sink: io.sink,
        forecast: ForecastParams {
            interval: s.models.interval,
            fallback: s.fallback.clone(),
            models: crate::models::serving::ModelSource::store(&s.models.dir, s.models.reload_ms),
        },
        forecast_ckpt,
        anomaly: s.anomaly.clone(),
        anomaly_ckpt,
        metrics: metrics.clone(),
    };
    Ok(WorkerParts {
        parts,
        checkpointer,
        reader: reader_handle,
    })
}

/// Where the inference stage keeps its checkpoints.
pub fn inference_dir(s: &Settings) -> std::path::PathBuf {
    s.checkpoint.dir.join("inference")
}

/// The checkpoint directory's lineage (process 0 creates it before the cluster forms; the other
/// processes may see the shared directory a moment later).
pub(crate) fn wait_for_lineage(dir: &std::path::Path) -> Result<String, KafkaIoError> {
    let start = Instant::now();
    loop {
        match checkpoint::lineage(dir, false) {
            Ok(l) => return Ok(l),
            Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(KafkaIoError::Restore(e.to_string())),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
