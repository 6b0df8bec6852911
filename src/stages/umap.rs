//! `umap-<subject>`: the UMAP embedding of a representation (`embed.umap`, our own UMAP), a
//! representation in its own right: every clustering method runs on it as on the latents
//! (`latent.safetensors`: `latent` f32 [n, components], `labels` u8 [n]; `umap.json`:
//! [`EmbeddingSummary`]).

use super::{StageId, Subject};
use crate::analysis::umap;
use crate::artifacts::umap::*;
use crate::config::UmapConfig;
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};
use crate::tensorfile::{self, le_bytes};

/// Points on which the trustworthiness is measured (it is O(n^2 log n)).
pub const TRUST_SAMPLE: usize = 2000;
/// Neighbours for the trustworthiness, as in the reference comparison.
pub const TRUST_NEIGHBORS: usize = 15;

pub fn id(subject: &Subject) -> String {
    StageId::Umap(subject.clone()).to_string()
}

pub struct Umap {
    subject: Subject,
    cfg: UmapConfig,
}

pub fn spec(cfg: &UmapConfig, subject: Subject) -> StageSpec {
    let mut declared = super::Declared::default();
    let cfg = declared.declare("embed.umap", cfg.clone());
    let source = subject.source();
    declared
        .spec(id(&subject), Umap { subject, cfg })
        .input(&source, crate::artifacts::encode::LATENT)
        .outputs(&[crate::artifacts::encode::LATENT, SUMMARY])
}

/// Runs `f` on the vectors of `source`'s latent file and writes the embedding (with the
/// labels, so that it reads as latents) and its summary; shared with the 2-D views.
pub(crate) fn embed_stage(
    ctx: &StageContext<'_>,
    source: &str,
    method: &str,
    components: usize,
    (points_file, summary_file): (&str, &str),
    f: impl FnOnce(&[f32], usize) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<StageReport> {
    let path = ctx.input(source, crate::artifacts::encode::LATENT)?;
    let (latent, n, d) = crate::artifacts::encode::read_latent(path)?;
    let labels = crate::artifacts::encode::read_labels(path)?;
    let spinner = crate::progress::spinner(format!("{}: {method}, {n} points of dimension {d} to {components}", ctx.stage_id));
    let start = std::time::Instant::now();
    let y = f(&latent, d);
    spinner.finish_and_clear();
    let y = y.map_err(|e| anyhow::anyhow!("{}: {e}", ctx.stage_id))?;
    let seconds = start.elapsed().as_secs_f64();
    super::ensure_finite(ctx.stage_id, "embedded values", y.iter().copied())?;
    let m = n.min(TRUST_SAMPLE);
    let trust = if m > 2 * TRUST_NEIGHBORS + 1 {
        umap::trustworthiness(&latent[..m * d], d, &y[..m * components], components, TRUST_NEIGHBORS)
    } else {
        f64::NAN
    };
    tracing::info!(stage = ctx.stage_id, "{method}: {seconds:.1} s, trustworthiness {trust:.4}");
    tensorfile::write(
        &ctx.output(points_file),
        &[
            crate::artifacts::encode::LATENT_VECTORS.array(vec![n, components], &le_bytes(&y)),
            crate::artifacts::encode::LABELS.array(vec![n], &labels),
        ],
    )?;
    let summary = EmbeddingSummary {
        method: method.to_owned(),
        points: n,
        input_dim: d,
        components,
        trustworthiness: if trust.is_finite() { trust } else { 0.0 },
    };
    super::write_json(&ctx.output(summary_file), &summary)?;
    Ok(StageReport { device: Some("cpu".into()) })
}

/// UMAP, its errors naming the key to change.
pub(crate) fn embed_checked(x: &[f32], d: usize, p: &umap::Params) -> anyhow::Result<Vec<f32>> {
    umap::embed(x, d, p).map_err(|e| match e {
        umap::UmapError::TooFewPoints { .. } => anyhow::anyhow!("embed.umap.neighbors: {e}"),
        other => other.into(),
    })
}

pub(crate) fn params(cfg: &UmapConfig, components: usize) -> umap::Params {
    umap::Params { components, neighbors: cfg.neighbors, min_dist: cfg.min_dist as f32, seed: cfg.seed, epochs: cfg.epochs }
}

impl StageKind for Umap {
    fn kind(&self) -> &'static str {
        "umap"
    }

    /// 2: no timing in umap.json. 3: negative samples skip the point itself and coincident
    /// points (umap-learn 0.5); libm in the curve fit.
    fn version(&self) -> u32 {
        3
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let p = params(&self.cfg, self.cfg.components);
        embed_stage(ctx, &self.subject.source(), "umap", p.components, (crate::artifacts::encode::LATENT, SUMMARY), |x, d| {
            embed_checked(x, d, &p)
        })
    }
}
