//! The stage kinds of the experiment, one file each, and [`plan`], which turns a config into
//! the list of stage specs that the engine runs. Each stage reads only the config keys it
//! declares here, so an edit re-runs exactly the stages that read the edited key.

pub mod baseline;
pub mod cluster;
pub mod download;
pub mod encode;
pub mod pca;
pub mod plot;
pub mod score;
pub mod select_k;
pub mod train;
pub mod umap;
pub mod view;

use std::sync::Arc;

pub use cluster::{kmeans, Clustering, Method};

use crate::config::{BaselineKind, LoadedConfig, View};
use crate::pipeline::StageSpec;

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
            StageId::Score => f.write_str(score::ID),
            StageId::Plot => f.write_str(plot::ID),
        }
    }
}

/// Every stage id for this config, in plan order (see [`StageId`]).
pub fn stage_ids(config: &LoadedConfig) -> Vec<StageId> {
    let runs = Run::all(config);
    let mut ids: Vec<StageId> = config.config.datasets.keys().map(|d| StageId::Download(d.as_str().into())).collect();
    ids.extend(runs.iter().cloned().map(StageId::Train));
    ids.extend(runs.iter().cloned().map(StageId::Encode));
    ids.extend(runs.iter().cloned().map(StageId::Pca));
    let subjects = Subject::all(config);
    ids.extend(subjects.iter().filter_map(|s| match s {
        Subject::Baseline(d, b) => Some(StageId::Baseline(d.clone(), *b)),
        Subject::Model(_) => None,
    }));
    if config.config.embed.umap.is_some() {
        ids.extend(subjects.iter().cloned().map(StageId::Umap));
    }
    // The views of the first training seed's models: the report draws those.
    for view in extra_views(config) {
        ids.extend(runs.iter().filter(|r| r.seed == config.config.train.seeds[0]).cloned().map(|r| StageId::View(view, r)));
    }
    for rep in Rep::all(config) {
        ids.extend(Clustering::all_of(&config.config, &rep).into_iter().map(StageId::Cluster));
        if config.config.select_k.is_some() && rep.shown(config) {
            ids.push(StageId::SelectK(rep));
        }
    }
    ids.push(StageId::Score);
    ids.push(StageId::Plot);
    ids
}

/// Every stage of the pipeline for this config, in declaration order (see [`StageId`]).
pub fn plan(config: &LoadedConfig) -> Vec<StageSpec> {
    stage_ids(config).into_iter().filter_map(|id| spec(config, id)).collect()
}

/// The spec of one stage; none for a stage whose settings the config lacks (not one of
/// [`stage_ids`]).
fn spec(config: &LoadedConfig, id: StageId) -> Option<StageSpec> {
    Some(match id {
        StageId::Download(d) => return download::spec(config, &d),
        StageId::Train(r) => return train::spec(config, r),
        StageId::Encode(r) => encode::spec(config, r),
        StageId::Pca(r) => pca::spec(config, r),
        StageId::Baseline(d, b) => baseline::spec(config, d, b),
        StageId::Umap(s) => umap::spec(config.config.embed.umap.as_ref()?, s),
        StageId::View(v, r) => return view::spec(config, v, r),
        StageId::Cluster(Clustering { method, rep, seed }) => return method.spec(config, rep, seed),
        StageId::SelectK(rep) => select_k::spec(config.config.select_k.as_ref()?, rep),
        StageId::Score => score::spec(config),
        StageId::Plot => plot::spec(config),
    })
}

/// Checks, before anything runs, that every model fits every dataset whose image shape is
/// known without downloading (local IDX files); Hub datasets are checked by training itself,
/// before its first step.
pub fn check_shapes(config: &LoadedConfig) -> anyhow::Result<()> {
    for (dname, d) in &config.config.datasets {
        let Some(local) = &d.local else { continue };
        let Some(shape) = crate::data::idx::image_shape(&config.resolve(local)) else { continue };
        for (mname, m) in &config.config.models {
            if let Err(why) = m.architecture().check(shape) {
                anyhow::bail!("{}: model {mname} does not fit dataset {dname}: {why}", config.path.display());
            }
        }
    }
    Ok(())
}

/// Reads a JSON artefact; errors name the file.
/// A JSON output of a finished run, read through [`crate::pipeline::finished::FinishedRun`]
/// (hash-checked) into the serde type its stage writes; the error names stage and file.
pub fn read_output<T: serde::de::DeserializeOwned>(
    run: &crate::pipeline::finished::FinishedRun,
    stage: &str,
    file: &str,
) -> anyhow::Result<T> {
    let bytes = run.read(stage, file)?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{stage}/{file}: not what this latentscope writes there: {e}"))
}

pub(crate) fn read_json(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))
}

/// Declares the resolved device a training or encoding stage computes on (`device: cpu`,
/// `cuda`, `metal`) and hands it back: devices give different bits, so each has its own
/// fingerprint, and `auto` resolving to the CPU is the same stage as `cpu`.
pub(crate) fn declare_device(declared: &mut Declared, config: &LoadedConfig) -> crate::config::DeviceChoice {
    declared.declare("device", crate::models::device::resolve(config.config.device))
}

/// The params a stage declares, built from its typed settings: [`Declared::declare`] puts a
/// value into the params under its config key and hands it back, so what a stage keeps of the
/// config is what its fingerprint covers, by construction.
#[derive(Default)]
pub(crate) struct Declared(crate::pipeline::Params);

impl Declared {
    /// Declares `value` under the config key `key` (an object as one param per dotted key,
    /// as the config's own tree flattens) and hands it back.
    pub fn declare<T: serde::Serialize>(&mut self, key: &str, value: T) -> T {
        let node = serde_json::to_value(&value).expect("settings are plain data and serialise");
        crate::config::flatten(key, &node, &mut self.0);
        value
    }

    /// The spec of stage `id` running `kind`, declaring these params.
    pub fn spec(self, id: impl Into<String>, kind: impl crate::pipeline::StageKind + 'static) -> StageSpec {
        stage(id, kind).params(self.0)
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

    /// What stages declare from their typed settings is the config's own value under each key
    /// (so fingerprints are what they were when stages read the config tree): every param of
    /// every stage of a config with every method on, against the tree, and the key set of one
    /// stage of each kind.
    #[test]
    fn stages_declare_the_configs_values_under_its_keys() {
        let sets: Vec<String> = ["baselines=[pixels, pixels-pca]", "cluster.dbscan={eps: 1.5}", "train.limit=300", "train.seeds=[1, 2]"]
            .map(str::to_owned)
            .to_vec();
        let config = LoadedConfig::from_yaml(include_str!("../../pipeline.yaml"), std::path::Path::new("pipeline.yaml"), &sets).unwrap();
        let plan = plan(&config);
        assert_eq!(plan.len(), stage_ids(&config).len(), "every id has a spec");
        for spec in &plan {
            for (key, value) in &spec.params {
                let Some(tree) = crate::config::lookup(config.tree(), key) else { continue };
                // A seeded stage declares its own seed, the 2-D UMAP view two components, a
                // stage on a device the one `auto` resolves to.
                let own = key == "device"
                    || (key == "cluster.gmm.seeds" && spec.id.starts_with("gmm-"))
                    || (key == "embed.umap.components" && spec.id.starts_with("view-umap-"));
                assert!(own || value == tree, "{}: {key} = {value}, the config says {tree}", spec.id);
            }
        }
        let keys = |id: &str| -> Vec<String> {
            let spec = plan.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no stage {id}"));
            spec.params.keys().cloned().collect()
        };
        let tree = |prefixes: &[&str], extra: &[&str]| -> Vec<String> {
            let mut out: Vec<String> = config.params(prefixes).into_keys().chain(extra.iter().map(|k| k.to_string())).collect();
            out.sort();
            out
        };
        assert_eq!(keys("train-mnist-conv-s1"), tree(&["models.conv", "train.limit"], &["device", "seed"]));
        assert_eq!(keys("encode-mnist-conv-s1"), tree(&["plot.samples"], &["device"]));
        assert_eq!(keys("download-mnist"), tree(&["datasets.mnist"], &[]));
        assert_eq!(keys("kmeans-mnist-conv-s1-umap-3"), tree(&["kmeans.k", "kmeans.max_iter", "kmeans.tol"], &["kmeans.seed"]));
        assert_eq!(keys("gmm-mnist-pixels-pca9-2"), tree(&["cluster.gmm"], &[]));
        for (id, key) in [
            ("agglomerative-mnist-conv-s2", "cluster.agglomerative"),
            ("hdbscan-mnist-conv-s2", "cluster.hdbscan"),
            ("dbscan-mnist-pixels", "cluster.dbscan"),
            ("umap-mnist-simple-s1", "embed.umap"),
            ("view-umap-mnist-simple-s1", "embed.umap"),
            ("view-tsne-mnist-simple-s1", "embed.tsne"),
            ("select-k-mnist-conv-s1", "select_k"),
            ("pca-mnist-conv-s2", "pca"),
        ] {
            assert_eq!(keys(id), tree(&[key], &[]), "{id}");
        }
        assert_eq!(keys("baseline-mnist-pixels-pca9"), tree(&["train.limit"], &["baseline", "baseline.components"]));
        assert_eq!(keys("baseline-mnist-pixels"), ["baseline"]);
        assert_eq!(keys("score"), tree(&["kmeans.seeds", "kmeans.k", "train.seeds", "cluster.gmm.seeds"], &["order"]));
        assert_eq!(keys("plot"), tree(&["plot"], &["order", "plot.training_seed"]));
    }

    #[test]
    fn non_finite_values_are_refused_with_the_stage_and_count() {
        assert!(ensure_finite("pca-mnist-conv-s42", "PCA values", [1.0, 2.0]).is_ok());
        let e = ensure_finite("pca-mnist-conv-s42", "PCA values", [1.0, f32::NAN, f32::INFINITY]).unwrap_err().to_string();
        assert_eq!(e, "pca-mnist-conv-s42: 2 of 3 PCA values are NaN or infinite; nothing was committed");
    }
}
