//! The seed's two autoencoders in candle, with PyTorch's parameter names, shapes and
//! initialisation, plus the PyTorch-exact pieces (ops, Adam) they train with.

pub mod adam;
pub mod conv;
pub mod device;
pub mod init;
pub mod ops;
pub mod rng;
pub mod simple;

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// Which architecture (EXPERIMENT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Simple,
    Conv,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Simple, Arch::Conv];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Simple => "simple",
            Arch::Conv => "conv",
        }
    }

    /// The PyTorch class name in the seed.
    pub fn class_name(self) -> &'static str {
        match self {
            Arch::Simple => "SimpleAutoencoder",
            Arch::Conv => "ConvAE",
        }
    }

    pub fn latent_dim(self) -> usize {
        match self {
            Arch::Simple => 9,
            Arch::Conv => 10,
        }
    }

    /// Every parameter: PyTorch state-dict name, shape and fan-in (for the init bound), in
    /// the order PyTorch creates them.
    pub fn parameters(self) -> Vec<init::Param> {
        match self {
            Arch::Simple => simple::parameters(),
            Arch::Conv => conv::parameters(),
        }
    }

    /// Builds the model over the variables of `vb`.
    pub fn build(self, vb: &VarBuilder) -> Result<Box<dyn Autoencoder>> {
        Ok(match self {
            Arch::Simple => Box::new(simple::SimpleAutoencoder::new(vb)?),
            Arch::Conv => Box::new(conv::ConvAutoencoder::new(vb)?),
        })
    }
}

/// An autoencoder over flattened 28x28 images: input and output [B, 784] in [0, 1].
pub trait Autoencoder: Send {
    fn encode(&self, x: &Tensor) -> Result<Tensor>;
    fn decode(&self, z: &Tensor) -> Result<Tensor>;
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?)
    }
}

/// A freshly initialised model and the variables that hold its weights.
pub fn initialise(arch: Arch, seed: u64, device: &Device) -> Result<(VarMap, Box<dyn Autoencoder>)> {
    let varmap = init::varmap(&arch.parameters(), seed, device)?;
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = arch.build(&vb)?;
    Ok((varmap, model))
}

/// A trained model read from `model.safetensors`.
pub fn load(arch: Arch, path: &Path, device: &Device) -> anyhow::Result<Box<dyn Autoencoder>> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| anyhow::anyhow!("cannot read model {}: {e}", path.display()))?;
    for p in arch.parameters() {
        let t = tensors.get(&p.name).ok_or_else(|| anyhow::anyhow!("{}: no tensor {}", path.display(), p.name))?;
        anyhow::ensure!(t.dims() == p.shape.as_slice(), "{}: {} has shape {:?}, expected {:?}", path.display(), p.name, t.dims(), p.shape);
    }
    anyhow::ensure!(
        tensors.len() == arch.parameters().len(),
        "{}: {} tensors, a {} model has {}",
        path.display(),
        tensors.len(),
        arch.name(),
        arch.parameters().len()
    );
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Ok(arch.build(&vb)?)
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
    crate::tensorfile::write(path, &arrays)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `save` writes through tensorfile (for the umask) and must give the bytes candle's own
    /// writer gives, so trained models hash as before and no train version bump is needed.
    #[test]
    fn save_writes_the_bytes_candle_writes() {
        let dir = std::env::temp_dir().join(format!("latentscope-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for arch in Arch::ALL {
            let (varmap, _) = initialise(arch, 7, &Device::Cpu).unwrap();
            let ours = dir.join(format!("{}-ours.safetensors", arch.name()));
            let theirs = dir.join(format!("{}-candle.safetensors", arch.name()));
            save(&varmap, &ours).unwrap();
            let tensors: std::collections::HashMap<String, Tensor> =
                varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
            candle_core::safetensors::save(&tensors, &theirs).unwrap();
            assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap(), "{}", arch.name());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
