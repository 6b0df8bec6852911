//! Freshness: is a stage's recorded run still valid for the current config, code and inputs?

use serde::Serialize;

use super::filestate::FileState;
use super::fingerprint::{fingerprint, InputHashes};
use super::lockfile::{LockFile, SAFE_TO_DELETE};
use super::spec::StageSpec;
use super::store::{Health, RunRecord, Store, View};

/// The verdict on one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The lock's record matches and its files check out.
    Fresh,
    /// Must be brought up to date. `cached` holds a valid store entry for the current
    /// fingerprint (a reverted edit): it is restored instead of run.
    Stale { reason: String, cached: Option<Box<RunRecord>> },
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    /// None when an upstream stage is stale (its output hashes are not known yet).
    pub fingerprint: Option<String>,
    pub inputs: InputHashes,
    pub verdict: Verdict,
    /// For a fresh stage whose files were verified by hash under new mtimes: its lock
    /// record with those mtimes, to be saved so that the next quick check passes.
    pub refresh: Option<RunRecord>,
}

impl Evaluation {
    pub fn is_fresh(&self) -> bool {
        self.verdict == Verdict::Fresh
    }

    pub fn reason(&self) -> String {
        match &self.verdict {
            Verdict::Fresh => String::new(),
            Verdict::Stale { reason, cached: Some(_) } => format!("{reason} (in run-cache)"),
            Verdict::Stale { reason, cached: None } => reason.clone(),
        }
    }
}

/// One row of `status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub stage: String,
    pub fresh: bool,
    pub reason: String,
}

/// Evaluates `spec` against the lock file. `upstream_stale` says whether an upstream stage
/// is (still) stale, in which case this one is stale too. `files` hashes the files outside
/// the store that the stage reads.
pub fn evaluate(
    spec: &StageSpec,
    lock: &LockFile,
    store: &Store,
    files: &FileState,
    verify: bool,
    upstream_stale: impl Fn(&str) -> bool,
) -> Evaluation {
    let stale = |reason: String| Evaluation {
        fingerprint: None,
        inputs: InputHashes::new(),
        verdict: Verdict::Stale { reason, cached: None },
        refresh: None,
    };
    // A damaged record is the first thing to say about a stage, whatever its upstream.
    let damaged = match (lock.stages.get(&spec.id), lock.unreadable.get(&spec.id)) {
        (_, Some(why)) => Some(unreadable(why)),
        (Some(rec), None) if !declares_same_outputs(spec, rec) => {
            let missing: Vec<&str> = spec.outputs.iter().filter(|o| !rec.outputs.contains_key(*o)).map(String::as_str).collect();
            Some(unreadable(&if missing.is_empty() {
                "its outputs differ from the stage's".to_owned()
            } else {
                format!("no output {}", missing.join(", "))
            }))
        }
        _ => None,
    };
    let mut inputs = InputHashes::new();
    for input in &spec.inputs {
        let hash = lock.stages.get(&input.stage).and_then(|r| r.outputs.get(&input.file));
        match hash {
            Some(f) if !upstream_stale(&input.stage) => {
                inputs.insert(input.key(), f.blake3.clone());
            }
            _ => return stale(damaged.unwrap_or_else(|| format!("upstream stale: {}", input.stage))),
        }
    }
    for file in &spec.files {
        match files.hash(&file.path) {
            Ok(hash) => {
                inputs.insert(file.key(), hash);
            }
            Err(e) => return stale(format!("cannot read input {} ({}): {e}", file.name, file.path.display())),
        }
    }
    let fp = fingerprint(spec.kind.kind(), spec.kind.version(), &spec.params, &inputs);
    let reason = match (lock.stages.get(&spec.id), damaged) {
        (_, Some(damaged)) => damaged,
        (None, None) => "never run".to_owned(),
        (Some(rec), None) if rec.fingerprint == fp => match store.check(rec, verify) {
            health @ (Health::Ok | Health::Touched(_)) => {
                let current = with_mtimes(rec, &health);
                let refresh = (current != *rec).then(|| current.clone());
                match store.view(&spec.id, &fp) {
                    View::Ok => return Evaluation { fingerprint: Some(fp), inputs, verdict: Verdict::Fresh, refresh },
                    // The entry is sound; only the link is wrong: restoring it is all a run does.
                    view => {
                        let reason = match view {
                            View::Missing => format!("view missing: {}", spec.id),
                            View::Elsewhere(target) => {
                                format!("view {} points at {}, not at its lock record's entry", spec.id, target.display())
                            }
                            _ => format!("{} is not a link into the store", spec.id),
                        };
                        return Evaluation {
                            fingerprint: Some(fp),
                            inputs,
                            verdict: Verdict::Stale { reason, cached: Some(Box::new(current)) },
                            refresh: None,
                        };
                    }
                }
            }
            Health::Missing => "missing".to_owned(),
            Health::Corrupt(file) => format!("corrupt: {}/{file}", spec.id),
        },
        (Some(rec), None) => explain(spec, rec, &inputs),
    };
    let cached = match store.manifest(&fp) {
        Ok(Some(rec)) if rec.fingerprint == fp && declares_same_outputs(spec, &rec) => {
            // Restoring reuses an entry that no lock record vouched for: check it by hash.
            let health = store.check(&rec, true);
            health.is_intact().then(|| Box::new(with_mtimes(&rec, &health)))
        }
        _ => None,
    };
    Evaluation { fingerprint: Some(fp), inputs, verdict: Verdict::Stale { reason, cached }, refresh: None }
}

fn unreadable(why: &str) -> String {
    format!("lock record unreadable ({why}); {SAFE_TO_DELETE}")
}

fn declares_same_outputs(spec: &StageSpec, rec: &RunRecord) -> bool {
    rec.outputs.len() == spec.outputs.len() && spec.outputs.iter().all(|o| rec.outputs.contains_key(o))
}

/// `rec` with the mtimes that a `Touched` check found.
fn with_mtimes(rec: &RunRecord, health: &Health) -> RunRecord {
    let mut rec = rec.clone();
    if let Health::Touched(mtimes) = health {
        for (name, mtime) in mtimes {
            if let Some(f) = rec.outputs.get_mut(name) {
                f.mtime_ns = *mtime;
            }
        }
    }
    rec
}

/// Why the recorded run `old` no longer matches.
fn explain(spec: &StageSpec, old: &RunRecord, inputs: &InputHashes) -> String {
    let mut parts = Vec::new();
    if old.kind != spec.kind.kind() || old.version != spec.kind.version() {
        parts.push(format!("code changed: {} v{} -> {} v{}", old.kind, old.version, spec.kind.kind(), spec.kind.version()));
    }
    let mut changes = Vec::new();
    for (key, new) in &spec.params {
        match old.params.get(key) {
            Some(prev) if prev == new => {}
            Some(prev) => changes.push(format!("{key} {prev} -> {new}")),
            None => changes.push(format!("{key} (new) -> {new}")),
        }
    }
    for (key, prev) in &old.params {
        if !spec.params.contains_key(key) {
            changes.push(format!("{key} {prev} -> (removed)"));
        }
    }
    if !changes.is_empty() {
        parts.push(format!("params changed: {}", changes.join(", ")));
    }
    let mut changed_inputs: Vec<&str> = Vec::new();
    for input in &spec.inputs {
        if old.inputs.get(&input.key()) != inputs.get(&input.key()) && !changed_inputs.contains(&input.stage.as_str()) {
            changed_inputs.push(&input.stage);
        }
    }
    for file in &spec.files {
        if old.inputs.get(&file.key()) != inputs.get(&file.key()) {
            changed_inputs.push(&file.name);
        }
    }
    if old.inputs.len() != inputs.len() && changed_inputs.is_empty() {
        parts.push("inputs changed".to_owned());
    }
    if !changed_inputs.is_empty() {
        parts.push(format!("input changed: {}", changed_inputs.join(", ")));
    }
    if parts.is_empty() {
        parts.push("fingerprint changed".to_owned());
    }
    parts.join("; ")
}
