//! The model-monitoring dataflow on small known cases, in timely without a broker: rolling MAE
//! per lead and interval coverage per station and overall, persistence skill and its alert, the
//! rolling window's retractions, arrival order, repeated records, and the views the HTTP API reads.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use timely::dataflow::operators::capture::Event as CaptureEvent;
use timely::dataflow::operators::{Capture, Input, Probe};

mod capture_support;
use capture_support::captured;
use weatherflow::contract::{Anomaly, ForecastPoint, ModelNames, Prediction};
use weatherflow::dataflows::monitoring::{encode, monitor};
use weatherflow::ops::monitor::{AlertState, Event, LeadMetrics, MonitorParams, Observation, Published, Tracked};
use weatherflow::ops::view::{SinkToViews, View, ViewRoute};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2013, 3, 1, 0, 0, 0).unwrap()
}

/// A prediction at origin hour `o`: forecast `f(h)` with interval `f(h) ± half`, persistence
/// (observed) `obs`.
fn prediction(station: &str, o: i64, f: impl Fn(u32) -> f64, half: f64, obs: Option<f64>, anomalous: bool) -> Event {
    let origin = t0() + Duration::hours(o);
    Event::predicted(Prediction {
        station_id: station.into(),
        window_end: origin,
        issued_at: origin,
        model: ModelNames {
            forecast: "test/constant-v1".into(),
            anomaly: "rules/v1".into(),
        },
        interval: 0.9,
        forecast: (1..=24)
            .map(|h| ForecastPoint {
                lead_hours: h,
                valid_at: origin + Duration::hours(h as i64),
                temperature: Some(f(h)),
                lower: Some(f(h) - half),
                upper: Some(f(h) + half),
            })
            .collect(),
        anomaly: Anomaly {
            score: if anomalous { 0.9 } else { 0.0 },
            is_anomaly: anomalous,
            reasons: if anomalous { vec!["test spike".into()] } else { vec![] },
        },
        observed_temperature: obs,
        source: None,
    })
}

fn actual(station: &str, t: i64, temp: f64) -> Event {
    Event::Observed(Observation {
        station_id: station.into(),
        window_end: t0() + Duration::hours(t),
        temperature: Some(temp),
    })
}

/// Epochs of events; each event gets a distinct input position.
fn tracked(epochs: Vec<Vec<Event>>) -> Vec<Vec<Tracked>> {
    let mut offset = 0;
    epochs
        .into_iter()
        .map(|e| {
            e.into_iter()
                .map(|event| {
                    offset += 1;
                    let input = matches!(event, Event::Observed(_)) as u8;
                    Tracked {
                        event,
                        input,
                        partition: 0,
                        offset,
                    }
                })
                .collect()
        })
        .collect()
}

struct Run {
    published: Vec<Published>,
    view: View,
}

/// Runs `monitor` on `workers` workers (worker 0 feeds one epoch per batch) and collects every
/// publication and the view of the process.
fn run(workers: usize, epochs: Vec<Vec<Tracked>>, params: MonitorParams) -> Run {
    let (send, recv) = mpsc::channel::<CaptureEvent<u64, Vec<Published>>>();
    let send = Arc::new(Mutex::new(send));
    let view = Arc::new(Mutex::new(View::default()));
    let epochs = Arc::new(epochs);
    let v = view.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let send = send.lock().unwrap().clone();
        let route = ViewRoute {
            view: v.clone(),
            processes: 1,
            workers,
        };
        let params = params.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_input::<Vec<Tracked>>();
            let published = monitor(events, &params);
            let (probe, views) = published.clone().sink_to_views(route).probe();
            let _ = views;
            published.capture_into(send);
            (input, probe)
        });
        if worker.index() == 0 {
            for (i, batch) in epochs.iter().enumerate() {
                for t in batch.iter().rev() {
                    input.send(t.clone());
                }
                input.advance_to(i as u64 + 1);
                worker.step();
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join();
    let published = captured(&recv);
    let view = view.lock().unwrap().clone();
    Run { published, view }
}

/// The pairs of one lead: absolute errors, whether covered, persistence absolute errors.
type LeadPairs = (Vec<f64>, Vec<bool>, Vec<f64>);

/// The reference: pairs (forecast, actual) computed with plain loops and floats.
struct Reference {
    leads: BTreeMap<u32, LeadPairs>,
}

impl Reference {
    fn new() -> Self {
        Reference { leads: BTreeMap::new() }
    }

    /// Adds the pairs of predictions at `origins` (persistence: `observed(origin)`) against
    /// `actual(t)`, counting only valid times at or after `cutoff` (hours).
    fn add(
        &mut self,
        origins: impl Iterator<Item = i64>,
        f: impl Fn(u32) -> f64,
        half: f64,
        observed: impl Fn(i64) -> f64,
        actual: impl Fn(i64) -> f64,
        cutoff: i64,
    ) {
        for o in origins {
            for h in 1..=24u32 {
                let t = o + h as i64;
                if t < cutoff {
                    continue;
                }
                let (a, fc) = (actual(t), f(h));
                let e = self.leads.entry(h).or_default();
                e.0.push((fc - a).abs());
                e.1.push(fc - half <= a && a <= fc + half);
                e.2.push((observed(o) - a).abs());
            }
        }
    }

    fn check(&self, got: &[LeadMetrics], what: &str) {
        assert_eq!(got.len(), 24, "{what}: 24 leads");
        for m in got {
            let (errs, covered, pers) = &self.leads[&m.lead_hours];
            let n = errs.len() as f64;
            assert_eq!(m.pairs as usize, errs.len(), "{what} lead {}: pairs", m.lead_hours);
            let mae = errs.iter().sum::<f64>() / n;
            let cov = covered.iter().filter(|c| **c).count() as f64 / n;
            let pmae = pers.iter().sum::<f64>() / n;
            assert!(
                (m.mae.unwrap() - mae).abs() < 1e-6,
                "{what} lead {}: MAE {:?} vs {mae}",
                m.lead_hours,
                m.mae
            );
            assert!(
                (m.coverage.unwrap() - cov).abs() < 1e-12,
                "{what} lead {}: coverage {:?} vs {cov}",
                m.lead_hours,
                m.coverage
            );
            assert!(
                (m.persistence_mae.unwrap() - pmae).abs() < 1e-6,
                "{what} lead {}: persistence",
                m.lead_hours
            );
            match m.skill {
                Some(skill) => assert!((skill - (1.0 - mae / pmae)).abs() < 1e-6, "{what} lead {}: skill", m.lead_hours),
                None => assert_eq!(
                    pmae, 0.0,
                    "{what} lead {}: skill is undefined only when persistence is exact",
                    m.lead_hours
                ),
            }
        }
    }
}

fn last_station(p: &[Published], station: &str) -> weatherflow::ops::monitor::StationMetrics {
    p.iter()
        .rev()
        .find_map(|x| match x {
            Published::StationMetrics(m) if m.station_id == station => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no metrics published for {station}"))
}

fn last_overall(p: &[Published]) -> weatherflow::ops::monitor::OverallMetrics {
    p.iter()
        .rev()
        .find_map(|x| match x {
            Published::OverallMetrics(m) => Some(m.clone()),
            _ => None,
        })
        .expect("overall metrics published")
}

fn a_temp(t: i64) -> f64 {
    9.0 + (t % 4) as f64
}
fn b_temp(t: i64) -> f64 {
    20.0 + t as f64 / 2.0
}
fn b_forecast(h: u32) -> f64 {
    20.0 + h as f64
}

/// Station A: 4 forecasts of a constant 10 °C ± 1 against actuals 9, 10, 11, 12, 9, ... (actuals
/// arrive first, then a conflicting repeat that must be ignored); station B: 3 forecasts rising
/// with the lead against slowly rising actuals (forecasts arrive first).
fn known_case() -> Vec<Vec<Tracked>> {
    let mut epochs: Vec<Vec<Event>> = vec![(0..=30).map(|t| actual("A", t, a_temp(t))).collect()];
    epochs.push((0..4).map(|o| prediction("A", o, |_| 10.0, 1.0, Some(a_temp(o)), o == 2)).collect());
    epochs.push(vec![actual("A", 1, 99.0), actual("A", 2, -40.0)]);
    epochs.push(
        (0..3)
            .map(|o| prediction("B", o, b_forecast, 0.75, Some(b_temp(o)), false))
            .collect(),
    );
    for chunk in (0..=30).collect::<Vec<i64>>().chunks(7) {
        epochs.push(chunk.iter().map(|t| actual("B", *t, b_temp(*t))).collect());
    }
    tracked(epochs)
}

fn params(window_hours: i64, min_pairs: i64) -> MonitorParams {
    MonitorParams {
        window_hours,
        publish_interval_ms: 0,
        min_pairs,
        chart_hours: 48,
    }
}

#[test]
fn mae_and_coverage_per_lead_per_station_and_overall_on_a_known_case() {
    for workers in [1, 2] {
        let r = run(workers, known_case(), params(168, 1000));
        let a = last_station(&r.published, "A");
        // Lead 1 by hand: actuals at 1..4 h are 10, 11, 12, 9 -> errors 0, 1, 2, 1; 12 is outside [9, 11];
        // persistence errors |9-10|, |10-11|, |11-12|, |12-9| = 1, 1, 1, 3.
        let l1 = &a.metrics.leads[0];
        assert_eq!((l1.lead_hours, l1.pairs), (1, 4));
        assert_eq!(l1.mae, Some(1.0));
        assert_eq!(l1.coverage, Some(0.75));
        assert_eq!(l1.persistence_mae, Some(1.5));
        assert!((l1.skill.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let mut ra = Reference::new();
        ra.add(0..4, |_| 10.0, 1.0, a_temp, a_temp, i64::MIN);
        ra.check(&a.metrics.leads, &format!("A ({workers} workers)"));
        assert_eq!(a.metrics.all.pairs, 96);

        let b = last_station(&r.published, "B");
        let mut rb = Reference::new();
        rb.add(0..3, b_forecast, 0.75, b_temp, b_temp, i64::MIN);
        rb.check(&b.metrics.leads, &format!("B ({workers} workers)"));

        let overall = last_overall(&r.published);
        let mut both = Reference::new();
        both.add(0..4, |_| 10.0, 1.0, a_temp, a_temp, i64::MIN);
        both.add(0..3, b_forecast, 0.75, b_temp, b_temp, i64::MIN);
        both.check(&overall.metrics.leads, &format!("overall ({workers} workers)"));
        assert_eq!(overall.metrics.all.pairs, 96 + 72);
        assert!(
            !r.published.iter().any(|p| matches!(p, Published::SkillAlert(_))),
            "no station is below persistence"
        );

        // The views the HTTP API serves.
        let stations = r.view.stations();
        assert_eq!(stations.iter().map(|s| s.station_id.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(stations[0].mae, a.metrics.all.mae);
        let snap = r.view.station("A").unwrap().snapshot.clone().unwrap();
        assert_eq!(
            snap.latest.as_ref().unwrap().window_end,
            t0() + Duration::hours(3),
            "newest prediction"
        );
        assert_eq!(
            snap.earlier.as_ref().unwrap().origin,
            t0(),
            "the oldest forecast within 24 h before it"
        );
        assert_eq!(snap.actuals.len(), 31);
        assert_eq!(snap.actuals[1].1, 10.0, "the first record of a window wins over a later repeat");
        let anomalies = r.view.anomalies(10);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(
            (anomalies[0].station_id.as_str(), anomalies[0].window_end),
            ("A", t0() + Duration::hours(2))
        );
        assert_eq!(r.view.latest_predictions().len(), 2);
        assert_eq!(r.view.overall().unwrap().metrics.all.pairs, 168);
        // Only metric and alert records go to Kafka, as JSON with a type.
        let records: Vec<_> = r.published.iter().filter_map(|p| encode(p, 0, 1)).collect();
        assert!(!records.is_empty());
        for rec in &records {
            let v: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap();
            assert!(
                ["station_metrics", "overall_metrics", "skill_alert"].contains(&v["type"].as_str().unwrap()),
                "{v}"
            );
            assert!(v["published_at"].is_string());
        }
    }
}

#[test]
fn the_rolling_window_retracts_pairs_exactly() {
    // Station D: forecasts of 0 °C at origins 0..=9 h, actuals of 1 °C at 0..=40 h, a 6 h window:
    // the cutoff ends at min(newest origin 9, newest actual 40) - 6 = 3 h.
    let mut epochs: Vec<Vec<Event>> = Vec::new();
    for o in 0..=9 {
        let mut e = vec![prediction("D", o, |_| 0.0, 0.5, Some(1.0 + o as f64 / 10.0), false)];
        e.extend((o * 4..o * 4 + 4).map(|t| actual("D", t, 1.0)));
        epochs.push(e);
    }
    epochs.push(vec![actual("D", 40, 1.0)]);
    let r = run(2, tracked(epochs), params(6, 1000));
    let d = last_station(&r.published, "D");
    let mut reference = Reference::new();
    reference.add(0..=9, |_| 0.0, 0.5, |o| 1.0 + o as f64 / 10.0, |_| 1.0, 3);
    reference.check(&d.metrics.leads, "D, 6 h window");
    let by_lead: Vec<i64> = d.metrics.leads.iter().map(|l| l.pairs).collect();
    assert_eq!(&by_lead[..3], &[8, 9, 10], "valid times before 3 h left the window");
    assert_eq!(d.metrics.all.pairs, 237);
    assert!(d.metrics.leads.iter().all(|l| l.mae == Some(1.0) && l.coverage == Some(0.0)));
    // Everything leaves once both clocks move 6 h past the last forecast's valid times.
    let mut later = tracked(vec![vec![prediction("D", 100, |_| 0.0, 0.5, None, false), actual("D", 100, 1.0)]]);
    for batch in &mut later {
        for t in batch.iter_mut() {
            t.offset += 10_000;
        }
    }
    let mut epochs2 = known_case_for("D");
    epochs2.extend(later);
    let r2 = run(1, epochs2, params(6, 1000));
    let d2 = last_station(&r2.published, "D");
    assert_eq!(d2.metrics.all.pairs, 0, "every pair retracted: {:?}", d2.metrics.all);
    assert_eq!(last_overall(&r2.published).metrics.all.pairs, 0);
}

fn known_case_for(station: &str) -> Vec<Vec<Tracked>> {
    let mut epochs: Vec<Vec<Event>> = Vec::new();
    for o in 0..=9 {
        let mut e = vec![prediction(station, o, |_| 0.0, 0.5, Some(1.0), false)];
        e.extend((o * 4..o * 4 + 4).map(|t| actual(station, t, 1.0)));
        epochs.push(e);
    }
    tracked(epochs)
}

#[test]
fn a_station_worse_than_persistence_raises_one_alert_and_recovers() {
    // Station C forecasts 30 °C while it is 10-11 °C: persistence errs by 0.5 °C on average, the model by 19.5.
    let mut epochs: Vec<Vec<Event>> = vec![(0..=40).map(|t| actual("C", t, 10.0 + (t % 2) as f64)).collect()];
    epochs.push(
        (0..10)
            .map(|o| prediction("C", o, |_| 30.0, 1.0, Some(10.0 + (o % 2) as f64), false))
            .collect(),
    );
    // Much later, perfect forecasts; the bad pairs leave the 24 h window.
    epochs.push((200..=260).map(|t| actual("C", t, 10.0 + (t % 2) as f64)).collect());
    epochs.push(
        (200..230)
            .map(|o| {
                prediction(
                    "C",
                    o,
                    move |h| 10.0 + ((o + h as i64) % 2) as f64,
                    1.0,
                    Some(10.0 + (o % 2) as f64),
                    false,
                )
            })
            .collect(),
    );
    let r = run(2, tracked(epochs), params(24, 100));
    let alerts: Vec<_> = r
        .published
        .iter()
        .filter_map(|p| match p {
            Published::SkillAlert(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0].state, AlertState::BelowPersistence);
    assert_eq!(alerts[0].station_id, "C");
    assert!(alerts[0].skill < -10.0 && alerts[0].pairs >= 100, "{:?}", alerts[0]);
    // Persistence misses by 1 °C at odd leads and is exact at even ones.
    assert!((alerts[0].persistence_mae - 0.5).abs() < 1e-9, "{:?}", alerts[0]);
    assert_eq!(alerts[1].state, AlertState::Recovered);
    let c = last_station(&r.published, "C");
    assert!(!c.below_persistence);
    assert_eq!(c.metrics.all.mae, Some(0.0));
    assert_eq!(r.view.alerts().len(), 2);
    assert_eq!(r.view.alerts()[0].state, AlertState::Recovered, "newest first");
}

/// Runs `monitor` on a cluster of `processes` x `workers` timely processes (threads of this test,
/// talking over TCP as separate processes do, so every exchanged record is serialised) and
/// returns each process's view.
fn run_cluster(processes: usize, workers: usize, epochs: Vec<Vec<Tracked>>, params: MonitorParams) -> Vec<View> {
    let ports: Vec<u16> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
        .collect();
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let epochs = Arc::new(epochs);
    let (done, results) = mpsc::channel::<(usize, View)>();
    for process in 0..processes {
        let (addresses, epochs, params, done) = (addresses.clone(), epochs.clone(), params.clone(), done.clone());
        std::thread::spawn(move || {
            let view = Arc::new(Mutex::new(View::default()));
            let v = view.clone();
            let config = timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process,
                    addresses,
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            };
            timely::execute(config, move |worker| {
                let route = ViewRoute {
                    view: v.clone(),
                    processes,
                    workers,
                };
                let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                    let (input, events) = scope.new_input::<Vec<Tracked>>();
                    let (probe, _) = monitor(events, &params).sink_to_views(route).probe();
                    (input, probe)
                });
                if worker.index() == 0 {
                    for (i, batch) in epochs.iter().enumerate() {
                        for t in batch {
                            input.send(t.clone());
                        }
                        input.advance_to(i as u64 + 1);
                        worker.step();
                    }
                }
                input.close();
                while !probe.done() {
                    worker.step();
                }
            })
            .unwrap()
            .join();
            let v = view.lock().unwrap().clone();
            let _ = done.send((process, v));
        });
    }
    // A worker that panics leaves the others waiting for it: fail instead of hanging.
    let mut views: Vec<Option<View>> = vec![None; processes];
    for _ in 0..processes {
        let (p, v) = results
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the cluster did not finish (a worker failed?)");
        views[p] = Some(v);
    }
    views.into_iter().map(Option::unwrap).collect()
}

#[test]
fn every_process_serves_the_same_complete_view() {
    let mut epochs = known_case();
    // A prediction without a source position (its JSON omits the field) must cross processes too.
    let mut extra = tracked(vec![vec![prediction("E", 0, |_| 5.0, 1.0, Some(5.0), true), actual("E", 1, 6.0)]]);
    for t in extra.iter_mut().flatten() {
        t.offset += 1000;
    }
    epochs.extend(extra);
    let single = run(1, epochs.clone(), params(168, 1000)).view;
    let views = run_cluster(2, 2, epochs, params(168, 1000));
    assert_eq!(views.len(), 2);
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.stations(), single.stations(), "process {i}: station list");
        assert_eq!(v.overall(), single.overall(), "process {i}: overall metrics");
        assert_eq!(v.station_metrics(), single.station_metrics(), "process {i}");
        assert_eq!(v.latest_predictions(), single.latest_predictions(), "process {i}");
        assert_eq!(v.anomalies(10), single.anomalies(10), "process {i}");
        assert_eq!(
            v.station("E").unwrap().snapshot,
            single.station("E").unwrap().snapshot,
            "process {i}"
        );
    }
    assert_eq!(single.stations().len(), 3);
    assert_eq!(single.anomalies(10).len(), 2);
    assert_eq!(
        single.station("E").unwrap().metrics.as_ref().unwrap().metrics.leads[0].mae,
        Some(1.0)
    );
}
