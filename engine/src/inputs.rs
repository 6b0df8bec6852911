//! What a stage actually read. Before a stage runs, every file it reads (upstream outputs and
//! files outside the store) is hashed in full, whatever the quick checks said; after it
//! finished, each file is looked at again. A stage whose inputs were not the bytes its
//! fingerprint names, or changed while it ran, is never committed: so a lock record's input
//! hashes are always the hashes of the bytes the stage read, under every executor (the local
//! one calls this around the stage, a Slurm job on its node).
//!
//! The check after the run compares each file's size, mtime, change time (ctime, which no
//! user command can set back) and inode with what they were before. For a file outside the
//! store (a local dataset, which its owner may edit at any time) any change fails the stage,
//! even one put back byte for byte. For a store file a change of metadata alone (a hard link
//! made while committing an upstream job's outputs) is allowed if the content hashes the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::fingerprint::{hash_file, InputHashes};
use super::spec::FileInput;
use super::store::{ctime_ns, inode, mtime_ns};

/// Why a stage's inputs cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("stage {stage}: cannot read input {key} ({path}): {err}")]
    Unreadable { stage: String, key: String, path: PathBuf, err: std::io::Error },
    #[error(
        "stage {stage}: input {key} ({path}) is not what the lock file records (blake3 {found}, recorded {recorded}): \
         the file was changed or damaged after it was written; `pipeline run --verify` re-hashes every artefact and \
         re-runs the stages whose outputs are damaged, then this one"
    )]
    NotRecorded { stage: String, key: String, path: PathBuf, found: String, recorded: String },
    #[error(
        "stage {stage}: input {key} ({path}) changed while the stage was reading it, so its outputs may mix two \
         versions of the file; nothing was committed: run again once nothing writes to it"
    )]
    ChangedDuringRun { stage: String, key: String, path: PathBuf },
}

/// The identity of a file's current bytes short of hashing them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: Option<u128>,
    ctime_ns: i128,
    inode: u64,
}

impl Stat {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self { size: meta.len(), mtime_ns: mtime_ns(&meta), ctime_ns: ctime_ns(&meta), inode: inode(&meta) })
    }
}

struct Watched {
    path: PathBuf,
    hash: String,
    stat: Stat,
    /// A file outside the store: any change during the run fails the stage.
    outside: bool,
}

/// Every input of one stage run, hashed when it started.
pub struct ReadInputs {
    stage: String,
    files: BTreeMap<String, Watched>,
}

impl ReadInputs {
    /// Hashes every input: `inputs` (key `stage/file` -> path) and the outside `files`.
    pub fn take(stage: &str, inputs: &BTreeMap<String, PathBuf>, files: &[FileInput]) -> Result<Self, InputError> {
        let outside = files.iter().map(|f| (f.key(), f.path.clone(), true));
        let watched = inputs.iter().map(|(k, p)| (k.clone(), p.clone(), false)).chain(outside);
        let mut out = BTreeMap::new();
        for (key, path, outside) in watched {
            let unreadable = |err| InputError::Unreadable { stage: stage.to_owned(), key: key.clone(), path: path.clone(), err };
            // The stat first: a write after it changes the ctime, which the check after the
            // run sees even if the hash below read the new bytes.
            let stat = Stat::of(&path).map_err(unreadable)?;
            let hash = hash_file(&path).map_err(unreadable)?;
            out.insert(key.clone(), Watched { path, hash, stat, outside });
        }
        Ok(Self { stage: stage.to_owned(), files: out })
    }

    /// The content hash of every input as the stage read it.
    pub fn hashes(&self) -> InputHashes {
        self.files.iter().map(|(k, w)| (k.clone(), w.hash.clone())).collect()
    }

    /// Fails if an input's bytes are not those `recorded` (the hashes the stage's fingerprint
    /// was computed from). Keys that `recorded` does not name are not checked here (an
    /// upstream stage still running in a chaining executor); the runner checks them at commit.
    pub fn check_recorded(&self, recorded: &InputHashes) -> Result<(), InputError> {
        for (key, w) in &self.files {
            if let Some(want) = recorded.get(key).filter(|want| **want != w.hash) {
                return Err(InputError::NotRecorded {
                    stage: self.stage.clone(),
                    key: key.clone(),
                    path: w.path.clone(),
                    found: w.hash.clone(),
                    recorded: want.clone(),
                });
            }
        }
        Ok(())
    }

    /// Fails if an input changed since [`Self::take`] (call it once the stage has finished).
    pub fn check_unchanged(&self) -> Result<(), InputError> {
        for (key, w) in &self.files {
            let changed = || InputError::ChangedDuringRun { stage: self.stage.clone(), key: key.clone(), path: w.path.clone() };
            let now = Stat::of(&w.path).map_err(|_| changed())?;
            if now == w.stat {
                continue;
            }
            if w.outside || hash_file(&w.path).map_or(true, |h| h != w.hash) {
                return Err(changed());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("latentscope-inputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_change_during_the_run_is_seen_even_when_put_back() {
        let d = dir("during");
        let (store_file, outside_file) = (d.join("latent"), d.join("labels.idx"));
        std::fs::write(&store_file, b"latent").unwrap();
        std::fs::write(&outside_file, b"labels").unwrap();
        let inputs = BTreeMap::from([("enc/latent".to_owned(), store_file.clone())]);
        let files = [FileInput { name: "labels.idx".into(), path: outside_file.clone() }];
        let read = ReadInputs::take("s", &inputs, &files).unwrap();
        read.check_unchanged().unwrap();
        assert_eq!(read.hashes()["enc/latent"], blake3::hash(b"latent").to_hex().to_string());

        // Outside the store: rewritten and put back with its old mtime, still refused.
        let mtime = std::fs::metadata(&outside_file).unwrap().modified().unwrap();
        std::fs::write(&outside_file, b"LABELS").unwrap();
        std::fs::write(&outside_file, b"labels").unwrap();
        std::fs::File::options().write(true).open(&outside_file).unwrap().set_modified(mtime).unwrap();
        let err = read.check_unchanged().unwrap_err().to_string();
        assert!(err.contains("file:labels.idx") && err.contains("changed while"), "{err}");

        // A store file whose metadata alone changed (a hard link) is fine; new bytes are not.
        let read = ReadInputs::take("s", &inputs, &[]).unwrap();
        std::fs::hard_link(&store_file, d.join("link")).unwrap();
        read.check_unchanged().unwrap();
        std::fs::write(&store_file, b"LATENT").unwrap();
        assert!(matches!(read.check_unchanged(), Err(InputError::ChangedDuringRun { .. })));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bytes_other_than_the_recorded_ones_are_refused_before_the_run() {
        let d = dir("recorded");
        let file = d.join("latent");
        std::fs::write(&file, b"flipped").unwrap();
        let inputs = BTreeMap::from([("enc/latent".to_owned(), file)]);
        let read = ReadInputs::take("kmeans", &inputs, &[]).unwrap();
        let good = blake3::hash(b"original").to_hex().to_string();
        let err = read.check_recorded(&InputHashes::from([("enc/latent".to_owned(), good)])).unwrap_err().to_string();
        assert!(err.contains("stage kmeans: input enc/latent") && err.contains("--verify"), "{err}");
        // A key the record does not name yet (an upstream still in flight) is left to the commit.
        read.check_recorded(&InputHashes::new()).unwrap();
        std::fs::remove_dir_all(d).unwrap();
    }
}
