//! `pipeline runs`: the experiments the run-cache holds (as `dvc exp show` lists them). Every
//! `score` entry in the store is one finished run of the whole matrix; its settings are the
//! params of the entries that produced its inputs, found by following output hashes back through
//! the store's manifests. Each run is shown with the settings that differ from the current
//! config and its headline metrics; `metrics --diff run:<fingerprint prefix>` compares with one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::artifacts::score::{Metric, Metrics, METRICS};
use crate::pipeline::finished::RunCache;
use crate::pipeline::{Graph, LockFile, RunRecord};
use crate::stages::SCORE;

/// One run in the run-cache.
#[derive(Debug, Clone, Serialize)]
pub struct PastRun {
    /// The `score` entry's fingerprint.
    pub fingerprint: String,
    /// When `score` finished (seconds since the Unix epoch).
    pub finished_at: u64,
    /// Whether the lock file names it (the current run).
    pub current: bool,
    /// `key: its values (now: the current config's)`, for every setting that differs.
    pub differs: Vec<String>,
    /// `dataset.model` -> (mean purity over every seed, best purity: the oracle, chosen with the labels).
    pub purity: BTreeMap<String, (f64, f64)>,
}

/// Every setting a stage and its ancestors declare: key -> the values it takes.
type Settings = BTreeMap<String, BTreeSet<String>>;

fn add(settings: &mut Settings, params: &crate::pipeline::Params) {
    for (k, v) in params {
        settings.entry(k.clone()).or_default().insert(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    }
}

/// The runs of the run-cache under `artifacts`, oldest first.
pub fn list(graph: &Graph, artifacts: &Path) -> anyhow::Result<Vec<PastRun>> {
    let cache = RunCache::open(artifacts)?;
    let lock = LockFile::load(artifacts)?;
    let records: Vec<RunRecord> = cache.records()?;
    // Which entries produced each output hash (several may have, with other settings: a
    // config.json does not change with the epochs).
    let mut producers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, rec) in records.iter().enumerate() {
        for f in rec.outputs.values() {
            producers.entry(f.blake3.as_str()).or_default().push(i);
        }
    }
    // The entry that fed `consumer` this hash: of those that produced it, the one that also
    // produced the most of the consumer's other inputs, then the latest not after the consumer.
    let producer = |consumer: &RunRecord, hash: &str| -> Option<usize> {
        let wanted: BTreeSet<&str> = consumer.inputs.values().map(String::as_str).collect();
        producers.get(hash)?.iter().copied().max_by_key(|&i| {
            let r = &records[i];
            let shared = r.outputs.values().filter(|f| wanted.contains(f.blake3.as_str())).count();
            (shared, r.finished_at <= consumer.finished_at, r.finished_at)
        })
    };
    // The current config's settings that a score depends on: those of score and its ancestors.
    let mut now = Settings::new();
    let upstream = graph.with_ancestors(&[SCORE.to_owned()])?;
    for spec in graph.ordered().filter(|s| upstream.contains(&s.id)) {
        add(&mut now, &spec.params);
    }
    let current = lock.stages.get(SCORE).map(|r| r.fingerprint.clone());
    let mut runs = Vec::new();
    for rec in records.iter().filter(|r| r.kind == "score") {
        let mut settings = Settings::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![rec];
        while let Some(r) = todo.pop() {
            if !seen.insert(r.fingerprint.as_str()) {
                continue;
            }
            add(&mut settings, &r.params);
            todo.extend(r.inputs.values().filter_map(|h| producer(r, h)).map(|i| &records[i]));
        }
        let show = |v: Option<&BTreeSet<String>>| v.map_or("-".to_owned(), |s| s.iter().cloned().collect::<Vec<_>>().join(", "));
        let differs = settings
            .keys()
            .chain(now.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| settings.get(*k) != now.get(*k))
            .map(|k| format!("{k}: {} (now: {})", show(settings.get(k)), show(now.get(k))))
            .collect();
        let metrics = cache.read(rec, SCORE, METRICS).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice::<Metrics>(&b)?));
        let purity = metrics
            .map(|m| {
                m.models
                    .iter()
                    .map(|mm| (format!("{}.{}", mm.dataset, mm.model), (mm.mean(Metric::Purity), mm.best(Metric::Purity))))
                    .collect()
            })
            .unwrap_or_default();
        runs.push(PastRun {
            fingerprint: rec.fingerprint.clone(),
            finished_at: rec.finished_at,
            current: current.as_deref() == Some(rec.fingerprint.as_str()),
            differs,
            purity,
        });
    }
    // Oldest first; within one second, the current run last.
    runs.sort_by_key(|r| (r.finished_at, r.current, r.fingerprint.clone()));
    Ok(runs)
}

/// The metrics of the run whose `score` fingerprint starts with `prefix` (at least 6 digits).
pub fn metrics_of(artifacts: &Path, prefix: &str) -> anyhow::Result<Value> {
    anyhow::ensure!(
        prefix.len() >= 6 && prefix.bytes().all(|b| b.is_ascii_hexdigit()),
        "run:{prefix}: give at least 6 hex digits of a fingerprint from `pipeline runs`"
    );
    let cache = RunCache::open(artifacts)?;
    let found: Vec<RunRecord> = cache.records()?.into_iter().filter(|r| r.fingerprint.starts_with(prefix) && r.kind == "score").collect();
    match found.as_slice() {
        [rec] => Ok(serde_json::from_slice(&cache.read(rec, SCORE, METRICS)?)?),
        [] => anyhow::bail!("run:{prefix}: no run in {} has that fingerprint (see `pipeline runs`)", artifacts.display()),
        many => anyhow::bail!("run:{prefix} is ambiguous: {} runs match; give more digits", many.len()),
    }
}

/// `runs` as a table: one block per run.
pub fn table(runs: &[PastRun]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no finished run in the run-cache yet: `pipeline run` first\n");
    }
    for r in runs {
        let _ =
            writeln!(out, "run:{}  finished {}{}", &r.fingerprint[..12], utc(r.finished_at), if r.current { "  (current)" } else { "" });
        if r.differs.is_empty() && !r.current {
            out.push_str("  same settings as the current config\n");
        }
        for d in &r.differs {
            let _ = writeln!(out, "  {d}");
        }
        let purity: Vec<String> = r.purity.iter().map(|(m, (mean, best))| format!("{m} {mean:.4} (oracle {best:.4})")).collect();
        let _ = writeln!(out, "  purity: {}", purity.join(", "));
    }
    out
}

/// `2026-11-30 01:23 UTC` (civil date from days since the epoch).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = (secs % 86_400 / 3600, secs % 3600 / 60);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02} UTC")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc(1_796_001_780), "2026-11-30 01:23 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}
