//! Dense layers, the sigmoid and the loss as candle ops (the autograd path: evaluation,
//! encoding, and training on other devices) with CPU kernels whose result does not depend on
//! the CPU: the same bits on an AVX-512 server and an AVX2 laptop (and on ARM, where training
//! flushes subnormals as on x86, up to a rare rounding corner; see `FlushDenormals` in
//! src/train.rs). Training on the
//! CPU goes through src/models/cpu.rs, which uses the same kernels without autograd.
//!
//! - [`linear`]: `x W^T + b`, forward and backward through [`super::gemm`]: every output sums
//!   its products in order of the inner index, one multiply and one add each, whatever the
//!   SIMD width. Rows are split across threads, never a sum.
//! - [`sigmoid`]: `1 / (1 + exp(-x))` with our own [`expf`] (plain IEEE arithmetic, the same
//!   everywhere, and vectorised), not the platform's libm.
//! - [`mse`]: the mean squared error, summed in order in f64.
//!
//! `LATENTSCOPE_KERNELS=portable` switches every kernel to the plain loops with the same
//! summation order; a test trains both ways and requires byte-identical weights. Other
//! devices (CUDA, Metal) use candle's ops: reproducible run to run, not bitwise equal to the CPU.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{gemm, transpose_into};
pub use super::gemm::{portable, KERNELS_ENV};
use super::ops::{contiguous_f32, on_cpu_f32};

fn dims2(l: &Layout, op: &str) -> Result<(usize, usize)> {
    match l.shape().dims() {
        [a, b] => Ok((*a, *b)),
        d => bail!("{op}: expected a matrix, got shape {d:?}"),
    }
}

/// `a . b` by [`gemm`], blocks of rows in parallel when the product is big enough to pay for
/// the hand-off (outputs never share a sum, so the bits are the same either way).
pub fn matmul_slices(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    const PARALLEL_FROM: usize = 1 << 20; // multiply-adds
    if m * k * n >= PARALLEL_FROM && m >= 8 && !portable() {
        let rows_per_chunk = 4 * (m / 4 / rayon::current_num_threads().max(1)).max(1);
        c.par_chunks_mut(rows_per_chunk * n).enumerate().for_each(|(t, chunk)| {
            let start = t * rows_per_chunk;
            gemm(&a[start * k..], b, chunk, chunk.len() / n, k, n);
        });
    } else {
        gemm(a, b, &mut c, m, k, n);
    }
    c
}

/// `a . b` of two contiguous CPU matrices, no gradient.
struct MatMul;

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "matmul-fixed"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let ((m, k), (k2, n)) = (dims2(l1, "matmul")?, dims2(l2, "matmul")?);
        if k != k2 {
            bail!("matmul: {m}x{k} times {k2}x{n}");
        }
        let c = matmul_slices(contiguous_f32(s1, l1, "matmul")?, contiguous_f32(s2, l2, "matmul")?, m, k, n);
        Ok((CpuStorage::F32(c), Shape::from((m, n))))
    }
}

// ---------------------------------------------------------------------------------------------
// Linear layer: y = x W^T + b, W in PyTorch's (out, in) layout, bias added after the sum.
//
// The kernel wants its right operand row-major over the summed index. Rather than transposing
// the weights every step, the forward computes y^T = W x^T (transposing the batch-sized
// activations, in and out), and the backward needs no weight transpose at all:
// dx = grad W, dW = grad^T x. Each output still sums the same products in the same order.

/// `src` (rows x cols, row-major) transposed.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    transpose_into(src, rows, cols, &mut out);
    out
}

struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear-fixed"
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
        let ((m, k), (n, k2)) = (dims2(l1, "linear")?, dims2(l2, "linear")?);
        let bias = contiguous_f32(s3, l3, "linear")?;
        if k != k2 || bias.len() != n {
            bail!("linear: {m}x{k} input, {n}x{k2} weights, {} biases", bias.len());
        }
        let xt = transpose(contiguous_f32(s1, l1, "linear")?, m, k);
        let yt = matmul_slices(contiguous_f32(s2, l2, "linear")?, &xt, n, k, m);
        let mut y = transpose(&yt, n, m);
        for row in y.chunks_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // The first layer's input (the batch) needs no gradient.
        let dx = if x.track_op() { Some(grad.apply_op2_no_bwd(w, &MatMul)?) } else { None };
        let dw = grad.apply_op2_no_bwd(x, &WeightGrad)?;
        let db = grad.apply_op1_no_bwd(&ColumnSum)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `grad^T x`: the weight gradient in (out, in) layout.
struct WeightGrad;

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "linear-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let ((m, n), (m2, k)) = (dims2(l1, "weight-grad")?, dims2(l2, "weight-grad")?);
        if m != m2 {
            bail!("weight-grad: {m}x{n} gradient for a {m2}x{k} input");
        }
        let gt = transpose(contiguous_f32(s1, l1, "weight-grad")?, m, n);
        Ok((CpuStorage::F32(matmul_slices(&gt, contiguous_f32(s2, l2, "weight-grad")?, n, m, k)), Shape::from((n, k))))
    }
}

/// Sum over the rows of a matrix, each column in row order.
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, n) = dims2(l, "column-sum")?;
        let g = contiguous_f32(s, l, "column-sum")?;
        let mut out = vec![0f32; n];
        for row in g.chunks(n) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

/// `x W^T + b` for `x` of shape (batch, in), `w` (out, in), `b` (out): PyTorch's `nn.Linear`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
    } else {
        x.matmul(&w.t()?)?.broadcast_add(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Sigmoid with our own exp.

/// `e^x` in plain IEEE arithmetic (Cephes' `expf`: round `x / ln 2` to an integer `n` by the
/// 1.5 * 2^23 trick, reduce by `n ln 2` in two parts, a degree-6 polynomial, scale by `2^n`
/// through the exponent bits), no fused multiply-add and no branch, so that a vector build
/// and the scalar loop give the same bits on every CPU, where a platform's `expf` need not.
/// Within 2 ulp of the exact value; the input is clamped to [-87.3, 88.3].
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    let e = (p * (r * r) + r) + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `out[i] = 1 / (1 + e^-x[i])`.
pub fn sigmoid_into(x: &[f32], out: &mut [f32]) {
    #[inline(always)]
    fn body(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = 1.0 / (1.0 + expf(-v));
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32], out: &mut [f32]) {
            body(x, out)
        }
        if !portable() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2(x, out) };
        }
    }
    body(x, out)
}

struct Sigmoid;

impl CustomOp1 for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid-portable"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "sigmoid")?;
        let mut out = vec![0f32; x.len()];
        sigmoid_into(x, &mut out);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d sigmoid = s (1 - s), element by element.
        Ok(Some(grad.mul(&res.mul(&res.affine(-1.0, 1.0)?)?)?))
    }
}

pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(Sigmoid)
    } else {
        candle_nn::ops::sigmoid(x)
    }
}

// ---------------------------------------------------------------------------------------------
// Mean squared error, summed in order in f64.

struct Mse;

impl CustomOp2 for Mse {
    fn name(&self) -> &'static str {
        "mse-ordered"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, x) = (contiguous_f32(s1, l1, "mse")?, contiguous_f32(s2, l2, "mse")?);
        if y.len() != x.len() || y.is_empty() {
            bail!("mse: {} predictions for {} targets", y.len(), x.len());
        }
        let sum: f64 = y.iter().zip(x).map(|(&a, &b)| f64::from(a - b) * f64::from(a - b)).sum();
        Ok((CpuStorage::F32(vec![(sum / y.len() as f64) as f32]), Shape::from(())))
    }

    fn bwd(&self, y: &Tensor, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d/dy mean((y - x)^2) = 2 (y - x) / n.
        let scale = 2.0 / y.elem_count() as f64;
        let dy = y.sub(x)?.affine(scale, 0.0)?.broadcast_mul(grad)?;
        Ok((Some(dy.clone()), Some(dy.neg()?)))
    }
}

/// `mean((y - x)^2)` over every element.
pub fn mse(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(y) {
        y.contiguous()?.apply_op2(&x.contiguous()?, Mse)
    } else {
        y.sub(x)?.sqr()?.mean_all()
    }
}

/// The sum of squared differences over every element, in order in f64 (the test MSE's
/// numerator).
pub fn squared_error_sum(y: &Tensor, x: &Tensor) -> Result<f64> {
    if on_cpu_f32(y) {
        let (y, x) = (y.flatten_all()?.to_vec1::<f32>()?, x.flatten_all()?.to_vec1::<f32>()?);
        Ok(y.iter().zip(&x).map(|(&a, &b)| f64::from(a - b) * f64::from(a - b)).sum())
    } else {
        y.sub(x)?.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::models::gemm::test_data as data;

    #[test]
    fn expf_is_within_two_ulp_of_libm_and_the_same_at_every_width() {
        let xs: Vec<f32> = (-87_000..88_000).map(|i| i as f32 / 1000.0 + 0.000_37).collect();
        let mut worst = 0u32;
        for &x in &xs {
            let (ours, reference) = (expf(x), libm::expf(x));
            worst = worst.max(ours.to_bits().abs_diff(reference.to_bits()));
        }
        assert!(worst <= 2, "expf is {worst} ulp from libm");
        assert_eq!(expf(0.0), 1.0);
        assert!(expf(-1000.0) > 0.0 && expf(1000.0).is_finite() && expf(f32::NAN).is_nan());
        // The vector build (sigmoid_into) against the scalar function, element by element.
        let mut out = vec![0f32; xs.len()];
        sigmoid_into(&xs, &mut out);
        assert!(xs.iter().zip(&out).all(|(&x, o)| (1.0 / (1.0 + expf(-x))).to_bits() == o.to_bits()));
    }

    #[test]
    fn linear_sigmoid_and_mse_match_candle_and_their_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_vec(data(6 * 5, 3), (6, 5), &dev).unwrap();
        let w = Var::from_vec(data(4 * 5, 4), (4, 5), &dev).unwrap();
        let b = Var::from_vec(data(4, 5), 4, &dev).unwrap();
        let t = Tensor::from_vec(data(6 * 4, 6).iter().map(|v| v.abs() / 3.0).collect::<Vec<_>>(), (6, 4), &dev).unwrap();
        let ours = mse(&sigmoid(&linear(&x, &w, &b).unwrap()).unwrap(), &t).unwrap();
        let reference = candle_nn::ops::sigmoid(&x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap())
            .unwrap()
            .sub(&t)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let (g1, g2) = (ours.backward().unwrap(), reference.backward().unwrap());
        let close = |a: &Tensor, b: &Tensor| {
            let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
        };
        assert!(close(&ours, &reference));
        for v in [&x, &w, &b] {
            assert!(close(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap()));
        }
    }
}
