//! `gmm-<rep>-<seed>`: a Gaussian mixture (full covariances, linfa-clustering) with one seed;
//! outputs as [`super::cluster`], `clustering.json` with the mean log-likelihood and the BIC.

use super::{Rep, StageId};
use crate::analysis::gmm;
use crate::config::{GmmConfig, LoadedConfig};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};

pub fn id(rep: &Rep, seed: u64) -> String {
    StageId::Gmm(rep.clone(), seed).to_string()
}

pub struct Gmm {
    rep: Rep,
    cfg: GmmConfig,
    seed: u64,
}

pub fn spec(config: &LoadedConfig, rep: Rep, seed: u64) -> StageSpec {
    let keys = ["cluster.gmm.k", "cluster.gmm.covariance", "cluster.gmm.max_iter", "cluster.gmm.tol", "cluster.gmm.reg_covar"];
    // Its own seed, not the list: adding a seed must not re-run the others.
    let declared = super::Declared::new(config.params(&keys)).with("cluster.gmm.seeds", vec![seed]);
    let cfg: GmmConfig = declared.get("cluster.gmm");
    let source = rep.source();
    declared
        .spec(id(&rep, seed), Gmm { rep, cfg, seed })
        .input(&source, super::encode::LATENT)
        .outputs(&[super::cluster::ASSIGNMENTS, super::cluster::SUMMARY])
}

impl StageKind for Gmm {
    fn kind(&self) -> &'static str {
        super::cluster::Method::Gmm.key()
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let settings =
            gmm::Settings { k: self.cfg.k, seed: self.seed, max_iter: self.cfg.max_iter, tol: self.cfg.tol, reg_covar: self.cfg.reg_covar };
        super::cluster::run(ctx, &self.rep, super::cluster::Method::Gmm, Some(self.seed), |points, _, d| {
            let fit = gmm::fit(points, d, &settings).map_err(|e| match e {
                gmm::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.gmm.k: {e}; lower it"),
                gmm::Error::NotPositiveDefinite => anyhow::anyhow!("{e} (cluster.gmm.reg_covar = {})", settings.reg_covar),
                gmm::Error::NotConverged(_) => anyhow::anyhow!("{e} (cluster.gmm.max_iter, cluster.gmm.tol)"),
                other => other.into(),
            })?;
            let mut extra = serde_json::Map::new();
            extra.insert("log_likelihood".into(), fit.log_likelihood.into());
            extra.insert("bic".into(), fit.bic.into());
            Ok((fit.labels, extra))
        })
    }
}
