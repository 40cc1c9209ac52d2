//! Runs one process of the inference cluster: creates missing topics (process 0), starts the
//! timely workers, builds the dataflow on each, steps it until it completes, and reports.
//!
//! ```text
//!  run_process(settings, i) ──> [process 0: ensure topics] ──> timely::execute(config(i))
//!      worker w: consumer + PartitionReader(partitions p ≡ w mod peers) + producer
//!                build dataflows/inference.rs ──> step until the acked probe is done ──> final commit
//! ```
//!
//! The dataflow completes when every source has finished (shutdown flag, or `stop_at_end` and all
//! partitions read) and every output has been acknowledged.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::anomaly::rules::AnomalyParams;
use crate::config::Settings;
use crate::dataflows::inference::{self, InferenceParts};
use crate::forecast::fallback::FallbackParams;
use crate::kafka::sink::{delivery_producer, SinkTopics};
use crate::kafka::source::PartitionReader;
use crate::kafka::{self, KafkaIoError, KafkaSourceSpec};
use crate::metrics::{Metrics, Snapshot};
use crate::models::ModelStore;
use crate::operators::forecast::ForecastParams;

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
    /// The process index is not in the cluster.
    #[error("process {process} is not in the cluster (it has {processes} process(es): 0..{processes})")]
    NoSuchProcess { process: usize, processes: usize },
}

/// Runs process `process` until the dataflow completes; returns this process's counters.
pub fn run_process(settings: &Settings, process: usize, shutdown: Arc<AtomicBool>) -> Result<Snapshot, RunError> {
    run_process_with(settings, process, shutdown, Arc::new(Metrics::default()))
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
            &[&t.features, &t.predictions, &t.dlq],
            t.partitions,
            t.replication,
        )?;
    }
    let store = ModelStore::new(&settings.models.dir);
    let forecast_model = store.describe_choice("forecast");
    let anomaly_model = store.describe_choice("anomaly");
    tracing::info!(process, processes = settings.processes.len(), workers = settings.workers, forecast = %forecast_model, anomaly = %anomaly_model, "starting");

    let settings = Arc::new(settings.clone());
    let worker_metrics = metrics.clone();
    let guards = timely::execute(settings.timely_config(process), move |worker| -> Result<(), String> {
        let s = &settings;
        let index = worker.index();
        let peers = worker.peers();
        let setup = || -> Result<_, KafkaIoError> {
            let consumer = kafka::consumer(&s.kafka.brokers, &s.kafka.group_id, &s.consumer_options())?;
            let partitions = kafka::wait_for_topic(&consumer, &s.kafka.brokers, &s.topics.features, Duration::from_secs(60))?;
            let reader = PartitionReader::new(consumer, &s.topics.features, partitions, index, peers, s.source.start)?;
            let producer = delivery_producer(
                &s.kafka.brokers,
                &s.producer_options(),
                SinkTopics {
                    predictions: s.topics.predictions.clone(),
                    dlq: s.topics.dlq.clone(),
                },
            )?;
            Ok((reader, producer))
        };
        let (reader, producer) = setup().map_err(|e| format!("worker {index}: {e}"))?;
        tracing::info!(worker = index, partitions = ?reader.partitions(), "worker ready");
        let reader = Rc::new(RefCell::new(reader));
        let parts = InferenceParts {
            source: KafkaSourceSpec {
                topic: s.topics.features.clone(),
                max_poll_records: s.source.max_poll_records,
                start: s.source.start,
                stop_at_end: s.source.stop_at_end,
                epoch_ms: s.dataflow.epoch_ms,
                metadata_refresh: Duration::from_millis(s.source.metadata_refresh_ms),
                shutdown: shutdown.clone(),
            },
            reader: reader.clone(),
            producer,
            forecast: ForecastParams {
                interval: s.models.interval,
                fallback: FallbackParams::default(),
            },
            anomaly: AnomalyParams::default(),
            metrics: worker_metrics.clone(),
        };
        let probe = worker.dataflow(|scope| inference::build(scope, parts));
        let log_every = Duration::from_secs(s.dataflow.log_every_s);
        let mut last_log = Instant::now();
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(100)));
            if index == process * s.workers && !log_every.is_zero() && last_log.elapsed() >= log_every {
                last_log = Instant::now();
                tracing::info!(process, "progress: {}", worker_metrics.snapshot());
            }
        }
        reader.borrow_mut().commit_all_sync();
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
    if !failures.is_empty() {
        return Err(RunError::Workers(failures.join("; ")));
    }
    let snap = metrics.snapshot();
    tracing::info!(process, "finished: {snap}");
    Ok(snap)
}
