//! Process and cluster status: what `/api/status` answers for one process, and what
//! `weatherflow status` (and `/api/cluster`) gathers from every process of a config.
//!
//! ```text
//!   weatherflow status --config cluster.toml
//!     for each process i: endpoint (http.bind port + i, or <checkpoint.dir>/endpoints/process-i.json)
//!        └─> GET /api/status (timeout) ──> up + ProcessStatus | down + why
//!     ──> ClusterStatus ──> table for people, or --json
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::counters::PartitionSnapshot;
use super::http;
use crate::config::Settings;

/// Counters and rates of one stage of a process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    /// Messages read.
    pub records_in: u64,
    /// Records acknowledged into regular output topics.
    pub records_out: u64,
    /// Dead letters acknowledged.
    pub dlq: u64,
    /// Late observations acknowledged.
    pub late: u64,
    /// Messages read per second (over the last ~10 s).
    pub in_per_s: f64,
    /// Records acknowledged per second (over the last ~10 s).
    pub out_per_s: f64,
    /// Records not read yet in the partitions this process reads (`None` before the first fetch).
    pub lag: Option<i64>,
    /// Median end-to-end latency (s; bucket upper bound).
    pub latency_p50_s: Option<f64>,
    /// 99th percentile end-to-end latency (s; bucket upper bound).
    pub latency_p99_s: Option<f64>,
    /// Per topic-partition.
    pub partitions: Vec<PartitionSnapshot>,
}

/// The newest checkpoint a process wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// Its epoch (`None`: the final checkpoint of a drained run).
    pub epoch: Option<u64>,
    /// When.
    pub written_at: DateTime<Utc>,
    /// Seconds ago.
    pub age_s: f64,
    /// Write time of that worker's file (ms).
    pub took_ms: u64,
}

/// A model and how many stations' newest predictions it made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelUse {
    /// `forecast` or `anomaly`.
    pub kind: String,
    /// `type/version` as predictions name it.
    pub model: String,
    /// Stations.
    pub stations: usize,
}

/// One worker's load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Global worker index.
    pub worker: usize,
    /// Share of the last ~10 s the worker was not parked.
    pub busy_ratio: Option<f64>,
}

/// What `/api/status` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Process index.
    pub process: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// Workers per process.
    pub workers: usize,
    /// OS process id.
    pub pid: u32,
    /// weatherflow version.
    pub version: String,
    /// Where it serves HTTP.
    pub address: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Stages it runs, with their counters.
    pub stages: BTreeMap<String, StageStatus>,
    /// Newest checkpoint written here.
    pub last_checkpoint: Option<CheckpointStatus>,
    /// What the model store serves, by kind.
    pub model_store: BTreeMap<String, String>,
    /// Models of the newest verified predictions (monitoring stage).
    pub models_in_use: Vec<ModelUse>,
    /// Worker loads.
    pub workers_load: Vec<WorkerStatus>,
    /// Stations the monitoring view knows.
    pub monitored_stations: usize,
}

/// One process as seen by `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// Process index.
    pub process: usize,
    /// Its HTTP endpoint, when known.
    pub address: Option<String>,
    /// Answered `/api/status`.
    pub up: bool,
    /// Why it is considered down.
    pub error: Option<String>,
    /// Its answer.
    pub status: Option<ProcessStatus>,
}

/// The whole cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Every process of the config.
    pub processes: Vec<ProcessEntry>,
    /// Processes up.
    pub up: usize,
    /// Records not read yet, summed over the processes that answered.
    pub lag: Option<i64>,
    /// Messages read per second, all stages and processes.
    pub in_per_s: f64,
    /// Records acknowledged per second, all stages and processes.
    pub out_per_s: f64,
    /// Newest checkpoint of any process.
    pub last_checkpoint: Option<CheckpointStatus>,
    /// Models in use, merged.
    pub models: Vec<ModelUse>,
}

/// Where process `process` records its HTTP address when its port is ephemeral.
pub fn endpoint_file(checkpoint_dir: &Path, process: usize) -> PathBuf {
    checkpoint_dir.join("endpoints").join(format!("process-{process}.json"))
}

/// The HTTP endpoint of process `process` (`host:port`), or why it is not known.
pub fn endpoint(s: &Settings, process: usize) -> Result<String, String> {
    if !s.http.enabled {
        return Err("http.enabled = false".into());
    }
    let addr = s
        .http
        .address(process)
        .ok_or_else(|| format!("http.bind {:?} is not ip:port", s.http.bind))?;
    if addr.port() == 0 {
        let f = endpoint_file(&s.checkpoint.dir, process);
        let text = std::fs::read_to_string(&f)
            .map_err(|_| format!("no endpoint recorded in {} (never started with this config?)", f.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        return v["address"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("{}: no address", f.display()));
    }
    if addr.ip().is_unspecified() {
        let host = s
            .processes
            .get(process)
            .and_then(|p| p.rsplit_once(':'))
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        return Ok(format!("{host}:{}", addr.port()));
    }
    Ok(addr.to_string())
}

/// Asks every process of `s` for its status.
pub fn gather(s: &Settings, timeout: Duration) -> ClusterStatus {
    let handles: Vec<_> = (0..s.processes.len())
        .map(|i| {
            let ep = endpoint(s, i);
            std::thread::spawn(move || probe(i, ep, timeout))
        })
        .collect();
    let processes: Vec<ProcessEntry> = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            h.join().unwrap_or(ProcessEntry {
                process: i,
                address: None,
                up: false,
                error: Some("status probe failed".into()),
                status: None,
            })
        })
        .collect();
    summarise(processes)
}

/// Status of one process from its endpoint.
pub fn probe(process: usize, endpoint: Result<String, String>, timeout: Duration) -> ProcessEntry {
    let down = |address: Option<String>, error: String| ProcessEntry {
        process,
        address,
        up: false,
        error: Some(error),
        status: None,
    };
    let addr = match endpoint {
        Ok(a) => a,
        Err(e) => return down(None, e),
    };
    match http::get(&addr, "/api/status", timeout) {
        Ok((200, body)) => match serde_json::from_slice::<ProcessStatus>(&body) {
            Ok(st) if st.process == process => ProcessEntry {
                process,
                address: Some(addr),
                up: true,
                error: None,
                status: Some(st),
            },
            Ok(st) => down(Some(addr), format!("answered as process {} of another cluster", st.process)),
            Err(e) => down(Some(addr), format!("not a weatherflow status: {e}")),
        },
        Ok((code, _)) => down(Some(addr), format!("HTTP {code}")),
        Err(e) => down(
            Some(addr.clone()),
            e.to_string().replace(&format!("GET http://{addr}/api/status: "), ""),
        ),
    }
}

/// Totals over the processes that answered.
pub fn summarise(processes: Vec<ProcessEntry>) -> ClusterStatus {
    let up: Vec<&ProcessStatus> = processes.iter().filter_map(|p| p.status.as_ref()).collect();
    let lags: Vec<i64> = up.iter().flat_map(|s| s.stages.values().filter_map(|st| st.lag)).collect();
    let mut models: BTreeMap<(String, String), usize> = BTreeMap::new();
    for s in &up {
        for m in &s.models_in_use {
            let e = models.entry((m.kind.clone(), m.model.clone())).or_default();
            *e = (*e).max(m.stations);
        }
    }
    ClusterStatus {
        up: up.len(),
        lag: (!lags.is_empty()).then(|| lags.iter().sum()),
        in_per_s: up.iter().flat_map(|s| s.stages.values()).map(|st| st.in_per_s).sum(),
        out_per_s: up.iter().flat_map(|s| s.stages.values()).map(|st| st.out_per_s).sum(),
        last_checkpoint: up
            .iter()
            .filter_map(|s| s.last_checkpoint.clone())
            .max_by(|a, b| a.written_at.cmp(&b.written_at)),
        models: models
            .into_iter()
            .map(|((kind, model), stations)| ModelUse { kind, model, stations })
            .collect(),
        processes,
    }
}

/// The status for people: one line per process, then the cluster's totals.
pub fn format_human(c: &ClusterStatus) -> String {
    let mut out = format!(
        "{:<7} {:<22} {:<5} {:>9} {:>11} {:>11} {:>9} {:>5}  {}\n",
        "process", "address", "state", "uptime", "in/s", "out/s", "lag", "load", "last checkpoint"
    );
    for p in &c.processes {
        let addr = p.address.clone().unwrap_or_else(|| "-".into());
        match &p.status {
            Some(s) => {
                let lag: Vec<i64> = s.stages.values().filter_map(|st| st.lag).collect();
                let lag = if lag.is_empty() {
                    "?".to_string()
                } else {
                    lag.iter().sum::<i64>().to_string()
                };
                let in_s: f64 = s.stages.values().map(|st| st.in_per_s).sum();
                let out_s: f64 = s.stages.values().map(|st| st.out_per_s).sum();
                let stages: Vec<&str> = s.stages.keys().map(String::as_str).collect();
                let loads: Vec<f64> = s.workers_load.iter().filter_map(|w| w.busy_ratio).collect();
                let load = if loads.is_empty() {
                    "?".to_string()
                } else {
                    format!("{:.0}%", 100.0 * loads.iter().sum::<f64>() / loads.len() as f64)
                };
                out.push_str(&format!(
                    "{:<7} {:<22} {:<5} {:>9} {:>11.1} {:>11.1} {:>9} {:>5}  {}  [{}]\n",
                    p.process,
                    addr,
                    "up",
                    duration(s.uptime_s),
                    in_s,
                    out_s,
                    lag,
                    load,
                    checkpoint(&s.last_checkpoint),
                    stages.join(", ")
                ));
            }
            None => out.push_str(&format!(
                "{:<7} {:<22} {:<5}  ({})\n",
                p.process,
                addr,
                "DOWN",
                p.error.clone().unwrap_or_default()
            )),
        }
    }
    out.push_str(&format!(
        "cluster: {}/{} processes up, lag {} records, {:.1} records/s in, {:.1} records/s out, last checkpoint {}\n",
        c.up,
        c.processes.len(),
        c.lag.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into()),
        c.in_per_s,
        c.out_per_s,
        checkpoint(&c.last_checkpoint)
    ));
    let store: BTreeMap<&String, &String> = c
        .processes
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.model_store.iter())
        .collect();
    for (kind, model) in store {
        out.push_str(&format!("model store: {kind} = {model}\n"));
    }
    for m in &c.models {
        out.push_str(&format!("in use: {} {} ({} stations)\n", m.kind, m.model, m.stations));
    }
    out
}

fn checkpoint(c: &Option<CheckpointStatus>) -> String {
    match c {
        None => "none".into(),
        Some(c) => {
            let e = c.epoch.map(|e| format!("epoch {e}")).unwrap_or_else(|| "final".into());
            format!("{e}, {} ago ({} ms)", duration(c.age_s), c.took_ms)
        }
    }
}

fn duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_down_with_the_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = probe(1, Ok(format!("127.0.0.1:{port}")), Duration::from_secs(2));
        assert!(!e.up);
        assert!(e.error.as_deref().unwrap().to_lowercase().contains("refused"), "{e:?}");
        let c = summarise(vec![e, probe(0, Err("no endpoint".into()), Duration::from_secs(1))]);
        assert_eq!(c.up, 0);
        assert_eq!(c.lag, None);
        let text = format_human(&c);
        assert!(text.contains("DOWN") && text.contains("0/2 processes up"), "{text}");
    }
}
