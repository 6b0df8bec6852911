//! The stage kinds of the experiment, one file each, and [`plan`], which turns a config into
//! the list of stage specs that the engine runs. Each stage reads only the config keys it
//! declares here, so an edit re-runs exactly the stages that read the edited key.

pub mod download;
pub mod encode;
pub mod kmeans;
pub mod pca;
pub mod plot;
pub mod score;
pub mod train;

use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::models::Arch;
use crate::pipeline::StageSpec;

/// Every stage id of the pipeline. Ids are formatted, and parsed back, here and nowhere else.
///
/// `download`; per model and training seed `s`: `train-<model>-s<s>`, `encode-<model>-s<s>`,
/// `pca-<model>-s<s>` and, per k-means seed `k`, `kmeans-<model>-s<s>-<k>`; `score`; `plot`.
/// Every axis is in every id, so adding a seed or a model never renames a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageId {
    Download,
    Train(Run),
    Encode(Run),
    Pca(Run),
    Kmeans(Run, u64),
    Score,
    Plot,
}

/// One trained model: an architecture and a training seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub arch: Arch,
    pub seed: u64,
}

impl Run {
    pub fn new(arch: Arch, seed: u64) -> Self {
        Self { arch, seed }
    }

    /// `simple-s42`.
    pub fn tag(&self) -> String {
        format!("{}-s{}", self.arch.name(), self.seed)
    }

    /// Every model of the config, per training seed, in plan order.
    pub fn all(config: &LoadedConfig) -> Vec<Run> {
        Arch::ALL.iter().flat_map(|&arch| config.config.train.seeds.iter().map(move |&seed| Run::new(arch, seed))).collect()
    }
}

impl std::fmt::Display for StageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageId::Download => f.write_str(download::ID),
            StageId::Train(r) => write!(f, "train-{}", r.tag()),
            StageId::Encode(r) => write!(f, "encode-{}", r.tag()),
            StageId::Pca(r) => write!(f, "pca-{}", r.tag()),
            StageId::Kmeans(r, k) => write!(f, "kmeans-{}-{k}", r.tag()),
            StageId::Score => f.write_str(score::ID),
            StageId::Plot => f.write_str(plot::ID),
        }
    }
}

impl StageId {
    /// The id that [`Display`](std::fmt::Display) wrote, or `None`.
    pub fn parse(id: &str) -> Option<Self> {
        match id {
            download::ID => return Some(StageId::Download),
            score::ID => return Some(StageId::Score),
            plot::ID => return Some(StageId::Plot),
            _ => {}
        }
        let (kind, rest) = id.split_once('-')?;
        let run = |tag: &str| -> Option<Run> {
            let (arch, seed) = tag.rsplit_once("-s")?;
            let arch = Arch::ALL.into_iter().find(|a| a.name() == arch)?;
            Some(Run::new(arch, seed.parse().ok()?))
        };
        let parsed = match kind {
            "train" => StageId::Train(run(rest)?),
            "encode" => StageId::Encode(run(rest)?),
            "pca" => StageId::Pca(run(rest)?),
            "kmeans" => {
                let (tag, k) = rest.rsplit_once('-')?;
                StageId::Kmeans(run(tag)?, k.parse().ok()?)
            }
            _ => return None,
        };
        // Only the canonical spelling (no `s042`, no `+1`).
        (parsed.to_string() == id).then_some(parsed)
    }
}

/// Every stage of the pipeline for this config, in declaration order (see [`StageId`]).
pub fn plan(config: &LoadedConfig) -> Vec<StageSpec> {
    let runs = Run::all(config);
    let mut stages = vec![download::spec(config)];
    stages.extend(runs.iter().map(|&r| train::spec(config, r)));
    stages.extend(runs.iter().map(|&r| encode::spec(config, r)));
    stages.extend(runs.iter().map(|&r| pca::spec(config, r)));
    for &run in &runs {
        stages.extend(config.config.kmeans.seeds.iter().map(|&k| kmeans::spec(config, run, k)));
    }
    stages.push(score::spec(config));
    stages.push(plot::spec(config));
    stages
}

/// Reads a JSON artefact; errors name the file.
pub(crate) fn read_json(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))
}

/// Declares the device a training or encoding stage computes on. The CPU is the reference
/// and adds nothing (so CPU fingerprints do not depend on the `device` setting); any other
/// device gives different bits, so it becomes a param (`device: cuda`) and a different
/// fingerprint.
pub(crate) fn on_device(spec: StageSpec, config: &LoadedConfig) -> StageSpec {
    match crate::models::device::resolve_kind(config.config.device) {
        "cpu" => spec,
        other => spec.param("device", other),
    }
}

/// Writes a stage output; the error names the file (a full disk, say).
pub(crate) fn write_file(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Writes `value` as pretty JSON with a final newline.
pub(crate) fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    write_file(path, serde_json::to_string_pretty(value)? + "\n")
}

/// Fails unless every value is finite, so that no stage commits NaN or infinity; the message
/// names the stage and what held them.
pub(crate) fn ensure_finite(stage: &str, what: &str, values: impl IntoIterator<Item = f32>) -> anyhow::Result<()> {
    let (mut bad, mut total) = (0usize, 0usize);
    for v in values {
        total += 1;
        bad += usize::from(!v.is_finite());
    }
    anyhow::ensure!(bad == 0, "{stage}: {bad} of {total} {what} are NaN or infinite; nothing was committed");
    Ok(())
}

/// Shorthand for building a spec whose kind is `kind`.
pub(crate) fn stage(id: impl Into<String>, kind: impl crate::pipeline::StageKind + 'static) -> StageSpec {
    StageSpec::new(id, Arc::new(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_ids_round_trip_and_reject_other_spellings() {
        let r = Run::new(Arch::Conv, 42);
        for id in [
            StageId::Download,
            StageId::Train(r),
            StageId::Encode(r),
            StageId::Pca(r),
            StageId::Kmeans(r, 7),
            StageId::Score,
            StageId::Plot,
        ] {
            assert_eq!(StageId::parse(&id.to_string()), Some(id), "{id}");
        }
        assert_eq!(StageId::Kmeans(r, 7).to_string(), "kmeans-conv-s42-7");
        for bad in ["train-conv", "train-conv-s042", "train-conv-s+1", "kmeans-conv-s42", "train-wide-s1", "nope"] {
            assert_eq!(StageId::parse(bad), None, "{bad}");
        }
    }
}
