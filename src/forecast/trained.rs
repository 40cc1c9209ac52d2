//! Trained forecaster: per lead hour, a smartcore linear model of the temperature change, with
//! split-conformal intervals on residuals normalised by the local volatility.
//!
//! ```text
//!   Origin o ──OriginFeatures::columns()──> x_h  ──point_h──> T^(o+h) = T(o) + offset + regressor_h(standardised x_h)
//!            └─interval_scale(h)─────> s_h               (see features::Origin::interval_scale)
//!   interval: [T^ + q_lo(p) s_h,  T^ + q_hi(p) s_h]     q: conformal quantiles of (y - T^) / s_h
//!                                                        on the calibration period, per lead
//! ```
//!
//! Normalising the residuals by the local volatility makes the calibration portable: a calm
//! calibration month and a stormy winter differ in `s_h`, not in the quantiles of the normalised
//! residuals. The quantiles are stored as a table over tail probabilities 0.005..0.25, so one
//! model serves any interval probability in [0.5, 0.99].
//!
//! Serving does not call smartcore per lead: at the first forecast the 24 models are folded
//! into raw-feature weights and biases ([`Compiled`]), so an origin's 24 forecasts are one pass
//! over its feature columns (the same function up to rounding; a test compares with smartcore).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use smartcore::linear::elastic_net::ElasticNet;
use smartcore::linear::ridge_regression::RidgeRegression;

use super::features::{schema, Climatology, Columns, Origin, OriginFeatures, Slot, LAYOUT, N_FEATURES};
use crate::contract::LEADS;

/// Model type name of the ridge variant.
pub const RIDGE: &str = "ridge-per-lead";
/// Model type name of the elastic-net variant.
pub const ELASTIC_NET: &str = "elastic-net-per-lead";

/// Tail probabilities of the stored residual quantiles: 0.005, 0.010, ..., 0.250 for the lower
/// tail; the upper tail uses `1 - p` for the same `p`.
pub const QUANTILE_GRID: usize = 50;
const GRID_STEP: f64 = 0.005;

/// One smartcore regressor (features as a 1 x N row, target `T(o+h) - T(o)`).
#[derive(Debug, Serialize, Deserialize)]
pub enum Regressor {
    /// `smartcore::linear::ridge_regression::RidgeRegression`.
    Ridge(RidgeRegression<f64, f64, Array2<f64>, Array1<f64>>),
    /// `smartcore::linear::elastic_net::ElasticNet`.
    ElasticNet(ElasticNet<f64, f64, Array2<f64>, Array1<f64>>),
}

impl Regressor {
    /// The fitted coefficients (one per feature, as a column) and intercept, or `None` when
    /// unfitted.
    fn fitted(&self) -> Option<Fitted> {
        let inner = self.fields().ok()?;
        let coefficients = inner["coefficients"]["data"]
            .as_array()?
            .iter()
            .map(serde_json::Value::as_f64)
            .collect::<Option<Vec<f64>>>()?;
        let intercept = inner["intercept"].as_f64()?;
        Some(Fitted { coefficients, intercept })
    }

    /// Predicts every row of `x` (`n x N_FEATURES`).
    pub fn predict(&self, x: &Array2<f64>) -> Result<Array1<f64>, String> {
        match self {
            Regressor::Ridge(m) => m.predict(x),
            Regressor::ElasticNet(m) => m.predict(x),
        }
        .map_err(|e| e.to_string())
    }

    /// Checks the fitted coefficients without trusting them (a corrupted model must be refused,
    /// never reach a shape assertion): `n_features x 1`, all finite, finite intercept.
    pub fn check(&self, n_features: usize) -> Result<(), String> {
        let inner = self.fields()?;
        let coef = &inner["coefficients"];
        let dim: Vec<u64> = coef["dim"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        if dim != [n_features as u64, 1] {
            return Err(format!("coefficients have shape {dim:?}, expected [{n_features}, 1]"));
        }
        let finite = coef["data"]
            .as_array()
            .is_some_and(|d| d.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)));
        if !finite || !inner["intercept"].as_f64().is_some_and(f64::is_finite) {
            return Err("coefficients or intercept missing or not finite".into());
        }
        Ok(())
    }

    /// The smartcore model's fields (`coefficients`, `intercept`, ...) as JSON: read through
    /// serde because smartcore's accessors unwrap, and a corrupted model must never panic.
    fn fields(&self) -> Result<serde_json::Value, String> {
        let v = serde_json::to_value(self).map_err(|e| e.to_string())?;
        v.as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .ok_or_else(|| "regressor is not an object".to_string())
    }
}

/// A fitted regressor's numbers.
#[derive(Debug)]
struct Fitted {
    coefficients: Vec<f64>,
    intercept: f64,
}

/// A standardised linear model: `y^ = offset + regressor((x - center) / scale)`. Features are
/// standardised here rather than by smartcore, so a feature that is constant for a lead (the
/// diurnal difference at lead 24) gets scale 1 and a zero coefficient instead of failing the fit.
#[derive(Debug, Serialize, Deserialize)]
pub struct Linear {
    /// Feature means on the training rows.
    pub center: Vec<f64>,
    /// Feature standard deviations on the training rows (1 for constant features).
    pub scale: Vec<f64>,
    /// Mean target on the training rows.
    pub offset: f64,
    /// The smartcore model, fitted on standardised features and centred targets.
    pub regressor: Regressor,
}

impl Linear {
    /// Predicts every row of `x` (raw features).
    pub fn predict(&self, x: &Array2<f64>) -> Result<Array1<f64>, String> {
        if x.ncols() != self.center.len() || self.center.len() != self.scale.len() {
            return Err(format!("{} features given, the model has {}", x.ncols(), self.center.len()));
        }
        let mut z = x.clone();
        for mut row in z.rows_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - self.center[j]) / self.scale[j];
            }
        }
        Ok(self.regressor.predict(&z)? + self.offset)
    }

    /// Predicts one row (through smartcore, as [`Linear::predict`]).
    pub fn predict_one(&self, x: &[f64]) -> Option<f64> {
        let row = Array2::from_shape_vec((1, x.len()), x.to_vec()).ok()?;
        self.predict(&row).ok()?.get(0).copied().filter(|v| v.is_finite())
    }

    /// The model folded into raw-feature weights and a bias, `y^ = bias + sum_j w_j x_j` with
    /// `w_j = c_j / scale_j` and `bias = offset + intercept - sum_j center_j w_j`: the same
    /// function as [`Linear::predict`] up to rounding (about 1e-13 of the terms' size). `None`
    /// when unfitted, mis-shaped or not finite.
    pub fn folded(&self) -> Option<(Vec<f64>, f64)> {
        let f = self.regressor.fitted()?;
        let n = self.center.len();
        if self.scale.len() != n || f.coefficients.len() != n {
            return None;
        }
        let w: Vec<f64> = f.coefficients.iter().zip(&self.scale).map(|(c, s)| c / s).collect();
        let shift: f64 = w.iter().zip(&self.center).map(|(w, c)| w * c).sum();
        let bias = self.offset + f.intercept - shift;
        (bias.is_finite() && w.iter().all(|v| v.is_finite())).then_some((w, bias))
    }

    /// Structural checks for `n` features (a corrupted model must be refused, never panic).
    pub fn check(&self, n: usize) -> Result<(), String> {
        let ok = self.center.len() == n
            && self.scale.len() == n
            && self.center.iter().all(|c| c.is_finite())
            && self.scale.iter().all(|s| s.is_finite() && *s > 0.0)
            && self.offset.is_finite();
        if !ok {
            return Err(format!("standardisation must hold {n} finite centres and positive scales"));
        }
        self.regressor.check(n)
    }
}

/// The model of one lead: point model and calibrated residual quantiles.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeadModel {
    /// Lead hour, 1..=24.
    pub lead: usize,
    /// Model of `T(o+h) - T(o)` on the features.
    pub point: Linear,
    /// Quantiles of the normalised calibration residual `(y - y^) / s_h` at tail probabilities
    /// `p_k = 0.005 (k + 1)`: `lower[k]` at `p_k`, `upper[k]` at `1 - p_k`.
    pub lower: Vec<f64>,
    /// See `lower`.
    pub upper: Vec<f64>,
}

impl LeadModel {
    /// Residual quantiles `(q_lo, q_hi)` for central probability `p` (clamped to 0.5..=0.99,
    /// NaN means 0.9), interpolated in the table.
    pub fn quantiles(&self, p: f64) -> (f64, f64) {
        let p = if p.is_finite() { p.clamp(0.5, 0.99) } else { 0.9 };
        let tail = ((1.0 - p) / 2.0).clamp(GRID_STEP, GRID_STEP * QUANTILE_GRID as f64);
        let x = tail / GRID_STEP - 1.0;
        let (i, f) = (x.floor() as usize, x - x.floor());
        let at = |t: &[f64]| {
            let j = (i + 1).min(t.len() - 1);
            t[i] + f * (t[j] - t[i])
        };
        (at(&self.lower), at(&self.upper))
    }
}

/// A trained linear-per-lead forecaster as stored in `model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LinearPerLead {
    /// Model type ([`RIDGE`] or [`ELASTIC_NET`]).
    pub model_type: String,
    /// Feature names in order; must equal [`schema()`].
    pub features: Vec<String>,
    /// Annual cycle per station (the model serves these stations; others get the fallback).
    pub climatology: BTreeMap<String, Climatology>,
    /// One model per lead, lead 1 first.
    pub leads: Vec<LeadModel>,
    /// The leads' models folded for serving, built at the first forecast.
    #[serde(skip)]
    pub compiled: OnceLock<Option<Box<Compiled>>>,
}

/// All leads' linear models folded ([`Linear::folded`]) and laid out feature-major, so that one
/// origin's 24 forecasts are 31 steps of 24 independent multiply-adds (which the compiler
/// vectorises across leads) instead of 24 standardise-and-dot products through smartcore.
#[derive(Debug)]
pub struct Compiled {
    /// `weights[j][l]`: weight of feature `j` at lead `l + 1`.
    weights: [[f64; LEADS]; N_FEATURES],
    /// Bias of each lead.
    bias: [f64; LEADS],
    /// Residual quantiles `(q_lo, q_hi)` of each lead at interval probability `p` (bits).
    quantiles: (u64, [(f64, f64); LEADS]),
    /// The stations' climatologies, hashed (the stored map is ordered, for stable model files;
    /// looking a station up in it took ten string comparisons at a thousand stations).
    climatology: HashMap<String, Climatology, foldhash::fast::FixedState>,
    /// The running CPU has AVX2 ([`Compiled::changes`] takes its 4-lane pass).
    avx2: bool,
}

impl Compiled {
    /// Folds the model's leads (which must be [`LEADS`] models over [`N_FEATURES`] features);
    /// the quantiles are tabulated for interval probability `p`.
    pub fn new(model: &LinearPerLead, p: f64) -> Option<Compiled> {
        let leads = &model.leads;
        if leads.len() != LEADS {
            return None;
        }
        let climatology = model.climatology.iter().map(|(s, c)| (s.clone(), c.clone())).collect();
        let mut c = Compiled {
            weights: [[0.0; LEADS]; N_FEATURES],
            bias: [0.0; LEADS],
            quantiles: (p.to_bits(), [(0.0, 0.0); LEADS]),
            climatology,
            avx2: has_avx2(),
        };
        for (l, m) in leads.iter().enumerate() {
            let (w, bias) = m.point.folded()?;
            if w.len() != N_FEATURES {
                return None;
            }
            for (j, v) in w.into_iter().enumerate() {
                c.weights[j][l] = v;
            }
            c.bias[l] = bias;
            c.quantiles.1[l] = m.quantiles(p);
        }
        Some(c)
    }

    /// The change `T(o+h) - T(o)` at every lead, from the origin's feature columns: an origin
    /// value is multiplied into all 24 leads' weights at once, a per-lead column lane by lane
    /// (the same products, summed in feature order, as one dot product per lead). On a CPU with
    /// AVX2 the 24 leads are one pass of 4-lane registers; otherwise two passes of 12 leads in
    /// the baseline's 2-lane registers. The sums are the same bits either way: each lead's
    /// products are added in the same order, and nothing is fused.
    pub fn changes(&self, x: &Columns) -> [f64; LEADS] {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when the running CPU reports AVX2 (`Compiled::new`).
            return unsafe { self.changes_avx2(x) };
        }
        self.changes_in::<{ LEADS / 2 }>(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn changes_avx2(&self, x: &Columns) -> [f64; LEADS] {
        self.changes_in::<LEADS>(x)
    }

    /// [`changes`](Self::changes), `H` leads at a time: `H` accumulators stay in registers.
    #[inline(always)]
    fn changes_in<const H: usize>(&self, x: &Columns) -> [f64; LEADS] {
        let mut y = self.bias;
        for (h, out) in y.chunks_exact_mut(H).enumerate() {
            let mut acc = [0.0; H];
            acc.copy_from_slice(out);
            let r = h * H..(h + 1) * H;
            for (slot, w) in LAYOUT.iter().zip(&self.weights) {
                let w = &w[r.clone()];
                match *slot {
                    Slot::Origin(i) => {
                        let v = x.origin[i];
                        for l in 0..H {
                            acc[l] += v * w[l];
                        }
                    }
                    Slot::Lead(i) => {
                        let v = &x.lead[i][r.clone()];
                        for l in 0..H {
                            acc[l] += v[l] * w[l];
                        }
                    }
                }
            }
            out.copy_from_slice(&acc);
        }
        y
    }
}

/// Whether the running CPU has AVX2.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl LinearPerLead {
    /// Checks that this build can serve the model: feature schema, 24 leads in order, sane
    /// quantile tables and floors, well-formed linear models, valid climatologies.
    pub fn validate(&self) -> Result<(), String> {
        let expected = schema();
        if self.features != expected {
            return Err(format!(
                "feature schema mismatch: the model has {} features [{}], this build computes {} [{}]",
                self.features.len(),
                self.features.join(", "),
                expected.len(),
                expected.join(", ")
            ));
        }
        if let Some((s, _)) = self.climatology.iter().find(|(_, c)| !c.valid()) {
            return Err(format!("climatology of station {s} is not finite or implausible"));
        }
        if self.leads.len() != LEADS || self.leads.iter().enumerate().any(|(i, l)| l.lead != i + 1) {
            return Err(format!(
                "expected leads 1..={LEADS} in order, found {} lead model(s)",
                self.leads.len()
            ));
        }
        for l in &self.leads {
            let ok = |t: &[f64]| t.len() == QUANTILE_GRID && t.iter().all(|q| q.is_finite());
            if !ok(&l.lower) || !ok(&l.upper) {
                return Err(format!("lead {}: quantile tables must hold {QUANTILE_GRID} finite values", l.lead));
            }
            l.point.check(N_FEATURES).map_err(|e| format!("lead {} point model: {e}", l.lead))?;
        }
        Ok(())
    }

    /// `(point, lower, upper)` at every lead (the fallback's points of this origin keep their
    /// leads and valid times and take these values), or `None` when the origin has no accepted
    /// temperature or the station is not one the model was trained on (the caller then serves
    /// the fallback's points). `p` is the interval probability.
    pub fn forecast(&self, o: &Origin<'_>, p: f64) -> Option<[(f64, f64, f64); LEADS]> {
        let t0 = o.temperature()?;
        let c = self.compiled.get_or_init(|| Compiled::new(self, p).map(Box::new)).as_deref()?;
        let climate = c.climatology.get(o.station)?;
        let changes = c.changes(&OriginFeatures::new(o, climate)?.columns()?);
        let quantiles = (c.quantiles.0 == p.to_bits()).then_some(&c.quantiles.1);
        let mut out = [(0.0, 0.0, 0.0); LEADS];
        for (i, m) in self.leads.iter().enumerate() {
            let size = o.interval_scale(i + 1)?;
            let f = t0 + Some(changes[i]).filter(|v| v.is_finite())?;
            let (q_lo, q_hi) = quantiles.map_or_else(|| m.quantiles(p), |q| q[i]);
            out[i] = (f, (f + q_lo * size).min(f), (f + q_hi * size).max(f));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unfitted() -> Linear {
        Linear {
            center: vec![0.0; N_FEATURES],
            scale: vec![1.0; N_FEATURES],
            offset: 0.0,
            regressor: Regressor::Ridge(
                <RidgeRegression<f64, f64, Array2<f64>, Array1<f64>> as smartcore::api::SupervisedEstimator<
                    Array2<f64>,
                    Array1<f64>,
                    smartcore::linear::ridge_regression::RidgeRegressionParameters<f64>,
                >>::new(),
            ),
        }
    }

    #[test]
    fn a_folded_model_predicts_what_smartcore_predicts() {
        use smartcore::linear::elastic_net::ElasticNetParameters;
        use smartcore::linear::ridge_regression::RidgeRegressionParameters;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 20.0 - 10.0
        };
        let (n, rows) = (7, 60);
        let x = Array2::from_shape_fn((rows, n), |_| next());
        let y = Array1::from_shape_fn(rows, |i| {
            x.row(i).iter().enumerate().map(|(j, v)| v * (j as f64 - 3.0)).sum::<f64>() + next() * 0.1
        });
        let ridge = RidgeRegression::fit(&x, &y, RidgeRegressionParameters::default().with_alpha(0.5)).unwrap();
        let enet = ElasticNet::fit(&x, &y, ElasticNetParameters::default().with_alpha(0.1)).unwrap();
        for regressor in [Regressor::Ridge(ridge), Regressor::ElasticNet(enet)] {
            let m = Linear {
                center: (0..n).map(|_| next() * 5.0).collect(),
                scale: (0..n).map(|_| next().abs() + 0.1).collect(),
                offset: next(),
                regressor,
            };
            let (w, bias) = m.folded().unwrap();
            let mut worst = 0.0f64;
            for _ in 0..1000 {
                let row: Vec<f64> = (0..n).map(|_| next() * 3.0).collect();
                let folded = bias + row.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>();
                let smartcore = m.predict_one(&row).unwrap();
                worst = worst.max((folded - smartcore).abs() / (1.0 + smartcore.abs()));
            }
            assert!(worst < 1e-12, "relative difference {worst:e}");
        }
        assert!(unfitted().folded().is_none(), "an unfitted model folds to nothing");
    }

    #[test]
    fn the_column_pass_sums_what_one_dot_product_per_lead_sums() {
        let mut rng = crate::anomaly::iforest::SplitMix64::new(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next_f64() * 8.0 - 4.0;
        let mut c = Compiled {
            weights: std::array::from_fn(|_| std::array::from_fn(|_| next())),
            bias: std::array::from_fn(|_| next()),
            quantiles: (0, [(0.0, 0.0); LEADS]),
            climatology: HashMap::default(),
            avx2: false,
        };
        for k in 0..400 {
            let x = Columns {
                origin: std::array::from_fn(|_| next() * 100.0),
                lead: std::array::from_fn(|_| std::array::from_fn(|_| next() * 100.0)),
            };
            // Both passes: the baseline's, and the AVX2 one where the CPU has it.
            c.avx2 = k % 2 == 1 && has_avx2();
            let y = c.changes(&x);
            for lead in 1..=LEADS {
                let row = x.row(lead);
                let mut dot = c.bias[lead - 1];
                for (j, v) in row.iter().enumerate() {
                    dot += v * c.weights[j][lead - 1];
                }
                assert_eq!(y[lead - 1].to_bits(), dot.to_bits(), "lead {lead}");
            }
        }
    }

    #[test]
    fn quantile_table_interpolates_and_unfitted_models_are_refused() {
        let lead = LeadModel {
            lead: 1,
            point: unfitted(),
            lower: (0..QUANTILE_GRID).map(|k| -3.0 + k as f64 * 0.05).collect(),
            upper: (0..QUANTILE_GRID).map(|k| 3.0 - k as f64 * 0.05).collect(),
        };
        let (lo, hi) = lead.quantiles(0.9); // tail 0.05: k = 9
        assert!((lo + 2.55).abs() < 1e-9 && (hi - 2.55).abs() < 1e-9, "{lo} {hi}");
        let (lo, _) = lead.quantiles(0.895); // tail 0.0525: between k = 9 and 10
        assert!((lo + 2.525).abs() < 1e-9, "{lo}");
        let (lo, hi) = lead.quantiles(f64::NAN);
        assert!(lo.is_finite() && hi.is_finite());
        assert!(lead.point.check(N_FEATURES).is_err(), "an unfitted regressor is refused");
        assert!(lead.point.predict_one(&[0.0; N_FEATURES]).is_none(), "and never predicts");
    }
}
