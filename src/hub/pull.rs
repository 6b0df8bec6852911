//! `pipeline pull`: a published run into the local store. Every file is checked against the
//! published lock file (size and blake3) before its stage's entry is committed, so nothing
//! unverified enters the store; the local lock then names the pulled entries, and a `run`
//! finds every stage after `download` cached once `download` has re-run from local data.

use std::path::{Path, PathBuf};

use hf_hub::HFError;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::client::{Access, Hub};
use super::layout::{self, Manifest};
use super::{auth, check_revision, HubError, RepoId};
use crate::pipeline::remove::remove_within;
use crate::pipeline::{Graph, LockFile, RunLock, RunRecord, Store};

pub struct PullOptions {
    pub repo: RepoId,
    /// Branch, tag or commit (checked with [`check_revision`] before any request).
    pub revision: String,
    pub endpoint: Option<String>,
    pub artifacts: PathBuf,
    pub wait: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub repo: String,
    pub revision: String,
    /// The commit the files were read from.
    pub commit: String,
    /// Stages whose entries were downloaded.
    pub pulled: Vec<String>,
    /// Stages whose entries were in the local store already.
    pub present: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    /// Stages of the local config that the pulled run will not satisfy, and why (the
    /// published run used other settings or code, or did not have the stage).
    pub differs: Vec<String>,
}

/// The local plan a pull is compared with: its graph, and which of its stages a publication
/// holds (see [`layout::published_stages`]).
pub struct LocalPlan<'a> {
    pub graph: &'a Graph,
    pub published: std::collections::BTreeMap<String, String>,
}

/// Where the local plan and the published run disagree: such stages will run.
pub fn differences(local: &LocalPlan<'_>, published: &LockFile) -> Vec<String> {
    let mut out = Vec::new();
    for spec in local.graph.ordered() {
        if !local.published.contains_key(&spec.id) {
            continue;
        }
        let Some(rec) = published.stages.get(&spec.id) else {
            out.push(format!("{}: not in the published run", spec.id));
            continue;
        };
        if rec.kind != spec.kind.kind() || rec.version != spec.kind.version() {
            out.push(format!("{}: published by {} v{}, this code is v{}", spec.id, rec.kind, rec.version, spec.kind.version()));
            continue;
        }
        let shown = |v: &Option<serde_json::Value>, absent: &str| {
            v.as_ref().map_or(absent.to_owned(), |v| v.as_str().map_or(v.to_string(), str::to_owned))
        };
        let changed: Vec<String> = crate::pipeline::param_changes(&rec.params, &spec.params)
            .into_iter()
            .map(|c| {
                if c.key == "device" {
                    // Runs before the device was declared computed on the CPU.
                    format!(
                        "computed on {} here, on {} in the published run (devices differ in their bits)",
                        shown(&c.new, "cpu"),
                        shown(&c.old, "cpu")
                    )
                } else {
                    format!("{} {} here, {} published", c.key, shown(&c.new, "unset"), shown(&c.old, "unset"))
                }
            })
            .collect();
        if !changed.is_empty() {
            out.push(format!("{}: {}", spec.id, changed.join(", ")));
        }
    }
    out
}

impl std::fmt::Display for PullReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pulled {} stages ({} files, {}) from {} at {} (commit {}); {} were in the store already.\n\
             Next: `cargo xtask pipeline run` re-runs download from local data and finds the rest cached.",
            self.pulled.len(),
            self.files,
            super::publish::human_bytes(self.bytes),
            self.repo,
            self.revision,
            self.commit,
            self.present.len()
        )?;
        if !self.differs.is_empty() {
            write!(
                f,
                "\nbut the local config differs from the published run, so these stages (and what depends on them) will run; use the published pipeline.yaml or the same --set options to reuse them:\n  {}",
                self.differs.join("\n  ")
            )?;
        }
        Ok(())
    }
}

/// A published lock file names folders and files of the local store: accept only plain names
/// (no path separators, no `..`, no leading dot) and hex fingerprints.
fn check_names(lock: &LockFile) -> Result<(), HubError> {
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let bad = |message: String| HubError::BadPublished { file: layout::LOCK.into(), message };
    for (id, rec) in &lock.stages {
        if !plain(id) {
            return Err(bad(format!("stage id {id:?} is not a plain name")));
        }
        if rec.fingerprint.len() != 64 || !rec.fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!("stage {id}: fingerprint {:?} is not a blake3 hex digest", rec.fingerprint)));
        }
        if let Some(file) = rec.outputs.keys().find(|f| !plain(f)) {
            return Err(bad(format!("stage {id}: output {file:?} is not a plain file name")));
        }
    }
    Ok(())
}

/// A path of the published repository that a pull downloads: plain segments (no `..`, no
/// leading dot, no characters a URL would read as anything but a name), as `layout` writes.
fn check_repo_path(path: &str) -> Result<(), HubError> {
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if path.split('/').all(plain) {
        Ok(())
    } else {
        Err(HubError::BadPublished { file: layout::MANIFEST.into(), message: format!("{path:?} is not a plain repository path") })
    }
}

/// The local entry of a published stage, when the store holds it with the published outputs
/// intact (`verify`: every file re-hashed, else the quick size-and-mtime check).
fn intact_entry(store: &Store, published: &RunRecord, verify: bool) -> anyhow::Result<Option<RunRecord>> {
    let local = store.manifest(&published.fingerprint)?;
    Ok(local.filter(|l| {
        l.outputs.len() == published.outputs.len()
            && l.outputs.iter().all(|(f, r)| published.outputs.get(f).is_some_and(|p| p.blake3 == r.blake3))
            && store.check(l, verify).is_intact()
    }))
}

/// The folder where a pull keeps verified downloads until it holds the run lock:
/// `<artifacts>/.pull.<pid>.<n>`, outside `.tmp/` (which a run empties under the lock), one per
/// pull, and removed (through `remove_within`) when dropped.
struct Staging {
    root: PathBuf,
    dir: PathBuf,
}

const STAGING_PREFIX: &str = ".pull.";

/// A staging folder left by a killed pull is removed by a later pull once it is this old and
/// (where `/proc` tells) its process is gone.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Staging {
    fn new(artifacts: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(artifacts).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", artifacts.display()))?;
        remove_leftovers(artifacts);
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = artifacts.join(format!("{}{}.{}", STAGING_PREFIX, std::process::id(), n));
        // Left by an earlier process that had this pid (a link loses only the link).
        remove_within(artifacts, &dir).map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))?;
        std::fs::create_dir(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(Self { root: artifacts.to_owned(), dir })
    }

    /// The folder of one stage's files (created).
    fn stage(&self, id: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(id);
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Moves a staged file of stage `id` to `to` (a copy when the two are on different
    /// filesystems).
    fn take(&self, id: &str, file: &str, to: &Path) -> anyhow::Result<()> {
        let from = self.dir.join(id).join(file);
        if std::fs::rename(&from, to).is_ok() {
            return Ok(());
        }
        std::fs::copy(&from, to).map_err(|e| anyhow::anyhow!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
        let _ = remove_within(&self.root, &from);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_within(&self.root, &self.dir);
    }
}

/// Removes the staging folders of pulls that were killed: old, and of a process that no
/// longer runs.
fn remove_leftovers(artifacts: &Path) {
    crate::pipeline::remove::remove_orphans(artifacts, STAGING_PREFIX, LEFTOVER_AGE);
}

/// Pulls `opts.repo` into the store; `graph` (the local plan) is compared with the published
/// run to say which stages will still run.
///
/// Everything is downloaded before the run lock is taken: the repository info, the manifest,
/// the lock file and every output the store lacks (verified, into a [`Staging`] folder).
/// Each request is bounded by the network limits (`net::Limits`), and the run lock is held
/// only for the local work afterwards (checking the store again, committing, the lock file),
/// so a Hub that does not answer never keeps a run waiting.
pub fn pull(opts: &PullOptions, local: Option<&LocalPlan<'_>>) -> anyhow::Result<PullReport> {
    check_revision(&opts.revision).map_err(HubError::from)?;
    let endpoint = super::client::endpoint(opts.endpoint.as_deref());
    let hub = Hub::new(&endpoint, &opts.repo, auth::find_token(), Access::Read)?;
    let repo = hub.client.model(opts.repo.owner(), opts.repo.name());
    let repo_id = opts.repo.to_string();

    // Read every file from one commit, even if the branch moves meanwhile.
    let info = repo.info().revision(opts.revision.clone()).send().map_err(|e| match e {
        HFError::RepoNotFound { .. } | HFError::RevisionNotFound { .. } => {
            HubError::NotFound { repo: repo_id.clone(), revision: opts.revision.clone() }
        }
        e => hub.error(&format!("looking up {} at {}", opts.repo, opts.revision), e),
    })?;
    let commit = info.sha.clone().unwrap_or_else(|| opts.revision.clone());
    // The commit id comes from the server and goes into every later request.
    check_revision(&commit).map_err(|e| HubError::BadPublished {
        file: format!("the Hub's answer for {} at {}", opts.repo, opts.revision),
        message: format!("commit id {e}"),
    })?;
    let fetch = |path: &str| -> Result<Vec<u8>, HubError> {
        match repo.download_file_to_bytes().filename(path).revision(commit.clone()).send() {
            Ok(b) => Ok(b.to_vec()),
            Err(HFError::EntryNotFound { .. }) => {
                Err(HubError::NotPublished { repo: repo_id.clone(), revision: opts.revision.clone(), file: path.into() })
            }
            Err(e) => Err(hub.error(&format!("downloading {path}"), e)),
        }
    };
    let manifest_bytes = fetch(layout::MANIFEST)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| HubError::BadPublished { file: layout::MANIFEST.into(), message: e.to_string() })?;
    let lock_bytes = fetch(layout::LOCK)?;
    if let Some(listed) = manifest.files.get(layout::LOCK) {
        let sha = crate::data::idx::hex(&Sha256::digest(&lock_bytes));
        if sha != listed.sha256 {
            return Err(HubError::BadPublished {
                file: layout::LOCK.into(),
                message: format!("sha256 {sha}, {} lists {}", layout::MANIFEST, listed.sha256),
            }
            .into());
        }
    }
    let published: LockFile =
        serde_json::from_slice(&lock_bytes).map_err(|e| HubError::BadPublished { file: layout::LOCK.into(), message: e.to_string() })?;
    check_names(&published)?;

    // Each published output's path, by (stage, file), from the manifest.
    let mut paths = std::collections::BTreeMap::new();
    for (path, f) in &manifest.files {
        if let Some(stage) = &f.stage {
            let file = path.rsplit('/').next().unwrap_or(path);
            paths.insert((stage.clone(), file.to_owned()), path.clone());
        }
    }
    let stages: Vec<(&String, &RunRecord)> = published.stages.iter().filter(|(id, _)| paths.keys().any(|(s, _)| s == *id)).collect();

    // Download what the store lacks, without the run lock (see the function docs).
    let staging = Staging::new(&opts.artifacts)?;
    let before = Store::open_read_only(&opts.artifacts)?;
    let total: u64 = stages.iter().flat_map(|(_, r)| r.outputs.values()).map(|f| f.size).sum();
    let bar = crate::progress::bar(total, "pull [{bar:30}] {bytes}/{total_bytes}  {msg}");
    let mut staged = std::collections::BTreeSet::new();
    let downloaded = (|| -> anyhow::Result<()> {
        for &(id, rec) in &stages {
            // By hash, as under the lock below: an entry damaged behind the quick check is
            // downloaded again here, not found wanting only once the lock is held.
            if intact_entry(&before, rec, true)?.is_some() {
                bar.inc(rec.outputs.values().map(|f| f.size).sum());
                continue;
            }
            bar.set_message(id.clone());
            let dir = staging.stage(id)?;
            for (file, want) in &rec.outputs {
                let path = paths.get(&(id.clone(), file.clone())).cloned().ok_or_else(|| HubError::BadPublished {
                    file: layout::MANIFEST.into(),
                    message: format!("it lists no file {file} of stage {id}, which the lock names"),
                })?;
                check_repo_path(&path)?;
                let bytes = fetch(&path)?;
                let got = blake3::hash(&bytes).to_hex().to_string();
                if bytes.len() as u64 != want.size || got != want.blake3 {
                    return Err(HubError::HashMismatch { file: path, expected: want.blake3.clone(), got }.into());
                }
                std::fs::write(dir.join(file), &bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join(file).display()))?;
                bar.inc(want.size);
            }
            staged.insert(id.clone());
        }
        Ok(())
    })();
    if let Err(e) = downloaded {
        bar.abandon();
        return Err(e);
    }
    bar.finish_and_clear();

    let _guard = RunLock::acquire(&opts.artifacts, opts.wait, |holder| {
        tracing::warn!("waiting for another latentscope run{holder} that holds {}", opts.artifacts.display());
    })?;
    let store = Store::open(&opts.artifacts)?;
    let mut lock = LockFile::load(&opts.artifacts)?;
    lock.version = 1;
    let mut report = PullReport {
        repo: repo_id.clone(),
        revision: opts.revision.clone(),
        commit: commit.clone(),
        pulled: vec![],
        present: vec![],
        files: 0,
        bytes: 0,
        differs: local.map(|l| differences(l, &published)).unwrap_or_default(),
    };
    for (id, rec) in stages {
        if let Some(entry) = intact_entry(&store, rec, true)? {
            // The lock names an entry before a view points at it (the runner's order).
            lock.stages.insert(id.clone(), entry);
            lock.save(&opts.artifacts)?;
            store.set_view(id, &rec.fingerprint)?;
            report.present.push(id.clone());
            continue;
        }
        // Not downloading here keeps the network out of the locked part.
        anyhow::ensure!(
            staged.contains(id),
            "the store entry of {id} went away while the pull was downloading (a gc or a run in between); pull again"
        );
        let scratch = store.scratch(id)?;
        let moved = rec.outputs.keys().try_for_each(|file| staging.take(id, file, &scratch.join(file)));
        if let Err(e) = moved {
            let _ = remove_within(&opts.artifacts, &scratch);
            return Err(e);
        }
        let declared: Vec<String> = rec.outputs.keys().cloned().collect();
        let committed = store.commit(id, &scratch, &declared, rec.clone(), true)?;
        let fingerprint = committed.fingerprint.clone();
        lock.stages.insert(id.clone(), committed);
        lock.save(&opts.artifacts)?;
        store.set_view(id, &fingerprint)?;
        report.pulled.push(id.clone());
        report.files += rec.outputs.len();
        report.bytes += rec.outputs.values().map(|f| f.size).sum::<u64>();
    }
    lock.save(&opts.artifacts)?;
    Ok(report)
}

/// `metrics.json` of a published run, for `pipeline metrics --diff hub:OWNER/NAME[@REV]`. The
/// id and revision are checked before any request.
pub fn published_metrics(spec: &str, endpoint: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let id = RepoId::parse(repo)?;
    check_revision(revision)?;
    let hub = Hub::new(&super::client::endpoint(endpoint), &id, auth::find_token(), Access::Read)?;
    let file = crate::artifacts::score::METRICS;
    let bytes = match hub.client.model(id.owner(), id.name()).download_file_to_bytes().filename(file).revision(revision.to_owned()).send() {
        Ok(b) => b,
        Err(HFError::EntryNotFound { .. }) => {
            return Err(HubError::NotPublished { repo: repo.into(), revision: revision.into(), file: file.into() }.into())
        }
        Err(HFError::RepoNotFound { .. } | HFError::RevisionNotFound { .. }) => {
            return Err(HubError::NotFound { repo: repo.into(), revision: revision.into() }.into())
        }
        Err(e) => return Err(hub.error(&format!("downloading {file}"), e).into()),
    };
    Ok(serde_json::from_slice(&bytes)
        .map_err(|e| HubError::BadPublished { file: format!("{repo}@{revision}/{file}"), message: e.to_string() })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::store::{FileRecord, RunRecord};

    fn lock(id: &str, fingerprint: &str, file: &str) -> LockFile {
        let rec = RunRecord {
            kind: "train".into(),
            version: 1,
            fingerprint: fingerprint.into(),
            params: Default::default(),
            inputs: Default::default(),
            outputs: [(file.to_owned(), FileRecord { size: 1, blake3: "0".repeat(64), mtime_ns: 0 })].into(),
            wall_time_s: 0.0,
            device: None,
            tool_version: "t".into(),
            finished_at: 0,
            executor: None,
            node: None,
            job: None,
        };
        LockFile { stages: [(id.to_owned(), rec)].into(), ..LockFile::empty() }
    }

    #[test]
    fn differences_name_the_device_a_published_run_used() {
        let config = crate::config::LoadedConfig::from_yaml(
            include_str!("../../pipeline.yaml"),
            std::path::Path::new("pipeline.yaml"),
            &["device=cpu".into()],
        )
        .unwrap();
        let graph = Graph::new(crate::stages::plan(&config)).unwrap();
        let local = LocalPlan { graph: &graph, published: layout::published_stages(&config) };
        let spec = graph.get("train-mnist-conv-s42").unwrap();
        let mut rec = lock("train-mnist-conv-s42", &"0".repeat(64), "model.safetensors").stages.remove("train-mnist-conv-s42").unwrap();
        rec.kind = spec.kind.kind().into();
        rec.version = spec.kind.version();
        rec.params = spec.params.clone();
        rec.params.insert("device".into(), "cuda".into());
        let published = LockFile { stages: [("train-mnist-conv-s42".to_owned(), rec)].into(), ..LockFile::empty() };
        let diffs = differences(&local, &published);
        assert!(
            diffs
                .iter()
                .any(|d| d == "train-mnist-conv-s42: computed on cpu here, on cuda in the published run (devices differ in their bits)"),
            "{diffs:?}"
        );
    }

    #[test]
    fn metrics_of_a_published_run_check_the_id_and_revision_before_any_request() {
        // Nothing answers at this address: an unchecked value would fail with another message.
        for (spec, needle) in [
            ("../x@main", "is not a Hub repository id"),
            ("a/b?x=1", "is not a Hub repository id"),
            ("a/%2e%2e", "is not a Hub repository id"),
            ("me/run@..", "is not a usable revision"),
            ("me/run@", "it is empty"),
            ("me/run@main#x", "is not a usable revision"),
        ] {
            let e = published_metrics(spec, Some("http://127.0.0.1:9")).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn only_plain_repository_paths_are_downloaded() {
        assert!(check_repo_path("models/mnist/conv/s42/model.safetensors").is_ok());
        for bad in ["../x", "a/../b", "a/.hidden", "a//b", "/a", "a/b?x=1", "a/%2e%2e", "a/b#c", ""] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_published_lock_cannot_name_paths_outside_the_store() {
        let fp = "a".repeat(64);
        assert!(check_names(&lock("train-simple", &fp, "model.safetensors")).is_ok());
        for (id, f, file) in [
            ("train-../../x", fp.as_str(), "model.safetensors"),
            ("train-simple", "../../../tmp/x", "model.safetensors"),
            ("train-simple", fp.as_str(), "../model.safetensors"),
            ("train-simple", fp.as_str(), ".manifest.json"),
            ("train/simple", fp.as_str(), "m"),
        ] {
            let e = check_names(&lock(id, f, file)).unwrap_err().to_string();
            assert!(e.starts_with("pipeline.lock: "), "{e}");
        }
    }
}
