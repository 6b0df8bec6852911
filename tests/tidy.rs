//! Tidy checks on the source tree (as rust-analyzer's): rules of ARCHITECTURE.md that a
//! compiler cannot check, checked by reading the code.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (or `dir` itself, a file).
fn sources(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_owned()];
    }
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

/// Every non-test line of the `.rs` files under `dir` (relative to the repository) that
/// contains one of `needles`, as `file:line: text`.
fn lines_naming(dir: &str, needles: &[&str], except: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for path in sources(&root.join(dir)) {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if except.contains(&rel.as_str()) {
            continue;
        }
        for (n, line) in non_test_code(&path).lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if needles.iter().any(|needle| code.contains(needle)) {
                out.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    out
}

/// The boundaries ARCHITECTURE.md draws between the rooms of the house (issue 22), read off
/// the code: each is a list of places that cross one, which must stay empty.
#[test]
fn the_architecture_boundaries_hold() {
    const STAGE_INTERNALS: &[&str] = &[
        "stages::download::",
        "stages::train::",
        "stages::encode::",
        "stages::baseline::",
        "stages::pca::",
        "stages::umap::",
        "stages::view::",
        "stages::select_k::",
        "stages::cluster::",
        "stages::kmeans::",
        "stages::score::",
        "stages::plot::",
    ];
    let readers = "what reads runs (report, page, Hub, runs, CLI) names files through crate::artifacts and stages by StageId, \
                   never a stage module";
    let rules: [(&str, &str, &[&str], &[&str]); 12] = [
        ("the engine knows nothing of the experiment", "engine/src", &["latentscope::", "candle", "crate::stages", "crate::config"], &[]),
        (
            "analysis is free of candle, models and the pipeline",
            "src/analysis",
            &["crate::models", "candle", "crate::pipeline", "crate::stages", "crate::train"],
            &[],
        ),
        (
            "a stage never imports what reads runs (report, page, Hub, runs, CLI)",
            "src/stages",
            &["crate::report", "crate::html", "crate::hub", "crate::runs", "crate::cli"],
            &[],
        ),
        (
            "outside the engine, runs are read through FinishedRun/RunCache; only pull adds entries, as a run does",
            "src",
            &["Store::open", "open_read_only", "entry_dir(", ".manifest("],
            &["src/hub/pull.rs"],
        ),
        (readers, "src/report.rs", STAGE_INTERNALS, &[]),
        (readers, "src/render.rs", STAGE_INTERNALS, &[]),
        (readers, "src/html.rs", STAGE_INTERNALS, &[]),
        (readers, "src/hub", STAGE_INTERNALS, &[]),
        (readers, "src/runs.rs", STAGE_INTERNALS, &[]),
        (readers, "src/cli.rs", STAGE_INTERNALS, &[]),
        ("the CPU kernels are free of candle", "src/models/kernels.rs", &["candle"], &[]),
        (
            "the models know nothing of stages, reports or the Hub",
            "src/models",
            &["crate::stages", "crate::report", "crate::hub", "crate::html"],
            &[],
        ),
    ];
    let mut broken = Vec::new();
    for (rule, dir, needles, except) in rules {
        let found = lines_naming(dir, needles, except);
        if !found.is_empty() {
            broken.push(format!("{rule}:\n  {}", found.join("\n  ")));
        }
    }
    assert!(broken.is_empty(), "boundaries crossed (see ARCHITECTURE.md):\n{}", broken.join("\n"));
}
