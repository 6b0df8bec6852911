//! Barnes-Hut t-SNE (van der Maaten, 2014) in 2-D, written here, on scikit-learn's schedule:
//! affinities from the `3 perplexity` exact nearest neighbours (bisection on each point's
//! precision to the target entropy), PCA initialisation scaled to standard deviation 1e-4,
//! early exaggeration 12 for 250 iterations with momentum 0.5, then momentum 0.8, learning
//! rate `max(n / 48, 50)`, per-coordinate gains, and the repulsion summarised over a quadtree
//! with accuracy `theta`, each phase starting from fresh steps and gains. Unlike
//! scikit-learn it always runs `max_iter` iterations (no early stop on a small gradient).
//!
//! Written rather than taken from a crate: linfa-tsne's bhtsne 0.4 picks its vantage points
//! with `thread_rng`, so the same seed gave other bytes on every run; bhtsne 0.7 sums in
//! parallel in an order that depends on scheduling. Here every sum runs in a fixed order (the
//! per-point forces are computed in parallel, each point alone), so one seed gives the same
//! bytes at any thread count.

use rayon::prelude::*;

use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub perplexity: f64,
    /// Drives a jitter of 1% of the initial scale, which separates duplicate points.
    pub seed: u64,
    pub max_iter: usize,
    /// Barnes-Hut accuracy (0: every pair, 0.5: scikit-learn's default).
    pub theta: f64,
}

const EXAGGERATION: f64 = 12.0;
const EXAGGERATED_ITERATIONS: usize = 250;

/// The 2-D embedding, `[n, 2]` row-major.
pub fn embed(points: &[f32], dim: usize, s: &Settings) -> anyhow::Result<Vec<f32>> {
    let n = points.len() / dim.max(1);
    let bad = points.iter().filter(|v| !v.is_finite()).count();
    anyhow::ensure!(bad == 0, "{bad} of the input values are NaN or infinite");
    anyhow::ensure!(
        (n as f64 - 1.0) >= 3.0 * s.perplexity,
        "perplexity {} needs at least {} points, got {n}",
        s.perplexity,
        (3.0 * s.perplexity).ceil() as usize + 1
    );
    let p = affinities(points, dim, s.perplexity);
    let mut y = initial(points, dim, s.seed)?;
    optimise(&mut y, &p, n, s);
    Ok(y.into_iter().map(|v| v as f32).collect())
}

/// Symmetric joint probabilities `P` as rows of (column, value), summing to 1 overall.
struct Sparse {
    start: Vec<usize>,
    col: Vec<u32>,
    val: Vec<f64>,
}

fn affinities(points: &[f32], dim: usize, perplexity: f64) -> Sparse {
    let n = points.len() / dim;
    let k = (n - 1).min((3.0 * perplexity + 1.0) as usize);
    let knn = super::umap::nearest_neighbours(points, dim, k + 1);
    let target = libm::log(perplexity);
    let mut entries: Vec<(u32, u32, f64)> = Vec::with_capacity(2 * n * k);
    for i in 0..n {
        // Squared distances to the neighbours, the point itself (first) left out.
        let d2: Vec<f64> = knn[i * (k + 1) + 1..(i + 1) * (k + 1)].iter().map(|&(_, d)| (d as f64) * (d as f64)).collect();
        let (mut beta, mut lo, mut hi) = (1f64, f64::NEG_INFINITY, f64::INFINITY);
        let mut p = vec![0f64; k];
        for _ in 0..100 {
            p.iter_mut().zip(&d2).for_each(|(p, &d)| *p = libm::exp(-d * beta));
            let mut sum = p.iter().sum::<f64>();
            if sum == 0.0 {
                sum = 1e-8;
            }
            p.iter_mut().for_each(|v| *v /= sum);
            let entropy = libm::log(sum) + beta * d2.iter().zip(&p).map(|(d, p)| d * p).sum::<f64>();
            let diff = entropy - target;
            if diff.abs() < 1e-5 {
                break;
            }
            if diff > 0.0 {
                lo = beta;
                beta = if hi.is_infinite() { beta * 2.0 } else { (beta + hi) / 2.0 };
            } else {
                hi = beta;
                beta = if lo.is_infinite() { beta / 2.0 } else { (beta + lo) / 2.0 };
            }
        }
        for (&(j, _), &v) in knn[i * (k + 1) + 1..(i + 1) * (k + 1)].iter().zip(&p) {
            entries.push((i as u32, j, v));
            entries.push((j, i as u32, v));
        }
    }
    // P = (P_cond + P_cond^T) / sum: merge the two directions of each pair.
    entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
    let mut out = Sparse { start: vec![0; n + 1], col: Vec::new(), val: Vec::new() };
    let mut idx = 0;
    while idx < entries.len() {
        let (i, j) = (entries[idx].0, entries[idx].1);
        let mut v = 0f64;
        while idx < entries.len() && (entries[idx].0, entries[idx].1) == (i, j) {
            v += entries[idx].2;
            idx += 1;
        }
        out.col.push(j);
        out.val.push(v);
        out.start[i as usize + 1] = out.col.len();
    }
    let total = out.val.iter().sum::<f64>().max(f64::EPSILON);
    out.val.iter_mut().for_each(|v| *v /= total);
    for i in 0..n {
        out.start[i + 1] = out.start[i + 1].max(out.start[i]);
    }
    out
}

/// The first two principal components, scaled so that the first has standard deviation
/// 1e-4 (scikit-learn's `init="pca"`), plus a seeded jitter of 1% of that.
fn initial(points: &[f32], dim: usize, seed: u64) -> anyhow::Result<Vec<f64>> {
    let n = points.len() / dim;
    let mut y: Vec<f64> = if dim >= 2 {
        let pca = super::pca::fit(points, dim, 2)?;
        pca.transform(points).into_iter().map(|v| v as f64).collect()
    } else {
        points.iter().flat_map(|&v| [v as f64, 0.0]).collect()
    };
    let mean = (0..n).map(|i| y[2 * i]).sum::<f64>() / n as f64;
    let sd = ((0..n).map(|i| (y[2 * i] - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let scale = if sd > 0.0 { 1e-4 / sd } else { 1.0 };
    let mut rng = Rng::derive(seed, "tsne");
    for v in y.iter_mut() {
        *v = *v * scale + 1e-6 * rng.symmetric(1.0) as f64;
    }
    Ok(y)
}

/// A quadtree over the embedding: each node's point count, centre of mass and width.
struct Tree {
    nodes: Vec<Node>,
}

struct Node {
    count: usize,
    com: [f64; 2],
    width: f64,
    /// Index of the first of four children, or 0 for a leaf.
    children: usize,
}

impl Tree {
    fn build(y: &[f64]) -> Self {
        let n = y.len() / 2;
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for i in 0..n {
            for a in 0..2 {
                lo[a] = lo[a].min(y[2 * i + a]);
                hi[a] = hi[a].max(y[2 * i + a]);
            }
        }
        let width = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-12) * (1.0 + 1e-9);
        let mut tree = Tree { nodes: vec![Node { count: 0, com: [0.0; 2], width, children: 0 }] };
        let mut indices: Vec<u32> = (0..n as u32).collect();
        tree.fill(0, y, &mut indices, lo, width, 0);
        tree
    }

    fn fill(&mut self, node: usize, y: &[f64], idx: &mut [u32], corner: [f64; 2], width: f64, depth: usize) {
        let count = idx.len();
        let mut com = [0f64; 2];
        for &i in idx.iter() {
            com[0] += y[2 * i as usize];
            com[1] += y[2 * i as usize + 1];
        }
        com = [com[0] / count.max(1) as f64, com[1] / count.max(1) as f64];
        self.nodes[node] = Node { count, com, width, children: 0 };
        let same = idx.iter().all(|&i| y[2 * i as usize] == y[2 * idx[0] as usize] && y[2 * i as usize + 1] == y[2 * idx[0] as usize + 1]);
        if count <= 1 || same || depth > 48 {
            return;
        }
        let half = width / 2.0;
        let mid = [corner[0] + half, corner[1] + half];
        let quadrant = |i: u32| usize::from(y[2 * i as usize] >= mid[0]) + 2 * usize::from(y[2 * i as usize + 1] >= mid[1]);
        // Stable partition into the four quadrants, in index order.
        let mut sorted: Vec<u32> = Vec::with_capacity(count);
        let mut bounds = [0usize; 5];
        for q in 0..4 {
            sorted.extend(idx.iter().copied().filter(|&i| quadrant(i) == q));
            bounds[q + 1] = sorted.len();
        }
        idx.copy_from_slice(&sorted);
        let first = self.nodes.len();
        self.nodes.extend((0..4).map(|_| Node { count: 0, com: [0.0; 2], width: half, children: 0 }));
        self.nodes[node].children = first;
        for q in 0..4 {
            let c = [corner[0] + half * (q % 2) as f64, corner[1] + half * (q / 2) as f64];
            self.fill(first + q, y, &mut idx[bounds[q]..bounds[q + 1]], c, half, depth + 1);
        }
    }

    /// The repulsive force on a point at `p` (unnormalised: sum of N q^2 (p - com)) and its
    /// part of Z (sum of N q), with q = 1 / (1 + d^2), the point itself left out.
    fn repulsion(&self, p: [f64; 2], theta2: f64) -> (f64, f64, f64) {
        let (mut fx, mut fy, mut z) = (0f64, 0f64, 0f64);
        let mut stack = vec![0usize];
        while let Some(k) = stack.pop() {
            let node = &self.nodes[k];
            if node.count == 0 {
                continue;
            }
            let (dx, dy) = (p[0] - node.com[0], p[1] - node.com[1]);
            let d2 = dx * dx + dy * dy;
            if node.children == 0 || node.width * node.width < theta2 * d2 {
                if d2 == 0.0 {
                    // The point itself (and exact duplicates, which exert no force).
                    z += (node.count - 1) as f64;
                    continue;
                }
                let q = 1.0 / (1.0 + d2);
                let nq = node.count as f64 * q;
                z += nq;
                fx += nq * q * dx;
                fy += nq * q * dy;
            } else {
                stack.extend((0..4).rev().map(|c| node.children + c));
            }
        }
        (fx, fy, z)
    }
}

fn optimise(y: &mut [f64], p: &Sparse, n: usize, s: &Settings) {
    let lr = (n as f64 / EXAGGERATION / 4.0).max(50.0);
    let theta2 = s.theta * s.theta;
    let mut update = vec![0f64; 2 * n];
    let mut gains = vec![1f64; 2 * n];
    for iter in 0..s.max_iter {
        let (exaggeration, momentum) = if iter < EXAGGERATED_ITERATIONS { (EXAGGERATION, 0.5) } else { (1.0, 0.8) };
        if iter == EXAGGERATED_ITERATIONS {
            // scikit-learn runs the two phases as two descents, each from fresh steps and gains.
            update.iter_mut().for_each(|u| *u = 0.0);
            gains.iter_mut().for_each(|g| *g = 1.0);
        }
        let tree = Tree::build(y);
        let forces: Vec<(f64, f64, f64, f64, f64)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let yi = [y[2 * i], y[2 * i + 1]];
                let (rx, ry, z) = tree.repulsion(yi, theta2);
                let (mut ax, mut ay) = (0f64, 0f64);
                for e in p.start[i]..p.start[i + 1] {
                    let j = p.col[e] as usize;
                    let (dx, dy) = (yi[0] - y[2 * j], yi[1] - y[2 * j + 1]);
                    let w = p.val[e] / (1.0 + dx * dx + dy * dy);
                    ax += w * dx;
                    ay += w * dy;
                }
                (ax, ay, rx, ry, z)
            })
            .collect();
        let z: f64 = forces.iter().map(|f| f.4).sum::<f64>().max(f64::MIN_POSITIVE);
        for (i, &(ax, ay, rx, ry, _)) in forces.iter().enumerate() {
            for (a, grad) in [(0, 4.0 * (exaggeration * ax - rx / z)), (1, 4.0 * (exaggeration * ay - ry / z))] {
                let c = 2 * i + a;
                gains[c] = if update[c] * grad < 0.0 { gains[c] + 0.2 } else { gains[c] * 0.8 }.max(0.01);
                update[c] = momentum * update[c] - lr * gains[c] * grad;
                y[c] += update[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_blobs_the_same_at_any_thread_count() {
        let mut rng = Rng::new(5);
        let (mut pts, mut labels) = (Vec::new(), Vec::new());
        for i in 0..240 {
            let c = (i % 3) as f32;
            pts.extend((0..5).map(|d| if d == 1 { 15.0 * c } else { 0.0 } + rng.symmetric(1.0)));
            labels.push(i % 3);
        }
        let s = Settings { perplexity: 10.0, seed: 0, max_iter: 300, theta: 0.5 };
        let y = embed(&pts, 5, &s).unwrap();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| embed(&pts, 5, &s).unwrap());
        assert_eq!(y, one);
        let knn = super::super::umap::nearest_neighbours(&y, 2, 2);
        let wrong = (0..240).filter(|&i| labels[knn[i * 2 + 1].0 as usize] != labels[i]).count();
        assert_eq!(wrong, 0);
        assert!(embed(&pts[..50], 5, &s).unwrap_err().to_string().contains("perplexity 10 needs at least 31 points"));
    }
}
