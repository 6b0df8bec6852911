//! SimpleAutoencoder: 784-128-64-36-18-9 and back, ReLU between layers, sigmoid output.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::init::{self, Param};
use super::ops::relu;
use super::Autoencoder;

const ENCODER: [usize; 6] = [784, 128, 64, 36, 18, 9];

pub fn parameters() -> Vec<Param> {
    let mut out = Vec::new();
    for (i, w) in ENCODER.windows(2).enumerate() {
        out.extend(init::linear(&format!("encoder.{}", 2 * i), w[0], w[1]));
    }
    let decoder: Vec<usize> = ENCODER.iter().rev().copied().collect();
    for (i, w) in decoder.windows(2).enumerate() {
        out.extend(init::linear(&format!("decoder.{}", 2 * i), w[0], w[1]));
    }
    out
}

pub struct SimpleAutoencoder {
    encoder: Vec<Linear>,
    decoder: Vec<Linear>,
}

fn stack(vb: &VarBuilder, prefix: &str, dims: &[usize]) -> Result<Vec<Linear>> {
    dims.windows(2).enumerate().map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("{prefix}.{}", 2 * i)))).collect()
}

/// Linear layers with ReLU between them (not after the last).
fn run(layers: &[Linear], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, layer) in layers.iter().enumerate() {
        h = layer.forward(&h)?;
        if i + 1 < layers.len() {
            h = relu(&h)?;
        }
    }
    Ok(h)
}

impl SimpleAutoencoder {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        let decoder: Vec<usize> = ENCODER.iter().rev().copied().collect();
        Ok(Self { encoder: stack(vb, "encoder", &ENCODER)?, decoder: stack(vb, "decoder", &decoder)? })
    }
}

impl Autoencoder for SimpleAutoencoder {
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        run(&self.encoder, x)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&run(&self.decoder, z)?)
    }
}
