//! The names of the pipeline's stages: [`StageId`] (every id is formatted here and nowhere
//! else) and the axes it is made of: a run (dataset x model x training seed), a baseline, a
//! subject (what is clustered), a representation (a subject, or its UMAP embedding).

use std::sync::Arc;

use super::cluster::Clustering;
use crate::config::{BaselineKind, LoadedConfig, View};

/// A dataset or model name from the config (cheap to clone into every id).
pub type Name = Arc<str>;

/// Every stage id of the pipeline. Ids are formatted here and nowhere else.
///
/// Per dataset `d`: `download-<d>`; per model `m` and training seed `s`: `train-<d>-<m>-s<s>`,
/// `encode-<d>-<m>-s<s>`, `pca-<d>-<m>-s<s>`; per baseline: `baseline-<d>-pixels`,
/// `baseline-<d>-pixels-pca<n>`; per clustered representation and k-means seed `k`:
/// `kmeans-<d>-<m>-s<s>-<k>`, `kmeans-<d>-pixels-<k>`, `kmeans-<d>-pixels-pca<n>-<k>`; with
/// `embed.umap`, `umap-<subject>` and every clustering again on `<subject>-umap`
/// (`kmeans-mnist-conv-s42-umap-0`); the other methods: `gmm-<rep>-<seed>`,
/// `agglomerative-<rep>`, `hdbscan-<rep>`, `select-k-<rep>`; the 2-D views
/// `view-umap-<run>`, `view-tsne-<run>`; then `score` and `plot`. Every axis is in every id, so adding a dataset, a model, a seed or a
/// baseline never renames a stage. Config validation keeps two (dataset, model) pairs from
/// spelling the same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StageId {
    Download(Name),
    Train(Run),
    Encode(Run),
    Pca(Run),
    Baseline(Name, Baseline),
    Umap(Subject),
    View(View, Run),
    /// `<method>-<rep>[-<seed>]`: every clustering method (see [`cluster::Method`]).
    Cluster(Clustering),
    SelectK(Rep),
    Score,
    Plot,
}

/// The id of the `score` stage ([`StageId::Score`]).
pub const SCORE: &str = "score";
/// The id of the `plot` stage ([`StageId::Plot`]).
pub const PLOT: &str = "plot";

/// One trained model: a dataset, a model and a training seed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Run {
    pub dataset: Name,
    pub model: Name,
    pub seed: u64,
}

impl Run {
    pub fn new(dataset: &str, model: &str, seed: u64) -> Self {
        Self { dataset: dataset.into(), model: model.into(), seed }
    }

    /// `mnist-simple-s42`.
    pub fn tag(&self) -> String {
        format!("{}-{}-s{}", self.dataset, self.model, self.seed)
    }

    /// Every (dataset, model, training seed) of the config, in plan order.
    pub fn all(config: &LoadedConfig) -> Vec<Run> {
        let c = &config.config;
        let mut out = Vec::new();
        for d in c.datasets.keys() {
            for m in c.models.keys() {
                out.extend(c.train.seeds.iter().map(|&s| Run::new(d, m, s)));
            }
        }
        out
    }
}

/// A representation clustered without training: the control a latent space must beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// The raw pixels.
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

    /// The baselines of the config: raw pixels, and PCA of the pixels at each model's latent
    /// size ("does the autoencoder beat PCA at the same dimension?").
    pub fn all(config: &LoadedConfig) -> Vec<Baseline> {
        let mut out = Vec::new();
        for kind in &config.config.baselines {
            match kind {
                BaselineKind::Pixels => out.push(Baseline::Pixels),
                BaselineKind::PixelsPca => {
                    let mut dims: Vec<usize> = config.config.models.values().map(|m| m.architecture().latent_dim()).collect();
                    dims.sort_unstable();
                    dims.dedup();
                    out.extend(dims.into_iter().map(Baseline::PixelsPca));
                }
            }
        }
        out
    }
}

/// What a k-means stage clusters: a trained model's latents or a dataset's baseline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Model(Run),
    Baseline(Name, Baseline),
}

impl Subject {
    /// `mnist-simple-s42`, `mnist-pixels-pca9`.
    pub fn tag(&self) -> String {
        match self {
            Subject::Model(r) => r.tag(),
            Subject::Baseline(d, b) => format!("{d}-{}", b.tag()),
        }
    }

    /// The stage whose `latent.safetensors` holds the vectors to cluster.
    pub fn source(&self) -> String {
        match self {
            Subject::Model(r) => StageId::Encode(r.clone()).to_string(),
            Subject::Baseline(d, b) => StageId::Baseline(d.clone(), *b).to_string(),
        }
    }

    /// The row name in the metrics, within its dataset: the model (`simple`) or the
    /// baseline (`pixels-pca9`).
    pub fn name(&self) -> String {
        match self {
            Subject::Model(r) => r.model.to_string(),
            Subject::Baseline(_, b) => b.tag(),
        }
    }

    /// The dataset it belongs to.
    pub fn dataset(&self) -> &str {
        match self {
            Subject::Model(r) => &r.dataset,
            Subject::Baseline(d, _) => d,
        }
    }

    /// Every representation of the config: each run, then each dataset's baselines.
    pub fn all(config: &LoadedConfig) -> Vec<Subject> {
        let mut out: Vec<Subject> = Run::all(config).into_iter().map(Subject::Model).collect();
        for d in config.config.datasets.keys() {
            out.extend(Baseline::all(config).into_iter().map(|b| Subject::Baseline(d.as_str().into(), b)));
        }
        out
    }
}

/// What a clustering stage clusters: a subject's vectors, or their UMAP embedding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rep {
    pub subject: Subject,
    pub umap: bool,
}

impl Rep {
    pub fn raw(subject: Subject) -> Self {
        Self { subject, umap: false }
    }

    /// `mnist-conv-s42`, `mnist-conv-s42-umap`.
    pub fn tag(&self) -> String {
        format!("{}{}", self.subject.tag(), if self.umap { "-umap" } else { "" })
    }

    /// The stage whose `latent.safetensors` holds the vectors to cluster.
    pub fn source(&self) -> String {
        match self.umap {
            true => StageId::Umap(self.subject.clone()).to_string(),
            false => self.subject.source(),
        }
    }

    /// The embedding in between, as the metrics name it (`umap`), if any.
    pub fn embed(&self) -> Option<&'static str> {
        self.umap.then_some("umap")
    }

    /// Whether the report shows it: a baseline, or a run of the first training seed (the
    /// views and k-selection curves are drawn, so computed, for those only).
    pub fn shown(&self, config: &LoadedConfig) -> bool {
        match &self.subject {
            Subject::Model(run) => run.seed == config.config.train.seeds[0],
            Subject::Baseline(..) => true,
        }
    }

    /// Every representation: each subject, then (with `embed.umap`) each subject's UMAP.
    pub fn all(config: &LoadedConfig) -> Vec<Rep> {
        let subjects = Subject::all(config);
        let mut out: Vec<Rep> = subjects.iter().cloned().map(Rep::raw).collect();
        if config.config.embed.umap.is_some() {
            out.extend(subjects.into_iter().map(|subject| Rep { subject, umap: true }));
        }
        out
    }
}

/// A 2-D view's name in ids and file names.
pub fn view_name(view: View) -> &'static str {
    match view {
        View::Pca => "pca",
        View::Umap => "umap",
        View::Tsne => "tsne",
    }
}

/// The order in which the config lists what `score` and `plot` go through (datasets, models,
/// subjects, representations, views), as a param of theirs: their outputs follow that order,
/// and their inputs (a map sorted by key) cannot carry it, so without it reordering `models:`
/// would leave them "fresh" with other bytes than a run would write.
pub fn order_param(config: &LoadedConfig) -> serde_json::Value {
    let c = &config.config;
    serde_json::json!({
        "datasets": c.datasets.keys().map(|d| d.to_string()).collect::<Vec<_>>(),
        "models": c.models.keys().map(|m| m.to_string()).collect::<Vec<_>>(),
        "subjects": Subject::all(config).iter().map(Subject::tag).collect::<Vec<_>>(),
        "reps": Rep::all(config).iter().map(Rep::tag).collect::<Vec<_>>(),
        "views": c.views.iter().map(|&v| view_name(v)).collect::<Vec<_>>(),
    })
}

/// The views drawn by their own stages (PCA is the `pca-*` stages).
pub fn extra_views(config: &LoadedConfig) -> Vec<View> {
    config.config.views.iter().copied().filter(|&v| v != View::Pca).collect()
}

impl std::fmt::Display for StageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageId::Download(d) => write!(f, "download-{d}"),
            StageId::Train(r) => write!(f, "train-{}", r.tag()),
            StageId::Encode(r) => write!(f, "encode-{}", r.tag()),
            StageId::Pca(r) => write!(f, "pca-{}", r.tag()),
            StageId::Baseline(d, b) => write!(f, "baseline-{d}-{}", b.tag()),
            StageId::Umap(subject) => write!(f, "umap-{}", subject.tag()),
            StageId::View(view, r) => write!(f, "view-{}-{}", view_name(*view), r.tag()),
            StageId::Cluster(clustering) => clustering.fmt(f),
            StageId::SelectK(rep) => write!(f, "select-k-{}", rep.tag()),
            StageId::Score => f.write_str(SCORE),
            StageId::Plot => f.write_str(PLOT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::Method;

    #[test]
    fn stage_ids_carry_every_axis() {
        let r = Run::new("fashion-mnist", "conv", 42);
        let p9 = Subject::Baseline("mnist".into(), Baseline::PixelsPca(9));
        assert_eq!(StageId::Download("mnist".into()).to_string(), "download-mnist");
        assert_eq!(StageId::Train(r.clone()).to_string(), "train-fashion-mnist-conv-s42");
        let cluster = |method, rep: &Rep, seed| StageId::Cluster(Clustering { method, rep: rep.clone(), seed }).to_string();
        assert_eq!(cluster(Method::Kmeans, &Rep::raw(Subject::Model(r.clone())), Some(7)), "kmeans-fashion-mnist-conv-s42-7");
        assert_eq!(cluster(Method::Kmeans, &Rep::raw(p9.clone()), Some(0)), "kmeans-mnist-pixels-pca9-0");
        let umap = Rep { subject: p9.clone(), umap: true };
        assert_eq!(cluster(Method::Gmm, &umap, Some(2)), "gmm-mnist-pixels-pca9-umap-2");
        assert_eq!(cluster(Method::Hdbscan, &umap, None), "hdbscan-mnist-pixels-pca9-umap");
        assert_eq!(cluster(Method::Agglomerative, &Rep::raw(p9.clone()), None), "agglomerative-mnist-pixels-pca9");
        assert_eq!(StageId::SelectK(umap).to_string(), "select-k-mnist-pixels-pca9-umap");
        assert_eq!(StageId::Umap(p9).to_string(), "umap-mnist-pixels-pca9");
        assert_eq!(StageId::View(View::Tsne, r).to_string(), "view-tsne-fashion-mnist-conv-s42");
        assert_eq!(StageId::Baseline("mnist".into(), Baseline::Pixels).to_string(), "baseline-mnist-pixels");
    }
}
