//! A compact, model-agnostic recent history of one station: the last [`HISTORY_HOURS`] hours of
//! temperature, humidity and pressure, quantised into small integers.
//!
//! ```text
//!   record at hour t ──push──> slot t mod 25 ──> [ t-24 .. t ]  read by any model version:
//!                              (skipped hours are cleared to "missing")    temperature_at(t-k), ...
//! ```
//!
//! Every trained model reads its lag features from this history (plus the fallback
//! forecaster's level and diurnal profile), so switching model versions at run time needs no
//! state migration: the history is the same whatever model is served. Values are stored as
//! centi-degC (i16), deci-% (i16) and deci-hPa (u16); the training pipeline builds its features
//! from this same structure, so the quantisation is part of what the models learn from.
//! A volatility tracker rides along (EWMA of the 24-hour temperature change over about a week):
//! a model-agnostic measure of how turbulent the weather is now, which scales the trained
//! model's intervals. 25 hours x 6 bytes + 24 bytes, no heap.

use serde::{Deserialize, Serialize};

/// Hours kept: the newest hour and the 24 before it (lags 0..=24).
pub const HISTORY_HOURS: usize = 25;

const MISSING_I16: i16 = i16::MIN;
const MISSING_U16: u16 = 0;

fn slot(hour: i64) -> usize {
    hour.rem_euclid(HISTORY_HOURS as i64) as usize
}

fn encode_i16(v: Option<f64>, scale: f64) -> i16 {
    match v {
        Some(x) if x.is_finite() => (x * scale).round().clamp(f64::from(i16::MIN + 1), f64::from(i16::MAX)) as i16,
        _ => MISSING_I16,
    }
}

fn decode_i16(v: i16, scale: f64) -> Option<f64> {
    (v != MISSING_I16).then(|| f64::from(v) / scale)
}

/// The last 25 hours of one station (see the module docs). `Default` is empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentHistory {
    /// Hour index (hours since the Unix epoch) of the newest hour pushed.
    newest: Option<i64>,
    /// Temperature, centi-degC (`i16::MIN` = missing).
    temperature: [i16; HISTORY_HOURS],
    /// Relative humidity, deci-% (`i16::MIN` = missing).
    humidity: [i16; HISTORY_HOURS],
    /// Pressure, deci-hPa (0 = missing).
    pressure: [u16; HISTORY_HOURS],
    /// Recent volatility: EWMA (about a week) of `|T(t) - T(t-24)|`, degC.
    #[serde(default)]
    volatility_24h: f32,
    /// Updates of `volatility_24h` (saturating).
    #[serde(default)]
    volatility_n: u16,
}

/// Minimum EWMA weight of the volatility tracker: about a week of hourly data.
const VOLATILITY_ALPHA: f64 = 1.0 / 168.0;

impl RecentHistory {
    /// Records hour `hour`'s values (`None`: missing or not usable). Hours skipped since the
    /// newest one become missing. An hour not after the newest one is ignored (the operator
    /// refuses stale windows before they get here).
    pub fn push(&mut self, hour: i64, temperature: Option<f64>, humidity: Option<f64>, pressure: Option<f64>) {
        if let Some(newest) = self.newest {
            if hour <= newest {
                return;
            }
            let skipped = (hour - newest - 1).min(HISTORY_HOURS as i64);
            for k in 1..=skipped {
                self.clear(newest + k);
            }
        }
        if let (Some(t), Some(past)) = (temperature.filter(|t| t.is_finite()), self.temperature_at(hour - 24)) {
            let a = VOLATILITY_ALPHA.max(1.0 / (f64::from(self.volatility_n) + 1.0));
            let v = f64::from(self.volatility_24h);
            self.volatility_24h = (v + a * ((t - past).abs() - v)) as f32;
            self.volatility_n = self.volatility_n.saturating_add(1);
        }
        let s = slot(hour);
        self.temperature[s] = encode_i16(temperature, 100.0);
        self.humidity[s] = encode_i16(humidity, 10.0);
        self.pressure[s] = match pressure {
            Some(p) if p.is_finite() && p > 0.0 => (p * 10.0).round().clamp(1.0, f64::from(u16::MAX)) as u16,
            _ => MISSING_U16,
        };
        self.newest = Some(hour);
    }

    fn clear(&mut self, hour: i64) {
        let s = slot(hour);
        self.temperature[s] = MISSING_I16;
        self.humidity[s] = MISSING_I16;
        self.pressure[s] = MISSING_U16;
    }

    /// Recent volatility: the EWMA (about a week) of `|T(t) - T(t-24)|`, degC, once learned.
    pub fn volatility_24h(&self) -> Option<f64> {
        (self.volatility_n > 0).then_some(f64::from(self.volatility_24h))
    }

    /// Newest hour pushed.
    pub fn newest(&self) -> Option<i64> {
        self.newest
    }

    fn held(&self, hour: i64) -> Option<usize> {
        let newest = self.newest?;
        (hour <= newest && newest - hour < HISTORY_HOURS as i64).then(|| slot(hour))
    }

    /// Temperature at `hour` (degC, 0.01 resolution), if held and not missing.
    pub fn temperature_at(&self, hour: i64) -> Option<f64> {
        self.held(hour).and_then(|s| decode_i16(self.temperature[s], 100.0))
    }

    /// Relative humidity at `hour` (%, 0.1 resolution), if held and not missing.
    pub fn humidity_at(&self, hour: i64) -> Option<f64> {
        self.held(hour).and_then(|s| decode_i16(self.humidity[s], 10.0))
    }

    /// Pressure at `hour` (hPa, 0.1 resolution), if held and not missing.
    pub fn pressure_at(&self, hour: i64) -> Option<f64> {
        self.held(hour)
            .and_then(|s| (self.pressure[s] != MISSING_U16).then(|| f64::from(self.pressure[s]) / 10.0))
    }

    /// The most recent temperature at or before `hour` and at most `max_back` hours before it.
    pub fn temperature_near(&self, hour: i64, max_back: i64) -> Option<f64> {
        (0..=max_back).find_map(|k| self.temperature_at(hour - k))
    }

    /// The most recent pressure at or before `hour` and at most `max_back` hours before it.
    pub fn pressure_near(&self, hour: i64, max_back: i64) -> Option<f64> {
        (0..=max_back).find_map(|k| self.pressure_at(hour - k))
    }

    /// The most recent humidity at or before `hour` and at most `max_back` hours before it.
    pub fn humidity_near(&self, hour: i64, max_back: i64) -> Option<f64> {
        (0..=max_back).find_map(|k| self.humidity_at(hour - k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_25_hours_clears_gaps_and_quantises() {
        let mut h = RecentHistory::default();
        assert_eq!(h.temperature_at(0), None);
        for hour in 100..130 {
            h.push(hour, Some(hour as f64 / 3.0), Some(50.0), Some(1013.25));
        }
        assert_eq!(h.newest(), Some(129));
        assert_eq!(h.temperature_at(129), Some(43.0));
        assert_eq!(h.temperature_at(105), Some(35.0));
        assert_eq!(h.temperature_at(104), None, "older than 25 hours");
        assert_eq!(h.temperature_at(130), None, "future");
        assert_eq!(h.pressure_at(120), Some(1013.3));
        h.push(133, None, Some(60.0), None);
        assert_eq!(h.temperature_at(131), None, "skipped hour is missing");
        assert_eq!(h.temperature_at(133), None);
        assert_eq!(h.humidity_at(133), Some(60.0));
        assert_eq!(h.temperature_near(133, 3), None);
        assert_eq!(h.temperature_near(133, 4), Some(43.0));
        h.push(120, Some(1.0), None, None);
        assert_eq!(h.newest(), Some(133), "older hours are ignored");
        h.push(1000, Some(f64::NAN), Some(1e9), Some(-5.0));
        assert_eq!(h.temperature_at(1000), None);
        assert_eq!(h.humidity_at(1000), Some(3276.7), "clamped, never wraps");
        assert_eq!(h.pressure_at(1000), None);
        assert_eq!(h.temperature_at(999), None, "a long gap clears everything");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<RecentHistory>(&json).unwrap(), h);
        assert!(std::mem::size_of::<RecentHistory>() <= 184);
        assert!(h.volatility_24h().unwrap() > 0.0);
    }
}
