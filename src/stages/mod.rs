//! The stage kinds of the experiment, one file each, and [`plan`], which turns a config into
//! the list of stage specs that the engine runs. Each stage reads only the config keys it
//! declares here, so an edit re-runs exactly the stages that read the edited key.

pub mod download;
pub mod encode;
pub mod kmeans;
pub mod pca;
pub mod plot;
pub mod score;
pub mod train;

use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::models::Arch;
use crate::pipeline::StageSpec;

/// Every stage of the pipeline for this config, in declaration order.
///
/// Stage ids: `download`, `train-<model>`, `encode-<model>`, `pca-<model>`,
/// `kmeans-<model>-<seed>` (one per entry of `kmeans.seeds`), `score` and `plot`.
pub fn plan(config: &LoadedConfig) -> Vec<StageSpec> {
    let mut stages = vec![download::spec(config)];
    stages.extend(Arch::ALL.map(|a| train::spec(config, a)));
    stages.extend(Arch::ALL.map(|a| encode::spec(config, a)));
    stages.extend(Arch::ALL.map(|a| pca::spec(config, a)));
    for arch in Arch::ALL {
        stages.extend(config.config.kmeans.seeds.iter().map(|&seed| kmeans::spec(config, arch, seed)));
    }
    stages.push(score::spec(config));
    stages.push(plot::spec(config));
    stages
}

/// Reads a JSON artefact; errors name the file.
pub(crate) fn read_json(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))
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
