//! Golden hashes: for a tiny fixed input, what each stage kind writes at its current
//! `version()` is recorded in `tests/data/golden.json`. A change to a kind's output without a
//! version bump fails here, where it would otherwise leave old results "fresh" for ever.
//!
//! The kinds covered are those whose bytes are the same on every CPU by construction
//! (download, train, encode: fixed-order kernels, see src/models/cpu.rs and gemm.rs; umap, agglomerative,
//! hdbscan: plain loops and libm); PCA, k-means, GMM and t-SNE (its PCA start) go through linfa
//! and ndarray, whose matmul picks kernels by CPU, so they are not pinned yet.
//!
//! After an intended change: bump the kind's `version()`, then re-record with
//! `LATENTSCOPE_GOLDEN=bless cargo test --release --test golden` and commit the file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Project;

const KINDS: [&str; 6] = ["download", "train", "encode", "umap", "agglomerative", "hdbscan"];

#[test]
fn each_kind_writes_the_recorded_bytes_at_its_version() {
    let p = Project::new("golden");
    let out = p
        .cmd(&[
            "pipeline",
            "run",
            "encode-mnist-simple-s42",
            "encode-mnist-conv-s42",
            "umap-mnist-conv-s42",
            "agglomerative-mnist-conv-s42",
            "hdbscan-mnist-conv-s42",
            "--set",
            "embed.umap={components: 2, neighbors: 5}",
            "--set",
            "cluster.agglomerative={k: 3}",
            "--set",
            "cluster.hdbscan={min_cluster_size: 3}",
            "--set",
            "models.simple.epochs=1",
            "--set",
            "models.conv.epochs=1",
            "--set",
            "device=cpu",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap();
    let mut now: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (stage, rec) in lock["stages"].as_object().unwrap() {
        if !KINDS.contains(&rec["kind"].as_str().unwrap()) {
            continue;
        }
        let outputs: BTreeMap<&String, &serde_json::Value> =
            rec["outputs"].as_object().unwrap().iter().map(|(f, r)| (f, &r["blake3"])).collect();
        now.insert(stage.clone(), serde_json::json!({"kind": rec["kind"], "version": rec["version"], "outputs": outputs}));
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden.json");
    if std::env::var("LATENTSCOPE_GOLDEN").as_deref() == Ok("bless") {
        std::fs::write(&file, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        eprintln!("recorded {}", file.display());
        return;
    }
    let recorded: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(recorded.keys().collect::<Vec<_>>(), now.keys().collect::<Vec<_>>(), "the golden stages changed: re-record");
    for (stage, rec) in &now {
        let old = &recorded[stage];
        let kind = rec["kind"].as_str().unwrap();
        if old["version"] == rec["version"] {
            assert_eq!(
                old["outputs"], rec["outputs"],
                "{stage}: kind {kind} v{} writes other bytes for the golden input than when it was recorded, without a \
                 version bump. Old results would stay fresh. If the change is intended, bump {kind}'s version() and \
                 re-record with LATENTSCOPE_GOLDEN=bless",
                rec["version"]
            );
        } else {
            panic!(
                "{stage}: kind {kind} is v{} now, v{} in tests/data/golden.json: re-record with LATENTSCOPE_GOLDEN=bless \
                 cargo test --release --test golden, and commit the file with the bump",
                rec["version"], old["version"]
            );
        }
    }
}
