//! Operations against the real broker: a running process's `/metrics` counts a known input
//! correctly per topic-partition (in, out, DLQ, lag, latency), the monitoring stage's MAE and
//! coverage equal those computed from the topics themselves, the JSON API answers, `status`
//! reports the process up then down, and configured secrets never reach the log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use weatherflow::contract::{FeatureRecord, Prediction};

mod ops_support;
use ops_support::*;

const SECRET: &str = "hunter2-do-not-log";

/// Per-partition message counts of a topic.
fn per_partition(brokers: &str, topic: &str) -> BTreeMap<i32, u64> {
    let mut m = BTreeMap::new();
    for msg in read_all(brokers, topic) {
        *m.entry(msg.partition).or_default() += 1;
    }
    m
}

/// Lead -> (pairs, MAE, coverage) computed from the topics: every prediction's forecast point
/// against the first feature record of its station and valid hour.
fn reference_verification(brokers: &str, features: &str, predictions: &str) -> BTreeMap<u32, (usize, f64, f64)> {
    let mut actual: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut msgs = read_all(brokers, features);
    msgs.sort_by_key(|m| (m.partition, m.offset));
    for m in msgs {
        if let Ok(r) = FeatureRecord::parse(&m.payload) {
            if let Some(t) = r.temperature_mean {
                actual.entry((r.station_id, r.window_end.timestamp())).or_insert(t);
            }
        }
    }
    let mut leads: BTreeMap<u32, (usize, f64, usize)> = BTreeMap::new();
    for m in read_all(brokers, predictions) {
        let p: Prediction = serde_json::from_slice(&m.payload).unwrap();
        for f in &p.forecast {
            let (Some(t), Some(a)) = (f.temperature, actual.get(&(p.station_id.clone(), f.valid_at.timestamp()))) else {
                continue;
            };
            let e = leads.entry(f.lead_hours).or_default();
            e.0 += 1;
            e.1 += (t - a).abs();
            e.2 += (f.lower.unwrap() <= *a && *a <= f.upper.unwrap()) as usize;
        }
    }
    leads
        .into_iter()
        .map(|(h, (n, e, c))| (h, (n, e / n as f64, c as f64 / n as f64)))
        .collect()
}

#[test]
fn metrics_count_a_known_input_and_the_api_and_status_answer() {
    let b = brokers();
    let t = topics("ops");
    let mut input = nyc(900);
    let bad = [
        "{not json",
        r#"{"station_id":"JFK","count":1}"#,
        r#"{"station_id":"EWR","window_end":"2013-01-02T00:00:00Z","count":1,"temperature_mean":-500}"#,
    ];
    for (i, payload) in bad.iter().enumerate() {
        let station = ["JFK", "LGA", "EWR"][i];
        input.insert(100 + 250 * i, (Some(station.into()), payload.to_string()));
    }
    publish(&b, &t.features, 3, &input);
    let port = free_ports(1)[0];
    let cfg = ops_config(
        "ops",
        &t,
        &b,
        3,
        port,
        &format!("[kafka.options]\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"{SECRET}\"\n"),
    );
    let check = bin().args(["check-config", "--config"]).arg(&cfg).output().unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        check_out.contains("sasl.password=<redacted>") && !check_out.contains(SECRET),
        "{check_out}"
    );
    assert!(check_out.contains(&format!("http: 0: http://127.0.0.1:{port}/")), "{check_out}");

    let proc = Proc::start(&cfg, "ops");
    let addr = format!("127.0.0.1:{port}");
    let n = input.len() as f64;
    let predictions = (input.len() - bad.len()) as f64;

    // Everything read, predicted or dead-lettered, and acknowledged.
    let m = wait_for(&proc, Duration::from_secs(120), || {
        let m = scrape(&addr)?;
        let done = sum(&m, "weatherflow_records_in_total", &[("stage", "inference")]) == n
            && sum(&m, "weatherflow_records_out_total", &[("topic", &t.predictions)]) == predictions
            && sum(&m, "weatherflow_records_dlq_total", &[("topic", &t.dlq)]) == bad.len() as f64
            && sum(&m, "weatherflow_consumer_lag_records", &[("stage", "inference")]) == 0.0
            && sum(&m, "weatherflow_consumer_position", &[("stage", "inference")]) == n
            && m.iter().any(|s| s.name == "weatherflow_checkpoint_write_seconds_count");
        done.then_some(m)
    });
    let inputs = per_partition(&b, &t.features);
    assert_eq!(inputs.values().sum::<u64>(), input.len() as u64);
    assert!(inputs.len() >= 2, "the stations' keys spread the input over partitions: {inputs:?}");
    for (p, count) in &inputs {
        let ps = p.to_string();
        let f = [("stage", "inference"), ("topic", t.features.as_str()), ("partition", ps.as_str())];
        assert_eq!(
            sum(&m, "weatherflow_records_in_total", &f),
            *count as f64,
            "records in, partition {p}"
        );
        assert_eq!(
            sum(&m, "weatherflow_consumer_high_watermark", &f),
            *count as f64,
            "high watermark, partition {p}"
        );
        assert_eq!(
            sum(&m, "weatherflow_consumer_position", &f),
            *count as f64,
            "position, partition {p}"
        );
        assert_eq!(sum(&m, "weatherflow_consumer_lag_records", &f), 0.0);
    }
    for p in (0..3).filter(|p| !inputs.contains_key(p)) {
        let ps = p.to_string();
        let f = [("stage", "inference"), ("topic", t.features.as_str()), ("partition", ps.as_str())];
        assert_eq!(sum(&m, "weatherflow_records_in_total", &f), 0.0);
        assert_eq!(
            sum(&m, "weatherflow_consumer_lag_records", &f),
            0.0,
            "an empty partition has no lag"
        );
        assert_eq!(
            m.iter()
                .filter(|s| s.name == "weatherflow_consumer_lag_records" && s.labels["partition"] == ps && s.labels["stage"] == "inference")
                .count(),
            1
        );
    }
    for (topic, name) in [
        (&t.predictions, "weatherflow_records_out_total"),
        (&t.dlq, "weatherflow_records_dlq_total"),
    ] {
        for (p, count) in per_partition(&b, topic) {
            let ps = p.to_string();
            assert_eq!(
                sum(&m, name, &[("topic", topic.as_str()), ("partition", ps.as_str())]),
                count as f64,
                "{name} {topic}/{p}"
            );
        }
    }
    // Two workers read the three partitions; each partition is labelled with its reader.
    let readers: BTreeSet<String> = m
        .iter()
        .filter(|s| s.name == "weatherflow_records_in_total" && s.labels["stage"] == "inference")
        .map(|s| s.labels["worker"].clone())
        .collect();
    assert_eq!(readers, BTreeSet::from(["0".to_string(), "1".to_string()]));
    let on_worker0: u64 = inputs.iter().filter(|(p, _)| *p % 2 == 0).map(|(_, n)| n).sum();
    assert_eq!(
        sum(&m, "weatherflow_records_in_total", &[("stage", "inference"), ("worker", "0")]),
        on_worker0 as f64
    );
    assert_eq!(
        sum(&m, "weatherflow_predictions_acked_total", &[("stage", "inference")]),
        predictions
    );
    assert_eq!(
        sum(&m, "weatherflow_rejected_invalid_total", &[("stage", "inference")]),
        bad.len() as f64
    );
    // The latency histogram saw every prediction; its buckets are cumulative and end at +Inf.
    let lat = [("stage", "inference"), ("topic", t.predictions.as_str())];
    assert_eq!(sum(&m, "weatherflow_end_to_end_latency_seconds_count", &lat), predictions);
    let inf: Vec<(&str, &str)> = lat.iter().copied().chain([("le", "+Inf")]).collect();
    assert_eq!(sum(&m, "weatherflow_end_to_end_latency_seconds_bucket", &inf), predictions);
    let mut last = 0.0;
    for s in m
        .iter()
        .filter(|s| s.name == "weatherflow_end_to_end_latency_seconds_bucket" && s.labels["topic"] == t.predictions)
    {
        assert!(s.value >= last, "cumulative buckets");
        last = s.value;
    }
    assert!(sum(&m, "weatherflow_end_to_end_latency_seconds_sum", &lat) > 0.0);
    assert!(sum(&m, "weatherflow_epoch_completion_seconds_count", &[]) > 0.0);
    assert!(sum(&m, "weatherflow_checkpoints_total", &[("stage", "inference")]) >= 1.0);
    let busy: Vec<&Sample> = m.iter().filter(|s| s.name == "weatherflow_worker_busy_seconds_total").collect();
    assert_eq!(busy.len(), 2, "one load series per worker");
    for s in busy {
        let up = sum(&m, "weatherflow_worker_uptime_seconds", &[("worker", &s.labels["worker"])]);
        assert!(s.value > 0.0 && s.value <= up + 1e-6, "busy {} of {up} s", s.value);
    }
    assert_eq!(m.iter().filter(|s| s.name == "weatherflow_model_store_info").count(), 2);

    // The monitoring stage: its verification equals the one computed from the topics.
    let reference = reference_verification(&b, &t.features, &t.predictions);
    let (pairs1, mae1, cov1) = reference[&1];
    assert!(pairs1 > 800, "{pairs1}");
    let mm = wait_for(&proc, Duration::from_secs(120), || {
        let (code, body) = get(&addr, "/api/model-metrics");
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (code == 200 && v["overall"]["metrics"]["leads"][0]["pairs"].as_u64() == Some(pairs1 as u64)).then_some(v)
    });
    for lead in [1u32, 6, 24] {
        let (pairs, mae, cov) = reference[&lead];
        let got = &mm["overall"]["metrics"]["leads"][lead as usize - 1];
        assert_eq!(got["lead_hours"].as_u64(), Some(lead as u64));
        assert_eq!(got["pairs"].as_u64(), Some(pairs as u64), "lead {lead}");
        assert!(
            (got["mae"].as_f64().unwrap() - mae).abs() < 1e-6,
            "lead {lead}: {} vs {mae}",
            got["mae"]
        );
        assert!((got["coverage"].as_f64().unwrap() - cov).abs() < 1e-9, "lead {lead}");
    }
    assert!(mae1 > 0.2 && mae1 < 2.0 && cov1 > 0.6, "plausible NYC verification: {mae1} {cov1}");
    assert_eq!(mm["stations"].as_object().unwrap().len(), 3);
    let m = scrape(&addr).unwrap();
    assert!((sum(&m, "weatherflow_model_mae_celsius", &[("lead", "1")]) - mae1).abs() < 1e-6);
    assert_eq!(sum(&m, "weatherflow_model_verification_pairs", &[("lead", "1")]), pairs1 as f64);
    assert_eq!(m.iter().filter(|s| s.name == "weatherflow_station_mae_celsius").count(), 3);
    assert_eq!(sum(&m, "weatherflow_model_in_use_stations", &[("kind", "forecast")]), 3.0);

    // The JSON API.
    let newest = newest_predictions(&b, &t.predictions);
    let (code, body) = get(&addr, "/api/predictions/latest");
    assert_eq!(code, 200);
    let latest: BTreeMap<String, Prediction> = serde_json::from_slice(&body).unwrap();
    assert_eq!(latest.len(), 3);
    for (station, p) in &newest {
        assert_eq!(&latest[station], p, "newest prediction of {station}");
    }
    let (code, body) = get(&addr, "/api/stations");
    assert_eq!(code, 200);
    let stations: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = stations
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["station_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["EWR", "JFK", "LGA"]);
    let (code, body) = get(&addr, "/api/stations/JFK");
    assert_eq!(code, 200);
    let jfk: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jfk["latest"]["forecast"].as_array().unwrap().len(), 24);
    assert_eq!(jfk["earlier"]["points"].as_array().unwrap().len(), 24);
    assert!(jfk["actuals"].as_array().unwrap().len() >= 40, "48 h of actuals");
    assert_eq!(get(&addr, "/api/stations/NOPE").0, 404);
    assert_eq!(get(&addr, "/api/anomalies?limit=oops").0, 400);
    let (code, body) = get(&addr, "/api/anomalies?limit=200");
    assert_eq!(code, 200);
    let anomalies: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    let flagged: BTreeSet<(String, String)> = read_all(&b, &t.predictions)
        .iter()
        .map(|m| serde_json::from_slice::<Prediction>(&m.payload).unwrap())
        .filter(|p| p.anomaly.is_anomaly)
        .map(|p| (p.station_id, p.window_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .collect();
    let served: BTreeSet<(String, String)> = anomalies
        .iter()
        .map(|a| {
            (
                a["station_id"].as_str().unwrap().to_string(),
                a["window_end"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(served, flagged, "the anomaly feed holds exactly the flagged predictions");
    let (code, body) = get(&addr, "/");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("/dashboard.js"));
    let (code, body) = get(&addr, "/dashboard.js");
    assert!(code == 200 && String::from_utf8_lossy(&body).contains("/api/stations"));
    assert_eq!(get(&addr, "/nope").0, 404);
    let records = read_all(&b, &format!("{}-model-metrics", t.features));
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        ["station_metrics", "overall_metrics", "skill_alert"].contains(&v["type"].as_str().unwrap_or(""))
    }));

    // status: up with its lag and checkpoint, as JSON and for people.
    // (Lag is sampled every 0.5 s; the monitoring stage's partitions may need one more sample.)
    let v = wait_for(&proc, Duration::from_secs(30), || {
        let st = bin().args(["status", "--json", "--config"]).arg(&cfg).output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        (v["lag"].as_i64() == Some(0)).then_some(v)
    });
    assert_eq!(v["up"].as_u64(), Some(1));
    assert_eq!(v["processes"][0]["address"].as_str(), Some(addr.as_str()));
    assert!(v["processes"][0]["status"]["last_checkpoint"]["written_at"].is_string());
    assert_eq!(
        v["processes"][0]["status"]["stages"]["inference"]["records_in"].as_u64(),
        Some(input.len() as u64)
    );
    assert!(v["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["kind"] == "forecast" && m["stations"] == 3));
    let human = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("1/1 processes up") && text.contains(" up "), "{text}");

    let (status, log) = proc.stop();
    assert!(status.success(), "clean stop: {status}\n{log}");
    assert!(!log.contains(SECRET), "a secret reached the log");
    assert!(
        log.contains("sasl.password=<redacted>"),
        "the client settings line is logged, redacted:\n{log}"
    );
    let down = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    assert!(!down.status.success(), "status fails when a process is down");
    let text = String::from_utf8_lossy(&down.stdout);
    assert!(text.contains("DOWN") && text.contains("0/1 processes up"), "{text}");
}

/// The newest prediction of each station in the topic.
fn newest_predictions(brokers: &str, topic: &str) -> BTreeMap<String, Prediction> {
    let mut out: BTreeMap<String, Prediction> = BTreeMap::new();
    for m in read_all(brokers, topic) {
        let p: Prediction = serde_json::from_slice(&m.payload).unwrap();
        if out.get(&p.station_id).is_none_or(|q| q.window_end < p.window_end) {
            out.insert(p.station_id.clone(), p);
        }
    }
    out
}

#[test]
fn http_bind_problems_are_reported_by_check_config() {
    let dir = std::env::temp_dir().join("weatherflow-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{}.toml", unique("http-bad")));
    std::fs::write(
        &path,
        "[http]\nbind = \"localhost:9460\"\n[pipeline]\nstages = [\"inference\", \"monitoring\"]\n[monitoring]\nwindow_hours = 0\n",
    )
    .unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.bind") && err.contains("monitoring.window_hours"), "{err}");
}
