//! The layers whose candle 0.11 behaviour differs from PyTorch's, or is slow on the CPU, as
//! candle custom ops with PyTorch's semantics (the kernels themselves are [`super::kernels`]):
//!
//! - [`relu`]: gradient 0 at 0 (candle's relu passes the gradient through at 0).
//! - [`max_pool2x2`]: the gradient goes to the first maximum of each window only, as in
//!   PyTorch (candle 0.11 spreads a scaled gradient).
//! - [`conv2d`], [`conv_transpose2d`]: direct CPU kernels for the small channel counts of
//!   these models, fused with the bias, one custom op each with a hand-written backward
//!   (candle's CPU convolutions are slow for these shapes). Other devices use candle's
//!   native kernels; both compute the same function with the same gradients.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::kernels::{add_bias, plane_sums_into, pool_plane, Geometry, NO_GRADIENT};

pub(super) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

pub(super) fn on_cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

// ---------------------------------------------------------------------------------------------
// ReLU with PyTorch's gradient (0 at x == 0).

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-pt"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "relu")?;
        Ok((CpuStorage::F32(x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &ReluBwd)?))
    }
}

/// grad where the output is positive, else 0.
struct ReluBwd;

impl CustomOp2 for ReluBwd {
    fn name(&self) -> &'static str {
        "relu-pt-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let res = contiguous_f32(s1, l1, "relu-bwd")?;
        let grad = contiguous_f32(s2, l2, "relu-bwd")?;
        let out = res.iter().zip(grad).map(|(&r, &g)| if r > 0.0 { g } else { 0.0 }).collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

pub fn relu(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        relu_generic(x)
    }
}

/// Any device: multiply by a mask that carries no gradient.
fn relu_generic(x: &Tensor) -> Result<Tensor> {
    let mask = x.gt(0f64)?.to_dtype(x.dtype())?.detach();
    x.mul(&mask)
}

// ---------------------------------------------------------------------------------------------
// 2x2 max-pool, stride 2, gradient to the first maximum of each window (row-major order).

struct MaxPool {
    /// Apply ReLU before pooling (fused: one pass, one buffer).
    relu: bool,
    /// Filled by the forward pass: for each output, the plane index of the input that won
    /// its window, or `NO_GRADIENT`. The backward pass only scatters.
    winners: Mutex<Option<Arc<Vec<u32>>>>,
}

impl MaxPool {
    fn new(relu: bool) -> Self {
        Self { relu, winners: Mutex::new(None) }
    }

    fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
        let (b, c, h, w) = l.shape().dims4()?;
        if h % 2 != 0 || w % 2 != 0 {
            bail!("max_pool2x2 needs even height and width, got {h}x{w}");
        }
        Ok((b * c, h, w))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool-2x2-pt"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "max_pool2x2")?;
        let (planes, h, w) = Self::dims(l)?;
        let o = (h / 2) * (w / 2);
        let mut out = vec![0f32; planes * o];
        let mut winners = vec![0u32; planes * o];
        out.par_chunks_mut(o)
            .zip(winners.par_chunks_mut(o))
            .zip(x.par_chunks(h * w))
            .for_each(|((out, win), p)| pool_plane(self.relu, p, w, out, win));
        *self.winners.lock().expect("winners lock") = Some(Arc::new(winners));
        let (b, c, _, _) = l.shape().dims4()?;
        Ok((CpuStorage::F32(out), Shape::from((b, c, h / 2, w / 2))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let winners = self.winners.lock().expect("winners lock").clone();
        let Some(winners) = winners else { bail!("max_pool2x2: backward before forward") };
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Unpool { winners, h, w })?))
    }
}

/// Gradient of the pooled output -> gradient of the input, through the recorded winners.
struct Unpool {
    winners: Arc<Vec<u32>>,
    h: usize,
    w: usize,
}

impl CustomOp1 for Unpool {
    fn name(&self) -> &'static str {
        "max-pool-2x2-pt-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s, l, "max_pool2x2-bwd")?;
        let (b, c, oh, ow) = l.shape().dims4()?;
        if (oh * 2, ow * 2) != (self.h, self.w) || g.len() != self.winners.len() {
            bail!("max_pool2x2-bwd: gradient {:?} does not match the forward pass", l.shape());
        }
        let plane = self.h * self.w;
        let mut out = vec![0f32; b * c * plane];
        out.par_chunks_mut(plane).zip(g.par_chunks(oh * ow).zip(self.winners.par_chunks(oh * ow))).for_each(|(out, (g, win))| {
            for (&gv, &at) in g.iter().zip(win) {
                if at != NO_GRADIENT {
                    out[at as usize] = gv;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, self.h, self.w))))
    }
}

pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(MaxPool::new(false))
    } else {
        max_pool2x2_generic(x)
    }
}

/// `max_pool2x2(relu(x))` in one pass, with the same values and gradients.
pub fn relu_max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(MaxPool::new(true))
    } else {
        max_pool2x2_generic(&relu_generic(x)?)
    }
}

/// Any device: select the first maximum of each window with a mask that carries no gradient.
fn max_pool2x2_generic(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let windows = x.reshape((b, c, h / 2, 2, w / 2, 2))?.permute((0, 1, 2, 4, 3, 5))?.contiguous()?.reshape((b, c, h / 2, w / 2, 4))?;
    let max = windows.max_keepdim(D::Minus1)?;
    let is_max = windows.broadcast_ge(&max)?.to_dtype(x.dtype())?;
    let first = is_max.mul(&is_max.cumsum(D::Minus1)?.eq(1f64)?.to_dtype(x.dtype())?)?.detach();
    windows.mul(&first)?.sum(D::Minus1)
}

impl Geometry {
    fn check(&self, what: &str, l: &Layout, dims: (usize, usize, usize)) -> Result<usize> {
        let (n, a, b, c) = l.shape().dims4()?;
        if (a, b, c) != dims {
            bail!("{what}: shape {:?} does not match {self:?}", l.shape());
        }
        Ok(n)
    }
}

/// [N, Ch, H, W] -> [Ch]: the sum of each channel (the bias gradient).
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "channel-sum")?;
        let (_, ch, h, w) = l.shape().dims4()?;
        let mut sums = vec![0f32; x.len() / (h * w)];
        plane_sums_into(x, h * w, &mut sums);
        let mut out = vec![0f32; ch];
        for (i, v) in sums.iter().enumerate() {
            out[i % ch] += v;
        }
        Ok((CpuStorage::F32(out), Shape::from(ch)))
    }
}

/// Which half of the pair a kernel op computes.
#[derive(Clone, Copy)]
enum Kernel {
    /// (image, weight) -> grid
    Correlate,
    /// (grid, weight) -> image
    Scatter,
    /// (image, grid) -> weight
    Wgrad,
}

/// One kernel without autograd (used inside the backward passes).
struct KernelOp(Geometry, Kernel);

impl CustomOp2 for KernelOp {
    fn name(&self) -> &'static str {
        "conv-kernel"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let a = contiguous_f32(s1, l1, "conv-kernel")?;
        let b = contiguous_f32(s2, l2, "conv-kernel")?;
        let (out, shape) = match self.1 {
            Kernel::Correlate => {
                let n = g.check("correlate", l1, (g.c, g.h, g.w))?;
                (g.correlate(a, b, n), Shape::from((n, g.o, g.gh, g.gw)))
            }
            Kernel::Scatter => {
                let n = g.check("scatter", l1, (g.o, g.gh, g.gw))?;
                (g.scatter(a, b, n), Shape::from((n, g.c, g.h, g.w)))
            }
            Kernel::Wgrad => {
                let n = g.check("wgrad", l1, (g.c, g.h, g.w))?;
                (g.wgrad(a, b, n), Shape::from((g.o, g.c, g.k, g.k)))
            }
        };
        Ok((CpuStorage::F32(out), shape))
    }
}

/// Conv2d (image -> grid, bias on the grid) or ConvTranspose2d (grid -> image, bias on the
/// image), with autograd.
struct ConvOp {
    geometry: Geometry,
    transposed: bool,
}

impl candle_core::CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        if self.transposed {
            "conv-transpose2d-direct"
        } else {
            "conv2d-direct"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let (mut out, shape, plane) = if self.transposed {
            let n = g.check(self.name(), l1, (g.o, g.gh, g.gw))?;
            (g.scatter(x, w, n), Shape::from((n, g.c, g.h, g.w)), g.image_plane())
        } else {
            let n = g.check(self.name(), l1, (g.c, g.h, g.w))?;
            (g.correlate(x, w, n), Shape::from((n, g.o, g.gh, g.gw)), g.grid_plane())
        };
        add_bias(&mut out, b, plane);
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry;
        let grad = grad.contiguous()?;
        let (gx, gw) = if self.transposed {
            (grad.apply_op2_no_bwd(w, &KernelOp(g, Kernel::Correlate))?, grad.apply_op2_no_bwd(x, &KernelOp(g, Kernel::Wgrad))?)
        } else {
            (grad.apply_op2_no_bwd(w, &KernelOp(g, Kernel::Scatter))?, x.apply_op2_no_bwd(&grad, &KernelOp(g, Kernel::Wgrad))?)
        };
        let gb = grad.apply_op1_no_bwd(&ChannelSum)?;
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// PyTorch's Conv2d: x [B, C, H, W], weight [O, C, k, k], bias [O] -> [B, O, OH, OW].
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    if !on_cpu_f32(x) {
        return x.conv2d(weight, pad, stride, 1, 1)?.broadcast_add(&bias.reshape((1, o, 1, 1))?);
    }
    let (gh, gw) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    let geometry = Geometry { c, h, w, o, gh, gw, k, stride, pad };
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, ConvOp { geometry, transposed: false })
}

/// PyTorch's ConvTranspose2d: x [B, Cin, H, W], weight [Cin, Cout, k, k], bias [Cout]
/// -> [B, Cout, (H-1)*stride - 2*pad + k + output_padding, ...].
pub fn conv_transpose2d(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, pad: usize, output_padding: usize) -> Result<Tensor> {
    let (_, cin, gh, gw) = x.dims4()?;
    let (_, cout, k, _) = weight.dims4()?;
    if !on_cpu_f32(x) {
        return x.conv_transpose2d(weight, pad, output_padding, stride, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?);
    }
    let (h, w) = ((gh - 1) * stride + k + output_padding - 2 * pad, (gw - 1) * stride + k + output_padding - 2 * pad);
    let geometry = Geometry { c: cout, h, w, o: cin, gh, gw, k, stride, pad };
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, ConvOp { geometry, transposed: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn relu_gradient_is_zero_at_zero() {
        let x = Var::from_tensor(&t(&[-1.0, 0.0, 2.0], &[3])).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 0.0, 2.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [0.0, 0.0, 1.0]);
    }

    #[test]
    fn max_pool_gradient_goes_to_first_maximum() {
        // Window 1: all equal (blank background) -> first element. Window 2: max at (1,0).
        let x = Var::from_tensor(&t(&[0., 0., 1., 2., 0., 0., 5., 2.], &[1, 1, 2, 4])).unwrap();
        let y = max_pool2x2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [0.0, 5.0]);
        let g = (y.affine(3.0, 0.0).unwrap()).sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gx, [3., 0., 0., 0., 0., 0., 3., 0.]);
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n: usize = shape.iter().product();
        t(&(0..n).map(|_| rng.symmetric(1.0)).collect::<Vec<_>>(), shape)
    }

    fn allclose(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn direct_convolutions_match_candle_forward() {
        let x = random(&[2, 3, 6, 6], 1);
        let w = random(&[4, 3, 3, 3], 2);
        let b = random(&[4], 3);
        let ours = conv2d(&x, &w, &b, 1, 1).unwrap();
        let native = x.conv2d(&w, 1, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap()).unwrap();
        allclose(&ours, &native, 1e-5);

        let x = random(&[2, 4, 3, 3], 4);
        let w = random(&[4, 2, 3, 3], 5);
        let b = random(&[2], 6);
        let ours = conv_transpose2d(&x, &w, &b, 2, 1, 1).unwrap();
        assert_eq!(ours.dims(), [2, 2, 6, 6]);
        let native = x.conv_transpose2d(&w, 1, 1, 2, 1).unwrap().broadcast_add(&b.reshape((1, 2, 1, 1)).unwrap()).unwrap();
        allclose(&ours, &native, 1e-5);
    }

    /// Central finite differences of `f` (scalar) against autograd, for every input element.
    fn check_gradient(f: &dyn Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
        let vars: Vec<Var> = inputs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let grads = f(&tensors).backward().unwrap();
        for (k, x) in inputs.iter().enumerate() {
            let analytic = grads.get(&tensors[k]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let h = 1e-2f32;
            for i in 0..base.len() {
                let eval = |delta: f32| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let mut args = inputs.to_vec();
                    args[k] = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                    f(&args).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
                };
                let numeric = ((eval(h) - eval(-h)) / (2.0 * h as f64)) as f32;
                assert!(
                    (numeric - analytic[i]).abs() <= 2e-2 * (1.0 + numeric.abs()),
                    "input {k} element {i}: finite difference {numeric}, autograd {}",
                    analytic[i]
                );
            }
        }
    }

    /// A fixed random projection turns an output into a scalar with non-uniform gradients.
    fn project(y: &Tensor, seed: u64) -> Tensor {
        y.mul(&random(y.dims(), seed)).unwrap().sum_all().unwrap()
    }

    #[test]
    fn conv2d_gradients_match_finite_differences() {
        let f = |a: &[Tensor]| project(&conv2d(&a[0], &a[1], &a[2], 1, 1).unwrap(), 9);
        check_gradient(&f, &[random(&[2, 2, 5, 5], 10), random(&[3, 2, 3, 3], 11), random(&[3], 12)]);
    }

    #[test]
    fn conv_transpose2d_gradients_match_finite_differences() {
        let f = |a: &[Tensor]| project(&conv_transpose2d(&a[0], &a[1], &a[2], 2, 1, 1).unwrap(), 13);
        check_gradient(&f, &[random(&[2, 3, 3, 3], 14), random(&[3, 2, 3, 3], 15), random(&[2], 16)]);
    }

    #[test]
    fn max_pool_and_relu_gradients_match_finite_differences() {
        // Random inputs have no ties, so the maximum is unique and the function is smooth
        // near the sample point; values sit away from 0 so ReLU's kink is not crossed.
        let f = |a: &[Tensor]| project(&max_pool2x2(&relu(&a[0]).unwrap()).unwrap(), 17);
        let x = random(&[2, 2, 4, 6], 18);
        let x = (x.sign().unwrap() * 0.2 + x).unwrap();
        check_gradient(&f, std::slice::from_ref(&x));
        let fused = |a: &[Tensor]| project(&relu_max_pool2x2(&a[0]).unwrap(), 17);
        check_gradient(&fused, &[x]);
    }

    #[test]
    fn generic_device_paths_agree_with_cpu_kernels() {
        // The composite versions (used on CUDA/Metal) against the CPU kernels, values and
        // gradients, on data with ties (blank regions) and exact zeros.
        let mut v = random(&[2, 3, 4, 4], 19).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for x in v.iter_mut().step_by(3) {
            *x = 0.0;
        }
        let x = Var::from_tensor(&t(&v, &[2, 3, 4, 4])).unwrap();
        let cpu = project(&max_pool2x2(&relu(x.as_tensor()).unwrap()).unwrap(), 20);
        let g_cpu = cpu.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        let fused = project(&relu_max_pool2x2(x.as_tensor()).unwrap(), 20);
        let g_fused = fused.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        allclose(&cpu.reshape(1).unwrap(), &fused.reshape(1).unwrap(), 0.0);
        allclose(&g_cpu, &g_fused, 0.0);
        let generic = |x: &Tensor| max_pool2x2_generic(&relu_generic(x).unwrap()).unwrap();
        let gen = project(&generic(x.as_tensor()), 20);
        let g_gen = gen.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        allclose(&cpu.reshape(1).unwrap(), &gen.reshape(1).unwrap(), 1e-6);
        allclose(&g_cpu, &g_gen, 0.0);
    }
}
