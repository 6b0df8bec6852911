//! The experiment matrix: datasets x models x training seeds from pipeline.yaml. A Hub dataset
//! with other column names, sizes and classes (served by the mock Hub); what re-runs when an
//! axis value is added or removed; models that do not fit a dataset; the recorded checksum of
//! an unpinned Hub file.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::hubmock::HubMock;
use common::{fake_dataset, Project, TempDir};
use latentscope::config::Columns;
use latentscope::data::{hub, Dataset, Shape, Split};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const SMALL: [&str; 6] = ["--set", "models.simple.epochs=1", "--set", "models.conv.epochs=1", "--set", "kmeans.seeds=[0,1]"];

/// A dataset of `shape` images with `classes` labels.
fn dataset(shape: Shape, classes: u8, n_train: usize, n_test: usize) -> Dataset {
    let split = |n: usize, salt: usize| Split {
        shape,
        images: (0..n * shape.pixels()).map(|i| ((i * 7 + salt * 13 + i / shape.pixels() * 31) % 256) as u8).collect(),
        labels: (0..n).map(|i| ((i + salt) % classes as usize) as u8).collect(),
    };
    Dataset { train: split(n_train, 1), test: split(n_test, 2) }
}

/// Serves `data` as `owner/name` (parquet, the given columns) from a mock Hub; returns the mock
/// and the config section that names it (no sha256: recorded on first download).
fn serve(repo: &str, data: &Dataset, columns: &Columns) -> (HubMock, String, TempDir) {
    let dir = TempDir::new("matrix-parquet");
    let mut served = HashMap::new();
    for (split, name) in [(&data.train, "train"), (&data.test, "test")] {
        let path = dir.path().join(format!("{name}.parquet"));
        hub::write_parquet(&path, split, columns).unwrap();
        served.insert(format!("/datasets/{repo}/resolve/{REV}/data/{name}.parquet"), std::fs::read(path).unwrap());
    }
    let section = format!(
        "{{hub: {{repo: {repo}, revision: {REV}, train: {{file: data/train.parquet}}, test: {{file: data/test.parquet}}, \
         columns: {{image: {}, label: {}}}}}}}",
        columns.image, columns.label
    );
    (HubMock::start(served, REV), section, dir)
}

/// A project whose config has `extra` datasets after `mnist` (fake IDX data).
fn project(tag: &str, extra: &[(&str, &str)]) -> Project {
    let p = Project::new(tag);
    let cfg = p.path().join("pipeline.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    let insert: String = extra.iter().map(|(name, section)| format!("  {name}: {section}\n")).collect();
    text = text.replace("train:\n  seeds", &format!("{insert}train:\n  seeds"));
    std::fs::write(cfg, text).unwrap();
    p
}

fn ran(p: &Project, mock: &HubMock, extra: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["pipeline", "run", "--json"];
    args.extend(SMALL);
    args.extend_from_slice(extra);
    let out = p.cmd(&args).env("HF_ENDPOINT", &mock.url).env("HF_HOME", p.path().join("hf-home")).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", common::text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(common::text(&out.stdout).trim()).unwrap();
    v["ran"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn model_stages(dataset: &str, model: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ["train", "encode", "pca"].iter().map(|k| format!("{k}-{dataset}-{model}-s42")).collect();
    out.extend([0, 1].map(|k| format!("kmeans-{dataset}-{model}-s42-{k}")));
    out
}

#[test]
fn a_matrix_runs_every_dataset_through_every_model_and_caches_by_axis() {
    // A Hub dataset unlike MNIST's parquet: other column names, twelve classes.
    let tiny = dataset(Shape::MNIST, 12, 36, 24);
    let (mock, section, _dir) = serve("someone/tiny", &tiny, &Columns { image: "img".into(), label: "fine_label".into() });
    let p = project("matrix", &[("tiny", &section)]);
    let all = ran(&p, &mock, &[]);
    let mut expected: BTreeSet<String> = ["download-mnist", "download-tiny", "score", "plot"].map(String::from).into();
    for d in ["mnist", "tiny"] {
        for m in ["simple", "conv"] {
            expected.extend(model_stages(d, m));
        }
    }
    assert_eq!(all, expected);

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("download-tiny/dataset.json")).unwrap()).unwrap();
    assert_eq!((summary["classes"].as_u64(), summary["source"]["kind"].as_str()), (Some(12), Some("hub")), "{summary}");
    let file = &summary["source"]["files"][0];
    assert_eq!((file["pinned"].as_bool(), file["sha256"].as_str().map(str::len)), (Some(false), Some(64)), "{summary}");
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["datasets"], serde_json::json!(["mnist", "tiny"]));
    let tiny_conv = metrics["models"].as_array().unwrap().iter().find(|m| m["dataset"] == "tiny" && m["model"] == "conv").unwrap();
    assert_eq!(tiny_conv["runs"][0]["contingency"].as_array().unwrap().len(), 12, "one row per class");
    assert_eq!(tiny_conv["arch"]["arch"], "conv");
    let report = std::fs::read_to_string(p.artifacts().join("plot/report.md")).unwrap();
    for needle in ["### Dataset tiny", "- tiny: 36 training images, 24 test images, 1x28x28 images, 12 classes", "(pca-tiny-conv.png)"] {
        assert!(report.contains(needle), "report.md lacks {needle}:\n{report}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("train-tiny-simple-s42/config.json")).unwrap()).unwrap();
    assert_eq!(config["encoder"], serde_json::json!([784, 128, 64, 36, 18, 9]));

    // Adding a model runs only its stages (on every dataset), then score and plot.
    let wide = ["--set", "models.wide={arch: mlp, encoder: [784, 16, 4], epochs: 1, batch_size: 8, lr: 0.001, weight_decay: 0.0}"];
    let mut want: BTreeSet<String> = model_stages("mnist", "wide").union(&model_stages("tiny", "wide")).cloned().collect();
    want.extend(["score".into(), "plot".into()]);
    assert_eq!(ran(&p, &mock, &wide), want);
    // Removing it computes nothing new (score and plot of the smaller matrix come back from
    // the run cache); re-adding it is a restore too.
    assert_eq!(ran(&p, &mock, &[]), BTreeSet::new());
    assert_eq!(ran(&p, &mock, &wide), BTreeSet::new());
    // Editing one model's settings re-runs that model's stages on each dataset, no other.
    let edited = ["--set", "models.wide={arch: mlp, encoder: [784, 16, 3], epochs: 1, batch_size: 8, lr: 0.001, weight_decay: 0.0}"];
    assert_eq!(ran(&p, &mock, &edited), want);
    // dag, metrics and a publish dry run (its card) cover the whole matrix.
    let with_sets = |cmd: &[&'static str]| -> Vec<&'static str> { cmd.iter().copied().chain(SMALL).chain(edited).collect() };
    let dag = p.ok(&with_sets(&["pipeline", "dag"]));
    assert!(dag.contains("train-tiny-wide-s42 [train] <- download-tiny"), "{dag}");
    let table = p.ok(&with_sets(&["pipeline", "metrics"]));
    assert!(table.contains("### Dataset tiny") && table.contains("| wide |"), "{table}");
    // Given an absolute --config, the card still names no local path.
    let config = p.path().join("pipeline.yaml").display().to_string();
    let mut args: Vec<&str> =
        with_sets(&["pipeline", "publish", "--repo", "me/matrix", "--dry-run", "--card-out", "card.md"]).into_iter().collect();
    args.extend(["--config", config.as_str()]);
    let out = p.ok(&args);
    assert!(out.contains("models/tiny/wide/s42/model.safetensors") && out.contains("kmeans/mnist/conv/s42/seed-1/"), "{out}");
    let card = std::fs::read_to_string(p.path().join("card.md")).unwrap();
    for needle in ["group mnist and tiny images by class", "| tiny | [someone/tiny]", "12 |", "`wide`: mlp 784-16-3", "name: tiny"] {
        assert!(card.contains(needle), "card lacks {needle}:\n{card}");
    }
    let local = p.path().display().to_string();
    assert!(!card.contains(&local) && card.contains("cargo xtask pipeline run --config pipeline.yaml --set"), "{card}");
    // Dropping a dataset leaves the others' stages alone.
    let text = std::fs::read_to_string(p.path().join("pipeline.yaml")).unwrap();
    std::fs::write(p.path().join("pipeline.yaml"), text.lines().filter(|l| !l.starts_with("  tiny:")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let after = ran(&p, &mock, &[]);
    assert!(after.is_subset(&["score".to_owned(), "plot".to_owned()].into()), "{after:?}");
    assert!(!p.artifacts().join("train-tiny-conv-s42").exists(), "the dropped dataset's views are forgotten");
}

#[test]
fn models_that_do_not_fit_a_dataset_are_refused_with_the_reason() {
    // Local IDX data whose size two pooling stages cannot halve twice: refused before anything runs.
    let p = project("matrix-odd", &[("odd", "{local: odd}")]);
    latentscope::data::idx::write_dir(&p.path().join("odd"), &dataset(Shape { channels: 1, height: 30, width: 30 }, 3, 10, 6)).unwrap();
    let e = p.fails(&["pipeline", "run"]);
    assert!(
        e.contains("model simple does not fit dataset odd: encoder starts at 784 inputs, but the images are 1x30x30 = 900 values"),
        "{e}"
    );
    // Without the MLP, the conv model's reason.
    let text = std::fs::read_to_string(p.path().join("pipeline.yaml")).unwrap();
    let text: Vec<&str> = text.lines().filter(|l| !l.starts_with("  simple:")).collect();
    let text = text.join("\n");
    std::fs::write(p.path().join("only-odd.yaml"), &text).unwrap();
    let e = p.fails(&["pipeline", "status", "--config", "only-odd.yaml"]);
    assert!(
        e.contains("model conv does not fit dataset odd: 2 conv blocks halve the image 2 times, so its height and width must be multiples of 4; the images are 30x30"),
        "{e}"
    );
    assert!(!p.artifacts().join("download-mnist").exists(), "nothing ran");

    // A colour Hub dataset: the conv model (any image size) trains on it; the MLP built for
    // 784 inputs fails its training stage, saying why, and the rest goes on with --keep-going.
    let rgb = dataset(Shape { channels: 3, height: 16, width: 16 }, 4, 24, 12);
    let (mock, section, _dir) = serve("someone/rgb", &rgb, &Columns::default());
    let p = project("matrix-rgb", &[("rgb", &section)]);
    let mut args = vec!["pipeline", "run", "--keep-going"];
    args.extend(SMALL);
    let out = p.cmd(&args).env("HF_ENDPOINT", &mock.url).env("HF_HOME", p.path().join("hf-home")).output().unwrap();
    let e = common::text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("train-rgb-simple-s42: model simple does not fit dataset rgb: encoder starts at 784 inputs, but the images are 3x16x16 = 768 values"),
        "{e}"
    );
    let recon = latentscope::tensorfile::TensorFile::open(&p.artifacts().join("encode-rgb-conv-s42/reconstructions.safetensors")).unwrap();
    assert_eq!(recon.get("images", safetensors::Dtype::F32).unwrap().0, [9, 3, 16, 16]);
    assert!(p.artifacts().join("encode-mnist-simple-s42").exists());
}

#[test]
fn an_unpinned_hub_file_is_recorded_and_other_bytes_later_fail_loudly() {
    let (mock, section, _dir) = serve("someone/tiny", &fake_dataset(20, 10), &Columns::default());
    let p = project("matrix-sha", &[("tiny", &section)]);
    let run = |force: bool| {
        let mut args = vec!["pipeline", "run", "download-tiny"];
        if force {
            args.extend(["--force", "download-tiny"]);
        }
        p.cmd(&args).env("HF_ENDPOINT", &mock.url).env("HF_HOME", p.path().join("hf-home")).output().unwrap()
    };
    assert!(run(false).status.success());
    // The pinned commit now gives other bytes (here: the hf-hub cache's copy changed).
    let snapshots = p.path().join("hf-home/hub/datasets--someone--tiny/snapshots").join(REV).join("data/train.parquet");
    let other = TempDir::new("matrix-other");
    hub::write_parquet(&other.path().join("t.parquet"), &fake_dataset(21, 1).train, &Columns::default()).unwrap();
    std::fs::remove_file(&snapshots).unwrap();
    std::fs::copy(other.path().join("t.parquet"), &snapshots).unwrap();
    let out = run(true);
    let e = common::text(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("someone/tiny/data/train.parquet at") && e.contains("but the last run recorded"), "{e}");
    assert!(e.contains("Pin the sha256 you trust in datasets.tiny.hub"), "{e}");
}

#[test]
fn a_no_op_run_of_five_training_seeds_and_two_models_takes_under_0_2_s() {
    let p = Project::new("matrix-noop");
    let mut args: Vec<&str> =
        vec!["pipeline", "run", "--json", "--set", "train.seeds=[42, 43, 44, 45, 46]", "--set", "baselines=[pixels, pixels-pca]"];
    args.extend(SMALL);
    p.ok(&args);
    let started = std::time::Instant::now();
    let v: serde_json::Value = serde_json::from_str(p.ok(&args).trim()).unwrap();
    let took = started.elapsed().as_secs_f64();
    assert_eq!((v["ran"].as_array().unwrap().len(), v["cached"].as_array().unwrap().len()), (0, 1 + 30 + 20 + 3 * 3 + 2), "{v}");
    // The engine's own time, and the whole process (start-up, config, plan) with slack for a
    // loaded CI machine.
    assert!(v["wall_time_s"].as_f64().unwrap() < 0.2, "{v}");
    assert!(took < 1.0, "a no-op run took {took:.3} s");
}

#[test]
fn pipeline_runs_lists_the_run_cache_and_metrics_diff_takes_one() {
    let p = Project::new("matrix-runs");
    let mut args: Vec<&str> = vec!["pipeline", "run"];
    args.extend(SMALL);
    p.ok(&args);
    let epochs2 = ["--set", "models.conv.epochs=2"];
    args.extend(epochs2);
    p.ok(&args);
    let mut runs_args: Vec<&str> = vec!["pipeline", "runs", "--json"];
    runs_args.extend(SMALL);
    runs_args.extend(epochs2);
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&runs_args)).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (old, new) = (&runs[0], &runs[1]);
    assert_eq!((old["current"].as_bool(), new["current"].as_bool()), (Some(false), Some(true)), "{runs:?}");
    assert_eq!(old["differs"], serde_json::json!(["models.conv.epochs: 1 (now: 2)"]), "{old}");
    assert_eq!(new["differs"], serde_json::json!([]));
    assert!(old["purity"]["mnist.conv"][0].as_f64().unwrap() > 0.0);
    let prefix = &old["fingerprint"].as_str().unwrap()[..8];
    let mut diff: Vec<&str> = vec!["pipeline", "metrics", "--diff"];
    let arg = format!("run:{prefix}");
    diff.push(&arg);
    diff.extend(SMALL);
    diff.extend(epochs2);
    let table = p.ok(&diff);
    assert!(table.contains("mnist.conv.test_mse") && table.lines().next().unwrap().contains("old"), "{table}");
    let mut missing: Vec<&str> = vec!["pipeline", "metrics", "--diff", "run:0000000000"];
    missing.extend(SMALL);
    missing.extend(epochs2);
    assert!(p.fails(&missing).contains("no run in"));
}

#[test]
fn readme_numbers_come_from_the_run() {
    let p = Project::new("matrix-readme");
    let mut run: Vec<&str> = vec!["pipeline", "run"];
    run.extend(SMALL);
    p.ok(&run);
    let readme = p.path().join("R.md");
    let marked = format!("# x\n\n{}\nold numbers\n{}\n\nafter\n", latentscope::report::README_BEGIN, latentscope::report::README_END);
    std::fs::write(&readme, &marked).unwrap();
    let mut args: Vec<&str> = vec!["readme-numbers", "--readme", "R.md"];
    args.extend(SMALL);
    let mut check = args.clone();
    check.push("--check");
    assert_eq!(p.run(&check).status.code(), Some(1), "stale numbers fail --check");
    p.ok(&args);
    let text = std::fs::read_to_string(&readme).unwrap();
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap();
    let mse = format!("{:.5}", metrics["models"][0]["runs"][0]["test_mse"].as_f64().unwrap());
    assert!(text.contains("Generated by `cargo xtask readme-numbers`") && text.contains(&format!("| simple | {mse} |")), "{text}");
    assert!(
        !text.contains("old numbers")
            && text.starts_with("# x\n")
            && text.ends_with(&format!("{}\n\nafter\n", latentscope::report::README_END))
    );
    assert!(p.run(&check).status.success(), "fresh numbers pass --check");
    // Numbers of an incomplete run are refused.
    let mut stale = args.clone();
    stale.extend(["--set", "kmeans.seeds=[0,1,2]"]);
    assert!(p.fails(&stale).contains("is not complete"));
}
