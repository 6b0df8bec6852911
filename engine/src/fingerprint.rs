//! Stage fingerprints and content hashes (blake3).
//!
//! fingerprint = blake3(kind, kind version, canonical params, sorted input content hashes).
//! The canonical encoding of params is compact JSON of a sorted map, with values already
//! normalised by the typed config (so `1e-3` and `0.001` hash the same).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::spec::Params;

/// Input key (`stage/file`) to the blake3 hex of that file's content.
pub type InputHashes = BTreeMap<String, String>;

pub fn fingerprint(kind: &str, version: u32, params: &Params, inputs: &InputHashes) -> String {
    let mut h = blake3::Hasher::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("kind", kind.as_bytes());
    field("version", &version.to_le_bytes());
    field("params", serde_json::to_string(params).expect("params serialise").as_bytes());
    for (key, hash) in inputs {
        field("input", key.as_bytes());
        field("hash", hash.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// blake3 hex of a file's content.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, serde_json::Value)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn every_part_changes_the_fingerprint() {
        let p = params(&[("kmeans.k", json!(10))]);
        let i: InputHashes = [("a/x".to_string(), "00".to_string())].into();
        let base = fingerprint("kmeans", 1, &p, &i);
        assert_eq!(base, fingerprint("kmeans", 1, &p, &i));
        assert_ne!(base, fingerprint("pca", 1, &p, &i));
        assert_ne!(base, fingerprint("kmeans", 2, &p, &i));
        assert_ne!(base, fingerprint("kmeans", 1, &params(&[("kmeans.k", json!(11))]), &i));
        let i2: InputHashes = [("a/x".to_string(), "01".to_string())].into();
        assert_ne!(base, fingerprint("kmeans", 1, &p, &i2));
    }

    #[test]
    fn param_order_does_not_matter() {
        let a = params(&[("a", json!(1)), ("b", json!(2))]);
        let b = params(&[("b", json!(2)), ("a", json!(1))]);
        assert_eq!(fingerprint("k", 1, &a, &InputHashes::new()), fingerprint("k", 1, &b, &InputHashes::new()));
    }
}
