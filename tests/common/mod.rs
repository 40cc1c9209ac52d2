//! Shared helpers for the integration tests: the real broker, unique topics, the built binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use weatherflow::kafka::{self, ReadMessage};

/// The test broker (a real Kafka-protocol broker over TCP, started by `scripts/kafka-up`).
pub fn brokers() -> String {
    let b = std::env::var("WEATHERFLOW_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = b.split(',').next().unwrap_or_default().to_string();
    let addr = first.parse().unwrap_or_else(|e| panic!("WEATHERFLOW_TEST_BROKERS={b}: {e}"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_err() {
        panic!("no Kafka broker at {b}: start one with scripts/kafka-up (or run scripts/test)");
    }
    b
}

/// Unique topic names for one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub features: String,
    pub predictions: String,
    pub dlq: String,
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t-{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn topics(name: &str) -> Topics {
    let u = unique(name);
    Topics {
        features: format!("{u}-features"),
        predictions: format!("{u}-predictions"),
        dlq: format!("{u}-dlq"),
    }
}

/// Ports nobody listens on right now (for timely processes), below Linux's ephemeral range
/// (32768-60999). A port the kernel handed out (`127.0.0.1:0`) could be taken again as the source
/// port of an outgoing connection, such as a Kafka client's, before the timely process bound it
/// ("Address already in use"). Tests of one binary run in parallel: a shared counter keeps them
/// apart, and a per-process offset keeps test binaries that run at the same time apart.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let offset = std::process::id().wrapping_mul(7_919) % SPAN;
    let mut ls: Vec<TcpListener> = Vec::new();
    while ls.len() < n {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < SPAN, "no free port left below the ephemeral range");
        let port = (LOW + (offset + k) % SPAN) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            ls.push(l);
        }
    }
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Writes a cluster config for a test run and returns its path.
pub fn write_config(
    name: &str,
    t: &Topics,
    brokers: &str,
    processes: usize,
    workers: usize,
    partitions: i32,
    predictions_topic: &str,
) -> PathBuf {
    let ports = free_ports(processes);
    let addrs: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let dir = std::env::temp_dir().join("weatherflow-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", unique(name)));
    let text = format!(
        r#"[cluster]
processes = [{addrs}]
workers = {workers}
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[topics]
features = "{f}"
predictions = "{predictions_topic}"
dlq = "{d}"
partitions = {partitions}
[source]
start = "earliest"
[dataflow]
epoch_ms = 50
log_every_s = 0
[checkpoint]
dir = "{ckpt}"
interval_ms = 200
"#,
        addrs = addrs.join(", "),
        group = unique("group"),
        f = t.features,
        d = t.dlq,
        ckpt = dir.join(unique(&format!("{name}-ckpt"))).display(),
    );
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

/// The built binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weatherflow"))
}

/// Runs a command to completion with a time limit, killing it past the limit. Output is read
/// while the command runs (a full pipe would otherwise block it).
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    use std::io::Read;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn weatherflow");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            panic!(
                "timed out after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// `weatherflow run --config <cfg> --until-end` (all processes of the file, via the launcher).
pub fn run_cluster(config: &PathBuf) -> Output {
    let mut cmd = bin();
    cmd.args(["run", "--config"]).arg(config).arg("--until-end");
    let out = run_with_timeout(cmd, Duration::from_secs(180));
    assert!(
        out.status.success(),
        "run failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates the input topic and publishes `(key, payload)` records.
pub fn publish(brokers: &str, topic: &str, partitions: i32, records: &[(Option<String>, String)]) {
    kafka::ensure_topics(brokers, &BTreeMap::new(), &[topic], partitions, 1).unwrap();
    let n = kafka::publish_all(
        brokers,
        &BTreeMap::new(),
        topic,
        records.iter().map(|(k, v)| (k.as_deref().map(str::as_bytes), v.as_bytes())),
    )
    .unwrap();
    assert_eq!(n, records.len());
}

/// Everything in a topic.
pub fn read_all(brokers: &str, topic: &str) -> Vec<ReadMessage> {
    kafka::read_to_end(brokers, &BTreeMap::new(), topic, Duration::from_secs(60)).unwrap()
}

/// The first `n` NYC feature records as (key, line).
pub fn nyc(n: usize) -> Vec<(Option<String>, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/features/nyc_2013.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (Some(v["station_id"].as_str().unwrap().to_string()), l.to_string())
        })
        .collect()
}
