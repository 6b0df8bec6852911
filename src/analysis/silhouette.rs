//! The silhouette coefficient (Rousseeuw, 1987), Euclidean, as scikit-learn's
//! `silhouette_score`: the mean over points of (b - a) / max(a, b), where a is the mean
//! distance to the point's own cluster and b to the nearest other cluster; 0 for a point
//! alone in its cluster.

/// `None` when fewer than 2 or more than n - 1 clusters are present (undefined). Labels are
/// cluster numbers `0..k` (no noise label).
pub fn score(points: &[f32], dim: usize, labels: &[u32]) -> Option<f64> {
    let n = labels.len();
    assert!(labels.iter().all(|&l| (l as usize) < n), "silhouette labels must be cluster numbers below the point count");
    let k = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut size = vec![0usize; k];
    labels.iter().for_each(|&l| size[l as usize] += 1);
    let present = size.iter().filter(|&&s| s > 0).count();
    if present < 2 || present >= n {
        return None;
    }
    let mut total = 0f64;
    let mut sums = vec![0f64; k];
    for i in 0..n {
        sums.iter_mut().for_each(|s| *s = 0.0);
        let x = &points[i * dim..(i + 1) * dim];
        for j in 0..n {
            let y = &points[j * dim..(j + 1) * dim];
            let d: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
            sums[labels[j] as usize] += d;
        }
        let own = labels[i] as usize;
        if size[own] <= 1 {
            continue;
        }
        let a = sums[own] / (size[own] - 1) as f64;
        let b = (0..k).filter(|&c| c != own && size[c] > 0).map(|c| sums[c] / size[c] as f64).fold(f64::INFINITY, f64::min);
        total += (b - a) / a.max(b);
    }
    Some(total / n as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_a_hand_computed_value() {
        // Points 0, 1 (cluster 0) and 4 (cluster 1) on a line: s = (3.5-1)/3.5, (2.5... )
        let pts = [0.0f32, 1.0, 4.0];
        let s = super::score(&pts, 1, &[0, 0, 1]).unwrap();
        // a(0)=1, b(0)=4 -> 0.75; a(1)=1, b(1)=3 -> 2/3; point 2 alone -> 0.
        assert!((s - (0.75 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{s}");
        assert_eq!(super::score(&pts, 1, &[0, 0, 0]), None);
    }
}
