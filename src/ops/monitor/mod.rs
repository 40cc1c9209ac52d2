//! Model-performance monitoring: the records and maths of the monitoring dataflow
//! (`dataflows/monitoring.rs`), which verifies every published prediction against the actual
//! feature records that arrive 1 to 24 hours later.
//!
//! ```text
//!   weather-predictions ─decode─> Event::Predicted ─┬─> WindowVerification (per station) ─> points (station, valid_at) ─┐
//!   weather-features ────decode─> Event::Observed ──┤     rolling window, +1 / −1 updates    actuals (station, valid_at) ─┤
//!                                                   │                                   differential join on (station, valid_at)
//!                                                   │                                       └─> Stats per (station, lead) and ("", lead)
//!                                                   └─> Board (per station) <──────────────────── count_total (incremental sums)
//!                                                         └─> Published: metrics, skill alerts ─> weather-model-metrics
//!                                                             + latest forecast, actuals, anomalies ─> every process's View (HTTP)
//! ```
//!
//! Errors are summed in integer micro-degrees so that differential's additions and retractions
//! are exact (a float sum would not return to zero when a pair leaves the window).

pub mod board;
pub mod stage;
pub mod window;
pub mod wire;

use chrono::{DateTime, Utc};
use differential_dataflow::difference::{IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

use crate::contract::{ForecastPoint, LEADS};
use crate::contract::{ModelNames, Prediction};
use crate::operators::keyed::StationRecord;
pub use wire::Wire;

/// The key of overall (all-station) aggregates; station ids are never empty.
pub const OVERALL: &str = "";

/// Settings of the monitoring stage (`[monitoring]`).
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorParams {
    /// Rolling window: pairs whose `valid_at` is within this many hours of the station's newest
    /// verified time count.
    pub window_hours: i64,
    /// Least time between two publications of a station's metrics (0: at every epoch).
    pub publish_interval_ms: u64,
    /// Pairs with a persistence reference a station needs before a skill alert can fire.
    pub min_pairs: i64,
    /// Actual temperatures kept per station for the dashboard chart (hours before the newest).
    pub chart_hours: i64,
}

impl Default for MonitorParams {
    fn default() -> Self {
        MonitorParams {
            window_hours: 168,
            publish_interval_ms: 5000,
            min_pairs: 240,
            chart_hours: 48,
        }
    }
}

/// A temperature in integer micro-degrees Celsius.
pub fn micro(t: f64) -> i64 {
    (t * 1e6).round() as i64
}

/// One actual: a feature record's station, window end and mean temperature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Station.
    pub station_id: String,
    /// End of the hour window.
    pub window_end: DateTime<Utc>,
    /// `temperature_mean` (`None`: the record moves the station's clock but verifies nothing).
    pub temperature: Option<f64>,
}

/// What the monitoring dataflow reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A prediction read from the predictions topic.
    Predicted(Box<Wire<Prediction>>),
    /// A feature record read from the features topic.
    Observed(Observation),
}

/// An [`Event`] and its input position, for a deterministic order within an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    /// The event.
    pub event: Event,
    /// Which input: 0 predictions, 1 features.
    pub input: u8,
    /// Partition in that input.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
}

impl Event {
    /// A prediction event.
    pub fn predicted(p: Prediction) -> Event {
        Event::Predicted(Box::new(Wire(p)))
    }

    /// The station.
    pub fn station(&self) -> &str {
        match self {
            Event::Predicted(p) => &p.station_id,
            Event::Observed(o) => &o.station_id,
        }
    }
}

impl StationRecord for Tracked {
    fn station(&self) -> &str {
        self.event.station()
    }
    fn position(&self) -> (i32, i64) {
        (self.partition.saturating_mul(2).saturating_add(self.input as i32), self.offset)
    }
}

/// A forecast point waiting for (or joined with) its actual, in micro-degrees.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PointVal {
    /// Lead in hours (1..=24).
    pub lead: u32,
    /// Forecast origin (unix s).
    pub origin: i64,
    /// Forecast.
    pub forecast: i64,
    /// Interval bounds, when given.
    pub interval: Option<(i64, i64)>,
    /// Persistence forecast: the temperature observed at the origin.
    pub persistence: Option<i64>,
}

/// Sums over verification pairs; a differential difference type, so a pair entering the rolling
/// window adds it and leaving subtracts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stats {
    /// Pairs (forecast, actual).
    pub pairs: i64,
    /// Sum of |forecast − actual| (µ°C).
    pub abs_err: i64,
    /// Pairs with an interval.
    pub with_interval: i64,
    /// Of those, pairs whose actual lies within the interval.
    pub covered: i64,
    /// Pairs with a persistence forecast.
    pub with_persistence: i64,
    /// Sum of |forecast − actual| over those pairs (µ°C).
    pub abs_err_vs_persistence: i64,
    /// Sum of |persistence − actual| over those pairs (µ°C).
    pub persistence_abs_err: i64,
}

impl Stats {
    /// The sums of one pair.
    pub fn of(p: &PointVal, actual: i64) -> Stats {
        let err = (p.forecast - actual).abs();
        let covered = p.interval.map(|(lo, hi)| lo <= actual && actual <= hi);
        let pers = p.persistence.map(|x| (x - actual).abs());
        Stats {
            pairs: 1,
            abs_err: err,
            with_interval: covered.is_some() as i64,
            covered: (covered == Some(true)) as i64,
            with_persistence: pers.is_some() as i64,
            abs_err_vs_persistence: if pers.is_some() { err } else { 0 },
            persistence_abs_err: pers.unwrap_or(0),
        }
    }

    fn scale(mut self, k: i64) -> Stats {
        self.pairs *= k;
        self.abs_err *= k;
        self.with_interval *= k;
        self.covered *= k;
        self.with_persistence *= k;
        self.abs_err_vs_persistence *= k;
        self.persistence_abs_err *= k;
        self
    }

    fn add(&mut self, o: &Stats) {
        self.pairs += o.pairs;
        self.abs_err += o.abs_err;
        self.with_interval += o.with_interval;
        self.covered += o.covered;
        self.with_persistence += o.with_persistence;
        self.abs_err_vs_persistence += o.abs_err_vs_persistence;
        self.persistence_abs_err += o.persistence_abs_err;
    }
}

impl IsZero for Stats {
    fn is_zero(&self) -> bool {
        *self == Stats::default()
    }
}

impl Semigroup for Stats {
    fn plus_equals(&mut self, rhs: &Self) {
        self.add(rhs)
    }
}

impl Monoid for Stats {
    fn zero() -> Self {
        Stats::default()
    }
}

impl differential_dataflow::difference::Abelian for Stats {
    fn negate(&mut self) {
        *self = self.scale(-1);
    }
}

impl Multiply<isize> for Stats {
    type Output = Stats;
    fn multiply(self, rhs: &isize) -> Stats {
        self.scale(*rhs as i64)
    }
}

/// Verification of one lead (or of all leads together).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeadMetrics {
    /// Lead in hours (0 for all leads together).
    pub lead_hours: u32,
    /// Pairs in the rolling window.
    pub pairs: i64,
    /// Mean absolute error (°C).
    pub mae: Option<f64>,
    /// Share of actuals inside the forecast interval.
    pub coverage: Option<f64>,
    /// Mean absolute error of persistence on the pairs that have one (°C).
    pub persistence_mae: Option<f64>,
    /// Skill against persistence: 1 − model error / persistence error, on the same pairs.
    pub skill: Option<f64>,
}

impl LeadMetrics {
    /// Metrics from sums.
    pub fn from_stats(lead_hours: u32, s: &Stats) -> Self {
        let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
        LeadMetrics {
            lead_hours,
            pairs: s.pairs,
            mae: ratio(s.abs_err, s.pairs).map(|x| x / 1e6),
            coverage: ratio(s.covered, s.with_interval),
            persistence_mae: ratio(s.persistence_abs_err, s.with_persistence).map(|x| x / 1e6),
            skill: (s.persistence_abs_err > 0).then(|| 1.0 - s.abs_err_vs_persistence as f64 / s.persistence_abs_err as f64),
        }
    }
}

/// Verification of one station or of all stations: every lead and all leads together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeMetrics {
    /// All leads together (`lead_hours` 0).
    pub all: LeadMetrics,
    /// Leads 1..=24.
    pub leads: Vec<LeadMetrics>,
}

impl ScopeMetrics {
    /// Metrics from the sums of leads 1..=24 (`stats[i]` is lead `i + 1`).
    pub fn from_leads(stats: &[Stats; LEADS]) -> Self {
        let mut total = Stats::default();
        for s in stats {
            total.add(s);
        }
        ScopeMetrics {
            all: LeadMetrics::from_stats(0, &total),
            leads: stats
                .iter()
                .enumerate()
                .map(|(i, s)| LeadMetrics::from_stats(i as u32 + 1, s))
                .collect(),
        }
    }
}

/// A station's rolling verification, published to `weather-model-metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StationMetrics {
    /// Station.
    pub station_id: String,
    /// Newest actual of the station seen so far.
    pub as_of: Option<DateTime<Utc>>,
    /// Rolling window in hours.
    pub window_hours: i64,
    /// Whether the station is currently below persistence (an alert was raised).
    pub below_persistence: bool,
    /// The verification.
    pub metrics: ScopeMetrics,
}

/// The rolling verification over all stations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverallMetrics {
    /// Rolling window in hours (per station).
    pub window_hours: i64,
    /// The verification.
    pub metrics: ScopeMetrics,
}

/// A station's skill crossed persistence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkillAlert {
    /// Station.
    pub station_id: String,
    /// `below_persistence` when raised, `recovered` when the skill is back at or above 0.
    pub state: AlertState,
    /// Skill against persistence, all leads.
    pub skill: f64,
    /// Model MAE on the pairs with a persistence reference (°C).
    pub mae: f64,
    /// Persistence MAE on the same pairs (°C).
    pub persistence_mae: f64,
    /// Pairs with a persistence reference.
    pub pairs: i64,
    /// Newest actual of the station when it was raised.
    pub as_of: Option<DateTime<Utc>>,
}

/// State of a skill alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The model does worse than persistence.
    BelowPersistence,
    /// It does at least as well again.
    Recovered,
}

/// A forecast, reduced to what the dashboard draws.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastTrace {
    /// Origin (the input window's end).
    pub origin: DateTime<Utc>,
    /// Forecasting model.
    pub model: String,
    /// Probability of the interval.
    pub interval: f64,
    /// The 24 points.
    pub points: Vec<ForecastPoint>,
}

/// What the dashboard shows for one station.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StationSnapshot {
    /// Station.
    pub station_id: String,
    /// The newest prediction.
    pub latest: Option<Wire<Prediction>>,
    /// The forecast issued 24 hours before the newest one, drawn against the actuals.
    pub earlier: Option<ForecastTrace>,
    /// Actual temperatures of the last `chart_hours` (time, °C).
    pub actuals: Vec<(DateTime<Utc>, f64)>,
}

/// A flagged prediction, for the anomaly feed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyView {
    /// Station.
    pub station_id: String,
    /// The flagged window.
    pub window_end: DateTime<Utc>,
    /// Score in [0, 1].
    pub score: f64,
    /// Why.
    pub reasons: Vec<String>,
    /// The observed temperature.
    pub observed_temperature: Option<f64>,
    /// Models that made the prediction.
    pub model: ModelNames,
}

/// What the monitoring dataflow publishes. (Externally tagged: records cross process boundaries
/// in timely's binary encoding, which cannot decode internally tagged enums; the Kafka JSON gets
/// its `type` field from [`Published::kind`].)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Published {
    /// A station's verification (Kafka and views).
    StationMetrics(StationMetrics),
    /// All stations' verification (Kafka and views).
    OverallMetrics(OverallMetrics),
    /// A skill alert (Kafka and views).
    SkillAlert(SkillAlert),
    /// Chart data of a station (views only).
    Station(Box<StationSnapshot>),
    /// A flagged prediction (views only).
    Anomaly(AnomalyView),
}

impl Published {
    /// Whether the record goes to `weather-model-metrics` (the rest feeds the HTTP views only).
    pub fn to_kafka(&self) -> bool {
        matches!(
            self,
            Published::StationMetrics(_) | Published::OverallMetrics(_) | Published::SkillAlert(_)
        )
    }

    /// The record type: `station_metrics`, `overall_metrics`, `skill_alert`, `station`, `anomaly`.
    pub fn kind(&self) -> &'static str {
        match self {
            Published::StationMetrics(_) => "station_metrics",
            Published::OverallMetrics(_) => "overall_metrics",
            Published::SkillAlert(_) => "skill_alert",
            Published::Station(_) => "station",
            Published::Anomaly(_) => "anomaly",
        }
    }

    /// The record as JSON with its `type` first.
    pub fn to_json(&self) -> serde_json::Value {
        let inner = match self {
            Published::StationMetrics(x) => serde_json::to_value(x),
            Published::OverallMetrics(x) => serde_json::to_value(x),
            Published::SkillAlert(x) => serde_json::to_value(x),
            Published::Station(x) => serde_json::to_value(x),
            Published::Anomaly(x) => serde_json::to_value(x),
        };
        let mut out = serde_json::Map::new();
        out.insert("type".into(), self.kind().into());
        if let Ok(serde_json::Value::Object(fields)) = inner {
            out.extend(fields);
        }
        serde_json::Value::Object(out)
    }

    /// The Kafka key: the station, or `_overall`.
    pub fn key(&self) -> String {
        match self {
            Published::StationMetrics(m) => m.station_id.clone(),
            Published::SkillAlert(a) => a.station_id.clone(),
            Published::Station(s) => s.station_id.clone(),
            Published::Anomaly(a) => a.station_id.clone(),
            Published::OverallMetrics(_) => "_overall".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_pair_and_their_retraction_cancel_exactly() {
        let p = PointVal {
            lead: 3,
            origin: 0,
            forecast: micro(10.1),
            interval: Some((micro(9.0), micro(11.0))),
            persistence: Some(micro(12.3)),
        };
        let s = Stats::of(&p, micro(10.6));
        assert_eq!(s.abs_err, 500_000);
        assert_eq!((s.with_interval, s.covered), (1, 1));
        assert_eq!(s.persistence_abs_err, 1_700_000);
        let mut acc = s;
        acc.plus_equals(&s.multiply(&-1));
        assert!(acc.is_zero());
        let m = LeadMetrics::from_stats(3, &s);
        assert_eq!(m.mae, Some(0.5));
        assert!((m.skill.unwrap() - (1.0 - 0.5 / 1.7)).abs() < 1e-12);
        let outside = Stats::of(&p, micro(11.5));
        assert_eq!((outside.with_interval, outside.covered), (1, 0));
    }
}
