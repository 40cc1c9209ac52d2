//! The per-worker checkpoint writer, driven by the worker loop.
//!
//! ```text
//!   worker thread                                                    background writer thread
//!   "acknowledged" probe passes boundary C (a multiple of checkpoint.interval in epochs)
//!      ├─ source:     next offsets as of C            (PartitionReader::positions_as_of)
//!      ├─ operators:  station states as of C          (SnapshotBook::at, taken inside each operator)
//!      └─ sink:       output positions as of C        (SinkProgress::as_of)
//!   ──> WorkerCheckpoint ───────────────────────────────────────────> serialise, checkpoint::write
//!                                                                     (atomic, fsync), collect garbage
//!   on a later poll, once durable <───────────────────────────────── done(C) / error
//!   ──> fold C into the bases, commit offsets to the group, open the source gate to C + lead
//! ```
//!
//! The file is serialised, written and fsynced on a thread of its own, so a slow disk (fsyncs of
//! up to 100 ms were seen on the project machine) no longer stalls the worker's processing. Nothing
//! depends on checkpoint C before it is durable: the bases, the group offsets, the source gate and
//! the pruning of snapshots move only when the writer reports C written, exactly as when the write
//! was inline. One write is in flight per worker; boundaries passed meanwhile are covered by the
//! next one.
//!
//! When the dataflow has drained (clean stop, `--until-end`), [`Checkpointer::finish`] waits for
//! the write in flight and writes the final checkpoint covering everything, so a restart resumes
//! exactly where the run stopped.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// The background writer (started by the first write).
    pub writer: Option<Writer>,
}

/// What the writer thread reports for one checkpoint.
struct Written {
    took: Duration,
    result: Result<(), CheckpointError>,
}

/// One worker's background checkpoint writer: a thread that serialises, writes and fsyncs the
/// checkpoints it is sent, one at a time, and reports each back.
pub struct Writer {
    jobs: Option<mpsc::Sender<WorkerCheckpoint>>,
    done: mpsc::Receiver<Written>,
    thread: Option<JoinHandle<()>>,
    /// The boundary being written, if any.
    in_flight: Option<u64>,
}

impl Writer {
    fn start(dir: PathBuf, worker: usize, retain: usize) -> Result<Writer, CheckpointError> {
        let (jobs, rx) = mpsc::channel::<WorkerCheckpoint>();
        let (tx, done) = mpsc::channel::<Written>();
        let thread = std::thread::Builder::new()
            .name(format!("ckpt-writer-{worker}"))
            .spawn(move || {
                for part in rx {
                    let started = Instant::now();
                    let result = checkpoint::write(&dir, &part).map(|_| ());
                    if result.is_ok() {
                        checkpoint::collect_garbage(&dir, worker, retain);
                    }
                    let took = started.elapsed();
                    if tx.send(Written { took, result }).is_err() {
                        return;
                    }
                }
            })
            .map_err(writer_error)?;
        Ok(Writer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: None,
        })
    }

    fn submit(&mut self, part: WorkerCheckpoint) -> Result<(), CheckpointError> {
        let boundary = part.id.epoch;
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(part).is_ok());
        if !sent {
            return Err(writer_gone());
        }
        self.in_flight = Some(boundary);
        Ok(())
    }

    /// The boundary and report of the write in flight: waits for it with `block`, else only if
    /// it is ready.
    fn reap(&mut self, block: bool) -> Result<Option<(u64, Written)>, CheckpointError> {
        let Some(boundary) = self.in_flight else {
            return Ok(None);
        };
        let got = if block {
            self.done.recv().map_err(|_| writer_gone())?
        } else {
            match self.done.try_recv() {
                Ok(w) => w,
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => return Err(writer_gone()),
            }
        };
        self.in_flight = None;
        Ok(Some((boundary, got)))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop once the job in flight is written
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An error of the writer thread itself (not of a checkpoint file).
fn writer_error(source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: PathBuf::from("<checkpoint writer thread>"),
        source,
    }
}

fn writer_gone() -> CheckpointError {
    writer_error(std::io::Error::other("the checkpoint writer thread stopped"))
}

impl Checkpointer {
    /// Applies a finished background write, and starts writing a checkpoint if the acknowledged
    /// frontier passed a new boundary and no write is in flight.
    pub fn poll(&mut self, acked: &ProbeHandle<u64>) -> Result<(), CheckpointError> {
        self.reap(false)?;
        if self.writer.as_ref().is_some_and(|w| w.in_flight.is_some()) {
            return Ok(());
        }
        let Some(f) = acked.with_frontier(|f| f.iter().next().copied()) else {
            return Ok(());
        };
        if f == 0 {
            return Ok(());
        }
        let boundary = ((f - 1) / self.every) * self.every;
        if boundary <= self.last {
            return Ok(());
        }
        let Some(part) = self.part(boundary) else {
            return Ok(());
        };
        let writer = match self.writer.as_mut() {
            Some(w) => w,
            None => self.writer.insert(Writer::start(self.dir.clone(), self.worker, self.retain)?),
        };
        writer.submit(part)
    }

    /// Waits for the write in flight, then writes the final checkpoint once the dataflow has
    /// drained (on this thread: nothing is left to process).
    pub fn finish(&mut self) -> Result<(), CheckpointError> {
        self.reap(true)?;
        let started = Instant::now();
        let Some(part) = self.part(FINAL_EPOCH) else {
            // An operator never took the final snapshot: the last durable checkpoint stays the
            // resume point (as when the writes were inline).
            tracing::debug!(
                worker = self.worker,
                "no final snapshot; the last checkpoint stays the resume point"
            );
            return Ok(());
        };
        checkpoint::write(&self.dir, &part)?;
        self.durable(FINAL_EPOCH, started.elapsed());
        checkpoint::collect_garbage(&self.dir, self.worker, self.retain);
        Ok(())
    }

    /// Applies the writer's report of the write in flight, if there is one (waiting for it with
    /// `block`).
    fn reap(&mut self, block: bool) -> Result<(), CheckpointError> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if let Some((boundary, written)) = w.reap(block)? {
            written.result?;
            self.durable(boundary, written.took);
        }
        Ok(())
    }

    /// This worker's part of the checkpoint at `boundary`, or `None` while an operator has not
    /// been scheduled since its frontier passed the boundary (tried again on the next poll).
    fn part(&self, boundary: u64) -> Option<WorkerCheckpoint> {
        let mut operators: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
        for (name, book) in &self.books {
            let snap = book.borrow().at(boundary)?;
            operators.insert(name.to_string(), (*snap).clone());
        }
        Some(WorkerCheckpoint {
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
        })
    }

    /// Checkpoint `boundary` is durable: fold it into the bases, commit the offsets to the
    /// group, prune the snapshots and open the source gate.
    fn durable(&mut self, boundary: u64, took: Duration) {
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
        self.metrics.ops.checkpoint_written(self.worker, boundary, took); // crate::ops
        tracing::debug!(
            worker = self.worker,
            epoch = boundary,
            ms = took.as_millis() as u64,
            "checkpoint written"
        );
    }
}
