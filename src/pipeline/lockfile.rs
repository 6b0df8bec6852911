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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    /// Format version of this file.
    pub version: u32,
    pub stages: BTreeMap<String, RunRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid lock file: {message}")]
    Invalid { path: PathBuf, message: String },
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

    pub fn load_file(path: &Path) -> Result<Self, LockError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LockError::Invalid { path: path.to_owned(), message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self { version: 1, stages: BTreeMap::new() }),
            Err(e) => Err(LockError::Io { path: path.to_owned(), source: e }),
        }
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
        std::fs::create_dir_all(artifacts).map_err(|source| LockError::Io { path: artifacts.to_owned(), source })?;
        let path = artifacts.join(RUN_LOCK);
        let err = |source| LockError::Io { path: path.clone(), source };
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
