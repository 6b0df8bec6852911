//! `download`: the MNIST splits as `dataset.safetensors`, from `dataset.local` (IDX) when that
//! folder holds the files, else from the Hub. Both sources give byte-identical tensors, so a
//! change of source never invalidates training. The local files are declared inputs: their
//! content is part of the fingerprint, so replacing them makes this stage stale.

use std::path::PathBuf;

use serde_json::json;

use crate::config::{HubDataset, LoadedConfig};
use crate::data::{hub, idx, Dataset, Split};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};

pub const ID: &str = "download";
pub const OUTPUT: &str = "dataset.safetensors";
pub const SUMMARY: &str = "dataset.json";

pub struct Download {
    /// `dataset.local` resolved against the config's folder.
    local: Option<PathBuf>,
    local_setting: Option<PathBuf>,
    hub: HubDataset,
}

pub fn spec(config: &LoadedConfig) -> StageSpec {
    let ds = &config.config.dataset;
    let kind = Download { local: ds.local.as_deref().map(|p| config.resolve(p)), local_setting: ds.local.clone(), hub: ds.hub.clone() };
    let mut spec = super::stage(ID, kind).params(config.params(&["dataset"])).outputs(&[OUTPUT, SUMMARY]);
    // The files read are the ones present when the plan is made: all four, or (Hub) none.
    if let (Some(setting), Some(dir)) = (&ds.local, ds.local.as_deref().map(|p| config.resolve(p))) {
        for path in idx::files(&dir).unwrap_or_default() {
            let name = setting.join(path.file_name().expect("a file")).display().to_string();
            spec = spec.file(name, path);
        }
    }
    spec
}

impl StageKind for Download {
    fn kind(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let (data, source, checks) = match &self.local {
            Some(dir) if idx::present(dir) => {
                let (data, sums) = idx::read_dir(dir)?;
                if sums.iter().any(|c| !c.canonical_mnist) {
                    tracing::warn!("{}: the IDX files are not the canonical MNIST files (checksums differ)", dir.display());
                }
                let setting = self.local_setting.as_deref().unwrap_or(dir).display().to_string();
                (data, json!({"kind": "local", "path": setting}), serde_json::to_value(sums)?)
            }
            other => {
                // Say why the Hub is used when a local folder was configured.
                let why = other.as_ref().map(|dir| {
                    let dir = dir.as_path();
                    let setting = self.local_setting.as_deref().unwrap_or(dir).display().to_string();
                    match idx::files(dir) {
                        _ if !dir.is_dir() => format!("dataset.local ({setting}) does not exist"),
                        Err(missing) => format!("dataset.local ({setting}) lacks {} (.gz or plain)", missing.join(", ")),
                        Ok(_) => format!("dataset.local ({setting}) is incomplete"),
                    }
                });
                if let Some(why) = &why {
                    tracing::info!("{why}; using the Hub");
                }
                let (data, fetched) = hub::fetch(&self.hub).map_err(|e| match &why {
                    Some(why) => e.context(format!("{why}, so the Hub ({}) was tried and failed", self.hub.repo)),
                    None => e,
                })?;
                let source = json!({"kind": "hub", "repo": self.hub.repo, "revision": self.hub.revision});
                (data, source, serde_json::to_value(fetched)?)
            }
        };
        check_splits(&data)?;
        data.write(&ctx.output(OUTPUT))?;
        let summary = json!({
            "source": source,
            "train": split_summary(&data.train),
            "test": split_summary(&data.test),
            "checksums": checks,
        });
        super::write_json(&ctx.output(SUMMARY), &summary)?;
        tracing::info!("dataset: {} train, {} test images", data.train.len(), data.test.len());
        Ok(StageReport { device: Some("cpu".into()) })
    }
}

fn check_splits(data: &Dataset) -> anyhow::Result<()> {
    data.train.validate("train split")?;
    data.test.validate("test split")?;
    anyhow::ensure!(!data.train.is_empty() && !data.test.is_empty(), "the dataset has an empty split");
    Ok(())
}

fn split_summary(split: &Split) -> serde_json::Value {
    json!({"count": split.len(), "labels": split.label_counts()})
}
