//! Every clustering stage (`kmeans-*`, `gmm-*`, ...): `assignments.safetensors` ([`LABELS`]
//! u32 [n], [`NOISE`] for a point left out; k-means adds [`CENTROIDS`] f32 [k, d]); k-means
//! `kmeans.json` ([`KmeansSummary`]), the others `clustering.json` ([`ClusteringSummary`]).

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::Tensor;
use crate::stages::cluster::Method;
use crate::tensorfile;

pub use crate::analysis::hdbscan::NOISE;

/// Each point's cluster, u32 [n].
pub const LABELS: Tensor = Tensor { name: "labels", dtype: Dtype::U32 };
/// k-means' centroids, f32 [k, d].
pub const CENTROIDS: Tensor = Tensor { name: "centroids", dtype: Dtype::F32 };

pub const ASSIGNMENTS: &str = "assignments.safetensors";

pub const SUMMARY: &str = "clustering.json";

/// What a method reports besides its clusters (a mixture's fit); `extra` in
/// `clustering.json`, absent when empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extra {
    /// A mixture's mean log-likelihood per point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_likelihood: Option<f64>,
    /// A mixture's Bayesian information criterion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bic: Option<f64>,
}

impl Extra {
    pub fn is_empty(&self) -> bool {
        *self == Extra::default()
    }
}

/// `clustering.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringSummary {
    pub method: Method,
    /// The method's seed, for the stochastic ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Clusters found (noise not counted).
    pub clusters: usize,
    /// Points marked noise (HDBSCAN), 0 for the others.
    pub noise: usize,
    pub cluster_sizes: Vec<usize>,
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
}

/// The `labels` of an `assignments.safetensors` (k-means' or another method's).
pub fn read_labels(path: &std::path::Path) -> anyhow::Result<Vec<u32>> {
    let file = tensorfile::TensorFile::open(path)?;
    Ok(tensorfile::u32_values(LABELS.read(&file)?.1))
}

pub const KMEANS_SUMMARY: &str = "kmeans.json";

/// `kmeans.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KmeansSummary {
    pub k: usize,
    pub seed: u64,
    pub inertia: f64,
    pub inertia_per_point: f64,
    pub converged: bool,
    pub max_iter: usize,
    pub cluster_sizes: Vec<usize>,
}

impl KmeansSummary {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a kmeans.json")
    }
}
