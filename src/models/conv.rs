//! `conv`: the notebook's ConvAE family. Per entry of `channels`, a 3x3 convolution (padding 1)
//! with ReLU and 2x2 max-pooling; then linear layers through `dense` to `latent`. The decoder
//! mirrors it: linear layers back, then per block a 3x3 transposed convolution (stride 2,
//! padding 1, output padding 1) that doubles the size, ReLU between and a sigmoid at the end.
//! The notebook's model is `channels: [8, 4]`, `dense: [64]`, `latent: 10` on 1x28x28 images,
//! with its PyTorch names (`encoder.0`, `encoder.3`, `encoder.7`, ...: each block takes three
//! Sequential slots, conv + ReLU + pool, and the Flatten one).

use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::init::{self, Param};
use super::mlp::run as dense;
use super::ops::{conv2d, conv_transpose2d, relu_max_pool2x2};
use super::Autoencoder;
use crate::data::Shape;

/// Where the layers sit and how big they are, for one image shape.
struct Layout {
    /// (PyTorch name, in channels, out channels) of each convolution.
    convs: Vec<(String, usize, usize)>,
    /// (name, in, out) of each encoder linear layer.
    enc_linear: Vec<(String, usize, usize)>,
    dec_linear: Vec<(String, usize, usize)>,
    /// (name, in channels, out channels) of each transposed convolution.
    deconvs: Vec<(String, usize, usize)>,
    /// The shape the decoder's linear output is unflattened to.
    inner: Shape,
}

fn layout(shape: Shape, channels: &[usize], hidden: &[usize], latent: usize) -> Layout {
    let n = channels.len();
    let mut ins = vec![shape.channels];
    ins.extend_from_slice(channels);
    let convs = (0..n).map(|i| (format!("encoder.{}", 3 * i), ins[i], ins[i + 1])).collect();
    let inner = Shape { channels: channels[n - 1], height: shape.height >> n, width: shape.width >> n };
    let mut widths = vec![inner.pixels()];
    widths.extend_from_slice(hidden);
    widths.push(latent);
    let enc_linear = widths.windows(2).enumerate().map(|(j, w)| (format!("encoder.{}", 3 * n + 1 + 2 * j), w[0], w[1])).collect();
    let back: Vec<usize> = widths.iter().rev().copied().collect();
    let m = back.len() - 1;
    let dec_linear = back.windows(2).enumerate().map(|(j, w)| (format!("decoder.{}", 2 * j), w[0], w[1])).collect();
    let deconvs = (0..n).map(|i| (format!("decoder.{}", 2 * m + 2 * i), ins[n - i], ins[n - i - 1])).collect();
    Layout { convs, enc_linear, dec_linear, deconvs, inner }
}

/// Why these settings cannot encode images of `shape`, if they cannot.
pub fn check(shape: Shape, channels: &[usize], latent: usize) -> std::result::Result<(), String> {
    let n = channels.len();
    if n == 0 || channels.contains(&0) || latent == 0 {
        return Err("needs at least one conv block, and no zero channels or latent size".into());
    }
    let f = 1usize << n.min(30);
    if n >= 30 || !shape.height.is_multiple_of(f) || !shape.width.is_multiple_of(f) {
        return Err(format!(
            "{n} conv block{} halve the image {n} time{}, so its height and width must be multiples of {f}; the images are {}x{}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "" } else { "s" },
            shape.height,
            shape.width
        ));
    }
    Ok(())
}

pub fn parameters(shape: Shape, channels: &[usize], hidden: &[usize], latent: usize) -> Vec<Param> {
    let l = layout(shape, channels, hidden, latent);
    let mut out = Vec::new();
    for (name, i, o) in &l.convs {
        out.extend(init::conv2d(name, *i, *o, 3));
    }
    for (name, i, o) in l.enc_linear.iter().chain(&l.dec_linear) {
        out.extend(init::linear(name, *i, *o));
    }
    for (name, i, o) in &l.deconvs {
        out.extend(init::conv_transpose2d(name, *i, *o, 3));
    }
    out
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
    shape: Shape,
    inner: Shape,
    convs: Vec<Conv>,
    enc_linear: Vec<Linear>,
    dec_linear: Vec<Linear>,
    deconvs: Vec<Conv>,
}

impl ConvAutoencoder {
    pub fn new(vb: &VarBuilder, shape: Shape, channels: &[usize], hidden: &[usize], latent: usize) -> Result<Self> {
        let l = layout(shape, channels, hidden, latent);
        let linears = |layers: &[(String, usize, usize)]| {
            layers.iter().map(|(n, i, o)| candle_nn::linear(*i, *o, vb.pp(n))).collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            shape,
            inner: l.inner,
            convs: l.convs.iter().map(|(n, i, o)| Conv::new(vb.pp(n), (*o, *i, 3, 3), *o)).collect::<Result<_>>()?,
            enc_linear: linears(&l.enc_linear)?,
            dec_linear: linears(&l.dec_linear)?,
            deconvs: l.deconvs.iter().map(|(n, i, o)| Conv::new(vb.pp(n), (*i, *o, 3, 3), *o)).collect::<Result<_>>()?,
        })
    }
}

impl Autoencoder for ConvAutoencoder {
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let s = self.shape;
        let mut h = x.reshape((b, s.channels, s.height, s.width))?;
        for c in &self.convs {
            h = relu_max_pool2x2(&conv2d(&h, &c.weight, &c.bias, 1, 1)?)?;
        }
        dense(&self.enc_linear, &h.flatten_from(1)?)
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let b = z.dim(0)?;
        let i = self.inner;
        let mut h = dense(&self.dec_linear, z)?.reshape((b, i.channels, i.height, i.width))?;
        for (k, c) in self.deconvs.iter().enumerate() {
            h = conv_transpose2d(&h, &c.weight, &c.bias, 2, 1, 1)?;
            if k + 1 < self.deconvs.len() {
                h = super::ops::relu(&h)?;
            }
        }
        super::dense::sigmoid(&h)?.reshape((b, self.shape.pixels()))
    }
}
