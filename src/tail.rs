//! `weatherflow tail`: reads `weather-predictions` and prints each prediction for people, like
//! the original tester script: station, forecast origin, the next hours with their intervals,
//! the anomaly score and reasons.
//!
//! ```text
//!   weather-predictions (all partitions, read_committed) ──> filter (station, anomalies) ──> format ──> stdout
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::contract::Prediction;
use crate::kafka::{self, KafkaIoError};

/// Leads shown in the compact format.
const SHOWN_LEADS: [u32; 5] = [1, 3, 6, 12, 24];

/// Formats one prediction over a few lines.
pub fn format_prediction(p: &Prediction) -> String {
    let obs = p
        .observed_temperature
        .map(|t| format!("{t:5.1} C"))
        .unwrap_or_else(|| "  n/a  ".into());
    let mut s = format!(
        "{:<8} origin {}  observed {}  model {} | {}\n ",
        p.station_id,
        p.window_end.format("%Y-%m-%d %H:%MZ"),
        obs,
        p.model.forecast,
        p.model.anomaly
    );
    for lead in SHOWN_LEADS {
        if let Some(pt) = p.forecast.iter().find(|f| f.lead_hours == lead) {
            match (pt.temperature, pt.lower, pt.upper) {
                (Some(t), Some(lo), Some(hi)) => s.push_str(&format!(" +{lead}h {t:.1} [{lo:.1}, {hi:.1}]")),
                _ => s.push_str(&format!(" +{lead}h n/a")),
            }
        }
    }
    s.push_str(&format!("  ({:.0}% intervals)\n", p.interval * 100.0));
    if p.anomaly.is_anomaly {
        s.push_str(&format!("  ANOMALY score {:.2}: {}", p.anomaly.score, p.anomaly.reasons.join("; ")));
    } else {
        s.push_str(&format!("  anomaly score {:.2}", p.anomaly.score));
    }
    s
}

/// What to read and show.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Brokers.
    pub brokers: String,
    /// Consumer options.
    pub options: BTreeMap<String, String>,
    /// Topic to read.
    pub topic: String,
    /// Start at the beginning (else only new predictions).
    pub from_beginning: bool,
    /// Stop at the end of the topic instead of following it.
    pub until_end: bool,
    /// Only this station.
    pub station: Option<String>,
    /// Only anomalies.
    pub anomalies_only: bool,
    /// Stop after printing this many.
    pub max: Option<usize>,
    /// Print raw JSON lines instead of the formatted view.
    pub json: bool,
}

/// Reads and prints predictions until the end (with `until_end`), `max`, or shutdown. Returns
/// how many were printed. Undecodable messages are reported and skipped (nothing is written).
pub fn tail(o: &TailOptions, shutdown: Arc<AtomicBool>, mut out: impl std::io::Write) -> Result<usize, KafkaIoError> {
    let mut opts = o.options.clone();
    opts.entry("isolation.level".into()).or_insert_with(|| "read_committed".into());
    let group = format!("weatherflow-tail-{}", std::process::id());
    let c = kafka::consumer(&o.brokers, &group, &opts)?;
    let n = kafka::wait_for_topic(&c, &o.brokers, &o.topic, Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    let start = if o.from_beginning { Offset::Beginning } else { Offset::End };
    for p in 0..n as i32 {
        tpl.add_partition_offset(&o.topic, p, start).map_err(kafka::client_err("assign"))?;
    }
    c.assign(&tpl).map_err(kafka::client_err("assign"))?;
    let mut at_end = vec![false; n];
    let mut printed = 0usize;
    let mut last_seen = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        if o.until_end && at_end.iter().all(|e| *e) {
            break;
        }
        match c.poll(Duration::from_millis(200)) {
            None => {
                if o.until_end && last_seen.elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = at_end.get_mut(p as usize) {
                    *e = true;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "tail: consumer error"),
            Some(Ok(m)) => {
                last_seen = Instant::now();
                if let Some(e) = at_end.get_mut(m.partition() as usize) {
                    *e = false;
                }
                let payload = m.payload().unwrap_or_default();
                let p: Prediction = match serde_json::from_slice(payload) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = writeln!(out, "(partition {} offset {}: not a prediction: {e})", m.partition(), m.offset());
                        continue;
                    }
                };
                if o.station.as_deref().is_some_and(|s| s != p.station_id) || (o.anomalies_only && !p.anomaly.is_anomaly) {
                    continue;
                }
                let line = if o.json {
                    String::from_utf8_lossy(payload).into_owned()
                } else {
                    format_prediction(&p)
                };
                if writeln!(out, "{line}").is_err() {
                    break; // stdout closed (e.g. piped into head)
                }
                printed += 1;
                if o.max.is_some_and(|m| printed >= m) {
                    break;
                }
            }
        }
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Anomaly, ForecastPoint, ModelNames};
    use chrono::{Duration as D, TimeZone, Utc};

    #[test]
    fn format_shows_origin_leads_intervals_and_reasons() {
        let t = Utc.with_ymd_and_hms(2013, 5, 9, 2, 0, 0).unwrap();
        let p = Prediction {
            station_id: "JFK".into(),
            window_end: t,
            issued_at: t,
            model: ModelNames {
                forecast: "fallback/x".into(),
                anomaly: "rules/v1".into(),
            },
            interval: 0.9,
            forecast: (1..=24)
                .map(|h| ForecastPoint {
                    lead_hours: h,
                    valid_at: t + D::hours(h as i64),
                    temperature: Some(10.0 + h as f64),
                    lower: Some(9.0),
                    upper: Some(40.0),
                })
                .collect(),
            anomaly: Anomaly {
                score: 0.99,
                is_anomaly: true,
                reasons: vec!["temperature spike".into()],
            },
            observed_temperature: Some(-10.5),
            source: None,
        };
        let s = format_prediction(&p);
        assert!(s.contains("JFK") && s.contains("2013-05-09 02:00Z"), "{s}");
        assert!(s.contains("+24h 34.0 [9.0, 40.0]"), "{s}");
        assert!(s.contains("ANOMALY score 0.99: temperature spike"), "{s}");
        assert!(s.contains("-10.5"), "{s}");
    }
}
