//! `score`: every clustering scored against the true labels, per model: purity, NMI, ARI and
//! accuracy (per seed, best, mean, population standard deviation), the test MSE, and the
//! contingency matrix (true label x cluster) of the best-purity seed (`metrics.json`).

use safetensors::Dtype;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::analysis::metrics;
use crate::config::LoadedConfig;
use crate::data::CLASSES;
use crate::models::Arch;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile::{self, TensorFile};

pub const ID: &str = "score";
pub const METRICS: &str = "metrics.json";

pub struct Score {
    seeds: Vec<u64>,
    k: usize,
}

pub fn spec(config: &LoadedConfig) -> StageSpec {
    let seeds = config.config.kmeans.seeds.clone();
    let mut spec = super::stage(ID, Score { seeds: seeds.clone(), k: config.config.kmeans.k })
        // The order of the seeds is the order of `per_seed`.
        .params(config.params(&["kmeans.seeds"]))
        .outputs(&[METRICS]);
    for arch in Arch::ALL {
        spec = spec.input(&super::train::id(arch), super::train::METRICS).input(&super::encode::id(arch), super::encode::LATENT);
        for &seed in &seeds {
            spec = spec.input(&super::kmeans::id(arch, seed), super::kmeans::ASSIGNMENTS);
        }
    }
    spec
}

/// One metric over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub per_seed: Vec<f64>,
    pub best: f64,
    pub mean: f64,
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

impl StageKind for Score {
    fn kind(&self) -> &'static str {
        "score"
    }

    fn version(&self) -> u32 {
        1
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let mut out = Map::new();
        for arch in Arch::ALL {
            let metrics_path = ctx.input(&super::train::id(arch), super::train::METRICS)?;
            let trained = super::read_json(metrics_path)?;
            let labels = super::encode::read_labels(ctx.input(&super::encode::id(arch), super::encode::LATENT)?)?;
            let (mut purity, mut nmi, mut ari, mut acc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut best: Option<(f64, u64, Vec<Vec<u64>>)> = None;
            for &seed in &self.seeds {
                let path = ctx.input(&super::kmeans::id(arch, seed), super::kmeans::ASSIGNMENTS)?;
                let file = TensorFile::open(path)?;
                let clusters = tensorfile::u32_values(file.get("labels", Dtype::U32)?.1);
                anyhow::ensure!(
                    clusters.len() == labels.len(),
                    "{}: {} assignments for {} labels",
                    path.display(),
                    clusters.len(),
                    labels.len()
                );
                let m = metrics::contingency(&labels, &clusters, CLASSES, self.k);
                let p = metrics::purity(&m);
                purity.push(p);
                nmi.push(metrics::nmi(&m));
                ari.push(metrics::ari(&m));
                acc.push(metrics::accuracy(&m));
                if best.as_ref().is_none_or(|(bp, _, _)| p > *bp) {
                    best = Some((p, seed, m));
                }
            }
            let (_, best_seed, contingency) = best.expect("at least one seed");
            out.insert(
                arch.name().into(),
                json!({
                    "test_mse": trained["test_mse"],
                    "purity": Summary::of(purity),
                    "nmi": Summary::of(nmi),
                    "ari": Summary::of(ari),
                    "acc": Summary::of(acc),
                    "seeds": self.seeds,
                    "best_purity_seed": best_seed,
                    "contingency": contingency,
                }),
            );
        }
        super::write_json(&ctx.output(METRICS), &Value::Object(out))?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
