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

/// Ascending class indices as runs: `3, 10..254`.
fn spans(classes: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &c in classes {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => runs.push((c, c)),
        }
    }
    runs.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}..{b}") }).collect::<Vec<_>>().join(", ")
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

    /// Both splits valid, non-empty, of one shape, with labels that are class indices (see
    /// [`Dataset::check_labels`]) naming at least two classes.
    pub fn check(&self) -> Result<(), DataError> {
        self.train.validate("train split")?;
        self.test.validate("test split")?;
        if self.train.is_empty() || self.test.is_empty() {
            return Err(DataError::new("dataset", "a split is empty"));
        }
        if self.train.shape != self.test.shape {
            return Err(DataError::new("dataset", format!("train images are {}, test images {}", self.train.shape, self.test.shape)));
        }
        self.check_labels("train split", "test split")?;
        if self.classes() < 2 {
            return Err(DataError::new("dataset", "the labels name fewer than two classes"));
        }
        Ok(())
    }

    /// The labels must be the class indices `0..=k-1` with every class present in the training
    /// split, `k` being [`Dataset::classes`] (one more than the largest label of either split).
    /// MNIST and its relatives (ten classes), and Hub datasets of any class count, meet it; a
    /// stray label (255 among 0..9) would otherwise make 256 classes, almost all of them empty,
    /// and a test label that no training image has names a class the models never saw.
    /// `train` and `test` name the splits' label sources (files) in the error, which blames
    /// the first occurrence of the largest label.
    pub fn check_labels(&self, train: &str, test: &str) -> Result<(), DataError> {
        const RULE: &str = "labels must be the class indices 0..k-1 with every class present in the training split";
        let mut in_train = [false; 256];
        for &l in &self.train.labels {
            in_train[l as usize] = true;
        }
        let k = self.classes();
        let missing: Vec<usize> = (0..k).filter(|&c| !in_train[c]).collect();
        let Some(&first_missing) = missing.first() else { return Ok(()) };
        // A class is missing, so there is at least one label; the largest is `k - 1`.
        let top = (k - 1) as u8;
        let (name, index) = match self.train.labels.iter().position(|&l| l == top) {
            Some(i) => (train, i),
            None => (test, self.test.labels.iter().position(|&l| l == top).expect("the largest label occurs in a split")),
        };
        let rest = self.train.labels.iter().chain(&self.test.labels).copied().filter(|&l| l != top).max();
        let problem = match rest {
            // Every other label is below the first missing class, so those labels are exactly
            // 0..=r, all with training images: the largest label is the stray one.
            Some(r) if (r as usize) < first_missing => format!("label {top} at index {index}, but the labels otherwise use 0..{r}"),
            _ => format!(
                "label {top} at index {index} makes {k} classes, but the training split has no image of class{} {}",
                if missing.len() == 1 { "" } else { "es" },
                spans(&missing)
            ),
        };
        Err(DataError::new(name, format!("{problem}; {RULE}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset of one-pixel images with the given labels.
    fn labelled(train: &[u8], test: &[u8]) -> Dataset {
        let shape = Shape { channels: 1, height: 1, width: 1 };
        let split = |labels: &[u8]| Split { shape, images: vec![0; labels.len()], labels: labels.to_vec() };
        Dataset { train: split(train), test: split(test) }
    }

    fn problem(d: &Dataset) -> String {
        d.check_labels("train.idx", "test.idx").unwrap_err().to_string()
    }

    #[test]
    fn labels_are_class_indices_with_every_class_in_training() {
        let ten: Vec<u8> = (0..30).map(|i| (i % 10) as u8).collect();
        // MNIST-like, and other class counts (the Hub dataset of tests/matrix.rs has 12).
        labelled(&ten, &ten[..7]).check().unwrap();
        let twelve: Vec<u8> = (0..36).map(|i| (i % 12) as u8).collect();
        labelled(&twelve, &[11, 0, 5]).check().unwrap();
        // A test split without some classes is fine: the training split defines them.
        labelled(&ten, &[3]).check().unwrap();

        // A stray label in the training split (issue 21, item 8a).
        let mut stray = ten.clone();
        stray[17] = 255;
        let e = problem(&labelled(&stray, &ten));
        assert_eq!(
            e,
            "train.idx: label 255 at index 17, but the labels otherwise use 0..9; \
             labels must be the class indices 0..k-1 with every class present in the training split"
        );
        // ... or in the test split only: a class no model was trained on.
        let e = problem(&labelled(&ten, &[1, 2, 10, 10]));
        assert!(e.starts_with("test.idx: label 10 at index 2, but the labels otherwise use 0..9;"), "{e}");
        // A class with no training image.
        let gap: Vec<u8> = ten.iter().copied().filter(|&l| l != 5).collect();
        let e = problem(&labelled(&gap, &ten));
        assert!(e.starts_with("train.idx: label 9 at index 8 makes 10 classes, but the training split has no image of class 5;"), "{e}");
        let e = problem(&labelled(&[0, 1, 2, 200, 7], &[1]));
        assert!(e.contains("label 200 at index 3 makes 201 classes, but the training split has no image of classes 3..6, 8..199;"), "{e}");
        // check() applies the rule too.
        let e = labelled(&stray, &ten).check().unwrap_err().to_string();
        assert!(e.starts_with("train split: label 255 at index 17"), "{e}");
        // Labels of one class still fail as before.
        let e = labelled(&[0, 0], &[0]).check().unwrap_err().to_string();
        assert!(e.contains("fewer than two classes"), "{e}");
    }
}
