//! `mlp`: linear layers of the given widths (the notebook's SimpleAutoencoder is
//! 784-128-64-36-18-9) and the mirror image back, ReLU between layers, sigmoid output.
//! PyTorch names: `encoder.{0,2,4,..}` and `decoder.{0,2,4,..}` (ReLUs sit at the odd indices).

use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::init::{self, Param};
use super::ops::relu;
use super::Autoencoder;

/// `encoder` mirrored: the decoder's widths.
fn mirror(encoder: &[usize]) -> Vec<usize> {
    encoder.iter().rev().copied().collect()
}

pub fn parameters(encoder: &[usize]) -> Vec<Param> {
    let mut out = Vec::new();
    for (prefix, dims) in [("encoder", encoder.to_vec()), ("decoder", mirror(encoder))] {
        for (i, w) in dims.windows(2).enumerate() {
            out.extend(init::linear(&format!("{prefix}.{}", 2 * i), w[0], w[1]));
        }
    }
    out
}

pub struct MlpAutoencoder {
    encoder: Vec<Linear>,
    decoder: Vec<Linear>,
}

fn stack(vb: &VarBuilder, prefix: &str, dims: &[usize]) -> Result<Vec<Linear>> {
    dims.windows(2).enumerate().map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("{prefix}.{}", 2 * i)))).collect()
}

/// Linear layers with ReLU between them (not after the last).
pub(super) fn run(layers: &[Linear], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, layer) in layers.iter().enumerate() {
        let bias = layer.bias().expect("every layer of these models has a bias");
        h = super::dense::linear(&h, layer.weight(), bias)?;
        if i + 1 < layers.len() {
            h = relu(&h)?;
        }
    }
    Ok(h)
}

impl MlpAutoencoder {
    pub fn new(vb: &VarBuilder, encoder: &[usize]) -> Result<Self> {
        Ok(Self { encoder: stack(vb, "encoder", encoder)?, decoder: stack(vb, "decoder", &mirror(encoder))? })
    }
}

impl Autoencoder for MlpAutoencoder {
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        run(&self.encoder, x)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        super::dense::sigmoid(&run(&self.decoder, z)?)
    }
}
