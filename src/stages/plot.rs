//! `plot`: the figures (loss curves, reconstructions, PCA scatters, contingency heat maps)
//! and `report.md`, which sets the metrics beside the notebook's numbers and embeds the figures.

use safetensors::Dtype;
use serde_json::Value;

use super::read_json;
use super::score::{Metrics, CLUSTER_METRICS};
use super::Run;
use crate::config::LoadedConfig;
use crate::data::{Dataset, PIXELS};
use crate::figures::{self, LossCurve};
use crate::models::Arch;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::report;
use crate::tensorfile::{f32_values, TensorFile};

pub const ID: &str = "plot";
pub const LOSS: &str = "loss.png";
pub const RECONSTRUCTIONS: &str = "reconstructions.png";
pub const REPORT: &str = "report.md";
pub const SPREAD: &str = "spread.png";

pub fn pca_figure(arch: Arch) -> String {
    format!("pca-{}.png", arch.name())
}

pub fn contingency_figure(arch: Arch) -> String {
    format!("contingency-{}.png", arch.name())
}

/// Every figure this stage draws, with its caption, in report order.
pub fn figure_captions() -> Vec<(String, String)> {
    let mut figs: Vec<(String, String)> = vec![(LOSS.into(), "Training loss".into()), (RECONSTRUCTIONS.into(), "Reconstructions".into())];
    for arch in Arch::ALL {
        figs.push((pca_figure(arch), format!("PCA of the {} latent space", arch.name())));
    }
    for arch in Arch::ALL {
        figs.push((contingency_figure(arch), format!("Contingency of the best {} clustering", arch.name())));
    }
    figs.push((SPREAD.into(), "Spread of each metric over k-means and training seeds".into()));
    figs
}

/// Draws the figures of each model's first training seed (the notebook's figures), the
/// spread over every seed, and writes the report.
pub struct Plot {
    samples: usize,
    /// The training seed whose model the per-model figures show.
    shown: u64,
}

pub fn spec(config: &LoadedConfig) -> StageSpec {
    let shown = config.config.train.seeds[0];
    let kind = Plot { samples: config.config.plot.samples, shown };
    let mut outputs = vec![LOSS.to_owned(), RECONSTRUCTIONS.to_owned(), REPORT.to_owned(), SPREAD.to_owned()];
    for arch in Arch::ALL {
        outputs.push(pca_figure(arch));
        outputs.push(contingency_figure(arch));
    }
    // Everything else (k, the seeds) comes from score's metrics.json.
    let mut spec = super::stage(ID, kind)
        .params(config.params(&["plot"]))
        .param("plot.training_seed", shown)
        .input(super::download::ID, super::download::OUTPUT)
        .input(super::score::ID, super::score::METRICS);
    for arch in Arch::ALL {
        let run = Run::new(arch, shown);
        spec = spec
            .input(&super::train::id(run), super::train::HISTORY)
            .input(&super::encode::id(run), super::encode::RECONSTRUCTIONS)
            .input(&super::encode::id(run), super::encode::LATENT)
            .input(&super::pca::id(run), super::pca::POINTS);
    }
    spec.outputs = outputs;
    spec
}

impl StageKind for Plot {
    fn kind(&self) -> &'static str {
        "plot"
    }

    /// 3: the report states the run's image counts and k; training seeds; spread figure.
    fn version(&self) -> u32 {
        3
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let metrics = Metrics::read(ctx.input(super::score::ID, super::score::METRICS)?)?;

        // Loss curves.
        let histories: Vec<(Arch, Value)> = Arch::ALL
            .iter()
            .map(|&a| Ok((a, read_json(ctx.input(&super::train::id(Run::new(a, self.shown)), super::train::HISTORY)?)?)))
            .collect::<anyhow::Result<_>>()?;
        let losses: Vec<(Arch, Vec<f32>, usize)> = histories
            .iter()
            .map(|(a, h)| {
                let steps: Vec<f32> =
                    h["step_loss"].as_array().map(|v| v.iter().filter_map(Value::as_f64).map(|x| x as f32).collect()).unwrap_or_default();
                let n = h["train_images"].as_u64().unwrap_or(1) as usize;
                let batch = h["settings"]["batch_size"].as_u64().unwrap_or(1).max(1) as usize;
                (*a, steps, n.div_ceil(batch))
            })
            .collect();
        let curves: Vec<LossCurve<'_>> =
            losses.iter().map(|(a, s, per)| LossCurve { name: a.name(), step_loss: s, steps_per_epoch: *per }).collect();
        figures::loss_curves(&ctx.output(LOSS), &curves)?;

        // Originals over both models' reconstructions.
        let test = Dataset::read(ctx.input(super::download::ID, super::download::OUTPUT)?)?.test;
        let n = self.samples.min(test.len());
        let originals: Vec<f32> = test.images[..n * PIXELS].iter().map(|&p| p as f32 / 255.0).collect();
        let mut recon = Vec::new();
        for arch in Arch::ALL {
            let file = TensorFile::open(ctx.input(&super::encode::id(Run::new(arch, self.shown)), super::encode::RECONSTRUCTIONS)?)?;
            recon.push(f32_values(file.get("images", Dtype::F32)?.1));
        }
        let rows = [("original", originals.as_slice()), ("simple", recon[0].as_slice()), ("conv", recon[1].as_slice())];
        figures::image_rows(&ctx.output(RECONSTRUCTIONS), &format!("First {n} test images and their reconstructions"), &rows, n)?;

        // PCA scatters and contingency heat maps.
        for arch in Arch::ALL {
            let run = Run::new(arch, self.shown);
            let labels = super::encode::read_labels(ctx.input(&super::encode::id(run), super::encode::LATENT)?)?;
            let file = TensorFile::open(ctx.input(&super::pca::id(run), super::pca::POINTS)?)?;
            let (shape, bytes) = file.get("points", Dtype::F32)?;
            anyhow::ensure!(
                shape.len() == 2 && shape[1] >= 2,
                "PCA points of {} have shape {shape:?}; the scatter needs 2 components",
                arch.name()
            );
            let points: Vec<f32> = f32_values(bytes).chunks_exact(shape[1]).flat_map(|r| [r[0], r[1]]).collect();
            figures::scatter(
                &ctx.output(&pca_figure(arch)),
                &format!("{}: test-set latents, first two principal components", arch.class_name()),
                &points,
                &labels,
                ("PC 1", "PC 2"),
            )?;
            let shown = metrics
                .model(arch.name())
                .and_then(|m| m.runs.iter().find(|r| r.training_seed == Some(self.shown)))
                .ok_or_else(|| anyhow::anyhow!("score/metrics.json has no {} model of training seed {}", arch.name(), self.shown))?;
            figures::heatmap(
                &ctx.output(&contingency_figure(arch)),
                &format!("{}: true label x k-means cluster (k-means seed {}, best purity)", arch.class_name(), shown.best_purity_seed),
                &shown.contingency,
            )?;
        }

        // The spread over seeds, per metric and model.
        let panels: Vec<(&str, Vec<figures::Strip<'_>>)> = CLUSTER_METRICS
            .iter()
            .map(|&metric| {
                let strips = metrics
                    .models
                    .iter()
                    .chain(&metrics.baselines)
                    .map(|m| figures::Strip {
                        name: &m.model,
                        clusterings: m.runs.iter().flat_map(|r| r.metric(metric).per_seed.clone()).collect(),
                        per_seed: m.runs.iter().map(|r| r.metric(metric).mean).collect(),
                    })
                    .collect();
                (metric, strips)
            })
            .collect();
        let title = format!(
            "Grey: each of {} clusterings per model; colour: each training seed's mean; bar: mean over {} training seed{}",
            metrics.kmeans_seeds.len() * metrics.training_seeds.len(),
            metrics.training_seeds.len(),
            if metrics.training_seeds.len() > 1 { "s" } else { "" }
        );
        figures::strips(&ctx.output(SPREAD), &title, &panels)?;

        let figs = figure_captions();
        let refs: Vec<(&str, &str)> = figs.iter().map(|(f, c)| (f.as_str(), c.as_str())).collect();
        let facts = report::RunFacts {
            train_images: histories.iter().map(|(_, h)| h["train_images"].as_u64().unwrap_or(0) as usize).collect(),
            test_images: test.len(),
        };
        let path = ctx.output(REPORT);
        super::write_file(&path, report::markdown(&metrics, &facts, &refs))?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
