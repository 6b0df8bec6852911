//! Barnes-Hut t-SNE with linfa-tsne (bhtsne, single-threaded), a seeded generator: 2-D views.

use linfa::traits::Transformer;
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub perplexity: f64,
    pub seed: u64,
    pub max_iter: usize,
    /// Barnes-Hut accuracy (0: exact, 0.5: scikit-learn's default).
    pub theta: f64,
}

/// The 2-D embedding, `[n, 2]` row-major.
pub fn embed(points: &[f32], dim: usize, s: &Settings) -> anyhow::Result<Vec<f32>> {
    let n = points.len() / dim;
    let bad = points.iter().filter(|v| !v.is_finite()).count();
    anyhow::ensure!(bad == 0, "{bad} of the input values are NaN or infinite");
    anyhow::ensure!(
        (n as f64 - 1.0) >= 3.0 * s.perplexity,
        "perplexity {} needs at least {} points, got {n}",
        s.perplexity,
        (3.0 * s.perplexity).ceil() as usize + 1
    );
    let records = Array2::from_shape_vec((n, dim), points.iter().map(|&v| v as f64).collect())?;
    let y = linfa_tsne::TSneParams::embedding_size_with_rng(2, Xoshiro256Plus::seed_from_u64(s.seed))
        .perplexity(s.perplexity)
        .approx_threshold(s.theta)
        .max_iter(s.max_iter)
        .transform(records)
        .map_err(|e| anyhow::anyhow!("t-SNE failed: {e}"))?;
    Ok(y.iter().map(|&v| v as f32).collect())
}
