//! UMAP (McInnes, Healy & Melville, 2018), written here: the Rust UMAP crates either pin
//! dependencies that conflict with linfa's (`umap-rs` needs a newer `sprs`) or need LAPACK
//! (`annembed`). It follows umap-learn's algorithm with its defaults:
//!
//! 1. exact k nearest neighbours (the point itself first), Euclidean;
//! 2. per point, `rho` (distance to the nearest other point) and `sigma` by bisection so that
//!    the memberships `exp(-(d - rho) / sigma)` sum to `log2(k)`;
//! 3. the fuzzy union `a + b - ab` of the two directed memberships;
//! 4. a spectral initialisation, approximate: 300 rounds of subspace iteration towards the
//!    leading non-trivial eigenvectors of `D^-1/2 W D^-1/2` (umap-learn solves them exactly and
//!    lays out disconnected components apart), scaled to `[0, 10]`;
//! 5. stochastic gradient descent over the edges (each sampled in proportion to its weight,
//!    5 negative samples, learning rate decaying linearly from 1), curve `1 / (1 + a d^2b)`
//!    with `a, b` fitted to `min_dist` as umap-learn does.
//!
//! Every loop runs in a fixed order (the neighbour search is parallel over points, each point
//! alone), exponentials and powers come from `libm`, and the generator is the project's own,
//! so one seed gives the same bits on every CPU and thread count.

use rayon::prelude::*;

use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub components: usize,
    pub neighbors: usize,
    pub min_dist: f32,
    pub seed: u64,
    /// Optimisation epochs; `None`: umap-learn's default (500 up to 10,000 points, else 200).
    pub epochs: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UmapError {
    #[error("{neighbors} neighbours need at least {} points, got {points}", neighbors + 1)]
    TooFewPoints { points: usize, neighbors: usize },
    #[error("{bad} of the input values are NaN or infinite")]
    NotFinite { bad: usize },
    #[error("neighbors must be at least 2 and components at least 1")]
    Settings,
}

/// The embedding, `[n, components]` row-major.
pub fn embed(points: &[f32], dim: usize, p: &Params) -> Result<Vec<f32>, UmapError> {
    let n = points.len() / dim.max(1);
    if p.neighbors < 2 || p.components == 0 {
        return Err(UmapError::Settings);
    }
    let bad = points.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(UmapError::NotFinite { bad });
    }
    if n <= p.neighbors {
        return Err(UmapError::TooFewPoints { points: n, neighbors: p.neighbors });
    }
    let knn = nearest_neighbours(points, dim, p.neighbors);
    let graph = fuzzy_graph(&knn, n, p.neighbors);
    let epochs = p.epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });
    let mut rng = Rng::derive(p.seed, "umap");
    let mut y = spectral_init(&graph, n, p.components, &mut rng);
    let (a, b) = fit_ab(1.0, p.min_dist);
    optimise(&mut y, &graph, n, p.components, epochs, a, b, &mut rng);
    Ok(y)
}

/// For each point, its `k` nearest points (itself first) and their distances, ascending
/// (ties by index).
pub(crate) fn nearest_neighbours(points: &[f32], dim: usize, k: usize) -> Vec<(u32, f32)> {
    let n = points.len() / dim;
    let rows: Vec<Vec<(u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let x = &points[i * dim..(i + 1) * dim];
            let mut d: Vec<(u32, f32)> = (0..n)
                .map(|j| {
                    let y = &points[j * dim..(j + 1) * dim];
                    let mut s = 0f32;
                    for (a, b) in x.iter().zip(y) {
                        s += (a - b) * (a - b);
                    }
                    (j as u32, if i == j { -1.0 } else { s })
                })
                .collect();
            let by = |a: &(u32, f32), b: &(u32, f32)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
            d.select_nth_unstable_by(k - 1, by);
            d.truncate(k);
            d.sort_unstable_by(by);
            d.into_iter().map(|(j, s)| (j, s.max(0.0).sqrt())).collect()
        })
        .collect();
    rows.concat()
}

/// The symmetric fuzzy graph as sorted (row, column, weight) edges, both directions present.
pub(crate) struct Graph {
    pub head: Vec<u32>,
    pub tail: Vec<u32>,
    pub weight: Vec<f32>,
}

fn fuzzy_graph(knn: &[(u32, f32)], n: usize, k: usize) -> Graph {
    let target = libm::log2(k as f64);
    let mean_all = knn.iter().map(|&(_, d)| d as f64).sum::<f64>() / knn.len() as f64;
    let mut directed: Vec<(u32, u32, f32)> = Vec::with_capacity(n * k * 2);
    for i in 0..n {
        let row = &knn[i * k..(i + 1) * k];
        let dists: Vec<f64> = row.iter().map(|&(_, d)| d as f64).collect();
        let rho = dists.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
        let (mut lo, mut hi, mut mid) = (0f64, f64::INFINITY, 1f64);
        for _ in 0..64 {
            let psum: f64 = dists[1..].iter().map(|&d| if d - rho > 0.0 { libm::exp(-(d - rho) / mid) } else { 1.0 }).sum();
            if (psum - target).abs() < 1e-5 {
                break;
            }
            if psum > target {
                hi = mid;
                mid = (lo + hi) / 2.0;
            } else {
                lo = mid;
                mid = if hi.is_infinite() { mid * 2.0 } else { (lo + hi) / 2.0 };
            }
        }
        let mean_i = dists.iter().sum::<f64>() / k as f64;
        let sigma = mid.max(1e-3 * if rho > 0.0 { mean_i } else { mean_all });
        for (&(j, _), &d) in row.iter().zip(&dists) {
            if j as usize == i {
                continue;
            }
            let w = if d - rho <= 0.0 { 1.0 } else { libm::exp(-(d - rho) / sigma) };
            directed.push((i as u32, j, w as f32));
            directed.push((j, i as u32, w as f32));
        }
    }
    // Each pair collects w_ij and w_ji (one of them where only one point lists the other):
    // the fuzzy union a + b - ab.
    directed.sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)).then(x.2.total_cmp(&y.2)));
    let mut g = Graph { head: Vec::new(), tail: Vec::new(), weight: Vec::new() };
    let mut idx = 0;
    while idx < directed.len() {
        let (i, j) = (directed[idx].0, directed[idx].1);
        let mut vals = Vec::with_capacity(4);
        while idx < directed.len() && (directed[idx].0, directed[idx].1) == (i, j) {
            vals.push(directed[idx].2);
            idx += 1;
        }
        let nz: Vec<f32> = vals.into_iter().filter(|&v| v > 0.0).collect();
        let w = match nz[..] {
            [] => 0.0,
            [a] => a,
            [a, b, ..] => a + b - a * b,
        };
        if w > 0.0 {
            g.head.push(i);
            g.tail.push(j);
            g.weight.push(w);
        }
    }
    g
}

/// The `components` leading non-trivial eigenvectors of `D^-1/2 W D^-1/2` by subspace
/// iteration (the trivial one, `D^1/2 1`, projected out), scaled as umap-learn scales its
/// spectral layout: largest magnitude 10, a little noise, then each column to `[0, 10]`.
fn spectral_init(g: &Graph, n: usize, components: usize, rng: &mut Rng) -> Vec<f32> {
    let mut degree = vec![0f64; n];
    for (&h, &w) in g.head.iter().zip(&g.weight) {
        degree[h as usize] += w as f64;
    }
    let inv_sqrt: Vec<f64> = degree.iter().map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 }).collect();
    let mut trivial: Vec<f64> = degree.iter().map(|d| d.sqrt()).collect();
    normalise(&mut trivial);
    // Row starts of the (sorted by head) edge list.
    let mut start = vec![0usize; n + 1];
    for &h in &g.head {
        start[h as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut v: Vec<Vec<f64>> = (0..components).map(|_| (0..n).map(|_| rng.symmetric(1.0) as f64).collect()).collect();
    for _ in 0..300 {
        for col in v.iter_mut() {
            // (I + D^-1/2 W D^-1/2) / 2: the same eigenvectors, eigenvalues in [0, 1].
            let next: Vec<f64> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let mut s = 0f64;
                    for e in start[i]..start[i + 1] {
                        let j = g.tail[e] as usize;
                        s += g.weight[e] as f64 * inv_sqrt[j] * col[j];
                    }
                    0.5 * (col[i] + inv_sqrt[i] * s)
                })
                .collect();
            *col = next;
        }
        orthonormalise(&mut v, &trivial);
    }
    let mut y = vec![0f32; n * components];
    let max = v.iter().flatten().fold(0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    for (c, col) in v.iter().enumerate() {
        for i in 0..n {
            y[i * components + c] = (col[i] * 10.0 / max) as f32 + 1e-4 * gaussian(rng);
        }
    }
    for c in 0..components {
        let (lo, hi) = (0..n).map(|i| y[i * components + c]).fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), x| (l.min(x), h.max(x)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        for i in 0..n {
            y[i * components + c] = 10.0 * (y[i * components + c] - lo) / span;
        }
    }
    y
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Modified Gram-Schmidt, each vector first made orthogonal to `fixed`.
fn orthonormalise(v: &mut [Vec<f64>], fixed: &[f64]) {
    for c in 0..v.len() {
        let (done, rest) = v.split_at_mut(c);
        let col = &mut rest[0];
        for other in done.iter().map(Vec::as_slice).chain(std::iter::once(fixed)) {
            let dot: f64 = col.iter().zip(other).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(other).for_each(|(a, b)| *a -= dot * b);
        }
        normalise(col);
    }
}

fn gaussian(rng: &mut Rng) -> f32 {
    // Box-Muller from two uniforms in (0, 1].
    let u1 = 1.0 - rng.next_f32();
    let u2 = rng.next_f32();
    libm::sqrtf(-2.0 * libm::logf(u1)) * libm::cosf(std::f32::consts::TAU * u2)
}

/// umap-learn's `find_ab_params`: least squares of `1 / (1 + a x^2b)` against 1 below
/// `min_dist` and `exp(-(x - min_dist) / spread)` above it, on 300 points of `[0, 3 spread]`
/// (Levenberg-Marquardt from a = b = 1, as scipy's `curve_fit`).
pub fn fit_ab(spread: f32, min_dist: f32) -> (f32, f32) {
    let (spread, min_dist) = (spread as f64, min_dist as f64);
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| if x < min_dist { 1.0 } else { libm::exp(-(x - min_dist) / spread) }).collect();
    let residual =
        |a: f64, b: f64| -> f64 { xs.iter().zip(&ys).map(|(&x, &y)| (1.0 / (1.0 + a * libm::pow(x, 2.0 * b)) - y).powi(2)).sum() };
    let (mut a, mut b, mut lambda) = (1f64, 1f64, 1e-3);
    let mut cost = residual(a, b);
    for _ in 0..200 {
        // Normal equations of the linearised problem.
        let (mut jtj, mut jtr) = ([[0f64; 2]; 2], [0f64; 2]);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x == 0.0 {
                continue;
            }
            let p = libm::pow(x, 2.0 * b);
            let f = 1.0 / (1.0 + a * p);
            let da = -p * f * f;
            let db = -a * p * 2.0 * libm::log(x) * f * f;
            let r = f - y;
            jtj[0][0] += da * da;
            jtj[0][1] += da * db;
            jtj[1][1] += db * db;
            jtr[0] += da * r;
            jtr[1] += db * r;
        }
        jtj[1][0] = jtj[0][1];
        let (m00, m11) = (jtj[0][0] * (1.0 + lambda), jtj[1][1] * (1.0 + lambda));
        let det = m00 * m11 - jtj[0][1] * jtj[1][0];
        if det.abs() < 1e-300 {
            break;
        }
        let step_a = (m11 * jtr[0] - jtj[0][1] * jtr[1]) / det;
        let step_b = (m00 * jtr[1] - jtj[1][0] * jtr[0]) / det;
        let (na, nb) = (a - step_a, b - step_b);
        let next = residual(na, nb);
        if next < cost {
            let done = (cost - next) < 1e-15 * cost.max(1e-300);
            (a, b, cost, lambda) = (na, nb, next, lambda / 10.0);
            if done {
                break;
            }
        } else {
            lambda *= 10.0;
            if lambda > 1e12 {
                break;
            }
        }
    }
    (a as f32, b as f32)
}

fn clip(x: f32) -> f32 {
    x.clamp(-4.0, 4.0)
}

#[allow(clippy::too_many_arguments)]
fn optimise(y: &mut [f32], g: &Graph, n: usize, dim: usize, epochs: usize, a: f32, b: f32, rng: &mut Rng) {
    const NEGATIVE_RATE: f32 = 5.0;
    let max_w = g.weight.iter().copied().fold(0f32, f32::max);
    // Edges too weak to be sampled once in `epochs` are dropped, as umap-learn does.
    let keep: Vec<usize> = (0..g.weight.len()).filter(|&e| g.weight[e] >= max_w / epochs as f32).collect();
    let per_sample: Vec<f32> = keep.iter().map(|&e| max_w / g.weight[e]).collect();
    let per_negative: Vec<f32> = per_sample.iter().map(|s| s / NEGATIVE_RATE).collect();
    let mut next_sample = per_sample.clone();
    let mut next_negative = per_negative.clone();
    let mut cur = vec![0f32; dim];
    for epoch in 0..epochs {
        let alpha = 1.0 - epoch as f32 / epochs as f32;
        let now = epoch as f32;
        for (slot, &e) in keep.iter().enumerate() {
            if next_sample[slot] > now {
                continue;
            }
            let (j, k) = (g.head[e] as usize, g.tail[e] as usize);
            cur.copy_from_slice(&y[j * dim..(j + 1) * dim]);
            let d2 = dist2(&cur, &y[k * dim..(k + 1) * dim]);
            let coeff = if d2 > 0.0 {
                let pb = pow(d2, b);
                -2.0 * a * b * (pb / d2) / (a * pb + 1.0)
            } else {
                0.0
            };
            for d in 0..dim {
                let grad = clip(coeff * (cur[d] - y[k * dim + d]));
                cur[d] += grad * alpha;
                y[k * dim + d] -= grad * alpha;
            }
            next_sample[slot] += per_sample[slot];
            let negatives = ((now - next_negative[slot]) / per_negative[slot]).floor().max(0.0) as usize;
            for _ in 0..negatives {
                // Multiply-shift: a bias below n / 2^64, and no division.
                let other = ((rng.next_u64() as u128 * n as u128) >> 64) as usize;
                // The point itself (umap-learn reads its moving position; ours is in `cur`).
                if other == j {
                    continue;
                }
                let o = &y[other * dim..(other + 1) * dim];
                let d2 = dist2(&cur, o);
                // Coincident points exert no force (umap-learn 0.5).
                if d2 <= 0.0 {
                    continue;
                }
                let coeff = 2.0 * b / ((0.001 + d2) * (a * pow(d2, b) + 1.0));
                for d in 0..dim {
                    cur[d] += clip(coeff * (cur[d] - y[other * dim + d])) * alpha;
                }
            }
            next_negative[slot] += negatives as f32 * per_negative[slot];
            y[j * dim..(j + 1) * dim].copy_from_slice(&cur);
        }
    }
}

/// `x^b` for `x > 0` as `2^(b log2 x)` with libm's table-driven `exp2f`/`log2f`: about
/// three times faster than `powf` and as portable (pure software, the same bits everywhere).
fn pow(x: f32, b: f32) -> f32 {
    libm::exp2f(b * libm::log2f(x))
}

fn dist2(x: &[f32], y: &[f32]) -> f32 {
    let mut s = 0f32;
    for (a, b) in x.iter().zip(y) {
        s += (a - b) * (a - b);
    }
    s
}

/// Trustworthiness (Venna & Kaski; scikit-learn's `trustworthiness`): how far the `k`
/// nearest neighbours in the embedding are from being neighbours in the input, 1 = all are.
pub fn trustworthiness(input: &[f32], dim: usize, embedded: &[f32], edim: usize, k: usize) -> f64 {
    let n = input.len() / dim;
    assert!(n > 2 * k, "trustworthiness needs more than 2k points");
    let embedded_knn = nearest_neighbours(embedded, edim, k + 1);
    let penalty: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let x = &input[i * dim..(i + 1) * dim];
            let mut order: Vec<(f32, u32)> = (0..n).map(|j| (dist2(x, &input[j * dim..(j + 1) * dim]), j as u32)).collect();
            order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut rank = vec![0usize; n];
            // Rank 0 is the point itself.
            order.iter().enumerate().for_each(|(r, &(_, j))| rank[j as usize] = r);
            embedded_knn[i * (k + 1)..(i + 1) * (k + 1)]
                .iter()
                .filter(|&&(j, _)| j as usize != i)
                .map(|&(j, _)| rank[j as usize].saturating_sub(k) as f64)
                .sum::<f64>()
        })
        .sum();
    let (n, k) = (n as f64, k as f64);
    1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ab_matches_umap_learn() {
        // umap-learn 0.5.12's find_ab_params(1.0, 0.1) and (1.0, 0.0).
        let (a, b) = fit_ab(1.0, 0.1);
        assert!((a - 1.576_943).abs() < 1e-4 && (b - 0.895_061).abs() < 1e-4, "{a} {b}");
        let (a, b) = fit_ab(1.0, 0.0);
        assert!((a - 1.932_808).abs() < 1e-4 && (b - 0.790_495).abs() < 1e-4, "{a} {b}");
    }

    fn blobs() -> (Vec<f32>, Vec<u32>) {
        let mut rng = Rng::new(3);
        let (mut pts, mut labels) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let c = (i % 3) as f32;
            pts.extend((0..4).map(|d| if d == 0 { 20.0 * c } else { 0.0 } + rng.symmetric(1.0)));
            labels.push((i % 3) as u32);
        }
        (pts, labels)
    }

    #[test]
    fn separates_blobs_reproducibly_and_refuses_bad_input() {
        let (pts, labels) = blobs();
        let p = Params { components: 2, neighbors: 10, min_dist: 0.1, seed: 1, epochs: Some(200) };
        let y = embed(&pts, 4, &p).unwrap();
        assert_eq!(y, embed(&pts, 4, &p).unwrap());
        assert!(y.iter().all(|v| v.is_finite()));
        // Each point's nearest embedded neighbour is from its own blob.
        let knn = nearest_neighbours(&y, 2, 2);
        let wrong = (0..300).filter(|&i| labels[knn[i * 2 + 1].0 as usize] != labels[i]).count();
        assert_eq!(wrong, 0);
        assert!(trustworthiness(&pts, 4, &y, 2, 10) > 0.8);
        assert_eq!(embed(&pts[..40], 4, &p), Err(UmapError::TooFewPoints { points: 10, neighbors: 10 }));
        let mut nan = pts.clone();
        nan[5] = f32::NAN;
        assert_eq!(embed(&nan, 4, &p), Err(UmapError::NotFinite { bad: 1 }));
    }

    #[test]
    fn trustworthiness_of_the_input_itself_is_one() {
        let (pts, _) = blobs();
        assert!((trustworthiness(&pts, 4, &pts, 4, 5) - 1.0).abs() < 1e-12);
    }
}
