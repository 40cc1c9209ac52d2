//! Recovery time after `kill -9` (issue 5): a two-process cluster under the local launcher with
//! `on_failure = "restart"`, fed at a steady rate, one process killed at a time.
//!
//! ```text
//!   generator (steady rate) ──> <run>-features ──> weatherflow run --config <spec> (launcher)
//!                                                     ├─ process 0 ─┐ timely cluster
//!                                                     └─ process 1 ─┘ ──> <run>-predictions ──> reader (arrival times, ids)
//!   kill -9 process k ──> t_gone:     every old process has exited (the launcher stops the others)
//!                     ──> t_restart:  the launcher's new processes exist
//!                     ──> t_output:   first prediction arriving after t_restart
//!                     ──> t_caught:   every record published before the kill is answered
//!   at the end: every input answered exactly once? (duplicates and missing ids counted)
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::broker::AckCounter;
use super::cluster::{unique, ClusterSpec};
use super::data::BaseSeries;
use super::stats::median;
use crate::kafka::sink::ID_HEADER;
use crate::kafka::{self};

/// Timings of one kill, seconds after the kill.
#[derive(Clone, Debug, Serialize)]
pub struct KillTiming {
    /// Process index killed.
    pub process: usize,
    /// Every old cluster process has exited.
    pub gone_s: f64,
    /// The restarted processes exist.
    pub restarted_s: f64,
    /// The first prediction after the restart arrived.
    pub first_output_s: f64,
    /// Every record published before the kill is answered.
    pub caught_up_s: f64,
}

/// What the recovery part measured.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    /// Cluster processes x workers.
    pub processes: usize,
    /// Workers per process.
    pub workers: usize,
    /// Stations in the input.
    pub stations: usize,
    /// Input rate, records/s.
    pub rate: f64,
    /// Checkpoint interval, ms.
    pub checkpoint_ms: u64,
    /// Each kill.
    pub kills: Vec<KillTiming>,
    /// Median of `first_output_s`.
    pub median_first_output_s: f64,
    /// Median of `caught_up_s`.
    pub median_caught_up_s: f64,
    /// Records published.
    pub published: u64,
    /// Distinct inputs answered.
    pub answered: u64,
    /// Outputs seen more than once.
    pub duplicates: u64,
    /// The launcher's log.
    pub log: String,
}

/// Options of the recovery part.
#[derive(Clone, Debug)]
pub struct RecoveryOptions {
    /// Kills.
    pub kills: usize,
    /// Input rate, records/s.
    pub rate: f64,
    /// Stations.
    pub stations: usize,
    /// Epoch length, ms.
    pub epoch_ms: u64,
    /// Checkpoint interval, ms.
    pub checkpoint_ms: u64,
    /// The cluster settings to start from (brokers, client options, work dir, unique names).
    pub spec: ClusterSpec,
}

/// Pids of the cluster processes started for `cfg`, with their process index.
fn cluster_pids(cfg: &Path) -> Vec<(i32, usize)> {
    let needle = cfg.display().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if !args.contains(&needle) || !alive(pid) {
                return None;
            }
            let i = args.iter().position(|a| a == "--process")?;
            Some((pid, args.get(i + 1)?.parse().ok()?))
        })
        .collect()
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

struct Shared {
    arrivals: Mutex<Vec<(Instant, String)>>,
    published: AtomicU64,
    /// Stops the generator.
    stop: AtomicBool,
    /// Stops the reader once it has been idle for a second.
    stop_reader: AtomicBool,
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Runs the recovery measurement.
pub fn run(brokers: &str, base: &BaseSeries, o: &RecoveryOptions, work: &Path) -> Result<RecoveryReport, String> {
    let u = unique("recovery");
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut spec = o.spec.clone();
    spec.features = format!("{u}-features");
    spec.workers = 1;
    spec.processes = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    spec.restart = true;
    spec.stop_at_end = false;
    spec.epoch_ms = o.epoch_ms;
    spec.checkpoint_ms = o.checkpoint_ms;
    let cfg = spec.write(work, &u).map_err(|e| e.to_string())?;
    let log_path = work.join(format!("{u}.log"));
    kafka::ensure_topics(brokers, &Default::default(), &[&spec.features], spec.partitions, 1).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut launcher: Child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        arrivals: Mutex::new(Vec::new()),
        published: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        stop_reader: AtomicBool::new(false),
    });
    let gen = {
        let (sh, b, base, spec, o) = (shared.clone(), brokers.to_string(), base.clone(), spec.clone(), o.clone());
        std::thread::spawn(move || generator(&sh, &b, &base, &spec, &o))
    };
    let rd = {
        let (sh, b, t, n) = (
            shared.clone(),
            brokers.to_string(),
            spec.predictions.clone(),
            spec.partitions as usize,
        );
        std::thread::spawn(move || reader(&sh, &b, &t, n))
    };
    let result = kill_loop(&shared, &cfg, o);
    shared.stop.store(true, Ordering::Relaxed);
    let gen_result = gen.join().map_err(|_| "generator panicked".to_string());
    let published = shared.published.load(Ordering::Relaxed);
    let count = || {
        shared
            .arrivals
            .lock()
            .map(|a| a.iter().map(|x| &x.1).collect::<BTreeSet<_>>().len() as u64)
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(120), || count() >= published);
    // SAFETY: kill(2) on our own child's pid with SIGTERM has no memory effects.
    unsafe { libc::kill(launcher.id() as libc::pid_t, libc::SIGTERM) };
    if wait_until(Duration::from_secs(60), || matches!(launcher.try_wait(), Ok(Some(_)))).is_none() {
        let _ = launcher.kill();
    }
    let _ = launcher.wait();
    shared.stop_reader.store(true, Ordering::Relaxed);
    rd.join().map_err(|_| "reader panicked".to_string())??;
    gen_result??;
    let kills = result?;
    let arrivals = shared.arrivals.lock().map_err(|_| "poisoned".to_string())?;
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for (_, id) in arrivals.iter() {
        *seen.entry(id).or_default() += 1;
    }
    let duplicates = seen.values().map(|n| u64::from(n - 1)).sum();
    super::broker::delete_topics(brokers, &[&spec.features, &spec.predictions, &spec.dlq]);
    let _ = std::fs::remove_dir_all(&spec.checkpoint_dir);
    Ok(RecoveryReport {
        processes: spec.processes.len(),
        workers: spec.workers,
        stations: o.stations,
        rate: o.rate,
        checkpoint_ms: o.checkpoint_ms,
        median_first_output_s: median(&kills.iter().map(|k| k.first_output_s).collect::<Vec<_>>()),
        median_caught_up_s: median(&kills.iter().map(|k| k.caught_up_s).collect::<Vec<_>>()),
        kills,
        published,
        answered: seen.len() as u64,
        duplicates,
        log: log_path.display().to_string(),
    })
}

fn kill_loop(sh: &Shared, cfg: &Path, o: &RecoveryOptions) -> Result<Vec<KillTiming>, String> {
    let outputs = || sh.arrivals.lock().map(|a| a.len()).unwrap_or(0);
    let last_arrival = || sh.arrivals.lock().ok().and_then(|a| a.last().map(|x| x.0));
    let limit = Duration::from_secs(180);
    let mut kills = Vec::new();
    for k in 0..o.kills {
        // Steady state: outputs flowing for a few seconds since the start or the last recovery.
        let n0 = outputs();
        wait_until(limit, || outputs() > n0).ok_or("no outputs flowing before the kill")?;
        std::thread::sleep(Duration::from_secs(4));
        let procs = cluster_pids(cfg);
        let process = k % 2;
        let Some(&(victim, _)) = procs.iter().find(|(_, i)| *i == process) else {
            return Err(format!("cluster process {process} not found before kill {}", k + 1));
        };
        let old: Vec<i32> = procs.iter().map(|p| p.0).collect();
        let published_before = sh.published.load(Ordering::Relaxed);
        let t_kill = Instant::now();
        // SAFETY: kill(2) with SIGKILL on a pid of our own cluster; no memory effects.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let gone = wait_until(limit, || old.iter().all(|p| !alive(*p))).ok_or("old processes did not exit")?;
        let restarted =
            wait_until(limit, || cluster_pids(cfg).iter().any(|(p, _)| !old.contains(p))).ok_or("the cluster was not restarted")?;
        let first = wait_until(limit, || last_arrival().is_some_and(|t| t > restarted)).ok_or("no output after the restart")?;
        let distinct = || {
            sh.arrivals
                .lock()
                .map(|a| a.iter().map(|x| &x.1).collect::<BTreeSet<_>>().len() as u64)
                .unwrap_or(0)
        };
        let caught = wait_until(limit, || distinct() >= published_before).ok_or("outputs did not catch up")?;
        let s = |t: Instant| (t - t_kill).as_secs_f64();
        tracing::info!(kill = k + 1, process, first_output_s = s(first), "bench: recovered");
        kills.push(KillTiming {
            process,
            gone_s: s(gone),
            restarted_s: s(restarted),
            first_output_s: s(first),
            caught_up_s: s(caught),
        });
    }
    Ok(kills)
}

fn generator(sh: &Shared, brokers: &str, base: &BaseSeries, spec: &ClusterSpec, o: &RecoveryOptions) -> Result<(), String> {
    let p: rdkafka::producer::BaseProducer<AckCounter> = kafka::client_config(brokers, &spec.settings()?.producer_options())
        .create_with_context(AckCounter::default())
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut i = 0usize;
    while !sh.stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * o.rate) as usize;
        while i < due {
            let r = base.record(o.stations, i % o.stations, i / o.stations);
            let part = super::data::default_partition(r.station_id.as_bytes(), spec.partitions as usize) as i32;
            let payload = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
            let rec = BaseRecord::to(&spec.features)
                .partition(part)
                .key(r.station_id.as_bytes())
                .payload(&payload[..]);
            p.send(rec).map_err(|(e, _)| e.to_string())?;
            i += 1;
        }
        p.poll(Duration::ZERO);
        sh.published.store(p.context().acked.load(Ordering::Relaxed), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = p.flush(Duration::from_secs(30));
    sh.published.store(p.context().acked.load(Ordering::Relaxed), Ordering::Relaxed);
    Ok(())
}

fn reader(sh: &Shared, brokers: &str, topic: &str, partitions: usize) -> Result<(), String> {
    let opts = std::collections::BTreeMap::from([("fetch.wait.max.ms".to_string(), "1".to_string())]);
    let c = kafka::consumer(brokers, &unique("recovery-reader"), &opts).map_err(|e| e.to_string())?;
    kafka::wait_for_topic(&c, brokers, topic, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    // Runs until the launcher has stopped and the topic stayed quiet for a second.
    let mut idle_since: Option<Instant> = None;
    loop {
        match c.poll(Duration::from_millis(5)) {
            Some(Ok(m)) => {
                idle_since = None;
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == ID_HEADER))
                    .and_then(|h| h.value);
                if let (Some(id), Ok(mut a)) = (id, sh.arrivals.lock()) {
                    a.push((Instant::now(), super::latency::input_position(id)));
                }
            }
            _ => {
                if sh.stop_reader.load(Ordering::Relaxed) {
                    let t = *idle_since.get_or_insert_with(Instant::now);
                    if t.elapsed() > Duration::from_secs(1) {
                        return Ok(());
                    }
                }
            }
        }
    }
}
