//! PCA, k-means and scoring through the real pipeline on a small config, and the edit loop
//! users run most: change a k-means setting, only clustering and scoring re-run.

mod common;

use std::time::Instant;

use common::Project;
use latentscope::models::Architecture;

/// The notebook's two models, by the names the shipped config gives them.
fn notebook() -> [(&'static str, Architecture); 2] {
    [("simple", Architecture::notebook_simple()), ("conv", Architecture::notebook_conv())]
}
use latentscope::tensorfile::TensorFile;
use safetensors::Dtype;

#[test]
fn pca_kmeans_score_and_the_kmeans_edit_loop() {
    let p = Project::mnist("analysis", 2000);
    p.ok(&["pipeline", "run", "--set", "kmeans.seeds=[0,1,2]"]);
    let sets = ["--set", "kmeans.seeds=[0,1,2]"];

    for (name, arch) in notebook() {
        let pca = TensorFile::open(&p.artifacts().join(format!("pca-mnist-{name}-s42/pca.safetensors"))).unwrap();
        assert_eq!(pca.get("points", Dtype::F32).unwrap().0, [10000, 2]);
        assert_eq!(pca.get("components", Dtype::F32).unwrap().0, [2, arch.latent_dim()]);
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.artifacts().join(format!("pca-mnist-{name}-s42/pca.json"))).unwrap()).unwrap();
        let ratios: Vec<f64> = summary["explained_variance_ratio"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(ratios[0] >= ratios[1] && ratios[1] > 0.0 && ratios.iter().sum::<f64>() <= 1.0 + 1e-9, "{ratios:?}");

        let km = TensorFile::open(&p.artifacts().join(format!("kmeans-mnist-{name}-s42-1/assignments.safetensors"))).unwrap();
        assert_eq!(km.get("labels", Dtype::U32).unwrap().0, [10000]);
        assert_eq!(km.get("centroids", Dtype::F32).unwrap().0, [10, arch.latent_dim()]);
    }

    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["training_seeds"], serde_json::json!([42]));
    for (i, arch) in ["simple", "conv"].into_iter().enumerate() {
        assert_eq!(metrics["models"][i]["model"], arch);
        let m = &metrics["models"][i]["runs"][0];
        assert!(m["test_mse"].as_f64().unwrap() > 0.0);
        for key in ["purity", "nmi", "ari", "acc"] {
            let per_seed = m[key]["per_seed"].as_array().unwrap();
            assert_eq!(per_seed.len(), 3, "{arch} {key}");
            let best = m[key]["best"].as_f64().unwrap();
            assert!(per_seed.iter().all(|v| v.as_f64().unwrap() <= best));
            assert!(best > 0.0 && best <= 1.0, "{arch} {key} {best}");
        }
        // Even after one epoch on 2,000 images the clusters beat chance (about 0.11-0.13).
        assert!(m["purity"]["best"].as_f64().unwrap() > 0.15, "{arch}: {}", m["purity"]);
        let contingency: Vec<Vec<u64>> = serde_json::from_value(m["contingency"].clone()).unwrap();
        assert_eq!(contingency.len(), 10);
        assert_eq!(contingency.iter().flatten().sum::<u64>(), 10000);
    }

    // The figures are PNGs of the expected sizes; the report embeds them beside the metrics.
    let plot = p.artifacts().join("plot");
    for (file, (w, h)) in [
        ("loss-mnist.png", (1000, 600)),
        ("spread-mnist.png", (940, 880)),
        ("pca-mnist-simple.png", (900, 800)),
        ("pca-mnist-conv.png", (900, 800)),
        ("contingency-mnist-simple.png", (900, 820)),
        ("contingency-mnist-conv.png", (900, 820)),
    ] {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(plot.join(file)).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (w, h), "{file}");
    }
    let report = std::fs::read_to_string(plot.join("report.md")).unwrap();
    for needle in [
        "| simple |",
        "| conv |",
        "0.6589",
        "0.7059",
        "![mnist: training and test loss](loss-mnist.png)",
        "(samples-mnist.png)",
        "(clusters-mnist-conv.png)",
        "(contingency-mnist-conv.png)",
    ] {
        assert!(report.contains(needle), "report.md lacks {needle}:\n{report}");
    }
    let table = p.ok(&["pipeline", "metrics", "--set", "kmeans.seeds=[0,1,2]"]);
    assert!(table.contains("| simple |") && table.contains("0.02136"), "{table}");
    std::fs::copy(p.artifacts().join("pipeline.lock"), p.path().join("before.lock")).unwrap();

    // Edit a k-means setting: exactly the k-means stages, score and plot are stale.
    let mut edited = sets.to_vec();
    edited.extend(["--set", "kmeans.max_iter=50"]);
    let st = p.status(&edited);
    let stale: Vec<&String> = st.iter().filter(|(_, (fresh, _))| !fresh).map(|(id, _)| id).collect();
    let mut expected: Vec<String> =
        ["simple", "conv"].iter().flat_map(|m| (0..3).map(move |s| format!("kmeans-mnist-{m}-s42-{s}"))).collect();
    expected.extend(["score".into(), "plot".into()]);
    expected.sort();
    assert_eq!(stale, expected.iter().collect::<Vec<_>>());
    assert_eq!(st["kmeans-mnist-conv-s42-2"].1, "params changed: kmeans.max_iter 300 -> 50");
    assert_eq!(st["score"].1, "upstream stale: kmeans-mnist-simple-s42-0");

    let started = Instant::now();
    let mut args = vec!["pipeline", "run", "--json"];
    args.extend_from_slice(&edited);
    let out: serde_json::Value = serde_json::from_str(p.ok(&args).trim()).unwrap();
    let took = started.elapsed();
    let mut ran: Vec<String> = serde_json::from_value(out["ran"].clone()).unwrap();
    ran.sort();
    // Same assignments may come out for a looser max_iter; score re-runs only if they differ.
    assert!(ran.iter().all(|id| expected.contains(id)), "{ran:?}");
    assert!(ran.len() >= 6, "{ran:?}");
    assert!(took.as_secs_f64() < 3.0, "clustering re-run took {took:?}");
    let diff = p.ok(&[&["pipeline", "metrics", "--diff", "before.lock"][..], &edited].concat());
    assert!(diff.lines().next().unwrap().contains("old") && diff.contains("mnist.simple.purity.best"), "{diff}");

    // Adding a seed runs only that seed's k-means (per model) and score.
    let out: serde_json::Value =
        serde_json::from_str(p.ok(&["pipeline", "run", "--json", "--set", "kmeans.seeds=[0,1,2,3]", "--set", "kmeans.max_iter=50"]).trim())
            .unwrap();
    let mut ran: Vec<String> = serde_json::from_value(out["ran"].clone()).unwrap();
    ran.sort();
    assert_eq!(ran, ["kmeans-mnist-conv-s42-3", "kmeans-mnist-simple-s42-3", "plot", "score"]);
}
