//! `score`: every clustering scored against the true labels, per dataset and model (and
//! baseline): purity, NMI, ARI and accuracy (per seed, best, mean, population standard deviation), the test MSE, and the
//! contingency matrix (true label x cluster) of the best-purity seed (`metrics.json`).

use std::collections::BTreeMap;

use safetensors::Dtype;

use super::cluster::{Clustering, Method};
use super::{Name, Rep, Run, Subject};
use crate::analysis::metrics;
use crate::analysis::stats;
use crate::artifacts::cluster::{ClusteringSummary, KmeansSummary};
use crate::artifacts::score::*;
use crate::config::LoadedConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile;

pub struct Score {
    datasets: Vec<Name>,
    models: Vec<Name>,
    subjects: Vec<Subject>,
    kmeans_seeds: Vec<u64>,
    training_seeds: Vec<u64>,
    k: usize,
    reps: Vec<Rep>,
    /// Every method the config asks for, with its seeds (see [`Method::seeds`]).
    methods: Vec<(Method, Vec<Option<u64>>)>,
    /// The clustering the report shows of each model (`report.clustering`).
    shown: crate::config::ShownClustering,
}

/// Every clustering stage of a representation, method by method.
fn clusterings_of(s: &Score, rep: &Rep) -> Vec<Clustering> {
    s.methods.iter().flat_map(|(method, seeds)| seeds.iter().map(|&seed| Clustering { method: *method, rep: rep.clone(), seed })).collect()
}

pub fn spec(config: &LoadedConfig) -> StageSpec {
    let c = &config.config;
    let runs = Run::all(config);
    let subjects = Subject::all(config);
    let kind = Score {
        datasets: c.datasets.keys().map(|d| d.as_str().into()).collect(),
        models: c.models.keys().map(|m| m.as_str().into()).collect(),
        subjects: subjects.clone(),
        kmeans_seeds: c.kmeans.seeds.clone(),
        training_seeds: c.train.seeds.clone(),
        k: c.kmeans.k,
        reps: super::Rep::all(config),
        methods: Method::ALL.into_iter().map(|m| (m, m.seeds(c))).filter(|(_, seeds)| !seeds.is_empty()).collect(),
        shown: c.report.clustering.clone(),
    };
    // k-means on the plain representations is declared below already.
    let clustering_inputs: Vec<(String, Criterion)> = kind
        .reps
        .iter()
        .flat_map(|rep| clusterings_of(&kind, rep).into_iter().filter(|c| c.method != Method::Kmeans || rep.umap))
        .map(|c| (c.id(), c.method.criterion()))
        .collect();
    // The order of the seeds is the order of the per-seed lists; k sizes the contingency.
    let mut declared = super::Declared::default();
    declared.declare("kmeans.seeds", &c.kmeans.seeds);
    declared.declare("kmeans.k", c.kmeans.k);
    declared.declare("train.seeds", &c.train.seeds);
    declared.declare("report.clustering", &c.report.clustering);
    for (method, seeds) in &kind.methods {
        if let Some(key) = method.seeds_key() {
            declared.declare(key, seeds.iter().flatten().collect::<Vec<_>>());
        }
    }
    let mut spec = declared.spec(super::SCORE, kind).param("order", super::order_param(config)).outputs(&[METRICS, BEST]);
    for run in &runs {
        spec = spec
            .input(&super::train::id(run), crate::artifacts::train::METRICS)
            .input(&super::train::id(run), crate::artifacts::train::CONFIG);
    }
    for subject in &subjects {
        spec = spec.input(&subject.source(), crate::artifacts::encode::LATENT);
        for &seed in &c.kmeans.seeds {
            spec = spec
                .input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), crate::artifacts::cluster::ASSIGNMENTS)
                .input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), crate::artifacts::cluster::KMEANS_SUMMARY);
        }
    }
    // The assignments, and what chooses among a method's seeds without the labels: k-means'
    // inertia, a mixture's log-likelihood (a stage's inputs are exactly the files it reads).
    for (stage, criterion) in &clustering_inputs {
        spec = spec.input(stage, crate::artifacts::cluster::ASSIGNMENTS);
        match criterion {
            Criterion::LowestInertia => spec = spec.input(stage, crate::artifacts::cluster::KMEANS_SUMMARY),
            Criterion::HighestLogLikelihood => spec = spec.input(stage, crate::artifacts::cluster::SUMMARY),
            Criterion::Deterministic => {}
        }
    }
    spec
}

impl StageKind for Score {
    fn kind(&self) -> &'static str {
        "score"
    }

    /// 2: training seeds; statistics over them; typed metrics.json; the label-free choice.
    /// 3: models against baselines by Welch's test (the baseline's k-means spread counts).
    /// 4: datasets; any class count.
    /// 5: every clustering method and embedding; the best clustering's labels.
    /// 6: each method's clustering chosen without the labels (`selected`).
    /// 7: the clustering shown is `report.clustering`'s at its label-free seed (the oracle
    /// beside it); the contingency is the lowest-inertia k-means seed's.
    fn version(&self) -> u32 {
        7
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let (mut models, mut baselines, mut comparisons) = (Vec::new(), Vec::new(), Vec::new());
        for dataset in &self.datasets {
            let first = models.len();
            for model in &self.models {
                let (mut runs, mut arch) = (Vec::new(), None);
                for subject in self.subjects.iter().filter(|s| matches!(s, Subject::Model(r) if r.dataset == *dataset && r.model == *model))
                {
                    runs.push(self.score_subject(ctx, subject)?);
                    // Every training seed of a model has one architecture: read it once.
                    if let (Subject::Model(run), None) = (subject, &arch) {
                        arch = Some(
                            crate::artifacts::train::read_config(ctx.input(&super::train::id(run), crate::artifacts::train::CONFIG)?)?.0,
                        );
                    }
                }
                let mut m = ModelMetrics::of(dataset, model.to_string(), runs);
                m.arch = arch;
                models.push(m);
            }
            let first_baseline = baselines.len();
            for subject in self.subjects.iter().filter(|s| matches!(s, Subject::Baseline(d, _) if d == dataset)) {
                baselines.push(ModelMetrics::of(dataset, subject.name(), vec![self.score_subject(ctx, subject)?]));
            }
            comparisons.extend(compare(&models[first..], &baselines[first_baseline..]));
        }
        let (mut clusterings, mut best_clusterings, mut best_labels) = (Vec::new(), Vec::new(), Vec::new());
        let mut oracles: BTreeMap<String, Oracle> = BTreeMap::new();
        // A subject's true labels, read once for its plain and its UMAP representation.
        let mut truths: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for rep in &self.reps {
            let source = rep.subject.source();
            if !truths.contains_key(&source) {
                let labels = crate::artifacts::encode::read_labels(ctx.input(&source, crate::artifacts::encode::LATENT)?)?;
                truths.insert(source.clone(), labels);
            }
            let truth = &truths[&source];
            let classes = truth.iter().map(|&l| l as usize + 1).max().unwrap_or(1);
            let mut by_method: Vec<(Method, Vec<SeededStage>)> = Vec::new();
            for c in clusterings_of(self, rep) {
                let stage = c.id();
                match by_method.last_mut() {
                    Some((m, list)) if *m == c.method => list.push((c.seed, stage)),
                    _ => by_method.push((c.method, vec![(c.seed, stage)])),
                }
            }
            for (method, stages) in by_method {
                let (m, oracle, chosen) = score_method(ctx, rep, method, &stages, truth, classes)?;
                if let Subject::Model(run) = &rep.subject {
                    let key = run.tag();
                    // The oracle: the highest accuracy over every method, embedding and seed.
                    let entry = Oracle { embed: rep.embed().map(str::to_owned), method, seed: oracle.0, acc: oracle.1 };
                    match oracles.get(&key) {
                        Some(o) if o.acc >= entry.acc => {}
                        _ => {
                            oracles.insert(key.clone(), entry);
                        }
                    }
                    // The clustering shown: the declared method and embedding, its seed chosen
                    // without the labels.
                    if method == self.shown.method && rep.umap == self.shown.umap {
                        best_clusterings.push(BestClustering {
                            dataset: run.dataset.to_string(),
                            model: run.model.to_string(),
                            training_seed: run.seed,
                            embed: rep.embed().map(str::to_owned),
                            method,
                            seed: chosen.0,
                            acc: chosen.1,
                            clusters: chosen.2.iter().filter(|&&l| l != super::cluster::NOISE).map(|&l| l as usize + 1).max().unwrap_or(0),
                            key,
                            oracle: None,
                        });
                        best_labels.push(chosen.2);
                    }
                }
                clusterings.push(m);
            }
        }
        for b in &mut best_clusterings {
            b.oracle = oracles.remove(&b.key);
        }
        let bytes: Vec<Vec<u8>> = best_labels.iter().map(|l| tensorfile::le_bytes_u32(l)).collect();
        let arrays: Vec<tensorfile::Array> = best_clusterings
            .iter()
            .zip(&bytes)
            .map(|(b, bytes)| tensorfile::Array::raw(&b.key, Dtype::U32, vec![bytes.len() / 4], bytes))
            .collect();
        tensorfile::write(&ctx.output(BEST), &arrays)?;
        let metrics = Metrics {
            datasets: self.datasets.iter().map(|d| d.to_string()).collect(),
            training_seeds: self.training_seeds.clone(),
            kmeans_seeds: self.kmeans_seeds.clone(),
            k: self.k,
            models,
            baselines,
            comparisons,
            clusterings,
            best_clusterings,
        };
        super::write_json(&ctx.output(METRICS), &metrics)?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}

/// The comparisons within one dataset: every pair of models, then every model against every
/// baseline.
fn compare(models: &[ModelMetrics], baselines: &[ModelMetrics]) -> Vec<Comparison> {
    let mut out = Vec::new();
    let mut push = |a: &ModelMetrics, b: &ModelMetrics, metric: &str, test: &str, result| {
        out.push(Comparison {
            dataset: a.dataset.clone(),
            a: a.model.clone(),
            b: b.model.clone(),
            metric: metric.to_owned(),
            test: test.to_owned(),
            result,
        })
    };
    for (i, a) in models.iter().enumerate() {
        for b in &models[i + 1..] {
            for quantity in Quantity::ALL {
                push(a, b, quantity.key(), "welch", stats::welch(&a.per_run(quantity), &b.per_run(quantity)));
            }
        }
    }
    // A baseline has no training seed, but its value is a mean over the k-means seeds with
    // noise of its own: Welch's test of the model's per-training-seed values against the
    // baseline's per-k-means-seed values accounts for both.
    for a in models {
        for b in baselines {
            for metric in Metric::ALL {
                let model = a.per_run(Quantity::Score(metric));
                push(a, b, metric.key(), "welch-baseline", stats::welch(&model, &b.runs[0].metric(metric).per_seed));
            }
        }
    }
    out
}

/// A clustering stage and its method's seed (none for the deterministic methods).
type SeededStage = (Option<u64>, String);

/// The k-means seed of lowest inertia: (inertia, seed, scores, contingency).
type LowestInertia = (f64, u64, [f64; 4], Vec<Vec<u64>>);

/// A method's best seed by accuracy: (seed, accuracy, labels).
type Chosen = (Option<u64>, f64, Vec<u32>);

/// The four scores and the contingency of one clustering; noise is one more cluster.
fn score_labels(truth: &[u8], clusters: &[u32], classes: usize) -> [f64; 4] {
    let found = clusters.iter().filter(|&&c| c != super::cluster::NOISE).map(|&c| c as usize + 1).max().unwrap_or(0);
    let mapped: Vec<u32> = clusters.iter().map(|&c| if c == super::cluster::NOISE { found as u32 } else { c }).collect();
    let m = metrics::contingency(truth, &mapped, classes, found + 1);
    [metrics::purity(&m), metrics::nmi(&m), metrics::ari(&m), metrics::accuracy(&m)]
}

/// Scores one method's stages on one representation; also returns (seed, accuracy, labels)
/// of the oracle (the most accurate seed, chosen with the labels) and of the seed chosen
/// without them.
fn score_method(
    ctx: &StageContext<'_>,
    rep: &Rep,
    method: Method,
    stages: &[SeededStage],
    truth: &[u8],
    classes: usize,
) -> anyhow::Result<(MethodMetrics, Chosen, Chosen)> {
    let mut values: [Vec<f64>; 4] = Default::default();
    let (mut found, mut noise, mut covered, mut best) = (Vec::new(), Vec::new(), None, None::<Chosen>);
    // The label-free choice, with the criterion's value to minimise.
    let criterion = method.criterion();
    let mut selected: Option<(f64, Selected, Vec<u32>)> = None;
    for (seed, stage) in stages {
        let path = ctx.input(stage, crate::artifacts::cluster::ASSIGNMENTS)?;
        let clusters = crate::artifacts::cluster::read_labels(path)?;
        anyhow::ensure!(clusters.len() == truth.len(), "{}: {} assignments for {} labels", path.display(), clusters.len(), truth.len());
        let scores = score_labels(truth, &clusters, classes);
        scores.iter().zip(values.iter_mut()).for_each(|(v, list)| list.push(*v));
        found.push(clusters.iter().filter(|&&c| c != super::cluster::NOISE).map(|&c| c as usize + 1).max().unwrap_or(0));
        let n_noise = clusters.iter().filter(|&&c| c == super::cluster::NOISE).count();
        noise.push(n_noise as f64 / clusters.len().max(1) as f64);
        if method.marks_noise() && covered.is_none() {
            let kept: Vec<usize> = (0..clusters.len()).filter(|&i| clusters[i] != super::cluster::NOISE).collect();
            let on_covered = if kept.is_empty() {
                [0.0; 4]
            } else {
                let t: Vec<u8> = kept.iter().map(|&i| truth[i]).collect();
                let c: Vec<u32> = kept.iter().map(|&i| clusters[i]).collect();
                score_labels(&t, &c, classes)
            };
            covered = Some(Metric::ALL.iter().zip(on_covered).map(|(k, v)| (k.key().to_owned(), v)).collect());
        }
        let (rank, value) = match criterion {
            Criterion::LowestInertia => {
                let inertia = KmeansSummary::read(ctx.input(stage, crate::artifacts::cluster::KMEANS_SUMMARY)?)?.inertia;
                (inertia, Some(inertia))
            }
            Criterion::HighestLogLikelihood => {
                let path = ctx.input(stage, crate::artifacts::cluster::SUMMARY)?;
                let summary: ClusteringSummary = crate::artifacts::read_json(path, "a clustering.json")?;
                let ll = summary.extra.log_likelihood.ok_or_else(|| anyhow::anyhow!("{}: no log_likelihood", path.display()))?;
                (-ll, Some(ll))
            }
            Criterion::Deterministic => (0.0, None),
        };
        if selected.as_ref().is_none_or(|s| rank < s.0) {
            let [purity, nmi, ari, acc] = scores;
            selected = Some((rank, Selected { seed: *seed, criterion, value, purity, nmi, ari, acc }, clusters.clone()));
        }
        if best.as_ref().is_none_or(|b| scores[3] > b.1) {
            best = Some((*seed, scores[3], clusters));
        }
    }
    let (_, selected, chosen_labels) = selected.expect("at least one stage");
    let chosen: Chosen = (selected.seed, selected.acc, chosen_labels);
    let [purity, nmi, ari, acc] = values.map(Summary::of);
    let (dataset, representation, training_seed) = match &rep.subject {
        Subject::Model(r) => (r.dataset.to_string(), r.model.to_string(), Some(r.seed)),
        Subject::Baseline(d, b) => (d.to_string(), b.tag(), None),
    };
    let m = MethodMetrics {
        dataset,
        representation,
        training_seed,
        embed: rep.embed().map(str::to_owned),
        method,
        seeds: stages.iter().filter_map(|(s, _)| *s).collect(),
        clusters: found,
        purity,
        nmi,
        ari,
        acc,
        noise_fraction: method.marks_noise().then_some(noise),
        covered,
        selected: Some(selected),
    };
    Ok((m, best.expect("at least one stage"), chosen))
}

impl Score {
    fn score_subject(&self, ctx: &StageContext<'_>, subject: &Subject) -> anyhow::Result<RunMetrics> {
        let (training_seed, test_mse) = match subject {
            Subject::Model(run) => {
                let trained =
                    crate::artifacts::train::TrainMetrics::read(ctx.input(&super::train::id(run), crate::artifacts::train::METRICS)?)?;
                (Some(run.seed), Some(trained.test_mse))
            }
            Subject::Baseline(..) => (None, None),
        };
        let labels = crate::artifacts::encode::read_labels(ctx.input(&subject.source(), crate::artifacts::encode::LATENT)?)?;
        let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(1);
        let (mut purity, mut nmi, mut ari, mut acc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut best: Option<(f64, u64)> = None;
        let mut lowest: Option<LowestInertia> = None;
        for &seed in &self.kmeans_seeds {
            let inertia = crate::artifacts::cluster::KmeansSummary::read(
                ctx.input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), crate::artifacts::cluster::KMEANS_SUMMARY)?,
            )?
            .inertia;
            let path = ctx.input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), crate::artifacts::cluster::ASSIGNMENTS)?;
            let clusters = crate::artifacts::cluster::read_labels(path)?;
            anyhow::ensure!(
                clusters.len() == labels.len(),
                "{}: {} assignments for {} labels",
                path.display(),
                clusters.len(),
                labels.len()
            );
            if let Some(bad) = clusters.iter().find(|&&c| c as usize >= self.k) {
                anyhow::bail!("{}: cluster {bad} is not below kmeans.k = {}", path.display(), self.k);
            }
            let m = metrics::contingency(&labels, &clusters, classes, self.k);
            let values = [metrics::purity(&m), metrics::nmi(&m), metrics::ari(&m), metrics::accuracy(&m)];
            let p = values[0];
            purity.push(values[0]);
            nmi.push(values[1]);
            ari.push(values[2]);
            acc.push(values[3]);
            if lowest.as_ref().is_none_or(|(li, _, _, _)| inertia < *li) {
                lowest = Some((inertia, seed, values, m));
            }
            if best.as_ref().is_none_or(|(bp, _)| p > *bp) {
                best = Some((p, seed));
            }
        }
        let (_, best_purity_seed) = best.expect("at least one seed");
        let (_, lowest_inertia_seed, values, contingency) = lowest.expect("at least one seed");
        let label_free = Metric::ALL.iter().zip(values).map(|(k, v)| (k.key().to_owned(), v)).collect();
        Ok(RunMetrics {
            training_seed,
            test_mse,
            purity: Summary::of(purity),
            nmi: Summary::of(nmi),
            ari: Summary::of(ari),
            acc: Summary::of(acc),
            best_purity_seed,
            lowest_inertia_seed,
            label_free,
            contingency,
        })
    }
}
