//! `run --executor slurm` against a real single-node Slurm cluster (tests/slurm/start.sh
//! starts one; `.ci/run` does, and sets LATENTSCOPE_SLURM_TEST=require so that these tests
//! fail rather than skip when the cluster is missing).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, Project};

/// Whether a Slurm cluster answers; without one the tests say why they skip (or fail, when
/// LATENTSCOPE_SLURM_TEST=require).
fn slurm() -> bool {
    let state = Command::new("sinfo").args(["--noheader", "--format=%T"]).output();
    let why = match state {
        Ok(out) if out.status.success() => {
            let states = text(&out.stdout);
            if states.lines().any(|s| ["idle", "mixed", "allocated"].iter().any(|ok| s.trim().starts_with(ok))) {
                return true;
            }
            format!("no usable node (sinfo: {})", states.trim())
        }
        Ok(out) => format!("sinfo failed: {}", text(&out.stderr).trim()),
        Err(e) => format!("no Slurm here (sinfo: {e})"),
    };
    assert!(
        std::env::var("LATENTSCOPE_SLURM_TEST").as_deref() != Ok("require"),
        "LATENTSCOPE_SLURM_TEST=require, but {why}; start one with: eval \"$(tests/slurm/start.sh)\""
    );
    eprintln!("skipped: {why}; start a single-node cluster with: eval \"$(tests/slurm/start.sh)\"");
    false
}

/// The quick MNIST project with two k-means seeds and a `slurm:` section for this node.
fn project(tag: &str) -> Project {
    let p = Project::mnist(tag, 300);
    let cfg = p.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "seeds: [0, 1]");
    let slurm = "slurm:\n  time: \"00:10:00\"\n  heavy: {cpus: 1, mem: 1G}\n  light: {cpus: 1, mem: 512M}\n  poll_s: 0.3\n";
    std::fs::write(&cfg, format!("{text}{slurm}")).unwrap();
    p
}

fn lock(p: &Project) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap()
}

/// Stage -> (file -> blake3) from the lock file.
fn output_hashes(p: &Project) -> BTreeMap<String, BTreeMap<String, String>> {
    let lock = lock(p);
    lock["stages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, rec)| {
            let files = rec["outputs"].as_object().unwrap().iter().map(|(f, r)| (f.clone(), r["blake3"].as_str().unwrap().to_owned()));
            (id.clone(), files.collect())
        })
        .collect()
}

/// The Slurm job ids the lock records, by stage.
fn job_ids(p: &Project) -> BTreeMap<String, String> {
    let lock = lock(p);
    lock["stages"].as_object().unwrap().iter().filter_map(|(id, r)| Some((id.clone(), r["job"].as_str()?.to_owned()))).collect()
}

/// Every job slurmctld knows: id -> (name, state).
fn queue() -> BTreeMap<String, (String, String)> {
    let out = Command::new("squeue").args(["--noheader", "--states=all", "--me", "--format=%i|%j|%T"]).output().unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            (f.len() == 3).then(|| (f[0].to_owned(), (f[1].to_owned(), f[2].to_owned())))
        })
        .collect()
}

/// The Slurm name of a stage's job in this project, from its job folder.
fn job_name(p: &Project, stage: &str) -> Option<String> {
    std::fs::read_dir(p.artifacts().join(".jobs")).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let (s, tag) = name.rsplit_once('.')?;
        (s == stage).then(|| format!("ls.{tag}.{stage}"))
    })
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A coordinator in the background, its stderr collected line by line.
struct Coordinator {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Coordinator {
    fn start(p: &Project, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = p.cmd(&["pipeline", "run", "--executor", "slurm"]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_log(&self, what: &str, needle: &str) {
        wait_for(what, Duration::from_secs(120), || self.log().contains(needle));
    }

    /// Waits for the process to end; its exit status and log.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        (status, self.log())
    }
}

fn sbatch_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("submitted Slurm job")).count()
}

#[test]
fn slurm_run_gives_the_local_bytes_and_reruns_only_stale_stages() {
    if !slurm() {
        return;
    }
    let local = project("slurm-local");
    local.ok(&["pipeline", "run"]);
    let p = project("slurm-same");

    // --dry-run: the sbatch lines, chained with afterok, and nothing submitted.
    let dry = p.ok(&["pipeline", "run", "--executor", "slurm", "--dry-run"]);
    assert!(dry.contains("would run: train-mnist-conv-s42"), "{dry}");
    let train_line = dry.lines().find(|l| l.contains("sbatch") && l.contains(".train-mnist-conv-s42")).expect("an sbatch line");
    assert!(
        train_line.contains("--cpus-per-task=1") && train_line.contains("--mem=1G") && train_line.contains("--time=00:10:00"),
        "{train_line}"
    );
    assert!(train_line.contains("afterok:<probe>:<download-mnist>") && train_line.contains("pipeline job"), "{train_line}");
    assert!(!p.artifacts().join("pipeline.lock").exists());

    let out = p.run(&["pipeline", "run", "--executor", "slurm", "--json"]);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let stages = summary["ran"].as_array().unwrap().len();
    assert_eq!(sbatch_lines(&log), stages, "one job per stage: {log}");

    // Byte-identical artefacts, whichever executor made them.
    assert_eq!(output_hashes(&p), output_hashes(&local));
    let lock = lock(&p);
    for (id, rec) in lock["stages"].as_object().unwrap() {
        assert_eq!(rec["executor"], "slurm", "{id}");
        assert!(rec["node"].as_str().is_some_and(|n| !n.is_empty()), "{id}: {rec}");
        assert!(rec["job"].as_str().is_some(), "{id}: {rec}");
    }
    assert_eq!(local_executor(&local), "local");
    // Job folders go once their results are in the store.
    let left: Vec<_> = std::fs::read_dir(p.artifacts().join(".jobs")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // Either executor's results are fresh for the other.
    assert!(p.ok(&["pipeline", "run"]).contains(&format!("0 ran, {stages} cached")));

    // A k-means edit (one iteration: other clusters, so score and plot change too): only
    // clustering, score and plot are submitted.
    let before = job_ids(&p);
    let out = p.run(&["pipeline", "run", "--executor", "slurm", "--json", "--set", "kmeans.max_iter=1"]);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let mut ran: Vec<&str> = summary["ran"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    ran.sort();
    assert!(ran.iter().all(|s| s.starts_with("kmeans-") || *s == "score" || *s == "plot"), "{ran:?}");
    assert_eq!(ran.len(), 6, "{ran:?}");
    assert_eq!(sbatch_lines(&log), 6, "{log}");
    let after = job_ids(&p);
    for (stage, id) in &after {
        assert_eq!(ran.contains(&stage.as_str()), before.get(stage) != Some(id), "{stage}");
    }
    // --force submits the forced stage again, and nothing else.
    let out = p.run(&["pipeline", "run", "score", "--force", "score", "--executor", "slurm", "--json", "--set", "kmeans.max_iter=1"]);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(summary["ran"], serde_json::json!(["score"]));
    assert_eq!(sbatch_lines(&log), 1, "{log}");
    assert_ne!(job_ids(&p)["score"], after["score"]);
    // The site settings never reach a fingerprint: another partition or account changes nothing.
    let status = p.ok(&["pipeline", "status", "--set", "kmeans.max_iter=1", "--set", "slurm.partition=gpu", "--set", "slurm.heavy.cpus=4"]);
    assert!(!status.contains("stale"), "{status}");
}

fn local_executor(p: &Project) -> String {
    lock(p)["stages"]["train-mnist-conv-s42"]["executor"].as_str().unwrap().to_owned()
}

#[test]
fn a_cancelled_job_fails_its_stage_and_independent_stages_go_on() {
    if !slurm() {
        return;
    }
    let p = project("slurm-scancel");
    let stage = "train-mnist-simple-s42";
    // The job stops after writing its outputs, before it reports: scancel catches it running.
    let c = Coordinator::start(&p, &[(latentscope::pipeline::runner::PAUSE_ENV, stage)]);
    c.wait_log("the plot job's submission", "submitted Slurm job");
    let mut target = None;
    wait_for("the paused training job", Duration::from_secs(120), || {
        let Some(name) = job_name(&p, stage) else { return false };
        let tag = name.split('.').nth(1).unwrap().to_owned();
        let log = p.artifacts().join(".jobs").join(format!("{stage}.{tag}")).join("job.log");
        target = queue().into_iter().find(|(_, (n, s))| *n == name && s == "RUNNING").map(|(id, _)| id);
        target.is_some() && std::fs::read_to_string(log).is_ok_and(|l| l.contains("paused before commit"))
    });
    let id = target.unwrap();
    let downstream = job_name(&p, "encode-mnist-simple-s42").expect("submitted with the rest");
    assert!(Command::new("scancel").arg(&id).status().unwrap().success());
    let (status, log) = c.finish();
    assert!(!status.success(), "{log}");
    assert!(log.contains(&format!("stage {stage} failed")) && log.contains(&format!("Slurm job {id} CANCELLED")), "{log}");
    // The log's tail is in the message.
    assert!(log.contains("paused before commit"), "{log}");
    let lock = lock(&p);
    let stages = lock["stages"].as_object().unwrap();
    assert!(!stages.contains_key(stage) && !stages.contains_key("encode-mnist-simple-s42"), "{lock}");
    // The other model's branch ran on.
    for done in ["train-mnist-conv-s42", "encode-mnist-conv-s42", "kmeans-mnist-conv-s42-1"] {
        assert!(stages.contains_key(done), "{done}: {log}");
    }
    // Nothing of the cancelled job entered the store, and no job of this run is left queued.
    let entries = std::fs::read_dir(p.artifacts().join(".store")).unwrap().count();
    assert_eq!(entries, stages.len());
    let left: Vec<(String, String)> = queue().into_values().filter(|(n, _)| *n == downstream).collect();
    assert!(left.iter().all(|(_, s)| s == "CANCELLED"), "{left:?}");
    // The next run runs the failed branch and gives a whole pipeline.
    let out = p.run(&["pipeline", "run", "--executor", "slurm"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(p.ok(&["pipeline", "status"]).lines().all(|l| l.contains("fresh")));
}

#[test]
fn a_killed_coordinator_is_replaced_by_one_that_adopts_its_jobs() {
    if !slurm() {
        return;
    }
    let local = project("slurm-adopt-local");
    local.ok(&["pipeline", "run"]);
    let p = project("slurm-adopt");
    let first = Coordinator::start(&p, &[]);
    first.wait_log("every submission", "submitted Slurm job");
    wait_for("the plot job", Duration::from_secs(60), || {
        job_name(&p, "plot").is_some() && first.log().matches("submitted Slurm job").count() >= 13
    });
    // A second coordinator on the same folder fails at once with --no-wait (or waits).
    let e = p.fails(&["pipeline", "run", "--executor", "slurm", "--no-wait"]);
    assert!(e.contains("another") || e.contains("holds"), "{e}");
    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL
    let (_, first_log) = first.finish();
    let submitted = sbatch_lines(&first_log);
    let ours: Vec<String> = queue().into_iter().filter(|(_, (n, _))| n.starts_with("ls.")).map(|(id, _)| id).collect();

    let out = p.run(&["pipeline", "run", "--executor", "slurm"]);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("adopting"), "{log}");
    assert_eq!(sbatch_lines(&log), 0, "nothing submitted twice: {log}");
    // Every recorded job is one the first coordinator submitted.
    for (stage, id) in job_ids(&p) {
        assert!(ours.contains(&id), "{stage}: job {id} is not one of the first coordinator's {submitted} jobs");
    }
    assert_eq!(output_hashes(&p), output_hashes(&local));
}

#[test]
fn ctrl_c_cancels_the_jobs() {
    if !slurm() {
        return;
    }
    let p = project("slurm-sigint");
    let c = Coordinator::start(&p, &[]);
    wait_for("submissions", Duration::from_secs(60), || c.log().matches("submitted Slurm job").count() >= 13);
    assert!(Command::new("kill").args(["-INT", &c.child.id().to_string()]).status().unwrap().success());
    let (status, log) = c.finish();
    assert!(!status.success() && log.contains("interrupted") && log.contains("cancelling Slurm jobs"), "{log}");
    let plot = job_name(&p, "plot");
    std::thread::sleep(Duration::from_secs(1));
    let live: Vec<(String, String)> =
        queue().into_values().filter(|(n, s)| Some(n) == plot.as_ref() && (s == "PENDING" || s == "RUNNING")).collect();
    assert!(live.is_empty(), "{live:?}");
}

#[test]
fn a_job_that_cannot_see_the_artefacts_folder_is_a_clear_error() {
    if !slurm() {
        return;
    }
    if !Command::new("unshare").args(["--mount", "true"]).status().is_ok_and(|s| s.success()) {
        assert!(std::env::var("LATENTSCOPE_SLURM_TEST").as_deref() != Ok("require"), "unshare --mount does not work here");
        eprintln!("skipped: unshare --mount does not work here (needs root)");
        return;
    }
    let p = project("slurm-unseen");
    std::fs::create_dir_all(p.artifacts()).unwrap();
    // The coordinator sees a private folder mounted over artifacts/; the jobs (started by
    // slurmd, outside this mount namespace) see the empty folder under it.
    let script = format!(
        "mount -t tmpfs tmpfs {art} && exec {bin} pipeline run --executor slurm",
        art = p.artifacts().display(),
        bin = env!("CARGO_BIN_EXE_latentscope")
    );
    let out =
        Command::new("unshare").args(["--mount", "sh", "-c", &script]).current_dir(p.path()).env("RUST_LOG", "info").output().unwrap();
    let log = text(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("could not see the artefacts folder") && log.contains("every node mounts at the same path"), "{log}");
    assert!(!Path::new(&p.artifacts().join("pipeline.lock")).exists());
    let _: PathBuf = p.artifacts();
}

/// Issue 21, fault 5: a class of job that no node of the partition can hold (the default
/// `heavy: {cpus: 8}` on a small node) fails at once, naming the key and what the partition
/// offers, instead of pending forever; a job that Slurm leaves pending for a reason that never
/// clears is cancelled and fails its stage.
#[test]
fn resources_the_partition_cannot_give_fail_fast_naming_the_key() {
    if !slurm() {
        return;
    }
    let p = project("slurm-too-big");
    let started = Instant::now();
    let err = p.fails(&["pipeline", "run", "--executor", "slurm", "--set", "slurm.heavy.cpus=4096"]);
    assert!(err.contains("slurm.heavy.cpus is 4096") && err.contains("CPUs (sinfo)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());
    // No training job is left in the queue.
    let left: Vec<String> =
        queue().into_values().filter(|(name, state)| name.contains(".train-") && state == "PENDING").map(|(n, _)| n).collect();
    assert!(left.is_empty(), "{left:?}");
}
