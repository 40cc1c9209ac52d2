//! Quality of the per-station maths on the real data in `data/features/` (hourly contract
//! `FeatureRecord`s, one JSON per line, generated from the datasets in `data/raw/`).
//!
//! Records are driven exactly as the timely operator drives them: per station, in file order,
//! skipping any record whose `window_end` is not strictly greater than the station's last one
//! (TMY3 jumps back in time at some month joins), forecaster first, then the anomaly rules with
//! the forecaster's expectation. Missing files fail the tests (never skipped).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use weatherflow::anomaly::rules::Rules;
use weatherflow::anomaly::StationAnomaly;
use weatherflow::contract::{Anomaly, FeatureRecord, LEADS};
use weatherflow::forecast::fallback::Tuning;
use weatherflow::forecast::{FallbackForecaster, FallbackParams, ForecastOutput};

const INTERVAL: f64 = 0.9;

fn features(name: &str) -> Vec<FeatureRecord> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/features").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): the hourly feature files must be generated from data/raw first",
            path.display()
        )
    });
    let records: Vec<FeatureRecord> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            FeatureRecord::parse(l.as_bytes()).unwrap_or_else(|e| panic!("{}:{}: not a valid FeatureRecord: {e}", path.display(), i + 1))
        })
        .collect();
    assert!(records.len() > 500, "{} has only {} records", path.display(), records.len());
    records
}

/// Per-station state as the operator keeps it.
struct Station {
    forecaster: FallbackForecaster,
    anomaly: StationAnomaly,
    last: Option<DateTime<Utc>>,
}

/// Drives every record through its station's state (operator order and filtering); calls `sink`
/// with each accepted record and its outputs. Halfway through, every state goes through a JSON
/// checkpoint round trip (it must restore equal and keep working). Returns accepted records.
fn drive(records: &[FeatureRecord], mut sink: impl FnMut(&FeatureRecord, &ForecastOutput, &Anomaly)) -> usize {
    let mut stations: BTreeMap<String, Station> = BTreeMap::new();
    let tuning = Tuning::new(&FallbackParams::default(), INTERVAL);
    let rules = Rules::default();
    let mut accepted = 0;
    for (i, rec) in records.iter().enumerate() {
        if i == records.len() / 2 {
            for st in stations.values_mut() {
                let f = serde_json::to_string(&st.forecaster).expect("forecaster state serialises");
                let a = serde_json::to_string(&st.anomaly).expect("anomaly state serialises");
                let f2: FallbackForecaster = serde_json::from_str(&f).expect("forecaster state deserialises");
                let a2: StationAnomaly = serde_json::from_str(&a).expect("anomaly state deserialises");
                assert_eq!(f2, st.forecaster, "forecaster checkpoint round trip");
                assert_eq!(a2, st.anomaly, "anomaly checkpoint round trip");
                st.forecaster = f2;
                st.anomaly = a2;
            }
        }
        let st = stations.entry(rec.station_id.clone()).or_insert_with(|| Station {
            forecaster: FallbackForecaster::new(&FallbackParams::default()),
            anomaly: StationAnomaly::new(),
            last: None,
        });
        if st.last.is_some_and(|last| rec.window_end <= last) {
            continue;
        }
        st.last = Some(rec.window_end);
        accepted += 1;
        let out = st.forecaster.observe(&tuning, rec);
        let anomaly = st.anomaly.assess(&rules, rec, out.expected);
        assert_eq!(out.points.len(), LEADS);
        assert!((0.0..=1.0).contains(&anomaly.score), "score {} out of [0, 1]", anomaly.score);
        assert_eq!(anomaly.is_anomaly, anomaly.score >= 0.5);
        assert_eq!(anomaly.is_anomaly, !anomaly.reasons.is_empty(), "reasons iff flagged: {anomaly:?}");
        sink(rec, &out, &anomaly);
    }
    accepted
}

/// One flagged record: station, window_end, reasons.
type Flag = (String, DateTime<Utc>, Vec<String>);

/// Flags of one file: (accepted records, flagged records).
fn flags(name: &str) -> (usize, Vec<Flag>) {
    let records = features(name);
    let mut flagged = Vec::new();
    let n = drive(&records, |rec, _, a| {
        if a.is_anomaly {
            flagged.push((rec.station_id.clone(), rec.window_end, a.reasons.clone()));
        }
    });
    let rate = flagged.len() as f64 / n as f64;
    println!("{name}: {} of {n} accepted hours flagged ({:.3} %)", flagged.len(), 100.0 * rate);
    for (s, t, r) in &flagged {
        println!("  {s} {} {}", t.format("%Y-%m-%dT%HZ"), r.join(" | "));
    }
    assert!(n > 0);
    assert!(
        rate <= 0.01,
        "{name}: anomaly flag on {:.2} % of hours (at most 1 % allowed)",
        100.0 * rate
    );
    (n, flagged)
}

fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("valid time")
}

#[test]
fn nyc_flags_rarely_and_catches_both_real_glitches() {
    let (_, flagged) = flags("nyc_2013.jsonl");
    let find = |station: &str, at: DateTime<Utc>| flagged.iter().find(|(s, t, _)| s == station && *t == at);
    let ewr = find("EWR", utc(2013, 2, 12, 8)).expect("EWR 2013-02-12T08Z (1048 mph wind) must be flagged");
    assert!(ewr.2.iter().any(|r| r.contains("wind") && r.contains("468.7 m/s")), "{:?}", ewr.2);
    let jfk = find("JFK", utc(2013, 5, 9, 2)).expect("JFK 2013-05-09T02Z (13.1 F between two 57 F) must be flagged");
    assert!(
        jfk.2.iter().any(|r| r.contains("temperature spike") && r.contains("-10.5 degC")),
        "{:?}",
        jfk.2
    );
    assert!(
        find("JFK", utc(2013, 5, 9, 3)).is_none(),
        "the good reading after the JFK glitch must not be flagged"
    );
    println!("EWR glitch reasons: {:?}\nJFK glitch reasons: {:?}", ewr.2, jfk.2);
}

#[test]
fn payerne_flags_rarely() {
    let (n, _) = flags("payerne_2016-06.jsonl");
    assert!(n >= 700, "Payerne: {n} hours");
}

#[test]
fn greensboro_tmy3_flags_rarely() {
    let (n, _) = flags("greensboro_tmy3.jsonl");
    assert!(n >= 2000, "Greensboro: {n} hours");
}

/// Per-lead verification of forecasts against later observations.
#[derive(Default)]
struct Verification {
    abs_err: [f64; LEADS],
    abs_err_persistence: [f64; LEADS],
    pairs: [usize; LEADS],
    covered: [usize; LEADS],
    calibration_pairs: [usize; LEADS],
}

impl Verification {
    /// Mean absolute error of the forecaster at lead index `i` (lead `i + 1`).
    fn mae(&self, i: usize) -> f64 {
        self.abs_err[i] / self.pairs[i] as f64
    }
    /// Mean absolute error of persistence at lead index `i`.
    fn persistence(&self, i: usize) -> f64 {
        self.abs_err_persistence[i] / self.pairs[i] as f64
    }
    /// Interval coverage at lead index `i`, forecasts issued after the warm-up only.
    fn coverage(&self, i: usize) -> f64 {
        self.covered[i] as f64 / self.calibration_pairs[i] as f64
    }
}

/// Forecast issued at one origin: per lead (forecast, lower, upper), persistence, after warm-up.
struct Issued {
    points: [(f64, f64, f64); LEADS],
    persistence: f64,
    after_warmup: bool,
}

fn verify(name: &str, warmup: Duration) -> Verification {
    let records = features(name);
    let mut v = Verification::default();
    let mut issued: HashMap<(String, i64), Issued> = HashMap::new();
    let mut first: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut last_temp: HashMap<String, f64> = HashMap::new();
    drive(&records, |rec, out, _| {
        let hour = rec.hour_index();
        let start = *first.entry(rec.station_id.clone()).or_insert(rec.window_end);
        let observed = weatherflow::anomaly::qc::usable_temperature(rec);
        if let Some(t) = observed {
            for lead in 1..=LEADS {
                if let Some(o) = issued.get(&(rec.station_id.clone(), hour - lead as i64)) {
                    let (f, lo, hi) = o.points[lead - 1];
                    let i = lead - 1;
                    v.abs_err[i] += (t - f).abs();
                    v.abs_err_persistence[i] += (t - o.persistence).abs();
                    v.pairs[i] += 1;
                    if o.after_warmup {
                        v.calibration_pairs[i] += 1;
                        v.covered[i] += usize::from(lo <= t && t <= hi);
                    }
                }
            }
            last_temp.insert(rec.station_id.clone(), t);
        }
        if let Some(&persistence) = last_temp.get(&rec.station_id) {
            let mut points = [(0.0, 0.0, 0.0); LEADS];
            for (slot, p) in points.iter_mut().zip(&out.points) {
                *slot = (
                    p.temperature.expect("forecast once a temperature was seen"),
                    p.lower.expect("lower bound"),
                    p.upper.expect("upper bound"),
                );
                assert!(slot.1 <= slot.0 && slot.0 <= slot.2, "interval must contain the forecast: {p:?}");
            }
            let after_warmup = rec.window_end >= start + warmup;
            if after_warmup {
                assert!(out.warm, "{name} {} {}: not warm after {warmup}", rec.station_id, rec.window_end);
            }
            issued.insert(
                (rec.station_id.clone(), hour),
                Issued {
                    points,
                    persistence,
                    after_warmup,
                },
            );
        }
    });
    v
}

#[test]
fn nyc_fallback_beats_persistence_with_calibrated_intervals() {
    let v = verify("nyc_2013.jsonl", Duration::days(14));
    let leads = 0..LEADS;
    let mean_f = leads.clone().map(|i| v.mae(i)).sum::<f64>() / LEADS as f64;
    let mean_p = leads.clone().map(|i| v.persistence(i)).sum::<f64>() / LEADS as f64;
    println!("lead   MAE fallback   MAE persistence   ratio   90% coverage (after 14 days)");
    for i in leads.clone() {
        let (f, p) = (v.mae(i), v.persistence(i));
        println!("{:4}   {f:12.3}   {p:15.3}   {:5.3}   {:.3}", i + 1, f / p, v.coverage(i));
        assert!(v.pairs[i] > 20_000, "lead {}: only {} pairs", i + 1, v.pairs[i]);
    }
    let lo = leads.clone().map(|i| v.coverage(i)).fold(f64::INFINITY, f64::min);
    let hi = leads.clone().map(|i| v.coverage(i)).fold(f64::NEG_INFINITY, f64::max);
    println!(
        "mean  {mean_f:12.3}   {mean_p:15.3}   {:5.3}   coverage range {lo:.3}..{hi:.3}",
        mean_f / mean_p
    );
    assert!(
        mean_f < mean_p,
        "mean MAE over leads {mean_f:.3} does not beat persistence {mean_p:.3}"
    );
    assert!(
        v.mae(LEADS - 1) < v.persistence(LEADS - 1),
        "lead 24 MAE {:.3} does not beat persistence {:.3}",
        v.mae(LEADS - 1),
        v.persistence(LEADS - 1)
    );
    for i in leads {
        let c = v.coverage(i);
        assert!(
            (0.85..=0.95).contains(&c),
            "lead {}: 90 % interval coverage {c:.3} outside 0.85..0.95",
            i + 1
        );
    }
}

#[test]
fn other_files_forecasts_are_sane() {
    for (name, warmup) in [
        ("greensboro_tmy3.jsonl", Duration::days(14)),
        ("payerne_2016-06.jsonl", Duration::days(10)),
    ] {
        let v = verify(name, warmup);
        for lead in [1, 6, 12, 24] {
            let i = lead - 1;
            println!(
                "{name} lead {lead:2}: MAE {:.3} (persistence {:.3}), 90 % coverage {:.3}",
                v.mae(i),
                v.persistence(i),
                v.coverage(i)
            );
        }
        let (f12, p12) = (v.mae(11), v.persistence(11));
        let (f24, p24) = (v.mae(LEADS - 1), v.persistence(LEADS - 1));
        assert!(f12 < p12, "{name}: lead 12 MAE {f12:.3} vs persistence {p12:.3}");
        assert!(f24 < 1.1 * p24, "{name}: lead 24 MAE {f24:.3} vs persistence {p24:.3}");
        for i in 0..LEADS {
            let c = v.coverage(i);
            assert!((0.75..=0.98).contains(&c), "{name} lead {}: coverage {c:.3}", i + 1);
        }
    }
}

#[test]
fn state_sizes_fit_the_budget_and_runs_are_deterministic() {
    let f = std::mem::size_of::<FallbackForecaster>();
    let a = std::mem::size_of::<StationAnomaly>();
    println!("size_of FallbackForecaster = {f} bytes, StationAnomaly = {a} bytes");
    assert!(f <= 1024 && a <= 1024);
    let records = features("payerne_2016-06.jsonl");
    let run = || {
        let mut outs = Vec::new();
        drive(&records, |_, o, a| outs.push((o.points.clone(), o.expected, a.clone())));
        outs
    };
    assert!(run() == run(), "two runs over the same input differ");
}
