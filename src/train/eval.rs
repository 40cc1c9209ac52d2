//! Evaluation metrics: per-lead errors (MAE, RMSE), interval coverage and width, conformal
//! quantiles, and event-level detection scores (precision, recall, F1).
//!
//! ```text
//!   (lead, forecast, observation) ──LeadErrors──> MAE_h, RMSE_h         per forecaster
//!   (lead, lower, upper, obs)     ──Intervals───> coverage_h, width_h
//!   fault windows + flagged hours ──event_scores──> alarm events (runs of flags, gaps <= 2 h)
//!        recall    = faults with a flag inside [start, end] / faults
//!        precision = alarm events overlapping some [start, end + grace] / alarm events
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::LEADS;

/// Absolute and squared errors per lead (index 0 = lead 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeadErrors {
    n: [u64; LEADS],
    sum: [f64; LEADS],
    abs: [f64; LEADS],
    sq: [f64; LEADS],
}

impl LeadErrors {
    /// Adds one error `forecast - observed` at `lead` (1..=24; others are ignored).
    pub fn add(&mut self, lead: usize, error: f64) {
        if (1..=LEADS).contains(&lead) && error.is_finite() {
            self.n[lead - 1] += 1;
            self.sum[lead - 1] += error;
            self.abs[lead - 1] += error.abs();
            self.sq[lead - 1] += error * error;
        }
    }

    /// Samples per lead.
    pub fn count(&self) -> [u64; LEADS] {
        self.n
    }

    /// Mean error (bias, forecast minus observed) per lead (NaN without samples).
    pub fn bias(&self) -> [f64; LEADS] {
        std::array::from_fn(|i| self.sum[i] / self.n[i] as f64)
    }

    /// Mean absolute error per lead (NaN without samples).
    pub fn mae(&self) -> [f64; LEADS] {
        std::array::from_fn(|i| self.abs[i] / self.n[i] as f64)
    }

    /// Root mean squared error per lead (NaN without samples).
    pub fn rmse(&self) -> [f64; LEADS] {
        std::array::from_fn(|i| (self.sq[i] / self.n[i] as f64).sqrt())
    }

    /// Mean over leads of the MAE.
    pub fn mean_mae(&self) -> f64 {
        self.mae().iter().sum::<f64>() / LEADS as f64
    }
}

/// Interval coverage and width per lead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Intervals {
    n: [u64; LEADS],
    inside: [u64; LEADS],
    width: [f64; LEADS],
}

impl Intervals {
    /// Adds one interval and the observation it should contain.
    pub fn add(&mut self, lead: usize, lower: f64, upper: f64, observed: f64) {
        if (1..=LEADS).contains(&lead) && lower.is_finite() && upper.is_finite() {
            self.n[lead - 1] += 1;
            self.inside[lead - 1] += u64::from(lower <= observed && observed <= upper);
            self.width[lead - 1] += upper - lower;
        }
    }

    /// Fraction of observations inside, per lead.
    pub fn coverage(&self) -> [f64; LEADS] {
        std::array::from_fn(|i| self.inside[i] as f64 / self.n[i] as f64)
    }

    /// Mean width per lead, degC.
    pub fn mean_width(&self) -> [f64; LEADS] {
        std::array::from_fn(|i| self.width[i] / self.n[i] as f64)
    }
}

/// The split-conformal quantile of `values` at `level` in (0, 1): the `ceil((n + 1) level)`-th
/// smallest value (the largest when that rank exceeds `n`), which makes `P(new <= q) >= level`
/// for exchangeable data. `values` need not be sorted. `None` when empty.
pub fn conformal_quantile(values: &[f64], level: f64) -> Option<f64> {
    if values.is_empty() || !level.is_finite() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let rank = (((n + 1) as f64) * level.clamp(0.0, 1.0)).ceil() as usize;
    Some(v[rank.clamp(1, n) - 1])
}

/// Plain empirical quantile (linear interpolation between order statistics).
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos - pos.floor());
    let j = (i + 1).min(v.len() - 1);
    Some(v[i] + f * (v[j] - v[i]))
}

/// A fault window of one station: hours `start..=end` (hour indices).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventWindow {
    /// Station.
    pub station: String,
    /// First faulty hour.
    pub start: i64,
    /// Last faulty hour.
    pub end: i64,
    /// Kind label (for per-kind recall).
    pub kind: String,
}

/// Event-level detection scores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventScores {
    /// Fault events.
    pub faults: usize,
    /// Faults with at least one flagged hour inside them.
    pub detected: usize,
    /// Alarm events (runs of flagged hours).
    pub alarms: usize,
    /// Alarms that overlap no fault (with grace).
    pub false_alarms: usize,
    /// Detected / faults, per kind.
    pub recall_by_kind: BTreeMap<String, (usize, usize)>,
}

impl EventScores {
    /// True alarms / alarms (1 when there is no alarm).
    pub fn precision(&self) -> f64 {
        if self.alarms == 0 {
            1.0
        } else {
            (self.alarms - self.false_alarms) as f64 / self.alarms as f64
        }
    }

    /// Detected / faults (NaN without faults).
    pub fn recall(&self) -> f64 {
        self.detected as f64 / self.faults as f64
    }

    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
}

/// Flagged hours closer than this many hours belong to one alarm event.
pub const ALARM_MERGE_GAP_H: i64 = 2;

/// Scores flags against fault windows. `flags` are (station, hour) of flagged records; alarms
/// overlapping `[start, end + grace_h]` of a fault of their station are true alarms (the return
/// to normal after a fault is a real change too); recall only counts flags inside `[start, end]`.
pub fn event_scores(faults: &[EventWindow], flags: &[(String, i64)], grace_h: i64) -> EventScores {
    let mut by_station: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (s, h) in flags {
        by_station.entry(s.as_str()).or_default().push(*h);
    }
    let mut alarms: Vec<(&str, i64, i64)> = Vec::new();
    for (s, hours) in &mut by_station {
        hours.sort_unstable();
        hours.dedup();
        let mut run: Option<(i64, i64)> = None;
        for &h in hours.iter() {
            run = match run {
                Some((a, b)) if h - b <= ALARM_MERGE_GAP_H => Some((a, h)),
                Some((a, b)) => {
                    alarms.push((s, a, b));
                    Some((h, h))
                }
                None => Some((h, h)),
            };
        }
        if let Some((a, b)) = run {
            alarms.push((s, a, b));
        }
    }
    let mut out = EventScores {
        faults: faults.len(),
        alarms: alarms.len(),
        ..EventScores::default()
    };
    for f in faults {
        let hit = by_station
            .get(f.station.as_str())
            .is_some_and(|hs| hs.iter().any(|h| (f.start..=f.end).contains(h)));
        out.detected += usize::from(hit);
        let e = out.recall_by_kind.entry(f.kind.clone()).or_insert((0, 0));
        e.0 += usize::from(hit);
        e.1 += 1;
    }
    out.false_alarms = alarms
        .iter()
        .filter(|(s, a, b)| !faults.iter().any(|f| f.station == *s && *a <= f.end + grace_h && f.start <= *b))
        .count();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_errors_and_intervals_on_a_known_case() {
        let mut e = LeadErrors::default();
        for err in [1.0, -3.0] {
            e.add(1, err);
        }
        e.add(24, 2.0);
        e.add(0, 100.0);
        e.add(25, 100.0);
        assert_eq!(e.mae()[0], 2.0);
        assert_eq!(e.bias()[0], -1.0);
        assert!((e.rmse()[0] - 5f64.sqrt()).abs() < 1e-12);
        assert_eq!(e.mae()[23], 2.0);
        assert!(e.mae()[5].is_nan());
        let mut i = Intervals::default();
        i.add(1, 0.0, 2.0, 1.0);
        i.add(1, 0.0, 2.0, 2.0);
        i.add(1, 0.0, 4.0, 5.0);
        assert!((i.coverage()[0] - 2.0 / 3.0).abs() < 1e-12);
        assert!((i.mean_width()[0] - 8.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn conformal_quantile_ranks() {
        let v: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_eq!(conformal_quantile(&v, 0.9), Some(9.0)); // ceil(10 * 0.9) = 9th
        assert_eq!(conformal_quantile(&v, 0.5), Some(5.0));
        assert_eq!(conformal_quantile(&v, 0.99), Some(9.0));
        assert_eq!(conformal_quantile(&v, 0.0), Some(1.0));
        assert_eq!(conformal_quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
    }

    #[test]
    fn event_scores_on_a_known_case() {
        let w = |s: &str, a: i64, b: i64, k: &str| EventWindow {
            station: s.into(),
            start: a,
            end: b,
            kind: k.into(),
        };
        let faults = vec![w("A", 10, 12, "spike"), w("A", 100, 120, "drift"), w("B", 50, 50, "spike")];
        let f = |s: &str, h: i64| (s.to_string(), h);
        // A: one alarm inside the first fault (10..=11), one on the drift's return at 122
        // (grace), one false alarm at 300; B: the spike is missed, a false alarm at 60.
        let flags = vec![f("A", 10), f("A", 11), f("A", 122), f("A", 300), f("B", 60)];
        let s = event_scores(&faults, &flags, 3);
        assert_eq!((s.faults, s.detected, s.alarms, s.false_alarms), (3, 1, 4, 2));
        assert!((s.precision() - 0.5).abs() < 1e-12);
        assert!((s.recall() - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.f1() - 0.4).abs() < 1e-12);
        assert_eq!(s.recall_by_kind["spike"], (1, 2));
        assert_eq!(s.recall_by_kind["drift"], (0, 1), "a flag after the fault is not a detection");
        let none = event_scores(&faults, &[], 3);
        assert_eq!((none.precision(), none.recall(), none.f1()), (1.0, 0.0, 0.0));
    }
}
