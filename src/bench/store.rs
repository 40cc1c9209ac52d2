//! The model store the engine-only runs serve: the models promoted in `--models`, with the
//! trained forecaster's climatology given to every generated station.
//!
//! ```text
//!   --models/<kind>/latest ──load──> forecast: climatology EWR, JFK, LGA
//!        │                                 + "EWR-000003" = EWR, "JFK-000004" = JFK, …
//!        └─> <work>/bench-models-<pid>/<kind>/<same version> ──promote──> served by the trained runs
//! ```
//!
//! The trained forecaster serves only the stations it has a climatology for (the others get
//! the fallback's points); without this the bench's renamed stations would all fall back, and
//! the "trained" runs would time only the anomaly model. The anomaly model is copied as it is
//! (unknown stations use its pooled statistics, as in production).

use std::path::{Path, PathBuf};

use super::data::{BaseSeries, Dataset};
use super::model::Sequential;
use crate::contract::{FeatureRecord, SourcePosition};
use crate::models::serving::{ModelSource, ModelWatch, Serving};
use crate::models::{Loaded, ModelError, ModelStore, MODEL_FILE};
use crate::operators::forecast::ForecastParams;
use crate::operators::{Accepted, Outcome};

/// Writes the store (in a directory of this process's own under `work`, which the caller
/// removes after the runs) and returns its directory. `stations` is the number of generated
/// stations the engine-only input has.
pub fn for_generated_stations(source: &Path, base: &BaseSeries, stations: usize, work: &Path) -> Result<PathBuf, ModelError> {
    let from = ModelStore::new(source);
    let dir = work.join(format!("bench-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let to = ModelStore::new(&dir);
    for kind in ["forecast", "anomaly"] {
        let Some(version) = from.latest_version(kind)? else { continue };
        let (mut meta, loaded) = from.load(kind, &version)?;
        let bytes = match loaded {
            Loaded::Forecast(mut m) => {
                for k in 0..stations {
                    let id = base.record(stations, k, 0).station_id;
                    let base_id = base.record(base.base_stations(), k % base.base_stations(), 0).station_id;
                    if let Some(c) = m.climatology.get(&base_id).cloned() {
                        m.climatology.entry(id).or_insert(c);
                    }
                }
                serde_json::to_vec(&m)
            }
            Loaded::Anomaly(m) => serde_json::to_vec(&m),
        }
        .map_err(|e| ModelError::Corrupt {
            kind: kind.into(),
            version: version.clone(),
            message: e.to_string(),
        })?;
        meta.files.clear();
        to.create_version(meta, &[(MODEL_FILE, bytes)])?;
        to.promote(kind, &version)?;
    }
    Ok(dir)
}

/// The models the store at `dir` serves now.
pub fn serving(dir: &Path) -> Serving {
    let source = ModelSource::store(dir, 0);
    let now = std::time::Instant::now();
    Serving {
        forecast: ModelWatch::new(&source).poll(now).cloned(),
        anomaly: ModelWatch::new(&source).poll(now).cloned(),
    }
}

/// The share of predictions the trained forecaster makes when the store at `dir` is served to
/// the first `records` records of `data` (driven sequentially, outside the timed runs): a check
/// that the trained runs time what they say.
pub fn trained_share(dir: &Path, data: &Dataset, records: usize) -> f64 {
    let source = ModelSource::store(dir, 0);
    let serving = serving(dir);
    let Some(name) = serving.forecast.as_ref().map(|s| s.name.clone()) else {
        return 0.0;
    };
    let mut seq = Sequential::new(
        ForecastParams {
            interval: 0.9,
            fallback: Default::default(),
            models: source.clone(),
        },
        serving,
    );
    let (mut made, mut trained) = (0usize, 0usize);
    let messages = data.by_partition.iter().flat_map(|p| p.iter().enumerate()).take(records);
    for (offset, m) in messages {
        let Ok(record) = FeatureRecord::parse(&m.payload) else { continue };
        let a = Accepted {
            record: Box::new(record),
            source: SourcePosition {
                partition: 0,
                offset: offset as i64,
            },
        };
        let forecasted = seq.forecast(a);
        if let Outcome::Predicted(p) = seq.score(forecasted) {
            made += 1;
            trained += usize::from(p.model.forecast == name);
        }
    }
    trained as f64 / made.max(1) as f64
}
