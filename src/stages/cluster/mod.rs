//! The clustering methods, one file each, and what they share. Every method runs on every
//! representation ([`Rep`]) as stages `<method>-<rep>` (`-<seed>` for a seeded one), and
//! [`Method`] is the one table that lists them: its name, whether it leaves points out as
//! noise, which seeds the config asks of it, and its stage spec. Everything downstream (the
//! plan, `score`, the report, the Hub layout) goes through that table, so a new method is a
//! file here, a row in [`Method`] and its settings in `config.rs`.
//!
//! The methods besides k-means write `assignments.safetensors` (`labels` u32 [n], [`NOISE`]
//! for a point left out) and `clustering.json` ([`ClusteringSummary`]) through [`run`].

pub mod agglomerative;
pub mod dbscan;
pub mod gmm;
pub mod hdbscan;
pub mod kmeans;

use serde::{Deserialize, Serialize};

use super::{Rep, StageId};
use crate::config::{Config, LoadedConfig};
use crate::pipeline::{Cost, StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile::{self, le_bytes_u32};

pub use crate::analysis::hdbscan::NOISE;
use crate::artifacts::cluster::{ClusteringSummary, Extra, ASSIGNMENTS, SUMMARY};

/// A clustering method: its stage kind and its name in ids, `metrics.json` and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Kmeans,
    Gmm,
    Agglomerative,
    Hdbscan,
    Dbscan,
}

impl Method {
    /// Every method, in plan and report order.
    pub const ALL: [Method; 5] = [Method::Kmeans, Method::Gmm, Method::Agglomerative, Method::Hdbscan, Method::Dbscan];

    /// The name (`kmeans`, `gmm`, `agglomerative`, `hdbscan`): the stage kind, the first
    /// word of its stage ids and the `method` of `metrics.json`.
    pub fn key(self) -> &'static str {
        match self {
            Method::Kmeans => "kmeans",
            Method::Gmm => "gmm",
            Method::Agglomerative => "agglomerative",
            Method::Hdbscan => "hdbscan",
            Method::Dbscan => "dbscan",
        }
    }

    /// Its name in the report's headings (`HDBSCAN`).
    pub fn title(self) -> &'static str {
        match self {
            Method::Kmeans => "k-means",
            Method::Gmm => "GMM",
            Method::Agglomerative => "agglomerative",
            Method::Hdbscan => "HDBSCAN",
            Method::Dbscan => "DBSCAN",
        }
    }

    /// Whether it may leave points out as noise.
    pub fn marks_noise(self) -> bool {
        match self {
            Method::Kmeans | Method::Gmm | Method::Agglomerative => false,
            Method::Hdbscan | Method::Dbscan => true,
        }
    }

    /// The seeds of its stages on each representation, in config order (`None`: one stage,
    /// the method being deterministic); empty when the config does not ask for the method.
    pub fn seeds(self, c: &Config) -> Vec<Option<u64>> {
        let seeded = |seeds: &[u64]| seeds.iter().copied().map(Some).collect();
        match self {
            Method::Kmeans => seeded(&c.kmeans.seeds),
            Method::Gmm => c.cluster.gmm.as_ref().map(|g| seeded(&g.seeds)).unwrap_or_default(),
            Method::Agglomerative => c.cluster.agglomerative.iter().map(|_| None).collect(),
            Method::Hdbscan => c.cluster.hdbscan.iter().map(|_| None).collect(),
            Method::Dbscan => c.cluster.dbscan.iter().map(|_| None).collect(),
        }
    }

    /// How `score` chooses among its seeds without the test labels.
    pub fn criterion(self) -> crate::artifacts::score::Criterion {
        use crate::artifacts::score::Criterion;
        match self {
            Method::Kmeans => Criterion::LowestInertia,
            Method::Gmm => Criterion::HighestLogLikelihood,
            Method::Agglomerative | Method::Hdbscan | Method::Dbscan => Criterion::Deterministic,
        }
    }

    /// The config key of its seed list, for a seeded method besides k-means (whose seeds are
    /// `kmeans.seeds`).
    pub fn seeds_key(self) -> Option<&'static str> {
        match self {
            Method::Gmm => Some("cluster.gmm.seeds"),
            Method::Kmeans | Method::Agglomerative | Method::Hdbscan | Method::Dbscan => None,
        }
    }

    /// The spec of its stage on `rep` with `seed` (one of [`Method::seeds`]); none when the
    /// config does not ask for the method.
    pub fn spec(self, config: &LoadedConfig, rep: Rep, seed: Option<u64>) -> Option<StageSpec> {
        let c = &config.config.cluster;
        let id = StageId::Cluster(Clustering { method: self, rep: rep.clone(), seed }).to_string();
        let seed = seed.unwrap_or_default();
        match self {
            Method::Kmeans => Some(kmeans::spec(&config.config.kmeans, id, rep, seed)),
            Method::Gmm => c.gmm.as_ref().map(|cfg| method_spec(cfg, id, rep, Some(seed))),
            Method::Agglomerative => c.agglomerative.as_ref().map(|cfg| method_spec(cfg, id, rep, None)),
            Method::Hdbscan => c.hdbscan.as_ref().map(|cfg| method_spec(cfg, id, rep, None)),
            Method::Dbscan => c.dbscan.as_ref().map(|cfg| method_spec(cfg, id, rep, None)),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// One clustering stage: a method on a representation with one of its seeds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Clustering {
    pub method: Method,
    pub rep: Rep,
    /// `None` for a deterministic method.
    pub seed: Option<u64>,
}

impl Clustering {
    /// Every clustering stage of `rep` the config asks for, method by method.
    pub fn all_of(c: &Config, rep: &Rep) -> Vec<Clustering> {
        Method::ALL
            .into_iter()
            .flat_map(|method| method.seeds(c).into_iter().map(move |seed| Clustering { method, rep: rep.clone(), seed }))
            .collect()
    }

    /// Its stage id (`gmm-mnist-conv-s42-umap-3`, `hdbscan-mnist-pixels`).
    pub fn id(&self) -> String {
        StageId::Cluster(self.clone()).to_string()
    }
}

impl std::fmt::Display for Clustering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.method.key(), self.rep.tag())?;
        match self.seed {
            Some(seed) => write!(f, "-{seed}"),
            None => Ok(()),
        }
    }
}

/// A clustering method besides k-means, as its settings (the config's `cluster.<method>`):
/// what its stage declares, and the fit. Every such method runs as a [`MethodStage`], which
/// reads the representation, fits and writes `assignments.safetensors` and `clustering.json`.
pub trait Fit: Clone + serde::Serialize + Send + Sync + 'static {
    /// Which method this is.
    const METHOD: Method;
    /// Its stage kind's version (bump when its output would change for the same inputs).
    const VERSION: u32;
    /// Heavy when it needs much memory or every core (see [`Cost`]).
    const COST: Cost = Cost::Light;

    /// The settings its stage on one seed declares (a seeded method: its own seed only, so
    /// that adding a seed does not re-run the others).
    fn for_seed(&self, _seed: Option<u64>) -> Self {
        self.clone()
    }

    /// Labels (`NOISE` for a point left out) of `points` (`n` x `d`, row-major) and what else
    /// the method reports; an error names the config key to change.
    fn fit(&self, points: &[f32], n: usize, d: usize, seed: Option<u64>) -> anyhow::Result<(Vec<u32>, Extra)>;
}

/// The stage of a [`Fit`] method on one representation with one of its seeds.
pub struct MethodStage<S: Fit> {
    rep: Rep,
    settings: S,
    seed: Option<u64>,
}

/// The spec of `settings`' method on `rep`: its settings declared under `cluster.<method>`.
pub fn method_spec<S: Fit>(settings: &S, id: String, rep: Rep, seed: Option<u64>) -> StageSpec {
    let mut declared = crate::stages::Declared::default();
    let settings = declared.declare(&format!("cluster.{}", S::METHOD.key()), settings.for_seed(seed));
    let source = rep.source();
    declared.spec(id, MethodStage { rep, settings, seed }).input(&source, crate::artifacts::encode::LATENT).outputs(&[ASSIGNMENTS, SUMMARY])
}

impl<S: Fit> StageKind for MethodStage<S> {
    fn kind(&self) -> &'static str {
        S::METHOD.key()
    }

    fn version(&self) -> u32 {
        S::VERSION
    }

    fn cost(&self) -> Cost {
        S::COST
    }

    /// Reads the vectors (NaN refused with the file named), fits, writes both outputs.
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let (method, seed) = (S::METHOD, self.seed);
        let name = method.key();
        let (points, n, d) = crate::artifacts::encode::read_latent(ctx.input(&self.rep.source(), crate::artifacts::encode::LATENT)?)?;
        let spinner = crate::progress::spinner(format!("{}: {name}, {n} points of dimension {d}", ctx.stage_id));
        let result = self.settings.fit(&points, n, d, seed);
        spinner.finish_and_clear();
        let (labels, extra) = result.map_err(|e| anyhow::anyhow!("{}: {e}", ctx.stage_id))?;
        anyhow::ensure!(labels.len() == n, "{}: {} labels for {n} points", ctx.stage_id, labels.len());
        let clusters = labels.iter().filter(|&&l| l != NOISE).map(|&l| l as usize + 1).max().unwrap_or(0);
        let mut sizes = vec![0usize; clusters];
        labels.iter().filter(|&&l| l != NOISE).for_each(|&l| sizes[l as usize] += 1);
        let noise = labels.iter().filter(|&&l| l == NOISE).count();
        tracing::info!(stage = ctx.stage_id, "{name}: {clusters} clusters, {noise} noise points");
        tensorfile::write(&ctx.output(ASSIGNMENTS), &[crate::artifacts::cluster::LABELS.array(vec![n], &le_bytes_u32(&labels))])?;
        let summary = ClusteringSummary { method, seed, clusters, noise, cluster_sizes: sizes, extra };
        crate::stages::write_json(&ctx.output(SUMMARY), &summary)?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
