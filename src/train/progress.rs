//! Progress reporting for long training runs: an `indicatif` bar on a terminal, one line per
//! phase otherwise (logs and CI stay readable).
//!
//! ```text
//!   Progress::new(total, "forecast: replay") ──inc()──> [#####>----] 12k/26k  (terminal)
//!                                            └────────> "forecast: replay: 26115 records in 1.2 s" (not a terminal)
//! ```

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One phase's progress.
pub struct Progress {
    bar: ProgressBar,
    label: String,
    start: Instant,
    quiet: bool,
}

impl Progress {
    /// Starts a phase of `total` steps. `quiet` suppresses all output (library use, tests).
    pub fn new(total: u64, label: &str, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet || !terminal {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} ({elapsed})") {
                b.set_style(style.progress_chars("#>-"));
            }
            b.set_message(label.to_string());
            b
        };
        Progress {
            bar,
            label: label.to_string(),
            start: Instant::now(),
            quiet,
        }
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Ends the phase with a one-line summary (`what` = e.g. "26115 records").
    pub fn finish(self, what: &str) {
        self.bar.finish_and_clear();
        if !self.quiet {
            eprintln!("{}: {what} in {:.1} s", self.label, self.start.elapsed().as_secs_f64());
        }
    }
}
