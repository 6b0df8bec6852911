//! The engine with small fake stages: caching, staleness, run-cache, corruption, locking and
//! concurrency, through the library's public API.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use latentscope::pipeline::{self, Cost, Graph, RunLock, RunOptions, StageContext, StageKind, StageReport, StageSpec};
use serde_json::json;

type Log = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// Writes `out` = its param `value` followed by the content of its inputs.
struct Fake {
    runs: Arc<Mutex<BTreeMap<String, usize>>>,
    log: Log,
    delay: Duration,
    cost: Cost,
    value: String,
}

impl StageKind for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn version(&self) -> u32 {
        1
    }
    fn cost(&self) -> Cost {
        self.cost
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let start = Instant::now();
        *self.runs.lock().unwrap().entry(ctx.stage_id.to_owned()).or_default() += 1;
        std::thread::sleep(self.delay);
        let mut content = self.value.clone();
        for key in ctx.params.keys().filter(|k| k.starts_with("in.")) {
            let stage = &key[3..];
            content.push_str(&std::fs::read_to_string(ctx.input(stage, "out")?)?);
        }
        anyhow::ensure!(self.value != "fail", "asked to fail");
        assert!(self.value != "panic", "asked to panic");
        std::fs::write(ctx.output("out"), content)?;
        self.log.lock().unwrap().push((ctx.stage_id.to_owned(), start, Instant::now()));
        Ok(StageReport::default())
    }
}

struct Harness {
    dir: TempDir,
    runs: Arc<Mutex<BTreeMap<String, usize>>>,
    log: Log,
}

impl Harness {
    fn new() -> Self {
        Self { dir: TempDir::new("engine"), runs: Default::default(), log: Default::default() }
    }

    /// a -> b -> c, a -> d; `values` sets a stage's param (default "v").
    fn graph(&self, values: &[(&str, &str)], delay_ms: u64, cost: Cost) -> Graph {
        let edges: [(&str, &[&str]); 4] = [("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["a"])];
        let stages = edges
            .iter()
            .map(|(id, ups)| {
                let value = values.iter().find(|(s, _)| s == id).map(|(_, v)| *v).unwrap_or("v").to_owned();
                let kind = Fake {
                    runs: self.runs.clone(),
                    log: self.log.clone(),
                    delay: Duration::from_millis(delay_ms),
                    cost,
                    value: value.clone(),
                };
                let mut spec = StageSpec::new(*id, Arc::new(kind)).param("value", value).param("stage", *id).outputs(&["out"]);
                for u in *ups {
                    spec = spec.input(u, "out").param(&format!("in.{u}"), true);
                }
                spec
            })
            .collect();
        Graph::new(stages).unwrap()
    }

    fn run(&self, graph: &Graph) -> pipeline::RunSummary {
        self.run_with(graph, RunOptions::default())
    }

    fn run_with(&self, graph: &Graph, opts: RunOptions) -> pipeline::RunSummary {
        pipeline::run(graph, self.dir.path(), &opts).unwrap()
    }

    fn runs(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.runs.lock().unwrap())
    }

    fn status(&self, graph: &Graph) -> BTreeMap<String, (bool, String)> {
        pipeline::status(graph, self.dir.path(), false).unwrap().into_iter().map(|r| (r.stage, (r.fresh, r.reason))).collect()
    }

    fn read(&self, stage: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(stage).join("out")).unwrap()
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn only_stale_stages_run() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    assert_eq!(h.status(&g)["a"], (false, "never run".into()));
    assert_eq!(h.status(&g)["b"], (false, "upstream stale: a".into()));
    let s = h.run(&g);
    assert_eq!(s.ran.len(), 4);
    assert_eq!(h.read("c"), "vvv");
    assert_eq!(h.runs().len(), 4);
    let s = h.run(&g);
    assert!(s.ran.is_empty(), "{s:?}");
    assert_eq!(s.cached, ids(&["a", "b", "d", "c"]));
    assert!(h.runs().is_empty());
    assert!(h.status(&g).values().all(|(fresh, _)| *fresh));
}

#[test]
fn param_edit_reruns_stage_and_descendants_and_revert_hits_run_cache() {
    let h = Harness::new();
    h.run(&h.graph(&[], 0, Cost::Light));
    h.runs();
    let edited = h.graph(&[("b", "w")], 0, Cost::Light);
    let st = h.status(&edited);
    assert_eq!(st["a"], (true, String::new()));
    assert_eq!(st["b"], (false, "params changed: value \"v\" -> \"w\"".into()));
    assert_eq!(st["c"], (false, "upstream stale: b".into()));
    assert_eq!(st["d"], (true, String::new()));
    let s = h.run(&edited);
    assert_eq!(s.ran, ids(&["b", "c"]));
    assert_eq!(h.read("c"), "vwv");
    h.runs();

    // Reverting the edit restores the earlier outputs from the store without running.
    let reverted = h.graph(&[], 0, Cost::Light);
    assert!(h.status(&reverted)["b"].1.ends_with("(in run-cache)"), "{:?}", h.status(&reverted));
    let s = h.run(&reverted);
    assert!(s.ran.is_empty(), "{s:?}");
    assert!(h.runs().is_empty());
    assert_eq!(h.read("c"), "vvv");
}

#[test]
fn same_output_stops_invalidation() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    h.run(&g);
    h.runs();
    // Forcing `a` re-runs it; its output is identical, so nothing downstream re-runs.
    let s = h.run_with(&g, RunOptions { force: ids(&["a"]), ..RunOptions::default() });
    assert_eq!(s.ran, ids(&["a"]));
    assert_eq!(h.runs().keys().cloned().collect::<Vec<_>>(), ids(&["a"]));
}

#[test]
fn corrupt_and_missing_artefacts_are_recomputed() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    h.run(&g);
    h.runs();
    // Same size, different content: the mtime gives it away.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(h.dir.path().join("b/out"), "XX").unwrap();
    let st = h.status(&g);
    assert_eq!(st["b"], (false, "corrupt: b/out".into()));
    assert_eq!(st["c"], (false, "upstream stale: b".into()));
    let s = h.run(&g);
    assert_eq!(s.ran, ids(&["b"]), "c sees the same input hash again");
    assert_eq!(h.read("b"), "vv");

    // --verify catches a change that keeps size and mtime.
    let path = h.dir.path().join("d/out");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, "ZZ").unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert!(h.status(&g)["d"].0, "the quick check trusts size and mtime");
    let verified = pipeline::status(&g, h.dir.path(), true).unwrap();
    assert!(verified.iter().any(|r| r.stage == "d" && r.reason == "corrupt: d/out"), "{verified:?}");
    let s = h.run_with(&g, RunOptions { verify: true, ..RunOptions::default() });
    assert_eq!(s.ran, ids(&["d"]));
    // ... and repairs it: the recomputed output replaces the corrupt entry.
    assert_ne!(std::fs::read_to_string(&path).unwrap(), "ZZ", "the corrupt entry was kept");
    let verified = pipeline::status(&g, h.dir.path(), true).unwrap();
    assert!(verified.iter().all(|r| r.fresh), "{verified:?}");

    // A removed store entry is "missing".
    let lock = pipeline::LockFile::load(h.dir.path()).unwrap();
    std::fs::remove_dir_all(h.dir.path().join(".store").join(&lock.stages["c"].fingerprint)).unwrap();
    assert_eq!(h.status(&g)["c"], (false, "missing".into()));
    assert_eq!(h.run(&g).ran, ids(&["c"]));
}

#[test]
fn targets_run_with_their_stale_ancestors_only() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    let s = h.run_with(&g, RunOptions { targets: ids(&["b"]), ..RunOptions::default() });
    assert_eq!(s.ran, ids(&["a", "b"]));
    assert!(!h.status(&g)["c"].0);
    let err = pipeline::run(&g, h.dir.path(), &RunOptions { targets: ids(&["zz"]), ..RunOptions::default() }).unwrap_err();
    assert!(err.to_string().contains("unknown stage id zz"), "{err}");
}

#[test]
fn dry_run_changes_nothing() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    let s = h.run_with(&g, RunOptions { dry_run: true, ..RunOptions::default() });
    assert_eq!(s.ran.len(), 4);
    assert!(h.runs().is_empty());
    assert!(!h.dir.path().join("pipeline.lock").exists());
}

#[test]
fn a_panicking_stage_fails_the_run_instead_of_hanging_it() {
    let h = Harness::new();
    let g = h.graph(&[("b", "panic")], 0, Cost::Light);
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = h.dir.path().to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(pipeline::run(&g, &dir, &RunOptions::default()).map_err(|e| format!("{e:#}")));
    });
    let result = rx.recv_timeout(Duration::from_secs(60)).expect("the run hung after a stage panicked");
    let err = result.unwrap_err();
    assert!(err.contains("stage b failed") && err.contains("panicked: asked to panic"), "{err}");
    assert!(!h.runs().contains_key("c"));
}

#[test]
fn keep_going_runs_what_does_not_depend_on_a_failure() {
    // One slot, so b (which fails) runs before d, which depends only on a.
    let h = Harness::new();
    let g = h.graph(&[("b", "fail")], 0, Cost::Light);
    let stop = RunOptions { jobs: 1, ..RunOptions::default() };
    assert!(pipeline::run(&g, h.dir.path(), &stop).is_err());
    assert!(!h.runs().contains_key("d"), "the default stops at the first failure");

    let h = Harness::new();
    let g = h.graph(&[("b", "fail")], 0, Cost::Light);
    let err = pipeline::run(&g, h.dir.path(), &RunOptions { keep_going: true, ..stop }).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("1 stage failed (b); 2 ran") && text.contains("not run, downstream of a failure: c"), "{text}");
    assert!(text.contains("stage b failed: asked to fail"), "{text}");
    let runs = h.runs();
    assert!(runs.contains_key("d") && !runs.contains_key("c"), "{runs:?}");
    let st = h.status(&g);
    assert!(st["a"].0 && st["d"].0 && !st["b"].0 && !st["c"].0, "{st:?}");
}

#[test]
fn failure_commits_nothing_and_skips_descendants() {
    let h = Harness::new();
    let g = h.graph(&[("b", "fail")], 0, Cost::Light);
    let err = pipeline::run(&g, h.dir.path(), &RunOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("stage b failed: asked to fail"), "{err:#}");
    assert!(!h.runs().contains_key("c"));
    let st = h.status(&g);
    assert!(st["a"].0 && !st["b"].0 && !st["c"].0);
    assert_eq!(std::fs::read_dir(h.dir.path().join(".tmp")).unwrap().count(), 0);
}

#[test]
fn light_stages_overlap_heavy_stages_do_not() {
    let overlap = |cost| {
        let h = Harness::new();
        h.run_with(&h.graph(&[], 150, cost), RunOptions { jobs: 2, ..RunOptions::default() });
        let log = h.log.lock().unwrap().clone();
        let span = |id: &str| log.iter().find(|(s, _, _)| s == id).map(|(_, a, b)| (*a, *b)).unwrap();
        let ((b0, b1), (d0, d1)) = (span("b"), span("d"));
        b0 < d1 && d0 < b1
    };
    assert!(overlap(Cost::Light), "b and d are independent and light: they should run together");
    assert!(!overlap(Cost::Heavy), "heavy stages must run one at a time");
}

#[test]
fn a_second_run_waits_or_fails_cleanly() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    let guard = RunLock::acquire(h.dir.path(), true, |_| {}).unwrap();
    let err = pipeline::run(&g, h.dir.path(), &RunOptions { wait: false, ..RunOptions::default() }).unwrap_err();
    assert!(err.to_string().contains("another latentscope process"), "{err}");
    let done = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        let d = done.clone();
        let (g, dir) = (&g, h.dir.path());
        s.spawn(move || {
            pipeline::run(g, dir, &RunOptions::default()).unwrap();
            d.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(done.load(Ordering::SeqCst), 0, "the second run must wait for the lock");
        drop(guard);
    });
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[test]
fn gc_frees_unreferenced_entries() {
    let h = Harness::new();
    h.run(&h.graph(&[], 0, Cost::Light));
    h.run(&h.graph(&[("a", "x")], 0, Cost::Light));
    let preview = pipeline::gc(h.dir.path(), true, true).unwrap();
    assert_eq!(preview.entries_removed, 4, "{preview:?}");
    assert_eq!(pipeline::gc(h.dir.path(), true, true).unwrap().entries_removed, 4, "a dry run removes nothing");
    let report = pipeline::gc(h.dir.path(), true, false).unwrap();
    assert_eq!(report.bytes_freed, preview.bytes_freed);
    assert_eq!(report.entries_removed, 4, "{report:?}");
    assert!(report.bytes_freed > 0);
    let g = h.graph(&[("a", "x")], 0, Cost::Light);
    assert!(h.status(&g).values().all(|(fresh, _)| *fresh));
    assert_eq!(pipeline::gc(h.dir.path(), true, false).unwrap().entries_removed, 0);
}

#[test]
fn gc_refuses_while_a_lock_record_is_unreadable() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    h.run(&g);
    let path = h.dir.path().join("pipeline.lock");
    let mut lock: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    lock["stages"]["b"].as_object_mut().unwrap().remove("fingerprint");
    std::fs::write(&path, serde_json::to_string(&lock).unwrap()).unwrap();
    let e = pipeline::gc(h.dir.path(), true, false).unwrap_err().to_string();
    assert!(e.contains("unreadable records (b)"), "{e}");
    assert_eq!(h.run(&g).ran, Vec::<String>::new(), "b's entry is still there: restored, not re-run");
    assert_eq!(pipeline::gc(h.dir.path(), true, false).unwrap().entries_removed, 0);

    // Without a lock file every entry would look unreferenced: gc refuses; a run restores it.
    std::fs::remove_file(&path).unwrap();
    let e = pipeline::gc(h.dir.path(), true, false).unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains("run `pipeline run` first"), "{e}");
    assert_eq!(h.run(&g).ran, Vec::<String>::new());
    assert_eq!(pipeline::gc(h.dir.path(), true, false).unwrap().entries_removed, 0);
}

#[test]
fn targets_and_force_accept_globs() {
    let h = Harness::new();
    let g = h.graph(&[], 0, Cost::Light);
    let s = h.run_with(&g, RunOptions { targets: ids(&["?"]), ..RunOptions::default() });
    assert_eq!(s.ran.len(), 4);
    let mut s = h.run_with(&g, RunOptions { force: ids(&["c*", "*d", "d"]), ..RunOptions::default() }).ran;
    s.sort(); // c and d run side by side: either may finish first
    assert_eq!(s, ids(&["c", "d"]));
    let e = pipeline::run(&g, h.dir.path(), &RunOptions { targets: ids(&["z*"]), ..RunOptions::default() }).unwrap_err();
    assert!(e.to_string().contains("no stage id matches z*"), "{e}");
}

#[test]
fn lock_file_records_every_stage() {
    let h = Harness::new();
    h.run(&h.graph(&[], 0, Cost::Light));
    let text = std::fs::read_to_string(h.dir.path().join("pipeline.lock")).unwrap();
    let lock: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b = &lock["stages"]["b"];
    assert_eq!(b["params"]["value"], json!("v"));
    assert_eq!(b["params"]["stage"], json!("b"));
    assert_eq!(b["inputs"]["a/out"].as_str().unwrap().len(), 64);
    assert_eq!(b["outputs"]["out"]["size"], json!(2));
    assert!(b["wall_time_s"].as_f64().is_some());
    assert_eq!(b["tool_version"], json!(env!("CARGO_PKG_VERSION")));
}

/// Flips the last byte of `path` and puts its mtime back, so that only a hash can tell.
fn flip_byte_keep_mtime(path: &std::path::Path) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x20;
    std::fs::write(path, bytes).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
}

/// Issue 21, fault 1: an upstream output damaged in a way the quick check cannot see (same
/// size and mtime) is never read into a committed downstream record: the stage that would
/// read it fails naming the file and `--verify`, and `run --verify` repairs the upstream
/// stage and then runs the reader on the good bytes.
#[test]
fn a_stage_never_commits_what_it_read_from_damaged_bytes() {
    let h = Harness::new();
    h.run(&h.graph(&[], 0, Cost::Light));
    let clean = Harness::new();
    clean.run(&clean.graph(&[("c", "w")], 0, Cost::Light));
    h.runs();
    flip_byte_keep_mtime(&h.dir.path().join("b/out"));
    // An edit of c makes it read b's (damaged) output.
    let edited = h.graph(&[("c", "w")], 0, Cost::Light);
    let err = pipeline::run(&edited, h.dir.path(), &RunOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("input b/out") && msg.contains("--verify"), "{msg}");
    assert!(h.runs().is_empty(), "c must fail before it runs");
    assert_eq!(pipeline::LockFile::load(h.dir.path()).unwrap().stages["c"].params["value"], json!("v"), "nothing committed");

    // The repair re-runs b, then c on the good bytes: the same outputs as a clean folder.
    let s = h.run_with(&edited, RunOptions { verify: true, ..RunOptions::default() });
    assert_eq!(s.ran, ids(&["b", "c"]));
    assert_eq!(h.read("c"), clean.read("c"));
    let verified = pipeline::status(&edited, h.dir.path(), true).unwrap();
    assert!(verified.iter().all(|r| r.fresh), "{verified:?}");
    let fp = |dir: &std::path::Path| pipeline::LockFile::load(dir).unwrap().stages["c"].fingerprint.clone();
    assert_eq!(fp(h.dir.path()), fp(clean.dir.path()));
}

/// Reads a file outside the store into `out`; with `tamper`, rewrites that file while it runs
/// and puts the original bytes and mtime back before it returns.
struct ReadsOutside {
    path: std::path::PathBuf,
    tamper: bool,
}

impl StageKind for ReadsOutside {
    fn kind(&self) -> &'static str {
        "reads-outside"
    }
    fn version(&self) -> u32 {
        1
    }
    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<StageReport> {
        let original = std::fs::read(&self.path)?;
        if self.tamper {
            let mtime = std::fs::metadata(&self.path)?.modified()?;
            std::fs::write(&self.path, b"other labels")?;
            std::fs::write(ctx.output("out"), std::fs::read(&self.path)?)?;
            std::fs::write(&self.path, &original)?;
            std::fs::File::options().write(true).open(&self.path)?.set_modified(mtime)?;
        } else {
            std::fs::write(ctx.output("out"), original)?;
        }
        Ok(StageReport::default())
    }
}

/// Issue 21, fault 2: a file outside the store that changes while a stage reads it (even
/// when put back byte for byte, mtime included) fails the stage; nothing is cached under
/// the old hash, and the next run computes from the real bytes.
#[test]
fn an_input_that_changes_during_the_run_is_not_cached() {
    let h = Harness::new();
    let data = h.dir.path().join("labels.idx");
    std::fs::write(&data, b"labels").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options().write(true).open(&data).unwrap().set_modified(old).unwrap();
    let graph = |tamper: bool| {
        let kind = ReadsOutside { path: data.clone(), tamper };
        Graph::new(vec![StageSpec::new("download", Arc::new(kind)).file("labels.idx", &data).outputs(&["out"])]).unwrap()
    };
    // The file-hash cache knows the file before the run (as after any earlier run).
    assert!(!h.status(&graph(true))["download"].0);
    let err = pipeline::run(&graph(true), h.dir.path(), &RunOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("file:labels.idx") && msg.contains("changed while"), "{msg}");
    assert!(pipeline::LockFile::load(h.dir.path()).unwrap().stages.is_empty(), "nothing committed");
    let verified = pipeline::status(&graph(false), h.dir.path(), true).unwrap();
    assert!(!verified[0].fresh, "{verified:?}");
    h.run(&graph(false));
    assert_eq!(h.read("download"), "labels");
}

/// Issue 21, fault 3: no path the tool deletes under may reach outside the artefacts folder
/// through a symbolic link: `.tmp`, `.store` and `.jobs` linked elsewhere are refused with a
/// message naming the link, and a linked store entry loses only its link.
#[cfg(unix)]
#[test]
fn nothing_is_deleted_through_a_link() {
    let h = Harness::new();
    let outside = TempDir::new("outside");
    let mine = |name: &str| outside.path().join(name).join("mydata/a.txt");
    for name in [".tmp", ".store", ".jobs", "entry"] {
        std::fs::create_dir_all(mine(name).parent().unwrap()).unwrap();
        std::fs::write(mine(name), b"keep").unwrap();
    }
    let g = h.graph(&[], 0, Cost::Light);
    let art = h.dir.path();
    for name in [".tmp", ".store"] {
        std::os::unix::fs::symlink(outside.path().join(name), art.join(name)).unwrap();
        let err = format!("{:#}", pipeline::run(&g, art, &RunOptions::default()).unwrap_err());
        assert!(err.contains(name) && err.contains("link"), "{err}");
        let err = format!("{:#}", pipeline::gc(art, true, false).unwrap_err());
        assert!(err.contains(name) && err.contains("link"), "{err}");
        std::fs::remove_file(art.join(name)).unwrap();
    }
    h.run(&g);

    std::os::unix::fs::symlink(outside.path().join(".jobs"), art.join(".jobs")).unwrap();
    let err = pipeline::SlurmExecutor::new(pipeline::SlurmSettings::default(), art, vec!["latentscope".into()], json!(null))
        .err()
        .expect("a linked .jobs is refused");
    assert!(err.to_string().contains(".jobs") && err.to_string().contains("symbolic link"), "{err}");

    // An unreferenced entry that is a link: gc removes the link, not what it points at.
    std::os::unix::fs::symlink(outside.path().join("entry"), art.join(".store/0123")).unwrap();
    pipeline::gc(art, true, false).unwrap();
    assert!(!art.join(".store/0123").exists());
    for name in [".tmp", ".store", ".jobs", "entry"] {
        assert_eq!(std::fs::read(mine(name)).unwrap(), b"keep", "{name}");
    }
}
