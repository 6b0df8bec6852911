//! The seed notebook's published numbers and the Markdown report that sets ours beside them.

use std::fmt::Write as _;

use serde_json::Value;

use crate::models::Arch;

/// What the seed notebook reported for a model: test MSE and best-of-10 purity.
#[derive(Debug, Clone, Copy)]
pub struct SeedNumbers {
    pub test_mse: f64,
    pub purity: f64,
}

pub fn seed_numbers(arch: Arch) -> SeedNumbers {
    match arch {
        Arch::Simple => SeedNumbers { test_mse: 0.021359, purity: 0.6589 },
        Arch::Conv => SeedNumbers { test_mse: 0.016341, purity: 0.7059 },
    }
}

fn summary(m: &Value, key: &str) -> String {
    let s = &m[key];
    match (s["best"].as_f64(), s["mean"].as_f64(), s["std"].as_f64()) {
        (Some(b), Some(mean), Some(std)) => format!("{b:.4} ({mean:.4} ± {std:.4})"),
        _ => "—".into(),
    }
}

/// The metrics table (Markdown) of a `score/metrics.json`, with the seed's numbers.
pub fn metrics_table(metrics: &Value) -> String {
    let mut out = String::new();
    out.push_str("| model | test MSE | seed's test MSE | purity, best (mean ± std) | seed's purity | NMI | ARI | ACC |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for arch in Arch::ALL {
        let m = &metrics[arch.name()];
        let seed = seed_numbers(arch);
        let mse = m["test_mse"].as_f64().map_or("—".into(), |v| format!("{v:.5}"));
        let _ = writeln!(
            out,
            "| {} | {mse} | {:.5} | {} | {:.4} | {} | {} | {} |",
            arch.name(),
            seed.test_mse,
            summary(m, "purity"),
            seed.purity,
            summary(m, "nmi"),
            summary(m, "ari"),
            summary(m, "acc"),
        );
    }
    out
}

/// The facts of one run that the report states: every number comes from the run.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Training images each model saw, in `Arch::ALL` order.
    pub train_images: Vec<usize>,
    pub test_images: usize,
    pub k: usize,
    pub seeds: Vec<u64>,
}

/// `60000` -> `60,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `report.md`: the question, the metrics beside the seed's, and the figures.
pub fn markdown(metrics: &Value, facts: &RunFacts, figures: &[(&str, &str)]) -> String {
    let mut out = String::new();
    out.push_str("# latentscope report\n\n");
    out.push_str("Does an autoencoder's latent space, learned without labels, group MNIST digits by class? ");
    let dims: Vec<String> = Arch::ALL.iter().map(|a| format!("{}, {}-d latent", a.class_name(), a.latent_dim())).collect();
    let trained = match facts.train_images.as_slice() {
        [n, rest @ ..] if rest.iter().all(|m| m == n) => format!("{} training images", thousands(*n as u64)),
        counts => format!("{} training images respectively", counts.iter().map(|&n| thousands(n as u64)).collect::<Vec<_>>().join(" and ")),
    };
    let _ = write!(
        out,
        "Two autoencoders ({}) were trained on {trained}; their encodings of the {} test images were clustered \
         with k-means (k = {}, k-means++) for each of {} seeds ({}) and scored against the true labels.\n\n",
        dims.join("; "),
        thousands(facts.test_images as u64),
        facts.k,
        facts.seeds.len(),
        facts.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    );
    out.push_str("## Metrics\n\n");
    out.push_str(&metrics_table(metrics));
    out.push_str("\nPurity as the seed defines it (each cluster counts its most common label); NMI with arithmetic ");
    out.push_str("normalisation; ARI adjusted for chance; ACC under the best one-to-one cluster-to-label matching ");
    out.push_str("(Hungarian). Best, mean and population standard deviation over the k-means seeds.\n\n");
    out.push_str("## Figures\n\n");
    for (file, caption) in figures {
        let _ = write!(out, "### {caption}\n\n![{caption}]({file})\n\n");
    }
    out
}

/// The `score` stage's metrics as recorded by a lock file (read from the store entry it names).
pub fn metrics_of_lock(artifacts: &std::path::Path, lock: &crate::pipeline::LockFile, what: &str) -> anyhow::Result<Value> {
    let id = crate::stages::score::ID;
    let record = lock.stages.get(id).ok_or_else(|| anyhow::anyhow!("{what} has no {id} stage: run the pipeline first"))?;
    let path = crate::pipeline::Store::open_read_only(artifacts)?.entry_dir(&record.fingerprint).join(crate::stages::score::METRICS);
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!("{what}: the {id} outputs it names are not in the store ({}: {e}); was it removed by gc?", path.display())
    })?;
    let want = record.outputs.get(crate::stages::score::METRICS).map(|f| f.blake3.as_str());
    anyhow::ensure!(want == Some(blake3::hash(&bytes).to_hex().as_str()), "{}: content differs from {what}", path.display());
    Ok(serde_json::from_slice(&bytes)?)
}

/// The (model, metric, value) rows compared by `metrics --diff`.
pub fn flat_metrics(metrics: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for arch in Arch::ALL {
        let m = &metrics[arch.name()];
        if let Some(v) = m["test_mse"].as_f64() {
            out.push((format!("{}.test_mse", arch.name()), v));
        }
        for key in ["purity", "nmi", "ari", "acc"] {
            for stat in ["best", "mean", "std"] {
                if let Some(v) = m[key][stat].as_f64() {
                    out.push((format!("{}.{key}.{stat}", arch.name()), v));
                }
            }
        }
    }
    out
}

/// `metrics --diff`: old, new and change for every metric either side has.
pub fn diff_table(old: &Value, new: &Value) -> String {
    let (old, new) = (flat_metrics(old), flat_metrics(new));
    let mut keys: Vec<&String> = new.iter().map(|(k, _)| k).collect();
    for (k, _) in &old {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let get = |rows: &[(String, f64)], k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
    let mut out = format!("{:<22} {:>10} {:>10} {:>10}\n", "metric", "old", "new", "change");
    for k in keys {
        let (o, n) = (get(&old, k), get(&new, k));
        let fmt = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.4}"));
        let change = match (o, n) {
            (Some(o), Some(n)) => format!("{:+.4}", n - o),
            _ => "—".into(),
        };
        let _ = writeln!(out, "{k:<22} {:>10} {:>10} {change:>10}", fmt(o), fmt(n));
    }
    out
}
