//! The Kafka side of one stage on one worker, built the same way for every stage (features,
//! inference): the partition reader and source spec, the exactly-once sink's parts, the
//! backpressure gate and the checkpointer. Each stage adds only its operators' checkpoints.
//!
//! ```text
//!   input topic ──wait_for_topic──> PartitionReader (partition p on worker p mod peers,
//!                                    from the restored offsets or source.start) ──> KafkaSourceSpec
//!   output topics ──owned(index, peers)──> from each one's checkpointed offset: read back the ids
//!                  this lineage already published ──> SinkParts (skips them), SinkProgress
//!   checkpoint dir ──> lineage, Gate (reading may lead the last durable checkpoint by max_lead_ms)
//!                  ──> Checkpointer (reader offsets + operator books + sink progress)
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::Restored;
use crate::checkpointer::Checkpointer;
use crate::config::Settings;
use crate::kafka::sink::{self, delivery_producer, OutTopic, SinkParts, SinkProgress, SinkTopics};
use crate::kafka::source::{epoch_now, Gate, PartitionReader};
use crate::kafka::{self, KafkaIoError, KafkaSourceSpec};
use crate::metrics::Metrics;
use crate::operators::keyed::SnapshotBook;

/// Which topics a stage reads and writes, and where it keeps its checkpoints.
pub struct StageSpec<'a> {
    /// Stage name for logs.
    pub name: &'static str,
    /// The input topic.
    pub input: &'a str,
    /// Output topics by kind.
    pub outputs: Vec<(OutTopic, &'a str)>,
    /// The stage's checkpoint directory.
    pub checkpoint_dir: PathBuf,
    /// Consumer group of the read-back of published outputs.
    pub readback_group: String,
}

/// A stage's Kafka side on one worker.
pub struct StageIo {
    /// The partitions this worker reads.
    pub reader: Rc<RefCell<PartitionReader>>,
    /// The source operator's settings.
    pub source: KafkaSourceSpec,
    /// The sink operator's parts.
    pub sink: SinkParts,
    /// Backpressure: how far reading may run ahead of the last durable checkpoint.
    pub gate: Gate,
    /// Whether checkpoints are on.
    pub checkpointing: bool,
}

impl StageIo {
    /// Connects the stage on worker `index` of `peers`, resuming from `restored`.
    pub fn connect(
        s: &Settings,
        spec: &StageSpec<'_>,
        index: usize,
        peers: usize,
        restored: Option<&Restored>,
        shutdown: &Arc<AtomicBool>,
        metrics: &Arc<Metrics>,
    ) -> Result<StageIo, KafkaIoError> {
        let ckpt = s.checkpoint.enabled;
        let consumer = kafka::consumer(&s.kafka.brokers, &s.kafka.group_id, &s.consumer_options())?;
        let wait = Duration::from_secs(60);
        let partitions = kafka::wait_for_topic(&consumer, &s.kafka.brokers, spec.input, wait)?;
        let mut topics = SinkTopics::default();
        for (kind, name) in &spec.outputs {
            let n = kafka::wait_for_topic(&consumer, &s.kafka.brokers, name, wait)?;
            topics = topics.with(*kind, name, n as i32);
        }
        let restored_inputs = restored.map(|r| r.inputs(spec.input)).unwrap_or_default();
        let reader = PartitionReader::new(consumer, spec.input, partitions, index, peers, s.source.start, restored_inputs)?;

        // Output partitions this worker writes, and where records newer than the checkpoint may be.
        let mut base: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        let mut scan: Vec<(String, i32, i64)> = Vec::new();
        for (_, name, p) in topics.owned(index, peers) {
            let from = restored.and_then(|r| r.outputs(&name).get(&p).copied());
            if let Some(o) = from {
                base.entry(name.clone()).or_default().insert(p, o);
            }
            scan.push((name, p, from.unwrap_or(0)));
        }
        let (lineage, published) = if ckpt {
            let lineage = crate::runner::wait_for_lineage(&spec.checkpoint_dir)?;
            let readback = kafka::consumer(&s.kafka.brokers, &spec.readback_group, &s.consumer_options())?;
            let ids = sink::published_ids(&readback, &lineage, &scan, Duration::from_secs(300))?;
            if !ids.is_empty() {
                tracing::info!(
                    worker = index,
                    stage = spec.name,
                    outputs = ids.len(),
                    "outputs published after the checkpoint will not be produced again"
                );
            }
            (lineage, ids)
        } else {
            ("unchecked".to_string(), Default::default())
        };
        let producer = delivery_producer(&s.kafka.brokers, &s.producer_options(), metrics.ack_tap.get())?;
        let progress = Rc::new(RefCell::new(SinkProgress::restored(base)));
        let gate = if ckpt {
            Gate(Rc::new(std::cell::Cell::new(
                epoch_now(s.dataflow.epoch_ms) + s.checkpoint_lead_epochs(),
            )))
        } else {
            Gate::open()
        };
        Ok(StageIo {
            reader: Rc::new(RefCell::new(reader)),
            source: KafkaSourceSpec {
                topic: spec.input.to_string(),
                max_poll_records: s.source.max_poll_records,
                max_in_flight: s.source.max_in_flight,
                start: s.source.start,
                stop_at_end: s.source.stop_at_end,
                epoch_ms: s.dataflow.epoch_ms,
                metadata_refresh: Duration::from_millis(s.source.metadata_refresh_ms),
                shutdown: shutdown.clone(),
            },
            sink: SinkParts {
                lineage,
                producer,
                topics,
                published,
                progress,
                metrics: metrics.clone(),
            },
            gate,
            checkpointing: ckpt,
        })
    }

    /// The stage's checkpointer (when checkpoints are on): the reader's offsets, the operators'
    /// `books` and the sink's progress, written into the stage's directory.
    #[allow(clippy::too_many_arguments)]
    pub fn checkpointer(
        &self,
        s: &Settings,
        spec: &StageSpec<'_>,
        index: usize,
        peers: usize,
        execution: u64,
        books: Vec<(&'static str, Rc<RefCell<SnapshotBook>>)>,
        metrics: &Arc<Metrics>,
    ) -> Option<Checkpointer> {
        self.checkpointing.then(|| Checkpointer {
            dir: spec.checkpoint_dir.clone(),
            worker: index,
            peers,
            execution,
            every: s.checkpoint_every_epochs(),
            lead: s.checkpoint_lead_epochs(),
            retain: s.checkpoint.retain,
            input_topic: spec.input.to_string(),
            reader: self.reader.clone(),
            books,
            progress: self.sink.progress.clone(),
            gate: self.gate.clone(),
            metrics: metrics.clone(),
            last: 0,
            writer: None,
        })
    }
}
