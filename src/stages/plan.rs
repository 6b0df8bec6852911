//! The plan: every stage id of a config ([`stage_ids`]) and its spec ([`plan`]), and the
//! shape checks made before anything runs. The top of the stages: it imports every stage
//! kind; nothing in a stage imports it.

use super::*;
use crate::config::LoadedConfig;
use crate::pipeline::StageSpec;

/// Every stage id for this config, in plan order (see [`StageId`]).
pub fn stage_ids(config: &LoadedConfig) -> Vec<StageId> {
    let runs = Run::all(config);
    let mut ids: Vec<StageId> = config.config.datasets.keys().map(|d| StageId::Download(d.as_str().into())).collect();
    ids.extend(runs.iter().cloned().map(StageId::Train));
    ids.extend(runs.iter().cloned().map(StageId::Encode));
    ids.extend(runs.iter().cloned().map(StageId::Pca));
    let subjects = Subject::all(config);
    ids.extend(subjects.iter().filter_map(|s| match s {
        Subject::Baseline(d, b) => Some(StageId::Baseline(d.clone(), *b)),
        Subject::Model(_) => None,
    }));
    if config.config.embed.umap.is_some() {
        ids.extend(subjects.iter().cloned().map(StageId::Umap));
    }
    // The views of the first training seed's models: the report draws those.
    for view in extra_views(config) {
        ids.extend(runs.iter().filter(|r| r.seed == config.config.train.seeds[0]).cloned().map(|r| StageId::View(view, r)));
    }
    for rep in Rep::all(config) {
        ids.extend(Clustering::all_of(&config.config, &rep).into_iter().map(StageId::Cluster));
        if config.config.select_k.is_some() && rep.shown(config) {
            ids.push(StageId::SelectK(rep));
        }
    }
    ids.push(StageId::Score);
    ids.push(StageId::Plot);
    ids
}

/// Every stage of the pipeline for this config, in declaration order (see [`StageId`]).
pub fn plan(config: &LoadedConfig) -> Vec<StageSpec> {
    stage_ids(config).into_iter().filter_map(|id| spec(config, id)).collect()
}

/// The spec of one stage; none for a stage whose settings the config lacks (not one of
/// [`stage_ids`]).
fn spec(config: &LoadedConfig, id: StageId) -> Option<StageSpec> {
    Some(match id {
        StageId::Download(d) => return download::spec(config, &d),
        StageId::Train(r) => return train::spec(config, r),
        StageId::Encode(r) => encode::spec(config, r),
        StageId::Pca(r) => pca::spec(config, r),
        StageId::Baseline(d, b) => baseline::spec(config, d, b),
        StageId::Umap(s) => umap::spec(config.config.embed.umap.as_ref()?, s),
        StageId::View(v, r) => return view::spec(config, v, r),
        StageId::Cluster(Clustering { method, rep, seed }) => return method.spec(config, rep, seed),
        StageId::SelectK(rep) => select_k::spec(config.config.select_k.as_ref()?, rep),
        StageId::Score => score::spec(config),
        StageId::Plot => plot::spec(config),
    })
}

/// Checks, before anything runs, that every model fits every dataset whose image shape is
/// known without downloading (local IDX files); Hub datasets are checked by training itself,
/// before its first step.
pub fn check_shapes(config: &LoadedConfig) -> anyhow::Result<()> {
    for (dname, d) in &config.config.datasets {
        let Some(local) = &d.local else { continue };
        let Some(shape) = crate::data::idx::image_shape(&config.resolve(local)) else { continue };
        for (mname, m) in &config.config.models {
            if let Err(why) = m.architecture().check(shape) {
                anyhow::bail!("{}: model {mname} does not fit dataset {dname}: {why}", config.path.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What stages declare from their typed settings is the config's own value under each key
    /// (so fingerprints are what they were when stages read the config tree): every param of
    /// every stage of a config with every method on, against the tree, and the key set of one
    /// stage of each kind.
    #[test]
    fn stages_declare_the_configs_values_under_its_keys() {
        let sets: Vec<String> = ["baselines=[pixels, pixels-pca]", "cluster.dbscan={eps: 1.5}", "train.limit=300", "train.seeds=[1, 2]"]
            .map(str::to_owned)
            .to_vec();
        let config = LoadedConfig::from_yaml(include_str!("../../pipeline.yaml"), std::path::Path::new("pipeline.yaml"), &sets).unwrap();
        let plan = plan(&config);
        assert_eq!(plan.len(), stage_ids(&config).len(), "every id has a spec");
        for spec in &plan {
            for (key, value) in &spec.params {
                let Some(tree) = crate::config::lookup(config.tree(), key) else { continue };
                // A seeded stage declares its own seed, the 2-D UMAP view two components, a
                // stage on a device the one `auto` resolves to.
                let own = key == "device"
                    || (key == "cluster.gmm.seeds" && spec.id.starts_with("gmm-"))
                    || (key == "embed.umap.components" && spec.id.starts_with("view-umap-"));
                assert!(own || value == tree, "{}: {key} = {value}, the config says {tree}", spec.id);
            }
        }
        let keys = |id: &str| -> Vec<String> {
            let spec = plan.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no stage {id}"));
            spec.params.keys().cloned().collect()
        };
        let tree = |prefixes: &[&str], extra: &[&str]| -> Vec<String> {
            let mut out: Vec<String> = config.params(prefixes).into_keys().chain(extra.iter().map(|k| k.to_string())).collect();
            out.sort();
            out
        };
        assert_eq!(keys("train-mnist-conv-s1"), tree(&["models.conv", "train.limit"], &["device", "seed"]));
        assert_eq!(keys("encode-mnist-conv-s1"), tree(&["plot.samples"], &["device"]));
        assert_eq!(keys("download-mnist"), tree(&["datasets.mnist"], &[]));
        assert_eq!(
            keys("kmeans-mnist-conv-s1-umap-3"),
            tree(&["kmeans.k", "kmeans.n_init", "kmeans.max_iter", "kmeans.tol"], &["kmeans.seed"])
        );
        assert_eq!(keys("gmm-mnist-pixels-pca9-2"), tree(&["cluster.gmm"], &[]));
        for (id, key) in [
            ("agglomerative-mnist-conv-s2", "cluster.agglomerative"),
            ("hdbscan-mnist-conv-s2", "cluster.hdbscan"),
            ("dbscan-mnist-pixels", "cluster.dbscan"),
            ("umap-mnist-simple-s1", "embed.umap"),
            ("view-umap-mnist-simple-s1", "embed.umap"),
            ("view-tsne-mnist-simple-s1", "embed.tsne"),
            ("select-k-mnist-conv-s1", "select_k"),
            ("pca-mnist-conv-s2", "pca"),
        ] {
            assert_eq!(keys(id), tree(&[key], &[]), "{id}");
        }
        assert_eq!(keys("baseline-mnist-pixels-pca9"), tree(&["train.limit"], &["baseline", "baseline.components"]));
        assert_eq!(keys("baseline-mnist-pixels"), ["baseline"]);
        assert_eq!(keys("score"), tree(&["kmeans.seeds", "kmeans.k", "train.seeds", "cluster.gmm.seeds", "report.clustering"], &["order"]));
        assert_eq!(keys("plot"), tree(&["plot"], &["order", "plot.training_seed"]));
    }
}
