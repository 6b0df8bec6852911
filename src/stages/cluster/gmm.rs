//! `gmm-<rep>-<seed>`: a Gaussian mixture (full covariances, linfa-clustering) with one seed;
//! outputs as [`super`], `clustering.json` with the mean log-likelihood and the BIC.

use super::Method;
use crate::analysis::gmm;
use crate::artifacts::cluster::Extra;
use crate::config::GmmConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::stages::{Declared, Rep};

pub struct Gmm {
    rep: Rep,
    cfg: GmmConfig,
    seed: u64,
}

pub fn spec(cfg: &GmmConfig, id: String, rep: Rep, seed: u64) -> StageSpec {
    let mut declared = Declared::default();
    // Its own seed, not the list: adding a seed must not re-run the others.
    let cfg = declared.declare("cluster.gmm", GmmConfig { seeds: vec![seed], ..cfg.clone() });
    let source = rep.source();
    declared
        .spec(id, Gmm { rep, cfg, seed })
        .input(&source, crate::artifacts::encode::LATENT)
        .outputs(&[crate::artifacts::cluster::ASSIGNMENTS, crate::artifacts::cluster::SUMMARY])
}

impl StageKind for Gmm {
    fn kind(&self) -> &'static str {
        Method::Gmm.key()
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let settings =
            gmm::Settings { k: self.cfg.k, seed: self.seed, max_iter: self.cfg.max_iter, tol: self.cfg.tol, reg_covar: self.cfg.reg_covar };
        super::run(ctx, &self.rep, Method::Gmm, Some(self.seed), |points, _, d| {
            let fit = gmm::fit(points, d, &settings).map_err(|e| match e {
                gmm::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.gmm.k: {e}; lower it"),
                gmm::Error::NotPositiveDefinite => anyhow::anyhow!("{e} (cluster.gmm.reg_covar = {})", settings.reg_covar),
                gmm::Error::NotConverged(_) => anyhow::anyhow!("{e} (cluster.gmm.max_iter, cluster.gmm.tol)"),
                other => other.into(),
            })?;
            Ok((fit.labels, Extra { log_likelihood: Some(fit.log_likelihood), bic: Some(fit.bic) }))
        })
    }
}
