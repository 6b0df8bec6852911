//! `baseline-<dataset>-pixels`, `baseline-<dataset>-pixels-pca<d>`: representations of the test
//! images that need no training, clustered and scored exactly like a model's latents
//! (`latent.safetensors`: `latent` f32 [n, d], `labels` u8 [n]). `pixels` is the raw image
//! (C*H*W values in [0, 1]);
//! `pixels-pca<d>` projects it on the first `d` principal components of the training images
//! (the first `train.limit` of them), `d` being a model's latent size. They answer "does the
//! autoencoder beat the pixels, and PCA at the same dimension?".

use super::{Baseline, Name, StageId};
use crate::analysis::pca;
use crate::config::LoadedConfig;
use crate::data::Split;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile::{self, le_bytes};

pub use crate::artifacts::encode::LATENT;

pub fn id(dataset: &str, baseline: Baseline) -> String {
    StageId::Baseline(dataset.into(), baseline).to_string()
}

pub struct BaselineStage {
    dataset: Name,
    baseline: Baseline,
    limit: Option<usize>,
}

pub fn spec(config: &LoadedConfig, dataset: Name, baseline: Baseline) -> StageSpec {
    let data = super::download::id(&dataset);
    let mut declared = super::Declared::default();
    declared.declare("baseline", baseline.tag());
    let limit = match baseline {
        Baseline::Pixels => None,
        // PCA is fit on the training images, so it reads the same limit as training.
        Baseline::PixelsPca(d) => {
            declared.declare("baseline.components", d);
            declared.declare("train.limit", config.config.train.limit)
        }
    };
    declared
        .spec(id(&dataset, baseline), BaselineStage { dataset, baseline, limit })
        .input(&data, crate::artifacts::download::OUTPUT)
        .outputs(&[LATENT])
}

/// Pixels as f32 in [0, 1], row-major [n, C*H*W].
fn pixels(split: &Split) -> Vec<f32> {
    split.images.iter().map(|&p| p as f32 / 255.0).collect()
}

impl StageKind for BaselineStage {
    fn kind(&self) -> &'static str {
        "baseline"
    }

    /// 2: latent.safetensors says what it holds (`source` metadata).
    fn version(&self) -> u32 {
        2
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let data = super::download::read(ctx, &self.dataset)?;
        let test = pixels(&data.test);
        let p = data.shape().pixels();
        let (values, d) = match self.baseline {
            Baseline::Pixels => (test, p),
            Baseline::PixelsPca(d) => {
                let n = super::train::checked_limit(ctx.stage_id, &self.dataset, self.limit, data.train.len())?;
                let spinner = crate::progress::spinner(format!("{}: PCA of {n} training images to {d} dimensions", ctx.stage_id));
                anyhow::ensure!(d <= p, "{}: PCA to {d} dimensions of {p}-value images", ctx.stage_id);
                let fit = pca::fit(&pixels(&data.train)[..n * p], p, d);
                spinner.finish_and_clear();
                (fit?.transform(&test), d)
            }
        };
        super::ensure_finite(ctx.stage_id, "baseline values", values.iter().copied())?;
        let bytes = le_bytes(&values);
        let n = data.test.len();
        let source = format!("{} of the test split of {}", ctx.stage_id, self.dataset);
        tensorfile::write_with(
            &ctx.output(LATENT),
            &[
                crate::artifacts::encode::LATENT_VECTORS.array(vec![n, d], &bytes),
                crate::artifacts::encode::LABELS.array(vec![n], &data.test.labels),
            ],
            Some(("source", &source)),
        )?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
