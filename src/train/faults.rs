//! Sensor faults injected into held-out data to measure anomaly detection at event level.
//!
//! ```text
//!   clean records of station s, test period ──plan (seeded)──> [gap][fault][gap][fault]...
//!     spike      1 h         T + U(4, 10) degC, random sign
//!     stuck      6-18 h      T frozen at its value at the fault's start
//!     drift      24-48 h     T + ramp from 0 to +-U(4, 8) degC
//!     unit error 3-12 h      T reported in degF instead of degC
//!   ──> faulty records + EventWindow per fault (station, first and last hour, kind)
//! ```
//!
//! Faults are at least 36 h apart (plus a random 0-36 h) so the stack recovers between them, and
//! only hours that exist in the data are altered; all temperature fields of a window move
//! together (mean, min, max; the std is scaled for unit errors).

use std::collections::BTreeMap;

use super::eval::EventWindow;
use crate::anomaly::iforest::SplitMix64;
use crate::contract::FeatureRecord;
use crate::models::Period;

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// One-hour temperature spike.
    Spike,
    /// Temperature stuck at one value.
    Stuck,
    /// Slowly growing temperature offset.
    Drift,
    /// Temperature in degF instead of degC.
    UnitError,
}

impl FaultKind {
    /// All kinds.
    pub const ALL: [FaultKind; 4] = [FaultKind::Spike, FaultKind::Stuck, FaultKind::Drift, FaultKind::UnitError];

    /// Label used in reports.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Spike => "spike",
            FaultKind::Stuck => "stuck",
            FaultKind::Drift => "drift",
            FaultKind::UnitError => "unit error",
        }
    }

    fn duration(self, rng: &mut SplitMix64) -> i64 {
        match self {
            FaultKind::Spike => 1,
            FaultKind::Stuck => 6 + rng.below(13) as i64,
            FaultKind::Drift => 24 + rng.below(25) as i64,
            FaultKind::UnitError => 3 + rng.below(10) as i64,
        }
    }
}

fn shift(r: &mut FeatureRecord, f: impl Fn(f64) -> f64) {
    r.temperature_mean = r.temperature_mean.map(&f);
    r.temperature_min = r.temperature_min.map(&f);
    r.temperature_max = r.temperature_max.map(&f);
}

/// Injects `per_kind` faults of every kind per station into the records of `period`. Returns the
/// faulty copy of `records` (same order) and the fault windows.
pub fn inject(records: &[FeatureRecord], period: &Period, per_kind: usize, seed: u64) -> (Vec<FeatureRecord>, Vec<EventWindow>) {
    let mut out = records.to_vec();
    let mut rng = SplitMix64::new(seed);
    let mut by_station: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if period.contains(r.window_end) && r.temperature_mean.is_some() {
            by_station.entry(r.station_id.clone()).or_default().insert(r.hour_index(), i);
        }
    }
    let mut windows = Vec::new();
    for (station, hours) in by_station {
        let (Some(&first), Some(&last)) = (hours.keys().next(), hours.keys().next_back()) else {
            continue;
        };
        let mut plan: Vec<FaultKind> = FaultKind::ALL.iter().flat_map(|k| std::iter::repeat_n(*k, per_kind)).collect();
        for i in (1..plan.len()).rev() {
            plan.swap(i, rng.below(i + 1));
        }
        let mut cursor = first + 48;
        for kind in plan {
            let start = cursor + 36 + rng.below(37) as i64;
            let dur = kind.duration(&mut rng);
            let end = start + dur - 1;
            if end > last - 24 {
                break;
            }
            cursor = end + 1;
            let Some(&i0) = hours.get(&start) else { continue };
            let frozen = out[i0].temperature_mean;
            let sign = if rng.next_u64() % 2 == 0 { 1.0 } else { -1.0 };
            let size = match kind {
                FaultKind::Spike => 4.0 + 6.0 * rng.next_f64(),
                FaultKind::Drift => 4.0 + 4.0 * rng.next_f64(),
                _ => 0.0,
            };
            for (k, h) in (start..=end).enumerate() {
                let Some(&i) = hours.get(&h) else { continue };
                let r = &mut out[i];
                match kind {
                    FaultKind::Spike => shift(r, |t| t + sign * size),
                    FaultKind::Stuck => {
                        r.temperature_mean = frozen;
                        r.temperature_min = frozen;
                        r.temperature_max = frozen;
                        r.temperature_std = r.temperature_std.map(|_| 0.0);
                    }
                    FaultKind::Drift => {
                        let offset = sign * size * (k + 1) as f64 / dur as f64;
                        shift(r, |t| t + offset);
                    }
                    FaultKind::UnitError => {
                        shift(r, |t| t * 9.0 / 5.0 + 32.0);
                        r.temperature_std = r.temperature_std.map(|s| s * 9.0 / 5.0);
                    }
                }
            }
            windows.push(EventWindow {
                station: station.clone(),
                start,
                end,
                kind: kind.label().into(),
            });
        }
    }
    (out, windows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn injects_every_kind_inside_the_period_only() {
        let t0 = Utc.with_ymd_and_hms(2013, 10, 1, 0, 0, 0).unwrap();
        let recs: Vec<FeatureRecord> = (0..24 * 60)
            .map(|h| {
                let end = t0 + Duration::hours(h);
                let t = 10.0 + (h as f64 / 5.0).sin();
                FeatureRecord {
                    station_id: "S".into(),
                    window_start: Some(end - Duration::hours(1)),
                    window_end: end,
                    count: 1,
                    temperature_mean: Some(t),
                    temperature_min: Some(t),
                    temperature_max: Some(t),
                    temperature_std: Some(0.0),
                    humidity_mean: None,
                    pressure_mean: None,
                    wind_speed_mean: None,
                    wind_speed_max: None,
                    precipitation_sum: None,
                }
            })
            .collect();
        let period = Period {
            from: t0 + Duration::days(5),
            to: t0 + Duration::days(60),
        };
        let (faulty, windows) = inject(&recs, &period, 2, 7);
        assert_eq!(windows.len(), 8, "{windows:?}");
        for k in FaultKind::ALL {
            assert_eq!(windows.iter().filter(|w| w.kind == k.label()).count(), 2);
        }
        let base = recs[0].hour_index();
        for (i, (a, b)) in recs.iter().zip(&faulty).enumerate() {
            let h = base + i as i64;
            let inside = windows.iter().any(|w| (w.start..=w.end).contains(&h));
            if !inside {
                assert_eq!(a, b, "hour {h} outside every fault is unchanged");
            } else {
                assert!(period.contains(a.window_end));
            }
        }
        let unit = windows.iter().find(|w| w.kind == "unit error").unwrap();
        let i = (unit.start - base) as usize;
        assert!((faulty[i].temperature_mean.unwrap() - (recs[i].temperature_mean.unwrap() * 1.8 + 32.0)).abs() < 1e-9);
        assert_eq!(inject(&recs, &period, 2, 7).1, windows, "seeded: same plan");
    }
}
