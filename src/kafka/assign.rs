//! Deterministic partition assignment and station routing.
//!
//! Every worker computes the same answers from `(partition, peers)` or the station id alone, in
//! every process and at every start, so no consumer-group rebalancing is involved:
//!
//! ```text
//!   partition p  ──>  worker  p mod peers                (reads it)
//!   station s    ──>  worker  fnv1a64(s) mod peers       (keeps its state)
//! ```
//!
//! `p mod peers` spreads partitions evenly (Arroyo does the same); hashing the station with
//! FNV-1a, a fixed function, keeps routing identical across processes, builds and restarts.

/// The partitions of a topic with `partitions` partitions that worker `index` of `peers` reads.
pub fn partitions_for_worker(partitions: usize, index: usize, peers: usize) -> Vec<i32> {
    (0..partitions).filter(|p| p % peers.max(1) == index).map(|p| p as i32).collect()
}

/// Stable 64-bit FNV-1a hash of a station id: the exchange key of per-station state.
pub fn station_hash(station: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in station.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_worker() {
        for peers in 1..7 {
            for parts in 0..13 {
                let mut all: Vec<i32> = (0..peers).flat_map(|w| partitions_for_worker(parts, w, peers)).collect();
                all.sort();
                assert_eq!(all, (0..parts as i32).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn workers_without_partitions_get_none() {
        assert!(partitions_for_worker(2, 3, 4).is_empty());
    }

    #[test]
    fn station_hash_is_fixed() {
        // FNV-1a test vectors: the function must never change (state placement depends on it).
        assert_eq!(station_hash(""), 0xcbf29ce484222325);
        assert_eq!(station_hash("a"), 0xaf63dc4c8601ec8c);
        assert_ne!(station_hash("JFK"), station_hash("LGA"));
    }
}
