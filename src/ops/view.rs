//! What the HTTP API and the dashboard show: the monitoring dataflow's publications, kept per
//! process. The dataflow sends every publication to the first worker of every process, so each
//! process's view is complete and any process can serve the dashboard.
//!
//! ```text
//!   Published (on the station's worker) ──copy per process──exchange──> worker p·W of process p
//!        ──> View::apply (Arc<Mutex<View>> shared with the HTTP server)
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use super::monitor::{AnomalyView, OverallMetrics, Published, SkillAlert, StationMetrics, StationSnapshot};
use crate::contract::Prediction;

/// Flagged predictions kept for the anomaly feed.
pub const ANOMALIES_KEPT: usize = 200;
/// Skill alerts kept.
pub const ALERTS_KEPT: usize = 100;

/// Everything known about one station.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StationView {
    /// Chart data.
    pub snapshot: Option<StationSnapshot>,
    /// Rolling verification.
    pub metrics: Option<StationMetrics>,
    /// The newest skill alert.
    pub alert: Option<SkillAlert>,
}

/// One line of the station list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StationSummary {
    /// Station.
    pub station_id: String,
    /// Origin of the newest prediction.
    pub latest_origin: Option<DateTime<Utc>>,
    /// Observed temperature of the newest prediction's window.
    pub observed_temperature: Option<f64>,
    /// Anomaly score of the newest prediction.
    pub anomaly_score: Option<f64>,
    /// Rolling MAE over all leads.
    pub mae: Option<f64>,
    /// Rolling interval coverage over all leads.
    pub coverage: Option<f64>,
    /// Skill against persistence.
    pub skill: Option<f64>,
    /// Whether a below-persistence alert is active.
    pub below_persistence: bool,
}

/// The process's view of the monitoring stage's output.
#[derive(Clone, Debug, Default)]
pub struct View {
    stations: BTreeMap<String, StationView>,
    overall: Option<OverallMetrics>,
    anomalies: VecDeque<AnomalyView>,
    alerts: VecDeque<SkillAlert>,
    updated_at: Option<DateTime<Utc>>,
    applied: u64,
}

impl View {
    /// Takes in one publication.
    pub fn apply(&mut self, p: Published) {
        self.applied += 1;
        self.updated_at = Some(Utc::now());
        match p {
            Published::Station(s) => {
                let id = s.station_id.clone();
                self.stations.entry(id).or_default().snapshot = Some(*s);
            }
            Published::StationMetrics(m) => {
                let id = m.station_id.clone();
                self.stations.entry(id).or_default().metrics = Some(m);
            }
            Published::OverallMetrics(m) => self.overall = Some(m),
            Published::SkillAlert(a) => {
                self.stations.entry(a.station_id.clone()).or_default().alert = Some(a.clone());
                self.alerts.push_front(a);
                self.alerts.truncate(ALERTS_KEPT);
            }
            Published::Anomaly(a) => {
                let at = self
                    .anomalies
                    .iter()
                    .position(|x| x.window_end <= a.window_end)
                    .unwrap_or(self.anomalies.len());
                self.anomalies.insert(at, a);
                self.anomalies.truncate(ANOMALIES_KEPT);
            }
        }
    }

    /// Publications applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// When the last publication arrived.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    /// The station list.
    pub fn stations(&self) -> Vec<StationSummary> {
        self.stations
            .iter()
            .map(|(id, v)| {
                let latest = v.snapshot.as_ref().and_then(|s| s.latest.as_ref());
                let all = v.metrics.as_ref().map(|m| &m.metrics.all);
                StationSummary {
                    station_id: id.clone(),
                    latest_origin: latest.map(|p| p.window_end),
                    observed_temperature: latest.and_then(|p| p.observed_temperature),
                    anomaly_score: latest.map(|p| p.anomaly.score),
                    mae: all.and_then(|a| a.mae),
                    coverage: all.and_then(|a| a.coverage),
                    skill: all.and_then(|a| a.skill),
                    below_persistence: v.metrics.as_ref().is_some_and(|m| m.below_persistence),
                }
            })
            .collect()
    }

    /// Everything about one station.
    pub fn station(&self, id: &str) -> Option<&StationView> {
        self.stations.get(id)
    }

    /// The newest prediction of every station.
    pub fn latest_predictions(&self) -> BTreeMap<String, Prediction> {
        self.stations
            .iter()
            .filter_map(|(id, v)| Some((id.clone(), v.snapshot.as_ref()?.latest.clone()?.0)))
            .collect()
    }

    /// The newest flagged predictions, newest window first.
    pub fn anomalies(&self, limit: usize) -> Vec<AnomalyView> {
        self.anomalies.iter().take(limit).cloned().collect()
    }

    /// All-station verification.
    pub fn overall(&self) -> Option<&OverallMetrics> {
        self.overall.as_ref()
    }

    /// Per-station verification.
    pub fn station_metrics(&self) -> BTreeMap<String, StationMetrics> {
        self.stations
            .iter()
            .filter_map(|(id, v)| Some((id.clone(), v.metrics.clone()?)))
            .collect()
    }

    /// The newest skill alerts, newest first.
    pub fn alerts(&self) -> Vec<SkillAlert> {
        self.alerts.iter().cloned().collect()
    }

    /// `(kind, model) -> stations whose newest prediction it made`.
    pub fn models_in_use(&self) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for p in self.latest_predictions().values() {
            *out.entry(("forecast".to_string(), p.model.forecast.clone())).or_default() += 1;
            *out.entry(("anomaly".to_string(), p.model.anomaly.clone())).or_default() += 1;
        }
        out
    }
}

/// Where a process's view lives and how to reach the first worker of every process.
#[derive(Clone, Debug)]
pub struct ViewRoute {
    /// This process's view.
    pub view: Arc<Mutex<View>>,
    /// Processes in the cluster.
    pub processes: usize,
    /// Workers per process.
    pub workers: usize,
}

/// Extension trait: deliver publications to every process's view.
pub trait SinkToViews<'s> {
    /// Copies each publication to the first worker of every process, which applies it to its
    /// process's view. The returned stream is empty; probe it to know the views are current.
    fn sink_to_views(self, route: ViewRoute) -> StreamVec<'s, u64, ()>;
}

impl<'s> SinkToViews<'s> for StreamVec<'s, u64, Published> {
    fn sink_to_views(self, route: ViewRoute) -> StreamVec<'s, u64, ()> {
        let (processes, workers) = (route.processes.max(1), route.workers.max(1));
        let view = route.view;
        self.flat_map(move |p| (0..processes).map(move |i| ((i * workers) as u64, p.clone())))
            .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Exchange::new(|(w, _): &(u64, Published)| *w),
                "ApplyToView",
                move |_, _| {
                    move |input, _output| {
                        input.for_each(|_cap, data| {
                            let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
                            for (_, p) in data.drain(..) {
                                v.apply(p);
                            }
                        })
                    }
                },
            )
    }
}
