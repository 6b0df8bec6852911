//! The pipeline engine of latentscope: stage specs, the DAG, fingerprints, the artefact store,
//! the lock file and the runner. It is its own crate so that the compiler enforces what
//! ARCHITECTURE.md promises: nothing here knows what a stage computes (no candle, no data, no
//! config types beyond the flat [`Params`] map).

pub mod executor;
pub mod filestate;
pub mod fingerprint;
pub mod finished;
pub mod graph;
pub mod inputs;
pub mod lockfile;
pub mod progress;
pub mod remove;
pub mod runner;
pub mod spec;
pub mod status;
pub mod store;

use std::path::Path;

/// The tool's version, recorded in every lock entry (shared by the whole workspace).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use executor::slurm::{SlurmExecutor, SlurmSettings};
pub use executor::{local::LocalExecutor, Executor};
pub use graph::{DagFormat, Graph, GraphError};
pub use lockfile::{LockFile, RunLock};
pub use runner::{run, run_on, status, RunOptions, RunSummary};
pub use spec::{Cost, FileInput, InputRef, Params, StageContext, StageKind, StageReport, StageSpec};
pub use status::{param_changes, ParamChange, StaleReason, StatusRow};
pub use store::{RunRecord, Store};

/// What `gc` removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub entries_removed: usize,
    pub bytes_freed: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Removes every store entry that the lock file does not reference, and scratch leftovers.
/// With `dry_run`, only counts them (and takes no lock). Refuses while the lock file has
/// unreadable records: their entries would look unreferenced.
pub fn gc(artifacts: &Path, wait: bool, dry_run: bool) -> anyhow::Result<GcReport> {
    let _guard = if dry_run {
        None
    } else {
        Some(RunLock::acquire(artifacts, wait, |holder| {
            tracing::warn!("waiting for another latentscope run{holder} that holds {}", artifacts.display());
        })?)
    };
    let store = if dry_run { Store::open_read_only(artifacts)? } else { Store::open(artifacts)? };
    let lock = LockFile::load(artifacts)?;
    if !lock.unreadable.is_empty() {
        let ids: Vec<&str> = lock.unreadable.keys().map(String::as_str).collect();
        anyhow::bail!(
            "{} has unreadable records ({}), so gc cannot tell which entries they use; run `pipeline run` first, \
             which rewrites them, then gc",
            LockFile::path(artifacts).display(),
            ids.join(", ")
        );
    }
    if !LockFile::path(artifacts).exists() && !store.entries()?.is_empty() {
        anyhow::bail!(
            "{} does not exist, so every store entry would look unreferenced; run `pipeline run` first (it restores \
             the lock file from the store), then gc",
            LockFile::path(artifacts).display()
        );
    }
    let keep: std::collections::BTreeSet<&str> = lock.stages.values().map(|r| r.fingerprint.as_str()).collect();
    let mut report = GcReport { dry_run, ..GcReport::default() };
    if !dry_run {
        let leftovers = LockFile::clean_leftovers(artifacts)? + store::remove_atomic_leftovers(&artifacts.join(filestate::FILE))?;
        report.bytes_freed = store.clean_scratch()? + leftovers;
    }
    for fp in store.entries()? {
        if !keep.contains(fp.as_str()) {
            report.bytes_freed += if dry_run { store::dir_size(&store.entry_dir(&fp)) } else { store.remove(&fp)? };
            report.entries_removed += 1;
        }
    }
    Ok(report)
}
