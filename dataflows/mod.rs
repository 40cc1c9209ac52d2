//! The dataflow graphs, one per file. They wire operators from `src/` together; the runner
//! (`crate::runner`) builds them on every worker.

pub mod features;
pub mod inference;
pub mod monitoring;
