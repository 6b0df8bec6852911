//! PyTorch's default initialisation of nn.Linear, nn.Conv2d and nn.ConvTranspose2d: weight and
//! bias uniform in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5) reduces to that), drawn
//! from our own seeded generator in the order PyTorch creates the parameters.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;

use crate::rng::Rng;

/// One parameter tensor of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    /// PyTorch's fan-in for this layer (`weight.size(1) * receptive field`).
    pub fan_in: usize,
}

/// nn.Linear(inp, out) named `key`.
pub fn linear(key: &str, inp: usize, out: usize) -> [Param; 2] {
    [
        Param { name: format!("{key}.weight"), shape: vec![out, inp], fan_in: inp },
        Param { name: format!("{key}.bias"), shape: vec![out], fan_in: inp },
    ]
}

/// nn.Conv2d(inp, out, k) named `key`.
pub fn conv2d(key: &str, inp: usize, out: usize, k: usize) -> [Param; 2] {
    [
        Param { name: format!("{key}.weight"), shape: vec![out, inp, k, k], fan_in: inp * k * k },
        Param { name: format!("{key}.bias"), shape: vec![out], fan_in: inp * k * k },
    ]
}

/// nn.ConvTranspose2d(inp, out, k) named `key`: weight [inp, out, k, k], and PyTorch takes
/// the fan-in from dimension 1 (`out`).
pub fn conv_transpose2d(key: &str, inp: usize, out: usize, k: usize) -> [Param; 2] {
    [
        Param { name: format!("{key}.weight"), shape: vec![inp, out, k, k], fan_in: out * k * k },
        Param { name: format!("{key}.bias"), shape: vec![out], fan_in: out * k * k },
    ]
}

/// Variables for `params`, initialised from `seed`.
pub fn varmap(params: &[Param], seed: u64, device: &Device) -> Result<VarMap> {
    let mut rng = Rng::derive(seed, "init");
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("varmap lock");
        for p in params {
            let bound = 1.0 / (p.fan_in as f32).sqrt();
            let n: usize = p.shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.symmetric(bound)).collect();
            let t = Tensor::from_vec(values, p.shape.as_slice(), device)?.to_dtype(DType::F32)?;
            data.insert(p.name.clone(), Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}
