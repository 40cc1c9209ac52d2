//! Per-station anomaly rules.
//!
//! Each rule maps one piece of evidence to a severity in [0, 1]. Statistic-based rules share one
//! ramp: with `x` the evidence divided by the rule's threshold,
//!
//! ```text
//!   severity(x) = clamp(x - 0.5, 0, 1)     (0 up to half the threshold, 0.5 at it, 1 at 1.5x)
//! ```
//!
//! and the record's `score = max(severities)`, `is_anomaly = score >= 0.5`; `reasons` holds one
//! human-readable line per rule with severity >= 0.5 (value, unit, what was expected), and is
//! empty when the record is not flagged. The rules:
//!
//! 1. **Implausible values** ([`qc::implausible`]): severity 1 each (EWR 2013-02-12T08Z wind
//!    468.7 m/s = 1048 mph, humidity above 105 %, pressure outside 500..1090 hPa, ...).
//!    Humidity up to 105 % is sensor saturation, not an error.
//! 2. **Temperature spike**, against the forecaster's [`Expectation`] (issued before the record
//!    was seen): `x = min(|T - mean| / (spike_sigma * sigma), |T - mean| / spike_min_c)`, i.e. it
//!    fires when the residual is both at least `spike_sigma` sigmas and `spike_min_c` degC (JFK
//!    2013-05-09T02Z: 13.1 F = -10.5 degC where ~14 degC was expected with sigma ~1 degC).
//!    Quiet while there is no expectation (no usable temperature in the previous 24 h).
//! 3. **Pressure level**, station-aware: a robust running mean `mu` and spread
//!    `sd = sqrt(pi/2) * EWMA|p - mu|` of the station's own pressure (station *or* sea level,
//!    whatever it reports), `x = |p - mu| / (pressure_sigma * max(sd, pressure_min_spread_hpa))`.
//!    Updates use residuals clipped at 4 sd (a glitch cannot drag the statistics). Quiet for the
//!    first `pressure_warm` pressure readings (default 72, three days of hourly data).
//! 4. **Pressure tendency**: `x = |p - p_prev| / (pressure_tendency_hpa_per_h * dt)` for a
//!    previous reading `dt` = 1..3 hours back (real NYC changes stay below 4 hPa/h).
//! 5. **Within-window variability** (meaningful for windows aggregating several readings,
//!    `count >= std_min_count`): `x = temperature_std / max(std_ratio * typical, std_min_c)` with
//!    `typical` the running mean of the station's own `temperature_std` (update residuals clipped
//!    at `max(2 typical, std_min_c)`). Quiet for the first `std_warm` such windows (default 48).
//! 6. **Extreme precipitation**: `x = precipitation_sum / (precip_extreme_mm_per_h * hours)`.
//!
//! Running statistics are EWMAs with weight `max(alpha, 1/(n+1))` (a plain running mean while
//! young); they learn only from plausible values.

use serde::{Deserialize, Serialize};

use super::qc;
use crate::contract::{Anomaly, FeatureRecord};
use crate::forecast::Expectation;

/// Rule-set name reported in predictions.
pub const NAME: &str = "rules/v1";

/// `sqrt(pi/2)`: mean absolute deviation to standard deviation for a normal distribution.
const MAD_TO_SIGMA: f64 = 1.253_314_137_315_500_3;

/// Thresholds of [`StationAnomaly`]. A rule reaches severity 0.5 (flags the record) at its
/// threshold; see the module docs for each formula.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyParams {
    /// Temperature spike threshold, in sigmas of the forecaster's expectation.
    pub spike_sigma: f64,
    /// Temperature spike threshold, minimum absolute residual in degC.
    pub spike_min_c: f64,
    /// Pressure level threshold, in robust sigmas of the station's own pressure.
    pub pressure_sigma: f64,
    /// Floor of the station's pressure spread, hPa.
    pub pressure_min_spread_hpa: f64,
    /// Minimum EWMA weight of the pressure statistics (1/720: about 30 days of hourly data).
    pub pressure_alpha: f64,
    /// Pressure readings before the level rule speaks.
    pub pressure_warm: u32,
    /// Pressure tendency threshold, hPa per hour.
    pub pressure_tendency_hpa_per_h: f64,
    /// Within-window variability threshold, multiple of the station's typical temperature_std.
    pub std_ratio: f64,
    /// Within-window variability threshold floor, degC.
    pub std_min_c: f64,
    /// Minimum EWMA weight of the typical temperature_std (1/168: about a week of hourly data).
    pub std_alpha: f64,
    /// Windows with a temperature_std before the variability rule speaks.
    pub std_warm: u32,
    /// Minimum `count` of a window for its temperature_std to be judged.
    pub std_min_count: u64,
    /// Extreme precipitation threshold, mm per hour of window.
    pub precip_extreme_mm_per_h: f64,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        AnomalyParams {
            spike_sigma: 6.0,
            spike_min_c: 4.0,
            pressure_sigma: 6.0,
            pressure_min_spread_hpa: 3.0,
            pressure_alpha: 1.0 / 720.0,
            pressure_warm: 72,
            pressure_tendency_hpa_per_h: 6.0,
            std_ratio: 5.0,
            std_min_c: 1.5,
            std_alpha: 1.0 / 168.0,
            std_warm: 48,
            std_min_count: 3,
            precip_extreme_mm_per_h: 50.0,
        }
    }
}

impl AnomalyParams {
    /// The real-valued thresholds by name, each positive and finite, and for rates (`true`) at
    /// most 1: the one list both [`Rules::new`] (which gives other values the default) and the
    /// configuration's check (which reports them) read.
    pub fn bounded(&mut self) -> [(&'static str, &mut f64, bool); 10] {
        [
            ("spike_sigma", &mut self.spike_sigma, false),
            ("spike_min_c", &mut self.spike_min_c, false),
            ("pressure_sigma", &mut self.pressure_sigma, false),
            ("pressure_min_spread_hpa", &mut self.pressure_min_spread_hpa, false),
            ("pressure_alpha", &mut self.pressure_alpha, true),
            ("pressure_tendency_hpa_per_h", &mut self.pressure_tendency_hpa_per_h, false),
            ("std_ratio", &mut self.std_ratio, false),
            ("std_min_c", &mut self.std_min_c, false),
            ("std_alpha", &mut self.std_alpha, true),
            ("precip_extreme_mm_per_h", &mut self.precip_extreme_mm_per_h, false),
        ]
    }
}

/// EWMA of a value and of its absolute deviation (robust spread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Running {
    n: u32,
    mean: f64,
    mad: f64,
}

impl Running {
    /// Updates with `v`, residuals clipped at `clip` (absolute units).
    fn update(&mut self, v: f64, alpha: f64, clip: f64) {
        let a = alpha.max(1.0 / (f64::from(self.n) + 1.0));
        if self.n == 0 {
            self.mean = v;
        }
        let r = (v - self.mean).clamp(-clip, clip);
        self.mad += a * (r.abs() - self.mad);
        self.mean += a * r;
        self.n = self.n.saturating_add(1);
    }
}

/// Per-station anomaly state (72 bytes, no heap). The thresholds are configuration
/// ([`Rules`]), not state: checkpoints written while states carried a copy restore with it
/// ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StationAnomaly {
    pressure: Running,
    /// Last plausible pressure: (hour index, hPa).
    last_pressure: Option<(i64, f64)>,
    temperature_std: Running,
}

/// `clamp(x - 0.5, 0, 1)`: 0.5 at the threshold (`x = 1`); 0 for NaN.
fn severity(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        (x - 0.5).clamp(0.0, 1.0)
    }
}

fn positive(v: f64, default: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        default
    }
}

/// The rules' thresholds, resolved once per operator: every rate and threshold positive and
/// finite (others take the default), the rates at most 1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    params: AnomalyParams,
}

impl Rules {
    /// Resolves `params`.
    pub fn new(params: &AnomalyParams) -> Rules {
        let (mut p, mut d) = (params.clone(), AnomalyParams::default());
        for ((_, v, rate), (_, dv, _)) in p.bounded().into_iter().zip(d.bounded()) {
            let x = positive(*v, *dv);
            *v = if rate { x.min(1.0) } else { x };
        }
        Rules { params: p }
    }
}

impl StationAnomaly {
    /// Fresh state for one station.
    pub fn new() -> Self {
        StationAnomaly::default()
    }

    /// Assesses the station's next record (arrival order), given the forecaster's expectation for
    /// its window (computed before the forecaster saw the record), and learns from it.
    /// Allocates only for the reasons of a flagged record. Never panics.
    pub fn assess(&mut self, rules: &Rules, rec: &FeatureRecord, expected: Option<Expectation>) -> Anomaly {
        let p = &rules.params;
        let hour = rec.hour_index();
        let issues = qc::implausible(rec);
        let mut score: f64 = if issues.is_empty() { 0.0 } else { 1.0 };

        // 2. Temperature spike against the expectation.
        let temperature = qc::usable_temperature(rec);
        let spike = match (temperature, expected) {
            (Some(t), Some(ex)) if ex.sigma > 0.0 && ex.sigma.is_finite() => {
                let r = t - ex.mean;
                let x = (r.abs() / (p.spike_sigma * ex.sigma)).min(r.abs() / p.spike_min_c);
                Some((severity(x), t, r, ex))
            }
            _ => None,
        };

        // 3./4. Pressure level and tendency.
        let pressure = qc::usable_pressure(rec);
        let spread = (MAD_TO_SIGMA * self.pressure.mad).max(p.pressure_min_spread_hpa);
        let level = pressure.filter(|_| self.pressure.n >= p.pressure_warm).map(|v| {
            let z = (v - self.pressure.mean) / spread;
            (severity(z.abs() / p.pressure_sigma), v, z, self.pressure.mean, spread)
        });
        let tendency = match (pressure, self.last_pressure) {
            (Some(v), Some((h0, v0))) if (1..=3).contains(&(hour - h0)) => {
                let dt = (hour - h0) as f64;
                Some((severity((v - v0).abs() / (p.pressure_tendency_hpa_per_h * dt)), v - v0, dt))
            }
            _ => None,
        };

        // 5. Within-window variability.
        let std = qc::usable_temperature_std(rec).filter(|_| rec.count >= p.std_min_count);
        let typical = self.temperature_std.mean;
        let variability = std.filter(|_| self.temperature_std.n >= p.std_warm).map(|s| {
            let limit = (p.std_ratio * typical).max(p.std_min_c);
            (severity(s / limit), s, typical, limit)
        });

        // 6. Extreme precipitation.
        let hours = qc::window_hours(rec);
        let precip_limit = p.precip_extreme_mm_per_h * hours;
        let precip = qc::usable_precipitation(rec).map(|v| (severity(v / precip_limit), v));

        for sev in [
            spike.map(|s| s.0),
            level.map(|l| l.0),
            tendency.map(|t| t.0),
            variability.map(|v| v.0),
            precip.map(|p| p.0),
        ]
        .into_iter()
        .flatten()
        {
            score = score.max(sev);
        }
        let is_anomaly = score >= 0.5;
        let mut reasons = Vec::new();
        if is_anomaly {
            reasons.extend(issues.into_iter().map(|i| i.reason));
            if let Some((_, t, r, ex)) = spike.filter(|s| s.0 >= 0.5) {
                reasons.push(format!(
                    "temperature spike: {t:.1} degC is {:.1} degC {} the expected {:.1} degC ({:.1} sigma, sigma {:.2} degC at lead {} h; threshold {} sigma and {} degC)",
                    r.abs(),
                    if r < 0.0 { "below" } else { "above" },
                    ex.mean,
                    r.abs() / ex.sigma,
                    ex.sigma,
                    ex.lead_hours,
                    p.spike_sigma,
                    p.spike_min_c
                ));
            }
            if let Some((_, v, z, mu, sd)) = level.filter(|l| l.0 >= 0.5) {
                reasons.push(format!(
                    "pressure {v:.1} hPa is {:.1} sigma {} the station's running mean {mu:.1} hPa (spread {sd:.1} hPa; threshold {} sigma)",
                    z.abs(),
                    if z < 0.0 { "below" } else { "above" },
                    p.pressure_sigma
                ));
            }
            if let Some((_, dp, dt)) = tendency.filter(|t| t.0 >= 0.5) {
                reasons.push(format!(
                    "pressure changed by {dp:+.1} hPa in {dt:.0} h (threshold {} hPa/h)",
                    p.pressure_tendency_hpa_per_h
                ));
            }
            if let Some((_, s, typ, limit)) = variability.filter(|v| v.0 >= 0.5) {
                reasons.push(format!(
                    "within-window temperature_std {s:.2} degC over {} readings; station typical {typ:.2} degC (threshold {limit:.2} degC)",
                    rec.count
                ));
            }
            if let Some((_, v)) = precip.filter(|p| p.0 >= 0.5) {
                reasons.push(format!(
                    "extreme precipitation {v:.1} mm in {hours:.1} h (threshold {} mm/h)",
                    p.precip_extreme_mm_per_h
                ));
            }
        }

        // Learn (plausible values only, clipped residuals).
        if let Some(v) = pressure {
            let clip = 4.0 * spread;
            let alpha = p.pressure_alpha;
            self.pressure.update(v, alpha, clip);
            self.last_pressure = Some((hour, v));
        }
        if let Some(s) = std {
            let clip = if self.temperature_std.n == 0 {
                f64::INFINITY
            } else {
                (2.0 * typical).max(p.std_min_c)
            };
            let alpha = p.std_alpha;
            self.temperature_std.update(s, alpha, clip);
        }
        Anomaly {
            score,
            is_anomaly,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn rec(hour: i64) -> FeatureRecord {
        let end = Utc.with_ymd_and_hms(2016, 6, 1, 0, 0, 0).unwrap() + Duration::hours(hour);
        FeatureRecord {
            station_id: "S".into(),
            window_start: Some(end - Duration::hours(1)),
            window_end: end,
            count: 60,
            temperature_mean: Some(15.0),
            temperature_min: Some(14.0),
            temperature_max: Some(16.0),
            temperature_std: Some(0.3 + 0.05 * (hour % 5) as f64),
            humidity_mean: Some(100.5),
            pressure_mean: Some(955.0 + (hour % 7) as f64 * 0.5),
            wind_speed_mean: Some(3.0),
            wind_speed_max: Some(7.0),
            precipitation_sum: Some(0.0),
        }
    }

    fn expect(mean: f64, sigma: f64) -> Option<Expectation> {
        Some(Expectation {
            mean,
            sigma,
            lead_hours: 1,
        })
    }

    fn warmed() -> StationAnomaly {
        let mut a = StationAnomaly::new();
        for h in 0..200 {
            let out = a.assess(&Rules::default(), &rec(h), expect(15.0, 0.8));
            assert!(!out.is_anomaly, "hour {h}: {out:?}");
            assert!(out.reasons.is_empty());
        }
        a
    }

    #[test]
    fn thresholds_are_configuration_not_state_and_old_checkpoints_still_restore() {
        let a = warmed();
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("params") && !json.contains("spike_sigma"), "{json}");
        assert_eq!(serde_json::from_str::<StationAnomaly>(&json).unwrap(), a);
        // A checkpoint written while states carried their thresholds restores to the same state.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old["params"] = serde_json::to_value(AnomalyParams::default()).unwrap();
        assert_eq!(serde_json::from_value::<StationAnomaly>(old).unwrap(), a);
        // The same state judges by the thresholds it is given: a 3.5 degC miss at sigma 0.8 is
        // under the default spike thresholds (6 sigma = 4.8 degC, at least 4 degC) and over
        // 2 sigma, at least 2 degC.
        let strict = Rules::new(&AnomalyParams {
            spike_sigma: 2.0,
            spike_min_c: 2.0,
            ..AnomalyParams::default()
        });
        let r = rec(200);
        let (mut x, mut y) = (a.clone(), a);
        assert!(!x.assess(&Rules::default(), &r, expect(18.5, 0.8)).is_anomaly);
        assert!(y.assess(&strict, &r, expect(18.5, 0.8)).is_anomaly);
    }

    #[test]
    fn first_record_and_saturated_station_level_readings_are_quiet() {
        let mut a = StationAnomaly::new();
        let out = a.assess(&Rules::default(), &rec(0), None);
        assert_eq!(out, Anomaly::default());
        // 955 hPa station pressure and 100.5 % humidity for 200 h: the old fixed rules fired on all.
        let mut a = warmed();
        let mut r = rec(200);
        r.humidity_mean = Some(103.0);
        assert!(!a.assess(&Rules::default(), &r, expect(15.0, 0.8)).is_anomaly);
    }

    #[test]
    fn implausible_values_score_one_with_reasons() {
        let mut a = StationAnomaly::new();
        let mut r = rec(0);
        r.wind_speed_mean = Some(468.66);
        r.wind_speed_max = Some(468.66);
        r.humidity_mean = Some(130.0);
        let out = a.assess(&Rules::default(), &r, None);
        assert_eq!(out.score, 1.0);
        assert!(out.is_anomaly);
        assert_eq!(out.reasons.len(), 3, "{:?}", out.reasons);
        assert!(out.reasons[0].contains("humidity") && out.reasons[0].contains("130.0 %"));
        assert!(out.reasons[1].contains("468.7 m/s"));
    }

    #[test]
    fn temperature_spike_against_the_expectation() {
        let mut a = StationAnomaly::new();
        let mut r = rec(0);
        r.temperature_mean = Some(-10.5);
        r.temperature_min = Some(-10.5);
        r.temperature_max = Some(-10.5);
        let out = a.assess(&Rules::default(), &r, expect(13.9, 0.8));
        assert!(out.is_anomaly && out.score == 1.0);
        assert!(
            out.reasons[0].contains("temperature spike") && out.reasons[0].contains("below"),
            "{:?}",
            out.reasons
        );
        assert!(!a.assess(&Rules::default(), &r, None).is_anomaly, "quiet without an expectation");
        assert!(
            !a.assess(&Rules::default(), &r, expect(-7.0, 0.5)).is_anomaly,
            "3.5 degC is below the 4 degC floor"
        );
        let out = a.assess(&Rules::default(), &r, expect(-5.0, 1.0));
        assert!(
            !out.is_anomaly && out.score > 0.0,
            "5.5 sigma: some evidence, no flag ({})",
            out.score
        );
    }

    #[test]
    fn station_aware_pressure_level_and_tendency() {
        let mut a = StationAnomaly::new();
        let mut r = rec(0);
        r.pressure_mean = Some(900.0);
        assert!(!a.assess(&Rules::default(), &r, None).is_anomaly, "quiet before warm-up");
        let mut a = warmed();
        let mut r = rec(200);
        r.pressure_mean = Some(975.0); // 20 hPa off the station's 956.5, and 18+ hPa in an hour
        let out = a.assess(&Rules::default(), &r, expect(15.0, 0.8));
        assert!(out.is_anomaly);
        assert!(
            out.reasons.iter().any(|x| x.contains("sigma above the station's running mean")),
            "{:?}",
            out.reasons
        );
        assert!(out.reasons.iter().any(|x| x.contains("hPa in 1 h")), "{:?}", out.reasons);
        // A sea-level station with winter highs: 1045 hPa is not an error.
        let mut a = StationAnomaly::new();
        for h in 0..300 {
            let mut r = rec(h);
            r.pressure_mean = Some(1015.0 + 8.0 * (h as f64 / 40.0).sin());
            a.assess(&Rules::default(), &r, None);
        }
        let mut r = rec(300);
        r.pressure_mean = Some(1026.0);
        a.assess(&Rules::default(), &r, None);
        for (h, p) in [(301, 1030.0), (302, 1034.0), (303, 1038.0), (304, 1042.0), (305, 1045.0)] {
            let mut r = rec(h);
            r.pressure_mean = Some(p);
            assert!(!a.assess(&Rules::default(), &r, None).is_anomaly, "{p} hPa");
        }
    }

    #[test]
    fn within_window_variability_and_precipitation() {
        let mut a = warmed();
        let mut r = rec(200);
        r.temperature_std = Some(2.5);
        r.temperature_min = Some(8.0);
        r.temperature_max = Some(19.0);
        let out = a.assess(&Rules::default(), &r, expect(15.0, 0.8));
        assert!(
            out.is_anomaly && out.reasons[0].contains("temperature_std 2.50 degC"),
            "{:?}",
            out.reasons
        );
        r.count = 1;
        assert!(
            !a.assess(&Rules::default(), &r, expect(15.0, 0.8)).is_anomaly,
            "one reading: std not judged"
        );
        let mut r = rec(202);
        r.precipitation_sum = Some(60.0);
        let out = a.assess(&Rules::default(), &r, expect(15.0, 0.8));
        assert!(
            out.is_anomaly && out.reasons[0].contains("extreme precipitation 60.0 mm"),
            "{:?}",
            out.reasons
        );
        r.window_start = Some(r.window_end - Duration::hours(6));
        assert!(!a.assess(&Rules::default(), &r, expect(15.0, 0.8)).is_anomaly, "60 mm in 6 h");
    }

    #[test]
    fn state_is_small_serialisable_and_robust() {
        let size = std::mem::size_of::<StationAnomaly>();
        println!("size_of::<StationAnomaly>() = {size} bytes");
        assert!(size <= 1024);
        let rules = Rules::new(&AnomalyParams {
            spike_sigma: f64::NAN,
            pressure_alpha: -1.0,
            ..AnomalyParams::default()
        });
        assert_eq!(rules, Rules::default(), "invalid thresholds take the defaults");
        let mut a = StationAnomaly::new();
        let mut r = rec(0);
        r.temperature_mean = Some(f64::NAN);
        r.pressure_mean = Some(f64::INFINITY);
        let out = a.assess(
            &rules,
            &r,
            Some(Expectation {
                mean: f64::NAN,
                sigma: 0.0,
                lead_hours: 1,
            }),
        );
        assert!(out.is_anomaly && out.score == 1.0);
        let json = serde_json::to_string(&warmed()).unwrap();
        let back: StationAnomaly = serde_json::from_str(&json).unwrap();
        assert_eq!(back, warmed());
        let partial: AnomalyParams = serde_json::from_str(r#"{"spike_sigma": 5}"#).unwrap();
        assert_eq!(partial.pressure_warm, 72);
    }
}
