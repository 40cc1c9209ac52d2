//! `weatherflow models list | show | promote | rollback`: command-line arguments (clap derive)
//! and their output.
//!
//! ```text
//!   argv ──clap──> ModelsCommand ──> ModelStore::{list, metadata + load, promote, rollback} ──> stdout
//! ```

use std::fmt::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{ModelError, ModelStore, KINDS};

/// `weatherflow models ...`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the stored versions of each kind (or of one), marking the promoted one.
    List(ListArgs),
    /// Show a version's metadata, whether this build can serve it, and its holdout metrics.
    Show(VersionArgs),
    /// Make VERSION the served model of KIND (atomic switch of `latest`; refused if unservable).
    Promote(VersionArgs),
    /// Serve the version promoted before the current one again.
    Rollback(KindArgs),
}

/// Store location.
#[derive(Debug, Args)]
pub struct StoreArg {
    /// Model store directory.
    #[arg(long, default_value = "models")]
    pub store: PathBuf,
}

/// `list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this kind (forecast or anomaly).
    pub kind: Option<String>,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `show`, `promote`
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// forecast or anomaly (or KIND/VERSION in one argument).
    pub kind: String,
    /// Version, e.g. v2 (show: default the promoted one).
    pub version: Option<String>,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `rollback`
#[derive(Debug, Args)]
pub struct KindArgs {
    /// forecast or anomaly.
    pub kind: String,
    #[command(flatten)]
    pub store: StoreArg,
}

fn split(kind: &str, version: &Option<String>) -> (String, Option<String>) {
    match (kind.split_once('/'), version) {
        (Some((k, v)), None) => (k.to_string(), Some(v.to_string())),
        _ => (kind.to_string(), version.clone()),
    }
}

/// Runs a `models` subcommand and returns what it prints.
pub fn run(cmd: &ModelsCommand) -> Result<String, ModelError> {
    let mut out = String::new();
    match cmd {
        ModelsCommand::List(a) => {
            let store = ModelStore::new(&a.store.store);
            let kinds: Vec<&str> = match &a.kind {
                Some(k) => vec![k.as_str()],
                None => KINDS.to_vec(),
            };
            for kind in kinds {
                let listed = store.list(kind)?;
                let _ = writeln!(out, "{kind}:");
                if listed.is_empty() {
                    let _ = writeln!(out, "  (no versions; the statistical fallback serves)");
                }
                for l in listed {
                    let mark = if l.latest { "*" } else { " " };
                    match l.meta {
                        Ok(m) => {
                            let created = m
                                .created_at
                                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                                .unwrap_or_else(|| "-".into());
                            let _ = writeln!(out, "{mark} {:<8} {:<22} created {created}", l.version, m.model_type);
                        }
                        Err(e) => {
                            let _ = writeln!(out, "{mark} {:<8} unreadable: {e}", l.version);
                        }
                    }
                }
            }
            let _ = writeln!(out, "(* = latest, served by the dataflow)");
        }
        ModelsCommand::Show(a) => {
            let store = ModelStore::new(&a.store.store);
            let (kind, version) = split(&a.kind, &a.version);
            let version = match version {
                Some(v) => v,
                None => store.latest_version(&kind)?.ok_or_else(|| ModelError::NoRollback {
                    kind: kind.clone(),
                    message: "no version is promoted; name one".into(),
                })?,
            };
            let meta = store.metadata(&kind, &version)?;
            let servable = match store.load(&kind, &version) {
                Ok(_) => "yes".to_string(),
                Err(e) => format!("NO: {e}"),
            };
            let latest = store.latest_version(&kind)?.as_deref() == Some(version.as_str());
            let _ = writeln!(
                out,
                "{kind}/{version}: {}{}",
                meta.served_name(),
                if latest { " (latest)" } else { "" }
            );
            let _ = writeln!(out, "servable by this build: {servable}");
            let _ = writeln!(out, "directory: {}", store.version_dir(&kind, &version).display());
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&meta).unwrap_or_default());
        }
        ModelsCommand::Promote(a) => {
            let store = ModelStore::new(&a.store.store);
            let (kind, version) = split(&a.kind, &a.version);
            let version = version.ok_or_else(|| ModelError::BadVersionName(String::new()))?;
            let before = store.latest_version(&kind)?;
            let meta = store.promote(&kind, &version)?;
            let _ = writeln!(
                out,
                "{kind}: latest is now {version} ({}); was {}",
                meta.served_name(),
                before.as_deref().unwrap_or("none")
            );
        }
        ModelsCommand::Rollback(a) => {
            let store = ModelStore::new(&a.store.store);
            let (from, to) = store.rollback(&a.kind)?;
            let _ = writeln!(out, "{}: rolled back from {from} to {to}", a.kind);
        }
    }
    Ok(out)
}
