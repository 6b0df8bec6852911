//! The real binary: config errors, JSON output, the DAG, and a run killed with SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{text, Project};

#[test]
fn bad_yaml_unknown_keys_and_unknown_stages_are_clear_errors() {
    let p = Project::new("cli-errors");
    let cfg = p.path().join("pipeline.yaml");
    let good = std::fs::read_to_string(&cfg).unwrap();

    std::fs::write(&cfg, good.replace("plot: {samples: 9}", "plot: {samples: 9, dpi: 300}")).unwrap();
    let e = p.fails(&["pipeline", "status"]);
    assert!(e.contains("pipeline.yaml") && e.contains("dpi"), "{e}");

    std::fs::write(&cfg, good.replace("seeds: [42]", "seeds: [42")).unwrap();
    let e = p.fails(&["pipeline", "run"]);
    assert!(e.contains("pipeline.yaml"), "{e}");

    std::fs::write(&cfg, &good).unwrap();
    let e = p.fails(&["pipeline", "run", "no-such-stage"]);
    assert!(e.contains("unknown stage id no-such-stage") && e.contains("download-mnist"), "{e}");
    let e = p.fails(&["pipeline", "run", "--set", "kmeans.k=ten"]);
    assert!(e.contains("kmeans.k"), "{e}");
    let e = p.fails(&["pipeline", "status", "--config", "missing.yaml"]);
    assert!(e.contains("missing.yaml"), "{e}");
    assert!(!p.artifacts().join("pipeline.lock").exists());
}

#[test]
fn run_json_status_and_dag() {
    let p = Project::new("cli-json");
    let out = p.ok(&["pipeline", "run", "download-mnist", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("stdout is only JSON");
    assert_eq!(v["ran"], serde_json::json!(["download-mnist"]));
    assert_eq!(v["cached"], serde_json::json!([]));

    let out = p.ok(&["pipeline", "run", "download-mnist"]);
    assert!(out.contains("0 ran, 1 cached"), "{out}");

    let rows: serde_json::Value = serde_json::from_str(&p.ok(&["pipeline", "status", "--json"])).unwrap();
    assert_eq!(rows[0]["stage"], "download-mnist");
    assert_eq!(rows[0]["fresh"], true);

    // Only the keys a stage reads matter: changing k-means settings leaves download fresh,
    // changing the dataset source does not.
    assert_eq!(p.status(&["--set", "kmeans.max_iter=50"])["download-mnist"], (true, String::new()));
    let (fresh, reason) = &p.status(&["--set", "datasets.mnist.hub.revision=0123456789abcdef0123456789abcdef01234567"])["download-mnist"];
    assert!(!fresh && reason.contains("params changed: datasets.mnist.hub.revision"), "{reason}");
    // The typed form of the same reason, for tools.
    let rows: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&[
        "pipeline",
        "status",
        "--json",
        "--set",
        "datasets.mnist.hub.revision=0123456789abcdef0123456789abcdef01234567",
    ]))
    .unwrap();
    let cause = &rows[0]["cause"];
    assert_eq!(
        (cause["kind"].as_str(), cause["params"][0]["key"].as_str()),
        (Some("changed"), Some("datasets.mnist.hub.revision")),
        "{cause}"
    );
    assert_eq!(cause["params"][0]["new"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(rows[1]["cause"], serde_json::json!({"kind": "upstream-stale", "stage": "download-mnist"}));

    let dag = p.ok(&["pipeline", "dag"]);
    assert!(
        dag.contains("download-mnist [download]") && dag.contains("encode-mnist-conv-s42 [encode] <- train-mnist-conv-s42, download-mnist"),
        "{dag}"
    );
    assert!(p.ok(&["pipeline", "dag", "--format", "dot"]).starts_with("digraph"));
    assert!(p.ok(&["pipeline", "dag", "--format", "mermaid"]).starts_with("flowchart"));

    let view = p.artifacts().join("download-mnist/dataset.safetensors");
    assert!(view.is_file());
    let gc = p.ok(&["pipeline", "gc"]);
    assert!(gc.contains("removed 0 store entries"), "{gc}");
    assert!(p.ok(&["pipeline", "gc", "--dry-run"]).contains("would remove 0 store entries, freeing 0 B"));

    // `status --check` gates CI: 0 when the selection is fresh, 1 when anything is stale.
    assert_eq!(p.run(&["pipeline", "status", "--check"]).status.code(), Some(1), "train and the rest never ran");
    let dry = p.ok(&["pipeline", "run", "--dry-run", "train-*"]);
    assert!(dry.contains("would run: train-mnist-simple-s42 (never run)") && !dry.contains("would run: download"), "{dry}");
}

#[test]
fn sigkill_mid_stage_leaves_nothing_that_counts() {
    let p = Project::new("cli-kill");
    let mut child = p
        .cmd(&["pipeline", "run"])
        .env(latentscope::pipeline::runner::PAUSE_ENV, "download-mnist")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "binary exited early: {seen}");
        seen.push_str(&line);
        if line.contains("paused before commit: download") {
            break;
        }
    }
    // The outputs are fully written in scratch but not committed: kill now.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::fs::read_dir(p.artifacts().join(".tmp")).unwrap().count() > 0, "scratch should hold the killed stage's files");
    assert_eq!(std::fs::read_dir(p.artifacts().join(".store")).unwrap().count(), 0);
    assert!(!p.artifacts().join("download-mnist").exists());
    assert_eq!(p.status(&[])["download-mnist"], (false, "never run".to_owned()));

    // The next run is not blocked by the dead process's lock, cleans up and completes.
    let out = p.run(&["pipeline", "run", "download-mnist", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 ran, 0 cached"));
    assert_eq!(std::fs::read_dir(p.artifacts().join(".tmp")).unwrap().count(), 0);
    assert_eq!(p.status(&[])["download-mnist"], (true, String::new()));
}

#[test]
fn a_closed_stdout_is_not_an_error_and_metrics_before_a_run_says_so() {
    let p = Project::new("cli-pipe");
    let e = p.fails(&["pipeline", "metrics"]);
    assert!(e.contains("no run yet in artifacts"), "{e}");

    // `status | head -0`: the reader is gone before the first line is written.
    let mut child = p.cmd(&["pipeline", "dag"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("error"), "{}", text(&out.stderr));
}
