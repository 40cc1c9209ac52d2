//! Hour-ending windows and the per-window feature maths, shared by the streaming operator and the
//! batch trainer.
//!
//! Window rule: an observation at time `t` belongs to the window `(end - size, end]` with
//! `end = ceil(t / size) * size`, aligned to the Unix epoch. With the default one-hour size an
//! hourly reading stamped 12:00 lands in the window ending 12:00, as do one-minute readings
//! 11:01..12:00; a reading at 12:00:01 lands in the window ending 13:00.
//!
//! [`WindowAccumulator`] holds one window's running statistics (Welford mean/variance, min/max,
//! compensated sums): fixed size, no allocation per [`WindowAccumulator::add`].

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::contract::FeatureRecord;
use crate::observations::Observation;

/// The default window size: one hour.
pub const DEFAULT_WINDOW: Duration = Duration::hours(1);

const NANOS_PER_SEC: i128 = 1_000_000_000;

fn total_nanos(d: Duration) -> i128 {
    i128::from(d.num_seconds()) * NANOS_PER_SEC + i128::from(d.subsec_nanos())
}

/// End of the window holding `t`, or `None` when `size` is not positive or the end would fall
/// outside chrono's representable range.
pub fn checked_window_end_for(t: DateTime<Utc>, size: Duration) -> Option<DateTime<Utc>> {
    let size_ns = total_nanos(size);
    if size_ns <= 0 {
        return None;
    }
    let t_ns = i128::from(t.timestamp()) * NANOS_PER_SEC + i128::from(t.timestamp_subsec_nanos());
    let mut k = t_ns.div_euclid(size_ns);
    if t_ns.rem_euclid(size_ns) != 0 {
        k += 1;
    }
    let end_ns = k.checked_mul(size_ns)?;
    let secs = i64::try_from(end_ns.div_euclid(NANOS_PER_SEC)).ok()?;
    let nanos = u32::try_from(end_ns.rem_euclid(NANOS_PER_SEC)).ok()?;
    DateTime::from_timestamp(secs, nanos)
}

/// End of the window `(end - size, end]` holding `t` (see the module doc for the rule).
///
/// # Panics
/// If `size` is not positive: that is a configuration error, check it with
/// [`checked_window_end_for`] where the size comes from outside. Ends beyond chrono's range
/// (year 262143) saturate to [`DateTime::<Utc>::MAX_UTC`].
pub fn window_end_for(t: DateTime<Utc>, size: Duration) -> DateTime<Utc> {
    assert!(size > Duration::zero(), "window size must be positive, got {size}");
    checked_window_end_for(t, size).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Start (exclusive) of the window ending at `end`: `end - size`, saturating at chrono's minimum.
pub fn window_start_for(end: DateTime<Utc>, size: Duration) -> DateTime<Utc> {
    end.checked_sub_signed(size).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Running count, mean, population variance (Welford), min and max of a series. Non-finite
/// values are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl RunningStats {
    /// Adds one value (ignored unless finite).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        if self.n == 1 {
            (self.mean, self.m2, self.min, self.max) = (x, 0.0, x, x);
            return;
        }
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Adds the value if present.
    pub fn push_opt(&mut self, x: Option<f64>) {
        if let Some(x) = x {
            self.push(x);
        }
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Mean (kept within `[min, max]` against rounding), `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.mean.clamp(self.min, self.max))
    }

    /// Smallest value, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.n > 0).then_some(self.min)
    }

    /// Largest value, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.n > 0).then_some(self.max)
    }

    /// Population standard deviation (divides by n; 0.0 for one value), `None` when empty.
    pub fn population_std(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2.max(0.0) / self.n as f64).sqrt())
    }
}

/// Running sum with Neumaier compensation. Non-finite values are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningSum {
    n: u64,
    sum: f64,
    compensation: f64,
}

impl RunningSum {
    /// Adds one value (ignored unless finite).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The sum, `None` when no value was added.
    pub fn sum(&self) -> Option<f64> {
        (self.n > 0).then_some(self.sum + self.compensation)
    }
}

/// Statistics of one station's observations in one window, turned into a [`FeatureRecord`] by
/// [`finish`](Self::finish). Each field skips observations where it is missing, so each mean is
/// over the observations that have that field; `count` counts every observation added.
///
/// `add` does not check that the observation belongs to this station and window: routing is the
/// caller's job (see [`window_end_for`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowAccumulator {
    station_id: String,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    count: u64,
    temperature: RunningStats,
    humidity: RunningStats,
    pressure: RunningStats,
    wind_speed: RunningStats,
    precipitation: RunningSum,
}

impl WindowAccumulator {
    /// An empty window `(window_start, window_end]` for `station_id`.
    pub fn new(station_id: impl Into<String>, window_start: DateTime<Utc>, window_end: DateTime<Utc>) -> Self {
        WindowAccumulator {
            station_id: station_id.into(),
            window_start,
            window_end,
            count: 0,
            temperature: RunningStats::default(),
            humidity: RunningStats::default(),
            pressure: RunningStats::default(),
            wind_speed: RunningStats::default(),
            precipitation: RunningSum::default(),
        }
    }

    /// The empty window of `size` that holds time `t`.
    ///
    /// # Panics
    /// If `size` is not positive (as [`window_end_for`]).
    pub fn for_time(station_id: impl Into<String>, t: DateTime<Utc>, size: Duration) -> Self {
        let end = window_end_for(t, size);
        Self::new(station_id, window_start_for(end, size), end)
    }

    /// Adds one observation. Allocation-free.
    pub fn add(&mut self, obs: &Observation) {
        self.count += 1;
        self.temperature.push_opt(obs.temperature);
        self.humidity.push_opt(obs.humidity);
        self.pressure.push_opt(obs.pressure);
        self.wind_speed.push_opt(obs.wind_speed);
        if let Some(p) = obs.precipitation {
            self.precipitation.push(p);
        }
    }

    /// The station this window belongs to.
    pub fn station_id(&self) -> &str {
        &self.station_id
    }

    /// Exclusive start of the window.
    pub fn window_start(&self) -> DateTime<Utc> {
        self.window_start
    }

    /// Inclusive end of the window.
    pub fn window_end(&self) -> DateTime<Utc> {
        self.window_end
    }

    /// Observations added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True while `(window_start, window_end]` contains `t`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.window_start < t && t <= self.window_end
    }

    /// The window's features (the accumulator stays usable).
    pub fn finish(&self) -> FeatureRecord {
        FeatureRecord {
            station_id: self.station_id.clone(),
            window_start: Some(self.window_start),
            window_end: self.window_end,
            count: self.count,
            temperature_mean: self.temperature.mean(),
            temperature_min: self.temperature.min(),
            temperature_max: self.temperature.max(),
            temperature_std: self.temperature.population_std(),
            humidity_mean: self.humidity.mean(),
            pressure_mean: self.pressure.mean(),
            wind_speed_mean: self.wind_speed.mean(),
            wind_speed_max: self.wind_speed.max(),
            precipitation_sum: self.precipitation.sum(),
        }
    }
}

/// Batch aggregation: one record per (station, window) that has at least one observation, sorted
/// by station id, then window end. Empty windows are not produced.
///
/// # Panics
/// If `size` is not positive.
pub fn hourly_features(obs: &[Observation], size: Duration) -> Vec<FeatureRecord> {
    let mut windows: BTreeMap<(&str, DateTime<Utc>), WindowAccumulator> = BTreeMap::new();
    for o in obs {
        let end = window_end_for(o.time, size);
        windows
            .entry((o.station_id.as_str(), end))
            .or_insert_with(|| WindowAccumulator::new(o.station_id.as_str(), window_start_for(end, size), end))
            .add(o);
    }
    windows.values().map(WindowAccumulator::finish).collect()
}

/// Like [`hourly_features`], but records come in the order each (station, window) FIRST appears
/// in `obs`, as a replay of the input would emit them. Used for the TMY3 file, whose stitched
/// months make time go backwards: sorting would regroup the months by year.
///
/// # Panics
/// If `size` is not positive.
pub fn features_in_input_order(obs: &[Observation], size: Duration) -> Vec<FeatureRecord> {
    let mut index: HashMap<(&str, DateTime<Utc>), usize> = HashMap::new();
    let mut windows: Vec<WindowAccumulator> = Vec::new();
    for o in obs {
        let end = window_end_for(o.time, size);
        let i = *index.entry((o.station_id.as_str(), end)).or_insert_with(|| {
            windows.push(WindowAccumulator::new(o.station_id.as_str(), window_start_for(end, size), end));
            windows.len() - 1
        });
        windows[i].add(o);
    }
    windows.iter().map(WindowAccumulator::finish).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn window_end_is_hour_ending_and_epoch_aligned() {
        let h = DEFAULT_WINDOW;
        assert_eq!(window_end_for(t("2013-10-01T12:00:00Z"), h), t("2013-10-01T12:00:00Z"));
        assert_eq!(window_end_for(t("2013-10-01T11:01:00Z"), h), t("2013-10-01T12:00:00Z"));
        assert_eq!(window_end_for(t("2013-10-01T12:00:00.000000001Z"), h), t("2013-10-01T13:00:00Z"));
        assert_eq!(window_end_for(t("1969-12-31T23:30:00Z"), h), t("1970-01-01T00:00:00Z"));
        assert_eq!(
            window_end_for(t("2013-10-01T12:07:00Z"), Duration::minutes(15)),
            t("2013-10-01T12:15:00Z")
        );
        assert_eq!(
            window_end_for(t("2013-10-01T12:07:00Z"), Duration::days(1)),
            t("2013-10-02T00:00:00Z")
        );
        assert_eq!(checked_window_end_for(t("2013-10-01T12:07:00Z"), Duration::zero()), None);
        assert_eq!(checked_window_end_for(t("2013-10-01T12:07:00Z"), Duration::hours(-1)), None);
        assert_eq!(window_end_for(DateTime::<Utc>::MAX_UTC, h), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn welford_is_stable_on_large_offsets() {
        // Small spread on a huge offset: a naive sum-of-squares variance collapses here.
        let ds: Vec<f64> = (0..1000).map(|i| f64::from(i % 7) * 0.1).collect();
        let mut s = RunningStats::default();
        ds.iter().for_each(|&d| s.push(1e9 + d));
        // Reference: two-pass on the offsets alone (shifting changes the mean, not the spread).
        let mean_d = ds.iter().sum::<f64>() / ds.len() as f64;
        let var = ds.iter().map(|d| (d - mean_d).powi(2)).sum::<f64>() / ds.len() as f64;
        assert!((s.mean().unwrap() - (1e9 + mean_d)).abs() < 1e-6);
        assert!(
            (s.population_std().unwrap() - var.sqrt()).abs() < 1e-6,
            "{:?} vs {}",
            s.population_std(),
            var.sqrt()
        );
        assert_eq!((s.min(), s.max()), (Some(1e9), Some(1e9 + 0.6)));
        s.push(f64::NAN);
        s.push(f64::INFINITY);
        assert_eq!(s.count(), 1000);
    }

    #[test]
    fn compensated_sum_keeps_small_terms() {
        let mut s = RunningSum::default();
        for x in [1e16, 1.0, -1e16, 1.0] {
            s.push(x);
        }
        assert_eq!(s.sum(), Some(2.0));
        assert_eq!(RunningSum::default().sum(), None);
    }

    #[test]
    fn input_order_keeps_backward_jumps() {
        let a = Observation::new("S", t("1996-02-29T05:00:00Z"));
        let b = Observation::new("S", t("1990-03-01T06:00:00Z"));
        let ends: Vec<_> = features_in_input_order(&[a.clone(), b.clone()], DEFAULT_WINDOW)
            .iter()
            .map(|r| r.window_end)
            .collect();
        assert_eq!(ends, [a.time, b.time]);
        let sorted: Vec<_> = hourly_features(&[a.clone(), b.clone()], DEFAULT_WINDOW)
            .iter()
            .map(|r| r.window_end)
            .collect();
        assert_eq!(sorted, [b.time, a.time]);
    }
}
