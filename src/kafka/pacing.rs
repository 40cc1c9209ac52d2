//! Pacing of the sink's hand-off to librdkafka: per output partition, one group of records in
//! flight at a time, the next group gathered in the sink while it is unanswered.
//!
//! ```text
//!   released records ──push──> Lane (one per topic and partition): queue, in flight
//!                                  │ due: nothing in flight, and the oldest queued record has
//!                                  │ waited `linger` (or a full group is queued)
//!                                  ▼
//!                         group (<= max_bytes, <= max_records) ──send──> librdkafka
//!                                  │ librdkafka's own linger: `HANDOFF` (the group is
//!                                  │ handed in one loop, so it leaves as one produce request)
//!   delivery report ──delivered──> in flight - 1  (every handed record gets exactly one)
//! ```
//!
//! Why: an idempotent librdkafka producer (2.12.1) sends one produce request per partition at a
//! time (it compares its count of *messages* in flight with the limit of 5 *requests*), and while
//! that request is unanswered and further records have waited longer than `linger.ms`, its broker
//! thread polls without sleeping. Whenever the broker answered slower than `linger.ms`, each
//! worker's producer thread took 0.25-0.40 cores doing nothing (0.09 otherwise), which starved
//! the workers and the broker and let the latency run away (BENCHMARKS.md, "A producer thread
//! that spins"). Here the records that arrive while a group is unanswered wait in the sink, where
//! waiting costs nothing, and the sink lingers itself: a group still leaves as one request, within
//! about a millisecond (the sink's activation) of when librdkafka would have sent it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// librdkafka's own `linger.ms` under pacing: long enough that a group handed in one loop (a few
/// hundred records take well under a millisecond) leaves as one request.
pub const HANDOFF: Duration = Duration::from_millis(1);

/// librdkafka's defaults for the limits of one produce request (`batch.size` and
/// `message.max.bytes` are both 1,000,000 by default).
const DEFAULT_BATCH_SIZE: usize = 1_000_000;
const DEFAULT_BATCH_RECORDS: usize = 10_000;

/// Bytes a record is counted for beyond its payload, key and headers (the record's framing in the
/// batch, an upper bound), so that a group stays within one request.
pub const RECORD_OVERHEAD: usize = 64;

/// How the sink paces one producer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    /// How long the oldest queued record of an idle partition may wait for more (the configured
    /// `linger.ms`, less librdkafka's [`HANDOFF`]).
    pub linger: Duration,
    /// Most bytes in one group (9/10 of `batch.size` or of `message.max.bytes`, the smaller).
    pub max_bytes: usize,
    /// Most records in one group (9/10 of `batch.num.messages`).
    pub max_records: usize,
}

impl Pacing {
    /// Pacing for options librdkafka will refuse anyway (the producer is never created).
    fn unpaced_linger() -> Pacing {
        Pacing {
            linger: Duration::ZERO,
            max_bytes: DEFAULT_BATCH_SIZE / 10 * 9,
            max_records: DEFAULT_BATCH_RECORDS / 10 * 9,
        }
    }

    /// Splits producer options into the sink's pacing and the options librdkafka gets: the
    /// configured `linger.ms` (or `queue.buffering.max.ms`) becomes the sink's, less
    /// [`HANDOFF`], which librdkafka keeps. A linger that is not a number is left as it is, for
    /// librdkafka to refuse with its own message when the producer is created.
    pub fn split(options: &BTreeMap<String, String>) -> (Pacing, BTreeMap<String, String>) {
        let read = |keys: &[&str]| keys.iter().find_map(|k| options.get(*k)).and_then(|v| v.trim().parse::<f64>().ok());
        let set = ["linger.ms", "queue.buffering.max.ms"].iter().find_map(|k| options.get(*k));
        let linger_ms = match set.map(|v| v.trim().parse::<f64>()) {
            None => 5.0,
            Some(Ok(v)) if v.is_finite() => v.max(0.0),
            // Not a number: librdkafka names it when the producer is created.
            Some(_) => return (Pacing::unpaced_linger(), options.clone()),
        };
        let linger = Duration::from_secs_f64(linger_ms / 1000.0);
        let handoff = HANDOFF.min(linger);
        // librdkafka fills a request up to the smaller of the two (`rdkafka_msgset_writer.c`).
        let batch = read(&["batch.size"])
            .map(|v| v as usize)
            .unwrap_or(DEFAULT_BATCH_SIZE)
            .min(read(&["message.max.bytes"]).map(|v| v as usize).unwrap_or(DEFAULT_BATCH_SIZE));
        let records = read(&["batch.num.messages"]).map(|v| v as usize).unwrap_or(DEFAULT_BATCH_RECORDS);
        let mut out = options.clone();
        out.remove("queue.buffering.max.ms");
        out.insert("linger.ms".into(), format!("{}", handoff.as_secs_f64() * 1000.0));
        let pacing = Pacing {
            linger: linger - handoff,
            max_bytes: (batch / 10 * 9).max(1),
            max_records: (records / 10 * 9).max(1),
        };
        (pacing, out)
    }
}

/// One output partition's queue.
#[derive(Debug)]
pub struct Lane<T> {
    /// Queued records with their weight (bytes) and when they were queued.
    queue: VecDeque<(Instant, usize, T)>,
    queued_bytes: usize,
    in_flight: usize,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: 0,
        }
    }
}

impl<T> Lane<T> {
    /// Queues a record behind the others.
    pub fn push_back(&mut self, item: T, bytes: usize, now: Instant) {
        self.queued_bytes += bytes;
        self.queue.push_back((now, bytes, item));
    }

    /// Puts a record back in front (a failed delivery, or one librdkafka refused), keeping the
    /// partition's order. It counts as waiting since `since`.
    pub fn push_front(&mut self, item: T, bytes: usize, since: Instant) {
        self.queued_bytes += bytes;
        self.queue.push_front((since, bytes, item));
    }

    /// A delivery report (success or failure) for one handed record.
    pub fn delivered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Records handed and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records queued in the sink.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a group may go now: nothing in flight, and the oldest queued record has waited
    /// `linger` or a full group is queued.
    pub fn due(&self, pacing: &Pacing, now: Instant) -> bool {
        let Some((since, _, _)) = self.queue.front() else { return false };
        self.in_flight == 0
            && (now.saturating_duration_since(*since) >= pacing.linger
                || self.queued_bytes >= pacing.max_bytes
                || self.queue.len() >= pacing.max_records)
    }

    /// Takes the next record of a due group, or `None` once the group is full (`taken` records
    /// and `bytes` so far) or the queue is empty. The caller sends it and then calls
    /// [`Lane::handed`], or puts it back with [`Lane::push_front`].
    pub fn next(&mut self, pacing: &Pacing, taken: usize, bytes: usize) -> Option<(Instant, usize, T)> {
        let (_, b, _) = self.queue.front()?;
        if taken > 0 && (taken >= pacing.max_records || bytes + b > pacing.max_bytes) {
            return None;
        }
        let item = self.queue.pop_front()?;
        self.queued_bytes -= item.1;
        Some(item)
    }

    /// One record was handed to librdkafka.
    pub fn handed(&mut self) {
        self.in_flight += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing() -> Pacing {
        Pacing {
            linger: Duration::from_millis(4),
            max_bytes: 1000,
            max_records: 3,
        }
    }

    /// Takes and hands a due group; returns its items.
    fn group(lane: &mut Lane<u32>, p: &Pacing) -> Vec<u32> {
        let (mut v, mut bytes) = (Vec::new(), 0);
        while let Some((_, b, x)) = lane.next(p, v.len(), bytes) {
            lane.handed();
            bytes += b;
            v.push(x);
        }
        v
    }

    #[test]
    fn options_split_the_linger_and_size_the_groups() {
        let (p, o) = Pacing::split(&BTreeMap::from([("linger.ms".to_string(), "5".to_string())]));
        assert_eq!(
            p,
            Pacing {
                linger: Duration::from_millis(4),
                max_bytes: 900_000,
                max_records: 9_000
            }
        );
        assert_eq!(o["linger.ms"], "1");
        let (p, o) = Pacing::split(&BTreeMap::from([
            ("queue.buffering.max.ms".to_string(), "0.5".to_string()),
            ("batch.size".to_string(), "2000000".to_string()),
            ("message.max.bytes".to_string(), "3000000".to_string()),
            ("batch.num.messages".to_string(), "100".to_string()),
        ]));
        assert_eq!(
            p,
            Pacing {
                linger: Duration::ZERO,
                max_bytes: 1_800_000,
                max_records: 90
            }
        );
        assert_eq!(o["linger.ms"], "0.5");
        assert!(!o.contains_key("queue.buffering.max.ms"));
        let (p, _) = Pacing::split(&BTreeMap::from([("batch.size".to_string(), "2000000".to_string())]));
        assert_eq!(
            p.max_bytes, 900_000,
            "message.max.bytes (1,000,000 by default) bounds a request too"
        );
        let (p, o) = Pacing::split(&BTreeMap::new());
        assert_eq!(p.linger, Duration::from_millis(4), "librdkafka's default linger is 5 ms");
        assert_eq!(o["linger.ms"], "1");
        let (_, o) = Pacing::split(&BTreeMap::from([("linger.ms".to_string(), "soon".to_string())]));
        assert_eq!(o["linger.ms"], "soon", "left for librdkafka to refuse");
    }

    #[test]
    fn a_linger_that_is_not_a_number_is_refused_by_librdkafka() {
        let opts = BTreeMap::from([("linger.ms".to_string(), "soon".to_string())]);
        let e = crate::kafka::sink::delivery_producer("127.0.0.1:1", &opts, None)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("linger.ms"), "{e}");
    }

    #[test]
    fn a_partition_waits_for_its_linger_then_for_its_answer() {
        let p = pacing();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut lane = Lane::default();
        lane.push_back(1, 10, t0);
        assert!(!lane.due(&p, ms(3)), "the oldest record has not lingered yet");
        assert!(lane.due(&p, ms(4)));
        lane.push_back(2, 10, ms(4));
        assert_eq!(group(&mut lane, &p), vec![1, 2]);
        lane.push_back(3, 10, ms(5));
        assert!(!lane.due(&p, ms(20)), "a group is in flight");
        lane.delivered();
        assert!(!lane.due(&p, ms(20)), "one record of it is still unanswered");
        lane.delivered();
        assert!(lane.due(&p, ms(20)), "answered, and record 3 waited longer than the linger");
        assert_eq!(group(&mut lane, &p), vec![3]);
        lane.delivered();
        assert!(!lane.due(&p, ms(30)), "nothing queued");
    }

    #[test]
    fn groups_stay_within_one_request() {
        let p = pacing();
        let t0 = Instant::now();
        let mut lane = Lane::default();
        for i in 0..5 {
            lane.push_back(i, 400, t0);
        }
        assert!(lane.due(&p, t0), "a full group does not wait for the linger");
        assert_eq!(group(&mut lane, &p), vec![0, 1], "a third record would pass 1000 bytes");
        for _ in 0..2 {
            lane.delivered();
        }
        assert_eq!(group(&mut lane, &p), vec![2, 3]);
        for _ in 0..2 {
            lane.delivered();
        }
        lane.push_back(9, 5000, t0);
        assert_eq!(
            group(&mut lane, &p),
            vec![4],
            "the record alone over the limit goes in its own group"
        );
        lane.delivered();
        assert_eq!(group(&mut lane, &p), vec![9]);
        let mut lane = Lane::default();
        for i in 0..4 {
            lane.push_back(i, 1, t0);
        }
        assert_eq!(group(&mut lane, &p), vec![0, 1, 2], "at most max_records");
    }

    #[test]
    fn a_record_put_back_goes_first() {
        let p = pacing();
        let t0 = Instant::now();
        let mut lane = Lane::default();
        lane.push_back(1, 10, t0);
        lane.push_back(2, 10, t0);
        let (since, b, x) = lane.next(&p, 0, 0).unwrap();
        lane.push_front(x, b, since);
        assert_eq!((lane.queued(), lane.in_flight()), (2, 0));
        assert_eq!(group(&mut lane, &p), vec![1, 2]);
        assert_eq!(lane.in_flight(), 2);
    }
}
