//! Memory per station: the per-station states of both stateful operators, filled for many
//! stations exactly as the operators keep them (`HashMap<String, S>` per operator), measured
//! three ways.
//!
//! ```text
//!   VmRSS before ──feed `hours` records to each of S stations (parse, forecast, score)──> VmRSS after
//!        (rss_delta / S)          resident memory actually added per station (allocator included)
//!   serde_json of both maps as a checkpoint writes them / S        checkpointed bytes per station
//!   size_of state structs + key                                    inline bytes per station
//! ```
//!
//! Run it first in a process: freed memory of earlier parts would be reused and hide growth.

use std::time::Instant;

use serde::Serialize;

use super::data::BaseSeries;
use super::model::Sequential;
use super::stats::rss_bytes;
use crate::anomaly::rules::StationAnomaly;
use crate::contract::SourcePosition;
use crate::models::serving::Serving;
use crate::operators::forecast::{ForecastParams, StationForecastState};
use crate::operators::Accepted;

/// What the memory part measured.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    /// Stations in state.
    pub stations: usize,
    /// Records applied per station before measuring.
    pub hours_per_station: usize,
    /// Resident set size before filling, bytes.
    pub rss_before: u64,
    /// Resident set size with every state filled, bytes.
    pub rss_after: u64,
    /// `(rss_after - rss_before) / stations`.
    pub rss_bytes_per_station: f64,
    /// Checkpoint JSON of both operators' states, bytes per station.
    pub checkpoint_bytes_per_station: f64,
    /// `size_of` the two state structs plus the two station-id keys (inline, no table overhead).
    pub inline_bytes_per_station: usize,
    /// Seconds to fill the states.
    pub fill_seconds: f64,
}

/// Fills states for `stations` stations with `hours` records each and measures them.
pub fn measure(base: &BaseSeries, stations: usize, hours: usize) -> MemoryReport {
    let params = ForecastParams {
        interval: 0.9,
        fallback: Default::default(),
        models: Default::default(),
    };
    let mut seq = Sequential::new(params, Serving::default());
    let before = rss_bytes();
    let start = Instant::now();
    for hour in 0..hours {
        for k in 0..stations {
            let record = base.record(stations, k, hour);
            let f = seq.forecast(Accepted {
                record: Box::new(record),
                source: SourcePosition {
                    partition: 0,
                    offset: (hour * stations + k) as i64,
                },
            });
            std::hint::black_box(seq.score(f));
        }
    }
    let fill_seconds = start.elapsed().as_secs_f64();
    let after = rss_bytes();
    let checkpoint = snapshot_len(&seq.forecast) + snapshot_len(&seq.anomaly);
    let key = seq.forecast.keys().next().map_or(0, String::len);
    let inline =
        std::mem::size_of::<StationForecastState>() + std::mem::size_of::<StationAnomaly>() + 2 * (std::mem::size_of::<String>() + key);
    let n = stations.max(1) as f64;
    MemoryReport {
        stations,
        hours_per_station: hours,
        rss_before: before,
        rss_after: after,
        rss_bytes_per_station: after.saturating_sub(before) as f64 / n,
        checkpoint_bytes_per_station: checkpoint as f64 / n,
        inline_bytes_per_station: inline,
        fill_seconds,
    }
}

/// Length of the JSON a checkpoint writes for one operator (sorted `[station, state]` pairs, as
/// `operators::keyed` snapshots them).
fn snapshot_len<S: Serialize>(states: &std::collections::HashMap<String, S>) -> usize {
    let mut v: Vec<(&String, &S)> = states.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0)
}
