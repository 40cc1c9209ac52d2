//! Message contracts: the hourly feature record read from `weather-features` and the prediction
//! written to `weather-predictions`, plus the validation that decides what goes to the DLQ.
//!
//! ```text
//!   bytes ──FeatureRecord::parse──┬── Ok(FeatureRecord) ──> forecast / anomaly operators ──> Prediction
//!                                 └── Err(Rejection)   ──> weather-features-dlq (original bytes + reason)
//! ```
//!
//! Validation rejects only what cannot be a measurement at all (broken structure, wrong types,
//! values that violate physics or the record's own invariants: temperature below absolute zero,
//! negative wind or precipitation, `min > max`). Values that are possible but implausible for a
//! real station (a 468 m/s wind, 130 % humidity) are *not* rejected here: they reach the anomaly
//! operator, which flags them with a reason, and the forecaster ignores them.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Number of hourly forecast leads in every prediction.
pub const LEADS: usize = 24;

/// One hourly (by default) window of features for one station. Units: degC, %, hPa, m/s, mm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureRecord {
    pub station_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::utc_json::deserialize_opt"
    )]
    pub window_start: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "crate::utc_json::deserialize")]
    pub window_end: DateTime<Utc>,
    pub count: u64,
    #[serde(default)]
    pub temperature_mean: Option<f64>,
    #[serde(default)]
    pub temperature_min: Option<f64>,
    #[serde(default)]
    pub temperature_max: Option<f64>,
    #[serde(default)]
    pub temperature_std: Option<f64>,
    #[serde(default)]
    pub humidity_mean: Option<f64>,
    #[serde(default)]
    pub pressure_mean: Option<f64>,
    #[serde(default)]
    pub wind_speed_mean: Option<f64>,
    #[serde(default)]
    pub wind_speed_max: Option<f64>,
    #[serde(default)]
    pub precipitation_sum: Option<f64>,
}

/// Why an input message was refused. `kind` is a stable machine-readable code (used as a metrics
/// label and DLQ header); `detail` is for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub kind: RejectKind,
    pub detail: String,
}

/// Stable codes for rejections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// Not UTF-8 JSON, or not a JSON object.
    NotJson,
    /// A required field (station_id, window_end, count) is absent or null.
    MissingField,
    /// A field has the wrong JSON type or an unparseable timestamp.
    WrongType,
    /// A value that no real measurement can have.
    Impossible,
    /// A window older than, or equal to, one already processed for the station.
    StaleWindow,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::NotJson => "not_json",
            RejectKind::MissingField => "missing_field",
            RejectKind::WrongType => "wrong_type",
            RejectKind::Impossible => "impossible_value",
            RejectKind::StaleWindow => "stale_window",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl Rejection {
    pub fn new(kind: RejectKind, detail: impl Into<String>) -> Self {
        Rejection {
            kind,
            detail: detail.into(),
        }
    }
}

const REQUIRED: [&str; 3] = ["station_id", "window_end", "count"];
const NUMERIC: [&str; 9] = [
    "temperature_mean",
    "temperature_min",
    "temperature_max",
    "temperature_std",
    "humidity_mean",
    "pressure_mean",
    "wind_speed_mean",
    "wind_speed_max",
    "precipitation_sum",
];
/// Longest accepted station id, in bytes.
pub const MAX_STATION_ID: usize = 64;
/// Longest accepted window.
const MAX_WINDOW_HOURS: i64 = 24;

impl FeatureRecord {
    /// Parses and validates one message payload. Never panics. The plain form of the record is
    /// read by [`feature_json::read`](crate::feature_json::read); anything else by serde_json,
    /// which decides what is refused and why (the values are the same either way).
    pub fn parse(bytes: &[u8]) -> Result<FeatureRecord, Rejection> {
        let record = match crate::feature_json::read(bytes) {
            Some(record) => record,
            None => serde_json::from_slice::<FeatureRecord>(bytes).map_err(|err| explain_parse_error(bytes, &err))?,
        };
        record.validate()?;
        Ok(record)
    }

    /// Checks the record's physics and invariants (see the module doc for what is refused).
    pub fn validate(&self) -> Result<(), Rejection> {
        let impossible = |d: String| Err(Rejection::new(RejectKind::Impossible, d));
        if self.station_id.trim().is_empty() {
            return Err(Rejection::new(RejectKind::MissingField, "station_id is empty"));
        }
        if self.station_id.len() > MAX_STATION_ID || self.station_id.chars().any(char::is_control) {
            return Err(Rejection::new(
                RejectKind::WrongType,
                format!("station_id must be at most {MAX_STATION_ID} bytes without control characters"),
            ));
        }
        if let Some(start) = self.window_start {
            if start >= self.window_end {
                return impossible(format!("window_start {start} is not before window_end {}", self.window_end));
            }
            if self.window_end - start > Duration::hours(MAX_WINDOW_HOURS) {
                return impossible(format!("window longer than {MAX_WINDOW_HOURS} h"));
            }
        }
        for (name, value) in self.numeric_fields() {
            if let Some(v) = value {
                if !v.is_finite() {
                    return impossible(format!("{name} is not a finite number"));
                }
            }
        }
        let below = |name: &str, v: Option<f64>, floor: f64, why: &str| match v {
            Some(x) if x < floor => Some(format!("{name} = {x} is below {floor} ({why})")),
            _ => None,
        };
        let checks = [
            below("temperature_mean", self.temperature_mean, -273.15, "absolute zero"),
            below("temperature_min", self.temperature_min, -273.15, "absolute zero"),
            below("temperature_max", self.temperature_max, -273.15, "absolute zero"),
            below("temperature_std", self.temperature_std, 0.0, "a standard deviation"),
            below("humidity_mean", self.humidity_mean, 0.0, "relative humidity"),
            below("wind_speed_mean", self.wind_speed_mean, 0.0, "a speed"),
            below("wind_speed_max", self.wind_speed_max, 0.0, "a speed"),
            below("precipitation_sum", self.precipitation_sum, 0.0, "an amount"),
        ];
        if let Some(detail) = checks.into_iter().flatten().next() {
            return impossible(detail);
        }
        if let Some(p) = self.pressure_mean {
            if p <= 0.0 {
                return impossible(format!("pressure_mean = {p} hPa is not positive"));
            }
        }
        const TOL: f64 = 1e-6;
        if let (Some(lo), Some(hi)) = (self.temperature_min, self.temperature_max) {
            if lo > hi + TOL {
                return impossible(format!("temperature_min {lo} > temperature_max {hi}"));
            }
            if let Some(m) = self.temperature_mean {
                if m < lo - TOL || m > hi + TOL {
                    return impossible(format!("temperature_mean {m} outside [min {lo}, max {hi}]"));
                }
            }
        }
        if let (Some(m), Some(x)) = (self.wind_speed_mean, self.wind_speed_max) {
            if m > x + TOL {
                return impossible(format!("wind_speed_mean {m} > wind_speed_max {x}"));
            }
        }
        Ok(())
    }

    /// A record from its parts, the nine numbers in the order of [`numeric_fields`](Self::numeric_fields)
    /// (the readers that do not go through serde's derive build it this way).
    pub fn from_parts(
        station_id: String,
        window_start: Option<DateTime<Utc>>,
        window_end: DateTime<Utc>,
        count: u64,
        numbers: [Option<f64>; 9],
    ) -> FeatureRecord {
        let [temperature_mean, temperature_min, temperature_max, temperature_std, humidity_mean, pressure_mean, wind_speed_mean, wind_speed_max, precipitation_sum] =
            numbers;
        FeatureRecord {
            station_id,
            window_start,
            window_end,
            count,
            temperature_mean,
            temperature_min,
            temperature_max,
            temperature_std,
            humidity_mean,
            pressure_mean,
            wind_speed_mean,
            wind_speed_max,
            precipitation_sum,
        }
    }

    /// The nine optional numeric fields, by contract name.
    pub fn numeric_fields(&self) -> [(&'static str, Option<f64>); 9] {
        [
            (NUMERIC[0], self.temperature_mean),
            (NUMERIC[1], self.temperature_min),
            (NUMERIC[2], self.temperature_max),
            (NUMERIC[3], self.temperature_std),
            (NUMERIC[4], self.humidity_mean),
            (NUMERIC[5], self.pressure_mean),
            (NUMERIC[6], self.wind_speed_mean),
            (NUMERIC[7], self.wind_speed_max),
            (NUMERIC[8], self.precipitation_sum),
        ]
    }

    /// Window end as whole hours since the Unix epoch (floor).
    pub fn hour_index(&self) -> i64 {
        self.window_end.timestamp().div_euclid(3600)
    }
}

/// Slow path, only for refused messages: say which field is wrong and how.
fn explain_parse_error(bytes: &[u8], err: &serde_json::Error) -> Rejection {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Rejection::new(RejectKind::NotJson, format!("not valid JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return Rejection::new(RejectKind::NotJson, "message is JSON but not an object");
    };
    for name in REQUIRED {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => {
                return Rejection::new(RejectKind::MissingField, format!("required field {name} is missing"))
            }
            Some(_) => {}
        }
    }
    let expect = |name: &str, what: &str, got: &serde_json::Value| {
        Rejection::new(RejectKind::WrongType, format!("{name}: expected {what}, got {}", type_name(got)))
    };
    if let Some(v) = obj.get("station_id").filter(|v| !v.is_string()) {
        return expect("station_id", "a string", v);
    }
    for name in ["window_start", "window_end"] {
        match obj.get(name) {
            Some(serde_json::Value::String(s)) => {
                if DateTime::parse_from_rfc3339(s).is_err() {
                    return Rejection::new(RejectKind::WrongType, format!("{name}: {s:?} is not an RFC 3339 timestamp"));
                }
            }
            Some(serde_json::Value::Null) | None => {}
            Some(v) => return expect(name, "an RFC 3339 timestamp string", v),
        }
    }
    if let Some(v) = obj.get("count").filter(|v| !v.is_u64()) {
        return expect("count", "a non-negative integer", v);
    }
    for name in NUMERIC {
        if let Some(v) = obj.get(name).filter(|v| !(v.is_number() || v.is_null())) {
            return expect(name, "a number or null", v);
        }
    }
    Rejection::new(RejectKind::WrongType, err.to_string())
}

/// How a JSON value appears in a rejection reason (strings shortened).
pub(crate) fn type_name(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("boolean {b}"),
        serde_json::Value::Number(n) => format!("number {n}"),
        serde_json::Value::String(s) => format!("string {:?}", truncate(s, 40)),
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

/// The first `n` characters of `s`.
pub(crate) fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Which models produced a prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelNames {
    pub forecast: String,
    pub anomaly: String,
}

/// One forecast lead. `temperature` forecasts the `temperature_mean` of the hour window ending at
/// `valid_at`; `lower`/`upper` bound it with the prediction's `interval` probability. All three
/// are null only while the station has never reported a usable temperature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    pub lead_hours: u32,
    #[serde(serialize_with = "crate::utc_json::serialize")]
    pub valid_at: DateTime<Utc>,
    pub temperature: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// Anomaly assessment of the input window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// In [0, 1]; `is_anomaly` is `score >= 0.5`.
    pub score: f64,
    pub is_anomaly: bool,
    pub reasons: Vec<String>,
}

/// Where an output came from: the input message it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub partition: i32,
    pub offset: i64,
}

/// One prediction per accepted feature record, written to `weather-predictions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub station_id: String,
    #[serde(serialize_with = "crate::utc_json::serialize")]
    pub window_end: DateTime<Utc>,
    /// When the prediction was completed: the wall-clock time its batch (at most one release
    /// chunk, 128 records) was taken up by the anomaly scorer.
    #[serde(serialize_with = "crate::utc_json::serialize")]
    pub issued_at: DateTime<Utc>,
    pub model: ModelNames,
    pub interval: f64,
    pub forecast: Vec<ForecastPoint>,
    pub anomaly: Anomaly,
    /// The observed temperature_mean of the input window (echoed for consumers and monitoring).
    #[serde(default)]
    pub observed_temperature: Option<f64>,
    /// Input position in `weather-features` this prediction answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePosition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"station_id": "JFK", "window_start": "2013-10-01T11:00:00Z", "window_end": "2013-10-01T12:00:00Z",
 "count": 1, "temperature_mean": 13.9, "temperature_min": 13.9, "temperature_max": 13.9, "temperature_std": 0.0,
 "humidity_mean": 71.0, "pressure_mean": 1018.2, "wind_speed_mean": 4.1, "wind_speed_max": 4.1, "precipitation_sum": 0.0, "extra": [1,2]}"#;

    #[test]
    fn parses_contract_example_and_ignores_unknown_fields() {
        let r = FeatureRecord::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(r.station_id, "JFK");
        assert_eq!(r.temperature_mean, Some(13.9));
        assert_eq!(r.window_end.to_rfc3339(), "2013-10-01T12:00:00+00:00");
        assert_eq!(r.hour_index() * 3600, r.window_end.timestamp());
    }

    #[test]
    fn nulls_are_missing_values() {
        let r =
            FeatureRecord::parse(br#"{"station_id":"A","window_end":"2013-10-01T12:00:00Z","count":0,"temperature_mean":null}"#).unwrap();
        assert_eq!(r.temperature_mean, None);
        assert_eq!(r.pressure_mean, None);
    }

    fn kind(bytes: &str) -> (RejectKind, String) {
        let e = FeatureRecord::parse(bytes.as_bytes()).unwrap_err();
        (e.kind, e.detail)
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(kind("not json").0, RejectKind::NotJson);
        assert_eq!(kind("[1,2]").0, RejectKind::NotJson);
        assert_eq!(
            kind(r#"{"window_end":"2013-10-01T12:00:00Z","count":1}"#),
            (RejectKind::MissingField, "required field station_id is missing".into())
        );
        assert_eq!(kind(r#"{"station_id":"A","count":1}"#).0, RejectKind::MissingField);
        let (k, d) = kind(r#"{"station_id":"A","window_end":"2013-10-01T12:00:00Z","count":1,"temperature_mean":"warm"}"#);
        assert_eq!(k, RejectKind::WrongType);
        assert!(d.contains("temperature_mean") && d.contains("warm"), "{d}");
        let (k, d) = kind(r#"{"station_id":"A","window_end":"yesterday","count":1}"#);
        assert_eq!(k, RejectKind::WrongType);
        assert!(d.contains("window_end"), "{d}");
        assert_eq!(
            kind(r#"{"station_id":"A","window_end":"2013-10-01T12:00:00Z","count":-1}"#).0,
            RejectKind::WrongType
        );
        assert_eq!(
            kind(r#"{"station_id":7,"window_end":"2013-10-01T12:00:00Z","count":1}"#).0,
            RejectKind::WrongType
        );
    }

    #[test]
    fn physically_impossible_values_are_refused() {
        let base = |extra: &str| format!(r#"{{"station_id":"A","window_end":"2013-10-01T12:00:00Z","count":1{extra}}}"#);
        for extra in [
            r#","temperature_mean":-300"#,
            r#","humidity_mean":-5"#,
            r#","wind_speed_mean":-1"#,
            r#","precipitation_sum":-0.1"#,
            r#","pressure_mean":0"#,
            r#","temperature_min":5,"temperature_max":1"#,
            r#","temperature_min":0,"temperature_max":1,"temperature_mean":4"#,
            r#","wind_speed_mean":5,"wind_speed_max":1"#,
            r#","window_start":"2013-10-01T12:00:00Z""#,
            r#","temperature_std":-1"#,
        ] {
            assert_eq!(kind(&base(extra)).0, RejectKind::Impossible, "{extra}");
        }
        // Implausible but possible sensor readings are accepted (the anomaly operator flags them).
        for extra in [
            r#","wind_speed_mean":468.5"#,
            r#","humidity_mean":100.5"#,
            r#","pressure_mean":955.0"#,
        ] {
            assert!(FeatureRecord::parse(base(extra).as_bytes()).is_ok(), "{extra}");
        }
    }

    #[test]
    fn prediction_serialises_contract_field_names() {
        let t = DateTime::parse_from_rfc3339("2013-10-01T12:00:00Z").unwrap().with_timezone(&Utc);
        let p = Prediction {
            station_id: "JFK".into(),
            window_end: t,
            issued_at: t,
            model: ModelNames {
                forecast: "f".into(),
                anomaly: "a".into(),
            },
            interval: 0.9,
            forecast: vec![ForecastPoint {
                lead_hours: 1,
                valid_at: t + Duration::hours(1),
                temperature: Some(1.0),
                lower: Some(0.0),
                upper: Some(2.0),
            }],
            anomaly: Anomaly::default(),
            observed_temperature: None,
            source: None,
        };
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(v["window_end"], "2013-10-01T12:00:00Z");
        assert_eq!(v["forecast"][0]["valid_at"], "2013-10-01T13:00:00Z");
        assert_eq!(v["forecast"][0]["lead_hours"], 1);
        assert_eq!(v["model"]["forecast"], "f");
        assert_eq!(v["anomaly"]["is_anomaly"], false);
    }
}
