//! Seeded synthetic observations for many stations, for load and robustness tests: realistic
//! diurnal and seasonal cycles, a climate per station, weather that wanders, sensor noise, missing
//! values, and injectable faults whose every instance is reported.
//!
//! ```text
//!  seed ──> station i: climate (latitude, elevation, means, amplitudes) + its own random streams
//!  t = start + k·interval + offset_i   (stations report at their own minute within the interval)
//!      clean reading = annual mean + seasonal + diurnal (local solar time) + weather (AR(1)) + noise
//!      faults:  drift (per station) → stuck (episodes) → spike → unit error       (the values)
//!               invalid message | out of order (< out_of_order_max) | late (late_delay)  (delivery)
//!  records come out in release order: release = time, or time + delay for delayed ones
//! ```
//!
//! Reproducible: the output is a function of the configuration alone (the seed included), and each
//! station draws from its own streams, so adding stations does not change the existing ones.
//!
//! Delivery faults are meant to be judged by the features stage with its defaults (1 h windows,
//! 10 min allowed lateness): an out-of-order record is delayed by at most `out_of_order_max`
//! (default 5 min, keep it below the allowed lateness) and is accepted; a late record is delayed
//! by `late_delay` (default 3 h, keep it above window + reporting interval + lateness) and lands
//! on the late topic. Delivery faults are only injected where the delayed record is still followed
//! by later readings, so the claim holds at the end of the stream too.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Duration, Utc};

use super::climate::Station;
use crate::observations::message::encode_observation;
use crate::observations::Observation;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Seed: the same seed (and configuration) gives the same records, byte for byte.
    pub seed: u64,
    /// Number of stations (`SYN00000`, `SYN00001`, ...).
    pub stations: usize,
    /// First reporting interval starts here.
    pub start: DateTime<Utc>,
    /// Length of the generated period.
    pub duration: Duration,
    /// Reporting interval of every station (at least one minute).
    pub interval: Duration,
    /// Probability that a measured field is missing (null) in a reading.
    pub missing: f64,
    /// Fault rates.
    pub faults: FaultRates,
    /// Add `"injected_faults": [...]` to faulty records (ground truth for evaluations).
    pub label_faults: bool,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 1,
            stations: 100,
            start: DateTime::from_timestamp(1_704_067_200, 0).unwrap_or_default(), // 2024-01-01T00:00:00Z
            duration: Duration::hours(24),
            interval: Duration::minutes(10),
            missing: 0.002,
            faults: FaultRates::default(),
            label_faults: false,
        }
    }
}

/// Fault rates: per reading, except `drift` (fraction of stations).
#[derive(Clone, Debug)]
pub struct FaultRates {
    /// A single reading off by 8-20 degC.
    pub spike: f64,
    /// A stuck-sensor episode starts: temperature and humidity repeat for 6-36 readings.
    pub stuck: f64,
    /// Fraction of stations whose temperature sensor drifts (0.5-2 degC per day, from a random
    /// moment in the first half of the period).
    pub drift: f64,
    /// A reading in the wrong unit: degF or K for temperature, Pa for pressure, km/h or knots
    /// for wind.
    pub unit_error: f64,
    /// A record delivered up to `out_of_order_max` after its time.
    pub out_of_order: f64,
    /// A record delivered `late_delay` after its time.
    pub late: f64,
    /// A malformed message: not JSON, no time, a string for a number, a negative humidity.
    pub invalid: f64,
    /// Longest out-of-order delay.
    pub out_of_order_max: Duration,
    /// Delay of late records.
    pub late_delay: Duration,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            spike: 0.0,
            stuck: 0.0,
            drift: 0.0,
            unit_error: 0.0,
            out_of_order: 0.0,
            late: 0.0,
            invalid: 0.0,
            out_of_order_max: Duration::minutes(5),
            late_delay: Duration::hours(3),
        }
    }
}

impl FaultRates {
    /// Rates that exercise every fault on a few hundred stations over a day.
    pub fn typical() -> Self {
        FaultRates {
            spike: 0.001,
            stuck: 0.0005,
            drift: 0.02,
            unit_error: 0.0005,
            out_of_order: 0.01,
            late: 0.001,
            invalid: 0.0005,
            ..FaultRates::default()
        }
    }
}

/// Which unit a unit error used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// Temperature in degF.
    Fahrenheit,
    /// Temperature in K.
    Kelvin,
    /// Pressure in Pa.
    Pascal,
    /// Wind in km/h.
    KilometresPerHour,
    /// Wind in knots.
    Knots,
}

/// What makes an invalid message invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidKind {
    /// Truncated JSON.
    NotJson,
    /// No `time` field.
    MissingTime,
    /// Temperature as a string.
    WrongType,
    /// Negative humidity.
    NegativeHumidity,
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Temperature off by `delta` degC.
    Spike { delta: f64 },
    /// Temperature and humidity held at the values of the episode's start.
    Stuck { temperature: Option<f64> },
    /// Temperature off by the drift accumulated so far.
    Drift { offset: f64 },
    /// A value in the wrong unit.
    UnitError(UnitError),
    /// Delivered `delay` after its time, within the out-of-order bound.
    OutOfOrder { delay: Duration },
    /// Delivered `delay` after its time, beyond any allowed lateness.
    Late { delay: Duration },
    /// A malformed message.
    Invalid(InvalidKind),
}

impl Fault {
    /// Short name (`spike`, `stuck`, `drift`, `unit_error`, `out_of_order`, `late`, `invalid`).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Spike { .. } => "spike",
            Fault::Stuck { .. } => "stuck",
            Fault::Drift { .. } => "drift",
            Fault::UnitError(_) => "unit_error",
            Fault::OutOfOrder { .. } => "out_of_order",
            Fault::Late { .. } => "late",
            Fault::Invalid(_) => "invalid",
        }
    }
}

/// Counts of what was generated (faults as delivered: an out-of-order record that no newer one
/// overtook is not counted, nor are the value faults of a record sent as a malformed message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Records generated.
    pub records: u64,
    /// Spiked readings.
    pub spike: u64,
    /// Stuck readings.
    pub stuck: u64,
    /// Stuck episodes.
    pub stuck_episodes: u64,
    /// Readings of drifting sensors after their drift started.
    pub drift: u64,
    /// Stations with a drifting sensor.
    pub drifting_stations: u64,
    /// Readings in a wrong unit.
    pub unit_error: u64,
    /// Records delivered out of order (within the bound).
    pub out_of_order: u64,
    /// Records delivered late.
    pub late: u64,
    /// Malformed messages.
    pub invalid: u64,
    /// Measured fields left missing (not a fault).
    pub missing_values: u64,
}

impl FaultCounts {
    /// The counter of records with `fault`.
    pub fn slot(&mut self, fault: &Fault) -> &mut u64 {
        match fault {
            Fault::Spike { .. } => &mut self.spike,
            Fault::Stuck { .. } => &mut self.stuck,
            Fault::Drift { .. } => &mut self.drift,
            Fault::UnitError(_) => &mut self.unit_error,
            Fault::OutOfOrder { .. } => &mut self.out_of_order,
            Fault::Late { .. } => &mut self.late,
            Fault::Invalid(_) => &mut self.invalid,
        }
    }
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spike={} stuck={} ({} episodes) drift={} ({} stations) unit_error={} out_of_order={} late={} invalid={} missing_values={}",
            self.spike,
            self.stuck,
            self.stuck_episodes,
            self.drift,
            self.drifting_stations,
            self.unit_error,
            self.out_of_order,
            self.late,
            self.invalid,
            self.missing_values
        )
    }
}

/// One generated record.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticRecord {
    /// Station (also the message key).
    pub station_id: String,
    /// Time of the reading.
    pub time: DateTime<Utc>,
    /// Position in the stream: `time`, plus the delay of a delayed record.
    pub release: DateTime<Utc>,
    /// What the sensor should have reported.
    pub clean: Observation,
    /// What was sent (`None` for a malformed message).
    pub sent: Option<Observation>,
    /// The message bytes.
    pub payload: Vec<u8>,
    /// Faults injected into this record.
    pub faults: Vec<Fault>,
}

/// The generator: an iterator of records in release order.
pub struct Generator {
    cfg: SyntheticConfig,
    stations: Vec<Station>,
    order: Vec<usize>,
    steps: i64,
    step: i64,
    pos: usize,
    /// Delayed records are only released before this time, so later readings follow them.
    last_time: DateTime<Utc>,
    delayed: BinaryHeap<Reverse<(DateTime<Utc>, u64)>>,
    parked: std::collections::HashMap<u64, SyntheticRecord>,
    lookahead: Option<SyntheticRecord>,
    /// Newest reading time emitted so far.
    newest: DateTime<Utc>,
    seq: u64,
    counts: FaultCounts,
}

impl Generator {
    /// A generator for `cfg` (stations are set up at once; readings are made lazily).
    pub fn new(cfg: SyntheticConfig) -> Self {
        let interval = cfg.interval.max(Duration::minutes(1));
        let cfg = SyntheticConfig { interval, ..cfg };
        let stations: Vec<Station> = (0..cfg.stations).map(|i| Station::new(&cfg, i)).collect();
        let mut order: Vec<usize> = (0..stations.len()).collect();
        order.sort_by_key(|i| (stations[*i].offset, *i));
        let steps = (cfg.duration.num_seconds() / interval.num_seconds()).max(0);
        // Start of the last reporting interval: every station still reports after it, whatever
        // the station count (so a station's faults do not depend on the other stations).
        let last_time = cfg.start + interval * (steps.max(1) as i32 - 1);
        let drifting = stations.iter().filter(|s| s.drift.is_some()).count() as u64;
        Generator {
            cfg,
            stations,
            order,
            steps,
            step: 0,
            pos: 0,
            last_time,
            delayed: BinaryHeap::new(),
            parked: Default::default(),
            lookahead: None,
            newest: DateTime::<Utc>::MIN_UTC,
            seq: 0,
            counts: FaultCounts {
                drifting_stations: drifting,
                ..FaultCounts::default()
            },
        }
    }

    /// Records this generator will produce in all.
    pub fn total(&self) -> u64 {
        self.steps as u64 * self.stations.len() as u64
    }

    /// What was generated so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// The next reading on the schedule (faults applied), or `None` when the schedule is done.
    fn scheduled(&mut self) -> Option<SyntheticRecord> {
        if self.step >= self.steps || self.order.is_empty() {
            return None;
        }
        let i = self.order[self.pos];
        let t = self.cfg.start + self.cfg.interval * self.step as i32 + self.stations[i].offset;
        self.pos += 1;
        if self.pos == self.order.len() {
            self.pos = 0;
            self.step += 1;
        }
        Some(self.make(i, t))
    }

    fn make(&mut self, i: usize, t: DateTime<Utc>) -> SyntheticRecord {
        let (missing, rates, last_time, label) = (self.cfg.missing, self.cfg.faults.clone(), self.last_time, self.cfg.label_faults);
        let counts = &mut self.counts;
        let s = &mut self.stations[i];
        let clean = s.clean_reading(t, missing, counts);
        let mut sent = clean.clone();
        let mut faults = Vec::new();
        let f = &mut s.faults;
        if let Some((from, rate)) = s.drift.filter(|(from, _)| t > *from) {
            let offset = rate * (t - from).num_seconds() as f64 / 86_400.0;
            sent.temperature = sent.temperature.map(|x| round1(x + offset));
            faults.push(Fault::Drift { offset });
        }
        if s.stuck_left == 0 && f.chance(rates.stuck) {
            s.stuck_left = f.int(6, 36) as u32;
            let (t0, h0) = s.last_sent;
            s.stuck_values = (t0.or(sent.temperature), h0.or(sent.humidity));
            counts.stuck_episodes += 1;
        }
        if s.stuck_left > 0 {
            s.stuck_left -= 1;
            (sent.temperature, sent.humidity) = s.stuck_values;
            faults.push(Fault::Stuck {
                temperature: s.stuck_values.0,
            });
        } else if sent.temperature.is_some() && f.chance(rates.spike) {
            let delta = f.range(8.0, 20.0) * if f.chance(0.5) { 1.0 } else { -1.0 };
            sent.temperature = sent.temperature.map(|x| round1(x + delta));
            faults.push(Fault::Spike { delta });
        }
        s.last_sent = (sent.temperature, sent.humidity);
        if f.chance(rates.unit_error) {
            let options: Vec<UnitError> = [
                (sent.temperature.is_some(), UnitError::Fahrenheit),
                (sent.temperature.is_some(), UnitError::Kelvin),
                (sent.pressure.is_some(), UnitError::Pascal),
                (sent.wind_speed.is_some(), UnitError::KilometresPerHour),
                (sent.wind_speed.is_some(), UnitError::Knots),
            ]
            .into_iter()
            .filter_map(|(ok, u)| ok.then_some(u))
            .collect();
            if !options.is_empty() {
                let u = options[f.int(0, options.len() as u64 - 1) as usize];
                apply_unit_error(&mut sent, u);
                faults.push(Fault::UnitError(u));
            }
        }
        let mut release = t;
        let late_release = t + rates.late_delay;
        let (late, out_of_order) = (f.chance(rates.late), f.chance(rates.out_of_order));
        let delay = Duration::seconds(f.int(1, rates.out_of_order_max.num_seconds().max(1) as u64) as i64);
        if late && late_release < last_time {
            release = late_release;
            faults.push(Fault::Late { delay: rates.late_delay });
        } else if out_of_order && t + delay < last_time {
            release = t + delay;
            faults.push(Fault::OutOfOrder { delay });
        }
        let (sent, payload) = if f.chance(rates.invalid) {
            let kind = [
                InvalidKind::NotJson,
                InvalidKind::MissingTime,
                InvalidKind::WrongType,
                InvalidKind::NegativeHumidity,
            ][f.int(0, 3) as usize];
            faults.retain(|x| matches!(x, Fault::Late { .. } | Fault::OutOfOrder { .. }));
            faults.push(Fault::Invalid(kind));
            (None, invalid_payload(&sent, kind))
        } else {
            let payload = if label && !faults.is_empty() {
                labelled(&sent, &faults)
            } else {
                encode_observation(&sent)
            };
            (Some(sent), payload)
        };
        // Counted as sent: a malformed message carries no value faults.
        counts.records += 1;
        for fault in &faults {
            *counts.slot(fault) += 1;
        }
        SyntheticRecord {
            station_id: clean.station_id.clone(),
            time: t,
            release,
            clean,
            sent,
            payload,
            faults,
        }
    }
}

impl Iterator for Generator {
    type Item = SyntheticRecord;

    fn next(&mut self) -> Option<SyntheticRecord> {
        // The next on-time reading; delayed ones met on the way wait in the heap.
        while self.lookahead.is_none() {
            match self.scheduled() {
                Some(r) if r.release > r.time => {
                    self.seq += 1;
                    self.delayed.push(Reverse((r.release, self.seq)));
                    self.parked.insert(self.seq, r);
                }
                Some(r) => self.lookahead = Some(r),
                None => break,
            }
        }
        let due = self.delayed.peek().map(|Reverse((due, _))| *due);
        let mut out = match (due, &self.lookahead) {
            (Some(d), Some(r)) if d > r.release => self.lookahead.take(),
            (None, _) => self.lookahead.take(),
            (Some(_), _) => {
                let Reverse((_, seq)) = self.delayed.pop()?;
                self.parked.remove(&seq)
            }
        }?;
        // A short delay may not have let any newer reading overtake the record: then it was not
        // delivered out of order after all, and is not reported as such.
        if out.time >= self.newest && out.faults.iter().any(|f| matches!(f, Fault::OutOfOrder { .. })) {
            out.faults.retain(|f| !matches!(f, Fault::OutOfOrder { .. }));
            self.counts.out_of_order -= 1;
            if let Some(sent) = &out.sent {
                out.payload = if self.cfg.label_faults && !out.faults.is_empty() {
                    labelled(sent, &out.faults)
                } else {
                    encode_observation(sent)
                };
            }
        }
        self.newest = self.newest.max(out.time);
        Some(out)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn apply_unit_error(o: &mut Observation, u: UnitError) {
    match u {
        UnitError::Fahrenheit => o.temperature = o.temperature.map(|t| round1(t * 1.8 + 32.0)),
        UnitError::Kelvin => o.temperature = o.temperature.map(|t| round1(t + 273.15)),
        UnitError::Pascal => o.pressure = o.pressure.map(|p| (p * 100.0).round()),
        UnitError::KilometresPerHour => o.wind_speed = o.wind_speed.map(|w| round1(w * 3.6)),
        UnitError::Knots => o.wind_speed = o.wind_speed.map(|w| round1(w * 1.943_844)),
    }
}

fn labelled(o: &Observation, faults: &[Fault]) -> Vec<u8> {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        let names: Vec<&str> = faults.iter().map(Fault::name).collect();
        m.insert("injected_faults".into(), serde_json::json!(names));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn invalid_payload(o: &Observation, kind: InvalidKind) -> Vec<u8> {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    match kind {
        InvalidKind::NotJson => {
            let full = encode_observation(o);
            return full[..full.len() / 2].to_vec();
        }
        InvalidKind::MissingTime => {
            if let Some(m) = v.as_object_mut() {
                m.remove("time");
            }
        }
        InvalidKind::WrongType => v["temperature"] = serde_json::json!(format!("{:.1}", o.temperature.unwrap_or(12.3))),
        InvalidKind::NegativeHumidity => v["humidity"] = serde_json::json!(-5.0),
    }
    serde_json::to_vec(&v).unwrap_or_default()
}
