//! The CPU kernels that the candle ops ([`super::ops`]) and the CPU trainer
//! ([`super::cpu`]) share, free of candle: 2x2 max-pooling of one plane, direct convolution
//! in its three forms (correlate, scatter, weight gradient) and the bias sums. Every kernel
//! sums each output in a fixed order and vectorises only across independent outputs, so the
//! results are bitwise the same on any CPU and thread count.

use rayon::prelude::*;

pub(super) const NO_GRADIENT: u32 = u32::MAX;

/// Pools one plane: the first maximum of each 2x2 window in row-major order (PyTorch's
/// scan order, so the first of tied maxima wins; NaN wins as in PyTorch).
pub(super) fn pool_plane(relu: bool, p: &[f32], w: usize, out: &mut [f32], winners: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(relu: bool, p: &[f32], w: usize, out: &mut [f32], winners: &mut [u32]) {
            pool_plane_impl(relu, p, w, out, winners)
        }
        if !super::gemm::portable() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2(relu, p, w, out, winners) };
        }
    }
    pool_plane_impl(relu, p, w, out, winners)
}

/// Branch-free (selects only), so that the compiler vectorises it across windows.
#[inline(always)]
fn pool_plane_impl(relu: bool, p: &[f32], w: usize, out: &mut [f32], winners: &mut [u32]) {
    let ow = w / 2;
    let wu = w as u32;
    for (oy, (rows, (o_row, w_row))) in p.chunks_exact(2 * w).zip(out.chunks_exact_mut(ow).zip(winners.chunks_exact_mut(ow))).enumerate() {
        let (r0, r1) = rows.split_at(w);
        let base = (2 * oy * w) as u32;
        let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
        for (ox, ((top, bottom), (o, win))) in windows.zip(o_row.iter_mut().zip(w_row.iter_mut())).enumerate() {
            let (a, b, c, d) = (top[0], top[1], bottom[0], bottom[1]);
            let (mut best, mut off) = (a, 0u32);
            for (v, at) in [(b, 1), (c, wu), (d, wu + 1)] {
                let t = v > best;
                best = if t { v } else { best };
                off = if t { at } else { off };
            }
            // PyTorch lets the last NaN in scan order win.
            for (v, at) in [(a, 0), (b, 1), (c, wu), (d, wu + 1)] {
                let t = v.is_nan();
                best = if t { v } else { best };
                off = if t { at } else { off };
            }
            // ReLU after the max: max(relu(x)) == relu(max(x)); where it clips, no gradient.
            // Not `best <= 0.0`: a NaN maximum is clipped too (ReLU(NaN) = 0 here).
            let keep = !relu || best > 0.0;
            *o = if keep { best } else { 0.0 };
            *win = if keep { base + 2 * ox as u32 + off } else { NO_GRADIENT };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Direct convolution kernels for small channel counts.
//
// A convolution relates an "image" [N, C, H, W] and a "grid" [N, O, GH, GW] through weights
// [O, C, k, k]:  grid[n,o,gy,gx] = sum_{c,ky,kx} W[o,c,ky,kx] * image[n,c,gy*s+ky-p, gx*s+kx-p].
// Conv2d maps image -> grid ("correlate"); its input gradient maps grid -> image ("scatter").
// ConvTranspose2d is the same pair the other way round, with its weight [Cin, Cout, k, k]
// read as [O, C, k, k]. Both share the weight gradient ("wgrad").

/// Shapes of one convolution (see above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub gh: usize,
    pub gw: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

/// Planes re-laid with a common row stride `l` and a zero margin `m`, so that every kernel
/// tap is one contiguous multiply-add over a whole plane instead of one per row. The image is
/// split into `stride x stride` phase planes (image row `iy = r * stride + py` lives in row
/// `r + m` of phase `py`); tap (ky, kx) then reads phase (py, px) at a constant offset from
/// the grid position. Grid rows carry `l - gw` junk columns, which are discarded on output
/// and zero on input.
pub(super) struct Planes {
    s: usize,
    l: usize,
    m: usize,
    /// Rows of one padded phase plane.
    rows: usize,
    /// (phase index, offset) of each tap, in (ky, kx) order.
    taps: Vec<(usize, usize)>,
}

impl Planes {
    fn phase_len(&self) -> usize {
        self.rows * self.l
    }

    /// All phases of one image plane.
    pub(super) fn image_len(&self) -> usize {
        self.s * self.s * self.phase_len()
    }

    /// One re-laid grid plane of `gh` rows (stride `l`).
    pub(super) fn grid_len(&self, gh: usize) -> usize {
        gh * self.l
    }
}

impl Geometry {
    pub(super) fn image_plane(&self) -> usize {
        self.h * self.w
    }

    pub(super) fn grid_plane(&self) -> usize {
        self.gh * self.gw
    }

    pub(super) fn planes(&self) -> Planes {
        let (s, p) = (self.stride as isize, self.pad as isize);
        let split = |k: usize| {
            let t = k as isize - p;
            (t.rem_euclid(s) as usize, t.div_euclid(s))
        };
        let m = (0..self.k).map(|k| split(k).1.unsigned_abs()).max().unwrap_or(0);
        let (ph, pw) = (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride));
        let l = pw.max(self.gw) + 2 * m;
        let rows = ph.max(self.gh) + 2 * m + 1;
        let mut taps = Vec::with_capacity(self.k * self.k);
        for ky in 0..self.k {
            let (py, dy) = split(ky);
            for kx in 0..self.k {
                let (px, dx) = split(kx);
                let offset = (dy + m as isize) as usize * l + (dx + m as isize) as usize;
                taps.push(((py * self.stride + px) * rows * l, offset));
            }
        }
        Planes { s: self.stride, l, m, rows, taps }
    }

    /// Start (in the phase planes) of the phase row holding image row `iy`, columns of
    /// phase `px`.
    #[inline]
    fn phase_row(&self, pl: &Planes, iy: usize, px: usize) -> usize {
        ((iy % pl.s) * pl.s + px) * pl.phase_len() + (iy / pl.s + pl.m) * pl.l + pl.m
    }

    /// One image plane [H, W] -> its padded phase planes.
    fn split_phases(&self, pl: &Planes, image: &[f32], out: &mut [f32]) {
        for (iy, row) in image.chunks_exact(self.w).enumerate() {
            for px in 0..pl.s {
                let start = self.phase_row(pl, iy, px);
                for (d, &v) in out[start..].iter_mut().zip(row.iter().skip(px).step_by(pl.s)) {
                    *d = v;
                }
            }
        }
    }

    /// Padded phase planes -> one image plane [H, W].
    fn merge_phases(&self, pl: &Planes, phases: &[f32], image: &mut [f32]) {
        for (iy, row) in image.chunks_exact_mut(self.w).enumerate() {
            for px in 0..pl.s {
                let start = self.phase_row(pl, iy, px);
                for (d, &v) in row.iter_mut().skip(px).step_by(pl.s).zip(&phases[start..]) {
                    *d = v;
                }
            }
        }
    }

    /// Every [H, W] plane of `image` ([planes, H, W]) -> padded phases.
    fn all_phases(&self, pl: &Planes, image: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; image.len() / self.image_plane() * pl.image_len()];
        out.par_chunks_mut(pl.image_len()).zip(image.par_chunks(self.image_plane())).for_each(|(dst, src)| self.split_phases(pl, src, dst));
        out
    }

    /// Every [GH, GW] plane of `grid` -> rows of stride `l`, junk columns zero.
    fn all_grids(&self, pl: &Planes, grid: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; grid.len() / self.grid_plane() * self.gh * pl.l];
        self.grids_write(pl, grid, &mut out);
        out
    }

    /// [`Self::all_phases`] on this thread into `out`, writing only the phases' interior: a
    /// buffer zeroed once keeps its zero margins from call to call.
    pub(super) fn phases_write(&self, pl: &Planes, image: &[f32], out: &mut [f32]) {
        for (dst, src) in out.chunks_exact_mut(pl.image_len()).zip(image.chunks_exact(self.image_plane())) {
            self.split_phases(pl, src, dst);
        }
    }

    /// [`Self::all_grids`] into `out`, writing only the first `gw` columns of each row (a
    /// buffer zeroed once keeps its junk columns zero).
    pub(super) fn grids_write(&self, pl: &Planes, grid: &[f32], out: &mut [f32]) {
        let len = self.gh * pl.l;
        for (src, dst) in grid.chunks_exact(self.grid_plane()).zip(out.chunks_exact_mut(len)) {
            for (s_row, d_row) in src.chunks_exact(self.gw).zip(dst.chunks_exact_mut(pl.l)) {
                d_row[..self.gw].copy_from_slice(s_row);
            }
        }
    }

    /// Grid plane `i` (sample `i / O`, channel `i % O`) from the image's phases: the sum over
    /// image channels and taps, in that order, of weight x shifted plane.
    fn correlate_plane(&self, pl: &Planes, phases: &[f32], weight: &[f32], i: usize, acc: &mut [f32], out: &mut [f32]) {
        let (ni, oi) = (i / self.o, i % self.o);
        let kk = self.k * self.k;
        let len = self.gh * pl.l;
        acc.fill(0.0);
        for ci in 0..self.c {
            let src = &phases[(ni * self.c + ci) * pl.image_len()..][..pl.image_len()];
            let w = &weight[(oi * self.c + ci) * kk..][..kk];
            for (&wv, &(phase, off)) in w.iter().zip(&pl.taps) {
                axpy(&mut acc[..len], wv, &src[phase + off..][..len]);
            }
        }
        for (o_row, a_row) in out.chunks_exact_mut(self.gw).zip(acc.chunks_exact(pl.l)) {
            o_row.copy_from_slice(&a_row[..self.gw]);
        }
    }

    /// Image plane `i` (sample `i / C`, channel `i % C`) from the re-laid grids: the adjoint
    /// of [`Self::correlate_plane`], summed over grid channels and taps in that order.
    fn scatter_plane(&self, pl: &Planes, grids: &[f32], weight: &[f32], i: usize, acc: &mut [f32], out: &mut [f32]) {
        let (ni, ci) = (i / self.c, i % self.c);
        let kk = self.k * self.k;
        let len = self.gh * pl.l;
        acc.fill(0.0);
        for oi in 0..self.o {
            let g = &grids[(ni * self.o + oi) * len..][..len];
            let w = &weight[(oi * self.c + ci) * kk..][..kk];
            for (&wv, &(phase, off)) in w.iter().zip(&pl.taps) {
                axpy(&mut acc[phase + off..][..len], wv, g);
            }
        }
        self.merge_phases(pl, acc, out);
    }

    /// The weight gradient of pair `i` (grid channel `i / C`, image channel `i % C`): per tap,
    /// the sum over the `n` samples in order of grid . shifted image.
    pub(super) fn wgrad_pair(&self, pl: &Planes, phases: &[f32], grids: &[f32], n: usize, i: usize, out: &mut [f32]) {
        let (oi, ci) = (i / self.c, i % self.c);
        let len = self.gh * pl.l;
        for (d, &(phase, off)) in out.iter_mut().zip(&pl.taps) {
            let mut acc = 0f32;
            for ni in 0..n {
                let g = &grids[(ni * self.o + oi) * len..][..len];
                let src = &phases[(ni * self.c + ci) * pl.image_len() + phase + off..][..len];
                acc += dot(g, src);
            }
            *d = acc;
        }
    }

    /// image [n, C, H, W], weight [O, C, k, k] -> grid [n, O, GH, GW].
    pub(super) fn correlate(&self, image: &[f32], weight: &[f32], n: usize) -> Vec<f32> {
        let pl = self.planes();
        let phases = self.all_phases(&pl, image);
        let mut grid = vec![0f32; n * self.o * self.grid_plane()];
        grid.par_chunks_mut(self.grid_plane())
            .enumerate()
            .for_each_init(|| vec![0f32; self.gh * pl.l], |acc, (i, out)| self.correlate_plane(&pl, &phases, weight, i, acc, out));
        grid
    }

    /// [`Self::correlate`] on this thread from phases made by [`Self::phases_write`].
    pub(super) fn correlate_into(&self, pl: &Planes, phases: &[f32], weight: &[f32], acc: &mut Vec<f32>, grid: &mut [f32]) {
        acc.resize(self.gh * pl.l, 0.0);
        for (i, out) in grid.chunks_exact_mut(self.grid_plane()).enumerate() {
            self.correlate_plane(pl, phases, weight, i, acc, out);
        }
    }

    /// grid [n, O, GH, GW], weight [O, C, k, k] -> image [n, C, H, W] (adjoint of correlate).
    pub(super) fn scatter(&self, grid: &[f32], weight: &[f32], n: usize) -> Vec<f32> {
        let pl = self.planes();
        let grids = self.all_grids(&pl, grid);
        let mut image = vec![0f32; n * self.c * self.image_plane()];
        image
            .par_chunks_mut(self.image_plane())
            .enumerate()
            .for_each_init(|| vec![0f32; pl.image_len()], |acc, (i, out)| self.scatter_plane(&pl, &grids, weight, i, acc, out));
        image
    }

    /// [`Self::scatter`] on this thread from grids made by [`Self::grids_write`].
    pub(super) fn scatter_into(&self, pl: &Planes, grids: &[f32], weight: &[f32], acc: &mut Vec<f32>, image: &mut [f32]) {
        acc.resize(pl.image_len(), 0.0);
        for (i, out) in image.chunks_exact_mut(self.image_plane()).enumerate() {
            self.scatter_plane(pl, grids, weight, i, acc, out);
        }
    }

    /// image [n, C, H, W], grid [n, O, GH, GW] -> sum over n of grid x image per tap:
    /// the weight gradient [O, C, k, k].
    pub(super) fn wgrad(&self, image: &[f32], grid: &[f32], n: usize) -> Vec<f32> {
        let pl = self.planes();
        let phases = self.all_phases(&pl, image);
        let grids = self.all_grids(&pl, grid);
        let kk = self.k * self.k;
        let mut dw = vec![0f32; self.o * self.c * kk];
        // One (o, c) pair per task; the sum over samples runs in a fixed order inside it.
        dw.par_chunks_mut(kk).enumerate().for_each(|(i, out)| self.wgrad_pair(&pl, &phases, &grids, n, i, out));
        dw
    }
}

/// Runs `f` compiled for AVX2 when the CPU has it (same arithmetic, wider registers: the
/// results are bitwise the same as without).
#[inline(always)]
fn with_simd<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<T>(f: impl FnOnce() -> T) -> T {
            f()
        }
        if !super::gemm::portable() && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// dst += w * src, element by element.
#[inline(always)]
fn axpy(dst: &mut [f32], w: f32, src: &[f32]) {
    with_simd(|| {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += w * s;
        }
    })
}

/// Dot product with eight partial sums (vectorisable, and in a fixed order: deterministic).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    with_simd(|| dot_impl(a, b))
}

#[inline(always)]
fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    lanes.iter().sum::<f32>() + tail
}

/// Sum with eight partial sums (vectorisable; fixed order).
#[inline(always)]
fn sum_impl(a: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for i in 0..8 {
            lanes[i] += x[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Adds `bias[ch]` to every element of channel `ch` of [N, Ch, ...] planes of size `plane`.
pub(super) fn add_bias(data: &mut [f32], bias: &[f32], plane: usize) {
    for (i, p) in data.chunks_exact_mut(plane).enumerate() {
        let b = bias[i % bias.len()];
        p.iter_mut().for_each(|v| *v += b);
    }
}

/// `out[i]` = the sum of plane `i` of [N, Ch, plane] data, with eight partial sums; the bias
/// gradient of channel `ch` adds these in sample order.
pub(super) fn plane_sums_into(x: &[f32], plane: usize, out: &mut [f32]) {
    for (o, p) in out.iter_mut().zip(x.chunks_exact(plane)) {
        *o = with_simd(|| sum_impl(p));
    }
}
