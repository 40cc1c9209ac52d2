//! Helpers shared by the model tests: the real NYC records, small training runs into a temporary
//! store (so tests never depend on the committed models), and temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use weatherflow::contract::FeatureRecord;
use weatherflow::train::{parse_period, DataSource, Periods, TrainConfig, TrainOptions};

/// The committed NYC feature file.
pub fn nyc_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/features/nyc_2013.jsonl")
}

/// NYC records (all three stations) up to (excluding) `until` (YYYY-MM-DD).
pub fn nyc_until(until: &str) -> Vec<FeatureRecord> {
    let end = weatherflow::train::parse_time(until).unwrap();
    std::fs::read_to_string(nyc_file())
        .unwrap()
        .lines()
        .map(|l| FeatureRecord::parse(l.as_bytes()).unwrap())
        .filter(|r| r.window_end < end)
        .collect()
}

/// A fresh temporary directory for `name`.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wf-model-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `records` as a JSON-lines file in `dir`.
pub fn write_jsonl(dir: &Path, name: &str, records: &[FeatureRecord]) -> PathBuf {
    let p = dir.join(name);
    let text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// Last day (exclusive) of the data the small runs load.
pub const SMALL_UNTIL: &str = "2013-09-15";

/// Small periods over NYC 2013: train January to mid-July (the annual cycle needs 180 days),
/// calibrate to mid-August, test to mid-September.
pub fn small_periods() -> Periods {
    Periods {
        train: parse_period("2013-01-01..2013-07-15").unwrap(),
        calibration: parse_period("2013-07-15..2013-08-15").unwrap(),
        test: parse_period("2013-08-15..2013-09-15").unwrap(),
    }
}

/// Options of a small, quiet training run of `kind` from `file` into `store`.
pub fn small_options(kind: &str, file: &Path, store: &Path, version: &str, params: &[&str]) -> TrainOptions {
    let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
    TrainOptions {
        source: DataSource::Features(file.to_path_buf()),
        periods: small_periods(),
        config: TrainConfig::load(None, kind, None, &params).unwrap(),
        store: store.to_path_buf(),
        version: Some(version.into()),
        promote: false,
        dry_run: false,
        report_dir: None,
        interval: 0.9,
        forecast_version: Some("fallback".into()),
        quiet: true,
    }
}

/// Trains forecast `v1` into a new store (and, when `two`, stores the same model again as `v2`,
/// a distinct servable version, which is cheaper than a second training); returns the store and
/// the records file (NYC up to [`SMALL_UNTIL`]).
pub fn store_with_forecasts(name: &str, two: bool) -> (PathBuf, PathBuf) {
    let dir = tmp(name);
    let file = write_jsonl(&dir, "nyc.jsonl", &nyc_until(SMALL_UNTIL));
    let store = dir.join("models");
    weatherflow::train::forecast::train_forecast(&small_options("forecast", &file, &store, "v1", &[])).unwrap();
    if two {
        clone_version(&store, "forecast", "v1", "v2");
    }
    (store, file)
}

/// Stores version `from` of `kind` again as `to` through the store's own writer.
pub fn clone_version(store: &Path, kind: &str, from: &str, to: &str) {
    let s = weatherflow::models::ModelStore::new(store);
    let mut meta = s.metadata(kind, from).unwrap();
    meta.version = to.into();
    meta.files.clear();
    let src = s.version_dir(kind, from);
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "metadata.json")
        .map(|n| (n.clone(), std::fs::read(src.join(&n)).unwrap()))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    s.create_version(meta, &refs).unwrap();
}
