//! The one way to read a run's outputs: [`FinishedRun`] refuses a run that is incomplete or
//! stale for the current graph, and reads an output by stage id and file name only after its
//! content hash matches the lock record. [`RunCache`] reads the store's other entries (earlier
//! runs) the same way, checked against their manifests. Reports, the Hub, `pipeline runs` and
//! the CLI read through these; no other code outside the engine opens the store (a tidy test
//! checks it).

use std::path::{Path, PathBuf};

use super::graph::Graph;
use super::lockfile::LockFile;
use super::store::{RunRecord, Store};

/// Why an output cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the run is not complete, so it cannot be read as one run ({} in {artifacts} stale: {}); run the pipeline first", stages.len(), stages.join(", "))]
    Stale { artifacts: PathBuf, stages: Vec<String> },
    #[error("{what} has no record of stage {stage}")]
    NoRecord { what: String, stage: String },
    #[error("{what}: stage {stage} wrote no file {file}")]
    NoOutput { what: String, stage: String, file: String },
    #[error("{what}: {path} is not in the store ({err}); was it removed by gc?")]
    Unreadable { what: String, path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Corrupt(Box<CorruptFile>),
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error(transparent)]
    Lock(#[from] super::lockfile::LockError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// An output whose bytes are not those its record names.
#[derive(Debug, thiserror::Error)]
#[error(
    "{stage}/{file} does not match the lock file {what} ({path}: blake3 {found}, recorded {recorded}); `pipeline run --verify` repairs it"
)]
pub struct CorruptFile {
    pub what: String,
    pub stage: String,
    pub file: String,
    pub path: PathBuf,
    pub found: String,
    pub recorded: String,
}

/// The outputs of one run, as a lock file records them.
pub struct FinishedRun {
    lock: LockFile,
    store: Store,
    /// How messages name the lock file (`artifacts/pipeline.lock`, a saved copy, ...).
    what: String,
}

impl FinishedRun {
    /// The current run of `graph` in `artifacts`: every stage fresh (by the quick check), or
    /// an error naming the stale ones.
    pub fn current(graph: &Graph, artifacts: &Path) -> Result<Self, ReadError> {
        // Freshness judged on the very lock file that is then read (a run may rewrite it).
        let lock = LockFile::load(artifacts)?;
        let rows = super::runner::status_of(graph, artifacts, &lock, false)?;
        let stale: Vec<String> = rows.iter().filter(|r| !r.fresh).map(|r| format!("{} ({})", r.stage, r.reason)).collect();
        if !stale.is_empty() {
            return Err(ReadError::Stale { artifacts: artifacts.to_owned(), stages: stale });
        }
        Ok(Self { lock, store: Store::open_read_only(artifacts)?, what: LockFile::path(artifacts).display().to_string() })
    }

    /// The run that `lock` (an earlier lock file, named `what` in messages) records, read from
    /// the store of `artifacts`; nothing is checked against the current config.
    pub fn recorded(artifacts: &Path, lock: LockFile, what: impl Into<String>) -> Result<Self, ReadError> {
        Ok(Self { lock, store: Store::open_read_only(artifacts)?, what: what.into() })
    }

    pub fn lock(&self) -> &LockFile {
        &self.lock
    }

    /// The record of `stage`.
    pub fn record(&self, stage: &str) -> Result<&RunRecord, ReadError> {
        self.lock.stages.get(stage).ok_or_else(|| ReadError::NoRecord { what: self.what.clone(), stage: stage.to_owned() })
    }

    /// The bytes of output `file` of `stage`, checked against the record's blake3.
    pub fn read(&self, stage: &str, file: &str) -> Result<Vec<u8>, ReadError> {
        Ok(self.located(stage, file)?.1)
    }

    /// Where output `file` of `stage` lies, and its bytes, checked against the record (for
    /// readers that hand the path on: an upload).
    pub fn located(&self, stage: &str, file: &str) -> Result<(PathBuf, Vec<u8>), ReadError> {
        let rec = self.record(stage)?;
        read_checked(&self.store, rec, stage, file, &self.what)
    }
}

fn recorded_hash<'a>(rec: &'a RunRecord, stage: &str, file: &str, what: &str) -> Result<&'a str, ReadError> {
    rec.outputs.get(file).map(|f| f.blake3.as_str()).ok_or_else(|| ReadError::NoOutput {
        what: what.to_owned(),
        stage: stage.to_owned(),
        file: file.to_owned(),
    })
}

fn read_checked(store: &Store, rec: &RunRecord, stage: &str, file: &str, what: &str) -> Result<(PathBuf, Vec<u8>), ReadError> {
    let want = recorded_hash(rec, stage, file, what)?;
    let path = store.entry_dir(&rec.fingerprint).join(file);
    let bytes = std::fs::read(&path).map_err(|err| ReadError::Unreadable { what: what.to_owned(), path: path.clone(), err })?;
    let found = blake3::hash(&bytes).to_hex().to_string();
    if found != want {
        return Err(ReadError::Corrupt(Box::new(CorruptFile {
            what: what.to_owned(),
            stage: stage.to_owned(),
            file: file.to_owned(),
            path,
            found,
            recorded: want.to_owned(),
        })));
    }
    Ok((path, bytes))
}

/// Every entry of the store (the run-cache: this run's and earlier ones), each read through
/// its manifest and checked by hash like a [`FinishedRun`]'s outputs.
pub struct RunCache {
    store: Store,
}

impl RunCache {
    pub fn open(artifacts: &Path) -> Result<Self, ReadError> {
        Ok(Self { store: Store::open_read_only(artifacts)? })
    }

    /// Every entry's record. Entries without a readable manifest, or whose manifest names
    /// another fingerprint than their folder, are left out (with a debug line).
    pub fn records(&self) -> Result<Vec<RunRecord>, ReadError> {
        let mut out = Vec::new();
        for fp in self.store.entries()? {
            match self.store.manifest(&fp) {
                Ok(Some(rec)) if rec.fingerprint == fp => out.push(rec),
                Ok(_) => tracing::debug!("store entry {fp}: no manifest of its own; left out"),
                Err(e) => tracing::debug!("store entry {fp}: {e}; left out"),
            }
        }
        Ok(out)
    }

    /// Output `file` of the entry `rec` (a record from [`Self::records`]), checked by hash;
    /// `stage` names it in messages.
    pub fn read(&self, rec: &RunRecord, stage: &str, file: &str) -> Result<Vec<u8>, ReadError> {
        let what = format!("the store entry {}", rec.fingerprint.get(..12).unwrap_or(&rec.fingerprint));
        Ok(read_checked(&self.store, rec, stage, file, &what)?.1)
    }
}
