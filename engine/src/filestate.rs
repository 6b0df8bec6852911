//! Content hashes of files outside the store that stages read (a local dataset), cached by
//! size, mtime, change time and inode as DVC's state database does (with the ctime, which no
//! user command can set back, so a rewrite that restores the mtime is still seen): a file is
//! re-hashed only when one of those changed, and always under `--verify`. The cache lives in `artifacts/.file-hashes.json`; it is only an
//! accelerator (deleting it costs one re-hash per file), and it is written only by a process
//! that holds the run lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::fingerprint::hash_file;
use super::store::{ctime_ns, inode, mtime_ns, remove_atomic_leftovers, write_atomic, StoreError, RACY};

pub const FILE: &str = ".file-hashes.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    inode: u64,
    /// The change time (ns); absent in caches written before it was recorded.
    #[serde(default)]
    ctime_ns: i128,
    blake3: String,
}

pub struct FileState {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    dirty: Mutex<bool>,
}

impl FileState {
    /// Reads the cache of `artifacts`; a missing or unreadable one is empty.
    pub fn load(artifacts: &Path) -> Self {
        let path = artifacts.join(FILE);
        let entries = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self { path, entries: Mutex::new(entries), dirty: Mutex::new(false) }
    }

    /// The blake3 of `path`'s content, from the cache when size, mtime, ctime and inode still
    /// match (never from the cache when `verify`).
    pub fn hash(&self, path: &Path, verify: bool) -> std::io::Result<String> {
        let key = std::path::absolute(path)?.to_string_lossy().into_owned();
        let meta = std::fs::metadata(path)?;
        let (size, mtime, inode, ctime) = (meta.len(), mtime_ns(&meta).unwrap_or(0), inode(&meta), ctime_ns(&meta));
        if let Some(e) = self.entries.lock().expect("file state").get(&key).filter(|_| !verify) {
            if e.size == size && e.mtime_ns == mtime && e.inode == inode && e.ctime_ns == ctime {
                return Ok(e.blake3.clone());
            }
        }
        let blake3 = hash_file(path)?;
        tracing::debug!("hashed {}", path.display());
        let racy = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).is_none_or(|age| age < RACY);
        if !racy {
            self.entries
                .lock()
                .expect("file state")
                .insert(key, Entry { size, mtime_ns: mtime, inode, ctime_ns: ctime, blake3: blake3.clone() });
            *self.dirty.lock().expect("file state") = true;
        }
        Ok(blake3)
    }

    /// Whether [`Self::save`] has something to write.
    pub fn is_dirty(&self) -> bool {
        *self.dirty.lock().expect("file state")
    }

    /// Writes the cache if it changed (atomically). Call only while holding the run lock.
    pub fn save(&self) -> Result<(), StoreError> {
        remove_atomic_leftovers(&self.path)?;
        let mut dirty = self.dirty.lock().expect("file state");
        if *dirty {
            let text = serde_json::to_string_pretty(&*self.entries.lock().expect("file state")).expect("state serialises");
            write_atomic(&self.path, text.as_bytes())?;
            *dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cached_until_size_mtime_ctime_or_inode_change() {
        let dir = std::env::temp_dir().join(format!("latentscope-filestate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data.bin");
        std::fs::write(&file, b"first").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        let set_mtime = |t: SystemTime| std::fs::File::options().write(true).open(&file).unwrap().set_modified(t).unwrap();
        set_mtime(old);

        let state = FileState::load(&dir);
        let first = state.hash(&file, false).unwrap();
        assert_eq!(first, blake3::hash(b"first").to_hex().to_string());
        assert!(state.is_dirty());
        state.save().unwrap();
        assert!(!state.is_dirty());

        // Nothing changed: the cache answers (this is what makes the check cheap), even after
        // a reload from disk, and has nothing new to save.
        let reloaded = FileState::load(&dir);
        assert_eq!(reloaded.hash(&file, false).unwrap(), first);
        assert!(!reloaded.is_dirty());
        // Under --verify it hashes again (and caches what it found).
        assert_eq!(reloaded.hash(&file, true).unwrap(), first);

        // New bytes with the old size and mtime put back: the change time tells.
        std::fs::write(&file, b"FIRST").unwrap();
        set_mtime(old);
        assert_eq!(FileState::load(&dir).hash(&file, false).unwrap(), blake3::hash(b"FIRST").to_hex().to_string());

        // A new mtime: re-hashed.
        std::fs::write(&file, b"FIRsT").unwrap();
        set_mtime(old + Duration::from_secs(1));
        assert_eq!(state.hash(&file, false).unwrap(), blake3::hash(b"FIRsT").to_hex().to_string());

        // A file modified just now is hashed every time, never cached.
        std::fs::write(&file, b"third").unwrap();
        let fresh = FileState::load(&dir);
        assert_eq!(fresh.hash(&file, false).unwrap(), blake3::hash(b"third").to_hex().to_string());
        assert!(!fresh.is_dirty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
