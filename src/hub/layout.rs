//! Where each artefact lives in a published repository, and the manifest that lists them.
//!
//! ```text
//! README.md                          model card
//! latentscope.json                   this manifest: every other file with its size, sha256 and stage
//! pipeline.yaml                      the effective configuration (overrides applied)
//! pipeline.lock                      the lock file (mtimes zeroed): every stage's record
//! metrics.json                       score
//! models/<d>/<m>/s<t>/               train-<d>-<m>-s<t>: model.safetensors, config.json, history.json, metrics.json
//! latents/<d>/<m>/s<t>/              encode-<d>-<m>-s<t>: latent.safetensors, reconstructions.safetensors
//! pca/<d>/<m>/s<t>/                  pca-<d>-<m>-s<t>: pca.safetensors, pca.json
//! kmeans/<d>/<m>/s<t>/seed-<n>/      kmeans-<d>-<m>-s<t>-<n>: assignments.safetensors, kmeans.json
//! baselines/<d>/pixels-pca<k>/       baseline-<d>-pixels-pca<k>: latent.safetensors
//! kmeans/<d>/<baseline>/seed-<n>/    kmeans-<d>-<baseline>-<n>
//! report/                            plot: report.md and the figures
//! ```
//! `download-<d>` and `baseline-<d>-pixels` are not published: their output is the dataset
//! itself, which every checkout gets from its source. A pull finds each file's stage in the
//! manifest, so it never parses a path or an id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stages::{Baseline, StageId, Subject};

pub const MANIFEST: &str = "latentscope.json";
pub const CARD: &str = "README.md";
pub const CONFIG: &str = "pipeline.yaml";
pub const LOCK: &str = "pipeline.lock";

/// The folder (no trailing `/`, empty for the root) of a stage's files, or `None` for a
/// stage that is not published.
pub fn stage_folder(id: &StageId) -> Option<String> {
    let run = |r: &crate::stages::Run| format!("{}/{}/s{}", r.dataset, r.model, r.seed);
    let subject = |s: &Subject| match s {
        Subject::Model(r) => run(r),
        Subject::Baseline(d, b) => format!("{d}/{}", b.tag()),
    };
    let rep = |r: &crate::stages::Rep| format!("{}{}", subject(&r.subject), if r.umap { "/umap" } else { "" });
    Some(match id {
        StageId::Download(_) | StageId::Baseline(_, Baseline::Pixels) => return None,
        StageId::Score => String::new(),
        StageId::Plot => "report".into(),
        StageId::Train(r) => format!("models/{}", run(r)),
        StageId::Encode(r) => format!("latents/{}", run(r)),
        StageId::Pca(r) => format!("pca/{}", run(r)),
        StageId::Baseline(d, b) => format!("baselines/{d}/{}", b.tag()),
        StageId::Umap(s) => format!("umap/{}", subject(s)),
        StageId::View(v, r) => format!("views/{}/{}", crate::stages::view_name(*v), run(r)),
        StageId::Cluster(c) => {
            format!("{}/{}{}", c.method.key(), rep(&c.rep), c.seed.map(|s| format!("/seed-{s}")).unwrap_or_default())
        }
        StageId::SelectK(r) => format!("select-k/{}", rep(r)),
    })
}

/// Every published stage of this config: id -> folder.
pub fn published_stages(config: &crate::config::LoadedConfig) -> BTreeMap<String, String> {
    crate::stages::stage_ids(config).into_iter().filter_map(|id| Some((id.to_string(), stage_folder(&id)?))).collect()
}

/// The repository path of output `file` in `folder`.
pub fn repo_path(folder: &str, file: &str) -> String {
    if folder.is_empty() {
        file.to_owned()
    } else {
        format!("{folder}/{file}")
    }
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
    fn every_stage_of_a_matrix_plan_has_a_distinct_place() {
        let sets = [
            "baselines=[pixels, pixels-pca]".to_owned(),
            "train.seeds=[1, 2]".to_owned(),
            "datasets.fashion-mnist={local: data/fashion}".to_owned(),
            "cluster.dbscan={eps: 1.5}".to_owned(),
        ];
        let text = include_str!("../../pipeline.yaml").replace("datasets:", "datasets:\n  fashion-mnist: {local: data/fashion}");
        let config =
            crate::config::LoadedConfig::from_yaml(&text, std::path::Path::new("pipeline.yaml"), &[&sets[..2], &sets[3..]].concat())
                .unwrap();
        let folders = published_stages(&config);
        let mut seen = std::collections::BTreeSet::new();
        for spec in crate::stages::plan(&config) {
            let Some(folder) = folders.get(&spec.id) else {
                assert!(spec.id.starts_with("download-") || spec.id.ends_with("-pixels"), "{} is not published", spec.id);
                continue;
            };
            for file in &spec.outputs {
                assert!(seen.insert(repo_path(folder, file)), "{}/{file} collides", spec.id);
            }
        }
        assert_eq!(folders["kmeans-mnist-conv-s2-7"], "kmeans/mnist/conv/s2/seed-7");
        assert_eq!(folders["kmeans-fashion-mnist-pixels-pca9-3"], "kmeans/fashion-mnist/pixels-pca9/seed-3");
        assert_eq!(folders["dbscan-mnist-conv-s2-umap"], "dbscan/mnist/conv/s2/umap");
        assert_eq!(folders["gmm-mnist-pixels-pca9-umap-1"], "gmm/mnist/pixels-pca9/umap/seed-1");
        assert_eq!(folders["train-fashion-mnist-simple-s1"], "models/fashion-mnist/simple/s1");
        assert_eq!(repo_path(&folders["score"], "metrics.json"), "metrics.json");
        assert!(!folders.contains_key("baseline-mnist-pixels") && !folders.contains_key("download-mnist"));
    }
}
