//! `train-<dataset>-<model>-s<training seed>`: train one autoencoder on a dataset's training
//! split and evaluate it on the test split. Outputs `model.safetensors` (PyTorch state-dict
//! names), `config.json` (the architecture and input shape, to rebuild the module),
//! `history.json` ([`History`]) and `metrics.json` ([`TrainMetrics`]).

use super::{Run, StageId};
use crate::artifacts::train::*;
use crate::config::{DeviceChoice, LoadedConfig, ModelConfig};
use crate::models;
use crate::pipeline::{Cost, StageContext, StageKind, StageReport, StageSpec};
use crate::train::{self, TrainSettings};

pub fn id(run: &Run) -> String {
    StageId::Train(run.clone()).to_string()
}

pub struct Train {
    run: Run,
    settings: TrainSettings,
    limit: Option<usize>,
    device: DeviceChoice,
}

/// The spec of a training; none for a model the config does not have.
pub fn spec(config: &LoadedConfig, run: Run) -> Option<StageSpec> {
    let model_key = format!("models.{}", run.model);
    let mut declared = super::Declared::default();
    // The training seed under the key `seed`, as before training seeds became a list.
    let seed = declared.declare("seed", run.seed);
    let limit = declared.declare("train.limit", config.config.train.limit);
    let device = super::declare_device(&mut declared, config);
    let m: ModelConfig = declared.declare(&model_key, config.config.models.get(run.model.as_ref())?.clone());
    let settings = TrainSettings {
        label: id(&run),
        arch: m.architecture(),
        epochs: m.epochs,
        batch_size: m.batch_size,
        lr: m.lr,
        weight_decay: m.weight_decay,
        seed,
    };
    let data = super::download::id(&run.dataset);
    Some(
        declared
            .spec(id(&run), Train { run, settings, limit, device })
            .input(&data, crate::artifacts::download::OUTPUT)
            .outputs(&[MODEL, CONFIG, HISTORY, METRICS]),
    )
}

impl StageKind for Train {
    fn kind(&self) -> &'static str {
        "train"
    }

    /// 2: subnormals flushed to zero during training.
    /// 3: any architecture and dataset; config.json; typed history.json.
    /// 4: history.json records the test loss after every epoch.
    /// 7: the CPU trainer (src/models/cpu.rs), our own exp in the sigmoid.
    /// 8: the CPU trainer sums the batch in sample order, as the autograd path does.
    /// 9: config.json lists every layer with its settings (the weights are unchanged).
    fn version(&self) -> u32 {
        9
    }

    fn cost(&self) -> Cost {
        Cost::Heavy
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let data = super::download::read(ctx, &self.run.dataset)?;
        let shape = data.shape();
        let arch = &self.settings.arch;
        let model_key = format!("models.{}", self.run.model);
        if let Err(why) = arch.check(shape) {
            anyhow::bail!("{}: model {} does not fit dataset {}: {why} (see {model_key})", ctx.stage_id, self.run.model, self.run.dataset);
        }
        checked_limit(ctx.stage_id, &self.run.dataset, self.limit, data.train.len())?;
        let train = data.train.head(self.limit);
        let device = models::device::select(self.device)?;
        tracing::info!(
            "training {} ({}) on {} {} images ({} epoch{}, batch {}) on {}",
            self.run.model,
            arch.family(),
            train.len(),
            shape,
            self.settings.epochs,
            if self.settings.epochs == 1 { "" } else { "s" },
            self.settings.batch_size,
            models::device::name(&device)
        );
        let (varmap, model, history) =
            train::fit(&train, Some(&data.test), &self.settings, &device).map_err(|e| match e.downcast::<train::Diverged>() {
                Ok(d) => anyhow::anyhow!("{} {d}; lower {model_key}.lr", ctx.stage_id),
                Err(e) => e,
            })?;
        // The last epoch's test loss is this MSE (the same weights, split and sum order).
        let test_mse = match history.epochs.last().and_then(|e| e.test_loss) {
            Some(loss) => loss,
            None => train::mse(model.as_ref(), &data.test, &device)?,
        };
        anyhow::ensure!(test_mse.is_finite(), "{}: the test MSE is {test_mse}; lower {model_key}.lr", ctx.stage_id);
        tracing::info!("{}: test MSE {test_mse:.6}", ctx.stage_id);
        models::save(&varmap, &ctx.output(MODEL))?;
        super::write_json(&ctx.output(CONFIG), &ModelFile::of(arch, shape))?;
        super::write_file(&ctx.output(HISTORY), serde_json::to_string(&history)? + "\n")?;
        super::write_json(&ctx.output(METRICS), &TrainMetrics { test_mse })?;
        Ok(StageReport { device: Some(history.device) })
    }
}

/// How many training images `train.limit` selects out of `n`. A limit above the split would
/// use the whole split under another fingerprint than `train.limit: null` (two names for one
/// computation): refused, never clamped.
pub fn checked_limit(stage: &str, dataset: impl std::fmt::Display, limit: Option<usize>, n: usize) -> anyhow::Result<usize> {
    match limit {
        Some(limit) if limit > n => anyhow::bail!(
            "{stage}: train.limit is {limit}, but dataset {dataset} has only {n} training images; set train.limit to at most \
             {n}, or to null for all of them"
        ),
        Some(limit) => Ok(limit),
        None => Ok(n),
    }
}
