//! The versioned model store: write side (new versions, promote, rollback), read side (list,
//! show, load with full validation) and, in [`serving`], the per-worker hot-reload watch.
//!
//! ```text
//!   models/<kind>/latest                    one line: the version served (replaced atomically:
//!                                           write .latest.tmp, fsync, rename, fsync the directory)
//!   models/<kind>/history                   promoted versions, oldest first (rollback pops one)
//!   models/<kind>/<version>/metadata.json   ModelMeta: type, features, data ranges, metrics, digests
//!   models/<kind>/<version>/model.json      the model (smartcore / own structs, serde_json)
//!   models/<kind>/<version>/report.md, *.svg   the evaluation report of the training run
//!
//!   train ──create_version──> .tmp-<version>/ ──rename──> <version>/ ──promote──> latest
//!   dataflow ──ModelWatch::poll──> latest ──load──> validated model, or the statistical fallback
//! ```
//!
//! `<kind>` is `forecast` or `anomaly`. A model is served only if its metadata parses and names
//! its own kind and version, its type is one this build serves, its feature list equals the one
//! this build computes, and `model.json` has the recorded size and CRC-32 and passes the model's
//! own structural checks. Anything else is refused with a [`ModelError`] saying why, and the
//! dataflow serves the statistical fallback (`fallback/persistence-diurnal-v1`, `rules/v1`).

pub mod command;
pub mod serving;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::anomaly::trained::{self as anomaly_model, AnomalyModel};
use crate::forecast::trained::{self as forecast_model, LinearPerLead};

/// The two kinds of model.
pub const KINDS: [&str; 2] = ["forecast", "anomaly"];
/// File holding the model in a version directory.
pub const MODEL_FILE: &str = "model.json";
/// File holding the metadata in a version directory.
pub const METADATA_FILE: &str = "metadata.json";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// Metadata is not valid.
    #[error("model metadata {path} is invalid: {message}")]
    BadMetadata { path: PathBuf, message: String },
    /// The model type is not one this build can serve.
    #[error("model {kind}/{version} has type {model_type:?}, which this build cannot serve")]
    Unsupported { kind: String, version: String, model_type: String },
    /// The feature list differs from the one this build computes.
    #[error("model {kind}/{version} was trained on a different feature schema: {message}")]
    SchemaMismatch { kind: String, version: String, message: String },
    /// The model file is damaged (size, checksum, JSON or structure).
    #[error("model {kind}/{version} is corrupted: {message}")]
    Corrupt { kind: String, version: String, message: String },
    /// No such kind.
    #[error("unknown model kind {0:?}; expected \"forecast\" or \"anomaly\"")]
    UnknownKind(String),
    /// No such version.
    #[error("model {kind}/{version} does not exist in {dir}")]
    NoSuchVersion { kind: String, version: String, dir: PathBuf },
    /// A version name that cannot be a directory of the store.
    #[error("invalid version name {0:?}: use letters, digits, '.', '_' or '-' (e.g. \"v2\"), not \"latest\" or \"history\"")]
    BadVersionName(String),
    /// The version already exists (versions are immutable).
    #[error("model {kind}/{version} already exists; versions are never overwritten")]
    Exists { kind: String, version: String },
    /// Nothing to roll back to.
    #[error("cannot roll back {kind}: {message}")]
    NoRollback { kind: String, message: String },
}

/// A time period `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
}

impl Period {
    /// True when `t` is in `[from, to)`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t < self.to
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.from.format("%Y-%m-%dT%H:%MZ"), self.to.format("%Y-%m-%dT%H:%MZ"))
    }
}

/// What a model was trained, calibrated and tested on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// Where the records came from (file path and format, or Kafka topic and range).
    pub source: String,
    /// Stations seen.
    pub stations: Vec<String>,
    /// Records loaded.
    pub records: usize,
    /// Training period.
    pub train: Option<Period>,
    /// Calibration period.
    pub calibration: Option<Period>,
    /// Held-out test period.
    pub test: Option<Period>,
}

/// Size and CRC-32 of a stored file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

impl Digest {
    /// Digest of `content`.
    pub fn of(content: &[u8]) -> Self {
        Digest {
            bytes: content.len() as u64,
            crc32: crc32fast::hash(content),
        }
    }
}

/// Metadata every stored model has (`metadata.json`). Fields beyond kind, type and version are
/// optional when reading, so hand-made or older metadata still lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// "forecast" or "anomaly".
    pub kind: String,
    /// Implementation, e.g. "ridge-per-lead".
    pub model_type: String,
    /// Version directory name.
    pub version: String,
    /// When the training run made it.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Feature names in the order the model reads them.
    #[serde(default)]
    pub features: Vec<String>,
    /// Training, calibration and test data.
    #[serde(default)]
    pub data: DataInfo,
    /// Hyperparameters as configured (model factory input).
    #[serde(default)]
    pub hyperparameters: serde_json::Value,
    /// Versions of the crates that made it (weatherflow, smartcore, ndarray, serde_json).
    #[serde(default)]
    pub crate_versions: BTreeMap<String, String>,
    /// Summary metrics on the held-out period.
    #[serde(default)]
    pub holdout: serde_json::Value,
    /// Size and CRC-32 of every file of the version (except this one).
    #[serde(default)]
    pub files: BTreeMap<String, Digest>,
}

impl ModelMeta {
    /// The name predictions carry: `model_type/version`.
    pub fn served_name(&self) -> String {
        format!("{}/{}", self.model_type, self.version)
    }
}

/// The crate versions recorded in metadata (the dependencies are pinned exactly in Cargo.toml).
pub fn crate_versions() -> BTreeMap<String, String> {
    [
        ("weatherflow", env!("CARGO_PKG_VERSION")),
        ("smartcore", "0.7.0"),
        ("ndarray", "0.17.2"),
        ("serde_json", "1.0.154"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A model loaded and validated for serving.
#[derive(Debug)]
pub enum Loaded {
    /// A forecaster.
    Forecast(LinearPerLead),
    /// An anomaly model.
    Anomaly(AnomalyModel),
}

/// One version as listed.
#[derive(Debug)]
pub struct Listed {
    /// Version name.
    pub version: String,
    /// Its metadata, or why it cannot be read.
    pub meta: Result<ModelMeta, ModelError>,
    /// Whether `latest` points to it.
    pub latest: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn check_kind(kind: &str) -> Result<(), ModelError> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ModelError::UnknownKind(kind.into()))
    }
}

/// Is `v` usable as a version directory name?
pub fn valid_version_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v != "latest"
        && v != "history"
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Writes `content` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory. Readers see the old or the new content, never a
/// mix.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(content).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The store rooted at a directory.
#[derive(Clone, Debug)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// A store at `dir` (it need not exist).
    pub fn new(dir: &Path) -> Self {
        ModelStore { dir: dir.to_path_buf() }
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of `kind/version`.
    pub fn version_dir(&self, kind: &str, version: &str) -> PathBuf {
        self.dir.join(kind).join(version)
    }

    /// The raw content of `kind/latest` (`None` when absent): what the hot-reload watch compares.
    pub fn latest_raw(&self, kind: &str) -> Result<Option<String>, ModelError> {
        let path = self.dir.join(kind).join("latest");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(ModelError::Io { path, error }),
        }
    }

    /// The version `latest` points to for `kind`, if any.
    pub fn latest_version(&self, kind: &str) -> Result<Option<String>, ModelError> {
        Ok(self.latest_raw(kind)?.map(|s| s.trim().to_string()).filter(|v| !v.is_empty()))
    }

    /// Metadata of `kind/version`.
    pub fn metadata(&self, kind: &str, version: &str) -> Result<ModelMeta, ModelError> {
        if !valid_version_name(version) {
            return Err(ModelError::BadVersionName(version.into()));
        }
        let path = self.version_dir(kind, version).join(METADATA_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.version_dir(kind, version).is_dir() => {
                return Err(ModelError::NoSuchVersion {
                    kind: kind.into(),
                    version: version.into(),
                    dir: self.dir.clone(),
                })
            }
            Err(error) => return Err(ModelError::Io { path, error }),
        };
        let meta: ModelMeta = serde_json::from_str(&text).map_err(|e| ModelError::BadMetadata {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if meta.kind != kind || meta.version != version {
            return Err(ModelError::BadMetadata {
                path,
                message: format!("says {}/{}, stored as {kind}/{version}", meta.kind, meta.version),
            });
        }
        Ok(meta)
    }

    /// Loads and validates `kind/version` for serving (see the module docs for every check).
    pub fn load(&self, kind: &str, version: &str) -> Result<(ModelMeta, Loaded), ModelError> {
        check_kind(kind)?;
        let meta = self.metadata(kind, version)?;
        let (expected_features, types): (Vec<String>, &[&str]) = match kind {
            "forecast" => (
                crate::forecast::features::schema(),
                &[forecast_model::RIDGE, forecast_model::ELASTIC_NET],
            ),
            _ => (
                anomaly_model::FEATURES.iter().map(|f| f.to_string()).collect(),
                &[anomaly_model::ROBUST_IFOREST, anomaly_model::ROBUST_ZSCORE],
            ),
        };
        if !types.contains(&meta.model_type.as_str()) {
            return Err(ModelError::Unsupported {
                kind: kind.into(),
                version: version.into(),
                model_type: meta.model_type.clone(),
            });
        }
        if meta.features != expected_features {
            return Err(ModelError::SchemaMismatch {
                kind: kind.into(),
                version: version.into(),
                message: format!(
                    "metadata lists [{}], this build computes [{}]",
                    meta.features.join(", "),
                    expected_features.join(", ")
                ),
            });
        }
        let corrupt = |message: String| ModelError::Corrupt {
            kind: kind.into(),
            version: version.into(),
            message,
        };
        let path = self.version_dir(kind, version).join(MODEL_FILE);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let want = meta
            .files
            .get(MODEL_FILE)
            .ok_or_else(|| corrupt(format!("metadata has no digest of {MODEL_FILE}")))?;
        let got = Digest::of(&bytes);
        if got != *want {
            return Err(corrupt(format!(
                "{} has {} bytes and CRC-32 {:08x}, metadata says {} bytes and {:08x}",
                path.display(),
                got.bytes,
                got.crc32,
                want.bytes,
                want.crc32
            )));
        }
        let loaded = match kind {
            "forecast" => {
                let m: LinearPerLead = serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
                if m.model_type != meta.model_type {
                    return Err(corrupt(format!(
                        "model.json says type {:?}, metadata {:?}",
                        m.model_type, meta.model_type
                    )));
                }
                m.validate().map_err(|message| self.schema_or_corrupt(kind, version, message))?;
                Loaded::Forecast(m)
            }
            _ => {
                let m: AnomalyModel = serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
                if m.model_type != meta.model_type {
                    return Err(corrupt(format!(
                        "model.json says type {:?}, metadata {:?}",
                        m.model_type, meta.model_type
                    )));
                }
                m.validate().map_err(|message| self.schema_or_corrupt(kind, version, message))?;
                Loaded::Anomaly(m)
            }
        };
        Ok((meta, loaded))
    }

    fn schema_or_corrupt(&self, kind: &str, version: &str, message: String) -> ModelError {
        if message.starts_with("feature schema mismatch") {
            ModelError::SchemaMismatch {
                kind: kind.into(),
                version: version.into(),
                message,
            }
        } else {
            ModelError::Corrupt {
                kind: kind.into(),
                version: version.into(),
                message,
            }
        }
    }

    /// The trained model to serve for `kind`: `Ok(None)` means no trained model is promoted; an
    /// error means the promoted one is refused (and the fallback serves).
    pub fn servable(&self, kind: &str) -> Result<Option<ModelMeta>, ModelError> {
        let Some(version) = self.latest_version(kind)? else {
            return Ok(None);
        };
        self.load(kind, &version).map(|(meta, _)| Some(meta))
    }

    /// A one-line description of what will serve `kind`, logging why a stored model is refused.
    pub fn describe_choice(&self, kind: &str) -> String {
        match self.servable(kind) {
            Ok(Some(m)) => m.served_name(),
            Ok(None) => "fallback (no trained model promoted)".to_string(),
            Err(e) => {
                tracing::warn!(%kind, error = %e, "refusing stored model; serving the statistical fallback");
                "fallback (stored model refused)".to_string()
            }
        }
    }

    /// Every version of `kind`, sorted by name (numerically for `v<N>`).
    pub fn list(&self, kind: &str) -> Result<Vec<Listed>, ModelError> {
        check_kind(kind)?;
        let dir = self.dir.join(kind);
        let latest = self.latest_version(kind)?;
        let mut versions: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|v| valid_version_name(v))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(ModelError::Io { path: dir, error }),
        };
        versions.sort_by_key(|v| (version_number(v).unwrap_or(u64::MAX), v.clone()));
        Ok(versions
            .into_iter()
            .map(|v| Listed {
                meta: self.metadata(kind, &v),
                latest: latest.as_deref() == Some(v.as_str()),
                version: v,
            })
            .collect())
    }

    /// The next free `v<N>` name of `kind`.
    pub fn next_version(&self, kind: &str) -> Result<String, ModelError> {
        let n = self
            .list(kind)?
            .iter()
            .filter_map(|l| version_number(&l.version))
            .max()
            .unwrap_or(0);
        Ok(format!("v{}", n + 1))
    }

    /// Creates `kind/version` with `files` and the metadata (digests of the files are added),
    /// atomically: everything is written and fsynced in a temporary directory that is then
    /// renamed into place. Versions are immutable: an existing one is an error.
    pub fn create_version(&self, mut meta: ModelMeta, files: &[(&str, Vec<u8>)]) -> Result<PathBuf, ModelError> {
        check_kind(&meta.kind)?;
        if !valid_version_name(&meta.version) {
            return Err(ModelError::BadVersionName(meta.version.clone()));
        }
        let kind_dir = self.dir.join(&meta.kind);
        let target = kind_dir.join(&meta.version);
        if target.exists() {
            return Err(ModelError::Exists {
                kind: meta.kind.clone(),
                version: meta.version.clone(),
            });
        }
        std::fs::create_dir_all(&kind_dir).map_err(io(&kind_dir))?;
        let tmp = kind_dir.join(format!(".tmp-{}-{}", meta.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        for (name, content) in files {
            meta.files.insert((*name).to_string(), Digest::of(content));
            write_file_synced(&tmp.join(name), content)?;
        }
        let text = serde_json::to_vec_pretty(&meta).map_err(|e| ModelError::BadMetadata {
            path: tmp.join(METADATA_FILE),
            message: e.to_string(),
        })?;
        write_file_synced(&tmp.join(METADATA_FILE), &text)?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        sync_dir(&kind_dir)?;
        Ok(target)
    }

    /// Promoted versions of `kind`, oldest first.
    pub fn history(&self, kind: &str) -> Result<Vec<String>, ModelError> {
        let path = self.dir.join(kind).join("history");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(ModelError::Io { path, error }),
        }
    }

    /// Makes `version` the one served for `kind`. The version must load and validate (a broken
    /// model is never promoted). `latest` is replaced atomically; the history records it.
    pub fn promote(&self, kind: &str, version: &str) -> Result<ModelMeta, ModelError> {
        let (meta, _) = self.load(kind, version)?;
        let mut history = self.history(kind)?;
        if let Some(current) = self.latest_version(kind)? {
            if history.last() != Some(&current) {
                history.push(current); // latest set by hand: keep it reachable by rollback
            }
        }
        if history.last().map(String::as_str) != Some(version) {
            history.push(version.to_string());
        }
        self.write_pointers(kind, version, &history)?;
        Ok(meta)
    }

    /// Serves the version promoted before the current one again. Returns (from, to).
    pub fn rollback(&self, kind: &str) -> Result<(String, String), ModelError> {
        check_kind(kind)?;
        let current = self.latest_version(kind)?.ok_or_else(|| ModelError::NoRollback {
            kind: kind.into(),
            message: "no version is promoted".into(),
        })?;
        let mut history = self.history(kind)?;
        while history.last() == Some(&current) {
            history.pop();
        }
        let previous = history.last().cloned().ok_or_else(|| ModelError::NoRollback {
            kind: kind.into(),
            message: format!("{current} is the only version ever promoted"),
        })?;
        self.load(kind, &previous).map_err(|e| ModelError::NoRollback {
            kind: kind.into(),
            message: format!("the previous version {previous} cannot be served: {e}"),
        })?;
        self.write_pointers(kind, &previous, &history)?;
        Ok((current, previous))
    }

    fn write_pointers(&self, kind: &str, version: &str, history: &[String]) -> Result<(), ModelError> {
        let dir = self.dir.join(kind);
        let mut h = history.join("\n");
        h.push('\n');
        write_atomic(&dir.join("history"), h.as_bytes())?;
        write_atomic(&dir.join("latest"), format!("{version}\n").as_bytes())
    }
}

fn write_file_synced(path: &Path, content: &[u8]) -> Result<(), ModelError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(content).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// `N` of a `v<N>` version name.
pub fn version_number(v: &str) -> Option<u64> {
    v.strip_prefix('v')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wf-models-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn empty_store_means_fallback() {
        let s = ModelStore::new(&tmp("empty"));
        assert!(s.servable("forecast").unwrap().is_none());
        assert!(s.describe_choice("forecast").starts_with("fallback"));
        assert!(s.list("forecast").unwrap().is_empty());
        assert_eq!(s.next_version("forecast").unwrap(), "v1");
        assert!(matches!(s.rollback("forecast"), Err(ModelError::NoRollback { .. })));
        assert!(matches!(s.list("weather"), Err(ModelError::UnknownKind(_))));
    }

    #[test]
    fn corrupted_or_unsupported_models_are_refused_with_a_reason() {
        let d = tmp("bad");
        std::fs::create_dir_all(d.join("forecast/v1")).unwrap();
        std::fs::write(d.join("forecast/latest"), "v1\n").unwrap();
        std::fs::write(d.join("forecast/v1/metadata.json"), "{not json").unwrap();
        let s = ModelStore::new(&d);
        assert!(matches!(s.servable("forecast"), Err(ModelError::BadMetadata { .. })));
        std::fs::write(
            d.join("forecast/v1/metadata.json"),
            r#"{"kind":"forecast","model_type":"quantum","version":"v1"}"#,
        )
        .unwrap();
        let e = s.servable("forecast").unwrap_err().to_string();
        assert!(e.contains("quantum"), "{e}");
        assert!(s.describe_choice("forecast").contains("refused"));
        std::fs::write(
            d.join("forecast/v1/metadata.json"),
            r#"{"kind":"forecast","model_type":"ridge-per-lead","version":"v1","features":["a"]}"#,
        )
        .unwrap();
        assert!(matches!(s.servable("forecast"), Err(ModelError::SchemaMismatch { .. })));
        std::fs::write(d.join("forecast/latest"), "../../etc\n").unwrap();
        assert!(matches!(s.servable("forecast"), Err(ModelError::BadVersionName(_))));
    }

    #[test]
    fn versions_are_created_atomically_and_never_overwritten() {
        let d = tmp("create");
        let s = ModelStore::new(&d);
        let meta = ModelMeta {
            kind: "anomaly".into(),
            model_type: "x".into(),
            version: "v1".into(),
            created_at: None,
            features: vec![],
            data: DataInfo::default(),
            hyperparameters: serde_json::Value::Null,
            crate_versions: crate_versions(),
            holdout: serde_json::Value::Null,
            files: BTreeMap::new(),
        };
        s.create_version(meta.clone(), &[("model.json", b"{}".to_vec())]).unwrap();
        let back = s.metadata("anomaly", "v1").unwrap();
        assert_eq!(back.files["model.json"], Digest::of(b"{}"));
        assert!(matches!(s.create_version(meta, &[]), Err(ModelError::Exists { .. })));
        assert_eq!(s.next_version("anomaly").unwrap(), "v2");
        let leftovers: Vec<_> = std::fs::read_dir(d.join("anomaly")).unwrap().filter_map(Result::ok).collect();
        assert_eq!(leftovers.len(), 1, "no temporary directory left behind");
        assert!(
            matches!(s.promote("anomaly", "v1"), Err(ModelError::Unsupported { .. })),
            "broken models are never promoted"
        );
    }
}
