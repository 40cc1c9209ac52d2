//! Integration tests of the observation loaders and the feature windows, on the three real data
//! files in `data/raw/` and on small hand-built inputs. No broker needed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use weatherflow::contract::FeatureRecord;
use weatherflow::features::{features_in_input_order, hourly_features, window_end_for, WindowAccumulator, DEFAULT_WINDOW};
use weatherflow::observations::{load_file, load_reader, LoadError, Observation, SourceFormat};

fn raw(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/raw").join(name)
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("test timestamp").with_timezone(&Utc)
}

fn load(format: SourceFormat, name: &str) -> Vec<Observation> {
    load_file(format, raw(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn missing(obs: &[Observation], field: fn(&Observation) -> Option<f64>) -> usize {
    obs.iter().filter(|o| field(o).is_none()).count()
}

fn find<'a>(obs: &'a [Observation], station: &str, time: &str) -> &'a Observation {
    let time = t(time);
    obs.iter()
        .find(|o| o.station_id == station && o.time == time)
        .unwrap_or_else(|| panic!("no {station} row at {time}"))
}

fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= tol)
}

// ---------------------------------------------------------------- real files

#[test]
fn nyc_loads_all_rows_with_units_and_glitches() {
    let obs = load(SourceFormat::NycAsos, "nyc_asos_2013_hourly.csv");
    assert_eq!(obs.len(), 26_115);
    let mut per_station = BTreeMap::new();
    for o in &obs {
        *per_station.entry(o.station_id.as_str()).or_insert(0) += 1;
    }
    assert_eq!(per_station, BTreeMap::from([("EWR", 8_703), ("JFK", 8_706), ("LGA", 8_706)]));
    assert_eq!(obs[0].time, t("2013-01-01T06:00:00Z"));
    assert_eq!(obs[obs.len() - 1].time, t("2013-12-30T23:00:00Z"));

    // First row: 39.02 F, 10.357 mph, 0 in, 1012 hPa.
    let first = &obs[0];
    assert!(close(first.temperature, 3.9, 1e-9), "{first:?}");
    assert!(close(first.wind_speed, 4.6300, 1e-4), "{first:?}");
    assert_eq!(
        (first.humidity, first.pressure, first.precipitation),
        (Some(59.37), Some(1012.0), Some(0.0))
    );

    // The real glitches are kept, converted like any other value.
    let ewr = find(&obs, "EWR", "2013-02-12T08:00:00Z");
    assert!(close(ewr.wind_speed, 468.7, 0.05), "{ewr:?}");
    let jfk = find(&obs, "JFK", "2013-05-09T02:00:00Z");
    assert!(close(jfk.temperature, -10.5, 1e-9), "{jfk:?}");
    assert!(close(find(&obs, "JFK", "2013-05-09T01:00:00Z").temperature, 13.9, 0.01));

    // Missing values as the README describes: pressure about 10 %.
    let p = missing(&obs, |o| o.pressure);
    assert_eq!(p, 2_729);
    assert!((0.09..0.12).contains(&(p as f64 / obs.len() as f64)));
    assert_eq!(missing(&obs, |o| o.temperature), 1);
    assert_eq!(missing(&obs, |o| o.humidity), 1);
    assert_eq!(missing(&obs, |o| o.wind_speed), 4);
    assert_eq!(missing(&obs, |o| o.precipitation), 0);
    // Sea-level pressure above 1040 hPa in 43 real hours.
    assert_eq!(obs.iter().filter(|o| o.pressure.is_some_and(|p| p > 1040.0)).count(), 43);
}

#[test]
fn payerne_loads_all_minutes_with_station_pressure() {
    let obs = load(SourceFormat::PayerneBsrn, "payerne_2016-06_1min.csv");
    assert_eq!(obs.len(), 43_200);
    assert!(obs.iter().all(|o| o.station_id == "PAY"));
    assert_eq!(obs[0].time, t("2016-06-01T00:00:00Z"));
    assert_eq!(obs[43_199].time, t("2016-06-30T23:59:00Z"));
    assert!(obs.windows(2).all(|w| w[1].time - w[0].time == Duration::minutes(1)));
    assert_eq!(
        (obs[0].temperature, obs[0].humidity, obs[0].pressure),
        (Some(9.3), Some(100.5), Some(958.0))
    );
    // No wind or precipitation at all; -999 occurs only in ghi, so nothing else is missing.
    assert!(obs.iter().all(|o| o.wind_speed.is_none() && o.precipitation.is_none()));
    assert_eq!(
        missing(&obs, |o| o.temperature) + missing(&obs, |o| o.humidity) + missing(&obs, |o| o.pressure),
        0
    );
    // Station pressure, entirely below 980 hPa; humidity saturates at 100.5 % in ~16,000 minutes.
    assert!(obs.iter().all(|o| o.pressure.is_some_and(|p| (946.0..=968.0).contains(&p))));
    assert_eq!(obs.iter().filter(|o| o.humidity.is_some_and(|h| h > 100.0)).count(), 16_167);
}

#[test]
fn tmy3_loads_hour_ending_local_time_as_utc_in_file_order() {
    let obs = load(SourceFormat::Tmy3, "greensboro_tmy3_hourly.csv");
    assert_eq!(obs.len(), 8_760);
    assert!(obs.iter().all(|o| o.station_id == "723170"));
    // 01/01/1988 01:00 local standard (UTC-5), hour ending.
    assert_eq!(obs[0].time, t("1988-01-01T06:00:00Z"));
    // 01/01/1988 24:00 is midnight at the end of Jan 1 local, i.e. Jan 2 05:00 UTC.
    let midnight = &obs[23];
    assert_eq!(midnight.time, t("1988-01-02T05:00:00Z"));
    assert_eq!(
        (
            midnight.temperature,
            midnight.humidity,
            midnight.pressure,
            midnight.wind_speed,
            midnight.precipitation
        ),
        (Some(5.0), Some(83.0), Some(996.0), Some(2.1), Some(0.5)) // precipitation: 5 tenths of a mm
    );
    assert_eq!(obs[24].time, t("1988-01-02T06:00:00Z"));
    // Last row: 12/31/1980 24:00 local.
    assert_eq!(obs[8_759].time, t("1981-01-01T05:00:00Z"));
    // Each month keeps its own year: time goes backwards at 5 month joins, always at 01:00 local
    // on the 1st, and never inside a month (where steps are exactly one hour).
    let mut backward = Vec::new();
    for (i, w) in obs.windows(2).enumerate() {
        if w[1].time < w[0].time {
            backward.push(w[1].time);
        } else if w[1].time - w[0].time != Duration::hours(1) {
            assert_eq!(
                w[1].time.format("%d %H").to_string(),
                "01 06",
                "forward jump inside a month at row {i}"
            );
        }
    }
    let expected = [
        "1990-03-01T06:00:00Z",
        "1980-04-01T06:00:00Z",
        "1981-07-01T06:00:00Z",
        "1980-10-01T06:00:00Z",
        "1980-12-01T06:00:00Z",
    ];
    assert_eq!(backward, expected.map(t));
    // Station pressure 965-1007 hPa; no missing values in the columns read.
    assert!(obs.iter().all(|o| o.pressure.is_some_and(|p| (965.0..=1007.0).contains(&p))));
    let fields: [fn(&Observation) -> Option<f64>; 4] = [|o| o.temperature, |o| o.humidity, |o| o.wind_speed, |o| o.precipitation];
    for f in fields {
        assert_eq!(missing(&obs, f), 0);
    }
}

// ---------------------------------------------------------------- windows and aggregation

fn obs_at(time: &str, temp: Option<f64>, rh: Option<f64>, p: Option<f64>, wind: Option<f64>, precip: Option<f64>) -> Observation {
    Observation {
        station_id: "X".into(),
        time: t(time),
        temperature: temp,
        humidity: rh,
        pressure: p,
        wind_speed: wind,
        precipitation: precip,
    }
}

#[test]
fn accumulator_on_a_hand_built_window() {
    let obs = [
        obs_at("2013-10-01T11:15:00Z", Some(10.0), Some(50.0), Some(1000.0), Some(1.0), None),
        obs_at("2013-10-01T11:30:00Z", Some(12.0), None, Some(1010.0), Some(3.0), Some(0.5)),
        obs_at("2013-10-01T11:45:00Z", None, Some(70.0), None, Some(5.0), Some(1.25)),
        obs_at("2013-10-01T12:00:00Z", Some(14.0), None, None, None, None),
    ];
    let mut acc = WindowAccumulator::new("X", t("2013-10-01T11:00:00Z"), t("2013-10-01T12:00:00Z"));
    obs.iter().for_each(|o| acc.add(o));
    let r = acc.finish();
    assert_eq!(r.count, 4);
    assert_eq!(
        (r.window_start, r.window_end),
        (Some(t("2013-10-01T11:00:00Z")), t("2013-10-01T12:00:00Z"))
    );
    assert!(close(r.temperature_mean, 12.0, 1e-12));
    assert_eq!((r.temperature_min, r.temperature_max), (Some(10.0), Some(14.0)));
    assert!(close(r.temperature_std, (8.0f64 / 3.0).sqrt(), 1e-12), "population std: {r:?}");
    assert!(close(r.humidity_mean, 60.0, 1e-12));
    assert!(close(r.pressure_mean, 1005.0, 1e-12));
    assert!(close(r.wind_speed_mean, 3.0, 1e-12));
    assert_eq!(r.wind_speed_max, Some(5.0));
    assert!(close(r.precipitation_sum, 1.75, 1e-12));
    assert!(r.validate().is_ok());
    // The batch path gives the same record.
    assert_eq!(hourly_features(&obs, DEFAULT_WINDOW), vec![r]);
}

#[test]
fn accumulator_edge_cases() {
    let mut one = WindowAccumulator::for_time("X", t("2013-10-01T11:30:00Z"), DEFAULT_WINDOW);
    assert_eq!(one.window_end(), t("2013-10-01T12:00:00Z"));
    one.add(&obs_at("2013-10-01T11:30:00Z", Some(-3.5), None, None, Some(0.0), None));
    let r = one.finish();
    assert_eq!((r.count, r.temperature_mean, r.temperature_std), (1, Some(-3.5), Some(0.0)));
    assert_eq!((r.humidity_mean, r.pressure_mean, r.precipitation_sum), (None, None, None));
    assert_eq!((r.wind_speed_mean, r.wind_speed_max), (Some(0.0), Some(0.0)));

    let mut none = WindowAccumulator::new("X", t("2013-10-01T11:00:00Z"), t("2013-10-01T12:00:00Z"));
    none.add(&Observation::new("X", t("2013-10-01T11:30:00Z")));
    let r = none.finish();
    assert_eq!(r.count, 1);
    assert_eq!(
        (r.temperature_mean, r.temperature_min, r.temperature_max, r.temperature_std),
        (None, None, None, None)
    );
    assert!(r.validate().is_ok());

    let empty = WindowAccumulator::new("X", t("2013-10-01T11:00:00Z"), t("2013-10-01T12:00:00Z")).finish();
    assert_eq!((empty.count, empty.temperature_mean), (0, None));
}

#[test]
fn window_boundary_is_hour_ending() {
    assert_eq!(window_end_for(t("2013-10-01T12:00:00Z"), DEFAULT_WINDOW), t("2013-10-01T12:00:00Z"));
    assert_eq!(window_end_for(t("2013-10-01T12:01:00Z"), DEFAULT_WINDOW), t("2013-10-01T13:00:00Z"));
    assert_eq!(window_end_for(t("2013-10-01T11:01:00Z"), DEFAULT_WINDOW), t("2013-10-01T12:00:00Z"));
    let obs = [
        obs_at("2013-10-01T11:01:00Z", Some(1.0), None, None, None, None),
        obs_at("2013-10-01T12:00:00Z", Some(2.0), None, None, None, None),
        obs_at("2013-10-01T12:01:00Z", Some(3.0), None, None, None, None),
    ];
    let r = hourly_features(&obs, DEFAULT_WINDOW);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].window_end, r[0].count, r[0].temperature_mean),
        (t("2013-10-01T12:00:00Z"), 2, Some(1.5))
    );
    assert_eq!((r[1].window_end, r[1].count), (t("2013-10-01T13:00:00Z"), 1));
    assert_eq!(r[1].window_start, Some(t("2013-10-01T12:00:00Z")));
    // Other sizes align to the epoch too.
    assert_eq!(
        window_end_for(t("2013-10-01T12:01:00Z"), Duration::minutes(10)),
        t("2013-10-01T12:10:00Z")
    );
}

#[test]
fn hourly_features_sort_by_station_then_window() {
    let mut obs = load(SourceFormat::NycAsos, "nyc_asos_2013_hourly.csv");
    obs.reverse();
    let r = hourly_features(&obs, DEFAULT_WINDOW);
    // One reading per station-hour in this file, so one window per row.
    assert_eq!(r.len(), 26_115);
    assert!(r
        .windows(2)
        .all(|w| (w[0].station_id.as_str(), w[0].window_end) < (w[1].station_id.as_str(), w[1].window_end)));
    assert!(r.iter().all(|x| x.count == 1 && x.validate().is_ok()));
    let glitch = r
        .iter()
        .find(|x| x.station_id == "EWR" && x.window_end == t("2013-02-12T08:00:00Z"))
        .expect("EWR glitch window");
    assert!(close(glitch.wind_speed_max, 468.7, 0.05));
}

#[test]
fn payerne_hourly_windows() {
    let obs = load(SourceFormat::PayerneBsrn, "payerne_2016-06_1min.csv");
    let r = hourly_features(&obs, DEFAULT_WINDOW);
    // 720 full hours (00:01..01:00 up to 23:01..00:00 on July 1), plus the window ending
    // 2016-06-01T00:00 that holds only the 00:00 minute. The last window misses its 00:00 minute
    // (the file ends at 23:59), so it holds 59.
    assert_eq!(r.len(), 721);
    assert_eq!((r[0].window_end, r[0].count), (t("2016-06-01T00:00:00Z"), 1));
    assert_eq!((r[720].window_end, r[720].count), (t("2016-07-01T00:00:00Z"), 59));
    assert!(r[1..720].iter().all(|x| x.count == 60));
    assert_eq!(r.iter().map(|x| x.count).sum::<u64>(), 43_200);
    assert!(r
        .iter()
        .all(|x| x.window_start == Some(x.window_end - Duration::hours(1)) && x.validate().is_ok()));
    assert!(r.iter().all(|x| x.wind_speed_mean.is_none() && x.precipitation_sum.is_none()));

    // Cross-check one window against a naive two-pass computation over the raw minutes.
    let end = t("2016-06-15T13:00:00Z");
    let temps: Vec<f64> = obs
        .iter()
        .filter(|o| o.time > end - Duration::hours(1) && o.time <= end)
        .filter_map(|o| o.temperature)
        .collect();
    assert_eq!(temps.len(), 60);
    let mean = temps.iter().sum::<f64>() / 60.0;
    let std = (temps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 60.0).sqrt();
    let w = r.iter().find(|x| x.window_end == end).expect("window");
    assert!(
        close(w.temperature_mean, mean, 1e-9) && close(w.temperature_std, std, 1e-9),
        "{w:?}"
    );
    assert_eq!(w.temperature_min, temps.iter().copied().reduce(f64::min));
    assert_eq!(w.temperature_max, temps.iter().copied().reduce(f64::max));
}

// ---------------------------------------------------------------- committed feature files

fn committed(name: &str) -> Vec<FeatureRecord> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/features").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo run --example build_feature_files`)", path.display()));
    text.lines()
        .map(|l| FeatureRecord::parse(l.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

#[test]
fn committed_feature_files_match_the_loaders() {
    let by_time = |mut r: Vec<FeatureRecord>| {
        r.sort_by(|a, b| a.window_end.cmp(&b.window_end).then_with(|| a.station_id.cmp(&b.station_id)));
        r
    };
    let nyc = committed("nyc_2013.jsonl");
    assert_eq!(nyc.len(), 26_115);
    assert_eq!(
        nyc,
        by_time(hourly_features(
            &load(SourceFormat::NycAsos, "nyc_asos_2013_hourly.csv"),
            DEFAULT_WINDOW
        ))
    );
    let pay = committed("payerne_2016-06.jsonl");
    assert_eq!(pay.len(), 721);
    assert_eq!(
        pay,
        by_time(hourly_features(
            &load(SourceFormat::PayerneBsrn, "payerne_2016-06_1min.csv"),
            DEFAULT_WINDOW
        ))
    );
    let tmy = committed("greensboro_tmy3.jsonl");
    assert_eq!(tmy.len(), 8_760);
    assert_eq!(
        tmy,
        features_in_input_order(&load(SourceFormat::Tmy3, "greensboro_tmy3_hourly.csv"), DEFAULT_WINDOW)
    );
    assert_eq!(tmy[0].window_end, t("1988-01-01T06:00:00Z"));
}

// ---------------------------------------------------------------- bad input

const NYC_HEAD: &str = "origin,year,month,day,hour,temp,dewp,humid,wind_dir,wind_speed,wind_gust,precip,pressure,visib,time_hour\n";
const NYC_ROW: &str = "EWR,2013,1,1,1,39.02,26.06,59.37,270,10.35,NA,0,1012,10,2013-01-01T06:00:00Z\n";

fn nyc(input: &str) -> Result<Vec<Observation>, LoadError> {
    load_reader(SourceFormat::NycAsos, input.as_bytes(), "mem.csv")
}

#[test]
fn bad_rows_name_file_line_and_column() {
    let e = nyc(&format!(
        "{NYC_HEAD}{NYC_ROW}EWR,2013,1,1,2,warm,26,59,270,10,NA,0,1012,10,2013-01-01T07:00:00Z\n"
    ))
    .unwrap_err();
    assert!(matches!(e, LoadError::BadValue { .. }), "{e:?}");
    assert_eq!((e.file(), e.line(), e.column()), ("mem.csv", Some(3), Some("temp")));
    let msg = e.to_string();
    assert!(msg.contains("mem.csv:3") && msg.contains("temp") && msg.contains("warm"), "{msg}");

    let e = nyc(&format!("{NYC_HEAD}EWR,2013,1\n")).unwrap_err();
    assert!(matches!(e, LoadError::Malformed { line: 2, .. }), "{e:?}");
    let e = nyc(&format!("{NYC_HEAD}{NYC_ROW}{NYC_ROW}EWR,\"2013,1\n")).unwrap_err();
    assert!(matches!(e, LoadError::Malformed { line: 4, .. }), "{e:?}");
    let e = nyc("origin,temp\nEWR,1\n").unwrap_err();
    assert!(matches!(e, LoadError::MissingColumn { line: 1, .. }), "{e:?}");
    assert_eq!(e.column(), Some("time_hour"));
    let e = nyc(&format!("{NYC_HEAD}EWR,2013,1,1,1,39,26,59,270,10,NA,0,1012,10,2013-01-01T06:00:00Z\n,2013,1,1,1,39,26,59,270,10,NA,0,1012,10,2013-01-01T06:00:00Z\n")).unwrap_err();
    assert_eq!((e.line(), e.column()), (Some(3), Some("origin")));
    assert!(matches!(
        nyc("").unwrap_err(),
        LoadError::MissingLine {
            line: 1,
            what: "header",
            ..
        }
    ));
    let mut bytes = format!("{NYC_HEAD}{NYC_ROW}").into_bytes();
    bytes.extend_from_slice(b"EWR,\xff\n");
    let e = load_reader(SourceFormat::NycAsos, &bytes[..], "mem.csv").unwrap_err();
    assert!(matches!(e, LoadError::Encoding { line: 3, .. }), "{e:?}");

    let e = load_reader(
        SourceFormat::PayerneBsrn,
        "ts,ghi,temp_c,rh_pct,pressure_hpa\n2016-06-01 00:00:00,0,NaN,1,2\n".as_bytes(),
        "p",
    )
    .unwrap_err();
    assert_eq!((e.line(), e.column()), (Some(2), Some("temp_c")));

    let path = raw("no_such_file.csv");
    let e = load_file(SourceFormat::NycAsos, &path).unwrap_err();
    assert!(
        matches!(e, LoadError::Io { .. }) && e.to_string().contains("no_such_file.csv"),
        "{e}"
    );
}

#[test]
fn payerne_sentinel_is_missing_in_any_column() {
    let input = "ts,ghi,temp_c,rh_pct,pressure_hpa\n2016-06-01 00:00:00,-999.0,-999,-999.0,-999\n2016-06-01 00:01:00,1,9.3,-998.9,958\n";
    let obs = load_reader(SourceFormat::PayerneBsrn, input.as_bytes(), "p").expect("valid input");
    assert_eq!((obs[0].temperature, obs[0].humidity, obs[0].pressure), (None, None, None));
    assert_eq!((obs[1].temperature, obs[1].humidity), (Some(9.3), Some(-998.9)));
}

#[test]
fn garbage_never_panics() {
    let tmy_head = "723170,\"GREENSBORO\",NC,-5.0,36.1,-79.95,273\nDate (MM/DD/YYYY),Time (HH:MM),Dry-bulb (C),RHum (%),Pressure (mbar),Wspd (m/s),Lprecip depth (mm)\n";
    let seeds = [
        (SourceFormat::NycAsos, format!("{NYC_HEAD}{NYC_ROW}{NYC_ROW}")),
        (
            SourceFormat::PayerneBsrn,
            "ts,ghi,temp_c,rh_pct,pressure_hpa\n2016-06-01 00:00:00,-999.0,9.3,100.5,958.0\n".to_string(),
        ),
        (SourceFormat::Tmy3, format!("{tmy_head}01/01/1988,24:00,5.0,83,996,2.1,5\n")),
    ];
    let alphabet = b",\"\n\r:/-.0123456789NAaZ T\xff";
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0, 0);
    for (format, seed) in &seeds {
        for _ in 0..2_000 {
            let mut bytes = seed.clone().into_bytes();
            for _ in 0..(1 + next() % 4) {
                let i = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[i] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            match load_reader(*format, &bytes[..], "fuzz") {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    err += 1;
                }
            }
        }
    }
    assert!(ok > 0 && err > 0, "mutations should both pass and fail: ok {ok}, err {err}");
}
