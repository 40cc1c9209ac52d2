//! The model factory: a TOML file (and `--model` / `--param KEY=VALUE` overrides) picks the model
//! type and its hyperparameters; the factory checks them and builds the model.
//!
//! ```text
//!   train.toml [forecast] / [anomaly]  ──merge──>  --model TYPE, --param KEY=VALUE
//!        └──────────────> TrainConfig (unknown keys are errors) ──validate──> ForecastSpec::fit(x, y)
//!                                                                     └────> AnomalySpec (forest size, thresholds)
//! ```
//!
//! | section | key | default | meaning |
//! |---|---|---|---|
//! | forecast | `model` | `"ridge-per-lead"` | or `"elastic-net-per-lead"` (smartcore `RidgeRegression` / `ElasticNet`, one per lead) |
//! | forecast | `alpha` | `1.0` | regularisation strength (on standardised features) |
//! | forecast | `l1_ratio` | `0.5` | elastic net only: L1 share of the penalty |
//! | forecast | `max_iter`, `tol` | `1000`, `1e-4` | elastic net only: coordinate descent limits |
//! | anomaly | `model` | `"robust-iforest"` | or `"robust-zscore"` (no isolation forest) |
//! | anomaly | `trees`, `sample_size`, `seed` | `32`, `128`, `42` | isolation forest |
//! | anomaly | `quantile` | `0.9995` | thresholds: this quantile of each statistic on normal training hours ... |
//! | anomaly | `margin` | `1.0` | ... times this margin |

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};
use smartcore::linear::elastic_net::{ElasticNet, ElasticNetParameters};
use smartcore::linear::ridge_regression::{RidgeRegression, RidgeRegressionParameters};

use crate::anomaly::trained as anomaly_model;
use crate::forecast::trained::{self as forecast_model, Linear, Regressor};

/// Errors of the factory.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// The configuration file could not be read.
    #[error("reading training config {path}: {error}")]
    Io { path: std::path::PathBuf, error: std::io::Error },
    /// The configuration is not valid TOML, has unknown keys or wrong types.
    #[error("training config: {0}")]
    Parse(String),
    /// A value is out of range or a model type is unknown.
    #[error("training config: {field}: {message}")]
    Invalid { field: String, message: String },
    /// smartcore could not fit.
    #[error("fitting {model} for lead {lead}: {message}")]
    Fit { model: String, lead: usize, message: String },
}

/// `[forecast]`: which forecaster and its hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastSpec {
    /// Model type.
    pub model: String,
    /// Regularisation strength.
    pub alpha: f64,
    /// Elastic net: L1 share of the penalty, in [0, 1].
    pub l1_ratio: f64,
    /// Elastic net: most coordinate-descent iterations.
    pub max_iter: usize,
    /// Elastic net: convergence tolerance.
    pub tol: f64,
}

impl Default for ForecastSpec {
    fn default() -> Self {
        ForecastSpec {
            model: forecast_model::RIDGE.into(),
            alpha: 1.0,
            l1_ratio: 0.5,
            max_iter: 1000,
            tol: 1e-4,
        }
    }
}

/// `[anomaly]`: which anomaly model and its hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalySpec {
    /// Model type.
    pub model: String,
    /// Isolation forest: number of trees.
    pub trees: usize,
    /// Isolation forest: rows per tree.
    pub sample_size: usize,
    /// Random seed (forest and fault injection).
    pub seed: u64,
    /// Threshold quantile of each statistic on normal hours, in (0.5, 1).
    pub quantile: f64,
    /// Threshold multiplier, >= 1.
    pub margin: f64,
}

impl Default for AnomalySpec {
    fn default() -> Self {
        AnomalySpec {
            model: anomaly_model::ROBUST_IFOREST.into(),
            trees: 32,
            sample_size: 128,
            seed: 42,
            quantile: 0.9995,
            margin: 1.0,
        }
    }
}

/// The whole training configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Forecaster.
    pub forecast: ForecastSpec,
    /// Anomaly model.
    pub anomaly: AnomalySpec,
}

fn invalid(field: &str, message: impl Into<String>) -> FactoryError {
    FactoryError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl TrainConfig {
    /// Reads `path` (if given), applies `--model` to `section` and every `KEY=VALUE` of `params`
    /// (TOML values; bare words are strings), then validates.
    pub fn load(path: Option<&std::path::Path>, section: &str, model: Option<&str>, params: &[String]) -> Result<Self, FactoryError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|error| FactoryError::Io { path: p.into(), error })?,
            None => String::new(),
        };
        let mut doc: toml::Table = toml::from_str(&text).map_err(|e| FactoryError::Parse(e.to_string()))?;
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(section, "must be a table"))?;
        if let Some(m) = model {
            table.insert("model".into(), toml::Value::String(m.into()));
        }
        for p in params {
            let (k, v) = p.split_once('=').ok_or_else(|| invalid(p, "expected KEY=VALUE, e.g. alpha=2.5"))?;
            let (k, v) = (k.trim(), v.trim());
            let value = toml::from_str::<toml::Table>(&format!("x = {v}"))
                .ok()
                .and_then(|mut t| t.remove("x"))
                .unwrap_or_else(|| toml::Value::String(v.to_string()));
            table.insert(k.to_string(), value);
        }
        let config: TrainConfig = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| FactoryError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), FactoryError> {
        let f = &self.forecast;
        if ![forecast_model::RIDGE, forecast_model::ELASTIC_NET].contains(&f.model.as_str()) {
            return Err(invalid(
                "forecast.model",
                format!(
                    "{:?} is not a forecast model; expected \"{}\" or \"{}\"",
                    f.model,
                    forecast_model::RIDGE,
                    forecast_model::ELASTIC_NET
                ),
            ));
        }
        if !(f.alpha.is_finite() && f.alpha > 0.0) {
            return Err(invalid("forecast.alpha", format!("is {}; expected a finite value > 0", f.alpha)));
        }
        if !(0.0..=1.0).contains(&f.l1_ratio) {
            return Err(invalid("forecast.l1_ratio", format!("is {}; expected 0 to 1", f.l1_ratio)));
        }
        if f.max_iter == 0 || !(f.tol.is_finite() && f.tol > 0.0) {
            return Err(invalid("forecast.max_iter/tol", "expected max_iter >= 1 and tol > 0"));
        }
        let a = &self.anomaly;
        if ![anomaly_model::ROBUST_IFOREST, anomaly_model::ROBUST_ZSCORE].contains(&a.model.as_str()) {
            return Err(invalid(
                "anomaly.model",
                format!(
                    "{:?} is not an anomaly model; expected \"{}\" or \"{}\"",
                    a.model,
                    anomaly_model::ROBUST_IFOREST,
                    anomaly_model::ROBUST_ZSCORE
                ),
            ));
        }
        if !(1..=1000).contains(&a.trees) || !(16..=4096).contains(&a.sample_size) {
            return Err(invalid(
                "anomaly.trees/sample_size",
                "expected 1-1000 trees and 16-4096 rows per tree",
            ));
        }
        if !(a.quantile > 0.5 && a.quantile < 1.0) {
            return Err(invalid(
                "anomaly.quantile",
                format!("is {}; expected strictly between 0.5 and 1", a.quantile),
            ));
        }
        if !(a.margin.is_finite() && a.margin >= 1.0) {
            return Err(invalid("anomaly.margin", format!("is {}; expected >= 1", a.margin)));
        }
        Ok(())
    }
}

/// Standardises `x` (constant columns get scale 1) and centres `y`: (z, center, scale, offset).
fn standardise(x: &Array2<f64>, y: &Array1<f64>) -> (Array2<f64>, Vec<f64>, Vec<f64>, f64, Array1<f64>) {
    let center: Vec<f64> = x.mean_axis(Axis(0)).map(|m| m.to_vec()).unwrap_or_else(|| vec![0.0; x.ncols()]);
    let scale: Vec<f64> = x
        .std_axis(Axis(0), 0.0)
        .iter()
        .map(|&s| if s > 1e-9 && s.is_finite() { s } else { 1.0 })
        .collect();
    let mut z = x.clone();
    for mut row in z.rows_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - center[j]) / scale[j];
        }
    }
    let offset = y.mean().unwrap_or(0.0);
    let yc = y - offset;
    (z, center, scale, offset, yc)
}

impl ForecastSpec {
    /// Fits the configured point model for `lead` on `x` (raw features) and `y`.
    pub fn fit(&self, lead: usize, x: &Array2<f64>, y: &Array1<f64>) -> Result<Linear, FactoryError> {
        self.fit_as(&self.model, lead, x, y)
    }

    fn fit_as(&self, model: &str, lead: usize, x: &Array2<f64>, y: &Array1<f64>) -> Result<Linear, FactoryError> {
        let fail = |message: String| FactoryError::Fit {
            model: model.to_string(),
            lead,
            message,
        };
        if x.nrows() != y.len() || x.nrows() <= x.ncols() {
            return Err(fail(format!(
                "{} rows for {} features and {} targets",
                x.nrows(),
                x.ncols(),
                y.len()
            )));
        }
        let (z, center, scale, offset, yc) = standardise(x, y);
        let regressor = match model {
            forecast_model::RIDGE => {
                let p = RidgeRegressionParameters::default().with_alpha(self.alpha).with_normalize(false);
                RidgeRegression::fit(&z, &yc, p).map(Regressor::Ridge)
            }
            forecast_model::ELASTIC_NET => {
                let p = ElasticNetParameters::default()
                    .with_alpha(self.alpha)
                    .with_l1_ratio(self.l1_ratio)
                    .with_normalize(false)
                    .with_max_iter(self.max_iter)
                    .with_tol(self.tol);
                ElasticNet::fit(&z, &yc, p).map(Regressor::ElasticNet)
            }
            other => return Err(invalid("forecast.model", format!("{other:?} is not a forecast model"))),
        }
        .map_err(|e| fail(e.to_string()))?;
        Ok(Linear {
            center,
            scale,
            offset,
            regressor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_errors() {
        let c = TrainConfig::load(None, "forecast", None, &[]).unwrap();
        assert_eq!(c, TrainConfig::default());
        let c = TrainConfig::load(
            None,
            "forecast",
            Some("elastic-net-per-lead"),
            &["alpha=0.25".into(), "l1_ratio=1".into()],
        )
        .unwrap();
        assert_eq!(
            (c.forecast.model.as_str(), c.forecast.alpha, c.forecast.l1_ratio),
            ("elastic-net-per-lead", 0.25, 1.0)
        );
        let e = TrainConfig::load(None, "forecast", Some("prophet"), &[]).unwrap_err().to_string();
        assert!(e.contains("forecast.model") && e.contains("ridge-per-lead"), "{e}");
        let e = TrainConfig::load(None, "anomaly", None, &["treez=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("treez"), "{e}");
        let e = TrainConfig::load(None, "forecast", None, &["alpha=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("forecast.alpha"), "{e}");
        assert!(TrainConfig::load(None, "forecast", None, &["alpha".into()]).is_err());
    }
}
