//! Helpers of the operations tests: a streaming weatherflow process with HTTP and the
//! monitoring stage, polling with a deadline, and a parser of the Prometheus text format.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::common::{bin, write_config, Topics};

/// A config with HTTP on `127.0.0.1:port`, the inference and monitoring stages, a topic for the
/// model metrics, and `extra` appended.
pub fn ops_config(name: &str, t: &Topics, brokers: &str, partitions: i32, port: u16, extra: &str) -> PathBuf {
    let path = write_config(name, t, brokers, 1, 2, partitions, &t.predictions);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replacen(
        "[topics]\n",
        &format!("[topics]\nmodel_metrics = \"{}-model-metrics\"\n", t.features),
        1,
    );
    text.push_str(&format!(
        "[http]\nbind = \"127.0.0.1:{port}\"\n[pipeline]\nstages = [\"inference\", \"monitoring\"]\n[monitoring]\npublish_interval_ms = 200\nwindow_hours = 2160\nmin_pairs = 100000\n{extra}"
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// A `weatherflow run` child process; killed on drop if still running.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `weatherflow run --config cfg` (streaming), logging to a file.
    pub fn start(cfg: &Path, name: &str) -> Proc {
        let log = std::env::temp_dir()
            .join("weatherflow-tests")
            .join(format!("{}.log", super::common::unique(name)));
        let file = std::fs::File::create(&log).unwrap();
        let child = bin()
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc { child: Some(child), log }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits (at most 60 s) for a clean exit; returns its status and log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid with a valid signal has no memory effects.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.log());
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("did not stop within 60 s after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 200 ms until it returns `Some`; panics with the log after `limit` or if the
/// process exits.
pub fn wait_for<T>(proc: &Proc, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("condition not met within {limit:?}; log:\n{}", proc.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET http://addr/path` (status, body); status 0 when the connection fails.
pub fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    weatherflow::ops::http::get(addr, path, Duration::from_secs(10)).unwrap_or((0, Vec::new()))
}

/// One sample of the exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes for histograms).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the Prometheus text exposition format; panics on a malformed line, and checks every
/// sample's family was announced with `# TYPE` first.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap().to_string();
            assert!(!typed.contains(&name), "family {name} announced twice");
            typed.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_once(' ').map(|(n, _)| (n, &line[n.len()..])).unwrap(),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut key = String::new();
            let mut end = 0;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => value.push('\n'),
                                    Some(o) => value.push(o),
                                    None => panic!("{line}"),
                                },
                                '"' => break,
                                o => value.push(o),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    o => key.push(o),
                }
            }
            rest = &r[end..];
        }
        let value: f64 = match rest.trim() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.iter().any(|t| t == f)))
            .unwrap_or(name);
        assert!(typed.iter().any(|t| t == family), "sample before its # TYPE: {line}");
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `/metrics` of the process at `addr`, parsed (`None` when it does not answer).
pub fn scrape(addr: &str) -> Option<Vec<Sample>> {
    let (code, body) = get(addr, "/metrics");
    (code == 200).then(|| parse_exposition(&String::from_utf8_lossy(&body)))
}

/// Sum of the samples called `name` whose labels include all of `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}
