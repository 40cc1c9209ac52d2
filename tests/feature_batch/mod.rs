//! An independent, straightforward batch computation of hourly features for the tests: windows
//! by integer arithmetic on Unix seconds, statistics by two passes over plain vectors. It shares no
//! code with `weatherflow::features`, so it checks the streaming stage rather than restating it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use weatherflow::contract::FeatureRecord;
use weatherflow::observations::Observation;

/// One window's raw values.
#[derive(Debug, Default)]
pub struct Expected {
    pub count: u64,
    pub temp: Vec<f64>,
    pub rh: Vec<f64>,
    pub pressure: Vec<f64>,
    pub wind: Vec<f64>,
    pub precip: Vec<f64>,
}

/// Observations grouped by (station, window end in Unix seconds).
pub fn batch(obs: &[Observation], size_s: i64) -> BTreeMap<(String, i64), Expected> {
    let mut m: BTreeMap<(String, i64), Expected> = BTreeMap::new();
    for o in obs {
        let t = o.time.timestamp();
        let end = if t.rem_euclid(size_s) == 0 {
            t
        } else {
            (t.div_euclid(size_s) + 1) * size_s
        };
        let e = m.entry((o.station_id.clone(), end)).or_default();
        e.count += 1;
        e.temp.extend(o.temperature);
        e.rh.extend(o.humidity);
        e.pressure.extend(o.pressure);
        e.wind.extend(o.wind_speed);
        e.precip.extend(o.precipitation);
    }
    m
}

/// Arithmetic mean.
pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Equal within 1e-9 (relative), or both missing.
pub fn close(got: Option<f64>, want: Option<f64>, what: &str) {
    match (got, want) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{what}: {g} vs {w}"),
        _ => panic!("{what}: {got:?} vs {want:?}"),
    }
}

/// `features` (sorted by station, window end) are exactly the batch windows of `obs`.
pub fn assert_matches_batch(features: &[FeatureRecord], obs: &[Observation]) {
    let expected = batch(obs, 3600);
    assert_eq!(features.len(), expected.len(), "one record per station-window");
    for (r, ((station, end), e)) in features.iter().zip(&expected) {
        let what = format!("{station} {end}");
        assert_eq!((&r.station_id, r.window_end.timestamp()), (station, *end), "{what}");
        assert_eq!(r.window_start.map(|s| s.timestamp()), Some(end - 3600), "{what}");
        assert_eq!(r.count, e.count, "{what}: count");
        let m = mean(&e.temp);
        close(r.temperature_mean, m, &format!("{what} temperature_mean"));
        close(r.temperature_min, e.temp.iter().copied().reduce(f64::min), &format!("{what} min"));
        close(r.temperature_max, e.temp.iter().copied().reduce(f64::max), &format!("{what} max"));
        let std = m.map(|m| (e.temp.iter().map(|x| (x - m).powi(2)).sum::<f64>() / e.temp.len() as f64).sqrt());
        close(r.temperature_std, std, &format!("{what} std"));
        close(r.humidity_mean, mean(&e.rh), &format!("{what} humidity"));
        close(r.pressure_mean, mean(&e.pressure), &format!("{what} pressure"));
        close(r.wind_speed_mean, mean(&e.wind), &format!("{what} wind"));
        close(
            r.wind_speed_max,
            e.wind.iter().copied().reduce(f64::max),
            &format!("{what} wind max"),
        );
        close(
            r.precipitation_sum,
            (!e.precip.is_empty()).then(|| e.precip.iter().sum()),
            &format!("{what} precipitation"),
        );
    }
}
