//! Sequential replay of the served stack, for training and evaluation: exactly the per-station
//! code the dataflow operators run, without timely.
//!
//! ```text
//!   records of station s (input order) ──> StationForecastState::observe_detailed(serving)
//!        (stale windows skipped, as the operator     │  forecast points, expectation, model verdict, evidence
//!         sends them to the DLQ)                     v
//!                                           StationAnomaly::assess (rules) ──combine──> Step ──> sink
//! ```
//!
//! Training reads its features through [`Step::state`] after each record, so the features it
//! learns from are the ones the served model will see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::anomaly::rules::{Rules, StationAnomaly};
use crate::anomaly::trained::{self, Evidence};
use crate::contract::{Anomaly, FeatureRecord, SourcePosition};
use crate::forecast::fallback::Tuning;
use crate::models::serving::{ModelSource, Serving};
use crate::operators::forecast::{ForecastParams, StationForecastState};
use crate::operators::{Accepted, Forecast, Forecasted};

use super::progress::Progress;

/// What the stack did with one record.
pub struct Step<'a> {
    /// The record.
    pub record: &'a FeatureRecord,
    /// The station's forecasting state after the record.
    pub state: &'a StationForecastState,
    /// The forecast (served model's points, or the fallback's), expectation and model verdict.
    pub forecast: &'a Forecast,
    /// The fallback forecaster's own points at this origin.
    pub fallback_points: &'a [crate::contract::ForecastPoint],
    /// The trained-anomaly evidence of the record.
    pub evidence: &'a Evidence,
    /// The rules' assessment alone.
    pub rules: &'a Anomaly,
    /// Rules combined with the served anomaly model (what the prediction says).
    pub anomaly: &'a Anomaly,
}

/// Replays `records` (any station order; each station's records in input order) through the
/// stack serving `serving`, calling `sink` for every accepted record.
pub fn replay(records: &[FeatureRecord], serving: &Serving, interval: f64, progress: Option<&Progress>, sink: impl FnMut(Step<'_>)) {
    replay_from(records, serving, None, interval, progress, sink)
}

/// As [`replay`], serving the statistical fallbacks before `serve_from` (when given) and
/// `serving` from then on. Because the per-station state does not depend on the models served,
/// the forecasts after `serve_from` are exactly those of a stack that served `serving` all
/// along (the anomaly evidence, which follows the served expectation, converges within a day).
pub fn replay_from(
    records: &[FeatureRecord],
    serving: &Serving,
    serve_from: Option<DateTime<Utc>>,
    interval: f64,
    progress: Option<&Progress>,
    mut sink: impl FnMut(Step<'_>),
) {
    let mut by_station: BTreeMap<&str, Vec<&FeatureRecord>> = BTreeMap::new();
    for r in records {
        by_station.entry(r.station_id.as_str()).or_default().push(r);
    }
    let params = ForecastParams {
        interval,
        fallback: Default::default(),
        models: ModelSource::fallback_only(),
    };
    let fallback_only = Serving::default();
    let tuning = Tuning::new(&params.fallback, params.interval);
    let thresholds = Rules::default();
    for (_, recs) in by_station {
        let mut state = StationForecastState::new(&params);
        let mut shadow = StationForecastState::new(&params);
        let mut rules = StationAnomaly::new();
        for (i, rec) in recs.into_iter().enumerate() {
            if let Some(p) = progress {
                p.inc(1);
            }
            let a = Accepted {
                record: Box::new(rec.clone()),
                source: SourcePosition {
                    partition: 0,
                    offset: i as i64,
                },
            };
            // The fallback's own points: a shadow state fed the same records (the served state
            // keeps them only internally when a trained model serves).
            let serving = if serve_from.is_some_and(|t| rec.window_end < t) {
                &fallback_only
            } else {
                serving
            };
            let fallback_points = match serving.forecast {
                Some(_) => match shadow.observe_with(a.clone(), &tuning, &fallback_only) {
                    Forecasted::Made(f) => Some(f.points),
                    Forecasted::Stale(_) => None,
                },
                None => None,
            };
            let (out, evidence) = state.observe_detailed(a, &tuning, serving);
            let (Forecasted::Made(f), Some(evidence)) = (out, evidence) else {
                continue;
            };
            let rule = rules.assess(&thresholds, rec, f.expected);
            let combined = trained::combine(rule.clone(), f.anomaly_verdict.as_ref());
            sink(Step {
                record: rec,
                state: &state,
                fallback_points: fallback_points.as_deref().unwrap_or(&f.points),
                forecast: &f,
                evidence: &evidence,
                rules: &rule,
                anomaly: &combined,
            });
        }
    }
}
