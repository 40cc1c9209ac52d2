//! `ParseFeatures`: decodes and validates input messages on the worker that read them.
//!
//! ```text
//!   InputMessage ──FeatureRecord::parse──┬── ok  ──> Accepted      (to the stateful operators)
//!                                        └── err ──> OutRecord DLQ (original key and bytes, reason headers)
//! ```
//!
//! Runs before the exchange, so malformed messages never cross the network and each worker
//! parses the partitions it reads. Never panics; every refused message is counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;

use super::{dead_letter, Accepted};
use crate::contract::{FeatureRecord, SourcePosition};
use crate::kafka::{InputMessage, OutRecord};
use crate::metrics::Metrics;

/// Extension trait: parse a stream of input messages.
pub trait ParseFeatures<'s> {
    /// Splits into accepted records and dead letters for `source_topic`.
    fn parse_features(self, source_topic: String, metrics: Arc<Metrics>) -> (StreamVec<'s, u64, Accepted>, StreamVec<'s, u64, OutRecord>);
}

impl<'s> ParseFeatures<'s> for StreamVec<'s, u64, InputMessage> {
    fn parse_features(self, source_topic: String, metrics: Arc<Metrics>) -> (StreamVec<'s, u64, Accepted>, StreamVec<'s, u64, OutRecord>) {
        self.ok_err(move |m: InputMessage| {
            let source = SourcePosition {
                partition: m.partition,
                offset: m.offset,
            };
            match FeatureRecord::parse(&m.payload) {
                Ok(record) => Ok(Accepted {
                    record: Box::new(record),
                    source,
                }),
                Err(why) => {
                    metrics.rejected_invalid.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(partition = m.partition, offset = m.offset, reason = %why, "refused input");
                    Err(dead_letter(&source_topic, source, m.key, m.payload, &why))
                }
            }
        })
    }
}
