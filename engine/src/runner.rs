//! Executes the stale stages of a graph in dependency order, independent stages side by side.
//!
//! Scheduling: `jobs` slots; a light stage takes one, a heavy stage (training) takes all of
//! them, so two trainings never share the cores. Each finished stage is committed to the
//! store, its view re-pointed and the lock file rewritten before anything downstream starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use indicatif::ProgressBar;
use serde::Serialize;

pub use super::executor::local::PAUSE_ENV;
use super::executor::{link_files, local::LocalExecutor, Executor, Launch};
use super::filestate::FileState;
use super::graph::Graph;
use super::lockfile::{LockFile, RunLock};
use super::remove::remove_within;
use super::spec::{Cost, StageSpec};
use super::status::{evaluate, StatusRow, Verdict};
use super::store::{has_atomic_leftovers, RunRecord, Store};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages to bring up to date (with their ancestors); empty means all.
    pub targets: Vec<String>,
    /// Stages to run even when fresh.
    pub force: Vec<String>,
    pub dry_run: bool,
    pub jobs: usize,
    /// Re-hash every artefact instead of trusting size and mtime.
    pub verify: bool,
    /// Wait for another process holding the artefacts folder (else fail at once).
    pub wait: bool,
    /// After a failure, go on with every stage that does not depend on a failed one (as
    /// `snakemake -k`); the run still fails, naming every failed stage.
    pub keep_going: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            force: Vec::new(),
            dry_run: false,
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            verify: false,
            wait: true,
            keep_going: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    /// With `--dry-run`: why each stage in `ran` would run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
    /// With `--dry-run`: what would run (nothing ran).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// With `--dry-run`: how the executor would start each stage in `ran`, where that says
    /// more than the id (the `sbatch` command lines).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, String>,
    pub wall_time_s: f64,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would run" } else { "ran" };
        write!(f, "{} {verb}, {} cached in {:.2} s", self.ran.len(), self.cached.len(), self.wall_time_s)
    }
}

/// The status of every stage, in dependency order.
pub fn status(graph: &Graph, artifacts: &Path, verify: bool) -> anyhow::Result<Vec<StatusRow>> {
    status_of(graph, artifacts, &LockFile::load(artifacts)?, verify)
}

/// [`status`] as the lock file `lock` (already loaded from `artifacts`) records it.
pub fn status_of(graph: &Graph, artifacts: &Path, lock: &LockFile, verify: bool) -> anyhow::Result<Vec<StatusRow>> {
    let store = Store::open_read_only(artifacts)?;
    let files = FileState::load(artifacts);
    let mut stale = BTreeSet::new();
    let mut rows = Vec::new();
    for spec in graph.ordered() {
        let ev = evaluate(spec, lock, &store, &files, verify, |u| stale.contains(u));
        if !ev.is_fresh() {
            stale.insert(spec.id.clone());
        }
        rows.push(StatusRow { stage: spec.id.clone(), fresh: ev.is_fresh(), reason: ev.reason(), cause: ev.cause().cloned() });
    }
    Ok(rows)
}

/// Runs the stale stages on this machine (the local executor).
pub fn run(graph: &Graph, artifacts: &Path, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    run_on(graph, artifacts, opts, &mut LocalExecutor::new(opts.jobs))
}

/// Runs the stale stages through `executor`; everything else (planning, the run lock, the
/// commits, the lock file) is the same whatever the executor.
pub fn run_on(graph: &Graph, artifacts: &Path, opts: &RunOptions, executor: &mut dyn Executor) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    // Ids and glob patterns (`'kmeans-conv-*'`), as Snakemake and DVC accept.
    let targets = graph.expand(&opts.targets)?;
    let force = graph.expand(&opts.force)?;
    let opts = &RunOptions { targets, force, ..opts.clone() };
    let selected: BTreeSet<String> = if opts.targets.is_empty() {
        graph.stages().iter().map(|s| s.id.clone()).collect()
    } else {
        graph.with_ancestors(&opts.targets)?
    };
    let unselected: Vec<&str> = opts.force.iter().filter(|f| !selected.contains(*f)).map(String::as_str).collect();
    if !unselected.is_empty() {
        anyhow::bail!(
            "--force {} names stages that this run does not select (it brings {} and their ancestors up to date); \
             add them as targets, or run without targets",
            unselected.join(" "),
            opts.targets.join(", ")
        );
    }
    let forced: BTreeSet<&str> = opts.force.iter().map(String::as_str).collect();
    let files = FileState::load(artifacts);
    let mut preview = dry_run(graph, artifacts, &selected, &forced, opts, &files, &*executor)?;
    preview.summary.wall_time_s = started.elapsed().as_secs_f64();
    if opts.dry_run {
        return Ok(preview.summary);
    }
    // (The file-hash cache is an accelerator: caching new hashes is no reason to take the lock.)
    if preview.nothing_to_write && !leftovers(artifacts) {
        // Everything is fresh: a no-op run writes nothing, so it needs no write lock (and
        // works on a read-only artefacts folder).
        let mut summary = preview.summary;
        summary.dry_run = false;
        summary.reasons.clear();
        summary.commands.clear();
        summary.wall_time_s = started.elapsed().as_secs_f64();
        return Ok(summary);
    }

    let _guard = RunLock::acquire(artifacts, opts.wait, |holder| {
        tracing::warn!("waiting for another latentscope run{holder} that holds {}", artifacts.display());
    })?;
    let store = Store::open(artifacts)?;
    store.clean_scratch()?;
    LockFile::clean_leftovers(artifacts)?;
    let mut lock = LockFile::load(artifacts)?;
    lock.version = super::lockfile::LOCK_VERSION;
    if opts.targets.is_empty() {
        forget_dropped_stages(graph, artifacts, &store, &mut lock)?;
    }
    let order: Vec<&StageSpec> = graph.ordered().filter(|s| selected.contains(&s.id)).collect();
    // Only an executor that chains names its work by key.
    let keys = if executor.chains() { recipe_keys(graph, &files) } else { BTreeMap::new() };
    let mut scheduler = Scheduler {
        graph,
        artifacts,
        opts,
        forced: &forced,
        selected: &selected,
        progress: progress_bar(order.len() as u64),
        order,
        keys,
        free: executor.slots().unwrap_or(usize::MAX),
        executor,
        store,
        lock,
        files: &files,
        summary: RunSummary::default(),
        done: BTreeSet::new(),
        launched: BTreeSet::new(),
        running: BTreeMap::new(),
        launched_under: BTreeMap::new(),
        failures: Vec::new(),
        failed: BTreeSet::new(),
    };
    let result = scheduler.drive();
    if result.is_err() {
        scheduler.executor.cancel_all();
    }
    scheduler.executor.finish();
    scheduler.progress.finish_and_clear();
    if let Err(e) = files.save() {
        tracing::warn!("could not save the file-hash cache (the next run re-hashes the local data): {e}");
    }
    result?;
    let mut summary = scheduler.outcome()?;
    summary.wall_time_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Forgets the stages the config no longer has (their entries stay in the store until gc),
/// and says so in the lock file at once: the lock and the views must agree even if a stage
/// fails later.
fn forget_dropped_stages(graph: &Graph, artifacts: &Path, store: &Store, lock: &mut LockFile) -> anyhow::Result<()> {
    let gone: Vec<String> = lock.stages.keys().chain(lock.unreadable.keys()).filter(|id| graph.get(id).is_none()).cloned().collect();
    for id in &gone {
        lock.stages.remove(id);
        lock.unreadable.remove(id);
        store.clear_view(id);
    }
    if !gone.is_empty() {
        let shown = match gone.len() {
            n if n > 8 => format!("{} and {} more", gone[..8].join(", "), n - 8),
            _ => gone.join(", "),
        };
        tracing::info!("forgetting {} stages the config no longer has: {shown}", gone.len());
        lock.save(artifacts)?;
    }
    Ok(())
}

/// One run's scheduling state, under the run lock: which stages are settled, in flight or
/// failed, the job slots left, and the lock file as it is being rewritten. Its steps:
/// [`Self::launch_ready`] settles or starts every stage whose inputs are ready,
/// [`Self::wait_one`] takes one finished stage from the executor and commits it (or records
/// its failure and stops its downstream), and [`Self::outcome`] says how the run ended.
struct Scheduler<'a> {
    graph: &'a Graph,
    artifacts: &'a Path,
    opts: &'a RunOptions,
    forced: &'a BTreeSet<&'a str>,
    selected: &'a BTreeSet<String>,
    /// The selected stages in dependency order.
    order: Vec<&'a StageSpec>,
    /// Recipe keys (chaining executors only).
    keys: BTreeMap<String, String>,
    executor: &'a mut dyn Executor,
    store: Store,
    lock: LockFile,
    files: &'a FileState,
    progress: ProgressBar,
    summary: RunSummary,
    /// Committed or settled without running.
    done: BTreeSet<String>,
    /// Started, settled, or failed to start.
    launched: BTreeSet<String>,
    /// In flight: stage -> job slots it holds.
    running: BTreeMap<String, usize>,
    /// The evaluation each stage was launched under, for stages whose inputs were all known.
    launched_under: BTreeMap<String, super::status::Evaluation>,
    free: usize,
    failures: Vec<(String, anyhow::Error)>,
    /// Stages that failed, or that were stopped because an upstream stage failed.
    failed: BTreeSet<String>,
}

impl<'a> Scheduler<'a> {
    /// Launches and waits until nothing is in flight or can start.
    fn drive(&mut self) -> anyhow::Result<()> {
        loop {
            if self.failures.is_empty() || self.opts.keep_going {
                self.launch_ready()?;
            }
            if self.running.is_empty() {
                return Ok(());
            }
            self.wait_one()?;
        }
    }

    /// Settles without running (fresh, or restored from the run-cache) or starts every stage
    /// whose inputs are ready, or (for a chaining executor) will be made ready by stages
    /// already in flight there.
    fn launch_ready(&mut self) -> anyhow::Result<()> {
        let order = self.order.clone();
        for spec in order {
            if self.launched.contains(&spec.id) {
                continue;
            }
            let upstream: Vec<&str> = spec.upstream().into_iter().filter(|u| self.selected.contains(*u)).collect();
            if upstream.iter().any(|u| self.failed.contains(*u)) {
                continue;
            }
            let all_done = upstream.iter().all(|u| self.done.contains(*u));
            let chained = self.executor.chains() && upstream.iter().all(|u| self.done.contains(*u) || self.running.contains_key(*u));
            if !(all_done || chained) {
                continue;
            }
            let ev = evaluate(spec, &self.lock, &self.store, self.files, self.opts.verify, |u| self.running.contains_key(u));
            let forced = self.forced.contains(spec.id.as_str());
            match (&ev.verdict, forced) {
                (Verdict::Fresh, false) => {
                    ensure_view(&self.store, &spec.id, ev.fingerprint.as_deref().unwrap_or_default())?;
                    if let Some(rec) = &ev.refresh {
                        tracing::info!(stage = %spec.id, "content verified by hash; recording the files' new mtimes");
                        self.lock.stages.insert(spec.id.clone(), rec.clone());
                        self.lock.save(self.artifacts)?;
                    }
                    tracing::debug!(stage = %spec.id, "fresh");
                    self.settled(&spec.id);
                }
                (Verdict::Stale { cached: Some(rec), reason }, false) => {
                    tracing::info!(stage = %spec.id, "restored from run-cache ({reason})");
                    self.record(&spec.id, (**rec).clone())?;
                    self.settled(&spec.id);
                }
                _ => self.start(spec, &upstream, ev, forced),
            }
        }
        Ok(())
    }

    /// A stage that needed no run: done, and counted as cached.
    fn settled(&mut self, id: &str) {
        self.launched.insert(id.to_owned());
        self.done.insert(id.to_owned());
        self.summary.cached.push(id.to_owned());
        self.progress.inc(1);
    }

    /// Writes a stage's record into the lock file (saved at once) and points its view at it.
    fn record(&mut self, id: &str, rec: RunRecord) -> anyhow::Result<()> {
        let fingerprint = rec.fingerprint.clone();
        self.lock.unreadable.remove(id);
        self.lock.stages.insert(id.to_owned(), rec);
        self.lock.save(self.artifacts)?;
        self.store.set_view(id, &fingerprint)?;
        Ok(())
    }

    /// Hands a stale (or forced) stage to the executor if its job slots are free.
    fn start(&mut self, spec: &StageSpec, upstream: &[&str], ev: super::status::Evaluation, forced: bool) {
        let need = match (spec.kind.cost(), self.executor.slots()) {
            (_, None) => 0,
            (Cost::Light, Some(_)) => 1,
            (Cost::Heavy, Some(n)) => n.max(1),
        };
        if need > self.free {
            return;
        }
        let reason = if forced { "forced".to_owned() } else { ev.reason() };
        tracing::info!(stage = %spec.id, "running ({reason})");
        let after: Vec<String> = upstream.iter().filter(|u| self.running.contains_key(**u)).map(|u| u.to_string()).collect();
        let mut inputs = input_paths(spec, &self.lock, &self.store);
        for i in spec.inputs.iter().filter(|i| after.contains(&i.stage)) {
            let dir = self.executor.output_dir(&i.stage).expect("a chaining executor knows where its stages write");
            inputs.insert(i.key(), dir.join(&i.file));
        }
        let key = self.keys.get(&spec.id).cloned().unwrap_or_default();
        let view = self.store.view_dir(&spec.id);
        let recorded = ev.inputs.clone();
        if after.is_empty() {
            self.launched_under.insert(spec.id.clone(), ev);
        }
        let launch = Launch { spec: spec.clone(), inputs, previous: view.is_dir().then_some(view), after, key, forced, recorded };
        self.launched.insert(spec.id.clone());
        if let Err(e) = self.executor.start(launch, &self.store) {
            tracing::error!(stage = %spec.id, "failed to start: {e:#}");
            self.failed.insert(spec.id.clone());
            self.failures.push((spec.id.clone(), e));
            self.progress.inc(1);
            return;
        }
        self.free -= need;
        self.running.insert(spec.id.clone(), need);
        self.show_running();
    }

    /// Takes one finished stage from the executor and commits what it produced, or records
    /// its failure. An error here (the executor cannot go on) ends the run.
    fn wait_one(&mut self) -> anyhow::Result<()> {
        let (id, outcome) = self.executor.wait()?;
        let Some(need) = self.running.remove(&id) else { return Ok(()) };
        self.free += need;
        let spec = self.graph.get(&id).expect("a running stage is in the graph");
        let ran = outcome.is_ok();
        let under = self.launched_under.remove(&id);
        let forced = self.forced.contains(id.as_str());
        let committed =
            outcome.and_then(|produced| commit(spec, produced, under, &self.lock, &self.store, self.files, self.opts.verify, forced));
        if ran && committed.is_err() {
            self.executor.keep(&id);
        }
        match committed {
            Ok(rec) => {
                tracing::info!(stage = %id, "ran in {:.2} s", rec.wall_time_s);
                self.record(&id, rec)?;
                self.done.insert(id.clone());
                self.summary.ran.push(id);
            }
            Err(e) => self.stage_failed(id, e),
        }
        self.progress.inc(1);
        self.show_running();
        Ok(())
    }

    /// Records a failure and stops whatever was started downstream of it (it cannot succeed).
    fn stage_failed(&mut self, id: String, e: anyhow::Error) {
        tracing::error!(stage = %id, "failed: {e:#}");
        let mut doomed: BTreeSet<String> = BTreeSet::from([id.clone()]);
        for s in &self.order {
            if s.upstream().iter().any(|u| doomed.contains(*u)) {
                doomed.insert(s.id.clone());
            }
        }
        let stop: Vec<String> = self.running.keys().filter(|r| doomed.contains(*r)).cloned().collect();
        if !stop.is_empty() {
            tracing::warn!("stopping {} (downstream of {id})", stop.join(", "));
            self.executor.cancel(&stop);
            for s in &stop {
                self.free += self.running.remove(s).unwrap_or(0);
                self.launched.remove(s);
            }
        }
        self.failed.extend(doomed);
        self.failures.push((id, e));
    }

    fn show_running(&self) {
        self.progress.set_message(self.running.keys().cloned().collect::<Vec<_>>().join(", "));
    }

    /// The summary of a run whose stages all succeeded, or the error that names every failed
    /// stage (the first one's error as the cause) and what did not run because of them.
    fn outcome(&mut self) -> anyhow::Result<RunSummary> {
        if self.failures.is_empty() {
            return Ok(std::mem::take(&mut self.summary));
        }
        let blocked: Vec<&str> = self.order.iter().map(|s| s.id.as_str()).filter(|id| !self.launched.contains(*id)).collect();
        let names: Vec<String> = self.failures.iter().map(|(id, _)| id.clone()).collect();
        let (first, e) = self.failures.remove(0);
        let mut e = e.context(format!("stage {first} failed"));
        if self.opts.keep_going || names.len() > 1 {
            e = e.context(format!(
                "{} failed ({}); {} ran, {} cached{}",
                if names.len() == 1 { "1 stage".to_owned() } else { format!("{} stages", names.len()) },
                names.join(", "),
                self.summary.ran.len(),
                self.summary.cached.len(),
                if blocked.is_empty() { String::new() } else { format!("; not run, downstream of a failure: {}", blocked.join(", ")) }
            ));
        }
        Err(e)
    }
}

/// The key of every stage's work: a fingerprint of its recipe (kind, version, params, the
/// hashes of the outside files it reads, and its upstream stages' keys in place of their
/// outputs). It depends on the config and the data only, never on the state of the store, so
/// two coordinators of the same config give the same work the same key (and the second adopts
/// the first's jobs). Stages compute deterministically, so equal keys mean equal outputs.
fn recipe_keys(graph: &Graph, files: &FileState) -> BTreeMap<String, String> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for spec in graph.ordered() {
        let mut inputs = super::fingerprint::InputHashes::new();
        for i in &spec.inputs {
            inputs.insert(i.key(), format!("recipe:{}", keys.get(&i.stage).map_or("", String::as_str)));
        }
        for f in &spec.files {
            inputs.insert(f.key(), files.hash(&f.path, false).unwrap_or_default());
        }
        let key = super::fingerprint::fingerprint(&format!("recipe:{}", spec.kind.kind()), spec.kind.version(), &spec.params, &inputs);
        keys.insert(spec.id.clone(), key);
    }
    keys
}

/// Commits what a stage run produced, under the evaluation it was launched with or, for a
/// stage started while its upstream ran (a chaining executor), one taken now that every
/// upstream stage is committed. Nothing reaches the store on failure.
#[allow(clippy::too_many_arguments)]
fn commit(
    spec: &StageSpec,
    produced: super::executor::Produced,
    launched_under: Option<super::status::Evaluation>,
    lock: &LockFile,
    store: &Store,
    files: &FileState,
    verify: bool,
    forced: bool,
) -> anyhow::Result<RunRecord> {
    let ev = launched_under.unwrap_or_else(|| evaluate(spec, lock, store, files, verify, |_| false));
    let scratch = if produced.movable {
        produced.out_dir.clone()
    } else {
        // Downstream jobs may still read these files: link them into a scratch folder.
        let scratch = store.scratch(&spec.id)?;
        link_files(&produced.out_dir, &scratch).with_context(|| format!("cannot collect the outputs of {}", produced.out_dir.display()))?;
        scratch
    };
    let attempt = || -> anyhow::Result<RunRecord> {
        // Only an input that cannot be read leaves a finished stage without a fingerprint.
        let fingerprint = ev.fingerprint.clone().with_context(|| ev.reason())?;
        if let Some(read) = &produced.read {
            // A stage (perhaps a job adopted from an earlier coordinator) must have read
            // exactly the inputs the lock now names, or its outputs would be recorded under a lie.
            let differ: Vec<&String> = ev.inputs.keys().filter(|k| read.get(*k) != ev.inputs.get(*k)).collect();
            anyhow::ensure!(
                differ.is_empty(),
                "stage {} read other inputs than the lock file now names ({}); nothing was committed: run again to \
                 recompute it (with --verify if an artefact may be damaged)",
                spec.id,
                differ.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        let record = RunRecord {
            kind: spec.kind.kind().to_owned(),
            version: spec.kind.version(),
            fingerprint,
            params: spec.params.clone(),
            inputs: ev.inputs.clone(),
            outputs: BTreeMap::new(),
            wall_time_s: produced.wall_time_s,
            device: produced.report.device.clone(),
            tool_version: crate::VERSION.to_owned(),
            finished_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            executor: Some(produced.executor.to_owned()),
            node: produced.node.clone(),
            job: produced.job.clone(),
        };
        Ok(store.commit(&spec.id, &scratch, &spec.outputs, record, forced)?)
    };
    let committed = attempt();
    if committed.is_err() {
        let _ = remove_within(store.root(), &scratch);
    }
    committed
}

/// Where a stage finds its inputs: in the store entries that the lock names for its upstream.
fn input_paths(spec: &StageSpec, lock: &LockFile, store: &Store) -> BTreeMap<String, PathBuf> {
    spec.inputs
        .iter()
        .filter_map(|i| {
            let rec = lock.stages.get(&i.stage)?;
            Some((i.key(), store.entry_dir(&rec.fingerprint).join(&i.file)))
        })
        .collect()
}

fn ensure_view(store: &Store, stage: &str, fingerprint: &str) -> anyhow::Result<()> {
    let current = std::fs::read_link(store.view_dir(stage)).ok();
    if current.as_deref() != Some(Path::new(".store").join(fingerprint).as_path()) {
        store.set_view(stage, fingerprint)?;
    }
    Ok(())
}

/// What a run would do, found without writing anything.
struct Preview {
    summary: RunSummary,
    /// Nothing would run, be restored, or have its record or view changed, and the lock
    /// names no stage that the config no longer has.
    nothing_to_write: bool,
}

fn dry_run(
    graph: &Graph,
    artifacts: &Path,
    selected: &BTreeSet<String>,
    forced: &BTreeSet<&str>,
    opts: &RunOptions,
    files: &FileState,
    executor: &dyn Executor,
) -> anyhow::Result<Preview> {
    let lock = LockFile::load(artifacts)?;
    let store = Store::open_read_only(artifacts)?;
    let mut summary = RunSummary { dry_run: true, ..RunSummary::default() };
    // A run with no targets forgets the stages that the config no longer has.
    let mut nothing_to_write =
        !(opts.targets.is_empty() && lock.stages.keys().chain(lock.unreadable.keys()).any(|id| graph.get(id).is_none()));
    let mut will_run = BTreeSet::new();
    let keys = if opts.dry_run && executor.chains() { recipe_keys(graph, files) } else { BTreeMap::new() };
    for spec in graph.ordered().filter(|s| selected.contains(&s.id)) {
        let ev = evaluate(spec, &lock, &store, files, opts.verify, |u| will_run.contains(u));
        let runs = forced.contains(spec.id.as_str()) || matches!(ev.verdict, Verdict::Stale { cached: None, .. });
        nothing_to_write &= ev.is_fresh() && ev.refresh.is_none() && !runs;
        if runs {
            will_run.insert(spec.id.clone());
            summary.ran.push(spec.id.clone());
            let reason = if forced.contains(spec.id.as_str()) { "forced".to_owned() } else { ev.reason() };
            summary.reasons.insert(spec.id.clone(), reason);
            if opts.dry_run {
                let key = keys.get(&spec.id).cloned().unwrap_or_default();
                let after = spec.upstream().into_iter().filter(|u| will_run.contains(*u) && *u != spec.id).map(str::to_owned).collect();
                let launch = Launch {
                    spec: spec.clone(),
                    inputs: BTreeMap::new(),
                    previous: None,
                    after,
                    key,
                    forced: false,
                    recorded: Default::default(),
                };
                if let Some(line) = executor.describe(&launch) {
                    summary.commands.insert(spec.id.clone(), line);
                }
            }
        } else {
            summary.cached.push(spec.id.clone());
        }
    }
    Ok(Preview { summary, nothing_to_write })
}

/// Whether a killed run left anything that a run cleans up.
fn leftovers(artifacts: &Path) -> bool {
    let scratch = std::fs::read_dir(artifacts.join(".tmp")).is_ok_and(|mut rd| rd.next().is_some());
    scratch || has_atomic_leftovers(&LockFile::path(artifacts)) || has_atomic_leftovers(&artifacts.join(super::filestate::FILE))
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = crate::progress::bar(len, "{elapsed_precise} [{bar:30}] {pos}/{len} stages  {wide_msg}");
    // The clock ticks through long stages, not only when one finishes.
    bar.enable_steady_tick(std::time::Duration::from_secs(1));
    bar
}
