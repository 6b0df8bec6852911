//! `download-<dataset>`: one dataset's splits as `dataset.safetensors` (u8 images [N, C, H, W],
//! u8 labels), from `datasets.<name>.local` (IDX) when that folder holds the files, else from
//! the Hub's parquet files; `dataset.json` says where they came from, with checksums, shape and
//! class counts. Both sources give byte-identical tensors, so a change of source never
//! invalidates training. The local files are declared inputs: their content is part of the
//! fingerprint, so replacing them makes this stage stale.

use std::path::PathBuf;

use super::{Name, StageId};
use crate::artifacts::download::*;
use crate::config::{DatasetConfig, LoadedConfig};
use crate::data::{hub, idx, Dataset, Split};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};

pub fn id(dataset: &str) -> String {
    StageId::Download(dataset.into()).to_string()
}

pub struct Download {
    name: Name,
    /// `local` resolved against the config's folder, and as the config spells it.
    local: Option<(PathBuf, PathBuf)>,
    /// The IDX files present when the plan was made: the files the stage declares (and the
    /// engine watches), so the run reads exactly those.
    planned: Vec<PathBuf>,
    cfg: DatasetConfig,
}

/// The spec of a dataset's download; none for a dataset the config does not have.
pub fn spec(config: &LoadedConfig, name: &str) -> Option<StageSpec> {
    let mut declared = super::Declared::default();
    let cfg = declared.declare(&format!("datasets.{name}"), config.config.datasets.get(name)?.clone());
    let local = cfg.local.as_ref().map(|p| (config.resolve(p), p.clone()));
    // The files read are the ones present when the plan is made: all four, or (Hub) none.
    let planned = local.as_ref().and_then(|(dir, _)| idx::files(dir).ok()).unwrap_or_default();
    let mut spec = declared
        .spec(id(name), Download { name: name.into(), local: local.clone(), planned: planned.clone(), cfg })
        .outputs(&[OUTPUT, SUMMARY]);
    if let Some((_, setting)) = &local {
        for path in planned {
            let name = setting.join(path.file_name().expect("a file")).display().to_string();
            spec = spec.file(name, path);
        }
    }
    Some(spec)
}

impl StageKind for Download {
    fn kind(&self) -> &'static str {
        "download"
    }

    /// 2: any image shape and class count; images stored [N, C, H, W]; typed dataset.json.
    fn version(&self) -> u32 {
        2
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let key = format!("datasets.{}", self.name);
        // Read exactly the files the plan declared (and the engine hashed): a file added or
        // removed since then would be read unwatched, or the Hub used in its place.
        if let Some((dir, _)) = &self.local {
            let now = idx::files(dir).unwrap_or_default();
            anyhow::ensure!(
                now == self.planned,
                "{}: the IDX files in {} changed while the pipeline was being planned and run; run again",
                ctx.stage_id,
                dir.display()
            );
        }
        let (data, source) = match &self.local {
            Some((dir, setting)) if idx::present(dir) => {
                let (data, sums) = idx::read_dir(dir)?;
                if self.name.as_ref() == "mnist" && sums.iter().any(|c| !c.canonical_mnist) {
                    tracing::warn!("{}: the IDX files are not the canonical MNIST files (checksums differ)", dir.display());
                }
                (data, Source::Local { path: setting.display().to_string(), checksums: sums })
            }
            other => {
                // Say why the Hub is used when a local folder was configured.
                let why = other.as_ref().map(|(dir, setting)| {
                    let setting = setting.display();
                    match idx::files(dir) {
                        _ if !dir.is_dir() => format!("{key}.local ({setting}) does not exist"),
                        Err(missing) => format!("{key}.local ({setting}) lacks {} (.gz or plain)", missing.join(", ")),
                        Ok(_) => format!("{key}.local ({setting}) is incomplete"),
                    }
                });
                let Some(hub_cfg) = &self.cfg.hub else {
                    anyhow::bail!("{}; {key} has no hub source to fall back on", why.unwrap_or_else(|| format!("{key} has no source")));
                };
                if let Some(why) = &why {
                    tracing::info!("{why}; using the Hub");
                }
                let (data, fetched) = hub::fetch(hub_cfg, &format!("{key}.hub")).map_err(|e| match &why {
                    Some(why) => e.context(format!("{why}, so the Hub ({}) was tried and failed", hub_cfg.repo)),
                    None => e,
                })?;
                let source = Source::Hub { repo: hub_cfg.repo.clone(), revision: hub_cfg.revision.clone(), files: fetched };
                check_unchanged(ctx, &key, &source)?;
                // The labels' rule, naming the parquet file (the IDX reader names its files).
                let file = |f: &crate::config::HubFile| format!("{}/{}", hub_cfg.repo, f.file);
                data.check_labels(&file(&hub_cfg.train), &file(&hub_cfg.test)).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
                (data, source)
            }
        };
        data.check().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        data.write(&ctx.output(OUTPUT))?;
        let classes = data.classes();
        let summary = DatasetSummary {
            dataset: self.name.to_string(),
            source,
            shape: data.shape(),
            classes,
            train: split_summary(&data.train, classes),
            test: split_summary(&data.test, classes),
        };
        super::write_json(&ctx.output(SUMMARY), &summary)?;
        tracing::info!("{}: {} train, {} test images of {}, {classes} classes", self.name, data.train.len(), data.test.len(), data.shape());
        Ok(StageReport { device: Some("cpu".into()) })
    }
}

/// A Hub file without a pinned sha256 must give the bytes this stage recorded last time for
/// the same repository and revision: a pinned commit that serves other bytes is a loud error.
fn check_unchanged(ctx: &StageContext<'_>, key: &str, source: &Source) -> anyhow::Result<()> {
    let Source::Hub { repo, revision, files } = source else { return Ok(()) };
    let Some(previous) = ctx.previous(SUMMARY).and_then(|p| DatasetSummary::read(&p).ok()) else { return Ok(()) };
    let Source::Hub { repo: r0, revision: v0, files: before } = previous.source else { return Ok(()) };
    if (&r0, &v0) != (repo, revision) {
        return Ok(());
    }
    for f in files.iter().filter(|f| !f.pinned) {
        if let Some(old) = before.iter().find(|b| b.file == f.file && b.sha256 != f.sha256) {
            anyhow::bail!(
                "{repo}/{} at {revision} now has sha256 {}, but the last run recorded {}: the data changed under a pinned revision. \
                 Pin the sha256 you trust in {key}.hub, or delete the Hub cache's copy",
                f.file,
                f.sha256,
                old.sha256
            );
        }
    }
    Ok(())
}

fn split_summary(split: &Split, classes: usize) -> SplitSummary {
    SplitSummary { count: split.len(), labels: split.label_counts(classes) }
}

/// Reads the dataset this run produced for `dataset`.
pub fn read(ctx: &StageContext<'_>, dataset: &str) -> anyhow::Result<Dataset> {
    Dataset::read(ctx.input(&id(dataset), OUTPUT)?)
}
