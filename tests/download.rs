//! The download stage: the real MNIST copy, the Hub path against a local mock Hub, and bad input.

mod common;

use std::collections::HashMap;

use common::hubmock::HubMock;
use common::{blake3_file, fake_dataset, mnist_dir, Project, TempDir};
use latentscope::data::{hub, Dataset};
use sha2::{Digest, Sha256};

const REV: &str = "77f3279092a1c1579b2250db8eafed0ad422088c";

#[test]
fn real_mnist_label_counts() {
    let p = Project::new("dl-real");
    let cfg = p.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("local: data", &format!("local: {}", mnist_dir().display()));
    std::fs::write(&cfg, text).unwrap();
    p.ok(&["pipeline", "run", "download-mnist"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("download-mnist/dataset.json")).unwrap()).unwrap();
    assert_eq!(summary["train"]["labels"], serde_json::json!([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]));
    assert_eq!(summary["test"]["labels"], serde_json::json!([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]));
    assert!(summary["source"]["checksums"].as_array().unwrap().iter().all(|c| c["canonical_mnist"] == true));
    assert_eq!(
        (summary["shape"].clone(), summary["classes"].clone()),
        (serde_json::json!({"channels": 1, "height": 28, "width": 28}), 10.into())
    );
    let data = Dataset::read(&p.artifacts().join("download-mnist/dataset.safetensors")).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60000, 10000));
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A project whose `datasets.mnist.local` is absent, pointing at a mock Hub serving `data`.
fn hub_project(tag: &str, data: &Dataset, corrupt_sha: bool) -> (Project, HubMock, TempDir) {
    let p = Project::new(tag);
    let files = TempDir::new("parquet");
    let (tr, te) = (files.path().join("train.parquet"), files.path().join("test.parquet"));
    hub::write_parquet(&tr, &data.train, &Default::default()).unwrap();
    hub::write_parquet(&te, &data.test, &Default::default()).unwrap();
    let (tr, te) = (std::fs::read(tr).unwrap(), std::fs::read(te).unwrap());
    let prefix = format!("/datasets/ylecun/mnist/resolve/{REV}/mnist");
    let mut served = HashMap::new();
    served.insert(format!("{prefix}/train-00000-of-00001.parquet"), tr.clone());
    served.insert(format!("{prefix}/test-00000-of-00001.parquet"), te.clone());
    let mock = HubMock::start(served, REV);
    let train_sha = if corrupt_sha { "0".repeat(64) } else { sha256(&tr) };
    let cfg = common::shipped_config()
        .replace("local: data/mnist", "local: no-such-dir")
        .replace("f2c01285a9f89399335b00ee4e8d499dc4e46db5e39c74903ce5618d895eb3bf", &train_sha)
        .replace("d49fcf556ce25b002b302e318ce4a11098bbfe5d4499c3f35d7c72297c52374b", &sha256(&te));
    std::fs::write(p.path().join("pipeline.yaml"), cfg).unwrap();
    (p, mock, files)
}

#[test]
fn hub_and_idx_sources_give_the_same_tensors() {
    let data = fake_dataset(30, 12);
    let (p, mock, _files) = hub_project("dl-hub", &data, false);
    let hf_home = p.path().join("hf-home");
    let run = |p: &Project| {
        let out = p.cmd(&["pipeline", "run", "download-mnist"]).env("HF_ENDPOINT", &mock.url).env("HF_HOME", &hf_home).output().unwrap();
        assert!(out.status.success(), "{}", common::text(&out.stderr));
    };
    run(&p);
    let via_hub = blake3_file(&p.artifacts().join("download-mnist/dataset.safetensors"));
    assert_eq!(Dataset::read(&p.artifacts().join("download-mnist/dataset.safetensors")).unwrap(), data);
    let summary = std::fs::read_to_string(p.artifacts().join("download-mnist/dataset.json")).unwrap();
    assert!(summary.contains("\"hub\""), "{summary}");
    let gets = mock.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets, 2, "{:?}", mock.requests());

    // The same images as IDX files give byte-identical output.
    let q = Project::new("dl-idx");
    latentscope::data::idx::write_dir(&q.path().join("data"), &data).unwrap();
    q.ok(&["pipeline", "run", "download-mnist"]);
    assert_eq!(blake3_file(&q.artifacts().join("download-mnist/dataset.safetensors")), via_hub);

    // A second download (forced) finds the parquet files in the hf-hub cache.
    let before = mock.requests().iter().filter(|r| r.method == "GET").count();
    let out =
        p.cmd(&["pipeline", "run", "--force", "download-mnist"]).env("HF_ENDPOINT", &mock.url).env("HF_HOME", &hf_home).output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(mock.requests().iter().filter(|r| r.method == "GET").count(), before, "cache first");
}

#[test]
fn hub_checksum_mismatch_fails_and_caches_nothing() {
    let data = fake_dataset(10, 5);
    let (p, mock, _files) = hub_project("dl-badsha", &data, true);
    let out = p
        .cmd(&["pipeline", "run", "download-mnist"])
        .env("HF_ENDPOINT", &mock.url)
        .env("HF_HOME", p.path().join("hf-home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = common::text(&out.stderr);
    assert!(e.contains("checksum mismatch") && e.contains("train-00000-of-00001.parquet"), "{e}");
    assert_eq!(std::fs::read_dir(p.artifacts().join(".store")).unwrap().count(), 0);
}

#[test]
fn bad_local_data_fails_with_file_and_problem() {
    let p = Project::new("dl-bad");
    let f = p.path().join("data/t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&f, bytes).unwrap();
    let e = p.fails(&["pipeline", "run", "download-mnist"]);
    assert!(e.contains("t10k-labels-idx1-ubyte") && e.contains("truncated"), "{e}");
    assert_eq!(std::fs::read_dir(p.artifacts().join(".store")).unwrap().count(), 0);
}

#[test]
fn unreachable_hub_is_a_clear_error() {
    let p = Project::new("dl-nohub");
    let cfg = p.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("local: data", "local: nothing-here");
    std::fs::write(&cfg, text).unwrap();
    // A port that refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = p
        .cmd(&["pipeline", "run", "download-mnist"])
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("HF_HOME", p.path().join("hf-home"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = common::text(&out.stderr);
    // Names what it was doing, the endpoint, and the settings that bound the wait.
    assert!(e.contains("downloading mnist/train-00000-of-00001.parquet from ylecun/mnist"), "{e}");
    assert!(e.contains(&format!("the Hub at http://127.0.0.1:{port}")) && e.contains("LATENTSCOPE_HUB_RETRIES"), "{e}");
}
