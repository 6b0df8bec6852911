//! `score`: every clustering scored against the true labels, per dataset and model (and
//! baseline): purity, NMI, ARI and accuracy (per seed, best, mean, population standard deviation), the test MSE, and the
//! contingency matrix (true label x cluster) of the best-purity seed (`metrics.json`).

use std::collections::BTreeMap;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::cluster::{Clustering, Method};
use super::{Name, Rep, Run, Subject};
use crate::analysis::metrics;
use crate::analysis::stats::{self, Stats, TTest};
use crate::config::LoadedConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile;

pub const ID: &str = "score";
pub const METRICS: &str = "metrics.json";
/// Per trained model (first of each model's runs and every other), the labels of the best
/// clustering by accuracy: `<run tag>` u32 [n] (noise [`super::cluster::NOISE`]).
pub const BEST: &str = "best.safetensors";

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
    };
    // k-means on the plain representations is declared below already.
    let clustering_inputs: Vec<String> = kind
        .reps
        .iter()
        .flat_map(|rep| clusterings_of(&kind, rep).into_iter().filter(|c| c.method != Method::Kmeans || rep.umap))
        .map(|c| c.id())
        .collect();
    // The order of the seeds is the order of the per-seed lists; k sizes the contingency.
    let mut declared = super::Declared::default();
    declared.declare("kmeans.seeds", &c.kmeans.seeds);
    declared.declare("kmeans.k", c.kmeans.k);
    declared.declare("train.seeds", &c.train.seeds);
    for (method, seeds) in &kind.methods {
        if let Some(key) = method.seeds_key() {
            declared.declare(key, seeds.iter().flatten().collect::<Vec<_>>());
        }
    }
    let mut spec = declared.spec(ID, kind).param("order", super::order_param(config)).outputs(&[METRICS, BEST]);
    for run in &runs {
        spec = spec.input(&super::train::id(run), super::train::METRICS).input(&super::train::id(run), super::train::CONFIG);
    }
    for subject in &subjects {
        spec = spec.input(&subject.source(), super::encode::LATENT);
        for &seed in &c.kmeans.seeds {
            spec = spec
                .input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), super::kmeans::ASSIGNMENTS)
                .input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), super::kmeans::SUMMARY);
        }
    }
    // Only the assignments: the scores come from the labels alone (a stage's inputs are
    // exactly the files it reads).
    for stage in &clustering_inputs {
        spec = spec.input(stage, super::cluster::ASSIGNMENTS);
    }
    spec
}

/// One metric over the k-means seeds of one trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub per_seed: Vec<f64>,
    pub best: f64,
    pub mean: f64,
    /// Population standard deviation over the k-means seeds.
    pub std: f64,
}

impl Summary {
    pub fn of(values: Vec<f64>) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let best = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self { per_seed: values, best, mean, std }
    }
}

/// A clustering score, in report order ([`Metric::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Purity,
    Nmi,
    Ari,
    Acc,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Purity, Metric::Nmi, Metric::Ari, Metric::Acc];

    /// Its key in `metrics.json` (`purity`, `nmi`, `ari`, `acc`).
    pub fn key(self) -> &'static str {
        match self {
            Metric::Purity => "purity",
            Metric::Nmi => "nmi",
            Metric::Ari => "ari",
            Metric::Acc => "acc",
        }
    }

    /// How tables and figures name it.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Purity => "purity",
            Metric::Nmi => "NMI",
            Metric::Ari => "ARI",
            Metric::Acc => "ACC",
        }
    }
}

/// What is summarised and compared over training seeds: a clustering score (each trained
/// model's mean over its k-means seeds) or the test MSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Score(Metric),
    TestMse,
}

impl Quantity {
    /// The scores in report order, then the test MSE.
    pub const ALL: [Quantity; 5] = [
        Quantity::Score(Metric::Purity),
        Quantity::Score(Metric::Nmi),
        Quantity::Score(Metric::Ari),
        Quantity::Score(Metric::Acc),
        Quantity::TestMse,
    ];

    /// Its key in `metrics.json` (`over_training_seeds`, comparisons).
    pub fn key(self) -> &'static str {
        match self {
            Quantity::Score(m) => m.key(),
            Quantity::TestMse => "test_mse",
        }
    }
}

/// `score/metrics.json`. Shared by the stage that writes it and every reader (plot, report,
/// model card, `metrics --diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The datasets, in config order (absent before datasets: MNIST alone).
    #[serde(default = "mnist_only")]
    pub datasets: Vec<String>,
    pub training_seeds: Vec<u64>,
    pub kmeans_seeds: Vec<u64>,
    pub k: usize,
    /// Per dataset, each model in config order.
    pub models: Vec<ModelMetrics>,
    /// Per dataset, the baselines (`pixels`, `pixels-pca<d>`), each with one run (no
    /// training seed).
    pub baselines: Vec<ModelMetrics>,
    /// Within each dataset: every pair of models, for each clustering metric and the test
    /// MSE, by Welch's t-test over the training seeds of the per-seed values (the mean over
    /// k-means seeds); and every model against every baseline, by Welch's t-test of the
    /// model's per-seed values against the baseline's per-k-means-seed values.
    pub comparisons: Vec<Comparison>,
    /// Every clustering method on every representation (k-means included, also on the UMAP
    /// embedding): the method x representation tables.
    #[serde(default)]
    pub clusterings: Vec<MethodMetrics>,
    /// Per trained model, the clustering of highest accuracy (chosen with the labels); its
    /// labels are in `best.safetensors` under the run's tag.
    #[serde(default)]
    pub best_clusterings: Vec<BestClustering>,
}

/// One method on one representation of one training run (or baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodMetrics {
    pub dataset: String,
    /// The model (`conv`) or baseline (`pixels-pca9`).
    pub representation: String,
    pub training_seed: Option<u64>,
    /// `umap` when the method clustered the UMAP embedding.
    pub embed: Option<String>,
    pub method: Method,
    /// The method's seeds (empty for the deterministic ones); the per-seed lists follow them.
    pub seeds: Vec<u64>,
    /// Clusters found, per seed (noise not counted).
    pub clusters: Vec<usize>,
    /// Scores over every point; a method's noise points count as one more cluster.
    pub purity: Summary,
    pub nmi: Summary,
    pub ari: Summary,
    pub acc: Summary,
    /// The share of points marked noise (HDBSCAN), per seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_fraction: Option<Vec<f64>>,
    /// HDBSCAN: purity, NMI, ARI and ACC on the points it did not mark noise (first seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered: Option<BTreeMap<String, f64>>,
}

impl MethodMetrics {
    pub fn metric(&self, metric: Metric) -> &Summary {
        pick(metric, [&self.purity, &self.nmi, &self.ari, &self.acc])
    }

    /// `kmeans`, `umap + gmm`.
    pub fn label(&self) -> String {
        match &self.embed {
            Some(e) => format!("{e} + {}", self.method.key()),
            None => self.method.key().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestClustering {
    pub dataset: String,
    pub model: String,
    pub training_seed: u64,
    pub embed: Option<String>,
    pub method: Method,
    pub seed: Option<u64>,
    pub acc: f64,
    pub clusters: usize,
    /// The key of its labels in `best.safetensors`.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    #[serde(default = "mnist")]
    pub dataset: String,
    pub model: String,
    /// The trained architecture (from the model's config.json); `None` for a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<crate::models::Architecture>,
    /// One per training seed, in `train.seeds` order.
    pub runs: Vec<RunMetrics>,
    /// Over the training seeds: the test MSE, and per clustering metric the mean over the
    /// k-means seeds of each trained model.
    pub over_training_seeds: BTreeMap<String, Stats>,
}

/// One trained model (a training seed) clustered with every k-means seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// `None` for a baseline.
    pub training_seed: Option<u64>,
    /// `None` for a baseline.
    pub test_mse: Option<f64>,
    pub purity: Summary,
    pub nmi: Summary,
    pub ari: Summary,
    pub acc: Summary,
    /// The k-means seed with the highest purity: a choice that uses the labels (the
    /// notebook's "best of 10").
    pub best_purity_seed: u64,
    /// The k-means seed with the lowest inertia: the choice a user without labels can make.
    #[serde(default)]
    pub lowest_inertia_seed: u64,
    /// Purity, NMI, ARI and ACC of the lowest-inertia seed.
    #[serde(default)]
    pub label_free: BTreeMap<String, f64>,
    /// True label x cluster counts of the best-purity k-means seed.
    pub contingency: Vec<Vec<u64>>,
}

impl RunMetrics {
    pub fn metric(&self, metric: Metric) -> &Summary {
        pick(metric, [&self.purity, &self.nmi, &self.ari, &self.acc])
    }
}

/// One of the four scores, given in [`Metric::ALL`] order.
fn pick(metric: Metric, [purity, nmi, ari, acc]: [&Summary; 4]) -> &Summary {
    match metric {
        Metric::Purity => purity,
        Metric::Nmi => nmi,
        Metric::Ari => ari,
        Metric::Acc => acc,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    #[serde(default = "mnist")]
    pub dataset: String,
    pub a: String,
    pub b: String,
    pub metric: String,
    /// `welch` (two models) or `welch-baseline` (a model against a baseline).
    pub test: String,
    /// `None` with fewer than two training seeds (no variance to test against).
    pub result: Option<TTest>,
}

/// Metrics written before datasets were a choice are MNIST's.
fn mnist() -> String {
    "mnist".into()
}

fn mnist_only() -> Vec<String> {
    vec![mnist()]
}

impl Metrics {
    /// Reads `metrics.json`; the error names the file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let value = super::read_json(path)?;
        serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{}: not a score/metrics.json of this latentscope: {e}", path.display()))
    }

    pub fn model(&self, dataset: &str, name: &str) -> Option<&ModelMetrics> {
        self.models.iter().find(|m| m.dataset == dataset && m.model == name)
    }

    /// The models of one dataset, in config order.
    pub fn models_of<'a>(&'a self, dataset: &'a str) -> impl Iterator<Item = &'a ModelMetrics> + 'a {
        self.models.iter().filter(move |m| m.dataset == dataset)
    }

    /// The baselines of one dataset.
    pub fn baselines_of<'a>(&'a self, dataset: &'a str) -> impl Iterator<Item = &'a ModelMetrics> + 'a {
        self.baselines.iter().filter(move |m| m.dataset == dataset)
    }
}

impl ModelMetrics {
    /// The best value of a clustering metric over every training and k-means seed.
    pub fn best(&self, metric: Metric) -> f64 {
        self.runs.iter().map(|r| r.metric(metric).best).fold(f64::NEG_INFINITY, f64::max)
    }

    /// The mean over every training and k-means seed.
    pub fn mean(&self, metric: Metric) -> f64 {
        self.runs.iter().map(|r| r.metric(metric).mean).sum::<f64>() / self.runs.len() as f64
    }

    /// The mean test MSE over the training seeds (`None` for a baseline).
    pub fn test_mse(&self) -> Option<f64> {
        let values: Vec<f64> = self.runs.iter().filter_map(|r| r.test_mse).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Per run: the test MSE, or a clustering metric's mean over the k-means seeds.
    pub fn per_run(&self, quantity: Quantity) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| match quantity {
                Quantity::TestMse => r.test_mse,
                Quantity::Score(m) => Some(r.metric(m).mean),
            })
            .collect()
    }

    fn of(dataset: &str, name: String, runs: Vec<RunMetrics>) -> Self {
        let mut m = Self { dataset: dataset.to_owned(), model: name, arch: None, runs, over_training_seeds: BTreeMap::new() };
        for quantity in Quantity::ALL {
            let values = m.per_run(quantity);
            if !values.is_empty() {
                m.over_training_seeds.insert(quantity.key().to_owned(), Stats::of(&values));
            }
        }
        m
    }
}

impl StageKind for Score {
    fn kind(&self) -> &'static str {
        "score"
    }

    /// 2: training seeds; statistics over them; typed metrics.json; the label-free choice.
    /// 3: models against baselines by Welch's test (the baseline's k-means spread counts).
    /// 4: datasets; any class count.
    /// 5: every clustering method and embedding; the best clustering's labels.
    fn version(&self) -> u32 {
        5
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
                        arch = Some(super::train::read_config(ctx.input(&super::train::id(run), super::train::CONFIG)?)?.0);
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
        // A subject's true labels, read once for its plain and its UMAP representation.
        let mut truths: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for rep in &self.reps {
            let source = rep.subject.source();
            if !truths.contains_key(&source) {
                let labels = super::encode::read_labels(ctx.input(&source, super::encode::LATENT)?)?;
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
                let (m, best) = score_method(ctx, rep, method, &stages, truth, classes)?;
                if let Subject::Model(run) = &rep.subject {
                    let key = run.tag();
                    let slot = best_clusterings.iter().position(|b: &BestClustering| b.key == key);
                    if slot.is_none_or(|i| best.1 > best_clusterings[i].acc) {
                        let entry = BestClustering {
                            dataset: run.dataset.to_string(),
                            model: run.model.to_string(),
                            training_seed: run.seed,
                            embed: rep.embed().map(str::to_owned),
                            method,
                            seed: best.0,
                            acc: best.1,
                            clusters: best.2.iter().filter(|&&l| l != super::cluster::NOISE).map(|&l| l as usize + 1).max().unwrap_or(0),
                            key,
                        };
                        match slot {
                            Some(i) => (best_clusterings[i], best_labels[i]) = (entry, best.2),
                            None => {
                                best_clusterings.push(entry);
                                best_labels.push(best.2);
                            }
                        }
                    }
                }
                clusterings.push(m);
            }
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

/// A method's best seed by accuracy: (seed, accuracy, labels).
type Chosen = (Option<u64>, f64, Vec<u32>);

/// The four scores and the contingency of one clustering; noise is one more cluster.
fn score_labels(truth: &[u8], clusters: &[u32], classes: usize) -> [f64; 4] {
    let found = clusters.iter().filter(|&&c| c != super::cluster::NOISE).map(|&c| c as usize + 1).max().unwrap_or(0);
    let mapped: Vec<u32> = clusters.iter().map(|&c| if c == super::cluster::NOISE { found as u32 } else { c }).collect();
    let m = metrics::contingency(truth, &mapped, classes, found + 1);
    [metrics::purity(&m), metrics::nmi(&m), metrics::ari(&m), metrics::accuracy(&m)]
}

/// Scores one method's stages on one representation; also returns the best seed's (seed,
/// accuracy, labels).
fn score_method(
    ctx: &StageContext<'_>,
    rep: &Rep,
    method: Method,
    stages: &[SeededStage],
    truth: &[u8],
    classes: usize,
) -> anyhow::Result<(MethodMetrics, Chosen)> {
    let mut values: [Vec<f64>; 4] = Default::default();
    let (mut found, mut noise, mut covered, mut best) = (Vec::new(), Vec::new(), None, None::<Chosen>);
    for (seed, stage) in stages {
        let path = ctx.input(stage, super::cluster::ASSIGNMENTS)?;
        let clusters = super::cluster::read_labels(path)?;
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
        if best.as_ref().is_none_or(|b| scores[3] > b.1) {
            best = Some((*seed, scores[3], clusters));
        }
    }
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
    };
    Ok((m, best.expect("at least one stage")))
}

impl Score {
    fn score_subject(&self, ctx: &StageContext<'_>, subject: &Subject) -> anyhow::Result<RunMetrics> {
        let (training_seed, test_mse) = match subject {
            Subject::Model(run) => {
                let trained = super::train::TrainMetrics::read(ctx.input(&super::train::id(run), super::train::METRICS)?)?;
                (Some(run.seed), Some(trained.test_mse))
            }
            Subject::Baseline(..) => (None, None),
        };
        let labels = super::encode::read_labels(ctx.input(&subject.source(), super::encode::LATENT)?)?;
        let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(1);
        let (mut purity, mut nmi, mut ari, mut acc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut best: Option<(f64, u64, Vec<Vec<u64>>)> = None;
        let mut lowest: Option<(f64, u64, [f64; 4])> = None;
        for &seed in &self.kmeans_seeds {
            let inertia = super::kmeans::KmeansSummary::read(
                ctx.input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), super::kmeans::SUMMARY)?,
            )?
            .inertia;
            let path = ctx.input(&super::kmeans::id(&super::Rep::raw(subject.clone()), seed), super::kmeans::ASSIGNMENTS)?;
            let clusters = super::cluster::read_labels(path)?;
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
            if lowest.as_ref().is_none_or(|(li, _, _)| inertia < *li) {
                lowest = Some((inertia, seed, values));
            }
            if best.as_ref().is_none_or(|(bp, _, _)| p > *bp) {
                best = Some((p, seed, m));
            }
        }
        let (_, best_purity_seed, contingency) = best.expect("at least one seed");
        let (_, lowest_inertia_seed, values) = lowest.expect("at least one seed");
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
