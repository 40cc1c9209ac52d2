//! Process-wide counters, shared by all workers of a process.
//!
//! Every record that enters is accounted for exactly once on the way out:
//! `records_in = predictions_acked + dlq_acked + (in flight)`, which the progress log prints and
//! the tests check.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters (monotonic).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages read from the input topic.
    pub records_in: AtomicU64,
    /// Input messages refused as malformed or impossible.
    pub rejected_invalid: AtomicU64,
    /// Input records refused as an older or repeated window of their station.
    pub rejected_stale: AtomicU64,
    /// Predictions acknowledged by the broker.
    pub predictions_acked: AtomicU64,
    /// Dead letters acknowledged by the broker.
    pub dlq_acked: AtomicU64,
    /// Predictions flagged as anomalous.
    pub anomalies: AtomicU64,
    /// Forecasts made by a trained model (the others by the statistical fallback, for want of a
    /// served model, of the station's climatology or of an accepted origin temperature).
    pub forecasts_trained: AtomicU64,
    /// Deliveries that failed and were re-queued.
    pub delivery_retries: AtomicU64,
    /// Consumer errors seen.
    pub source_errors: AtomicU64,
    /// Outputs not produced again after a restart because an earlier execution published them.
    pub dedup_skipped: AtomicU64,
    /// Checkpoints written by this process's workers.
    pub checkpoints: AtomicU64,
    /// Source activations that did not read because checkpoints lagged (backpressure).
    pub source_gated: AtomicU64,
    /// Source activations that did not read because `source.max_in_flight` records were read and
    /// not yet acknowledged (backpressure from the sink and the broker).
    pub source_throttled: AtomicU64,
    /// Features stage: observations refused as late (their window was already emitted).
    pub rejected_late: AtomicU64,
    /// Features stage: feature records emitted (one per station-window).
    pub windows_emitted: AtomicU64,
    /// Features stage: feature records acknowledged by the broker.
    pub features_acked: AtomicU64,
    /// Features stage: late records acknowledged by the broker.
    pub late_acked: AtomicU64,
    /// Per topic-partition counts, consumer lag, latency/epoch/checkpoint histograms
    /// (`crate::ops::counters`, rendered on `/metrics`).
    pub ops: crate::ops::counters::OpsMetrics,
    /// Optional hook on every acknowledged output (see [`crate::kafka::sink::AckTap`]); set before
    /// the stages start.
    pub ack_tap: AckTapSlot,
}

/// Holds an [`crate::kafka::sink::AckTap`], set at most once.
#[derive(Default)]
pub struct AckTapSlot(std::sync::OnceLock<crate::kafka::sink::AckTap>);

impl AckTapSlot {
    /// Installs `tap`; false if one was installed already.
    pub fn set(&self, tap: crate::kafka::sink::AckTap) -> bool {
        self.0.set(tap).is_ok()
    }

    /// The installed tap, if any.
    pub fn get(&self) -> Option<crate::kafka::sink::AckTap> {
        self.0.get().cloned()
    }
}

impl std::fmt::Debug for AckTapSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "AckTap(set)" } else { "AckTap(none)" })
    }
}

/// A point-in-time copy of [`Metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// See [`Metrics::records_in`].
    pub records_in: u64,
    /// See [`Metrics::rejected_invalid`].
    pub rejected_invalid: u64,
    /// See [`Metrics::rejected_stale`].
    pub rejected_stale: u64,
    /// See [`Metrics::predictions_acked`].
    pub predictions_acked: u64,
    /// See [`Metrics::dlq_acked`].
    pub dlq_acked: u64,
    /// See [`Metrics::anomalies`].
    pub anomalies: u64,
    /// See [`Metrics::forecasts_trained`].
    pub forecasts_trained: u64,
    /// See [`Metrics::delivery_retries`].
    pub delivery_retries: u64,
    /// See [`Metrics::source_errors`].
    pub source_errors: u64,
    /// See [`Metrics::dedup_skipped`].
    pub dedup_skipped: u64,
    /// See [`Metrics::checkpoints`].
    pub checkpoints: u64,
}

impl Metrics {
    /// Reads all counters.
    pub fn snapshot(&self) -> Snapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            records_in: r(&self.records_in),
            rejected_invalid: r(&self.rejected_invalid),
            rejected_stale: r(&self.rejected_stale),
            predictions_acked: r(&self.predictions_acked),
            dlq_acked: r(&self.dlq_acked),
            anomalies: r(&self.anomalies),
            forecasts_trained: r(&self.forecasts_trained),
            delivery_retries: r(&self.delivery_retries),
            source_errors: r(&self.source_errors),
            dedup_skipped: r(&self.dedup_skipped),
            checkpoints: r(&self.checkpoints),
        }
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in={} predictions={} dlq={} (invalid={} stale={}) anomalies={} retries={} deduplicated={} checkpoints={}",
            self.records_in,
            self.predictions_acked,
            self.dlq_acked,
            self.rejected_invalid,
            self.rejected_stale,
            self.anomalies,
            self.delivery_retries,
            self.dedup_skipped,
            self.checkpoints
        )
    }
}
