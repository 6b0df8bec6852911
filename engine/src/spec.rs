//! What a stage is, as the engine sees it: an id, a kind with a code version, the params it
//! reads, the upstream files it consumes and the files it promises to write. The engine knows
//! nothing of what a stage computes; stage kinds live in `crate::stages`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A stage's parameters: a flat map from dotted key (`kmeans.max_iter`) to its value.
pub type Params = BTreeMap<String, serde_json::Value>;

/// One file of an upstream stage that a stage reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputRef {
    pub stage: String,
    pub file: String,
}

impl InputRef {
    pub fn new(stage: impl Into<String>, file: impl Into<String>) -> Self {
        Self { stage: stage.into(), file: file.into() }
    }

    /// `stage/file`, the key used in the lock file and in messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.stage, self.file)
    }
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stage, self.file)
    }
}

/// A file outside the store that a stage reads (a local dataset). Its content hash is part
/// of the stage's fingerprint, like an upstream output's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    /// How messages and the lock file name it (the path as the config gives it).
    pub name: String,
    /// Where it is read from.
    pub path: PathBuf,
}

impl FileInput {
    /// The key of its hash among the stage's input hashes.
    pub fn key(&self) -> String {
        format!("file:{}", self.name)
    }
}

/// How much of the machine a stage uses while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// Single-threaded and short: many may run side by side.
    Light,
    /// Uses every core (training): runs alone.
    Heavy,
}

/// What a stage tells the engine about the run it just did.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    /// The compute device it ran on (`cpu`, `cuda:0`, ...).
    pub device: Option<String>,
}

/// Where a running stage finds its inputs and writes its outputs.
pub struct StageContext<'a> {
    pub stage_id: &'a str,
    pub params: &'a Params,
    inputs: BTreeMap<String, PathBuf>,
    out_dir: &'a Path,
    previous: Option<PathBuf>,
}

impl<'a> StageContext<'a> {
    pub(crate) fn new(stage_id: &'a str, params: &'a Params, inputs: BTreeMap<String, PathBuf>, out_dir: &'a Path) -> Self {
        Self { stage_id, params, inputs, out_dir, previous: None }
    }

    /// With the folder of this stage's last committed outputs (its view), if any.
    pub(crate) fn with_previous(mut self, previous: Option<PathBuf>) -> Self {
        self.previous = previous;
        self
    }

    /// Output `name` of this stage's last committed run, if there is one. For consistency
    /// checks only (did the source change under a pinned revision?): an output must never be
    /// derived from it, since it is not part of the fingerprint.
    pub fn previous(&self, name: &str) -> Option<PathBuf> {
        self.previous.as_ref().map(|d| d.join(name)).filter(|p| p.is_file())
    }

    /// Path of the declared input `stage/file`.
    pub fn input(&self, stage: &str, file: &str) -> anyhow::Result<&Path> {
        let key = format!("{stage}/{file}");
        self.inputs
            .get(&key)
            .map(PathBuf::as_path)
            .ok_or_else(|| anyhow::anyhow!("stage {} reads {key}, which it did not declare as an input", self.stage_id))
    }

    /// Path to write the declared output `name` to (inside a temporary folder that the
    /// engine moves into the store once the stage has succeeded).
    pub fn output(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }
}

/// The code behind a stage. Implementations capture the typed settings they need when the
/// plan is built; those settings must come from the same config keys as the stage's params.
pub trait StageKind: Send + Sync {
    /// The kind's name (`download`, `train`, ...), part of the fingerprint.
    fn kind(&self) -> &'static str;
    /// Bumped whenever the kind's outputs would change for the same params and inputs.
    fn version(&self) -> u32;
    fn cost(&self) -> Cost {
        Cost::Light
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport>;
}

/// A stage of the pipeline.
#[derive(Clone)]
pub struct StageSpec {
    pub id: String,
    pub kind: Arc<dyn StageKind>,
    pub params: Params,
    pub inputs: Vec<InputRef>,
    /// Files outside the store that it reads.
    pub files: Vec<FileInput>,
    pub outputs: Vec<String>,
}

impl fmt::Debug for StageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageSpec")
            .field("id", &self.id)
            .field("kind", &self.kind.kind())
            .field("params", &self.params)
            .field("inputs", &self.inputs)
            .field("files", &self.files)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl StageSpec {
    pub fn new(id: impl Into<String>, kind: Arc<dyn StageKind>) -> Self {
        Self { id: id.into(), kind, params: Params::new(), inputs: Vec::new(), files: Vec::new(), outputs: Vec::new() }
    }

    pub fn params(mut self, params: Params) -> Self {
        self.params.extend(params);
        self
    }

    pub fn param(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(key.to_owned(), value.into());
        self
    }

    pub fn input(mut self, stage: &str, file: &str) -> Self {
        self.inputs.push(InputRef::new(stage, file));
        self
    }

    /// Declares a file outside the store that the stage reads: `name` as messages show it.
    pub fn file(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.files.push(FileInput { name: name.into(), path: path.into() });
        self
    }

    pub fn outputs(mut self, names: &[&str]) -> Self {
        self.outputs.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// The upstream stage ids, each once, in declaration order.
    pub fn upstream(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for i in &self.inputs {
            if !out.contains(&i.stage.as_str()) {
                out.push(&i.stage);
            }
        }
        out
    }
}
