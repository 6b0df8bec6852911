//! `hdbscan-<rep>`: density-based clustering (the `hdbscan` crate); the number of clusters is
//! found, not given, and points in no dense region are noise. Outputs as
//! [`super::cluster`]; one cluster or none is a result (recorded), not an error.

use super::{Rep, StageId};
use crate::analysis::hdbscan;
use crate::config::{HdbscanConfig, LoadedConfig};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};

pub fn id(rep: &Rep) -> String {
    StageId::Hdbscan(rep.clone()).to_string()
}

pub struct Hdbscan {
    rep: Rep,
    cfg: HdbscanConfig,
}

pub fn spec(config: &LoadedConfig, rep: Rep) -> StageSpec {
    let declared = super::Declared::new(config.params(&["cluster.hdbscan"]));
    let cfg = declared.get("cluster.hdbscan");
    let source = rep.source();
    declared
        .spec(id(&rep), Hdbscan { rep, cfg })
        .input(&source, super::encode::LATENT)
        .outputs(&[super::cluster::ASSIGNMENTS, super::cluster::SUMMARY])
}

impl StageKind for Hdbscan {
    fn kind(&self) -> &'static str {
        super::cluster::Method::Hdbscan.key()
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        super::cluster::run(ctx, &self.rep, super::cluster::Method::Hdbscan, None, |points, _, d| {
            let labels = hdbscan::fit(points, d, self.cfg.min_cluster_size, self.cfg.min_samples).map_err(|e| match e {
                hdbscan::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.hdbscan.min_cluster_size: {e}"),
                hdbscan::Error::TooManySamples { .. } => anyhow::anyhow!("cluster.hdbscan.min_samples: {e}"),
                other => other.into(),
            })?;
            Ok((labels, serde_json::Map::new()))
        })
    }
}
