//! The shape of every file a stage writes, one module per stage kind: its name, the serde
//! type of every JSON file and the name and dtype of every safetensors tensor. The stage that
//! writes a file and every reader (the stages downstream, the report, the page, the Hub, the
//! CLI) share what is here, so a file's shape is stated once.

pub mod cluster;
pub mod download;
pub mod encode;
pub mod pca;
pub mod plot;
pub mod score;
pub mod select_k;
pub mod train;
pub mod umap;

use safetensors::Dtype;

use crate::tensorfile::{Array, TensorFile};

/// One tensor of a safetensors artefact: its name and dtype (the shape is the writer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tensor {
    pub name: &'static str,
    pub dtype: Dtype,
}

impl Tensor {
    /// The tensor to write, of `shape`, from little-endian `bytes`.
    pub fn array(self, shape: Vec<usize>, bytes: &[u8]) -> Array<'_> {
        Array::raw(self.name, self.dtype, shape, bytes)
    }

    /// Its shape and bytes in `file`; the error names the file, the tensor and the dtype.
    pub fn read(self, file: &TensorFile) -> anyhow::Result<(Vec<usize>, &[u8])> {
        file.get(self.name, self.dtype)
    }
}

/// Reads a JSON artefact as `T`; the error names the file and what it should have been.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path, what: &str) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: not {what} of this latentscope: {e}", path.display()))
}

/// A JSON output of a finished run, read through [`crate::pipeline::finished::FinishedRun`]
/// (hash-checked) into the serde type its stage writes; the error names stage and file.
pub fn read_output<T: serde::de::DeserializeOwned>(
    run: &crate::pipeline::finished::FinishedRun,
    stage: &str,
    file: &str,
) -> anyhow::Result<T> {
    let bytes = run.read(stage, file)?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{stage}/{file}: not what this latentscope writes there: {e}"))
}
