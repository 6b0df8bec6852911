//! MNIST as the pipeline sees it: two splits of 28x28 u8 images with u8 labels, read from
//! local IDX files or from the Hub's parquet files, validated the same way.

pub mod hub;
pub mod idx;

use std::path::Path;

use crate::tensorfile::{self, Array, TensorFile};
use safetensors::Dtype;

pub const SIDE: usize = 28;
pub const PIXELS: usize = SIDE * SIDE;
pub const CLASSES: usize = 10;

/// Images (row-major, `n * 784` bytes) and their labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Count of each label 0..9.
    pub fn label_counts(&self) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Checks the invariants every source must meet; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> Result<(), DataError> {
        if self.images.len() != self.labels.len() * PIXELS {
            return Err(DataError::new(what, format!("{} images for {} labels", self.images.len() / PIXELS, self.labels.len())));
        }
        if let Some((i, l)) = self.labels.iter().enumerate().find(|(_, l)| **l as usize >= CLASSES) {
            return Err(DataError::new(what, format!("label {l} of record {i} is outside 0..9")));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
}

/// Bad input data: names the file (or source) and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {problem}")]
pub struct DataError {
    pub source_name: String,
    pub problem: String,
}

impl DataError {
    pub fn new(source_name: impl std::fmt::Display, problem: impl Into<String>) -> Self {
        Self { source_name: source_name.to_string(), problem: problem.into() }
    }
}

impl Dataset {
    /// Writes `train_images` u8 [N,28,28], `train_labels` u8 [N], `test_images`, `test_labels`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let (tr, te) = (&self.train, &self.test);
        tensorfile::write(
            path,
            &[
                Array::u8("train_images", vec![tr.len(), SIDE, SIDE], &tr.images),
                Array::u8("train_labels", vec![tr.len()], &tr.labels),
                Array::u8("test_images", vec![te.len(), SIDE, SIDE], &te.images),
                Array::u8("test_labels", vec![te.len()], &te.labels),
            ],
        )
    }

    /// Reads what [`Dataset::write`] wrote.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let file = TensorFile::open(path)?;
        let split = |prefix: &str| -> anyhow::Result<Split> {
            let (ishape, images) = file.get(&format!("{prefix}_images"), Dtype::U8)?;
            let (lshape, labels) = file.get(&format!("{prefix}_labels"), Dtype::U8)?;
            if ishape.len() != 3 || ishape[1..] != [SIDE, SIDE] || lshape != [ishape[0]] {
                anyhow::bail!("{}: {prefix} shapes {ishape:?} / {lshape:?} are not [N,28,28] / [N]", path.display());
            }
            Ok(Split { images: images.to_vec(), labels: labels.to_vec() })
        };
        Ok(Self { train: split("train")?, test: split("test")? })
    }
}
