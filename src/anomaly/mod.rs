//! Per-station anomaly maths, free of timely and Kafka.
//!
//! * [`qc`]: stateless plausibility envelopes (is this value a sensor glitch rather than
//!   weather?), shared with the forecaster, which never learns from implausible values.
//! * [`rules`]: [`StationAnomaly`], the per-station rule set that turns a feature record (and the
//!   forecaster's expectation for it) into a [`contract::Anomaly`](crate::contract::Anomaly)
//!   with a score in [0, 1] and human-readable reasons.
//! * [`trained`]: evidence from a model fitted on normal data (robust statistics, residual
//!   z-scores, CUSUM drift, stuck runs, an [`iforest`] isolation forest), served from the model
//!   store and combined with the rules by the anomaly operator.

pub mod iforest;
pub mod qc;
pub mod rules;
pub mod trained;

pub use rules::{AnomalyParams, StationAnomaly};
