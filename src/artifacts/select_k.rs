//! `select-k-<rep>`: `select_k.json` ([`SelectK`]).

use serde::{Deserialize, Serialize};

use crate::config::SelectMethod;

pub const SUMMARY: &str = "select_k.json";

/// `select_k.json`: one entry per k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectK {
    pub method: SelectMethod,
    pub ks: Vec<usize>,
    /// k-means: the inertia (sum of squared distances to the centroids), per k.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inertia: Vec<f64>,
    /// Mixture: the Bayesian information criterion (lower is better), per k.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bic: Vec<f64>,
    /// Mean silhouette on the sample, per k (higher is better).
    pub silhouette: Vec<f64>,
    pub sample: usize,
    /// The k of the highest silhouette.
    pub best_silhouette_k: usize,
    /// The k of the lowest BIC (mixture only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_bic_k: Option<usize>,
}

impl SelectK {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a select_k.json")
    }
}
