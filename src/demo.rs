//! `weatherflow demo`: the whole chain, raw observations to predictions, on one machine with
//! nothing installed.
//!
//! ```text
//!   data/raw/nyc_asos_2013_hourly.csv ──loader (SI units), time order──> publisher thread
//!   (+3 malformed, +1 reading re-sent a week late)       │ weather-raw (in-process Kafka-protocol broker)
//!                                                        v
//!                     features dataflow ──> weather-features ──> inference dataflow   (this process, W workers)
//!                        │ weather-raw-dlq, weather-raw-late          │ weather-predictions, weather-features-dlq
//!                        v                                            v
//!                   viewer thread: anomalies, dead letters, late records, a forecast per station every
//!                   N hours, live skill (MAE, interval coverage) ──> stdout
//! ```
//!
//! The demo stops by itself once every published record came out: each station-window as a
//! prediction, each malformed message as a dead letter, the late reading on the late topic; then
//! it prints a summary. Ctrl-C stops it early (the dataflows drain first). Hourly readings are
//! hour-ending at whole hours, so each window is complete with its own reading; the demo allows
//! 2 s of lateness and advances a quiet partition's watermark after 0.5 s, so the last hour of
//! each station comes out right after the replay ends.
//!
//! The embedded broker keeps at most 5 MB per partition (a fixed limit of librdkafka's mock
//! cluster) and the demo's three stations put all predictions into three partitions, so the
//! publisher stays at most [`MAX_AHEAD`] records ahead of what the viewer has read: flow control
//! that keeps every prediction on the broker until it has been shown.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::{Overrides, RawConfig, Stage, StartFrom};
use crate::contract::{Prediction, LEADS};
use crate::features::{hourly_features, DEFAULT_WINDOW};
use crate::kafka;
use crate::kafka::assign::station_hash;
use crate::metrics::Metrics;
use crate::observations::message::encode_observation;
use crate::observations::{Observation, SourceFormat};
use crate::operators::dlq_headers;
use crate::produce::replay_order;
use crate::runner;
use crate::tail::format_prediction;

/// Demo options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// NYC ASOS hourly observations (CSV, the shared `nyc_asos_2013_hourly.csv` format).
    pub file: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Records per second to publish (0: as fast as possible).
    pub rate: f64,
    /// Show a forecast per station every this many hours of data (0: every one).
    pub every_hours: i64,
    /// Stop after this many records of the file.
    pub limit: Option<usize>,
    /// Use this broker instead of the in-process one (topics get a run-unique suffix).
    pub brokers: Option<String>,
}

/// What the demo saw.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    /// Records published (including the injected malformed ones).
    pub published: usize,
    /// Predictions read back.
    pub predictions: usize,
    /// Dead letters read back (refused observations and refused feature records).
    pub dead_letters: usize,
    /// Observations read back from the late topic.
    pub late: usize,
    /// Predictions flagged as anomalies.
    pub anomalies: usize,
    /// Mean absolute error per lead (1-based index 0 = lead 1), over verified forecasts.
    pub mae: Vec<f64>,
    /// Interval coverage per lead.
    pub coverage: Vec<f64>,
}

/// Most records the publisher may be ahead of the viewer (about 5 MB of predictions).
pub const MAX_AHEAD: usize = 2000;

/// Malformed observations the demo injects so the dead-letter path is visible.
const BAD: [&str; 3] = [
    "this is not json",
    r#"{"time":"2013-06-01T12:00:00Z","temperature":20.0}"#,
    r#"{"station_id":"JFK","time":"2013-06-01T12:00:00Z","humidity":-5}"#,
];

/// Finds the features file: as given, else relative to the crate (for `cargo run` elsewhere).
fn locate(file: &Path) -> Option<PathBuf> {
    if file.exists() {
        return Some(file.to_path_buf());
    }
    let alt = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    alt.exists().then_some(alt)
}

/// Runs the demo.
pub fn run(o: &DemoOptions, shutdown: Arc<AtomicBool>) -> anyhow::Result<DemoSummary> {
    let file = locate(&o.file).with_context(|| format!("observations file {} not found", o.file.display()))?;
    let mut obs = replay_order(SourceFormat::NycAsos, &file)?;
    obs.truncate(o.limit.unwrap_or(usize::MAX));
    if obs.is_empty() {
        bail!("{} holds no observations", file.display());
    }
    let windows = hourly_features(&obs, DEFAULT_WINDOW).len();
    let key = |o: &Observation| Some(o.station_id.as_bytes().to_vec());
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = obs.iter().map(|o| (key(o), encode_observation(o))).collect();
    // One real reading delivered again a week (168 readings of its station) later: it reaches
    // the late topic with the reason, and the predictions are unchanged.
    let resent = &obs[obs.len() / 2];
    let week_later = obs
        .iter()
        .position(|o| o.time >= resent.time + chrono::Duration::days(7))
        .unwrap_or(obs.len());
    records.insert(week_later.min(records.len()), (key(resent), encode_observation(resent)));
    let late_expected = usize::from(week_later < obs.len());
    if late_expected == 0 {
        records.pop();
    }
    for (i, bad) in BAD.iter().enumerate() {
        let at = (records.len() * (i + 1) / (BAD.len() + 1)).min(records.len());
        records.insert(at, (Some(b"JFK".to_vec()), bad.as_bytes().to_vec()));
    }
    // Every published record comes out once: a window's prediction, a dead letter, a late record.
    let total = windows + BAD.len() + late_expected;
    let to_publish = records.len();

    let mock = match &o.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1).context("starting the in-process Kafka-protocol broker")?),
    };
    let brokers = match (&mock, &o.brokers) {
        (Some(m), _) => m.bootstrap_servers(),
        (None, Some(b)) => b.clone(),
        (None, None) => unreachable!("one of the two is set above"),
    };
    let mut raw = RawConfig::default();
    raw.apply(&Overrides {
        processes: Some(1),
        workers: Some(o.workers),
        brokers: Some(brokers.clone()),
        stop_at_end: false,
    });
    raw.source.start = StartFrom::Earliest;
    raw.topics.create = false;
    raw.dataflow.log_every_s = 0;
    raw.pipeline.stages = vec![Stage::Features, Stage::Inference];
    raw.features.allowed_lateness_s = 2;
    raw.features.idle_timeout_ms = 500;
    // Each demo run is a new stream: its checkpoints live in a directory of its own.
    let ckpt_dir = std::env::temp_dir().join(format!("weatherflow-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    raw.checkpoint.dir = ckpt_dir.clone();
    if mock.is_none() {
        // A real broker may hold earlier demo runs: use topics of this run only.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let t = &mut raw.topics;
        for t in [
            &mut t.features,
            &mut t.predictions,
            &mut t.dlq,
            &mut t.raw,
            &mut t.raw_dlq,
            &mut t.late,
        ] {
            *t = format!("{t}-demo-{run}");
        }
    }
    let settings = raw.resolve("demo")?;
    let names = crate::pipeline::topics_to_create(&settings);
    match &mock {
        Some(m) => {
            for t in names {
                m.create_topic(t, settings.topics.partitions, 1)
                    .with_context(|| format!("creating topic {t}"))?;
            }
        }
        None => kafka::ensure_topics(&brokers, &settings.kafka.options, &names, settings.topics.partitions, 1)?,
    }
    println!(
        "weatherflow demo: {} observations of {} (+{} malformed, +1 re-sent late) -> {windows} hourly windows -> predictions, through {} at {brokers}, {} worker(s)",
        obs.len(),
        file.display(),
        BAD.len(),
        if mock.is_some() { "an in-process broker" } else { "the broker" },
        o.workers
    );

    let seen = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (brokers, topic, partitions, rate, stop, seen) = (
            brokers.clone(),
            settings.topics.raw.clone(),
            settings.topics.partitions,
            o.rate,
            shutdown.clone(),
            seen.clone(),
        );
        std::thread::spawn(move || publish(&brokers, &topic, partitions, records, rate, &stop, &seen))
    };
    let viewer = {
        let (brokers, s, every, stop, seen) = (brokers.clone(), settings.clone(), o.every_hours, shutdown.clone(), seen.clone());
        let t = s.topics;
        std::thread::spawn(move || view(&brokers, &t.predictions, &[t.dlq, t.raw_dlq], &t.late, total, every, &stop, &seen))
    };
    let started = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let run = runner::run_process_with(&settings, 0, shutdown.clone(), metrics);
    shutdown.store(true, Ordering::Relaxed);
    let published = publisher.join().map_err(|_| anyhow::anyhow!("publisher thread panicked"))??;
    let mut summary = viewer.join().map_err(|_| anyhow::anyhow!("viewer thread panicked"))??;
    let snap = run?;
    summary.published = published;
    let secs = started.elapsed().as_secs_f64();
    println!("\n── summary ──────────────────────────────────────────────");
    println!(
        "published {published}, predictions {}, dead letters {}, late {}, anomalies {} in {secs:.1} s ({:.0} records/s)",
        summary.predictions,
        summary.dead_letters,
        summary.late,
        summary.anomalies,
        published as f64 / secs
    );
    println!("dataflow counters: {snap}");
    if !summary.mae.is_empty() {
        let pick = |v: &[f64], l: usize| v.get(l - 1).copied().unwrap_or(f64::NAN);
        println!(
            "forecast skill against the observations that followed: MAE lead 1 {:.2} C, 6 {:.2}, 12 {:.2}, 24 {:.2}; {:.0}% interval coverage lead 1 {:.2}, 24 {:.2}",
            pick(&summary.mae, 1), pick(&summary.mae, 6), pick(&summary.mae, 12), pick(&summary.mae, 24),
            100.0 * settings.models.interval, pick(&summary.coverage, 1), pick(&summary.coverage, 24)
        );
    }
    let out = summary.predictions + summary.dead_letters + summary.late;
    if out != total || published != to_publish {
        bail!(
            "{published} records published ({windows} windows expected) but {} predictions + {} dead letters + {} late came out",
            summary.predictions,
            summary.dead_letters,
            summary.late
        );
    }
    drop(mock);
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    Ok(summary)
}

/// Publishes `records`, a station's always to the partition `fnv1a(station) mod partitions` (as
/// `weatherflow produce` does), at most [`MAX_AHEAD`] ahead of what the viewer has read.
fn publish(
    brokers: &str,
    topic: &str,
    partitions: i32,
    records: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    rate: f64,
    stop: &AtomicBool,
    seen: &AtomicUsize,
) -> anyhow::Result<usize> {
    let producer = kafka::simple_producer(brokers, &BTreeMap::from([("enable.idempotence".to_string(), "true".to_string())]))?;
    let started = Instant::now();
    let mut n = 0usize;
    for (key, payload) in &records {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while n >= seen.load(Ordering::Relaxed) + MAX_AHEAD && !stop.load(Ordering::Relaxed) {
            producer.poll(Duration::from_millis(1));
        }
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut rec: BaseRecord<[u8], [u8]> = BaseRecord::to(topic).payload(&payload[..]);
        if let Some(k) = key {
            let station = String::from_utf8_lossy(k);
            rec = rec
                .key(&k[..])
                .partition((station_hash(&station) % partitions.max(1) as u64) as i32);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("publishing: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
        n += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(n)
}

/// Pending forecasts awaiting their observation: (station, valid_at) -> [(lead, t, lo, hi)].
type Pending = HashMap<(String, i64), Vec<(u32, f64, f64, f64)>>;

#[allow(clippy::too_many_arguments)]
fn view(
    brokers: &str,
    predictions: &str,
    dlqs: &[String],
    late: &str,
    total: usize,
    every_hours: i64,
    stop: &AtomicBool,
    seen: &AtomicUsize,
) -> anyhow::Result<DemoSummary> {
    let opts = BTreeMap::from([
        ("isolation.level".to_string(), "read_committed".to_string()),
        ("fetch.wait.max.ms".to_string(), "10".to_string()),
    ]);
    let c = kafka::consumer(brokers, "weatherflow-demo-viewer", &opts)?;
    let mut tpl = TopicPartitionList::new();
    for topic in [predictions, late].into_iter().chain(dlqs.iter().map(String::as_str)) {
        let n = kafka::wait_for_topic(&c, brokers, topic, Duration::from_secs(30))?;
        for p in 0..n as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    let mut s = DemoSummary::default();
    let mut pending: Pending = HashMap::new();
    let mut err_sum = [0.0f64; LEADS];
    let mut covered = [0usize; LEADS];
    let mut verified = [0usize; LEADS];
    let mut last_shown: HashMap<String, i64> = HashMap::new();
    let mut last_progress = Instant::now();
    while s.predictions + s.dead_letters + s.late < total {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let m = match c.poll(Duration::from_millis(200)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "viewer: consumer error");
                continue;
            }
            Some(Ok(m)) => m,
        };
        seen.fetch_add(1, Ordering::Relaxed);
        if m.topic() == late {
            s.late += 1;
            let reason = header(&m, dlq_headers::ERROR).unwrap_or_default();
            println!("LATE         {reason}");
            continue;
        }
        if dlqs.iter().any(|d| d == m.topic()) {
            s.dead_letters += 1;
            let reason = header(&m, dlq_headers::ERROR).unwrap_or_default();
            let body = String::from_utf8_lossy(m.payload().unwrap_or_default());
            println!("DEAD LETTER  {reason}\n  payload: {}", body.chars().take(100).collect::<String>());
            continue;
        }
        let Ok(p) = serde_json::from_slice::<Prediction>(m.payload().unwrap_or_default()) else {
            println!("(undecodable prediction at partition {} offset {})", m.partition(), m.offset());
            continue;
        };
        s.predictions += 1;
        let origin = p.window_end.timestamp();
        // Verify earlier forecasts for this hour against what was observed.
        if let Some(list) = pending.remove(&(p.station_id.clone(), origin)) {
            if let Some(obs) = p.observed_temperature {
                for (lead, t, lo, hi) in list {
                    let i = lead as usize - 1;
                    err_sum[i] += (t - obs).abs();
                    verified[i] += 1;
                    covered[i] += usize::from(obs >= lo && obs <= hi);
                }
            }
        }
        for pt in &p.forecast {
            if let (Some(t), Some(lo), Some(hi)) = (pt.temperature, pt.lower, pt.upper) {
                pending
                    .entry((p.station_id.clone(), pt.valid_at.timestamp()))
                    .or_default()
                    .push((pt.lead_hours, t, lo, hi));
            }
        }
        let due = match last_shown.get(&p.station_id) {
            Some(t) => every_hours == 0 || origin - t >= every_hours * 3600,
            None => true,
        };
        if p.anomaly.is_anomaly {
            s.anomalies += 1;
            println!("{}", format_prediction(&p));
        } else if due {
            last_shown.insert(p.station_id.clone(), origin);
            println!("{}", format_prediction(&p));
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            println!(
                "… {} of {total} records out ({} anomalies, {} dead letters)",
                s.predictions + s.dead_letters,
                s.anomalies,
                s.dead_letters
            );
        }
    }
    s.mae = (0..LEADS)
        .map(|i| {
            if verified[i] > 0 {
                err_sum[i] / verified[i] as f64
            } else {
                f64::NAN
            }
        })
        .collect();
    s.coverage = (0..LEADS)
        .map(|i| {
            if verified[i] > 0 {
                covered[i] as f64 / verified[i] as f64
            } else {
                f64::NAN
            }
        })
        .collect();
    // Everything is out: stop the dataflow (it drains and acknowledges before exiting).
    stop.store(true, Ordering::Relaxed);
    Ok(s)
}

fn header(m: &impl Message, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
