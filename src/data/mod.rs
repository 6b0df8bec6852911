//! Image-classification data as the pipeline sees it: two splits of u8 images of one shape
//! (channels x height x width) with u8 labels, read from local IDX files or from the Hub's
//! parquet files, validated the same way.

pub mod hub;
pub mod idx;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tensorfile::{self, Array, TensorFile};
use safetensors::Dtype;

/// MNIST's side and pixels per image (the notebook's data; tests and benches).
pub const SIDE: usize = 28;
pub const PIXELS: usize = SIDE * SIDE;

/// The shape of one image: channels (1 grey, 3 RGB), height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape {
    /// MNIST: one channel of 28x28.
    pub const MNIST: Shape = Shape { channels: 1, height: SIDE, width: SIDE };

    /// Values per image (`channels * height * width`).
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl Default for Shape {
    fn default() -> Self {
        Shape::MNIST
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// Images (row-major, channel-first: `n * shape.pixels()` bytes) and their labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    pub shape: Shape,
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
        let p = self.shape.pixels();
        &self.images[i * p..(i + 1) * p]
    }

    /// The first `n` images (all when `None` or larger than the split).
    pub fn head(&self, n: Option<usize>) -> Split {
        match n {
            Some(n) if n < self.len() => {
                Split { shape: self.shape, images: self.images[..n * self.shape.pixels()].to_vec(), labels: self.labels[..n].to_vec() }
            }
            _ => self.clone(),
        }
    }

    /// Count of each label `0..classes`.
    pub fn label_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Checks the invariants every source must meet; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> Result<(), DataError> {
        let p = self.shape.pixels();
        if p == 0 {
            return Err(DataError::new(what, format!("images of shape {} hold no pixels", self.shape)));
        }
        if self.images.len() != self.labels.len() * p {
            return Err(DataError::new(what, format!("{} images for {} labels", self.images.len() / p, self.labels.len())));
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
    /// The image shape (both splits share it once [`Dataset::check`] passed).
    pub fn shape(&self) -> Shape {
        self.train.shape
    }

    /// The class count: one more than the largest label of either split.
    pub fn classes(&self) -> usize {
        self.train.labels.iter().chain(&self.test.labels).map(|&l| l as usize + 1).max().unwrap_or(0)
    }

    /// Both splits valid, non-empty, of one shape, with at least two classes.
    pub fn check(&self) -> Result<(), DataError> {
        self.train.validate("train split")?;
        self.test.validate("test split")?;
        if self.train.is_empty() || self.test.is_empty() {
            return Err(DataError::new("dataset", "a split is empty"));
        }
        if self.train.shape != self.test.shape {
            return Err(DataError::new("dataset", format!("train images are {}, test images {}", self.train.shape, self.test.shape)));
        }
        if self.classes() < 2 {
            return Err(DataError::new("dataset", "the labels name fewer than two classes"));
        }
        Ok(())
    }

    /// Writes `train_images` u8 [N, C, H, W], `train_labels` u8 [N], `test_images`, `test_labels`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let (tr, te) = (&self.train, &self.test);
        let dims = |s: &Split| vec![s.len(), s.shape.channels, s.shape.height, s.shape.width];
        tensorfile::write(
            path,
            &[
                Array::u8("train_images", dims(tr), &tr.images),
                Array::u8("train_labels", vec![tr.len()], &tr.labels),
                Array::u8("test_images", dims(te), &te.images),
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
            if ishape.len() != 4 || lshape != [ishape[0]] {
                anyhow::bail!("{}: {prefix} shapes {ishape:?} / {lshape:?} are not [N,C,H,W] / [N]", path.display());
            }
            let shape = Shape { channels: ishape[1], height: ishape[2], width: ishape[3] };
            Ok(Split { shape, images: images.to_vec(), labels: labels.to_vec() })
        };
        Ok(Self { train: split("train")?, test: split("test")? })
    }
}
