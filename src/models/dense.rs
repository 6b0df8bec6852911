//! Dense layers, the sigmoid and the loss with CPU kernels whose result does not depend on the
//! CPU: the same bits on an AVX-512 server and an AVX2 laptop (and on ARM once training flushes
//! subnormals there as it does on x86; see `FlushDenormals` in src/train.rs).
//!
//! - [`linear`]: `x W^T + b`, forward and backward through one fixed-order matmul kernel.
//!   Every output element sums its products in order of the inner index, one multiply and one
//!   add each (no fused multiply-add: Rust never contracts `a * b + c`). The kernel is
//!   vectorised across *independent* outputs only, so SSE2, AVX2 and AVX-512 builds of it (picked
//!   at run time) and the plain scalar loop compute identical bits. Rows are split across
//!   threads, never a sum.
//! - [`sigmoid`]: `1 / (1 + exp(-x))` with `libm`'s `expf` (pure Rust, the same everywhere),
//!   not the platform's libm.
//! - [`mse`]: the mean squared error, summed in order in f64.
//!
//! `LATENTSCOPE_KERNELS=portable` switches every kernel here to the plain scalar loop with the
//! same summation order; a test trains both ways and requires byte-identical weights. Other
//! devices (CUDA, Metal) use candle's ops: reproducible run to run, not bitwise equal to the CPU.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{contiguous_f32, on_cpu_f32};

/// Environment variable: `portable` selects the scalar kernels.
pub const KERNELS_ENV: &str = "LATENTSCOPE_KERNELS";

/// Whether the scalar reference kernels are in use (`LATENTSCOPE_KERNELS=portable`).
pub fn portable() -> bool {
    static PORTABLE: OnceLock<bool> = OnceLock::new();
    *PORTABLE.get_or_init(|| std::env::var(KERNELS_ENV).is_ok_and(|v| v == "portable"))
}

fn dims2(l: &Layout, op: &str) -> Result<(usize, usize)> {
    match l.shape().dims() {
        [a, b] => Ok((*a, *b)),
        d => bail!("{op}: expected a matrix, got shape {d:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The matmul kernel: c (m x n) = a (m x k) . b (k x n), all row-major.

/// Rows and columns of the register block.
const MR: usize = 4;
const NR: usize = 32;

/// The blocked kernel: `MR x NR` accumulators live in registers while the inner index runs;
/// each accumulator sees its products in order, so vectorising across the block's columns
/// changes nothing in the result. Edges use the scalar loop (the same order).
#[inline(always)]
fn blocked(a: &[f32], b: &[f32], c: &mut [f32], rows: std::ops::Range<usize>, k: usize, n: usize) {
    let mut i = rows.start;
    while i < rows.end {
        let mr = MR.min(rows.end - i);
        let mut j = 0;
        while j < n {
            let nr = NR.min(n - j);
            if mr == MR && nr == NR {
                let mut acc = [[0f32; NR]; MR];
                for kk in 0..k {
                    let brow: &[f32; NR] = b[kk * n + j..kk * n + j + NR].try_into().expect("NR columns");
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = a[(i + r) * k + kk];
                        for (o, &bv) in acc.iter_mut().zip(brow) {
                            *o += av * bv;
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let at = (i + r - rows.start) * n + j;
                    c[at..at + NR].copy_from_slice(acc);
                }
            } else {
                for r in i..i + mr {
                    for col in j..j + nr {
                        c[(r - rows.start) * n + col] = dot(a, b, r, col, k, n);
                    }
                }
            }
            j += NR;
        }
        i += MR;
    }
}

/// One output by the scalar loop: the order every kernel here follows.
#[inline(always)]
fn dot(a: &[f32], b: &[f32], i: usize, j: usize, k: usize, n: usize) -> f32 {
    let mut acc = 0f32;
    for kk in 0..k {
        acc += a[i * k + kk] * b[kk * n + j];
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocked_avx512(a: &[f32], b: &[f32], c: &mut [f32], rows: std::ops::Range<usize>, k: usize, n: usize) {
    blocked(a, b, c, rows, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blocked_avx2(a: &[f32], b: &[f32], c: &mut [f32], rows: std::ops::Range<usize>, k: usize, n: usize) {
    blocked(a, b, c, rows, k, n)
}

/// The widest build of the blocked kernel this CPU runs (all give the same bits).
fn blocked_best(a: &[f32], b: &[f32], c: &mut [f32], rows: std::ops::Range<usize>, k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { blocked_avx512(a, b, c, rows, k, n) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { blocked_avx2(a, b, c, rows, k, n) };
        }
    }
    blocked(a, b, c, rows, k, n)
}

/// `a . b` by the fast kernel, rows in parallel when the product is big enough to pay for it,
/// or by the scalar loop (`LATENTSCOPE_KERNELS=portable`).
pub fn matmul_slices(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    if portable() {
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = dot(a, b, i, j, k, n);
            }
        }
        return c;
    }
    const PARALLEL_FROM: usize = 1 << 20; // multiply-adds (below, a thread hand-off costs more)
    if m * k * n >= PARALLEL_FROM && m >= 2 * MR {
        // Blocks of whole register-block rows, one per chunk; outputs never share a sum.
        let rows_per_chunk = MR * (m / MR / rayon::current_num_threads().max(1)).max(1);
        c.par_chunks_mut(rows_per_chunk * n).enumerate().for_each(|(t, chunk)| {
            let start = t * rows_per_chunk;
            blocked_best(a, b, chunk, start..start + chunk.len() / n, k, n);
        });
    } else {
        blocked_best(a, b, &mut c, 0..m, k, n);
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
    const T: usize = 16;
    for i0 in (0..rows).step_by(T) {
        for j0 in (0..cols).step_by(T) {
            for i in i0..(i0 + T).min(rows) {
                for j in j0..(j0 + T).min(cols) {
                    out[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
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
// Sigmoid with a portable exp.

struct Sigmoid;

impl CustomOp1 for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid-libm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "sigmoid")?;
        Ok((CpuStorage::F32(x.iter().map(|&v| 1.0 / (1.0 + libm::expf(-v))).collect()), l.shape().clone()))
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

    fn data(len: usize, salt: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 37 + salt * 11) % 101) as f32 - 50.0) / 17.0).collect()
    }

    #[test]
    fn every_kernel_build_gives_the_scalar_bits() {
        for (m, k, n) in [(32, 784, 128), (33, 70, 37), (128, 32, 784), (5, 9, 18), (1, 3, 1)] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let scalar: Vec<f32> = (0..m * n).map(|o| dot(&a, &b, o / n, o % n, k, n)).collect();
            let mut plain = vec![0f32; m * n];
            blocked(&a, &b, &mut plain, 0..m, k, n);
            let mut best = vec![0f32; m * n];
            blocked_best(&a, &b, &mut best, 0..m, k, n);
            let threaded = matmul_slices(&a, &b, m, k, n);
            #[allow(unused_mut)]
            let mut builds = vec![("blocked", plain), ("widest", best), ("threaded", threaded)];
            #[cfg(target_arch = "x86_64")]
            for (name, has, f) in [
                (
                    "avx2",
                    std::arch::is_x86_feature_detected!("avx2"),
                    blocked_avx2 as unsafe fn(&[f32], &[f32], &mut [f32], std::ops::Range<usize>, usize, usize),
                ),
                ("avx512", std::arch::is_x86_feature_detected!("avx512f"), blocked_avx512),
            ] {
                if has {
                    let mut c = vec![0f32; m * n];
                    // SAFETY: the CPU has the feature, checked above.
                    unsafe { f(&a, &b, &mut c, 0..m, k, n) };
                    builds.push((name, c));
                }
            }
            for (name, got) in &builds {
                assert!(got.iter().zip(&scalar).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} {m}x{k}x{n}");
            }
        }
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
