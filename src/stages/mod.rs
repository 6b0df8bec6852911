//! The stage kinds of the experiment, one file each, on the ground every stage stands on: the
//! ids ([`ids`]), the settings a stage declares ([`Declared`]) and the helpers to write its
//! outputs. [`plan`] (the top, which imports every kind) turns a config into the specs the
//! engine runs. Each stage keeps only the settings it declares, so an edit re-runs exactly
//! the stages that declared the edited key.

pub mod baseline;
pub mod cluster;
pub mod download;
pub mod encode;
pub mod ids;
pub mod pca;
pub mod plan;
pub mod plot;
pub mod score;
pub mod select_k;
pub mod train;
pub mod umap;
pub mod view;

use std::sync::Arc;

pub use cluster::{kmeans, Clustering, Method};
pub use ids::*;
pub use plan::{check_shapes, plan, stage_ids};

use crate::config::LoadedConfig;
use crate::pipeline::StageSpec;

/// Declares the resolved device a training or encoding stage computes on (`device: cpu`,
/// `cuda`, `metal`) and hands it back: devices give different bits, so each has its own
/// fingerprint, and `auto` resolving to the CPU is the same stage as `cpu`.
pub(crate) fn declare_device(declared: &mut Declared, config: &LoadedConfig) -> crate::config::DeviceChoice {
    declared.declare("device", crate::models::device::resolve(config.config.device))
}

/// The params a stage declares, built from its typed settings: [`Declared::declare`] puts a
/// value into the params under its config key and hands it back, so what a stage keeps of the
/// config is what its fingerprint covers, by construction.
#[derive(Default)]
pub(crate) struct Declared(crate::pipeline::Params);

impl Declared {
    /// Declares `value` under the config key `key` (an object as one param per dotted key,
    /// as the config's own tree flattens) and hands it back.
    pub fn declare<T: serde::Serialize>(&mut self, key: &str, value: T) -> T {
        let node = serde_json::to_value(&value).expect("settings are plain data and serialise");
        crate::config::flatten(key, &node, &mut self.0);
        value
    }

    /// The spec of stage `id` running `kind`, declaring these params.
    pub fn spec(self, id: impl Into<String>, kind: impl crate::pipeline::StageKind + 'static) -> StageSpec {
        stage(id, kind).params(self.0)
    }
}

/// Writes a stage output; the error names the file (a full disk, say).
pub(crate) fn write_file(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Writes `value` as pretty JSON with a final newline.
pub(crate) fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    write_file(path, serde_json::to_string_pretty(value)? + "\n")
}

/// Fails unless every value is finite, so that no stage commits NaN or infinity; the message
/// names the stage and what held them.
pub(crate) fn ensure_finite(stage: &str, what: &str, values: impl IntoIterator<Item = f32>) -> anyhow::Result<()> {
    let (mut bad, mut total) = (0usize, 0usize);
    for v in values {
        total += 1;
        bad += usize::from(!v.is_finite());
    }
    anyhow::ensure!(bad == 0, "{stage}: {bad} of {total} {what} are NaN or infinite; nothing was committed");
    Ok(())
}

/// Shorthand for building a spec whose kind is `kind`.
pub(crate) fn stage(id: impl Into<String>, kind: impl crate::pipeline::StageKind + 'static) -> StageSpec {
    StageSpec::new(id, Arc::new(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_refused_with_the_stage_and_count() {
        assert!(ensure_finite("pca-mnist-conv-s42", "PCA values", [1.0, 2.0]).is_ok());
        let e = ensure_finite("pca-mnist-conv-s42", "PCA values", [1.0, f32::NAN, f32::INFINITY]).unwrap_err().to_string();
        assert_eq!(e, "pca-mnist-conv-s42: 2 of 3 PCA values are NaN or infinite; nothing was committed");
    }
}
