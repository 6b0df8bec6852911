//! Bad input found by fault injection (issue 21, items 8 and 9), through the real binary: each
//! is refused with the file or the config key and what is wrong, before anything is computed
//! under a misleading name.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use common::hubmock::HubMock;
use common::{fake_dataset, text, Project, TempDir};
use latentscope::data::{hub, Dataset};
use sha2::{Digest, Sha256};

/// The shipped config's Hub revision of MNIST (the mock serves it).
const REV: &str = "77f3279092a1c1579b2250db8eafed0ad422088c";
/// The shipped config's pinned sha256 of the two parquet files.
const TRAIN_SHA: &str = "f2c01285a9f89399335b00ee4e8d499dc4e46db5e39c74903ce5618d895eb3bf";
const TEST_SHA: &str = "d49fcf556ce25b002b302e318ce4a11098bbfe5d4499c3f35d7c72297c52374b";

/// Quick training settings for the runs that get as far as training.
const QUICK: [&str; 6] = ["--set", "models.simple.epochs=1", "--set", "models.conv.epochs=1", "--set", "device=cpu"];

/// Overwrites the `word`-th big-endian u32 of a plain IDX file (word 0 is the magic number).
fn set_word(path: &Path, word: usize, value: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[4 * word..4 * word + 4].copy_from_slice(&value.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Overwrites one label of a plain IDX label file.
fn set_label(path: &Path, index: usize, label: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[8 + index] = label;
    std::fs::write(path, bytes).unwrap();
}

fn nothing_stored(p: &Project) -> bool {
    match std::fs::read_dir(p.artifacts().join(".store")) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => true,
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A project whose MNIST comes from a mock Hub serving `data` (its local folder is absent).
fn hub_project(tag: &str, data: &Dataset) -> (Project, HubMock, TempDir) {
    let p = Project::new(tag);
    let files = TempDir::new("bad-input-parquet");
    let mut served = HashMap::new();
    let mut shas = Vec::new();
    for (split, name) in [(&data.train, "train"), (&data.test, "test")] {
        let path = files.path().join(format!("{name}.parquet"));
        hub::write_parquet(&path, split, &Default::default()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        shas.push(sha256(&bytes));
        served.insert(format!("/datasets/ylecun/mnist/resolve/{REV}/mnist/{name}-00000-of-00001.parquet"), bytes);
    }
    let cfg = common::shipped_config()
        .replace("local: data/mnist", "local: no-such-dir")
        .replace(TRAIN_SHA, &shas[0])
        .replace(TEST_SHA, &shas[1]);
    std::fs::write(p.path().join("pipeline.yaml"), cfg).unwrap();
    (p, HubMock::start(served, REV), files)
}

fn run_on_hub(p: &Project, mock: &HubMock, args: &[&str]) -> Output {
    p.cmd(args).env("HF_ENDPOINT", &mock.url).env("HF_HOME", p.path().join("hf-home")).output().unwrap()
}

// Item 8a: a label 255 among 0..9 made 256 classes with a warning only.
#[test]
fn a_stray_label_is_refused_naming_the_file_and_the_rule() {
    let p = Project::new("bad-label");
    let labels = p.path().join("data/train-labels-idx1-ubyte");
    set_label(&labels, 17, 255);
    let e = p.fails(&["pipeline", "run", "download-mnist"]);
    assert!(
        e.contains("train-labels-idx1-ubyte: label 255 at index 17, but the labels otherwise use 0..9; labels must be the class indices 0..k-1 with every class present in the training split"),
        "{e}"
    );
    assert!(nothing_stored(&p), "nothing is stored");

    // A test label that no training image has: a class the models never saw.
    set_label(&labels, 17, 8);
    set_label(&p.path().join("data/t10k-labels-idx1-ubyte"), 3, 10);
    let e = p.fails(&["pipeline", "run", "download-mnist"]);
    assert!(e.contains("t10k-labels-idx1-ubyte: label 10 at index 3, but the labels otherwise use 0..9"), "{e}");

    // The same rule for a Hub dataset names its parquet file.
    let mut data = fake_dataset(20, 10);
    data.test.labels[4] = 10;
    let (p, mock, _files) = hub_project("bad-label-hub", &data);
    let out = run_on_hub(&p, &mock, &["pipeline", "run", "download-mnist"]);
    let e = text(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("ylecun/mnist/mnist/test-00000-of-00001.parquet: label 10 at index 4, but the labels otherwise use 0..9"), "{e}");
}

// Item 8b: `train.limit=100000` trained on 60,000 images under a new fingerprint.
#[test]
fn a_limit_above_the_training_split_is_refused_naming_the_key() {
    let p = Project::new("bad-limit");
    let mut args = vec!["pipeline", "run", "train-mnist-simple-s42", "--set", "train.limit=100000"];
    args.extend(QUICK);
    let e = p.fails(&args);
    assert!(e.contains("train.limit") && e.contains("100000") && e.contains("dataset mnist has only 40 training images"), "{e}");
    assert!(!p.artifacts().join("download-mnist").exists(), "refused before anything ran");
    // The whole split is a valid limit.
    p.ok(&["pipeline", "status", "--set", "train.limit=40"]);

    // Hub data's size is known only once downloaded: the train stage refuses, never clamps.
    let (p, mock, _files) = hub_project("bad-limit-hub", &fake_dataset(20, 10));
    let mut args = vec!["pipeline", "run", "train-mnist-simple-s42", "--set", "train.limit=25"];
    args.extend(QUICK);
    let out = run_on_hub(&p, &mock, &args);
    let e = text(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("train-mnist-simple-s42: train.limit is 25, but dataset mnist has only 20 training images"), "{e}");
    assert!(!p.artifacts().join("train-mnist-simple-s42").exists());
}

// Item 8c: a quoted number passed as an integer.
#[test]
fn a_quoted_number_is_refused_naming_the_key() {
    let p = Project::new("bad-quoted");
    let cfg = p.path().join("pipeline.yaml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    let quoted = good.replacen("kmeans: {k: 10,", "kmeans: {k: \"10\",", 1);
    assert_ne!(quoted, good);
    std::fs::write(&cfg, quoted).unwrap();
    let e = p.fails(&["pipeline", "status"]);
    assert!(e.contains("pipeline.yaml") && e.contains("kmeans.k: expected an integer, found the string \"10\""), "{e}");

    std::fs::write(&cfg, good).unwrap();
    let e = p.fails(&["pipeline", "status", "--set", "kmeans.k=\"10\""]);
    assert!(e.contains("kmeans.k: expected an integer, found the string \"10\""), "{e}");
    p.ok(&["pipeline", "status", "--set", "kmeans.k=10"]);
}

// Item 9: an IDX header dimension of 0xFFFFFFFF said "make encoder[0] 18446744065119617025".
#[test]
fn an_impossible_idx_header_is_refused_naming_the_file_and_the_header() {
    let p = Project::new("bad-header");
    set_word(&p.path().join("data/train-images-idx3-ubyte"), 2, u32::MAX);
    let mut args = vec!["pipeline", "run"];
    args.extend(QUICK);
    let e = p.fails(&args);
    assert!(
        e.contains("train-images-idx3-ubyte: truncated: the IDX header says 40 x 4294967295 x 28")
            && e.contains("but the file holds 31360 bytes of data"),
        "{e}"
    );
    assert!(!e.contains("encoder"), "{e}");
    assert!(nothing_stored(&p), "nothing is stored");
}
