//! weatherflow: live weather observations to 24-hour temperature forecasts and anomaly alerts,
//! on timely dataflow and Kafka.
//!
//! `src/` holds the reusable parts: message contracts, per-station maths (forecast, anomaly),
//! Kafka I/O, timely operators, config, models, CLI. `dataflows/` holds the dataflow graphs, one
//! per file; they are compiled into this crate as [`dataflows`].

pub mod anomaly;
pub mod bench;
pub mod checkpoint;
pub mod checkpointer;
pub mod cli;
pub mod config;
pub mod contract;
#[path = "../dataflows/mod.rs"]
pub mod dataflows;
pub mod demo;
pub mod exchange;
pub mod feature_json;
pub mod features;
pub mod forecast;
pub mod kafka;
pub mod launcher;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod observations;
pub mod operators;
pub mod ops;
pub mod pipeline;
pub mod prediction_json;
pub mod produce;
pub mod runner;
pub mod stage;
pub mod tail;
pub mod train;
pub mod utc_json;
