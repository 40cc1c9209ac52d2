//! Event-time maths of the streaming features stage, in plain structs (no timely): the
//! per-partition watermark that decides lateness, and the per-station open windows that the
//! watermark closes. The timely operators (`crate::operators::window`) only route records to
//! these structs; the per-window statistics are [`WindowAccumulator`]'s, the same maths as the
//! batch [`hourly_features`](super::hourly_features).
//!
//! ```text
//!  reading worker, partition p, in offset order:
//!    obs(t) ──> PartitionClocks::admit ──┬── window_end(t) <= W_p ──> Late (late topic, with W_p and the reason)
//!                                        └── on time ──> W_p = max(W_p, max_event_p - lateness) ──> Stamped obs
//!    idle partition (no record for idle_timeout of wall clock):
//!               W_p = max(W_p, max_event_p + idle_for - lateness)           ──> Mark(p, offset, W_p)
//!
//!  station worker, items of an epoch sorted by (partition, offset, record before mark):
//!    Stamped obs ──> WindowBook::add ──> StationWindows[station].open[window_end] += obs
//!    Mark(p, W)  ──> WindowBook::close_through(p, W) ──> every window opened from p with end <= W ──> FeatureRecord
//!    end of input ──> WindowBook::flush ──> every open window
//! ```
//!
//! Why per partition: a partition is read by exactly one worker, in offset order, so `W_p` before
//! each record is a function of the partition's contents alone. Lateness, and therefore every
//! window's contents, are then the same on 1 worker or 4, in one process or two. (A watermark
//! over everything a worker reads would depend on how partitions are spread over workers and on
//! read timing.) The one rule that depends on the wall clock is the idle advance, by design: it
//! changes nothing for an input that is read without pauses longer than `idle_timeout`.
//!
//! A window `(end - size, end]` is closed once `W_p >= end`; a record is late when its window
//! end is `<= W_p`, i.e. when its window has (or could have) been emitted already. With hourly
//! hour-ending readings at whole hours and any lateness > 0, each window is emitted when the next
//! reading of its partition arrives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::window::{checked_window_end_for, window_start_for, WindowAccumulator};
use crate::contract::FeatureRecord;
use crate::observations::Observation;

/// Window size and allowed lateness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// Tumbling window size (positive).
    pub size: Duration,
    /// How far behind the newest event time of its partition a record may be and still count.
    pub allowed_lateness: Duration,
}

/// Event-time clock of one input partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// Newest event time seen.
    pub max_event: Option<DateTime<Utc>>,
    /// Current watermark: records whose window ends at or before it are late.
    pub watermark: Option<DateTime<Utc>>,
    /// Offset of the last record seen (-1: none yet).
    pub last_offset: i64,
}

/// The verdict on one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The observation counts: it belongs to the window ending at `window_end`.
    OnTime {
        /// End of its window.
        window_end: DateTime<Utc>,
    },
    /// Its window ends at or before the partition's watermark: it is late.
    Late {
        /// End of its window.
        window_end: DateTime<Utc>,
        /// The partition's watermark when it arrived.
        watermark: DateTime<Utc>,
        /// The partition's newest event time when it arrived.
        max_event: DateTime<Utc>,
    },
    /// The time is so far from the Unix epoch that its window end cannot be represented.
    OutOfRange,
}

/// A watermark advance of one partition, placed after the record at `offset` (for ordering with
/// that partition's records downstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Input partition.
    pub partition: i32,
    /// Offset of the last record of the partition before the advance (-1: none).
    pub offset: i64,
    /// The new watermark.
    pub watermark: DateTime<Utc>,
}

/// The event-time clocks of the partitions one worker reads.
#[derive(Debug)]
pub struct PartitionClocks {
    spec: WindowSpec,
    clocks: BTreeMap<i32, PartitionClock>,
    /// Wall-clock time of each partition's last record (not checkpointed: a restart starts idle
    /// timers afresh).
    last_arrival: HashMap<i32, Instant>,
    /// Partitions whose watermark moved since the last [`take_marks`](Self::take_marks).
    moved: BTreeSet<i32>,
}

impl PartitionClocks {
    /// Empty clocks.
    pub fn new(spec: WindowSpec) -> Self {
        Self::restored(spec, BTreeMap::new())
    }

    /// Clocks restored from a checkpoint.
    pub fn restored(spec: WindowSpec, clocks: BTreeMap<i32, PartitionClock>) -> Self {
        PartitionClocks {
            spec,
            clocks,
            last_arrival: HashMap::new(),
            moved: BTreeSet::new(),
        }
    }

    /// The clocks, for checkpoints.
    pub fn states(&self) -> &BTreeMap<i32, PartitionClock> {
        &self.clocks
    }

    /// The clock of `partition`, if it has seen a record.
    pub fn clock(&self, partition: i32) -> Option<&PartitionClock> {
        self.clocks.get(&partition)
    }

    /// Decides on the record at (`partition`, `offset`) with event time `time`, read at wall-clock
    /// `now`, and advances the partition's clock. Records must be given in offset order.
    pub fn admit(&mut self, partition: i32, offset: i64, time: DateTime<Utc>, now: Instant) -> Admission {
        self.last_arrival.insert(partition, now);
        let clock = self.clocks.entry(partition).or_insert_with(|| PartitionClock {
            last_offset: -1,
            ..PartitionClock::default()
        });
        clock.last_offset = clock.last_offset.max(offset);
        let Some(window_end) = checked_window_end_for(time, self.spec.size) else {
            return Admission::OutOfRange;
        };
        if let (Some(watermark), Some(max_event)) = (clock.watermark, clock.max_event) {
            if window_end <= watermark {
                return Admission::Late {
                    window_end,
                    watermark,
                    max_event,
                };
            }
        }
        if clock.max_event.is_none_or(|m| time > m) {
            clock.max_event = Some(time);
            if let Some(w) = time.checked_sub_signed(self.spec.allowed_lateness) {
                if clock.watermark.is_none_or(|old| w > old) {
                    clock.watermark = Some(w);
                    self.moved.insert(partition);
                }
            }
        }
        Admission::OnTime { window_end }
    }

    /// Advances the watermark of every partition that has had no record for at least
    /// `idle_timeout` of wall clock: event time is assumed to have moved on with the wall clock
    /// since its last record (`W = max_event + idle_for - lateness`). Returns how many moved.
    pub fn advance_idle(&mut self, now: Instant, idle_timeout: std::time::Duration) -> usize {
        let mut n = 0;
        for (p, clock) in self.clocks.iter_mut() {
            let Some(last) = self.last_arrival.get(p) else { continue };
            let idle_for = now.saturating_duration_since(*last);
            if idle_for < idle_timeout {
                continue;
            }
            let (Some(max_event), Ok(idle)) = (clock.max_event, Duration::from_std(idle_for)) else {
                continue;
            };
            let Some(w) = max_event
                .checked_add_signed(idle)
                .and_then(|t| t.checked_sub_signed(self.spec.allowed_lateness))
            else {
                continue;
            };
            if clock.watermark.is_none_or(|old| w > old) {
                clock.watermark = Some(w);
                self.moved.insert(*p);
                n += 1;
            }
        }
        n
    }

    /// Partitions with a known clock that are waiting for an idle advance (for re-activation).
    pub fn tracked(&self) -> usize {
        self.last_arrival.len()
    }

    /// One mark per partition whose watermark moved since the last call, in partition order.
    pub fn take_marks(&mut self) -> Vec<Mark> {
        let moved = std::mem::take(&mut self.moved);
        moved
            .into_iter()
            .filter_map(|p| {
                let c = self.clocks.get(&p)?;
                Some(Mark {
                    partition: p,
                    offset: c.last_offset,
                    watermark: c.watermark?,
                })
            })
            .collect()
    }
}

/// One open window of a station and the input partition whose watermark closes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenWindow {
    /// Partition of the record that opened the window.
    pub partition: i32,
    /// Running statistics.
    pub acc: WindowAccumulator,
}

/// A station's window state: the windows still open (usually one or two) and the newest window
/// end already emitted. Small and serialisable, for checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StationWindows {
    /// Open windows by end.
    pub open: BTreeMap<DateTime<Utc>, OpenWindow>,
    /// Newest window end emitted for the station.
    pub emitted_through: Option<DateTime<Utc>>,
}

/// An observation refused by the station's state because its window was already emitted (only
/// possible when a station's records arrive through more than one partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyEmitted {
    /// Newest window end already emitted for the station.
    pub emitted_through: DateTime<Utc>,
}

/// The open windows of every station one worker holds, indexed by (partition, end) so a
/// partition's watermark finds the windows it closes without scanning every station.
#[derive(Debug)]
pub struct WindowBook {
    size: Duration,
    stations: HashMap<String, StationWindows>,
    index: BTreeSet<(i32, DateTime<Utc>, String)>,
}

impl WindowBook {
    /// An empty book for windows of `size`.
    pub fn new(size: Duration) -> Self {
        Self::restored(size, Vec::new())
    }

    /// A book restored from checkpointed station states.
    pub fn restored(size: Duration, states: Vec<(String, StationWindows)>) -> Self {
        let mut index = BTreeSet::new();
        for (station, s) in &states {
            for (end, w) in &s.open {
                index.insert((w.partition, *end, station.clone()));
            }
        }
        WindowBook {
            size,
            stations: states.into_iter().collect(),
            index,
        }
    }

    /// Station states sorted by station id, for checkpoints.
    pub fn states(&self) -> Vec<(&String, &StationWindows)> {
        let mut v: Vec<_> = self.stations.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Windows currently open.
    pub fn open_windows(&self) -> usize {
        self.index.len()
    }

    /// Adds an on-time observation to its station's window ending at `window_end`, opening the
    /// window (closed later by `partition`'s watermark) if needed.
    pub fn add(&mut self, obs: &Observation, window_end: DateTime<Utc>, partition: i32) -> Result<(), AlreadyEmitted> {
        let size = self.size;
        let station = self.stations.entry(obs.station_id.clone()).or_default();
        if let Some(done) = station.emitted_through.filter(|d| window_end <= *d) {
            return Err(AlreadyEmitted { emitted_through: done });
        }
        let window = station.open.entry(window_end).or_insert_with(|| {
            self.index.insert((partition, window_end, obs.station_id.clone()));
            OpenWindow {
                partition,
                acc: WindowAccumulator::new(obs.station_id.as_str(), window_start_for(window_end, size), window_end),
            }
        });
        window.acc.add(obs);
        Ok(())
    }

    /// Emits, in (end, station) order, every window opened from `partition` that ends at or
    /// before `watermark`.
    pub fn close_through(&mut self, partition: i32, watermark: DateTime<Utc>, out: &mut Vec<FeatureRecord>) {
        let lo = (partition, DateTime::<Utc>::MIN_UTC, String::new());
        let closing: Vec<(i32, DateTime<Utc>, String)> = self
            .index
            .range(lo..)
            .take_while(|(p, end, _)| *p == partition && *end <= watermark)
            .cloned()
            .collect();
        for key in closing {
            self.index.remove(&key);
            let (_, end, station) = key;
            if let Some(r) = self.emit(&station, end) {
                out.push(r);
            }
        }
    }

    /// Emits every open window, in (end, station) order (end of input).
    pub fn flush(&mut self, out: &mut Vec<FeatureRecord>) {
        let mut all: Vec<(DateTime<Utc>, String)> = std::mem::take(&mut self.index).into_iter().map(|(_, e, s)| (e, s)).collect();
        all.sort();
        for (end, station) in all {
            if let Some(r) = self.emit(&station, end) {
                out.push(r);
            }
        }
    }

    fn emit(&mut self, station: &str, end: DateTime<Utc>) -> Option<FeatureRecord> {
        let s = self.stations.get_mut(station)?;
        let w = s.open.remove(&end)?;
        s.emitted_through = Some(s.emitted_through.map_or(end, |d| d.max(end)));
        Some(w.acc.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn spec(lateness_min: i64) -> WindowSpec {
        WindowSpec {
            size: Duration::hours(1),
            allowed_lateness: Duration::minutes(lateness_min),
        }
    }

    #[test]
    fn lateness_is_decided_against_the_partition_watermark_before_the_record() {
        let mut c = PartitionClocks::new(spec(10));
        let now = Instant::now();
        assert_eq!(
            c.admit(0, 0, t("2016-06-01T12:05:00Z"), now),
            Admission::OnTime {
                window_end: t("2016-06-01T13:00:00Z")
            }
        );
        // 6 minutes behind, within the lateness: on time, and it does not move the clock back.
        assert!(matches!(c.admit(0, 1, t("2016-06-01T11:59:00Z"), now), Admission::OnTime { .. }));
        assert_eq!(c.clock(0).unwrap().watermark, Some(t("2016-06-01T11:55:00Z")));
        // A reading at 12:00 belongs to the window ending 12:00, which is still open (W = 11:55).
        assert!(matches!(c.admit(0, 2, t("2016-06-01T12:00:00Z"), now), Admission::OnTime { .. }));
        assert!(matches!(c.admit(0, 3, t("2016-06-01T12:11:00Z"), now), Admission::OnTime { .. }));
        // W = 12:01 now: the window ending 12:00 is closed, its readings are late.
        assert_eq!(
            c.admit(0, 4, t("2016-06-01T11:30:00Z"), now),
            Admission::Late {
                window_end: t("2016-06-01T12:00:00Z"),
                watermark: t("2016-06-01T12:01:00Z"),
                max_event: t("2016-06-01T12:11:00Z"),
            }
        );
        // Another partition has its own clock.
        assert!(matches!(c.admit(1, 0, t("2016-06-01T08:00:00Z"), now), Admission::OnTime { .. }));
        let marks = c.take_marks();
        assert_eq!(marks.len(), 2);
        assert_eq!(
            marks[0],
            Mark {
                partition: 0,
                offset: 4,
                watermark: t("2016-06-01T12:01:00Z")
            }
        );
        assert!(c.take_marks().is_empty(), "marks are taken once");
    }

    #[test]
    fn idle_partitions_advance_with_the_wall_clock() {
        let mut c = PartitionClocks::new(spec(10));
        let t0 = Instant::now();
        c.admit(3, 7, t("2016-06-01T12:00:00Z"), t0);
        c.take_marks();
        let timeout = std::time::Duration::from_secs(30);
        assert_eq!(c.advance_idle(t0 + std::time::Duration::from_secs(29), timeout), 0);
        assert_eq!(c.advance_idle(t0 + std::time::Duration::from_secs(900), timeout), 1);
        // 15 minutes idle: W = 12:00 + 15 min - 10 min.
        assert_eq!(
            c.take_marks(),
            vec![Mark {
                partition: 3,
                offset: 7,
                watermark: t("2016-06-01T12:05:00Z")
            }]
        );
        assert!(matches!(c.admit(3, 8, t("2016-06-01T12:00:00Z"), t0), Admission::Late { .. }));
    }

    fn obs(station: &str, time: &str, temp: f64) -> Observation {
        let mut o = Observation::new(station, t(time));
        o.temperature = Some(temp);
        o
    }

    #[test]
    fn the_book_closes_windows_of_the_marked_partition_only() {
        let mut b = WindowBook::new(Duration::hours(1));
        let end12 = t("2016-06-01T12:00:00Z");
        let end13 = t("2016-06-01T13:00:00Z");
        b.add(&obs("A", "2016-06-01T11:30:00Z", 10.0), end12, 0).unwrap();
        b.add(&obs("A", "2016-06-01T11:45:00Z", 12.0), end12, 0).unwrap();
        b.add(&obs("A", "2016-06-01T12:10:00Z", 14.0), end13, 0).unwrap();
        b.add(&obs("B", "2016-06-01T11:50:00Z", 1.0), end12, 1).unwrap();
        assert_eq!(b.open_windows(), 3);
        let mut out = Vec::new();
        b.close_through(0, t("2016-06-01T12:00:00Z"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].station_id.as_str(), out[0].count, out[0].temperature_mean),
            ("A", 2, Some(11.0))
        );
        assert_eq!(out[0].window_start, Some(t("2016-06-01T11:00:00Z")));
        assert_eq!(
            b.add(&obs("A", "2016-06-01T11:59:00Z", 0.0), end12, 0),
            Err(AlreadyEmitted { emitted_through: end12 })
        );
        let mut rest = Vec::new();
        b.flush(&mut rest);
        let got: Vec<_> = rest.iter().map(|r| (r.station_id.as_str(), r.window_end)).collect();
        assert_eq!(got, vec![("B", end12), ("A", end13)]);
        assert_eq!(b.open_windows(), 0);
    }

    #[test]
    fn states_round_trip_through_json() {
        let mut b = WindowBook::new(Duration::hours(1));
        b.add(&obs("A", "2016-06-01T11:30:00Z", 10.0), t("2016-06-01T12:00:00Z"), 2)
            .unwrap();
        let json = serde_json::to_string(&b.states()).unwrap();
        let states: Vec<(String, StationWindows)> = serde_json::from_str(&json).unwrap();
        let mut r = WindowBook::restored(Duration::hours(1), states);
        assert_eq!(r.open_windows(), 1);
        let mut out = Vec::new();
        r.close_through(2, t("2016-06-01T12:00:00Z"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].temperature_mean, Some(10.0));
    }
}
