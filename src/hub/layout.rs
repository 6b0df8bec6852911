//! Where each artefact lives in a published repository, and the manifest that lists them.
//!
//! ```text
//! README.md                          model card
//! latentscope.json                   this manifest: every other file with its size and sha256
//! pipeline.yaml                      the effective configuration (overrides applied)
//! pipeline.lock                      the lock file (mtimes zeroed): every stage's record
//! metrics.json                       score
//! models/<model>/s<t>/               train-<model>-s<t>: model.safetensors, config.json, history.json, metrics.json
//! latents/<model>/s<t>/              encode-<model>-s<t>: latent.safetensors, reconstructions.safetensors
//! pca/<model>/s<t>/                  pca-<model>-s<t>: pca.safetensors, pca.json
//! kmeans/<model>/s<t>/seed-<n>/      kmeans-<model>-s<t>-<n>: assignments.safetensors, kmeans.json
//! baselines/pixels-pca<d>/           baseline-pixels-pca<d>: latent.safetensors
//! kmeans/<baseline>/seed-<n>/        kmeans-<baseline>-<n>
//! report/                            plot: report.md and the figures
//! ```
//! `download` and `baseline-pixels` are not published: their output is MNIST itself, which
//! every checkout has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "latentscope.json";
pub const CARD: &str = "README.md";
pub const CONFIG: &str = "pipeline.yaml";
pub const LOCK: &str = "pipeline.lock";

/// Stages whose outputs are not published.
pub fn local_only(stage: &str) -> bool {
    crate::stages::StageId::parse(stage).is_some() && stage_folder(stage).is_none()
}

/// The folder (no trailing `/`, empty for the root) of a stage's files, or `None` for a
/// stage that is not published or that this layout does not know.
pub fn stage_folder(stage: &str) -> Option<String> {
    use crate::stages::{StageId, Subject};
    Some(match StageId::parse(stage)? {
        StageId::Download => return None,
        StageId::Score => String::new(),
        StageId::Plot => "report".into(),
        StageId::Train(r) => format!("models/{}/s{}", r.arch.name(), r.seed),
        StageId::Encode(r) => format!("latents/{}/s{}", r.arch.name(), r.seed),
        StageId::Pca(r) => format!("pca/{}/s{}", r.arch.name(), r.seed),
        // Derived from MNIST alone, like download's output: not published.
        StageId::Baseline(crate::stages::Baseline::Pixels) => return None,
        StageId::Baseline(b) => format!("baselines/{}", b.tag()),
        StageId::Kmeans(Subject::Model(r), k) => format!("kmeans/{}/s{}/seed-{k}", r.arch.name(), r.seed),
        StageId::Kmeans(Subject::Baseline(b), k) => format!("kmeans/{}/seed-{k}", b.tag()),
    })
}

/// The repository path of output `file` of `stage`.
pub fn repo_path(stage: &str, file: &str) -> Option<String> {
    stage_folder(stage).map(|folder| if folder.is_empty() { file.to_owned() } else { format!("{folder}/{file}") })
}

/// One file of a published repository, as listed in `latentscope.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub size: u64,
    pub sha256: String,
    /// The stage whose output this is (absent for the card, config, lock and config.json files).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stage: Option<String>,
}

/// `latentscope.json`: what latentscope published. Two publishes of the same run produce the
/// same manifest, which is how a re-publish knows the remote is up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub tool: String,
    pub files: BTreeMap<String, ManifestFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_of_the_default_plan_has_a_distinct_place() {
        let sets = ["baselines=[pixels, pixels-pca]".to_owned(), "train.seeds=[1, 2]".to_owned()];
        let config =
            crate::config::LoadedConfig::from_yaml(include_str!("../../pipeline.yaml"), std::path::Path::new("pipeline.yaml"), &sets)
                .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for spec in crate::stages::plan(&config) {
            let folder = stage_folder(&spec.id);
            if local_only(&spec.id) {
                assert_eq!(folder, None);
                continue;
            }
            assert!(folder.is_some(), "{} has no place in the layout", spec.id);
            for file in &spec.outputs {
                assert!(seen.insert(repo_path(&spec.id, file).unwrap()), "{}/{file} collides", spec.id);
            }
        }
        assert_eq!(repo_path("kmeans-conv-s42-7", "kmeans.json").unwrap(), "kmeans/conv/s42/seed-7/kmeans.json");
        assert_eq!(repo_path("score", "metrics.json").unwrap(), "metrics.json");
        assert_eq!(repo_path("kmeans-pixels-pca9-3", "kmeans.json").unwrap(), "kmeans/pixels-pca9/seed-3/kmeans.json");
        assert_eq!(stage_folder("baseline-pixels"), None);
        assert_eq!(stage_folder("unknown"), None);
    }
}
