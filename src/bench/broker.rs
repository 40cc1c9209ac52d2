//! End-to-end throughput through the real broker, against a passthrough job on the same broker
//! and data, plus consume-only and produce-only baselines, all in the same run.
//!
//! ```text
//!   prefill: dataset ──producer (partition = crc32(station) mod 4, librdkafka's default)──> <run>-features
//!   passthrough (W threads, partition p on thread p mod W):
//!        consume ──> produce the same output bytes (each input's real prediction, encoded before
//!                    the run; same key, the sink's partition fnv1a(key) mod 4, an id header of the
//!                    sink's length) ──> wait for every ack
//!                    no parsing, no compute; with a compressing producer it compresses what
//!                    weatherflow's sink compresses
//!   weatherflow (runner in-process, W workers, --until-end), checkpointing on / off
//!   rate: records / (last output acknowledged - first record read), sampled every ms; steady rate:
//!   80 % of the records / (90 % acknowledged - 10 % acknowledged), the same for every job; the time
//!   to the first acknowledgement is kept too: it shows start-up skew (with checkpoints each worker
//!   reads back its output partitions before it starts, while the others may already read)
//!   consume-only: read the input to its end;  produce-only: the outputs' bytes, acknowledged
//! ```
//!
//! Output topics are deleted after each run (the test broker keeps everything in memory).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::cluster::unique;
use super::data::Dataset;
use super::stats::{CpuMeter, CpuUsage};
use crate::config::Settings;
use crate::kafka::assign::station_hash;
use crate::kafka::sink::ID_HEADER;
use crate::kafka::{self, KafkaIoError};
use crate::metrics::Metrics;
use crate::runner;

/// One timed run through the broker.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerRun {
    /// What ran: `passthrough`, `weatherflow`, `weatherflow+checkpoints`, `weatherflow+models`
    /// (checkpoints on, trained models served), `consume-only`, `produce-only`.
    pub job: String,
    /// Records.
    pub records: u64,
    /// From the first record read to the last output acknowledged, s.
    pub seconds: f64,
    /// Records per second over `seconds`.
    pub rate: f64,
    /// Records per second from 10 % to 90 % of the outputs acknowledged (NaN where not sampled).
    pub steady_rate: f64,
    /// From the first record read to the first output acknowledged, s (start-up skew between
    /// workers shows here).
    pub first_ack_s: f64,
    /// Including client start-up (and for weatherflow: topic checks, restore, final checkpoint), s.
    pub wall_seconds: f64,
    /// Checkpoints written (weatherflow with checkpoints).
    pub checkpoints: u64,
    /// CPU used by this process, the broker and others over the whole run.
    pub cpu: CpuUsage,
    /// Time the checkpoint writes took (on the workers' background writer threads, serialising
    /// and fsync included), s.
    pub checkpoint_write_s: f64,
    /// Slowest checkpoint write (upper bound of its histogram bucket), s.
    pub checkpoint_write_max_s: f64,
    /// Forecasts a trained model made (weatherflow jobs; the others are the fallback's).
    pub forecasts_trained: u64,
}

impl BrokerRun {
    /// CPU seconds this process spent per record of the run.
    pub fn cpu_s_per_record(&self) -> f64 {
        self.cpu.self_cpu_s / self.records as f64
    }
}

/// Counts delivery reports.
#[derive(Default)]
pub struct AckCounter {
    /// Acknowledged.
    pub acked: AtomicU64,
    /// Failed after librdkafka's retries.
    pub failed: AtomicU64,
    /// Also counts acknowledgements here (shared by several producers).
    pub shared: Option<Arc<AtomicU64>>,
}

/// When a count of acknowledged outputs first became non-zero, passed 10 % and 90 % of its
/// total, and reached it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    first: Option<Instant>,
    p10: Option<Instant>,
    p90: Option<Instant>,
    done: Option<Instant>,
}

impl Progress {
    /// Notes the count `acked` of `total` now.
    pub fn note(&mut self, acked: u64, total: u64) {
        let now = Instant::now();
        if self.first.is_none() && acked > 0 {
            self.first = Some(now);
        }
        if self.p10.is_none() && acked * 10 >= total {
            self.p10 = Some(now);
        }
        if self.p90.is_none() && acked * 10 >= total * 9 {
            self.p90 = Some(now);
        }
        if self.done.is_none() && acked >= total {
            self.done = Some(now);
        }
    }

    /// Steady-state rate: 80 % of `total` over the time from 10 % to 90 % acknowledged, records/s
    /// (start-up skew between workers and the tail of the run left out, for every job alike).
    /// Informative only: acknowledgements come in bursts, so this window can be shorter than the
    /// work done in it (a ratio above 1 against the passthrough was seen).
    pub fn steady_rate(&self, total: u64) -> f64 {
        match (self.p10, self.p90) {
            (Some(a), Some(b)) if b > a => 0.8 * total as f64 / (b - a).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// Seconds from `start` to the first acknowledgement.
    pub fn first_after(&self, start: Option<Instant>) -> f64 {
        match (start, self.first) {
            (Some(s), Some(f)) => f.saturating_duration_since(s).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// When the last output was acknowledged.
    pub fn done_at(&self) -> Option<Instant> {
        self.done
    }
}

impl ClientContext for AckCounter {}

impl ProducerContext for AckCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                if let Some(s) = &self.shared {
                    s.fetch_add(1, Ordering::Relaxed);
                }
                self.acked.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn producer(
    brokers: &str,
    options: &BTreeMap<String, String>,
    shared: Option<Arc<AtomicU64>>,
) -> Result<BaseProducer<AckCounter>, KafkaIoError> {
    kafka::client_config(brokers, options)
        .create_with_context(AckCounter {
            shared,
            ..AckCounter::default()
        })
        .map_err(|source| KafkaIoError::Client {
            context: "creating bench producer".into(),
            source,
        })
}

/// Sends, retrying while librdkafka's queue is full.
fn send<'a>(p: &BaseProducer<AckCounter>, mut rec: BaseRecord<'a, [u8], [u8]>) -> Result<(), KafkaIoError> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                p.poll(Duration::from_millis(1));
            }
            Err((source, _)) => {
                return Err(KafkaIoError::Client {
                    context: "bench produce".into(),
                    source,
                })
            }
        }
    }
}

/// Waits until every sent record is acknowledged or failed; returns the failures.
fn drain(p: &BaseProducer<AckCounter>, sent: u64, patience: Duration) -> Result<u64, String> {
    let start = Instant::now();
    loop {
        let c = p.context();
        let (a, f) = (c.acked.load(Ordering::Relaxed), c.failed.load(Ordering::Relaxed));
        if a + f >= sent {
            return Ok(f);
        }
        if start.elapsed() > patience {
            return Err(format!("only {a} of {sent} records acknowledged after {patience:?}"));
        }
        p.poll(Duration::from_millis(1));
    }
}

/// Creates `topic` and publishes the dataset into it, partition by partition as generated.
pub fn prefill(brokers: &str, options: &BTreeMap<String, String>, topic: &str, data: &Dataset) -> Result<f64, String> {
    kafka::ensure_topics(brokers, &BTreeMap::new(), &[topic], data.by_partition.len() as i32, 1).map_err(|e| e.to_string())?;
    let p = producer(brokers, options, None).map_err(|e| e.to_string())?;
    let start = Instant::now();
    for (part, msgs) in data.by_partition.iter().enumerate() {
        for m in msgs {
            send(
                &p,
                BaseRecord::to(topic).partition(part as i32).key(&m.key[..]).payload(&m.payload[..]),
            )
            .map_err(|e| e.to_string())?;
            p.poll(Duration::ZERO);
        }
    }
    let failed = drain(&p, data.records as u64, Duration::from_secs(300))?;
    if failed > 0 {
        return Err(format!("prefill: {failed} records failed"));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Deletes topics (best effort: logs and carries on where the broker refuses).
pub fn delete_topics(brokers: &str, topics: &[&str]) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = kafka::client_config(brokers, &BTreeMap::new()).create();
    let Ok(admin) = admin else { return };
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match futures_executor::block_on(admin.delete_topics(topics, &opts)) {
        Ok(results) => {
            for r in results {
                if let Err((t, code)) = r {
                    tracing::warn!(topic = %t, %code, "bench: could not delete topic");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "bench: delete topics failed"),
    }
}

/// Topics on the broker whose names start with `prefix` (to check the clean-up).
pub fn topics_with_prefix(brokers: &str, prefix: &str) -> Vec<String> {
    let Ok(c) = kafka::consumer(brokers, &unique("list"), &BTreeMap::new()) else {
        return Vec::new();
    };
    match c.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(md) => md
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The output payload of every input record, by partition and offset (weatherflow's predictions
/// of the run's input, encoded before it).
pub struct Outputs {
    /// Payloads by input partition, then offset.
    pub by_partition: Vec<Vec<Vec<u8>>>,
}

impl Outputs {
    /// The payload answering input (`partition`, `offset`); empty for a position not in the input.
    fn payload(&self, partition: usize, offset: usize) -> &[u8] {
        self.by_partition
            .get(partition)
            .and_then(|p| p.get(offset))
            .map_or(&[], Vec::as_slice)
    }
}

/// The passthrough job on `workers` threads: consume `input`, produce the payload of
/// `outputs[p][o]` per record to `output`, wait for every ack.
pub fn passthrough(s: &Settings, input: &str, output: &str, outputs: &Arc<Outputs>, workers: usize) -> Result<BrokerRun, String> {
    let partitions = outputs.by_partition.len();
    kafka::ensure_topics(&s.kafka.brokers, &BTreeMap::new(), &[output], partitions as i32, 1).map_err(|e| e.to_string())?;
    let wall = Instant::now();
    let meter = CpuMeter::start();
    let group = unique("passthrough");
    let acked = Arc::new(AtomicU64::new(0));
    let total: u64 = outputs.by_partition.iter().map(|p| p.len() as u64).sum();
    let threads: Vec<_> = (0..workers.max(1))
        .map(|w| {
            let (b, copts, popts) = (s.kafka.brokers.clone(), s.consumer_options(), s.producer_options());
            let (input, output, outputs, group, acked) =
                (input.to_string(), output.to_string(), outputs.clone(), group.clone(), acked.clone());
            let mine: Vec<i32> = (0..partitions).filter(|p| p % workers.max(1) == w).map(|p| p as i32).collect();
            std::thread::spawn(move || pass_thread(&b, &copts, &popts, &group, &input, &output, &mine, &outputs, acked))
        })
        .collect();
    let mut progress = Progress::default();
    while !threads.iter().all(|t| t.is_finished()) {
        progress.note(acked.load(Ordering::Relaxed), total);
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut spans = Vec::new();
    for t in threads {
        spans.push(t.join().map_err(|_| "passthrough thread panicked".to_string())??);
    }
    let first = spans.iter().filter_map(|s| s.0).min();
    // The run ends at the last acknowledgement, as weatherflow's does. A thread finishes later:
    // once each of its partitions reported its end, and the test broker's end-of-partition can
    // come about 0.45 s after the last record was read (one thread of two did so in most runs,
    // which made the passthrough look slower than it was).
    let last = progress.done_at().or_else(|| spans.iter().map(|s| s.1).max());
    let records: u64 = spans.iter().map(|s| s.2).sum();
    if let Some(f) = first {
        for (w, (t_first, t_end, sent)) in spans.iter().enumerate() {
            tracing::debug!(
                thread = w,
                sent,
                first_read_s = t_first.map_or(f64::NAN, |t| (t - f).as_secs_f64()),
                finished_s = (*t_end - f).as_secs_f64(),
                "bench: passthrough thread"
            );
        }
    }
    let seconds = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    Ok(BrokerRun {
        job: "passthrough".into(),
        records,
        seconds,
        rate: records as f64 / seconds,
        steady_rate: progress.steady_rate(records),
        first_ack_s: progress.first_after(first),
        wall_seconds: wall.elapsed().as_secs_f64(),
        checkpoints: 0,
        cpu: meter.stop(),
        checkpoint_write_s: 0.0,
        checkpoint_write_max_s: 0.0,
        forecasts_trained: 0,
    })
}

type Span = (Option<Instant>, Instant, u64);

#[allow(clippy::too_many_arguments)]
fn pass_thread(
    brokers: &str,
    copts: &BTreeMap<String, String>,
    popts: &BTreeMap<String, String>,
    group: &str,
    input: &str,
    output: &str,
    mine: &[i32],
    outputs: &Outputs,
    acked: Arc<AtomicU64>,
) -> Result<Span, String> {
    let c = kafka::consumer(brokers, group, copts).map_err(|e| e.to_string())?;
    let p = producer(brokers, popts, Some(acked)).map_err(|e| e.to_string())?;
    let out_partitions = outputs.by_partition.len().max(1) as u64;
    let mut tpl = TopicPartitionList::new();
    let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
    for part in mine {
        tpl.add_partition_offset(input, *part, Offset::Beginning)
            .map_err(|e| e.to_string())?;
        at_end.insert(*part, outputs.by_partition[*part as usize].is_empty());
    }
    if mine.is_empty() {
        return Ok((None, Instant::now(), 0));
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let (mut first, mut sent) = (None, 0u64);
    let mut id = String::new();
    while at_end.values().any(|e| !e) {
        // Block up to 1 ms for the first message (no spinning when idle), then take what is
        // already fetched without waiting; serve delivery reports after each batch.
        let mut n = 0;
        let mut wait = Duration::from_millis(1);
        while n < 1000 {
            match c.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    first.get_or_insert_with(Instant::now);
                    let (part, off) = (m.partition(), m.offset());
                    at_end.insert(part, false);
                    id.clear();
                    use std::fmt::Write;
                    let _ = write!(id, "{:016x}/{part}:{off}", 0);
                    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                        key: ID_HEADER,
                        value: Some(id.as_bytes()),
                    });
                    // The partition weatherflow's sink chooses: FNV-1a of the key.
                    let key = m.key().unwrap_or_default();
                    let out_part = (station_hash(&String::from_utf8_lossy(key)) % out_partitions) as i32;
                    let rec = BaseRecord::to(output)
                        .partition(out_part)
                        .key(key)
                        .payload(outputs.payload(part as usize, off as usize))
                        .headers(headers);
                    send(&p, rec).map_err(|e| e.to_string())?;
                    sent += 1;
                    n += 1;
                    wait = Duration::ZERO;
                }
                Some(Err(KafkaError::PartitionEOF(part))) => {
                    at_end.insert(part, true);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "passthrough: consumer error"),
            }
        }
        p.poll(Duration::ZERO);
    }
    let failed = drain(&p, sent, Duration::from_secs(300))?;
    if failed > 0 {
        return Err(format!("passthrough: {failed} deliveries failed"));
    }
    Ok((first, Instant::now(), sent))
}

/// Runs weatherflow in this process on settings `s` (with `stop_at_end`) over a pre-filled input
/// of `expected` records; `job` names the run in the report.
pub fn weatherflow(s: &Settings, expected: u64, job: &str) -> Result<BrokerRun, String> {
    let metrics = Arc::new(Metrics::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let wall = Instant::now();
    let meter = CpuMeter::start();
    let handle = {
        let (s, m, sd) = (s.clone(), metrics.clone(), shutdown.clone());
        std::thread::spawn(move || runner::run_process_with(&s, 0, sd, m).map_err(|e| e.to_string()))
    };
    let mut first = None;
    let mut progress = Progress::default();
    let mut next_log = Instant::now();
    while !handle.is_finished() {
        let snap = metrics.snapshot();
        if Instant::now() >= next_log {
            next_log += Duration::from_millis(100);
            tracing::debug!(
                read = snap.records_in,
                acked = snap.predictions_acked,
                checkpoints = snap.checkpoints,
                "bench: weatherflow progress"
            );
        }
        if first.is_none() && snap.records_in > 0 {
            first = Some(Instant::now());
        }
        progress.note(snap.predictions_acked + snap.dlq_acked, expected);
        std::thread::sleep(Duration::from_millis(1));
    }
    let snap = handle.join().map_err(|_| "runner thread panicked".to_string())??;
    let writes = metrics.ops.checkpoint_write.snapshot();
    let done = snap.predictions_acked + snap.dlq_acked;
    if done != expected {
        return Err(format!("weatherflow answered {done} of {expected} records"));
    }
    let last = progress.done_at().unwrap_or_else(Instant::now);
    let seconds = first.map(|f| (last - f).as_secs_f64()).unwrap_or(f64::NAN);
    Ok(BrokerRun {
        job: job.into(),
        records: expected,
        seconds,
        rate: expected as f64 / seconds,
        steady_rate: progress.steady_rate(expected),
        first_ack_s: progress.first_after(first),
        wall_seconds: wall.elapsed().as_secs_f64(),
        checkpoints: snap.checkpoints,
        cpu: meter.stop(),
        checkpoint_write_s: writes.sum,
        checkpoint_write_max_s: writes.quantile(1.0).unwrap_or(0.0),
        forecasts_trained: snap.forecasts_trained,
    })
}

/// Reads `topic` to its end on one consumer.
pub fn consume_only(s: &Settings, topic: &str, partitions: usize) -> Result<BrokerRun, String> {
    let wall = Instant::now();
    let meter = CpuMeter::start();
    let c = kafka::consumer(&s.kafka.brokers, &unique("consume"), &s.consumer_options()).map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let mut at_end = vec![false; partitions];
    let (mut first, mut n, mut bytes) = (None, 0u64, 0usize);
    let deadline = Instant::now() + Duration::from_secs(300);
    while at_end.iter().any(|e| !e) && Instant::now() < deadline {
        match c.poll(Duration::from_millis(1)) {
            None => {}
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                at_end[m.partition() as usize] = false;
                bytes += m.payload().map_or(0, <[u8]>::len);
                n += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => tracing::warn!(error = %e, "consume-only: consumer error"),
        }
    }
    std::hint::black_box(bytes);
    let seconds = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    Ok(BrokerRun {
        job: "consume-only".into(),
        records: n,
        seconds,
        rate: n as f64 / seconds,
        steady_rate: f64::NAN,
        first_ack_s: f64::NAN,
        wall_seconds: wall.elapsed().as_secs_f64(),
        checkpoints: 0,
        cpu: meter.stop(),
        checkpoint_write_s: 0.0,
        checkpoint_write_max_s: 0.0,
        forecasts_trained: 0,
    })
}

/// Produces the outputs (keys and partitions of the inputs) and waits for every acknowledgement,
/// on one producer.
pub fn produce_only(s: &Settings, data: &Dataset, outputs: &Outputs, topic: &str) -> Result<BrokerRun, String> {
    let partitions = outputs.by_partition.len();
    kafka::ensure_topics(&s.kafka.brokers, &BTreeMap::new(), &[topic], partitions as i32, 1).map_err(|e| e.to_string())?;
    let wall = Instant::now();
    let meter = CpuMeter::start();
    let p = producer(&s.kafka.brokers, &s.producer_options(), None).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut id = String::new();
    for (part, msgs) in data.by_partition.iter().enumerate() {
        for (off, m) in msgs.iter().enumerate() {
            use std::fmt::Write;
            id.clear();
            let _ = write!(id, "{:016x}/{part}:{off}", 0);
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: ID_HEADER,
                value: Some(id.as_bytes()),
            });
            let out_part = (station_hash(&String::from_utf8_lossy(&m.key)) % partitions.max(1) as u64) as i32;
            let rec = BaseRecord::to(topic)
                .partition(out_part)
                .key(&m.key[..])
                .payload(outputs.payload(part, off))
                .headers(headers);
            send(&p, rec).map_err(|e| e.to_string())?;
            sent += 1;
            p.poll(Duration::ZERO);
        }
    }
    let failed = drain(&p, sent, Duration::from_secs(300))?;
    if failed > 0 {
        return Err(format!("produce-only: {failed} deliveries failed"));
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(BrokerRun {
        job: "produce-only".into(),
        records: sent,
        seconds,
        rate: sent as f64 / seconds,
        steady_rate: f64::NAN,
        first_ack_s: f64::NAN,
        wall_seconds: wall.elapsed().as_secs_f64(),
        checkpoints: 0,
        cpu: meter.stop(),
        checkpoint_write_s: 0.0,
        checkpoint_write_max_s: 0.0,
        forecasts_trained: 0,
    })
}
