//! `encode-<dataset>-<model>-s<training seed>`: the trained encoder's latent vectors for the
//! whole test split (`latent.safetensors`: `latent` f32 [n, d], `labels` u8 [n]) and the
//! reconstructions of the first `plot.samples` test images (`reconstructions.safetensors`:
//! `images` f32 [n, C, H, W]). The architecture comes from the trained model's `config.json`.

use super::{Run, StageId};
use crate::config::{DeviceChoice, LoadedConfig};

use crate::artifacts::encode::*;
use crate::models;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile::{self, le_bytes};
use crate::train;

pub fn id(run: &Run) -> String {
    StageId::Encode(run.clone()).to_string()
}

pub struct Encode {
    run: Run,
    samples: usize,
    device: DeviceChoice,
}

pub fn spec(config: &LoadedConfig, run: Run) -> StageSpec {
    let train = super::train::id(&run);
    let data = super::download::id(&run.dataset);
    let mut declared = super::Declared::default();
    let samples = declared.declare("plot.samples", config.config.plot.samples);
    let device = super::declare_device(&mut declared, config);
    declared
        .spec(id(&run), Encode { run, samples, device })
        .input(&train, crate::artifacts::train::MODEL)
        .input(&train, crate::artifacts::train::CONFIG)
        .input(&data, crate::artifacts::download::OUTPUT)
        .outputs(&[LATENT, RECONSTRUCTIONS])
}

impl StageKind for Encode {
    fn kind(&self) -> &'static str {
        "encode"
    }

    /// 2: any architecture and image shape.
    /// 3: latent.safetensors says which model and split it comes from (`source` metadata).
    /// 5: the sigmoid's exp is our own (src/models/dense.rs), the same on every CPU.
    fn version(&self) -> u32 {
        5
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let device = models::device::select(self.device)?;
        let train_id = super::train::id(&self.run);
        let (arch, shape) = crate::artifacts::train::read_config(ctx.input(&train_id, crate::artifacts::train::CONFIG)?)?;
        let test = super::download::read(ctx, &self.run.dataset)?.test;
        anyhow::ensure!(
            test.shape == shape,
            "{}: the model was trained on {shape} images, the test images are {}",
            ctx.stage_id,
            test.shape
        );
        let model = models::load(&arch, shape, ctx.input(&train_id, crate::artifacts::train::MODEL)?, &device)?;
        let latent = train::encode(model.as_ref(), &test, &device)?;
        let d = arch.latent_dim();
        anyhow::ensure!(latent.len() == test.len() * d, "encoder returned {} values for {} images", latent.len(), test.len());
        super::ensure_finite(ctx.stage_id, "latent values", latent.iter().copied())?;
        let bytes = le_bytes(&latent);
        let source = format!("{} latents of the test split of {}", train_id, self.run.dataset);
        tensorfile::write_with(
            &ctx.output(LATENT),
            &[LATENT_VECTORS.array(vec![test.len(), d], &bytes), LABELS.array(vec![test.len()], &test.labels)],
            Some(("source", &source)),
        )?;
        let n = self.samples.min(test.len());
        let recon = train::reconstruct(model.as_ref(), &test, n, &device)?;
        super::ensure_finite(ctx.stage_id, "reconstructed pixels", recon.iter().copied())?;
        let recon = le_bytes(&recon);
        tensorfile::write(&ctx.output(RECONSTRUCTIONS), &[IMAGES.array(vec![n, shape.channels, shape.height, shape.width], &recon)])?;
        Ok(StageReport { device: Some(models::device::name(&device)) })
    }
}
