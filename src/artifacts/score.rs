//! `score`: `metrics.json` ([`Metrics`]) and `best.safetensors` (per trained model, under its
//! run's tag, the labels of the clustering the report shows, [`BestClustering`]: u32 [n],
//! noise [`super::cluster::NOISE`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analysis::stats::{Stats, TTest};
use crate::stages::cluster::Method;

pub const METRICS: &str = "metrics.json";
/// Per trained model (first of each model's runs and every other), the labels of the best
/// clustering by accuracy: `<run tag>` u32 [n] (noise [`super::cluster::NOISE`]).
pub const BEST: &str = "best.safetensors";

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
    /// Per trained model, the clustering `report.clustering` declares at its label-free seed,
    /// with the oracle beside it; its labels are in `best.safetensors` under the run's tag.
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
    /// The clustering chosen without the test labels (by [`Criterion`]) and its scores: the
    /// number to report. `best` in the summaries is the oracle (the maximum over seeds, chosen
    /// with the labels). Absent only in a `metrics.json` of an older latentscope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<Selected>,
}

/// How a method's clustering is chosen among its seeds without the test labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// k-means: the seed of the lowest inertia (`kmeans.json`).
    LowestInertia,
    /// A mixture: the seed of the highest mean log-likelihood (`clustering.json`).
    HighestLogLikelihood,
    /// A deterministic method: its one clustering.
    Deterministic,
}

impl Criterion {
    /// `lowest inertia`, as the report says it.
    pub fn label(self) -> &'static str {
        match self {
            Criterion::LowestInertia => "lowest inertia",
            Criterion::HighestLogLikelihood => "highest log-likelihood",
            Criterion::Deterministic => "deterministic",
        }
    }
}

/// A method's clustering chosen without the labels: its seed, the criterion and its value,
/// and its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selected {
    pub seed: Option<u64>,
    pub criterion: Criterion,
    /// The inertia or log-likelihood that chose it (none for a deterministic method).
    pub value: Option<f64>,
    pub purity: f64,
    pub nmi: f64,
    pub ari: f64,
    pub acc: f64,
}

impl Selected {
    pub fn metric(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Purity => self.purity,
            Metric::Nmi => self.nmi,
            Metric::Ari => self.ari,
            Metric::Acc => self.acc,
        }
    }
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

/// The clustering the report shows for one trained model: the method and embedding
/// `report.clustering` declares, at the seed chosen without the labels ([`Criterion`]).
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
    /// The oracle: the clustering of highest accuracy over every method, embedding and seed,
    /// chosen with the test labels (an upper bound, not a result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle: Option<Oracle>,
}

/// A clustering chosen with the test labels, named as such.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Oracle {
    pub embed: Option<String>,
    pub method: Method,
    pub seed: Option<u64>,
    pub acc: f64,
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
    /// True label x cluster counts of the lowest-inertia k-means seed.
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
        super::read_json(path, "a score/metrics.json")
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

    /// The k-means clustering of lowest inertia (chosen without the labels), the mean over
    /// the training seeds; `None` in a `metrics.json` written before it was recorded.
    pub fn label_free(&self, metric: Metric) -> Option<f64> {
        let values: Vec<f64> = self.runs.iter().filter_map(|r| r.label_free.get(metric.key()).copied()).collect();
        (values.len() == self.runs.len() && !values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
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

    pub(crate) fn of(dataset: &str, name: String, runs: Vec<RunMetrics>) -> Self {
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
