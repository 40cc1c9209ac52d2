//! `/metrics`: the Prometheus text exposition format (version 0.0.4) of one process.
//!
//! ```text
//!   stage counters (Metrics, per stage) ─┐
//!   OpsMetrics (partitions, lag,         ├─> Exposition ──render──> "# HELP ...\n# TYPE ...\nname{labels} value\n"
//!     histograms, checkpoints)           │
//!   worker loads, model store, View ─────┘
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::counters::{HistogramSnapshot, OutKind};
use super::monitor::ScopeMetrics;
use super::view::View;
use crate::metrics::Metrics;

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric families in order of first use, each with its samples.
#[derive(Default)]
struct Families {
    order: Vec<(String, &'static str, &'static str, String)>,
}

impl Families {
    fn family(&mut self, name: &str, kind: &'static str, help: &'static str) -> &mut String {
        if let Some(i) = self.order.iter().position(|f| f.0 == name) {
            return &mut self.order[i].3;
        }
        self.order.push((name.to_string(), kind, help, String::new()));
        let last = self.order.len() - 1;
        &mut self.order[last].3
    }

    fn sample(&mut self, name: &str, kind: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
        let line = format!("{name}{} {}\n", labels_text(labels), number(value));
        self.family(name, kind, help).push_str(&line);
    }

    fn histogram(&mut self, name: &str, help: &'static str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let body = self.family(name, "histogram", help);
        for (i, c) in h.cumulative.iter().enumerate() {
            let le = h.bounds.get(i).map(|b| number(*b)).unwrap_or_else(|| "+Inf".into());
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            let _ = writeln!(body, "{name}_bucket{} {c}", labels_text(&l));
        }
        let _ = writeln!(body, "{name}_sum{} {}", labels_text(labels), number(h.sum));
        let _ = writeln!(body, "{name}_count{} {}", labels_text(labels), h.count);
    }

    fn render(self) -> String {
        let mut out = String::new();
        for (name, kind, help, body) in self.order {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&body);
        }
        out
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", parts.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Everything `/metrics` shows for one process.
pub struct Exposition<'a> {
    /// This process's index.
    pub process: usize,
    /// Process start (unix s).
    pub started_at_s: f64,
    /// `(stage, counters)` of every stage this process runs.
    pub stages: Vec<(&'static str, &'a Metrics)>,
    /// `(worker, uptime s, busy s)`.
    pub workers: Vec<(usize, f64, f64)>,
    /// `(kind, what the model store serves)`.
    pub store: Vec<(String, String)>,
    /// The monitoring view (empty without the monitoring stage).
    pub view: &'a View,
}

fn stage_counters<'m>(stage: &str, m: &'m Metrics) -> Vec<(&'static str, &'static str, &'m AtomicU64)> {
    // Messages read are reported per topic-partition (weatherflow_records_in_total).
    let common: [(&'static str, &'static str, &AtomicU64); 3] = [
        (
            "rejected_invalid",
            "Input refused as malformed or impossible (monitoring: undecodable).",
            &m.rejected_invalid,
        ),
        (
            "delivery_retries",
            "Deliveries that failed and were re-queued.",
            &m.delivery_retries,
        ),
        ("source_errors", "Consumer errors seen.", &m.source_errors),
    ];
    let mut v = common.to_vec();
    match stage {
        "features" => v.extend([
            (
                "rejected_late",
                "Observations refused as late (their window was already emitted).",
                &m.rejected_late,
            ),
            (
                "windows_emitted",
                "Feature records emitted (one per station-window).",
                &m.windows_emitted,
            ),
            ("features_acked", "Feature records acknowledged by the broker.", &m.features_acked),
            ("late_acked", "Late observations acknowledged into the late topic.", &m.late_acked),
            ("dlq_acked", "Dead letters acknowledged by the broker.", &m.dlq_acked),
        ]),
        "monitoring" => v.push((
            "model_metric_records_acked",
            "Metric and alert records acknowledged into the model-metrics topic.",
            &m.predictions_acked,
        )),
        _ => v.extend([
            (
                "rejected_stale",
                "Input refused as an older or repeated window of its station.",
                &m.rejected_stale,
            ),
            ("predictions_acked", "Predictions acknowledged by the broker.", &m.predictions_acked),
            ("dlq_acked", "Dead letters acknowledged by the broker.", &m.dlq_acked),
            ("anomalies", "Predictions flagged as anomalous.", &m.anomalies),
            (
                "forecasts_trained",
                "Forecasts made by a trained model (the others by the statistical fallback).",
                &m.forecasts_trained,
            ),
            (
                "dedup_skipped",
                "Outputs not produced again after a restart (already published).",
                &m.dedup_skipped,
            ),
            ("checkpoints", "Checkpoint files written by this process's workers.", &m.checkpoints),
            (
                "source_gated",
                "Source activations paused because checkpoints lagged.",
                &m.source_gated,
            ),
            (
                "source_throttled",
                "Source activations paused because source.max_in_flight records awaited acknowledgement.",
                &m.source_throttled,
            ),
        ]),
    }
    v
}

/// Renders the exposition.
pub fn render(e: &Exposition<'_>) -> String {
    let mut f = Families::default();
    let process = e.process.to_string();
    f.sample(
        "weatherflow_up",
        "gauge",
        "1 while the process serves.",
        &[("process", &process)],
        1.0,
    );
    f.sample(
        "weatherflow_process_start_time_seconds",
        "gauge",
        "Unix time the process started.",
        &[("process", &process)],
        e.started_at_s,
    );
    for (stage, m) in &e.stages {
        for (name, help, a) in stage_counters(stage, m) {
            f.sample(
                &format!("weatherflow_{name}_total"),
                "counter",
                help,
                &[("stage", stage)],
                a.load(Ordering::Relaxed) as f64,
            );
        }
        render_partitions(&mut f, stage, m);
        let ops = &m.ops;
        for (topic, h) in ops.latencies() {
            f.histogram(
                "weatherflow_end_to_end_latency_seconds",
                "From the epoch in which the source read a record to the broker's acknowledgement of its output (resolution: one epoch).",
                &[("stage", stage), ("topic", &topic)],
                &h,
            );
        }
        let epochs = ops.epoch_completion.snapshot();
        if epochs.count > 0 {
            f.histogram(
                "weatherflow_epoch_completion_seconds",
                "From an epoch's end (wall clock) until every output of it was acknowledged.",
                &[("stage", stage)],
                &epochs,
            );
        }
        let ckpt = ops.checkpoint_write.snapshot();
        if ckpt.count > 0 {
            f.histogram(
                "weatherflow_checkpoint_write_seconds",
                "Time to write one worker's checkpoint file.",
                &[("stage", stage)],
                &ckpt,
            );
        }
        if let Some(c) = ops.last_checkpoint() {
            let epoch = if c.epoch == u64::MAX { -1.0 } else { c.epoch as f64 };
            f.sample(
                "weatherflow_last_checkpoint_epoch",
                "gauge",
                "Epoch of the newest checkpoint written here (-1: the final checkpoint of a drained run).",
                &[("stage", stage)],
                epoch,
            );
            f.sample(
                "weatherflow_last_checkpoint_timestamp_seconds",
                "gauge",
                "Unix time the newest checkpoint was written here.",
                &[("stage", stage)],
                c.written_at_ms as f64 / 1000.0,
            );
        }
    }
    for (w, up, busy) in &e.workers {
        let w = w.to_string();
        f.sample(
            "weatherflow_worker_busy_seconds_total",
            "counter",
            "Time the worker thread was not parked (rate() of it is the worker's load).",
            &[("worker", &w)],
            *busy,
        );
        f.sample(
            "weatherflow_worker_uptime_seconds",
            "gauge",
            "Time since the worker started.",
            &[("worker", &w)],
            *up,
        );
    }
    for (kind, model) in &e.store {
        f.sample(
            "weatherflow_model_store_info",
            "gauge",
            "What the model store serves (1 per kind).",
            &[("kind", kind), ("model", model)],
            1.0,
        );
    }
    for ((kind, model), n) in e.view.models_in_use() {
        f.sample(
            "weatherflow_model_in_use_stations",
            "gauge",
            "Stations whose newest verified prediction this model made (monitoring stage).",
            &[("kind", &kind), ("model", &model)],
            n as f64,
        );
    }
    render_verification(&mut f, e.view);
    f.render()
}

fn render_partitions(f: &mut Families, stage: &str, m: &Metrics) {
    for p in m.ops.partitions() {
        let part = p.partition.to_string();
        let labels = [("stage", stage), ("topic", p.topic.as_str()), ("partition", part.as_str())];
        if p.records_in > 0 || p.worker.is_some() {
            let w = p.worker.map(|w| w.to_string()).unwrap_or_default();
            f.sample(
                "weatherflow_records_in_total",
                "counter",
                "Messages read from an input topic-partition, by the worker that reads it.",
                &[labels[0], labels[1], labels[2], ("worker", &w)],
                p.records_in as f64,
            );
        }
        match p.kind {
            Some(OutKind::Out) => f.sample(
                "weatherflow_records_out_total",
                "counter",
                "Records acknowledged into an output topic-partition.",
                &labels,
                p.acked as f64,
            ),
            Some(OutKind::Dlq) => f.sample(
                "weatherflow_records_dlq_total",
                "counter",
                "Dead letters acknowledged into a DLQ topic-partition.",
                &labels,
                p.acked as f64,
            ),
            Some(OutKind::Late) => f.sample(
                "weatherflow_records_late_total",
                "counter",
                "Late observations acknowledged into the late topic-partition.",
                &labels,
                p.acked as f64,
            ),
            None => {}
        }
        if let Some(pos) = p.position {
            f.sample(
                "weatherflow_consumer_position",
                "gauge",
                "Next offset to read.",
                &labels,
                pos as f64,
            );
        }
        if let Some(hw) = p.high_watermark {
            f.sample(
                "weatherflow_consumer_high_watermark",
                "gauge",
                "High watermark of the partition in the consumer's last fetch response.",
                &labels,
                hw as f64,
            );
        }
        if let Some(lag) = p.lag() {
            f.sample(
                "weatherflow_consumer_lag_records",
                "gauge",
                "Records in the partition not read yet (high watermark - position).",
                &labels,
                lag as f64,
            );
        }
    }
}

fn render_scope(f: &mut Families, prefix: &str, labels: &[(&str, &str)], m: &ScopeMetrics, per_lead: bool) {
    let rows: Vec<&super::monitor::LeadMetrics> = if per_lead {
        m.leads.iter().chain([&m.all]).collect()
    } else {
        vec![&m.all]
    };
    for r in rows {
        let lead = if r.lead_hours == 0 {
            "all".to_string()
        } else {
            r.lead_hours.to_string()
        };
        let mut l = labels.to_vec();
        if per_lead {
            l.push(("lead", &lead));
        }
        f.sample(
            &format!("{prefix}_verification_pairs"),
            "gauge",
            "Forecast/actual pairs in the rolling window.",
            &l,
            r.pairs as f64,
        );
        if let Some(x) = r.mae {
            f.sample(
                &format!("{prefix}_mae_celsius"),
                "gauge",
                "Rolling mean absolute error of the forecasts.",
                &l,
                x,
            );
        }
        if let Some(x) = r.persistence_mae {
            f.sample(
                &format!("{prefix}_persistence_mae_celsius"),
                "gauge",
                "Rolling mean absolute error of persistence on the same pairs.",
                &l,
                x,
            );
        }
        if let Some(x) = r.coverage {
            f.sample(
                &format!("{prefix}_interval_coverage"),
                "gauge",
                "Share of actuals inside the forecast interval.",
                &l,
                x,
            );
        }
        if let Some(x) = r.skill {
            f.sample(
                &format!("{prefix}_skill"),
                "gauge",
                "1 - model MAE / persistence MAE (below 0: worse than persistence).",
                &l,
                x,
            );
        }
    }
}

fn render_verification(f: &mut Families, view: &View) {
    if let Some(o) = view.overall() {
        render_scope(f, "weatherflow_model", &[], &o.metrics, true);
    }
    for (station, m) in view.station_metrics() {
        render_scope(f, "weatherflow_station", &[("station", &station)], &m.metrics, false);
        f.sample(
            "weatherflow_station_below_persistence",
            "gauge",
            "1 while a station's skill alert is active.",
            &[("station", &station)],
            m.below_persistence as u8 as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_one_header_and_escaped_labels() {
        let mut f = Families::default();
        f.sample("a_total", "counter", "help a", &[("station", "x\"y\\z\nw")], 3.0);
        f.sample("b", "gauge", "help b", &[], 0.25);
        f.sample("a_total", "counter", "help a", &[("station", "k")], 4.0);
        let t = f.render();
        assert_eq!(t.matches("# TYPE a_total counter").count(), 1);
        assert!(t.contains("a_total{station=\"x\\\"y\\\\z\\nw\"} 3\n"), "{t}");
        assert!(t.contains("a_total{station=\"k\"} 4\n"));
        assert!(t.contains("b 0.25\n"));
        let a = t.find("a_total{station=\"k\"}").unwrap();
        assert!(a < t.find("# HELP b").unwrap(), "samples of a family stay together:\n{t}");
    }

    #[test]
    fn histograms_end_with_inf_sum_and_count() {
        let h = super::super::counters::Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(5.0);
        let mut f = Families::default();
        f.histogram("lat_seconds", "help", &[("topic", "t")], &h.snapshot());
        let t = f.render();
        assert!(t.contains("lat_seconds_bucket{topic=\"t\",le=\"0.1\"} 1\n"), "{t}");
        assert!(t.contains("lat_seconds_bucket{topic=\"t\",le=\"1\"} 1\n"), "{t}");
        assert!(t.contains("lat_seconds_bucket{topic=\"t\",le=\"+Inf\"} 2\n"), "{t}");
        assert!(t.contains("lat_seconds_sum{topic=\"t\"} 5.05\n"), "{t}");
        assert!(t.contains("lat_seconds_count{topic=\"t\"} 2\n"), "{t}");
    }
}
