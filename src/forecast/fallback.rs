//! Fallback temperature forecaster: persistence + per-station diurnal cycle, with empirical
//! prediction intervals learned online from the station's own past errors.
//!
//! # Point forecast
//!
//! Per station the state keeps a slow level `L` and a 24-slot diurnal profile `D[k]` indexed by
//! the UTC hour of day `k = hod(t)` (so it needs no longitude or time zone). On each usable
//! temperature `T` at hour `t` (EWMA updates, with running-mean weights `1/(n+1)` while young):
//!
//! ```text
//!   L    <- L + a_L (T - D[hod t] - L)            a_L = max(level_alpha,   1/(n+1))
//!   D[k] <- D[k] + a_D (T - L - D[k])             a_D = max(diurnal_alpha, 1/(n/24+1))
//!   D    <- D - mean(D),  L <- L + mean(D)        (identifiability: the profile has mean 0)
//!   a    =  T - L - D[hod t]                      (deseasonalised anomaly at the origin)
//! ```
//!
//! The forecast from origin `o` (the last usable temperature) for valid hour `v = o + h` is
//!
//! ```text
//!   F(o, h) = L + D[hod v] + phi^h * a
//! ```
//!
//! i.e. the current anomaly decays geometrically towards level + diurnal cycle; with `phi -> 1`
//! it is persistence plus the diurnal difference `T + D[hod v] - D[hod o]`. A record without a
//! usable temperature (missing, or implausible per [`qc`]) changes nothing: its forecast is issued
//! from the last usable origin, i.e. at longer leads `h = v - o` with wider intervals. After an
//! outage of more than 72 h the level is re-anchored (`L = T - D[hod t]`): a station may come
//! back in another season (TMY3 months come from different years).
//!
//! # Intervals
//!
//! For every lead `h = 1..=24` the state keeps an error scale `s_h` (EWMA of `|e|`, clipped at
//! `6 s_h`) and two quantile multipliers `m_lo,h`, `m_hi,h`. The 24 past origins (their `L` and
//! `a`) sit in a ring buffer, so when `T` arrives at hour `t` the forecast issued `h` hours ago is
//! recomputed as `F(t-h, h)` (with today's `D`) instead of storing 24x24 forecasts, and its error
//! `e = T - F` updates lead `h`:
//!
//! ```text
//!   s_h   <- s_h + a_s (min(|e|, 6 s_h) - s_h)    a_s = max(error_alpha, 1/(n_h + prior_weight))
//!   z = e / s_h,   g = z_p * sqrt(pi/2)           (z_p: normal quantile of (1+p)/2)
//!   m_hi  <- m_hi + (step/g) ((1+p)/2 - 1[z <  m_hi g])     (stochastic quantile tracking,
//!   m_lo  <- m_lo + (step/g) ((1+p)/2 - 1[z > -m_lo g])      pinball-loss gradient)
//!   interval(h) = [F - m_lo g s_h,  F + m_hi g s_h]
//! ```
//!
//! `s_h` starts at the prior MAE `sqrt(2/pi) (prior_sigma_lead1 + prior_sigma_per_lead (h-1))`
//! and counts as `prior_weight` pseudo-observations, `m` starts at 1 (Gaussian), so intervals are
//! wide and honest from the first record and become the station's empirical quantiles; the
//! quantile tracking keeps the coverage at `p` even for the heavy-tailed real errors. Beyond lead
//! 24 (origin older than the record) the lead-24 offsets are widened by `min(sqrt(h/24), 2.5)`.
//! `warm` is true once lead 24 has `warm_samples` error samples.
//!
//! # Outlier gate
//!
//! A plausible but wildly wrong reading (JFK 2013-05-09T02Z: 13.1 F between two 57 F readings)
//! would otherwise become the origin of the next forecasts and pollute the error statistics. A
//! temperature further than `max(outlier_sigma * sigma, outlier_min_c)` from the expectation is
//! held as a *suspect* and treated as missing; it is accepted when the next reading confirms it
//! (that reading is also far from the expectation but closer to the suspect: a real sudden
//! change), or after three suspects in a row, so the forecaster can never lock itself out.
//!
//! # Tuning
//!
//! Defaults were tuned on NYC 2013 (EWR/JFK/LGA, hourly ASOS): `phi = 0.985` (anomaly half-life
//! ~46 h), level memory 288 h (12 days), diurnal slot weight 0.03 (~33 days), quantile step 0.02.
//! Larger diurnal weights make the profile noisy and hurt the short leads; smaller `phi` hurts the
//! long ones. Over the year the mean absolute error is about 0.67 of persistence averaged over
//! leads 1..24 (0.87 at lead 1, 0.57 at lead 12, 0.94 at lead 24) and 90 % intervals cover
//! 0.88-0.90 at every lead after the first 14 days (`tests/maths_quality.rs`).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::{empty_point, normal_quantile_cached, Expectation, ForecastOutput};
use crate::anomaly::qc;
use crate::contract::{FeatureRecord, ForecastPoint, LEADS};

/// Model name reported in predictions.
pub const NAME: &str = "fallback/persistence-diurnal-v1";

const HOURS: usize = 24;
/// Error-scale floor, degC (keeps `z = e / s` finite).
const MIN_SCALE: f32 = 0.05;
/// Clip of `|e|` in units of `s_h` for the scale update.
const SCALE_CLIP: f32 = 6.0;
/// Widening cap of intervals beyond lead 24.
const MAX_EXTRA_WIDENING: f64 = 2.5;
/// Consecutive suspects after which a reading is accepted anyway.
const MAX_SUSPECT_RUN: u8 = 3;
/// A gap (hours without a usable temperature) after which the level is re-anchored.
const RESTART_GAP_HOURS: i64 = 72;
/// Largest lead used in `phi^h` (beyond it the anomaly has long decayed).
const MAX_LEAD: i64 = 10_000;

/// Tuning of [`FallbackForecaster`]. Defaults were tuned on the NYC 2013 ASOS data
/// (EWR/JFK/LGA); all rates are per usable hourly observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackParams {
    /// Hourly persistence `phi` of the deseasonalised anomaly, in [0, 1].
    pub phi: f64,
    /// Minimum EWMA weight of the level `L` (1/level_alpha ~ memory in hours).
    pub level_alpha: f64,
    /// Minimum EWMA weight of a diurnal slot `D[k]` per observation in that slot (~ 1/days).
    pub diurnal_alpha: f64,
    /// Minimum EWMA weight of the per-lead error scale `s_h` (~ 1/samples of memory).
    pub error_alpha: f64,
    /// Step of the quantile trackers, in units of the standardised error `e / s_h`.
    pub quantile_step: f64,
    /// Prior 1-sigma forecast error at lead 1, degC.
    pub prior_sigma_lead1: f64,
    /// Prior growth of the 1-sigma error per extra hour of lead, degC.
    pub prior_sigma_per_lead: f64,
    /// Weight of the prior scale, in pseudo-observations per lead.
    pub prior_weight: f64,
    /// Lead-24 error samples needed before the output is `warm` (168 = one week).
    pub warm_samples: u32,
    /// Outlier gate: distance from the expectation, in sigmas, beyond which a reading is suspect.
    pub outlier_sigma: f64,
    /// Outlier gate: minimum distance from the expectation, degC, for a reading to be suspect.
    pub outlier_min_c: f64,
}

impl Default for FallbackParams {
    fn default() -> Self {
        FallbackParams {
            phi: 0.985,
            level_alpha: 1.0 / 288.0,
            diurnal_alpha: 0.03,
            error_alpha: 1.0 / 500.0,
            quantile_step: 0.02,
            prior_sigma_lead1: 2.0,
            prior_sigma_per_lead: 0.2,
            prior_weight: 24.0,
            warm_samples: 168,
            outlier_sigma: 8.0,
            outlier_min_c: 8.0,
        }
    }
}

impl FallbackParams {
    /// The real-valued parameters by name, each with the range `[lo, hi]` the maths takes: the
    /// one list both [`Tuning::new`] (which forces values into it) and the configuration's
    /// check (which reports values outside it) read.
    pub fn bounded(&mut self) -> [(&'static str, &mut f64, f64, f64); 10] {
        [
            ("phi", &mut self.phi, 0.0, 1.0),
            ("level_alpha", &mut self.level_alpha, 1e-6, 1.0),
            ("diurnal_alpha", &mut self.diurnal_alpha, 1e-6, 1.0),
            ("error_alpha", &mut self.error_alpha, 1e-6, 1.0),
            ("quantile_step", &mut self.quantile_step, 1e-6, 1.0),
            ("prior_sigma_lead1", &mut self.prior_sigma_lead1, 0.1, 50.0),
            ("prior_sigma_per_lead", &mut self.prior_sigma_per_lead, 0.0, 10.0),
            ("prior_weight", &mut self.prior_weight, 0.0, 1e6),
            ("outlier_sigma", &mut self.outlier_sigma, 1.0, 1e6),
            ("outlier_min_c", &mut self.outlier_min_c, 0.0, 1e6),
        ]
    }

    /// Copy with every value forced into its valid range (non-finite values take the default).
    fn sanitised(&self) -> FallbackParams {
        let (mut out, mut d) = (self.clone(), FallbackParams::default());
        for ((_, v, lo, hi), (_, dv, _, _)) in out.bounded().into_iter().zip(d.bounded()) {
            *v = if v.is_finite() { v.clamp(lo, hi) } else { *dv };
        }
        out
    }
}

/// The last accepted temperature: forecasts are issued from it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Origin {
    hour: i64,
    anomaly: f32,
}

/// A reading held back by the outlier gate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Suspect {
    hour: i64,
    temperature: f32,
    run: u8,
}

/// Per-station state of the fallback forecaster (704 bytes on 64-bit targets, no heap; its parameters are configuration, [`Tuning`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FallbackForecaster {
    /// Hour index (hours since the epoch) of the last record seen, usable or not.
    last_hour: Option<i64>,
    /// Usable temperatures learned from (saturating).
    n_obs: u32,
    level: f32,
    diurnal: [f32; HOURS],
    origin: Option<Origin>,
    suspect: Option<Suspect>,
    /// Ring of the last 24 hours' origins, slot `hour mod 24`; bit set = slot holds that hour.
    ring_valid: u32,
    ring_level: [f32; HOURS],
    ring_anomaly: [f32; HOURS],
    /// Per-lead error scale `s_h` (EWMA of |e|), degC.
    scale: [f32; LEADS],
    /// Per-lead quantile multipliers (lower, upper), relative to the Gaussian.
    m_lo: [f32; LEADS],
    m_hi: [f32; LEADS],
    /// Per-lead error samples (saturating).
    n_err: [u16; LEADS],
}

/// Powers of `phi` kept in a [`Tuning`]'s table (a record asks for 25, and `powi` is a call to a
/// loop of multiplications).
const POWERS: usize = 64;

/// `phi.powi(k)`, from `table` (filled with `powi`: the same values) for `0 <= k < POWERS`.
fn phi_pow(phi: f64, table: &[f64; POWERS], k: i64) -> f64 {
    match usize::try_from(k).ok().and_then(|k| table.get(k)) {
        Some(v) => *v,
        None => phi.powi(k.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
    }
}

fn hod(hour: i64) -> usize {
    hour.rem_euclid(HOURS as i64) as usize
}

/// Interval probability forced into a usable range (NaN: the default 0.9).
fn sanitise_interval(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.5, 0.999)
    } else {
        0.9
    }
}

/// The interval probability's constants, computed once per configuration (not per record).
#[derive(Clone, Copy, Debug)]
struct Band {
    /// Upper quantile level `tau = (1 + p) / 2`.
    tau: f64,
    /// Normal quantile `z_p` of `tau`.
    z: f64,
    /// `g = z_p sqrt(pi / 2)`: the quantile in units of the mean absolute error.
    g: f64,
}

impl Band {
    fn new(interval: f64) -> Band {
        let p = sanitise_interval(interval);
        let tau = 0.5 + p / 2.0;
        let z = normal_quantile_cached(tau);
        Band {
            tau,
            z,
            g: z * (std::f64::consts::PI / 2.0).sqrt(),
        }
    }
}

/// The forecaster's configuration, resolved once per operator: its parameters forced into their
/// valid ranges and the interval's constants. It is not part of a station's state: a station
/// restored from a checkpoint runs with the configuration of the process that restores it
/// (checkpoints written before this split carry a copy of the parameters, which is ignored).
///
/// ```text
///   FallbackParams + interval ──Tuning::new──> Tuning ──&──> FallbackForecaster::observe (per record)
/// ```
#[derive(Clone, Debug)]
pub struct Tuning {
    params: FallbackParams,
    interval: f64,
    band: Band,
    /// `phi^k` for `k < POWERS`.
    powers: [f64; POWERS],
}

impl Tuning {
    /// Resolves `params` and the interval probability `interval` (the central probability of
    /// the `lower..upper` bounds, e.g. 0.9; clamped to 0.5..=0.999, NaN means 0.9).
    pub fn new(params: &FallbackParams, interval: f64) -> Tuning {
        let params = params.sanitised();
        Tuning {
            powers: std::array::from_fn(|k| params.phi.powi(k as i32)),
            params,
            interval,
            band: Band::new(interval),
        }
    }

    /// The interval probability as configured (trained models read it too).
    pub fn interval(&self) -> f64 {
        self.interval
    }
}

/// `window_end + lead hours` for leads 1..=24 without a calendar conversion per lead (chrono's
/// `checked_add_signed` was about a quarter of a forecast): the date is either the window's or
/// the next day. Leap seconds and the last representable day take chrono's path.
pub(crate) struct LeadTimes {
    window_end: DateTime<Utc>,
    /// The window's date, the next day's and the time of day (not for leap seconds or the last
    /// representable day).
    fast: Option<(NaiveDate, NaiveDate, NaiveTime)>,
}

impl LeadTimes {
    pub(crate) fn new(window_end: DateTime<Utc>) -> LeadTimes {
        let n = window_end.naive_utc();
        let fast = if n.nanosecond() < 1_000_000_000 {
            n.date().succ_opt().map(|next| (n.date(), next, n.time()))
        } else {
            None
        };
        LeadTimes { window_end, fast }
    }

    pub(crate) fn at(&self, lead: u32) -> DateTime<Utc> {
        if let Some((today, next, time)) = self.fast {
            let h = time.hour() + lead;
            if let Some(t) = time.with_hour(h % 24) {
                return if h < 24 { today } else { next }.and_time(t).and_utc();
            }
        }
        self.window_end
            .checked_add_signed(Duration::hours(i64::from(lead)))
            .unwrap_or(self.window_end)
    }
}

impl FallbackForecaster {
    /// Fresh state for one station (its error scales start at the prior of `params`).
    pub fn new(params: &FallbackParams) -> Self {
        let params = params.sanitised();
        let mut scale = [0.0f32; LEADS];
        for (i, s) in scale.iter_mut().enumerate() {
            let sigma = params.prior_sigma_lead1 + params.prior_sigma_per_lead * i as f64;
            *s = (sigma * (2.0 / std::f64::consts::PI).sqrt()) as f32;
        }
        FallbackForecaster {
            last_hour: None,
            n_obs: 0,
            level: 0.0,
            diurnal: [0.0; HOURS],
            origin: None,
            suspect: None,
            ring_valid: 0,
            ring_level: [0.0; HOURS],
            ring_anomaly: [0.0; HOURS],
            scale,
            m_lo: [1.0; LEADS],
            m_hi: [1.0; LEADS],
            n_err: [0; LEADS],
        }
    }

    /// Feeds one record (the station's next, in arrival order) and returns the 24 forecast points
    /// issued at its `window_end`, the expectation held for it, and whether intervals are warm.
    /// The tuning's interval should stay the same for the life of the state (the quantile
    /// trackers learn for it). Never panics.
    pub fn observe(&mut self, tuning: &Tuning, rec: &FeatureRecord) -> ForecastOutput {
        let (p, band) = (&tuning.params, tuning.band);
        let hour = rec.hour_index();
        if self.last_hour.is_some_and(|last| hour < last) {
            // Out of order: the operator filters these; answer without learning.
            return ForecastOutput {
                points: self.points(tuning, rec.window_end, hour),
                expected: None,
                warm: self.is_warm(tuning),
            };
        }
        let expected = self.expectation(tuning, hour);
        let accepted = qc::usable_temperature(rec).and_then(|t| self.gate(p, hour, t, expected));
        if let Some(t) = accepted {
            self.learn_errors(p, hour, t, band);
        }
        self.advance_ring(hour);
        if let Some(t) = accepted {
            self.learn_level(p, hour, t);
        }
        self.last_hour = Some(hour);
        ForecastOutput {
            points: self.points(tuning, rec.window_end, hour),
            expected,
            warm: self.is_warm(tuning),
        }
    }

    /// True once lead 24 has `warm_samples` error samples.
    pub fn is_warm(&self, tuning: &Tuning) -> bool {
        u32::from(self.n_err[LEADS - 1]) >= tuning.params.warm_samples
    }

    /// Learned per-lead error scale `s_h` (MAE-like, degC), lead 1 first; for diagnostics.
    pub fn error_scale(&self) -> [f32; LEADS] {
        self.scale
    }

    /// The current origin: hour index of the last accepted temperature (past the outlier gate)
    /// and its deseasonalised anomaly `a`. Trained models read it as features.
    pub fn origin(&self) -> Option<(i64, f64)> {
        self.origin.map(|o| (o.hour, f64::from(o.anomaly)))
    }

    /// The slow level `L`, degC.
    pub fn level(&self) -> f64 {
        f64::from(self.level)
    }

    /// The diurnal profile `D[hod(hour)]` (mean 0 over the day), degC.
    pub fn diurnal(&self, hour: i64) -> f64 {
        f64::from(self.diurnal[hod(hour)])
    }

    /// Peak-to-trough amplitude of the diurnal profile, degC.
    pub fn diurnal_range(&self) -> f64 {
        let (lo, hi) = self
            .diurnal
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        f64::from(hi - lo).max(0.0)
    }

    /// Point forecast from the current origin for `valid` hour, with its lead.
    fn point(&self, t: &Tuning, valid: i64) -> Option<(f64, i64)> {
        let o = self.origin?;
        let lead = (valid - o.hour).clamp(1, MAX_LEAD);
        let f = f64::from(self.level) + f64::from(self.diurnal[hod(valid)]) + phi_pow(t.params.phi, &t.powers, lead) * f64::from(o.anomaly);
        Some((f, lead))
    }

    /// Interval offsets (below, above the point forecast; below is negative) at `lead`.
    fn offsets(&self, lead: i64, band: Band) -> (f64, f64) {
        let g = band.g;
        let i = (lead.clamp(1, LEADS as i64) - 1) as usize;
        let widen = if lead > LEADS as i64 {
            (lead as f64 / LEADS as f64).sqrt().min(MAX_EXTRA_WIDENING)
        } else {
            1.0
        };
        let s = f64::from(self.scale[i]) * g * widen;
        (-f64::from(self.m_lo[i]) * s, f64::from(self.m_hi[i]) * s)
    }

    fn expectation(&self, t: &Tuning, hour: i64) -> Option<Expectation> {
        let band = t.band;
        let (mean, lead) = self.point(t, hour)?;
        if lead > LEADS as i64 {
            return None;
        }
        let (lo, hi) = self.offsets(lead, band);
        let sigma = ((hi - lo) / (2.0 * band.z)).max(f64::from(MIN_SCALE));
        Some(Expectation {
            mean,
            sigma,
            lead_hours: lead as u32,
        })
    }

    /// Outlier gate: returns the temperature to learn from, or `None` to hold it as a suspect.
    fn gate(&mut self, p: &FallbackParams, hour: i64, t: f64, expected: Option<Expectation>) -> Option<f64> {
        let Some(ex) = expected else {
            self.suspect = None;
            return Some(t);
        };
        let miss = (t - ex.mean).abs();
        if miss <= (p.outlier_sigma * ex.sigma).max(p.outlier_min_c) {
            self.suspect = None;
            return Some(t);
        }
        let previous = self.suspect.filter(|s| hour - s.hour <= 3);
        if let Some(s) = previous {
            if (t - f64::from(s.temperature)).abs() < miss || s.run >= MAX_SUSPECT_RUN {
                self.suspect = None;
                return Some(t);
            }
        }
        let run = previous.map_or(1, |s| s.run.saturating_add(1));
        self.suspect = Some(Suspect {
            hour,
            temperature: t as f32,
            run,
        });
        None
    }

    /// Scores the forecasts issued 1..=24 hours ago for `hour` against the observed `t`.
    fn learn_errors(&mut self, p: &FallbackParams, hour: i64, t: f64, band: Band) {
        let Some(last) = self.last_hour else { return };
        let (tau, g) = (band.tau, band.g);
        let step = p.quantile_step / g;
        let d_valid = f64::from(self.diurnal[hod(hour)]);
        let mut phi_h = 1.0;
        for h in 1..=LEADS as i64 {
            phi_h *= p.phi;
            let o = hour - h;
            let slot = hod(o);
            if o > last || self.ring_valid & (1 << slot) == 0 {
                continue;
            }
            let f = f64::from(self.ring_level[slot]) + d_valid + phi_h * f64::from(self.ring_anomaly[slot]);
            let e = t - f;
            let i = (h - 1) as usize;
            let s = f64::from(self.scale[i]).max(f64::from(MIN_SCALE));
            let z = e / s;
            if z < f64::from(self.m_hi[i]) * g {
                self.m_hi[i] -= (step * (1.0 - tau)) as f32;
            } else {
                self.m_hi[i] += (step * tau) as f32;
            }
            if z > -f64::from(self.m_lo[i]) * g {
                self.m_lo[i] -= (step * (1.0 - tau)) as f32;
            } else {
                self.m_lo[i] += (step * tau) as f32;
            }
            self.m_hi[i] = self.m_hi[i].clamp(0.05, 20.0);
            self.m_lo[i] = self.m_lo[i].clamp(0.05, 20.0);
            let n = f64::from(self.n_err[i]);
            let a = p.error_alpha.max(1.0 / (n + p.prior_weight + 1.0));
            let clipped = e.abs().min(f64::from(SCALE_CLIP) * s);
            self.scale[i] = ((s + a * (clipped - s)) as f32).max(MIN_SCALE);
            self.n_err[i] = self.n_err[i].saturating_add(1);
        }
    }

    /// Invalidates ring slots of the hours skipped since the last record (and the new hour's).
    fn advance_ring(&mut self, hour: i64) {
        let Some(last) = self.last_hour else {
            self.ring_valid = 0;
            return;
        };
        let skipped = (hour - last).clamp(0, HOURS as i64);
        for k in 1..=skipped {
            self.ring_valid &= !(1u32 << hod(last + k));
        }
    }

    /// Updates level and diurnal profile with an accepted temperature and makes it the origin.
    fn learn_level(&mut self, p: &FallbackParams, hour: i64, t: f64) {
        let k = hod(hour);
        if self.origin.is_some_and(|o| hour - o.hour > RESTART_GAP_HOURS) {
            // Long outage (maybe into another season): re-anchor the level on this reading.
            self.level = (t - f64::from(self.diurnal[k])) as f32;
        }
        let n = f64::from(self.n_obs);
        if self.n_obs == 0 {
            self.level = t as f32;
        }
        let a_l = p.level_alpha.max(1.0 / (n + 1.0));
        let mut level = f64::from(self.level);
        level += a_l * (t - f64::from(self.diurnal[k]) - level);
        let a_d = p.diurnal_alpha.max(1.0 / ((n / HOURS as f64).floor() + 1.0));
        let dk = f64::from(self.diurnal[k]);
        self.diurnal[k] = (dk + a_d * (t - level - dk)) as f32;
        let mean = self.diurnal.iter().map(|&d| f64::from(d)).sum::<f64>() / HOURS as f64;
        for d in &mut self.diurnal {
            *d = (f64::from(*d) - mean) as f32;
        }
        level += mean;
        self.level = level as f32;
        let anomaly = (t - level - f64::from(self.diurnal[k])) as f32;
        self.origin = Some(Origin { hour, anomaly });
        self.ring_level[k] = self.level;
        self.ring_anomaly[k] = anomaly;
        self.ring_valid |= 1 << k;
        self.n_obs = self.n_obs.saturating_add(1);
    }

    /// The 24 output points issued at `window_end` (hour index `hour`).
    fn points(&self, t: &Tuning, window_end: DateTime<Utc>, hour: i64) -> Vec<ForecastPoint> {
        let band = t.band;
        let mut points = Vec::with_capacity(LEADS);
        let hours = LeadTimes::new(window_end);
        for lead in 1..=LEADS as u32 {
            let valid_at = hours.at(lead);
            let point = match self.point(t, hour + i64::from(lead)) {
                Some((f, h)) => {
                    let (lo, hi) = self.offsets(h, band);
                    ForecastPoint {
                        lead_hours: lead,
                        valid_at,
                        temperature: Some(f),
                        lower: Some(f + lo),
                        upper: Some(f + hi),
                    }
                }
                None => empty_point(lead, valid_at),
            };
            points.push(point);
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rec(hour: i64, t: Option<f64>) -> FeatureRecord {
        let end = Utc.with_ymd_and_hms(2013, 1, 1, 0, 0, 0).unwrap() + Duration::hours(hour);
        FeatureRecord {
            station_id: "S".into(),
            window_start: Some(end - Duration::hours(1)),
            window_end: end,
            count: 1,
            temperature_mean: t,
            temperature_min: t,
            temperature_max: t,
            temperature_std: t.map(|_| 0.0),
            humidity_mean: None,
            pressure_mean: None,
            wind_speed_mean: None,
            wind_speed_max: None,
            precipitation_sum: None,
        }
    }

    /// Deterministic diurnal cycle plus a slow wave and pseudo-random noise.
    fn synthetic(hour: i64) -> f64 {
        let noise = ((hour as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0 - 0.5;
        10.0 + 5.0 * (hour as f64 * std::f64::consts::TAU / 24.0).sin() + 3.0 * (hour as f64 / 60.0).sin() + noise
    }

    fn tune(interval: f64) -> Tuning {
        Tuning::new(&FallbackParams::default(), interval)
    }

    fn widths(out: &ForecastOutput) -> Vec<f64> {
        out.points.iter().map(|p| p.upper.unwrap() - p.lower.unwrap()).collect()
    }

    #[test]
    fn parameters_are_configuration_not_state_and_old_checkpoints_still_restore() {
        assert_eq!(FallbackParams::default().sanitised(), FallbackParams::default());
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        for h in 0..30 {
            f.observe(&tune(0.9), &rec(h, Some(10.0 + (h % 24) as f64 / 3.0)));
        }
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("params"), "{json}");
        assert_eq!(serde_json::from_str::<FallbackForecaster>(&json).unwrap(), f);
        // A checkpoint written while states carried their parameters restores to the same state.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old["params"] = serde_json::to_value(FallbackParams::default()).unwrap();
        assert_eq!(serde_json::from_value::<FallbackForecaster>(old).unwrap(), f);
        // The same state under a different configuration behaves by that configuration: a
        // reading 9 degC off is learnt from under the default gate (8 sigma, at least 8 degC)
        // and held back as a suspect under a tighter one.
        let tight = Tuning::new(
            &FallbackParams {
                outlier_min_c: 2.0,
                outlier_sigma: 1.0,
                ..FallbackParams::default()
            },
            0.9,
        );
        let (mut a, mut b) = (f.clone(), f.clone());
        let hour = rec(30, None).hour_index();
        let jump = rec(30, Some(f.level() + f.diurnal(hour) + 9.0));
        a.observe(&tune(0.9), &jump);
        b.observe(&tight, &jump);
        assert_eq!(a.origin().map(|o| o.0), Some(hour), "learnt from under the default gate");
        assert_eq!(b.origin().map(|o| o.0), Some(hour - 1), "held back under the tight gate");
    }

    #[test]
    fn phi_powers_are_powi() {
        for phi in [0.0f64, 0.5, 0.93, 0.97, 1.0, 0.123_456_789, 0.93] {
            for k in [-3i64, 0, 1, 2, 23, 24, 25, 47, 63, 64, 65, 1000, 10_000, i64::from(i32::MAX) + 5] {
                let want = phi.powi(k.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32);
                let t = Tuning::new(
                    &FallbackParams {
                        phi,
                        ..FallbackParams::default()
                    },
                    0.9,
                );
                assert_eq!(phi_pow(phi, &t.powers, k).to_bits(), want.to_bits(), "phi {phi} k {k}");
            }
        }
    }

    #[test]
    fn first_record_gives_persistence_with_wide_prior_intervals() {
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        let out = f.observe(&tune(0.9), &rec(0, Some(12.5)));
        assert_eq!(out.points.len(), LEADS);
        assert!(out.expected.is_none() && !out.warm);
        for (i, p) in out.points.iter().enumerate() {
            assert_eq!(p.lead_hours, i as u32 + 1);
            assert_eq!(p.valid_at, rec(i as i64 + 1, None).window_end);
            assert!((p.temperature.unwrap() - 12.5).abs() < 1e-4);
        }
        let w = widths(&out);
        assert!(w[0] > 6.0, "prior lead-1 width {} should be wide (2 sigma * 1.645 * 2)", w[0]);
        assert!(w.windows(2).all(|x| x[1] > x[0]), "prior intervals widen with lead: {w:?}");
    }

    #[test]
    fn station_without_usable_temperature_gives_empty_points() {
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        for h in 0..3 {
            let out = f.observe(&tune(0.9), &rec(h, None));
            assert!(out
                .points
                .iter()
                .all(|p| p.temperature.is_none() && p.lower.is_none() && p.upper.is_none()));
            assert!(out.expected.is_none());
        }
        let implausible = f.observe(&tune(0.9), &rec(3, Some(75.0)));
        assert!(implausible.points[0].temperature.is_none(), "75 degC is never learned from");
    }

    #[test]
    fn missing_or_implausible_temperature_forecasts_from_the_last_origin() {
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        for h in 0..200 {
            f.observe(&tune(0.9), &rec(h, Some(synthetic(h))));
        }
        let before = f.observe(&tune(0.9), &rec(200, Some(synthetic(200))));
        let level = f.level;
        let mut glitch = rec(201, Some(9.0));
        glitch.temperature_max = Some(80.0); // a glitching sample makes the whole window unusable
        for (h, r) in [(201, glitch), (202, rec(202, None))] {
            let out = f.observe(&tune(0.9), &r);
            let shift = (h - 200) as usize;
            assert_eq!(f.level, level, "nothing learned from hour {h}");
            for k in 0..LEADS - shift {
                let (a, b) = (&out.points[k], &before.points[k + shift]);
                assert_eq!(a.valid_at, b.valid_at);
                assert!(
                    (a.temperature.unwrap() - b.temperature.unwrap()).abs() < 1e-9,
                    "same origin, same forecast"
                );
                assert!((a.upper.unwrap() - a.lower.unwrap()) - (b.upper.unwrap() - b.lower.unwrap()) > -1e-9);
            }
            let widest = widths(&out)[LEADS - 1];
            assert!(widest > widths(&before)[LEADS - 1], "lead beyond 24 h is wider");
            assert_eq!(out.expected.unwrap().lead_hours, shift as u32);
        }
    }

    #[test]
    fn learns_the_diurnal_cycle_and_calibrates_intervals() {
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        let (mut inside, mut total, mut abs_err) = (0, 0, 0.0);
        let mut pending: Vec<(i64, f64, f64, f64)> = Vec::new();
        for h in 0..24 * 60 {
            let t = synthetic(h);
            for &(_, fc, lo, hi) in pending.iter().filter(|p| p.0 == h) {
                if h > 24 * 20 {
                    total += 1;
                    inside += usize::from(lo <= t && t <= hi);
                    abs_err += (t - fc).abs();
                }
            }
            pending.retain(|p| p.0 > h);
            let out = f.observe(&tune(0.9), &rec(h, Some(t)));
            for p in &out.points {
                pending.push((
                    h + i64::from(p.lead_hours),
                    p.temperature.unwrap(),
                    p.lower.unwrap(),
                    p.upper.unwrap(),
                ));
            }
            if h == 24 * 60 - 1 {
                assert!(out.warm);
                let w = widths(&out);
                assert!(w[LEADS - 1] > w[0], "intervals widen with lead: {w:?}");
            }
        }
        let coverage = inside as f64 / total as f64;
        assert!((0.85..=0.95).contains(&coverage), "coverage {coverage}");
        assert!(
            abs_err / (total as f64) < 1.5,
            "MAE {} on a learnable cycle",
            abs_err / total as f64
        );
    }

    #[test]
    fn gaps_never_score_stale_ring_slots() {
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        for h in 0..48 {
            f.observe(&tune(0.9), &rec(h, Some(synthetic(h))));
        }
        let n = f.n_err;
        let out = f.observe(&tune(0.9), &rec(50, Some(synthetic(50)))); // hours 48, 49 missing
        assert_eq!(out.expected.unwrap().lead_hours, 3);
        assert_eq!(f.n_err[0], n[0], "no origin 1 h back");
        assert_eq!(f.n_err[1], n[1], "no origin 2 h back");
        assert_eq!(f.n_err[2], n[2] + 1);
        let out = f.observe(&tune(0.9), &rec(150, Some(20.0))); // four days missing
        assert!(out.expected.is_none(), "no expectation from an origin older than 24 h");
        let anchored = f64::from(f.level) + f64::from(f.diurnal[hod(150)]);
        assert!((anchored - 20.0).abs() < 1e-3, "level re-anchored after the outage: {anchored}");
    }

    #[test]
    fn glitch_is_held_back_and_a_real_shift_is_accepted() {
        let mut f = FallbackForecaster::new(&FallbackParams::default());
        for h in 0..300 {
            f.observe(&tune(0.9), &rec(h, Some(14.0 + 0.1 * ((h % 3) as f64))));
        }
        let glitch = f.observe(&tune(0.9), &rec(300, Some(-10.5)));
        assert!((glitch.expected.unwrap().mean - 14.0).abs() < 0.5);
        assert!(
            (glitch.points[0].temperature.unwrap() - 14.0).abs() < 0.5,
            "glitch not used as origin"
        );
        let after = f.observe(&tune(0.9), &rec(301, Some(14.0)));
        assert!((after.expected.unwrap().mean - 14.0).abs() < 0.5 && f.suspect.is_none());
        f.observe(&tune(0.9), &rec(302, Some(30.0)));
        let confirmed = f.observe(&tune(0.9), &rec(303, Some(30.5)));
        assert!(
            confirmed.points[0].temperature.unwrap() > 28.0,
            "confirmed shift is accepted: {confirmed:?}"
        );
    }

    #[test]
    fn state_is_small_serialisable_and_robust() {
        let size = std::mem::size_of::<FallbackForecaster>();
        println!("size_of::<FallbackForecaster>() = {size} bytes");
        assert!(size <= 1024);
        let mut f = FallbackForecaster::new(&FallbackParams {
            phi: f64::NAN,
            ..FallbackParams::default()
        });
        for h in 0..30 {
            f.observe(&tune(f64::NAN), &rec(h, Some(synthetic(h))));
        }
        let json = serde_json::to_string(&f).unwrap();
        let g: FallbackForecaster = serde_json::from_str(&json).unwrap();
        assert_eq!(f, g);
        let mut far = rec(0, Some(1.0));
        far.window_end = DateTime::<Utc>::MAX_UTC;
        let out = f.observe(&tune(2.0), &far);
        assert_eq!(out.points.len(), LEADS);
        assert!(out.points.iter().all(|p| p.temperature.unwrap().is_finite()));
        let partial: FallbackParams = serde_json::from_str(r#"{"phi": 0.9}"#).unwrap();
        assert_eq!(partial.level_alpha, FallbackParams::default().level_alpha);
    }

    #[test]
    fn lead_times_are_chronos_hour_additions() {
        let check = |t: DateTime<Utc>| {
            let lt = LeadTimes::new(t);
            for lead in 1..=LEADS as u32 {
                let want = t.checked_add_signed(Duration::hours(i64::from(lead))).unwrap_or(t);
                assert_eq!(lt.at(lead), want, "{t:?} + {lead} h");
            }
        };
        for t in crate::utc_json::random_times(3000) {
            check(t);
        }
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        check(leap);
        check(DateTime::<Utc>::MAX_UTC);
        check(DateTime::<Utc>::MAX_UTC - Duration::hours(5));
        check(DateTime::<Utc>::MIN_UTC);
        check(
            NaiveDate::from_ymd_opt(2000, 2, 28)
                .unwrap()
                .and_hms_opt(23, 0, 0)
                .unwrap()
                .and_utc(),
        );
    }
}
