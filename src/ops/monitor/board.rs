//! The board: per station, the newest forecast, the recent actuals and the rolling verification
//! sums; publishes them at most every `publish_interval_ms`, and raises a skill alert when a
//! station's forecasts do worse than persistence.
//!
//! ```text
//!   Tracked events ──exchange(station)──┐
//!                                       ├─> pending[epoch] ──(both frontiers passed)──> apply in input order
//!   Stats updates ──exchange(station)───┘        (stats: the count_total changes of (station, lead);
//!                                                 station "" holds the all-station sums)
//!   every publish_interval (wall clock), or when the inputs end:
//!     dirty stations ──> Station snapshot (chart) + StationMetrics (+ SkillAlert on a crossing)
//!     all stations   ──> OverallMetrics;  flagged predictions ──> Anomaly
//! ```
//!
//! A capability at the newest applied epoch is held while something is waiting to be published,
//! so downstream progress (and the stage's offset commits) trail publication by at most one
//! interval.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::{
    AlertState, AnomalyView, Event, ForecastTrace, MonitorParams, OverallMetrics, Published, ScopeMetrics, SkillAlert, StationMetrics,
    StationSnapshot, Stats, Tracked, Wire, OVERALL,
};
use crate::contract::{Prediction, LEADS};
use crate::kafka::assign::station_hash;
use crate::operators::keyed::StationRecord;

/// A change of the sums of `(station, lead)` (`station == ""`: all stations).
pub type StatUpdate = (((String, u32), Stats), u64, isize);

/// What arrived for one epoch: the capability to publish at it, events, sum changes.
type Pending = (Capability<u64>, Vec<Tracked>, Vec<StatUpdate>);

/// The accumulated `count_total` output of one key: the current sums are the entry with a
/// positive count once an epoch is complete.
#[derive(Debug, Default)]
struct Accum(Vec<(Stats, isize)>);

impl Accum {
    fn update(&mut self, s: Stats, d: isize) {
        match self.0.iter_mut().find(|(x, _)| *x == s) {
            Some(e) => e.1 += d,
            None => self.0.push((s, d)),
        }
        self.0.retain(|(_, c)| *c != 0);
    }

    fn current(&self) -> Stats {
        self.0.iter().find(|(_, c)| *c > 0).map(|(s, _)| *s).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct StationBoard {
    latest: Option<Prediction>,
    forecasts: BTreeMap<i64, ForecastTrace>,
    actuals: BTreeMap<i64, f64>,
    newest_actual: Option<i64>,
    leads: Vec<Accum>,
    below: bool,
    chart_dirty: bool,
    stats_dirty: bool,
}

impl StationBoard {
    fn lead_stats(&self) -> [Stats; LEADS] {
        let mut out = [Stats::default(); LEADS];
        for (i, a) in self.leads.iter().enumerate().take(LEADS) {
            out[i] = a.current();
        }
        out
    }

    fn apply_event(&mut self, event: Event, chart_s: i64, anomalies: &mut Vec<AnomalyView>) {
        match event {
            Event::Predicted(p) => {
                let origin = p.window_end.timestamp();
                if p.anomaly.is_anomaly {
                    anomalies.push(AnomalyView {
                        station_id: p.station_id.clone(),
                        window_end: p.window_end,
                        score: p.anomaly.score,
                        reasons: p.anomaly.reasons.clone(),
                        observed_temperature: p.observed_temperature,
                        model: p.model.clone(),
                    });
                }
                self.forecasts.insert(
                    origin,
                    ForecastTrace {
                        origin: p.window_end,
                        model: p.model.forecast.clone(),
                        interval: p.interval,
                        points: p.forecast.clone(),
                    },
                );
                if self.latest.as_ref().is_none_or(|l| l.window_end < p.window_end) {
                    self.latest = Some(p.0);
                }
                let newest = self.latest.as_ref().map(|l| l.window_end.timestamp()).unwrap_or(origin);
                self.forecasts = self.forecasts.split_off(&(newest - 24 * 3600));
                self.chart_dirty = true;
            }
            Event::Observed(o) => {
                let at = o.window_end.timestamp();
                if let Some(t) = o.temperature {
                    self.actuals.entry(at).or_insert(t);
                }
                let newest = self.newest_actual.map_or(at, |n| n.max(at));
                self.newest_actual = Some(newest);
                self.actuals = self.actuals.split_off(&(newest - chart_s));
                self.chart_dirty = true;
            }
        }
    }

    fn snapshot(&self, station: &str) -> StationSnapshot {
        let earlier = self.latest.as_ref().and_then(|l| {
            let target = l.window_end.timestamp() - 24 * 3600;
            self.forecasts
                .range(target..l.window_end.timestamp())
                .next()
                .map(|(_, f)| f.clone())
        });
        StationSnapshot {
            station_id: station.to_string(),
            latest: self.latest.clone().map(Wire),
            earlier,
            actuals: self
                .actuals
                .iter()
                .filter_map(|(t, v)| Some((chrono::DateTime::from_timestamp(*t, 0)?, *v)))
                .collect(),
        }
    }
}

/// Extension trait: the board of every station.
pub trait PublishBoard<'s> {
    /// Publishes snapshots, metrics, alerts and anomalies (see the module doc).
    fn board(self, stats: StreamVec<'s, u64, StatUpdate>, params: MonitorParams) -> StreamVec<'s, u64, Published>;
}

impl<'s> PublishBoard<'s> for StreamVec<'s, u64, Tracked> {
    fn board(self, stats: StreamVec<'s, u64, StatUpdate>, params: MonitorParams) -> StreamVec<'s, u64, Published> {
        let scope = self.scope();
        let by_station = Exchange::new(|t: &Tracked| station_hash(t.station()));
        let stats_by_station = Exchange::new(|u: &StatUpdate| station_hash(&(u.0).0 .0));
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<Published>>, _, _, _, _>(
            stats,
            by_station,
            stats_by_station,
            "ModelBoard",
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                let interval = Duration::from_millis(params.publish_interval_ms);
                let chart_s = params.chart_hours * 3600;
                let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
                let mut board = Board::default();
                let mut held: Option<Capability<u64>> = None;
                let mut next_flush = Instant::now();
                move |(events, f1), (updates, f2), output| {
                    events.for_each_stamp(|cap, data| {
                        let Some(t) = cap.least().copied() else { return };
                        let Some(slot) = stash(&mut pending, t, &cap, output.output_index()) else {
                            return;
                        };
                        for batch in data {
                            slot.1.append(batch);
                        }
                    });
                    // A batch of differential updates carries each update's own time (at or after
                    // the batch's stamp): file each under its time.
                    updates.for_each_stamp(|cap, data| {
                        for batch in data {
                            for u in batch.drain(..) {
                                let Some(slot) = stash(&mut pending, u.1, &cap, output.output_index()) else {
                                    continue;
                                };
                                slot.2.push(u);
                            }
                        }
                    });
                    // Apply complete epochs, oldest first (with a zero interval, publish after each).
                    while let Some(entry) = pending.first_entry() {
                        if f1.less_equal(entry.key()) || f2.less_equal(entry.key()) {
                            break;
                        }
                        let time = *entry.key();
                        let (cap, events, updates) = entry.remove();
                        board.apply(events, updates, chart_s);
                        match held.as_mut() {
                            Some(h) => h.downgrade(&time.max(*h.time())),
                            None => held = Some(cap),
                        }
                        if interval.is_zero() {
                            if let Some(cap) = held.take() {
                                output.session(&cap).give_iterator(board.publications(&params).into_iter());
                            }
                        }
                    }
                    let now = Instant::now();
                    if !board.dirty() {
                        held = None;
                    } else if (f1.is_empty() && f2.is_empty()) || now >= next_flush {
                        if let Some(cap) = held.take() {
                            output.session(&cap).give_iterator(board.publications(&params).into_iter());
                        }
                        next_flush = now + interval;
                    }
                    if held.is_some() {
                        activator.activate_after(next_flush.saturating_duration_since(now));
                    }
                }
            },
        )
    }
}

/// The state of the board on one worker.
#[derive(Debug, Default)]
struct Board {
    stations: BTreeMap<String, StationBoard>,
    overall: Vec<Accum>,
    overall_dirty: bool,
    anomalies: Vec<AnomalyView>,
}

impl Board {
    /// Applies one complete epoch: events in input order, then the sums' changes.
    fn apply(&mut self, mut events: Vec<Tracked>, updates: Vec<StatUpdate>, chart_s: i64) {
        events.sort_by_key(|e| e.position());
        for e in events {
            let station = e.station().to_string();
            self.stations
                .entry(station)
                .or_default()
                .apply_event(e.event, chart_s, &mut self.anomalies);
        }
        for (((station, lead), s), _, d) in updates {
            let Some(i) = (lead as usize).checked_sub(1).filter(|i| *i < LEADS) else {
                continue;
            };
            let accums = if station == OVERALL {
                self.overall_dirty = true;
                &mut self.overall
            } else {
                let b = self.stations.entry(station).or_default();
                b.stats_dirty = true;
                &mut b.leads
            };
            if accums.len() < LEADS {
                accums.resize_with(LEADS, Accum::default);
            }
            accums[i].update(s, d);
        }
    }

    /// Something changed since the last publication.
    fn dirty(&self) -> bool {
        self.overall_dirty || !self.anomalies.is_empty() || self.stations.values().any(|b| b.chart_dirty || b.stats_dirty)
    }

    /// What changed since the last publication (and marks it published).
    fn publications(&mut self, params: &MonitorParams) -> Vec<Published> {
        let mut out = Vec::new();
        for (station, b) in self.stations.iter_mut() {
            publish_station(station, b, params, &mut |p| out.push(p));
        }
        if self.overall_dirty {
            let mut stats = [Stats::default(); LEADS];
            for (i, a) in self.overall.iter().enumerate().take(LEADS) {
                stats[i] = a.current();
            }
            out.push(Published::OverallMetrics(OverallMetrics {
                window_hours: params.window_hours,
                metrics: ScopeMetrics::from_leads(&stats),
            }));
            self.overall_dirty = false;
        }
        out.extend(self.anomalies.drain(..).map(Published::Anomaly));
        out
    }
}

fn stash<'a>(
    pending: &'a mut BTreeMap<u64, Pending>,
    time: u64,
    cap: &timely::dataflow::operators::InputCapability<u64>,
    output: usize,
) -> Option<&'a mut Pending> {
    match pending.entry(time) {
        std::collections::btree_map::Entry::Occupied(o) => Some(o.into_mut()),
        std::collections::btree_map::Entry::Vacant(v) => {
            if cap.least().is_none_or(|l| *l > time) {
                return None;
            }
            Some(v.insert((cap.delayed(&time, output), Vec::new(), Vec::new())))
        }
    }
}

/// Emits what changed for one station, and a skill alert when it crosses persistence.
fn publish_station(station: &str, b: &mut StationBoard, params: &MonitorParams, give: &mut dyn FnMut(Published)) {
    if b.chart_dirty {
        give(Published::Station(Box::new(b.snapshot(station))));
        b.chart_dirty = false;
    }
    if !b.stats_dirty {
        return;
    }
    b.stats_dirty = false;
    let metrics = ScopeMetrics::from_leads(&b.lead_stats());
    let as_of = b.newest_actual.and_then(|t| chrono::DateTime::from_timestamp(t, 0));
    let all = &metrics.all;
    let mut total = Stats::default();
    for s in b.lead_stats() {
        differential_dataflow::difference::Semigroup::plus_equals(&mut total, &s);
    }
    let below = match all.skill {
        Some(skill) if total.with_persistence >= params.min_pairs => skill < 0.0,
        _ => b.below && all.skill.is_some_and(|s| s < 0.0),
    };
    if below != b.below {
        b.below = below;
        give(Published::SkillAlert(SkillAlert {
            station_id: station.to_string(),
            state: if below {
                AlertState::BelowPersistence
            } else {
                AlertState::Recovered
            },
            skill: all.skill.unwrap_or(0.0),
            mae: ratio(total.abs_err_vs_persistence, total.with_persistence),
            persistence_mae: ratio(total.persistence_abs_err, total.with_persistence),
            pairs: total.with_persistence,
            as_of,
        }));
    }
    give(Published::StationMetrics(StationMetrics {
        station_id: station.to_string(),
        as_of,
        window_hours: params.window_hours,
        below_persistence: b.below,
        metrics,
    }));
}

fn ratio(micro_sum: i64, n: i64) -> f64 {
    if n > 0 {
        micro_sum as f64 / n as f64 / 1e6
    } else {
        0.0
    }
}
