//! `pipeline pull`: a published run into the local store. Every file is checked against the
//! published lock file (size and blake3) before its stage's entry is committed, so nothing
//! unverified enters the store; the local lock then names the pulled entries, and a `run`
//! finds every stage after `download` cached once `download` has re-run from local data.

use std::path::PathBuf;

use hf_hub::HFError;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::client::{Access, Hub};
use super::layout::{self, Manifest};
use super::{auth, HubError};
use crate::pipeline::{Graph, LockFile, RunLock, Store};

pub struct PullOptions {
    pub repo: String,
    /// Branch, tag or commit.
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

/// Pulls `opts.repo` into the store; `graph` (the local plan) is compared with the published
/// run to say which stages will still run.
pub fn pull(opts: &PullOptions, local: Option<&LocalPlan<'_>>) -> anyhow::Result<PullReport> {
    let (owner, name) = super::split_repo(&opts.repo)?;
    let endpoint = super::client::endpoint(opts.endpoint.as_deref());
    let hub = Hub::new(&endpoint, &opts.repo, auth::find_token(), Access::Read)?;
    let repo = hub.client.model(owner, name);

    // Read every file from one commit, even if the branch moves meanwhile.
    let info = repo.info().revision(opts.revision.clone()).send().map_err(|e| match e {
        HFError::RepoNotFound { .. } | HFError::RevisionNotFound { .. } => {
            HubError::NotFound { repo: opts.repo.clone(), revision: opts.revision.clone() }
        }
        e => hub.error(&format!("looking up {} at {}", opts.repo, opts.revision), e),
    })?;
    let commit = info.sha.clone().unwrap_or_else(|| opts.revision.clone());
    let fetch = |path: &str| -> Result<Vec<u8>, HubError> {
        match repo.download_file_to_bytes().filename(path).revision(commit.clone()).send() {
            Ok(b) => Ok(b.to_vec()),
            Err(HFError::EntryNotFound { .. }) => {
                Err(HubError::NotPublished { repo: opts.repo.clone(), revision: opts.revision.clone(), file: path.into() })
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

    let _guard = RunLock::acquire(&opts.artifacts, opts.wait, |holder| {
        tracing::warn!("waiting for another latentscope run{holder} that holds {}", opts.artifacts.display());
    })?;
    let store = Store::open(&opts.artifacts)?;
    let mut lock = LockFile::load(&opts.artifacts)?;
    lock.version = 1;
    // Each published output's path, by (stage, file), from the manifest.
    let mut paths = std::collections::BTreeMap::new();
    for (path, f) in &manifest.files {
        if let Some(stage) = &f.stage {
            let file = path.rsplit('/').next().unwrap_or(path);
            paths.insert((stage.clone(), file.to_owned()), path.clone());
        }
    }
    let stages: Vec<_> = published.stages.iter().filter(|(id, _)| paths.keys().any(|(s, _)| s == *id)).collect();
    let total: u64 = stages.iter().flat_map(|(_, r)| r.outputs.values()).map(|f| f.size).sum();
    let bar = crate::progress::bar(total, "pull [{bar:30}] {bytes}/{total_bytes}  {msg}");
    let mut report = PullReport {
        repo: opts.repo.clone(),
        revision: opts.revision.clone(),
        commit: commit.clone(),
        pulled: vec![],
        present: vec![],
        files: 0,
        bytes: 0,
        differs: local.map(|l| differences(l, &published)).unwrap_or_default(),
    };
    for (id, rec) in stages {
        let local = store.manifest(&rec.fingerprint)?;
        let same = local.as_ref().is_some_and(|l| {
            l.outputs.len() == rec.outputs.len()
                && l.outputs.iter().all(|(f, r)| rec.outputs.get(f).is_some_and(|p| p.blake3 == r.blake3))
                && store.check(l, true).is_intact()
        });
        if same {
            // The lock names an entry before a view points at it (the runner's order).
            lock.stages.insert(id.clone(), local.expect("checked"));
            lock.save(&opts.artifacts)?;
            store.set_view(id, &rec.fingerprint)?;
            report.present.push(id.clone());
            bar.inc(rec.outputs.values().map(|f| f.size).sum());
            continue;
        }
        bar.set_message(id.clone());
        let scratch = store.scratch(id)?;
        let result = (|| -> anyhow::Result<()> {
            for (file, want) in &rec.outputs {
                let path = paths.get(&(id.clone(), file.clone())).cloned().ok_or_else(|| HubError::BadPublished {
                    file: layout::MANIFEST.into(),
                    message: format!("it lists no file {file} of stage {id}, which the lock names"),
                })?;
                let bytes = fetch(&path)?;
                let got = blake3::hash(&bytes).to_hex().to_string();
                if bytes.len() as u64 != want.size || got != want.blake3 {
                    return Err(HubError::HashMismatch { file: path, expected: want.blake3.clone(), got }.into());
                }
                std::fs::write(scratch.join(file), &bytes)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", scratch.join(file).display()))?;
                report.files += 1;
                report.bytes += want.size;
                bar.inc(want.size);
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&scratch);
            bar.abandon();
            return Err(e);
        }
        let declared: Vec<String> = rec.outputs.keys().cloned().collect();
        let committed = store.commit(id, &scratch, &declared, rec.clone(), true)?;
        let fingerprint = committed.fingerprint.clone();
        lock.stages.insert(id.clone(), committed);
        lock.save(&opts.artifacts)?;
        store.set_view(id, &fingerprint)?;
        report.pulled.push(id.clone());
    }
    lock.save(&opts.artifacts)?;
    bar.finish_and_clear();
    Ok(report)
}

/// `metrics.json` of a published run, for `pipeline metrics --diff hub:OWNER/NAME[@REV]`.
pub fn published_metrics(spec: &str, endpoint: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let (owner, name) = super::split_repo(repo)?;
    let hub = Hub::new(&super::client::endpoint(endpoint), repo, auth::find_token(), Access::Read)?;
    let file = crate::stages::score::METRICS;
    let bytes = match hub.client.model(owner, name).download_file_to_bytes().filename(file).revision(revision.to_owned()).send() {
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
