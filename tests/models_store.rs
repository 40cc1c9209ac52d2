//! The model store with real trained models: versions are immutable, `latest` switches
//! atomically (a reader never sees a partial pointer), rollback returns to the previous
//! promotion, and a corrupted or schema-mismatched model is refused with a clear error, for the
//! CLI path (`promote`, `describe_choice`) and for the serving path (`ModelWatch`, which then
//! serves the statistical fallback).

mod models_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use models_support::store_with_forecasts;
use weatherflow::forecast::trained::LinearPerLead;
use weatherflow::models::command::{run, ModelsCommand, StoreArg, VersionArgs};
use weatherflow::models::serving::{ModelSource, ModelWatch};
use weatherflow::models::{ModelError, ModelStore};

#[test]
fn promote_is_atomic_rollback_returns_and_history_is_kept() {
    let (dir, _) = store_with_forecasts("promote", true);
    let store = ModelStore::new(&dir);
    assert_eq!(
        store.latest_version("forecast").unwrap(),
        None,
        "training does not promote by default"
    );
    let meta = store.promote("forecast", "v1").unwrap();
    assert_eq!(meta.served_name(), "ridge-per-lead/v1");
    assert_eq!(store.describe_choice("forecast"), "ridge-per-lead/v1");
    let e = store.rollback("forecast").unwrap_err();
    assert!(
        matches!(e, ModelError::NoRollback { .. }) && e.to_string().contains("only version"),
        "{e}"
    );

    // A reader polling `latest` while versions are promoted back and forth only ever sees a
    // whole, valid version name.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, store) = (stop.clone(), store.clone());
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let raw = store.latest_raw("forecast").unwrap().expect("latest never disappears");
                assert!(raw == "v1\n" || raw == "v2\n", "partial or torn pointer {raw:?}");
                seen += 1;
            }
            seen
        })
    };
    for i in 0..200 {
        store.promote("forecast", if i % 2 == 0 { "v2" } else { "v1" }).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("forecast"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");

    // Latest is v1 now (200 promotions, the last one v1); promote v2, roll back to v1, and
    // rolling back again steps further back through the promotion history (to v2).
    store.promote("forecast", "v2").unwrap();
    assert_eq!(store.rollback("forecast").unwrap(), ("v2".to_string(), "v1".to_string()));
    assert_eq!(store.latest_version("forecast").unwrap().as_deref(), Some("v1"));
    assert_eq!(store.rollback("forecast").unwrap(), ("v1".to_string(), "v2".to_string()));
    assert!(store.promote("forecast", "v9").is_err(), "a missing version is never promoted");
    assert_eq!(
        store.latest_version("forecast").unwrap().as_deref(),
        Some("v2"),
        "a refused promotion changes nothing"
    );
    store.promote("forecast", "v1").unwrap();

    // The CLI prints the switch.
    let out = run(&ModelsCommand::Promote(VersionArgs {
        kind: "forecast/v2".into(),
        version: None,
        store: StoreArg { store: dir.clone() },
    }))
    .unwrap();
    assert!(out.contains("latest is now v2") && out.contains("was v1"), "{out}");
    let listed = run(&ModelsCommand::List(weatherflow::models::command::ListArgs {
        kind: Some("forecast".into()),
        store: StoreArg { store: dir.clone() },
    }))
    .unwrap();
    assert!(listed.contains("* v2") && listed.contains("  v1"), "{listed}");
}

#[test]
fn corrupted_and_mismatched_models_are_refused_and_the_fallback_serves() {
    let (dir, _) = store_with_forecasts("corrupt", true);
    let store = ModelStore::new(&dir);
    store.promote("forecast", "v1").unwrap();
    let mut watch: ModelWatch<LinearPerLead> = ModelWatch::new(&ModelSource::store(&dir, 0));
    assert_eq!(
        watch.poll(Instant::now()).map(|s| s.name.clone()).as_deref(),
        Some("ridge-per-lead/v1")
    );

    // Corrupt v2's model file (one byte), promote it by hand (the CLI would refuse).
    let model = dir.join("forecast/v2/model.json");
    let mut bytes = std::fs::read(&model).unwrap();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
    std::fs::write(&model, &bytes).unwrap();
    let e = store.load("forecast", "v2").unwrap_err();
    assert!(matches!(e, ModelError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("CRC-32"), "{e}");
    assert!(store.promote("forecast", "v2").is_err(), "promote refuses a corrupted model");
    weatherflow::models::write_atomic(&dir.join("forecast/latest"), b"v2\n").unwrap();
    assert_eq!(store.describe_choice("forecast"), "fallback (stored model refused)");
    assert!(watch.poll(Instant::now()).is_none(), "the dataflow serves the statistical fallback");

    // A model trained on another feature schema: metadata lists other features.
    let meta_path = dir.join("forecast/v1/metadata.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["features"].as_array_mut().unwrap().swap(0, 1);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    let e = store.load("forecast", "v1").unwrap_err();
    assert!(matches!(e, ModelError::SchemaMismatch { .. }), "{e}");
    assert!(e.to_string().contains("feature schema"), "{e}");
    weatherflow::models::write_atomic(&dir.join("forecast/latest"), b"v1\n").unwrap();
    assert!(watch.poll(Instant::now()).is_none(), "a mismatched schema is refused too");

    // No pointer at all: no trained model, the fallback serves, without a warning.
    std::fs::remove_file(dir.join("forecast/latest")).unwrap();
    assert!(store.servable("forecast").unwrap().is_none());
    assert!(watch.poll(Instant::now()).is_none());
}

#[test]
fn reload_interval_is_configured_with_a_default_and_validated() {
    use weatherflow::config::RawConfig;
    let default = RawConfig::parse("").unwrap();
    assert_eq!(default.models.reload_ms, 5000);
    let set = RawConfig::parse("[models]\nreload_ms = 0\n").unwrap();
    assert!(
        set.validate().iter().all(|p| p.field != "models.reload_ms"),
        "0 = every epoch is valid"
    );
    let bad = RawConfig::parse("[models]\nreload_ms = 86400000\n").unwrap();
    let problems = bad.validate();
    let p = problems
        .iter()
        .find(|p| p.field == "models.reload_ms")
        .expect("out of range is a problem");
    assert!(p.message.contains("3600000"), "{}", p.message);
}
