//! The per-station work of the inference dataflow, driven sequentially on one thread: what
//! `ForecastTemperature` and `ScoreAnomalies` do per record, with the same state maps
//! (`HashMap<String, S>`, as in `operators::keyed::per_station`). The benchmark uses it to time
//! stages in isolation, to compute the outputs the serde limit serialises, and to fill states
//! for the memory measurement.
//!
//! ```text
//!   Accepted ──forecast()──> Forecasted ──score()──> Outcome ──operators::encode──> OutRecord
//!              state[station]              state[station]
//! ```

use std::collections::HashMap;

use crate::anomaly::rules::{Rules, StationAnomaly};
use crate::forecast::fallback::Tuning;
use crate::models::serving::Serving;
use crate::operators::forecast::{ForecastParams, StationForecastState};
use crate::operators::{Accepted, Forecasted, Outcome};

/// Sequential per-station state and logic of the two stateful operators.
pub struct Sequential {
    params: ForecastParams,
    tuning: Tuning,
    rules: Rules,
    serving: Serving,
    /// Forecast operator states by station.
    pub forecast: HashMap<String, StationForecastState>,
    /// Anomaly operator states by station.
    pub anomaly: HashMap<String, StationAnomaly>,
}

impl Sequential {
    /// Fresh states; statistical fallbacks (the models `serving` serves otherwise).
    pub fn new(params: ForecastParams, serving: Serving) -> Self {
        Sequential {
            tuning: Tuning::new(&params.fallback, params.interval),
            params,
            rules: Rules::default(),
            serving,
            forecast: HashMap::new(),
            anomaly: HashMap::new(),
        }
    }

    /// `ForecastTemperature` for one record.
    pub fn forecast(&mut self, a: Accepted) -> Forecasted {
        if !self.forecast.contains_key(&a.record.station_id) {
            let fresh = StationForecastState::new(&self.params);
            self.forecast.insert(a.record.station_id.clone(), fresh);
        }
        match self.forecast.get_mut(&a.record.station_id) {
            Some(state) => state.observe_with(a, &self.tuning, &self.serving),
            None => unreachable!("inserted above"),
        }
    }

    /// `ScoreAnomalies` for one record (the prediction it completes).
    pub fn score(&mut self, f: Forecasted) -> Outcome {
        let f = match f {
            Forecasted::Stale(s) => return Outcome::Stale(s),
            Forecasted::Made(f) => f,
        };
        if !self.anomaly.contains_key(&f.record.station_id) {
            let fresh = StationAnomaly::new();
            self.anomaly.insert(f.record.station_id.clone(), fresh);
        }
        let Some(state) = self.anomaly.get_mut(&f.record.station_id) else {
            unreachable!("inserted above")
        };
        Outcome::Predicted(crate::operators::anomaly::complete(
            state,
            &self.rules,
            f,
            self.params.interval,
            chrono::Utc::now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{FeatureRecord, SourcePosition};

    #[test]
    fn one_prediction_per_record_and_stale_refused() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/features/nyc_2013.jsonl")).unwrap();
        let params = ForecastParams {
            interval: 0.9,
            fallback: Default::default(),
            models: Default::default(),
        };
        let mut s = Sequential::new(params, Serving::default());
        let recs: Vec<FeatureRecord> = text.lines().take(30).map(|l| FeatureRecord::parse(l.as_bytes()).unwrap()).collect();
        for (i, r) in recs.iter().enumerate() {
            let a = Accepted {
                record: Box::new(r.clone()),
                source: SourcePosition {
                    partition: 0,
                    offset: i as i64,
                },
            };
            let f = s.forecast(a);
            let out = s.score(f);
            assert!(matches!(out, Outcome::Predicted(ref p) if p.forecast.len() == 24));
        }
        let again = Accepted {
            record: Box::new(recs[0].clone()),
            source: SourcePosition { partition: 0, offset: 99 },
        };
        let f = s.forecast(again);
        assert!(matches!(s.score(f), Outcome::Stale(_)));
        assert_eq!(s.forecast.len(), 3);
    }
}
