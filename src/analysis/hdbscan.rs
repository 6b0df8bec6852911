//! HDBSCAN with the `hdbscan` crate (serial: Prim's minimum spanning tree over mutual
//! reachability, excess-of-mass cluster selection). Points it leaves out are noise.

pub const NOISE: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("{bad} of the input values are NaN or infinite")]
    NotFinite { bad: usize },
    #[error("min_cluster_size = {size} needs more points than the {points} given")]
    TooFewPoints { size: usize, points: usize },
    #[error("min_samples = {samples} needs more points than the {points} given")]
    TooManySamples { samples: usize, points: usize },
    #[error("HDBSCAN failed: {0}")]
    Other(String),
}

/// Cluster labels `0..c` numbered by first appearance, [`NOISE`] for noise; `c` may be 0
/// (all noise) or 1.
pub fn fit(points: &[f32], dim: usize, min_cluster_size: usize, min_samples: Option<usize>) -> Result<Vec<u32>, Error> {
    let n = points.len() / dim;
    let bad = points.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::NotFinite { bad });
    }
    if n <= min_cluster_size {
        return Err(Error::TooFewPoints { size: min_cluster_size, points: n });
    }
    if let Some(m) = min_samples.filter(|&m| m >= n) {
        return Err(Error::TooManySamples { samples: m, points: n });
    }
    let rows: Vec<Vec<f32>> = points.chunks(dim).map(<[f32]>::to_vec).collect();
    let mut hp = hdbscan::HdbscanHyperParams::builder().min_cluster_size(min_cluster_size);
    if let Some(m) = min_samples {
        hp = hp.min_samples(m);
    }
    let labels = hdbscan::Hdbscan::new(&rows, hp.build()).cluster().map_err(|e| Error::Other(e.to_string()))?;
    let mut names = std::collections::HashMap::new();
    Ok(labels
        .into_iter()
        .map(|l| {
            if l < 0 {
                return NOISE;
            }
            let next = names.len() as u32;
            *names.entry(l).or_insert(next)
        })
        .collect())
}
