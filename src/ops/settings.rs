//! The `[http]` and `[monitoring]` sections of `cluster.toml`, their validation, and the address
//! each process serves HTTP on.
//!
//! ```text
//!   [http] bind = "127.0.0.1:9460"  ──>  process 0: 127.0.0.1:9460, process 1: 127.0.0.1:9461, ...
//!   [http] bind = "127.0.0.1:0"     ──>  an ephemeral port per process, recorded in
//!                                        <checkpoint.dir>/endpoints/process-<i>.json (for `status`)
//! ```

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::{Problem, RawConfig, StartFrom};

/// `[http]`: the per-process HTTP server (`/metrics`, `/api/*`, the dashboard).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Serve HTTP at all.
    pub enabled: bool,
    /// `ip:port` of process 0; process `i` uses port + `i`. Port 0: an ephemeral port per process.
    /// The default binds to the loopback interface only: the endpoints have no authentication.
    pub bind: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            enabled: true,
            bind: "127.0.0.1:0".into(),
        }
    }
}

impl HttpSection {
    /// The address process `process` binds (`None` if `bind` does not parse; validation
    /// reports that).
    pub fn address(&self, process: usize) -> Option<SocketAddr> {
        let base: SocketAddr = self.bind.parse().ok()?;
        if base.port() == 0 {
            return Some(base);
        }
        let port = u16::try_from(base.port() as usize + process).ok()?;
        Some(SocketAddr::new(base.ip(), port))
    }
}

/// `[monitoring]`: the model-monitoring stage (`dataflows/monitoring.rs`), run when
/// `pipeline.stages` lists `"monitoring"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringSection {
    /// Rolling window (hours of forecast valid time per station) of the verification metrics.
    pub window_hours: u64,
    /// Least time (ms) between two publications of a station's metrics (0: every epoch).
    pub publish_interval_ms: u64,
    /// Verification pairs with a persistence reference a station needs before a skill alert.
    pub min_pairs: u64,
    /// Hours of actual temperatures kept per station for the dashboard chart.
    pub chart_hours: u64,
    /// Where the stage starts reading both topics: "earliest" (rebuild the windows from what
    /// the topics retain), "committed" or "latest".
    pub start: StartFrom,
}

impl Default for MonitoringSection {
    fn default() -> Self {
        MonitoringSection {
            window_hours: 168,
            publish_interval_ms: 5000,
            min_pairs: 240,
            chart_hours: 48,
            start: StartFrom::Earliest,
        }
    }
}

/// Problems of `[http]` and `[monitoring]`.
pub fn validate(raw: &RawConfig, out: &mut Vec<Problem>) {
    let mut bad = |field: &str, message: String| {
        out.push(Problem {
            field: field.into(),
            message,
        })
    };
    let h = &raw.http;
    match h.bind.parse::<SocketAddr>() {
        Err(_) => bad(
            "http.bind",
            format!(
                "{:?} is not \"ip:port\" (an IP address, not a host name), e.g. \"127.0.0.1:9460\"",
                h.bind
            ),
        ),
        Ok(a) if a.port() != 0 => {
            let n = raw.cluster.processes.len().max(1);
            if a.port() as usize + n - 1 > u16::MAX as usize {
                bad("http.bind", format!("port {} + {} processes runs past 65535", a.port(), n));
            }
            for i in 0..n {
                let Some(mine) = h.address(i) else { continue };
                if let Some(j) = raw.cluster.processes.iter().position(|p| same_endpoint(p, mine)) {
                    bad(
                        "http.bind",
                        format!("process {i} would serve HTTP on {mine}, which is cluster.processes[{j}]; choose another port"),
                    );
                }
            }
        }
        Ok(_) => {}
    }
    let m = &raw.monitoring;
    if m.window_hours == 0 || m.window_hours > 24 * 90 {
        bad(
            "monitoring.window_hours",
            format!("is {}; expected 1 to 2160 hours (90 days)", m.window_hours),
        );
    }
    if m.publish_interval_ms > 3_600_000 {
        bad(
            "monitoring.publish_interval_ms",
            format!("is {}; expected 0 (every epoch) to 3600000 ms", m.publish_interval_ms),
        );
    }
    if m.chart_hours == 0 || m.chart_hours > 24 * 14 {
        bad("monitoring.chart_hours", format!("is {}; expected 1 to 336 hours", m.chart_hours));
    }
    let t = &raw.topics;
    let others = [
        ("features", &t.features),
        ("predictions", &t.predictions),
        ("dlq", &t.dlq),
        ("raw", &t.raw),
        ("raw_dlq", &t.raw_dlq),
        ("late", &t.late),
    ];
    if let Some((other, _)) = others.iter().find(|(_, n)| **n == t.model_metrics) {
        bad(
            "topics.model_metrics",
            format!("{:?} is also topics.{other}; every topic must be different", t.model_metrics),
        );
    }
}

fn same_endpoint(process: &str, http: SocketAddr) -> bool {
    let Some((host, port)) = process.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let same_host = match host.parse::<IpAddr>() {
        Ok(ip) => ip == http.ip() || http.ip().is_unspecified(),
        Err(_) => host == "localhost" && http.ip().is_loopback(),
    };
    same_host && port.parse::<u16>().ok() == Some(http.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_process_index_and_zero_stays_ephemeral() {
        let h = HttpSection {
            enabled: true,
            bind: "127.0.0.1:9460".into(),
        };
        assert_eq!(h.address(0).unwrap().to_string(), "127.0.0.1:9460");
        assert_eq!(h.address(3).unwrap().to_string(), "127.0.0.1:9463");
        assert_eq!(HttpSection::default().address(5).unwrap().port(), 0);
        assert!(HttpSection::default().address(0).unwrap().ip().is_loopback(), "safe default");
    }

    #[test]
    fn bad_http_and_monitoring_settings_are_named() {
        let raw = RawConfig::parse(
            "[cluster]\nprocesses = [\"127.0.0.1:2101\", \"127.0.0.1:2102\"]\n[http]\nbind = \"127.0.0.1:2100\"\n[monitoring]\nwindow_hours = 0\nchart_hours = 9999\n[topics]\nmodel_metrics = \"weather-features\"\n",
        )
        .unwrap();
        let problems = raw.validate();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "http.bind",
            "monitoring.window_hours",
            "monitoring.chart_hours",
            "topics.model_metrics",
        ] {
            assert!(fields.contains(&f), "{f} missing from {problems:?}");
        }
        assert!(problems.iter().any(|p| p.message.contains("cluster.processes[0]")), "{problems:?}");
        let e = RawConfig::parse("[http]\nbind = \"localhost:80\"\n").unwrap().validate();
        assert!(
            e.iter().any(|p| p.field == "http.bind" && p.message.contains("IP address")),
            "{e:?}"
        );
        assert!(RawConfig::parse("[http]\nbnd = 1\n").is_err(), "unknown fields are errors");
    }
}
