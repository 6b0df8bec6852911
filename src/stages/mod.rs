//! The stage kinds of the experiment, one file each, and [`plan`], which turns a config into
//! the list of stage specs that the engine runs. Each stage reads only the config keys it
//! declares here, so an edit re-runs exactly the stages that read the edited key.

pub mod download;

use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::pipeline::StageSpec;

/// Every stage of the pipeline for this config, in declaration order.
///
/// Stage ids: `download`; later issues add `train-simple`, `train-conv`, `encode-<model>`,
/// `pca-<model>`, `kmeans-<model>-<seed>`, `score` and `plot`.
pub fn plan(config: &LoadedConfig) -> Vec<StageSpec> {
    vec![download::spec(config)]
}

/// Shorthand for building a spec whose kind is `kind`.
pub(crate) fn stage(id: impl Into<String>, kind: impl crate::pipeline::StageKind + 'static) -> StageSpec {
    StageSpec::new(id, Arc::new(kind))
}
