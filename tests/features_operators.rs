//! The features stage's operators in timely, without a broker: hourly features from the Payerne
//! one-minute file equal a straightforward batch computation written here; shuffling within the
//! allowed lateness changes nothing; records beyond it go to the late output with the reason;
//! invalid messages go to the DLQ with their bytes; and 1, 2 or 3 workers give identical outputs.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Concat, Input, Probe};
use weatherflow::contract::FeatureRecord;
use weatherflow::features::event_time::WindowSpec;
use weatherflow::kafka::assign::station_hash;
use weatherflow::kafka::{InputMessage, OutRecord, OutTopic};
use weatherflow::metrics::Metrics;
use weatherflow::observations::message::encode_observation;
use weatherflow::observations::{Observation, SourceFormat};
use weatherflow::operators::dlq_headers;
use weatherflow::operators::window::{late_headers, AssignWatermarks, WindowFeatures, WindowParams};
use weatherflow::produce::replay_order;
use weatherflow::produce::rng::Rng;
use weatherflow::produce::synthetic::{Fault, FaultRates, Generator, SyntheticConfig};

mod capture_support;
mod feature_batch;
use capture_support::{captured, captured_at};
use feature_batch::{assert_matches_batch, close};

fn payerne() -> Vec<Observation> {
    replay_order(
        SourceFormat::PayerneBsrn,
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/raw/payerne_2016-06_1min.csv").as_ref(),
    )
    .unwrap()
}

fn params(lateness_min: i64) -> WindowParams {
    WindowParams {
        spec: WindowSpec {
            size: Duration::hours(1),
            allowed_lateness: Duration::minutes(lateness_min),
        },
        // Never in these tests: the input is fed without pauses.
        idle_timeout: StdDuration::from_secs(3600),
        max_future: None,
        source_topic: "raw".into(),
    }
}

/// Messages of one partition, offsets in order.
fn messages(partition: i32, payloads: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<InputMessage> {
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, (key, payload))| InputMessage {
            partition,
            offset: i as i64,
            key: Some(key.into_bytes()),
            payload,
        })
        .collect()
}

fn encoded(obs: &[Observation]) -> Vec<(String, Vec<u8>)> {
    obs.iter().map(|o| (o.station_id.clone(), encode_observation(o))).collect()
}

/// What the operators produced.
#[derive(Debug, Default)]
struct Outputs {
    features: Vec<FeatureRecord>,
    late: Vec<OutRecord>,
    dlq: Vec<OutRecord>,
    late_count: u64,
    invalid_count: u64,
    windows_count: u64,
}

/// Runs AssignWatermarks + WindowFeatures on `workers` workers. Partition `p` is fed by worker
/// `p mod workers` (as the Kafka source assigns it), `epoch_len` messages per partition per epoch.
fn run(workers: usize, partitions: Vec<Vec<InputMessage>>, epoch_len: usize, p: WindowParams) -> Outputs {
    let (send, recv) = mpsc::channel::<Event<u64, Vec<OutRecord>>>();
    let send = Arc::new(Mutex::new(send));
    let metrics = Arc::new(Metrics::default());
    let partitions = Arc::new(partitions);
    let m = metrics.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let (index, peers) = (worker.index(), worker.peers());
        let (m, p) = (m.clone(), p.clone());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<InputMessage>>();
            let (obs, marks, refused) = stream.assign_watermarks(&p, m.clone());
            let (probe, out) = obs.window_features(marks, &p, m).concat(refused).probe();
            out.capture_into(send);
            (input, probe)
        });
        let mine: Vec<&Vec<InputMessage>> = partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % peers == index)
            .map(|(_, v)| v)
            .collect();
        let longest = mine.iter().map(|v| v.len()).max().unwrap_or(0);
        for (epoch, start) in (0..longest).step_by(epoch_len.max(1)).enumerate() {
            for part in &mine {
                for msg in part.iter().skip(start).take(epoch_len) {
                    input.send(msg.clone());
                }
            }
            input.advance_to(epoch as u64 + 1);
            worker.step();
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();
    let mut out = Outputs::default();
    for r in captured(&recv) {
        match r.topic {
            OutTopic::Features => out
                .features
                .push(FeatureRecord::parse(&r.payload).expect("features meet the inference contract")),
            OutTopic::Late => out.late.push(r),
            OutTopic::Dlq => out.dlq.push(r),
            OutTopic::Predictions => panic!("the features stage writes no predictions"),
        }
    }
    out.features
        .sort_by(|a, b| (&a.station_id, a.window_end).cmp(&(&b.station_id, b.window_end)));
    let key = |r: &OutRecord| r.id.clone();
    out.late.sort_by_key(key);
    out.dlq.sort_by_key(key);
    out.late_count = metrics.rejected_late.load(Ordering::Relaxed);
    out.invalid_count = metrics.rejected_invalid.load(Ordering::Relaxed);
    out.windows_count = metrics.windows_emitted.load(Ordering::Relaxed);
    out
}

#[test]
fn payerne_features_equal_a_batch_computation() {
    let obs = payerne();
    assert_eq!(obs.len(), 43_200);
    let out = run(1, vec![messages(0, encoded(&obs))], 997, params(10));
    // 2016-06-01T00:00 ends the window (May 31 23:00, 00:00]; then 719 full hours; the last
    // window (23:00, July 1 00:00] holds 23:01..23:59.
    assert_eq!(out.features.len(), 721);
    assert_eq!(out.features[0].count, 1);
    assert_eq!(out.features[720].count, 59);
    assert_eq!(out.features.iter().filter(|r| r.count == 60).count(), 719);
    assert_eq!(out.features.iter().map(|r| r.count).sum::<u64>(), 43_200);
    assert!(out.late.is_empty() && out.dlq.is_empty());
    assert_eq!(out.windows_count, 721);
    assert_matches_batch(&out.features, &obs);
}

/// Displaces every record by a random 0-9 minutes of event time (less than the 10 min lateness).
fn shuffled_within(obs: &[Observation], max_min: f64, seed: u64) -> Vec<Observation> {
    let mut rng = Rng::new(seed, 0, 0);
    let mut keyed: Vec<(DateTime<Utc>, usize)> = obs
        .iter()
        .enumerate()
        .map(|(i, o)| (o.time + Duration::milliseconds((rng.uniform() * max_min * 60_000.0) as i64), i))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| obs[i].clone()).collect()
}

#[test]
fn shuffling_within_the_allowed_lateness_gives_the_same_features() {
    let obs = payerne();
    let ordered = run(1, vec![messages(0, encoded(&obs))], 500, params(10));
    let shuffled_obs = shuffled_within(&obs, 9.0, 11);
    let moved = shuffled_obs.iter().zip(&obs).filter(|(a, b)| a.time != b.time).count();
    assert!(moved > 30_000, "the shuffle moved {moved} records");
    let shuffled = run(1, vec![messages(0, encoded(&shuffled_obs))], 500, params(10));
    assert!(
        shuffled.late.is_empty(),
        "nothing is late within the lateness: {:?}",
        shuffled.late.first()
    );
    assert_eq!(shuffled.features.len(), ordered.features.len());
    for (a, b) in shuffled.features.iter().zip(&ordered.features) {
        assert_eq!((&a.station_id, a.window_end, a.count), (&b.station_id, b.window_end, b.count));
        for ((name, x), (_, y)) in a.numeric_fields().iter().zip(b.numeric_fields().iter()) {
            close(*x, *y, &format!("{} {} {name}", a.station_id, a.window_end));
        }
    }
    assert_matches_batch(&shuffled.features, &obs);
}

#[test]
fn records_beyond_the_lateness_go_to_the_late_output_with_the_reason() {
    let obs = payerne();
    // Take every 2000th minute out and deliver it three hours of data later.
    let mut sent: Vec<Observation> = Vec::new();
    let mut held: Vec<(usize, Observation)> = Vec::new();
    for (i, o) in obs.iter().enumerate() {
        if i % 2000 == 1000 {
            held.push((i + 180, o.clone()));
        } else {
            sent.push(o.clone());
        }
        while let Some(pos) = held.iter().position(|(due, _)| *due == i) {
            sent.push(held.remove(pos).1);
        }
    }
    assert!(held.is_empty());
    let late_times: Vec<DateTime<Utc>> = obs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2000 == 1000)
        .map(|(_, o)| o.time)
        .collect();
    let mut payloads = encoded(&sent);
    payloads.insert(
        5,
        (
            "PAY".into(),
            b"{\"station_id\":\"PAY\",\"time\":\"2016-06-01T00:04:30Z\",\"humidity\":-3}".to_vec(),
        ),
    );
    payloads.insert(9, ("PAY".into(), b"\xff garbage".to_vec()));
    let out = run(1, vec![messages(0, payloads)], 256, params(10));
    assert_eq!(out.late.len(), late_times.len());
    assert_eq!(out.late_count, late_times.len() as u64, "counted");
    for r in &out.late {
        let h = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(h(dlq_headers::KIND).as_deref(), Some(late_headers::KIND_VALUE));
        let reason = h(dlq_headers::ERROR).unwrap();
        assert!(reason.contains("watermark") && reason.contains("10 min"), "{reason}");
        assert!(h(late_headers::WINDOW_END).is_some() && h(late_headers::WATERMARK).is_some());
        let o: Observation = serde_json::from_slice(&r.payload).expect("original bytes");
        assert!(late_times.contains(&o.time));
    }
    assert_eq!(out.dlq.len(), 2);
    assert_eq!(out.invalid_count, 2);
    assert!(out.dlq.iter().any(|r| r.payload == b"\xff garbage".to_vec()), "original bytes kept");
    let kinds: Vec<String> = out
        .dlq
        .iter()
        .map(|r| String::from_utf8_lossy(&r.headers.iter().find(|(k, _)| k == dlq_headers::KIND).unwrap().1).into_owned())
        .collect();
    assert!(
        kinds.contains(&"impossible_value".to_string()) && kinds.contains(&"not_json".to_string()),
        "{kinds:?}"
    );
    // The features are those of everything that was on time.
    let on_time: Vec<Observation> = obs.iter().filter(|o| !late_times.contains(&o.time)).cloned().collect();
    assert_matches_batch(&out.features, &on_time);
}

/// Synthetic stations over four partitions (by station hash, like the producer), with every fault.
fn synthetic_partitions() -> (Vec<Vec<InputMessage>>, weatherflow::produce::synthetic::FaultCounts) {
    let cfg = SyntheticConfig {
        seed: 5,
        stations: 40,
        duration: Duration::hours(30),
        faults: FaultRates {
            out_of_order: 0.02,
            late: 0.003,
            invalid: 0.002,
            ..FaultRates::typical()
        },
        ..SyntheticConfig::default()
    };
    let mut g = Generator::new(cfg);
    let mut parts: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); 4];
    for r in g.by_ref() {
        parts[(station_hash(&r.station_id) % 4) as usize].push((r.station_id, r.payload));
    }
    let parts = parts.into_iter().enumerate().map(|(p, v)| messages(p as i32, v)).collect();
    (parts, g.counts())
}

#[test]
fn outputs_do_not_depend_on_workers_or_epochs() {
    let (parts, counts) = synthetic_partitions();
    assert!(counts.late > 5 && counts.out_of_order > 50 && counts.invalid > 5, "{counts}");
    let reference = run(1, parts.clone(), 1000, params(10));
    assert_eq!(
        reference.late.len() as u64,
        counts.late,
        "every late record, and only those, is late"
    );
    assert_eq!(reference.dlq.len() as u64, counts.invalid, "every invalid record is refused");
    assert_eq!(
        reference.features.iter().map(|r| r.count).sum::<u64>(),
        counts.records - counts.late - counts.invalid
    );
    let json = |o: &Outputs| -> Vec<String> { o.features.iter().map(|r| serde_json::to_string(r).unwrap()).collect() };
    for (workers, epoch_len) in [(2, 37), (3, 500), (2, 5000)] {
        let other = run(workers, parts.clone(), epoch_len, params(10));
        assert!(
            json(&other) == json(&reference),
            "{workers} workers, epochs of {epoch_len}: features differ"
        );
        assert_eq!(other.late, reference.late, "{workers} workers: late records differ");
        assert_eq!(other.dlq, reference.dlq, "{workers} workers: dead letters differ");
    }
}

#[test]
fn synthetic_faults_reach_the_outputs_they_claim() {
    let cfg = SyntheticConfig {
        seed: 9,
        stations: 12,
        duration: Duration::hours(12),
        faults: FaultRates {
            late: 0.01,
            out_of_order: 0.05,
            ..FaultRates::default()
        },
        ..SyntheticConfig::default()
    };
    let records: Vec<_> = Generator::new(cfg).collect();
    let late_ids: std::collections::BTreeSet<(String, i64)> = records
        .iter()
        .filter(|r| r.faults.iter().any(|f| matches!(f, Fault::Late { .. })))
        .map(|r| (r.station_id.clone(), r.time.timestamp()))
        .collect();
    let all: Vec<(String, Vec<u8>)> = records.iter().map(|r| (r.station_id.clone(), r.payload.clone())).collect();
    let out = run(1, vec![messages(0, all)], 300, params(10));
    let got: std::collections::BTreeSet<(String, i64)> = out
        .late
        .iter()
        .map(|r| {
            let o: Observation = serde_json::from_slice(&r.payload).unwrap();
            (o.station_id, o.time.timestamp())
        })
        .collect();
    assert!(!late_ids.is_empty());
    assert_eq!(got, late_ids, "exactly the records delivered late are late");
}

#[test]
fn a_quiet_partition_emits_its_last_window_after_the_idle_timeout() {
    // One station's readings up to 13:00, then nothing. With 1 s of lateness the watermark stops
    // at 12:59:59, so without the idle advance (event time moving on with the wall clock once the
    // partition is quiet) the window ending 13:00 would stay open until the input closes.
    let obs: Vec<Observation> = payerne().into_iter().take(13 * 60 + 1).collect();
    let msgs = messages(0, encoded(&obs));
    let p = WindowParams {
        idle_timeout: StdDuration::from_millis(100),
        spec: WindowSpec {
            size: Duration::hours(1),
            allowed_lateness: Duration::seconds(1),
        },
        ..params(0)
    };
    let (send, recv) = mpsc::channel::<Event<u64, Vec<OutRecord>>>();
    let metrics = Arc::new(Metrics::default());
    let emitted_while_open = timely::execute(timely::Config::thread(), move |worker| {
        let (m, p, send) = (metrics.clone(), p.clone(), send.clone());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<InputMessage>>();
            let (obs, marks, refused) = stream.assign_watermarks(&p, m.clone());
            let (probe, out) = obs.window_features(marks, &p, m).concat(refused).probe();
            out.capture_into(send);
            (input, probe)
        });
        for m in &msgs {
            input.send(m.clone());
        }
        input.advance_to(1);
        // Keep the input open (epochs move on, no data) for well over the idle timeout.
        let started = std::time::Instant::now();
        let mut epoch = 1;
        while started.elapsed() < StdDuration::from_millis(1600) {
            epoch += 1;
            input.advance_to(epoch);
            worker.step_or_park(Some(StdDuration::from_millis(10)));
        }
        while probe.less_than(input.time()) {
            worker.step();
        }
        let before_close: usize = metrics.windows_emitted.load(Ordering::Relaxed) as usize;
        input.close();
        while !probe.done() {
            worker.step();
        }
        before_close
    })
    .unwrap()
    .join()
    .pop()
    .unwrap()
    .unwrap();
    let features: Vec<FeatureRecord> = captured(&recv)
        .into_iter()
        .map(|r| FeatureRecord::parse(&r.payload).unwrap())
        .collect();
    // Windows ending 00:00 .. 13:00; the last one only through the idle advance.
    assert_eq!(features.len(), 14);
    assert_eq!(emitted_while_open, 14, "every window was out before the input closed");
    assert_eq!(
        features.last().map(|r| (r.window_end, r.count)),
        Some((payerne()[0].time + Duration::hours(13), 60))
    );
}

#[test]
fn windows_flushed_at_the_end_never_overtake_earlier_windows() {
    // All input arrives in one late epoch and the input closes before the operators ever run:
    // the windows closed by the watermark and the ones flushed at the end of input all leave in
    // that one activation. Downstream (the sink writes in epoch order) each station's windows
    // must come out in window order, so the flushed ones must not carry an earlier epoch.
    let obs: Vec<Observation> = payerne().into_iter().take(600).collect();
    let msgs = messages(0, encoded(&obs));
    let (send, recv) = mpsc::channel::<Event<u64, Vec<OutRecord>>>();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::thread(), move |worker| {
        let send = send.lock().unwrap().clone();
        let (p, m) = (params(10), Arc::new(Metrics::default()));
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<InputMessage>>();
            let (obs, marks, refused) = stream.assign_watermarks(&p, m.clone());
            let (probe, out) = obs.window_features(marks, &p, m).concat(refused).probe();
            out.capture_into(send);
            (input, probe)
        });
        input.advance_to(7);
        for msg in &msgs {
            input.send(msg.clone());
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();
    let mut stamped: Vec<(u64, usize, FeatureRecord)> = captured_at(&recv)
        .into_iter()
        .enumerate()
        .filter(|(_, (_, r))| r.topic == OutTopic::Features)
        .map(|(i, (t, r))| (t, i, FeatureRecord::parse(&r.payload).unwrap()))
        .collect();
    assert!(stamped.len() >= 10, "600 minutes span at least 10 hourly windows");
    assert!(
        stamped.iter().all(|(t, _, _)| *t >= 7),
        "no window leaves before the epoch of its data"
    );
    stamped.sort_by_key(|(t, i, _)| (*t, *i));
    let ends: Vec<_> = stamped.iter().map(|(_, _, r)| r.window_end).collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "epoch order is window order: {ends:?}");
}
