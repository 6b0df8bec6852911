//! `dbscan-<rep>`: density-based clustering with a fixed radius (linfa-clustering's DBSCAN,
//! held to scikit-learn's `DBSCAN(eps, min_samples)`, Euclidean): a point with at least
//! `min_samples` points within `eps` (itself counted) is core, clusters are the core points
//! linked through such neighbourhoods plus the points within `eps` of one, and the rest are
//! noise. Clusters are numbered, and a border point reachable from two clusters joins the
//! first, in the order of their lowest-index core point, as scikit-learn does. Outputs as
//! [`super`]; one cluster or none is a result (recorded), not an error.

use linfa::traits::Transformer;
use linfa::ParamGuard;
use linfa_clustering::Dbscan;
use ndarray::Array2;

use super::{Fit, Method};
use crate::artifacts::cluster::{Extra, NOISE};
use crate::config::DbscanConfig;

impl Fit for DbscanConfig {
    const METHOD: Method = Method::Dbscan;
    const VERSION: u32 = 1;

    fn fit(&self, points: &[f32], n: usize, d: usize, _: Option<u64>) -> anyhow::Result<(Vec<u32>, Extra)> {
        Ok((fit(points, n, d, self)?, Extra::default()))
    }
}

/// The labels of `points` (`n` x `d`, row-major), [`NOISE`] for noise. Distances in f64, as
/// scikit-learn computes them. scikit-learn counts a neighbour at exactly `eps`, linfa only
/// those nearer, so linfa gets the next f64 above `eps`.
fn fit(points: &[f32], n: usize, d: usize, cfg: &DbscanConfig) -> anyhow::Result<Vec<u32>> {
    anyhow::ensure!(n >= cfg.min_samples, "cluster.dbscan.min_samples = {} exceeds the {n} points", cfg.min_samples);
    let x = Array2::from_shape_vec((n, d), points.iter().map(|&v| f64::from(v)).collect())?;
    let eps = f64::from_bits(cfg.eps.to_bits() + 1);
    let params = Dbscan::params(cfg.min_samples).tolerance(eps).check().map_err(|e| anyhow::anyhow!("cluster.dbscan: {e}"))?;
    Ok(params.transform(&x).iter().map(|c| c.map_or(NOISE, |c| c as u32)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scikit-learn's labels on the fixed data of `tests/data/clusters.safetensors`
    /// (`tests/data/density_reference.json`, written by `scripts/density_reference.py`), point
    /// by point, noise included.
    #[test]
    fn the_same_labels_as_scikit_learn() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("density_reference.json")).unwrap()).unwrap();
        let file = crate::tensorfile::TensorFile::open(&root.join("clusters.safetensors")).unwrap();
        for name in ["blobs", "moons", "digits"] {
            let r = &reference["dbscan"][name];
            let (shape, points) = match file.get(&format!("{name}_points"), safetensors::Dtype::F32) {
                Ok((shape, bytes)) => (shape.to_vec(), crate::tensorfile::f32_values(bytes)),
                Err(_) => {
                    let (shape, bytes) = file.get(&format!("{name}_points"), safetensors::Dtype::U8).unwrap();
                    (shape.to_vec(), bytes.iter().map(|&b| b as f32).collect())
                }
            };
            let cfg: DbscanConfig = serde_json::from_value(r["settings"].clone()).unwrap();
            let ours = fit(&points, shape[0], shape[1], &cfg).unwrap();
            let theirs: Vec<u32> =
                r["labels"].as_array().unwrap().iter().map(|l| l.as_i64().unwrap()).map(|l| if l < 0 { NOISE } else { l as u32 }).collect();
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{name}: {differ} of {} labels differ from scikit-learn's", theirs.len());
            let clusters = ours.iter().filter(|&&l| l != NOISE).collect::<std::collections::BTreeSet<_>>().len();
            assert!(clusters >= 2, "{name}: a reference with {clusters} clusters tests little");
        }
        let bad = fit(&[0.0; 4], 2, 2, &DbscanConfig { eps: 1.0, min_samples: 3 }).unwrap_err().to_string();
        assert!(bad.contains("cluster.dbscan.min_samples = 3 exceeds the 2 points"), "{bad}");
    }
}
