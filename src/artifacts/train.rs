//! `train-<d>-<m>-s<t>`: `model.safetensors` (the parameters under their PyTorch state-dict
//! names, f32; [`crate::models::Architecture::parameters`] lists them), `config.json`
//! ([`ModelFile`]), `history.json` ([`History`], the trainer's record) and `metrics.json`
//! ([`TrainMetrics`]).

use serde::{Deserialize, Serialize};

use crate::data::Shape;
use crate::models::Architecture;
pub use crate::train::History;

pub const MODEL: &str = "model.safetensors";

pub const CONFIG: &str = "config.json";

pub const HISTORY: &str = "history.json";

pub const METRICS: &str = "metrics.json";

/// `metrics.json` of a trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub test_mse: f64,
}

impl TrainMetrics {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a train metrics.json")
    }
}

impl History {
    /// Reads `history.json`; the error names the file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a history.json")
    }
}

/// `config.json` of a trained model: enough to rebuild the module in PyTorch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// `arch` (`mlp` | `conv`) and its sizes, as the config gives them.
    #[serde(flatten)]
    pub arch: Architecture,
    /// The PyTorch class (`SimpleAutoencoder`, `ConvAE`, ...).
    pub architecture: String,
    /// Channels, height, width.
    pub input_shape: [usize; 3],
    pub latent_dim: usize,
    pub format: String,
    /// Every parameter in the order PyTorch creates them.
    pub parameters: Vec<Parameter>,
}

/// One parameter of `model.safetensors`: its PyTorch state-dict name and shape (f32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ModelFile {
    pub fn of(arch: &Architecture, shape: Shape) -> Self {
        Self {
            arch: arch.clone(),
            architecture: arch.class_name().into(),
            input_shape: [shape.channels, shape.height, shape.width],
            latent_dim: arch.latent_dim(),
            format: "safetensors, f32, PyTorch state-dict names".into(),
            parameters: arch.parameters(shape).into_iter().map(|p| Parameter { name: p.name, shape: p.shape }).collect(),
        }
    }

    /// Reads `config.json`; the error names the file.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        super::read_json(path, "a model config.json")
    }

    /// The image shape the model takes.
    pub fn shape(&self) -> Shape {
        let [channels, height, width] = self.input_shape;
        Shape { channels, height, width }
    }
}

/// A trained model's `config.json`: its architecture and input shape.
pub fn read_config(path: &std::path::Path) -> anyhow::Result<(Architecture, Shape)> {
    let file = ModelFile::read(path)?;
    let shape = file.shape();
    Ok((file.arch, shape))
}
