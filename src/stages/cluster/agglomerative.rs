//! `agglomerative-<rep>`: hierarchical clustering (kodama; Ward linkage by default) cut at k
//! clusters; outputs as [`super`]. Deterministic, so no seed.

use super::Method;
use crate::analysis::agglomerative;
use crate::artifacts::cluster::Extra;
use crate::config::AgglomerativeConfig;
use crate::pipeline::{Cost, StageContext, StageKind, StageReport, StageSpec};
use crate::stages::{Declared, Rep};

pub struct Agglomerative {
    rep: Rep,
    cfg: AgglomerativeConfig,
}

pub fn spec(cfg: &AgglomerativeConfig, id: String, rep: Rep) -> StageSpec {
    let mut declared = Declared::default();
    let cfg = declared.declare("cluster.agglomerative", cfg.clone());
    let source = rep.source();
    declared
        .spec(id, Agglomerative { rep, cfg })
        .input(&source, crate::artifacts::encode::LATENT)
        .outputs(&[crate::artifacts::cluster::ASSIGNMENTS, crate::artifacts::cluster::SUMMARY])
}

impl StageKind for Agglomerative {
    fn kind(&self) -> &'static str {
        Method::Agglomerative.key()
    }

    fn version(&self) -> u32 {
        1
    }

    fn cost(&self) -> Cost {
        // n^2 / 2 distances in memory.
        Cost::Heavy
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        super::run(ctx, &self.rep, Method::Agglomerative, None, |points, _, d| {
            let labels = agglomerative::fit(points, d, self.cfg.k, self.cfg.linkage).map_err(|e| match e {
                agglomerative::Error::TooFewPoints { .. } => anyhow::anyhow!("cluster.agglomerative.k: {e}; lower it"),
                other => other.into(),
            })?;
            Ok((labels, Extra::default()))
        })
    }
}
