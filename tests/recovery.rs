//! Recovery tests against real broker processes: kill -9 of random cluster processes at random
//! moments, rescaling between runs, a corrupted checkpoint, and a broker outage. Each checks the
//! output exactly: every expected prediction and dead letter once, and the predictions equal to
//! those of an uninterrupted run (ignoring issued_at).
//!
//! `scripts/soak` runs the crash test longer (`WEATHERFLOW_CRASH_KILLS`, `WEATHERFLOW_CRASH_RECORDS`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use weatherflow::kafka::sink::ID_HEADER;

/// The recovery tests start several clusters and brokers each; on a 2-core machine they run one
/// at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic PRNG (xorshift64*), seeded from the clock; the seed is printed.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let seed = std::env::var("WEATHERFLOW_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("random seed: WEATHERFLOW_TEST_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Input: NYC records with a few malformed ones mixed in.
fn input(n: usize) -> Vec<(Option<String>, String)> {
    let mut v = nyc(n);
    for i in (0..n).step_by(997) {
        v.insert(i, (Some("JFK".into()), format!("broken record {i}")));
    }
    v
}

/// Everything written to the output topics, checked for duplicates: id -> normalised payload.
fn outputs(b: &str, predictions: &str, dlq: &str) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let mut dups = Vec::new();
    for topic in [predictions, dlq] {
        for m in read_all(b, topic) {
            // `<lineage>/<input position>`: compare runs by the input position answered.
            let full = m.header(ID_HEADER).expect("every output carries its id");
            let id = full.split_once('/').map(|(_, id)| id.to_string()).unwrap_or(full);
            let body = if topic == predictions {
                let mut v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                v.as_object_mut().unwrap().remove("issued_at");
                v.to_string()
            } else {
                format!(
                    "{}|{}",
                    m.header("weatherflow.error").unwrap_or_default(),
                    String::from_utf8_lossy(&m.payload)
                )
            };
            if seen.insert(id.clone(), body).is_some() {
                dups.push(id);
            }
        }
    }
    assert!(
        dups.is_empty(),
        "{} outputs were written more than once, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    seen
}

/// The uninterrupted reference: 1 process x 1 worker over the same input topic.
fn reference(b: &str, t: &Topics, partitions: i32) -> BTreeMap<String, String> {
    let r = Topics {
        features: t.features.clone(),
        predictions: format!("{}-ref", t.predictions),
        dlq: format!("{}-ref", t.dlq),
    };
    let cfg = write_config("reference", &r, b, 1, 1, partitions, &r.predictions);
    run_cluster(&cfg);
    outputs(b, &r.predictions, &r.dlq)
}

fn assert_same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
    assert_eq!(got.len(), want.len(), "number of distinct outputs");
    for (id, body) in want {
        match got.get(id) {
            None => panic!("output {id} is missing"),
            Some(g) => assert_eq!(g, body, "output {id} differs from the uninterrupted run"),
        }
    }
}

fn set_in_config(cfg: &Path, section: &str, line: &str) {
    let text = std::fs::read_to_string(cfg)
        .unwrap()
        .replace(&format!("[{section}]\n"), &format!("[{section}]\n{line}\n"));
    std::fs::write(cfg, text).unwrap();
}

/// PIDs of the cluster processes started for `cfg`.
fn cluster_pids(cfg: &Path) -> Vec<i32> {
    let needle = cfg.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            (cmd.contains(&needle) && cmd.contains("--process ")).then_some(pid)
        })
        .collect()
}

/// Starts the local launcher for `cfg`, logging to `<cfg>.log` (printed by [`wait_for`] on a
/// time-out).
fn launch(cfg: &Path) -> Child {
    let log = std::fs::File::create(cfg.with_extension("log")).unwrap();
    bin()
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log_tail(cfg: &Path) -> String {
    let text = std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn stop(mut launcher: Child) {
    unsafe { libc::kill(launcher.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            assert!(status.success(), "the launcher stops cleanly: {status}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "launcher did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_random_processes_at_random_moments_and_output_stays_exact() {
    let _serial = serial();
    let b = brokers();
    let t = topics("crash");
    let kills = env_usize("WEATHERFLOW_CRASH_KILLS", 10);
    let records = input(env_usize("WEATHERFLOW_CRASH_RECORDS", 6000));
    let expected = records.len();
    weatherflow::kafka::ensure_topics(&b, &Default::default(), &[&t.features], 4, 1).unwrap();
    let cfg = write_config("crash", &t, &b, 2, 2, 4, &t.predictions);
    set_in_config(&cfg, "cluster", "on_failure = \"restart\"\nmax_restarts = 1000");
    // A long checkpoint interval: at a kill, outputs published after the last checkpoint are
    // usually in flight, so the restart must recognise them (read-back) to stay exactly-once.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("interval_ms = 200", "interval_ms = 1500");
    std::fs::write(&cfg, text).unwrap();
    let out_count = |b: &str| read_all(b, &t.predictions).len() + read_all(b, &t.dlq).len();

    // The input arrives while the cluster runs (and dies).
    let publisher = {
        let (b, topic, records) = (b.clone(), t.features.clone(), records.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(40) {
                publish(&b, &topic, 4, chunk);
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let mut launcher = launch(&cfg);
    let mut rng = Rng::new();
    let mut produced = 0;
    for k in 0..kills {
        // Kill while the cluster is working: after it has produced something new since the
        // last kill, at a random moment.
        wait_for("progress after a restart", Duration::from_secs(120), || out_count(&b) > produced);
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        produced = out_count(&b);
        let mut pids = cluster_pids(&cfg);
        let start = Instant::now();
        while pids.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "the cluster was not restarted");
            std::thread::sleep(Duration::from_millis(50));
            pids = cluster_pids(&cfg);
        }
        let victim = pids[rng.below(pids.len() as u64) as usize];
        eprintln!("kill {}: SIGKILL to pid {victim}", k + 1);
        unsafe { libc::kill(victim, libc::SIGKILL) };
        assert!(launcher.try_wait().unwrap().is_none(), "the launcher keeps the cluster going");
    }
    publisher.join().unwrap();
    wait_for("every output", Duration::from_secs(240), || {
        let n: usize = [&t.predictions, &t.dlq].iter().map(|topic| read_all(&b, topic).len()).sum();
        n >= expected
    });
    stop(launcher);
    let got = outputs(&b, &t.predictions, &t.dlq);
    assert_eq!(got.len(), expected, "every input answered exactly once");
    assert_same(&got, &reference(&b, &t, 4));
}

#[test]
fn rescale_one_two_one_workers_and_processes() {
    let _serial = serial();
    let b = brokers();
    let t = topics("rescale");
    let records = input(4500);
    let cfg1 = write_config("rescale", &t, &b, 1, 1, 4, &t.predictions);
    let ckpt = std::fs::read_to_string(&cfg1).unwrap();
    let ckpt_line = ckpt.lines().find(|l| l.starts_with("dir = ")).unwrap().to_string();
    let same_ckpt = |processes: usize, workers: usize| {
        let c = write_config("rescale", &t, &b, processes, workers, 4, &t.predictions);
        let text = std::fs::read_to_string(&c).unwrap();
        let old = text.lines().find(|l| l.starts_with("dir = ")).unwrap().to_string();
        let text = text.replace(&old, &ckpt_line);
        std::fs::write(&c, text).unwrap();
        c
    };
    let thirds: Vec<&[(Option<String>, String)]> = records.chunks(1500).collect();
    for (i, (processes, workers)) in [(1, 1), (1, 2), (2, 1), (1, 1)].into_iter().enumerate() {
        if let Some(part) = thirds.get(i) {
            publish(&b, &t.features, 4, part);
        }
        run_cluster(&same_ckpt(processes, workers));
    }
    let got = outputs(&b, &t.predictions, &t.dlq);
    assert_eq!(got.len(), records.len(), "every input answered exactly once across rescales");
    assert_same(&got, &reference(&b, &t, 4));
}

#[test]
fn a_corrupted_checkpoint_is_detected_and_the_previous_one_is_used() {
    let _serial = serial();
    let b = brokers();
    let t = topics("corrupt");
    let records = input(3000);
    let cfg = write_config("corrupt", &t, &b, 1, 2, 2, &t.predictions);
    publish(&b, &t.features, 2, &records[..1500]);
    run_cluster(&cfg);
    publish(&b, &t.features, 2, &records[1500..2200]);
    run_cluster(&cfg);
    // Damage the newest checkpoint: one file truncated (a partial write), as a crash could leave.
    let dir = PathBuf::from(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("dir = "))
            .unwrap()
            .trim_matches('"'),
    )
    .join("inference");
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    ckpts.sort();
    let newest = ckpts.last().unwrap();
    let file = std::fs::read_dir(newest)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    publish(&b, &t.features, 2, &records[2200..]);
    let out = run_cluster(&cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("skipping checkpoint"), "the damaged checkpoint is reported: {log}");
    let got = outputs(&b, &t.predictions, &t.dlq);
    assert_eq!(
        got.len(),
        records.len(),
        "the older checkpoint plus read-back keeps it exactly once"
    );
    assert_same(&got, &reference(&b, &t, 2));
}

/// A Tansu broker with durable sqlite storage on its own port, for the outage test.
struct DurableBroker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl DurableBroker {
    fn start(&mut self) {
        let tansu = [
            "tansu".to_string(),
            format!("{}/.cargo/bin/tansu", std::env::var("HOME").unwrap_or_default()),
        ]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .expect("tansu is installed (scripts/kafka-up installs it)");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("tansu.log")).unwrap();
        let child = Command::new(tansu)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        wait_for("the durable broker", Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn broker_outage_of_30_seconds_loses_and_duplicates_nothing() {
    let _serial = serial();
    let port = free_ports(1)[0];
    let dir = std::env::temp_dir().join(unique("durable-broker"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut broker = DurableBroker { port, dir, child: None };
    broker.start();
    let b = format!("127.0.0.1:{port}");
    let t = topics("outage");
    let records = input(3000);
    weatherflow::kafka::ensure_topics(&b, &Default::default(), &[&t.features], 2, 1).unwrap();
    publish(&b, &t.features, 2, &records[..1500]);
    let cfg = write_config("outage", &t, &b, 1, 2, 2, &t.predictions);
    let launcher = launch(&cfg);
    wait_for("first outputs", Duration::from_secs(60), || {
        !read_all(&b, &t.predictions).is_empty()
    });
    broker.stop();
    eprintln!("broker stopped for 30 s");
    std::thread::sleep(Duration::from_secs(30));
    broker.start();
    eprintln!("broker back");
    publish(&b, &t.features, 2, &records[1500..]);
    wait_for("every output", Duration::from_secs(180), || {
        read_all(&b, &t.predictions).len() + read_all(&b, &t.dlq).len() >= records.len()
    });
    stop(launcher);
    let got = outputs(&b, &t.predictions, &t.dlq);
    assert_eq!(got.len(), records.len(), "nothing lost");
    assert_same(&got, &reference(&b, &t, 2));
}

/// Adds the features stage to a test config: raw observations in, both stages, deterministic
/// watermarks (no wall-clock idle advance during the test).
fn chain_config(name: &str, t: &Topics, b: &str, processes: usize, workers: usize, predictions: &str) -> PathBuf {
    let cfg = write_config(name, t, b, processes, workers, 4, predictions);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[topics]\n",
        &format!(
            "[topics]\nraw = \"{}-raw\"\nraw_dlq = \"{}-rawdlq\"\nlate = \"{}-late\"\n",
            t.features, t.features, t.features
        ),
    );
    let text = format!("{text}[pipeline]\nstages = [\"features\", \"inference\"]\n[features]\nidle_timeout_ms = 3600000\n");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Features (by station and window) and predictions (by station and window_end) of a chain run,
/// each checked for duplicates.
fn chain_outputs(b: &str, features: &str, predictions: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut f = BTreeMap::new();
    for m in read_all(b, features) {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let key = format!("{}@{}", v["station_id"].as_str().unwrap(), v["window_end"].as_str().unwrap());
        assert!(f.insert(key.clone(), v.to_string()).is_none(), "feature window {key} written twice");
    }
    let mut p = BTreeMap::new();
    for m in read_all(b, predictions) {
        let mut v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let key = format!("{}@{}", v["station_id"].as_str().unwrap(), v["window_end"].as_str().unwrap());
        let o = v.as_object_mut().unwrap();
        o.remove("issued_at");
        o.remove("source"); // offsets in two different features topics
        assert!(p.insert(key.clone(), v.to_string()).is_none(), "prediction {key} written twice");
    }
    (f, p)
}

#[test]
fn the_features_and_inference_chain_survives_kills_exactly_once() {
    let _serial = serial();
    let b = brokers();
    let t = topics("chain");
    let raw = format!("{}-raw", t.features);
    let obs = weatherflow::observations::load_file(
        weatherflow::observations::SourceFormat::NycAsos,
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/raw/nyc_asos_2013_hourly.csv"),
    )
    .unwrap();
    // Three months of the three stations, in file order (per station in time order), published
    // over about 40 s so that the kills land while data flows.
    let records: Vec<(Option<String>, String)> = obs
        .iter()
        .filter(|o| o.time < chrono::DateTime::parse_from_rfc3339("2013-04-01T00:00:00Z").unwrap())
        .map(|o| {
            (
                Some(o.station_id.clone()),
                String::from_utf8(weatherflow::observations::message::encode_observation(o)).unwrap(),
            )
        })
        .collect();
    weatherflow::kafka::ensure_topics(&b, &Default::default(), &[&raw], 4, 1).unwrap();
    let cfg = chain_config("chain", &t, &b, 2, 1, &t.predictions);
    set_in_config(&cfg, "cluster", "on_failure = \"restart\"\nmax_restarts = 1000");
    let publisher = {
        let (b, raw, records) = (b.clone(), raw.clone(), records.clone());
        std::thread::spawn(move || {
            for chunk in records.chunks(30) {
                publish(&b, &raw, 4, chunk);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut launcher = launch(&cfg);
    let mut rng = Rng::new();
    let count = |b: &str| read_all(b, &t.predictions).len();
    let mut produced = 0;
    for k in 0..env_usize("WEATHERFLOW_CRASH_KILLS", 10) {
        let start = Instant::now();
        while count(&b) <= produced {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no progress after a restart; launcher log:\n{}",
                log_tail(&cfg)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        produced = count(&b);
        let pids = cluster_pids(&cfg);
        if let Some(victim) = (!pids.is_empty()).then(|| pids[rng.below(pids.len() as u64) as usize]) {
            eprintln!("kill {}: SIGKILL to pid {victim}", k + 1);
            unsafe { libc::kill(victim, libc::SIGKILL) };
        }
        assert!(launcher.try_wait().unwrap().is_none(), "the launcher keeps the cluster going");
    }
    publisher.join().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop(launcher);
    // Complete the last (open) windows: a batch run resumes from the final checkpoint.
    run_cluster(&cfg);
    let (features, predictions) = chain_outputs(&b, &t.features, &t.predictions);

    let r = Topics {
        features: format!("{}-ref", t.features),
        predictions: format!("{}-ref", t.predictions),
        dlq: format!("{}-ref", t.dlq),
    };
    let rcfg = chain_config("chain-ref", &r, &b, 1, 1, &r.predictions);
    let text = std::fs::read_to_string(&rcfg)
        .unwrap()
        .replace(&format!("raw = \"{}-raw\"", r.features), &format!("raw = \"{raw}\""));
    std::fs::write(&rcfg, text).unwrap();
    run_cluster(&rcfg);
    let (want_f, want_p) = chain_outputs(&b, &r.features, &r.predictions);
    assert_eq!(features.len(), want_f.len(), "feature windows");
    assert_eq!(features, want_f, "features equal to an uninterrupted run");
    assert_eq!(predictions.len(), want_p.len(), "predictions");
    assert_eq!(predictions, want_p, "predictions equal to an uninterrupted run");
}
