//! `umap-<subject>`: `latent.safetensors` (as [`super::encode`]) and `umap.json`
//! ([`EmbeddingSummary`]); the 2-D views `view-<umap|tsne>-<run>`: `view.safetensors` (as
//! `latent.safetensors`, 2 columns) and `view.json` (the same summary).

use serde::{Deserialize, Serialize};

pub const SUMMARY: &str = "umap.json";

/// `umap.json` and the views' `view.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSummary {
    pub method: String,
    pub points: usize,
    pub input_dim: usize,
    pub components: usize,
    /// scikit-learn's trustworthiness with 15 neighbours on the first 2,000 points (1: every
    /// embedded neighbour is an input neighbour). No timing, so that the file is the same
    /// bytes on every run (the lock file has the wall time).
    pub trustworthiness: f64,
}

impl EmbeddingSummary {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "an embedding summary")
    }
}

pub const VIEW_POINTS: &str = "view.safetensors";

pub const VIEW_SUMMARY: &str = "view.json";
