//! The shared shape of weatherflow's stateful operators: exchange records by station, buffer them
//! under their epoch's capability, and when the input frontier passes the epoch apply the
//! per-station logic in input order (partition, offset), releasing outputs at that epoch.
//!
//! ```text
//!   records @ e ──Exchange(fnv1a(station))──> buffer[e] ──(frontier > e)──> sort by (partition, offset)
//!                                                                         └─> logic(&mut state[station], record) ──> outputs @ e
//!   before the first epoch after a checkpoint boundary B is applied: snapshot(all states) ──> SnapshotBook[B]
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

use serde::Serialize;
use serde_json::value::RawValue;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
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

/// Applies `logic` per station, in input order, with state created by `init` on first sight or
/// restored from `ckpt`.
///
/// `logic(state, record, out)` pushes zero or more outputs into `out`.
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
    let exchange = Exchange::new(|d: &D| station_hash(d.station()));
    stream.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(exchange, name, move |_cap, _info| {
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
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
            // Epochs are totally ordered: release complete ones from the oldest.
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let time = *entry.key();
                snaps.take(Some(time), || station_states(&states));
                let (cap, mut records) = entry.remove();
                records.sort_by_key(|r| r.position());
                let mut session = output.session(&cap);
                for r in records {
                    let state = match states.get_mut(r.station()) {
                        Some(s) => s,
                        None => {
                            let fresh = init(r.station());
                            states.entry(r.station().to_string()).or_insert(fresh)
                        }
                    };
                    logic(state, r, &mut out);
                    session.give_iterator(out.drain(..));
                }
                snaps.mark_dirty();
            }
            // Boundaries the frontier has passed with no epoch left to apply before them.
            snaps.take(frontier.frontier().iter().next().copied(), || station_states(&states));
        }
    })
}
