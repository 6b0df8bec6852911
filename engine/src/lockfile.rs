//! `artifacts/pipeline.lock`: the record of the current run of every stage (JSON, written by
//! temporary file + rename), and the exclusive lock that keeps two runs from writing at once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::{write_atomic, RunRecord, StoreError};

pub const LOCK_FILE: &str = "pipeline.lock";
const RUN_LOCK: &str = ".run.lock";
/// The format version this code writes and the newest it reads.
pub const LOCK_VERSION: u32 = 1;
/// What every message about a damaged lock file tells the user.
pub const SAFE_TO_DELETE: &str = "deleting pipeline.lock is safe: the next run restores every stage it can from the store";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    /// Format version of this file.
    pub version: u32,
    pub stages: BTreeMap<String, RunRecord>,
    /// Records that did not parse: stage id -> why. Such a stage is stale ("lock record
    /// unreadable"); the record is dropped when the file is next written.
    #[serde(skip)]
    pub unreadable: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {}", super::store::describe_io(.err))]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a valid lock file: {message}; {SAFE_TO_DELETE}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path} has format version {found}, newer than this latentscope ({}) reads (version {LOCK_VERSION}): \
         use a newer latentscope, or delete the file (the next run restores every stage it can from the store)",
        crate::VERSION
    )]
    TooNew { path: PathBuf, found: u64 },
    #[error("another latentscope process{holder} is using {dir}; wait for it or run without --no-wait")]
    Busy { dir: PathBuf, holder: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LockFile {
    pub fn path(artifacts: &Path) -> PathBuf {
        artifacts.join(LOCK_FILE)
    }

    /// Reads the lock file; a missing one is an empty lock.
    pub fn load(artifacts: &Path) -> Result<Self, LockError> {
        Self::load_file(&Self::path(artifacts))
    }

    /// Reads a lock file. The file as a whole must be JSON of a known format version; each
    /// stage record is parsed on its own, so one damaged record makes only that stage stale.
    pub fn load_file(path: &Path) -> Result<Self, LockError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(e) => return Err(LockError::Io { path: path.to_owned(), err: e }),
        };
        let invalid = |message: String| LockError::Invalid { path: path.to_owned(), message };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64).ok_or_else(|| invalid("no format version".into()))?;
        if version > LOCK_VERSION as u64 {
            return Err(LockError::TooNew { path: path.to_owned(), found: version });
        }
        let records = value.get("stages").and_then(serde_json::Value::as_object).ok_or_else(|| invalid("no stages map".into()))?;
        let mut lock = Self::empty();
        for (id, record) in records {
            match serde_json::from_value::<RunRecord>(record.clone()) {
                Ok(rec) => {
                    lock.stages.insert(id.clone(), rec);
                }
                Err(e) => {
                    lock.unreadable.insert(id.clone(), e.to_string());
                }
            }
        }
        Ok(lock)
    }

    pub fn empty() -> Self {
        Self { version: LOCK_VERSION, stages: BTreeMap::new(), unreadable: BTreeMap::new() }
    }

    /// Removes the temporary files of lock writes that a killed process left behind.
    pub fn clean_leftovers(artifacts: &Path) -> Result<u64, LockError> {
        Ok(super::store::remove_atomic_leftovers(&Self::path(artifacts))?)
    }

    pub fn save(&self, artifacts: &Path) -> Result<(), LockError> {
        let mut text = serde_json::to_string_pretty(self).expect("lock serialises");
        text.push('\n');
        write_atomic(&Self::path(artifacts), text.as_bytes())?;
        Ok(())
    }
}

/// Exclusive right to write into an artefacts folder, held until dropped. It is an OS file
/// lock (flock), so the kernel releases it when the holder dies, even by SIGKILL.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock; when another process holds it, `on_wait` is called once and the call
    /// blocks until the lock is free, unless `wait` is false.
    pub fn acquire(artifacts: &Path, wait: bool, on_wait: impl FnOnce(&str)) -> Result<Self, LockError> {
        std::fs::create_dir_all(artifacts).map_err(|err| LockError::Io { path: artifacts.to_owned(), err })?;
        let path = artifacts.join(RUN_LOCK);
        let err = |err| LockError::Io { path: path.clone(), err };
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(super::store::StoreError::Symlink { target: std::fs::read_link(&path).ok(), path }.into());
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                if !wait {
                    return Err(LockError::Busy { dir: artifacts.to_owned(), holder });
                }
                on_wait(&holder);
                file.lock().map_err(err)?;
            }
            Err(TryLockError::Error(e)) => return Err(err(e)),
        }
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        write!(file, "{}", std::process::id()).map_err(err)?;
        Ok(Self { _file: file })
    }
}
