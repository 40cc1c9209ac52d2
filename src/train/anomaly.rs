//! `weatherflow train anomaly`: fits the anomaly model on normal data and measures event-level
//! detection on faults injected into the held-out period.
//!
//! ```text
//!   replay (served forecaster, no anomaly model) ──> evidence x per record, rules score
//!   normal = the rules do not fire
//!   train period, normal:          per-station median / MAD of x; isolation forest on robust z(x)
//!   train + calibration, normal:   thresholds = quantile(q) x margin of |residual_z|, stuck run,
//!                                  CUSUMs, forest score
//!   test period + injected faults ──replay serving the reloaded model──> flags ──> precision, recall,
//!   F1 (event level), per-kind recall; clean test period ──> false alarms per 1000 station-hours
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::eval::{event_scores, quantile, EventScores, EventWindow};
use super::faults;
use super::progress::Progress;
use super::report::{markdown_table, num, Band, Chart, Line};
use super::simulate::replay;
use super::store_version;
use super::{loader, write_report_dir, TrainError, TrainOptions, TrainOutcome};
use crate::anomaly::iforest::IsolationForest;
use crate::anomaly::trained::{AnomalyModel, Evidence, RobustStats, Thresholds, FEATURES, N_EVIDENCE, ROBUST_IFOREST};
use crate::forecast::trained::LinearPerLead;
use crate::models::serving::{Served, Serving};
use crate::models::{crate_versions, DataInfo, Loaded, ModelMeta, ModelStore, MODEL_FILE};

/// Faults of each kind injected per station.
const FAULTS_PER_KIND: usize = 5;
/// Hours after a fault during which an alarm still counts as caused by it.
const GRACE_H: i64 = 3;
/// Floor of a robust scale (in the evidence's units).
const MIN_SCALE: [f64; N_EVIDENCE] = [0.1, 0.1, 1.0, 0.5, 0.5, 1.0, 0.5, 0.3, 0.5];

fn hour_time(hour: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default()
}

/// One record's evidence with where it came from.
struct Row {
    station: String,
    hour: i64,
    evidence: Evidence,
    normal: bool,
}

fn robust_stats(rows: &[&Row]) -> RobustStats {
    let mut median = Vec::with_capacity(N_EVIDENCE);
    let mut scale = Vec::with_capacity(N_EVIDENCE);
    for (i, floor) in MIN_SCALE.iter().enumerate() {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.evidence.present[i])
            .map(|r| r.evidence.values[i])
            .collect();
        let m = quantile(&v, 0.5).unwrap_or(0.0);
        let dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
        let mad = quantile(&dev, 0.5).unwrap_or(0.0) * 1.4826;
        median.push(m);
        scale.push(mad.max(*floor));
    }
    RobustStats {
        n: rows.len() as u64,
        median,
        scale,
    }
}

/// The forecaster whose expectations feed the evidence (as it will be served).
fn forecast_serving(o: &TrainOptions, store: &ModelStore) -> Result<(Option<Served<LinearPerLead>>, String), TrainError> {
    let version = match o.forecast_version.as_deref() {
        Some("fallback") => return Ok((None, crate::forecast::fallback::NAME.into())),
        Some(v) => Some(v.to_string()),
        None => store.latest_version("forecast")?,
    };
    let Some(version) = version else {
        return Ok((None, crate::forecast::fallback::NAME.into()));
    };
    let (meta, loaded) = store.load("forecast", &version)?;
    match loaded {
        Loaded::Forecast(m) => Ok((
            Some(Served {
                name: meta.served_name(),
                model: Arc::new(m),
            }),
            meta.served_name(),
        )),
        Loaded::Anomaly(_) => Ok((None, crate::forecast::fallback::NAME.into())),
    }
}

/// Runs `weatherflow train anomaly`.
pub fn train_anomaly(o: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    o.periods.validate()?;
    let data = loader::load(&o.source)?;
    let spec = &o.config.anomaly;
    let store = ModelStore::new(&o.store);
    let (forecast, forecast_name) = forecast_serving(o, &store)?;
    let p = o.interval;

    // 1. Evidence on clean data.
    let mut rows: Vec<Row> = Vec::new();
    let bar = Progress::new(data.records.len() as u64, "anomaly: evidence", o.quiet);
    let serving = Serving {
        forecast: forecast.clone(),
        anomaly: None,
    };
    replay(&data.records, &serving, p, Some(&bar), |step| {
        rows.push(Row {
            station: step.record.station_id.clone(),
            hour: step.record.hour_index(),
            evidence: *step.evidence,
            normal: step.rules.score < 0.5,
        });
    });
    bar.finish(&format!("{} records", rows.len()));
    let in_train = |r: &&Row| r.normal && o.periods.train.contains(hour_time(r.hour));
    let train: Vec<&Row> = rows.iter().filter(in_train).collect();
    let tune: Vec<&Row> = rows
        .iter()
        .filter(|r| r.normal && (o.periods.train.contains(hour_time(r.hour)) || o.periods.calibration.contains(hour_time(r.hour))))
        .collect();
    if train.len() < 500 {
        return Err(TrainError::NotEnoughData(format!(
            "{} normal training hours in {} (need 500)",
            train.len(),
            o.periods.train
        )));
    }

    // 2. Robust statistics, forest, thresholds.
    let mut stations: BTreeMap<String, RobustStats> = BTreeMap::new();
    let mut grouped: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &train {
        grouped.entry(r.station.as_str()).or_default().push(r);
    }
    for (s, rs) in &grouped {
        if rs.len() >= 168 {
            stations.insert((*s).to_string(), robust_stats(rs));
        }
    }
    let pooled = robust_stats(&train);
    let stats_of = |s: &str| stations.get(s).unwrap_or(&pooled);
    let forest = if spec.model == ROBUST_IFOREST {
        let z: Vec<Vec<f64>> = train.iter().map(|r| stats_of(&r.station).normalise(&r.evidence).to_vec()).collect();
        Some(IsolationForest::fit(&z, spec.trees, spec.sample_size, spec.seed).map_err(|e| TrainError::NotEnoughData(e.to_string()))?)
    } else {
        None
    };
    let q = |f: &dyn Fn(&Row) -> Option<f64>, floor: f64| {
        let v: Vec<f64> = tune.iter().filter_map(|r| f(r)).collect();
        (quantile(&v, spec.quantile).unwrap_or(floor) * spec.margin).max(floor)
    };
    let (forest_thr, forest_median) = match &forest {
        Some(f) => {
            let s: Vec<f64> = tune.iter().map(|r| f.score(&stats_of(&r.station).normalise(&r.evidence))).collect();
            let med = quantile(&s, 0.5).unwrap_or(0.5);
            let top = quantile(&s, spec.quantile).unwrap_or(1.0);
            (med + spec.margin * (top - med).max(1e-3), med)
        }
        None => (1.0, 0.5),
    };
    let thresholds = Thresholds {
        residual_z: q(&|r| r.evidence.present[0].then(|| r.evidence.values[0].abs()), 3.0),
        stuck_hours: q(&|r| r.evidence.present[2].then_some(r.evidence.values[2]), 2.0),
        stuck_score: q(&|r| r.evidence.present[8].then_some(r.evidence.values[8]), 3.0),
        cusum_up: q(&|r| Some(r.evidence.values[3]), 3.0),
        cusum_down: q(&|r| Some(r.evidence.values[4]), 3.0),
        forest: forest_thr,
        forest_median,
    };
    let model = AnomalyModel {
        model_type: spec.model.clone(),
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        stations,
        pooled,
        thresholds,
        forest,
    };
    model
        .validate()
        .map_err(|m| TrainError::NotEnoughData(format!("the fitted model is not servable: {m}")))?;
    let model_bytes = serde_json::to_vec(&model).map_err(|e| TrainError::NotEnoughData(e.to_string()))?;
    let reloaded: AnomalyModel = serde_json::from_slice(&model_bytes).map_err(|e| TrainError::NotEnoughData(e.to_string()))?;
    let version = match &o.version {
        Some(v) => v.clone(),
        None => store.next_version("anomaly")?,
    };
    let name = format!("{}/{version}", spec.model);

    // 3. Evaluate: injected faults in the test period, and the clean test period.
    let (faulty, windows) = faults::inject(&data.records, &o.periods.test, FAULTS_PER_KIND, spec.seed);
    let serving = Serving {
        forecast,
        anomaly: Some(Served {
            name: name.clone(),
            model: Arc::new(reloaded),
        }),
    };
    let run = |records: &[crate::contract::FeatureRecord], label: &str| {
        let bar = Progress::new(records.len() as u64, label, o.quiet);
        let mut model_flags = Vec::new();
        let mut rule_flags = Vec::new();
        let mut scores: HashMap<(String, i64), (f64, f64)> = HashMap::new();
        let mut hours = 0u64;
        replay(records, &serving, p, Some(&bar), |step| {
            if !o.periods.test.contains(step.record.window_end) {
                return;
            }
            hours += 1;
            let key = (step.record.station_id.clone(), step.record.hour_index());
            if step.anomaly.is_anomaly {
                model_flags.push(key.clone());
            }
            if step.rules.is_anomaly {
                rule_flags.push(key.clone());
            }
            scores.insert(key, (step.anomaly.score, step.rules.score));
        });
        bar.finish(&format!("{hours} test hours"));
        (model_flags, rule_flags, scores, hours)
    };
    let (flags_f, rules_f, scores_f, _) = run(&faulty, "anomaly: faulty test period");
    let (flags_c, rules_c, _, clean_hours) = run(&data.records, "anomaly: clean test period");
    let with_model = event_scores(&windows, &flags_f, GRACE_H);
    let rules_only = event_scores(&windows, &rules_f, GRACE_H);
    let clean_model = event_scores(&[], &flags_c, GRACE_H).alarms;
    let clean_rules = event_scores(&[], &rules_c, GRACE_H).alarms;

    // 4. Report.
    let report = render_report(
        o,
        &data.source,
        &name,
        &forecast_name,
        &model,
        &with_model,
        &rules_only,
        (clean_model, clean_rules, clean_hours),
    );
    let chart = score_chart(&windows, &scores_f, &name).svg();
    let summary = serde_json::json!({
        "forecaster": forecast_name,
        "faults": windows.len(),
        "with_model": scores_json(&with_model),
        "rules_only": scores_json(&rules_only),
        "clean_alarms_per_1000h": {"with_model": per_1000(clean_model, clean_hours), "rules_only": per_1000(clean_rules, clean_hours)},
    });
    let metrics = serde_json::json!({ "summary": summary, "faults": windows, "thresholds": model.thresholds });
    let files: Vec<(&str, Vec<u8>)> = vec![
        (MODEL_FILE, model_bytes),
        ("report.md", report.clone().into_bytes()),
        ("metrics.json", serde_json::to_vec_pretty(&metrics).unwrap_or_default()),
        ("anomaly_scores.svg", chart.into_bytes()),
    ];
    if o.dry_run {
        if let Some(dir) = &o.report_dir {
            write_report_dir(dir, &files[1..])?;
        }
        return Ok(TrainOutcome {
            version: None,
            dir: o.report_dir.clone(),
            promoted: false,
            report,
            metrics: summary,
        });
    }
    let mut hyper = serde_json::to_value(spec).unwrap_or_default();
    hyper["forecaster"] = serde_json::Value::String(forecast_name);
    let meta = ModelMeta {
        kind: "anomaly".into(),
        model_type: spec.model.clone(),
        version: version.clone(),
        created_at: Some(Utc::now()),
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        data: DataInfo {
            source: data.source.clone(),
            stations: data.stations(),
            records: data.records.len(),
            train: Some(o.periods.train),
            calibration: Some(o.periods.calibration),
            test: Some(o.periods.test),
        },
        hyperparameters: hyper,
        crate_versions: crate_versions(),
        holdout: summary.clone(),
        files: BTreeMap::new(),
    };
    store_version(&store, meta, &files, o.promote, report, summary)
}

fn per_1000(alarms: usize, hours: u64) -> f64 {
    alarms as f64 * 1000.0 / hours.max(1) as f64
}

fn scores_json(s: &EventScores) -> serde_json::Value {
    serde_json::json!({
        "precision": s.precision(), "recall": s.recall(), "f1": s.f1(),
        "detected": s.detected, "faults": s.faults, "alarms": s.alarms, "false_alarms": s.false_alarms,
        "recall_by_kind": s.recall_by_kind.iter().map(|(k, (d, n))| (k.clone(), serde_json::json!({"detected": d, "faults": n}))).collect::<BTreeMap<_, _>>(),
    })
}

#[allow(clippy::too_many_arguments)]
fn render_report(
    o: &TrainOptions,
    source: &str,
    name: &str,
    forecaster: &str,
    model: &AnomalyModel,
    with_model: &EventScores,
    rules_only: &EventScores,
    clean: (usize, usize, u64),
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Anomaly model {name}\n");
    let _ = writeln!(s, "- data: {source}");
    let _ = writeln!(
        s,
        "- fit on normal hours (rules quiet) of {}; thresholds on {} and {}; evaluated on {} with {} faults of each kind per station injected",
        o.periods.train, o.periods.train, o.periods.calibration, o.periods.test, FAULTS_PER_KIND
    );
    let _ = writeln!(
        s,
        "- expectations from the forecaster {forecaster}; hyperparameters {}",
        serde_json::to_string(&o.config.anomaly).unwrap_or_default()
    );
    let t = &model.thresholds;
    let _ = writeln!(
        s,
        "- thresholds: |residual z| {:.2}, stuck run {:.0} h or stuck score {:.1}, CUSUM up {:.2} / down {:.2}, isolation score {:.3} (normal median {:.3})\n",
        t.residual_z, t.stuck_hours, t.stuck_score, t.cusum_up, t.cusum_down, t.forest, t.forest_median
    );
    let _ = writeln!(
        s,
        "## Event-level detection on injected faults (alarms: runs of flagged hours; grace {GRACE_H} h after a fault)\n"
    );
    let row = |label: &str, e: &EventScores| {
        vec![
            label.to_string(),
            format!("{}/{}", e.detected, e.faults),
            num(e.recall(), 3),
            e.alarms.to_string(),
            e.false_alarms.to_string(),
            num(e.precision(), 3),
            num(e.f1(), 3),
        ]
    };
    s.push_str(&markdown_table(
        &["detector", "detected", "recall", "alarms", "false alarms", "precision", "F1"],
        &[row(&format!("{name} + rules"), with_model), row("rules/v1 only", rules_only)],
    ));
    let _ = writeln!(s, "\n## Recall by fault kind\n");
    let kinds: Vec<Vec<String>> = with_model
        .recall_by_kind
        .iter()
        .map(|(k, (d, n))| {
            let r = rules_only.recall_by_kind.get(k).copied().unwrap_or((0, 0));
            vec![k.clone(), format!("{d}/{n}"), format!("{}/{}", r.0, r.1)]
        })
        .collect();
    s.push_str(&markdown_table(&["fault", "model + rules", "rules only"], &kinds));
    let _ = writeln!(
        s,
        "\n## Clean test period\n\n{} station-hours: {} alarm events with the model ({} per 1000 h), {} with the rules only ({} per 1000 h)",
        clean.2,
        clean.0,
        num(per_1000(clean.0, clean.2), 2),
        clean.1,
        num(per_1000(clean.1, clean.2), 2)
    );
    let _ = writeln!(s, "\nPlot: `anomaly_scores.svg` (scores around the first injected drift).");
    s
}

fn score_chart(windows: &[EventWindow], scores: &HashMap<(String, i64), (f64, f64)>, name: &str) -> Chart {
    let Some(w) = windows.iter().find(|w| w.kind == "drift").or(windows.first()) else {
        return Chart::default();
    };
    let (h0, h1) = (w.start - 72, w.end + 72);
    let x = |h: i64| (h - h0) as f64;
    let get = |h: i64, i: usize| {
        scores
            .get(&(w.station.clone(), h))
            .map_or(f64::NAN, |s| if i == 0 { s.0 } else { s.1 })
    };
    let marked: Vec<&EventWindow> = windows
        .iter()
        .filter(|f| f.station == w.station && f.end >= h0 && f.start <= h1)
        .collect();
    Chart {
        title: format!(
            "{}: anomaly score around an injected {} ({} h)",
            w.station,
            w.kind,
            w.end - w.start + 1
        ),
        x_label: format!("hours from {}", hour_time(h0).format("%Y-%m-%d %H:00Z")),
        y_label: "score".into(),
        x_ticks: vec![],
        bands: marked
            .iter()
            .map(|f| Band {
                name: format!("fault: {}", f.kind),
                color: "#d62728".into(),
                points: vec![(x(f.start) - 0.5, 0.0, 1.0), (x(f.end) + 0.5, 0.0, 1.0)],
            })
            .collect(),
        lines: vec![
            Line {
                name: format!("{name} + rules"),
                color: "black".into(),
                points: (h0..=h1).map(|h| (x(h), get(h, 0))).collect(),
                dashed: false,
            },
            Line {
                name: "rules only".into(),
                color: "#1f77b4".into(),
                points: (h0..=h1).map(|h| (x(h), get(h, 1))).collect(),
                dashed: true,
            },
            Line {
                name: "flag threshold".into(),
                color: "#7f7f7f".into(),
                points: vec![(0.0, 0.5), (x(h1), 0.5)],
                dashed: true,
            },
        ],
    }
}
