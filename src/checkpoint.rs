//! Durable checkpoints: one file per worker per checkpoint, written atomically, validated on load.
//!
//! ```text
//!   <checkpoint.dir>/
//!     ckpt-<execution>-<epoch>/          one checkpoint: every epoch <= <epoch> of execution <execution>
//!       worker-<i>-of-<n>.json           worker i's part: input offsets, station states, output positions
//! ```
//!
//! A file is `HEADER\nBODY` with `HEADER = "weatherflow-checkpoint v1 len=<bytes> crc32=<hex>"`
//! over the JSON body. It is written to a temporary name, fsynced, renamed into place, and the
//! directory fsynced, so a crash leaves either the whole file or none. On load, a checkpoint is
//! *complete* when all `n` worker files exist, each passes its length and checksum, and they agree
//! on execution, epoch and `n`; the newest complete checkpoint wins and every corrupted or partial
//! one is reported and skipped. Garbage collection keeps the newest `retain` complete checkpoints
//! and removes a worker's older files only once a newer checkpoint is known complete, so a restore
//! never finds its checkpoint collected.
//!
//! The worker count is recorded, and every worker of a restarted cluster reads every file of the
//! checkpoint and keeps the stations that hash to it, so a restart may use any number of
//! processes and workers (rescale).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The epoch used for the checkpoint written when a run drains completely (every input read so
/// far is processed and acknowledged).
pub const FINAL_EPOCH: u64 = u64::MAX;

const MAGIC: &str = "weatherflow-checkpoint v1";

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Filesystem error.
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file is truncated, corrupted or not a checkpoint.
    #[error("checkpoint file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Serialising state failed.
    #[error("serialising checkpoint state: {0}")]
    Serialise(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lineage of a checkpoint directory: a random id created with the directory (by process 0,
/// before any output is produced) and kept in `<dir>/LINEAGE`. Output ids are scoped by it, so
/// outputs of an earlier lineage (a wiped checkpoint directory, i.e. a deliberate reprocessing)
/// are never mistaken for outputs of this one.
pub fn lineage(dir: &Path, create: bool) -> Result<String, CheckpointError> {
    let path = dir.join("LINEAGE");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CheckpointError::Io { path, source }),
    }
    if !create {
        return Err(CheckpointError::Invalid {
            path,
            reason: "missing (process 0 creates it at start)".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!(
        "{:016x}",
        crate::kafka::assign::station_hash(&format!("{nanos}-{}-{}", std::process::id(), dir.display()))
    );
    let tmp = dir.join(".LINEAGE.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(id.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(id)
}

/// Identity of a checkpoint: newer executions win, then newer epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId {
    /// Start count of the cluster (1 for the first run, +1 at every restart from a checkpoint).
    pub execution: u64,
    /// Every epoch up to and including this one is covered.
    pub epoch: u64,
}

impl CheckpointId {
    fn dir_name(&self) -> String {
        format!("ckpt-{:010}-{:020}", self.execution, self.epoch)
    }

    fn parse_dir(name: &str) -> Option<CheckpointId> {
        let rest = name.strip_prefix("ckpt-")?;
        let (e, p) = rest.split_once('-')?;
        Some(CheckpointId {
            execution: e.parse().ok()?,
            epoch: p.parse().ok()?,
        })
    }
}

/// One worker's part of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerCheckpoint {
    /// Which checkpoint.
    pub id: CheckpointId,
    /// Worker index.
    pub worker: usize,
    /// Workers in the cluster that wrote it.
    pub peers: usize,
    /// Wall-clock time of writing (RFC 3339).
    pub created_at: String,
    /// Input topic -> partition -> next offset to read, for the partitions this worker read.
    pub inputs: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Output topic -> partition -> offset from which records newer than this checkpoint may
    /// exist, for the output partitions this worker writes.
    pub outputs: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Operator name -> JSON array of `[station, state]` pairs.
    pub operators: BTreeMap<String, Box<RawValue>>,
}

fn file_name(worker: usize, peers: usize) -> String {
    format!("worker-{worker}-of-{peers}.json")
}

/// Writes `part` atomically under `dir`.
pub fn write(dir: &Path, part: &WorkerCheckpoint) -> Result<PathBuf, CheckpointError> {
    let cdir = dir.join(part.id.dir_name());
    std::fs::create_dir_all(&cdir).map_err(io(&cdir))?;
    let body = serde_json::to_vec(part).map_err(|e| CheckpointError::Serialise(e.to_string()))?;
    let header = format!("{MAGIC} len={} crc32={:08x}\n", body.len(), crc32fast::hash(&body));
    let path = cdir.join(file_name(part.worker, part.peers));
    let tmp = cdir.join(format!(".{}.tmp", file_name(part.worker, part.peers)));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(header.as_bytes()).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(&cdir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Reads and validates one worker file.
pub fn read_file(path: &Path) -> Result<WorkerCheckpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let invalid = |reason: String| CheckpointError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| invalid("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| invalid("header is not UTF-8".into()))?;
    let rest = header
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid(format!("unknown header {header:?}")))?;
    let mut len = None;
    let mut crc = None;
    for field in rest.split_whitespace() {
        if let Some(v) = field.strip_prefix("len=") {
            len = v.parse::<usize>().ok();
        } else if let Some(v) = field.strip_prefix("crc32=") {
            crc = u32::from_str_radix(v, 16).ok();
        }
    }
    let (len, crc) = len.zip(crc).ok_or_else(|| invalid(format!("header lacks len/crc32: {header:?}")))?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(invalid(format!(
            "body has {} bytes, header says {len} (partial write?)",
            body.len()
        )));
    }
    if crc32fast::hash(body) != crc {
        return Err(invalid("checksum mismatch (corrupted)".into()));
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("body does not parse: {e}")))
}

/// A complete checkpoint, loaded.
#[derive(Debug)]
pub struct Restored {
    /// Which checkpoint.
    pub id: CheckpointId,
    /// Workers that wrote it.
    pub peers: usize,
    /// All worker parts, in worker order.
    pub parts: Vec<WorkerCheckpoint>,
}

impl Restored {
    /// Next offsets of every partition of `topic` recorded by any worker.
    pub fn inputs(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.parts
            .iter()
            .filter_map(|p| p.inputs.get(topic))
            .flat_map(|m| m.iter().map(|(k, v)| (*k, *v)))
            .collect()
    }

    /// Scan-from offsets of every partition of output `topic`.
    pub fn outputs(&self, topic: &str) -> BTreeMap<i32, i64> {
        let mut out: BTreeMap<i32, i64> = BTreeMap::new();
        for (k, v) in self.parts.iter().filter_map(|p| p.outputs.get(topic)).flat_map(|m| m.iter()) {
            let e = out.entry(*k).or_insert(*v);
            *e = (*e).min(*v);
        }
        out
    }

    /// The states of operator `name` whose station `keep` accepts.
    pub fn states<S: DeserializeOwned>(&self, name: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, S)>, CheckpointError> {
        let mut out = Vec::new();
        for p in &self.parts {
            if let Some(raw) = p.operators.get(name) {
                let all: Vec<(String, S)> = serde_json::from_str(raw.get()).map_err(|e| CheckpointError::Invalid {
                    path: PathBuf::from(p.id.dir_name()),
                    reason: format!("operator {name} state of worker {}: {e}", p.worker),
                })?;
                out.extend(all.into_iter().filter(|(s, _)| keep(s)));
            }
        }
        Ok(out)
    }
}

fn checkpoint_dirs(dir: &Path) -> Vec<(CheckpointId, PathBuf)> {
    let mut v: Vec<(CheckpointId, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((CheckpointId::parse_dir(e.file_name().to_str()?)?, e.path())))
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v
}

/// Loads a checkpoint directory if it is complete; otherwise says why not.
fn load_complete(id: CheckpointId, path: &Path) -> Result<Restored, String> {
    let mut parts: Vec<WorkerCheckpoint> = Vec::new();
    let mut peers = None;
    let names: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("worker-") && n.ends_with(".json"))
        })
        .collect();
    for f in names {
        let part = read_file(&f).map_err(|e| e.to_string())?;
        if part.id != id {
            return Err(format!("{} belongs to {:?}", f.display(), part.id));
        }
        if *peers.get_or_insert(part.peers) != part.peers {
            return Err("worker files disagree on the worker count".into());
        }
        parts.push(part);
    }
    let peers = peers.ok_or("no worker files")?;
    parts.sort_by_key(|p| p.worker);
    parts.dedup_by_key(|p| p.worker);
    if parts.len() != peers || parts.iter().enumerate().any(|(i, p)| p.worker != i) {
        let have: Vec<usize> = parts.iter().map(|p| p.worker).collect();
        return Err(format!("incomplete: has workers {have:?} of {peers}"));
    }
    Ok(Restored { id, peers, parts })
}

/// The newest complete checkpoint under `dir`, if any. Incomplete or corrupted newer ones are
/// logged and skipped.
pub fn load_latest(dir: &Path) -> Option<Restored> {
    for (id, path) in checkpoint_dirs(dir) {
        match load_complete(id, &path) {
            Ok(r) => return Some(r),
            Err(why) => tracing::warn!(checkpoint = %path.display(), %why, "skipping checkpoint; trying an older one"),
        }
    }
    None
}

/// Cheap completeness check for garbage collection: every `worker-i-of-n.json` for `i < n` is
/// present (contents are validated only when restoring).
fn all_files_present(path: &Path) -> bool {
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    let Some(n) = names.iter().find_map(|n| {
        n.strip_prefix("worker-0-of-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|r| r.parse::<usize>().ok())
    }) else {
        return false;
    };
    (0..n).all(|i| names.contains(&file_name(i, n)))
}

/// Garbage collection by one worker: keeps the newest `retain` complete checkpoints, and deletes
/// this worker's files of every checkpoint older than the oldest kept complete one (removing
/// directories that become empty).
pub fn collect_garbage(dir: &Path, worker: usize, retain: usize) {
    let all = checkpoint_dirs(dir);
    let complete: Vec<CheckpointId> = all
        .iter()
        .filter(|(_, p)| all_files_present(p))
        .map(|(id, _)| *id)
        .take(retain.max(1))
        .collect();
    let Some(oldest_kept) = complete.last().copied() else { return };
    if complete.len() < retain.max(1) {
        return;
    }
    for (id, path) in all.iter().filter(|(id, _)| *id < oldest_kept) {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(&format!("worker-{worker}-of-")) || name.starts_with(&format!(".worker-{worker}-of-")) {
                    if let Err(err) = std::fs::remove_file(e.path()) {
                        tracing::warn!(checkpoint = ?id, error = %err, "could not remove old checkpoint file");
                    }
                }
            }
        }
        let _ = std::fs::remove_dir(path); // succeeds only once every worker removed its file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wf-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn part(id: CheckpointId, worker: usize, peers: usize) -> WorkerCheckpoint {
        let states: Vec<(String, u32)> = vec![(format!("S{worker}"), worker as u32)];
        WorkerCheckpoint {
            id,
            worker,
            peers,
            created_at: "now".into(),
            inputs: BTreeMap::from([("in".to_string(), BTreeMap::from([(worker as i32, 10 * worker as i64)]))]),
            outputs: BTreeMap::from([("out".to_string(), BTreeMap::from([(0, 5 + worker as i64)]))]),
            operators: BTreeMap::from([(
                "op".to_string(),
                RawValue::from_string(serde_json::to_string(&states).unwrap()).unwrap(),
            )]),
        }
    }

    #[test]
    fn newest_complete_checkpoint_wins_and_damaged_ones_are_skipped() {
        let d = tmp("latest");
        let old = CheckpointId { execution: 1, epoch: 100 };
        let new = CheckpointId { execution: 1, epoch: 200 };
        let newer = CheckpointId { execution: 2, epoch: 5 };
        for w in 0..2 {
            write(&d, &part(old, w, 2)).unwrap();
            write(&d, &part(new, w, 2)).unwrap();
        }
        write(&d, &part(newer, 0, 2)).unwrap(); // worker 1 never wrote: incomplete
        let r = load_latest(&d).unwrap();
        assert_eq!(r.id, new);
        assert_eq!(r.inputs("in"), BTreeMap::from([(0, 0), (1, 10)]));
        assert_eq!(r.outputs("out"), BTreeMap::from([(0, 5)]), "the lowest scan-from wins");
        let states: Vec<(String, u32)> = r.states("op", |s| s == "S1").unwrap();
        assert_eq!(states, vec![("S1".to_string(), 1)]);

        // Corrupt one file of `new`: a flipped byte, then a truncation. `old` is used instead.
        let f = d.join(new.dir_name()).join(file_name(1, 2));
        let mut bytes = std::fs::read(&f).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        std::fs::write(&f, &bytes).unwrap();
        assert!(matches!(read_file(&f), Err(CheckpointError::Invalid { .. })));
        assert_eq!(load_latest(&d).unwrap().id, old);
        std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_file(&f).unwrap_err().to_string().contains("partial"));
        assert_eq!(load_latest(&d).unwrap().id, old);
    }

    #[test]
    fn garbage_collection_keeps_what_a_restore_needs() {
        let d = tmp("gc");
        let ids: Vec<CheckpointId> = (1..=5)
            .map(|e| CheckpointId {
                execution: 1,
                epoch: e * 10,
            })
            .collect();
        for id in &ids {
            write(&d, &part(*id, 0, 2)).unwrap();
        }
        // Worker 1 lags: it wrote only the two oldest.
        write(&d, &part(ids[0], 1, 2)).unwrap();
        write(&d, &part(ids[1], 1, 2)).unwrap();
        collect_garbage(&d, 0, 2);
        // Only ids[0] and ids[1] are complete: nothing may be deleted that they need.
        assert_eq!(load_latest(&d).unwrap().id, ids[1]);
        assert!(d.join(ids[0].dir_name()).join(file_name(0, 2)).exists());
        // Worker 1 catches up; now the two newest are complete and older files go.
        for id in &ids[2..] {
            write(&d, &part(*id, 1, 2)).unwrap();
        }
        collect_garbage(&d, 0, 2);
        collect_garbage(&d, 1, 2);
        assert_eq!(load_latest(&d).unwrap().id, ids[4]);
        assert!(!d.join(ids[0].dir_name()).exists());
        assert!(!d.join(ids[2].dir_name()).exists());
        assert!(d.join(ids[3].dir_name()).exists());
    }
}
