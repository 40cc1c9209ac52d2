//! Pipeline stages of one `weatherflow run`: the features stage (`dataflows/features.rs`) set up
//! on each worker next to, before, or instead of the inference stage, as `[pipeline] stages`
//! chooses. The runner calls [`start_features`] and [`finish_features`]; everything else about
//! the stage lives here.
//!
//! ```text
//!   stages = ["inference"]              inference only (the default)
//!   stages = ["features"]               weather-raw ──features──> weather-features
//!   stages = ["features", "inference"]  weather-raw ──features──> weather-features ──inference──> weather-predictions
//!        streaming:    both dataflows on every worker at once, linked through weather-features
//!        --until-end:  features to the end of weather-raw first, then inference to the end of
//!                      weather-features (so inference cannot stop before the features are written)
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use rdkafka::consumer::CommitMode;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::checkpoint;
use crate::checkpointer::Checkpointer;
use crate::config::{Settings, Stage};
use crate::dataflows::features::{self, FeaturesParts};
use crate::features::event_time::WindowSpec;
use crate::kafka::assign::station_hash;
use crate::kafka::sink::OutTopic;
use crate::kafka::source::PartitionReader;
use crate::kafka::KafkaIoError;
use crate::metrics::Metrics;
use crate::operators::keyed::{OperatorCheckpoint, SnapshotBook};
use crate::operators::window::WindowParams;
use crate::operators::window::{CLOCKS_OPERATOR, WINDOWS_OPERATOR};
use crate::stage::{StageIo, StageSpec};
use std::path::PathBuf;

/// Topics process 0 creates for the configured stages.
pub fn topics_to_create(s: &Settings) -> Vec<&str> {
    let t = &s.topics;
    let mut v: Vec<&str> = Vec::new();
    if s.pipeline.runs(Stage::Features) {
        v.extend([t.raw.as_str(), t.raw_dlq.as_str(), t.late.as_str(), t.features.as_str()]);
    }
    if s.pipeline.runs(Stage::Inference) {
        v.extend([t.features.as_str(), t.predictions.as_str(), t.dlq.as_str()]);
    }
    v.dedup();
    v
}

/// The window settings of `[features]`.
pub fn window_params(s: &Settings) -> WindowParams {
    let f = &s.features;
    WindowParams {
        spec: WindowSpec {
            size: ChronoDuration::seconds(f.window_s as i64),
            allowed_lateness: ChronoDuration::seconds(f.allowed_lateness_s as i64),
        },
        idle_timeout: Duration::from_millis(f.idle_timeout_ms),
        max_future: (f.max_future_s > 0).then(|| ChronoDuration::seconds(f.max_future_s as i64)),
        source_topic: s.topics.raw.clone(),
    }
}

/// Where the features stage keeps its checkpoints (a namespace of its own under checkpoint.dir).
pub fn features_dir(s: &Settings) -> PathBuf {
    s.checkpoint.dir.join("features")
}

/// The features stage running on one worker.
pub struct FeaturesRun {
    probe: ProbeHandle<u64>,
    reader: Rc<RefCell<PartitionReader>>,
    checkpointer: Option<Checkpointer>,
    metrics: Arc<Metrics>,
    worker: usize,
}

impl FeaturesRun {
    /// Every output of every epoch is acknowledged and the source has finished.
    pub fn done(&self) -> bool {
        self.probe.done()
    }

    /// Writes a checkpoint of the stage if its acknowledged frontier passed a new boundary.
    pub fn poll_checkpoint(&mut self) -> Result<(), String> {
        match self.checkpointer.as_mut() {
            Some(c) => c
                .poll(&self.probe)
                .map_err(|e| format!("worker {}: features stage: {e}", self.worker)),
            None => Ok(()),
        }
    }
}

/// One line of the stage's counters (process-wide).
pub fn progress_line(m: &Metrics) -> String {
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "features stage: observations in={} windows={} (acked {}) invalid={} (dlq acked {}) late={} (acked {}) retries={}",
        r(&m.records_in),
        r(&m.windows_emitted),
        r(&m.features_acked),
        r(&m.rejected_invalid),
        r(&m.dlq_acked),
        r(&m.rejected_late),
        r(&m.late_acked),
        r(&m.delivery_retries)
    )
}

/// Builds the features dataflow on this worker when the stage is configured. When both stages
/// run to the end of their input (`stop_at_end`), runs it to completion here, before the caller
/// builds the inference dataflow, and returns `None`; otherwise returns the running stage for
/// [`finish_features`].
pub fn start_features(
    worker: &mut Worker,
    s: &Settings,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
) -> Result<Option<FeaturesRun>, String> {
    if !s.pipeline.runs(Stage::Features) {
        return Ok(None);
    }
    let index = worker.index();
    let (parts, checkpointer) =
        features_parts(s, index, worker.peers(), shutdown, metrics).map_err(|e| format!("worker {index}: features stage: {e}"))?;
    let reader = parts.reader.clone();
    tracing::info!(worker = index, partitions = ?reader.borrow().partitions(), topic = %s.topics.raw, "features stage ready");
    let probe = worker.dataflow(|scope| features::build(scope, parts));
    let run = FeaturesRun {
        probe,
        reader,
        checkpointer,
        metrics: metrics.clone(),
        worker: index,
    };
    if s.source.stop_at_end && s.pipeline.runs(Stage::Inference) {
        drain(worker, run, s.dataflow.log_every_s)?;
        return Ok(None);
    }
    Ok(Some(run))
}

/// Steps this worker until the features stage (if still running) has drained, then commits its
/// offsets. With `stages = ["features"]` this is the whole run.
pub fn finish_features(worker: &mut Worker, run: Option<FeaturesRun>, log_every_s: u64) -> Result<(), String> {
    match run {
        Some(run) => drain(worker, run, log_every_s),
        None => Ok(()),
    }
}

fn drain(worker: &mut Worker, mut run: FeaturesRun, log_every_s: u64) -> Result<(), String> {
    let log_every = Duration::from_secs(log_every_s);
    let mut last_log = Instant::now();
    while !run.done() {
        worker.step_or_park(Some(Duration::from_millis(20)));
        run.poll_checkpoint()?;
        if run.worker == 0 && !log_every.is_zero() && last_log.elapsed() >= log_every {
            last_log = Instant::now();
            tracing::info!("progress: {}", progress_line(&run.metrics));
        }
    }
    match run.checkpointer.as_mut() {
        Some(c) => c
            .finish()
            .map_err(|e| format!("worker {}: features stage: final checkpoint: {e}", run.worker))?,
        None => {
            let mut r = run.reader.borrow_mut();
            r.fold_through(u64::MAX);
            r.commit(CommitMode::Sync);
        }
    }
    if run.worker == 0 {
        tracing::info!("finished: {}", progress_line(&run.metrics));
    }
    Ok(())
}

fn features_parts(
    s: &Settings,
    index: usize,
    peers: usize,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
) -> Result<(FeaturesParts, Option<Checkpointer>), KafkaIoError> {
    let t = &s.topics;
    let ckpt = s.checkpoint.enabled;
    let dir = features_dir(s);
    let restored = if ckpt { checkpoint::load_latest(&dir) } else { None };
    if let Some(r) = &restored {
        if r.parts.iter().flat_map(|p| p.inputs.keys()).any(|k| *k != t.raw) {
            return Err(KafkaIoError::Restore(format!(
                "{} holds checkpoints of another input topic than {:?}; use another checkpoint.dir, or remove it to start afresh",
                dir.display(),
                t.raw
            )));
        }
        if index == 0 {
            tracing::info!(checkpoint = ?r.id, written_by_workers = r.peers, "features stage: resuming from checkpoint");
        }
    }
    let execution = restored.as_ref().map(|r| r.id.execution + 1).unwrap_or(1);
    let spec = StageSpec {
        name: "features",
        input: &t.raw,
        outputs: vec![
            (OutTopic::Features, &t.features),
            (OutTopic::Dlq, &t.raw_dlq),
            (OutTopic::Late, &t.late),
        ],
        checkpoint_dir: dir.clone(),
        readback_group: format!("{}-features-readback", s.kafka.group_id),
    };
    let io = StageIo::connect(s, &spec, index, peers, restored.as_ref(), shutdown, metrics)?;

    let every = s.checkpoint_every_epochs();
    let err = |e: checkpoint::CheckpointError| KafkaIoError::Restore(e.to_string());
    let clocks_book = Rc::new(RefCell::new(SnapshotBook::default()));
    let windows_book = Rc::new(RefCell::new(SnapshotBook::default()));
    // Clocks follow their partition's reader (p mod peers); windows follow their station.
    let my_partition = |p: &str| p.parse::<usize>().is_ok_and(|p| p % peers == index);
    let my_station = |st: &str| station_hash(st) % peers as u64 == index as u64;
    let clocks = OperatorCheckpoint {
        restored: restored
            .as_ref()
            .map(|r| r.states(CLOCKS_OPERATOR, my_partition))
            .transpose()
            .map_err(err)?
            .unwrap_or_default(),
        book: ckpt.then(|| clocks_book.clone()),
        every,
    };
    let windows = OperatorCheckpoint {
        restored: restored
            .as_ref()
            .map(|r| r.states(WINDOWS_OPERATOR, my_station))
            .transpose()
            .map_err(err)?
            .unwrap_or_default(),
        book: ckpt.then(|| windows_book.clone()),
        every,
    };
    let books = vec![(CLOCKS_OPERATOR, clocks_book), (WINDOWS_OPERATOR, windows_book)];
    let checkpointer = io.checkpointer(s, &spec, index, peers, execution, books, metrics);
    let parts = FeaturesParts {
        source: io.source,
        reader: io.reader,
        gate: io.gate,
        checkpointing: ckpt,
        clocks,
        windows,
        // A batch run (--until-end) completes every window; a streaming stop keeps open windows
        // in the final checkpoint (without checkpoints they would be lost, so they are emitted).
        flush_at_end: s.source.stop_at_end || !ckpt,
        sink: io.sink,
        window: window_params(s),
        metrics: metrics.clone(),
    };
    Ok((parts, checkpointer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    #[test]
    fn stages_choose_the_topics_to_create() {
        let mut raw = RawConfig::default();
        let s = raw.clone().resolve("t").unwrap();
        assert_eq!(
            topics_to_create(&s),
            ["weather-features", "weather-predictions", "weather-features-dlq"]
        );
        raw.pipeline.stages = vec![Stage::Features];
        let s = raw.clone().resolve("t").unwrap();
        assert_eq!(
            topics_to_create(&s),
            ["weather-raw", "weather-raw-dlq", "weather-raw-late", "weather-features"]
        );
        raw.pipeline.stages = vec![Stage::Features, Stage::Inference];
        let s = raw.resolve("t").unwrap();
        assert_eq!(topics_to_create(&s).len(), 6);
        let w = window_params(&s);
        assert_eq!(w.spec.size, ChronoDuration::hours(1));
        assert_eq!(w.spec.allowed_lateness, ChronoDuration::minutes(10));
        assert_eq!(w.max_future, Some(ChronoDuration::days(1)));
    }

    #[test]
    fn bad_pipeline_settings_are_named() {
        let raw = RawConfig::parse(
            "[pipeline]\nstages = []\n[features]\nwindow_s = 0\nidle_timeout_ms = 1\nallowed_lateness_s = 999999999\n[topics]\nraw = \"weather-features\"\nlate = \"x\"\nraw_dlq = \"x\"\n",
        )
        .unwrap();
        let fields: Vec<String> = raw.validate().into_iter().map(|p| p.field).collect();
        for f in [
            "pipeline.stages",
            "features.window_s",
            "features.idle_timeout_ms",
            "features.allowed_lateness_s",
            "topics.raw",
            "topics.late",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        let e = RawConfig::parse("[pipeline]\nstages = [\"spark\"]\n").unwrap_err();
        assert!(e.contains("spark") && e.contains("features") && e.contains("inference"), "{e}");
        let e = RawConfig::parse("[pipeline]\nstages = [\"features\", \"features\"]\n")
            .unwrap()
            .validate();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("twice"));
    }
}
