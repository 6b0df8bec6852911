//! "Fresh" means correct: the store-trust defects of issue 9, each reproduced through the
//! real binary on a small project (fake IDX data, one epoch per model, two k-means seeds).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{blake3_file, text, Project};
use latentscope::data::idx;

const SMALL: [&str; 6] = ["--set", "models.simple.epochs=1", "--set", "models.conv.epochs=1", "--set", "kmeans.seeds=[0,1]"];

/// `args` followed by the small settings.
fn small<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(SMALL).collect()
}

fn run_json(p: &Project, args: &[&str]) -> serde_json::Value {
    let mut a = small(args);
    a.push("--json");
    serde_json::from_str(p.ok(&a).trim()).unwrap()
}

fn ran(v: &serde_json::Value) -> Vec<String> {
    v["ran"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn lock(p: &Project) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap()
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

/// Flips one byte of `path` and restores its mtime, so that only a hash can tell.
fn flip_byte_keep_mtime(path: &Path) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() - 1;
    bytes[i] ^= 0xff;
    fs::write(path, bytes).unwrap();
    set_mtime(path, mtime);
}

/// Every regular file under `dir`, recursively (links not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// Stage id -> the store entry its view points at, for every view in the artefacts folder.
fn views(p: &Project) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(p.artifacts()).unwrap().flatten() {
        if e.file_type().unwrap().is_symlink() {
            let target = fs::read_link(e.path()).unwrap();
            out.insert(e.file_name().to_string_lossy().into_owned(), target.to_string_lossy().into_owned());
        }
    }
    out
}

/// The lock file and the views name the same stages and the same entries.
fn assert_lock_and_views_agree(p: &Project) {
    let lock = lock(p);
    let from_lock: BTreeMap<String, String> = lock["stages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, r)| (id.clone(), format!(".store/{}", r["fingerprint"].as_str().unwrap())))
        .collect();
    assert_eq!(from_lock, views(p), "lock records and views disagree");
}

// 1. `run --verify` replaces a corrupt entry with the recomputed one.
#[test]
fn verify_repairs_a_corrupt_entry() {
    let p = Project::new("trust-repair");
    run_json(&p, &["pipeline", "run", "encode-mnist-conv-s42"]);
    let file = p.artifacts().join("encode-mnist-conv-s42/latent.safetensors");
    let good = fs::read(&file).unwrap();
    flip_byte_keep_mtime(&file);

    let st = p.status(&small(&["--verify"]));
    assert_eq!(st["encode-mnist-conv-s42"], (false, "corrupt: encode-mnist-conv-s42/latent.safetensors".into()));
    let v = run_json(&p, &["pipeline", "run", "--verify"]);
    assert!(ran(&v).contains(&"encode-mnist-conv-s42".to_owned()), "{v}");
    assert_eq!(fs::read(&file).unwrap(), good, "the entry still holds the flipped byte");
    let st = p.status(&small(&["--verify"]));
    assert!(st.values().all(|(fresh, _)| *fresh), "{st:?}");
    assert_lock_and_views_agree(&p);
}

// 2. The files of `datasets.mnist.local` are inputs: replacing them makes `download` stale.
#[test]
fn replacing_local_data_makes_download_stale() {
    let p = Project::new("trust-local");
    // Data older than the racy window, so that its hashes are cached.
    let old = SystemTime::now() - Duration::from_secs(60);
    for f in files_under(&p.path().join("data")) {
        set_mtime(&f, old);
    }
    run_json(&p, &["pipeline", "run", "download-mnist"]);
    assert_eq!(p.status(&small(&[]))["download-mnist"], (true, String::new()));

    idx::write_dir(&p.path().join("data"), &common::fake_dataset(50, 20)).unwrap();
    for extra in [&[][..], &["--verify"][..]] {
        let (fresh, reason) = p.status(&small(extra))["download-mnist"].clone();
        assert!(!fresh && reason.contains("input changed: data/train-images-idx3-ubyte"), "{extra:?}: {reason}");
    }
    let v = run_json(&p, &["pipeline", "run", "download-mnist"]);
    assert_eq!(ran(&v), ["download-mnist"]);
    let summary: serde_json::Value = serde_json::from_slice(&fs::read(p.artifacts().join("download-mnist/dataset.json")).unwrap()).unwrap();
    assert_eq!(summary["train"]["count"], 50, "the new data is in use");
    assert_eq!(p.status(&small(&[]))["download-mnist"], (true, String::new()));
    assert!(p.artifacts().join(".file-hashes.json").is_file(), "the hashes are cached for the next check");
}

// 3. A diverged model is an error that names the stage; nothing non-finite is committed.
#[test]
fn divergence_is_caught_before_anything_is_committed() {
    // The issue's reproduction: 2,000 MNIST images, one epoch, a learning rate of 1e6.
    let p = Project::mnist("trust-nan", 2000);
    let e = p.fails(&small(&["pipeline", "run", "encode-mnist-simple-s42", "--set", "models.simple.lr=1e6"]));
    assert!(e.contains("train-mnist-simple-s42 diverged at epoch") && e.contains("lower models.simple.lr"), "{e}");
    // Either the loss turns NaN first or (where a NaN hides behind a ReLU) the weights do.
    assert!(e.contains("the loss is NaN") || e.contains("NaN or infinite"), "{e}");
    assert!(!p.artifacts().join("train-mnist-simple-s42").exists());
    assert!(lock(&p)["stages"].get("train-mnist-simple-s42").is_none());
    assert!(lock(&p)["stages"].get("encode-mnist-simple-s42").is_none());
}

// 4. A `.tmp` or `.store` that is a symbolic link is refused, and its target is untouched.
#[test]
fn symlinked_tmp_or_store_is_refused_and_its_target_untouched() {
    let p = Project::new("trust-symlink");
    run_json(&p, &["pipeline", "run", "download-mnist"]);
    let outside = p.path().join("precious");
    for dir in [".tmp", ".store"] {
        let inner = p.artifacts().join(dir);
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep.txt"), "mine").unwrap();
        let moved = p.path().join(format!("moved{dir}"));
        fs::rename(&inner, &moved).unwrap();
        std::os::unix::fs::symlink(&outside, &inner).unwrap();
        for args in [&["pipeline", "run"][..], &["pipeline", "gc"], &["pipeline", "status"]] {
            let e = p.fails(&small(args));
            assert!(e.contains(dir) && e.contains("symbolic link"), "{args:?}: {e}");
            assert_eq!(fs::read_to_string(outside.join("keep.txt")).unwrap(), "mine", "{args:?} deleted through the link");
        }
        fs::remove_file(&inner).unwrap();
        fs::rename(&moved, &inner).unwrap();
    }
    // The write lock is not opened through a link either (it would truncate the target).
    let lock = p.artifacts().join(".run.lock");
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(outside.join("keep.txt"), &lock).unwrap();
    let e = p.fails(&small(&["pipeline", "run", "--force", "download-mnist"]));
    assert!(e.contains(".run.lock") && e.contains("symbolic link"), "{e}");
    assert_eq!(fs::read_to_string(outside.join("keep.txt")).unwrap(), "mine");
    fs::remove_file(&lock).unwrap();
    assert_eq!(p.status(&small(&[]))["download-mnist"], (true, String::new()));
}

// 5. A failed run leaves the lock and the views consistent; a view pointing elsewhere is stale.
#[test]
fn a_failed_run_leaves_lock_and_views_consistent() {
    let p = Project::new("trust-views");
    run_json(&p, &["pipeline", "run"]);
    assert_lock_and_views_agree(&p);

    let args: Vec<&str> =
        ["pipeline", "run"].into_iter().chain(SMALL).chain(["--set", "kmeans.seeds=[0]", "--set", "kmeans.k=10001"]).collect();
    let e = p.fails(&args);
    assert!(e.contains("kmeans.k = 10001 exceeds the 20 points"), "{e}");
    assert_lock_and_views_agree(&p);
    let st = p.status(&small(&[]));
    assert!(!st["kmeans-mnist-simple-s42-1"].0, "seed 1 is no longer recorded, yet status says fresh: {st:?}");
    let v = run_json(&p, &["pipeline", "run"]);
    assert!(ran(&v).is_empty(), "the forgotten entries come back from the run-cache: {v}");
    assert_lock_and_views_agree(&p);

    // A view re-pointed at another stage's entry.
    let other = fs::read_link(p.artifacts().join("kmeans-mnist-simple-s42-0")).unwrap();
    let view = p.artifacts().join("kmeans-mnist-simple-s42-1");
    fs::remove_file(&view).unwrap();
    std::os::unix::fs::symlink(&other, &view).unwrap();
    let (fresh, reason) = p.status(&small(&[]))["kmeans-mnist-simple-s42-1"].clone();
    assert!(!fresh && reason.contains("points at") && reason.contains("in run-cache"), "{reason}");
    let v = run_json(&p, &["pipeline", "run"]);
    assert!(ran(&v).is_empty(), "{v}");
    assert_lock_and_views_agree(&p);
    assert!(p.status(&small(&[])).values().all(|(fresh, _)| *fresh));
}

// 6. New mtimes over the same content are not corruption, with or without --verify.
#[test]
fn new_mtimes_with_the_same_content_are_not_corruption() {
    let p = Project::new("trust-mtime");
    run_json(&p, &["pipeline", "run", "train-mnist-simple-s42"]);

    // `cp -r` without -p: new mtimes everywhere, links copied as links.
    let copy = p.path().join("copy");
    let status = std::process::Command::new("cp").arg("-r").arg(p.artifacts()).arg(&copy).status().unwrap();
    assert!(status.success());
    let st = p.status(&small(&["--artifacts", "copy"]));
    assert!(st["train-mnist-simple-s42"].0 && st["download-mnist"].0, "{st:?}");
    let v = run_json(&p, &["pipeline", "run", "train-mnist-simple-s42", "--artifacts", "copy", "--verify"]);
    assert!(ran(&v).is_empty(), "{v}");

    // `touch`: the quick check re-hashes, finds the same content and records the new mtime.
    // (In the past: a file modified in the last 2 s is never trusted by its mtime.)
    let other = SystemTime::now() - Duration::from_secs(60);
    for f in files_under(&p.artifacts().join(".store")) {
        set_mtime(&f, other);
    }
    let st = p.status(&small(&[]));
    assert!(st["train-mnist-simple-s42"].0 && st["download-mnist"].0, "{st:?}");
    let v = run_json(&p, &["pipeline", "run", "train-mnist-simple-s42"]);
    assert!(ran(&v).is_empty(), "{v}");
    let model = p.artifacts().join("train-mnist-simple-s42/model.safetensors");
    let recorded = lock(&p)["stages"]["train-mnist-simple-s42"]["outputs"]["model.safetensors"]["mtime_ns"].as_u64().unwrap() as u128;
    let actual = fs::metadata(&model).unwrap().modified().unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    assert_eq!(recorded, actual, "the new mtime is recorded");

    // "corrupt" is kept for content that really differs.
    let mut bytes = fs::read(&model).unwrap();
    bytes[100] ^= 1;
    fs::write(&model, bytes).unwrap();
    assert_eq!(p.status(&small(&[]))["train-mnist-simple-s42"], (false, "corrupt: train-mnist-simple-s42/model.safetensors".into()));
}

// 7. Every number in the report comes from the run.
#[test]
fn the_report_states_the_runs_numbers() {
    let p = Project::new("trust-report");
    run_json(&p, &["pipeline", "run", "--set", "kmeans.k=5", "--set", "train.limit=30"]);
    let report = fs::read_to_string(p.artifacts().join("plot/report.md")).unwrap();
    assert!(report.contains("- mnist: 30 training images, 20 test images, 1x28x28 images, 10 classes"), "{report}");
    assert!(report.contains("k = 5,"), "{report}");
    assert!(!report.contains("60,000") && !report.contains("10,000") && !report.contains("k = 10"), "{report}");
}

// 8. The temporary files of killed lock writes are cleaned by `run` and `gc`.
#[test]
fn leftover_lock_writes_are_cleaned() {
    let p = Project::new("trust-leftover");
    run_json(&p, &["pipeline", "run", "download-mnist"]);
    let leftovers = [".pipeline.lock.tmp.99999", ".file-hashes.json.tmp.99999"];
    for args in [&["pipeline", "run", "download-mnist"][..], &["pipeline", "gc"]] {
        for name in leftovers {
            fs::write(p.artifacts().join(name), "half").unwrap();
        }
        p.ok(&small(args));
        for name in leftovers {
            assert!(!p.artifacts().join(name).exists(), "{args:?} left {name}");
        }
    }
    assert_eq!(p.status(&small(&[]))["download-mnist"], (true, String::new()));
}

// 9. A damaged lock record makes its stage stale (with advice), never an internal error.
#[test]
fn a_damaged_lock_record_is_stale_not_an_internal_error() {
    let p = Project::new("trust-lock");
    run_json(&p, &["pipeline", "run", "encode-mnist-simple-s42"]);
    let path = p.artifacts().join("pipeline.lock");
    let mut l = lock(&p);
    l["stages"]["train-mnist-simple-s42"]["outputs"].as_object_mut().unwrap().remove("history.json");
    l["stages"]["download-mnist"].as_object_mut().unwrap().remove("fingerprint");
    fs::write(&path, serde_json::to_string_pretty(&l).unwrap()).unwrap();

    let st = p.status(&small(&[]));
    for id in ["download-mnist", "train-mnist-simple-s42"] {
        let (fresh, reason) = &st[id];
        assert!(!fresh && reason.contains("lock record unreadable") && reason.contains("deleting pipeline.lock is safe"), "{id}: {reason}");
    }
    let v = run_json(&p, &["pipeline", "run", "encode-mnist-simple-s42"]);
    assert!(ran(&v).is_empty(), "both records come back from the store: {v}");
    assert!(p.status(&small(&[]))["encode-mnist-simple-s42"].0);

    // A lock from a newer latentscope is refused, not silently rewritten.
    let mut l = lock(&p);
    l["version"] = 99.into();
    fs::write(&path, serde_json::to_string_pretty(&l).unwrap()).unwrap();
    let e = p.fails(&small(&["pipeline", "run"]));
    assert!(e.contains("format version 99"), "{e}");
    assert_eq!(lock(&p)["version"], 99);
}

// 10. `--force` of a stage the run does not select is an error.
#[test]
fn force_outside_the_selection_is_an_error() {
    let p = Project::new("trust-force");
    let e = p.fails(&small(&["pipeline", "run", "download-mnist", "--force", "plot"]));
    assert!(e.contains("--force plot") && e.contains("does not select"), "{e}");
    assert!(!p.artifacts().join("pipeline.lock").exists());
}

// 11. Outputs get the permissions of any new file (the umask), safetensors included.
#[test]
fn outputs_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new("trust-mode");
    run_json(&p, &["pipeline", "run", "encode-mnist-simple-s42"]);
    let probe = p.path().join("probe");
    fs::write(&probe, "x").unwrap();
    let want = fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    let files = files_under(&p.artifacts().join(".store"));
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "safetensors")));
    for f in files {
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{}: mode {mode:o}, a new file gets {want:o}", f.display());
    }
}

// 12. A fully fresh run writes nothing: no lock file, so a read-only folder works.
#[test]
fn a_fresh_run_takes_no_write_lock() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new("trust-readonly");
    run_json(&p, &["pipeline", "run", "download-mnist"]);
    fs::remove_file(p.artifacts().join(".run.lock")).unwrap();
    let dirs = [p.artifacts(), p.artifacts().join(".store"), p.artifacts().join(".tmp")];
    for d in &dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let before = blake3_file(&p.artifacts().join("pipeline.lock"));
    let out = p.run(&small(&["pipeline", "run", "download-mnist"]));
    for d in &dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 ran, 1 cached"), "{}", text(&out.stdout));
    assert!(!p.artifacts().join(".run.lock").exists(), "a no-op run took the write lock");
    assert_eq!(blake3_file(&p.artifacts().join("pipeline.lock")), before);
}

// Messages: a Hub fallback says what the local folder lacks.
#[test]
fn the_hub_fallback_says_what_dataset_local_lacks() {
    let p = Project::new("trust-fallback");
    fs::remove_file(p.path().join("data/train-labels-idx1-ubyte.gz"))
        .or_else(|_| fs::remove_file(p.path().join("data/train-labels-idx1-ubyte")))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = p
        .cmd(&small(&["pipeline", "run", "download-mnist"]))
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("HF_HOME", p.path().join("hf-home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("datasets.mnist.local (data) lacks train-labels-idx1-ubyte") && e.contains("the Hub"), "{e}");
}

/// Issue 22, items 1 and 2: the order of `models:` changes what `score` and `plot` write, so
/// reordering makes them stale (same fingerprint would mean same bytes); a stage whose
/// outputs changed says so, not "unreadable".
#[test]
fn reordering_models_makes_score_and_plot_stale_and_new_outputs_are_named() {
    let p = Project::new("trust-order");
    run_json(&p, &["pipeline", "run"]);
    let cfg = p.path().join("pipeline.yaml");
    let text = fs::read_to_string(&cfg).unwrap();
    let simple = text.lines().find(|l| l.trim_start().starts_with("simple:")).unwrap().to_owned();
    let conv = text.lines().find(|l| l.trim_start().starts_with("conv:")).unwrap().to_owned();
    let swapped = text.replace(&simple, "@SIMPLE@").replace(&conv, &simple).replace("@SIMPLE@", &conv);
    fs::write(&cfg, &swapped).unwrap();
    let st = p.status(&small(&[]));
    let (fresh, reason) = &st["score"];
    assert!(!fresh && reason.contains("params changed: order"), "{reason}");
    assert_eq!(st["plot"], (false, "upstream stale: score".to_owned()));
    assert!(st.iter().filter(|(id, _)| !["score", "plot"].contains(&id.as_str())).all(|(_, (fresh, _))| *fresh), "{st:?}");
    let v = run_json(&p, &["pipeline", "run"]);
    assert_eq!(ran(&v), ["score", "plot"]);
    fs::write(&cfg, &text).unwrap();

    // A new model: plot's outputs change, and status says which.
    let wide = ["--set", "models.wide={arch: mlp, encoder: [784, 16, 4], epochs: 1, batch_size: 8, lr: 0.001, weight_decay: 0.0}"];
    let st = p.status(&small(&wide));
    let (fresh, reason) = &st["plot"];
    assert!(!fresh && reason.starts_with("outputs changed: + ") && reason.contains("wide"), "{reason}");
    assert!(!reason.contains("unreadable"), "{reason}");
}
