//! `ForecastTemperature`: per-station 24-hour temperature forecasts with intervals.
//!
//! ```text
//!   Accepted ──exchange(station)──> [ per station: newest window, forecaster state ]
//!        window_end <= newest ──> Forecasted::Stale  (to the DLQ: "stale_window")
//!        otherwise            ──> Forecasted::Made   (24 points, expectation for this window)
//! ```
//!
//! Records of a station are applied in input order (see [`super::keyed`]). A record whose window
//! is not newer than the newest one already processed for its station (a replayed duplicate, or
//! a late window) cannot enter the state without rewriting history, so it is refused as stale and
//! goes to the DLQ with the reason; it is counted, never silently dropped. The forecaster is the
//! statistical fallback (persistence + per-station diurnal cycle) unless the model store offers a
//! trained model this build can serve; every prediction names the model that made it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use timely::dataflow::StreamVec;

use super::keyed::per_station;
use super::{Accepted, Forecast, Forecasted, Stale};
use crate::forecast::fallback::{self, FallbackForecaster, FallbackParams};
use crate::metrics::Metrics;

/// Parameters of the forecasting operator.
#[derive(Clone, Debug)]
pub struct ForecastParams {
    /// Interval probability (e.g. 0.9).
    pub interval: f64,
    /// Fallback model parameters.
    pub fallback: FallbackParams,
}

/// Per-station state of the operator.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StationForecastState {
    /// Newest window_end processed.
    pub newest: Option<DateTime<Utc>>,
    /// The forecaster's state.
    pub model: FallbackForecaster,
}

impl StationForecastState {
    /// Fresh state.
    pub fn new(params: &ForecastParams) -> Self {
        StationForecastState {
            newest: None,
            model: FallbackForecaster::new(&params.fallback),
        }
    }

    /// Applies one record: a forecast, or a stale refusal.
    pub fn observe(&mut self, a: Accepted, interval: f64) -> Forecasted {
        if let Some(newest) = self.newest {
            if a.record.window_end <= newest {
                return Forecasted::Stale(Stale {
                    record: a.record,
                    source: a.source,
                    newest,
                });
            }
        }
        self.newest = Some(a.record.window_end);
        let out = self.model.observe(&a.record, interval);
        Forecasted::Made(Forecast {
            points: out.points,
            expected: out.expected,
            model: fallback::NAME.to_string(),
            record: a.record,
            source: a.source,
        })
    }
}

/// Extension trait: forecast each accepted record.
pub trait ForecastTemperature<'s> {
    /// One `Forecasted` per input record.
    fn forecast_temperature(self, params: ForecastParams, metrics: Arc<Metrics>) -> StreamVec<'s, u64, Forecasted>;
}

impl<'s> ForecastTemperature<'s> for StreamVec<'s, u64, Accepted> {
    fn forecast_temperature(self, params: ForecastParams, metrics: Arc<Metrics>) -> StreamVec<'s, u64, Forecasted> {
        let interval = params.interval;
        per_station(
            self,
            "ForecastTemperature",
            move |_station| StationForecastState::new(&params),
            move |state: &mut StationForecastState, a: Accepted, out: &mut Vec<Forecasted>| {
                let f = state.observe(a, interval);
                if matches!(f, Forecasted::Stale(_)) {
                    metrics.rejected_stale.fetch_add(1, Ordering::Relaxed);
                }
                out.push(f);
            },
        )
    }
}
