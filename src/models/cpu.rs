//! Training on the CPU without autograd: each layer's forward and backward pass written out
//! over buffers that live as long as the trainer, two parallel regions per step.
//!
//! candle's autograd pays per operation: a fresh tensor for every intermediate, a graph walk,
//! gradient tensors added one by one, a rayon hand-off per kernel. At batch 32 the notebook's
//! models do about 1 MFLOP per image, so that overhead was most of a step. Here a step is:
//!
//! 1. Per group of samples ([`group_size`]), in parallel: the forward pass and the backward pass down
//!    to each layer's gradient at its output (before the activation), written into
//!    batch-wide buffers at the group's rows. Nothing is summed over samples here.
//! 2. Per block of parameters (rows of a weight matrix, (out, in) pairs of a convolution, a
//!    bias), in parallel: the gradient summed over the whole batch in sample order, then
//!    Adam (PyTorch's update, [`super::adam`]) on that block, in place. The loss, summed in
//!    order in f64, runs beside them.
//!
//! Every sum runs in the order candle's autograd path (the ops in [`super::dense`] and
//! [`super::ops`]) uses, with the same kernels, so the two give bitwise the same weights (a
//! test checks it), at any thread count and group size, and, since those kernels never depend
//! on the CPU, on every CPU.
//!
//! The layers are read off the model's PyTorch `nn.Sequential`s ([`Architecture::torch_layers`]):
//! linear layers, conv + ReLU + max-pool blocks and transposed convolutions, with ReLU
//! between and a sigmoid at the end, which covers both families. Weights stay in PyTorch's
//! layout in one flat buffer, in the order of [`Architecture::parameters`].

use std::ops::Range;

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rayon::prelude::*;

use super::adam::{self, AdamConfig};
use super::dense::sigmoid_into;
use super::gemm::{gemm, transpose_into};
use super::kernels::{add_bias, plane_sums_into, pool_plane, Geometry, Planes, NO_GRADIENT};
use super::{Architecture, TorchLayer};
use crate::data::{Shape, Split};

/// Samples per group in the first phase, the unit of its parallel work, for a batch of `n`:
/// enough groups for every thread, at most 8 samples each (bigger groups make better use of
/// each weight read), at least 2. The result does not depend on it (the tests vary it).
fn group_size(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).clamp(2, 8)
}

/// Elements of a weight matrix per second-phase block (whole rows or pairs).
const BLOCK: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    None,
    Relu,
    Sigmoid,
}

enum Op {
    /// `nn.Linear(i, o)`.
    Linear { i: usize, o: usize },
    /// `nn.Conv2d(c, o, 3, padding=1)`, ReLU and `nn.MaxPool2d(2)`, fused.
    ConvPool { g: Geometry, pl: Planes },
    /// `nn.ConvTranspose2d(..)`: in the geometry's terms, grid -> image.
    Deconv { g: Geometry, pl: Planes },
}

struct Layer {
    op: Op,
    act: Act,
    w: Range<usize>,
    b: Range<usize>,
    /// Values per sample in and out.
    inp: usize,
    out: usize,
}

impl Layer {
    /// Per sample: what the second phase needs of the input (a convolution's input as
    /// phases, a transposed convolution's as grids).
    fn saved_len(&self) -> usize {
        match &self.op {
            Op::Linear { .. } => 0,
            Op::ConvPool { g, pl } => g.c * pl.image_len(),
            Op::Deconv { g, pl } => g.o * pl.grid_len(g.gh),
        }
    }

    /// Per sample: the gradient at the layer's output, before the activation (a
    /// convolution's as grids, a transposed convolution's as phases: the kernels' forms).
    fn grad_len(&self) -> usize {
        match &self.op {
            Op::Linear { o, .. } => *o,
            Op::ConvPool { g, pl } => g.o * pl.grid_len(g.gh),
            Op::Deconv { g, pl } => g.c * pl.image_len(),
        }
    }

    /// Per sample: the plane sums of that gradient (for the bias of a convolution).
    fn sums_len(&self) -> usize {
        match &self.op {
            Op::Linear { .. } => 0,
            Op::ConvPool { g, .. } => g.o,
            Op::Deconv { g, .. } => g.c,
        }
    }

    /// Per sample: max-pool winners.
    fn winners_len(&self) -> usize {
        match &self.op {
            Op::ConvPool { .. } => self.out,
            _ => 0,
        }
    }

    /// Elements per row (linear) or per (out, in) pair (convolutions) of the weight.
    fn row_len(&self) -> usize {
        match &self.op {
            Op::Linear { i, .. } => *i,
            Op::ConvPool { g, .. } | Op::Deconv { g, .. } => g.k * g.k,
        }
    }
}

/// Batch-wide buffers, per layer, sample-major, for `capacity` samples. Zeroed when made;
/// the phases' margins and the grids' junk columns are never written, so they stay zero.
#[derive(Default)]
struct Buffers {
    capacity: usize,
    x: Vec<f32>,
    outs: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    saved: Vec<Vec<f32>>,
    sums: Vec<Vec<f32>>,
    winners: Vec<Vec<u32>>,
}

impl Buffers {
    fn make(layers: &[Layer], pixels: usize, n: usize) -> Self {
        let per = |f: &dyn Fn(&Layer) -> usize| layers.iter().map(|l| vec![0f32; n * f(l)]).collect();
        Self {
            capacity: n,
            x: vec![0.0; n * pixels],
            outs: per(&|l| l.out),
            grads: per(&|l| l.grad_len()),
            saved: per(&|l| l.saved_len()),
            sums: per(&|l| l.sums_len()),
            winners: layers.iter().map(|l| vec![0u32; n * l.winners_len()]).collect(),
        }
    }

    /// The first `n` samples' buffers cut into groups of `group` samples.
    fn groups(&mut self, n: usize, group: usize) -> Vec<View<'_>> {
        fn cut<T>(buf: &mut [T], len: usize, n: usize, group: usize) -> Vec<&mut [T]> {
            if len == 0 {
                return (0..n.div_ceil(group)).map(|_| Default::default()).collect();
            }
            buf[..n * len].chunks_mut(group * len).collect()
        }
        let pixels = self.x.len() / self.capacity;
        let mut views: Vec<View<'_>> = cut(&mut self.x, pixels, n, group).into_iter().map(View::new).collect();
        for ((((outs, grads), saved), sums), winners) in
            self.outs.iter_mut().zip(&mut self.grads).zip(&mut self.saved).zip(&mut self.sums).zip(&mut self.winners)
        {
            let len = |b: &Vec<f32>| b.len() / self.capacity;
            let (lo, lg, ls, lsu, lw) = (len(outs), len(grads), len(saved), len(sums), winners.len() / self.capacity);
            let parts = cut(outs, lo, n, group)
                .into_iter()
                .zip(cut(grads, lg, n, group))
                .zip(cut(saved, ls, n, group))
                .zip(cut(sums, lsu, n, group))
                .zip(cut(winners, lw, n, group));
            for (v, ((((o, g), s), su), w)) in views.iter_mut().zip(parts) {
                v.outs.push(o);
                v.grads.push(g);
                v.saved.push(s);
                v.sums.push(su);
                v.winners.push(w);
            }
        }
        views
    }

    /// The input of layer `li` for the first `n` samples.
    fn input(&self, li: usize, n: usize) -> &[f32] {
        let b = if li == 0 { &self.x } else { &self.outs[li - 1] };
        &b[..n * (b.len() / self.capacity)]
    }
}

/// One group's rows of the batch-wide buffers.
struct View<'a> {
    x: &'a mut [f32],
    outs: Vec<&'a mut [f32]>,
    grads: Vec<&'a mut [f32]>,
    saved: Vec<&'a mut [f32]>,
    sums: Vec<&'a mut [f32]>,
    winners: Vec<&'a mut [u32]>,
}

/// A group's scratch buffers, reused from step to step.
#[derive(Default)]
struct Scratch {
    t: Vec<f32>,
    t2: Vec<f32>,
    conv: Vec<f32>,
    acc: Vec<f32>,
    g: Vec<f32>,
    g_next: Vec<f32>,
}

/// A block of parameters whose gradient and update the second phase computes in one task.
struct Block {
    layer: usize,
    /// The range in the flat buffers.
    range: Range<usize>,
    /// First row (linear) or pair (convolution) of the weight; `None` for the bias.
    first: Option<usize>,
}

pub struct Trainer {
    layers: Vec<Layer>,
    blocks: Vec<Block>,
    /// (PyTorch name, range in the flat buffers).
    names: Vec<(String, Range<usize>)>,
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    buffers: Buffers,
    scratch: Vec<Scratch>,
    cfg: AdamConfig,
    step: u64,
    pixels: usize,
}

/// The layers of `arch` on images of `shape`, with their parameters' places in the flat
/// buffer; `None` when the model has a layer pattern this trainer does not have.
fn plan(arch: &Architecture, shape: Shape, names: &[(String, Range<usize>)]) -> Option<Vec<Layer>> {
    let (enc, dec) = arch.torch_layers(shape);
    let find = |name: String| names.iter().find(|(n, _)| *n == name).map(|(_, r)| r.clone());
    let mut layers = Vec::new();
    let (mut c, mut h, mut w) = (shape.channels, shape.height, shape.width);
    for (half, seq) in [("encoder", &enc), ("decoder", &dec)] {
        let mut k = 0;
        while k < seq.len() {
            let act = match seq.get(k + 1) {
                Some(TorchLayer::ReLU) => Act::Relu,
                Some(TorchLayer::Sigmoid) => Act::Sigmoid,
                _ => Act::None,
            };
            let (wr, br) = (find(format!("{half}.{k}.weight")), find(format!("{half}.{k}.bias")));
            let inp = c * h * w;
            let (op, act, used) = match &seq[k] {
                TorchLayer::Linear(i, o) => {
                    if *i != inp {
                        return None;
                    }
                    (c, h, w) = (*o, 1, 1);
                    (Op::Linear { i: *i, o: *o }, act, if act == Act::None { 1 } else { 2 })
                }
                TorchLayer::Conv2d(ci, co) => {
                    if *ci != c || act != Act::Relu || seq.get(k + 2) != Some(&TorchLayer::MaxPool2d) || h % 2 != 0 || w % 2 != 0 {
                        return None;
                    }
                    let g = Geometry { c, h, w, o: *co, gh: h, gw: w, k: 3, stride: 1, pad: 1 };
                    (c, h, w) = (*co, h / 2, w / 2);
                    (Op::ConvPool { g, pl: g.planes() }, Act::None, 3)
                }
                TorchLayer::ConvTranspose2d(ci, co) => {
                    if *ci != c {
                        return None;
                    }
                    let g = Geometry { c: *co, h: 2 * h, w: 2 * w, o: c, gh: h, gw: w, k: 3, stride: 2, pad: 1 };
                    (c, h, w) = (*co, 2 * h, 2 * w);
                    (Op::Deconv { g, pl: g.planes() }, act, if act == Act::None { 1 } else { 2 })
                }
                TorchLayer::Flatten => {
                    (c, h, w) = (c * h * w, 1, 1);
                    k += 1;
                    continue;
                }
                TorchLayer::Unflatten(s) => {
                    if s.pixels() != inp {
                        return None;
                    }
                    (c, h, w) = (s.channels, s.height, s.width);
                    k += 1;
                    continue;
                }
                _ => return None,
            };
            layers.push(Layer { op, act, w: wr?, b: br?, inp, out: c * h * w });
            k += used;
        }
    }
    // A sigmoid only at the very end, where it is fused with the loss; the output is an image.
    let last = layers.len().checked_sub(1)?;
    let ok = layers[last].act == Act::Sigmoid
        && layers[..last].iter().all(|l| l.act != Act::Sigmoid)
        && layers[last].out == shape.pixels()
        && layers[0].inp == shape.pixels();
    ok.then_some(layers)
}

/// The second phase's blocks, in the order of the flat buffer and covering all of it.
fn blocks(layers: &[Layer], len: usize) -> Option<Vec<Block>> {
    let mut out = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        let row = l.row_len();
        let rows = l.w.len() / row;
        let per = (BLOCK / row).max(1);
        for first in (0..rows).step_by(per) {
            let end = (first + per).min(rows);
            out.push(Block { layer: li, range: l.w.start + first * row..l.w.start + end * row, first: Some(first) });
        }
        out.push(Block { layer: li, range: l.b.clone(), first: None });
    }
    out.sort_by_key(|b| b.range.start);
    let contiguous = out.windows(2).all(|w| w[0].range.end == w[1].range.start);
    (contiguous && out.first().map(|b| b.range.start) == Some(0) && out.last().map(|b| b.range.end) == Some(len)).then_some(out)
}

impl Trainer {
    /// A trainer over the current values of `varmap`'s variables (a model of `arch` on
    /// `shape`), or `None` if the model has a layer this trainer does not have.
    pub fn new(arch: &Architecture, shape: Shape, varmap: &VarMap, cfg: AdamConfig) -> Result<Option<Self>> {
        let mut names = Vec::new();
        let mut params = Vec::new();
        {
            let data = varmap.data().lock().expect("varmap lock");
            for p in arch.parameters(shape) {
                let Some(var) = data.get(&p.name) else { return Ok(None) };
                let values = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                names.push((p.name.clone(), params.len()..params.len() + values.len()));
                params.extend(values);
            }
        }
        let Some(layers) = plan(arch, shape, &names) else { return Ok(None) };
        let Some(blocks) = blocks(&layers, params.len()) else { return Ok(None) };
        let len = params.len();
        Ok(Some(Self {
            layers,
            blocks,
            names,
            params,
            m: vec![0.0; len],
            v: vec![0.0; len],
            buffers: Buffers::default(),
            scratch: Vec::new(),
            cfg,
            step: 0,
            pixels: shape.pixels(),
        }))
    }

    /// One optimisation step on the images `batch` of `split`; returns the batch's mean
    /// squared error before the step.
    pub fn step(&mut self, split: &Split, batch: &[usize]) -> f32 {
        let n = batch.len();
        let scale = (2.0 / (n * self.pixels) as f64) as f32;
        self.first_phase(split, batch, Some(scale));
        self.update(n)
    }

    /// The first phase on the images `batch`: the forward pass, and the backward pass when
    /// `scale` (the loss's 2 / elements) is given.
    fn first_phase(&mut self, split: &Split, batch: &[usize], scale: Option<f32>) {
        assert!(!batch.is_empty(), "an empty batch");
        let n = batch.len();
        if self.buffers.capacity < n {
            self.buffers = Buffers::make(&self.layers, self.pixels, n);
        }
        let group = group_size(n);
        let groups = n.div_ceil(group);
        if self.scratch.len() < groups {
            self.scratch.resize_with(groups, Scratch::default);
        }
        let (layers, params) = (&self.layers, &self.params);
        self.buffers.groups(n, group).into_par_iter().zip(&mut self.scratch[..groups]).zip(batch.par_chunks(group)).for_each(
            |((mut view, scratch), idx)| {
                view.load(split, idx);
                view.forward(layers, params, scratch);
                if let Some(scale) = scale {
                    view.backward(layers, params, scratch, scale);
                }
            },
        );
    }

    /// The mean squared error of the current weights over `split` (the test loss), with the
    /// bits of [`crate::train::mse`] through the autograd path: per `chunk` images a sum in
    /// order in f64, those sums added in order. The forward passes run a training batch's
    /// worth of images at a time, so no buffer grows.
    pub fn mse(&mut self, split: &Split, chunk: usize) -> f64 {
        let part = self.buffers.capacity.max(1);
        let mut total = 0f64;
        for start in (0..split.len()).step_by(chunk) {
            let end = (start + chunk).min(split.len());
            let mut sum = 0f64;
            for from in (start..end).step_by(part) {
                let batch: Vec<usize> = (from..(from + part).min(end)).collect();
                self.first_phase(split, &batch, None);
                let (y, x) = (self.buffers.input(self.layers.len(), batch.len()), self.buffers.input(0, batch.len()));
                for (&a, &b) in y.iter().zip(x) {
                    sum += f64::from(a - b) * f64::from(a - b);
                }
            }
            total += sum;
        }
        total / (split.len() * self.pixels) as f64
    }

    /// The second phase: every block's gradient over the `n` samples and its Adam step, and
    /// the loss beside them.
    fn update(&mut self, n: usize) -> f32 {
        self.step += 1;
        let s = adam::Scalars::new(&self.cfg, self.step);
        let mut tasks = Vec::with_capacity(self.blocks.len());
        let (mut p, mut m, mut v) = (&mut self.params[..], &mut self.m[..], &mut self.v[..]);
        for block in &self.blocks {
            let len = block.range.len();
            let (bp, rp) = std::mem::take(&mut p).split_at_mut(len);
            let (bm, rm) = std::mem::take(&mut m).split_at_mut(len);
            let (bv, rv) = std::mem::take(&mut v).split_at_mut(len);
            (p, m, v) = (rp, rm, rv);
            tasks.push((block, bp, bm, bv));
        }
        let (layers, buffers) = (&self.layers, &self.buffers);
        let (loss, ()) = rayon::join(
            || {
                // As the autograd path's loss: every element in order, in f64.
                // The last layer's output is the next layer's input, were there one.
                let (y, x) = (buffers.input(layers.len(), n), buffers.input(0, n));
                let sum: f64 = y.iter().zip(x).map(|(&a, &b)| f64::from(a - b) * f64::from(a - b)).sum();
                (sum / y.len() as f64) as f32
            },
            || {
                tasks.into_par_iter().for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(grad, scratch), (block, p, m, v)| {
                        grad.resize(p.len(), 0.0);
                        block_gradient(&layers[block.layer], block, buffers, n, grad, scratch);
                        adam::update_slices(&s, p, grad, m, v);
                    },
                )
            },
        );
        loss
    }

    /// Copies the weights into `varmap`'s variables (for evaluation and saving).
    pub fn write_to(&self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().expect("varmap lock");
        for (name, range) in &self.names {
            let var = &data[name];
            var.set(&Tensor::from_slice(&self.params[range.clone()], var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

/// The gradient of one block, summed over the `n` samples in sample order (as the autograd
/// path's weight-gradient kernels sum).
fn block_gradient(l: &Layer, block: &Block, buffers: &Buffers, n: usize, grad: &mut [f32], gt: &mut Vec<f32>) {
    let li = block.layer;
    let g = &buffers.grads[li][..n * l.grad_len()];
    let Some(first) = block.first else {
        // A bias: per-sample values (a linear layer's gradient, a convolution's plane sums),
        // added in sample order.
        let per = if l.sums_len() == 0 { g } else { &buffers.sums[li][..n * l.sums_len()] };
        grad.fill(0.0);
        for row in per.chunks_exact(grad.len()) {
            for (s, v) in grad.iter_mut().zip(row) {
                *s += v;
            }
        }
        return;
    };
    match &l.op {
        Op::Linear { i, o } => {
            // dW[rows] = g[:, rows]^T x: the rows' gradients transposed, times the input.
            let rows = grad.len() / i;
            gt.resize(rows * n, 0.0);
            for (s, sample) in g.chunks_exact(*o).enumerate() {
                for (r, &v) in sample[first..first + rows].iter().enumerate() {
                    gt[r * n + s] = v;
                }
            }
            gemm(gt, buffers.input(li, n), grad, rows, n, *i);
        }
        Op::ConvPool { g: geo, pl } => {
            // Input phases (image) against the output gradient's grids.
            for (k, out) in grad.chunks_exact_mut(geo.k * geo.k).enumerate() {
                geo.wgrad_pair(pl, &buffers.saved[li], g, n, first + k, out);
            }
        }
        Op::Deconv { g: geo, pl } => {
            // The output gradient's phases (image) against the input grids.
            for (k, out) in grad.chunks_exact_mut(geo.k * geo.k).enumerate() {
                geo.wgrad_pair(pl, g, &buffers.saved[li], n, first + k, out);
            }
        }
    }
}

impl<'a> View<'a> {
    fn new(x: &'a mut [f32]) -> Self {
        Self { x, outs: Vec::new(), grads: Vec::new(), saved: Vec::new(), sums: Vec::new(), winners: Vec::new() }
    }

    fn load(&mut self, split: &Split, idx: &[usize]) {
        let pixels = self.x.len() / idx.len();
        for (dst, &i) in self.x.chunks_exact_mut(pixels).zip(idx) {
            for (d, &p) in dst.iter_mut().zip(split.image(i)) {
                *d = p as f32 / 255.0;
            }
        }
    }

    fn forward(&mut self, layers: &[Layer], params: &[f32], s: &mut Scratch) {
        let n = self.x.len() / layers[0].inp;
        for (li, l) in layers.iter().enumerate() {
            let (before, rest) = self.outs.split_at_mut(li);
            let input: &[f32] = if li == 0 { self.x } else { before[li - 1] };
            let out = &mut *rest[0];
            let (w, b) = (&params[l.w.clone()], &params[l.b.clone()]);
            match &l.op {
                Op::Linear { i, o } => {
                    // y^T = W x^T: the weights stay in PyTorch's (out, in) layout.
                    s.t.resize(i * n, 0.0);
                    transpose_into(input, n, *i, &mut s.t);
                    s.t2.resize(o * n, 0.0);
                    gemm(w, &s.t, &mut s.t2, *o, *i, n);
                    transpose_into(&s.t2, *o, n, out);
                    for row in out.chunks_exact_mut(*o) {
                        for (v, bv) in row.iter_mut().zip(b) {
                            *v += bv;
                        }
                    }
                }
                Op::ConvPool { g, pl } => {
                    g.phases_write(pl, input, self.saved[li]);
                    s.conv.resize(n * g.o * g.gh * g.gw, 0.0);
                    g.correlate_into(pl, self.saved[li], w, &mut s.acc, &mut s.conv);
                    add_bias(&mut s.conv, b, g.gh * g.gw);
                    let pooled = (g.gh / 2) * (g.gw / 2);
                    let planes =
                        s.conv.chunks_exact(g.gh * g.gw).zip(out.chunks_exact_mut(pooled)).zip(self.winners[li].chunks_exact_mut(pooled));
                    for ((p, o), wv) in planes {
                        pool_plane(true, p, g.gw, o, wv);
                    }
                }
                Op::Deconv { g, pl } => {
                    g.grids_write(pl, input, self.saved[li]);
                    g.scatter_into(pl, self.saved[li], w, &mut s.acc, out);
                    add_bias(out, b, g.h * g.w);
                }
            }
            match l.act {
                Act::Relu => out.iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 }),
                Act::Sigmoid => {
                    s.t.clear();
                    s.t.extend_from_slice(out);
                    sigmoid_into(&s.t, out);
                }
                Act::None => {}
            }
        }
    }

    /// The loss's gradient, then each layer's gradient at its output (kept for the second
    /// phase) and at its input (passed down).
    fn backward(&mut self, layers: &[Layer], params: &[f32], s: &mut Scratch, scale: f32) {
        let n = self.x.len() / layers[0].inp;
        let last = layers.len() - 1;
        // MSE through the sigmoid, as the autograd path: 2 (y - x) / N, times y (1 - y).
        s.g.clear();
        s.g.extend(self.outs[last].iter().zip(self.x.iter()).map(|(&y, &x)| ((y - x) * scale) * (y * (1.0 - y))));
        for li in (0..=last).rev() {
            let l = &layers[li];
            if l.act == Act::Relu {
                for (gv, &o) in s.g.iter_mut().zip(self.outs[li].iter()) {
                    if o <= 0.0 {
                        *gv = 0.0;
                    }
                }
            }
            let w = &params[l.w.clone()];
            let need_dx = li > 0;
            s.g_next.resize(if need_dx { n * l.inp } else { 0 }, 0.0);
            match &l.op {
                Op::Linear { i, o } => {
                    self.grads[li].copy_from_slice(&s.g);
                    if need_dx {
                        // dx = g W.
                        gemm(&s.g, w, &mut s.g_next, n, *o, *i);
                    }
                }
                Op::ConvPool { g, pl } => {
                    // Through the pool's winners to the convolution's output.
                    let plane = g.gh * g.gw;
                    s.conv.clear();
                    s.conv.resize(n * g.o * plane, 0.0);
                    let pooled = plane / 4;
                    for ((d, gp), win) in
                        s.conv.chunks_exact_mut(plane).zip(s.g.chunks_exact(pooled)).zip(self.winners[li].chunks_exact(pooled))
                    {
                        for (&gv, &at) in gp.iter().zip(win.iter()) {
                            if at != NO_GRADIENT {
                                d[at as usize] = gv;
                            }
                        }
                    }
                    plane_sums_into(&s.conv, plane, self.sums[li]);
                    g.grids_write(pl, &s.conv, self.grads[li]);
                    if need_dx {
                        g.scatter_into(pl, self.grads[li], w, &mut s.acc, &mut s.g_next);
                    }
                }
                Op::Deconv { g, pl } => {
                    plane_sums_into(&s.g, g.h * g.w, self.sums[li]);
                    g.phases_write(pl, &s.g, self.grads[li]);
                    if need_dx {
                        g.correlate_into(pl, self.grads[li], w, &mut s.acc, &mut s.g_next);
                    }
                }
            }
            std::mem::swap(&mut s.g, &mut s.g_next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models;
    use candle_core::Device;

    fn split(n: usize, seed: u64) -> Split {
        split_of(Shape::MNIST, n, seed)
    }

    fn split_of(shape: Shape, n: usize, seed: u64) -> Split {
        let mut rng = crate::rng::Rng::new(seed);
        let images = (0..n * shape.pixels()).map(|_| if rng.next_f32() < 0.7 { 0 } else { (rng.next_u64() % 256) as u8 }).collect();
        Split { shape, images, labels: vec![0; n] }
    }

    fn values(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = varmap.data().lock().unwrap();
        let mut out: Vec<_> =
            data.iter().map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Steps of this trainer against candle's autograd (the same kernels and Adam) on `arch`
    /// and `shape`: bitwise the same losses and weights, for full and partial batches (groups
    /// of 8 and a remainder, a batch of 1, and a larger batch after smaller ones).
    fn assert_bitwise_the_autograd_path(arch: &Architecture, shape: Shape) {
        let what = format!("{arch:?} on {shape}");
        let data = split_of(shape, 40, 1);
        let cfg = AdamConfig::new(1e-3, 1e-5);
        let (vm_ref, model) = models::initialise(arch, shape, 7, &Device::Cpu).unwrap();
        let (vm, _) = models::initialise(arch, shape, 7, &Device::Cpu).unwrap();
        let mut trainer = Trainer::new(arch, shape, &vm, cfg).unwrap().unwrap_or_else(|| panic!("{what}: not supported"));
        let mut opt = adam::Adam::new(vm_ref.all_vars(), cfg).unwrap();
        for batch in [(0..32).collect::<Vec<_>>(), (32..40).collect(), (3..8).collect(), vec![17], (2..39).collect()] {
            let x = crate::train::batch_tensor(&data, batch.iter().copied(), &Device::Cpu).unwrap();
            let loss = models::dense::mse(&model.forward(&x).unwrap(), &x).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let (ours, theirs) = (trainer.step(&data, &batch), loss.to_scalar::<f32>().unwrap());
            assert_eq!(ours.to_bits(), theirs.to_bits(), "{what}: loss {ours} vs {theirs}");
        }
        let (ours, theirs) = (trainer.mse(&data, 16), crate::train::mse_in(model.as_ref(), &data, &Device::Cpu, 16).unwrap());
        assert_eq!(ours.to_bits(), theirs.to_bits(), "{what}: test loss {ours} vs {theirs}");
        trainer.write_to(&vm).unwrap();
        for ((name, a), (_, b)) in values(&vm).iter().zip(values(&vm_ref)) {
            let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differ, 0, "{what} {name}: {differ} of {} values differ", a.len());
        }
    }

    #[test]
    fn bitwise_the_autograd_path_on_the_notebook_models() {
        assert_bitwise_the_autograd_path(&Architecture::notebook_simple(), Shape::MNIST);
        assert_bitwise_the_autograd_path(&Architecture::notebook_conv(), Shape::MNIST);
    }

    #[test]
    fn bitwise_the_autograd_path_on_other_models_and_shapes() {
        let rgb = Shape { channels: 3, height: 8, width: 8 };
        assert_bitwise_the_autograd_path(&Architecture::Mlp { encoder: vec![192, 20, 5] }, rgb);
        assert_bitwise_the_autograd_path(&Architecture::Conv { channels: vec![4], dense: vec![], latent: 3 }, rgb);
        let wide = Shape { channels: 1, height: 16, width: 24 };
        assert_bitwise_the_autograd_path(&Architecture::Conv { channels: vec![3, 5, 2], dense: vec![7, 6], latent: 2 }, wide);
        // Three blocks on 16x8: the last pool leaves one column.
        let narrow = Shape { channels: 3, height: 16, width: 8 };
        assert_bitwise_the_autograd_path(&Architecture::Conv { channels: vec![6, 5, 4], dense: vec![], latent: 3 }, narrow);
    }

    /// The same bits whatever the thread count (the groups, not the threads, fix the order).
    #[test]
    fn the_same_bits_at_one_two_and_three_threads() {
        let data = split(48, 2);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let arch = Architecture::notebook_conv();
                let (vm, _) = models::initialise(&arch, Shape::MNIST, 3, &Device::Cpu).unwrap();
                let mut t = Trainer::new(&arch, Shape::MNIST, &vm, AdamConfig::new(1e-3, 0.0)).unwrap().unwrap();
                let losses: Vec<u32> = (0..3).map(|s| t.step(&data, &(s * 16..s * 16 + 16).collect::<Vec<_>>()).to_bits()).collect();
                (losses, t.params.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            })
        };
        // 1 thread: groups of 8; 3 threads: groups of 6 (16 samples a step).
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }
}
