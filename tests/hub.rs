//! `pipeline publish` and `pipeline pull` against a mock Hub on 127.0.0.1 (tests/common/hubmock.rs).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::hubmock::HubMock;
use common::{text, Project};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_testTOKEN0123456789abcdef";
const REPO: &str = "alice/latentscope-run";

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the binary against `hub` with `token` (None: no token anywhere) and an empty HF_HOME.
fn hub_cmd(p: &Project, hub: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = p.cmd(args);
    c.env("HF_ENDPOINT", hub).env("HF_HOME", p.path().join("hf-home")).env_remove("HF_TOKEN_PATH");
    match token {
        Some(t) => c.env("HF_TOKEN", t),
        None => c.env_remove("HF_TOKEN"),
    };
    c.output().unwrap()
}

fn ok(out: Output, what: &str) -> (String, String) {
    assert!(out.status.success(), "{what} failed:\nstdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

fn fails(out: Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should fail:\nstdout: {}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(TOKEN) && !text(&out.stderr).contains(TOKEN), "{what} printed the token");
    eprintln!("{what}: {}", text(&out.stderr).lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join(" / "));
    text(&out.stderr)
}

/// Every file under `dir` (following no links), for the token scan.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            files_under(&e.path(), out);
        } else if meta.is_file() {
            out.push(e.path());
        }
    }
}

fn project(tag: &str) -> Project {
    let p = Project::new(tag);
    let cfg = p.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "seeds: [0, 1]")
        .replace("epochs: 20", "epochs: 2");
    std::fs::write(cfg, text).unwrap();
    p
}

#[test]
fn publish_then_wipe_then_pull_then_run_finds_everything_but_download_cached() {
    let p = project("hub-roundtrip");
    let hub = HubMock::new();
    hub.require_token(TOKEN);
    let publish = ["pipeline", "publish", "--repo", REPO, "--private"];

    // A stale pipeline is refused, naming the stages, before any request.
    let err = fails(hub_cmd(&p, &hub.url, Some(TOKEN), &publish), "publish of a stale pipeline");
    assert!(err.contains("stale stage") && err.contains("train-mnist-simple-s42") && err.contains("plot"), "{err}");
    assert!(hub.requests().is_empty());

    p.ok(&["pipeline", "run"]);

    // --dry-run lists the files with sizes and sends nothing; it needs no token.
    let (dry, _) = ok(
        hub_cmd(&p, &hub.url, None, &["pipeline", "publish", "--repo", REPO, "--dry-run", "--json", "--card-out", "card-preview.md"]),
        "dry run",
    );
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["outcome"], "dry_run");
    let planned: BTreeSet<String> = dry["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect();
    assert!(dry["files"].as_array().unwrap().iter().all(|f| f["size"].as_u64().unwrap() > 0));
    assert!(hub.requests().is_empty());

    // No token: a clear error before any request.
    let err = fails(hub_cmd(&p, &hub.url, None, &publish), "publish without a token");
    assert!(err.contains("no Hugging Face token") && err.contains("HF_TOKEN"), "{err}");
    assert!(hub.requests().is_empty());

    // The real thing: one commit with exactly the planned paths.
    let (stdout, stderr) = ok(hub_cmd(&p, &hub.url, Some(TOKEN), &publish), "publish");
    assert!(stdout.contains("created model repository") && stdout.contains("in one commit"), "{stdout}");
    let commits = hub.commits();
    assert_eq!(commits.len(), 1, "{commits:?}");
    let committed: BTreeSet<String> = commits[0].operations.iter().map(|(_, path)| path.clone()).collect();
    assert_eq!(committed, planned);
    assert_eq!(commits[0].operations.len(), planned.len(), "a path was sent twice");
    assert_eq!(hub.is_private(REPO), Some(true));
    let expected: BTreeSet<String> = [
        "README.md",
        "latentscope.json",
        "pipeline.yaml",
        "pipeline.lock",
        "metrics.json",
        "models/mnist/simple/s42/model.safetensors",
        "models/mnist/simple/s42/config.json",
        "models/mnist/conv/s42/history.json",
        "latents/mnist/conv/s42/latent.safetensors",
        "pca/mnist/simple/s42/pca.safetensors",
        "kmeans/mnist/conv/s42/seed-1/assignments.safetensors",
        "report/report.md",
        "report/loss-mnist.png",
        "report/contingency-mnist-conv.png",
    ]
    .map(String::from)
    .into();
    assert!(expected.is_subset(&committed), "missing: {:?}", expected.difference(&committed).collect::<Vec<_>>());
    assert!(!committed.iter().any(|f| f.contains("dataset")), "download's output is not published: {committed:?}");

    // Contents round-trip byte for byte.
    let tree = hub.tree(REPO, "main").unwrap();
    let arts = p.artifacts();
    for (repo_path, local) in [
        ("models/mnist/simple/s42/model.safetensors", "train-mnist-simple-s42/model.safetensors"),
        ("latents/mnist/conv/s42/latent.safetensors", "encode-mnist-conv-s42/latent.safetensors"),
        ("kmeans/mnist/simple/s42/seed-0/kmeans.json", "kmeans-mnist-simple-s42-0/kmeans.json"),
        ("metrics.json", "score/metrics.json"),
        ("report/pca-mnist-conv.png", "plot/pca-mnist-conv.png"),
    ] {
        assert_eq!(tree[repo_path], std::fs::read(arts.join(local)).unwrap(), "{repo_path}");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&tree["latentscope.json"]).unwrap();
    for path in &committed {
        if path != "latentscope.json" {
            assert_eq!(manifest["files"][path]["sha256"], sha256(&tree[path]), "{path}");
        }
    }

    // The model card: front matter the Hub reads, the metrics beside the seed's, figures,
    // and the command that reproduces the run.
    let card = String::from_utf8(tree["README.md"].clone()).unwrap();
    assert_eq!(
        std::fs::read_to_string(p.path().join("card-preview.md")).unwrap(),
        card,
        "the dry run's card preview is what was published"
    );
    assert!(card.starts_with("---\n"), "{card}");
    let front = card.split("\n---\n").next().unwrap();
    for needle in [
        "library_name: latentscope",
        "license: mit",
        "revision: 77f3279092a1c1579b2250db8eafed0ad422088c",
        "ylecun/mnist",
        "model-index:",
        "type: mse",
        "type: purity",
        "type: nmi",
    ] {
        assert!(front.contains(needle), "front matter lacks {needle}:\n{front}");
    }
    for needle in [
        "notebook's purity",
        "![mnist: training and test loss](report/loss-mnist.png)",
        "| mnist | local IDX copy of ylecun/mnist | 1x28x28 | 10 |",
        "class ConvAE(nn.Module):",
        "class SimpleAutoencoder(nn.Module):",
        &format!("conv.load_state_dict(load_file(hf_hub_download(\"{REPO}\", \"models/mnist/conv/s42/model.safetensors\", revision=\"main\")), strict=True)"),
        "## Limitations",
        "MNIST, CC BY-SA 3.0",
        "(licence: MIT OR Apache-2.0)",
        "`conv`: conv, channels [8, 4], dense [64], latent 10",
        "cargo xtask pipeline run",
        &format!("cargo xtask pipeline pull --repo {REPO} --revision main"),
    ] {
        assert!(card.contains(needle), "card lacks {needle}:\n{card}");
    }
    let config: serde_json::Value = serde_json::from_slice(&tree["models/mnist/conv/s42/config.json"]).unwrap();
    assert_eq!(config["architecture"], "ConvAE");
    assert_eq!(
        (config["arch"].clone(), config["latent"].clone(), config["input_shape"].clone()),
        ("conv".into(), 10.into(), serde_json::json!([1, 28, 28]))
    );

    // Large (binary) files were offered to the LFS batch endpoint under their sha256. This
    // server offers plain LFS ("basic"), and hf-hub 1.0 uploads LFS objects only through xet:
    // it falls back to sending the content inline in the commit. Pinned here so that a
    // change of that behaviour shows up.
    let offered: BTreeSet<(String, u64)> = hub.lfs_offered().into_iter().collect();
    let binary: BTreeSet<(String, u64)> = committed
        .iter()
        .filter(|p| p.ends_with(".safetensors") || p.ends_with(".png"))
        .map(|p| (sha256(&tree[p]), tree[p].len() as u64))
        .collect();
    assert_eq!(offered, binary);
    assert!(commits[0].operations.iter().all(|(key, _)| key == "file"), "{:?}", commits[0].operations);
    assert!(!hub.requests().iter().any(|r| r.method == "PUT"));

    // Every request carried the token; it appears in no output and no artefact.
    assert!(hub.requests().iter().all(|r| r.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"))));
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    let mut all = Vec::new();
    files_under(&arts, &mut all);
    for f in all {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "{} holds the token", f.display());
    }
    assert!(!tree.values().any(|b| b.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes())));

    // The same run again: no commit. With every log level on, the token still never shows.
    let mut again = p.cmd(&publish);
    again.env("HF_ENDPOINT", &hub.url).env("HF_HOME", p.path().join("hf-home")).env("HF_TOKEN", TOKEN).env("RUST_LOG", "trace");
    let (stdout, stderr) = ok(again.output().unwrap(), "re-publish");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked into the trace log");
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG"), "RUST_LOG=trace took no effect");
    assert!(stdout.contains("up to date"), "{stdout}");
    assert_eq!(hub.commits().len(), 1);

    // Wipe, pull, run: only download runs; every other stage is found done.
    let stages_before = p.status(&[]);
    std::fs::remove_dir_all(&arts).unwrap();
    let (stdout, _) = ok(hub_cmd(&p, &hub.url, Some(TOKEN), &["pipeline", "pull", "--repo", REPO, "--json"]), "pull");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["pulled"].as_array().unwrap().len(), stages_before.len() - 1, "{report}");
    assert_eq!(
        std::fs::read(arts.join("train-mnist-conv-s42/model.safetensors")).unwrap(),
        tree["models/mnist/conv/s42/model.safetensors"]
    );
    let summary: serde_json::Value = serde_json::from_str(&p.ok(&["pipeline", "run", "--json"])).unwrap();
    assert_eq!(summary["ran"], serde_json::json!(["download-mnist"]), "{summary}");
    assert_eq!(summary["cached"].as_array().unwrap().len(), stages_before.len() - 1, "{summary}");
    assert!(p.status(&["--verify"]).values().all(|(fresh, _)| *fresh));

    // Pulling again downloads nothing: every entry is in the store already.
    let downloads = || hub.requests().iter().filter(|r| r.method == "GET" && r.path.contains("/resolve/")).count();
    let gets_before = downloads();
    let (stdout, _) = ok(hub_cmd(&p, &hub.url, Some(TOKEN), &["pipeline", "pull", "--repo", REPO, "--json"]), "second pull");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["pulled"].as_array().unwrap().len(), report["present"].as_array().unwrap().len()),
        (0, stages_before.len() - 1),
        "{report}"
    );
    assert_eq!(downloads(), gets_before + 2, "only latentscope.json and pipeline.lock are read");

    // Pulled under other settings: the pull says which stages will still run, and why.
    let (stdout, _) = ok(
        hub_cmd(
            &p,
            &hub.url,
            Some(TOKEN),
            &["pipeline", "pull", "--repo", REPO, "--set", "kmeans.seeds=[0,1,2]", "--set", "models.conv.epochs=3"],
        ),
        "pull under other settings",
    );
    assert!(stdout.contains("kmeans-mnist-simple-s42-2: not in the published run"), "{stdout}");
    assert!(stdout.contains("train-mnist-conv-s42: models.conv.epochs 3 here, 2 published"), "{stdout}");
    assert!(!stdout.contains("train-mnist-simple-s42:"), "{stdout}");

    // The local run against the published one, like `dvc metrics diff`.
    let diff = p
        .cmd(&["pipeline", "metrics", "--diff", &format!("hub:{REPO}@main"), "--json"])
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    let (diff, _) = ok(diff, "metrics --diff hub:");
    let diff: serde_json::Value = serde_json::from_str(&diff).unwrap();
    assert_eq!(diff["old"], diff["new"], "the pulled run is the published one");
    assert!(diff["old"].as_object().unwrap().len() > 8, "{diff}");

    // Another branch: created from main, committed to, main untouched.
    let (stdout, _) = ok(
        hub_cmd(&p, &hub.url, Some(TOKEN), &["pipeline", "publish", "--repo", REPO, "--revision", "exp-1", "--message", "try it"]),
        "publish to a branch",
    );
    assert!(stdout.contains("at exp-1"), "{stdout}");
    assert_eq!(hub.commits().len(), 2);
    assert_eq!((hub.commits()[1].branch.as_str(), hub.commits()[1].summary.as_str()), ("exp-1", "try it"));
    assert_eq!(hub.tree(REPO, "main").unwrap(), tree);

    // A published file that does not match the published lock: the pull fails naming it, and
    // that stage's entry does not enter the store.
    hub.tamper(REPO, "main", "models/mnist/conv/s42/model.safetensors", b"not the weights");
    let q = project("hub-tampered");
    let err = fails(hub_cmd(&q, &hub.url, Some(TOKEN), &["pipeline", "pull", "--repo", REPO]), "pull of a tampered file");
    assert!(err.contains("models/mnist/conv/s42/model.safetensors") && err.contains("hash mismatch"), "{err}");
    assert!(!q.artifacts().join("train-mnist-conv-s42").exists());
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(q.artifacts().join("pipeline.lock")).unwrap_or(b"{\"stages\":{}}".to_vec())).unwrap();
    assert!(lock["stages"].get("train-mnist-conv-s42").is_none(), "{lock}");
}

#[test]
fn publish_failures_are_clear_and_leave_the_remote_unchanged() {
    let p = project("hub-failures");
    p.ok(&["pipeline", "run"]);
    let publish = ["pipeline", "publish", "--repo", REPO];

    // A token without write access: 401 everywhere.
    let hub = HubMock::new();
    hub.require_token("hf_the_right_one");
    let err = fails(hub_cmd(&p, &hub.url, Some(TOKEN), &publish), "publish with a bad token");
    assert!(err.contains("lacks write access") && err.contains(REPO) && err.contains("401"), "{err}");
    assert!(hub.commits().is_empty());

    // A 429 on the pre-upload, a connection reset and a 500 on the commit are retried; one
    // commit lands.
    let hub = HubMock::new();
    hub.fail("POST", "/preupload/", 429, 1);
    hub.fail("POST", "/commit/", 0, 1);
    hub.fail("POST", "/commit/", 500, 1);
    ok(hub_cmd(&p, &hub.url, Some(TOKEN), &publish), "publish through a 429, a reset and a 500");
    let posts = |fragment: &str| hub.requests().iter().filter(|r| r.method == "POST" && r.path.contains(fragment)).count();
    assert_eq!((posts("/preupload/"), posts("/commit/"), hub.commits().len()), (2, 3, 1));

    // A commit that keeps failing leaves the remote as it was, and says what failed.
    let before = hub.tree(REPO, "main").unwrap();
    std::fs::write(
        p.path().join("pipeline.yaml"),
        std::fs::read_to_string(p.path().join("pipeline.yaml")).unwrap().replace("samples: 9", "samples: 5"),
    )
    .unwrap();
    p.ok(&["pipeline", "run"]);
    hub.fail("POST", "/commit/", 503, 20);
    let err = fails(hub_cmd(&p, &hub.url, Some(TOKEN), &publish), "publish through persistent 503s");
    assert!(err.contains("committing to") && err.contains("unchanged") && err.contains("503"), "{err}");
    assert_eq!(hub.tree(REPO, "main").unwrap(), before);

    // Nothing listening: a clear error naming the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = fails(hub_cmd(&p, &url, Some(TOKEN), &publish), "publish to a closed port");
    assert!(err.contains("cannot reach the Hub at") && err.contains(&url), "{err}");

    // A file changed behind the store's back (same size, same mtime): publish re-hashes and refuses.
    let victim = p.artifacts().join("kmeans-mnist-simple-s42-0/kmeans.json");
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let i = bytes.iter().position(|b| b.is_ascii_digit()).unwrap();
    bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::File::options().write(true).open(&victim).unwrap().set_modified(mtime).unwrap();
    let err = fails(hub_cmd(&p, &url, Some(TOKEN), &publish), "publish of a corrupted artefact");
    assert!(err.contains("kmeans-mnist-simple-s42-0/kmeans.json does not match the lock file"), "{err}");

    // Pull of a repository that latentscope did not publish.
    let hub = HubMock::new();
    let err = fails(hub_cmd(&p, &hub.url, None, &["pipeline", "pull", "--repo", "bob/nothing"]), "pull of a missing repo");
    assert!(err.contains("bob/nothing at main was not found"), "{err}");
}
