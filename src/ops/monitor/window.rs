//! The rolling verification window of each station: turns predictions and actuals into
//! differential-dataflow updates, `+1` when an item enters the window and `−1` when it leaves.
//!
//! ```text
//!   Tracked events ──exchange(station)──> per_station (keyed.rs shape: epoch order, input order)
//!      Predicted(origin o) ──> +1 ((station, o+h), PointVal{lead h, forecast, interval, persistence}) for h in 1..=24
//!      Observed(t, temp)   ──> +1 ((station, t), temp µ°C)          (first record of a window wins)
//!      clock advances      ──> −1 for every point and actual with time < cutoff
//!   cutoff = min(newest origin, newest actual) − window_hours
//! ```
//!
//! The cutoff follows the slower of the two inputs, so neither topic's reader can expire items
//! the other has not caught up with (the monitoring stage reads both topics at its own pace, and a
//! replay of a full topic may read one far ahead of the other). Items behind the cutoff on
//! arrival are ignored; a repeated prediction (same origin) or actual (same window) is ignored.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::{micro, Event, PointVal, Tracked};
use crate::operators::keyed::{per_station, KeyedCheckpoint};

/// A differential update of the points collection: `((station, valid_at), point)`.
pub type PointUpdate = (((String, i64), PointVal), u64, isize);
/// A differential update of the actuals collection: `((station, valid_at), temperature µ°C)`.
pub type ActualUpdate = (((String, i64), i64), u64, isize);

/// One change of the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum WindowChange {
    /// A forecast point enters (`+1`) or leaves (`−1`).
    Point(String, i64, PointVal, isize),
    /// An actual enters or leaves.
    Actual(String, i64, i64, isize),
}

/// The window state of one station.
#[derive(Debug, Default, Serialize)]
pub struct StationWindow {
    newest_origin: Option<i64>,
    newest_actual: Option<i64>,
    /// valid_at -> points waiting for or joined with that hour's actual.
    points: BTreeMap<i64, Vec<PointVal>>,
    /// Origins of the predictions inside the window.
    origins: BTreeSet<i64>,
    /// window_end -> temperature (µ°C; `None`: the record had no temperature).
    actuals: BTreeMap<i64, Option<i64>>,
}

impl StationWindow {
    /// The oldest time still inside the window (`None` until both inputs have been seen).
    pub fn cutoff(&self, window_s: i64) -> Option<i64> {
        Some(self.newest_origin?.min(self.newest_actual?) - window_s)
    }

    /// Applies one event, pushing the resulting changes.
    pub fn apply(&mut self, station: &str, event: Event, window_s: i64, out: &mut Vec<WindowChange>) {
        let cutoff = self.cutoff(window_s);
        match event {
            Event::Predicted(p) => {
                let origin = p.window_end.timestamp();
                let too_old = cutoff.is_some_and(|c| origin + 24 * 3600 < c);
                if !too_old && self.origins.insert(origin) {
                    let persistence = p.observed_temperature.map(micro);
                    for f in &p.forecast {
                        let (Some(t), valid_at) = (f.temperature, f.valid_at.timestamp()) else {
                            continue;
                        };
                        if cutoff.is_some_and(|c| valid_at < c) {
                            continue;
                        }
                        let point = PointVal {
                            lead: f.lead_hours,
                            origin,
                            forecast: micro(t),
                            interval: f.lower.zip(f.upper).map(|(lo, hi)| (micro(lo), micro(hi))),
                            persistence,
                        };
                        self.points.entry(valid_at).or_default().push(point.clone());
                        out.push(WindowChange::Point(station.to_string(), valid_at, point, 1));
                    }
                }
                self.newest_origin = Some(self.newest_origin.map_or(origin, |n| n.max(origin)));
            }
            Event::Observed(o) => {
                let at = o.window_end.timestamp();
                let too_old = cutoff.is_some_and(|c| at < c);
                if !too_old && !self.actuals.contains_key(&at) {
                    let t = o.temperature.map(micro);
                    self.actuals.insert(at, t);
                    if let Some(t) = t {
                        out.push(WindowChange::Actual(station.to_string(), at, t, 1));
                    }
                }
                self.newest_actual = Some(self.newest_actual.map_or(at, |n| n.max(at)));
            }
        }
        self.expire(station, window_s, out);
    }

    fn expire(&mut self, station: &str, window_s: i64, out: &mut Vec<WindowChange>) {
        let Some(cutoff) = self.cutoff(window_s) else { return };
        let keep = self.points.split_off(&cutoff);
        for (valid_at, points) in std::mem::replace(&mut self.points, keep) {
            for p in points {
                out.push(WindowChange::Point(station.to_string(), valid_at, p, -1));
            }
        }
        let keep = self.actuals.split_off(&cutoff);
        for (at, t) in std::mem::replace(&mut self.actuals, keep) {
            if let Some(t) = t {
                out.push(WindowChange::Actual(station.to_string(), at, t, -1));
            }
        }
        // An origin is needed (to refuse a repeat) while any of its points could be in the window.
        self.origins = self.origins.split_off(&(cutoff - 24 * 3600));
    }

    /// Items currently inside the window: (points, actuals with a temperature).
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.points.values().map(Vec::len).sum(),
            self.actuals.values().filter(|t| t.is_some()).count(),
        )
    }
}

/// Extension trait: the rolling window of every station.
pub trait VerificationWindow<'s> {
    /// Splits the events into the two differential update streams (points, actuals).
    fn verification_window(self, window_hours: i64) -> (StreamVec<'s, u64, PointUpdate>, StreamVec<'s, u64, ActualUpdate>);
}

impl<'s> VerificationWindow<'s> for StreamVec<'s, u64, Tracked> {
    fn verification_window(self, window_hours: i64) -> (StreamVec<'s, u64, PointUpdate>, StreamVec<'s, u64, ActualUpdate>) {
        let window_s = window_hours * 3600;
        let changes = per_station(
            self,
            "VerificationWindow",
            KeyedCheckpoint::disabled(),
            |_| StationWindow::default(),
            move |state: &mut StationWindow, t: Tracked, out: &mut Vec<WindowChange>| {
                let station = t.event.station().to_string();
                state.apply(&station, t.event, window_s, out);
            },
        );
        let points = changes
            .clone()
            .unary::<CapacityContainerBuilder<Vec<PointUpdate>>, _, _, _>(Pipeline, "PointUpdates", |_, _| {
                |input, output| {
                    input.for_each(|cap, data| {
                        let Some(t) = cap.least().copied() else { return };
                        let mut session = output.session(&cap);
                        for c in data.drain(..) {
                            if let WindowChange::Point(s, at, p, d) = c {
                                session.give((((s, at), p), t, d));
                            }
                        }
                    })
                }
            });
        let actuals = changes.unary::<CapacityContainerBuilder<Vec<ActualUpdate>>, _, _, _>(Pipeline, "ActualUpdates", |_, _| {
            |input, output| {
                input.for_each(|cap, data| {
                    let Some(t) = cap.least().copied() else { return };
                    let mut session = output.session(&cap);
                    for c in data.drain(..) {
                        if let WindowChange::Actual(s, at, v, d) = c {
                            session.give((((s, at), v), t, d));
                        }
                    }
                })
            }
        });
        (points, actuals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Anomaly, ForecastPoint, ModelNames, Prediction};
    use crate::ops::monitor::Observation;
    use chrono::{Duration, TimeZone, Utc};

    fn pred(origin_h: i64) -> Event {
        let o = Utc.with_ymd_and_hms(2013, 1, 1, 0, 0, 0).unwrap() + Duration::hours(origin_h);
        Event::predicted(Prediction {
            station_id: "S".into(),
            window_end: o,
            issued_at: o,
            model: ModelNames {
                forecast: "f".into(),
                anomaly: "a".into(),
            },
            interval: 0.9,
            forecast: (1..=24)
                .map(|h| ForecastPoint {
                    lead_hours: h,
                    valid_at: o + Duration::hours(h as i64),
                    temperature: Some(1.0),
                    lower: Some(0.0),
                    upper: Some(2.0),
                })
                .collect(),
            anomaly: Anomaly::default(),
            observed_temperature: Some(1.0),
            source: None,
        })
    }

    fn obs(h: i64) -> Event {
        Event::Observed(Observation {
            station_id: "S".into(),
            window_end: Utc.with_ymd_and_hms(2013, 1, 1, 0, 0, 0).unwrap() + Duration::hours(h),
            temperature: Some(h as f64),
        })
    }

    #[test]
    fn items_leave_when_the_slower_input_passes_the_window() {
        let mut w = StationWindow::default();
        let mut out = Vec::new();
        let window_s = 2 * 3600;
        w.apply("S", pred(0), window_s, &mut out);
        assert_eq!(out.len(), 24);
        // Actuals far ahead of the predictions expire nothing: the cutoff follows the predictions.
        for h in 1..=30 {
            w.apply("S", obs(h), window_s, &mut out);
        }
        assert!(out
            .iter()
            .all(|c| matches!(c, WindowChange::Point(.., 1) | WindowChange::Actual(.., 1))));
        assert_eq!(w.sizes(), (24, 30));
        // A prediction at origin 10 moves the cutoff to 8 h: points valid before 8 h and actuals before 8 h leave.
        out.clear();
        w.apply("S", pred(10), window_s, &mut out);
        let left_points = out.iter().filter(|c| matches!(c, WindowChange::Point(.., -1))).count();
        let left_actuals = out.iter().filter(|c| matches!(c, WindowChange::Actual(.., -1))).count();
        assert_eq!((left_points, left_actuals), (7, 7), "valid_at 1..=7 h and actuals 1..=7 h");
        // A repeated prediction and a repeated actual change nothing.
        out.clear();
        w.apply("S", pred(10), window_s, &mut out);
        w.apply("S", obs(20), window_s, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // An actual behind the cutoff is ignored.
        w.apply("S", obs(3), window_s, &mut out);
        assert!(out.is_empty());
    }
}
