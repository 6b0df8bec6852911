//! The pipeline engine: stage specs, the DAG, fingerprints, the artefact store, the lock file
//! and the runner. Nothing here knows what a stage computes (no candle, no MNIST).

pub mod filestate;
pub mod fingerprint;
pub mod graph;
pub mod lockfile;
pub mod runner;
pub mod spec;
pub mod status;
pub mod store;

use std::path::Path;

pub use graph::{DagFormat, Graph, GraphError};
pub use lockfile::{LockFile, RunLock};
pub use runner::{run, status, RunOptions, RunSummary};
pub use spec::{Cost, FileInput, InputRef, StageContext, StageKind, StageReport, StageSpec};
pub use status::StatusRow;
pub use store::{RunRecord, Store};

/// What `gc` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub entries_removed: usize,
    pub bytes_freed: u64,
}

/// Removes every store entry that the lock file does not reference, and scratch leftovers.
pub fn gc(artifacts: &Path, wait: bool) -> anyhow::Result<GcReport> {
    let _guard = RunLock::acquire(artifacts, wait, |holder| {
        tracing::warn!("waiting for another latentscope run{holder} that holds {}", artifacts.display());
    })?;
    let store = Store::open(artifacts)?;
    let lock = LockFile::load(artifacts)?;
    let keep: std::collections::BTreeSet<&str> = lock.stages.values().map(|r| r.fingerprint.as_str()).collect();
    let leftovers = LockFile::clean_leftovers(artifacts)? + store::remove_atomic_leftovers(&artifacts.join(filestate::FILE))?;
    let mut report = GcReport { bytes_freed: store.clean_scratch()? + leftovers, ..GcReport::default() };
    for fp in store.entries()? {
        if !keep.contains(fp.as_str()) {
            report.bytes_freed += store.remove(&fp)?;
            report.entries_removed += 1;
        }
    }
    Ok(report)
}
