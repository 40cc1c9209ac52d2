//! Latency at a fixed offered load: from a feature record handed to the producer to the broker's
//! acknowledgement of its prediction, with the runner in this process.
//!
//! ```text
//!   generator (paced: record i at t0 + i/rate) ──produce, opaque = send time (µs)──> <run>-features
//!        delivery report: (partition, offset) -> send time
//!   weatherflow (runner in-process, streaming, checkpointing on or off)
//!        sink's ack tap: id header "<lineage>/partition:offset" of each acknowledged prediction -> ack time (µs)
//!   latency = ack - send, for records sent after the warm-up records came out
//!   with `visible`, a reader on <run>-predictions too: send -> prediction fetchable downstream
//!   a run of its own, same load, no weatherflow: generator -> broker -> a reader of the input,
//!   the broker's own one hop (send -> fetchable)
//! ```
//!
//! This bounds "feature arrival to prediction acknowledged" from above: it also counts the
//! generator's own produce request, the broker's hop to weatherflow's consumer and the time the
//! generator's producer batches (`linger.ms`, librdkafka's default 5 ms unless changed). The
//! downstream reader is off by default: reading every prediction back (2.7 KB each) costs the
//! broker and this process as much CPU as a second consumer application would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::cluster::{unique, ClusterSpec};
use super::data::Dataset;
use super::stats::{now_us, percentile, CpuSeries, SecondCpu};
use crate::kafka::sink::ID_HEADER;
use crate::kafka::{self};
use crate::metrics::Metrics;
use crate::runner;

/// How a latency run is measured.
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    /// Also read the predictions back (send -> fetchable downstream).
    pub visible: bool,
    /// `linger.ms` of the generator's producer.
    pub producer_linger_ms: u64,
    /// `compression.type` of the generator's producer (the upstream writer's choice).
    pub input_compression: String,
    /// The generator's producer is idempotent, as weatherflow's sink is (off: a plain producer
    /// with at most 5 requests in flight; see `generate`).
    pub idempotent_input: bool,
}

/// Acknowledgement time (µs) and the prediction's own timestamp (ms: when the sink handed it to the
/// producer) of each prediction, by the input position (partition, offset) it answers. Filled on
/// the worker threads (the sink's acknowledgement hook), so it is sized for the whole run up front
/// and keyed without allocating: growing a map of a million entries under its lock stalled both
/// workers for tens of ms, which the measurement then counted as latency.
type Acks = Arc<Mutex<HashMap<(i32, i64), (u64, i64)>>>;

/// Records sent (and answered) before timing starts.
const WARMUP_RECORDS: usize = 200;

/// One latency run.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRun {
    /// Checkpointing on.
    pub checkpoint: bool,
    /// Epoch length, ms.
    pub epoch_ms: u64,
    /// Workers.
    pub workers: usize,
    /// Offered load, records/s.
    pub offered_rate: f64,
    /// Load actually sent, records/s.
    pub sent_rate: f64,
    /// Records timed.
    pub measured: u64,
    /// Timed records whose prediction did not appear.
    pub missing: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Median from send to the prediction fetchable by a downstream reader, ms (NaN unless
    /// measured with `visible`).
    pub visible_p50_ms: f64,
    /// 99th percentile of that, ms.
    pub visible_p99_ms: f64,
    /// Median of the part up to the sink handing the prediction to the producer (the output
    /// message's timestamp, ms resolution): input produce, broker hop, fetch, epochs, operators.
    /// The rest is the producer's batching and the broker's acknowledgement.
    pub to_sink_p50_ms: f64,
    /// 99th percentile of that part, ms.
    pub to_sink_p99_ms: f64,
    /// 99th percentile of the records sent in each second of the run, ms: a tail that grows
    /// second by second is a setup falling behind, a single high second a stall it recovered from.
    pub p99_by_second_ms: Vec<f64>,
    /// Cores used by this process (generator and weatherflow) and by the broker in each second
    /// from the first timed record on (the drain after the last one included).
    pub cores_by_second: Vec<SecondCpu>,
    /// Source activations that did not read because reading had run `checkpoint.max_lead_ms`
    /// ahead of the last durable checkpoint (the checkpoint gate).
    pub source_gated: u64,
    /// Source activations that did not read because `source.max_in_flight` records awaited
    /// their answers.
    pub source_throttled: u64,
    /// Checkpoints written during the run.
    pub checkpoints: u64,
    /// Slowest checkpoint write (upper bound of its histogram bucket), ms.
    pub checkpoint_write_max_ms: f64,
}

/// Records (partition, offset, send time) of acknowledged input.
struct SentLog {
    sent: Mutex<Vec<(i32, i64, u64)>>,
    failed: AtomicU64,
}

impl ClientContext for SentLog {}

impl SentLog {
    /// A log with room for `n` records (growing it reallocates on the generator's thread).
    fn with_capacity(n: usize) -> Self {
        SentLog {
            sent: Mutex::new(Vec::with_capacity(n)),
            failed: AtomicU64::new(0),
        }
    }
}

impl ProducerContext for SentLog {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, sent_us: usize) {
        match r {
            Ok(m) => {
                if let Ok(mut v) = self.sent.lock() {
                    v.push((m.partition(), m.offset(), sent_us as u64));
                }
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The input position (`partition:offset`) an output id answers (ids are `<lineage>/<p>:<o>`).
pub fn input_position(id: &[u8]) -> String {
    let id = String::from_utf8_lossy(id);
    id.rsplit('/').next().unwrap_or_default().to_string()
}

/// [`input_position`] as numbers, without allocating; `None` for an id of another form.
pub fn input_key(id: &[u8]) -> Option<(i32, i64)> {
    let tail = id.rsplit(|b| *b == b'/').next()?;
    let colon = tail.iter().position(|b| *b == b':')?;
    let p = std::str::from_utf8(&tail[..colon]).ok()?.parse().ok()?;
    let o = std::str::from_utf8(&tail[colon + 1..]).ok()?.parse().ok()?;
    Some((p, o))
}

/// Arrival time (µs) and the output's own timestamp (ms: when the sink handed it to the
/// producer) by input position, filled by the reader thread.
type Arrivals = Arc<Mutex<HashMap<(i32, i64), (u64, i64)>>>;

/// An arrivals map with room for `n` records: the reader fills it on its own thread, and growing it
/// would stall that reader (the measured hop) and the threads waiting on its lock.
fn sized_arrivals(n: usize) -> Arrivals {
    Arc::new(Mutex::new(prefaulted_map(n + n / 4)))
}

/// A map with room for `n` entries whose memory is already resident. A map sized for a 30 s run
/// at 111,000 rec/s is 268 MB; left to fault in page by page while the run fills it, its page
/// faults fall in the first seconds, under the map's lock, on the threads that hold it (the
/// sink's acknowledgements on weatherflow's workers). Those seconds stalled in every 30 s run at
/// that rate before this, and not in the run after it (BENCHMARKS.md). Filling the map with
/// placeholder keys once before the run, then clearing it, faults every page in off the clock;
/// `clear` keeps the allocation.
fn prefaulted_map<V: Default>(n: usize) -> HashMap<(i32, i64), V> {
    let mut m = HashMap::with_capacity(n);
    for k in 0..n as i64 {
        m.insert((i32::MIN, k), V::default());
    }
    m.clear();
    m
}

/// Reads `topic` from the beginning until `stop`, noting arrivals. Outputs are keyed by the input
/// position in their id header; with `input = true` the topic is the input itself (the broker's
/// own one-hop latency) and the position is the message's.
fn read_arrivals(
    brokers: String,
    topic: String,
    partitions: usize,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
    input: bool,
) -> Result<(), String> {
    let opts = std::collections::BTreeMap::from([("fetch.wait.max.ms".to_string(), "1".to_string())]);
    let c = kafka::consumer(&brokers, &unique("latency-reader"), &opts).map_err(|e| e.to_string())?;
    kafka::wait_for_topic(&c, &brokers, &topic, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(5)) {
            let t = now_us();
            let position = if input {
                Some((m.partition(), m.offset()))
            } else {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == ID_HEADER))
                    .and_then(|h| h.value)
                    .and_then(input_key)
            };
            if let (Some(pos), Ok(mut a)) = (position, arrivals.lock()) {
                a.insert(pos, (t, m.timestamp().to_millis().unwrap_or(0)));
            }
        }
    }
    Ok(())
}

/// [`read_arrivals`] on a thread of its own.
fn spawn_reader(
    brokers: &str,
    topic: &str,
    partitions: usize,
    arrivals: &Arrivals,
    stop: &Arc<AtomicBool>,
    input: bool,
) -> std::thread::JoinHandle<Result<(), String>> {
    let (b, t, a, st) = (brokers.to_string(), topic.to_string(), arrivals.clone(), stop.clone());
    std::thread::spawn(move || read_arrivals(b, t, partitions, a, st, input))
}

/// Runs weatherflow (streaming) on `spec` while offering `rate` records/s of `data` for about
/// `seconds`, and measures each record's latency.
pub fn run(spec: &ClusterSpec, data: &Dataset, rate: f64, seconds: f64, opts: &LatencyOptions) -> Result<LatencyRun, String> {
    let s = spec.settings()?;
    let partitions = data.by_partition.len();
    kafka::ensure_topics(&s.kafka.brokers, &Default::default(), &[&spec.features], partitions as i32, 1).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::default());
    let expected = WARMUP_RECORDS + (rate * seconds) as usize;
    let acks: Acks = Arc::new(Mutex::new(prefaulted_map(expected + expected / 4)));
    {
        let acks = acks.clone();
        metrics.ack_tap.set(Arc::new(move |id: &[u8], produced_ms: i64| {
            let t = now_us();
            if let (Some(key), Ok(mut a)) = (input_key(id), acks.lock()) {
                a.insert(key, (t, produced_ms));
            }
        }));
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let runner = {
        let (s, m, sd) = (s.clone(), metrics.clone(), shutdown.clone());
        std::thread::spawn(move || runner::run_process_with(&s, 0, sd, m).map_err(|e| e.to_string()))
    };
    // Only a run that reads the predictions back fills this map; faulting in an unused one would
    // cost the run hundreds of MB and the time to touch them.
    let arrivals: Arrivals = if opts.visible {
        sized_arrivals(expected)
    } else {
        Arrivals::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = opts
        .visible
        .then(|| spawn_reader(&s.kafka.brokers, &spec.predictions, partitions, &arrivals, &stop, false));
    let answered = || {
        let snap = metrics.snapshot();
        snap.predictions_acked + snap.dlq_acked
    };
    let result = generate(&s, data, rate, seconds, opts, expected, &answered);
    // Let the last predictions arrive, then stop everything (the runner drains).
    let deadline = Instant::now() + Duration::from_secs(60);
    if let Ok((sent, _, _, _)) = &result {
        while answered() < *sent && Instant::now() < deadline && !runner.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    shutdown.store(true, Ordering::Relaxed);
    let snap = runner.join().map_err(|_| "runner panicked".to_string())??;
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = reader {
        reader.join().map_err(|_| "reader panicked".to_string())??;
    }
    let (_, log, sent_rate, cpu) = result?;
    let cores_by_second = cpu.stop();
    let arrivals = arrivals.lock().map_err(|_| "poisoned".to_string())?;
    let acks = acks.lock().map_err(|_| "poisoned".to_string())?;
    let (mut lat, mut visible, mut to_sink) = (Vec::new(), Vec::new(), Vec::new());
    let mut timed = Vec::with_capacity(log.len());
    let first_sent = log.iter().map(|l| l.2).min().unwrap_or(0);
    let mut missing = 0u64;
    for (p, o, sent) in log {
        match acks.get(&(p, o)) {
            Some((a, produced_ms)) => {
                let ms = a.saturating_sub(sent) as f64 / 1000.0;
                lat.push(ms);
                timed.push((sent, ms));
                to_sink.push(*produced_ms as f64 - sent as f64 / 1000.0);
            }
            None => missing += 1,
        }
        if let Some((a, _)) = arrivals.get(&(p, o)) {
            visible.push(a.saturating_sub(sent) as f64 / 1000.0);
        }
    }
    for v in [&mut lat, &mut visible, &mut to_sink] {
        v.sort_by(f64::total_cmp);
    }
    Ok(LatencyRun {
        checkpoint: spec.checkpoint,
        epoch_ms: spec.epoch_ms,
        workers: spec.workers,
        offered_rate: rate,
        sent_rate,
        measured: lat.len() as u64,
        missing,
        p50_ms: percentile(&lat, 0.5),
        p90_ms: percentile(&lat, 0.9),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        visible_p50_ms: percentile(&visible, 0.5),
        visible_p99_ms: percentile(&visible, 0.99),
        to_sink_p50_ms: percentile(&to_sink, 0.5),
        to_sink_p99_ms: percentile(&to_sink, 0.99),
        p99_by_second_ms: p99_by_second(timed.into_iter(), first_sent),
        cores_by_second,
        source_gated: metrics.source_gated.load(Ordering::Relaxed),
        source_throttled: metrics.source_throttled.load(Ordering::Relaxed),
        checkpoints: snap.checkpoints,
        checkpoint_write_max_ms: metrics.ops.checkpoint_write.snapshot().quantile(1.0).unwrap_or(0.0) * 1000.0,
    })
}

/// The broker alone at the same offered load: the generator and one reader of the input topic,
/// no weatherflow. Its one hop (send -> fetchable) is the floor of each of a prediction's two
/// crossings of the broker. Measured in a run of its own, because a reader of the input beside
/// weatherflow adds a consumer's load to the broker and the 2 cores (at 60,000 rec/s it raised
/// weatherflow's p99 from 142 to 1,450 ms).
pub fn broker_hop(spec: &ClusterSpec, data: &Dataset, rate: f64, seconds: f64, opts: &LatencyOptions) -> Result<BrokerHopRun, String> {
    let s = spec.settings()?;
    let partitions = data.by_partition.len();
    kafka::ensure_topics(&s.kafka.brokers, &Default::default(), &[&spec.features], partitions as i32, 1).map_err(|e| e.to_string())?;
    let expected = WARMUP_RECORDS + (rate * seconds) as usize;
    let inputs: Arrivals = sized_arrivals(expected);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(&s.kafka.brokers, &spec.features, partitions, &inputs, &stop, true);
    let seen = || inputs.lock().map(|a| a.len() as u64).unwrap_or(0);
    let result = generate(&s, data, rate, seconds, opts, expected, &seen);
    let deadline = Instant::now() + Duration::from_secs(30);
    if let Ok((sent, _, _, _)) = &result {
        while seen() < *sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().map_err(|_| "reader panicked".to_string())??;
    let (_, log, sent_rate, cpu) = result?;
    let cores_by_second = cpu.stop();
    let inputs = inputs.lock().map_err(|_| "poisoned".to_string())?;
    let first_sent = log.iter().map(|l| l.2).min().unwrap_or(0);
    let timed: Vec<(u64, f64)> = log
        .iter()
        .filter_map(|(p, o, sent)| inputs.get(&(*p, *o)).map(|(a, _)| (*sent, a.saturating_sub(*sent) as f64 / 1000.0)))
        .collect();
    let mut hop: Vec<f64> = timed.iter().map(|t| t.1).collect();
    hop.sort_by(f64::total_cmp);
    Ok(BrokerHopRun {
        offered_rate: rate,
        sent_rate,
        measured: hop.len() as u64,
        missing: log.len() as u64 - hop.len() as u64,
        p50_ms: percentile(&hop, 0.5),
        p99_ms: percentile(&hop, 0.99),
        max_ms: hop.last().copied().unwrap_or(f64::NAN),
        p99_by_second_ms: p99_by_second(timed.into_iter(), first_sent),
        cores_by_second,
    })
}

/// The broker's own one hop at an offered load (see [`broker_hop`]).
#[derive(Clone, Debug, Serialize)]
pub struct BrokerHopRun {
    /// Offered load, records/s.
    pub offered_rate: f64,
    /// Load actually sent, records/s.
    pub sent_rate: f64,
    /// Records timed.
    pub measured: u64,
    /// Timed records the reader did not see.
    pub missing: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// 99th percentile of the records sent in each second of the run, ms.
    pub p99_by_second_ms: Vec<f64>,
    /// Cores used by this process (generator and reader) and by the broker in each second.
    pub cores_by_second: Vec<SecondCpu>,
}

/// Sends warm-up records and waits for their predictions, then offers the rest at `rate`.
/// Returns (records sent, timed (partition, offset, send µs), achieved rate, CPU sampled from the
/// first timed record on; the caller stops it once the answers are in).
#[allow(clippy::type_complexity)]
fn generate(
    s: &crate::config::Settings,
    data: &Dataset,
    rate: f64,
    seconds: f64,
    load: &LatencyOptions,
    expected: usize,
    answered: &dyn Fn() -> u64,
) -> Result<(u64, Vec<(i32, i64, u64)>, f64, CpuSeries), String> {
    let mut opts = s.producer_options();
    opts.insert("linger.ms".into(), load.producer_linger_ms.to_string());
    opts.insert("compression.type".into(), load.input_compression.clone());
    // The generator stands in for the upstream writer and shares this process and the two cores
    // with weatherflow. An idempotent producer of librdkafka 2.12.1 sends one produce request per
    // partition at a time (it compares its count of messages in flight with the limit of 5
    // requests) and, while that request is unanswered and more records have waited longer than
    // linger.ms, its broker thread polls without sleeping. Once the test broker answers slower
    // than linger.ms, that spin took 0.25-0.40 cores per thread here and the runs ran away (BENCHMARKS.md).
    // A plain producer (5 requests in flight, so order holds unless a request is retried) waits
    // instead; weatherflow's sink stays idempotent.
    if !load.idempotent_input {
        opts.insert("enable.idempotence".into(), "false".into());
        opts.insert("max.in.flight.requests.per.connection".into(), "5".into());
    }
    let p: BaseProducer<SentLog> = kafka::client_config(&s.kafka.brokers, &opts)
        .create_with_context(SentLog::with_capacity(expected + expected / 4))
        .map_err(|e| e.to_string())?;
    // Round-robin over partitions keeps every station's records in window order.
    let parts = data.by_partition.len();
    let longest = data.by_partition.iter().map(Vec::len).max().unwrap_or(0);
    let order = (0..longest).flat_map(|o| (0..parts).filter(move |&q| o < data.by_partition[q].len()).map(move |q| (q, o)));
    let total = (WARMUP_RECORDS as f64 + rate * seconds) as usize;
    let mut it = order.take(total);
    let send = |p: &BaseProducer<SentLog>, q: usize, o: usize| -> Result<(), String> {
        let m = &data.by_partition[q][o];
        let mut rec = BaseRecord::with_opaque_to(&s.topics.features, now_us() as usize)
            .partition(q as i32)
            .key(&m.key[..])
            .payload(&m.payload[..]);
        loop {
            match p.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    };
    let mut sent = 0u64;
    for (q, o) in it.by_ref().take(WARMUP_RECORDS) {
        send(&p, q, o)?;
        sent += 1;
    }
    let _ = p.flush(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered() < sent {
        if Instant::now() > deadline {
            return Err("the warm-up records were not answered within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The warm-up records are not timed; clearing keeps the log's capacity.
    p.context().sent.lock().map_err(|_| "poisoned")?.clear();
    let cpu = CpuSeries::start();
    let start = Instant::now();
    let mut i = 0u64;
    'outer: loop {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while i < due {
            match it.next() {
                Some((q, o)) => send(&p, q, o)?,
                None => break 'outer,
            }
            i += 1;
            sent += 1;
        }
        p.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(300));
        if i % 2000 == 0 {
            tracing::debug!(
                sent,
                delivered = p.context().sent.lock().map(|v| v.len()).unwrap_or(0),
                answered = answered(),
                "bench: latency progress"
            );
        }
    }
    let achieved = i as f64 / start.elapsed().as_secs_f64();
    let _ = p.flush(Duration::from_secs(60));
    let timed = std::mem::take(&mut *p.context().sent.lock().map_err(|_| "poisoned")?);
    let failed = p.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} input records failed to publish"));
    }
    Ok((sent, timed, achieved, cpu))
}

/// The p99 (ms) of the records sent in each second of a run: `(send µs, latency ms)` samples, the
/// first timed send starting second 0.
fn p99_by_second(samples: impl Iterator<Item = (u64, f64)>, first_sent: u64) -> Vec<f64> {
    let mut by_second: Vec<Vec<f64>> = Vec::new();
    for (sent, ms) in samples {
        let second = (sent.saturating_sub(first_sent) / 1_000_000) as usize;
        if by_second.len() <= second {
            by_second.resize_with(second + 1, Vec::new);
        }
        by_second[second].push(ms);
    }
    by_second
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            percentile(v, 0.99)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefaulted_map_is_empty_and_keeps_its_room() {
        let m: HashMap<(i32, i64), (u64, i64)> = prefaulted_map(10_000);
        assert!(m.is_empty());
        assert!(m.capacity() >= 10_000);
    }

    #[test]
    fn p99_by_second_groups_by_send_second() {
        let t0 = 5_000_000u64;
        // Second 0: 100 samples of 1..=100 ms; second 1: none; second 2: one of 7 ms.
        let mut samples: Vec<(u64, f64)> = (1..=100).map(|i| (t0 + i * 9_000, i as f64)).collect();
        samples.push((t0 + 2_500_000, 7.0));
        let p = p99_by_second(samples.into_iter().rev(), t0);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], 99.0);
        assert!(p[1].is_nan(), "a second with no sends has no percentile");
        assert_eq!(p[2], 7.0);
        assert!(p99_by_second(std::iter::empty(), t0).is_empty());
    }

    #[test]
    fn input_key_reads_the_position_an_id_answers() {
        assert_eq!(input_key(b"abc123/7:42"), Some((7, 42)));
        assert_eq!(input_key(b"7:42"), Some((7, 42)));
        assert_eq!(input_position(b"abc123/7:42"), "7:42");
        assert_eq!(input_key(b"abc123/7-42"), None);
        assert_eq!(input_key(b"abc/x:1"), None);
        assert_eq!(input_key(b""), None);
    }
}
