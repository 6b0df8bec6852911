//! Freshness: is a stage's recorded run still valid for the current config, code and inputs?

use serde::Serialize;

use super::fingerprint::{fingerprint, InputHashes};
use super::lockfile::LockFile;
use super::spec::StageSpec;
use super::store::{Health, RunRecord, Store};

/// The verdict on one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The lock's record matches and its files check out.
    Fresh,
    /// Must be brought up to date. `cached` holds a valid store entry for the current
    /// fingerprint (a reverted edit): it is restored instead of run.
    Stale { reason: String, cached: Option<RunRecord> },
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    /// None when an upstream stage is stale (its output hashes are not known yet).
    pub fingerprint: Option<String>,
    pub inputs: InputHashes,
    pub verdict: Verdict,
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
/// is (still) stale, in which case this one is stale too.
pub fn evaluate(spec: &StageSpec, lock: &LockFile, store: &Store, verify: bool, upstream_stale: impl Fn(&str) -> bool) -> Evaluation {
    let stale =
        |reason: String| Evaluation { fingerprint: None, inputs: InputHashes::new(), verdict: Verdict::Stale { reason, cached: None } };
    let mut inputs = InputHashes::new();
    for input in &spec.inputs {
        if upstream_stale(&input.stage) {
            return stale(format!("upstream stale: {}", input.stage));
        }
        let hash = lock.stages.get(&input.stage).and_then(|r| r.outputs.get(&input.file));
        match hash {
            Some(f) => {
                inputs.insert(input.key(), f.blake3.clone());
            }
            None => return stale(format!("upstream stale: {}", input.stage)),
        }
    }
    let fp = fingerprint(spec.kind.kind(), spec.kind.version(), &spec.params, &inputs);
    let reason = match lock.stages.get(&spec.id) {
        None => "never run".to_owned(),
        Some(rec) if rec.fingerprint == fp => match store.check(rec, verify) {
            Health::Ok => return Evaluation { fingerprint: Some(fp), inputs, verdict: Verdict::Fresh },
            Health::Missing => "missing".to_owned(),
            Health::Corrupt(file) => format!("corrupt: {}/{file}", spec.id),
        },
        Some(rec) => explain(spec, rec, &inputs),
    };
    let cached = match store.manifest(&fp) {
        Ok(Some(rec)) if rec.fingerprint == fp && store.check(&rec, verify) == Health::Ok => Some(rec),
        _ => None,
    };
    Evaluation { fingerprint: Some(fp), inputs, verdict: Verdict::Stale { reason, cached } }
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
