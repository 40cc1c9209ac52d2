//! Delivery failures are retried and surfaced, never dropped: the broker leading the predictions
//! topic goes down mid-run (librdkafka's mock cluster, two brokers), produce requests time out,
//! the sink re-queues them, and once the broker is back every prediction arrives exactly once.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use weatherflow::config::{Overrides, RawConfig, StartFrom};
use weatherflow::contract::Prediction;
use weatherflow::metrics::Metrics;
use weatherflow::runner;

#[test]
fn failed_deliveries_are_retried_until_acknowledged() {
    let mock = MockCluster::new(2).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut raw = RawConfig::default();
    raw.apply(&Overrides {
        processes: Some(1),
        workers: Some(2),
        brokers: Some(brokers.clone()),
        stop_at_end: true,
    });
    raw.cluster.processes = vec![format!("127.0.0.1:{}", common::free_ports(1)[0])];
    raw.source.start = StartFrom::Earliest;
    raw.topics.create = false;
    raw.dataflow.log_every_s = 0;
    // This test is about the sink's retry path. (With checkpoints on, start-up first reads back
    // the output partitions, which this test keeps unreachable on purpose.)
    raw.checkpoint.enabled = false;
    // Give up on a produce request after 1.5 s, so the sink's own retry path is exercised.
    raw.kafka.producer.insert("message.timeout.ms".into(), "1500".into());
    let s = raw.resolve("test").unwrap();
    for t in [&s.topics.features, &s.topics.predictions, &s.topics.dlq] {
        mock.create_topic(t, 1, 1).unwrap();
    }
    mock.partition_leader(&s.topics.features, 0, Some(1)).unwrap();
    mock.partition_leader(&s.topics.predictions, 0, Some(2)).unwrap();
    mock.partition_leader(&s.topics.dlq, 0, Some(2)).unwrap();
    let input = common::nyc(400);
    common::publish(&brokers, &s.topics.features, 1, &input);

    mock.broker_down(2).unwrap();
    let metrics = Arc::new(Metrics::default());
    let run = {
        let (s, m) = (s.clone(), metrics.clone());
        std::thread::spawn(move || runner::run_process_with(&s, 0, Arc::new(AtomicBool::new(false)), m))
    };
    std::thread::sleep(Duration::from_secs(5));
    let during = metrics.snapshot();
    assert_eq!(during.records_in, 400, "the source kept reading from the healthy broker");
    assert_eq!(during.predictions_acked, 0, "nothing can be acknowledged while the leader is down");
    assert!(during.delivery_retries > 0, "timed-out deliveries are counted: {during}");
    mock.broker_up(2).unwrap();
    let done = run.join().unwrap().expect("the run completes once the broker is back");
    assert_eq!(done.predictions_acked, 400, "{done}");

    let out = weatherflow::kafka::read_to_end(&brokers, &Default::default(), &s.topics.predictions, Duration::from_secs(30)).unwrap();
    let windows: BTreeSet<(String, i64)> = out
        .iter()
        .map(|m| {
            let p: Prediction = serde_json::from_slice(&m.payload).unwrap();
            (p.station_id, p.window_end.timestamp())
        })
        .collect();
    assert_eq!(windows.len(), 400, "every prediction arrived");
    assert_eq!(out.len(), 400, "and none twice");
}
