//! The local launcher: `weatherflow run` without `--process` starts every process of the cluster
//! on this machine as a child, forwards Ctrl-C/SIGTERM to all of them, and stops them all when
//! one fails, so a dead member never leaves the others hung.
//!
//! ```text
//!   weatherflow run ──spawn──> weatherflow run --process 0 ─┐
//!        │          ──spawn──> weatherflow run --process 1 ─┤  (timely cluster over TCP)
//!        │                                                  │
//!        ├─ SIGINT/SIGTERM ──> SIGTERM to every child (they drain and exit 0)
//!        └─ child exits non-zero ──> SIGTERM to the rest, SIGKILL after the grace period, then
//!             on_failure = "stop":    exit 1
//!             on_failure = "restart": start every process again (they resume from the last
//!                                     complete checkpoint), at most max_restarts times
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
    /// The restart budget is spent.
    #[error("gave up after {restarts} restarts; the last failure: process {index} ({status})")]
    TooManyRestarts { restarts: u32, index: usize, status: ExitStatus },
}

/// What to do when a process fails.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Restart the cluster (else stop).
    pub restart: bool,
    /// Restart budget.
    pub max_restarts: u32,
}

/// Runs the cluster under `policy`: restarts it after failures while allowed.
pub fn supervise(exe: &Path, args: &[String], processes: usize, shutdown: Arc<AtomicBool>, policy: Policy) -> Result<(), LaunchError> {
    let mut restarts = 0u32;
    loop {
        match launch(exe, args, processes, shutdown.clone()) {
            Err(LaunchError::ChildFailed { index, status }) if policy.restart && !shutdown.load(Ordering::Relaxed) => {
                if restarts >= policy.max_restarts {
                    return Err(LaunchError::TooManyRestarts { restarts, index, status });
                }
                restarts += 1;
                tracing::warn!(process = index, %status, restarts, "process failed; restarting the cluster from the last checkpoint");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// How long children get to drain after Ctrl-C/SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(20);
/// How long the survivors of a failed process get before SIGKILL: the cluster is broken anyway,
/// and everything they did since the last checkpoint is redone after a restart.
pub const FAILURE_GRACE: Duration = Duration::from_secs(3);

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
            let grace = if failure.is_some() { FAILURE_GRACE } else { GRACE };
            if t.elapsed() > grace {
                tracing::warn!("processes did not stop within {grace:?}; killing them");
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
