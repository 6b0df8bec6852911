//! `view-umap-<run>`, `view-tsne-<run>`: 2-D views of a model's latents for the report
//! (`views:`), with the settings of `embed.umap` (2 components) or `embed.tsne`
//! (`view.safetensors`: `latent` f32 [n, 2], `labels` u8 [n]; `view.json`:
//! [`crate::artifacts::umap::EmbeddingSummary`]).

use super::{Run, StageId};
use crate::analysis::tsne;
use crate::artifacts::umap::{VIEW_POINTS, VIEW_SUMMARY};
use crate::config::{LoadedConfig, TsneConfig, UmapConfig, View};
use crate::pipeline::{StageContext, StageKind, StageReport, StageSpec};

pub fn id(view: View, run: &Run) -> String {
    StageId::View(view, run.clone()).to_string()
}

enum Method {
    Umap(UmapConfig),
    Tsne(TsneConfig),
}

pub struct ViewStage {
    run: Run,
    method: Method,
}

/// The spec of a 2-D view; none for the PCA view (the `pca` stage) or a view whose settings
/// the config lacks (validation refuses that config).
pub fn spec(config: &LoadedConfig, view: View, run: Run) -> Option<StageSpec> {
    let embed = &config.config.embed;
    let mut declared = super::Declared::default();
    let method = match view {
        // The 2-D view does not depend on the clustered embedding's size.
        View::Umap => Method::Umap(declared.declare("embed.umap", UmapConfig { components: 2, ..embed.umap.clone()? })),
        View::Tsne => Method::Tsne(declared.declare("embed.tsne", embed.tsne.clone()?)),
        View::Pca => return None,
    };
    let source = super::encode::id(&run);
    Some(
        declared
            .spec(id(view, &run), ViewStage { run, method })
            .input(&source, crate::artifacts::encode::LATENT)
            .outputs(&[VIEW_POINTS, VIEW_SUMMARY]),
    )
}

impl StageKind for ViewStage {
    fn kind(&self) -> &'static str {
        match self.method {
            Method::Umap(_) => "view-umap",
            Method::Tsne(_) => "view-tsne",
        }
    }

    /// 2: our own t-SNE (deterministic); no timing in view.json. 3: UMAP as umap 3; t-SNE
    /// normalises P by its sum and restarts steps and gains after the exaggeration.
    fn version(&self) -> u32 {
        3
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let source = super::encode::id(&self.run);
        let files = (VIEW_POINTS, VIEW_SUMMARY);
        match &self.method {
            Method::Umap(cfg) => {
                let p = super::umap::params(cfg, 2);
                super::umap::embed_stage(ctx, &source, "umap", 2, files, |x, d| super::umap::embed_checked(x, d, &p))
            }
            Method::Tsne(cfg) => {
                let s = tsne::Settings { perplexity: cfg.perplexity, seed: cfg.seed, max_iter: cfg.max_iter, theta: cfg.theta };
                super::umap::embed_stage(ctx, &source, "tsne", 2, files, |x, d| {
                    tsne::embed(x, d, &s).map_err(|e| anyhow::anyhow!("embed.tsne: {e}"))
                })
            }
        }
    }
}
