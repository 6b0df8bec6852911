//! Rendering, free of any reading: the notebook's published numbers and the Markdown that sets
//! ours beside them (metrics tables, comparisons, the methods tables, `report.md`), from the
//! typed metrics alone. The plot stage writes `report.md` with it; the card and the CLI print
//! its tables. What reads a run (and the README block) is `report.rs`.

use std::fmt::Write as _;

use crate::analysis::stats::Stats;
use crate::artifacts::score::{Comparison, Metrics, ModelMetrics, Summary};
use crate::models::Architecture;

/// What the notebook reported for a model: test MSE and best-of-10 purity.
#[derive(Debug, Clone, Copy)]
pub struct SeedNumbers {
    pub test_mse: f64,
    pub purity: f64,
}

/// The notebook's numbers for its own experiment: its two architectures on MNIST.
pub fn notebook_numbers(dataset: &str, arch: Option<&Architecture>) -> Option<SeedNumbers> {
    if dataset != "mnist" {
        return None;
    }
    match arch? {
        a if *a == Architecture::notebook_simple() => Some(SeedNumbers { test_mse: 0.021359, purity: 0.6589 }),
        a if *a == Architecture::notebook_conv() => Some(SeedNumbers { test_mse: 0.016341, purity: 0.7059 }),
        _ => None,
    }
}

fn summary(s: &Summary) -> String {
    format!("{:.4} ({:.4} ± {:.4})", s.best, s.mean, s.std)
}

/// Purity of the k-means seed with the lowest inertia (chosen without the labels).
fn label_free(r: &crate::artifacts::score::RunMetrics) -> String {
    r.label_free
        .get(crate::artifacts::score::Metric::Purity.key())
        .map_or("—".to_owned(), |p| format!("{p:.4} (seed {})", r.lowest_inertia_seed))
}

/// `0.6251 ± 0.0300 [0.5878, 0.6624]`, or the bare mean for one seed.
fn stats_cell(s: &Stats, digits: usize) -> String {
    match (s.std, s.ci95) {
        (Some(sd), Some([lo, hi])) => format!("{:.digits$} ± {sd:.digits$} [{lo:.digits$}, {hi:.digits$}]", s.mean),
        _ => format!("{:.digits$}", s.mean),
    }
}

/// The metrics tables (Markdown) of a `score/metrics.json`, per dataset: every trained model
/// (beside the notebook's numbers where the notebook ran it); with several training seeds also
/// the statistics over them and the model comparisons.
pub fn metrics_table(metrics: &Metrics) -> String {
    let mut out = String::new();
    for (i, dataset) in metrics.datasets.iter().enumerate() {
        if metrics.datasets.len() > 1 {
            let _ = write!(out, "{}### Dataset {dataset}\n\n", if i > 0 { "\n" } else { "" });
        }
        dataset_tables(&mut out, metrics, dataset);
    }
    out
}

fn dataset_tables(out: &mut String, metrics: &Metrics, dataset: &str) {
    let several = metrics.training_seeds.len() > 1;
    let num = |v: Option<f64>, digits: usize| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
    out.push_str(
        "| model | test MSE | notebook's test MSE | purity, k-means of lowest inertia (no labels) | purity, oracle: best seed by label (mean ± std) | notebook's purity (best by label) | NMI, oracle (mean ± std) | ARI, oracle (mean ± std) | ACC, oracle (mean ± std) |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for m in metrics.models_of(dataset) {
        let seed = notebook_numbers(dataset, m.arch.as_ref());
        for r in &m.runs {
            let label = match r.training_seed {
                Some(s) if several => format!("{} (training seed {s})", m.model),
                _ => m.model.clone(),
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(r.test_mse, 5),
                num(seed.map(|s| s.test_mse), 5),
                label_free(r),
                summary(&r.purity),
                num(seed.map(|s| s.purity), 4),
                summary(&r.nmi),
                summary(&r.ari),
                summary(&r.acc),
            );
        }
    }
    let baselines: Vec<&ModelMetrics> = metrics.baselines_of(dataset).collect();
    for b in &baselines {
        for r in &b.runs {
            let _ = writeln!(
                out,
                "| {} (baseline) | — | — | {} | {} | — | {} | {} | {} |",
                b.model,
                label_free(r),
                summary(&r.purity),
                summary(&r.nmi),
                summary(&r.ari),
                summary(&r.acc)
            );
        }
    }
    if !baselines.is_empty() {
        out.push_str(
            "\nBaselines: `pixels` clusters the raw test images; `pixels-pca<d>` their projection on the first d \
             principal components of the training images, d being a model's latent size.\n",
        );
    }
    if !several {
        return;
    }
    let n = metrics.training_seeds.len();
    let _ = write!(
        out,
        "\nOver the {n} training seeds: mean ± sample standard deviation [95% confidence interval, Student's t with {} degrees of \
         freedom] of each trained model's mean over the k-means seeds.\n\n",
        n - 1
    );
    out.push_str("| model | test MSE | purity | NMI | ARI | ACC |\n| --- | --- | --- | --- | --- | --- |\n");
    let rows =
        metrics.models_of(dataset).map(|m| (m, m.model.clone())).chain(baselines.iter().map(|b| (*b, format!("{} (baseline)", b.model))));
    for (m, label) in rows {
        let cell = |key: &str, digits: usize| m.over_training_seeds.get(key).map_or("—".to_owned(), |s| stats_cell(s, digits));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} |",
            cell("test_mse", 5),
            cell("purity", 4),
            cell("nmi", 4),
            cell("ari", 4),
            cell("acc", 4)
        );
    }
    let comparisons = |test: &'static str| metrics.comparisons.iter().filter(move |c| c.dataset == dataset && c.test == test);
    if comparisons("welch").next().is_some() {
        // Why not a permutation test: with n + n seeds there are only C(2n, n) relabellings.
        let relabellings = (1..=n).fold(1f64, |c, i| c * (n + i) as f64 / i as f64).round();
        let _ = write!(
            out,
            "\nModel differences over the training seeds: Welch's t-test, two-sided (it does not assume that both models vary \
             alike across seeds; a permutation test over {n} + {n} seeds has only {relabellings} relabellings, so its p-value \
             could not go below {:.3}).\n\n",
            2.0 / relabellings
        );
        out.push_str("| metric | difference | 95% CI | t | df | p |\n| --- | --- | --- | --- | --- | --- |\n");
        for c in comparisons("welch") {
            comparison_row(out, c);
        }
    }
    if comparisons("welch-baseline").next().is_some() {
        let _ = write!(
            out,
            "\nModels against baselines: Welch's t-test of the model's {n} per-training-seed values against the baseline's \
             per-k-means-seed values (a baseline has no training seed; the spread over k-means seeds is its noise), two-sided.\n\n"
        );
        out.push_str("| metric | difference | 95% CI | t | df | p |\n| --- | --- | --- | --- | --- | --- |\n");
        for c in comparisons("welch-baseline") {
            comparison_row(out, c);
        }
    }
}

fn comparison_row(out: &mut String, c: &Comparison) {
    let label = format!("{} ({} − {})", c.metric, c.a, c.b);
    let _ = match &c.result {
        Some(w) => writeln!(
            out,
            "| {label} | {:+.4} | [{:+.4}, {:+.4}] | {:.2} | {:.1} | {} |",
            w.diff,
            w.ci95[0],
            w.ci95[1],
            w.t,
            w.df,
            p_value(w.p)
        ),
        None => writeln!(out, "| {label} | — | — | — | — | no variance |"),
    };
}

/// `0.0032`, or `< 1e-6`.
pub fn p_value(p: f64) -> String {
    if p < 1e-6 {
        "< 1e-6".to_owned()
    } else if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// The facts of one run that the report states: every number comes from the run.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Per dataset: its shape and class count, the training images each model saw (in config
    /// order) and the test images.
    pub datasets: Vec<DatasetFacts>,
    /// Per model: its name and a one-line description (`ConvAE, 10-d latent`).
    pub models: Vec<(String, String)>,
    /// Further sections (markdown, each with its heading), placed before the figures.
    pub sections: Vec<String>,
}

/// The method x representation tables: per dataset and metric, a row per representation
/// (each model, its training seeds pooled, then the baselines), a column per
/// (embedding, method); each cell the mean over the method's seeds and training seeds, and
/// the best. Empty when k-means on the latents is all there is.
pub fn methods_tables(metrics: &Metrics) -> String {
    let c = &metrics.clusterings;
    if c.iter().all(|m| m.method == crate::stages::Method::Kmeans && m.embed.is_none()) {
        return String::new();
    }
    let mut out = String::from("## Clustering methods\n\n");
    out.push_str(
        "Every method on every representation. Each cell: first the clustering chosen without the labels (k-means: the \
         seed of the lowest inertia; GMM: of the highest log-likelihood; the other methods are deterministic), then in \
         brackets the mean over the method's seeds and the oracle, the best seed chosen with the test labels (an upper \
         bound no one without labels could pick); over training seeds, each is their mean. HDBSCAN and DBSCAN find \
         their own number of clusters and leave some points out as noise: here noise counts as one more cluster; the \
         tables after score only the points they kept.\n\n",
    );
    for dataset in &metrics.datasets {
        let mut cols: Vec<String> = Vec::new();
        let mut rows: Vec<String> = Vec::new();
        for m in c.iter().filter(|m| &m.dataset == dataset) {
            if !cols.contains(&m.label()) {
                cols.push(m.label());
            }
            if !rows.contains(&m.representation) {
                rows.push(m.representation.clone());
            }
        }
        for metric in crate::artifacts::score::Metric::ALL {
            let _ = write!(
                out,
                "### {dataset}: {}\n\n| representation | {} |\n|{}\n",
                metric.label(),
                cols.join(" | "),
                " --- |".repeat(cols.len() + 1)
            );
            for row in &rows {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|col| {
                        let cell: Vec<&crate::artifacts::score::MethodMetrics> =
                            c.iter().filter(|m| &m.dataset == dataset && &m.representation == row && &m.label() == col).collect();
                        if cell.is_empty() {
                            return "—".to_owned();
                        }
                        let over = |f: &dyn Fn(&crate::artifacts::score::MethodMetrics) -> f64| {
                            cell.iter().map(|m| f(m)).sum::<f64>() / cell.len() as f64
                        };
                        let mean = over(&|m| m.metric(metric).mean);
                        let best = over(&|m| m.metric(metric).best);
                        match cell.iter().map(|m| m.selected.as_ref().map(|s| s.metric(metric))).collect::<Option<Vec<f64>>>() {
                            Some(chosen) => {
                                let chosen = chosen.iter().sum::<f64>() / chosen.len() as f64;
                                format!("{chosen:.4} (mean {mean:.4}, oracle {best:.4})")
                            }
                            None => format!("— (mean {mean:.4}, oracle {best:.4})"),
                        }
                    })
                    .collect();
                let _ = writeln!(out, "| {row} | {} |", cells.join(" | "));
            }
            out.push('\n');
        }
        for method in crate::stages::Method::ALL.into_iter().filter(|m| m.marks_noise()) {
            let noisy: Vec<&crate::artifacts::score::MethodMetrics> =
                c.iter().filter(|m| &m.dataset == dataset && m.method == method && m.covered.is_some()).collect();
            if noisy.is_empty() {
                continue;
            }
            let _ = write!(out, "### {dataset}: {}\n\n| representation | clusters found | noise | purity | NMI | ARI | ACC | on kept points: purity | NMI | ARI | ACC |\n|{}\n", method.title(), " --- |".repeat(11));
            for m in noisy {
                let covered = m.covered.as_ref().expect("filtered");
                let noise = m.noise_fraction.as_ref().and_then(|n| n.first()).copied().unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "| {}{} | {} | {:.1}% | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
                    m.representation,
                    m.training_seed.map(|s| format!(" s{s}")).unwrap_or_default()
                        + &m.embed.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
                    m.clusters.first().copied().unwrap_or(0),
                    100.0 * noise,
                    m.purity.mean,
                    m.nmi.mean,
                    m.ari.mean,
                    m.acc.mean,
                    covered["purity"],
                    covered["nmi"],
                    covered["ari"],
                    covered["acc"]
                );
            }
            out.push('\n');
        }
        let best: Vec<_> = metrics.best_clusterings.iter().filter(|b| &b.dataset == dataset).collect();
        if !best.is_empty() {
            let _ = write!(
                out,
                "### {dataset}: the clustering shown for each model\n\nThe method and embedding `report.clustering` declares, at the seed chosen \
                 without the labels; beside it the oracle, the most accurate clustering of any method, embedding and seed, which only \
                 the test labels could pick (an upper bound, not a result).\n\n\
                 | model | training seed | method | seed | clusters | ACC | oracle: method | seed | ACC |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
            );
            let named = |embed: &Option<String>, method: crate::stages::Method| match embed {
                Some(e) => format!("{e} + {method}"),
                None => method.to_string(),
            };
            let seed = |s: Option<u64>| s.map_or("—".to_owned(), |s| s.to_string());
            for b in best {
                let oracle = match &b.oracle {
                    Some(o) => format!("{} | {} | {:.4}", named(&o.embed, o.method), seed(o.seed), o.acc),
                    None => "— | — | —".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.4} | {oracle} |",
                    b.model,
                    b.training_seed,
                    named(&b.embed, b.method),
                    seed(b.seed),
                    b.clusters,
                    b.acc
                );
            }
            out.push('\n');
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct DatasetFacts {
    pub name: String,
    pub shape: crate::data::Shape,
    pub classes: usize,
    pub train_images: Vec<usize>,
    pub test_images: usize,
}

/// `60000` -> `60,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `report.md`: the question, the metrics beside the notebook's, and the figures.
pub fn markdown(metrics: &Metrics, facts: &RunFacts, figures: &[(&str, &str)]) -> String {
    let mut out = String::new();
    out.push_str("# latentscope report\n\n");
    let names: Vec<&str> = facts.datasets.iter().map(|d| d.name.as_str()).collect();
    let _ =
        write!(out, "Does an autoencoder's latent space, learned without labels, group the images of {} by class? ", names.join(" and "));
    let models: Vec<String> = facts.models.iter().map(|(name, what)| format!("{name}: {what}")).collect();
    let list = |seeds: &[u64]| seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let training = match metrics.training_seeds.as_slice() {
        [one] => format!("training seed {one}"),
        many => format!("each with {} training seeds ({})", many.len(), list(many)),
    };
    let count = facts.models.len();
    let _ = write!(
        out,
        "{} autoencoder{} ({}) were trained on each dataset, {training}; their encodings of the test images were clustered \
         with k-means (k = {}, k-means++) for each of {} seeds ({}) and scored against the true labels.\n\n",
        match count {
            1 => "One".to_owned(),
            2 => "Two".to_owned(),
            n => n.to_string(),
        },
        if count == 1 { "" } else { "s" },
        models.join("; "),
        metrics.k,
        metrics.kmeans_seeds.len(),
        list(&metrics.kmeans_seeds)
    );
    for d in &facts.datasets {
        let trained = match d.train_images.as_slice() {
            [n, rest @ ..] if rest.iter().all(|m| m == n) => format!("{} training images", thousands(*n as u64)),
            counts => format!("{} training images (per model)", counts.iter().map(|&n| thousands(n as u64)).collect::<Vec<_>>().join(", ")),
        };
        let _ = writeln!(
            out,
            "- {}: {trained}, {} test images, {} images, {} classes",
            d.name,
            thousands(d.test_images as u64),
            d.shape,
            d.classes
        );
    }
    out.push('\n');
    out.push_str("## Metrics\n\n");
    out.push_str(&metrics_table(metrics));
    out.push_str("\nPurity as the notebook defines it (each cluster counts its most common label); NMI with arithmetic ");
    out.push_str("normalisation; ARI adjusted for chance; ACC under the best one-to-one cluster-to-label matching ");
    out.push_str("(Hungarian). Best, mean and population standard deviation over the k-means seeds. \"Best by label\" picks ");
    out.push_str("the k-means seed by purity, which uses the true labels (what the notebook did); \"lowest inertia\" is the ");
    out.push_str("seed a user without labels would pick, and the honest estimate of what k-means finds.\n\n");
    for section in &facts.sections {
        out.push_str(section);
        if !section.ends_with("\n\n") {
            out.push('\n');
        }
    }
    out.push_str("## Figures\n\n");
    for (file, caption) in figures {
        let _ = write!(out, "### {caption}\n\n![{caption}]({file})\n\n");
    }
    out
}
