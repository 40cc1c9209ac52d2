//! The features stage and the whole chain against the real broker, through the built binary:
//! `produce` publishes observations to the raw topic, `run --until-end` turns them into features
//! (and predictions), and what comes out is checked against an independent batch computation,
//! across cluster shapes, with late and invalid records.

mod common;
mod feature_batch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use feature_batch::assert_matches_batch;
use weatherflow::contract::{FeatureRecord, Prediction};
use weatherflow::kafka::assign::station_hash;
use weatherflow::kafka::ReadMessage;
use weatherflow::observations::{Observation, SourceFormat};
use weatherflow::operators::dlq_headers;
use weatherflow::operators::window::late_headers;

/// Topics of the features stage, next to the inference ones of `common::topics`.
struct StageTopics {
    t: Topics,
    raw: String,
    raw_dlq: String,
    late: String,
}

fn stage_topics(name: &str) -> StageTopics {
    let t = topics(name);
    let u = t.features.trim_end_matches("-features").to_string();
    StageTopics {
        raw: format!("{u}-raw"),
        raw_dlq: format!("{u}-raw-dlq"),
        late: format!("{u}-late"),
        t,
    }
}

/// A test cluster config (from `common::write_config`) plus the features stage's settings.
#[allow(clippy::too_many_arguments)]
fn stage_config(
    name: &str,
    st: &StageTopics,
    b: &str,
    processes: usize,
    workers: usize,
    stages: &str,
    features: &str,
    late: &str,
) -> PathBuf {
    let t = Topics {
        features: features.to_string(),
        ..st.t.clone()
    };
    let path = write_config(name, &t, b, processes, workers, 4, &st.t.predictions);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[topics]\n",
        &format!(
            "[topics]\nraw = \"{}\"\nraw_dlq = \"{}-{late}\"\nlate = \"{late}\"\n",
            st.raw, st.raw_dlq
        ),
        1,
    );
    let text = format!("{text}[pipeline]\nstages = {stages}\n[features]\nallowed_lateness_s = 600\nidle_timeout_ms = 60000\n");
    std::fs::write(&path, text).unwrap();
    path
}

/// `weatherflow produce <args> --config <cfg> --quiet`; returns stdout.
fn produce(cfg: &PathBuf, args: &[&str]) -> String {
    let mut cmd = bin();
    cmd.arg("produce").args(args).arg("--config").arg(cfg).arg("--quiet");
    let out = run_with_timeout(cmd, Duration::from_secs(180));
    assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn features_of(b: &str, topic: &str) -> Vec<(ReadMessage, FeatureRecord)> {
    let mut v: Vec<(ReadMessage, FeatureRecord)> = read_all(b, topic)
        .into_iter()
        .map(|m| {
            let r = FeatureRecord::parse(&m.payload)
                .unwrap_or_else(|e| panic!("not a feature record ({e}): {}", String::from_utf8_lossy(&m.payload)));
            assert_eq!(m.key.as_deref(), Some(r.station_id.as_bytes()), "keyed by station");
            (m, r)
        })
        .collect();
    v.sort_by(|a, b| (&a.1.station_id, a.1.window_end).cmp(&(&b.1.station_id, b.1.window_end)));
    v
}

fn injected(stdout: &str, name: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with("injected faults:")).expect("fault summary");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {line}"))
}

#[test]
fn payerne_through_the_broker_equals_the_batch_computation() {
    let b = brokers();
    let st = stage_topics("feat-payerne");
    let cfg = stage_config(
        "feat-payerne",
        &st,
        &b,
        1,
        2,
        "[\"features\"]",
        &st.t.features,
        &format!("{}-a", st.late),
    );
    let out = produce(&cfg, &["--format", "payerne"]);
    assert!(
        out.contains("produced 43200 observations of 1 station(s), 2016-06-01T00:00:00+00:00 .. 2016-06-30T23:59:00+00:00"),
        "{out}"
    );
    let raw = read_all(&b, &st.raw);
    assert_eq!(raw.len(), 43_200);
    assert!(raw.iter().all(|m| m.key.as_deref() == Some(&b"PAY"[..])), "keyed by station");
    assert!(
        raw.iter().all(|m| m.partition as u64 == station_hash("PAY") % 4),
        "one partition per station, by its hash"
    );
    run_cluster(&cfg);
    let got: Vec<FeatureRecord> = features_of(&b, &st.t.features).into_iter().map(|(_, r)| r).collect();
    assert_eq!(got.len(), 721);
    let obs = weatherflow::produce::replay_order(
        SourceFormat::PayerneBsrn,
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/raw/payerne_2016-06_1min.csv").as_ref(),
    )
    .unwrap();
    assert_matches_batch(&got, &obs);
    assert!(
        read_all(&b, &format!("{}-a", st.late)).is_empty(),
        "nothing late in an ordered replay"
    );
}

#[test]
fn features_are_the_same_on_one_by_one_and_two_by_two_with_late_and_invalid_records() {
    let b = brokers();
    let st = stage_topics("feat-scale");
    let (f1, f2) = (format!("{}-1x1", st.t.features), format!("{}-2x2", st.t.features));
    let (l1, l2) = (format!("{}-1x1", st.late), format!("{}-2x2", st.late));
    let c1 = stage_config("feat-1x1", &st, &b, 1, 1, "[\"features\"]", &f1, &l1);
    let c2 = stage_config("feat-2x2", &st, &b, 2, 2, "[\"features\"]", &f2, &l2);
    let out = produce(
        &c1,
        &[
            "--format",
            "synthetic",
            "--stations",
            "60",
            "--hours",
            "24",
            "--seed",
            "3",
            "--typical-faults",
            "--late-rate",
            "0.003",
            "--invalid-rate",
            "0.002",
        ],
    );
    let (late, invalid) = (injected(&out, "late"), injected(&out, "invalid"));
    assert!(out.contains("produced 8640 observations of 60 station(s)"), "{out}");
    assert!(late > 10 && invalid > 5, "{out}");
    run_cluster(&c1);
    run_cluster(&c2);

    let (a, c) = (features_of(&b, &f1), features_of(&b, &f2));
    assert!(!a.is_empty());
    assert_eq!(a.len(), c.len());
    for ((_, x), (_, y)) in a.iter().zip(&c) {
        assert_eq!(serde_json::to_string(x).unwrap(), serde_json::to_string(y).unwrap());
    }
    let total: u64 = a.iter().map(|(_, r)| r.count).sum();
    assert_eq!(total, 8640 - late - invalid, "every on-time observation is in exactly one window");

    let positions = |topic: &str| -> BTreeSet<(String, String)> {
        read_all(&b, topic)
            .iter()
            .map(|m| (m.header(dlq_headers::PARTITION).unwrap(), m.header(dlq_headers::OFFSET).unwrap()))
            .collect()
    };
    let (late1, late2) = (read_all(&b, &l1), positions(&l2));
    assert_eq!(late1.len() as u64, late, "every late record reaches the late topic");
    for m in &late1 {
        assert_eq!(m.header(dlq_headers::KIND).as_deref(), Some(late_headers::KIND_VALUE));
        assert!(m.header(dlq_headers::ERROR).unwrap().contains("watermark"));
        let o: Observation = serde_json::from_slice(&m.payload).expect("original bytes");
        assert_eq!(m.key.as_deref(), Some(o.station_id.as_bytes()));
    }
    assert_eq!(positions(&l1), late2, "the same records are late on 1 x 1 and 2 x 2");
    let (d1, d2) = (format!("{}-{l1}", st.raw_dlq), format!("{}-{l2}", st.raw_dlq));
    assert_eq!(read_all(&b, &d1).len() as u64, invalid, "every invalid record reaches the DLQ");
    assert_eq!(positions(&d1), positions(&d2));
}

#[test]
fn one_run_takes_raw_observations_to_predictions() {
    let b = brokers();
    let st = stage_topics("chain");
    let cfg = stage_config("chain", &st, &b, 2, 1, "[\"features\", \"inference\"]", &st.t.features, &st.late);
    let out = produce(&cfg, &["--format", "nyc", "--limit", "1500"]);
    assert!(out.contains("produced 1500 observations of 3 station(s)"), "{out}");
    run_cluster(&cfg);
    let features = features_of(&b, &st.t.features);
    assert_eq!(features.len(), 1500, "hourly readings: one window each");
    let predictions: Vec<Prediction> = read_all(&b, &st.t.predictions)
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(predictions.len(), 1500, "one prediction per feature record");
    let windows: BTreeMap<(String, i64), Option<f64>> = features
        .iter()
        .map(|(_, r)| ((r.station_id.clone(), r.window_end.timestamp()), r.temperature_mean))
        .collect();
    for p in &predictions {
        let w = windows.get(&(p.station_id.clone(), p.window_end.timestamp()));
        assert_eq!(w, Some(&p.observed_temperature), "prediction answers its feature window");
    }
    assert!(read_all(&b, &st.t.dlq).is_empty() && read_all(&b, &st.late).is_empty());
}
