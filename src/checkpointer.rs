//! The per-worker checkpoint writer, driven by the worker loop.
//!
//! ```text
//!   "acknowledged" probe passes boundary C (a multiple of checkpoint.interval in epochs)
//!      ├─ source:     next offsets as of C            (PartitionReader::positions_as_of)
//!      ├─ operators:  station states as of C          (SnapshotBook::at, taken inside each operator)
//!      └─ sink:       output positions as of C        (SinkProgress::as_of)
//!   ──> checkpoint::write (atomic) ──> fold C into the bases, commit offsets to the group,
//!                                      open the source gate to C + lead, collect garbage
//! ```
//!
//! When the dataflow has drained (clean stop, `--until-end`), [`Checkpointer::finish`] writes the
//! final checkpoint covering everything, so a restart resumes exactly where the run stopped.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::CommitMode;
use serde_json::value::RawValue;
use timely::dataflow::ProbeHandle;

use crate::checkpoint::{self, CheckpointError, CheckpointId, WorkerCheckpoint, FINAL_EPOCH};
use crate::kafka::sink::SinkProgress;
use crate::kafka::source::{Gate, PartitionReader};
use crate::metrics::Metrics;
use crate::operators::keyed::SnapshotBook;

/// Writes this worker's checkpoints.
pub struct Checkpointer {
    /// Checkpoint directory.
    pub dir: PathBuf,
    /// This worker.
    pub worker: usize,
    /// All workers.
    pub peers: usize,
    /// This execution's number.
    pub execution: u64,
    /// Boundary spacing in epochs.
    pub every: u64,
    /// Allowed read lead over the last durable checkpoint, in epochs.
    pub lead: u64,
    /// Complete checkpoints to keep.
    pub retain: usize,
    /// The input topic.
    pub input_topic: String,
    /// The source's reader.
    pub reader: Rc<RefCell<PartitionReader>>,
    /// Snapshot books of the stateful operators, by operator name.
    pub books: Vec<(&'static str, Rc<RefCell<SnapshotBook>>)>,
    /// The sink's output positions.
    pub progress: Rc<RefCell<SinkProgress>>,
    /// The source gate.
    pub gate: Gate,
    /// Process-wide counters.
    pub metrics: Arc<Metrics>,
    /// Last boundary written.
    pub last: u64,
}

impl Checkpointer {
    /// Writes a checkpoint if the acknowledged frontier passed a new boundary.
    pub fn poll(&mut self, acked: &ProbeHandle<u64>) -> Result<(), CheckpointError> {
        let Some(f) = acked.with_frontier(|f| f.iter().next().copied()) else {
            return Ok(());
        };
        if f == 0 {
            return Ok(());
        }
        let boundary = ((f - 1) / self.every) * self.every;
        if boundary > self.last {
            self.write(boundary)?;
        }
        Ok(())
    }

    /// Writes the final checkpoint once the dataflow has drained.
    pub fn finish(&mut self) -> Result<(), CheckpointError> {
        self.write(FINAL_EPOCH)
    }

    fn write(&mut self, boundary: u64) -> Result<(), CheckpointError> {
        let started = Instant::now();
        let mut operators: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
        for (name, book) in &self.books {
            match book.borrow().at(boundary) {
                Some(snap) => {
                    operators.insert(name.to_string(), (*snap).clone());
                }
                // The operator has not been scheduled since its frontier passed the boundary;
                // try again on the next step.
                None => return Ok(()),
            }
        }
        let part = WorkerCheckpoint {
            id: CheckpointId {
                execution: self.execution,
                epoch: boundary,
            },
            worker: self.worker,
            peers: self.peers,
            created_at: chrono::Utc::now().to_rfc3339(),
            inputs: BTreeMap::from([(self.input_topic.clone(), self.reader.borrow().positions_as_of(boundary))]),
            outputs: self.progress.borrow().as_of(boundary),
            operators,
        };
        checkpoint::write(&self.dir, &part)?;
        {
            let mut r = self.reader.borrow_mut();
            r.fold_through(boundary);
            r.commit(if boundary == FINAL_EPOCH {
                CommitMode::Sync
            } else {
                CommitMode::Async
            });
        }
        self.progress.borrow_mut().fold_through(boundary);
        for (_, book) in &self.books {
            book.borrow_mut().prune_through(boundary);
        }
        self.gate.0.set(boundary.saturating_add(self.lead));
        self.last = boundary;
        self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.metrics.ops.checkpoint_written(self.worker, boundary, started.elapsed()); // crate::ops
        tracing::debug!(
            worker = self.worker,
            epoch = boundary,
            ms = started.elapsed().as_millis() as u64,
            "checkpoint written"
        );
        checkpoint::collect_garbage(&self.dir, self.worker, self.retain);
        Ok(())
    }
}
