//! `plot`: per dataset, the figures (loss curves, reconstructions, PCA scatters, contingency
//! heat maps, spread over seeds) and `report.md`, which sets the metrics beside the
//! notebook's numbers and embeds the figures.

use safetensors::Dtype;

use super::score::{Metrics, CLUSTER_METRICS};
use super::{Name, Run};
use crate::config::LoadedConfig;
use crate::figures::{self, LossCurve};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::report;
use crate::tensorfile::{f32_values, TensorFile};
use crate::train::History;

pub const ID: &str = "plot";
pub const REPORT: &str = "report.md";

pub fn loss_figure(dataset: &str) -> String {
    format!("loss-{dataset}.png")
}

pub fn reconstructions_figure(dataset: &str) -> String {
    format!("reconstructions-{dataset}.png")
}

pub fn spread_figure(dataset: &str) -> String {
    format!("spread-{dataset}.png")
}

pub fn samples_figure(dataset: &str) -> String {
    format!("samples-{dataset}.png")
}

pub fn clusters_figure(dataset: &str, model: &str) -> String {
    format!("clusters-{dataset}-{model}.png")
}

/// Images per row of the sample grids.
const GRID: usize = 10;

pub fn pca_figure(dataset: &str, model: &str) -> String {
    format!("pca-{dataset}-{model}.png")
}

pub fn contingency_figure(dataset: &str, model: &str) -> String {
    format!("contingency-{dataset}-{model}.png")
}

/// Every figure this stage draws for these datasets and models, with its caption, in report
/// order.
pub fn figure_captions(datasets: &[String], models: &[String]) -> Vec<(String, String)> {
    let mut figs = Vec::new();
    for d in datasets {
        figs.push((samples_figure(d), format!("{d}: test images of each class")));
        figs.push((loss_figure(d), format!("{d}: training and test loss")));
        figs.push((reconstructions_figure(d), format!("{d}: reconstructions")));
        for m in models {
            figs.push((pca_figure(d, m), format!("{d}: PCA of the {m} latent space")));
        }
        for m in models {
            figs.push((contingency_figure(d, m), format!("{d}: contingency of the best {m} clustering")));
        }
        for m in models {
            figs.push((clusters_figure(d, m), format!("{d}: test images in each cluster of the best {m} clustering")));
        }
        figs.push((spread_figure(d), format!("{d}: spread of each metric over k-means and training seeds")));
    }
    figs
}

/// Draws the figures of each model's first training seed (the notebook's figures), the
/// spread over every seed, and writes the report.
pub struct Plot {
    samples: usize,
    datasets: Vec<Name>,
    models: Vec<Name>,
    /// The training seed whose model the per-model figures show.
    shown: u64,
}

pub fn spec(config: &LoadedConfig) -> StageSpec {
    let c = &config.config;
    let kmeans_seeds = c.kmeans.seeds.clone();
    let shown = c.train.seeds[0];
    let datasets: Vec<Name> = c.datasets.keys().map(|d| d.as_str().into()).collect();
    let models: Vec<Name> = c.models.keys().map(|m| m.as_str().into()).collect();
    let names = |v: &[Name]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut outputs: Vec<String> = figure_captions(&names(&datasets), &names(&models)).into_iter().map(|(f, _)| f).collect();
    outputs.push(REPORT.to_owned());
    // Everything else (k, the seeds) comes from score's metrics.json.
    let mut spec = super::stage(ID, Plot { samples: c.plot.samples, datasets: datasets.clone(), models: models.clone(), shown })
        .params(config.params(&["plot"]))
        .param("plot.training_seed", shown)
        .input(super::score::ID, super::score::METRICS);
    for d in &datasets {
        spec = spec.input(&super::download::id(d), super::download::OUTPUT).input(&super::download::id(d), super::download::SUMMARY);
        for m in &models {
            let run = Run { dataset: d.clone(), model: m.clone(), seed: shown };
            spec = spec
                .input(&super::train::id(&run), super::train::HISTORY)
                .input(&super::train::id(&run), super::train::CONFIG)
                .input(&super::encode::id(&run), super::encode::RECONSTRUCTIONS)
                .input(&super::encode::id(&run), super::encode::LATENT)
                .input(&super::pca::id(&run), super::pca::POINTS)
                .input(&super::pca::id(&run), super::pca::SUMMARY);
            // The cluster grid shows the best-purity seed, known only once score has run.
            for &k in &kmeans_seeds {
                spec = spec.input(&super::kmeans::id(&super::Subject::Model(run.clone()), k), super::kmeans::ASSIGNMENTS);
            }
        }
    }
    spec.outputs = outputs;
    spec
}

impl StageKind for Plot {
    fn kind(&self) -> &'static str {
        "plot"
    }

    /// 3: the report states the run's image counts and k; training seeds; spread figure.
    /// 4: per dataset, any model; figure names carry dataset and model.
    /// 5: PCA axes give the explained variance; heat maps in matching order with a scale.
    /// 6: the loss plot shows the test loss per epoch, a centred average, whole-epoch ticks;
    /// sample grids of the dataset and of each cluster.
    fn version(&self) -> u32 {
        6
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let metrics = Metrics::read(ctx.input(super::score::ID, super::score::METRICS)?)?;
        let mut facts = report::RunFacts { datasets: Vec::new(), models: Vec::new() };
        for dataset in &self.datasets {
            facts.datasets.push(self.draw_dataset(ctx, &metrics, dataset)?);
        }
        for model in &self.models {
            let run = Run { dataset: self.datasets[0].clone(), model: model.clone(), seed: self.shown };
            let (arch, _) = super::train::read_config(ctx.input(&super::train::id(&run), super::train::CONFIG)?)?;
            facts.models.push((model.to_string(), format!("{} {}, {}-d latent", arch.family(), arch.class_name(), arch.latent_dim())));
        }
        let names = |v: &[Name]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let figs = figure_captions(&names(&self.datasets), &names(&self.models));
        let refs: Vec<(&str, &str)> = figs.iter().map(|(f, c)| (f.as_str(), c.as_str())).collect();
        let path = ctx.output(REPORT);
        super::write_file(&path, report::markdown(&metrics, &facts, &refs))?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}

impl Plot {
    /// The figures of one dataset; returns the facts the report states about it.
    fn draw_dataset(&self, ctx: &StageContext<'_>, metrics: &Metrics, dataset: &Name) -> anyhow::Result<report::DatasetFacts> {
        let summary = super::download::DatasetSummary::read(ctx.input(&super::download::id(dataset), super::download::SUMMARY)?)?;
        let run = |model: &Name| Run { dataset: dataset.clone(), model: model.clone(), seed: self.shown };

        // Loss curves.
        let histories: Vec<History> = self
            .models
            .iter()
            .map(|m| History::read(ctx.input(&super::train::id(&run(m)), super::train::HISTORY)?))
            .collect::<anyhow::Result<_>>()?;
        let curves: Vec<LossCurve<'_>> = self
            .models
            .iter()
            .zip(&histories)
            .map(|(m, h)| LossCurve {
                name: m,
                step_loss: &h.step_loss,
                steps_per_epoch: h.train_images.div_ceil(h.settings.batch_size.max(1)),
                test_loss: h.epochs.iter().filter_map(|e| e.test_loss).collect(),
            })
            .collect();
        figures::loss_curves(&ctx.output(&loss_figure(dataset)), &curves)?;

        // Originals over every model's reconstructions.
        let test = super::download::read(ctx, dataset)?.test;
        let shape = test.shape;
        let n = self.samples.min(test.len());
        let originals: Vec<f32> = test.images[..n * shape.pixels()].iter().map(|&p| p as f32 / 255.0).collect();
        let mut recon = Vec::new();
        for m in &self.models {
            let file = TensorFile::open(ctx.input(&super::encode::id(&run(m)), super::encode::RECONSTRUCTIONS)?)?;
            recon.push(f32_values(file.get("images", Dtype::F32)?.1));
        }
        let mut rows = vec![("original", originals.as_slice())];
        rows.extend(self.models.iter().zip(&recon).map(|(m, r)| (m.as_ref(), r.as_slice())));
        let title = format!("{dataset}: first {n} test images and their reconstructions");
        figures::image_rows(&ctx.output(&reconstructions_figure(dataset)), &title, shape, &rows, n)?;

        // Test images of each class, and of each cluster of the best clustering.
        let grid = |rows: Vec<(String, Vec<usize>)>, path: &str, title: &str| -> anyhow::Result<()> {
            let pixels: Vec<(String, Vec<f32>)> = rows
                .into_iter()
                .map(|(label, idx)| (label, idx.iter().flat_map(|&i| test.image(i).iter().map(|&p| p as f32 / 255.0)).collect()))
                .collect();
            let refs: Vec<(&str, &[f32])> = pixels.iter().map(|(l, p)| (l.as_str(), p.as_slice())).collect();
            figures::image_rows(&ctx.output(path), title, shape, &refs, GRID)
        };
        let classes = test.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        let by_class: Vec<(String, Vec<usize>)> = (0..classes)
            .map(|c| (format!("class {c}"), (0..test.len()).filter(|&i| test.labels[i] as usize == c).take(GRID).collect()))
            .collect();
        grid(by_class, &samples_figure(dataset), &format!("{dataset}: the first test images of each class"))?;

        // PCA scatters and contingency heat maps.
        for m in &self.models {
            let run = run(m);
            let labels = super::encode::read_labels(ctx.input(&super::encode::id(&run), super::encode::LATENT)?)?;
            let file = TensorFile::open(ctx.input(&super::pca::id(&run), super::pca::POINTS)?)?;
            let (pshape, bytes) = file.get("points", Dtype::F32)?;
            anyhow::ensure!(pshape.len() == 2 && pshape[1] >= 2, "PCA points of {m} have shape {pshape:?}; the scatter needs 2 components");
            let points: Vec<f32> = f32_values(bytes).chunks_exact(pshape[1]).flat_map(|r| [r[0], r[1]]).collect();
            let ratio = super::pca::PcaSummary::read(ctx.input(&super::pca::id(&run), super::pca::SUMMARY)?)?.explained_variance_ratio;
            let axis = |i: usize| format!("PC {} ({:.1}% of the variance)", i + 1, 100.0 * ratio.get(i).copied().unwrap_or(f64::NAN));
            let shown = 100.0 * (ratio.iter().take(2).sum::<f64>());
            figures::scatter(
                &ctx.output(&pca_figure(dataset, m)),
                &format!("{dataset}, {m}: test-set latents on 2 principal components ({shown:.0}% of the variance)"),
                &points,
                &labels,
                (&axis(0), &axis(1)),
            )?;
            let shown = metrics
                .model(dataset, m)
                .and_then(|mm| mm.runs.iter().find(|r| r.training_seed == Some(self.shown)))
                .ok_or_else(|| anyhow::anyhow!("score/metrics.json has no {dataset} {m} model of training seed {}", self.shown))?;
            let file = TensorFile::open(
                ctx.input(&super::kmeans::id(&super::Subject::Model(run.clone()), shown.best_purity_seed), super::kmeans::ASSIGNMENTS)?,
            )?;
            let assigned = crate::tensorfile::u32_values(file.get("labels", Dtype::U32)?.1);
            anyhow::ensure!(assigned.len() == test.len(), "{m}: {} cluster assignments for {} test images", assigned.len(), test.len());
            let order = crate::analysis::metrics::diagonal_order(&shown.contingency);
            let by_cluster: Vec<(String, Vec<usize>)> = order
                .iter()
                .map(|&c| {
                    let members: Vec<usize> = (0..test.len()).filter(|&i| assigned[i] as usize == c).collect();
                    let majority =
                        shown.contingency.iter().enumerate().max_by_key(|(_, row)| row.get(c).copied().unwrap_or(0)).map_or(0, |(l, _)| l);
                    (format!("{c}: {} (most {majority})", members.len()), members.into_iter().take(GRID).collect())
                })
                .collect();
            grid(
                by_cluster,
                &clusters_figure(dataset, m),
                &format!(
                    "{dataset}, {m}: the first test images of each cluster (k-means seed {}; size, most common label)",
                    shown.best_purity_seed
                ),
            )?;
            figures::heatmap(
                &ctx.output(&contingency_figure(dataset, m)),
                &format!("{dataset}, {m}: true label x cluster (k-means seed {}, best purity)", shown.best_purity_seed),
                &shown.contingency,
                &crate::analysis::metrics::diagonal_order(&shown.contingency),
            )?;
        }

        // The spread over seeds, per metric and model.
        let panels: Vec<(&str, Vec<figures::Strip<'_>>)> = CLUSTER_METRICS
            .iter()
            .map(|&metric| {
                let strips = metrics
                    .models_of(dataset)
                    .chain(metrics.baselines_of(dataset))
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
            "{dataset}. Grey: each of {} clusterings per model; colour: each training seed's mean; bar: mean over {} training seed{}",
            metrics.kmeans_seeds.len() * metrics.training_seeds.len(),
            metrics.training_seeds.len(),
            if metrics.training_seeds.len() > 1 { "s" } else { "" }
        );
        figures::strips(&ctx.output(&spread_figure(dataset)), &title, &panels)?;
        Ok(report::DatasetFacts {
            name: dataset.to_string(),
            shape: summary.shape,
            classes: summary.classes,
            train_images: histories.iter().map(|h| h.train_images).collect(),
            test_images: test.len(),
        })
    }
}
