//! ConvAE: two conv + max-pool blocks and two linear layers to a 10-d latent; two linear
//! layers and two transposed convolutions back (EXPERIMENT.md).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::init::{self, Param};
use super::ops::{conv2d, conv_transpose2d, relu, relu_max_pool2x2};
use super::Autoencoder;

pub fn parameters() -> Vec<Param> {
    [
        init::conv2d("encoder.0", 1, 8, 3),
        init::conv2d("encoder.3", 8, 4, 3),
        init::linear("encoder.7", 196, 64),
        init::linear("encoder.9", 64, 10),
        init::linear("decoder.0", 10, 64),
        init::linear("decoder.2", 64, 196),
        init::conv_transpose2d("decoder.4", 4, 8, 3),
        init::conv_transpose2d("decoder.6", 8, 1, 3),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Weight and bias of a convolution.
struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    fn new(vb: VarBuilder, shape: (usize, usize, usize, usize), bias: usize) -> Result<Self> {
        Ok(Self { weight: vb.get(shape, "weight")?, bias: vb.get(bias, "bias")? })
    }
}

pub struct ConvAutoencoder {
    enc_conv1: Conv,
    enc_conv2: Conv,
    enc_fc1: Linear,
    enc_fc2: Linear,
    dec_fc1: Linear,
    dec_fc2: Linear,
    dec_deconv1: Conv,
    dec_deconv2: Conv,
}

impl ConvAutoencoder {
    pub fn new(vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            enc_conv1: Conv::new(vb.pp("encoder.0"), (8, 1, 3, 3), 8)?,
            enc_conv2: Conv::new(vb.pp("encoder.3"), (4, 8, 3, 3), 4)?,
            enc_fc1: candle_nn::linear(196, 64, vb.pp("encoder.7"))?,
            enc_fc2: candle_nn::linear(64, 10, vb.pp("encoder.9"))?,
            dec_fc1: candle_nn::linear(10, 64, vb.pp("decoder.0"))?,
            dec_fc2: candle_nn::linear(64, 196, vb.pp("decoder.2"))?,
            dec_deconv1: Conv::new(vb.pp("decoder.4"), (4, 8, 3, 3), 8)?,
            dec_deconv2: Conv::new(vb.pp("decoder.6"), (8, 1, 3, 3), 1)?,
        })
    }
}

impl Autoencoder for ConvAutoencoder {
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let x = x.reshape((b, 1, 28, 28))?;
        let h = relu_max_pool2x2(&conv2d(&x, &self.enc_conv1.weight, &self.enc_conv1.bias, 1, 1)?)?;
        let h = relu_max_pool2x2(&conv2d(&h, &self.enc_conv2.weight, &self.enc_conv2.bias, 1, 1)?)?;
        let h = relu(&self.enc_fc1.forward(&h.flatten_from(1)?)?)?;
        self.enc_fc2.forward(&h)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let b = z.dim(0)?;
        let h = self.dec_fc2.forward(&relu(&self.dec_fc1.forward(z)?)?)?.reshape((b, 4, 7, 7))?;
        let h = relu(&conv_transpose2d(&h, &self.dec_deconv1.weight, &self.dec_deconv1.bias, 2, 1, 1)?)?;
        let h = conv_transpose2d(&h, &self.dec_deconv2.weight, &self.dec_deconv2.bias, 2, 1, 1)?;
        candle_nn::ops::sigmoid(&h)?.reshape((b, 784))
    }
}
