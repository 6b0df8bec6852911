//! `select-k-<rep>`: does the data itself pick k? For each k of `select_k.range`, one
//! clustering (`select_k.method`: k-means or a Gaussian mixture, seed `select_k.seed`): its
//! inertia (k-means) or BIC (mixture) over every point, and the silhouette on a seeded sample
//! of `select_k.sample` points (`select_k.json`: [`SelectK`]). No labels are used. Its own
//! `max_iter` and `tol`, so that a `kmeans:` edit leaves it fresh.

use super::{Rep, StageId};
use crate::analysis::{gmm, kmeans, silhouette};
use crate::artifacts::select_k::*;
use crate::config::{SelectKConfig, SelectMethod};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};

pub fn id(rep: &Rep) -> String {
    StageId::SelectK(rep.clone()).to_string()
}

pub struct SelectKStage {
    rep: Rep,
    cfg: SelectKConfig,
}

pub fn spec(cfg: &SelectKConfig, rep: Rep) -> StageSpec {
    let mut declared = super::Declared::default();
    let cfg = declared.declare("select_k", cfg.clone());
    let source = rep.source();
    declared.spec(id(&rep), SelectKStage { rep, cfg }).input(&source, crate::artifacts::encode::LATENT).outputs(&[SUMMARY])
}

impl StageKind for SelectKStage {
    fn kind(&self) -> &'static str {
        "select-k"
    }

    /// 2: k-means with greedy k-means++ seeding (scikit-learn's), one initialisation.
    fn version(&self) -> u32 {
        2
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let (points, n, d) = crate::artifacts::encode::read_latent(ctx.input(&self.rep.source(), crate::artifacts::encode::LATENT)?)?;
        let [lo, hi] = self.cfg.range;
        anyhow::ensure!(hi <= n, "{}: select_k.range goes up to k = {hi}, more than the {n} points; lower it", ctx.stage_id);
        // The silhouette sample: a seeded choice of points, the same for every k.
        let mut order: Vec<usize> = (0..n).collect();
        crate::rng::Rng::derive(self.cfg.seed, "select-k sample").shuffle(&mut order);
        order.truncate(self.cfg.sample.min(n));
        let sample: Vec<f32> = order.iter().flat_map(|&i| points[i * d..(i + 1) * d].iter().copied()).collect();
        let mut out = SelectK {
            method: self.cfg.method,
            ks: (lo..=hi).collect(),
            inertia: vec![],
            bic: vec![],
            silhouette: vec![],
            sample: order.len(),
            best_silhouette_k: lo,
            best_bic_k: None,
        };
        let bar = crate::progress::bar((hi - lo + 1) as u64, "{prefix} [{bar:16}] k {pos}/{len}");
        bar.set_prefix(ctx.stage_id.to_owned());
        for k in lo..=hi {
            let labels = match self.cfg.method {
                SelectMethod::Kmeans => {
                    let c = kmeans::fit(
                        &points,
                        d,
                        &kmeans::Settings { k, seed: self.cfg.seed, n_init: 1, max_iter: self.cfg.max_iter, tol: self.cfg.tol },
                    )
                    .map_err(|e| anyhow::anyhow!("{}: k = {k}: {e}", ctx.stage_id))?;
                    out.inertia.push(c.inertia);
                    c.labels
                }
                SelectMethod::Gmm => {
                    let s = gmm::Settings { k, seed: self.cfg.seed, max_iter: self.cfg.max_iter, tol: self.cfg.tol, reg_covar: 1e-6 };
                    let fit = gmm::fit(&points, d, &s)
                        .map_err(|e| anyhow::anyhow!("{}: k = {k}: {e} (select_k.max_iter, select_k.tol)", ctx.stage_id))?;
                    out.bic.push(fit.bic);
                    fit.labels
                }
            };
            let sampled: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
            out.silhouette.push(silhouette::score(&sample, d, &sampled).unwrap_or(f64::NAN));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let best = |values: &[f64], better: fn(f64, f64) -> bool| {
            let mut best: Option<(usize, f64)> = None;
            for (&k, &v) in out.ks.iter().zip(values) {
                if v.is_finite() && best.is_none_or(|(_, b)| better(v, b)) {
                    best = Some((k, v));
                }
            }
            best.map(|(k, _)| k)
        };
        out.best_silhouette_k = best(&out.silhouette, |a, b| a > b).unwrap_or(lo);
        out.best_bic_k = best(&out.bic, |a, b| a < b);
        // NaN (a sample with a single cluster) is not JSON: record it as 0, "no structure".
        out.silhouette.iter_mut().filter(|v| !v.is_finite()).for_each(|v| *v = 0.0);
        super::write_json(&ctx.output(SUMMARY), &out)?;
        Ok(StageReport { device: Some("cpu".into()) })
    }
}
