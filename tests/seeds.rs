//! Training seeds as an axis: stage ids per seed, caching when seeds are added or removed,
//! and statistics over seeds in metrics.json, the report and `pipeline metrics`.

mod common;

use std::collections::BTreeSet;

use common::Project;

const SMALL: [&str; 6] = ["--set", "models.simple.epochs=1", "--set", "models.conv.epochs=1", "--set", "kmeans.seeds=[0,1]"];

fn run(p: &Project, seeds: &str) -> BTreeSet<String> {
    let set = format!("train.seeds={seeds}");
    let args: Vec<&str> = ["pipeline", "run", "--json"].into_iter().chain(SMALL).chain(["--set", set.as_str()]).collect();
    let v: serde_json::Value = serde_json::from_str(p.ok(&args).trim()).unwrap();
    v["ran"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// Every stage of one training seed.
fn seed_stages(seed: u64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in ["simple", "conv"] {
        for kind in ["train", "encode", "pca"] {
            out.insert(format!("{kind}-mnist-{m}-s{seed}"));
        }
        for k in [0, 1] {
            out.insert(format!("kmeans-mnist-{m}-s{seed}-{k}"));
        }
    }
    out
}

#[test]
fn training_seeds_are_an_axis_with_statistics() {
    let p = Project::new("seeds");
    let ran = run(&p, "[1,2]");
    assert!(ran.is_superset(&seed_stages(1)) && ran.is_superset(&seed_stages(2)), "{ran:?}");

    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["training_seeds"], serde_json::json!([1, 2]));
    for (i, model) in ["simple", "conv"].into_iter().enumerate() {
        let m = &metrics["models"][i];
        assert_eq!(m["model"], model);
        let runs = m["runs"].as_array().unwrap();
        assert_eq!(runs.iter().map(|r| r["training_seed"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
        // The statistics are those of the per-seed means, recomputed here.
        let means: Vec<f64> = runs.iter().map(|r| r["purity"]["mean"].as_f64().unwrap()).collect();
        let over = &m["over_training_seeds"]["purity"];
        assert_eq!(over["n"], 2);
        assert!((over["mean"].as_f64().unwrap() - (means[0] + means[1]) / 2.0).abs() < 1e-12, "{over}");
        let sd = (means[0] - means[1]).abs() / 2f64.sqrt();
        assert!((over["std"].as_f64().unwrap() - sd).abs() < 1e-12, "{over}");
        // t(0.975, 1) = 12.7062...: the interval of two seeds is wide, and says so.
        let half = 12.706204736174694 * sd / 2f64.sqrt();
        assert!((over["ci95"][1].as_f64().unwrap() - over["mean"].as_f64().unwrap() - half).abs() < 1e-9, "{over}");
    }
    // The label-free choice: the k-means seed of lowest inertia, and its scores.
    let simple2 = &metrics["models"][0]["runs"][1];
    let inertia = |k: u64| -> f64 {
        let path = p.artifacts().join(format!("kmeans-mnist-simple-s2-{k}/kmeans.json"));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()["inertia"].as_f64().unwrap()
    };
    let lowest = if inertia(0) <= inertia(1) { 0 } else { 1 };
    assert_eq!(simple2["lowest_inertia_seed"], lowest, "{simple2}");
    assert_eq!(simple2["label_free"]["purity"], simple2["purity"]["per_seed"][lowest as usize], "{simple2}");

    let comparisons = metrics["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 5, "simple vs conv, for four clustering metrics and the test MSE");
    assert!(comparisons.iter().all(|c| c["a"] == "simple" && c["b"] == "conv"));

    let report = std::fs::read_to_string(p.artifacts().join("plot/report.md")).unwrap();
    for needle in
        ["simple (training seed 2)", "Over the 2 training seeds", "Welch's t-test", "purity (simple − conv)", "(spread-mnist.png)"]
    {
        assert!(report.contains(needle), "report.md lacks {needle}:\n{report}");
    }
    let args: Vec<&str> = ["pipeline", "metrics"].into_iter().chain(SMALL).chain(["--set", "train.seeds=[1,2]"]).collect();
    assert!(p.ok(&args).contains("Over the 2 training seeds"));

    // Adding a seed runs that seed's stages, score and plot; nothing else.
    let mut expected = seed_stages(3);
    expected.extend(["score".to_owned(), "plot".to_owned()]);
    assert_eq!(run(&p, "[1,2,3]"), expected);
    // Removing it runs nothing at all: score and plot of [1, 2] come back from the run-cache.
    assert_eq!(run(&p, "[1,2]"), BTreeSet::new());
    // Re-adding it is a run-cache restore too.
    assert_eq!(run(&p, "[1,2,3]"), BTreeSet::new());
    let args: Vec<&str> = ["pipeline", "status", "--check"].into_iter().chain(SMALL).chain(["--set", "train.seeds=[1,2,3]"]).collect();
    assert_eq!(p.run(&args).status.code(), Some(0), "all fresh");
}

#[test]
fn baselines_are_clustered_scored_and_compared_like_models() {
    let p = Project::new("baselines");
    run(&p, "[1,2]");
    // Adding the baselines runs their stages, their k-means, score and plot; nothing trains.
    let args: Vec<&str> = ["pipeline", "run", "--json"]
        .into_iter()
        .chain(SMALL)
        .chain(["--set", "train.seeds=[1,2]", "--set", "baselines=[pixels, pixels-pca]"])
        .collect();
    let v: serde_json::Value = serde_json::from_str(p.ok(&args).trim()).unwrap();
    let ran: BTreeSet<String> = v["ran"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    let mut expected: BTreeSet<String> = ["score", "plot"].map(String::from).into();
    for rep in ["pixels", "pixels-pca9", "pixels-pca10"] {
        expected.insert(format!("baseline-mnist-{rep}"));
        for k in [0, 1] {
            expected.insert(format!("kmeans-mnist-{rep}-{k}"));
        }
    }
    assert_eq!(ran, expected);

    let latent = |id: &str| latentscope::tensorfile::TensorFile::open(&p.artifacts().join(id).join("latent.safetensors")).unwrap();
    assert_eq!(latent("baseline-mnist-pixels").get("latent", safetensors::Dtype::F32).unwrap().0, [20, 784]);
    assert_eq!(latent("baseline-mnist-pixels-pca9").get("latent", safetensors::Dtype::F32).unwrap().0, [20, 9]);

    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap();
    let names: Vec<&str> = metrics["baselines"].as_array().unwrap().iter().map(|b| b["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["pixels", "pixels-pca9", "pixels-pca10"]);
    let b = &metrics["baselines"][0]["runs"][0];
    assert!(b["training_seed"].is_null() && b["test_mse"].is_null(), "{b}");
    let vs_baselines: Vec<&serde_json::Value> =
        metrics["comparisons"].as_array().unwrap().iter().filter(|c| c["test"] == "welch-baseline").collect();
    assert_eq!(vs_baselines.len(), 2 * 3 * 4, "two models x three baselines x four metrics");
    let c = vs_baselines.iter().find(|c| c["a"] == "conv" && c["b"] == "pixels-pca10" && c["metric"] == "purity").unwrap();
    let conv: Vec<f64> = metrics["models"][1]["runs"].as_array().unwrap().iter().map(|r| r["purity"]["mean"].as_f64().unwrap()).collect();
    let base = metrics["baselines"][2]["runs"][0]["purity"]["mean"].as_f64().unwrap();
    if let Some(diff) = c["result"]["diff"].as_f64() {
        assert!((diff - ((conv[0] + conv[1]) / 2.0 - base)).abs() < 1e-12, "{c}");
    }
    let report = std::fs::read_to_string(p.artifacts().join("plot/report.md")).unwrap();
    for needle in ["| pixels (baseline) |", "| pixels-pca9 (baseline) |", "Models against baselines", "purity (conv − pixels-pca10)"] {
        assert!(report.contains(needle), "report.md lacks {needle}:\n{report}");
    }
}
