//! `train-<model>-s<training seed>`: train one autoencoder on the training split and evaluate it
//! on the test split. Outputs `model.safetensors` (PyTorch state-dict names), `history.json`
//! and `metrics.json` (`{"test_mse": ...}`).

use serde_json::json;

use super::{Run, StageId};
use crate::config::{DeviceChoice, LoadedConfig};
use crate::data::{Dataset, Split};
use crate::models::{self, Arch};
use crate::pipeline::{Cost, StageContext, StageKind, StageReport, StageSpec};
use crate::train::{self, TrainSettings};

pub const MODEL: &str = "model.safetensors";
pub const HISTORY: &str = "history.json";
pub const METRICS: &str = "metrics.json";

pub fn id(run: Run) -> String {
    StageId::Train(run).to_string()
}

pub struct Train {
    settings: TrainSettings,
    limit: Option<usize>,
    device: DeviceChoice,
}

pub fn spec(config: &LoadedConfig, run: Run) -> StageSpec {
    let c = &config.config;
    let arch = run.arch;
    let m = match arch {
        Arch::Simple => &c.models.simple,
        Arch::Conv => &c.models.conv,
    };
    let settings =
        TrainSettings { arch, epochs: m.epochs, batch_size: m.batch_size, lr: m.lr, weight_decay: m.weight_decay, seed: run.seed };
    let kind = Train { settings, limit: c.train.limit, device: c.device };
    let params = config.params(&["train.limit", &format!("models.{}", arch.name())]);
    // The training seed under the key `seed`, as before training seeds became a list: a
    // single-seed run keeps its fingerprints, and its store entries stay valid.
    let spec = super::stage(id(run), kind)
        .params(params)
        .param("seed", run.seed)
        .param("arch", arch.name())
        .input(super::download::ID, super::download::OUTPUT)
        .outputs(&[MODEL, HISTORY, METRICS]);
    super::on_device(spec, config)
}

impl StageKind for Train {
    fn kind(&self) -> &'static str {
        "train"
    }

    /// 2: subnormals flushed to zero during training.
    fn version(&self) -> u32 {
        2
    }

    fn cost(&self) -> Cost {
        Cost::Heavy
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let data = Dataset::read(ctx.input(super::download::ID, super::download::OUTPUT)?)?;
        let train = limit(&data.train, self.limit);
        let device = models::device::select(self.device)?;
        let arch = self.settings.arch;
        tracing::info!(
            "training {} on {} images ({} epoch{}, batch {}) on {}",
            arch.class_name(),
            train.len(),
            self.settings.epochs,
            if self.settings.epochs == 1 { "" } else { "s" },
            self.settings.batch_size,
            models::device::name(&device)
        );
        let (varmap, model, history) = train::fit(&train, &self.settings, &device).map_err(|e| match e.downcast::<train::Diverged>() {
            Ok(d) => anyhow::anyhow!("{} {d}; lower models.{}.lr", ctx.stage_id, arch.name()),
            Err(e) => e,
        })?;
        let test_mse = train::mse(model.as_ref(), &data.test, &device)?;
        anyhow::ensure!(test_mse.is_finite(), "{}: the test MSE is {test_mse}; lower models.{}.lr", ctx.stage_id, arch.name());
        tracing::info!("{}: test MSE {test_mse:.6}", ctx.stage_id);
        models::save(&varmap, &ctx.output(MODEL))?;
        super::write_file(&ctx.output(HISTORY), serde_json::to_string(&history)? + "\n")?;
        super::write_json(&ctx.output(METRICS), &json!({"test_mse": test_mse}))?;
        Ok(StageReport { device: Some(history.device) })
    }
}

/// The first `limit` images of a split (all when None).
fn limit(split: &Split, limit: Option<usize>) -> Split {
    match limit {
        Some(n) if n < split.len() => {
            Split { images: split.images[..n * crate::data::PIXELS].to_vec(), labels: split.labels[..n].to_vec() }
        }
        _ => split.clone(),
    }
}
