//! Per-station temperature forecasting maths, free of timely and Kafka.
//!
//! A forecaster is a small per-station state struct (`Clone + Debug + Serialize + Deserialize +
//! PartialEq`, so the operator can checkpoint it) that is fed the station's accepted feature
//! records in arrival order, with strictly increasing `window_end`, and answers each one with a
//! [`ForecastOutput`]: the 24 hourly forecast points (lead 1..=24 h after the record's
//! `window_end`), the [`Expectation`] it held for the record's own window *before* seeing it (the
//! anomaly detector compares the observation with it), and whether its intervals are calibrated
//! yet.
//!
//! [`fallback::FallbackForecaster`] (persistence + per-station diurnal cycle with online empirical
//! intervals) always runs; see its module docs for the formulas. [`trained::LinearPerLead`] (one
//! smartcore model per lead, conformal intervals) is served instead when the model store offers
//! one; it reads its features from the fallback's state and the model-agnostic
//! [`history::RecentHistory`], so model versions can be switched without migrating state.

pub mod fallback;
pub mod features;
pub mod history;
pub mod trained;

pub use fallback::{FallbackForecaster, FallbackParams};

use crate::contract::ForecastPoint;

/// What a forecaster expected for a window before it saw it: the point forecast issued for this
/// window from the most recent usable origin (lead 1 from the previous hour when available, else
/// the best older origin up to [`contract::LEADS`](crate::contract::LEADS) hours back) and the
/// 1-sigma scale of that forecast's error at that lead.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expectation {
    /// Expected `temperature_mean` of the window, degC.
    pub mean: f64,
    /// 1-sigma scale of the error of `mean`, degC (always > 0): the half-width of the calibrated
    /// interval at that lead divided by the standard-normal quantile of the interval probability.
    pub sigma: f64,
    /// Hours between the origin the expectation was issued from and this window (1..=24).
    pub lead_hours: u32,
}

/// A forecaster's answer to one feature record.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastOutput {
    /// Exactly [`contract::LEADS`](crate::contract::LEADS) points, lead 1..=24 h, `valid_at =
    /// window_end + lead`. Temperature and bounds are all `None` only while the station has never
    /// reported a usable temperature.
    pub points: Vec<ForecastPoint>,
    /// The expectation held for this record's window before seeing it (`None` when there was no
    /// usable temperature in the previous 24 h).
    pub expected: Option<Expectation>,
    /// True once the interval scale has been learned from enough of the station's own forecast
    /// errors to be calibrated (before that the intervals lean on a wide prior).
    pub warm: bool,
}

/// [`normal_quantile`] remembering the last `p` of this thread: every record asks for the
/// quantile of the same configured interval (twice), and the rational approximation with its
/// logarithm and square root cost about 2 % of a forecast.
pub fn normal_quantile_cached(p: f64) -> f64 {
    thread_local! {
        static LAST: std::cell::Cell<(u64, f64)> = const { std::cell::Cell::new((0.5f64.to_bits(), 0.0)) };
    }
    LAST.with(|last| {
        let (bits, z) = last.get();
        if bits == p.to_bits() {
            return z;
        }
        let z = normal_quantile(p);
        last.set((p.to_bits(), z));
        z
    })
}

/// Standard-normal quantile function (inverse CDF), Acklam's rational approximation (relative
/// error below 1.2e-9). `p` is clamped to `[1e-12, 1 - 1e-12]`; NaN gives 0.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() {
        return 0.0;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

/// Forecast points with no temperature (station never reported a usable one).
pub(crate) fn empty_point(lead: u32, valid_at: chrono::DateTime<chrono::Utc>) -> ForecastPoint {
    ForecastPoint {
        lead_hours: lead,
        valid_at,
        temperature: None,
        lower: None,
        upper: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{normal_quantile, normal_quantile_cached};

    #[test]
    fn normal_quantile_known_values() {
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.95) - 1.644_853_626_951).abs() < 1e-7);
        assert!((normal_quantile(0.05) + 1.644_853_626_951).abs() < 1e-7);
        assert!((normal_quantile(0.975) - 1.959_963_984_540).abs() < 1e-7);
        assert!((normal_quantile(0.001) + 3.090_232_306_168).abs() < 1e-6);
        assert_eq!(normal_quantile(f64::NAN), 0.0);
        for p in [0.5, 0.95, 0.95, 0.5, 0.975, f64::NAN, 0.975, 0.5] {
            assert_eq!(normal_quantile_cached(p).to_bits(), normal_quantile(p).to_bits(), "p = {p}");
        }
        assert!(normal_quantile(0.0).is_finite() && normal_quantile(1.0).is_finite());
    }
}
