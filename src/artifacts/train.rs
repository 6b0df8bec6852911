//! `train-<d>-<m>-s<t>`: `model.safetensors` (the parameters under their PyTorch state-dict
//! names, f32; [`crate::models::Architecture::parameters`] lists them), `config.json`
//! ([`ModelFile`]), `history.json` ([`History`], the trainer's record) and `metrics.json`
//! ([`TrainMetrics`]).

use serde::{Deserialize, Serialize};

use crate::data::Shape;
use crate::models::{Architecture, TorchLayer};
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
    /// Every layer of the two `nn.Sequential`s, in order: their indices give the parameter
    /// names (`encoder.3.weight`), and the card's PyTorch module is written from them.
    pub layers: Halves,
}

/// The encoder's and the decoder's layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halves {
    pub encoder: Vec<Layer>,
    pub decoder: Vec<Layer>,
}

/// One layer as PyTorch builds it, every setting spelled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Layer {
    Linear {
        in_features: usize,
        out_features: usize,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
    },
    ConvTranspose2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
    },
    ReLU,
    MaxPool2d {
        kernel_size: usize,
    },
    Flatten,
    /// `nn.Unflatten(dim, shape)`: [channels, height, width].
    Unflatten {
        dim: usize,
        shape: [usize; 3],
    },
    Sigmoid,
}

impl From<&TorchLayer> for Layer {
    fn from(layer: &TorchLayer) -> Self {
        match *layer {
            TorchLayer::Linear(i, o) => Layer::Linear { in_features: i, out_features: o },
            TorchLayer::Conv2d(i, o) => Layer::Conv2d { in_channels: i, out_channels: o, kernel_size: 3, stride: 1, padding: 1 },
            TorchLayer::ConvTranspose2d(i, o) => {
                Layer::ConvTranspose2d { in_channels: i, out_channels: o, kernel_size: 3, stride: 2, padding: 1, output_padding: 1 }
            }
            TorchLayer::ReLU => Layer::ReLU,
            TorchLayer::MaxPool2d => Layer::MaxPool2d { kernel_size: 2 },
            TorchLayer::Flatten => Layer::Flatten,
            TorchLayer::Unflatten(s) => Layer::Unflatten { dim: 1, shape: [s.channels, s.height, s.width] },
            TorchLayer::Sigmoid => Layer::Sigmoid,
        }
    }
}

impl Layer {
    /// The PyTorch constructor.
    pub fn python(&self) -> String {
        match self {
            Layer::Linear { in_features, out_features } => format!("nn.Linear({in_features}, {out_features})"),
            Layer::Conv2d { in_channels, out_channels, kernel_size, stride, padding } => {
                let stride = if *stride == 1 { String::new() } else { format!(", stride={stride}") };
                format!("nn.Conv2d({in_channels}, {out_channels}, {kernel_size}{stride}, padding={padding})")
            }
            Layer::ConvTranspose2d { in_channels, out_channels, kernel_size, stride, padding, output_padding } => format!(
                "nn.ConvTranspose2d({in_channels}, {out_channels}, {kernel_size}, stride={stride}, padding={padding}, output_padding={output_padding})"
            ),
            Layer::ReLU => "nn.ReLU()".into(),
            Layer::MaxPool2d { kernel_size } => format!("nn.MaxPool2d({kernel_size})"),
            Layer::Flatten => "nn.Flatten()".into(),
            Layer::Unflatten { dim, shape: [c, h, w] } => format!("nn.Unflatten({dim}, ({c}, {h}, {w}))"),
            Layer::Sigmoid => "nn.Sigmoid()".into(),
        }
    }

    /// The shapes of its weight and bias, for the layers that hold parameters.
    pub fn parameter_shapes(&self) -> Option<[Vec<usize>; 2]> {
        match *self {
            Layer::Linear { in_features, out_features } => Some([vec![out_features, in_features], vec![out_features]]),
            Layer::Conv2d { in_channels, out_channels, kernel_size: k, .. } => {
                Some([vec![out_channels, in_channels, k, k], vec![out_channels]])
            }
            Layer::ConvTranspose2d { in_channels, out_channels, kernel_size: k, .. } => {
                Some([vec![in_channels, out_channels, k, k], vec![out_channels]])
            }
            _ => None,
        }
    }
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
            layers: {
                let (encoder, decoder) = arch.torch_layers(shape);
                Halves { encoder: encoder.iter().map(Layer::from).collect(), decoder: decoder.iter().map(Layer::from).collect() }
            },
        }
    }

    /// Python that defines this model as a PyTorch module `class`, written from
    /// [`ModelFile::layers`], whose `load_state_dict(strict=True)` takes `model.safetensors`.
    pub fn torch_module(&self, class: &str) -> String {
        let seq = |layers: &[Layer]| layers.iter().map(|l| format!("            {},\n", l.python())).collect::<String>();
        let [c, h, w] = self.input_shape;
        let input = match self.arch {
            Architecture::Mlp { .. } => format!("x: [batch, {}] pixels in [0, 1]", c * h * w),
            Architecture::Conv { .. } => format!("x: [batch, {c}, {h}, {w}] pixels in [0, 1]"),
        };
        format!(
            "class {class}(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.encoder = nn.Sequential(\n{}        )\n        self.decoder = nn.Sequential(\n{}        )\n\n    def forward(self, x):  # {input}\n        return self.decoder(self.encoder(x))\n",
            seq(&self.layers.encoder),
            seq(&self.layers.decoder)
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// For every architecture of the shipped config and the examples: `config.json`'s layers
    /// read back give the card's module, and each layer that holds parameters names, at its
    /// index, a parameter of the listed shape (the list comes from the model's own
    /// initialisation, not from the layers).
    #[test]
    fn config_json_layers_rebuild_the_module_and_name_every_parameter() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("pipeline.yaml")];
        files.extend(
            std::fs::read_dir(root.join("examples"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml")),
        );
        let mut checked = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let config = crate::config::LoadedConfig::from_yaml(&text, &file, &[]).unwrap();
            for (name, m) in &config.config.models {
                let shape = Shape { channels: 1, height: 28, width: 28 };
                let model = ModelFile::of(&m.architecture(), shape);
                let read: ModelFile = serde_json::from_str(&serde_json::to_string_pretty(&model).unwrap()).unwrap();
                assert_eq!(read, model, "{name}");
                assert_eq!(read.torch_module("M"), model.torch_module("M"));
                let mut named = 0;
                for (half, layers) in [("encoder", &read.layers.encoder), ("decoder", &read.layers.decoder)] {
                    for (i, layer) in layers.iter().enumerate() {
                        let Some([weight, bias]) = layer.parameter_shapes() else { continue };
                        for (suffix, shape) in [("weight", weight), ("bias", bias)] {
                            let key = format!("{half}.{i}.{suffix}");
                            let p = read.parameters.iter().find(|p| p.name == key).unwrap_or_else(|| panic!("{name}: no parameter {key}"));
                            assert_eq!(p.shape, shape, "{name}: {key}");
                            named += 1;
                        }
                    }
                }
                assert_eq!(named, read.parameters.len(), "{name}: every parameter belongs to a layer");
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} architectures");
        let py = ModelFile::of(&Architecture::notebook_conv(), Shape::MNIST).torch_module("ConvAE");
        assert!(
            py.contains("nn.Conv2d(1, 8, 3, padding=1),")
                && py.contains("nn.MaxPool2d(2),")
                && py.contains("nn.Unflatten(1, (4, 7, 7)),")
                && py.contains("nn.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1),"),
            "{py}"
        );
    }
}
