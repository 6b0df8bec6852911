//! `download-<d>`: `dataset.safetensors` (per split `<split>_images` u8 [N, C, H, W] and
//! `<split>_labels` u8 [N], written and read by [`crate::data`]) and `dataset.json`
//! ([`DatasetSummary`]).

use serde::{Deserialize, Serialize};

use crate::data::{hub, idx, Shape};

pub const OUTPUT: &str = "dataset.safetensors";

pub const SUMMARY: &str = "dataset.json";

/// `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub dataset: String,
    pub source: Source,
    pub shape: Shape,
    pub classes: usize,
    pub train: SplitSummary,
    pub test: SplitSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// IDX files of `path` (as the config spells it), with their sha256.
    Local { path: String, checksums: Vec<idx::Checksum> },
    /// Parquet files of a Hub dataset repository at a commit.
    Hub { repo: String, revision: String, files: Vec<hub::Fetched> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub count: usize,
    /// Images per class, `0..classes`.
    pub labels: Vec<usize>,
}

impl DatasetSummary {
    /// Reads `dataset.json`; the error names the file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a dataset.json")
    }
}
