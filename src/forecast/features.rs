//! Features of the trained forecasters: what a model sees at an origin, computed from the
//! model-agnostic per-station state (the fallback forecaster and the recent history) plus the
//! station's fitted annual cycle.
//!
//! ```text
//!   FallbackForecaster (level L, diurnal D, F_h, interval half-width s_h) ─┐
//!   RecentHistory (T, RH, p for o-24..o, 24-h volatility) ─────────────────┼─> Origin ──OriginFeatures(climatology).columns()──> x_h, h = 1..24 (FEATURES order)
//!   record (wind, precipitation) ──────────────────────────────────────────┘        └─interval_scale(h)─────────────────────> s_h  (normaliser)
//! ```
//!
//! `x_h` feeds the point model of lead `h`; `s_h` normalises its conformal residuals. The
//! training pipeline computes both with these same functions from the same state, so the served
//! model sees exactly what it learned from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::fallback::FallbackForecaster;
use super::history::RecentHistory;
use crate::contract::{ForecastPoint, LEADS};

/// Feature names, in the order of the vectors [`Columns::row`] builds. Stored in every
/// model's metadata; a model whose list differs is refused.
pub const FEATURES: [&str; N_FEATURES] = [
    "daily_anomaly",
    "diurnal_delta",
    "fallback_delta",
    "climate_gap",
    "level_vs_climate",
    "change_1h",
    "change_2h",
    "change_3h",
    "change_6h",
    "change_12h",
    "change_24h",
    "humidity",
    "humidity_change_3h",
    "dewpoint_depression",
    "pressure_change_1h",
    "pressure_change_3h",
    "pressure_change_12h",
    "pressure_change_24h",
    "wind_speed",
    "precipitation",
    "valid_hour_sin",
    "valid_hour_cos",
    "origin_hour_sin",
    "origin_hour_cos",
    "diurnal_range",
    "diurnal_delta_x_dewpoint_depression",
    "diurnal_delta_x_wind_speed",
    "yesterday_delta",
    "day_vs_climate",
    "range_24h",
    "diurnal_delta_x_range",
];

/// Number of features.
pub const N_FEATURES: usize = 31;

/// Humidity used when none was reported in the last 6 hours, %.
const DEFAULT_HUMIDITY: f64 = 70.0;

/// Dew point (degC) from temperature (degC) and relative humidity (%), Magnus formula.
pub fn dewpoint(t: f64, rh: f64) -> f64 {
    let (a, b) = (17.625, 243.04);
    let g = (rh.clamp(1.0, 100.0) / 100.0).ln() + a * t / (b + t);
    b * g / (a - g)
}

/// A station's annual temperature cycle, `mean + a cos(w t) + b sin(w t)` with `t` in days and
/// `w = 2 pi / 365.2422`, fitted on the training period. It extrapolates to seasons the training
/// period did not cover, which a lagging running level cannot (it is too warm all autumn).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Climatology {
    /// Annual mean, degC.
    pub mean: f64,
    /// Cosine coefficient, degC.
    pub cos: f64,
    /// Sine coefficient, degC.
    pub sin: f64,
}

impl Climatology {
    const OMEGA: f64 = std::f64::consts::TAU / 365.2422;

    /// The cycle's value at hour index `hour`.
    pub fn at(&self, hour: i64) -> f64 {
        self.at_phase(Self::phase(hour))
    }

    /// `(cos, sin)` of the cycle's angle at hour index `hour`.
    pub fn phase(hour: i64) -> (f64, f64) {
        let w = Self::OMEGA * hour as f64 / 24.0;
        (w.cos(), w.sin())
    }

    /// The phase `hours` (0..=24) after `(cos, sin)`, by the angle-sum formulas with the step's
    /// cosine and sine from a table: one origin's 24 leads need no `sin_cos` each (it was a
    /// tenth of the trained forecaster's time). Equal to [`phase`](Self::phase) of the later
    /// hour to about 1e-13 (both round the angle; at hour indices near 400,000 the angle is some
    /// 270 rad).
    pub fn phase_after((c, s): (f64, f64), hours: usize) -> (f64, f64) {
        static STEPS: std::sync::LazyLock<[(f64, f64); 25]> =
            std::sync::LazyLock::new(|| std::array::from_fn(|h| Climatology::phase(h as i64)));
        let (dc, ds) = STEPS[hours.min(24)];
        (c * dc - s * ds, s * dc + c * ds)
    }

    /// The cycle's value at a phase from [`phase`](Self::phase) or [`phase_after`](Self::phase_after).
    pub fn at_phase(&self, (c, s): (f64, f64)) -> f64 {
        self.mean + self.cos * c + self.sin * s
    }

    /// Least days of samples (and span) for a fit: the annual cycle is ill-determined from a
    /// season's worth of data (three winter months extrapolate wildly into May).
    pub const MIN_DAYS: i64 = 180;

    /// Least-squares fit on `(hour index, temperature)` samples; `None` with samples spanning
    /// fewer than [`MIN_DAYS`](Self::MIN_DAYS) days (or covering less than half of them) or a
    /// degenerate design.
    pub fn fit(samples: &[(i64, f64)]) -> Option<Climatology> {
        let span = samples.iter().map(|s| s.0).max()? - samples.iter().map(|s| s.0).min()?;
        if span < 24 * Self::MIN_DAYS || (samples.len() as i64) < 12 * Self::MIN_DAYS {
            return None;
        }
        let mut a = [[0.0f64; 3]; 3];
        let mut b = [0.0f64; 3];
        for &(h, t) in samples {
            let w = Self::OMEGA * h as f64 / 24.0;
            let x = [1.0, w.cos(), w.sin()];
            for i in 0..3 {
                b[i] += x[i] * t;
                for j in 0..3 {
                    a[i][j] += x[i] * x[j];
                }
            }
        }
        let c = solve3(a, b)?;
        let fit = Climatology {
            mean: c[0],
            cos: c[1],
            sin: c[2],
        };
        fit.valid().then_some(fit)
    }

    /// Finite coefficients and a plausible amplitude.
    pub fn valid(&self) -> bool {
        [self.mean, self.cos, self.sin].iter().all(|v| v.is_finite()) && self.mean.abs() < 60.0 && self.cos.hypot(self.sin) < 60.0
    }
}

/// Solves a 3x3 linear system by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..3 {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// What a forecaster sees at an origin: the station's state after the record at hour `origin`.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// Station id.
    pub station: &'a str,
    /// Hour index of the origin (the record's window_end).
    pub hour: i64,
    /// Its window_end.
    pub window_end: DateTime<Utc>,
    /// The fallback forecaster after seeing the record.
    pub fallback: &'a FallbackForecaster,
    /// The recent history including the record.
    pub history: &'a RecentHistory,
    /// The record's wind speed (m/s) and precipitation (mm), if usable.
    pub wind_speed: Option<f64>,
    /// Precipitation in the window, mm.
    pub precipitation: Option<f64>,
    /// The fallback's 24 points issued at this origin (point forecast and interval per lead).
    pub fallback_points: &'a [ForecastPoint],
}

impl Origin<'_> {
    /// The origin temperature, when the record's temperature was accepted (past the fallback's
    /// outlier gate) and recorded in the history; trained models forecast only from such origins.
    pub fn temperature(&self) -> Option<f64> {
        let (h, _) = self.fallback.origin()?;
        (h == self.hour).then(|| self.history.temperature_at(self.hour)).flatten()
    }

    /// The fallback's interval half-width at `lead`.
    pub fn fallback_half_width(&self, lead: usize) -> Option<f64> {
        let p = self.fallback_points.get(lead.checked_sub(1)?)?;
        let s = (p.upper? - p.lower?) / 2.0;
        (s.is_finite() && s > 0.0).then_some(s.max(0.05))
    }

    /// The local volatility that normalises the conformal residuals at `lead`: the geometric
    /// mean of the fallback's interval half-width at that lead (its running error scale, which
    /// follows the regime through its own errors) and the week's 24-hour temperature-change
    /// volatility (model-free). Each alone is biased by season: the fallback's errors grow more
    /// than a better model's in autumn, and the 24-hour volatility ignores the lead.
    pub fn interval_scale(&self, lead: usize) -> Option<f64> {
        let fb = self.fallback_half_width(lead)?;
        Some(match self.history.volatility_24h() {
            Some(v) => (fb * v.max(0.1)).sqrt(),
            None => fb,
        })
    }
}

/// `(sin, cos)` of the hour of day as an angle, from a table of the 24 values (each lead of each
/// record needs one; `sin_cos` was a tenth of the trained forecaster's time).
fn hour_angle(hour: i64) -> (f64, f64) {
    static TABLE: std::sync::LazyLock<[(f64, f64); 24]> =
        std::sync::LazyLock::new(|| std::array::from_fn(|k| hour_angle_computed(k as i64)));
    TABLE[hour.rem_euclid(24) as usize]
}

fn hour_angle_computed(hour: i64) -> (f64, f64) {
    let a = (hour.rem_euclid(24) as f64) * std::f64::consts::TAU / 24.0;
    (a.sin(), a.cos())
}

/// An origin's features, given the station's climatology: [`OriginFeatures::columns`] gives
/// them (in [`FEATURES`] order) at every lead. What does not depend on the lead (the last
/// day's temperatures, the changes, humidity, pressure tendencies, the level against the
/// climate) is computed once per origin; serving and training both go through it.
#[derive(Clone, Copy, Debug)]
pub struct OriginFeatures<'a, 'o> {
    o: &'a Origin<'o>,
    climate: &'a Climatology,
    t0: f64,
    range: f64,
    changes: [f64; 6],
    rh: f64,
    rh_change: f64,
    depression: f64,
    p_changes: [f64; 4],
    wind: f64,
    precipitation: f64,
    origin_angle: (f64, f64),
    /// The annual cycle's phase at the origin.
    phase: (f64, f64),
    diurnal_now: f64,
    diurnal_range: f64,
    level_vs_climate: f64,
    daily_anomaly: f64,
    day_vs_climate: f64,
}

impl<'a, 'o> OriginFeatures<'a, 'o> {
    /// The origin's part, or `None` when it has no accepted temperature.
    pub fn new(o: &'a Origin<'o>, climate: &'a Climatology) -> Option<Self> {
        let t0 = o.temperature()?;
        let h = o.history;
        let hour = o.hour;
        // -0.0 as `Sum` for f64 starts (the same sum as the per-lead code had).
        let (mut sum, mut n, mut max, mut min) = (-0.0, 0usize, f64::NEG_INFINITY, f64::INFINITY);
        for t in (0..24).filter_map(|k| h.temperature_at(hour - k)) {
            sum += t;
            n += 1;
            max = max.max(t);
            min = min.min(t);
        }
        let day_mean = sum / n.max(1) as f64;
        let range = max - min;
        let range = if range.is_finite() { range } else { 0.0 };
        let change = |k: i64| t0 - h.temperature_near(hour - k, 3).unwrap_or(t0);
        let rh = h.humidity_near(hour, 6).unwrap_or(DEFAULT_HUMIDITY);
        let p0 = h.pressure_near(hour, 3);
        let p_change = |k: i64| match (p0, h.pressure_near(hour - k, 2)) {
            (Some(a), Some(b)) => a - b,
            _ => 0.0,
        };
        let phase = Climatology::phase(hour);
        let climate_now = climate.at_phase(phase);
        let diurnal_now = o.fallback.diurnal(hour);
        Some(OriginFeatures {
            o,
            climate,
            t0,
            range,
            changes: [change(1), change(2), change(3), change(6), change(12), change(24)],
            rh,
            rh_change: h.humidity_near(hour - 3, 3).map_or(0.0, |r| rh - r),
            depression: (t0 - dewpoint(t0, rh)).clamp(0.0, 40.0),
            p_changes: [p_change(1), p_change(3), p_change(12), p_change(24)],
            wind: o.wind_speed.unwrap_or(0.0).clamp(0.0, 40.0),
            precipitation: o.precipitation.unwrap_or(0.0).clamp(0.0, 50.0),
            origin_angle: hour_angle(hour),
            phase,
            diurnal_now,
            diurnal_range: o.fallback.diurnal_range(),
            level_vs_climate: o.fallback.level() - climate_now,
            daily_anomaly: t0 - day_mean - diurnal_now,
            day_vs_climate: day_mean - climate_now,
        })
    }

    /// The features at every lead, or `None` when the fallback has no forecast for some lead.
    /// What varies with the lead (the diurnal and climate steps, the valid hour, yesterday at
    /// the valid hour) is computed once per lead; the rest is the origin's, stored once.
    pub fn columns(&self) -> Option<Columns> {
        let o = self.o;
        let (t0, wind, range, depression) = (self.t0, self.wind, self.range, self.depression);
        let [c1, c2, c3, c6, c12, c24] = self.changes;
        let [p1, p3, p12, p24] = self.p_changes;
        let (os, oc) = self.origin_angle;
        let mut c = Columns {
            origin: [
                self.daily_anomaly,
                self.level_vs_climate,
                c1,
                c2,
                c3,
                c6,
                c12,
                c24,
                self.rh,
                self.rh_change,
                depression,
                p1,
                p3,
                p12,
                p24,
                wind,
                self.precipitation,
                os,
                oc,
                self.diurnal_range,
                self.day_vs_climate,
                range,
            ],
            lead: [[0.0; LEADS]; N_LEAD],
        };
        for l in 0..LEADS {
            let lead = l + 1;
            let fb = o.fallback_points.get(l)?.temperature?;
            let valid = o.hour + lead as i64;
            let diurnal_valid = o.fallback.diurnal(valid);
            let diurnal_delta = diurnal_valid - self.diurnal_now;
            let (vs, vc) = hour_angle(valid);
            let yesterday = o.history.temperature_near(valid - 24, 2).map_or(diurnal_delta, |y| y - t0);
            let column = [
                diurnal_delta,
                fb - t0,
                self.climate.at_phase(Climatology::phase_after(self.phase, lead)) + diurnal_valid - t0,
                vs,
                vc,
                diurnal_delta * depression / 10.0,
                diurnal_delta * wind / 5.0,
                yesterday,
                diurnal_delta * range / self.diurnal_range.max(1.0),
            ];
            for (k, v) in column.into_iter().enumerate() {
                c.lead[k][l] = v;
            }
        }
        Some(c)
    }
}

/// Where each feature of [`FEATURES`] lives in [`Columns`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Slot {
    /// The same at every lead: `Columns::origin[i]`.
    Origin(usize),
    /// One value per lead: `Columns::lead[i]`.
    Lead(usize),
}

/// Features that vary with the lead.
const N_LEAD: usize = 9;

/// [`FEATURES`] in order, as slots of [`Columns`].
pub const LAYOUT: [Slot; N_FEATURES] = {
    use Slot::{Lead as L, Origin as O};
    [
        O(0),  // daily_anomaly
        L(0),  // diurnal_delta
        L(1),  // fallback_delta
        L(2),  // climate_gap
        O(1),  // level_vs_climate
        O(2),  // change_1h
        O(3),  // change_2h
        O(4),  // change_3h
        O(5),  // change_6h
        O(6),  // change_12h
        O(7),  // change_24h
        O(8),  // humidity
        O(9),  // humidity_change_3h
        O(10), // dewpoint_depression
        O(11), // pressure_change_1h
        O(12), // pressure_change_3h
        O(13), // pressure_change_12h
        O(14), // pressure_change_24h
        O(15), // wind_speed
        O(16), // precipitation
        L(3),  // valid_hour_sin
        L(4),  // valid_hour_cos
        O(17), // origin_hour_sin
        O(18), // origin_hour_cos
        O(19), // diurnal_range
        L(5),  // diurnal_delta_x_dewpoint_depression
        L(6),  // diurnal_delta_x_wind_speed
        L(7),  // yesterday_delta
        O(20), // day_vs_climate
        O(21), // range_24h
        L(8),  // diurnal_delta_x_range
    ]
};

/// An origin's features at all 24 leads, stored once where they do not depend on the lead
/// (22 of the 31): a linear model over all leads reads each origin value once
/// (`Compiled::changes`), and [`row`](Columns::row) gives one lead's vector for training.
#[derive(Clone, Debug)]
pub struct Columns {
    /// Lead-independent features, by `Slot::Origin` index.
    pub origin: [f64; N_FEATURES - N_LEAD],
    /// Lead-dependent features, by `Slot::Lead` index, then lead - 1.
    pub lead: [[f64; LEADS]; N_LEAD],
}

impl Columns {
    /// Feature `j` (in [`FEATURES`] order) at lead index `l` (lead `l + 1`).
    pub fn get(&self, j: usize, l: usize) -> f64 {
        match LAYOUT[j] {
            Slot::Origin(i) => self.origin[i],
            Slot::Lead(i) => self.lead[i][l],
        }
    }

    /// The feature vector (in [`FEATURES`] order) for `lead` (1..=24) hours after the origin.
    pub fn row(&self, lead: usize) -> [f64; N_FEATURES] {
        let l = lead.clamp(1, LEADS) - 1;
        std::array::from_fn(|j| self.get(j, l))
    }
}

/// The normaliser of the conformal residuals, as named in the schema.
pub const INTERVAL_SCALE: &str = "interval_scale:sqrt(fallback_half_width*volatility_24h)";

/// Every input a forecast model's metadata lists: the point features in order, then the
/// interval normaliser (a model calibrated with another normaliser must not be served).
pub fn schema() -> Vec<String> {
    FEATURES
        .iter()
        .map(|f| f.to_string())
        .chain(std::iter::once(INTERVAL_SCALE.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annual_phase_of_later_hours_by_rotation_matches_the_direct_one() {
        let c = Climatology {
            mean: 12.0,
            cos: -11.0,
            sin: -4.0,
        };
        let mut worst = 0.0f64;
        for hour in (-900_000i64..1_300_000).step_by(997) {
            let p = Climatology::phase(hour);
            for lead in 0..=24 {
                let (a, b) = (c.at_phase(Climatology::phase_after(p, lead)), c.at(hour + lead as i64));
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-11, "largest difference {worst:e} degC");
        assert_eq!(c.at_phase(Climatology::phase(400_000)), c.at(400_000));
    }

    #[test]
    fn the_layout_places_every_column_once() {
        let (mut origin, mut lead) = (vec![0; N_FEATURES - N_LEAD], vec![0; N_LEAD]);
        for slot in LAYOUT {
            match slot {
                Slot::Origin(i) => origin[i] += 1,
                Slot::Lead(i) => lead[i] += 1,
            }
        }
        assert!(origin.iter().chain(&lead).all(|&n| n == 1), "{origin:?} {lead:?}");
        let c = Columns {
            origin: std::array::from_fn(|i| i as f64),
            lead: std::array::from_fn(|i| std::array::from_fn(|l| 100.0 * (i + 1) as f64 + l as f64)),
        };
        let row = c.row(3);
        assert_eq!((row[0], row[1], row[2], row[30]), (0.0, 102.0, 202.0, 902.0));
        assert_eq!(c.row(24)[20], 423.0, "valid_hour_sin at lead 24");
    }

    #[test]
    fn hour_angles_come_from_the_table_unchanged() {
        for h in -100..100 {
            let (a, b) = (hour_angle(h), hour_angle_computed(h));
            assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()), "hour {h}");
        }
    }

    #[test]
    fn dewpoint_matches_known_values() {
        assert!((dewpoint(20.0, 100.0) - 20.0).abs() < 0.01);
        assert!((dewpoint(20.0, 50.0) - 9.26).abs() < 0.05);
        assert!((dewpoint(0.0, 80.0) + 3.0).abs() < 0.1);
        assert!(dewpoint(20.0, -5.0).is_finite() && dewpoint(20.0, 130.0).is_finite());
    }

    #[test]
    fn climatology_recovers_an_annual_cycle() {
        let truth = Climatology {
            mean: 12.5,
            cos: -10.0,
            sin: -6.0,
        };
        let samples: Vec<(i64, f64)> = (0..24 * 240)
            .map(|h| (h + 376_944, truth.at(h + 376_944) + ((h * 7919) % 11) as f64 / 10.0 - 0.5))
            .collect();
        let fit = Climatology::fit(&samples).unwrap();
        assert!(
            (fit.mean - 12.5).abs() < 0.1 && (fit.cos + 10.0).abs() < 0.1 && (fit.sin + 6.0).abs() < 0.1,
            "{fit:?}"
        );
        assert!(Climatology::fit(&samples[..100]).is_none(), "too short");
        assert!(Climatology::fit(&vec![(5, 1.0); 1000]).is_none(), "degenerate");
        assert_eq!(schema().len(), N_FEATURES + 1);
    }
}
