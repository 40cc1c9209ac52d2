//! Operator tests in timely, without a broker: the stateful operators give, on any number of
//! workers and whatever the arrival order within an epoch, exactly what the per-station maths give
//! when driven sequentially in input order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Input, Probe, ToStream};
use weatherflow::anomaly::rules::{AnomalyParams, Rules, StationAnomaly};
use weatherflow::contract::{FeatureRecord, Prediction, SourcePosition};
use weatherflow::forecast::fallback::Tuning;
use weatherflow::kafka::{InputMessage, OutTopic};
use weatherflow::metrics::Metrics;
use weatherflow::operators::forecast::{ForecastParams, StationForecastState};
use weatherflow::operators::keyed::KeyedCheckpoint;
mod capture_support;
use capture_support::captured;

use weatherflow::operators::{dlq_headers, Accepted, ForecastTemperature, Forecasted, Outcome, ParseFeatures, ScoreAnomalies};

/// NYC records as accepted input: two partitions (by station), offsets counted per partition,
/// plus a replayed (stale) record.
fn input(n: usize) -> Vec<Accepted> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/features/nyc_2013.jsonl")).unwrap();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut out: Vec<Accepted> = Vec::new();
    let mut push = |record: FeatureRecord| {
        let partition = if record.station_id == "JFK" { 0 } else { 1 };
        let offset = next.entry(partition).or_insert(0);
        out.push(Accepted {
            record: Box::new(record),
            source: SourcePosition {
                partition,
                offset: *offset,
            },
        });
        *offset += 1;
    };
    let records: Vec<FeatureRecord> = text.lines().take(n).map(|l| FeatureRecord::parse(l.as_bytes()).unwrap()).collect();
    for r in &records {
        push(r.clone());
    }
    push(records[7].clone());
    out
}

/// The sequential reference: per-station maths in input order.
fn sequential(records: &[Accepted]) -> Vec<(SourcePosition, Option<Prediction>)> {
    let params = ForecastParams {
        interval: 0.9,
        fallback: Default::default(),
        models: Default::default(),
    };
    let tuning = Tuning::new(&params.fallback, params.interval);
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|a| (a.source.partition, a.source.offset));
    let mut f: HashMap<String, StationForecastState> = HashMap::new();
    let mut a: HashMap<String, StationAnomaly> = HashMap::new();
    let mut out = Vec::new();
    for r in sorted {
        let station = r.record.station_id.clone();
        let pos = r.source;
        match f
            .entry(station.clone())
            .or_insert_with(|| StationForecastState::new(&params))
            .observe(r, &tuning)
        {
            Forecasted::Stale(_) => out.push((pos, None)),
            Forecasted::Made(m) => {
                let anomaly = a.entry(station).or_default().assess(&Rules::default(), &m.record, m.expected);
                out.push((
                    pos,
                    Some(Prediction {
                        anomaly,
                        ..placeholder(&m)
                    }),
                ));
            }
        }
    }
    out.sort_by_key(|(p, _)| (p.partition, p.offset));
    out
}

fn placeholder(m: &weatherflow::operators::Forecast) -> Prediction {
    Prediction {
        station_id: m.record.station_id.clone(),
        window_end: m.record.window_end,
        issued_at: chrono::DateTime::UNIX_EPOCH,
        model: weatherflow::contract::ModelNames {
            forecast: m.model.clone(),
            anomaly: weatherflow::anomaly::rules::NAME.into(),
        },
        interval: 0.9,
        forecast: m.points.clone(),
        anomaly: Default::default(),
        observed_temperature: m.record.temperature_mean,
        source: Some(m.source),
    }
}

/// Runs forecast + anomaly operators on `workers` workers, feeding `epoch_len` records per epoch
/// from worker 0, each epoch's records in reverse order.
fn dataflow(workers: usize, records: Vec<Accepted>, epoch_len: usize) -> (Vec<(SourcePosition, Option<Prediction>)>, u64) {
    let (send, recv) = mpsc::channel::<Event<u64, Vec<Outcome>>>();
    let send = Arc::new(Mutex::new(send));
    let metrics = Arc::new(Metrics::default());
    let records = Arc::new(records);
    let m = metrics.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let m = m.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<Accepted>>();
            let (probe, out) = stream
                .forecast_temperature(
                    ForecastParams {
                        interval: 0.9,
                        fallback: Default::default(),
                        models: Default::default(),
                    },
                    m.clone(),
                    KeyedCheckpoint::disabled(),
                )
                .score_anomalies(AnomalyParams::default(), 0.9, m, KeyedCheckpoint::disabled())
                .probe();
            out.capture_into(send);
            (input, probe)
        });
        if worker.index() == 0 {
            for (epoch, chunk) in records.chunks(epoch_len).enumerate() {
                for r in chunk.iter().rev() {
                    input.send(r.clone());
                }
                input.advance_to(epoch as u64 + 1);
                worker.step();
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();
    let mut out: Vec<_> = captured(&recv)
        .into_iter()
        .map(|o| match o {
            Outcome::Stale(s) => (s.source, None),
            Outcome::Predicted(p) => (
                p.source.unwrap(),
                Some(Prediction {
                    issued_at: chrono::DateTime::UNIX_EPOCH,
                    ..p
                }),
            ),
        })
        .collect();
    out.sort_by_key(|(p, _)| (p.partition, p.offset));
    (out, metrics.rejected_stale.load(Ordering::Relaxed))
}

#[test]
fn operators_equal_sequential_maths_on_one_and_two_workers() {
    let records = input(1500);
    let expected = sequential(&records);
    assert_eq!(
        expected.iter().filter(|(_, p)| p.is_none()).count(),
        1,
        "the replayed record is stale"
    );
    for workers in [1, 2] {
        for epoch_len in [1, 97, 2000] {
            let (got, stale) = dataflow(workers, records.clone(), epoch_len);
            assert_eq!(
                got.len(),
                records.len(),
                "one outcome per record ({workers} workers, epochs of {epoch_len})"
            );
            assert_eq!(stale, 1);
            assert!(
                got == expected,
                "{workers} workers, epochs of {epoch_len}: outputs differ from the sequential maths"
            );
        }
    }
}

#[test]
fn parse_splits_good_records_from_dead_letters() {
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/features/nyc_2013.jsonl")).unwrap();
    let mut msgs: Vec<InputMessage> = good
        .lines()
        .take(10)
        .enumerate()
        .map(|(i, l)| InputMessage {
            partition: 0,
            offset: i as i64,
            key: Some(b"k".to_vec()),
            payload: l.as_bytes().to_vec(),
        })
        .collect();
    msgs.push(InputMessage {
        partition: 1,
        offset: 42,
        key: Some(b"bad".to_vec()),
        payload: b"\xff\xfe not utf8".to_vec(),
    });
    msgs.push(InputMessage {
        partition: 1,
        offset: 43,
        key: None,
        payload: Vec::new(),
    });
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let (ok, dead) = timely::example(move |scope| {
        let (ok, dead) = msgs.to_stream(scope).container::<Vec<_>>().parse_features("in".into(), m);
        (ok.capture(), dead.capture())
    });
    let ok: Vec<Accepted> = captured(&ok);
    let dead = captured(&dead);
    assert_eq!(ok.len(), 10);
    assert_eq!(dead.len(), 2);
    assert_eq!(metrics.rejected_invalid.load(Ordering::Relaxed), 2);
    let d = &dead[0];
    assert_eq!(d.topic, OutTopic::Dlq);
    assert_eq!(d.payload, b"\xff\xfe not utf8".to_vec(), "original bytes");
    assert_eq!(d.key.as_deref(), Some(&b"bad"[..]), "original key");
    let h = |k: &str| {
        d.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(h(dlq_headers::KIND).as_deref(), Some("not_json"));
    assert_eq!(h(dlq_headers::OFFSET).as_deref(), Some("42"));
    assert_eq!(h(dlq_headers::PARTITION).as_deref(), Some("1"));
    assert_eq!(h(dlq_headers::TOPIC).as_deref(), Some("in"));
}
