//! The clustering methods beyond k-means (GMM, agglomerative, HDBSCAN, DBSCAN), the UMAP embedding,
//! the t-SNE and UMAP views and the k-selection curves, through the real pipeline on a small
//! MNIST subset: what each writes, what the report shows, what an edit re-runs, and the
//! bad inputs.

mod common;

use std::collections::BTreeSet;

use common::Project;
use latentscope::data::{idx, Dataset, Split};

/// A project on the first 600 training and 500 test images of the real MNIST, every method
/// on, quick settings.
fn project(tag: &str) -> Project {
    let p = Project::new(tag);
    write_data(&p, false);
    let config = common::full_shipped_config()
        .replace("local: data/mnist", "local: data")
        .replace("epochs: 20", "epochs: 1")
        .replace("device: auto", "device: cpu")
        .replace("seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "seeds: [0, 1]")
        .replace("seeds: [0, 1, 2], covariance", "seeds: [0, 1], covariance")
        .replace("range: [2, 20]", "range: [2, 6], sample: 200")
        .replace("  hdbscan: {min_cluster_size: 50}\n", "");
    assert!(!config.contains("hdbscan") && config.contains("gmm:") && config.contains("tsne:"), "{config}");
    std::fs::write(p.path().join("pipeline.yaml"), config).unwrap();
    p
}

/// The first 600 training and 500 test images of MNIST into the project's `data/`; with
/// `shuffled_labels`, the test labels moved among the test images by a fixed permutation (the
/// images, so every representation and clustering, stay as they were).
fn write_data(p: &Project, shuffled_labels: bool) {
    let (full, _) = idx::read_dir(&common::mnist_dir()).unwrap();
    let take =
        |s: &Split, n: usize| Split { shape: s.shape, images: s.images[..n * s.shape.pixels()].to_vec(), labels: s.labels[..n].to_vec() };
    let mut small = Dataset { train: take(&full.train, 600), test: take(&full.test, 500) };
    if shuffled_labels {
        let labels = small.test.labels.clone();
        small.test.labels = (0..labels.len()).map(|i| labels[(i * 7 + 3) % labels.len()]).collect();
    }
    std::fs::remove_dir_all(p.path().join("data")).unwrap();
    idx::write_dir(&p.path().join("data"), &small).unwrap();
}

fn ran(p: &Project, args: &[&str]) -> BTreeSet<String> {
    let mut all = vec!["pipeline", "run", "--json"];
    all.extend_from_slice(args);
    let out: serde_json::Value = serde_json::from_str(p.ok(&all).trim()).unwrap();
    serde_json::from_value(out["ran"].clone()).unwrap()
}

fn stale(p: &Project, args: &[&str]) -> BTreeSet<String> {
    p.status(args).into_iter().filter(|(_, (fresh, _))| !fresh).map(|(id, _)| id).collect()
}

fn metrics(p: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap()
}

#[test]
fn every_method_runs_is_scored_reported_and_re_runs_only_when_its_settings_change() {
    let p = project("methods");
    let first = ran(&p, &[]);
    for id in [
        "umap-mnist-conv-s42",
        "view-umap-mnist-simple-s42",
        "view-tsne-mnist-conv-s42",
        "gmm-mnist-conv-s42-1",
        "gmm-mnist-conv-s42-umap-0",
        "kmeans-mnist-simple-s42-umap-1",
        "agglomerative-mnist-simple-s42-umap",
        "select-k-mnist-conv-s42",
        "select-k-mnist-conv-s42-umap",
    ] {
        assert!(first.contains(id), "{id} did not run: {first:?}");
    }

    // Every (representation, embedding, method) is scored; the best clustering is recorded.
    let m = metrics(&p);
    let rows = m["clusterings"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 3, "{rows:?}");
    for row in rows {
        let acc = &row["acc"];
        assert!(acc["best"].as_f64().unwrap() >= acc["mean"].as_f64().unwrap());
        let expected_seeds = if row["method"] == "agglomerative" { 0 } else { 2 };
        assert_eq!(row["seeds"].as_array().unwrap().len(), expected_seeds, "{row}");
    }
    let umap_gmm = rows.iter().find(|r| r["representation"] == "conv" && r["embed"] == "umap" && r["method"] == "gmm").unwrap();
    // One epoch on 600 images gives weak latents, but still above chance (a random partition
    // of 500 points into 10 clusters scores about 0.13 under the Hungarian matching).
    assert!(umap_gmm["acc"]["best"].as_f64().unwrap() > 0.18, "{umap_gmm}");
    assert_eq!(m["best_clusterings"].as_array().unwrap().len(), 2);
    let select: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("select-k-mnist-conv-s42/select_k.json")).unwrap()).unwrap();
    assert_eq!(select["ks"], serde_json::json!([2, 3, 4, 5, 6]));
    assert_eq!(select["inertia"].as_array().unwrap().len(), 5);
    let view: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("view-tsne-mnist-conv-s42/view.json")).unwrap()).unwrap();
    assert!(view["trustworthiness"].as_f64().unwrap() > 0.8, "{view}");

    let plot = p.artifacts().join("plot");
    for file in [
        "view-umap-mnist-conv.png",
        "view-tsne-mnist-simple-clusters.png",
        "pca-mnist-conv-clusters.png",
        "best-clusters-mnist-conv.png",
        "select-k-mnist.png",
    ] {
        assert!(std::fs::metadata(plot.join(file)).unwrap().len() > 1000, "{file}");
    }
    let report = std::fs::read_to_string(plot.join("report.md")).unwrap();
    for needle in [
        "## Clustering methods",
        "| umap + gmm |",
        "| agglomerative |",
        "choosing k without labels",
        "2-D views",
        "(view-tsne-mnist-conv.png)",
    ] {
        assert!(report.contains(needle), "report.md lacks {needle}:\n{report}");
    }

    // Every method is deterministic: forcing them again gives the same bytes.
    let outputs = |p: &Project| -> Vec<(String, String)> {
        let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap();
        let mut out = Vec::new();
        for (stage, record) in lock["stages"].as_object().unwrap() {
            for (file, o) in record["outputs"].as_object().unwrap() {
                out.push((format!("{stage}/{file}"), o["blake3"].as_str().unwrap().to_owned()));
            }
        }
        out
    };
    let before = outputs(&p);
    ran(&p, &["--force", "umap-*", "--force", "gmm-*", "--force", "agglomerative-*", "--force", "view-*"]);
    let changed: Vec<String> = outputs(&p).into_iter().zip(&before).filter(|(a, b)| a != *b).map(|(a, _)| a.0).collect();
    assert!(changed.is_empty(), "forced again, these outputs changed: {changed:?}");

    // Editing one method's settings re-runs its stages, score and plot, nothing else.
    let edit = ["--set", "cluster.gmm.tol=0.01"];
    let expected: BTreeSet<String> = stale(&p, &[]).into_iter().collect();
    assert!(expected.is_empty(), "{expected:?}");
    let st = stale(&p, &edit);
    assert!(st.iter().all(|id| id.starts_with("gmm-") || id == "score" || id == "plot"), "{st:?}");
    assert_eq!(st.iter().filter(|id| id.starts_with("gmm-")).count(), 2 * 2 * 2);
    ran(&p, &edit);

    // Adding a method runs only its stages (one per representation), score and plot.
    let add = ["--set", "cluster.gmm.tol=0.01", "--set", "cluster.hdbscan={min_cluster_size: 10}"];
    let added = ran(&p, &add);
    let expected: BTreeSet<String> = ["simple", "conv"]
        .iter()
        .flat_map(|m| [format!("hdbscan-mnist-{m}-s42"), format!("hdbscan-mnist-{m}-s42-umap")])
        .chain(["score".to_owned(), "plot".to_owned()])
        .collect();
    assert_eq!(added, expected);
    let m = metrics(&p);
    let h = m["clusterings"].as_array().unwrap().iter().find(|r| r["method"] == "hdbscan").unwrap().clone();
    assert!(h["noise_fraction"].as_array().unwrap()[0].as_f64().unwrap() >= 0.0 && h["covered"]["acc"].is_number(), "{h}");

    // HDBSCAN finding one cluster or none is an outcome, recorded, not an error.
    let all = ["--set", "cluster.gmm.tol=0.01", "--set", "cluster.hdbscan={min_cluster_size: 400}"];
    ran(&p, &all);
    let m = metrics(&p);
    for r in m["clusterings"].as_array().unwrap().iter().filter(|r| r["method"] == "hdbscan") {
        assert!(r["clusters"][0].as_u64().unwrap() <= 1, "{r}");
    }

    // DBSCAN, a method added through the one table (stages/cluster/mod.rs): its stages, its
    // scores with the noise, its own noise table in the report.
    let dbscan = [&all[..], &["--set", "cluster.dbscan={eps: 2.0, min_samples: 5}"]].concat();
    let added = ran(&p, &dbscan);
    let expected: BTreeSet<String> = ["simple", "conv"]
        .iter()
        .flat_map(|m| [format!("dbscan-mnist-{m}-s42"), format!("dbscan-mnist-{m}-s42-umap")])
        .chain(["score".to_owned(), "plot".to_owned()])
        .collect();
    assert_eq!(added, expected);
    let m = metrics(&p);
    let d: Vec<&serde_json::Value> = m["clusterings"].as_array().unwrap().iter().filter(|r| r["method"] == "dbscan").collect();
    assert_eq!(d.len(), 4, "{d:?}");
    assert!(d.iter().all(|r| r["noise_fraction"].as_array().unwrap().len() == 1 && r["covered"]["acc"].is_number()), "{d:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("dbscan-mnist-conv-s42-umap/clustering.json")).unwrap()).unwrap();
    assert_eq!(summary["method"], "dbscan");
    let report = std::fs::read_to_string(plot.join("report.md")).unwrap();
    assert!(report.contains("### mnist: DBSCAN\n") && report.contains("| umap + dbscan |"), "{report}");

    // k above the number of points: a clear error naming the key; nothing committed.
    let out = p.run(&["pipeline", "run", "--set", "cluster.gmm.k=501", "--set", "cluster.hdbscan={min_cluster_size: 400}"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cluster.gmm.k: k = 501 exceeds the 500 points"), "{err}");
    let out = p.run(&["pipeline", "run", "--set", "select_k.range=[2, 600]"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("select_k.range goes up to k = 600, more than the 500 points"), "{err}");
    // Views need their settings.
    let out = p.run(&["pipeline", "status", "--set", "embed.tsne="]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tsne needs embed.tsne"), "{err}");
}

/// Stage -> (output file -> blake3), from the lock file.
fn outputs(p: &Project) -> std::collections::BTreeMap<String, serde_json::Value> {
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap();
    let hashes = |outputs: &serde_json::Value| -> serde_json::Value {
        outputs.as_object().unwrap().iter().map(|(file, r)| (file.clone(), r["blake3"].clone())).collect()
    };
    lock["stages"].as_object().unwrap().iter().map(|(id, rec)| (id.clone(), hashes(&rec["outputs"]))).collect()
}

/// Issue 22, item 1: "fresh" means the bytes a run would write now. Every map and list of the
/// config whose order a user can change is permuted in turn; every stage that `status` then
/// calls fresh is forced, and must write the bytes it has (same fingerprint, same bytes).
#[test]
fn a_stage_fresh_after_a_reordering_writes_the_same_bytes_when_forced() {
    let p = project("methods-order");
    let cfg = p.path().join("pipeline.yaml");
    let base = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("baselines: []", "baselines: [pixels-pca]")
        .replace("train:\n  seeds: [42]", "train:\n  seeds: [42, 7]");
    assert!(base.contains("seeds: [42, 7]") && base.contains("[pixels-pca]"));
    let line = |key: &str| base.lines().find(|l| l.trim_start().starts_with(key)).unwrap().to_owned();
    let (simple, conv) = (line("simple:"), line("conv:"));
    // (The baselines' order is in score's and plot's params like the models'; GMM cannot fit
    // the raw pixels of so few images, so the list has one entry here.)
    let permutations: [(&str, String); 5] = [
        ("models", base.replace(&simple, "@").replace(&conv, &simple).replace('@', &conv)),
        ("views", base.replace("views: [pca, umap, tsne]", "views: [tsne, pca, umap]")),
        ("training seeds", base.replace("seeds: [42, 7]", "seeds: [7, 42]")),
        ("k-means seeds", base.replace("k: 10, seeds: [0, 1],", "k: 10, seeds: [1, 0],")),
        ("GMM seeds", base.replace("seeds: [0, 1], covariance", "seeds: [1, 0], covariance")),
    ];
    for (what, text) in &permutations {
        assert_ne!(*text, base, "{what}: the permutation changed nothing");
        std::fs::write(&cfg, &base).unwrap();
        p.ok(&["pipeline", "run"]);
        std::fs::write(&cfg, text).unwrap();
        let fresh: Vec<String> = p.status(&[]).into_iter().filter(|(_, (f, _))| *f).map(|(id, _)| id).collect();
        let before = outputs(&p);
        let force: Vec<&str> = fresh.iter().map(String::as_str).collect();
        p.ok(&[&["pipeline", "run", "--force"][..], &force].concat());
        let after = outputs(&p);
        let differ: Vec<&String> = fresh.iter().filter(|id| before[*id] != after[*id]).collect();
        assert!(differ.is_empty(), "after reordering {what}, these stages were fresh but write other bytes: {differ:?}");
    }
}

/// The protocol (issue 23): the clustering each method reports is chosen without the test
/// labels (k-means: the lowest inertia; GMM: the highest log-likelihood; the others are
/// deterministic). Shuffling the test labels among the images leaves every choice as it was
/// and changes only the scores.
#[test]
fn the_label_free_choices_do_not_depend_on_the_labels() {
    let p = project("label-free");
    let quick = ["--set", "views=[pca]", "--set", "embed.tsne=", "--set", "select_k="];
    ran(&p, &quick);
    let artifact = |stage: String, file: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p.artifacts().join(stage).join(file)).unwrap()).unwrap()
    };
    let m = metrics(&p);
    for r in m["clusterings"].as_array().unwrap() {
        let mut tag = format!("mnist-{}", r["representation"].as_str().unwrap());
        if let Some(seed) = r["training_seed"].as_u64() {
            tag += &format!("-s{seed}");
        }
        if !r["embed"].is_null() {
            tag += "-umap";
        }
        let method = r["method"].as_str().unwrap();
        // The criterion's value, to minimise.
        let value = |seed: &serde_json::Value| -> f64 {
            match method {
                "kmeans" => artifact(format!("kmeans-{tag}-{seed}"), "kmeans.json")["inertia"].as_f64().unwrap(),
                "gmm" => -artifact(format!("gmm-{tag}-{seed}"), "clustering.json")["extra"]["log_likelihood"].as_f64().unwrap(),
                other => panic!("{other} has seeds"),
            }
        };
        let seeds = r["seeds"].as_array().unwrap();
        let selected = &r["selected"];
        if seeds.is_empty() {
            assert_eq!(
                (selected["criterion"].as_str(), selected["acc"].as_f64()),
                (Some("deterministic"), r["acc"]["mean"].as_f64()),
                "{r}"
            );
        } else {
            let lowest = seeds.iter().min_by(|a, b| value(a).total_cmp(&value(b))).unwrap();
            assert_eq!(&selected["seed"], lowest, "{tag} {method}: {selected}");
        }
    }
    // Every method's choice, the k-means seed of lowest inertia, and the clustering each
    // model shows (report.clustering at its label-free seed).
    let choices = |p: &Project| -> Vec<(String, serde_json::Value, f64)> {
        let m = metrics(p);
        let mut out: Vec<(String, serde_json::Value, f64)> = m["clusterings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let row = format!("{} {} {} {}", r["representation"], r["training_seed"], r["embed"], r["method"]);
                (row, r["selected"]["seed"].clone(), r["selected"]["acc"].as_f64().unwrap())
            })
            .collect();
        for model in m["models"].as_array().unwrap() {
            let run = &model["runs"][0];
            out.push((
                format!("{} lowest inertia", model["model"]),
                run["lowest_inertia_seed"].clone(),
                run["label_free"]["acc"].as_f64().unwrap(),
            ));
        }
        for b in m["best_clusterings"].as_array().unwrap() {
            let shown = format!("{} shown {} {}", b["model"], b["embed"], b["method"]);
            out.push((shown, b["seed"].clone(), b["acc"].as_f64().unwrap()));
        }
        out
    };
    let before = choices(&p);
    write_data(&p, true);
    ran(&p, &quick);
    let after = choices(&p);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&b.0, &b.1), (&a.0, &a.1), "the choice moved with the labels");
    }
    assert!(before.iter().zip(&after).any(|(b, a)| b.2 != a.2), "shuffled labels, and no score changed");
}
