//! Hot reload in a running timely dataflow (two workers, no restart): promoting a new version,
//! rolling back, and removing the pointer switch the models at an epoch boundary; every record of
//! one epoch is served by one version, and every prediction names the versions that made it.
//!
//! ```text
//!   worker 0 feeds epochs 0..N ── after epoch 9: promote forecast v2 ── after epoch 19: rollback
//!   ── after epoch 29: remove latest (fallback) ──> outputs per epoch: model.forecast / model.anomaly
//! ```

mod capture_support;
mod models_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{mpsc, Arc, Mutex};

use capture_support::captured_at;
use models_support::{small_options, store_with_forecasts};
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Input, Probe};
use weatherflow::anomaly::rules::AnomalyParams;
use weatherflow::contract::{FeatureRecord, SourcePosition};
use weatherflow::metrics::Metrics;
use weatherflow::models::serving::ModelSource;
use weatherflow::models::ModelStore;
use weatherflow::operators::forecast::ForecastParams;
use weatherflow::operators::keyed::KeyedCheckpoint;
use weatherflow::operators::{Accepted, ForecastTemperature, Outcome, ScoreAnomalies};

const EPOCHS: usize = 40;
/// Records per epoch: two hours of three stations.
const PER_EPOCH: usize = 6;

fn accepted(records: &[FeatureRecord]) -> Vec<Accepted> {
    let mut next: HashMap<i32, i64> = HashMap::new();
    records
        .iter()
        .map(|r| {
            let partition = match r.station_id.as_str() {
                "EWR" => 0,
                "JFK" => 1,
                _ => 2,
            };
            let offset = next.entry(partition).or_insert(0);
            *offset += 1;
            Accepted {
                record: Box::new(r.clone()),
                source: SourcePosition {
                    partition,
                    offset: *offset - 1,
                },
            }
        })
        .collect()
}

#[test]
fn promotions_and_rollbacks_switch_models_at_epoch_boundaries() {
    let (dir, file) = store_with_forecasts("hot-reload", true);
    let store = ModelStore::new(&dir);
    let mut anomaly = small_options("anomaly", &file, &dir, "v1", &[]);
    anomaly.forecast_version = Some("v1".into());
    weatherflow::train::anomaly::train_anomaly(&anomaly).unwrap();
    store.promote("forecast", "v1").unwrap();
    store.promote("anomaly", "v1").unwrap();

    // Held-out records (the models were trained on January to mid-July).
    let records: Vec<FeatureRecord> = models_support::nyc_until(models_support::SMALL_UNTIL)
        .into_iter()
        .filter(|r| r.window_end >= weatherflow::train::parse_time("2013-08-20").unwrap())
        .take(EPOCHS * PER_EPOCH)
        .collect();
    let input = Arc::new(accepted(&records));
    let (send, recv) = mpsc::channel::<Event<u64, Vec<Outcome>>>();
    let send = Arc::new(Mutex::new(send));
    let source = ModelSource::store(&dir, 0);
    let store_for_workers = store.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let send = send.lock().unwrap().clone();
        let metrics = Arc::new(Metrics::default());
        let params = ForecastParams {
            interval: 0.9,
            fallback: Default::default(),
            models: source.clone(),
        };
        let (mut feed, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (feed, stream) = scope.new_input::<Vec<Accepted>>();
            let (probe, out) = stream
                .forecast_temperature(params, metrics.clone(), KeyedCheckpoint::disabled())
                .score_anomalies(AnomalyParams::default(), 0.9, metrics, KeyedCheckpoint::disabled())
                .probe();
            out.capture_into(send);
            (feed, probe)
        });
        for (epoch, chunk) in input.chunks(PER_EPOCH).enumerate() {
            let epoch = epoch as u64;
            if worker.index() == 0 {
                // Between epochs, once every worker is done with the previous one.
                match epoch {
                    10 => {
                        store_for_workers.promote("forecast", "v2").unwrap();
                    }
                    20 => {
                        store_for_workers.rollback("forecast").unwrap();
                    }
                    30 => {
                        std::fs::remove_file(store_for_workers.dir().join("forecast/latest")).unwrap();
                        std::fs::remove_file(store_for_workers.dir().join("anomaly/latest")).unwrap();
                    }
                    _ => {}
                }
                for a in chunk {
                    feed.send(a.clone());
                }
            }
            feed.advance_to(epoch + 1);
            while probe.less_than(&(epoch + 1)) {
                worker.step();
            }
        }
        feed.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();

    // epoch -> (forecast names, anomaly names) of its predictions.
    let mut by_epoch: BTreeMap<u64, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut n = 0;
    for (epoch, o) in captured_at(&recv) {
        if let Outcome::Predicted(p) = o {
            n += 1;
            let e = by_epoch.entry(epoch).or_default();
            e.0.insert(p.model.forecast);
            e.1.insert(p.model.anomaly);
        }
    }
    assert_eq!(n, EPOCHS * PER_EPOCH, "one prediction per record");
    for (epoch, (forecast, anomaly)) in &by_epoch {
        let expected_forecast = match epoch {
            0..=9 | 20..=29 => "ridge-per-lead/v1",
            10..=19 => "ridge-per-lead/v2",
            _ => "fallback/persistence-diurnal-v1",
        };
        let expected_anomaly = if *epoch < 30 { "robust-iforest/v1+rules/v1" } else { "rules/v1" };
        assert_eq!(
            forecast.iter().collect::<Vec<_>>(),
            vec![expected_forecast],
            "epoch {epoch}: every record of an epoch is served by one version"
        );
        assert_eq!(anomaly.iter().collect::<Vec<_>>(), vec![expected_anomaly], "epoch {epoch}");
    }
    assert_eq!(by_epoch.len(), EPOCHS);
}
