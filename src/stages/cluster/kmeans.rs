//! `kmeans-<dataset>-<model>-s<training seed>-<seed>`, `kmeans-<dataset>-<baseline>-<seed>`
//! (and `kmeans-<rep>-<seed>` on a UMAP embedding): k-means on the full latent vectors (or
//! baseline vectors, or their embedding) with one seed
//! (`assignments.safetensors`: `labels` u32 [n], `centroids` f32 [k, d]; `kmeans.json`,
//! [`KmeansSummary`]).

use serde::Serialize;

use super::{Clustering, Method};
use crate::analysis::kmeans;
use crate::config::KmeansConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::stages::{Declared, Rep};
use crate::tensorfile::{self, le_bytes, le_bytes_u32};

use crate::artifacts::cluster::{KmeansSummary, ASSIGNMENTS, KMEANS_SUMMARY};

/// `kmeans-<rep>-<seed>`.
pub fn id(rep: &Rep, seed: u64) -> String {
    Clustering { method: Method::Kmeans, rep: rep.clone(), seed: Some(seed) }.id()
}

/// What a k-means stage declares (`kmeans.k`, `kmeans.max_iter`, `kmeans.tol`, `kmeans.seed`).
#[derive(Debug, Clone, Serialize)]
struct Settings {
    k: usize,
    n_init: usize,
    max_iter: usize,
    tol: f64,
    seed: u64,
}

pub struct Kmeans {
    rep: Rep,
    cfg: Settings,
}

pub fn spec(k: &KmeansConfig, id: String, rep: Rep, seed: u64) -> StageSpec {
    let source = rep.source();
    let mut declared = Declared::default();
    // Its own seed, not the list: adding a seed must not re-run the others.
    let cfg = declared.declare("kmeans", Settings { k: k.k, n_init: k.n_init, max_iter: k.max_iter, tol: k.tol, seed });
    declared.spec(id, Kmeans { rep, cfg }).input(&source, crate::artifacts::encode::LATENT).outputs(&[ASSIGNMENTS, KMEANS_SUMMARY])
}

impl StageKind for Kmeans {
    fn kind(&self) -> &'static str {
        Method::Kmeans.key()
    }

    /// 3: greedy k-means++ and `n_init` restarts (scikit-learn's KMeans), our own Lloyd.
    fn version(&self) -> u32 {
        3
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let (latent, n, d) = crate::artifacts::encode::read_latent(ctx.input(&self.rep.source(), crate::artifacts::encode::LATENT)?)?;
        anyhow::ensure!(n >= self.cfg.k, "{}: kmeans.k = {} exceeds the {n} points to cluster; lower kmeans.k", ctx.stage_id, self.cfg.k);
        tracing::info!(
            stage = ctx.stage_id,
            "k-means: k = {}, {n} points of dimension {d}, at most {} iterations",
            self.cfg.k,
            self.cfg.max_iter
        );
        let spinner = crate::progress::spinner(format!("{}: k-means, k = {}, {n} points", ctx.stage_id, self.cfg.k));
        let c = kmeans::fit(
            &latent,
            d,
            &kmeans::Settings {
                k: self.cfg.k,
                seed: self.cfg.seed,
                n_init: self.cfg.n_init,
                max_iter: self.cfg.max_iter,
                tol: self.cfg.tol,
            },
        );
        spinner.finish_and_clear();
        let c = c?;
        crate::stages::ensure_finite(ctx.stage_id, "centroid values", c.centroids.iter().copied())?;
        anyhow::ensure!(c.inertia.is_finite(), "{}: the inertia is {}; nothing was committed", ctx.stage_id, c.inertia);
        let (lb, cb) = (le_bytes_u32(&c.labels), le_bytes(&c.centroids));
        tensorfile::write(
            &ctx.output(ASSIGNMENTS),
            &[crate::artifacts::cluster::LABELS.array(vec![n], &lb), crate::artifacts::cluster::CENTROIDS.array(vec![self.cfg.k, d], &cb)],
        )?;
        let mut sizes = vec![0usize; self.cfg.k];
        c.labels.iter().for_each(|&l| sizes[l as usize] += 1);
        let summary = KmeansSummary {
            k: self.cfg.k,
            seed: self.cfg.seed,
            inertia: c.inertia,
            inertia_per_point: c.inertia / n as f64,
            converged: c.converged,
            max_iter: self.cfg.max_iter,
            cluster_sizes: sizes,
        };
        crate::stages::write_json(&ctx.output(KMEANS_SUMMARY), &summary)?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
