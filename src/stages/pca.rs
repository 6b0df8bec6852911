//! `pca-<dataset>-<model>-s<training seed>`: the latent vectors projected on their first `pca.components`
//! principal components (`pca.safetensors`: `points` f32 [n, components], `components`
//! f32 [components, d], `mean` f32 [d]; `pca.json`: explained variance per component).

use super::{Run, StageId};
use crate::analysis::pca;
use crate::artifacts::pca::*;
use crate::config::LoadedConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile::{self, le_bytes};

pub fn id(run: &Run) -> String {
    StageId::Pca(run.clone()).to_string()
}

pub struct Pca {
    run: Run,
    components: usize,
}

pub fn spec(config: &LoadedConfig, run: Run) -> StageSpec {
    let source = super::encode::id(&run);
    let mut declared = super::Declared::default();
    let components = declared.declare("pca", config.config.pca.clone()).components;
    declared.spec(id(&run), Pca { run, components }).input(&source, crate::artifacts::encode::LATENT).outputs(&[POINTS, SUMMARY])
}

impl StageKind for Pca {
    fn kind(&self) -> &'static str {
        "pca"
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let (latent, n, d) =
            crate::artifacts::encode::read_latent(ctx.input(&super::encode::id(&self.run), crate::artifacts::encode::LATENT)?)?;
        let fit = pca::fit(&latent, d, self.components)?;
        let points = fit.transform(&latent);
        let components: Vec<f32> = fit.components.iter().flatten().map(|&v| v as f32).collect();
        let mean: Vec<f32> = fit.mean.iter().map(|&v| v as f32).collect();
        let values = points.iter().chain(&components).chain(&mean).copied();
        super::ensure_finite(ctx.stage_id, "PCA values (points, components, mean)", values)?;
        let (pb, cb, mb) = (le_bytes(&points), le_bytes(&components), le_bytes(&mean));
        tensorfile::write(
            &ctx.output(POINTS),
            &[PROJECTED.array(vec![n, self.components], &pb), COMPONENTS.array(vec![self.components, d], &cb), MEAN.array(vec![d], &mb)],
        )?;
        let summary = PcaSummary {
            components: self.components,
            explained_variance: fit.explained_variance.clone(),
            explained_variance_ratio: fit.explained_variance_ratio.clone(),
        };
        super::write_json(&ctx.output(SUMMARY), &summary)?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
