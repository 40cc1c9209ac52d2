//! `ScoreAnomalies`: per-station anomaly score, flag and reasons; completes the prediction.
//!
//! ```text
//!   Forecasted::Made ──(pipeline: on the worker that forecast the station)──> [ per station: anomaly statistics ] ──> Outcome::Predicted
//!   Forecasted::Stale ──────────────────────────────────────────────────────────────────────────────────────────> Outcome::Stale
//! ```
//!
//! Its input is `ForecastTemperature`'s output, which already holds each station's records on
//! the worker that owns the station, in input order, epoch after epoch; so records are scored as
//! they arrive ([`per_station_in_order`]), with no exchange and no second wait for the frontier.
//!
//! The rules (see `crate::anomaly`) combine stateless plausibility checks with the station's own
//! statistics and the forecaster's expectation for the window, so a spike is judged against what
//! the station was expected to do, not against a fixed band. When a trained anomaly model is
//! served, its verdict arrives with the forecast (computed by `ForecastTemperature`, which keeps
//! the evidence state and picked the version for the epoch); the score is the larger of the two,
//! the reasons those of both, and `model.anomaly` names both (e.g. `robust-iforest/v1+rules/v1`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use timely::dataflow::StreamVec;

use super::keyed::{per_station_in_order, KeyedCheckpoint};
use super::{Forecast, Forecasted, Outcome};
use crate::anomaly::rules::{self, AnomalyParams, Rules, StationAnomaly};
use crate::anomaly::trained;
use crate::contract::{ModelNames, Prediction};
use crate::metrics::Metrics;

/// Name of the operator (and of its state in checkpoints).
pub const OPERATOR_NAME: &str = "ScoreAnomalies";

/// Extension trait: score forecasts for anomalies.
pub trait ScoreAnomalies<'s> {
    /// One `Outcome` per input.
    fn score_anomalies(
        self,
        params: AnomalyParams,
        interval: f64,
        metrics: Arc<Metrics>,
        ckpt: KeyedCheckpoint<StationAnomaly>,
    ) -> StreamVec<'s, u64, Outcome>;
}

impl<'s> ScoreAnomalies<'s> for StreamVec<'s, u64, Forecasted> {
    fn score_anomalies(
        self,
        params: AnomalyParams,
        interval: f64,
        metrics: Arc<Metrics>,
        ckpt: KeyedCheckpoint<StationAnomaly>,
    ) -> StreamVec<'s, u64, Outcome> {
        let rules = Rules::new(&params);
        per_station_in_order(
            self,
            OPERATOR_NAME,
            ckpt,
            move |_station| StationAnomaly::new(),
            move |state: &mut StationAnomaly, f: Forecasted, now: DateTime<Utc>, out: &mut Vec<Outcome>| {
                out.push(match f {
                    Forecasted::Stale(s) => Outcome::Stale(s),
                    Forecasted::Made(f) => {
                        let p = complete(state, &rules, f, interval, now);
                        if p.anomaly.is_anomaly {
                            metrics.anomalies.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::Predicted(p)
                    }
                });
            },
        )
    }
}

/// Scores a forecast against the station's anomaly state and completes its prediction, issued
/// at `issued_at`: the per-record step of `ScoreAnomalies`, also driven without timely (the
/// benchmark's sequential model).
pub fn complete(state: &mut StationAnomaly, rules: &Rules, f: Forecast, interval: f64, issued_at: DateTime<Utc>) -> Prediction {
    let anomaly = trained::combine(state.assess(rules, &f.record, f.expected), f.anomaly_verdict.as_ref());
    Prediction {
        observed_temperature: f.record.temperature_mean,
        station_id: f.record.station_id,
        window_end: f.record.window_end,
        issued_at,
        model: ModelNames {
            forecast: f.model,
            // `<model>+rules/v1`, appended to the verdict's own string (no `format!` per record).
            anomaly: match f.anomaly_verdict {
                Some(v) => {
                    let mut name = v.model;
                    name.push('+');
                    name.push_str(rules::NAME);
                    name
                }
                None => rules::NAME.to_string(),
            },
        },
        interval,
        forecast: f.points,
        anomaly,
        source: Some(f.source),
    }
}
