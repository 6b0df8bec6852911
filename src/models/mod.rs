//! The autoencoders in candle, with PyTorch's parameter names, shapes and initialisation,
//! plus the PyTorch-exact pieces (ops, Adam) they train with. An [`Architecture`] is a
//! family (`mlp`, `conv`) with its sizes; with an image [`Shape`] it is a concrete model.

pub mod adam;
pub mod conv;
pub mod cpu;
pub mod dense;
pub mod device;
pub mod gemm;
pub mod init;
pub mod kernels;
pub mod mlp;
pub mod ops;

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::data::Shape;

/// An autoencoder family and its sizes (`models.<name>` in pipeline.yaml, less the training
/// settings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum Architecture {
    /// Linear layers `encoder[0] -> encoder[1] -> ...`; `encoder[0]` is the image size
    /// (channels x height x width) and the last entry the latent size.
    Mlp { encoder: Vec<usize> },
    /// Conv blocks of `channels`, linear layers through `dense` to `latent` (see [`conv`]).
    Conv { channels: Vec<usize>, dense: Vec<usize>, latent: usize },
}

impl Architecture {
    /// The notebook's SimpleAutoencoder.
    pub fn notebook_simple() -> Self {
        Architecture::Mlp { encoder: vec![784, 128, 64, 36, 18, 9] }
    }

    /// The notebook's ConvAE.
    pub fn notebook_conv() -> Self {
        Architecture::Conv { channels: vec![8, 4], dense: vec![64], latent: 10 }
    }

    /// `mlp` or `conv`.
    pub fn family(&self) -> &'static str {
        match self {
            Architecture::Mlp { .. } => "mlp",
            Architecture::Conv { .. } => "conv",
        }
    }

    /// The PyTorch class of the notebook this family generalises.
    pub fn class_name(&self) -> &'static str {
        match self {
            Architecture::Mlp { .. } => "SimpleAutoencoder",
            Architecture::Conv { .. } => "ConvAE",
        }
    }

    pub fn latent_dim(&self) -> usize {
        match self {
            Architecture::Mlp { encoder } => encoder.last().copied().unwrap_or(0),
            Architecture::Conv { latent, .. } => *latent,
        }
    }

    /// Why this architecture cannot autoencode images of `shape`, if it cannot.
    pub fn check(&self, shape: Shape) -> std::result::Result<(), String> {
        match self {
            Architecture::Mlp { encoder } => {
                if encoder.len() < 2 || encoder.contains(&0) {
                    return Err("encoder must list at least the input and the latent size, none of them 0".into());
                }
                if encoder[0] != shape.pixels() {
                    return Err(format!(
                        "encoder starts at {} inputs, but the images are {shape} = {} values; make encoder[0] {}",
                        encoder[0],
                        shape.pixels(),
                        shape.pixels()
                    ));
                }
                Ok(())
            }
            Architecture::Conv { channels, dense, latent } => {
                if dense.contains(&0) {
                    return Err("dense widths must be positive".into());
                }
                conv::check(shape, channels, *latent)
            }
        }
    }

    /// Every parameter for images of `shape`: PyTorch state-dict name, shape and fan-in (for
    /// the init bound), in the order PyTorch creates them.
    pub fn parameters(&self, shape: Shape) -> Vec<init::Param> {
        match self {
            Architecture::Mlp { encoder } => mlp::parameters(encoder),
            Architecture::Conv { channels, dense, latent } => conv::parameters(shape, channels, dense, *latent),
        }
    }

    /// Builds the model over the variables of `vb`.
    pub fn build(&self, shape: Shape, vb: &VarBuilder) -> Result<Box<dyn Autoencoder>> {
        Ok(match self {
            Architecture::Mlp { encoder } => Box::new(mlp::MlpAutoencoder::new(vb, encoder)?),
            Architecture::Conv { channels, dense, latent } => Box::new(conv::ConvAutoencoder::new(vb, shape, channels, dense, *latent)?),
        })
    }
}

/// One layer of the PyTorch `nn.Sequential` that holds a model half, by its index there.
#[derive(Debug, Clone, PartialEq)]
pub enum TorchLayer {
    Linear(usize, usize),
    Conv2d(usize, usize),
    ConvTranspose2d(usize, usize),
    ReLU,
    MaxPool2d,
    Flatten,
    Unflatten(Shape),
    Sigmoid,
}

impl TorchLayer {
    /// Whether the layer holds a weight and a bias.
    pub fn has_parameters(&self) -> bool {
        matches!(self, TorchLayer::Linear(..) | TorchLayer::Conv2d(..) | TorchLayer::ConvTranspose2d(..))
    }
}

impl Architecture {
    /// The encoder and decoder as the layers of two PyTorch `nn.Sequential`s, whose indices
    /// give the state-dict names (`encoder.3.weight`).
    pub fn torch_layers(&self, shape: Shape) -> (Vec<TorchLayer>, Vec<TorchLayer>) {
        let dense = |widths: &[usize], last: Option<TorchLayer>| {
            let mut out = Vec::new();
            for (i, w) in widths.windows(2).enumerate() {
                out.push(TorchLayer::Linear(w[0], w[1]));
                if i + 2 < widths.len() {
                    out.push(TorchLayer::ReLU);
                }
            }
            out.extend(last);
            out
        };
        match self {
            Architecture::Mlp { encoder } => {
                let back: Vec<usize> = encoder.iter().rev().copied().collect();
                (dense(encoder, None), dense(&back, Some(TorchLayer::Sigmoid)))
            }
            Architecture::Conv { channels, dense: hidden, latent } => {
                let n = channels.len();
                let inner = Shape { channels: channels[n - 1], height: shape.height >> n, width: shape.width >> n };
                let mut ins = vec![shape.channels];
                ins.extend_from_slice(channels);
                let mut enc = Vec::new();
                for w in ins.windows(2) {
                    enc.extend([TorchLayer::Conv2d(w[0], w[1]), TorchLayer::ReLU, TorchLayer::MaxPool2d]);
                }
                enc.push(TorchLayer::Flatten);
                let mut widths = vec![inner.pixels()];
                widths.extend_from_slice(hidden);
                widths.push(*latent);
                enc.extend(dense(&widths, None));
                let back: Vec<usize> = widths.iter().rev().copied().collect();
                let mut dec = dense(&back, None);
                dec.push(TorchLayer::Unflatten(inner));
                let outs: Vec<usize> = ins.iter().rev().copied().collect();
                for (i, w) in outs.windows(2).enumerate() {
                    dec.push(TorchLayer::ConvTranspose2d(w[0], w[1]));
                    dec.push(if i + 2 < outs.len() { TorchLayer::ReLU } else { TorchLayer::Sigmoid });
                }
                (enc, dec)
            }
        }
    }
}

/// An autoencoder over flattened images: input and output [B, pixels] in [0, 1].
pub trait Autoencoder: Send {
    fn encode(&self, x: &Tensor) -> Result<Tensor>;
    fn decode(&self, z: &Tensor) -> Result<Tensor>;
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?)
    }
}

/// A freshly initialised model and the variables that hold its weights.
pub fn initialise(arch: &Architecture, shape: Shape, seed: u64, device: &Device) -> Result<(VarMap, Box<dyn Autoencoder>)> {
    let varmap = init::varmap(&arch.parameters(shape), seed, device)?;
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = arch.build(shape, &vb)?;
    Ok((varmap, model))
}

/// A trained model read from `model.safetensors`.
pub fn load(arch: &Architecture, shape: Shape, path: &Path, device: &Device) -> anyhow::Result<Box<dyn Autoencoder>> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| anyhow::anyhow!("cannot read model {}: {e}", path.display()))?;
    let params = arch.parameters(shape);
    for p in &params {
        let t = tensors.get(&p.name).ok_or_else(|| anyhow::anyhow!("{}: no tensor {}", path.display(), p.name))?;
        anyhow::ensure!(t.dims() == p.shape.as_slice(), "{}: {} has shape {:?}, expected {:?}", path.display(), p.name, t.dims(), p.shape);
    }
    anyhow::ensure!(
        tensors.len() == params.len(),
        "{}: {} tensors, a {} model has {}",
        path.display(),
        tensors.len(),
        arch.family(),
        params.len()
    );
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Ok(arch.build(shape, &vb)?)
}

/// Writes the weights under their PyTorch names (deterministic bytes, f32), through
/// [`crate::tensorfile::write`] so that the file gets the same permissions as any other.
pub fn save(varmap: &VarMap, path: &Path) -> anyhow::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        let t = var.as_tensor();
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        tensors.push((name.clone(), t.dims().to_vec(), crate::tensorfile::le_bytes(&values)));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let arrays: Vec<crate::tensorfile::Array<'_>> =
        tensors.iter().map(|(n, shape, bytes)| crate::tensorfile::Array::raw(n, safetensors::Dtype::F32, shape.clone(), bytes)).collect();
    // `format: pt`, as PyTorch's own safetensors files on the Hub say.
    crate::tensorfile::write_with(path, &arrays, Some(("format", "pt")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `save` writes through tensorfile (for the umask), with `format: pt` metadata, and
    /// candle's own reader gives back exactly the saved tensors.
    #[test]
    fn saved_weights_read_back_and_say_pt() {
        let dir = std::env::temp_dir().join(format!("latentscope-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for arch in [Architecture::notebook_simple(), Architecture::notebook_conv()] {
            let (varmap, _) = initialise(&arch, Shape::MNIST, 7, &Device::Cpu).unwrap();
            let path = dir.join(format!("{}.safetensors", arch.family()));
            save(&varmap, &path).unwrap();
            let back = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            {
                let data = varmap.data().lock().unwrap();
                assert_eq!(back.len(), data.len());
                for (name, var) in data.iter() {
                    let a = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert_eq!(a, back[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{name}");
                }
            }
            let bytes = std::fs::read(&path).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
            // Deterministic bytes: the same weights give the same file.
            save(&varmap, &path).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The notebook's two models keep their PyTorch names and shapes exactly.
    #[test]
    fn the_notebook_models_keep_their_state_dict() {
        let names =
            |a: &Architecture| -> Vec<(String, Vec<usize>)> { a.parameters(Shape::MNIST).into_iter().map(|p| (p.name, p.shape)).collect() };
        let conv = names(&Architecture::notebook_conv());
        let want: Vec<(&str, Vec<usize>)> = vec![
            ("encoder.0.weight", vec![8, 1, 3, 3]),
            ("encoder.0.bias", vec![8]),
            ("encoder.3.weight", vec![4, 8, 3, 3]),
            ("encoder.3.bias", vec![4]),
            ("encoder.7.weight", vec![64, 196]),
            ("encoder.7.bias", vec![64]),
            ("encoder.9.weight", vec![10, 64]),
            ("encoder.9.bias", vec![10]),
            ("decoder.0.weight", vec![64, 10]),
            ("decoder.0.bias", vec![64]),
            ("decoder.2.weight", vec![196, 64]),
            ("decoder.2.bias", vec![196]),
            ("decoder.4.weight", vec![4, 8, 3, 3]),
            ("decoder.4.bias", vec![8]),
            ("decoder.6.weight", vec![8, 1, 3, 3]),
            ("decoder.6.bias", vec![1]),
        ];
        assert_eq!(conv, want.into_iter().map(|(n, s)| (n.to_owned(), s)).collect::<Vec<_>>());
        let simple = names(&Architecture::notebook_simple());
        assert_eq!(simple.len(), 20);
        assert_eq!(simple[0], ("encoder.0.weight".to_owned(), vec![128, 784]));
        assert_eq!(simple[19], ("decoder.8.bias".to_owned(), vec![784]));
    }

    /// The PyTorch layers' indices give exactly our parameter names and shapes, for the
    /// notebook's models and for other sizes.
    #[test]
    fn the_torch_module_has_our_state_dict() {
        let rgb = Shape { channels: 3, height: 16, width: 8 };
        let cases = [
            (Architecture::notebook_simple(), Shape::MNIST),
            (Architecture::notebook_conv(), Shape::MNIST),
            (Architecture::Conv { channels: vec![6, 5, 4], dense: vec![], latent: 3 }, rgb),
        ];
        for (arch, shape) in cases {
            let (enc, dec) = arch.torch_layers(shape);
            let mut names = Vec::new();
            for (half, layers) in [("encoder", &enc), ("decoder", &dec)] {
                for (i, layer) in layers.iter().enumerate().filter(|(_, l)| l.has_parameters()) {
                    let (w, b) = match *layer {
                        TorchLayer::Linear(i, o) => (vec![o, i], o),
                        TorchLayer::Conv2d(i, o) => (vec![o, i, 3, 3], o),
                        TorchLayer::ConvTranspose2d(i, o) => (vec![i, o, 3, 3], o),
                        _ => unreachable!(),
                    };
                    names.push((format!("{half}.{i}.weight"), w));
                    names.push((format!("{half}.{i}.bias"), vec![b]));
                }
            }
            let ours: Vec<(String, Vec<usize>)> = arch.parameters(shape).into_iter().map(|p| (p.name, p.shape)).collect();
            assert_eq!(names, ours, "{arch:?}");
            assert!(matches!(dec.last(), Some(TorchLayer::Sigmoid)));
        }
    }

    /// Other sizes: RGB images, three conv blocks, no dense layer; the forward pass gives
    /// images of the input's size, and a misfit is refused with the reason.
    #[test]
    fn other_shapes_build_and_misfits_are_refused() {
        let rgb = Shape { channels: 3, height: 16, width: 8 };
        let arch = Architecture::Conv { channels: vec![6, 5, 4], dense: vec![], latent: 3 };
        arch.check(rgb).unwrap();
        let (_, model) = initialise(&arch, rgb, 1, &Device::Cpu).unwrap();
        let x = Tensor::zeros((2, rgb.pixels()), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.encode(&x).unwrap().dims(), [2, 3]);
        assert_eq!(model.forward(&x).unwrap().dims(), [2, rgb.pixels()]);
        let e = arch.check(Shape { channels: 1, height: 28, width: 28 }).unwrap_err();
        assert!(e.contains("multiples of 8") && e.contains("28x28"), "{e}");
        let e = Architecture::notebook_simple().check(rgb).unwrap_err();
        assert!(e.contains("784") && e.contains("384"), "{e}");
        let wide = Architecture::Mlp { encoder: vec![384, 32, 4] };
        let (_, model) = initialise(&wide, rgb, 1, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), [2, 384]);
    }
}
