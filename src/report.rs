//! Queries of runs for the CLI and the README: the metrics of the current run (refused when it
//! is stale) or of a recorded one, `metrics --diff`'s rows and table, and the README block of
//! generated numbers. Everything is read through `FinishedRun`; rendering is `render.rs`.

use std::fmt::Write as _;

use serde_json::Value;

use crate::artifacts::score::{Metric, Metrics};
use crate::render::metrics_table;

/// The `score` stage's metrics as recorded by a lock file (read from the store entry it names,
/// checked by hash). `what` names the lock file in messages.
pub fn metrics_of_lock(artifacts: &std::path::Path, lock: crate::pipeline::LockFile, what: &str) -> anyhow::Result<Value> {
    let id = crate::stages::SCORE;
    if lock.stages.is_empty() {
        anyhow::bail!("no run yet in {}: `pipeline run` first", artifacts.display());
    }
    anyhow::ensure!(lock.stages.contains_key(id), "{what} has no {id} stage: run the whole pipeline first");
    let run = crate::pipeline::finished::FinishedRun::recorded(artifacts, lock, what)?;
    crate::artifacts::read_output(&run, id, crate::artifacts::score::METRICS)
}

/// The metrics of the current run, which must be complete and fresh: never another run's.
pub fn current_metrics(graph: &crate::pipeline::Graph, artifacts: &std::path::Path) -> anyhow::Result<Value> {
    let lock = crate::pipeline::LockFile::load(artifacts)?;
    anyhow::ensure!(!lock.stages.is_empty() || !lock.unreadable.is_empty(), "no run yet in {}: `pipeline run` first", artifacts.display());
    let run = crate::pipeline::finished::FinishedRun::current(graph, artifacts)?;
    crate::artifacts::read_output(&run, crate::stages::SCORE, crate::artifacts::score::METRICS)
}

/// The (dataset.model.metric, value) rows compared by `metrics --diff`, from a `metrics.json`
/// of this version or an older one (those were MNIST only). With one training seed the keys
/// are `mnist.simple.purity.best`; with several, `mnist.simple.s42.purity.best` per trained
/// model and `mnist.simple.purity.mean_over_seeds` (and `.std_over_seeds`) over them.
pub fn flat_metrics(metrics: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(m) = serde_json::from_value::<Metrics>(metrics.clone()) else {
        // The format before training seeds (MNIST only): {"simple": {"test_mse": ..., "purity": {...}}, ...}.
        for name in ["simple", "conv"] {
            let block = &metrics[name];
            if let Some(v) = block["test_mse"].as_f64() {
                out.push((format!("mnist.{name}.test_mse"), v));
            }
            for key in Metric::ALL.map(Metric::key) {
                for stat in ["best", "mean", "std"] {
                    if let Some(v) = block[key][stat].as_f64() {
                        out.push((format!("mnist.{name}.{key}.{stat}"), v));
                    }
                }
            }
        }
        return out;
    };
    let several = m.training_seeds.len() > 1;
    for model in m.models.iter().chain(&m.baselines) {
        let name = format!("{}.{}", model.dataset, model.model);
        for r in &model.runs {
            let prefix = match r.training_seed {
                Some(s) if several => format!("{name}.s{s}"),
                _ => name.clone(),
            };
            if let Some(mse) = r.test_mse {
                out.push((format!("{prefix}.test_mse"), mse));
            }
            for metric in Metric::ALL {
                let (key, s) = (metric.key(), r.metric(metric));
                for (stat, v) in [("best", s.best), ("mean", s.mean), ("std", s.std)] {
                    out.push((format!("{prefix}.{key}.{stat}"), v));
                }
            }
        }
        if several && model.runs.len() > 1 {
            for (key, s) in &model.over_training_seeds {
                out.push((format!("{name}.{key}.mean_over_seeds"), s.mean));
                if let Some(sd) = s.std {
                    out.push((format!("{name}.{key}.std_over_seeds"), sd));
                }
            }
        }
    }
    out
}

/// The metrics `metrics --diff SOURCE` compares with: `hub:OWNER/NAME[@REV]` (a published
/// run), `run:<fingerprint prefix>` (the run-cache), a saved lock file (its `score` entry,
/// read from the store) or a `metrics.json`.
pub fn metrics_of_source(artifacts: &std::path::Path, source: &std::path::Path) -> anyhow::Result<Value> {
    use anyhow::Context as _;
    let text = source.to_str();
    if let Some(spec) = text.and_then(|p| p.strip_prefix("hub:")) {
        return crate::hub::published_metrics(spec, None).with_context(|| format!("--diff {}", source.display()));
    }
    if let Some(prefix) = text.and_then(|p| p.strip_prefix("run:")) {
        return crate::runs::metrics_of(artifacts, prefix);
    }
    let bytes = std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
    let value: Value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", source.display()))?;
    if value.get("stages").is_none() {
        return Ok(value);
    }
    let lock = crate::pipeline::LockFile::load_file(source)?;
    metrics_of_lock(artifacts, lock, &source.display().to_string())
}

/// `metrics --diff --json`: `{"old": {row: value}, "new": {...}}`.
pub fn diff_json(old: &Value, new: &Value) -> Value {
    let rows = |m: &Value| -> serde_json::Map<String, Value> { flat_metrics(m).into_iter().map(|(k, v)| (k, v.into())).collect() };
    serde_json::json!({"old": rows(old), "new": rows(new)})
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
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(6).max(6);
    let mut out = format!("{:<width$} {:>10} {:>10} {:>10}\n", "metric", "old", "new", "change");
    for k in keys {
        let (o, n) = (get(&old, k), get(&new, k));
        let fmt = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.4}"));
        let change = match (o, n) {
            (Some(o), Some(n)) => format!("{:+.4}", n - o),
            _ => "—".into(),
        };
        let _ = writeln!(out, "{k:<width$} {:>10} {:>10} {change:>10}", fmt(o), fmt(n));
    }
    out
}

/// The markers around README.md's generated numbers.
pub const README_BEGIN: &str = "<!-- readme-numbers:begin (cargo xtask readme-numbers writes this block) -->";
pub const README_END: &str = "<!-- readme-numbers:end -->";

/// `text` with the block between the markers replaced by `block`.
pub fn replace_marked(text: &str, block: &str) -> anyhow::Result<String> {
    let start = text.find(README_BEGIN).ok_or_else(|| anyhow::anyhow!("no line {README_BEGIN}"))?;
    let end =
        text[start..].find(README_END).map(|i| start + i).ok_or_else(|| anyhow::anyhow!("no line {README_END} after the begin marker"))?;
    Ok(format!("{}{README_BEGIN}\n{block}{}", &text[..start], &text[end..]))
}

/// The README block of the current run: the machine, the metrics table and the training
/// times, all read from the run (its lock file and store). The run must be complete.
pub fn readme_numbers(graph: &crate::pipeline::Graph, artifacts: &std::path::Path) -> anyhow::Result<String> {
    let run = crate::pipeline::finished::FinishedRun::current(graph, artifacts)?;
    let lock = run.lock();
    let score = run.record(crate::stages::SCORE)?;
    let metrics: Metrics = crate::artifacts::read_output(&run, crate::stages::SCORE, crate::artifacts::score::METRICS)?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Generated by `cargo xtask readme-numbers` from a complete run on {cpu} ({threads} threads), finished {}, latentscope {}:\n",
        crate::runs::utc(score.finished_at),
        crate::VERSION
    );
    out.push_str(&metrics_table(&metrics));
    let mut trainings: Vec<String> = Vec::new();
    for spec in graph.ordered().filter(|s| s.kind.kind() == "train") {
        if let Some(r) = lock.stages.get(&spec.id) {
            trainings.push(format!("`{}` {:.0} s on {}", spec.id, r.wall_time_s, r.device.as_deref().unwrap_or("?")));
        }
    }
    let total: f64 = lock.stages.values().map(|r| r.wall_time_s).sum();
    let _ = writeln!(out, "\nTraining: {}; all {} stages: {:.0} s of compute.", trainings.join(", "), lock.stages.len(), total);
    Ok(out)
}
