//! Faults found by fault injection (issue 21) that show through the real binary, each
//! reproduced on a small project. The engine-level ones (damaged or changing inputs, links)
//! are in tests/engine.rs; the Slurm ones in tests/slurm.rs; bad input in tests/bad_input.rs.

mod common;

use std::fs;

use common::Project;

fn run_key(page: &str) -> &str {
    let start = page.find("<meta name=\"latentscope-run\" content=\"").expect("the page names its run") + 38;
    &page[start..start + page[start..].find('"').unwrap()]
}

fn leftovers(p: &Project) -> Vec<String> {
    fs::read_dir(p.artifacts())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".report.html.tmp."))
        .collect()
}

/// Fault 6: the report page describes the current run, or the run fails saying why. After
/// a revert that the run-cache restores ("0 ran"), after a write that was killed before its
/// rename, and never silently on a write error (a full disk), which leaves nothing behind.
#[test]
fn the_report_page_describes_the_current_run_or_the_run_fails() {
    let p = Project::new("faults-report");
    let page = p.artifacts().join("report.html");
    p.ok(&["pipeline", "run"]);
    let first = fs::read_to_string(&page).unwrap();
    assert!(first.contains("max_iter: 300"), "the page shows the effective config");

    p.ok(&["pipeline", "run", "--set", "kmeans.max_iter=9"]);
    let edited = fs::read_to_string(&page).unwrap();
    assert!(edited.contains("max_iter: 9") && run_key(&edited) != run_key(&first));
    // Never another run's numbers: `metrics` without the edit refuses, as `report` does.
    let err = p.fails(&["pipeline", "metrics"]);
    assert!(err.contains("not complete") && err.contains("kmeans.max_iter 9 -> 300"), "{err}");
    p.ok(&["pipeline", "metrics", "--set", "kmeans.max_iter=9"]);

    // Revert: nothing is computed, every entry comes from the run-cache, and the page
    // describes the restored run again.
    let out: serde_json::Value = serde_json::from_str(p.ok(&["pipeline", "run", "--json"]).trim()).unwrap();
    assert_eq!(out["ran"], serde_json::json!([]), "{out}");
    let reverted = fs::read_to_string(&page).unwrap();
    assert_eq!(run_key(&reverted), run_key(&first));
    assert!(reverted.contains("max_iter: 300") && !reverted.contains("max_iter: 9"));

    // Killed before the rename: the old page (another run's) and a partial temporary file.
    fs::write(&page, &edited).unwrap();
    fs::write(p.artifacts().join(".report.html.tmp.999999"), "<!DOCTYPE html><html><body>partial").unwrap();
    p.ok(&["pipeline", "run"]);
    assert_eq!(run_key(&fs::read_to_string(&page).unwrap()), run_key(&first));
    assert!(leftovers(&p).is_empty(), "{:?}", leftovers(&p));
    // gc removes such leftovers too.
    fs::write(p.artifacts().join(".report.html.tmp.999998"), "partial").unwrap();
    p.ok(&["pipeline", "gc"]);
    assert!(leftovers(&p).is_empty(), "{:?}", leftovers(&p));

    // A page that cannot be written (here: a folder stands in its place, as a full disk
    // would fail the write) fails a run that computed something, with a message, and leaves
    // no partial file; a run that wrote nothing (a read-only folder) warns.
    fs::remove_file(&page).unwrap();
    fs::create_dir_all(page.join("x")).unwrap();
    let err = p.fails(&["pipeline", "run", "--force", "plot"]);
    assert!(err.contains("cannot write the report page") && err.contains("report.html"), "{err}");
    assert!(leftovers(&p).is_empty(), "{:?}", leftovers(&p));
    let out = p.run(&["pipeline", "run"]);
    let log = common::text(&out.stderr);
    assert!(out.status.success() && log.contains("could not be rewritten") && log.contains("report.html"), "{log}");
}

/// Flips the last byte of `path` and puts its mtime back, so that only a hash can tell.
fn flip_byte_keep_mtime(path: &std::path::Path) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = fs::read(path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    fs::write(path, bytes).unwrap();
    fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
}

/// Fault 1, as found: a latent file damaged so that the quick check cannot see it, then an
/// edit that makes k-means and score read it. The stage that would read the bad bytes fails
/// before it runs, naming the file; `run --verify` repairs encode and then runs everything
/// that reads it, and the metrics are a clean folder's, byte for byte.
#[test]
fn a_repair_reaches_every_stage_that_would_read_the_damaged_bytes() {
    let edit = ["--set", "kmeans.max_iter=50", "--set", "kmeans.seeds=[0,1]"];
    let clean = Project::new("faults-clean");
    clean.ok(&[&["pipeline", "run"][..], &edit].concat());
    let p = Project::new("faults-repair");
    p.ok(&["pipeline", "run", "--set", "kmeans.seeds=[0,1]"]);
    let latent = p.artifacts().join("encode-mnist-simple-s42/latent.safetensors");
    flip_byte_keep_mtime(&latent);
    let err = p.fails(&[&["pipeline", "run"][..], &edit].concat());
    assert!(err.contains("encode-mnist-simple-s42/latent.safetensors") && err.contains("--verify"), "{err}");

    let out: serde_json::Value =
        serde_json::from_str(p.ok(&[&["pipeline", "run", "--verify", "--json"][..], &edit].concat()).trim()).unwrap();
    let ran: Vec<&str> = out["ran"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(ran.contains(&"encode-mnist-simple-s42") && ran.contains(&"score"), "{out}");
    let metrics = |p: &Project| fs::read(p.artifacts().join("score/metrics.json")).unwrap();
    assert!(metrics(&p) == metrics(&clean), "the repaired run's metrics differ from a clean folder's");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&[&["pipeline", "status", "--verify", "--json"][..], &edit].concat())).unwrap();
    assert!(rows.iter().all(|r| r["fresh"] == true), "{rows:?}");
}
