//! `plot`: per dataset, the figures (loss curves, reconstructions, PCA scatters, contingency
//! heat maps, spread over seeds) and `report.md`, which sets the metrics beside the
//! notebook's numbers and embeds the figures.

use safetensors::Dtype;

use super::{Name, Run};
use crate::artifacts::plot::*;
use crate::artifacts::score::{Metric, Metrics};
use crate::config::LoadedConfig;
use crate::figures::{self, LossCurve};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::render;
use crate::tensorfile::{f32_values, TensorFile};
use crate::train::History;

/// The first two PCA coordinates of a run's test latents, `[n, 2]` row-major.
fn pca_points(ctx: &StageContext<'_>, run: &Run) -> anyhow::Result<Vec<f32>> {
    let path = ctx.input(&super::pca::id(run), crate::artifacts::pca::POINTS)?;
    let file = TensorFile::open(path)?;
    let (shape, bytes) = crate::artifacts::pca::PROJECTED.read(&file)?;
    anyhow::ensure!(shape.len() == 2 && shape[1] >= 2, "{}: points of shape {shape:?}; the scatter needs 2 components", path.display());
    Ok(f32_values(bytes).chunks_exact(shape[1]).flat_map(|r| [r[0], r[1]]).collect())
}

/// Cluster labels as scatter colours: noise grey, clusters past 253 sharing the last colour.
fn noise_coloured(found: &[u32]) -> Vec<u8> {
    found.iter().map(|&c| if c == super::cluster::NOISE { figures::NOISE_LABEL } else { c.min(253) as u8 }).collect()
}

/// Images per row of the sample grids.
const GRID: usize = 10;

/// Draws the figures of each model's first training seed (the notebook's figures), the
/// spread over every seed, and writes the report.
pub struct Plot {
    samples: usize,
    datasets: Vec<Name>,
    models: Vec<Name>,
    /// The training seed whose model the per-model figures show.
    shown: u64,
    extras: Extras,
    /// The representations whose k-selection curves are drawn (shown seed's and baselines).
    select_k: Vec<super::Rep>,
}

pub fn spec(config: &LoadedConfig) -> StageSpec {
    let c = &config.config;
    let kmeans_seeds = c.kmeans.seeds.clone();
    let shown = c.train.seeds[0];
    let datasets: Vec<Name> = c.datasets.keys().map(|d| d.as_str().into()).collect();
    let models: Vec<Name> = c.models.keys().map(|m| m.as_str().into()).collect();
    let names = |v: &[Name]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let extras = Extras::of(config);
    let mut outputs: Vec<String> = figure_captions(&names(&datasets), &names(&models), &extras).into_iter().map(|(f, _)| f).collect();
    outputs.push(REPORT.to_owned());
    let select_k: Vec<super::Rep> = match c.select_k {
        Some(_) => super::Rep::all(config).into_iter().filter(|r| r.shown(config)).collect(),
        None => Vec::new(),
    };
    let plot =
        Plot { samples: c.plot.samples, datasets: datasets.clone(), models: models.clone(), shown, extras: extras.clone(), select_k };
    let mut inputs: Vec<(String, &str)> =
        plot.select_k.iter().map(|r| (super::select_k::id(r), crate::artifacts::select_k::SUMMARY)).collect();
    // Everything else (k, the seeds) comes from score's metrics.json.
    let mut declared = super::Declared::default();
    declared.declare("plot", &c.plot);
    declared.declare("plot.training_seed", shown);
    let mut spec =
        declared.spec(super::PLOT, plot).param("order", super::order_param(config)).input(super::SCORE, crate::artifacts::score::METRICS);
    if extras.methods {
        spec = spec.input(super::SCORE, crate::artifacts::score::BEST);
    }
    for d in &datasets {
        for m in &models {
            let run = Run { dataset: d.clone(), model: m.clone(), seed: shown };
            for &view in &extras.views {
                inputs.push((super::view::id(view, &run), crate::artifacts::umap::VIEW_POINTS));
                inputs.push((super::view::id(view, &run), crate::artifacts::umap::VIEW_SUMMARY));
            }
        }
    }
    for (stage, file) in &inputs {
        spec = spec.input(stage, file);
    }
    for d in &datasets {
        spec = spec
            .input(&super::download::id(d), crate::artifacts::download::OUTPUT)
            .input(&super::download::id(d), crate::artifacts::download::SUMMARY);
        for m in &models {
            let run = Run { dataset: d.clone(), model: m.clone(), seed: shown };
            spec = spec
                .input(&super::train::id(&run), crate::artifacts::train::HISTORY)
                .input(&super::train::id(&run), crate::artifacts::train::CONFIG)
                .input(&super::encode::id(&run), crate::artifacts::encode::RECONSTRUCTIONS)
                .input(&super::encode::id(&run), crate::artifacts::encode::LATENT)
                .input(&super::pca::id(&run), crate::artifacts::pca::POINTS)
                .input(&super::pca::id(&run), crate::artifacts::pca::SUMMARY);
            // The cluster grid shows the best-purity seed, known only once score has run.
            for &k in &kmeans_seeds {
                spec = spec.input(
                    &super::kmeans::id(&super::Rep::raw(super::Subject::Model(run.clone())), k),
                    crate::artifacts::cluster::ASSIGNMENTS,
                );
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
    /// 7: with other clustering methods and embeddings, their tables, views, best clusterings
    /// and k-selection curves.
    /// 8: nothing chosen with the labels in a figure: the clustering shown is
    /// `report.clustering`'s at its label-free seed, the k-means figures the lowest inertia's.
    fn version(&self) -> u32 {
        8
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let metrics = Metrics::read(ctx.input(super::SCORE, crate::artifacts::score::METRICS)?)?;
        let mut facts = render::RunFacts { datasets: Vec::new(), models: Vec::new(), sections: Vec::new() };
        let mut embeddings = String::new();
        for dataset in &self.datasets {
            let test = super::download::read(ctx, dataset)?.test;
            facts.datasets.push(self.draw_dataset(ctx, &metrics, dataset, &test)?);
            embeddings.push_str(&self.draw_extras(ctx, &metrics, dataset, &test)?);
        }
        facts.sections.push(render::methods_tables(&metrics));
        facts.sections.push(embeddings);
        for model in &self.models {
            let run = Run { dataset: self.datasets[0].clone(), model: model.clone(), seed: self.shown };
            let (arch, _) = crate::artifacts::train::read_config(ctx.input(&super::train::id(&run), crate::artifacts::train::CONFIG)?)?;
            facts.models.push((model.to_string(), format!("{} {}, {}-d latent", arch.family(), arch.class_name(), arch.latent_dim())));
        }
        let names = |v: &[Name]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let figs = figure_captions(&names(&self.datasets), &names(&self.models), &self.extras);
        let refs: Vec<(&str, &str)> = figs.iter().map(|(f, c)| (f.as_str(), c.as_str())).collect();
        let path = ctx.output(REPORT);
        super::write_file(&path, render::markdown(&metrics, &facts, &refs))?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}

impl Plot {
    /// The views, the best clustering's members and the k-selection curves of one dataset;
    /// returns the report's text about them.
    fn draw_extras(&self, ctx: &StageContext<'_>, metrics: &Metrics, dataset: &Name, test: &crate::data::Split) -> anyhow::Result<String> {
        use std::fmt::Write;
        let mut text = String::new();
        let best = match self.extras.methods {
            true => Some(TensorFile::open(ctx.input(super::SCORE, crate::artifacts::score::BEST)?)?),
            false => None,
        };
        let mut trust = Vec::new();
        for m in &self.models {
            let run = Run { dataset: dataset.clone(), model: m.clone(), seed: self.shown };
            let chosen = metrics.best_clusterings.iter().find(|b| b.key == run.tag());
            let best_labels: Option<Vec<u32>> = match (&best, chosen) {
                (Some(file), Some(b)) => Some(crate::tensorfile::u32_values(file.get(&b.key, Dtype::U32)?.1)),
                _ => None,
            };
            let describe = |b: &crate::artifacts::score::BestClustering| {
                let method = b.embed.as_ref().map_or(b.method.to_string(), |e| format!("{e} + {}", b.method));
                format!("{method}{}, ACC {:.3}", b.seed.map(|s| format!(" seed {s}")).unwrap_or_default(), b.acc)
            };
            if let (Some(found), Some(b)) = (&best_labels, chosen) {
                // The PCA view (first two components), coloured by the best clustering.
                let points = pca_points(ctx, &run)?;
                figures::scatter(
                    &ctx.output(&pca_clusters_figure(dataset, m)),
                    &format!("{dataset}, {m}: PCA, by cluster of {}", describe(b)),
                    &points,
                    &noise_coloured(found),
                    ("PC 1", "PC 2"),
                )?;
            }
            for &view in &self.extras.views {
                let v = super::view_name(view);
                let stage = super::view::id(view, &run);
                let path = ctx.input(&stage, crate::artifacts::umap::VIEW_POINTS)?;
                let (points, _, dim) = crate::artifacts::encode::read_latent(path)?;
                anyhow::ensure!(dim == 2, "{}: a view has {dim} dimensions, expected 2", path.display());
                let labels = crate::artifacts::encode::read_labels(path)?;
                let summary = crate::artifacts::umap::EmbeddingSummary::read(ctx.input(&stage, crate::artifacts::umap::VIEW_SUMMARY)?)?;
                trust.push((format!("{m}, {v}"), summary.trustworthiness));
                let name = if v == "tsne" { "t-SNE" } else { "UMAP" };
                let axes = (format!("{name} 1"), format!("{name} 2"));
                figures::scatter(
                    &ctx.output(&view_figure(v, dataset, m, false)),
                    &format!("{dataset}, {m}: {name} of the test-set latents, by true label"),
                    &points,
                    &labels,
                    (&axes.0, &axes.1),
                )?;
                if let (Some(found), Some(b)) = (&best_labels, chosen) {
                    figures::scatter(
                        &ctx.output(&view_figure(v, dataset, m, true)),
                        &format!("{dataset}, {m}: {name}, by cluster of {}", describe(b)),
                        &points,
                        &noise_coloured(found),
                        (&axes.0, &axes.1),
                    )?;
                }
            }
            if let (Some(found), Some(b)) = (&best_labels, chosen) {
                anyhow::ensure!(found.len() == test.len(), "{m}: {} best-cluster labels for {} test images", found.len(), test.len());
                let mut groups: Vec<u32> = found.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
                groups.truncate(30);
                let rows: Vec<(String, Vec<f32>)> = groups
                    .iter()
                    .map(|&g| {
                        let members: Vec<usize> = (0..test.len()).filter(|&i| found[i] == g).collect();
                        let mut counts = vec![0usize; 256];
                        members.iter().for_each(|&i| counts[test.labels[i] as usize] += 1);
                        let majority = (0..256).max_by_key(|&l| (counts[l], std::cmp::Reverse(l))).unwrap_or(0);
                        let name = if g == super::cluster::NOISE { "noise".to_owned() } else { g.to_string() };
                        let label = format!("{name}: {} (most {majority})", members.len());
                        (label, members.iter().take(GRID).flat_map(|&i| test.image(i).iter().map(|&p| p as f32 / 255.0)).collect())
                    })
                    .collect();
                let refs: Vec<(&str, &[f32])> = rows.iter().map(|(l, p)| (l.as_str(), p.as_slice())).collect();
                let title = format!("{dataset}, {m}: the first test images of each cluster of {} (size, most common label)", describe(b));
                figures::image_rows(&ctx.output(&best_clusters_figure(dataset, m)), &title, test.shape, &refs, GRID)?;
            }
        }
        if !trust.is_empty() {
            let _ = write!(
                text,
                "## {dataset}: 2-D views\n\nTrustworthiness (15 neighbours, first 2,000 test points; 1 means every neighbour in the view \
                 is a neighbour in the latent space).\n\n| view | trustworthiness |\n| --- | --- |\n"
            );
            for (name, t) in trust {
                let _ = writeln!(text, "| {name} | {t:.4} |");
            }
            text.push('\n');
        }
        let reps: Vec<&super::Rep> = self.select_k.iter().filter(|r| r.subject.dataset() == dataset.as_ref()).collect();
        if !reps.is_empty() {
            let mut silhouettes = Vec::new();
            let mut criterion = Vec::new();
            let _ = write!(
                text,
                "## {dataset}: choosing k without labels\n\nFor each k, one clustering; the silhouette on a sample (higher is better) \
                 and the inertia or BIC. Does the data itself pick the number of classes?\n\n\
                 | representation | k of the best silhouette | its silhouette | k of the lowest BIC |\n| --- | --- | --- | --- |\n"
            );
            for rep in reps {
                let s =
                    crate::artifacts::select_k::SelectK::read(ctx.input(&super::select_k::id(rep), crate::artifacts::select_k::SUMMARY)?)?;
                let name = format!("{}{}", rep.subject.name(), if rep.umap { ", umap" } else { "" });
                let best = s.ks.iter().position(|&k| k == s.best_silhouette_k).map_or(f64::NAN, |i| s.silhouette[i]);
                let bic = s.best_bic_k.map_or("—".to_owned(), |k| k.to_string());
                let _ = writeln!(text, "| {name} | {} | {best:.3} | {bic} |", s.best_silhouette_k);
                let xs: Vec<f64> = s.ks.iter().map(|&k| k as f64).collect();
                silhouettes.push((name.clone(), xs.iter().copied().zip(s.silhouette.iter().copied()).collect()));
                // Relative to the first k, so that representations of any scale share an axis.
                let (values, what) = if s.bic.is_empty() { (&s.inertia, "inertia") } else { (&s.bic, "BIC") };
                let first = values.first().copied().unwrap_or(1.0);
                let scaled = values.iter().map(|v| if what == "inertia" { v / first } else { v - first });
                criterion.push((format!("{name} ({what})"), xs.iter().copied().zip(scaled).collect()));
            }
            text.push('\n');
            let panels =
                vec![("silhouette (sampled)", silhouettes), ("inertia / inertia at the lowest k, or BIC - BIC at the lowest k", criterion)];
            figures::curves(&ctx.output(&select_k_figure(dataset)), &format!("{dataset}: choosing k without labels"), "k", &panels)?;
        }
        Ok(text)
    }

    /// The figures of one dataset; returns the facts the report states about it.
    fn draw_dataset(
        &self,
        ctx: &StageContext<'_>,
        metrics: &Metrics,
        dataset: &Name,
        test: &crate::data::Split,
    ) -> anyhow::Result<render::DatasetFacts> {
        let summary = crate::artifacts::download::DatasetSummary::read(
            ctx.input(&super::download::id(dataset), crate::artifacts::download::SUMMARY)?,
        )?;
        let run = |model: &Name| Run { dataset: dataset.clone(), model: model.clone(), seed: self.shown };

        // Loss curves.
        let histories: Vec<History> = self
            .models
            .iter()
            .map(|m| History::read(ctx.input(&super::train::id(&run(m)), crate::artifacts::train::HISTORY)?))
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
        let shape = test.shape;
        let n = self.samples.min(test.len());
        let originals: Vec<f32> = test.images[..n * shape.pixels()].iter().map(|&p| p as f32 / 255.0).collect();
        let mut recon = Vec::new();
        for m in &self.models {
            let file = TensorFile::open(ctx.input(&super::encode::id(&run(m)), crate::artifacts::encode::RECONSTRUCTIONS)?)?;
            recon.push(f32_values(crate::artifacts::encode::IMAGES.read(&file)?.1));
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
            let labels = crate::artifacts::encode::read_labels(ctx.input(&super::encode::id(&run), crate::artifacts::encode::LATENT)?)?;
            let points = pca_points(ctx, &run)?;
            let ratio = crate::artifacts::pca::PcaSummary::read(ctx.input(&super::pca::id(&run), crate::artifacts::pca::SUMMARY)?)?
                .explained_variance_ratio;
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
            let assigned = crate::artifacts::cluster::read_labels(ctx.input(
                &super::kmeans::id(&super::Rep::raw(super::Subject::Model(run.clone())), shown.lowest_inertia_seed),
                crate::artifacts::cluster::ASSIGNMENTS,
            )?)?;
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
                    "{dataset}, {m}: the first test images of each cluster (k-means seed {}, lowest inertia; size, most common label)",
                    shown.lowest_inertia_seed
                ),
            )?;
            figures::heatmap(
                &ctx.output(&contingency_figure(dataset, m)),
                &format!("{dataset}, {m}: true label x cluster (k-means seed {}, lowest inertia)", shown.lowest_inertia_seed),
                &shown.contingency,
                &crate::analysis::metrics::diagonal_order(&shown.contingency),
            )?;
        }

        // The spread over seeds, per metric and model.
        let panels: Vec<(&str, Vec<figures::Strip<'_>>)> = Metric::ALL
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
                (metric.key(), strips)
            })
            .collect();
        let title = format!(
            "{dataset}. Grey: each of {} clusterings per model; colour: each training seed's mean; bar: mean over {} training seed{}",
            metrics.kmeans_seeds.len() * metrics.training_seeds.len(),
            metrics.training_seeds.len(),
            if metrics.training_seeds.len() > 1 { "s" } else { "" }
        );
        figures::strips(&ctx.output(&spread_figure(dataset)), &title, &panels)?;
        Ok(render::DatasetFacts {
            name: dataset.to_string(),
            shape: summary.shape,
            classes: summary.classes,
            train_images: histories.iter().map(|h| h.train_images).collect(),
            test_images: test.len(),
        })
    }
}
