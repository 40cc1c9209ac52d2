//! CLI tests through the built binary.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn demo_runs_to_the_end_on_the_embedded_broker() {
    let mut cmd = bin();
    cmd.args(["demo", "--workers", "2"]);
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    // The 26,115 raw NYC readings, 3 injected malformed ones and 1 reading re-sent a week late
    // were published; each hour of each station came out as a prediction (the features stage
    // turns each hourly reading into its own window), the malformed ones as dead letters and the
    // re-sent one on the late topic.
    assert!(
        stdout.contains("published 26119, predictions 26115, dead letters 3, late 1,"),
        "{stdout}"
    );
    assert!(stdout.contains("LATE         late_record:"), "and late records");
    assert!(stdout.contains("ANOMALY"), "the demo shows anomalies as they come");
    assert!(stdout.contains("DEAD LETTER  not_json"), "and dead letters");
    assert!(stdout.contains("forecast skill"), "and a skill summary");
}

#[test]
fn bad_config_names_every_bad_field() {
    let dir = std::env::temp_dir().join("weatherflow-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", unique("bad-config")));
    std::fs::write(
        &path,
        "[cluster]\nworkers = 0\nprocesses = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n[topics]\npartitions = 0\n[models]\ninterval = 2.0\n",
    )
    .unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["cluster.workers", "cluster.processes[1]", "topics.partitions", "models.interval"] {
        assert!(err.contains(field), "{field} not named in: {err}");
    }
    assert!(err.contains("expected"), "says what is expected: {err}");

    std::fs::write(&path, "[cluster]\nworkerz = 2\n").unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workerz") && err.contains("workers"),
        "unknown field and the expected ones: {err}"
    );
}

#[test]
fn shipped_config_checks_ok() {
    let out = bin()
        .args(["check-config", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.toml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 process(es) x 2 worker(s)"));
}

#[test]
fn unknown_process_index_is_refused() {
    let out = bin().args(["run", "--brokers", "127.0.0.1:1", "--process", "3"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("process 3 is not in the cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tail_prints_predictions_from_the_real_broker() {
    let b = brokers();
    let t = topics("tail");
    publish(&b, &t.features, 2, &nyc(300));
    let cfg = write_config("tail", &t, &b, 1, 1, 2, &t.predictions);
    run_cluster(&cfg);
    let mut cmd = bin();
    cmd.args(["tail", "--until-end", "--station", "LGA", "-n", "5", "--config"])
        .arg(&cfg);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.matches("origin").count(), 5, "{s}");
    assert!(
        s.contains("LGA") && !s.contains("JFK") && s.contains("+24h") && s.contains("anomaly score"),
        "{s}"
    );
}

/// `weatherflow run` (2 local processes) stops cleanly on SIGTERM: every process exits, the exit
/// status is success, and a restart resumes after the committed (acknowledged) offsets, so
/// nothing is processed twice.
#[test]
fn sigterm_stops_the_local_cluster_cleanly_and_restart_resumes() {
    let b = brokers();
    let t = topics("sigterm");
    publish(&b, &t.features, 4, &nyc(1000));
    let cfg = write_config("sigterm", &t, &b, 2, 1, 4, &t.predictions);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("start = \"earliest\"", "start = \"committed\"");
    std::fs::write(&cfg, text).unwrap();

    let mut cmd = bin();
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut launcher = cmd.spawn().unwrap();
    let start = std::time::Instant::now();
    while read_all(&b, &t.predictions).len() < 1000 {
        assert!(start.elapsed() < Duration::from_secs(90), "predictions did not arrive");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let the acknowledged epochs' offsets be committed, then stop.
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(launcher.id() as libc::pid_t, libc::SIGTERM) };
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = launcher.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "launcher did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean stop exits 0: {status}");
    let cfg_s = cfg.display().to_string();
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&cfg_s))
        .collect();
    assert!(leftovers.is_empty(), "processes left running: {leftovers:?}");

    // Restart: everything was acknowledged and committed, so nothing is reprocessed.
    publish(&b, &t.features, 4, &nyc(1010)[1000..]);
    run_cluster(&cfg);
    assert_eq!(
        read_all(&b, &t.predictions).len(),
        1010,
        "only the 10 new records were processed after the restart"
    );
}

/// `weatherflow bench` through the built binary, against the real broker, at a small scale: the
/// engine part and the latency part (the broker alone, then weatherflow with checkpoints on and
/// off) finish, every timed record is answered, and the report carries the p99 and the cores of
/// each second. Checks that the suite runs, not what it measures (a debug build on a busy machine).
#[test]
fn bench_runs_the_engine_e2e_and_latency_parts_against_the_real_broker() {
    let b = brokers();
    let dir = std::env::temp_dir().join("weatherflow-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let out_json = dir.join(format!("{}.json", unique("bench")));
    let mut cmd = bin();
    cmd.args([
        "bench",
        "--brokers",
        &b,
        "--parts",
        "engine,e2e,latency",
        "--e2e-records",
        "3000",
        "--records",
        "2000",
        "--stations",
        "20",
    ])
    .args(["--models", concat!(env!("CARGO_MANIFEST_DIR"), "/models")])
    .args([
        "--workers",
        "1",
        "--repeats",
        "1",
        "--latency-rate",
        "1500",
        "--latency-seconds",
        "2",
    ])
    .args(["--latency-epoch-ms", "5", "--e2e-workers", "2", "--out"])
    .arg(&out_json);
    let out = run_with_timeout(cmd, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("engine fallback, 1 worker(s)"), "{stdout}");
    assert!(stdout.contains("engine trained, 1 worker(s)"), "{stdout}");
    assert!(stdout.contains("climatology given to all 20 stations"), "{stdout}");
    let share: f64 = stdout
        .split("the trained forecaster made ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no trained share: {stdout}"));
    assert!(share >= 90.0, "the trained runs must time the trained forecaster: {share} %");
    assert!(stdout.contains("epoch   5 ms, checkpoints on"), "{stdout}");
    assert!(stdout.contains("epoch   5 ms, checkpoints off"), "{stdout}");
    assert!(stdout.contains("broker alone"), "{stdout}");
    assert_eq!(stdout.matches("p99 by second of the run (ms):").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("cores by second, this process / broker:").count(), 3, "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    // Engine-only: every record answered, the timed ones and the warm-up's (none at this size).
    for kind in ["fallback", "trained"] {
        let runs = report["engine"][kind].as_array().expect("engine runs");
        assert!(!runs.is_empty(), "{report}");
        for r in runs {
            assert_eq!(r["records"].as_u64().unwrap() + r["warmup_records"].as_u64().unwrap(), 2000, "{r}");
            assert!(r["whole_rate"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let runs = report["latency"].as_array().expect("latency runs");
    assert_eq!(runs.len(), 2, "{report}");
    let broker = report["latency_broker"].as_array().expect("broker-alone runs");
    assert_eq!(broker.len(), 1, "{report}");
    for r in runs.iter().chain(broker) {
        // 2 s at 1,500 rec/s are timed (the warm-up records are not), and every one was answered.
        assert_eq!(r["measured"], 3000, "{r}");
        assert_eq!(r["missing"], 0, "{r}");
        let seconds = r["p99_by_second_ms"].as_array().unwrap();
        assert!((2..=3).contains(&seconds.len()), "{r}");
        let cores = r["cores_by_second"].as_array().unwrap();
        assert!(!cores.is_empty(), "{r}");
        assert!(cores.iter().all(|c| c["self_cores"].as_f64().unwrap() > 0.0), "{r}");
    }
    // End to end: every job read and answered all the records, and the report judges the ratios
    // both by rate and by CPU per record, with the page faults of each run counted.
    let e2e = report["e2e"]["runs"].as_array().expect("e2e runs");
    for job in [
        "passthrough",
        "weatherflow",
        "weatherflow+checkpoints",
        "weatherflow+models",
        "consume-only",
        "produce-only",
    ] {
        let run = e2e.iter().find(|r| r["job"] == job).unwrap_or_else(|| panic!("{job}: {report}"));
        assert_eq!(run["records"], 3000, "{run}");
        // Only the job serving --models forecasts with the trained forecaster (every generated
        // station has its climatology; a station's first records have no history yet).
        let trained = run["forecasts_trained"].as_u64().unwrap();
        match job {
            "weatherflow+models" => assert!(trained >= 2700, "{run}"),
            _ => assert_eq!(trained, 0, "{run}"),
        }
        assert!(run["cpu"]["minor_faults"].as_u64().is_some(), "{run}");
        assert!(run["cpu"]["self_cpu_s"].as_f64().unwrap() > 0.0, "{run}");
    }
    let targets = report["targets"].as_array().expect("targets");
    for name in [
        "engine-only trained (1 worker) / serde limit",
        "end-to-end without checkpoints / passthrough",
        "end-to-end without checkpoints, by CPU per record",
        "end-to-end with checkpoints, by CPU per record",
        "end-to-end trained, checkpoints / passthrough",
        "end-to-end trained, checkpoints, by CPU per record",
    ] {
        let t = targets
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {report}"));
        assert!(t["measured"].as_f64().is_some_and(|x| x > 0.0), "{t}");
    }
    assert!(stdout.contains("page faults/rec"), "{stdout}");
    let _ = std::fs::remove_file(&out_json);
}
