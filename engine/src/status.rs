//! Freshness: is a stage's recorded run still valid for the current config, code and inputs?

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::filestate::FileState;
use super::fingerprint::{fingerprint, InputHashes};
use super::lockfile::{LockFile, SAFE_TO_DELETE};
use super::spec::{Params, StageSpec};
use super::store::{Health, RunRecord, Store, View};

/// The verdict on one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The lock's record matches and its files check out.
    Fresh,
    /// Must be brought up to date. `cached` holds a valid store entry for the current
    /// fingerprint (a reverted edit): it is restored instead of run.
    Stale { reason: StaleReason, cached: Option<Box<RunRecord>> },
}

/// Why a stage is stale. `Display` gives the sentence `status` prints; `status --json` also
/// carries the typed form (`cause`), for tools.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StaleReason {
    NeverRun,
    /// An upstream stage is stale, so this one's inputs are not known yet.
    UpstreamStale {
        stage: String,
    },
    /// The lock record cannot be parsed.
    Unreadable {
        why: String,
    },
    /// The stage now declares other outputs than its recorded run wrote (a model added to
    /// the config gives `plot` a figure more).
    OutputsChanged {
        added: Vec<String>,
        removed: Vec<String>,
    },
    CannotReadInput {
        name: String,
        path: PathBuf,
        error: String,
    },
    /// The entry is sound; only the view (the `artifacts/<stage>` link) is wrong.
    ViewMissing {
        stage: String,
    },
    ViewElsewhere {
        stage: String,
        target: PathBuf,
    },
    ViewNotALink {
        stage: String,
    },
    /// The recorded entry is gone from the store.
    Missing,
    /// A file of the recorded entry has another hash.
    Corrupt {
        stage: String,
        file: String,
    },
    /// The recorded run was made with other code, params or inputs.
    Changed {
        /// (kind, version) recorded -> now, when the code changed.
        code: Option<((String, u32), (String, u32))>,
        params: Vec<ParamChange>,
        /// The upstream stages and outside files whose content changed.
        inputs: Vec<String>,
        /// Inputs were added or removed (and none of the kept ones changed).
        inputs_differ: bool,
    },
}

/// One param that differs between a recorded run and the current spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamChange {
    pub key: String,
    /// `None`: the key is new (old) or removed (new).
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl std::fmt::Display for ParamChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>, absent: &str| v.as_ref().map_or(absent.to_owned(), Value::to_string);
        write!(f, "{} {} -> {}", self.key, show(&self.old, "(new)"), show(&self.new, "(removed)"))
    }
}

/// The params that differ between `old` and `new`, in key order.
pub fn param_changes(old: &Params, new: &Params) -> Vec<ParamChange> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| ParamChange { key: k.clone(), old: old.get(k).cloned(), new: new.get(k).cloned() })
        .collect()
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StaleReason::NeverRun => f.write_str("never run"),
            StaleReason::UpstreamStale { stage } => write!(f, "upstream stale: {stage}"),
            StaleReason::Unreadable { why } => write!(f, "lock record unreadable ({why}); {SAFE_TO_DELETE}"),
            StaleReason::OutputsChanged { added, removed } => {
                let files: Vec<String> = added.iter().map(|a| format!("+ {a}")).chain(removed.iter().map(|r| format!("- {r}"))).collect();
                write!(f, "outputs changed: {}", files.join(", "))
            }
            StaleReason::CannotReadInput { name, path, error } => write!(f, "cannot read input {name} ({}): {error}", path.display()),
            StaleReason::ViewMissing { stage } => write!(f, "view missing: {stage}"),
            StaleReason::ViewElsewhere { stage, target } => {
                write!(f, "view {stage} points at {}, not at its lock record's entry", target.display())
            }
            StaleReason::ViewNotALink { stage } => write!(f, "{stage} is not a link into the store"),
            StaleReason::Missing => f.write_str("missing"),
            StaleReason::Corrupt { stage, file } => write!(f, "corrupt: {stage}/{file}"),
            StaleReason::Changed { code, params, inputs, inputs_differ } => {
                let mut parts = Vec::new();
                if let Some(((k0, v0), (k1, v1))) = code {
                    parts.push(format!("code changed: {k0} v{v0} -> {k1} v{v1}"));
                }
                if !params.is_empty() {
                    parts.push(format!("params changed: {}", params.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
                }
                if *inputs_differ {
                    parts.push("inputs changed".to_owned());
                }
                if !inputs.is_empty() {
                    parts.push(format!("input changed: {}", inputs.join(", ")));
                }
                if parts.is_empty() {
                    parts.push("fingerprint changed".to_owned());
                }
                f.write_str(&parts.join("; "))
            }
        }
    }
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
            Verdict::Stale { reason, cached: None } => reason.to_string(),
        }
    }

    /// The typed reason, when stale.
    pub fn cause(&self) -> Option<&StaleReason> {
        match &self.verdict {
            Verdict::Fresh => None,
            Verdict::Stale { reason, .. } => Some(reason),
        }
    }
}

/// One row of `status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub stage: String,
    pub fresh: bool,
    pub reason: String,
    /// The typed reason (absent when fresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<StaleReason>,
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
    let stale = |reason: StaleReason| Evaluation {
        fingerprint: None,
        inputs: InputHashes::new(),
        verdict: Verdict::Stale { reason, cached: None },
        refresh: None,
    };
    // A damaged record is the first thing to say about a stage, whatever its upstream.
    let damaged = match (lock.stages.get(&spec.id), lock.unreadable.get(&spec.id)) {
        (_, Some(why)) => Some(StaleReason::Unreadable { why: why.clone() }),
        (Some(rec), None) if !declares_same_outputs(spec, rec) => {
            let added: Vec<String> = spec.outputs.iter().filter(|o| !rec.outputs.contains_key(*o)).cloned().collect();
            let removed: Vec<String> = rec.outputs.keys().filter(|o| !spec.outputs.contains(o)).cloned().collect();
            // The same code with the same params declares the same outputs: a record that
            // lists others was damaged. Otherwise the settings changed what the stage writes.
            let same_recipe = rec.kind == spec.kind.kind() && rec.version == spec.kind.version() && rec.params == spec.params;
            Some(match same_recipe {
                true if added.is_empty() => {
                    StaleReason::Unreadable { why: format!("it lists outputs the stage does not write: {}", removed.join(", ")) }
                }
                true => StaleReason::Unreadable { why: format!("no output {}", added.join(", ")) },
                false => StaleReason::OutputsChanged { added, removed },
            })
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
            _ => return stale(damaged.unwrap_or_else(|| StaleReason::UpstreamStale { stage: input.stage.clone() })),
        }
    }
    for file in &spec.files {
        match files.hash(&file.path, verify) {
            Ok(hash) => {
                inputs.insert(file.key(), hash);
            }
            Err(e) => {
                return stale(StaleReason::CannotReadInput { name: file.name.clone(), path: file.path.clone(), error: e.to_string() })
            }
        }
    }
    let fp = fingerprint(spec.kind.kind(), spec.kind.version(), &spec.params, &inputs);
    let reason = match (lock.stages.get(&spec.id), damaged) {
        (_, Some(damaged)) => damaged,
        (None, None) => StaleReason::NeverRun,
        (Some(rec), None) if rec.fingerprint == fp => match store.check(rec, verify) {
            health @ (Health::Ok | Health::Touched(_)) => {
                let current = with_mtimes(rec, &health);
                let refresh = (current != *rec).then(|| current.clone());
                match store.view(&spec.id, &fp) {
                    View::Ok => return Evaluation { fingerprint: Some(fp), inputs, verdict: Verdict::Fresh, refresh },
                    // The entry is sound; only the link is wrong: restoring it is all a run does.
                    view => {
                        let stage = spec.id.clone();
                        let reason = match view {
                            View::Missing => StaleReason::ViewMissing { stage },
                            View::Elsewhere(target) => StaleReason::ViewElsewhere { stage, target },
                            _ => StaleReason::ViewNotALink { stage },
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
            Health::Missing => StaleReason::Missing,
            Health::Corrupt(file) => StaleReason::Corrupt { stage: spec.id.clone(), file },
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
fn explain(spec: &StageSpec, old: &RunRecord, inputs: &InputHashes) -> StaleReason {
    let code = (old.kind != spec.kind.kind() || old.version != spec.kind.version())
        .then(|| ((old.kind.clone(), old.version), (spec.kind.kind().to_owned(), spec.kind.version())));
    let mut changed: Vec<String> = Vec::new();
    for input in &spec.inputs {
        if old.inputs.get(&input.key()) != inputs.get(&input.key()) && !changed.contains(&input.stage) {
            changed.push(input.stage.clone());
        }
    }
    for file in &spec.files {
        if old.inputs.get(&file.key()) != inputs.get(&file.key()) {
            changed.push(file.name.clone());
        }
    }
    StaleReason::Changed {
        code,
        params: param_changes(&old.params, &spec.params),
        inputs_differ: old.inputs.len() != inputs.len() && changed.is_empty(),
        inputs: changed,
    }
}
