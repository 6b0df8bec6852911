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
use super::remove::remove_within;
use super::spec::Params;

pub const MANIFEST: &str = ".manifest.json";

/// A file modified this recently is never trusted by its mtime: a write in the same timestamp
/// tick after a hash would go unnoticed (git's "racily clean" problem).
pub const RACY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The io error is part of the message and deliberately not a `source`, so that a
    /// `{:#}` chain does not print it twice.
    #[error("{path}: {}", describe_io(.err))]
    Io { path: PathBuf, err: std::io::Error },
    #[error("stage {stage} did not write its declared output {file}")]
    MissingOutput { stage: String, file: String },
    #[error("stage {stage} wrote {file}, which it does not declare as an output")]
    UndeclaredOutput { stage: String, file: String },
    #[error("{path}: bad manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("{path} exists and is not a link into the store; move it away so the view can be written")]
    ViewBlocked { path: PathBuf },
    #[error(
        "{path} is a symbolic link{}; the store keeps .store and .tmp inside the artefacts folder and deletes \
         files under them, so it refuses to follow the link: remove it (or point --artifacts at the real folder)",
        target.as_ref().map(|t| format!(" to {}", t.display())).unwrap_or_default()
    )]
    Symlink { path: PathBuf, target: Option<PathBuf> },
    #[error("{path} is not a folder; the store needs it to be one")]
    NotAFolder { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |err| StoreError::Io { path: path.to_owned(), err }
}

/// An io error's text, with a hint where the cause is a known trap.
pub fn describe_io(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::CrossesDevices {
        format!(
            "{err}; the artefacts folder (with its .tmp and .store) must be on one filesystem, \
             since results enter the store by rename"
        )
    } else {
        err.to_string()
    }
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
    /// What ran it: `local` or `slurm` (absent in records older than the executors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// The host it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The scheduler's job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// The result of checking an entry's files against its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The content is intact (checked by hash) but these files have new mtimes (a copy
    /// without `-p`, a `touch`): name -> the mtime to record so the next quick check passes.
    Touched(BTreeMap<String, u128>),
    /// The entry folder or manifest is gone.
    Missing,
    /// This output file is missing or its content differs from the manifest.
    Corrupt(String),
}

impl Health {
    /// Intact content, whatever the mtimes.
    pub fn is_intact(&self) -> bool {
        matches!(self, Health::Ok | Health::Touched(_))
    }
}

/// Where a stage's view (`artifacts/<stage>`) points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// At the entry it should point at.
    Ok,
    Missing,
    /// At something else (this link target).
    Elsewhere(PathBuf),
    /// A real file or folder stands where the link should be.
    Blocked,
}

pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let store = Self::open_read_only(root)?;
        for dir in [root.join(".store"), root.join(".tmp")] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(store)
    }

    /// Opens without creating anything (for read-only commands on a fresh checkout). Both
    /// ways of opening refuse a `.store` or `.tmp` that is a symbolic link: the store deletes
    /// under them and must never reach outside the artefacts folder.
    pub fn open_read_only(root: &Path) -> Result<Self, StoreError> {
        for dir in [root.join(".store"), root.join(".tmp")] {
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(StoreError::Symlink { target: fs::read_link(&dir).ok(), path: dir });
                }
                Ok(meta) if !meta.is_dir() => return Err(StoreError::NotAFolder { path: dir }),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { path: dir, err: e }),
            }
        }
        Ok(Self { root: root.to_owned() })
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
            Err(e) => Err(StoreError::Io { path, err: e }),
        }
    }

    /// Checks an entry's files against `record`. The quick check compares size and mtime; a
    /// file whose size matches but whose mtime does not is re-hashed (as git and DVC do), and
    /// with `verify` every file is. Only a hash that really differs is `Corrupt`; matching
    /// content under new mtimes is `Touched`. An entry that is a symbolic link is `Missing`.
    pub fn check(&self, record: &RunRecord, verify: bool) -> Health {
        let dir = self.entry_dir(&record.fingerprint);
        if fs::symlink_metadata(&dir).map_or(true, |m| !m.is_dir()) || !dir.join(MANIFEST).is_file() {
            return Health::Missing;
        }
        let mut touched = BTreeMap::new();
        for (name, want) in &record.outputs {
            let path = dir.join(name);
            let Ok(meta) = fs::symlink_metadata(&path) else { return Health::Corrupt(name.clone()) };
            if !meta.is_file() || meta.len() != want.size {
                return Health::Corrupt(name.clone());
            }
            let mtime = mtime_ns(&meta).unwrap_or(0);
            if mtime == want.mtime_ns && !verify {
                continue;
            }
            if !hash_file(&path).is_ok_and(|h| h == want.blake3) {
                return Health::Corrupt(name.clone());
            }
            // Record a new mtime only if the file did not change while it was hashed and is
            // not so recent that a write in the same timestamp tick could follow unnoticed.
            let settled = fs::symlink_metadata(&path).ok().is_some_and(|after| {
                mtime_ns(&after) == Some(mtime)
                    && after
                        .modified()
                        .ok()
                        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
                        .is_some_and(|age| age >= RACY)
            });
            if mtime != want.mtime_ns && settled {
                touched.insert(name.clone(), mtime);
            }
        }
        if touched.is_empty() {
            Health::Ok
        } else {
            Health::Touched(touched)
        }
    }

    /// Where the view of `stage` points, compared with the entry `fingerprint`.
    pub fn view(&self, stage: &str, fingerprint: &str) -> View {
        let path = self.view_dir(stage);
        match fs::symlink_metadata(&path) {
            Err(_) => View::Missing,
            Ok(meta) if !meta.file_type().is_symlink() => View::Blocked,
            Ok(_) => match fs::read_link(&path) {
                Ok(target) if target == Path::new(".store").join(fingerprint) => View::Ok,
                Ok(target) => View::Elsewhere(target),
                Err(_) => View::Missing,
            },
        }
    }

    /// A fresh, empty folder under `.tmp/` for a stage to write into.
    pub fn scratch(&self, stage: &str) -> Result<PathBuf, StoreError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join(".tmp").join(format!("{stage}.{}.{n}", std::process::id()));
        remove_within(&self.root, &dir).map_err(io(&dir))?;
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Hashes the outputs in `scratch`, writes the manifest and moves the folder into the
    /// store under the record's fingerprint. `record.outputs` is filled in here. When an entry
    /// with that fingerprint exists already, it stays only if `replace` is false and its files
    /// match its manifest by hash (never by mtime alone); otherwise the new folder replaces it
    /// in one atomic exchange, so the entry is never absent or half-written.
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
        let existing = fs::symlink_metadata(&dest).ok();
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            if !replace {
                // The same fingerprint was committed before (an identical stage, or a run-cache
                // entry): keep it if its content is intact, checked by hash.
                let same_outputs = |e: &RunRecord| {
                    e.fingerprint == record.fingerprint
                        && e.outputs.len() == declared.len()
                        && declared.iter().all(|d| e.outputs.contains_key(d))
                };
                let intact =
                    self.manifest(&record.fingerprint).ok().flatten().filter(|e| same_outputs(e) && self.check(e, true) == Health::Ok);
                if let Some(intact) = intact {
                    let _ = remove_within(&self.root, scratch);
                    return Ok(intact);
                }
            }
            // Swap the new folder in: the old entry ends up at `scratch`, then goes.
            exchange(scratch, &dest).map_err(io(&dest))?;
            let _ = remove_within(&self.root, scratch);
        } else {
            if existing.is_some() {
                // A file or link where an entry belongs: remove it, never what it points at.
                remove_within(&self.root, &dest).map_err(io(&dest))?;
            }
            fs::rename(scratch, &dest).map_err(io(&dest))?;
        }
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
        let _ = remove_within(&self.root, &tmp);
        symlink_dir(&target, &tmp).map_err(io(&tmp))?;
        fs::rename(&tmp, &view).map_err(io(&view))?;
        Ok(())
    }

    /// Removes a stage's view link (the stage no longer exists or has no valid entry).
    pub fn clear_view(&self, stage: &str) {
        let view = self.view_dir(stage);
        if fs::symlink_metadata(&view).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = remove_within(&self.root, &view);
        }
    }

    /// Empties `.tmp/` (leftovers of killed runs). Call only while holding the run lock.
    pub fn clean_scratch(&self) -> Result<u64, StoreError> {
        let tmp = self.root.join(".tmp");
        let mut freed = 0;
        for entry in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            freed += dir_size(&path);
            remove_within(&self.root, &path).map_err(io(&path))?;
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
            Err(e) => return Err(StoreError::Io { path: dir, err: e }),
        }
        out.sort();
        Ok(out)
    }

    /// Removes one entry and returns the bytes it held. An entry that is a symbolic link
    /// loses the link only, never what it points at.
    pub fn remove(&self, fingerprint: &str) -> Result<u64, StoreError> {
        let dir = self.entry_dir(fingerprint);
        let size = dir_size(&dir);
        remove_within(&self.root, &dir).map_err(io(&dir))?;
        Ok(size)
    }
}

pub fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
    meta.modified().ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_nanos())
}

/// The change time in ns (set by the kernel on every write, rename or link; no user command
/// sets it back); 0 where the OS does not tell.
pub fn ctime_ns(meta: &fs::Metadata) -> i128 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// The inode number; 0 where the OS does not tell.
pub fn inode(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::ino(meta)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// Writes `bytes` to `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (`.<name>.tmp.<pid>`),
/// synced, then renamed. A process killed in between leaves the temporary file, which
/// [`remove_atomic_leftovers`] removes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_file_name(format!("{}{}", atomic_prefix(path), std::process::id()));
    // A failed write (a full disk) leaves nothing half-written behind.
    let written = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if let Err(e) = written {
        let _ = remove_within(path.parent().unwrap_or(Path::new("")), &tmp);
        return Err(e);
    }
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// `.pipeline.lock.tmp.` for `pipeline.lock`; `.file-hashes.json.tmp.` for `.file-hashes.json`.
fn atomic_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dot = if name.starts_with('.') { "" } else { "." };
    format!("{dot}{name}.tmp.")
}

/// Removes the temporary files that killed [`write_atomic`] calls for `path` left beside it;
/// returns the bytes freed. Call only while holding the run lock.
pub fn remove_atomic_leftovers(path: &Path) -> Result<u64, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = atomic_prefix(path);
    let mut freed = 0;
    for entry in atomic_leftovers(dir, &prefix) {
        freed += dir_size(&entry);
        remove_within(dir, &entry).map_err(io(&entry))?;
    }
    Ok(freed)
}

/// Whether killed [`write_atomic`] calls for `path` left temporary files.
pub fn has_atomic_leftovers(path: &Path) -> bool {
    !atomic_leftovers(path.parent().unwrap_or(Path::new(".")), &atomic_prefix(path)).is_empty()
}

fn atomic_leftovers(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).map(|e| e.path()).collect()
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Swaps two folders in one atomic step where the OS can (Linux `renameat2` with
/// `RENAME_EXCHANGE`); elsewhere, or on filesystems without it, `dest` is moved to `src` and
/// `src` into place with two renames (a crash between them leaves no entry, which the next
/// run recomputes, never a mixed one).
fn exchange(src: &Path, dest: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let a = std::ffi::CString::new(src.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        let b = std::ffi::CString::new(dest.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: both pointers are valid NUL-terminated paths for the duration of the call.
        let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)) {
            return Err(err);
        }
    }
    let mut aside = src.as_os_str().to_owned();
    aside.push(".old");
    let aside = PathBuf::from(aside);
    fs::rename(dest, &aside)?;
    fs::rename(src, dest)?;
    fs::rename(&aside, src)
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
            executor: None,
            node: None,
            job: None,
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
    fn io_errors_print_once_and_explain_a_cross_device_rename() {
        let e = StoreError::Io { path: "artifacts/.store/x".into(), err: std::io::Error::from_raw_os_error(28) };
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches("(os error 28)").count(), 1, "{text}");
        let e = StoreError::Io { path: "artifacts/.store/x".into(), err: std::io::Error::from(std::io::ErrorKind::CrossesDevices) };
        assert!(e.to_string().contains("must be on one filesystem"), "{e}");
    }

    #[test]
    fn a_corrupt_entry_is_replaced_not_kept() {
        let root = tempdir("replace-corrupt");
        let store = Store::open(&root).unwrap();
        let put = |content: &[u8]| {
            let scratch = store.scratch("s").unwrap();
            fs::write(scratch.join("a"), content).unwrap();
            store.commit("s", &scratch, &["a".into()], record("fp"), false).unwrap()
        };
        let first = put(b"good");
        // Same size, same mtime, other bytes: only a hash tells.
        let path = store.entry_dir("fp").join("a");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"evil").unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        assert_eq!(store.check(&first, false), Health::Ok);
        let again = put(b"good");
        assert_eq!(fs::read(&path).unwrap(), b"good");
        assert_eq!(store.check(&again, true), Health::Ok);
        assert_eq!(fs::read_dir(root.join(".tmp")).unwrap().count(), 0, "the old entry is gone");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_linked_store_or_tmp_is_refused_and_gc_removes_links_only() {
        let root = tempdir("links");
        let outside = tempdir("links-outside");
        fs::write(outside.join("keep"), b"1").unwrap();
        fs::create_dir_all(root.join(".store")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".tmp")).unwrap();
        assert!(matches!(Store::open(&root), Err(StoreError::Symlink { .. })));
        assert!(matches!(Store::open_read_only(&root), Err(StoreError::Symlink { .. })));
        fs::remove_file(root.join(".tmp")).unwrap();
        let store = Store::open(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".store/fp")).unwrap();
        store.remove("fp").unwrap();
        assert!(outside.join("keep").is_file());
        fs::remove_dir_all(root).unwrap();
        fs::remove_dir_all(outside).unwrap();
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
