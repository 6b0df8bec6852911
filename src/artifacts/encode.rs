//! `encode-<run>` (and `baseline-*`, `umap-*`, the views, which write vectors the same way):
//! `latent.safetensors` ([`LATENT_VECTORS`] f32 [n, d], [`LABELS`] u8 [n]) and
//! `reconstructions.safetensors` ([`IMAGES`] f32 [n, C, H, W]).

use safetensors::Dtype;

use super::Tensor;
use crate::tensorfile;

/// The vectors of a representation, f32 [n, d].
pub const LATENT_VECTORS: Tensor = Tensor { name: "latent", dtype: Dtype::F32 };
/// The true labels of the same points, u8 [n].
pub const LABELS: Tensor = Tensor { name: "labels", dtype: Dtype::U8 };
/// Reconstructed test images, f32 [n, C, H, W].
pub const IMAGES: Tensor = Tensor { name: "images", dtype: Dtype::F32 };

pub const LATENT: &str = "latent.safetensors";

pub const RECONSTRUCTIONS: &str = "reconstructions.safetensors";

/// Reads `latent.safetensors`: the latent vectors (row-major), their count and dimension.
/// Refuses non-finite values (an entry written before encode checked them).
pub fn read_latent(path: &std::path::Path) -> anyhow::Result<(Vec<f32>, usize, usize)> {
    let file = tensorfile::TensorFile::open(path)?;
    let (shape, bytes) = LATENT_VECTORS.read(&file)?;
    anyhow::ensure!(shape.len() == 2, "{}: latent has shape {shape:?}, expected [n, d]", path.display());
    let values = tensorfile::f32_values(bytes);
    crate::stages::ensure_finite(&path.display().to_string(), "latent values", values.iter().copied())?;
    Ok((values, shape[0], shape[1]))
}

/// Reads the true labels stored beside the latent vectors.
pub fn read_labels(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let file = tensorfile::TensorFile::open(path)?;
    Ok(LABELS.read(&file)?.1.to_vec())
}
