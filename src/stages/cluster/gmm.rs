//! `gmm-<rep>-<seed>`: a Gaussian mixture (full covariances, linfa-clustering) with one seed;
//! `clustering.json` with the mean log-likelihood and the BIC.

use super::{Fit, Method};
use crate::analysis::gmm;
use crate::artifacts::cluster::Extra;
use crate::config::GmmConfig;

impl Fit for GmmConfig {
    const METHOD: Method = Method::Gmm;
    const VERSION: u32 = 1;

    fn for_seed(&self, seed: Option<u64>) -> Self {
        GmmConfig { seeds: seed.into_iter().collect(), ..self.clone() }
    }

    fn fit(&self, points: &[f32], _: usize, d: usize, seed: Option<u64>) -> anyhow::Result<(Vec<u32>, Extra)> {
        let settings =
            gmm::Settings { k: self.k, seed: seed.unwrap_or_default(), max_iter: self.max_iter, tol: self.tol, reg_covar: self.reg_covar };
        let fit = gmm::fit(points, d, &settings).map_err(|e| match e {
            gmm::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.gmm.k: {e}; lower it"),
            gmm::Error::NotPositiveDefinite => anyhow::anyhow!("{e} (cluster.gmm.reg_covar = {})", settings.reg_covar),
            gmm::Error::NotConverged(_) => anyhow::anyhow!("{e} (cluster.gmm.max_iter, cluster.gmm.tol)"),
            other => other.into(),
        })?;
        Ok((fit.labels, Extra { log_likelihood: Some(fit.log_likelihood), bic: Some(fit.bic) }))
    }
}
