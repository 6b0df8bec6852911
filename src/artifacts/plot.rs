//! `plot`: `report.md` and the figures (PNG), one name per figure and its caption
//! ([`figure_captions`]), for the report page and the model card.

use crate::config::LoadedConfig;

pub const REPORT: &str = "report.md";

pub fn loss_figure(dataset: &str) -> String {
    format!("loss-{dataset}.png")
}

pub fn reconstructions_figure(dataset: &str) -> String {
    format!("reconstructions-{dataset}.png")
}

pub fn spread_figure(dataset: &str) -> String {
    format!("spread-{dataset}.png")
}

pub fn samples_figure(dataset: &str) -> String {
    format!("samples-{dataset}.png")
}

pub fn clusters_figure(dataset: &str, model: &str) -> String {
    format!("clusters-{dataset}-{model}.png")
}

pub fn pca_figure(dataset: &str, model: &str) -> String {
    format!("pca-{dataset}-{model}.png")
}

pub fn pca_clusters_figure(dataset: &str, model: &str) -> String {
    format!("pca-{dataset}-{model}-clusters.png")
}

pub fn contingency_figure(dataset: &str, model: &str) -> String {
    format!("contingency-{dataset}-{model}.png")
}

pub fn view_figure(view: &str, dataset: &str, model: &str, clusters: bool) -> String {
    format!("view-{view}-{dataset}-{model}{}.png", if clusters { "-clusters" } else { "" })
}

pub fn best_clusters_figure(dataset: &str, model: &str) -> String {
    format!("best-clusters-{dataset}-{model}.png")
}

pub fn select_k_figure(dataset: &str) -> String {
    format!("select-k-{dataset}.png")
}

/// The figures beyond k-means that the config asks for.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// `umap`, `tsne`: 2-D views drawn by their own stages.
    pub views: Vec<crate::config::View>,
    pub select_k: bool,
    /// Methods besides k-means, or an embedding: the clustering shown may be another method's.
    pub methods: bool,
}

impl Extras {
    pub fn of(config: &LoadedConfig) -> Self {
        let c = &config.config;
        Self {
            views: crate::stages::extra_views(config),
            select_k: c.select_k.is_some(),
            methods: crate::stages::Method::ALL.into_iter().any(|m| m != crate::stages::Method::Kmeans && !m.seeds(c).is_empty())
                || c.embed.umap.is_some(),
        }
    }
}

/// Every figure this stage draws for these datasets and models, with its caption, in report
/// order.
pub fn figure_captions(datasets: &[String], models: &[String], extras: &Extras) -> Vec<(String, String)> {
    let mut figs = Vec::new();
    for d in datasets {
        figs.push((samples_figure(d), format!("{d}: test images of each class")));
        figs.push((loss_figure(d), format!("{d}: training and test loss")));
        figs.push((reconstructions_figure(d), format!("{d}: reconstructions")));
        for m in models {
            figs.push((pca_figure(d, m), format!("{d}: PCA of the {m} latent space")));
            if extras.methods {
                figs.push((pca_clusters_figure(d, m), format!("{d}: PCA of the {m} latent space, by its clustering of report.clustering")));
            }
        }
        for m in models {
            figs.push((contingency_figure(d, m), format!("{d}: contingency of the {m} k-means clustering of lowest inertia")));
        }
        for m in models {
            figs.push((clusters_figure(d, m), format!("{d}: test images in each cluster of the {m} k-means clustering of lowest inertia")));
        }
        figs.push((spread_figure(d), format!("{d}: spread of each metric over k-means and training seeds")));
        for &view in &extras.views {
            let v = crate::stages::view_name(view);
            let name = v.to_uppercase().replace("TSNE", "t-SNE");
            for m in models {
                figs.push((view_figure(v, d, m, false), format!("{d}: {name} of the {m} latent space, by true label")));
                if extras.methods {
                    figs.push((
                        view_figure(v, d, m, true),
                        format!("{d}: {name} of the {m} latent space, by its clustering of report.clustering"),
                    ));
                }
            }
        }
        if extras.methods {
            for m in models {
                figs.push((
                    best_clusters_figure(d, m),
                    format!("{d}: test images in each cluster of the {m} clustering of report.clustering"),
                ));
            }
        }
        if extras.select_k {
            figs.push((select_k_figure(d), format!("{d}: choosing k without labels")));
        }
    }
    figs
}
