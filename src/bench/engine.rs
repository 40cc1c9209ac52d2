//! Engine-only throughput and the serde limit.
//!
//! ```text
//!  engine:  memory (per partition, worker p mod W) ──InputMessage──> ParseFeatures ─┬─> ForecastTemperature
//!           ──> ScoreAnomalies ──> encode ──concat(dead letters)──> CountingSink (exchanged by output
//!           partition, like KafkaSink; counts records and bytes)      on timely Config::process(W)
//!  serde:   the same input bytes ──serde_json::from_slice::<FeatureRecord>──> (timed)
//!           the same predictions ──prediction_json::encode──> (timed)   one thread, nothing else
//!           (the serialiser the sink ships: serde_json's output of the rounded prediction, faster)
//!  codec:   the same input bytes ──feature_json::read, else serde_json──> (timed), and the same
//!           serialising: the limit of the reader and writer the dataflow ships
//! ```
//!
//! The serde limit parses with serde_json, as the issue names it; the dataflow reads the plain
//! form of a record with its own reader (`feature_json`), which is faster. The codec limit is
//! measured beside it so that both ratios can be read.
//!
//! The engine runs the real operators of `dataflows/inference.rs`; only the Kafka source and sink
//! are replaced. Input is fed in epochs of `epoch_records` records, at most [`IN_FLIGHT`] epochs
//! ahead of the sink's frontier (bounded memory, like the source's bounded polling).
//!
//! The clock starts after a warm-up of [`WARMUP_EPOCHS`] epochs, once every worker has seen them
//! through the sink: a freshly started worker thread gets an allocator arena of its own, and its
//! first epochs fault in the pages of everything in flight (some 13,000 minor faults on this VM;
//! timing after them raised the measured rate by 2-4 % at 200,000 records), which a long-running
//! worker pays once. The serde limit, timed in a loop on a warm thread, pays nothing of the kind.
//! [`EngineRun::whole_rate`] keeps the rate over the whole run, start and warm-up included.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Input, Map};
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, StreamVec};

use super::data::Dataset;
use super::model::Sequential;
use super::stats::{CpuMeter, CpuUsage};
use crate::anomaly::rules::AnomalyParams;
use crate::contract::{FeatureRecord, SourcePosition};
use crate::kafka::sink::{OutTopic, SinkTopics};
use crate::kafka::{InputMessage, OutRecord};
use crate::metrics::Metrics;
use crate::models::serving::{ModelSource, Serving};
use crate::operators::forecast::ForecastParams;
use crate::operators::keyed::KeyedCheckpoint;
use crate::operators::{encode, Accepted, ForecastTemperature, Outcome, ParseFeatures, ScoreAnomalies};

/// Epochs the input may run ahead of the sink.
pub const IN_FLIGHT: u64 = 2;
/// Epochs fed and seen through the sink before the clock starts (more than are ever in flight).
pub const WARMUP_EPOCHS: u64 = IN_FLIGHT + 2;
/// Name of the input topic in dead letters and ids (nothing is read from Kafka).
const TOPIC: &str = "bench-features";

/// One engine-only run.
#[derive(Clone, Debug, Serialize)]
pub struct EngineRun {
    /// Worker threads.
    pub workers: usize,
    /// Records timed (and outputs counted), after the warm-up.
    pub records: u64,
    /// Records of the warm-up (before the clock started).
    pub warmup_records: u64,
    /// Output payload bytes counted by the sink after the warm-up.
    pub output_bytes: u64,
    /// Wall time after the warm-up, s.
    pub seconds: f64,
    /// Records per second after the warm-up.
    pub rate: f64,
    /// All records over the wall time of the whole run (worker start, dataflow construction,
    /// model loading and warm-up included), records/s.
    pub whole_rate: f64,
    /// Minor page faults of this process over the whole run.
    pub whole_faults: u64,
    /// CPU used by this process and by others after the warm-up.
    pub cpu: CpuUsage,
}

/// When the timed part of a run starts: every worker has seen the warm-up through the sink.
#[derive(Debug, Default)]
struct Start {
    /// Workers done with the warm-up.
    ready: AtomicUsize,
    /// Set by worker 0 once all are ready: the clock, the CPU meter and the counts so far.
    mark: Mutex<Option<(Instant, CpuMeter, u64, u64)>>,
    /// Set with `mark`: the workers may feed the timed records.
    go: AtomicBool,
}

/// Output counters of the counting sink.
#[derive(Debug, Default)]
struct Counts {
    records: AtomicU64,
    bytes: AtomicU64,
}

fn forecast_params(models: &ModelSource) -> ForecastParams {
    ForecastParams {
        interval: 0.9,
        fallback: Default::default(),
        models: models.clone(),
    }
}

/// Runs the inference operators over `data` on `workers` workers, timing what follows the warm-up.
pub fn run(data: &Arc<Dataset>, workers: usize, models: &ModelSource, epoch_records: usize) -> Result<EngineRun, String> {
    let counts = Arc::new(Counts::default());
    let start = Arc::new(Start::default());
    let (d, c, s, models) = (data.clone(), counts.clone(), start.clone(), models.clone());
    let partitions = data.by_partition.len();
    let per_partition = (epoch_records / partitions).max(1);
    // Warm up only when the run is long enough for the timed part to dominate (every partition
    // holds at least four times the warm-up); otherwise the clock starts with the first epoch.
    let shortest = data.by_partition.iter().map(Vec::len).min().unwrap_or(0);
    let warm = if shortest / per_partition >= 4 * WARMUP_EPOCHS as usize {
        WARMUP_EPOCHS
    } else {
        0
    };
    let began = Instant::now();
    let whole = CpuMeter::start();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let metrics = Arc::new(Metrics::default());
        let params = forecast_params(&models);
        let (c, topics) = (
            c.clone(),
            SinkTopics::default()
                .with(OutTopic::Predictions, "p", partitions as i32)
                .with(OutTopic::Dlq, "d", partitions as i32),
        );
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<InputMessage>();
            let (accepted, dead) = stream.parse_features(TOPIC.into(), metrics.clone());
            let encoded = accepted
                .forecast_temperature(params, metrics.clone(), KeyedCheckpoint::disabled())
                .score_anomalies(AnomalyParams::default(), 0.9, metrics.clone(), KeyedCheckpoint::disabled())
                .map(|o| encode(o, TOPIC))
                .concat(dead);
            (input, counting_sink(encoded, topics, c.clone()))
        });
        let mine: Vec<usize> = (0..partitions).filter(|p| p % peers == index).collect();
        let mut cursor = vec![0usize; mine.len()];
        let mut epoch = 0u64;
        loop {
            if epoch == warm {
                // Every output of the warm-up through the sink (on all workers), then wait for all.
                while probe.less_than(&epoch) {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
                s.ready.fetch_add(1, Ordering::SeqCst);
                while !s.go.load(Ordering::SeqCst) {
                    if index == 0 && s.ready.load(Ordering::SeqCst) == peers {
                        let mark = (
                            Instant::now(),
                            CpuMeter::start(),
                            c.records.load(Ordering::SeqCst),
                            c.bytes.load(Ordering::SeqCst),
                        );
                        *s.mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(mark);
                        s.go.store(true, Ordering::SeqCst);
                    } else {
                        worker.step_or_park(Some(Duration::from_millis(1)));
                    }
                }
            }
            let mut sent = false;
            for (i, &p) in mine.iter().enumerate() {
                let msgs = &d.by_partition[p];
                let end = (cursor[i] + per_partition).min(msgs.len());
                for (o, m) in msgs.iter().enumerate().take(end).skip(cursor[i]) {
                    input.send(InputMessage {
                        partition: p as i32,
                        offset: o as i64,
                        key: Some(m.key.clone()),
                        payload: m.payload.clone(),
                    });
                    sent = true;
                }
                cursor[i] = end;
            }
            if !sent && epoch >= warm {
                break;
            }
            epoch += 1;
            input.advance_to(epoch);
            while probe.less_than(&epoch.saturating_sub(IN_FLIGHT)) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
        }
        input.close();
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    })?;
    for r in guards.join() {
        r?;
    }
    let end = Instant::now();
    let total = counts.records.load(Ordering::Relaxed);
    if total != data.records as u64 {
        return Err(format!("engine run lost records: {total} out of {} in", data.records));
    }
    let (t0, meter, records_before, bytes_before) = start
        .mark
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or("the engine run ended before its warm-up")?;
    let cpu = meter.stop();
    let seconds = (end - t0).as_secs_f64();
    let records = total - records_before;
    Ok(EngineRun {
        workers,
        records,
        // Every input has exactly one output: the outputs counted at the mark are the warm-up's.
        warmup_records: records_before,
        output_bytes: counts.bytes.load(Ordering::Relaxed) - bytes_before,
        seconds,
        rate: records as f64 / seconds,
        whole_rate: total as f64 / (end - began).as_secs_f64(),
        whole_faults: whole.stop().minor_faults,
        cpu,
    })
}

/// Counts records and payload bytes, exchanged by output partition exactly like `KafkaSink`.
fn counting_sink<'s>(stream: StreamVec<'s, u64, OutRecord>, topics: SinkTopics, counts: Arc<Counts>) -> ProbeHandle<u64> {
    let route = topics.clone();
    let exchange = Exchange::new(move |r: &OutRecord| (r.topic as u64) * 7919 + route.partition(r) as u64);
    let probe = ProbeHandle::new();
    stream
        .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(exchange, "CountingSink", move |_cap, _info| {
            move |(input, _frontier), _output| {
                let (mut n, mut bytes) = (0u64, 0u64);
                input.for_each(|_cap, data| {
                    for r in data.drain(..) {
                        n += 1;
                        bytes += (r.payload.len() + r.key.as_ref().map_or(0, Vec::len) + r.id.len()) as u64;
                        black_box(&r);
                    }
                });
                counts.records.fetch_add(n, Ordering::Relaxed);
                counts.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        })
        .probe_with(&probe);
    probe
}

/// One measurement of the serde limit.
#[derive(Clone, Debug, Serialize)]
pub struct SerdeRun {
    /// Records parsed and predictions serialised.
    pub records: u64,
    /// Time parsing inputs (`serde_json::from_slice::<FeatureRecord>`), s.
    pub parse_seconds: f64,
    /// Time serialising predictions (`prediction_json::encode`, what the dataflow ships), s.
    pub serialise_seconds: f64,
    /// Time reading inputs with the dataflow's reader (`feature_json::read`, serde_json for
    /// what it leaves), s.
    pub read_seconds: f64,
    /// Serialised output bytes.
    pub output_bytes: u64,
    /// Records per second through both (one thread).
    pub rate: f64,
    /// Records per second through the dataflow's reader and the serialiser (the codec limit).
    pub codec_rate: f64,
    /// CPU used by this process and by others meanwhile.
    pub cpu: CpuUsage,
}

/// Parses every input and serialises every prediction of `data` (computed untimed, chunk by
/// chunk, by the sequential operator logic), timing only the serde work.
pub fn serde_limit(data: &Dataset, chunk: usize) -> SerdeRun {
    let meter = CpuMeter::start();
    let mut seq = Sequential::new(forecast_params(&ModelSource::fallback_only()), Serving::default());
    let all: Vec<(i32, i64, &super::data::Message)> = data.iter().collect();
    let (mut parse, mut read, mut ser, mut bytes) = (Duration::ZERO, Duration::ZERO, Duration::ZERO, 0u64);
    for part in all.chunks(chunk.max(1)) {
        let mut outputs = Vec::with_capacity(part.len());
        for (p, o, m) in part {
            // Benchmark input is generated valid; a failure here would be a bug in data.rs.
            let Ok(record) = FeatureRecord::parse(&m.payload) else { continue };
            let f = seq.forecast(Accepted {
                record: Box::new(record),
                source: SourcePosition { partition: *p, offset: *o },
            });
            if let Outcome::Predicted(pr) = seq.score(f) {
                outputs.push(pr);
            }
        }
        let t = Instant::now();
        for (_, _, m) in part {
            black_box(serde_json::from_slice::<FeatureRecord>(black_box(&m.payload)).ok());
        }
        parse += t.elapsed();
        let t = Instant::now();
        for (_, _, m) in part {
            let m = black_box(&m.payload);
            black_box(crate::feature_json::read(m).or_else(|| serde_json::from_slice::<FeatureRecord>(m).ok()));
        }
        read += t.elapsed();
        let t = Instant::now();
        for pr in &outputs {
            let v = crate::prediction_json::encode(black_box(pr));
            bytes += v.len() as u64;
            black_box(v);
        }
        ser += t.elapsed();
    }
    let records = all.len() as u64;
    SerdeRun {
        records,
        parse_seconds: parse.as_secs_f64(),
        serialise_seconds: ser.as_secs_f64(),
        read_seconds: read.as_secs_f64(),
        output_bytes: bytes,
        rate: records as f64 / (parse + ser).as_secs_f64(),
        codec_rate: records as f64 / (read + ser).as_secs_f64(),
        cpu: meter.stop(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::data::nyc_for_tests as base;

    #[test]
    fn a_long_run_times_what_follows_the_warm_up_and_answers_every_record() {
        // 4 partitions of 400 records, 16 per partition and epoch: 25 epochs, 4 of them warm-up.
        let data = Arc::new(base().generate(1600, 40, 4));
        assert!(data.by_partition.iter().all(|p| p.len() >= 16 * 4 * WARMUP_EPOCHS as usize));
        for workers in [1, 2] {
            let r = run(&data, workers, &ModelSource::fallback_only(), 64).unwrap();
            assert_eq!(r.warmup_records, 64 * WARMUP_EPOCHS, "{r:?}");
            assert_eq!(r.records + r.warmup_records, 1600, "{r:?}");
            assert!(r.output_bytes > 1000 * r.records, "only the timed outputs' bytes: {r:?}");
            assert!(r.output_bytes < 4000 * r.records, "only the timed outputs' bytes: {r:?}");
            assert!(r.rate > 0.0 && r.whole_rate > 0.0 && r.seconds > 0.0, "{r:?}");
        }
    }

    #[test]
    fn a_short_run_is_timed_whole() {
        let data = Arc::new(base().generate(300, 10, 4));
        let r = run(&data, 2, &ModelSource::fallback_only(), 4096).unwrap();
        assert_eq!((r.records, r.warmup_records), (300, 0), "{r:?}");
    }
}
