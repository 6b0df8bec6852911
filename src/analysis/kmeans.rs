//! k-means on the latent vectors with linfa-clustering: k-means++ initialisation from a
//! seeded generator, Lloyd iterations up to `max_iter` or until the centroids move less than
//! `tol` (linfa's criterion: the distance between successive centroid sets).

use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

#[derive(Debug, Clone)]
pub struct Clustering {
    /// Cluster of each point.
    pub labels: Vec<u32>,
    /// [k, dim] row-major.
    pub centroids: Vec<f32>,
    /// Sum of squared distances to the nearest centroid.
    pub inertia: f64,
    /// Whether one more Lloyd step would move the centroids by less than `tol` (linfa stops
    /// either there or at `max_iter`, and does not say which; this tells them apart).
    pub converged: bool,
}

pub fn fit(points: &[f32], dim: usize, k: usize, seed: u64, max_iter: usize, tol: f64) -> anyhow::Result<Clustering> {
    let n = points.len() / dim;
    anyhow::ensure!(n >= k, "k-means with k = {k} needs at least {k} points, got {n}");
    let records = Array2::from_shape_vec((n, dim), points.iter().map(|&v| v as f64).collect())?;
    let dataset = DatasetBase::from(records.clone());
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
        .init_method(KMeansInit::KMeansPlusPlus)
        .n_runs(1)
        .max_n_iterations(max_iter as u64)
        .tolerance(tol)
        .fit(&dataset)
        .map_err(|e| anyhow::anyhow!("k-means failed: {e}"))?;
    let labels: Vec<u32> = model.predict(&records).iter().map(|&c| c as u32).collect();
    let centroids: Vec<f32> = model.centroids().iter().map(|&v| v as f32).collect();
    let mut inertia = 0f64;
    let mut sums = Array2::<f64>::zeros((k, dim));
    let mut counts = vec![0usize; k];
    for (row, &c) in records.outer_iter().zip(&labels) {
        let centre = model.centroids().row(c as usize);
        inertia += row.iter().zip(centre.iter()).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        let mut s = sums.row_mut(c as usize);
        s += &row;
        counts[c as usize] += 1;
    }
    // The shift of one more Lloyd step, measured as linfa measures it (L2 over all centroids).
    let mut shift = 0f64;
    for (j, old) in model.centroids().outer_iter().enumerate() {
        if counts[j] > 0 {
            shift += sums.row(j).iter().zip(old.iter()).map(|(s, o)| (s / counts[j] as f64 - o).powi(2)).sum::<f64>();
        }
    }
    Ok(Clustering { labels, centroids, inertia, converged: shift.sqrt() < tol })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_obvious_clusters_reproducibly() {
        let mut pts = Vec::new();
        for i in 0..60 {
            let (cx, cy) = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)][i % 3];
            let j = (i / 3) as f32 * 0.01;
            pts.extend([cx + j, cy - j]);
        }
        let a = fit(&pts, 2, 3, 7, 300, 1e-4).unwrap();
        let b = fit(&pts, 2, 3, 7, 300, 1e-4).unwrap();
        assert_eq!(a.labels, b.labels);
        for i in 0..60 {
            assert_eq!(a.labels[i], a.labels[i % 3], "point {i}");
        }
        assert!(a.inertia < 1.0, "{}", a.inertia);
        assert!(a.converged);
        // One iteration from k-means++ seeds cannot settle these clusters' means exactly.
        let one = fit(&pts, 2, 3, 7, 1, 1e-12).unwrap();
        assert!(!one.converged);
        assert_eq!(a.centroids.len(), 6);
    }
}
