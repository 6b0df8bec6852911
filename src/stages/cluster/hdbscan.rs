//! `hdbscan-<rep>`: density-based clustering (the `hdbscan` crate); the number of clusters is
//! found, not given, and points in no dense region are noise. One cluster or none is a result
//! (recorded), not an error.

use super::{Fit, Method};
use crate::analysis::hdbscan;
use crate::artifacts::cluster::Extra;
use crate::config::HdbscanConfig;

impl Fit for HdbscanConfig {
    const METHOD: Method = Method::Hdbscan;
    const VERSION: u32 = 1;

    fn fit(&self, points: &[f32], _: usize, d: usize, _: Option<u64>) -> anyhow::Result<(Vec<u32>, Extra)> {
        let labels = hdbscan::fit(points, d, self.min_cluster_size, self.min_samples).map_err(|e| match e {
            hdbscan::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.hdbscan.min_cluster_size: {e}"),
            hdbscan::Error::TooManySamples { .. } => anyhow::anyhow!("cluster.hdbscan.min_samples: {e}"),
            other => other.into(),
        })?;
        Ok((labels, Extra::default()))
    }
}
