//! `pipeline.yaml`: typed configuration, `--set` overrides and validation.
//!
//! The file is parsed straight into [`Config`] (unknown keys and wrong types are errors with
//! the line and key), then each `--set dotted.key=value` override is applied to the config's
//! value tree and the tree is read back into [`Config`], so an override is checked exactly
//! like the file. Stages read their parameters through [`Config::params`], which returns the
//! leaves under the requested keys as a flat, sorted map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A flat map from dotted key (`kmeans.max_iter`) to the value that key holds.
pub type Params = BTreeMap<String, Value>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid override --set {assignment}: {message}")]
    Override { assignment: String, message: String },
    #[error("invalid config {path}: key {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
    /// A value that a `--set` override put there failed validation.
    #[error("invalid --set {key}: {message}")]
    InvalidOverride { key: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub device: DeviceChoice,
    pub dataset: DatasetConfig,
    pub train: TrainConfig,
    pub models: ModelsConfig,
    pub pca: PcaConfig,
    pub kmeans: KmeansConfig,
    /// Representations clustered and scored like the models' latents, as controls.
    #[serde(default)]
    pub baselines: Vec<BaselineKind>,
    pub plot: PlotConfig,
}

/// A baseline: `pixels` (the raw pixels) or `pixels-pca` (PCA of the pixels, fit on the
/// training images, at each model's latent size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    Pixels,
    PixelsPca,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Directory of (gzip) IDX files, relative to the config file; used first when present.
    pub local: Option<PathBuf>,
    pub hub: HubDataset,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubDataset {
    pub repo: String,
    pub revision: String,
    pub train: HubFile,
    pub test: HubFile,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Training seeds: each model is trained once per seed (init and shuffling), and the
    /// report gives statistics over them.
    pub seeds: Vec<u64>,
    /// Use only the first N training images.
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub simple: ModelConfig,
    pub conv: ModelConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcaConfig {
    pub components: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmeansConfig {
    pub k: usize,
    pub seeds: Vec<u64>,
    pub max_iter: usize,
    pub tol: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotConfig {
    pub samples: usize,
}

/// A loaded configuration together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The file it was read from; relative paths inside it resolve against its directory.
    pub path: PathBuf,
    /// The configuration as a JSON tree (after overrides), the source of stage params.
    tree: Value,
    /// The dotted keys that `--set` overrides assigned.
    overridden: Vec<String>,
}

impl LoadedConfig {
    /// Reads `path`, applies `overrides` (`dotted.key=yaml-value`) in order and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read { path: path.to_owned(), err })?;
        Self::from_yaml(&text, path, overrides)
    }

    /// Parses YAML text as if read from `path`.
    pub fn from_yaml(text: &str, path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // The parser calls the text `<input>`; it is this file.
            message: e.to_string().replace("<input>", &path.display().to_string()),
        })?;
        let mut tree = serde_json::to_value(&config).expect("config serialises");
        let mut overridden = Vec::new();
        for assignment in overrides {
            let fail = |message: String| ConfigError::Override { assignment: assignment.clone(), message };
            let (key, raw) = assignment.split_once('=').ok_or_else(|| fail("expected dotted.key=value".into()))?;
            let key = key.trim();
            let value: Value = if raw.trim().is_empty() {
                Value::Null
            } else {
                serde_saphyr::from_str(raw).map_err(|e| fail(format!("value is not YAML: {e}")))?
            };
            let slot = lookup_mut(&mut tree, key).ok_or_else(|| fail(format!("unknown key {key}")))?;
            *slot = value;
            overridden.push(key.to_owned());
            config = serde_json::from_value(tree.clone()).map_err(|e| fail(format!("{key}: {e}")))?;
            // Re-serialise so that the tree holds canonical values (e.g. 1e-3 == 0.001).
            tree = serde_json::to_value(&config).expect("config serialises");
        }
        let loaded = Self { config, path: path.to_owned(), tree, overridden };
        loaded.validate()?;
        Ok(loaded)
    }

    /// The directory that relative paths in the config resolve against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Resolves a path from the config against [`Self::base_dir`].
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The effective configuration (overrides applied) as YAML-compatible JSON.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The leaves under each of `keys` (dotted paths), flattened to `dotted.key -> value`.
    /// Arrays are leaves. Panics on a key that does not exist: stage declarations are code.
    pub fn params(&self, keys: &[&str]) -> Params {
        let mut out = Params::new();
        for key in keys {
            let node = lookup(&self.tree, key).unwrap_or_else(|| panic!("stage reads unknown config key {key}"));
            flatten(key, node, &mut out);
        }
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        // A bad value is blamed on the `--set` that put it there, else on the file.
        let bad = |key: &str, message: &str| {
            let set_by = self.overridden.iter().rev().find(|k| key == k.as_str() || key.starts_with(&format!("{k}.")));
            Err(match set_by {
                Some(k) => ConfigError::InvalidOverride { key: k.clone(), message: format!("{key} {message}") },
                None => ConfigError::Invalid { path: self.path.clone(), key: key.into(), message: message.into() },
            })
        };
        for (name, m) in [("simple", &c.models.simple), ("conv", &c.models.conv)] {
            if m.epochs == 0 {
                return bad(&format!("models.{name}.epochs"), "must be at least 1");
            }
            if m.batch_size == 0 {
                return bad(&format!("models.{name}.batch_size"), "must be at least 1");
            }
            if !(m.lr.is_finite() && m.lr > 0.0) {
                return bad(&format!("models.{name}.lr"), "must be a positive number");
            }
            if !(m.weight_decay.is_finite() && m.weight_decay >= 0.0) {
                return bad(&format!("models.{name}.weight_decay"), "must be zero or positive");
            }
        }
        if c.train.seeds.is_empty() {
            return bad("train.seeds", "must list at least one seed");
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.train.seeds.iter().find(|s| !seen.insert(**s)) {
            return bad("train.seeds", &format!("seed {dup} is listed twice"));
        }
        if c.train.limit == Some(0) {
            return bad("train.limit", "must be null or at least 1");
        }
        if !(1..=9).contains(&c.pca.components) {
            return bad("pca.components", "must be between 1 and 9 (the smaller latent size)");
        }
        if c.kmeans.k < 2 {
            return bad("kmeans.k", "must be at least 2");
        }
        if c.kmeans.seeds.is_empty() {
            return bad("kmeans.seeds", "must list at least one seed");
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.kmeans.seeds.iter().find(|s| !seen.insert(**s)) {
            return bad("kmeans.seeds", &format!("seed {dup} is listed twice"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.baselines.iter().find(|b| !seen.insert(format!("{b:?}"))) {
            return bad("baselines", &format!("{dup:?} is listed twice"));
        }
        if c.kmeans.max_iter == 0 {
            return bad("kmeans.max_iter", "must be at least 1");
        }
        if !(c.kmeans.tol.is_finite() && c.kmeans.tol >= 0.0) {
            return bad("kmeans.tol", "must be zero or positive");
        }
        if c.plot.samples == 0 || c.plot.samples > 100 {
            return bad("plot.samples", "must be between 1 and 100");
        }
        for (key, f) in [("dataset.hub.train.sha256", &c.dataset.hub.train), ("dataset.hub.test.sha256", &c.dataset.hub.test)] {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(key, "must be 64 hexadecimal digits");
            }
        }
        Ok(())
    }
}

fn lookup<'a>(tree: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(tree, |node, part| node.as_object()?.get(part))
}

fn lookup_mut<'a>(tree: &'a mut Value, dotted: &str) -> Option<&'a mut Value> {
    dotted.split('.').try_fold(tree, |node, part| node.as_object_mut()?.get_mut(part))
}

fn flatten(prefix: &str, node: &Value, out: &mut Params) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = include_str!("../pipeline.yaml");

    fn load(text: &str, sets: &[&str]) -> Result<LoadedConfig, ConfigError> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        LoadedConfig::from_yaml(text, Path::new("pipeline.yaml"), &sets)
    }

    #[test]
    fn shipped_config_loads() {
        let c = load(SAMPLE, &[]).unwrap();
        assert_eq!(c.config.kmeans.seeds.len(), 10);
        assert_eq!(c.config.models.simple.weight_decay, 1e-8);
    }

    #[test]
    fn example_configs_load_and_find_the_shipped_data() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let c = LoadedConfig::load(&dir.join("five-seeds.yaml"), &[]).unwrap();
        assert_eq!(c.config.train.seeds, [42, 43, 44, 45, 46]);
        let local = c.resolve(c.config.dataset.local.as_deref().unwrap());
        assert!(crate::data::idx::present(&local), "{}", local.display());
        // Everything but the training seeds is the default experiment.
        let default = load(SAMPLE, &[]).unwrap();
        assert_eq!(
            (&c.config.models, &c.config.kmeans, &c.config.pca),
            (&default.config.models, &default.config.kmeans, &default.config.pca)
        );
    }

    #[test]
    fn override_replaces_typed_value() {
        let c = load(SAMPLE, &["kmeans.seeds=[0,1]", "train.limit=500", "models.conv.lr=1e-2"]).unwrap();
        assert_eq!(c.config.kmeans.seeds, vec![0, 1]);
        assert_eq!(c.config.train.limit, Some(500));
        assert_eq!(c.params(&["models.conv.lr"])["models.conv.lr"], serde_json::json!(0.01));
    }

    #[test]
    fn override_errors_name_the_key() {
        let e = load(SAMPLE, &["kmeans.nope=3"]).unwrap_err().to_string();
        assert!(e.contains("unknown key kmeans.nope"), "{e}");
        let e = load(SAMPLE, &["kmeans.k=ten"]).unwrap_err().to_string();
        assert!(e.contains("kmeans.k"), "{e}");
        let e = load(SAMPLE, &["kmeans.k"]).unwrap_err().to_string();
        assert!(e.contains("dotted.key=value"), "{e}");
    }

    #[test]
    fn unknown_key_in_file_names_key_and_line() {
        let text = SAMPLE.replace("pca: {components: 2}", "pca: {components: 2, whiten: true}");
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("whiten"), "{e}");
        let line = SAMPLE.lines().position(|l| l.starts_with("pca:")).unwrap() + 1;
        assert!(e.contains(&line.to_string()), "no line {line} in: {e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let text = SAMPLE.replace("max_iter: 300", "max_iter: lots");
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("pipeline.yaml") && !e.contains("<input>"), "{e}");
    }

    #[test]
    fn validation_names_key() {
        let e = load(SAMPLE, &["kmeans.seeds=[1,1]"]).unwrap_err().to_string();
        assert!(e.contains("kmeans.seeds") && e.contains("twice"), "{e}");
        let e = load(SAMPLE, &["train.seeds=[]"]).unwrap_err().to_string();
        assert!(e.contains("train.seeds") && e.contains("at least one"), "{e}");
        let e = load(SAMPLE, &["train.seeds=[42, 42]"]).unwrap_err().to_string();
        assert!(e.contains("train.seeds") && e.contains("twice"), "{e}");
    }

    #[test]
    fn a_bad_value_from_set_is_blamed_on_the_set_not_the_file() {
        let e = load(SAMPLE, &["kmeans.seeds=[1,1]"]).unwrap_err().to_string();
        assert!(e.starts_with("invalid --set kmeans.seeds:") && !e.contains("pipeline.yaml"), "{e}");
        // A whole section set at once is named as it was set.
        let e = load(SAMPLE, &["models.simple={epochs: 0, batch_size: 32, lr: 0.001, weight_decay: 0.0}"]).unwrap_err().to_string();
        assert!(e.starts_with("invalid --set models.simple:") && e.contains("models.simple.epochs"), "{e}");
        // The same bad value in the file is blamed on the file.
        let e = load(&SAMPLE.replace("k: 10,", "k: 1,"), &[]).unwrap_err().to_string();
        assert!(e.contains("pipeline.yaml") && e.contains("kmeans.k"), "{e}");
    }

    #[test]
    fn params_flatten_leaves() {
        let c = load(SAMPLE, &[]).unwrap();
        let p = c.params(&["models.simple", "train.limit"]);
        let keys: Vec<_> = p.keys().cloned().collect();
        assert_eq!(
            keys,
            ["models.simple.batch_size", "models.simple.epochs", "models.simple.lr", "models.simple.weight_decay", "train.limit"]
        );
    }
}
