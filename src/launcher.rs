//! The local launcher: `weatherflow run` without `--process` starts every process of the cluster
//! on this machine as a child, forwards Ctrl-C/SIGTERM to all of them, and stops them all when
//! one fails, so a dead member never leaves the others hung.
//!
//! ```text
//!   weatherflow run ──spawn──> weatherflow run --process 0 ─┐
//!        │          ──spawn──> weatherflow run --process 1 ─┤  (timely cluster over TCP)
//!        │                                                  │
//!        ├─ SIGINT/SIGTERM ──> SIGTERM to every child (they drain and exit 0)
//!        └─ child exits non-zero ──> SIGTERM to the rest, SIGKILL after the grace period, exit 1
//! ```

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A child could not be started.
    #[error("starting process {index}: {source}")]
    Spawn { index: usize, source: std::io::Error },
    /// A child failed.
    #[error("process {index} failed ({status}); stopped the others")]
    ChildFailed { index: usize, status: ExitStatus },
}

/// How long children get to drain after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(20);

/// Starts `processes` children running `exe run <args> --process i` and supervises them.
pub fn launch(exe: &Path, args: &[String], processes: usize, shutdown: Arc<AtomicBool>) -> Result<(), LaunchError> {
    let mut children: Vec<(usize, Child)> = Vec::new();
    for index in 0..processes {
        let mut cmd = Command::new(exe);
        cmd.arg("run").args(args).arg("--process").arg(index.to_string());
        match cmd.spawn() {
            Ok(c) => children.push((index, c)),
            Err(source) => {
                terminate(&mut children);
                return Err(LaunchError::Spawn { index, source });
            }
        }
    }
    tracing::info!(processes, "launched local cluster");
    let mut stopping: Option<Instant> = None;
    let mut failure: Option<LaunchError> = None;
    loop {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (index, _) = children.remove(i);
                    if status.success() {
                        tracing::info!(process = index, "process exited");
                    } else if failure.is_none() && stopping.is_none() {
                        tracing::error!(process = index, %status, "process failed; stopping the cluster");
                        failure = Some(LaunchError::ChildFailed { index, status });
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting on child");
                    i += 1;
                }
            }
        }
        if children.is_empty() {
            break;
        }
        if stopping.is_none() && (shutdown.load(Ordering::Relaxed) || failure.is_some()) {
            stopping = Some(Instant::now());
            signal_all(&children, libc::SIGTERM);
        }
        if let Some(t) = stopping {
            if t.elapsed() > GRACE {
                tracing::error!("processes did not stop within {GRACE:?}; killing them");
                terminate(&mut children);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

fn signal_all(children: &[(usize, Child)], sig: i32) {
    for (_, c) in children {
        // SAFETY: kill(2) with a child's pid and a valid signal number has no memory effects.
        unsafe {
            libc::kill(c.id() as libc::pid_t, sig);
        }
    }
}

fn terminate(children: &mut Vec<(usize, Child)>) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    children.clear();
}
