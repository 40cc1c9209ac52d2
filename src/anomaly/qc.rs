//! Stateless plausibility checks shared by the forecaster and the anomaly detector.
//!
//! [`FeatureRecord::validate`](crate::contract::FeatureRecord::validate) already refuses what no
//! measurement can be (below absolute zero, negative speeds, `min > max`, ...). What is left can
//! still be implausible for a real surface station: a sensor glitch or a unit error rather than
//! weather. This module decides that with fixed envelopes slightly wider than the world records,
//! so that no real reading is ever called implausible:
//!
//! | field | plausible | why |
//! |---|---|---|
//! | temperature mean/min/max | `[-90, 60]` degC | records -89.2 (Vostok) and 56.7 (Death Valley) |
//! | temperature_std | `<= 20` degC | even a 24 h window's std stays well below half its range |
//! | humidity_mean | `<= 105` % | saturated sensors read 100-103 % (Payerne: 100.5 %) |
//! | pressure_mean | `[500, 1090]` hPa | station pressure up to ~5.5 km altitude; sea-level record 1084.8 |
//! | wind_speed_mean | `<= 75` m/s | strongest sustained winds of tropical cyclones |
//! | wind_speed_max | `<= 113` m/s | gust record 113.3 m/s (Barrow Island, 1996) |
//! | precipitation_sum | `<= 305` mm per hour of window, `<= 1825` mm for longer windows | records: 305 mm in 1 h (Holt, 1947), 1825 mm in 24 h (Foc-Foc, 1966) |
//!
//! Non-finite numbers (never accepted by the contract, but this module must not panic on them)
//! are implausible too. Implausible values are never learned from: the forecaster treats them as
//! missing, the anomaly detector flags them with severity 1.

use crate::contract::FeatureRecord;

/// Plausible temperature range for a surface station, degC (inclusive).
pub const TEMPERATURE_RANGE_C: (f64, f64) = (-90.0, 60.0);
/// Largest plausible within-window temperature standard deviation, degC.
pub const TEMPERATURE_STD_MAX_C: f64 = 20.0;
/// Largest plausible relative humidity, %. Readings of 100-103 % are normal saturation.
pub const HUMIDITY_MAX_PCT: f64 = 105.0;
/// Plausible (station or sea-level) pressure range, hPa (inclusive).
pub const PRESSURE_RANGE_HPA: (f64, f64) = (500.0, 1090.0);
/// Largest plausible mean wind speed, m/s.
pub const WIND_MEAN_MAX_MS: f64 = 75.0;
/// Largest plausible gust (window maximum), m/s.
pub const WIND_MAX_MAX_MS: f64 = 113.0;
/// Largest plausible precipitation in a window of up to one hour, mm.
pub const PRECIP_MAX_MM_1H: f64 = 305.0;
/// Largest plausible precipitation in any window (up to the 24 h the contract allows), mm.
pub const PRECIP_MAX_MM_24H: f64 = 1825.0;

/// One implausible value found in a record.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// Contract field name, e.g. `"wind_speed_mean"`.
    pub field: &'static str,
    /// The offending value, in the contract unit.
    pub value: f64,
    /// Human-readable explanation with value, unit and the plausible envelope.
    pub reason: String,
}

fn within(v: f64, lo: f64, hi: f64) -> bool {
    v >= lo && v <= hi // false for NaN
}

/// Is `v` (degC) a plausible air temperature?
pub fn plausible_temperature(v: f64) -> bool {
    within(v, TEMPERATURE_RANGE_C.0, TEMPERATURE_RANGE_C.1)
}

/// Is `v` (%) a plausible relative humidity?
pub fn plausible_humidity(v: f64) -> bool {
    within(v, 0.0, HUMIDITY_MAX_PCT)
}

/// Is `v` (hPa) a plausible station or sea-level pressure?
pub fn plausible_pressure(v: f64) -> bool {
    within(v, PRESSURE_RANGE_HPA.0, PRESSURE_RANGE_HPA.1)
}

/// Length of the record's window in hours (1 when `window_start` is absent).
pub fn window_hours(rec: &FeatureRecord) -> f64 {
    match rec.window_start {
        Some(start) => {
            let h = (rec.window_end - start).num_seconds() as f64 / 3600.0;
            if h > 0.0 {
                h
            } else {
                1.0
            }
        }
        None => 1.0,
    }
}

/// Largest plausible precipitation (mm) for a window of `hours` hours.
pub fn precipitation_limit(hours: f64) -> f64 {
    if hours <= 1.0 {
        PRECIP_MAX_MM_1H
    } else {
        (PRECIP_MAX_MM_1H * hours).min(PRECIP_MAX_MM_24H)
    }
}

/// The record's `temperature_mean` if it can be learned from: present and plausible, and the
/// window's min/max/std (when present) plausible too (a glitching sample contaminates the mean).
pub fn usable_temperature(rec: &FeatureRecord) -> Option<f64> {
    let t = rec.temperature_mean?;
    let ok = plausible_temperature(t)
        && rec.temperature_min.is_none_or(plausible_temperature)
        && rec.temperature_max.is_none_or(plausible_temperature)
        && rec.temperature_std.is_none_or(|s| within(s, 0.0, TEMPERATURE_STD_MAX_C));
    ok.then_some(t)
}

/// The record's `pressure_mean` if present and plausible.
pub fn usable_pressure(rec: &FeatureRecord) -> Option<f64> {
    rec.pressure_mean.filter(|&p| plausible_pressure(p))
}

/// The record's `temperature_std` if present, plausible, and the temperature is usable.
pub fn usable_temperature_std(rec: &FeatureRecord) -> Option<f64> {
    usable_temperature(rec)?;
    rec.temperature_std
}

/// The record's `precipitation_sum` if present and plausible for its window length.
pub fn usable_precipitation(rec: &FeatureRecord) -> Option<f64> {
    let limit = precipitation_limit(window_hours(rec));
    rec.precipitation_sum.filter(|&p| within(p, 0.0, limit))
}

/// Every implausible value of the record, in contract field order. Allocates only when the
/// record has an issue (an empty `Vec` does not allocate).
pub fn implausible(rec: &FeatureRecord) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut push = |field: &'static str, value: f64, reason: String| issues.push(Issue { field, value, reason });
    let (tlo, thi) = TEMPERATURE_RANGE_C;
    for (field, v) in [
        ("temperature_mean", rec.temperature_mean),
        ("temperature_min", rec.temperature_min),
        ("temperature_max", rec.temperature_max),
    ] {
        if let Some(v) = v.filter(|&v| !plausible_temperature(v)) {
            push(field, v, format!("implausible {field} {v:.1} degC (plausible {tlo}..{thi} degC)"));
        }
    }
    if let Some(v) = rec.temperature_std.filter(|&v| !within(v, 0.0, TEMPERATURE_STD_MAX_C)) {
        push(
            "temperature_std",
            v,
            format!("implausible within-window temperature_std {v:.1} degC (plausible up to {TEMPERATURE_STD_MAX_C} degC)"),
        );
    }
    if let Some(v) = rec.humidity_mean.filter(|&v| !plausible_humidity(v)) {
        push(
            "humidity_mean",
            v,
            format!("implausible relative humidity {v:.1} % (saturated sensors read up to ~103 %, plausible up to {HUMIDITY_MAX_PCT} %)"),
        );
    }
    if let Some(v) = rec.pressure_mean.filter(|&v| !plausible_pressure(v)) {
        let (plo, phi) = PRESSURE_RANGE_HPA;
        push(
            "pressure_mean",
            v,
            format!("implausible pressure {v:.1} hPa (plausible {plo}..{phi} hPa)"),
        );
    }
    if let Some(v) = rec.wind_speed_mean.filter(|&v| !within(v, 0.0, WIND_MEAN_MAX_MS)) {
        push(
            "wind_speed_mean",
            v,
            format!(
                "implausible mean wind speed {v:.1} m/s ({:.0} mph; plausible up to {WIND_MEAN_MAX_MS} m/s)",
                v / 0.447_04
            ),
        );
    }
    if let Some(v) = rec.wind_speed_max.filter(|&v| !within(v, 0.0, WIND_MAX_MAX_MS)) {
        push(
            "wind_speed_max",
            v,
            format!("implausible wind gust {v:.1} m/s (gust record 113 m/s; plausible up to {WIND_MAX_MAX_MS} m/s)"),
        );
    }
    let hours = window_hours(rec);
    let limit = precipitation_limit(hours);
    if let Some(v) = rec.precipitation_sum.filter(|&v| !within(v, 0.0, limit)) {
        push(
            "precipitation_sum",
            v,
            format!("implausible precipitation {v:.1} mm in {hours:.1} h (world record envelope {limit:.0} mm)"),
        );
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn rec() -> FeatureRecord {
        FeatureRecord {
            station_id: "S".into(),
            window_start: None,
            window_end: Utc.with_ymd_and_hms(2013, 2, 12, 8, 0, 0).unwrap(),
            count: 1,
            temperature_mean: Some(1.0),
            temperature_min: Some(1.0),
            temperature_max: Some(1.0),
            temperature_std: Some(0.0),
            humidity_mean: Some(100.5),
            pressure_mean: Some(955.0),
            wind_speed_mean: Some(5.0),
            wind_speed_max: Some(9.0),
            precipitation_sum: Some(2.0),
        }
    }

    #[test]
    fn normal_and_saturated_readings_pass() {
        let r = rec();
        assert!(implausible(&r).is_empty());
        assert_eq!(usable_temperature(&r), Some(1.0));
        assert_eq!(usable_pressure(&r), Some(955.0));
        let mut hi = rec();
        hi.pressure_mean = Some(1045.0);
        hi.humidity_mean = Some(103.0);
        assert!(implausible(&hi).is_empty());
    }

    #[test]
    fn glitches_are_named_with_value_and_unit() {
        let mut r = rec();
        r.wind_speed_mean = Some(468.66);
        r.wind_speed_max = Some(468.66);
        let issues = implausible(&r);
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].field, "wind_speed_mean");
        assert!(
            issues[0].reason.contains("468.7 m/s") && issues[0].reason.contains("1048 mph"),
            "{}",
            issues[0].reason
        );

        let mut r = rec();
        r.humidity_mean = Some(130.0);
        r.pressure_mean = Some(200.0);
        r.precipitation_sum = Some(400.0);
        r.temperature_max = Some(70.0);
        let fields: Vec<_> = implausible(&r).iter().map(|i| i.field).collect();
        assert_eq!(fields, ["temperature_max", "humidity_mean", "pressure_mean", "precipitation_sum"]);
        assert_eq!(usable_temperature(&r), None, "a glitching max contaminates the mean");
        assert_eq!(usable_pressure(&r), None);
    }

    #[test]
    fn precipitation_limit_scales_with_window_and_nan_never_panics() {
        let mut r = rec();
        r.window_start = Some(r.window_end - chrono::Duration::hours(6));
        r.precipitation_sum = Some(400.0);
        assert!(implausible(&r).is_empty(), "400 mm in 6 h is possible");
        r.temperature_mean = Some(f64::NAN);
        assert_eq!(usable_temperature(&r), None);
        assert_eq!(implausible(&r).len(), 1);
    }
}
