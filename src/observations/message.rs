//! The observation message contract of `weather-raw`: one JSON object per message, key =
//! `station_id`, in SI units (the [`Observation`] type, field for field).
//!
//! ```text
//!   producer: Observation ──encode──> {"station_id":"PAY","time":"2016-06-01T00:01:00Z","temperature":9.3,...}
//!                                                            │ weather-raw (key = station_id)
//!   features stage:      bytes ──parse──┬── Ok(Observation) ──> event-time windows
//!                                       └── Err(Rejection)  ──> weather-raw-dlq (original bytes + reason)
//! ```
//!
//! | field | unit | notes |
//! |---|---|---|
//! | `station_id` | | required, 1-64 bytes, no control characters |
//! | `time` | RFC 3339 | required; the instant the reading refers to (hour-ending sources: the end of the hour) |
//! | `temperature` | degC | may be null or absent |
//! | `humidity` | % relative humidity | may be null or absent |
//! | `pressure` | hPa | may be null or absent; station or sea level, as the station reports |
//! | `wind_speed` | m/s | may be null or absent |
//! | `precipitation` | mm since the station's previous reading | may be null or absent |
//!
//! Refused (kind in parentheses, as on the feature DLQ): not JSON or not an object (`not_json`);
//! `station_id` or `time` absent or null (`missing_field`); wrong JSON types, unparseable times,
//! numbers out of `f64` range (`wrong_type`); values no measurement can have: temperature below
//! absolute zero, negative humidity, wind or precipitation, pressure <= 0, a time further in the
//! future than the allowed horizon (`impossible_value`). Possible but implausible values (a
//! 130 % humidity, a 60 degC reading from a unit error) are accepted: the anomaly stage judges
//! them. Unknown extra fields are ignored.

use chrono::{DateTime, Utc};

use super::Observation;
use crate::contract::{truncate, type_name, RejectKind, Rejection, MAX_STATION_ID};

const NUMERIC: [&str; 5] = ["temperature", "humidity", "pressure", "wind_speed", "precipitation"];

/// Encodes an observation as its JSON message (never fails for finite or missing values;
/// non-finite values are written as null, as JSON has no NaN).
pub fn encode_observation(obs: &Observation) -> Vec<u8> {
    serde_json::to_vec(obs).unwrap_or_default()
}

/// Parses and validates one `weather-raw` message. `latest_allowed`, when given, is the latest
/// acceptable observation time (wall clock plus the configured horizon). Never panics.
pub fn parse_observation(bytes: &[u8], latest_allowed: Option<DateTime<Utc>>) -> Result<Observation, Rejection> {
    let obs = match serde_json::from_slice::<Observation>(bytes) {
        Ok(o) => o,
        Err(e) => return Err(explain(bytes, &e)),
    };
    validate_observation(&obs, latest_allowed)?;
    Ok(obs)
}

/// Checks an observation's station id and physics (see the module doc for what is refused).
pub fn validate_observation(obs: &Observation, latest_allowed: Option<DateTime<Utc>>) -> Result<(), Rejection> {
    if obs.station_id.trim().is_empty() {
        return Err(Rejection::new(RejectKind::MissingField, "station_id is empty"));
    }
    if obs.station_id.len() > MAX_STATION_ID || obs.station_id.chars().any(char::is_control) {
        return Err(Rejection::new(
            RejectKind::WrongType,
            format!("station_id must be at most {MAX_STATION_ID} bytes without control characters"),
        ));
    }
    let values = [obs.temperature, obs.humidity, obs.pressure, obs.wind_speed, obs.precipitation];
    for (name, v) in NUMERIC.iter().zip(values) {
        if v.is_some_and(|x| !x.is_finite()) {
            return Err(Rejection::new(RejectKind::Impossible, format!("{name} is not a finite number")));
        }
    }
    let impossible = |d: String| Err(Rejection::new(RejectKind::Impossible, d));
    if let Some(t) = obs.temperature.filter(|t| *t < -273.15) {
        return impossible(format!("temperature = {t} degC is below absolute zero"));
    }
    for (name, v) in [
        ("humidity", obs.humidity),
        ("wind_speed", obs.wind_speed),
        ("precipitation", obs.precipitation),
    ] {
        if let Some(x) = v.filter(|x| *x < 0.0) {
            return impossible(format!("{name} = {x} is negative"));
        }
    }
    if let Some(p) = obs.pressure.filter(|p| *p <= 0.0) {
        return impossible(format!("pressure = {p} hPa is not positive"));
    }
    if let Some(limit) = latest_allowed {
        if obs.time > limit {
            return impossible(format!(
                "time {} is after {limit}, the latest time accepted now (a clock fault would move the watermark into the future)",
                obs.time.to_rfc3339()
            ));
        }
    }
    Ok(())
}

/// Slow path, only for refused messages: say which field is wrong and how.
fn explain(bytes: &[u8], err: &serde_json::Error) -> Rejection {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Rejection::new(RejectKind::NotJson, format!("not valid JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return Rejection::new(RejectKind::NotJson, "message is JSON but not an object");
    };
    for name in ["station_id", "time"] {
        if obj.get(name).is_none_or(serde_json::Value::is_null) {
            return Rejection::new(RejectKind::MissingField, format!("required field {name} is missing"));
        }
    }
    let wrong = |name: &str, what: &str, got: &serde_json::Value| {
        Rejection::new(RejectKind::WrongType, format!("{name}: expected {what}, got {}", type_name(got)))
    };
    if let Some(v) = obj.get("station_id").filter(|v| !v.is_string()) {
        return wrong("station_id", "a string", v);
    }
    match obj.get("time") {
        Some(serde_json::Value::String(s)) if DateTime::parse_from_rfc3339(s).is_err() => {
            return Rejection::new(
                RejectKind::WrongType,
                format!("time: {:?} is not an RFC 3339 timestamp", truncate(s, 40)),
            );
        }
        Some(v) if !v.is_string() => return wrong("time", "an RFC 3339 timestamp string", v),
        _ => {}
    }
    for name in NUMERIC {
        if let Some(v) = obj.get(name).filter(|v| !(v.is_number() || v.is_null())) {
            return wrong(name, "a number or null", v);
        }
    }
    Rejection::new(RejectKind::WrongType, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let mut o = Observation::new("PAY", t("2016-06-01T00:01:00Z"));
        o.temperature = Some(9.3);
        o.humidity = Some(100.5);
        o.pressure = Some(958.0);
        let bytes = encode_observation(&o);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""time":"2016-06-01T00:01:00Z""#), "{text}");
        assert!(text.contains(r#""wind_speed":null"#), "{text}");
        assert_eq!(parse_observation(&bytes, None).unwrap(), o);
        let extra = br#"{"station_id":"A","time":"2016-06-01T02:00:00+02:00","temperature":1.5,"injected_fault":"spike"}"#;
        let p = parse_observation(extra, None).unwrap();
        assert_eq!((p.time, p.temperature, p.humidity), (t("2016-06-01T00:00:00Z"), Some(1.5), None));
    }

    fn kind(bytes: &str) -> (RejectKind, String) {
        let e = parse_observation(bytes.as_bytes(), Some(t("2030-01-01T00:00:00Z"))).unwrap_err();
        (e.kind, e.detail)
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(kind("not json").0, RejectKind::NotJson);
        assert_eq!(kind("[1]").0, RejectKind::NotJson);
        assert_eq!(kind(r#"{"time":"2016-06-01T00:00:00Z"}"#).1, "required field station_id is missing");
        assert_eq!(kind(r#"{"station_id":"A","time":null}"#).1, "required field time is missing");
        assert_eq!(kind(r#"{"station_id":"A","time":"yesterday"}"#).0, RejectKind::WrongType);
        assert_eq!(kind(r#"{"station_id":5,"time":"2016-06-01T00:00:00Z"}"#).0, RejectKind::WrongType);
        let (k, d) = kind(r#"{"station_id":"A","time":"2016-06-01T00:00:00Z","humidity":"wet"}"#);
        assert_eq!(k, RejectKind::WrongType);
        assert!(d.contains("humidity") && d.contains("wet"), "{d}");
        assert_eq!(
            kind(r#"{"station_id":"","time":"2016-06-01T00:00:00Z"}"#).0,
            RejectKind::MissingField
        );
        let long = format!(r#"{{"station_id":"{}","time":"2016-06-01T00:00:00Z"}}"#, "x".repeat(65));
        assert_eq!(kind(&long).0, RejectKind::WrongType);
    }

    #[test]
    fn impossible_values_are_refused_and_implausible_ones_kept() {
        let base = |extra: &str| format!(r#"{{"station_id":"A","time":"2016-06-01T00:00:00Z"{extra}}}"#);
        for extra in [
            r#","temperature":-300"#,
            r#","humidity":-1"#,
            r#","wind_speed":-0.5"#,
            r#","precipitation":-2"#,
            r#","pressure":0"#,
        ] {
            assert_eq!(kind(&base(extra)).0, RejectKind::Impossible, "{extra}");
        }
        for extra in [r#","temperature":60"#, r#","humidity":130"#, r#","pressure":101325"#] {
            assert!(parse_observation(base(extra).as_bytes(), None).is_ok(), "{extra}");
        }
        let future = r#"{"station_id":"A","time":"2031-01-01T00:00:00Z"}"#;
        assert_eq!(kind(future).0, RejectKind::Impossible);
        assert!(parse_observation(future.as_bytes(), None).is_ok(), "no horizon, no check");
    }
}
