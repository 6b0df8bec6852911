//! The stage kinds of the experiment, one file each, and [`plan`], which turns a config into
//! the list of stage specs that the engine runs. Each stage reads only the config keys it
//! declares here, so an edit re-runs exactly the stages that read the edited key.

pub mod baseline;
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
/// `pca-<model>-s<s>`; per baseline: `baseline-pixels`, `baseline-pixels-pca<d>`; per
/// clustered representation and k-means seed `k`: `kmeans-<model>-s<s>-<k>`,
/// `kmeans-pixels-<k>`, `kmeans-pixels-pca<d>-<k>`; `score`; `plot`. Every axis is in every
/// id, so adding a seed, a model or a baseline never renames a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageId {
    Download,
    Train(Run),
    Encode(Run),
    Pca(Run),
    Baseline(Baseline),
    Kmeans(Subject, u64),
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

/// A representation clustered without training: the control a latent space must beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The raw pixels (784-d).
    Pixels,
    /// PCA of the pixels (fit on the training images) to this many dimensions.
    PixelsPca(usize),
}

impl Baseline {
    /// `pixels`, `pixels-pca9`.
    pub fn tag(&self) -> String {
        match self {
            Baseline::Pixels => "pixels".into(),
            Baseline::PixelsPca(d) => format!("pixels-pca{d}"),
        }
    }

    fn parse(tag: &str) -> Option<Self> {
        match tag {
            "pixels" => Some(Baseline::Pixels),
            _ => Some(Baseline::PixelsPca(tag.strip_prefix("pixels-pca")?.parse().ok()?)),
        }
    }

    /// The baselines of the config: raw pixels, and PCA of the pixels at each model's latent
    /// size ("does the autoencoder beat PCA at the same dimension?").
    pub fn all(config: &LoadedConfig) -> Vec<Baseline> {
        let mut out = Vec::new();
        for kind in &config.config.baselines {
            match kind {
                crate::config::BaselineKind::Pixels => out.push(Baseline::Pixels),
                crate::config::BaselineKind::PixelsPca => {
                    let mut dims: Vec<usize> = Arch::ALL.iter().map(|a| a.latent_dim()).collect();
                    dims.sort_unstable();
                    dims.dedup();
                    out.extend(dims.into_iter().map(Baseline::PixelsPca));
                }
            }
        }
        out
    }
}

/// What a k-means stage clusters: a trained model's latents or a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Model(Run),
    Baseline(Baseline),
}

impl Subject {
    /// `simple-s42`, `pixels-pca9`.
    pub fn tag(&self) -> String {
        match self {
            Subject::Model(r) => r.tag(),
            Subject::Baseline(b) => b.tag(),
        }
    }

    /// The stage whose `latent.safetensors` holds the vectors to cluster.
    pub fn source(&self) -> String {
        match self {
            Subject::Model(r) => StageId::Encode(*r).to_string(),
            Subject::Baseline(b) => StageId::Baseline(*b).to_string(),
        }
    }

    /// The row name in the metrics: the model (`simple`) or the baseline (`pixels-pca9`).
    pub fn name(&self) -> String {
        match self {
            Subject::Model(r) => r.arch.name().to_owned(),
            Subject::Baseline(b) => b.tag(),
        }
    }

    fn parse(tag: &str) -> Option<Self> {
        if let Some((arch, seed)) = tag.rsplit_once("-s") {
            if let Some(arch) = Arch::ALL.into_iter().find(|a| a.name() == arch) {
                return Some(Subject::Model(Run::new(arch, seed.parse().ok()?)));
            }
        }
        Baseline::parse(tag).map(Subject::Baseline)
    }
}

impl std::fmt::Display for StageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageId::Download => f.write_str(download::ID),
            StageId::Train(r) => write!(f, "train-{}", r.tag()),
            StageId::Encode(r) => write!(f, "encode-{}", r.tag()),
            StageId::Pca(r) => write!(f, "pca-{}", r.tag()),
            StageId::Baseline(b) => write!(f, "baseline-{}", b.tag()),
            StageId::Kmeans(subject, k) => write!(f, "kmeans-{}-{k}", subject.tag()),
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
        let run = |tag: &str| match Subject::parse(tag)? {
            Subject::Model(r) => Some(r),
            Subject::Baseline(_) => None,
        };
        let parsed = match kind {
            "train" => StageId::Train(run(rest)?),
            "encode" => StageId::Encode(run(rest)?),
            "pca" => StageId::Pca(run(rest)?),
            "baseline" => StageId::Baseline(Baseline::parse(rest)?),
            "kmeans" => {
                let (tag, k) = rest.rsplit_once('-')?;
                StageId::Kmeans(Subject::parse(tag)?, k.parse().ok()?)
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
    let baselines = Baseline::all(config);
    stages.extend(baselines.iter().map(|&b| baseline::spec(config, b)));
    let subjects = runs.iter().map(|&r| Subject::Model(r)).chain(baselines.iter().map(|&b| Subject::Baseline(b)));
    for subject in subjects {
        stages.extend(config.config.kmeans.seeds.iter().map(|&k| kmeans::spec(config, subject, k)));
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
        let (m, p9) = (Subject::Model(r), Subject::Baseline(Baseline::PixelsPca(9)));
        for id in [
            StageId::Download,
            StageId::Train(r),
            StageId::Encode(r),
            StageId::Pca(r),
            StageId::Baseline(Baseline::Pixels),
            StageId::Baseline(Baseline::PixelsPca(9)),
            StageId::Kmeans(m, 7),
            StageId::Kmeans(p9, 0),
            StageId::Kmeans(Subject::Baseline(Baseline::Pixels), 3),
            StageId::Score,
            StageId::Plot,
        ] {
            assert_eq!(StageId::parse(&id.to_string()), Some(id), "{id}");
        }
        assert_eq!(StageId::Kmeans(m, 7).to_string(), "kmeans-conv-s42-7");
        assert_eq!(StageId::Kmeans(p9, 0).to_string(), "kmeans-pixels-pca9-0");
        let bad = ["train-conv", "train-conv-s042", "train-conv-s+1", "kmeans-conv-s42", "train-wide-s1", "nope"];
        for bad in bad.into_iter().chain(["train-pixels", "baseline-pixels-pca09", "kmeans-pixels", "baseline-conv-s42"]) {
            assert_eq!(StageId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn non_finite_values_are_refused_with_the_stage_and_count() {
        assert!(ensure_finite("pca-conv-s42", "PCA values", [1.0, 2.0]).is_ok());
        let e = ensure_finite("pca-conv-s42", "PCA values", [1.0, f32::NAN, f32::INFINITY]).unwrap_err().to_string();
        assert_eq!(e, "pca-conv-s42: 2 of 3 PCA values are NaN or infinite; nothing was committed");
    }
}
