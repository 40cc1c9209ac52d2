//! `ScoreAnomalies`: per-station anomaly score, flag and reasons; completes the prediction.
//!
//! ```text
//!   Forecasted::Made ──exchange(station)──> [ per station: anomaly statistics ] ──> Outcome::Predicted
//!   Forecasted::Stale ─────────────────────────────────────────────────────────> Outcome::Stale
//! ```
//!
//! The rules (see `crate::anomaly`) combine stateless plausibility checks with the station's own
//! statistics and the forecaster's expectation for the window, so a spike is judged against what
//! the station was expected to do, not against a fixed band.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use timely::dataflow::StreamVec;

use super::keyed::per_station;
use super::{Forecasted, Outcome};
use crate::anomaly::rules::{self, AnomalyParams, StationAnomaly};
use crate::contract::{ModelNames, Prediction};
use crate::metrics::Metrics;

/// Extension trait: score forecasts for anomalies.
pub trait ScoreAnomalies<'s> {
    /// One `Outcome` per input.
    fn score_anomalies(self, params: AnomalyParams, interval: f64, metrics: Arc<Metrics>) -> StreamVec<'s, u64, Outcome>;
}

impl<'s> ScoreAnomalies<'s> for StreamVec<'s, u64, Forecasted> {
    fn score_anomalies(self, params: AnomalyParams, interval: f64, metrics: Arc<Metrics>) -> StreamVec<'s, u64, Outcome> {
        per_station(
            self,
            "ScoreAnomalies",
            move |_station| StationAnomaly::new(&params),
            move |state: &mut StationAnomaly, f: Forecasted, out: &mut Vec<Outcome>| {
                out.push(match f {
                    Forecasted::Stale(s) => Outcome::Stale(s),
                    Forecasted::Made(f) => {
                        let anomaly = state.assess(&f.record, f.expected);
                        if anomaly.is_anomaly {
                            metrics.anomalies.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::Predicted(Prediction {
                            observed_temperature: f.record.temperature_mean,
                            station_id: f.record.station_id,
                            window_end: f.record.window_end,
                            issued_at: Utc::now(),
                            model: ModelNames {
                                forecast: f.model,
                                anomaly: rules::NAME.to_string(),
                            },
                            interval,
                            forecast: f.points,
                            anomaly,
                            source: Some(f.source),
                        })
                    }
                });
            },
        )
    }
}
