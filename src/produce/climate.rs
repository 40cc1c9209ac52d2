//! The climate of one synthetic station and the weather it reports, before any fault.
//!
//! ```text
//!   seed, i ──Rng(climate)──> latitude, longitude, elevation, continentality, humidity, wind, wet-spell rate
//!            ──Rng(weather)──> AR(1) anomalies: temperature (48 h), humidity (24 h), pressure (36 h), wind (12 h)
//!   reading(t) = annual mean (latitude, elevation lapse rate 6.5 K/km)
//!              + seasonal (amplitude grows with latitude; peak late July north, late January south)
//!              + diurnal (local solar time, peak 15 h) + weather anomaly + sensor noise
//!   humidity falls as temperature rises; station pressure = sea-level pressure (1013 hPa + weather
//!   + semidiurnal tide) scaled to the elevation; wind follows a diurnal cycle; rain in Markov wet spells
//! ```
//!
//! Values are rounded to 0.1 like real sensors, and each may be missing with probability
//! `SyntheticConfig::missing`.

use std::f64::consts::TAU;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

use super::rng::Rng;
use super::synthetic::{FaultCounts, SyntheticConfig};
use crate::observations::Observation;

/// A station's fixed climate and evolving weather.
pub(super) struct Station {
    pub(super) id: String,
    pub(super) offset: Duration,
    pub(super) lon: f64,
    pub(super) southern: bool,
    pub(super) mean_temp: f64,
    pub(super) seasonal_amp: f64,
    pub(super) diurnal_amp: f64,
    pub(super) mean_rh: f64,
    pub(super) pressure_factor: f64,
    pub(super) pressure_sd: f64,
    pub(super) mean_wind: f64,
    pub(super) wet_chance_per_h: f64,
    pub(super) drift: Option<(DateTime<Utc>, f64)>,
    // Weather state (AR(1) anomalies).
    pub(super) temp_anom: f64,
    pub(super) rh_anom: f64,
    pub(super) pressure_anom: f64,
    pub(super) wind_anom: f64,
    pub(super) wet: bool,
    pub(super) rain_rate: f64,
    pub(super) last_time: Option<DateTime<Utc>>,
    // Stuck sensor.
    pub(super) stuck_left: u32,
    pub(super) stuck_values: (Option<f64>, Option<f64>),
    pub(super) last_sent: (Option<f64>, Option<f64>),
    pub(super) weather: Rng,
    pub(super) faults: Rng,
}

impl Station {
    /// Station `i` of `cfg`: its climate from its own random stream, its weather from another.
    pub(super) fn new(cfg: &SyntheticConfig, i: usize) -> Self {
        let mut c = Rng::new(cfg.seed, i as u64, 1);
        // Mostly mid-latitude land stations, low elevations more common than high ones.
        let lat = c.range(-55.0, 70.0);
        let lon = c.range(-180.0, 180.0);
        let elevation = 3000.0 * c.uniform().powi(3);
        let continentality = c.range(0.5, 1.5);
        let interval_min = (cfg.interval.num_minutes()).max(1) as u64;
        // The drift fault draws from its own stream: fault settings never change the weather.
        let mut d = Rng::new(cfg.seed, i as u64, 4);
        let (drifts, at, rate, sign) = (d.chance(cfg.faults.drift), d.uniform(), d.range(0.5, 2.0), d.chance(0.5));
        let drift = drifts.then(|| {
            let at = cfg.start + Duration::seconds((at * 0.5 * cfg.duration.num_seconds() as f64) as i64);
            (at, if sign { rate } else { -rate })
        });
        let mut weather = Rng::new(cfg.seed, i as u64, 2);
        let pressure_sd = 4.0 + 0.08 * lat.abs();
        Station {
            id: format!("SYN{i:05}"),
            offset: Duration::minutes(c.int(0, interval_min - 1) as i64),
            lon,
            southern: lat < 0.0,
            mean_temp: 27.0 - 0.0067 * lat * lat - 0.0065 * elevation + c.normal() * 1.5,
            seasonal_amp: (0.5 + 0.22 * lat.abs()) * continentality,
            diurnal_amp: c.range(3.0, 7.0) * (1.2 - 0.4 * lat.abs() / 70.0),
            mean_rh: c.range(45.0, 85.0),
            pressure_factor: (1.0 - 2.255_77e-5 * elevation).powf(5.255_88),
            pressure_sd,
            mean_wind: c.range(2.0, 6.0),
            wet_chance_per_h: c.range(0.02, 0.08),
            drift,
            temp_anom: weather.normal() * 3.0,
            rh_anom: weather.normal() * 8.0,
            pressure_anom: weather.normal() * pressure_sd,
            wind_anom: weather.normal(),
            wet: false,
            rain_rate: 0.0,
            last_time: None,
            stuck_left: 0,
            stuck_values: (None, None),
            last_sent: (None, None),
            weather,
            faults: Rng::new(cfg.seed, i as u64, 3),
        }
    }

    /// Advances the weather to `t` and returns the clean reading.
    pub(super) fn clean_reading(&mut self, t: DateTime<Utc>, missing: f64, counts: &mut FaultCounts) -> Observation {
        let dt_h = self.last_time.map_or(1.0, |l| (t - l).num_seconds() as f64 / 3600.0).max(0.0);
        self.last_time = Some(t);
        let w = &mut self.weather;
        let mut ar = |x: &mut f64, tau_h: f64, sd: f64| {
            let phi = (-dt_h / tau_h).exp();
            *x = phi * *x + sd * (1.0 - phi * phi).sqrt() * w.normal();
        };
        ar(&mut self.temp_anom, 48.0, 3.0);
        ar(&mut self.rh_anom, 24.0, 8.0);
        ar(&mut self.pressure_anom, 36.0, self.pressure_sd);
        ar(&mut self.wind_anom, 12.0, 1.0);
        // Precipitation: a wet/dry Markov chain in hours; rain rate drawn per wet spell.
        if self.wet {
            if w.chance(1.0 - 0.7f64.powf(dt_h)) {
                self.wet = false;
            }
        } else if w.chance(1.0 - (1.0 - self.wet_chance_per_h).powf(dt_h)) {
            self.wet = true;
            self.rain_rate = w.exponential(1.2);
        }
        let day = (t.ordinal0() as f64 + t.num_seconds_from_midnight() as f64 / 86_400.0) / 365.2425;
        let peak = if self.southern { 20.0 / 365.2425 } else { 200.0 / 365.2425 };
        let seasonal = self.seasonal_amp * (TAU * (day - peak)).cos();
        let solar_h = (t.num_seconds_from_midnight() as f64 / 3600.0 + self.lon / 15.0).rem_euclid(24.0);
        let diurnal_shape = 0.85 * (TAU * (solar_h - 15.0) / 24.0).cos() + 0.15 * (2.0 * TAU * (solar_h - 15.0) / 24.0).cos();
        let diurnal = self.diurnal_amp * diurnal_shape;
        let temp = self.mean_temp + seasonal + diurnal + self.temp_anom + 0.15 * w.normal();
        let rh = (self.mean_rh - 3.0 * diurnal - 2.0 * self.temp_anom + self.rh_anom + w.normal()).clamp(4.0, 100.0);
        let tide = 0.6 * (2.0 * TAU * (solar_h - 10.0) / 24.0).cos();
        let sea_level = 1013.25 + self.pressure_anom - 0.3 * self.temp_anom + tide + 0.1 * w.normal();
        let wind = self.mean_wind * (0.35 * self.wind_anom).exp() * (1.0 + 0.25 * (TAU * (solar_h - 15.0) / 24.0).cos());
        let precip = if self.wet {
            self.rain_rate * dt_h.min(24.0) * w.range(0.5, 1.5)
        } else {
            0.0
        };
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let mut keep = |x: f64| {
            if w.chance(missing) {
                counts.missing_values += 1;
                None
            } else {
                Some(round(x))
            }
        };
        Observation {
            station_id: self.id.clone(),
            time: t,
            temperature: keep(temp),
            humidity: keep(rh),
            pressure: keep(sea_level * self.pressure_factor),
            wind_speed: keep(wind.max(0.0)),
            precipitation: keep(precip),
        }
    }
}
