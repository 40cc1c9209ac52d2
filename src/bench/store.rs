//! The model store the engine-only runs serve: the models promoted in `--models`, with the
//! trained forecaster's climatology given to every generated station.
//!
//! ```text
//!   --models/<kind>/latest ──load──> forecast: climatology EWR, JFK, LGA
//!        │                                 + "EWR-000003" = EWR, "JFK-000004" = JFK, …
//!        └─> <work>/bench-models/<kind>/<same version> ──promote──> served by the trained runs
//! ```
//!
//! The trained forecaster serves only the stations it has a climatology for (the others get
//! the fallback's points); without this the bench's renamed stations would all fall back, and
//! the "trained" runs would time only the anomaly model. The anomaly model is copied as it is
//! (unknown stations use its pooled statistics, as in production).

use std::path::{Path, PathBuf};

use super::data::BaseSeries;
use crate::models::{Loaded, ModelError, ModelStore, MODEL_FILE};

/// Writes the store (replacing an earlier one) and returns its directory. `stations` is the
/// number of generated stations the engine-only input has.
pub fn for_generated_stations(source: &Path, base: &BaseSeries, stations: usize, work: &Path) -> Result<PathBuf, ModelError> {
    let from = ModelStore::new(source);
    let dir = work.join("bench-models");
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
