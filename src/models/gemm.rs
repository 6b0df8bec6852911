//! The one matrix product every CPU training kernel uses: `c = a . b` (`a` m x k, `b` k x n,
//! `c` m x n, all row-major) whose bits do not depend on the CPU.
//!
//! Every output element sums its products in order of the inner index, one multiply and one
//! add each (no fused multiply-add: Rust never contracts `a * b + c`). The kernel is
//! vectorised across *independent* outputs only (register tiles of rows x columns), so the
//! SSE2, AVX2 and AVX-512 builds of it, picked at run time, and the plain scalar loop
//! (`LATENTSCOPE_KERNELS=portable`) compute identical bits.

use std::sync::OnceLock;

/// Environment variable: `portable` selects the scalar kernels.
pub const KERNELS_ENV: &str = "LATENTSCOPE_KERNELS";

/// Whether the scalar reference kernels are in use (`LATENTSCOPE_KERNELS=portable`).
pub fn portable() -> bool {
    static PORTABLE: OnceLock<bool> = OnceLock::new();
    *PORTABLE.get_or_init(|| std::env::var(KERNELS_ENV).is_ok_and(|v| v == "portable"))
}

/// One output by the scalar loop: the order every build follows.
#[inline(always)]
fn dot(a: &[f32], b: &[f32], i: usize, j: usize, k: usize, n: usize) -> f32 {
    let mut acc = 0f32;
    for kk in 0..k {
        acc += a[i * k + kk] * b[kk * n + j];
    }
    acc
}

/// An `MR x NR` block of `c` at (i, j): the accumulators live in registers while the inner
/// index runs, each seeing its products in order.
#[inline(always)]
fn tile<const MR: usize, const NR: usize>(a: &[f32], b: &[f32], c: &mut [f32], i: usize, j: usize, k: usize, n: usize) {
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
        c[(i + r) * n + j..][..NR].copy_from_slice(acc);
    }
}

/// Rows `i..i + MR` of `c`: wide column tiles, then narrow ones, then single columns.
#[inline(always)]
fn rows<const MR: usize>(a: &[f32], b: &[f32], c: &mut [f32], i: usize, k: usize, n: usize) {
    let mut j = 0;
    while j + 32 <= n {
        tile::<MR, 32>(a, b, c, i, j, k, n);
        j += 32;
    }
    while j + 8 <= n {
        tile::<MR, 8>(a, b, c, i, j, k, n);
        j += 8;
    }
    while j < n {
        tile::<MR, 1>(a, b, c, i, j, k, n);
        j += 1;
    }
}

#[inline(always)]
fn blocked(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    let mut i = 0;
    if n < 32 {
        // Narrow products (the batch-sized side of a layer): more rows per tile keep enough
        // independent sums in flight.
        while i + 8 <= m {
            rows::<8>(a, b, c, i, k, n);
            i += 8;
        }
    }
    while i + 4 <= m {
        rows::<4>(a, b, c, i, k, n);
        i += 4;
    }
    while i < m {
        rows::<1>(a, b, c, i, k, n);
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocked_avx512(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    blocked(a, b, c, m, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blocked_avx2(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    blocked(a, b, c, m, k, n)
}

/// The plain scalar loop (`LATENTSCOPE_KERNELS=portable`).
fn scalar(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = dot(a, b, i, j, k, n);
        }
    }
}

/// `c = a . b`, overwriting `c`: the widest build this CPU runs, or the scalar loop.
pub fn gemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm: {m}x{k} . {k}x{n} on short slices");
    if portable() {
        return scalar(a, b, c, m, k, n);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { blocked_avx512(a, b, c, m, k, n) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { blocked_avx2(a, b, c, m, k, n) };
        }
    }
    blocked(a, b, c, m, k, n)
}

/// `src` (rows x cols, row-major) transposed into `out` (cols x rows).
pub fn transpose_into(src: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
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
}

/// Deterministic test values in about [-3, 3], varied by `salt` (for the kernel tests here and
/// in dense.rs).
#[cfg(test)]
pub(super) fn test_data(len: usize, salt: usize) -> Vec<f32> {
    (0..len).map(|i| (((i * 37 + salt * 11) % 101) as f32 - 50.0) / 17.0).collect()
}

#[cfg(test)]
mod tests {
    use super::test_data as data;
    use super::*;

    #[test]
    fn every_build_gives_the_scalar_bits() {
        for (m, k, n) in [(32, 784, 128), (33, 70, 37), (128, 8, 784), (128, 784, 8), (9, 5, 18), (1, 3, 1), (7, 16, 6)] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let mut want = vec![0f32; m * n];
            scalar(&a, &b, &mut want, m, k, n);
            let mut plain = vec![0f32; m * n];
            blocked(&a, &b, &mut plain, m, k, n);
            let mut best = vec![0f32; m * n];
            gemm(&a, &b, &mut best, m, k, n);
            #[allow(unused_mut)]
            let mut builds = vec![("blocked", plain), ("widest", best)];
            #[cfg(target_arch = "x86_64")]
            for (name, has, f) in [
                (
                    "avx2",
                    std::arch::is_x86_feature_detected!("avx2"),
                    blocked_avx2 as unsafe fn(&[f32], &[f32], &mut [f32], usize, usize, usize),
                ),
                ("avx512", std::arch::is_x86_feature_detected!("avx512f"), blocked_avx512),
            ] {
                if has {
                    let mut c = vec![0f32; m * n];
                    // SAFETY: the CPU has the feature, checked above.
                    unsafe { f(&a, &b, &mut c, m, k, n) };
                    builds.push((name, c));
                }
            }
            for (name, got) in &builds {
                assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn transpose_round_trips() {
        let a = data(7 * 33, 3);
        let (mut t, mut back) = (vec![0f32; a.len()], vec![0f32; a.len()]);
        transpose_into(&a, 7, 33, &mut t);
        assert_eq!(t[5 * 7 + 2], a[2 * 33 + 5]);
        transpose_into(&t, 33, 7, &mut back);
        assert_eq!(a, back);
    }
}
