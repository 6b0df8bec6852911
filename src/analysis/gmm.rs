//! Gaussian mixture (full covariances) with linfa-clustering: initialised from k-means with a
//! seeded generator, EM until the lower bound moves less than `tol`.

use linfa::prelude::*;
use linfa_clustering::{GaussianMixtureModel, GmmError, GmmInitMethod};
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub k: usize,
    pub seed: u64,
    pub max_iter: usize,
    pub tol: f64,
    /// Added to each covariance's diagonal (scikit-learn's `reg_covar`).
    pub reg_covar: f64,
}

#[derive(Debug, Clone)]
pub struct Fitted {
    pub labels: Vec<u32>,
    /// Mean log-likelihood per point of the fitted mixture.
    pub log_likelihood: f64,
    /// Bayesian information criterion (lower is better), as scikit-learn computes it.
    pub bic: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("k = {k} exceeds the {points} points to cluster")]
    TooFewPoints { k: usize, points: usize },
    #[error("{bad} of the input values are NaN or infinite")]
    NotFinite { bad: usize },
    #[error("a covariance is not positive definite (a cluster too small or flat); raise reg_covar")]
    NotPositiveDefinite,
    #[error("EM did not converge in {0} iterations; raise max_iter or tol")]
    NotConverged(usize),
    #[error("the Gaussian mixture failed: {0}")]
    Other(String),
}

pub fn fit(points: &[f32], dim: usize, s: &Settings) -> Result<Fitted, Error> {
    let n = points.len() / dim;
    let bad = points.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::NotFinite { bad });
    }
    if n < s.k {
        return Err(Error::TooFewPoints { k: s.k, points: n });
    }
    let records = Array2::from_shape_vec((n, dim), points.iter().map(|&v| v as f64).collect()).expect("n x dim values");
    let dataset = DatasetBase::from(records.clone());
    let model = GaussianMixtureModel::params_with_rng(s.k, Xoshiro256Plus::seed_from_u64(s.seed))
        .init_method(GmmInitMethod::KMeans)
        .n_runs(1)
        .max_n_iterations(s.max_iter as u64)
        .tolerance(s.tol)
        .reg_covariance(s.reg_covar)
        .fit(&dataset)
        .map_err(|e| match e {
            GmmError::LinalgError(_) => Error::NotPositiveDefinite,
            GmmError::NotConverged(_) => Error::NotConverged(s.max_iter),
            other => Error::Other(other.to_string()),
        })?;
    let labels: Vec<u32> = model.predict(&records).iter().map(|&c| c as u32).collect();
    let log_likelihood = mean_log_likelihood(&model, &records);
    if !log_likelihood.is_finite() {
        return Err(Error::NotPositiveDefinite);
    }
    // Free parameters: k - 1 weights, k d means, k d (d + 1) / 2 covariance entries.
    let (k, d) = (s.k as f64, dim as f64);
    let params = (k - 1.0) + k * d + k * d * (d + 1.0) / 2.0;
    let bic = -2.0 * log_likelihood * n as f64 + params * (n as f64).ln();
    Ok(Fitted { labels, log_likelihood, bic })
}

/// Mean over the points of log sum_j w_j N(x | mu_j, Sigma_j), from the model's precisions.
fn mean_log_likelihood(model: &GaussianMixtureModel<f64>, x: &Array2<f64>) -> f64 {
    let (k, d) = (model.means().nrows(), x.ncols());
    let mut per_component = Vec::with_capacity(k);
    for j in 0..k {
        let precision = model.precisions().index_axis(ndarray::Axis(0), j).to_owned();
        // log det Sigma^-1 from a Cholesky factor of the precision.
        let Some(chol) = cholesky(&precision) else { return f64::NAN };
        let log_det_precision: f64 = (0..d).map(|i| 2.0 * chol[[i, i]].ln()).sum();
        per_component.push((precision, log_det_precision));
    }
    let mut total = 0f64;
    for row in x.outer_iter() {
        let logs: Vec<f64> = (0..k)
            .map(|j| {
                let diff = &row - &model.means().row(j);
                let (p, log_det) = &per_component[j];
                let maha = diff.dot(&p.dot(&diff));
                model.weights()[j].ln() + 0.5 * (log_det - maha - d as f64 * (2.0 * std::f64::consts::PI).ln())
            })
            .collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        total += max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    }
    total / x.nrows() as f64
}

fn cholesky(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|p| l[[i, p]] * l[[j, p]]).sum();
            if i == j {
                let v = a[[i, i]] - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[[i, i]] = v.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_and_bad_input_are_errors_not_panics() {
        // Three exact points repeated: every covariance is zero, not positive definite.
        let pts: Vec<f32> = (0..30).flat_map(|i| [(i % 3) as f32 * 5.0, 1.0]).collect();
        let s = Settings { k: 3, seed: 0, max_iter: 100, tol: 1e-3, reg_covar: 0.0 };
        let e = fit(&pts, 2, &s).unwrap_err();
        assert!(matches!(e, Error::NotPositiveDefinite | Error::Other(_) | Error::NotConverged(_)), "{e}");
        // reg_covar makes the same data a clean fit.
        let ok = fit(&pts, 2, &Settings { reg_covar: 1e-3, ..s.clone() }).unwrap();
        assert_eq!(ok.labels.len(), 30);
        assert!(matches!(fit(&pts, 2, &Settings { k: 31, ..s.clone() }), Err(Error::TooFewPoints { k: 31, points: 30 })));
        let mut nan = pts.clone();
        nan[3] = f32::NAN;
        assert!(matches!(fit(&nan, 2, &s), Err(Error::NotFinite { bad: 1 })));
        assert_eq!(
            crate::analysis::agglomerative::fit(&nan, 2, 3, crate::analysis::agglomerative::Linkage::Ward),
            Err(crate::analysis::agglomerative::Error::NotFinite { bad: 1 })
        );
        assert_eq!(crate::analysis::hdbscan::fit(&nan, 2, 5, None), Err(crate::analysis::hdbscan::Error::NotFinite { bad: 1 }));
    }
}
