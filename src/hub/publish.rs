//! `pipeline publish`: one commit to a model repository with every artefact of a complete,
//! fresh run, the model card, the effective config and the lock file.

use std::path::PathBuf;

use hf_hub::repository::CommitOperation;
use hf_hub::{HFError, RepoTypeModel};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::client::{Access, Hub};
use super::layout::{self, Manifest, ManifestFile};
use super::{auth, card, HubError, RepoId};
use crate::config::LoadedConfig;
use crate::data::idx::hex;
use crate::pipeline::finished::{FinishedRun, ReadError};
use crate::pipeline::{Graph, LockFile, RunLock};

pub struct PublishOptions {
    pub repo: RepoId,
    pub private: bool,
    /// Branch to commit to (checked with [`super::check_revision`] before any request).
    pub revision: String,
    pub message: Option<String>,
    pub dry_run: bool,
    /// `--endpoint`; `None`: `HF_ENDPOINT`, else the public Hub.
    pub endpoint: Option<String>,
    pub artifacts: PathBuf,
    /// The `run` command that reproduces this run (for the model card).
    pub run_command: String,
    pub wait: bool,
    /// Also write the model card here.
    pub card_out: Option<PathBuf>,
}

/// Where a published file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file of a store entry.
    Store(PathBuf),
    /// Generated for the repository (card, config, lock, manifest).
    Generated(Vec<u8>),
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The stage whose output this is; `None` for generated files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip)]
    pub source: Source,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PublishOutcome {
    /// `--dry-run`: what would be uploaded; nothing was sent.
    DryRun { repo: String, revision: String, files: Vec<PlannedFile> },
    /// The remote already holds exactly this run: no commit was made.
    UpToDate { repo: String, revision: String, files: usize },
    Committed {
        repo: String,
        revision: String,
        commit: Option<String>,
        url: Option<String>,
        files: usize,
        bytes: u64,
        deleted: usize,
        created_repo: bool,
    },
}

impl std::fmt::Display for PublishOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishOutcome::DryRun { repo, revision, files } => {
                let width = files.iter().map(|p| p.path.len()).max().unwrap_or(0);
                writeln!(f, "would upload to {repo} at {revision} (dry run, no request made):")?;
                for p in files {
                    writeln!(f, "  {:width$}  {:>10}", p.path, human_bytes(p.size))?;
                }
                write!(f, "{} files, {}", files.len(), human_bytes(files.iter().map(|p| p.size).sum()))
            }
            PublishOutcome::UpToDate { repo, revision, files } => {
                write!(f, "{repo} at {revision} is up to date ({files} files): nothing to commit")
            }
            PublishOutcome::Committed { repo, revision, commit, url, files, bytes, deleted, created_repo } => {
                if *created_repo {
                    writeln!(f, "created model repository {repo}")?;
                }
                write!(f, "published {files} files ({}) to {repo} at {revision} in one commit", human_bytes(*bytes))?;
                if *deleted > 0 {
                    write!(f, ", removing {deleted} files of the previous run")?;
                }
                if let Some(c) = commit {
                    write!(f, "\ncommit {c}")?;
                }
                if let Some(u) = url {
                    write!(f, "\n{u}")?;
                }
                Ok(())
            }
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn generated(path: String, bytes: Vec<u8>) -> PlannedFile {
    PlannedFile { path, size: bytes.len() as u64, sha256: hex(&Sha256::digest(&bytes)), stage: None, source: Source::Generated(bytes) }
}

/// A store file, checked against its lock record: what is published is what the lock file
/// says, byte for byte (a file changed behind the store's back keeps its mtime, so the
/// freshness check alone would not see it).
/// A store file to upload: its bytes were read (and checked against the lock) by the
/// [`FinishedRun`]; the upload reads the file again from `local`.
fn planned_store(path: String, local: PathBuf, bytes: &[u8], stage: &str) -> PlannedFile {
    PlannedFile {
        path,
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
        stage: Some(stage.to_owned()),
        source: Source::Store(local),
    }
}

/// The lock file as published: only this graph's stages, modification times zeroed (they
/// are local facts; `pull` records its own), and no node names or job ids (site facts, like
/// the `slurm:` settings); the executor stays.
fn published_lock(lock: &LockFile, graph: &Graph) -> LockFile {
    let mut out = LockFile { version: lock.version, ..LockFile::empty() };
    for spec in graph.ordered() {
        if let Some(rec) = lock.stages.get(&spec.id) {
            let mut rec = rec.clone();
            for file in rec.outputs.values_mut() {
                file.mtime_ns = 0;
            }
            rec.node = None;
            rec.job = None;
            out.stages.insert(spec.id.clone(), rec);
        }
    }
    out
}

/// What a publication holds: every file (the manifest last) and the manifest itself.
pub struct Plan {
    pub files: Vec<PlannedFile>,
    pub manifest: Manifest,
}

/// Plans the publication of the current run. Fails if a stage is stale.
pub fn plan(config: &LoadedConfig, graph: &Graph, opts: &PublishOptions) -> anyhow::Result<Plan> {
    let run = match FinishedRun::current(graph, &opts.artifacts) {
        Err(ReadError::Stale { stages, .. }) => return Err(HubError::Stale { stages }.into()),
        run => run?,
    };
    let lock = run.lock();
    let mut files = Vec::new();
    let folders = layout::published_stages(config);
    for spec in graph.ordered() {
        let Some(folder) = folders.get(&spec.id) else { continue };
        for name in run.record(&spec.id)?.outputs.keys() {
            let (local, bytes) = run.located(&spec.id, name)?;
            files.push(planned_store(layout::repo_path(folder, name), local, &bytes, &spec.id));
        }
    }
    let metrics: crate::artifacts::score::Metrics =
        crate::artifacts::read_output(&run, crate::stages::SCORE, crate::artifacts::score::METRICS)?;
    let yaml = serde_saphyr::to_string(&config.experiment_tree())
        .map_err(|e| anyhow::anyhow!("cannot write the effective config as YAML: {e}"))?;
    let header = "# The effective configuration of this run (overrides applied), written by latentscope publish.\n";
    files.push(generated(layout::CONFIG.into(), format!("{header}{yaml}").into_bytes()));
    let lock_text = serde_json::to_string_pretty(&published_lock(lock, graph))? + "\n";
    files.push(generated(layout::LOCK.into(), lock_text.into_bytes()));
    let mut datasets = Vec::new();
    for name in config.config.datasets.keys() {
        datasets.push(crate::artifacts::read_output(
            &run,
            &crate::stages::StageId::Download(name.as_str().into()).to_string(),
            crate::artifacts::download::SUMMARY,
        )?);
    }
    let source_rev = crate::html::source_revision(&config.base_dir());
    let figures = crate::artifacts::plot::figure_captions(
        &metrics.datasets,
        &config.config.models.keys().cloned().collect::<Vec<_>>(),
        &crate::artifacts::plot::Extras::of(config),
    );
    let text = card::render(&card::CardInput {
        repo: opts.repo.as_str(),
        metrics: &metrics,
        config: &config.config,
        run_command: &opts.run_command,
        revision: &opts.revision,
        source_revision: source_rev.as_deref(),
        figures: &figures,
        datasets: &datasets,
    });
    files.push(generated(layout::CARD.into(), text.into_bytes()));
    let manifest = Manifest {
        format: 1,
        tool: format!("latentscope {}", crate::VERSION),
        files: files
            .iter()
            .map(|f| (f.path.clone(), ManifestFile { size: f.size, sha256: f.sha256.clone(), stage: f.stage.clone() }))
            .collect(),
    };
    files.push(generated(layout::MANIFEST.into(), (serde_json::to_string_pretty(&manifest)? + "\n").into_bytes()));
    Ok(Plan { files, manifest })
}

/// Publishes the current run of `graph` (see the module docs).
pub fn publish(config: &LoadedConfig, graph: &Graph, opts: &PublishOptions) -> anyhow::Result<PublishOutcome> {
    super::check_revision(&opts.revision).map_err(HubError::from)?;
    // Hold the run lock so no run or gc changes the store while we read it (the upload reads
    // the store's files too). Every request below is bounded by the network limits
    // (`net::Limits`: a timeout per try, a bounded number of tries), so a Hub that does not
    // answer releases the lock after that budget; only a Hub that keeps answering, as a long
    // upload does, keeps it longer.
    let _guard = if opts.dry_run {
        None
    } else {
        Some(RunLock::acquire(&opts.artifacts, opts.wait, |holder| {
            tracing::warn!("waiting for another latentscope run{holder} that holds {}", opts.artifacts.display());
        })?)
    };
    let Plan { files, manifest: ours } = plan(config, graph, opts)?;
    if let Some(out) = &opts.card_out {
        if let Some(Source::Generated(card)) = files.iter().find(|f| f.path == layout::CARD).map(|f| &f.source) {
            std::fs::write(out, card).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
        }
    }
    if opts.dry_run {
        return Ok(PublishOutcome::DryRun { repo: opts.repo.to_string(), revision: opts.revision.clone(), files });
    }
    let token = auth::require_token()?;
    let endpoint = super::client::endpoint(opts.endpoint.as_deref());
    let hub = Hub::new(&endpoint, &opts.repo, Some(token), Access::Write)?;
    let repo = hub.client.model(opts.repo.owner(), opts.repo.name());

    let exists = repo.exists().send().map_err(|e| hub.error(&format!("looking up {}", opts.repo), e))?;
    if !exists {
        tracing::info!("creating model repository {}", opts.repo);
        hub.client
            .create_repository()
            .repo_id(opts.repo.as_str())
            .repo_type(RepoTypeModel)
            .private(opts.private)
            .exist_ok(true)
            .send()
            .map_err(|e| hub.error(&format!("creating {}", opts.repo), e))?;
    } else if opts.private {
        tracing::warn!("{} exists already; --private applies only to a repository this command creates", opts.repo);
    }
    let mut created_branch = false;
    if opts.revision != "main"
        && !repo.revision_exists().revision(&opts.revision).send().map_err(|e| hub.error("looking up the branch", e))?
    {
        tracing::info!("creating branch {} of {}", opts.revision, opts.repo);
        repo.create_branch().branch(&opts.revision).send().map_err(|e| hub.error(&format!("creating branch {}", opts.revision), e))?;
        created_branch = true;
    }

    let remote = match repo.download_file_to_bytes().filename(layout::MANIFEST).revision(&opts.revision).send() {
        Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes).ok(),
        Err(HFError::EntryNotFound { .. } | HFError::RevisionNotFound { .. } | HFError::RepoNotFound { .. }) => None,
        Err(e) => return Err(hub.error(&format!("reading {} of {}", layout::MANIFEST, opts.repo), e).into()),
    };
    if remote.as_ref() == Some(&ours) {
        return Ok(PublishOutcome::UpToDate { repo: opts.repo.to_string(), revision: opts.revision.clone(), files: files.len() });
    }

    let mut operations: Vec<CommitOperation> = files
        .iter()
        .map(|f| match &f.source {
            Source::Store(p) => CommitOperation::add_file(f.path.clone(), p.clone()),
            Source::Generated(b) => CommitOperation::add_bytes(f.path.clone(), b.clone()),
        })
        .collect();
    // Files of an earlier publication that this run no longer has (fewer k-means seeds, say).
    let stale: Vec<String> = remote
        .iter()
        .flat_map(|m| m.files.keys())
        .filter(|p| !ours.files.contains_key(*p) && p.as_str() != layout::MANIFEST)
        .cloned()
        .collect();
    operations.extend(stale.iter().map(CommitOperation::delete));
    let bytes = files.iter().map(|f| f.size).sum();
    let message = opts.message.clone().unwrap_or_else(|| default_message(&ours));
    tracing::info!("committing {} files ({}) to {} at {}", files.len(), human_bytes(bytes), opts.repo, opts.revision);
    let info = repo.create_commit().operations(operations).commit_message(message).revision(opts.revision.clone()).send().map_err(|e| {
        let state = match (!exists, created_branch) {
            (true, _) => "the repository was created but holds none of this run",
            (false, true) => "the branch was created from main but holds none of this run",
            (false, false) => "the remote is unchanged",
        };
        hub.error(&format!("committing to {} at {} ({state})", opts.repo, opts.revision), e)
    })?;
    Ok(PublishOutcome::Committed {
        repo: opts.repo.to_string(),
        revision: opts.revision.clone(),
        commit: info.commit_oid,
        url: info.commit_url,
        files: files.len(),
        bytes,
        deleted: stale.len(),
        created_repo: !exists,
    })
}

fn default_message(manifest: &Manifest) -> String {
    let lock = manifest.files.get(layout::LOCK).map(|f| &f.sha256[..12]).unwrap_or("?");
    format!("latentscope {}: publish run (lock sha256 {lock})", crate::VERSION)
}
