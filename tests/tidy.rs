//! Tidy checks on the source tree (as rust-analyzer's): rules of ARCHITECTURE.md that a
//! compiler cannot check, checked by reading the code.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A file's code before its unit tests (`#[cfg(test)]`).
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Issue 21: the tool deletes only through `engine/src/remove.rs`, which never follows a
/// link. Deleting anywhere else must be listed here with its reason.
#[test]
fn every_deletion_goes_through_remove_within() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Outside the artefacts folder, by design.
    let allowed = [
        // A downloaded file whose checksum is wrong, in hf-hub's own cache (not ours to guard;
        // the cache's snapshot entries are links, and removing one removes the link).
        "src/data/hub.rs",
    ];
    let mut offenders = Vec::new();
    for dir in ["engine/src", "src", "xtask/src"] {
        for path in sources(&root.join(dir)) {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            if rel == "engine/src/remove.rs" || allowed.contains(&rel.as_str()) {
                continue;
            }
            for (n, line) in non_test_code(&path).lines().enumerate() {
                if ["remove_dir_all(", "remove_file(", "remove_dir("].iter().any(|f| line.contains(f)) {
                    offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "delete through latentscope_engine::remove::remove_within instead:\n{}", offenders.join("\n"));
}
