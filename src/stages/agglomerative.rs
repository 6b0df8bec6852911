//! `agglomerative-<rep>`: hierarchical clustering (kodama; Ward linkage by default) cut at k
//! clusters; outputs as [`super::cluster`]. Deterministic, so no seed.

use super::{Rep, StageId};
use crate::analysis::agglomerative;
use crate::config::{AgglomerativeConfig, LoadedConfig};
use crate::pipeline::{Cost, StageContext, StageKind, StageReport, StageSpec};

pub fn id(rep: &Rep) -> String {
    StageId::Agglomerative(rep.clone()).to_string()
}

pub struct Agglomerative {
    rep: Rep,
    cfg: AgglomerativeConfig,
}

pub fn spec(config: &LoadedConfig, rep: Rep) -> StageSpec {
    let declared = super::Declared::new(config.params(&["cluster.agglomerative"]));
    let cfg = declared.get("cluster.agglomerative");
    let source = rep.source();
    declared
        .spec(id(&rep), Agglomerative { rep, cfg })
        .input(&source, super::encode::LATENT)
        .outputs(&[super::cluster::ASSIGNMENTS, super::cluster::SUMMARY])
}

impl StageKind for Agglomerative {
    fn kind(&self) -> &'static str {
        super::cluster::Method::Agglomerative.key()
    }

    fn version(&self) -> u32 {
        1
    }

    fn cost(&self) -> Cost {
        // n^2 / 2 distances in memory.
        Cost::Heavy
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        super::cluster::run(ctx, &self.rep, super::cluster::Method::Agglomerative, None, |points, _, d| {
            let labels = agglomerative::fit(points, d, self.cfg.k, self.cfg.linkage).map_err(|e| match e {
                agglomerative::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.agglomerative.k: {e}; lower it"),
                other => other.into(),
            })?;
            Ok((labels, serde_json::Map::new()))
        })
    }
}
