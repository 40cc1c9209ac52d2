//! Hot reload: each worker's view of the model store, re-read at well-defined points.
//!
//! ```text
//!   operator, first record of a new epoch on this worker
//!        └─> ModelWatch::poll(now) ── less than reload_ms since the last look? ──> keep the model
//!                 └─> read <kind>/latest ── same content as last time? ──> keep the model
//!                          └─> changed: load + validate the named version
//!                                 ├─ ok      ──> serve it from this epoch on (logged)
//!                                 └─ refused ──> serve the statistical fallback (warning with the reason)
//! ```
//!
//! The operators call [`ModelWatch::poll`] only when they start releasing a new epoch, so every
//! record of one epoch on a worker is handled by one version, and each prediction names the
//! version that made it. Checking is cheap: one small file read at most every `reload_ms`;
//! a model is parsed only when `latest` changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Loaded, ModelStore};
use crate::anomaly::trained::AnomalyModel;
use crate::forecast::trained::LinearPerLead;

/// Where a dataflow takes its trained models from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSource {
    /// The store directory; `None` serves the statistical fallbacks only.
    pub dir: Option<PathBuf>,
    /// Least time between two reads of a `latest` pointer, ms (0: at every epoch).
    pub reload_ms: u64,
}

impl ModelSource {
    /// Statistical fallbacks only (no store).
    pub fn fallback_only() -> Self {
        ModelSource::default()
    }

    /// The store at `dir`, re-read at most every `reload_ms`.
    pub fn store(dir: impl Into<PathBuf>, reload_ms: u64) -> Self {
        ModelSource {
            dir: Some(dir.into()),
            reload_ms,
        }
    }
}

/// A model being served and the name predictions carry for it.
#[derive(Debug)]
pub struct Served<M> {
    /// `model_type/version`, e.g. `ridge-per-lead/v1`.
    pub name: String,
    /// The model.
    pub model: Arc<M>,
}

impl<M> Clone for Served<M> {
    fn clone(&self) -> Self {
        Served {
            name: self.name.clone(),
            model: self.model.clone(),
        }
    }
}

/// The models one worker serves during an epoch (`None`: the statistical fallback).
#[derive(Clone, Debug, Default)]
pub struct Serving {
    /// Trained forecaster.
    pub forecast: Option<Served<LinearPerLead>>,
    /// Trained anomaly model.
    pub anomaly: Option<Served<AnomalyModel>>,
}

/// A model type the store can serve.
pub trait ServableModel: Sized {
    /// Store kind: "forecast" or "anomaly".
    const KIND: &'static str;
    /// Takes the model out of a loaded one of this kind.
    fn from_loaded(l: Loaded) -> Option<Self>;
}

impl ServableModel for LinearPerLead {
    const KIND: &'static str = "forecast";
    fn from_loaded(l: Loaded) -> Option<Self> {
        match l {
            Loaded::Forecast(m) => Some(m),
            Loaded::Anomaly(_) => None,
        }
    }
}

impl ServableModel for AnomalyModel {
    const KIND: &'static str = "anomaly";
    fn from_loaded(l: Loaded) -> Option<Self> {
        match l {
            Loaded::Anomaly(m) => Some(m),
            Loaded::Forecast(_) => None,
        }
    }
}

/// One worker's watch on one kind of model (see the module docs).
#[derive(Debug)]
pub struct ModelWatch<M> {
    store: Option<ModelStore>,
    reload: Duration,
    last_check: Option<Instant>,
    /// Raw content of `latest` at the last look (`Some(None)`: absent).
    seen: Option<Option<String>>,
    current: Option<Served<M>>,
}

impl<M: ServableModel> ModelWatch<M> {
    /// A watch on `source` (nothing is read before the first [`poll`](Self::poll)).
    pub fn new(source: &ModelSource) -> Self {
        ModelWatch {
            store: source.dir.as_deref().map(ModelStore::new),
            reload: Duration::from_millis(source.reload_ms),
            last_check: None,
            seen: None,
            current: None,
        }
    }

    /// The model served now (`None`: the statistical fallback).
    pub fn current(&self) -> Option<&Served<M>> {
        self.current.as_ref()
    }

    /// Looks at the store if `reload_ms` has passed since the last look, switches to a newly
    /// promoted (or rolled-back) version, and returns what to serve. Never fails: a refused
    /// model is logged and the fallback serves until `latest` changes again.
    pub fn poll(&mut self, now: Instant) -> Option<&Served<M>> {
        let Some(store) = &self.store else { return None };
        if self.last_check.is_some_and(|t| now.saturating_duration_since(t) < self.reload) {
            return self.current.as_ref();
        }
        self.last_check = Some(now);
        let raw = match store.latest_raw(M::KIND) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(kind = M::KIND, error = %e, "cannot read the model store's latest pointer; keeping the current model");
                return self.current.as_ref();
            }
        };
        if self.seen.as_ref() == Some(&raw) {
            return self.current.as_ref();
        }
        let before = self.current.as_ref().map(|s| s.name.clone());
        self.current = match raw.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            None => None,
            Some(version) => match store.load(M::KIND, version) {
                Ok((meta, loaded)) => M::from_loaded(loaded).map(|m| Served {
                    name: meta.served_name(),
                    model: Arc::new(m),
                }),
                Err(e) => {
                    tracing::warn!(kind = M::KIND, %version, error = %e, "refusing the promoted model; serving the statistical fallback");
                    None
                }
            },
        };
        self.seen = Some(raw);
        let after = self.current.as_ref().map(|s| s.name.clone());
        if before != after {
            tracing::info!(kind = M::KIND, from = ?before, to = %after.as_deref().unwrap_or("statistical fallback"), "model switch");
        }
        self.current.as_ref()
    }
}

/// Remembers the epoch being released, so an operator can act once at the start of each one.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochGate {
    current: Option<u64>,
}

impl EpochGate {
    /// True when `epoch` differs from the previous call's (the first record of a new epoch).
    pub fn starts(&mut self, epoch: u64) -> bool {
        let new = self.current != Some(epoch);
        self.current = Some(epoch);
        new
    }
}
