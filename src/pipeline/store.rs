//! The content-addressed artefact store inside `--artifacts`.
//!
//! ```text
//! artifacts/
//!   .store/<fingerprint>/          one finished stage run: its files + .manifest.json
//!   .tmp/                          stage outputs being written; never read as results
//!   <stage-id> -> .store/<fp>      symlink to the entry the lock file names (the "view")
//!   pipeline.lock                  see lockfile.rs
//! ```
//! An entry becomes visible only by the rename of a complete folder (files and manifest
//! synced first), so a killed run leaves at most a folder under `.tmp/`, which the next run
//! removes. Entries are never modified after the rename.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::fingerprint::{hash_file, InputHashes};
use crate::config::Params;

pub const MANIFEST: &str = ".manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("stage {stage} did not write its declared output {file}")]
    MissingOutput { stage: String, file: String },
    #[error("stage {stage} wrote {file}, which it does not declare as an output")]
    UndeclaredOutput { stage: String, file: String },
    #[error("{path}: bad manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("{path} exists and is not a link into the store; move it away so the view can be written")]
    ViewBlocked { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// One output file as recorded in a manifest and in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub size: u64,
    pub blake3: String,
    /// Modification time (ns since the epoch) when committed: the quick freshness check.
    pub mtime_ns: u128,
}

/// Everything known about one finished stage run. Stored as the entry's manifest and copied
/// into the lock file under the stage id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: String,
    pub version: u32,
    pub fingerprint: String,
    pub params: Params,
    pub inputs: InputHashes,
    pub outputs: BTreeMap<String, FileRecord>,
    pub wall_time_s: f64,
    pub device: Option<String>,
    pub tool_version: String,
    /// Seconds since the epoch when the run finished.
    pub finished_at: u64,
}

/// The result of checking an entry's files against its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The entry folder or manifest is gone.
    Missing,
    /// This output file is missing or differs from the manifest.
    Corrupt(String),
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in [root.join(".store"), root.join(".tmp")] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(Self { root: root.to_owned() })
    }

    /// Opens without creating anything (for read-only commands on a fresh checkout).
    pub fn open_read_only(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, fingerprint: &str) -> PathBuf {
        self.root.join(".store").join(fingerprint)
    }

    pub fn view_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// Reads the manifest of an entry, if the entry exists.
    pub fn manifest(&self, fingerprint: &str) -> Result<Option<RunRecord>, StoreError> {
        let path = self.entry_dir(fingerprint).join(MANIFEST);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::BadManifest { path, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Checks an entry's files: size and mtime, and with `verify` the blake3 of the content.
    pub fn check(&self, record: &RunRecord, verify: bool) -> Health {
        let dir = self.entry_dir(&record.fingerprint);
        if !dir.join(MANIFEST).is_file() {
            return Health::Missing;
        }
        for (name, want) in &record.outputs {
            let path = dir.join(name);
            let ok = match fs::metadata(&path) {
                Ok(meta) => {
                    meta.len() == want.size
                        && mtime_ns(&meta) == Some(want.mtime_ns)
                        && (!verify || hash_file(&path).is_ok_and(|h| h == want.blake3))
                }
                Err(_) => false,
            };
            if !ok {
                return Health::Corrupt(name.clone());
            }
        }
        Health::Ok
    }

    /// A fresh, empty folder under `.tmp/` for a stage to write into.
    pub fn scratch(&self, stage: &str) -> Result<PathBuf, StoreError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join(".tmp").join(format!("{stage}.{}.{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Hashes the outputs in `scratch`, writes the manifest and moves the folder into the
    /// store under the record's fingerprint. `record.outputs` is filled in here. When an entry
    /// with that fingerprint exists already, `replace` decides which one stays.
    pub fn commit(
        &self,
        stage: &str,
        scratch: &Path,
        declared: &[String],
        mut record: RunRecord,
        replace: bool,
    ) -> Result<RunRecord, StoreError> {
        for entry in fs::read_dir(scratch).map_err(io(scratch))? {
            let name = entry.map_err(io(scratch))?.file_name().to_string_lossy().into_owned();
            if !declared.contains(&name) {
                return Err(StoreError::UndeclaredOutput { stage: stage.into(), file: name });
            }
        }
        record.outputs.clear();
        for name in declared {
            let path = scratch.join(name);
            let file = fs::File::open(&path).map_err(|_| StoreError::MissingOutput { stage: stage.into(), file: name.clone() })?;
            file.sync_all().map_err(io(&path))?;
            let meta = file.metadata().map_err(io(&path))?;
            record.outputs.insert(
                name.clone(),
                FileRecord { size: meta.len(), blake3: hash_file(&path).map_err(io(&path))?, mtime_ns: mtime_ns(&meta).unwrap_or(0) },
            );
        }
        let manifest = scratch.join(MANIFEST);
        write_synced(&manifest, serde_json::to_string_pretty(&record).expect("record serialises").as_bytes())?;
        let dest = self.entry_dir(&record.fingerprint);
        if dest.join(MANIFEST).is_file() {
            if !replace {
                // The same fingerprint was committed meanwhile (an identical stage): keep it.
                let existing = self.manifest(&record.fingerprint)?;
                if let Some(existing) = existing.filter(|e| self.check(e, false) == Health::Ok) {
                    let _ = fs::remove_dir_all(scratch);
                    return Ok(existing);
                }
            }
            // A forced re-run replaces the entry; move the old one aside first.
            let old = self.root.join(".tmp").join(format!("old-{}.{}", record.fingerprint, std::process::id()));
            fs::rename(&dest, &old).map_err(io(&dest))?;
            let _ = fs::remove_dir_all(&old);
        } else if dest.exists() {
            fs::remove_dir_all(&dest).map_err(io(&dest))?;
        }
        fs::rename(scratch, &dest).map_err(io(&dest))?;
        // The rename changed nothing in the files, so their mtimes still match the manifest.
        sync_dir(&self.root.join(".store"));
        Ok(record)
    }

    /// Points `artifacts/<stage>` at the entry `fingerprint` (atomic symlink swap).
    pub fn set_view(&self, stage: &str, fingerprint: &str) -> Result<(), StoreError> {
        let view = self.view_dir(stage);
        if let Ok(meta) = fs::symlink_metadata(&view) {
            if !meta.file_type().is_symlink() {
                return Err(StoreError::ViewBlocked { path: view });
            }
        }
        let target = Path::new(".store").join(fingerprint);
        let tmp = self.root.join(".tmp").join(format!("view-{stage}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        symlink_dir(&target, &tmp).map_err(io(&tmp))?;
        fs::rename(&tmp, &view).map_err(io(&view))?;
        Ok(())
    }

    /// Removes a stage's view link (the stage no longer exists or has no valid entry).
    pub fn clear_view(&self, stage: &str) {
        let view = self.view_dir(stage);
        if fs::symlink_metadata(&view).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = fs::remove_file(view);
        }
    }

    /// Empties `.tmp/` (leftovers of killed runs). Call only while holding the run lock.
    pub fn clean_scratch(&self) -> Result<u64, StoreError> {
        let tmp = self.root.join(".tmp");
        let mut freed = 0;
        for entry in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            freed += dir_size(&path);
            remove_any(&path).map_err(io(&path))?;
        }
        Ok(freed)
    }

    /// Every entry's fingerprint.
    pub fn entries(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(".store");
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    out.push(e.map_err(io(&dir))?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path: dir, source: e }),
        }
        out.sort();
        Ok(out)
    }

    /// Removes one entry and returns the bytes it held.
    pub fn remove(&self, fingerprint: &str) -> Result<u64, StoreError> {
        let dir = self.entry_dir(fingerprint);
        let size = dir_size(&dir);
        fs::remove_dir_all(&dir).map_err(io(&dir))?;
        Ok(size)
    }
}

pub fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
    meta.modified().ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_nanos())
}

/// Writes `bytes` to `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum()).unwrap_or(0)
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fp: &str) -> RunRecord {
        RunRecord {
            kind: "k".into(),
            version: 1,
            fingerprint: fp.into(),
            params: Params::new(),
            inputs: InputHashes::new(),
            outputs: BTreeMap::new(),
            wall_time_s: 0.0,
            device: None,
            tool_version: "t".into(),
            finished_at: 0,
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("latentscope-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn commit_check_and_view() {
        let root = tempdir("commit");
        let store = Store::open(&root).unwrap();
        let scratch = store.scratch("s").unwrap();
        fs::write(scratch.join("a.bin"), b"hello").unwrap();
        let rec = store.commit("s", &scratch, &["a.bin".into()], record("fp1"), false).unwrap();
        assert_eq!(rec.outputs["a.bin"].size, 5);
        assert_eq!(rec.outputs["a.bin"].blake3, blake3::hash(b"hello").to_hex().to_string());
        assert!(!scratch.exists());
        assert_eq!(store.check(&rec, true), Health::Ok);
        store.set_view("s", "fp1").unwrap();
        assert_eq!(fs::read(root.join("s/a.bin")).unwrap(), b"hello");
        assert_eq!(store.manifest("fp1").unwrap().unwrap(), rec);

        // Same size, new content: the quick check sees the mtime, --verify the hash.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.join("s/a.bin"), b"HELLO").unwrap();
        assert_eq!(store.check(&rec, false), Health::Corrupt("a.bin".into()));
        assert!(store.remove("fp1").unwrap() > 0);
        assert_eq!(store.check(&rec, false), Health::Missing);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn commit_rejects_missing_and_undeclared_outputs() {
        let root = tempdir("reject");
        let store = Store::open(&root).unwrap();
        let scratch = store.scratch("s").unwrap();
        let e = store.commit("s", &scratch, &["a".into()], record("x"), false).unwrap_err();
        assert!(e.to_string().contains("did not write its declared output a"), "{e}");
        fs::write(scratch.join("a"), b"1").unwrap();
        fs::write(scratch.join("b"), b"1").unwrap();
        let e = store.commit("s", &scratch, &["a".into()], record("x"), false).unwrap_err();
        assert!(e.to_string().contains("wrote b"), "{e}");
        assert!(store.entries().unwrap().is_empty());
        assert!(store.clean_scratch().unwrap() > 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn identical_commits_share_one_entry_unless_replaced() {
        let root = tempdir("twice");
        let store = Store::open(&root).unwrap();
        let put = |content: &[u8], replace| {
            let scratch = store.scratch("s").unwrap();
            fs::write(scratch.join("a"), content).unwrap();
            store.commit("s", &scratch, &["a".into()], record("fp"), replace).unwrap()
        };
        let first = put(b"one", false);
        assert_eq!(put(b"two", false), first);
        assert_eq!(fs::read(store.entry_dir("fp").join("a")).unwrap(), b"one");
        let replaced = put(b"three", true);
        assert_eq!(replaced.outputs["a"].size, 5);
        assert_eq!(fs::read(store.entry_dir("fp").join("a")).unwrap(), b"three");
        assert_eq!(store.check(&replaced, true), Health::Ok);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn view_refuses_to_replace_a_real_folder() {
        let root = tempdir("view");
        let store = Store::open(&root).unwrap();
        fs::create_dir_all(root.join("s")).unwrap();
        assert!(matches!(store.set_view("s", "fp"), Err(StoreError::ViewBlocked { .. })));
        fs::remove_dir_all(root).unwrap();
    }
}
