//! Integration tests of the inference cluster against a real Kafka-protocol broker over TCP
//! (`scripts/kafka-up` starts Tansu on 127.0.0.1:9092; `scripts/test` does it for you).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use common::*;
use weatherflow::contract::{Prediction, LEADS};
use weatherflow::operators::dlq_headers;

fn predictions(brokers: &str, topic: &str) -> Vec<(String, Prediction)> {
    read_all(brokers, topic)
        .into_iter()
        .map(|m| {
            let key = String::from_utf8(m.key.clone().expect("prediction has a key")).unwrap();
            let p: Prediction = serde_json::from_slice(&m.payload)
                .unwrap_or_else(|e| panic!("not a prediction ({e}): {}", String::from_utf8_lossy(&m.payload)));
            (key, p)
        })
        .collect()
}

/// Checks the output contract of one prediction.
fn assert_well_formed(key: &str, p: &Prediction) {
    assert_eq!(key, p.station_id);
    assert_eq!(p.forecast.len(), LEADS);
    assert_eq!(p.interval, 0.9);
    assert!(!p.model.forecast.is_empty() && !p.model.anomaly.is_empty());
    for (i, pt) in p.forecast.iter().enumerate() {
        assert_eq!(pt.lead_hours as usize, i + 1);
        assert_eq!(pt.valid_at, p.window_end + Duration::hours(i as i64 + 1));
        if let (Some(t), Some(lo), Some(hi)) = (pt.temperature, pt.lower, pt.upper) {
            assert!(
                lo <= t && t <= hi,
                "{key} {} lead {}: {lo} <= {t} <= {hi}",
                p.window_end,
                pt.lead_hours
            );
        }
    }
    assert!((0.0..=1.0).contains(&p.anomaly.score));
    assert_eq!(p.anomaly.is_anomaly, p.anomaly.score >= 0.5);
    assert_eq!(
        p.anomaly.is_anomaly,
        !p.anomaly.reasons.is_empty(),
        "reasons exactly when flagged: {:?}",
        p.anomaly
    );
}

#[test]
fn n_records_in_n_predictions_out() {
    let b = brokers();
    let t = topics("n-in-n-out");
    let input = nyc(2000);
    publish(&b, &t.features, 3, &input);
    let cfg = write_config("n-in-n-out", &t, &b, 1, 1, 3, &t.predictions);
    run_cluster(&cfg);
    let out = predictions(&b, &t.predictions);
    assert_eq!(out.len(), input.len(), "one prediction per feature record");
    for (k, p) in &out {
        assert_well_formed(k, p);
    }
    // Exactly one prediction per input message.
    let positions: BTreeSet<(i32, i64)> = out
        .iter()
        .map(|(_, p)| p.source.map(|s| (s.partition, s.offset)).expect("source position"))
        .collect();
    assert_eq!(positions.len(), input.len());
    let windows: BTreeSet<(String, i64)> = out.iter().map(|(_, p)| (p.station_id.clone(), p.window_end.timestamp())).collect();
    assert_eq!(windows.len(), input.len());
    assert!(read_all(&b, &t.dlq).is_empty(), "nothing refused");
}

/// Malformed messages go to the DLQ with their original bytes and the reason; the good ones
/// still come out; a repeated window is refused as stale, not dropped.
#[test]
fn malformed_records_land_in_the_dlq_and_good_ones_still_come_out() {
    let b = brokers();
    let t = topics("dlq");
    let mut input = nyc(600);
    let bad: Vec<(&str, &str)> = vec![
        ("not_json", "{not json"),
        ("not_json", "[1, 2, 3]"),
        ("missing_field", r#"{"window_end":"2013-01-02T00:00:00Z","count":1}"#),
        ("missing_field", r#"{"station_id":"JFK","count":1}"#),
        (
            "wrong_type",
            r#"{"station_id":"JFK","window_end":"2013-01-09T00:00:00Z","count":1,"temperature_mean":"hot"}"#,
        ),
        ("wrong_type", r#"{"station_id":"JFK","window_end":"not a time","count":1}"#),
        (
            "impossible_value",
            r#"{"station_id":"JFK","window_end":"2013-01-09T01:00:00Z","count":1,"temperature_mean":-400}"#,
        ),
        (
            "impossible_value",
            r#"{"station_id":"JFK","window_end":"2013-01-09T02:00:00Z","count":1,"wind_speed_mean":-3}"#,
        ),
    ];
    for (i, (_, payload)) in bad.iter().enumerate() {
        input.insert(50 + i * 60, (Some("JFK".into()), payload.to_string()));
    }
    // A replayed record: same station, same window as one already processed.
    let replay = input[100].clone();
    input.push(replay.clone());
    publish(&b, &t.features, 1, &input);
    let cfg = write_config("dlq", &t, &b, 1, 2, 1, &t.predictions);
    run_cluster(&cfg);

    let dlq = read_all(&b, &t.dlq);
    assert_eq!(dlq.len(), bad.len() + 1, "every refused record is in the DLQ");
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for m in &dlq {
        let kind = m.header(dlq_headers::KIND).expect("kind header");
        let reason = m.header(dlq_headers::ERROR).expect("reason header");
        assert!(!reason.is_empty());
        assert_eq!(m.header(dlq_headers::TOPIC).as_deref(), Some(t.features.as_str()));
        assert!(m.header(dlq_headers::OFFSET).unwrap().parse::<i64>().is_ok());
        if kind != "stale_window" {
            let payload = String::from_utf8(m.payload.clone()).unwrap();
            assert!(
                bad.iter().any(|(k, p)| *k == kind && *p == payload),
                "original bytes kept: {kind} {payload}"
            );
        } else {
            assert!(reason.contains("not after"), "{reason}");
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.get("stale_window"), Some(&1));
    assert_eq!(kinds.get("not_json"), Some(&2));
    assert_eq!(kinds.get("impossible_value"), Some(&2));
    let out = predictions(&b, &t.predictions);
    assert_eq!(out.len(), 600, "all good records predicted");
}

/// The same input through 1 process x 1 worker and 2 processes x 2 workers gives identical
/// predictions (ignoring issued_at). Every seventh record has no `window_start` (optional in the
/// contract): records cross processes at the exchange by station, and such a record once could
/// not be decoded there (`src/exchange.rs`).
#[test]
fn one_by_one_equals_two_by_two() {
    let b = brokers();
    let t = topics("scale");
    let mut input = nyc(3000);
    for (_, payload) in input.iter_mut().step_by(7) {
        let mut v: serde_json::Value = serde_json::from_str(payload).unwrap();
        v.as_object_mut().unwrap().remove("window_start");
        *payload = v.to_string();
    }
    input.insert(1234, (Some("EWR".into()), "garbage".into()));
    input.push(input[10].clone()); // stale
    publish(&b, &t.features, 4, &input);
    let single = format!("{}-1x1", t.predictions);
    let double = format!("{}-2x2", t.predictions);
    run_cluster(&write_config("scale-1x1", &t, &b, 1, 1, 4, &single));
    run_cluster(&write_config("scale-2x2", &t, &b, 2, 2, 4, &double));
    let norm = |topic: &str| {
        let mut v: Vec<serde_json::Value> = predictions(&b, topic)
            .into_iter()
            .map(|(_, p)| {
                let mut v = serde_json::to_value(p).unwrap();
                v.as_object_mut().unwrap().remove("issued_at");
                v
            })
            .collect();
        v.sort_by_key(|v| {
            (
                v["station_id"].as_str().unwrap().to_string(),
                v["window_end"].as_str().unwrap().to_string(),
            )
        });
        v
    };
    let (a, c) = (norm(&single), norm(&double));
    assert_eq!(a.len(), 3000);
    assert_eq!(a.len(), c.len());
    for (x, y) in a.iter().zip(&c) {
        assert_eq!(x, y);
    }
}

/// Publishes `n` NYC records for a 1 x 2 cluster that stops at the end of its input (what
/// `--until-end` sets); returns the broker, the topics, the input and the resolved settings.
fn until_end(name: &str, n: usize) -> (String, Topics, Vec<(Option<String>, String)>, weatherflow::config::Settings) {
    use weatherflow::config::{Overrides, RawConfig};
    let b = brokers();
    let t = topics(name);
    let input = nyc(n);
    publish(&b, &t.features, 3, &input);
    let cfg = write_config(name, &t, &b, 1, 2, 3, &t.predictions);
    let mut raw = RawConfig::parse(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    raw.apply(&Overrides {
        stop_at_end: true,
        ..Default::default()
    });
    (b, t, input, raw.resolve("test").unwrap())
}

/// The id header of every output in `topic`.
fn output_ids(brokers: &str, topic: &str) -> Vec<String> {
    use weatherflow::kafka::sink::ID_HEADER;
    read_all(brokers, topic)
        .iter()
        .map(|m| m.header(ID_HEADER).expect("outputs carry their id"))
        .collect()
}

/// The sink's acknowledgement hook (`Metrics::ack_tap`, used by the latency benchmark) is called
/// once for every acknowledged output, with the id header that names the input it answers.
#[test]
fn the_ack_tap_sees_every_acknowledged_output_once() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    use weatherflow::metrics::Metrics;

    let (b, t, input, settings) = until_end("ack-tap", 300);
    let metrics = Arc::new(Metrics::default());
    let tapped = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let into = tapped.clone();
    assert!(metrics.ack_tap.set(Arc::new(move |id: &[u8], produced_ms: i64| {
        into.lock().unwrap().push((String::from_utf8_lossy(id).into_owned(), produced_ms));
    })));
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let started = now_ms();
    let snap = weatherflow::runner::run_process_with(&settings, 0, Arc::new(AtomicBool::new(false)), metrics).unwrap();
    let finished = now_ms();
    let (tapped, produced): (Vec<String>, Vec<i64>) = tapped.lock().unwrap().iter().cloned().unzip();
    assert!(
        produced.iter().all(|t| (started..=finished).contains(t)),
        "each output's own timestamp is when the sink produced it, within the run"
    );
    assert_eq!(snap.predictions_acked as usize, input.len());
    assert_eq!(
        tapped.len() as u64,
        snap.predictions_acked + snap.dlq_acked,
        "one call per acknowledgement"
    );
    let published: BTreeSet<String> = output_ids(&b, &t.predictions).into_iter().collect();
    let tapped: BTreeSet<String> = tapped.into_iter().collect();
    assert_eq!(tapped.len(), input.len(), "each output once");
    assert_eq!(tapped, published, "the ids the broker holds");
}

/// `source.max_in_flight` pauses reading while that many records await their acknowledged
/// outputs; every record is still answered exactly once.
#[test]
fn a_bounded_source_pauses_and_still_answers_every_record_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use weatherflow::metrics::Metrics;

    let (b, t, input, mut settings) = until_end("in-flight", 300);
    settings.source.max_in_flight = 40;
    let metrics = Arc::new(Metrics::default());
    let snap = weatherflow::runner::run_process_with(&settings, 0, Arc::new(AtomicBool::new(false)), metrics.clone()).unwrap();
    assert!(metrics.source_throttled.load(Ordering::Relaxed) > 0, "the bound was reached");
    assert_eq!(snap.predictions_acked as usize + snap.dlq_acked as usize, input.len());
    let published = output_ids(&b, &t.predictions);
    let ids: BTreeSet<&String> = published.iter().collect();
    assert_eq!(published.len(), snap.predictions_acked as usize, "no duplicates");
    assert_eq!(ids.len(), published.len(), "each input answered once");
}
