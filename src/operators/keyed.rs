//! The shared shape of weatherflow's stateful operators: exchange records by station, buffer them
//! under their epoch's capability, and when the input frontier passes the epoch apply the
//! per-station logic in input order (partition, offset), releasing outputs at that epoch.
//!
//! ```text
//!   records @ e ──Exchange(fnv1a(station))──> buffer[e] ──(frontier > e)──> sort by (partition, offset)
//!                                                                         └─> logic(&mut state[station], record) ──> outputs @ e
//! ```
//!
//! Waiting for the frontier makes each epoch's effect on the state complete and deterministic:
//! the state after epoch `e` depends only on the records of epochs `<= e`, in input order, whatever
//! the number of workers or how the exchange interleaved them. That is what makes 1 x 1 and
//! 2 x 2 clusters produce identical outputs, and what a checkpoint of the state at `e` captures.
//! (Modelled on timely's `wordcount` example and the `state_machine` aggregation operator.)

use std::collections::{BTreeMap, HashMap};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::kafka::assign::station_hash;

/// A record that belongs to a station and has a position in the input.
pub trait StationRecord {
    /// The station whose state the record updates.
    fn station(&self) -> &str;
    /// Input order: (partition, offset).
    fn position(&self) -> (i32, i64);
}

/// Applies `logic` per station, in input order, with state created by `init` on first sight.
///
/// `logic(state, record, out)` pushes zero or more outputs into `out`.
pub fn per_station<'s, D, S, O, I, L>(stream: StreamVec<'s, u64, D>, name: &str, mut init: I, mut logic: L) -> StreamVec<'s, u64, O>
where
    D: ExchangeData + StationRecord,
    O: 'static,
    S: 'static,
    I: FnMut(&str) -> S + 'static,
    L: FnMut(&mut S, D, &mut Vec<O>) + 'static,
{
    let exchange = Exchange::new(|d: &D| station_hash(d.station()));
    stream.unary_frontier::<CapacityContainerBuilder<Vec<O>>, _, _, _>(exchange, name, move |_cap, _info| {
        let mut pending: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
        let mut states: HashMap<String, S> = HashMap::new();
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
                let (cap, mut records) = entry.remove();
                records.sort_by_key(|r| r.position());
                let mut session = output.session(&cap);
                for r in records {
                    if !states.contains_key(r.station()) {
                        let fresh = init(r.station());
                        states.insert(r.station().to_string(), fresh);
                    }
                    let Some(state) = states.get_mut(r.station()) else { continue };
                    logic(state, r, &mut out);
                    session.give_iterator(out.drain(..));
                }
            }
        }
    })
}
