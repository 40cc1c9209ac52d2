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
//!
//! # Model selection and hot reload
//!
//! ```text
//!   Accepted @ epoch e ──StampEpoch──> Epoched { epoch: e, .. } ──per_station──> first record of a
//!   new epoch on this worker: ModelWatch::poll (forecast and anomaly) ──> Serving for the whole epoch
//! ```
//!
//! Records carry their epoch into the per-station logic, so a worker picks the models when it
//! starts releasing an epoch and uses them for every record of it. The per-station state is
//! model-agnostic (the fallback forecaster, a [`RecentHistory`], the trained-anomaly
//! [`EvidenceState`] and the last trained forecast issued), so switching versions needs no state
//! migration. This operator also computes the served anomaly model's verdict (it needs the same
//! history and the expectation); `ScoreAnomalies` combines it with the rules.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use timely::dataflow::StreamVec;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::keyed::{per_station, KeyedCheckpoint, StationRecord};
use super::{Accepted, Forecast, Forecasted, Stale};
use crate::anomaly::qc;
use crate::anomaly::trained::{Evidence, EvidenceState, ModelVerdict};
use crate::contract::{ForecastPoint, LEADS};
use crate::forecast::fallback::{self, FallbackForecaster, FallbackParams, Tuning};
use crate::forecast::features::Origin;
use crate::forecast::history::RecentHistory;
use crate::forecast::{normal_quantile_cached, Expectation};
use crate::metrics::Metrics;
use crate::models::serving::{EpochGate, ModelSource, ModelWatch, Serving};

/// Parameters of the forecasting operator.
#[derive(Clone, Debug)]
pub struct ForecastParams {
    /// Interval probability (e.g. 0.9).
    pub interval: f64,
    /// Fallback model parameters.
    pub fallback: FallbackParams,
    /// Where trained models come from (hot-reloaded); `ModelSource::fallback_only()` for none.
    pub models: ModelSource,
}

/// Per-station state of the operator.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StationForecastState {
    /// Newest window_end processed.
    pub newest: Option<DateTime<Utc>>,
    /// The forecaster's state.
    pub model: FallbackForecaster,
    /// Recent history read by trained models (whatever version is served).
    #[serde(default)]
    pub history: RecentHistory,
    /// The last forecast a trained model issued (the next records' expectation). Boxed: it is
    /// `None` unless a trained model is served, and inline it would add 200 B to every station.
    #[serde(default)]
    pub issued: Option<Box<Issued>>,
    /// Running evidence for the trained anomaly model.
    #[serde(default)]
    pub evidence: EvidenceState,
}

/// A forecast issued by a trained model, kept for the expectation of the next records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Issued {
    /// Origin hour index.
    pub hour: i64,
    /// Point forecast per lead, degC.
    pub mean: [f32; LEADS],
    /// 1-sigma scale per lead (interval half-width / normal quantile), degC.
    pub sigma: [f32; LEADS],
}

impl Issued {
    fn new(hour: i64, points: &[ForecastPoint], p: f64) -> Option<Issued> {
        let z = normal_quantile_cached(0.5 + p.clamp(0.5, 0.999) / 2.0);
        let (mut mean, mut sigma) = ([0.0f32; LEADS], [0.0f32; LEADS]);
        for (i, pt) in points.iter().enumerate().take(LEADS) {
            mean[i] = pt.temperature? as f32;
            sigma[i] = (((pt.upper? - pt.lower?) / (2.0 * z)).max(0.05)) as f32;
        }
        Some(Issued { hour, mean, sigma })
    }

    /// What this forecast expected for hour `hour` (leads 1..=24 only).
    pub fn expectation(&self, hour: i64) -> Option<Expectation> {
        let lead = hour - self.hour;
        (1..=LEADS as i64).contains(&lead).then(|| Expectation {
            mean: f64::from(self.mean[lead as usize - 1]),
            sigma: f64::from(self.sigma[lead as usize - 1]),
            lead_hours: lead as u32,
        })
    }
}

impl StationForecastState {
    /// Fresh state.
    pub fn new(params: &ForecastParams) -> Self {
        StationForecastState {
            newest: None,
            model: FallbackForecaster::new(&params.fallback),
            history: RecentHistory::default(),
            issued: None,
            evidence: EvidenceState::default(),
        }
    }

    /// Applies one record with the statistical fallbacks only.
    pub fn observe(&mut self, a: Accepted, tuning: &Tuning) -> Forecasted {
        self.observe_with(a, tuning, &Serving::default())
    }

    /// The view trained forecasters read at the origin just observed (`points`: the fallback's).
    pub fn origin<'a>(&'a self, rec: &'a crate::contract::FeatureRecord, points: &'a [ForecastPoint]) -> Origin<'a> {
        Origin {
            station: &rec.station_id,
            hour: rec.hour_index(),
            window_end: rec.window_end,
            fallback: &self.model,
            history: &self.history,
            wind_speed: rec.wind_speed_mean.filter(|w| (0.0..=qc::WIND_MEAN_MAX_MS).contains(w)),
            precipitation: qc::usable_precipitation(rec),
            fallback_points: points,
        }
    }

    /// Applies one record with the models of `serving`: a forecast (trained when one is served
    /// and the origin temperature was accepted, else the fallback's; named either way) with the
    /// served anomaly model's verdict, or a stale refusal.
    pub fn observe_with(&mut self, a: Accepted, tuning: &Tuning, serving: &Serving) -> Forecasted {
        self.observe_detailed(a, tuning, serving).0
    }

    /// As [`observe_with`](Self::observe_with), also returning the anomaly evidence computed
    /// for the record (`None` for a stale record); training replays use it.
    pub fn observe_detailed(&mut self, a: Accepted, tuning: &Tuning, serving: &Serving) -> (Forecasted, Option<Evidence>) {
        let interval = tuning.interval();
        if let Some(newest) = self.newest {
            if a.record.window_end <= newest {
                let stale = Stale {
                    record: a.record,
                    source: a.source,
                    newest,
                };
                return (Forecasted::Stale(stale), None);
            }
        }
        self.newest = Some(a.record.window_end);
        let rec = &a.record;
        let hour = rec.hour_index();
        let out = self.model.observe(tuning, rec);
        let accepted = self
            .model
            .origin()
            .filter(|o| o.0 == hour)
            .and_then(|_| qc::usable_temperature(rec));
        let humidity = rec.humidity_mean.filter(|&h| qc::plausible_humidity(h));
        self.history.push(hour, accepted, humidity, qc::usable_pressure(rec));
        let mut points = out.points;
        let (model, expected) = match &serving.forecast {
            None => {
                self.issued = None;
                (fallback::NAME.to_string(), out.expected)
            }
            Some(served) => {
                let expected = self.issued.as_ref().and_then(|i| i.expectation(hour)).or(out.expected);
                match served.model.forecast(&self.origin(rec, &points), interval) {
                    Some(values) => {
                        for (pt, (f, lower, upper)) in points.iter_mut().zip(values) {
                            (pt.temperature, pt.lower, pt.upper) = (Some(f), Some(lower), Some(upper));
                        }
                        match (&mut self.issued, Issued::new(hour, &points, interval)) {
                            (Some(old), Some(new)) => **old = new,
                            (slot, new) => *slot = new.map(Box::new),
                        }
                        (served.name.clone(), expected)
                    }
                    None => (fallback::NAME.to_string(), expected),
                }
            }
        };
        let evidence = self.evidence.observe(rec, expected);
        let verdict = serving
            .anomaly
            .as_ref()
            .map(|s| ModelVerdict::new(&s.name, s.model.assess(&rec.station_id, &evidence)));
        let made = Forecast {
            points,
            expected,
            model,
            anomaly_verdict: verdict,
            record: a.record,
            source: a.source,
        };
        (Forecasted::Made(made), Some(evidence))
    }
}

/// Name of the operator (and of its state in checkpoints).
pub const OPERATOR_NAME: &str = "ForecastTemperature";

/// Extension trait: forecast each accepted record.
pub trait ForecastTemperature<'s> {
    /// One `Forecasted` per input record.
    fn forecast_temperature(
        self,
        params: ForecastParams,
        metrics: Arc<Metrics>,
        ckpt: KeyedCheckpoint<StationForecastState>,
    ) -> StreamVec<'s, u64, Forecasted>;
}

impl<'s> ForecastTemperature<'s> for StreamVec<'s, u64, Accepted> {
    fn forecast_temperature(
        self,
        params: ForecastParams,
        metrics: Arc<Metrics>,
        ckpt: KeyedCheckpoint<StationForecastState>,
    ) -> StreamVec<'s, u64, Forecasted> {
        let tuning = Tuning::new(&params.fallback, params.interval);
        let mut forecast_watch = ModelWatch::new(&params.models);
        let mut anomaly_watch = ModelWatch::new(&params.models);
        let mut gate = EpochGate::default();
        let mut serving = Serving::default();
        per_station(
            stamp_epochs(self),
            OPERATOR_NAME,
            ckpt,
            move |_station| StationForecastState::new(&params),
            move |state: &mut StationForecastState, e: Epoched<Accepted>, out: &mut Vec<Forecasted>| {
                if gate.starts(e.epoch) {
                    let now = std::time::Instant::now();
                    serving.forecast = forecast_watch.poll(now).cloned();
                    serving.anomaly = anomaly_watch.poll(now).cloned();
                }
                let f = state.observe_with(e.record, &tuning, &serving);
                match &f {
                    Forecasted::Stale(_) => {
                        metrics.rejected_stale.fetch_add(1, Ordering::Relaxed);
                    }
                    Forecasted::Made(m) if m.model != fallback::NAME => {
                        metrics.forecasts_trained.fetch_add(1, Ordering::Relaxed);
                    }
                    Forecasted::Made(_) => {}
                }
                out.push(f);
            },
        )
    }
}

/// A record with the epoch it travels at (so per-station logic sees epoch boundaries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoched<D> {
    /// The epoch (timely time) of the record.
    pub epoch: u64,
    /// The record.
    pub record: D,
}

impl<D: StationRecord> StationRecord for Epoched<D> {
    fn station(&self) -> &str {
        self.record.station()
    }
    fn position(&self) -> (i32, i64) {
        self.record.position()
    }
}

/// Wraps every record with its epoch (pipeline, no exchange, no buffering).
pub fn stamp_epochs<'s, D: Clone + 'static>(stream: StreamVec<'s, u64, D>) -> StreamVec<'s, u64, Epoched<D>> {
    stream.unary::<CapacityContainerBuilder<Vec<Epoched<D>>>, _, _, _>(Pipeline, "StampEpoch", |_cap, _info| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(epoch) = cap.least().copied() else { return };
                let mut session = output.session(&cap);
                for batch in data {
                    session.give_iterator(batch.drain(..).map(|record| Epoched { epoch, record }));
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{FeatureRecord, SourcePosition};
    use chrono::{Duration, TimeZone};

    #[test]
    fn station_state_is_small_and_checkpointable_and_fallback_only_matches_observe() {
        let size = std::mem::size_of::<StationForecastState>();
        assert!(size < 2048, "per-station state is {size} bytes");
        let params = ForecastParams {
            interval: 0.9,
            fallback: FallbackParams::default(),
            models: ModelSource::fallback_only(),
        };
        let (mut a, mut b) = (StationForecastState::new(&params), StationForecastState::new(&params));
        let tuning = Tuning::new(&params.fallback, params.interval);
        for h in 0..100 {
            let end = Utc.with_ymd_and_hms(2013, 10, 1, 0, 0, 0).unwrap() + Duration::hours(h);
            let t = 10.0 + (h as f64 / 4.0).sin();
            let record = FeatureRecord {
                station_id: "S".into(),
                window_start: Some(end - Duration::hours(1)),
                window_end: end,
                count: 1,
                temperature_mean: Some(t),
                temperature_min: Some(t),
                temperature_max: Some(t),
                temperature_std: Some(0.0),
                humidity_mean: Some(60.0),
                pressure_mean: Some(1010.0 + h as f64 / 10.0),
                wind_speed_mean: Some(3.0),
                wind_speed_max: Some(4.0),
                precipitation_sum: Some(0.0),
            };
            let acc = Accepted {
                record: Box::new(record),
                source: SourcePosition { partition: 0, offset: h },
            };
            let (x, y) = (a.observe(acc.clone(), &tuning), b.observe_with(acc, &tuning, &Serving::default()));
            assert_eq!(x, y);
            let Forecasted::Made(f) = x else { panic!("not stale") };
            assert_eq!(f.model, fallback::NAME);
            assert!(f.anomaly_verdict.is_none());
        }
        let json = serde_json::to_string(&a).unwrap();
        let back: StationForecastState = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json, "checkpoint round trip");
        assert!(json.len() < 4096, "serialised state is {} bytes", json.len());
    }
}
