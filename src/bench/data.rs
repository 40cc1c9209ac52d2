//! Benchmark input: real hourly feature records (`data/features/nyc_2013.jsonl`, three NYC
//! airports) scaled to any number of stations by renaming station ids, laid out in Kafka
//! partitions exactly as the benchmark publishes them.
//!
//! ```text
//!   EWR, JFK, LGA hourly series ──station k = "<base k mod 3>-<k>"──> hour-major records
//!        hour 0: s0 s1 … s(S-1), hour 1: s0 s1 …          (every station's windows strictly increase)
//!   record ──partition = crc32(station) mod P──> by_partition[p] (offset order)
//! ```
//!
//! The partition is what librdkafka's default partitioner (`consistent_random`: CRC-32 of the
//! key) chooses, as for `weatherflow publish`; weatherflow keeps state by a different hash
//! (FNV-1a), so about half the records cross workers at the station exchange, as in production.
//!
//! With at most three stations the original ids are kept. When more hours are needed than the
//! file holds, the series repeats, shifted by its own length, so windows keep increasing.

use std::path::Path;

use chrono::Duration;

use crate::contract::FeatureRecord;

/// Errors loading the benchmark input.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The feature file could not be read.
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The feature file holds no usable records.
    #[error("{path} holds no valid feature records")]
    Empty { path: String },
}

/// One input message: key (station id) and JSON payload.
#[derive(Clone, Debug)]
pub struct Message {
    /// Kafka key: the station id.
    pub key: Vec<u8>,
    /// The feature record as JSON.
    pub payload: Vec<u8>,
}

/// The generated input, per partition in offset order.
#[derive(Debug)]
pub struct Dataset {
    /// Distinct stations.
    pub stations: usize,
    /// Messages of each partition, in offset order.
    pub by_partition: Vec<Vec<Message>>,
    /// Total messages.
    pub records: usize,
    /// Total payload bytes.
    pub payload_bytes: usize,
}

/// The base series: one hourly series per station of the file, in window order.
#[derive(Clone, Debug)]
pub struct BaseSeries {
    series: Vec<Vec<FeatureRecord>>,
}

impl BaseSeries {
    /// Loads and groups the records of a feature file by station.
    pub fn load(path: &Path) -> Result<BaseSeries, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut by_station: std::collections::BTreeMap<String, Vec<FeatureRecord>> = Default::default();
        for line in text.lines() {
            if let Ok(r) = FeatureRecord::parse(line.as_bytes()) {
                by_station.entry(r.station_id.clone()).or_default().push(r);
            }
        }
        let mut series: Vec<Vec<FeatureRecord>> = by_station.into_values().filter(|s| !s.is_empty()).collect();
        for s in &mut series {
            s.sort_by_key(|r| r.window_end);
            s.dedup_by_key(|r| r.window_end);
        }
        if series.is_empty() {
            return Err(DataError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(BaseSeries { series })
    }

    /// Number of stations in the file.
    pub fn base_stations(&self) -> usize {
        self.series.len()
    }

    /// Record `hour` (0-based, repeating with a time shift) of generated station `k`.
    pub fn record(&self, stations: usize, k: usize, hour: usize) -> FeatureRecord {
        let s = &self.series[k % self.series.len()];
        let cycle = (hour / s.len()) as i32;
        let mut r = s[hour % s.len()].clone();
        if cycle > 0 {
            let span = s[s.len() - 1].window_end - s[0].window_end + Duration::hours(1);
            let shift = span * cycle;
            r.window_end += shift;
            r.window_start = r.window_start.map(|t| t + shift);
        }
        if stations > self.series.len() {
            r.station_id = format!("{}-{k:06}", r.station_id);
        }
        r
    }

    /// `records` messages over `stations` stations, hour-major, in `partitions` partitions.
    pub fn generate(&self, records: usize, stations: usize, partitions: usize) -> Dataset {
        let stations = stations.max(1);
        let partitions = partitions.max(1);
        let mut by_partition: Vec<Vec<Message>> = (0..partitions).map(|_| Vec::with_capacity(records / partitions + 1)).collect();
        let mut payload_bytes = 0;
        let mut placement: Vec<usize> = Vec::with_capacity(stations);
        for i in 0..records {
            let (hour, k) = (i / stations, i % stations);
            let r = self.record(stations, k, hour);
            if placement.len() <= k {
                placement.push(default_partition(r.station_id.as_bytes(), partitions));
            }
            // Serialising our own record cannot fail (string keys, finite or null numbers).
            let payload = serde_json::to_vec(&r).unwrap_or_default();
            payload_bytes += payload.len();
            by_partition[placement[k]].push(Message {
                key: r.station_id.into_bytes(),
                payload,
            });
        }
        Dataset {
            stations: stations.min(records.max(1)),
            by_partition,
            records,
            payload_bytes,
        }
    }
}

/// The partition librdkafka's default partitioner picks for `key` (CRC-32 of the key).
pub fn default_partition(key: &[u8], partitions: usize) -> usize {
    (crc32fast::hash(key) as usize) % partitions.max(1)
}

impl Dataset {
    /// Every message with its partition and offset, partition by partition (each station's
    /// records in window order, as one reader of all partitions would apply them).
    pub fn iter(&self) -> impl Iterator<Item = (i32, i64, &Message)> {
        self.by_partition
            .iter()
            .enumerate()
            .flat_map(|(p, msgs)| msgs.iter().enumerate().map(move |(o, m)| (p as i32, o as i64, m)))
    }
}

/// The repository's NYC series, for tests.
#[cfg(test)]
pub(crate) fn nyc_for_tests() -> BaseSeries {
    BaseSeries::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/features/nyc_2013.jsonl"))).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseSeries {
        nyc_for_tests()
    }

    #[test]
    fn stations_are_renamed_and_windows_increase() {
        let b = base();
        assert_eq!(b.base_stations(), 3);
        let d = b.generate(5000, 100, 4);
        assert_eq!(d.records, 5000);
        assert_eq!(d.by_partition.iter().map(Vec::len).sum::<usize>(), 5000);
        let mut last: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> = Default::default();
        for (_, _, m) in d.iter() {
            let r = FeatureRecord::parse(&m.payload).unwrap();
            assert_eq!(r.station_id.as_bytes(), &m.key[..]);
            if let Some(prev) = last.insert(r.station_id.clone(), r.window_end) {
                assert!(r.window_end > prev, "{} windows must increase", r.station_id);
            }
        }
        assert_eq!(last.len(), 100);
    }

    #[test]
    fn series_repeat_with_a_shift() {
        let b = base();
        let n = b.series[0].len();
        let first = b.record(3, 0, 0);
        let again = b.record(3, 0, n);
        assert!(again.window_end > first.window_end);
        assert_eq!(again.temperature_mean, first.temperature_mean);
    }
}
