//! The monitoring stage on one worker: its Kafka readers and sink, built from the settings, and
//! when it runs relative to the other stages.
//!
//! ```text
//!   streaming:                    monitoring dataflow built first, runs beside the other stages
//!   --until-end with inference:   built after the inference stage drained (so it reads every
//!                                 prediction), then run to the end of both topics
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::CommitMode;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use super::MonitorParams;
use crate::config::{Settings, Stage};
use crate::dataflows::monitoring::{self, MonitoringParts};
use crate::kafka::sink::{delivery_producer, OutTopic, SinkParts, SinkProgress, SinkTopics};
use crate::kafka::source::PartitionReader;
use crate::kafka::{self, KafkaIoError, KafkaSourceSpec};
use crate::metrics::Metrics;
use crate::ops::view::ViewRoute;

/// The monitoring parameters of the settings.
pub fn params(s: &Settings) -> MonitorParams {
    let m = &s.monitoring;
    MonitorParams {
        window_hours: m.window_hours as i64,
        publish_interval_ms: m.publish_interval_ms,
        min_pairs: m.min_pairs as i64,
        chart_hours: m.chart_hours as i64,
    }
}

/// Whether the stage must wait for the others to drain before it starts (a run to the end of
/// the input that also produces the predictions it verifies).
pub fn deferred(s: &Settings) -> bool {
    s.source.stop_at_end && (s.pipeline.runs(Stage::Inference) || s.pipeline.runs(Stage::Features))
}

/// The monitoring dataflow running on one worker.
pub struct MonitoringRun {
    probe: ProbeHandle<u64>,
    readers: [Rc<RefCell<PartitionReader>>; 2],
}

impl MonitoringRun {
    /// Builds the dataflow on `worker`.
    pub fn start(
        worker: &mut Worker,
        s: &Settings,
        shutdown: &Arc<AtomicBool>,
        metrics: &Arc<Metrics>,
        views: ViewRoute,
    ) -> Result<MonitoringRun, KafkaIoError> {
        let parts = parts(s, worker.index(), worker.peers(), shutdown, metrics, views)?;
        let readers = [parts.predictions_reader.clone(), parts.features_reader.clone()];
        tracing::info!(
            worker = worker.index(),
            predictions = ?readers[0].borrow().partitions(),
            features = ?readers[1].borrow().partitions(),
            "monitoring stage ready"
        );
        let probe = worker.dataflow(|scope| monitoring::build(scope, parts));
        Ok(MonitoringRun { probe, readers })
    }

    /// Both sources finished and everything was published.
    pub fn done(&self) -> bool {
        self.probe.done()
    }

    /// Steps `worker` until the stage has drained, then commits its offsets.
    pub fn drain(self, worker: &mut Worker) {
        while !self.probe.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
        }
        for r in &self.readers {
            let mut r = r.borrow_mut();
            r.fold_through(u64::MAX);
            r.commit(CommitMode::Sync);
        }
    }
}

fn parts(
    s: &Settings,
    index: usize,
    peers: usize,
    shutdown: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
    views: ViewRoute,
) -> Result<MonitoringParts, KafkaIoError> {
    let t = &s.topics;
    let group = format!("{}-monitoring", s.kafka.group_id);
    let wait = Duration::from_secs(60);
    let spec = |topic: &str| KafkaSourceSpec {
        topic: topic.to_string(),
        max_poll_records: s.source.max_poll_records,
        // Monitoring answers with rolling windows, not per record: no in-flight bound.
        max_in_flight: 0,
        start: s.monitoring.start,
        stop_at_end: s.source.stop_at_end,
        epoch_ms: s.dataflow.epoch_ms,
        metadata_refresh: Duration::from_millis(s.source.metadata_refresh_ms),
        shutdown: shutdown.clone(),
    };
    let reader = |topic: &str| -> Result<Rc<RefCell<PartitionReader>>, KafkaIoError> {
        let consumer = kafka::consumer(&s.kafka.brokers, &group, &s.consumer_options())?;
        let n = kafka::wait_for_topic(&consumer, &s.kafka.brokers, topic, wait)?;
        let r = PartitionReader::new(consumer, topic, n, index, peers, s.monitoring.start, Default::default())?;
        Ok(Rc::new(RefCell::new(r)))
    };
    let predictions_reader = reader(&t.predictions)?;
    let features_reader = reader(&t.features)?;
    let probe = kafka::consumer(&s.kafka.brokers, &group, &s.consumer_options())?;
    let n = kafka::wait_for_topic(&probe, &s.kafka.brokers, &t.model_metrics, wait)?;
    drop(probe);
    Ok(MonitoringParts {
        predictions: spec(&t.predictions),
        predictions_reader,
        features: spec(&t.features),
        features_reader,
        sink: SinkParts {
            lineage: "monitoring".into(),
            producer: delivery_producer(&s.kafka.brokers, &s.producer_options(), None)?,
            topics: SinkTopics::default().with(OutTopic::Predictions, &t.model_metrics, n as i32),
            published: Default::default(),
            progress: Rc::new(RefCell::new(SinkProgress::default())),
            metrics: metrics.clone(),
        },
        params: params(s),
        views,
        metrics: metrics.clone(),
    })
}
