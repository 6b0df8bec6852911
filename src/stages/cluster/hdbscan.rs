//! `hdbscan-<rep>`: density-based clustering (the `hdbscan` crate); the number of clusters is
//! found, not given, and points in no dense region are noise. Outputs as [`super`]; one
//! cluster or none is a result (recorded), not an error.

use super::Method;
use crate::analysis::hdbscan;
use crate::artifacts::cluster::Extra;
use crate::config::HdbscanConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::stages::{Declared, Rep};

pub struct Hdbscan {
    rep: Rep,
    cfg: HdbscanConfig,
}

pub fn spec(cfg: &HdbscanConfig, id: String, rep: Rep) -> StageSpec {
    let mut declared = Declared::default();
    let cfg = declared.declare("cluster.hdbscan", cfg.clone());
    let source = rep.source();
    declared
        .spec(id, Hdbscan { rep, cfg })
        .input(&source, crate::artifacts::encode::LATENT)
        .outputs(&[crate::artifacts::cluster::ASSIGNMENTS, crate::artifacts::cluster::SUMMARY])
}

impl StageKind for Hdbscan {
    fn kind(&self) -> &'static str {
        Method::Hdbscan.key()
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        super::run(ctx, &self.rep, Method::Hdbscan, None, |points, _, d| {
            let labels = hdbscan::fit(points, d, self.cfg.min_cluster_size, self.cfg.min_samples).map_err(|e| match e {
                hdbscan::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.hdbscan.min_cluster_size: {e}"),
                hdbscan::Error::TooManySamples { .. } => anyhow::anyhow!("cluster.hdbscan.min_samples: {e}"),
                other => other.into(),
            })?;
            Ok((labels, Extra::default()))
        })
    }
}
