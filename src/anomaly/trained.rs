//! Trained anomaly evidence: per-station robust statistics, forecast-residual z-scores with
//! CUSUM drift statistics, stuck-sensor evidence and an isolation forest, all fitted on
//! normal data and combined into a [0, 1] score with reasons. The rules of [`super::rules`] stay
//! the rule engine; the operator takes the maximum of both scores and lists both sets of reasons.
//!
//! ```text
//!   record + forecaster's expectation ──> EvidenceState (per station, model-agnostic, 24 bytes)
//!        x = [residual_z, change_1h, stuck_hours, cusum_up, cusum_down, humidity, wind, dp_1h, stuck_score]
//!                 │
//!   AnomalyModel: ├─ |residual_z| / t_z, stuck run / t_stuck, cusum / t_cusum  (thresholds:
//!                 │    high quantiles of the same statistics on normal training hours)
//!                 └─ isolation forest on the per-station robust z-scores of x:
//!                      (s(x) - median normal s) / (t_s - median normal s)
//!   severity(r) = clamp(r - 0.5, 0, 1): 0.5 at the threshold, like the rules; score = max
//! ```
//!
//! The CUSUMs accumulate standardised residuals `z` (clipped at +-4) beyond an allowance of 0.5:
//! `up <- max(0, up + z - 0.5)`, `down <- max(0, down - z - 0.5)`. A slowly drifting sensor leaves
//! small same-signed residuals hour after hour, which the CUSUM adds up while the forecaster
//! keeps adapting to the drifting values. A stuck sensor repeats one reading: `stuck_hours`
//! counts the repeats and `stuck_score` adds up `|z|` over them, i.e. how much change the
//! forecaster expected while none came (identical readings in a calm night score little, a
//! reading frozen through a sunny morning a lot).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::iforest::IsolationForest;
use super::qc;
use crate::contract::{Anomaly, FeatureRecord};
use crate::forecast::Expectation;

/// Model type: robust statistics, residual z-scores, CUSUM, stuck run and isolation forest.
pub const ROBUST_IFOREST: &str = "robust-iforest";
/// Model type: the same without the isolation forest.
pub const ROBUST_ZSCORE: &str = "robust-zscore";

/// Evidence names, in the order of [`Evidence::values`]; stored in the model's metadata.
pub const FEATURES: [&str; N_EVIDENCE] = [
    "residual_z",
    "change_1h",
    "stuck_hours",
    "cusum_up",
    "cusum_down",
    "humidity",
    "wind_speed",
    "pressure_change_1h",
    "stuck_score",
];
/// Number of evidence values.
pub const N_EVIDENCE: usize = 9;

const CUSUM_K: f64 = 0.5;
const Z_CLIP: f64 = 4.0;
/// Temperatures closer than this (degC) count as "the same reading" for the stuck run.
const SAME_READING_C: f64 = 0.001;

/// Per-station running state of the evidence (independent of any model version).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvidenceState {
    last_hour: Option<i64>,
    last_temperature: Option<f32>,
    last_pressure: Option<f32>,
    stuck_hours: u16,
    #[serde(default)]
    stuck_score: f32,
    cusum_up: f32,
    cusum_down: f32,
}

/// The evidence computed for one record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evidence {
    /// Values in [`FEATURES`] order (missing inputs are 0, or the station's median for humidity
    /// and wind when scored).
    pub values: [f64; N_EVIDENCE],
    /// Which values were measured (false: missing).
    pub present: [bool; N_EVIDENCE],
    /// The record's usable temperature.
    pub temperature: Option<f64>,
}

impl EvidenceState {
    /// Computes the record's evidence (the stuck run and CUSUMs include the record) and learns
    /// from it. `expected` is the forecaster's expectation for the record's window.
    pub fn observe(&mut self, rec: &FeatureRecord, expected: Option<Expectation>) -> Evidence {
        let hour = rec.hour_index();
        let t = qc::usable_temperature(rec);
        let consecutive = self.last_hour.is_some_and(|h| hour - h == 1);
        let mut values = [0.0; N_EVIDENCE];
        let mut present = [false; N_EVIDENCE];
        let mut abs_z = 0.0;
        if let (Some(t), Some(ex)) = (t, expected.filter(|e| e.sigma > 0.0 && e.sigma.is_finite())) {
            let z = (t - ex.mean) / ex.sigma;
            abs_z = z.abs().min(10.0);
            values[0] = z.clamp(-10.0, 10.0);
            present[0] = true;
            let zc = z.clamp(-Z_CLIP, Z_CLIP);
            self.cusum_up = (f64::from(self.cusum_up) + zc - CUSUM_K).max(0.0) as f32;
            self.cusum_down = (f64::from(self.cusum_down) - zc - CUSUM_K).max(0.0) as f32;
        }
        if let Some(t) = t {
            match self.last_temperature.filter(|_| consecutive) {
                Some(prev) => {
                    let d = t - f64::from(prev);
                    values[1] = d.clamp(-30.0, 30.0);
                    present[1] = true;
                    if d.abs() < SAME_READING_C {
                        self.stuck_hours = self.stuck_hours.saturating_add(1);
                        self.stuck_score = (f64::from(self.stuck_score) + abs_z).min(1e4) as f32;
                    } else {
                        self.stuck_hours = 0;
                        self.stuck_score = 0.0;
                    }
                }
                None => {
                    self.stuck_hours = 0;
                    self.stuck_score = 0.0;
                }
            }
            self.last_temperature = Some(t as f32);
        }
        values[2] = f64::from(self.stuck_hours);
        present[2] = t.is_some();
        values[8] = f64::from(self.stuck_score);
        present[8] = t.is_some();
        values[3] = f64::from(self.cusum_up);
        values[4] = f64::from(self.cusum_down);
        present[3] = true;
        present[4] = true;
        if let Some(h) = rec.humidity_mean.filter(|&h| qc::plausible_humidity(h)) {
            values[5] = h;
            present[5] = true;
        }
        if let Some(w) = rec.wind_speed_mean.filter(|&w| (0.0..=qc::WIND_MEAN_MAX_MS).contains(&w)) {
            values[6] = w;
            present[6] = true;
        }
        let p = qc::usable_pressure(rec);
        if let (Some(p), Some(prev)) = (p, self.last_pressure.filter(|_| consecutive)) {
            values[7] = (p - f64::from(prev)).clamp(-50.0, 50.0);
            present[7] = true;
        }
        self.last_pressure = p.map(|p| p as f32).or(self.last_pressure.filter(|_| consecutive));
        if t.is_some() || p.is_some() {
            self.last_hour = Some(hour);
        }
        Evidence {
            values,
            present,
            temperature: t,
        }
    }
}

/// Robust location and scale of each evidence value at one station (median, 1.4826 MAD).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustStats {
    /// Normal hours the statistics were computed from.
    pub n: u64,
    /// Median per evidence value.
    pub median: Vec<f64>,
    /// Robust scale per evidence value (floored, never 0).
    pub scale: Vec<f64>,
}

impl RobustStats {
    /// Robust z-scores of `e` (missing values at the median, i.e. 0), clipped to +-50.
    /// Statistics of the wrong length (refused by [`AnomalyModel::validate`]) count as missing.
    pub fn normalise(&self, e: &Evidence) -> [f64; N_EVIDENCE] {
        std::array::from_fn(|i| match (e.present[i], self.median.get(i), self.scale.get(i)) {
            (true, Some(m), Some(s)) => ((e.values[i] - m) / s).clamp(-50.0, 50.0),
            _ => 0.0,
        })
    }
}

/// Thresholds fitted on normal hours (a statistic equal to its threshold scores 0.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// |residual_z|.
    pub residual_z: f64,
    /// Stuck run, hours of identical readings.
    pub stuck_hours: f64,
    /// Stuck score, sum of |residual z| over a run of identical readings.
    pub stuck_score: f64,
    /// CUSUM of positive residuals.
    pub cusum_up: f64,
    /// CUSUM of negative residuals.
    pub cusum_down: f64,
    /// Isolation-forest score threshold, and the median normal score it is measured from.
    pub forest: f64,
    /// Median isolation-forest score of normal hours.
    pub forest_median: f64,
}

/// A trained anomaly model as stored in `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyModel {
    /// [`ROBUST_IFOREST`] or [`ROBUST_ZSCORE`].
    pub model_type: String,
    /// Evidence names in order; must equal [`FEATURES`].
    pub features: Vec<String>,
    /// Per-station robust statistics.
    pub stations: BTreeMap<String, RobustStats>,
    /// Statistics pooled over all stations, for stations not seen in training.
    pub pooled: RobustStats,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// The forest (for [`ROBUST_IFOREST`]).
    pub forest: Option<IsolationForest>,
}

/// `clamp(x - 0.5, 0, 1)`, 0 for NaN (the rules' ramp).
pub fn severity(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        (x - 0.5).clamp(0.0, 1.0)
    }
}

/// The model's verdict on one record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// In [0, 1].
    pub score: f64,
    /// One line per piece of evidence with severity >= 0.5.
    pub reasons: Vec<String>,
}

impl AnomalyModel {
    /// Checks that this build can serve the model.
    pub fn validate(&self) -> Result<(), String> {
        if self.features.iter().map(String::as_str).ne(FEATURES.iter().copied()) {
            return Err(format!(
                "feature schema mismatch: the model has [{}], this build computes [{}]",
                self.features.join(", "),
                FEATURES.join(", ")
            ));
        }
        let stats_ok = |s: &RobustStats| {
            s.median.len() == N_EVIDENCE
                && s.scale.len() == N_EVIDENCE
                && s.median.iter().all(|v| v.is_finite())
                && s.scale.iter().all(|v| v.is_finite() && *v > 0.0)
        };
        if !stats_ok(&self.pooled) || !self.stations.values().all(stats_ok) {
            return Err("robust statistics must hold one finite location and positive scale per evidence value".into());
        }
        let t = &self.thresholds;
        let positive = [t.residual_z, t.stuck_hours, t.stuck_score, t.cusum_up, t.cusum_down]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0);
        let forest_ok = t.forest.is_finite() && t.forest_median.is_finite() && t.forest > t.forest_median;
        if !positive || !forest_ok {
            return Err("thresholds must be positive and finite, forest threshold above its median".into());
        }
        match (self.model_type.as_str(), &self.forest) {
            (ROBUST_IFOREST, Some(f)) if f.n_features == N_EVIDENCE => f.validate().map_err(|e| e.to_string()),
            (ROBUST_IFOREST, _) => Err(format!("{ROBUST_IFOREST} needs a forest over {N_EVIDENCE} features")),
            (ROBUST_ZSCORE, _) => Ok(()),
            (other, _) => Err(format!("unknown anomaly model type {other:?}")),
        }
    }

    /// The robust statistics of `station` (pooled for unknown stations).
    pub fn stats(&self, station: &str) -> &RobustStats {
        self.stations.get(station).unwrap_or(&self.pooled)
    }

    /// Scores one record's evidence. A reason's text is written only when its severity reaches
    /// 0.5 (most records raise none, and formatting the numbers was this model's largest cost).
    pub fn assess(&self, station: &str, e: &Evidence) -> Verdict {
        let t = &self.thresholds;
        let v = &e.values;
        let mut verdict = Verdict::default();
        if e.present[0] {
            verdict.weigh(v[0].abs() / t.residual_z, || {
                format!(
                    "model: forecast residual {:+.1} sigma (normal at most {:.1} sigma)",
                    v[0], t.residual_z
                )
            });
        }
        if e.present[2] {
            let at = e.temperature.unwrap_or(f64::NAN);
            verdict.weigh((v[2] / t.stuck_hours).max(v[8] / t.stuck_score), || {
                format!(
                    "model: temperature stuck at {at:.1} degC for {:.0} h while the forecaster expected change (sum |z| {:.1}; normal at most {:.0} h or {:.1})",
                    v[2] + 1.0,
                    v[8],
                    t.stuck_hours + 1.0,
                    t.stuck_score
                )
            });
        }
        let (up, down) = (v[3] / t.cusum_up, v[4] / t.cusum_down);
        let (r, dir, val, thr) = if up >= down {
            (up, "above", v[3], t.cusum_up)
        } else {
            (down, "below", v[4], t.cusum_down)
        };
        verdict.weigh(r, || {
            format!("model: drift, readings persistently {dir} forecast (CUSUM {val:.1}, normal at most {thr:.1})")
        });
        if let Some(f) = &self.forest {
            let z = self.stats(station).normalise(e);
            let s = f.score(&z);
            verdict.weigh((s - t.forest_median) / (t.forest - t.forest_median), || {
                let (worst, zw) = z
                    .iter()
                    .enumerate()
                    .fold((0, 0.0f64), |acc, (i, &x)| if x.abs() > acc.1.abs() { (i, x) } else { acc });
                format!(
                    "model: unusual combination (isolation score {s:.3}, normal at most {:.3}); most unusual: {} at {zw:+.1} robust sigma",
                    t.forest, FEATURES[worst]
                )
            });
        }
        verdict
    }
}

impl Verdict {
    /// Adds one piece of evidence of ratio `r` to its threshold: the score is the largest
    /// severity seen, and `text` is written as a reason when this one's severity is >= 0.5.
    fn weigh(&mut self, r: f64, text: impl FnOnce() -> String) {
        let s = severity(r);
        self.score = self.score.max(s);
        if s >= 0.5 {
            self.reasons.push(text());
        }
    }
}

/// A served model's verdict on one record, named, as it travels from the forecasting operator
/// (which keeps the evidence state) to the anomaly operator (which combines it with the rules).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVerdict {
    /// `model_type/version` of the anomaly model.
    pub model: String,
    /// In [0, 1].
    pub score: f64,
    /// Reasons with severity >= 0.5.
    pub reasons: Vec<String>,
}

impl ModelVerdict {
    /// Names a verdict. The name's buffer has room for the rules' name after it, which is how
    /// the prediction names the two (`<model>+rules/v1`, appended without growing the buffer).
    pub fn new(model: &str, v: Verdict) -> Self {
        let mut name = String::with_capacity(model.len() + 1 + super::rules::NAME.len());
        name.push_str(model);
        ModelVerdict {
            model: name,
            score: v.score,
            reasons: v.reasons,
        }
    }
}

/// Combines the rules' assessment with a model verdict: the score is the larger of the two,
/// `is_anomaly = score >= 0.5`, and the reasons are those of both that fired (none when the
/// record is not flagged).
pub fn combine(rules: Anomaly, verdict: Option<&ModelVerdict>) -> Anomaly {
    let Some(v) = verdict else { return rules };
    let score = rules.score.max(v.score).clamp(0.0, 1.0);
    let is_anomaly = score >= 0.5;
    let mut reasons = if rules.is_anomaly { rules.reasons } else { Vec::new() };
    if is_anomaly && v.score >= 0.5 {
        reasons.extend(v.reasons.iter().cloned());
    }
    Anomaly {
        score,
        is_anomaly,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn rec(hour: i64, t: f64) -> FeatureRecord {
        let end = Utc.with_ymd_and_hms(2013, 10, 1, 0, 0, 0).unwrap() + Duration::hours(hour);
        FeatureRecord {
            station_id: "S".into(),
            window_start: Some(end - Duration::hours(1)),
            window_end: end,
            count: 1,
            temperature_mean: Some(t),
            temperature_min: Some(t),
            temperature_max: Some(t),
            temperature_std: Some(0.0),
            humidity_mean: Some(60.0),
            pressure_mean: Some(1015.0),
            wind_speed_mean: Some(3.0),
            wind_speed_max: Some(3.0),
            precipitation_sum: Some(0.0),
        }
    }

    fn ex(mean: f64) -> Option<Expectation> {
        Some(Expectation {
            mean,
            sigma: 1.0,
            lead_hours: 1,
        })
    }

    #[test]
    fn evidence_tracks_stuck_runs_cusum_and_gaps() {
        let mut s = EvidenceState::default();
        let e = s.observe(&rec(0, 10.0), None);
        assert!(!e.present[0] && !e.present[1] && e.values[2] == 0.0);
        for h in 1..=5 {
            let e = s.observe(&rec(h, 10.0), ex(10.0));
            assert_eq!(e.values[2], h as f64, "stuck run grows");
        }
        let e = s.observe(&rec(6, 13.0), ex(10.0));
        assert_eq!((e.values[0], e.values[1], e.values[2]), (3.0, 3.0, 0.0));
        assert!((e.values[3] - 2.5).abs() < 1e-6 && e.values[4] == 0.0, "{:?}", e.values);
        let e = s.observe(&rec(9, 13.0), ex(13.0));
        assert!(!e.present[1] && e.values[2] == 0.0, "a gap resets the run");
        // A few tens of bytes per station (the 2 KB per-station budget is shared by all state).
        assert!(std::mem::size_of::<EvidenceState>() <= 48);
        assert!(e.values[8] == 0.0);
    }

    #[test]
    fn a_verdict_keeps_the_largest_severity_and_writes_only_the_reasons_that_fire() {
        let mut v = Verdict::default();
        let mut written = Vec::new();
        for (i, r) in [0.2, 1.0, f64::NAN, 0.99, 3.0].into_iter().enumerate() {
            v.weigh(r, || {
                written.push(i);
                format!("reason {i}")
            });
        }
        assert_eq!(v.score, 1.0);
        assert_eq!(v.reasons, ["reason 1", "reason 4"]);
        assert_eq!(written, [1, 4], "the texts of evidence below severity 0.5 are never formatted");
        let mut calm = Verdict::default();
        calm.weigh(0.7, || unreachable!());
        assert_eq!((calm.score, calm.reasons.len()), (severity(0.7), 0));
    }

    #[test]
    fn severities_ramp_like_the_rules() {
        assert_eq!(severity(1.0), 0.5);
        assert_eq!(severity(0.2), 0.0);
        assert_eq!(severity(9.0), 1.0);
        assert_eq!(severity(f64::NAN), 0.0);
    }
}
