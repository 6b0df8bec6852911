//! `agglomerative-<rep>`: hierarchical clustering (kodama; Ward linkage by default) cut at k
//! clusters. Deterministic, so no seed.

use super::{Fit, Method};
use crate::analysis::agglomerative;
use crate::artifacts::cluster::Extra;
use crate::config::AgglomerativeConfig;
use crate::pipeline::Cost;

impl Fit for AgglomerativeConfig {
    const METHOD: Method = Method::Agglomerative;
    const VERSION: u32 = 1;
    /// n^2 / 2 distances in memory.
    const COST: Cost = Cost::Heavy;

    fn fit(&self, points: &[f32], _: usize, d: usize, _: Option<u64>) -> anyhow::Result<(Vec<u32>, Extra)> {
        let labels = agglomerative::fit(points, d, self.k, self.linkage).map_err(|e| match e {
            agglomerative::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.agglomerative.k: {e}; lower it"),
            other => other.into(),
        })?;
        Ok((labels, Extra::default()))
    }
}
