//! The shared shape of weatherflow's stateful operators: exchange records by station, buffer them
//! under their epoch's capability, and when the input frontier passes the epoch apply the
//! per-station logic in input order (partition, offset), releasing outputs at that epoch.
//!
//! ```text
//!   records @ e ──Exchange(fnv1a(station))──> buffer[e] ──(frontier > e)──> sort by (partition, offset)
//!                                                                         └─> logic(&mut state[station], record) ──> outputs @ e
//!                                                                             (RELEASE_CHUNK records per activation)
//!   before the first epoch after a checkpoint boundary B is applied: snapshot(all states) ──> SnapshotBook[B]
//!
//!   per_station output ──Pipeline──> per_station_in_order: logic(&mut state2[station], output) as it arrives
//! ```
//!
//! Waiting for the frontier makes each epoch's effect on the state complete and deterministic:
//! the state after epoch `e` depends only on the records of epochs `<= e`, in input order, whatever
//! the number of workers or how the exchange interleaved them. That is what makes 1 x 1 and
//! 2 x 2 clusters produce identical outputs, and what lets a checkpoint capture the state *as of*
//! a boundary even though the operator runs ahead of the checkpoint writer: the snapshot is taken
//! in the operator, between the last epoch `<= B` and the first epoch `> B`, and waits in the
//! [`SnapshotBook`] until the writer asks for it. (Modelled on timely's `wordcount` example and
//! the `state_machine` aggregation operator.)

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::checkpoint::FINAL_EPOCH;
use crate::kafka::assign::station_hash;

/// A record that belongs to a station and has a position in the input.
pub trait StationRecord {
    /// The station whose state the record updates.
    fn station(&self) -> &str;
    /// Input order: (partition, offset).
    fn position(&self) -> (i32, i64);
}

/// Snapshots of one operator's states, each valid for a range of checkpoint boundaries (no
/// record was applied between the boundaries of one range).
#[derive(Debug, Default)]
pub struct SnapshotBook {
    entries: Vec<(u64, u64, Rc<Box<RawValue>>)>,
}

impl SnapshotBook {
    /// The snapshot of the states as of `boundary`, if taken.
    pub fn at(&self, boundary: u64) -> Option<Rc<Box<RawValue>>> {
        self.entries
            .iter()
            .find(|(lo, hi, _)| *lo <= boundary && boundary <= *hi)
            .map(|e| e.2.clone())
    }

    /// Forgets snapshots that only cover boundaries up to `boundary`.
    pub fn prune_through(&mut self, boundary: u64) {
        self.entries.retain(|(_, hi, _)| *hi > boundary);
    }

    fn record(&mut self, lo: u64, hi: u64, snap: Rc<Box<RawValue>>) {
        self.entries.push((lo, hi, snap));
    }
}

/// Checkpointing of a stateful operator: the state to start from, and where its snapshots go.
pub struct OperatorCheckpoint<T> {
    /// State to start from (already filtered to this worker's share).
    pub restored: T,
    /// Where snapshots go; `None` disables snapshots.
    pub book: Option<Rc<RefCell<SnapshotBook>>>,
    /// Checkpoint boundaries are the multiples of this many epochs.
    pub every: u64,
}

/// Checkpointing of a per-station operator: `[station, state]` pairs.
pub type KeyedCheckpoint<S> = OperatorCheckpoint<Vec<(String, S)>>;

impl<T: Default> OperatorCheckpoint<T> {
    /// No checkpointing, empty start.
    pub fn disabled() -> Self {
        OperatorCheckpoint {
            restored: T::default(),
            book: None,
            every: 1,
        }
    }
}

/// Snapshot bookkeeping inside an operator: call [`BoundarySnapshots::take`] before applying the
/// first record of an epoch (with that epoch as the limit), after applying complete epochs (with
/// the input frontier), and once the input is exhausted (with `None`).
pub struct BoundarySnapshots {
    book: Option<Rc<RefCell<SnapshotBook>>>,
    every: u64,
    /// Boundaries up to this one have a snapshot.
    covered: u64,
    /// State changed since the last snapshot.
    dirty: bool,
    last: Option<Rc<Box<RawValue>>>,
}

impl BoundarySnapshots {
    /// Snapshots into `book` (none when `None`) at multiples of `every` epochs.
    pub fn new(book: Option<Rc<RefCell<SnapshotBook>>>, every: u64) -> Self {
        BoundarySnapshots {
            book,
            every: every.max(1),
            covered: 0,
            dirty: true,
            last: None,
        }
    }

    /// The state changed.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Records the current state, serialised by `state`, for every boundary `b` with
    /// `covered < b < limit` (`limit = None`: every boundary, the input is exhausted).
    pub fn take(&mut self, limit: Option<u64>, state: impl FnOnce() -> String) {
        let Some(book) = &self.book else { return };
        let hi = match limit {
            None => FINAL_EPOCH,
            Some(0) => return,
            Some(l) => ((l - 1) / self.every) * self.every,
        };
        if hi <= self.covered {
            return;
        }
        let snap = match (&self.last, self.dirty) {
            (Some(s), false) => s.clone(),
            _ => {
                // Serialisers of our own state types emit valid JSON.
                let raw = RawValue::from_string(state()).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("literal"));
                Rc::new(raw)
            }
        };
        book.borrow_mut().record(self.covered + 1, hi, snap.clone());
        self.last = Some(snap);
        self.dirty = false;
        self.covered = hi;
    }
}

/// Per-station states. foldhash, seeded per process, instead of the standard SipHash: a record
/// costs one lookup, and SipHash of the station id was 3 % of a worker's time end to end.
type States<S> = HashMap<String, S, foldhash::fast::RandomState>;

/// Serialises per-station states as a JSON array of `[station, state]`, sorted by station.
fn station_states<S: Serialize>(states: &States<S>) -> String {
    let mut v: Vec<(&String, &S)> = states.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

/// Applies `logic` to `record` and its station's state, created by `init` on first sight (one
/// lookup for a known station; the id is copied only for a new one). Inlined into the operators'
/// loops, as the code it replaced was.
#[inline(always)]
fn apply<D: StationRecord, S, O>(
    states: &mut States<S>,
    record: D,
    init: &mut impl FnMut(&str) -> S,
    logic: &mut impl FnMut(&mut S, D, &mut Vec<O>),
    out: &mut Vec<O>,
) {
    let state = match states.get_mut(record.station()) {
        Some(s) => s,
        None => {
            let fresh = init(record.station());
            states.entry(record.station().to_string()).or_insert(fresh)
        }
    };
    logic(state, record, out);
}

/// Most records a keyed operator applies in one activation before it yields (and asks to be
/// scheduled again): the operators downstream then take this share of an epoch while it is
/// still in cache, instead of the whole epoch after it has been written out to memory (an
/// epoch's records in flight take about 5 KB each, outputs included: BENCHMARKS.md).
pub const RELEASE_CHUNK: usize = 128;

/// The epoch being released: its capability and its remaining records, last first.
struct Releasing<D> {
    cap: Capability<u64>,
    /// Sorted by descending input position: the next record to apply is the last.
    rest: Vec<D>,
}

/// Applies `logic` per station, in input order, with state created by `init` on first sight or
/// restored from `ckpt`.
///
/// `logic(state, record, out)` pushes zero or more outputs into `out`. A complete epoch is
/// applied [`RELEASE_CHUNK`] records per activation; its capability is held until its last
/// record is applied, and the next epoch starts only after it.
pub fn per_station<'s, D, S, O, I, L>(
    stream: StreamVec<'s, u64, D>,
    name: &str,
    ckpt: KeyedCheckpoint<S>,
    mut init: I,
    mut logic: L,
) -> StreamVec<'s, u64, O>
where
    D: ExchangeData + StationRecord,
    O: 'static,
    S: Serialize + 'static,
    I: FnMut(&str) -> S + 'static,
    L: FnMut(&mut S, D, &mut Vec<O>) + 'static,
{
    let scope = stream.scope();
    let exchange = Exchange::new(|d: &D| station_hash(d.station()));
    stream.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(exchange, name, move |_cap, info| {
        let activator = scope.activator_for(info.address);
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
        let mut releasing: Option<Releasing<D>> = None;
        let mut states: States<S> = ckpt.restored.into_iter().collect();
        let mut snaps = BoundarySnapshots::new(ckpt.book, ckpt.every);
        let mut out: Vec<O> = Vec::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else { return };
                let slot = match pending.entry(time) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => match cap.retain_least(output.output_index()) {
                        Some(c) => v.insert((c, Vec::new())),
                        None => return,
                    },
                };
                for batch in data {
                    slot.1.append(batch);
                }
            });
            let mut budget = RELEASE_CHUNK;
            loop {
                if releasing.is_none() {
                    // Epochs are totally ordered: start the oldest once it is complete.
                    let Some(entry) = pending.first_entry() else { break };
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let time = *entry.key();
                    snaps.take(Some(time), || station_states(&states));
                    let (cap, mut rest) = entry.remove();
                    rest.sort_by_key(|r| std::cmp::Reverse(r.position()));
                    releasing = Some(Releasing { cap, rest });
                }
                let Some(r) = releasing.as_mut() else { break };
                let mut session = output.session(&r.cap);
                while budget > 0 {
                    let Some(record) = r.rest.pop() else { break };
                    budget -= 1;
                    apply(&mut states, record, &mut init, &mut logic, &mut out);
                    session.give_iterator(out.drain(..));
                }
                drop(session);
                snaps.mark_dirty();
                if !r.rest.is_empty() {
                    // Out of budget mid-epoch: the rest in a later activation, after downstream.
                    activator.activate();
                    return;
                }
                releasing = None;
            }
            // Boundaries the frontier has passed with no epoch left to apply before them.
            snaps.take(frontier.frontier().iter().next().copied(), || station_states(&states));
        }
    })
}

/// Applies `logic` per station as records arrive, for a stream that already holds each
/// station's records in input order on the worker that owns the station: the output of a
/// [`per_station`] operator keyed the same way (records stay on their worker: no exchange, and no
/// waiting for the frontier, since one upstream operator releases epochs whole and in order).
///
/// ```text
///   per_station output @ e (in order) ──Pipeline──> logic(&mut state[station], record) ──> outputs @ e
///   first record of an epoch after a checkpoint boundary B: snapshot(all states) ──> SnapshotBook[B]
/// ```
///
/// The snapshot rule is [`per_station`]'s, read off the arrival order: every record of epochs
/// `<= B` has arrived (and been applied) before the first record of an epoch `> B`.
///
/// `logic` also gets the wall-clock time the records' batch was taken up, read once per batch
/// (a batch is at most one release chunk of the operator upstream): reading the clock per record
/// was a third of completing a prediction.
pub fn per_station_in_order<'s, D, S, O, I, L>(
    stream: StreamVec<'s, u64, D>,
    name: &str,
    ckpt: KeyedCheckpoint<S>,
    mut init: I,
    mut logic: L,
) -> StreamVec<'s, u64, O>
where
    D: StationRecord + 'static,
    O: 'static,
    S: Serialize + 'static,
    I: FnMut(&str) -> S + 'static,
    L: FnMut(&mut S, D, DateTime<Utc>, &mut Vec<O>) + 'static,
{
    stream.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(Pipeline, name, move |_cap, info| {
        let mut states: States<S> = ckpt.restored.into_iter().collect();
        let mut snaps = BoundarySnapshots::new(ckpt.book, ckpt.every);
        let mut out: Vec<O> = Vec::new();
        let mut newest = 0u64;
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else { return };
                if time < newest {
                    // Not the stream this operator is for; its checkpoints could mix epochs.
                    tracing::error!(operator = ?info.address, time, newest, "records arrived out of epoch order");
                }
                newest = newest.max(time);
                snaps.take(Some(time), || station_states(&states));
                let mut session = output.session(&cap);
                for batch in data {
                    let now = Utc::now();
                    let mut logic = |state: &mut S, record: D, out: &mut Vec<O>| logic(state, record, now, out);
                    for record in batch.drain(..) {
                        apply(&mut states, record, &mut init, &mut logic, &mut out);
                        session.give_iterator(out.drain(..));
                    }
                }
                snaps.mark_dirty();
            });
            snaps.take(frontier.frontier().iter().next().copied(), || station_states(&states));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::capture::{Capture, Extract};
    use timely::dataflow::operators::vec::Input;
    use timely::dataflow::operators::Probe;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        station: String,
        offset: i64,
    }

    impl StationRecord for R {
        fn station(&self) -> &str {
            &self.station
        }
        fn position(&self) -> (i32, i64) {
            (0, self.offset)
        }
    }

    type Seen = BTreeMap<String, Vec<i64>>;

    /// The states of a book's snapshot at `boundary`.
    fn snapshot(book: &Rc<RefCell<SnapshotBook>>, boundary: u64) -> Option<Seen> {
        let raw = book.borrow().at(boundary)?;
        Some(
            serde_json::from_str::<Vec<(String, Vec<i64>)>>(raw.get())
                .unwrap()
                .into_iter()
                .collect(),
        )
    }

    /// Epochs of 1,300, 700 and 9 records (more than one release chunk), fed in reverse order,
    /// through a `per_station` operator and a `per_station_in_order` one after it, each keeping
    /// the offsets it applied per station; snapshots at every epoch.
    #[test]
    fn chunked_release_and_in_order_scoring_keep_input_order_and_snapshot_whole_epochs() {
        let epochs: Vec<Vec<R>> = [(0, 1300), (1300, 2000), (2000, 2009)]
            .iter()
            .map(|&(a, b)| {
                (a..b)
                    .map(|o| R {
                        station: format!("s{}", o % 3),
                        offset: o,
                    })
                    .collect()
            })
            .collect();
        let outputs = Arc::new(Mutex::new(None));
        let captured = outputs.clone();
        let data = epochs.clone();
        timely::execute_directly(move |worker| {
            let books = [
                Rc::new(RefCell::new(SnapshotBook::default())),
                Rc::new(RefCell::new(SnapshotBook::default())),
            ];
            let (first, second) = (books[0].clone(), books[1].clone());
            let ckpt = |book: &Rc<RefCell<SnapshotBook>>| KeyedCheckpoint::<Vec<i64>> {
                restored: Vec::new(),
                book: Some(book.clone()),
                every: 1,
            };
            let (mut input, probe, rx) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<R>();
                let applied = per_station(
                    stream,
                    "first",
                    ckpt(&first),
                    |_| Vec::new(),
                    |seen: &mut Vec<i64>, r: R, out| {
                        seen.push(r.offset);
                        out.push(r);
                    },
                );
                let scored = per_station_in_order(
                    applied,
                    "second",
                    ckpt(&second),
                    |_| Vec::new(),
                    |seen: &mut Vec<i64>, r: R, _now, out| {
                        seen.push(r.offset);
                        out.push(r.offset);
                    },
                );
                let (probe, scored) = scored.probe();
                (input, probe, scored.capture())
            });
            for (e, records) in data.iter().enumerate() {
                for r in records.iter().rev() {
                    input.send(r.clone());
                }
                input.advance_to(e as u64 + 1);
                while probe.less_than(&(e as u64 + 1)) {
                    worker.step();
                }
            }
            input.close();
            while !probe.done() {
                worker.step();
            }
            let snaps: Vec<Vec<Option<Seen>>> = books
                .iter()
                .map(|b| [1, 2, FINAL_EPOCH].iter().map(|&at| snapshot(b, at)).collect())
                .collect();
            *captured.lock().unwrap() = Some((rx, snaps));
        });
        let (rx, snaps) = outputs.lock().unwrap().take().unwrap();
        let out: Vec<(u64, Vec<i64>)> = rx.extract();
        // Every record once, at its own epoch, in input order within the epoch.
        for (e, records) in epochs.iter().enumerate() {
            let got = out.iter().find(|(t, _)| *t == e as u64).map(|(_, v)| v.clone()).unwrap_or_default();
            assert_eq!(got, records.iter().map(|r| r.offset).collect::<Vec<_>>(), "epoch {e}");
        }
        // A snapshot at boundary b holds exactly the records of epochs <= b, in both operators.
        let upto = |b: usize| -> Seen {
            let mut m = Seen::new();
            for r in epochs[..=b].iter().flatten() {
                m.entry(r.station.clone()).or_default().push(r.offset);
            }
            m
        };
        let sizes = |s: Option<&Seen>| s.map(|m| m.values().map(Vec::len).collect::<Vec<_>>());
        for (operator, at) in ["per_station", "per_station_in_order"].iter().zip(&snaps) {
            for (got, (want, name)) in at
                .iter()
                .zip([(upto(1), "boundary 1"), (upto(2), "boundary 2"), (upto(2), "final")])
            {
                assert!(
                    got.as_ref() == Some(&want),
                    "{operator}, {name}: records per station {:?}, expected {:?}",
                    sizes(got.as_ref()),
                    sizes(Some(&want))
                );
            }
        }
    }
}
