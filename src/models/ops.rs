//! The layers whose candle 0.11 behaviour differs from PyTorch's, or is slow on the CPU,
//! rewritten with PyTorch's semantics:
//!
//! - [`relu`]: gradient 0 at 0 (candle's relu passes the gradient through at 0).
//! - [`max_pool2x2`]: the gradient goes to the first maximum of each window only, as in
//!   PyTorch (candle 0.11 spreads a scaled gradient).
//! - [`conv2d`], [`conv_transpose2d`]: lowered to im2col/col2im + one matmul on the CPU
//!   (candle's direct CPU kernels are slow for these shapes). Other devices use candle's
//!   native kernels; both compute the same function with the same gradients.
//!
//! Every CPU kernel here is single-threaded and sums in a fixed order, so results are
//! bitwise reproducible.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

fn on_cpu_f32(x: &Tensor) -> bool {
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

struct MaxPool;

impl MaxPool {
    fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
        let (b, c, h, w) = l.shape().dims4()?;
        if h % 2 != 0 || w % 2 != 0 {
            bail!("max_pool2x2 needs even height and width, got {h}x{w}");
        }
        Ok((b * c, h, w))
    }

    /// Index (within the plane) of the first maximum of window (oy, ox).
    #[inline]
    fn argmax(p: &[f32], w: usize, oy: usize, ox: usize) -> usize {
        let i0 = 2 * oy * w + 2 * ox;
        let mut best = i0;
        for i in [i0 + 1, i0 + w, i0 + w + 1] {
            if p[i] > p[best] || p[i].is_nan() {
                best = i;
            }
        }
        best
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool-2x2-pt"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "max_pool2x2")?;
        let (planes, h, w) = Self::dims(l)?;
        let (oh, ow) = (h / 2, w / 2);
        let mut out = Vec::with_capacity(planes * oh * ow);
        for p in x.chunks_exact(h * w) {
            for oy in 0..oh {
                for ox in 0..ow {
                    out.push(p[Self::argmax(p, w, oy, ox)]);
                }
            }
        }
        let (b, c, _, _) = l.shape().dims4()?;
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolBwd)?))
    }
}

/// (input, grad of output) -> grad of input.
struct MaxPoolBwd;

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "max-pool-2x2-pt-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "max_pool2x2-bwd")?;
        let g = contiguous_f32(s2, l2, "max_pool2x2-bwd")?;
        let (_, h, w) = MaxPool::dims(l1)?;
        let (oh, ow) = (h / 2, w / 2);
        let mut out = vec![0f32; x.len()];
        for ((p, gp), op) in x.chunks_exact(h * w).zip(g.chunks_exact(oh * ow)).zip(out.chunks_exact_mut(h * w)) {
            for oy in 0..oh {
                for ox in 0..ow {
                    op[MaxPool::argmax(p, w, oy, ox)] += gp[oy * ow + ox];
                }
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(MaxPool)
    } else {
        max_pool2x2_generic(x)
    }
}

/// Any device: select the first maximum of each window with a mask that carries no gradient.
fn max_pool2x2_generic(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let windows = x
        .reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((b, c, h / 2, w / 2, 4))?;
    let max = windows.max_keepdim(D::Minus1)?;
    let is_max = windows.broadcast_ge(&max)?.to_dtype(x.dtype())?;
    let first = is_max.mul(&is_max.cumsum(D::Minus1)?.eq(1f64)?.to_dtype(x.dtype())?)?.detach();
    windows.mul(&first)?.sum(D::Minus1)
}

// ---------------------------------------------------------------------------------------------
// im2col / col2im: the two adjoint halves of a convolution.

/// An image of `channels x img_h x img_w` seen through a k x k window moved with `stride`
/// over a zero-padded border of `pad`, giving a `grid_h x grid_w` grid of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub channels: usize,
    pub img_h: usize,
    pub img_w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub grid_h: usize,
    pub grid_w: usize,
}

impl Geometry {
    fn row(&self) -> usize {
        self.channels * self.k * self.k
    }

    fn cells(&self) -> usize {
        self.grid_h * self.grid_w
    }

    /// Calls `f(col_index_in_row, image_index_in_plane_stack)` for every in-bounds tap of grid
    /// cell (gy, gx); the image index is relative to the start of one sample.
    #[inline]
    fn taps(&self, gy: usize, gx: usize, mut f: impl FnMut(usize, usize)) {
        let kk = self.k * self.k;
        for ky in 0..self.k {
            let iy = (gy * self.stride + ky) as isize - self.pad as isize;
            if iy < 0 || iy >= self.img_h as isize {
                continue;
            }
            for kx in 0..self.k {
                let ix = (gx * self.stride + kx) as isize - self.pad as isize;
                if ix < 0 || ix >= self.img_w as isize {
                    continue;
                }
                let base = iy as usize * self.img_w + ix as usize;
                for c in 0..self.channels {
                    f(c * kk + ky * self.k + kx, c * self.img_h * self.img_w + base);
                }
            }
        }
    }
}

/// [B, C, H, W] -> [B * grid_h * grid_w, C * k * k].
struct Im2Col(Geometry);
/// [B * grid_h * grid_w, C * k * k] -> [B, C, H, W], summing overlapping taps.
struct Col2Im(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = contiguous_f32(s, l, "im2col")?;
        let (b, c, h, w) = l.shape().dims4()?;
        if (c, h, w) != (g.channels, g.img_h, g.img_w) {
            bail!("im2col: input {:?} does not match {g:?}", l.shape());
        }
        let (row, plane) = (g.row(), c * h * w);
        let mut out = vec![0f32; b * g.cells() * row];
        for (n, img) in x.chunks_exact(plane).enumerate() {
            for gy in 0..g.grid_h {
                for gx in 0..g.grid_w {
                    let r = &mut out[((n * g.grid_h + gy) * g.grid_w + gx) * row..][..row];
                    g.taps(gy, gx, |col, i| r[col] = img[i]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b * g.cells(), row))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let cols = contiguous_f32(s, l, "col2im")?;
        let (rows, row) = l.shape().dims2()?;
        if row != g.row() || rows % g.cells() != 0 {
            bail!("col2im: input {:?} does not match {g:?}", l.shape());
        }
        let b = rows / g.cells();
        let plane = g.channels * g.img_h * g.img_w;
        let mut out = vec![0f32; b * plane];
        for (n, img) in out.chunks_exact_mut(plane).enumerate() {
            for gy in 0..g.grid_h {
                for gx in 0..g.grid_w {
                    let r = &cols[((n * g.grid_h + gy) * g.grid_w + gx) * row..][..row];
                    g.taps(gy, gx, |col, i| img[i] += r[col]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, g.channels, g.img_h, g.img_w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2Col(self.0))?))
    }
}

/// PyTorch's Conv2d: x [B, C, H, W], weight [O, C, k, k], bias [O] -> [B, O, OH, OW].
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, _, k, _) = weight.dims4()?;
    if !on_cpu_f32(x) {
        return x.conv2d(weight, pad, stride, 1, 1)?.broadcast_add(&bias.reshape((1, o, 1, 1))?);
    }
    let (gh, gw) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    let geometry = Geometry { channels: c, img_h: h, img_w: w, k, stride, pad, grid_h: gh, grid_w: gw };
    let cols = x.contiguous()?.apply_op1(Im2Col(geometry))?;
    let out = cols.matmul(&weight.reshape((o, c * k * k))?.t()?)?.broadcast_add(bias)?;
    out.reshape((b, gh, gw, o))?.permute((0, 3, 1, 2))?.contiguous()
}

/// PyTorch's ConvTranspose2d: x [B, Cin, H, W], weight [Cin, Cout, k, k], bias [Cout]
/// -> [B, Cout, (H-1)*stride - 2*pad + k + output_padding, ...].
pub fn conv_transpose2d(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, pad: usize, output_padding: usize) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (_, cout, k, _) = weight.dims4()?;
    if !on_cpu_f32(x) {
        return x.conv_transpose2d(weight, pad, output_padding, stride, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?);
    }
    let (oh, ow) = ((h - 1) * stride + k + output_padding - 2 * pad, (w - 1) * stride + k + output_padding - 2 * pad);
    let geometry = Geometry { channels: cout, img_h: oh, img_w: ow, k, stride, pad, grid_h: h, grid_w: w };
    let rows = x.permute((0, 2, 3, 1))?.contiguous()?.reshape((b * h * w, cin))?;
    let cols = rows.matmul(&weight.reshape((cin, cout * k * k))?)?;
    cols.apply_op1(Col2Im(geometry))?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)
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
        let mut rng = crate::models::rng::Rng::new(seed);
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
    fn lowered_convolutions_match_candle_forward() {
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
        check_gradient(&f, &[x]);
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
        let generic = |x: &Tensor| max_pool2x2_generic(&relu_generic(x).unwrap()).unwrap();
        let gen = project(&generic(x.as_tensor()), 20);
        let g_gen = gen.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        allclose(&cpu.reshape(1).unwrap(), &gen.reshape(1).unwrap(), 1e-6);
        allclose(&g_cpu, &g_gen, 0.0);
    }
}
