//! `pca-<run>`: `pca.safetensors` ([`PROJECTED`] f32 [n, components], [`COMPONENTS`] f32
//! [components, d], [`MEAN`] f32 [d]) and `pca.json` ([`PcaSummary`]).

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::Tensor;

/// The latents on the components, f32 [n, components].
pub const PROJECTED: Tensor = Tensor { name: "points", dtype: Dtype::F32 };
/// The principal axes, f32 [components, d].
pub const COMPONENTS: Tensor = Tensor { name: "components", dtype: Dtype::F32 };
/// The mean removed first, f32 [d].
pub const MEAN: Tensor = Tensor { name: "mean", dtype: Dtype::F32 };

pub const POINTS: &str = "pca.safetensors";

pub const SUMMARY: &str = "pca.json";

/// `pca.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaSummary {
    pub components: usize,
    pub explained_variance: Vec<f64>,
    /// Each component's share of the total variance of the latents.
    pub explained_variance_ratio: Vec<f64>,
}

impl PcaSummary {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a pca.json")
    }
}
