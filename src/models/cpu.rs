//! Training on the CPU without autograd: each layer's forward and backward pass written out
//! over buffers that live as long as the trainer, one parallel region per step.
//!
//! candle's autograd pays per operation: a fresh tensor for every intermediate, a graph walk,
//! gradient tensors added one by one, a rayon hand-off per kernel. At batch 32 the notebook's
//! models do about 1 MFLOP per image, so that overhead was most of a step. Here a step is:
//!
//! 1. The batch is cut into groups of [`GROUP`] samples (the last may be smaller). Each group
//!    runs the whole forward pass, the loss and the whole backward pass on one thread, into
//!    its own buffers, and writes its own partial parameter gradient (its samples summed in
//!    order). The groups run in parallel.
//! 2. One parallel pass over the parameters adds the groups' partial gradients in group
//!    order and applies Adam (PyTorch's update, [`super::adam`]).
//!
//! The groups are fixed by the batch, not by the thread count, and every sum has a fixed
//! order ([`super::gemm`], the convolution kernels of [`super::ops`], the sigmoid's own exp
//! in [`super::dense`]), so the bits are the same at any thread count and on any CPU. The
//! forward pass is bitwise the candle path's (the same kernels in the same order); gradients
//! differ from it only by the grouping of the batch sum.
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
use super::ops::{add_bias, channel_sums_into, pool_plane, Geometry, Planes, NO_GRADIENT};
use super::{Architecture, TorchLayer};
use crate::data::{Shape, Split};

/// Samples per group: the unit of parallel work and of the batch sum's order.
pub const GROUP: usize = 8;

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

/// One group's buffers, reused from step to step.
#[derive(Default)]
struct Group {
    n: usize,
    x: Vec<f32>,
    /// Each layer's output (after its activation), [n, out].
    outs: Vec<Vec<f32>>,
    /// What a layer's backward pass needs of its input: a convolution's input phases, a
    /// transposed convolution's input grids.
    saved: Vec<Vec<f32>>,
    /// Max-pool winners per layer (empty for the others).
    winners: Vec<Vec<u32>>,
    g: Vec<f32>,
    g_next: Vec<f32>,
    t: Vec<f32>,
    t2: Vec<f32>,
    conv: Vec<f32>,
    acc: Vec<f32>,
    grids: Vec<f32>,
    /// This group's gradient of every parameter (the flat layout).
    grad: Vec<f32>,
    sq_err: f64,
}

pub struct Trainer {
    layers: Vec<Layer>,
    /// (PyTorch name, range in the flat buffers).
    names: Vec<(String, Range<usize>)>,
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    groups: Vec<Group>,
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
            let next = seq.get(k + 1);
            let act = match next {
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
        let len = params.len();
        Ok(Some(Self {
            layers,
            names,
            params,
            m: vec![0.0; len],
            v: vec![0.0; len],
            groups: Vec::new(),
            cfg,
            step: 0,
            pixels: shape.pixels(),
        }))
    }

    /// One optimisation step on the images `batch` of `split`; returns the batch's mean
    /// squared error before the step.
    pub fn step(&mut self, split: &Split, batch: &[usize]) -> f32 {
        let (loss, groups) = self.gradients(split, batch);
        self.apply(groups);
        loss
    }

    /// Every group's forward and backward pass; returns the loss and the number of groups.
    fn gradients(&mut self, split: &Split, batch: &[usize]) -> (f32, usize) {
        assert!(!batch.is_empty(), "an empty batch");
        let groups = batch.len().div_ceil(GROUP);
        if self.groups.len() < groups {
            self.groups.resize_with(groups, Group::default);
        }
        let elements = batch.len() * self.pixels;
        let scale = (2.0 / elements as f64) as f32;
        let (layers, params) = (&self.layers, &self.params);
        self.groups[..groups].par_iter_mut().zip(batch.par_chunks(GROUP)).for_each(|(g, idx)| {
            g.load(split, idx);
            g.forward(layers, params);
            g.backward(layers, params, scale);
        });
        let sq_err: f64 = self.groups[..groups].iter().map(|g| g.sq_err).sum();
        ((sq_err / elements as f64) as f32, groups)
    }

    /// Adds the groups' gradients in group order and takes one Adam step.
    fn apply(&mut self, groups: usize) {
        self.step += 1;
        let s = adam::Scalars::new(&self.cfg, self.step);
        let (first, rest) = self.groups[..groups].split_at_mut(1);
        let rest: Vec<&[f32]> = rest.iter().map(|g| g.grad.as_slice()).collect();
        const CHUNK: usize = 1 << 13;
        first[0]
            .grad
            .par_chunks_mut(CHUNK)
            .zip(self.params.par_chunks_mut(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK).zip(self.v.par_chunks_mut(CHUNK)))
            .enumerate()
            .for_each(|(c, ((g, p), (m, v)))| {
                let at = c * CHUNK..c * CHUNK + g.len();
                for other in &rest {
                    for (a, b) in g.iter_mut().zip(&other[at.clone()]) {
                        *a += b;
                    }
                }
                adam::update_slices(&s, p, g, m, v);
            });
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

impl Group {
    fn load(&mut self, split: &Split, idx: &[usize]) {
        self.n = idx.len();
        self.x.clear();
        for &i in idx {
            self.x.extend(split.image(i).iter().map(|&p| p as f32 / 255.0));
        }
    }

    fn forward(&mut self, layers: &[Layer], params: &[f32]) {
        let n = self.n;
        self.outs.resize_with(layers.len(), Vec::new);
        self.saved.resize_with(layers.len(), Vec::new);
        self.winners.resize_with(layers.len(), Vec::new);
        for (li, l) in layers.iter().enumerate() {
            let (before, rest) = self.outs.split_at_mut(li);
            let input: &[f32] = if li == 0 { &self.x } else { &before[li - 1] };
            let out = &mut rest[0];
            out.resize(n * l.out, 0.0);
            let (w, b) = (&params[l.w.clone()], &params[l.b.clone()]);
            match &l.op {
                Op::Linear { i, o } => {
                    // y^T = W x^T: the weights stay in PyTorch's (out, in) layout.
                    self.t.resize(i * n, 0.0);
                    transpose_into(input, n, *i, &mut self.t);
                    self.t2.resize(o * n, 0.0);
                    gemm(w, &self.t, &mut self.t2, *o, *i, n);
                    transpose_into(&self.t2, *o, n, out);
                    for row in out.chunks_exact_mut(*o) {
                        for (v, bv) in row.iter_mut().zip(b) {
                            *v += bv;
                        }
                    }
                }
                Op::ConvPool { g, pl } => {
                    g.phases_into(pl, input, &mut self.saved[li]);
                    self.conv.resize(n * g.o * g.gh * g.gw, 0.0);
                    g.correlate_into(pl, &self.saved[li], w, &mut self.acc, &mut self.conv);
                    add_bias(&mut self.conv, b, g.gh * g.gw);
                    let win = &mut self.winners[li];
                    win.resize(out.len(), 0);
                    let pooled = (g.gh / 2) * (g.gw / 2);
                    for ((p, o), wv) in
                        self.conv.chunks_exact(g.gh * g.gw).zip(out.chunks_exact_mut(pooled)).zip(win.chunks_exact_mut(pooled))
                    {
                        pool_plane(true, p, g.gw, o, wv);
                    }
                }
                Op::Deconv { g, pl } => {
                    g.grids_into(pl, input, &mut self.saved[li]);
                    g.scatter_into(pl, &self.saved[li], w, &mut self.acc, out);
                    add_bias(out, b, g.h * g.w);
                }
            }
            match l.act {
                Act::Relu => out.iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 }),
                Act::Sigmoid => {
                    self.t.clear();
                    self.t.extend_from_slice(out);
                    sigmoid_into(&self.t, out);
                }
                Act::None => {}
            }
        }
    }

    /// The loss's gradient, then every layer's backward pass into `self.grad`.
    fn backward(&mut self, layers: &[Layer], params: &[f32], scale: f32) {
        let n = self.n;
        self.grad.resize(params.len(), 0.0);
        let last = layers.len() - 1;
        // MSE through the sigmoid: d/dz = 2 (y - x) / N * y (1 - y).
        let y = &self.outs[last];
        self.g.clear();
        let mut sq = 0f64;
        for (&yv, &xv) in y.iter().zip(&self.x) {
            let d = yv - xv;
            sq += f64::from(d) * f64::from(d);
            self.g.push((d * scale) * (yv * (1.0 - yv)));
        }
        self.sq_err = sq;
        for li in (0..=last).rev() {
            let l = &layers[li];
            if l.act == Act::Relu {
                for (gv, &o) in self.g.iter_mut().zip(&self.outs[li]) {
                    if o <= 0.0 {
                        *gv = 0.0;
                    }
                }
            }
            let input: &[f32] = if li == 0 { &self.x } else { &self.outs[li - 1] };
            let w = &params[l.w.clone()];
            let (gw, gb) = if l.w.start < l.b.start {
                let (a, b) = self.grad.split_at_mut(l.b.start);
                (&mut a[l.w.clone()], &mut b[..l.b.len()])
            } else {
                let (a, b) = self.grad.split_at_mut(l.w.start);
                (&mut b[..l.w.len()], &mut a[l.b.clone()])
            };
            let need_dx = li > 0;
            self.g_next.resize(if need_dx { n * l.inp } else { 0 }, 0.0);
            match &l.op {
                Op::Linear { i, o } => {
                    gb.fill(0.0);
                    for row in self.g.chunks_exact(*o) {
                        for (s, v) in gb.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                    // dW = g^T x, dx = g W.
                    self.t.resize(o * n, 0.0);
                    transpose_into(&self.g, n, *o, &mut self.t);
                    gemm(&self.t, input, gw, *o, n, *i);
                    if need_dx {
                        gemm(&self.g, w, &mut self.g_next, n, *o, *i);
                    }
                }
                Op::ConvPool { g, pl } => {
                    let plane = g.gh * g.gw;
                    self.conv.clear();
                    self.conv.resize(n * g.o * plane, 0.0);
                    let pooled = plane / 4;
                    for ((d, gp), win) in
                        self.conv.chunks_exact_mut(plane).zip(self.g.chunks_exact(pooled)).zip(self.winners[li].chunks_exact(pooled))
                    {
                        for (&gv, &at) in gp.iter().zip(win) {
                            if at != NO_GRADIENT {
                                d[at as usize] = gv;
                            }
                        }
                    }
                    channel_sums_into(&self.conv, plane, gb);
                    g.grids_into(pl, &self.conv, &mut self.grids);
                    g.wgrad_into(pl, &self.saved[li], &self.grids, n, gw);
                    if need_dx {
                        g.scatter_into(pl, &self.grids, w, &mut self.acc, &mut self.g_next);
                    }
                }
                Op::Deconv { g, pl } => {
                    channel_sums_into(&self.g, g.h * g.w, gb);
                    g.phases_into(pl, &self.g, &mut self.t);
                    g.wgrad_into(pl, &self.t, &self.saved[li], n, gw);
                    if need_dx {
                        g.correlate_into(pl, &self.t, w, &mut self.acc, &mut self.g_next);
                    }
                }
            }
            std::mem::swap(&mut self.g, &mut self.g_next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models;
    use candle_core::Device;

    fn split(n: usize, seed: u64) -> Split {
        let mut rng = models::rng::Rng::new(seed);
        let images = (0..n * Shape::MNIST.pixels()).map(|_| if rng.next_f32() < 0.7 { 0 } else { (rng.next_u64() % 256) as u8 }).collect();
        Split { shape: Shape::MNIST, images, labels: vec![0; n] }
    }

    fn values(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = varmap.data().lock().unwrap();
        let mut out: Vec<_> =
            data.iter().map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Both notebook models: three steps of this trainer against candle's autograd with the
    /// same kernels and Adam. The losses (forward passes) agree bitwise; the weights agree to
    /// float rounding (the batch sum is grouped differently).
    #[test]
    fn matches_the_autograd_path() {
        let data = split(40, 1);
        for arch in [Architecture::notebook_simple(), Architecture::notebook_conv()] {
            let cfg = AdamConfig::new(1e-3, 1e-5);
            let (vm_ref, model) = models::initialise(&arch, Shape::MNIST, 7, &Device::Cpu).unwrap();
            let (vm, _) = models::initialise(&arch, Shape::MNIST, 7, &Device::Cpu).unwrap();
            let mut trainer = Trainer::new(&arch, Shape::MNIST, &vm, cfg).unwrap().expect("the notebook models are supported");
            let mut opt = adam::Adam::new(vm_ref.all_vars(), cfg).unwrap();
            // A full batch of 32 (4 groups), then a partial one of 8 (1 group), then 5.
            for batch in [(0..32).collect::<Vec<_>>(), (32..40).collect(), (3..8).collect()] {
                let x = crate::train::batch_tensor(&data, batch.iter().copied(), &Device::Cpu).unwrap();
                let loss = models::dense::mse(&model.forward(&x).unwrap(), &x).unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
                let ours = trainer.step(&data, &batch);
                let theirs = loss.to_scalar::<f32>().unwrap();
                assert!((ours - theirs).abs() <= 1e-6 * theirs, "{}: loss {ours} vs {theirs}", arch.family());
            }
            trainer.write_to(&vm).unwrap();
            for ((name, a), (_, b)) in values(&vm).iter().zip(values(&vm_ref)) {
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{} {name}: {x} vs {y}", arch.family());
                }
            }
        }
    }

    /// The gradient itself (Adam hides a wrong scale): every parameter's, for a full batch,
    /// against autograd's (whose kernels the finite-difference tests in ops.rs check).
    #[test]
    fn gradients_match_autograd() {
        let data = split(24, 4);
        for arch in [Architecture::notebook_simple(), Architecture::notebook_conv()] {
            let (vm, model) = models::initialise(&arch, Shape::MNIST, 9, &Device::Cpu).unwrap();
            let mut trainer = Trainer::new(&arch, Shape::MNIST, &vm, AdamConfig::new(1e-3, 0.0)).unwrap().unwrap();
            let batch: Vec<usize> = (0..21).collect();
            let (_, groups) = trainer.gradients(&data, &batch);
            let mut ours = trainer.groups[0].grad.clone();
            for g in &trainer.groups[1..groups] {
                ours.iter_mut().zip(&g.grad).for_each(|(a, b)| *a += b);
            }
            let x = crate::train::batch_tensor(&data, batch.iter().copied(), &Device::Cpu).unwrap();
            let grads = models::dense::mse(&model.forward(&x).unwrap(), &x).unwrap().backward().unwrap();
            let data = vm.data().lock().unwrap();
            for (name, range) in &trainer.names {
                let want = grads.get(data[name].as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(scale > 0.0, "{name}: no gradient");
                for (a, b) in ours[range.clone()].iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4 * scale, "{} {name}: {a} vs {b}", arch.family());
                }
            }
        }
    }

    /// The same bits whatever the thread count (the groups, not the threads, fix the order).
    #[test]
    fn the_same_bits_at_one_and_two_threads() {
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
        assert_eq!(run(1), run(2));
    }
}
