//! The versioned model store, read side.
//!
//! ```text
//!   models/<kind>/latest            one line: the version in use (switched atomically by rename)
//!   models/<kind>/<version>/metadata.json   {"kind", "model_type", "version", "features", ...}
//! ```
//!
//! The dataflow asks the store which model to serve for each kind. When there is no `latest`,
//! or the model it names cannot be served by this build, or its metadata is unreadable, the
//! statistical fallback serves instead and the reason is logged; predictions always name what
//! made them. (Training and the trained model types arrive with the models issue.)

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading the store.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Metadata is not valid.
    #[error("model metadata {path} is invalid: {message}")]
    BadMetadata { path: PathBuf, message: String },
    /// The model type is not one this build can serve.
    #[error("model {kind}/{version} has type {model_type:?}, which this build cannot serve")]
    Unsupported { kind: String, version: String, model_type: String },
}

/// Metadata every stored model has.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelMeta {
    /// "forecast" or "anomaly".
    pub kind: String,
    /// Implementation, e.g. "ridge-per-lead".
    pub model_type: String,
    /// Version directory name.
    pub version: String,
}

/// Model types this build serves (none yet beyond the built-in fallbacks).
const SERVABLE: &[&str] = &[];

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

    /// The version `latest` points to for `kind`, if any.
    pub fn latest_version(&self, kind: &str) -> Result<Option<String>, ModelError> {
        let path = self.dir.join(kind).join("latest");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|v| !v.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ModelError::Io { path, source }),
        }
    }

    /// Metadata of `kind/version`.
    pub fn metadata(&self, kind: &str, version: &str) -> Result<ModelMeta, ModelError> {
        let path = self.dir.join(kind).join(version).join("metadata.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
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

    /// The trained model to serve for `kind`: `Ok(None)` means no trained model is promoted.
    pub fn servable(&self, kind: &str) -> Result<Option<ModelMeta>, ModelError> {
        let Some(version) = self.latest_version(kind)? else {
            return Ok(None);
        };
        let meta = self.metadata(kind, &version)?;
        if !SERVABLE.contains(&meta.model_type.as_str()) {
            return Err(ModelError::Unsupported {
                kind: kind.into(),
                version,
                model_type: meta.model_type,
            });
        }
        Ok(Some(meta))
    }

    /// A one-line description of what will serve `kind`, logging why a stored model is refused.
    pub fn describe_choice(&self, kind: &str) -> String {
        match self.servable(kind) {
            Ok(Some(m)) => format!("{}/{}", m.model_type, m.version),
            Ok(None) => "fallback (no trained model promoted)".to_string(),
            Err(e) => {
                tracing::warn!(%kind, error = %e, "refusing stored model; serving the statistical fallback");
                "fallback (stored model refused)".to_string()
            }
        }
    }
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
    }
}
