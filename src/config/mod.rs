//! `pipeline.yaml`: the schema (this file: every section's type, with the checks of its own
//! values), `--set` overrides ([`overrides`]) and the checks across sections ([`validate`]).
//!
//! The file is parsed straight into [`Config`] (unknown keys and wrong types are errors with
//! the line and key), then each `--set dotted.key=value` override is applied to the config's
//! value tree and the tree is read back into [`Config`], so an override is checked exactly
//! like the file. Stages declare the typed settings they keep (`stages::Declared`), flattened
//! to dotted keys as the tree is.

mod overrides;
mod validate;

pub(crate) use overrides::flatten;
#[cfg(test)]
pub(crate) use overrides::lookup;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::Architecture;

pub use crate::pipeline::Params;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid override --set {assignment}: {message}")]
    Override { assignment: String, message: String },
    #[error("invalid config {path}: key {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
    /// A value that a `--set` override put there failed validation.
    #[error("invalid --set {key}: {message}")]
    InvalidOverride { key: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub device: DeviceChoice,
    /// Name -> source, in file order. Every dataset runs through every model.
    pub datasets: IndexMap<String, DatasetConfig>,
    pub train: TrainConfig,
    /// Name -> architecture and training settings, in file order.
    pub models: IndexMap<String, ModelConfig>,
    pub pca: PcaConfig,
    pub kmeans: KmeansConfig,
    /// Representations clustered and scored like the models' latents, as controls.
    #[serde(default)]
    pub baselines: Vec<BaselineKind>,
    pub plot: PlotConfig,
    /// Clustering methods besides k-means, each run on every representation.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Embeddings: `umap` (a representation of its own, clustered like the latents, and a
    /// 2-D view), `tsne` (2-D views only).
    #[serde(default)]
    pub embed: EmbedConfig,
    /// The 2-D views in the report besides PCA (`umap`, `tsne`; `pca` is always drawn).
    #[serde(default)]
    pub views: Vec<View>,
    /// Curves for choosing k without labels (inertia and silhouette over a range of k).
    #[serde(default)]
    pub select_k: Option<SelectKConfig>,
    /// What the report shows of each model, declared before the labels are seen.
    #[serde(default)]
    pub report: ReportConfig,
    /// Cluster settings for `run --executor slurm`: site settings, not experiment
    /// parameters, so no stage declares them and nothing publishes them.
    #[serde(default)]
    pub slurm: crate::pipeline::SlurmSettings,
}

/// A baseline: `pixels` (the raw pixels) or `pixels-pca` (PCA of the pixels, fit on the
/// training images, at each model's latent size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    Pixels,
    PixelsPca,
}

/// Where a dataset comes from: local IDX files (used first when present), else the Hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Directory of (gzip) IDX files, relative to the config file; used first when present.
    #[serde(default)]
    pub local: Option<PathBuf>,
    #[serde(default)]
    pub hub: Option<HubDataset>,
}

/// Parquet files of an image-classification dataset repository on the Hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubDataset {
    pub repo: String,
    /// A commit sha (40 hex digits): a branch or tag can move under a finished run.
    pub revision: String,
    pub train: HubFile,
    pub test: HubFile,
    #[serde(default)]
    pub columns: Columns,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    pub file: String,
    /// Optional: when absent the computed one is recorded in `dataset.json`, and a later
    /// download that gets other bytes fails.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// The parquet columns: an image (PNG or JPEG bytes, or a struct with a `bytes` field, as
/// the `datasets` library writes images) and an integer label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub image: String,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self { image: "image".into(), label: "label".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Training seeds: each model is trained once per seed (init and shuffling), and the
    /// report gives statistics over them.
    pub seeds: Vec<u64>,
    /// Use only the first N training images.
    pub limit: Option<usize>,
}

/// An architecture family; its sizes sit beside it in [`ModelConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchFamily {
    Mlp,
    Conv,
}

/// `models.<name>`: an architecture and how to train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: ArchFamily,
    /// mlp: layer widths from the input (channels x height x width) to the latent size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<Vec<usize>>,
    /// conv: output channels of each conv block (each halves the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<usize>>,
    /// conv: widths of the linear layers between the last block and the latent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<Vec<usize>>,
    /// conv: the latent size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

impl ModelConfig {
    /// The architecture these settings describe (checked by validation).
    pub fn architecture(&self) -> Architecture {
        self.try_architecture().expect("validated config")
    }

    /// The architecture, or the key that is missing or misplaced and why.
    fn try_architecture(&self) -> Result<Architecture, (&'static str, String)> {
        let family = format!("{:?}", self.arch).to_lowercase();
        let stray = |key: &'static str, set: bool| if set { Err((key, format!("is not a setting of arch {family}"))) } else { Ok(()) };
        let need = |key: &'static str| (key, format!("is required for arch {family}"));
        match self.arch {
            ArchFamily::Mlp => {
                stray("channels", self.channels.is_some())?;
                stray("dense", self.dense.is_some())?;
                stray("latent", self.latent.is_some())?;
                let encoder = self.encoder.clone().ok_or_else(|| need("encoder"))?;
                if encoder.len() < 2 || encoder.contains(&0) {
                    return Err(("encoder", "must list the input size and at least the latent size, none of them 0".into()));
                }
                Ok(Architecture::Mlp { encoder })
            }
            ArchFamily::Conv => {
                stray("encoder", self.encoder.is_some())?;
                let channels = self.channels.clone().ok_or_else(|| need("channels"))?;
                if channels.is_empty() || channels.contains(&0) || channels.len() > 8 {
                    return Err(("channels", "must list 1 to 8 positive channel counts".into()));
                }
                let dense = self.dense.clone().ok_or_else(|| need("dense"))?;
                if dense.contains(&0) {
                    return Err(("dense", "widths must be positive".into()));
                }
                let latent = self.latent.ok_or_else(|| need("latent"))?;
                if latent == 0 {
                    return Err(("latent", "must be at least 1".into()));
                }
                Ok(Architecture::Conv { channels, dense, latent })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaConfig {
    pub components: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmeansConfig {
    pub k: usize,
    pub seeds: Vec<u64>,
    /// Initialisations per seed, the lowest inertia kept: 10, as the notebook's scikit-learn
    /// (before 1.4) ran `KMeans(n_clusters=10, random_state=i)`.
    #[serde(default = "default_n_init")]
    pub n_init: usize,
    pub max_iter: usize,
    pub tol: f64,
}

fn default_n_init() -> usize {
    10
}

/// `cluster:`: every method present runs on every representation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default)]
    pub gmm: Option<GmmConfig>,
    #[serde(default)]
    pub agglomerative: Option<AgglomerativeConfig>,
    #[serde(default)]
    pub hdbscan: Option<HdbscanConfig>,
    #[serde(default)]
    pub dbscan: Option<DbscanConfig>,
}

impl ClusterConfig {
    /// The first bad setting of a method (its dotted key) and why.
    pub fn check(&self) -> Option<(String, String)> {
        let fail = |key: &str, message: &str| Some((key.to_owned(), message.to_owned()));
        if let Some(g) = &self.gmm {
            if g.k < 2 {
                return fail("cluster.gmm.k", "must be at least 2");
            }
            if let Some(bad) = check_seeds("cluster.gmm.seeds", &g.seeds) {
                return Some(bad);
            }
            if g.max_iter == 0 {
                return fail("cluster.gmm.max_iter", "must be at least 1");
            }
            if !(g.tol.is_finite() && g.tol > 0.0) {
                return fail("cluster.gmm.tol", "must be positive");
            }
            if !(g.reg_covar.is_finite() && g.reg_covar >= 0.0) {
                return fail("cluster.gmm.reg_covar", "must be zero or positive");
            }
        }
        if self.agglomerative.as_ref().is_some_and(|a| a.k < 2) {
            return fail("cluster.agglomerative.k", "must be at least 2");
        }
        if let Some(h) = &self.hdbscan {
            if h.min_cluster_size < 2 {
                return fail("cluster.hdbscan.min_cluster_size", "must be at least 2");
            }
            if h.min_samples == Some(0) {
                return fail("cluster.hdbscan.min_samples", "must be null or at least 1");
            }
        }
        if let Some(d) = &self.dbscan {
            if !(d.eps.is_finite() && d.eps > 0.0) {
                return fail("cluster.dbscan.eps", "must be positive");
            }
            if d.min_samples < 2 {
                return fail("cluster.dbscan.min_samples", "must be at least 2");
            }
        }
        None
    }
}

/// A seed list: at least one seed, none twice; else the key and why.
pub(crate) fn check_seeds(key: &str, seeds: &[u64]) -> Option<(String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    match seeds.iter().find(|s| !seen.insert(**s)) {
        _ if seeds.is_empty() => Some((key.to_owned(), "must list at least one seed".to_owned())),
        Some(dup) => Some((key.to_owned(), format!("seed {dup} is listed twice"))),
        None => None,
    }
}

/// A Gaussian mixture per seed (linfa-clustering; initialised from k-means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmmConfig {
    pub k: usize,
    pub seeds: Vec<u64>,
    /// Only `full` (linfa's one covariance type).
    #[serde(default)]
    pub covariance: Covariance,
    #[serde(default = "default_gmm_max_iter")]
    pub max_iter: usize,
    #[serde(default = "default_gmm_tol")]
    pub tol: f64,
    #[serde(default = "default_reg_covar")]
    pub reg_covar: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Covariance {
    #[default]
    Full,
}

fn default_gmm_max_iter() -> usize {
    100
}
fn default_gmm_tol() -> f64 {
    1e-3
}
fn default_reg_covar() -> f64 {
    1e-6
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgglomerativeConfig {
    pub k: usize,
    #[serde(default = "default_linkage")]
    pub linkage: crate::analysis::agglomerative::Linkage,
}

fn default_linkage() -> crate::analysis::agglomerative::Linkage {
    crate::analysis::agglomerative::Linkage::Ward
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HdbscanConfig {
    pub min_cluster_size: usize,
    /// Neighbours that make a point core; `null`: `min_cluster_size`.
    #[serde(default)]
    pub min_samples: Option<usize>,
}

/// DBSCAN (scikit-learn's `DBSCAN(eps, min_samples)`, Euclidean): `eps` is in the units of
/// the representation it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbscanConfig {
    /// The neighbourhood radius.
    pub eps: f64,
    /// Points within `eps` (the point itself counted) that make a point core.
    #[serde(default = "default_dbscan_min_samples")]
    pub min_samples: usize,
}

fn default_dbscan_min_samples() -> usize {
    5
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    #[serde(default)]
    pub umap: Option<UmapConfig>,
    #[serde(default)]
    pub tsne: Option<TsneConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UmapConfig {
    /// Dimensions of the embedding that is clustered (the 2-D view is a separate one).
    pub components: usize,
    #[serde(default = "default_neighbors")]
    pub neighbors: usize,
    #[serde(default = "default_min_dist")]
    pub min_dist: f64,
    #[serde(default)]
    pub seed: u64,
    /// `null`: 500 epochs up to 10,000 points, else 200 (umap-learn's default).
    #[serde(default)]
    pub epochs: Option<usize>,
}

fn default_neighbors() -> usize {
    15
}
fn default_min_dist() -> f64 {
    0.1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsneConfig {
    #[serde(default = "default_perplexity")]
    pub perplexity: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_tsne_iter")]
    pub max_iter: usize,
    /// Barnes-Hut accuracy: 0 exact, 0.5 scikit-learn's default.
    #[serde(default = "default_theta")]
    pub theta: f64,
}

fn default_perplexity() -> f64 {
    30.0
}
fn default_tsne_iter() -> usize {
    1000
}
fn default_theta() -> f64 {
    0.5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    Pca,
    Umap,
    Tsne,
}

/// `select_k: {method: kmeans, range: [2, 20]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectKConfig {
    #[serde(default)]
    pub method: SelectMethod,
    pub range: [usize; 2],
    #[serde(default)]
    pub seed: u64,
    /// Points sampled for the silhouette (O(n^2)); the inertia uses every point.
    #[serde(default = "default_silhouette_sample")]
    pub sample: usize,
    /// The clusterings' own iteration limit and tolerance (k-means' or EM's), so that a
    /// `kmeans:` edit does not re-run the k selection.
    #[serde(default = "default_select_max_iter")]
    pub max_iter: usize,
    #[serde(default = "default_select_tol")]
    pub tol: f64,
}

fn default_select_max_iter() -> usize {
    300
}
fn default_select_tol() -> f64 {
    1e-4
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectMethod {
    /// Inertia and silhouette of k-means.
    #[default]
    Kmeans,
    /// BIC and silhouette of a Gaussian mixture (full covariances).
    Gmm,
}

fn default_silhouette_sample() -> usize {
    2000
}

/// `report:`: the choices across methods and embeddings, declared, so that no headline is
/// chosen with the test labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The clustering the report's figures, the best-clusters grids and `best.safetensors`
    /// show for each model: a method and whether it runs on the UMAP embedding. Its seed is
    /// chosen without the labels (k-means: the lowest inertia; GMM: the highest likelihood).
    #[serde(default)]
    pub clustering: ShownClustering,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShownClustering {
    pub method: crate::stages::Method,
    #[serde(default)]
    pub umap: bool,
}

impl Default for ShownClustering {
    /// The notebook's: k-means on the latents.
    fn default() -> Self {
        Self { method: crate::stages::Method::Kmeans, umap: false }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotConfig {
    pub samples: usize,
}

/// A loaded configuration together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file it was read from; relative paths inside it resolve against its directory.
    pub path: PathBuf,
    /// The configuration as a JSON tree (after overrides), the source of stage params.
    tree: Value,
    /// The dotted keys that `--set` overrides assigned.
    overridden: Vec<String>,
}

impl LoadedConfig {
    /// Reads `path`, applies `overrides` (`dotted.key=yaml-value`) in order and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read { path: path.to_owned(), err })?;
        Self::from_yaml(&text, path, overrides)
    }

    /// Parses YAML text as if read from `path`.
    pub fn from_yaml(text: &str, path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // The parser calls the text `<input>`; it is this file.
            message: e.to_string().replace("<input>", &path.display().to_string()),
        })?;
        let tree = serde_json::to_value(&config).expect("config serialises");
        // The typed parse reads a quoted "10" as the number 10 wherever a number is expected.
        // Read without a schema, the same text keeps quoted scalars as strings: a string there
        // where the config holds a number was quoted, and is refused.
        if let Ok(raw) = serde_saphyr::from_str::<Value>(text) {
            if let Some((key, message)) = overrides::quoted_scalar(&raw, &tree, "") {
                return Err(ConfigError::Invalid { path: path.to_owned(), key, message });
            }
        }
        let (config, tree, overridden) = overrides::apply(config, tree, overrides)?;
        let loaded = Self { config, path: path.to_owned(), tree, overridden };
        loaded.validate()?;
        Ok(loaded)
    }

    /// The configuration as published and reported: the tree without the site settings
    /// (`slurm:`), which say where a run ran, not what it computed.
    pub fn experiment_tree(&self) -> Value {
        let mut tree = self.tree.clone();
        if let Some(map) = tree.as_object_mut() {
            map.remove("slurm");
        }
        tree
    }

    /// The directory that relative paths in the config resolve against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Resolves a path from the config against [`Self::base_dir`].
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The effective configuration (overrides applied) as YAML-compatible JSON.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The leaves under each of `keys` (dotted paths), flattened to `dotted.key -> value`;
    /// arrays are leaves. The tree's view, against which the tests hold what stages declare
    /// from their typed settings. Panics on a key that does not exist.
    #[cfg(test)]
    pub(crate) fn params(&self, keys: &[&str]) -> Params {
        let mut out = Params::new();
        for key in keys {
            let node = overrides::lookup(&self.tree, key).unwrap_or_else(|| panic!("stage reads unknown config key {key}"));
            overrides::flatten(key, node, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = include_str!("../../pipeline.yaml");

    fn load(text: &str, sets: &[&str]) -> Result<LoadedConfig, ConfigError> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        LoadedConfig::from_yaml(text, Path::new("pipeline.yaml"), &sets)
    }

    #[test]
    fn shipped_config_loads() {
        let c = load(SAMPLE, &[]).unwrap();
        assert_eq!(c.config.kmeans.seeds.len(), 10);
        assert_eq!(c.config.models["simple"].weight_decay, 1e-8);
        assert_eq!(c.config.models["simple"].architecture(), Architecture::notebook_simple());
        assert_eq!(c.config.models["conv"].architecture(), Architecture::notebook_conv());
        // File order is plan and report order.
        assert_eq!(c.config.models.keys().collect::<Vec<_>>(), ["simple", "conv"]);
    }

    #[test]
    fn example_configs_load_and_find_the_shipped_data() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let default = load(SAMPLE, &[]).unwrap();
        for name in ["five-seeds.yaml", "fashion-mnist.yaml", "architectures.yaml"] {
            let c = LoadedConfig::load(&dir.join(name), &[]).unwrap();
            let mnist = &c.config.datasets["mnist"];
            assert!(crate::data::idx::present(&c.resolve(mnist.local.as_deref().unwrap())), "{name}");
            assert_eq!(mnist, &default.config.datasets["mnist"].clone().with_local("../data/mnist"), "{name}");
            assert_eq!(c.config.models["conv"], default.config.models["conv"], "{name}");
            assert_eq!((&c.config.kmeans, &c.config.pca), (&default.config.kmeans, &default.config.pca), "{name}");
        }
        let c = LoadedConfig::load(&dir.join("five-seeds.yaml"), &[]).unwrap();
        assert_eq!(c.config.train.seeds, [42, 43, 44, 45, 46]);
        assert_eq!(c.config.models, default.config.models);
        let c = LoadedConfig::load(&dir.join("architectures.yaml"), &[]).unwrap();
        assert_eq!(c.config.models["wide"].architecture(), Architecture::Mlp { encoder: vec![784, 512, 128, 10] });
    }

    impl DatasetConfig {
        fn with_local(mut self, p: &str) -> Self {
            self.local = Some(p.into());
            self
        }
    }

    #[test]
    fn bad_matrix_configs_name_the_key_and_the_reason() {
        let cases: [(&str, &str, &str); 9] = [
            ("datasets.mnist.hub.revision=main", "datasets.mnist.hub.revision", "\"main\" is not a commit sha"),
            (
                "models.wide={arch: mlp, epochs: 1, batch_size: 2, lr: 0.1, weight_decay: 0.0}",
                "models.wide.encoder",
                "is required for arch mlp",
            ),
            ("models.conv.encoder=[784, 9]", "models.conv.encoder", "is not a setting of arch conv"),
            ("models.conv.channels=[]", "models.conv.channels", "must list 1 to 8"),
            (
                "models.Big={arch: mlp, encoder: [784, 9], epochs: 1, batch_size: 2, lr: 0.1, weight_decay: 0.0}",
                "models.Big",
                "use lowercase letters",
            ),
            (
                "models.pixels2={arch: mlp, encoder: [784, 9], epochs: 1, batch_size: 2, lr: 0.1, weight_decay: 0.0}",
                "models.pixels2",
                "are the baselines'",
            ),
            ("datasets.other={}", "datasets.other", "needs local (IDX folder) or hub"),
            ("datasets.mnist.hub.train.sha256=abc", "datasets.mnist.hub.train.sha256", "must be 64"),
            ("models.conv.latent=1", "pca.components", "must be between 1 and 1"),
        ];
        for (set, key, want) in cases {
            // New map entries go in through the file; changes through --set.
            let (text, sets): (String, Vec<&str>) = match set.split_once('=') {
                Some((k, v)) if k.starts_with("models.") && !k.contains("conv") => {
                    (SAMPLE.replace("models:", &format!("models:\n  {}: {v}", &k[7..])), vec![])
                }
                Some(("datasets.other", v)) => (SAMPLE.replace("datasets:", &format!("datasets:\n  other: {v}")), vec![]),
                _ => (SAMPLE.to_owned(), vec![set]),
            };
            let e = load(&text, &sets).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(want), "{set}: {e}");
        }
        // Two (dataset, model) pairs that would spell the same stage ids.
        let collide = SAMPLE
            .replace("datasets:", "datasets:\n  a-b: {local: x}\n  a: {local: y}")
            .replace("models:", "models:\n  c: {arch: mlp, encoder: [784, 9], epochs: 1, batch_size: 2, lr: 0.1, weight_decay: 0.0}\n  b-c: {arch: mlp, encoder: [784, 9], epochs: 1, batch_size: 2, lr: 0.1, weight_decay: 0.0}");
        let e = load(&collide, &[]).unwrap_err().to_string();
        assert!(e.contains("would share stage ids (a-b-c)"), "{e}");
    }

    #[test]
    fn slurm_settings_are_site_settings() {
        let plain = load(SAMPLE, &[]).unwrap();
        assert_eq!(plain.config.slurm, crate::pipeline::SlurmSettings::default());
        let c = load(SAMPLE, &["slurm.partition=gpu", "slurm.heavy.gres=gpu:1", "slurm.extra=[--qos=short]", "slurm.poll_s=0.5"]).unwrap();
        assert_eq!(c.config.slurm.partition.as_deref(), Some("gpu"));
        assert_eq!(c.config.slurm.heavy.gres.as_deref(), Some("gpu:1"));
        assert_eq!(c.config.slurm.extra, vec!["--qos=short"]);
        // No stage declares them, and nothing published or reported carries them.
        let ids = |c: &LoadedConfig| crate::stages::plan(c).into_iter().map(|s| (s.id, s.params)).collect::<Vec<_>>();
        assert_eq!(ids(&c), ids(&plain));
        assert!(c.experiment_tree().get("slurm").is_none() && c.tree().get("slurm").is_some());
        let e = load(SAMPLE, &["slurm.nodes=3"]).unwrap_err().to_string();
        assert!(e.contains("slurm.nodes"), "{e}");
        let e = load(SAMPLE, &["slurm.heavy.cpus=0"]).unwrap_err().to_string();
        assert!(e.contains("slurm.heavy.cpus") && e.contains("at least 1"), "{e}");
    }

    #[test]
    fn override_replaces_typed_value() {
        let c = load(SAMPLE, &["kmeans.seeds=[0,1]", "train.limit=500", "models.conv.lr=1e-2"]).unwrap();
        assert_eq!(c.config.kmeans.seeds, vec![0, 1]);
        assert_eq!(c.config.train.limit, Some(500));
        assert_eq!(c.params(&["models.conv.lr"])["models.conv.lr"], serde_json::json!(0.01));
    }

    #[test]
    fn override_errors_name_the_key() {
        let e = load(SAMPLE, &["kmeans.nope=3"]).unwrap_err().to_string();
        assert!(e.contains("unknown key kmeans.nope"), "{e}");
        let e = load(SAMPLE, &["kmeans.k=ten"]).unwrap_err().to_string();
        assert!(e.contains("kmeans.k"), "{e}");
        let e = load(SAMPLE, &["kmeans.k"]).unwrap_err().to_string();
        assert!(e.contains("dotted.key=value"), "{e}");
    }

    #[test]
    fn quoted_numbers_are_refused_naming_the_key() {
        // Issue 21, item 8c: in the file...
        for (from, to, want) in [
            ("kmeans: {k: 10,", "kmeans: {k: \"10\",", "key kmeans.k: expected an integer, found the string \"10\""),
            (
                "lr: 0.001, weight_decay: 1.0e-8",
                "lr: '0.001', weight_decay: 1.0e-8",
                "key models.simple.lr: expected a number, found the string \"0.001\"",
            ),
            ("seeds: [0, 1, 2, 3,", "seeds: [0, \"1\", 2, 3,", "key kmeans.seeds[1]: expected an integer, found the string \"1\""),
            ("limit: null", "limit: \"500\"", "key train.limit: expected an integer, found the string \"500\""),
        ] {
            let text = SAMPLE.replacen(from, to, 1);
            assert_ne!(text, SAMPLE, "{from}");
            let e = load(&text, &[]).unwrap_err().to_string();
            assert!(e.starts_with("invalid config pipeline.yaml: ") && e.contains(want), "{to}: {e}");
        }
        // ... and from --set, alone or inside a section.
        let e = load(SAMPLE, &["kmeans.k=\"10\""]).unwrap_err().to_string();
        assert_eq!(e, "invalid override --set kmeans.k=\"10\": kmeans.k: expected an integer, found the string \"10\"");
        let e = load(SAMPLE, &["models.simple={arch: mlp, encoder: [784, 9], epochs: '2', batch_size: 32, lr: 0.001, weight_decay: 0.0}"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("models.simple.epochs: expected an integer, found the string \"2\""), "{e}");
        // Quoted strings stay strings, and unquoted numbers numbers.
        let text =
            SAMPLE.replace("revision: 77f3279092a1c1579b2250db8eafed0ad422088c", "revision: \"77f3279092a1c1579b2250db8eafed0ad422088c\"");
        assert_ne!(text, SAMPLE);
        let c = load(&text.replace("device: auto", "device: 'cpu'"), &["kmeans.k=12", "datasets.mnist.hub.repo=\"a/b\""]).unwrap();
        assert_eq!(
            (c.config.kmeans.k, c.config.device, c.config.datasets["mnist"].hub.as_ref().unwrap().repo.as_str()),
            (12, DeviceChoice::Cpu, "a/b")
        );
    }

    #[test]
    fn a_limit_above_the_local_training_split_is_refused() {
        // Issue 21, item 8b: 12 training images in a local IDX folder.
        let dir = std::env::temp_dir().join(format!("latentscope-config-limit-{}", std::process::id()));
        let split = |n: usize| crate::data::Split {
            shape: crate::data::Shape::MNIST,
            images: vec![7; n * crate::data::PIXELS],
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        };
        crate::data::idx::write_dir(&dir, &crate::data::Dataset { train: split(12), test: split(10) }).unwrap();
        let text = SAMPLE.replace("local: data/mnist", &format!("local: {}", dir.display()));
        let e = load(&text, &["train.limit=13"]).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid --set train.limit: train.limit is 13, but dataset mnist has only 12 training images")
                && e.contains("set it to at most 12, or to null"),
            "{e}"
        );
        let e = load(&text.replace("limit: null", "limit: 100000"), &[]).unwrap_err().to_string();
        assert!(e.contains("key train.limit: is 100000, but dataset mnist has only 12 training images"), "{e}");
        assert_eq!(load(&text, &["train.limit=12"]).unwrap().config.train.limit, Some(12));
        // The shipped MNIST copy holds 60,000.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.yaml");
        let e = LoadedConfig::from_yaml(SAMPLE, &shipped, &["train.limit=100000".to_owned()]).unwrap_err().to_string();
        assert!(e.contains("train.limit is 100000, but dataset mnist has only 60000 training images"), "{e}");
        // Without the local files (the Hub is used) the train stage checks it instead.
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(load(&text, &["train.limit=13"]).unwrap().config.train.limit, Some(13));
    }

    #[test]
    fn unknown_key_in_file_names_key_and_line() {
        let text = SAMPLE.replace("pca: {components: 2}", "pca: {components: 2, whiten: true}");
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("whiten"), "{e}");
        let line = SAMPLE.lines().position(|l| l.starts_with("pca:")).unwrap() + 1;
        assert!(e.contains(&line.to_string()), "no line {line} in: {e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let text = SAMPLE.replace("max_iter: 300", "max_iter: lots");
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("pipeline.yaml") && !e.contains("<input>"), "{e}");
    }

    #[test]
    fn validation_names_key() {
        let e = load(SAMPLE, &["kmeans.seeds=[1,1]"]).unwrap_err().to_string();
        assert!(e.contains("kmeans.seeds") && e.contains("twice"), "{e}");
        let e = load(SAMPLE, &["train.seeds=[]"]).unwrap_err().to_string();
        assert!(e.contains("train.seeds") && e.contains("at least one"), "{e}");
        let e = load(SAMPLE, &["train.seeds=[42, 42]"]).unwrap_err().to_string();
        assert!(e.contains("train.seeds") && e.contains("twice"), "{e}");
    }

    #[test]
    fn a_bad_value_from_set_is_blamed_on_the_set_not_the_file() {
        let e = load(SAMPLE, &["kmeans.seeds=[1,1]"]).unwrap_err().to_string();
        assert!(e.starts_with("invalid --set kmeans.seeds:") && !e.contains("pipeline.yaml"), "{e}");
        // A whole section set at once is named as it was set.
        let e = load(SAMPLE, &["models.simple={arch: mlp, encoder: [784, 9], epochs: 0, batch_size: 32, lr: 0.001, weight_decay: 0.0}"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid --set models.simple:") && e.contains("models.simple.epochs"), "{e}");
        // The same bad value in the file is blamed on the file.
        let e = load(&SAMPLE.replace("k: 10,", "k: 1,"), &[]).unwrap_err().to_string();
        assert!(e.contains("pipeline.yaml") && e.contains("kmeans.k"), "{e}");
    }

    #[test]
    fn method_settings_are_checked_and_name_their_key() {
        let c = load(SAMPLE, &[]).unwrap();
        assert_eq!(c.config.cluster.gmm.as_ref().unwrap().reg_covar, 1e-6, "defaults fill in");
        for (set, needle) in [
            ("cluster.gmm.k=1", "cluster.gmm.k must be at least 2"),
            ("cluster.gmm.seeds=[3,3]", "seed 3 is listed twice"),
            ("cluster.gmm.covariance=diag", "cluster.gmm.covariance"),
            ("cluster.agglomerative.linkage=median", "cluster.agglomerative.linkage"),
            ("cluster.hdbscan.min_cluster_size=1", "cluster.hdbscan.min_cluster_size must be at least 2"),
            ("cluster.dbscan={eps: 0}", "cluster.dbscan.eps must be positive"),
            ("cluster.dbscan={eps: 1, min_samples: 1}", "cluster.dbscan.min_samples must be at least 2"),
            ("embed.umap.min_dist=2", "embed.umap.min_dist must be between 0 and 1"),
            ("embed.umap=", "views: umap needs embed.umap"),
            ("views=[pca]", "embed.tsne: makes 2-D views only"),
            ("select_k.range=[5,2]", "select_k.range must be [low, high]"),
            ("cluster.nope={k: 3}", "unknown key cluster.nope"),
            ("report.clustering.method=dbscan", "report.clustering.method is dbscan, which cluster: does not run"),
            ("report.clustering.method=spectral", "report.clustering.method"),
        ] {
            let e = load(SAMPLE, &[set]).unwrap_err().to_string();
            assert!(e.contains(needle), "--set {set}: {e}");
        }
        let e = load(SAMPLE, &["report.clustering.umap=true", "embed.umap=", "views=[pca, tsne]"]).unwrap_err().to_string();
        assert!(e.contains("report.clustering.umap needs embed.umap"), "{e}");
        // A method can be added by --set and removed by setting it to null.
        let c = load(SAMPLE, &["cluster.hdbscan=", "embed.tsne=", "views=[umap]"]).unwrap();
        assert!(c.config.cluster.hdbscan.is_none() && c.config.embed.tsne.is_none());
    }

    #[test]
    fn params_flatten_leaves() {
        let c = load(SAMPLE, &[]).unwrap();
        let p = c.params(&["models.simple", "train.limit"]);
        let keys: Vec<_> = p.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "models.simple.arch",
                "models.simple.batch_size",
                "models.simple.encoder",
                "models.simple.epochs",
                "models.simple.lr",
                "models.simple.weight_decay",
                "train.limit"
            ]
        );
    }
}
