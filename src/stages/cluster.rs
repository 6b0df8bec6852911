//! What the clustering stages besides k-means (`gmm`, `agglomerative`, `hdbscan`) share: their
//! outputs (`assignments.safetensors`: `labels` u32 [n], [`NOISE`] for a point left out;
//! `clustering.json`: [`ClusteringSummary`]) and the run of one method on one
//! representation.

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::Rep;
use crate::pipeline::{StageContext, StageReport};
use crate::tensorfile::{self, le_bytes_u32, Array};

pub use crate::analysis::hdbscan::NOISE;

/// A clustering method: its stage kind and its name in ids, `metrics.json` and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Kmeans,
    Gmm,
    Agglomerative,
    Hdbscan,
}

impl Method {
    /// The name (`kmeans`, `gmm`, `agglomerative`, `hdbscan`): the stage kind and the
    /// `method` of `metrics.json`.
    pub fn key(self) -> &'static str {
        match self {
            Method::Kmeans => "kmeans",
            Method::Gmm => "gmm",
            Method::Agglomerative => "agglomerative",
            Method::Hdbscan => "hdbscan",
        }
    }

    /// Whether it may leave points out as noise.
    pub fn marks_noise(self) -> bool {
        self == Method::Hdbscan
    }
}
pub const ASSIGNMENTS: &str = "assignments.safetensors";
pub const SUMMARY: &str = "clustering.json";

/// `clustering.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringSummary {
    pub method: String,
    /// The method's seed, for the stochastic ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Clusters found (noise not counted).
    pub clusters: usize,
    /// Points marked noise (HDBSCAN), 0 for the others.
    pub noise: usize,
    pub cluster_sizes: Vec<usize>,
    /// What else the method reports (a mixture's log-likelihood and BIC).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ClusteringSummary {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        serde_json::from_value(super::read_json(path)?).map_err(|e| anyhow::anyhow!("{}: not a clustering.json: {e}", path.display()))
    }
}

/// Reads the vectors of `rep` (NaN refused with the file named), runs `method` on them and
/// writes both outputs. `method` gets (points, n, dim) and returns labels and extra facts.
pub fn run(
    ctx: &StageContext<'_>,
    rep: &Rep,
    method: Method,
    seed: Option<u64>,
    fit: impl FnOnce(&[f32], usize, usize) -> anyhow::Result<(Vec<u32>, serde_json::Map<String, serde_json::Value>)>,
) -> anyhow::Result<StageReport> {
    let name = method.key();
    let (points, n, d) = super::encode::read_latent(ctx.input(&rep.source(), super::encode::LATENT)?)?;
    let spinner = crate::progress::spinner(format!("{}: {name}, {n} points of dimension {d}", ctx.stage_id));
    let result = fit(&points, n, d);
    spinner.finish_and_clear();
    let (labels, extra) = result.map_err(|e| anyhow::anyhow!("{}: {e}", ctx.stage_id))?;
    anyhow::ensure!(labels.len() == n, "{}: {} labels for {n} points", ctx.stage_id, labels.len());
    let clusters = labels.iter().filter(|&&l| l != NOISE).map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut sizes = vec![0usize; clusters];
    labels.iter().filter(|&&l| l != NOISE).for_each(|&l| sizes[l as usize] += 1);
    let noise = labels.iter().filter(|&&l| l == NOISE).count();
    tracing::info!(stage = ctx.stage_id, "{name}: {clusters} clusters, {noise} noise points");
    tensorfile::write(&ctx.output(ASSIGNMENTS), &[Array::raw("labels", Dtype::U32, vec![n], &le_bytes_u32(&labels))])?;
    let summary = ClusteringSummary { method: name.to_owned(), seed, clusters, noise, cluster_sizes: sizes, extra };
    super::write_json(&ctx.output(SUMMARY), &summary)?;
    Ok(StageReport { device: Some("cpu".into()) })
}

/// The `labels` of an `assignments.safetensors` (k-means' or another method's).
pub fn read_labels(path: &std::path::Path) -> anyhow::Result<Vec<u32>> {
    let file = tensorfile::TensorFile::open(path)?;
    Ok(tensorfile::u32_values(file.get("labels", Dtype::U32)?.1))
}
