//! Statistics over training seeds: mean, sample standard deviation and a 95% confidence
//! interval (Student's t), and Welch's t-test for the difference of two models' means.
//!
//! Welch rather than Student: two architectures need not vary equally across seeds. Rather
//! than a permutation test: with five seeds per model there are only C(10, 5) = 252
//! relabellings, so the smallest possible p-value is 2/252 ≈ 0.008 and p moves in coarse steps.
//! The t distribution comes from the regularised incomplete beta function (Lentz's continued
//! fraction), the gamma function from Lanczos' approximation (g = 7, 9 terms).

use serde::{Deserialize, Serialize};

/// One metric over n training seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); `None` for one value.
    pub std: Option<f64>,
    /// 95% confidence interval of the mean (Student's t, n - 1 degrees of freedom); `None`
    /// for one value.
    pub ci95: Option<[f64; 2]>,
}

impl Stats {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Self { n, mean, std: None, ci95: None };
        }
        let std = sample_var(values, mean).sqrt();
        let half = t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt();
        Self { n, mean, std: Some(std), ci95: Some([mean - half, mean + half]) }
    }
}

/// The result of Welch's two-sample t-test of mean(a) - mean(b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    pub diff: f64,
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// 95% confidence interval of the difference.
    pub ci95: [f64; 2],
}

/// `None` when either side has fewer than two values or both are constant.
pub fn welch(a: &[f64], b: &[f64]) -> Option<TTest> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ma, mb) = (a.iter().sum::<f64>() / na, b.iter().sum::<f64>() / nb);
    let (va, vb) = (sample_var(a, ma) / na, sample_var(b, mb) / nb);
    let se = (va + vb).sqrt();
    if se == 0.0 || !se.is_finite() {
        return None;
    }
    let diff = ma - mb;
    let t = diff / se;
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let p = two_sided_p(t, df);
    let half = t_quantile(0.975, df) * se;
    Some(TTest { diff, t, df, p, ci95: [diff - half, diff + half] })
}

fn sample_var(values: &[f64], mean: f64) -> f64 {
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64
}

/// P(|T| >= |t|) for Student's t with `df` degrees of freedom.
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// P(T <= t).
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * two_sided_p(t, df);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p` quantile of Student's t (bisection on the CDF, to 1e-12).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "quantile of {p}");
    let (mut lo, mut hi) = (-1e6, 1e6);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularised incomplete beta function I_x(a, b).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of I_x(a, b), evaluated by the modified Lentz method.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step.
        let num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        h *= d * c;
        // Odd step.
        let num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    //! Reference values from SciPy (`tests/data/stats_reference.py`).
    use super::*;

    const A: [f64; 5] = [0.6832, 0.6978, 0.6511, 0.6702, 0.6650];
    const B: [f64; 5] = [0.7742, 0.6980, 0.7301, 0.7555, 0.7102];

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn t_distribution_matches_scipy() {
        for (df, q) in [
            (1.0, 12.706204736174694),
            (4.0, 2.7764451051977934),
            (9.0, 2.262157162798205),
            (30.0, 2.0422724563012378),
            (7.5, 2.333039626864974),
        ] {
            assert!(close(t_quantile(0.975, df), q, 1e-9), "df {df}: {} vs {q}", t_quantile(0.975, df));
        }
        for (t, df, p) in [(0.5, 3.0, 0.6742760175759245), (-2.0, 7.0, 0.042809664281488025), (3.3, 12.4, 0.9969557052128469)] {
            assert!(close(t_cdf(t, df), p, 1e-10), "cdf({t}, {df}) = {} vs {p}", t_cdf(t, df));
        }
    }

    #[test]
    fn mean_sd_and_interval_match_scipy() {
        let s = Stats::of(&A);
        assert_eq!(s.n, 5);
        assert!(close(s.mean, 0.67346, 1e-12));
        assert!(close(s.std.unwrap(), 0.017814825286822197, 1e-12));
        let [lo, hi] = s.ci95.unwrap();
        assert!(close(lo, 0.6513399728070628, 1e-9) && close(hi, 0.6955800271929371, 1e-9), "{lo} {hi}");
        let one = Stats::of(&[0.5]);
        assert_eq!((one.mean, one.std, one.ci95), (0.5, None, None));
    }

    #[test]
    fn welch_matches_scipy_ttest_ind_unequal_var() {
        let w = welch(&B, &A).unwrap();
        assert!(close(w.t, 3.72092914212428, 1e-10), "{w:?}");
        assert!(close(w.df, 6.327918508781709, 1e-10), "{w:?}");
        assert!(close(w.p, 0.008936625707037637, 1e-8), "{w:?}");
        assert!(close(w.ci95[0], 0.021082987280898448, 1e-8) && close(w.ci95[1], 0.09919701271910172, 1e-8), "{w:?}");
        assert!(welch(&A, &[0.1]).is_none());
        assert!(welch(&[1.0, 1.0], &[1.0, 1.0]).is_none());
    }
}
