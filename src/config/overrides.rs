//! `--set dotted.key=value`: each override applied to the config's value tree, which is read
//! back into [`Config`] so that an override is checked exactly like the file; and the tree
//! helpers (lookup, flatten) that stage params share.

use serde_json::Value;

use super::{Config, ConfigError, Params};

/// Applies `overrides` in order to `config` (whose tree is `tree`): the config, its tree and
/// the keys assigned.
pub(super) fn apply(mut config: Config, mut tree: Value, overrides: &[String]) -> Result<(Config, Value, Vec<String>), ConfigError> {
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
        // A quoted number (`--set kmeans.k='"10"'`) where the config holds a number.
        if let Some((at, message)) = lookup(&tree, key).and_then(|old| quoted_scalar(&value, old, key)) {
            return Err(fail(format!("{at}: {message}")));
        }
        let unknown = || fail(format!("unknown key {key}"));
        // A key the tree lacks may be a new map entry (`models.wide`) or an optional
        // setting (`models.conv.dense`); serde then says whether it exists.
        let added = lookup(&tree, key).is_none();
        let slot = match key.rsplit_once('.') {
            _ if !added => lookup_mut(&mut tree, key).expect("present"),
            Some((parent, last)) => {
                let parent = lookup_mut(&mut tree, parent).and_then(Value::as_object_mut).ok_or_else(unknown)?;
                parent.entry(last.to_owned()).or_insert(Value::Null)
            }
            None => return Err(unknown()),
        };
        *slot = value;
        overridden.push(key.to_owned());
        config = serde_json::from_value(tree.clone()).map_err(|e| {
            let e = e.to_string();
            if added && e.starts_with("unknown field") {
                unknown()
            } else {
                fail(format!("{key}: {e}"))
            }
        })?;
        // Re-serialise so that the tree holds canonical values (e.g. 1e-3 == 0.001).
        tree = serde_json::to_value(&config).expect("config serialises");
    }
    Ok((config, tree, overridden))
}

/// The first place (dotted key, and why) where `typed`, the config as the typed parse read it,
/// holds a number or a boolean but `raw`, the same YAML read without a schema, a string: a
/// quoted value such as `k: "10"`, which the typed parse would take for the number. `path` is
/// the key of both trees.
pub(super) fn quoted_scalar(raw: &Value, typed: &Value, path: &str) -> Option<(String, String)> {
    let at = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match (raw, typed) {
        (Value::Object(raw), Value::Object(typed)) => {
            typed.iter().find_map(|(key, t)| raw.get(key).and_then(|r| quoted_scalar(r, t, &at(key.as_str()))))
        }
        (Value::Array(raw), Value::Array(typed)) => {
            raw.iter().zip(typed).enumerate().find_map(|(i, (r, t))| quoted_scalar(r, t, &format!("{path}[{i}]")))
        }
        (Value::String(s), Value::Number(n)) => {
            let expected = if n.is_f64() { "a number" } else { "an integer" };
            Some((path.to_owned(), format!("expected {expected}, found the string {s:?}")))
        }
        (Value::String(s), Value::Bool(_)) => Some((path.to_owned(), format!("expected true or false, found the string {s:?}"))),
        _ => None,
    }
}

pub(crate) fn lookup<'a>(tree: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(tree, |node, part| node.as_object()?.get(part))
}

fn lookup_mut<'a>(tree: &'a mut Value, dotted: &str) -> Option<&'a mut Value> {
    dotted.split('.').try_fold(tree, |node, part| node.as_object_mut()?.get_mut(part))
}

/// `node` as params under `prefix`: an object as one param per dotted key, a leaf as itself.
pub(crate) fn flatten(prefix: &str, node: &Value, out: &mut Params) {
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
