//! Clustering scores against true labels: purity (as the seed defines it), normalised mutual
//! information (arithmetic normalisation, scikit-learn's default), adjusted Rand index and
//! clustering accuracy under the best one-to-one cluster-to-label matching (Hungarian).

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// counts[label][cluster] for `labels` in 0..n_labels and `clusters` in 0..n_clusters.
pub fn contingency(labels: &[u8], clusters: &[u32], n_labels: usize, n_clusters: usize) -> Vec<Vec<u64>> {
    assert_eq!(labels.len(), clusters.len(), "labels and clusters differ in length");
    let mut m = vec![vec![0u64; n_clusters]; n_labels];
    for (&l, &c) in labels.iter().zip(clusters) {
        m[l as usize][c as usize] += 1;
    }
    m
}

fn total(m: &[Vec<u64>]) -> u64 {
    m.iter().flatten().sum()
}

fn row_sums(m: &[Vec<u64>]) -> Vec<u64> {
    m.iter().map(|r| r.iter().sum()).collect()
}

fn col_sums(m: &[Vec<u64>]) -> Vec<u64> {
    (0..m.first().map_or(0, Vec::len)).map(|j| m.iter().map(|r| r[j]).sum()).collect()
}

/// Sum over clusters of the count of the cluster's most common label, over N.
pub fn purity(m: &[Vec<u64>]) -> f64 {
    let n = total(m);
    let best: u64 = (0..m.first().map_or(0, Vec::len)).map(|j| m.iter().map(|r| r[j]).max().unwrap_or(0)).sum();
    best as f64 / n as f64
}

fn entropy(counts: &[u64], n: f64) -> f64 {
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Mutual information over the arithmetic mean of the two entropies (1 when both are 0).
pub fn nmi(m: &[Vec<u64>]) -> f64 {
    let n = total(m) as f64;
    let (rows, cols) = (row_sums(m), col_sums(m));
    let mut mi = 0.0;
    for (i, r) in m.iter().enumerate() {
        for (j, &c) in r.iter().enumerate() {
            if c > 0 {
                let c = c as f64;
                mi += c / n * (c * n / (rows[i] as f64 * cols[j] as f64)).ln();
            }
        }
    }
    let (hl, hc) = (entropy(&rows, n), entropy(&cols, n));
    if hl == 0.0 && hc == 0.0 {
        return 1.0;
    }
    (mi / ((hl + hc) / 2.0)).max(0.0)
}

fn comb2(x: u64) -> f64 {
    let x = x as f64;
    x * (x - 1.0) / 2.0
}

/// Hubert and Arabie's adjusted Rand index.
pub fn ari(m: &[Vec<u64>]) -> f64 {
    let n = total(m);
    let sum_cells: f64 = m.iter().flatten().map(|&c| comb2(c)).sum();
    let sum_rows: f64 = row_sums(m).into_iter().map(comb2).sum();
    let sum_cols: f64 = col_sums(m).into_iter().map(comb2).sum();
    let expected = sum_rows * sum_cols / comb2(n);
    let max = (sum_rows + sum_cols) / 2.0;
    if max == expected {
        return 1.0;
    }
    (sum_cells - expected) / (max - expected)
}

/// Fraction of points whose cluster maps to their label under the best one-to-one mapping.
pub fn accuracy(m: &[Vec<u64>]) -> f64 {
    let (matched, _) = matching(m);
    matched as f64 / total(m) as f64
}

/// The one-to-one cluster-to-label matching that maximises the matched count (Hungarian):
/// the count, and for each label the cluster matched to it (`None` when there are fewer
/// clusters than labels).
pub fn matching(m: &[Vec<u64>]) -> (u64, Vec<Option<usize>>) {
    let (labels, clusters) = (m.len(), m.first().map_or(0, Vec::len));
    let size = labels.max(clusters);
    if size == 0 {
        return (0, Vec::new());
    }
    // Square matrix of clusters x labels, padded with zeros; maximise matched counts.
    let rows: Vec<Vec<i64>> =
        (0..size).map(|c| (0..size).map(|l| if c < clusters && l < labels { m[l][c] as i64 } else { 0 }).collect()).collect();
    let weights = Matrix::from_rows(rows).expect("square matrix");
    let (matched, label_of_cluster) = kuhn_munkres(&weights);
    let mut cluster_of = vec![None; labels];
    for (c, &l) in label_of_cluster.iter().enumerate() {
        if c < clusters && l < labels {
            cluster_of[l] = Some(c);
        }
    }
    (matched as u64, cluster_of)
}

/// The clusters in the order of the labels they are matched to, then any unmatched ones: the
/// column order that puts a contingency matrix's matched counts on its diagonal.
pub fn diagonal_order(m: &[Vec<u64>]) -> Vec<usize> {
    let clusters = m.first().map_or(0, Vec::len);
    let mut order: Vec<usize> = matching(m).1.into_iter().flatten().collect();
    let unmatched: Vec<usize> = (0..clusters).filter(|c| !order.contains(c)).collect();
    order.extend(unmatched);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn the_diagonal_order_puts_matched_counts_on_the_diagonal() {
        // Labels 0..3; cluster 2 holds label 0, cluster 0 label 1, cluster 3 label 2; cluster 1 is noise.
        let m = vec![vec![1, 0, 9, 0], vec![8, 1, 0, 0], vec![0, 2, 0, 7]];
        assert_eq!(diagonal_order(&m), [2, 0, 3, 1]);
        assert_eq!(matching(&m), (24, vec![Some(2), Some(0), Some(3)]));
        close(accuracy(&m), 24.0 / 28.0);
    }

    #[test]
    fn perfect_clustering_under_relabelling() {
        let labels = [0u8, 0, 1, 1, 2, 2];
        let clusters = [2u32, 2, 0, 0, 1, 1];
        let m = contingency(&labels, &clusters, 3, 3);
        close(purity(&m), 1.0);
        close(nmi(&m), 1.0);
        close(ari(&m), 1.0);
        close(accuracy(&m), 1.0);
    }

    #[test]
    fn hand_computed_small_case() {
        // labels: a a a b b b ; clusters: 0 0 1 1 1 1
        // contingency: a: [2, 1], b: [0, 3]
        let m = contingency(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 1, 1], 2, 2);
        assert_eq!(m, vec![vec![2, 1], vec![0, 3]]);
        // purity: cluster 0 -> 2 (a), cluster 1 -> 3 (b): 5/6.
        close(purity(&m), 5.0 / 6.0);
        // accuracy: 0->a, 1->b = 5/6 as well.
        close(accuracy(&m), 5.0 / 6.0);
        // ARI: sum C(nij,2) = 1 + 0 + 0 + 3 = 4; rows C(3,2)*2 = 6; cols C(2,2)+C(4,2) = 7;
        // expected = 6*7/15 = 2.8; max = 6.5; ARI = (4-2.8)/(6.5-2.8) = 1.2/3.7.
        close(ari(&m), 1.2 / 3.7);
        // NMI: MI = sum p_ij ln(p_ij / (p_i p_j)).
        let mi = (2.0 / 6.0) * ((2.0 / 6.0) / (0.5 * 2.0 / 6.0f64)).ln()
            + (1.0 / 6.0) * ((1.0 / 6.0) / (0.5 * 4.0 / 6.0f64)).ln()
            + (3.0 / 6.0) * ((3.0 / 6.0) / (0.5 * 4.0 / 6.0f64)).ln();
        let hl = 2.0f64.ln();
        let hc = -(2.0 / 6.0) * (2.0 / 6.0f64).ln() - (4.0 / 6.0) * (4.0 / 6.0f64).ln();
        close(nmi(&m), mi / ((hl + hc) / 2.0));
    }

    #[test]
    fn accuracy_uses_one_to_one_matching() {
        // Two clusters both dominated by label 0: purity counts label 0 twice, accuracy once.
        let m = contingency(&[0, 0, 0, 0, 1, 1], &[0, 0, 1, 1, 1, 0], 2, 2);
        assert_eq!(m, vec![vec![2, 2], vec![1, 1]]);
        close(purity(&m), 4.0 / 6.0);
        close(accuracy(&m), 3.0 / 6.0);
    }

    #[test]
    fn random_assignment_scores_near_zero() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let clusters: Vec<u32> = (0..1000).map(|i| ((i * 7 + i / 10) % 10) as u32).collect();
        let m = contingency(&labels, &clusters, 10, 10);
        assert!(ari(&m).abs() < 0.02, "{}", ari(&m));
        assert!(nmi(&m) < 0.1, "{}", nmi(&m));
    }
}
