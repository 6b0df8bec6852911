//! The Slurm executor: every stale stage becomes one `sbatch` job that runs the same binary's
//! per-stage subcommand (`pipeline job <folder>`), chained to its upstream jobs with
//! `--dependency=afterok`, so Slurm releases them in order.
//!
//! ```text
//! artifacts/.jobs/<stage>.<tag>/     one job's folder (on the filesystem every node sees)
//!   job.json                         what to run: stage, params, input paths (written here)
//!   job.log                          the job's stdout and stderr
//!   out/                             the declared outputs, written by the job
//!   done.json                        written (atomically) by the job after its outputs
//! artifacts/.jobs/probe.<nonce>/     the check that a job sees the artefacts folder
//! ```
//! A job writes only into its own folder. The coordinator (the `run` process, holding the
//! run lock) verifies and hashes the outputs, links them into the store and updates the lock
//! file, exactly as for a local run. Job names (`ls.<tag>.<stage>`) carry a tag of the stage's
//! recipe key and the artefacts folder, so a restarted coordinator adopts its predecessor's
//! queued, running or finished jobs instead of submitting them again (never for `--force`).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{hostname, Executor, Launch, Outcome, Produced};
use crate::inputs::ReadInputs;
use crate::remove::remove_within;
use crate::spec::{Cost, Params, StageContext, StageSpec};
use crate::store::{write_atomic, Store};

/// Cluster settings (pipeline.yaml's `slurm:` section). Site settings, not experiment
/// parameters: no stage declares them, so they never change a fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSettings {
    /// `--partition`; none: the cluster's default.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time` of every job, unless its class sets one.
    pub time: String,
    /// Training and encoding.
    pub heavy: Resources,
    /// Every other stage.
    pub light: Resources,
    /// Raw sbatch options, passed through as they are.
    pub extra: Vec<String>,
    /// Seconds between two looks at the queue.
    pub poll_s: f64,
}

/// What one class of job asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `--cpus-per-task` (and the job's thread count).
    pub cpus: u32,
    /// `--mem`, e.g. `16G`.
    pub mem: String,
    /// `--gres`, e.g. `gpu:1` for `device: cuda`.
    #[serde(default)]
    pub gres: Option<String>,
    /// Overrides `time` for this class.
    #[serde(default)]
    pub time: Option<String>,
}

impl Default for SlurmSettings {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            time: "02:00:00".to_owned(),
            heavy: Resources { cpus: 8, mem: "16G".to_owned(), gres: None, time: None },
            light: Resources { cpus: 1, mem: "2G".to_owned(), gres: None, time: None },
            extra: Vec::new(),
            poll_s: 5.0,
        }
    }
}

impl SlurmSettings {
    /// Refuses settings that sbatch would refuse later, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.poll_s.is_finite() && self.poll_s > 0.0) {
            return Err(format!("slurm.poll_s must be a positive number of seconds, not {}", self.poll_s));
        }
        for (class, r) in [("heavy", &self.heavy), ("light", &self.light)] {
            if r.cpus == 0 {
                return Err(format!("slurm.{class}.cpus must be at least 1"));
            }
            if r.mem.trim().is_empty() {
                return Err(format!("slurm.{class}.mem is empty"));
            }
        }
        Ok(())
    }
}

/// A job's folder: what the coordinator asks (`job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobFile {
    pub stage: String,
    pub key: String,
    pub kind: String,
    pub version: u32,
    pub params: Params,
    pub inputs: BTreeMap<String, PathBuf>,
    pub previous: Option<PathBuf>,
    /// The input hashes known when the job was submitted (those of committed upstream
    /// stages): the job refuses other bytes before it runs.
    #[serde(default)]
    pub recorded: BTreeMap<String, String>,
    /// Whatever the binary needs to rebuild the stage (the config text and overrides).
    pub payload: serde_json::Value,
}

/// What a finished job reports (`done.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub stage: String,
    pub key: String,
    pub node: Option<String>,
    pub job: Option<String>,
    pub device: Option<String>,
    pub wall_time_s: f64,
    /// The blake3 of every input file it read (input key -> hash), and of the outside files.
    pub inputs: BTreeMap<String, String>,
}

pub const JOBS_DIR: &str = ".jobs";
const JOB_FILE: &str = "job.json";
const DONE_FILE: &str = "done.json";
const LOG_FILE: &str = "job.log";
const OUT_DIR: &str = "out";
const PROBE_TOKEN: &str = "token";
const PROBE_SEEN: &str = "seen";
/// How long a job that Slurm calls COMPLETED may take to show its `done.json` (NFS caches
/// directory entries for up to a minute by default).
const RESULT_GRACE: Duration = Duration::from_secs(60);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on, SIGINT and SIGTERM set a flag that the executor's wait loop reads (it then
/// cancels its jobs), instead of killing the process.
fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
}

/// What names a piece of work in one artefacts folder: the same key in two projects (equal
/// configs) must not adopt each other's jobs.
fn job_tag(artifacts: &Path, key: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(artifacts.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    h.finalize().to_hex()[..16].to_owned()
}

/// Slurm's name for a stage's job: `ls.<tag>.<stage>`.
fn job_name(artifacts: &Path, stage: &str, key: &str) -> String {
    format!("ls.{}.{stage}", job_tag(artifacts, key))
}

/// A stage's job folder: `<artifacts>/.jobs/<stage>.<tag>`.
fn job_dir(artifacts: &Path, stage: &str, key: &str) -> PathBuf {
    artifacts.join(JOBS_DIR).join(format!("{stage}.{}", job_tag(artifacts, key)))
}

#[derive(Debug, Clone)]
struct QueueEntry {
    id: String,
    name: String,
    state: String,
    node: String,
    reason: String,
}

/// [`queue_once`], retried with backoff (about half a minute in all): a busy slurmctld that
/// misses one call must not end a run of many hours. An interrupt ends the retries.
fn queue() -> anyhow::Result<Vec<QueueEntry>> {
    let mut delay = Duration::from_secs(1);
    loop {
        match queue_once() {
            Ok(q) => return Ok(q),
            Err(e) if delay > Duration::from_secs(16) || INTERRUPTED.load(Ordering::SeqCst) => return Err(e),
            Err(e) => {
                tracing::warn!("{e:#}; trying again in {} s", delay.as_secs());
                std::thread::sleep(delay);
                delay *= 2;
            }
        }
    }
}

/// Every job of this user that slurmctld still knows (finished ones for `MinJobAge`).
fn queue_once() -> anyhow::Result<Vec<QueueEntry>> {
    let out = Command::new("squeue")
        .args(["--noheader", "--states=all", "--me", "--format=%i|%j|%T|%N|%r"])
        .output()
        .context("cannot run squeue: is Slurm installed and on PATH?")?;
    anyhow::ensure!(out.status.success(), "squeue failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().splitn(5, '|').collect();
            (f.len() == 5).then(|| QueueEntry {
                id: f[0].to_owned(),
                name: f[1].to_owned(),
                state: f[2].to_owned(),
                node: f[3].to_owned(),
                reason: f[4].to_owned(),
            })
        })
        .collect())
}

/// What the largest node of a partition has, as `sinfo` reports it.
#[derive(Debug, Clone, PartialEq)]
struct PartitionOffer {
    name: String,
    /// `None` when sinfo does not say exactly (a `+`, or no number).
    cpus: Option<u64>,
    /// Megabytes; `None` when the cluster does not say (RealMemory unset: sinfo shows 1).
    mem_mb: Option<u64>,
    /// The GRES names (`gpu`, ...) of its nodes.
    gres: Vec<String>,
}

/// Asks `sinfo` what `partition` (or the default partition) offers. `Ok(None)` when sinfo
/// lists nothing to compare with (then sbatch has the last word).
fn partition_offer(partition: Option<&str>) -> anyhow::Result<Option<PartitionOffer>> {
    let out = Command::new("sinfo")
        .args(["--noheader", "--all", "--exact", "--format=%P|%c|%m|%G"])
        .output()
        .context("cannot run sinfo: is Slurm installed and on PATH?")?;
    anyhow::ensure!(out.status.success(), "sinfo failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    parse_sinfo(&String::from_utf8_lossy(&out.stdout), partition)
}

/// `sinfo --format=%P|%c|%m|%G` lines -> the offer of `partition` (or of the default one,
/// marked `*`). A partition that sinfo does not list is an error naming `slurm.partition`.
fn parse_sinfo(text: &str, partition: Option<&str>) -> anyhow::Result<Option<PartitionOffer>> {
    // `--exact` lists each node configuration on its own line; a `+` (a minimum over mixed
    // nodes) still tells nothing about the largest node, so such a value is not compared.
    let number = |f: &str| f.trim().parse::<u64>().ok();
    // The largest over the lines, or unknown once any line is.
    let most = |acc: Option<Option<u64>>, v: Option<u64>| -> Option<Option<u64>> {
        Some(match (acc, v) {
            (None, v) => v,
            (Some(Some(a)), Some(v)) => Some(a.max(v)),
            _ => None,
        })
    };
    let (mut cpus, mut mem): (Option<Option<u64>>, Option<Option<u64>>) = (None, None);
    let mut names = Vec::new();
    let mut offer: Option<PartitionOffer> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        if f.len() != 4 {
            continue;
        }
        let (name, default) = match f[0].strip_suffix('*') {
            Some(n) => (n, true),
            None => (f[0], false),
        };
        names.push(name.to_owned());
        if !partition.map_or(default, |p| p == name) {
            continue;
        }
        let o = offer.get_or_insert_with(|| PartitionOffer { name: name.to_owned(), cpus: None, mem_mb: None, gres: Vec::new() });
        cpus = most(cpus, number(f[1]));
        mem = most(mem, number(f[2]).filter(|&mb| mb > 1));
        for g in f[3].split(',').filter(|g| !g.is_empty() && *g != "(null)") {
            let name = g.split([':', '(']).next().unwrap_or_default().to_owned();
            if !o.gres.contains(&name) {
                o.gres.push(name);
            }
        }
    }
    names.dedup();
    if let (Some(p), None) = (partition, &offer) {
        anyhow::bail!("slurm.partition is {p:?}, but sinfo lists no such partition (it lists: {})", names.join(", "));
    }
    Ok(offer.map(|o| PartitionOffer { cpus: cpus.flatten().filter(|&c| c > 0), mem_mb: mem.flatten(), ..o }))
}

/// Slurm's `--mem` value in megabytes (`16G`, `512M`, `2048`: megabytes without a suffix).
fn mem_mb(mem: &str) -> Option<u64> {
    let mem = mem.trim();
    let (digits, unit) = mem.split_at(mem.find(|c: char| !c.is_ascii_digit()).unwrap_or(mem.len()));
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" => 1,
        "K" | "KB" => return Some(n.div_ceil(1024)),
        "G" | "GB" => 1024,
        "T" | "TB" => 1024 * 1024,
        _ => return None,
    };
    Some(n * scale)
}

/// Whether one class of job fits the partition; the message names the key to change.
fn check_offer(class: &str, r: &Resources, offer: &PartitionOffer) -> Result<(), String> {
    let fix = "lower it, or choose a partition with bigger nodes (slurm.partition)";
    let p = &offer.name;
    if let Some(have) = offer.cpus.filter(|&have| u64::from(r.cpus) > have) {
        return Err(format!(
            "slurm.{class}.cpus is {}, but the largest node of partition {p} has {have} CPUs (sinfo): the job would wait \
             forever; {fix}",
            r.cpus
        ));
    }
    if let (Some(want), Some(have)) = (mem_mb(&r.mem), offer.mem_mb) {
        if want > have {
            return Err(format!(
                "slurm.{class}.mem is {}, but the largest node of partition {p} has {have} MB (sinfo): the job would \
                 wait forever; {fix}",
                r.mem
            ));
        }
    }
    if let Some(gres) = &r.gres {
        let name = gres.split(':').next().unwrap_or_default();
        if !offer.gres.iter().any(|g| g == name) {
            let has = if offer.gres.is_empty() { "none".to_owned() } else { offer.gres.join(", ") };
            return Err(format!(
                "slurm.{class}.gres is {gres}, but the nodes of partition {p} offer no {name} (their GRES: {has}); \
                 remove it, or choose a partition that has it (slurm.partition)"
            ));
        }
    }
    Ok(())
}

/// Pending reasons under which Slurm will never start a job as it was asked (a limit of the
/// partition, account or QOS), as opposed to waiting for resources to free up.
fn never_runs(reason: &str) -> bool {
    // (Not PartitionNodeLimit: it also means that the nodes needed are down or drained.)
    matches!(reason, "PartitionConfig" | "PartitionTimeLimit" | "BadConstraints" | "InvalidAccount" | "InvalidQOS")
        || ((reason.starts_with("QOSMax") || reason.starts_with("AssocMax")) && reason.contains("PerJob"))
}

fn is_live(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
    )
}

/// Quotes a word for a POSIX shell.
fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[derive(Debug)]
struct Job {
    stage: String,
    key: String,
    dir: PathBuf,
    id: Option<String>,
    state: String,
    node: String,
    /// When Slurm first called it COMPLETED without a `done.json` in sight.
    completed_at: Option<Instant>,
    /// Upstream stages in flight here when it started: it is reported only after them.
    after: Vec<String>,
}

#[derive(Debug)]
struct Probe {
    id: String,
    dir: PathBuf,
    completed_at: Option<Instant>,
}

/// Runs stages as Slurm jobs. See the module docs.
pub struct SlurmExecutor {
    settings: SlurmSettings,
    artifacts: PathBuf,
    /// The job's command line up to the folder: the binary and its subcommand.
    command: Vec<String>,
    payload: serde_json::Value,
    cwd: PathBuf,
    jobs: Vec<Job>,
    ready: VecDeque<(String, Outcome)>,
    /// Our jobs in the queue when the run started (by job name), for adoption.
    found: Option<BTreeMap<String, QueueEntry>>,
    probe: Option<Probe>,
    /// Job folders to keep at the end (failed jobs: their logs).
    keep: Vec<PathBuf>,
    /// Every stage started here: its folder and job id (none for an adopted result).
    started: BTreeMap<String, (PathBuf, Option<String>)>,
    /// What the partition offers (`sinfo`), looked up at the first submission.
    offer: Option<Option<PartitionOffer>>,
}

impl SlurmExecutor {
    /// `command` runs one job given its folder as the last argument (the same binary's
    /// `pipeline job`); `payload` goes into every job.json for it.
    pub fn new(settings: SlurmSettings, artifacts: &Path, command: Vec<String>, payload: serde_json::Value) -> anyhow::Result<Self> {
        settings.validate().map_err(|e| anyhow::anyhow!(e))?;
        let cwd = std::env::current_dir().context("cannot read the current folder")?;
        // One spelling of the folder, so that job names match whichever path reached it.
        let artifacts = std::fs::canonicalize(artifacts).unwrap_or_else(|_| cwd.join(artifacts));
        // Job folders are written and deleted under `.jobs`: never where a link points.
        if let Some(target) = crate::remove::link_target(&artifacts.join(JOBS_DIR)) {
            anyhow::bail!(
                "{} is a symbolic link (to {}); the Slurm executor writes and deletes job folders there and never \
                 through a link: replace it with a real folder (on the filesystem every node mounts)",
                artifacts.join(JOBS_DIR).display(),
                target.display()
            );
        }
        Ok(Self {
            settings,
            artifacts,
            command,
            payload,
            cwd,
            jobs: Vec::new(),
            ready: VecDeque::new(),
            found: None,
            probe: None,
            keep: Vec::new(),
            started: BTreeMap::new(),
            offer: None,
        })
    }

    fn resources(&self, spec: &StageSpec) -> &Resources {
        match spec.kind.cost() {
            Cost::Heavy => &self.settings.heavy,
            Cost::Light => &self.settings.light,
        }
    }

    /// The sbatch arguments (without `sbatch` itself) for a job.
    fn sbatch_args(&self, name: &str, dir: &Path, resources: &Resources, after: &[String]) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name={name}"),
            format!("--output={}", dir.join(LOG_FILE).display()),
            format!("--chdir={}", self.cwd.display()),
            format!("--cpus-per-task={}", resources.cpus),
            format!("--mem={}", resources.mem),
            format!("--time={}", resources.time.as_deref().unwrap_or(&self.settings.time)),
            // Training threads follow the job's CPUs (thread count never changes the bits).
            format!("--export=ALL,RAYON_NUM_THREADS={}", resources.cpus),
        ];
        if let Some(g) = &resources.gres {
            args.push(format!("--gres={g}"));
        }
        if let Some(p) = &self.settings.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.settings.account {
            args.push(format!("--account={a}"));
        }
        if !after.is_empty() {
            args.push(format!("--dependency=afterok:{}", after.join(":")));
            args.push("--kill-on-invalid-dep=yes".to_owned());
        }
        args.extend(self.settings.extra.iter().cloned());
        let mut command: Vec<String> = self.command.clone();
        command.push(dir.display().to_string());
        args.push(format!("--wrap={}", command.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")));
        args
    }

    /// Refuses a class of job that no node of the partition could ever run (more CPUs, memory
    /// or a GRES than it has), naming the key to change, instead of leaving it pending.
    fn check_resources(&mut self, cost: Cost) -> anyhow::Result<()> {
        if self.offer.is_none() {
            // A partition given in `extra` (or several, comma-separated) is sbatch's to judge.
            let elsewhere = self.settings.extra.iter().any(|o| o == "-p" || o.starts_with("--partition") || o.starts_with("-p"))
                || self.settings.partition.as_deref().is_some_and(|p| p.contains(','));
            self.offer = Some(match elsewhere {
                true => None,
                false => partition_offer(self.settings.partition.as_deref()).unwrap_or_else(|e| {
                    tracing::warn!("cannot tell what the partition offers ({e:#}); sbatch will judge the resources");
                    None
                }),
            });
        }
        let Some(Some(offer)) = &self.offer else { return Ok(()) };
        let class = match cost {
            Cost::Heavy => "heavy",
            Cost::Light => "light",
        };
        let resources = match cost {
            Cost::Heavy => &self.settings.heavy,
            Cost::Light => &self.settings.light,
        };
        check_offer(class, resources, offer).map_err(|e| anyhow::anyhow!(e))
    }

    fn sbatch(args: &[String]) -> anyhow::Result<String> {
        let out = Command::new("sbatch").args(args).output().context("cannot run sbatch: is Slurm installed and on PATH?")?;
        anyhow::ensure!(out.status.success(), "sbatch failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        let text = String::from_utf8_lossy(&out.stdout);
        // --parsable prints "id" or "id;cluster".
        let id = text.trim().split(';').next().unwrap_or_default().to_owned();
        anyhow::ensure!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "sbatch printed no job id: {text:?}");
        Ok(id)
    }

    fn found(&mut self) -> anyhow::Result<&BTreeMap<String, QueueEntry>> {
        if self.found.is_none() {
            let live = queue()?.into_iter().filter(|e| e.name.starts_with("ls.") && is_live(&e.state));
            self.found = Some(live.map(|e| (e.name.clone(), e)).collect());
        }
        Ok(self.found.as_ref().expect("just set"))
    }

    /// Submits the job that checks that a job sees the artefacts folder; every job this
    /// coordinator submits runs only after it succeeded.
    fn probe(&mut self) -> anyhow::Result<String> {
        if let Some(p) = &self.probe {
            return Ok(p.id.clone());
        }
        let nonce = format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let dir = self.artifacts.join(JOBS_DIR).join(format!("probe.{nonce}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&dir.join(PROBE_TOKEN), nonce.as_bytes())?;
        let light = Resources { time: Some("00:05:00".to_owned()), ..self.settings.light.clone() };
        let id = Self::sbatch(&self.sbatch_args(&format!("ls.probe.{nonce}"), &dir, &light, &[]))?;
        tracing::debug!("probe job {id}: can a job see {}?", self.artifacts.display());
        self.probe = Some(Probe { id: id.clone(), dir, completed_at: None });
        Ok(id)
    }

    /// One look at the queue: settles the probe and moves finished jobs (in launch order,
    /// so upstream before downstream) to `ready`.
    fn poll(&mut self) -> anyhow::Result<()> {
        let queue: BTreeMap<String, QueueEntry> = queue()?.into_iter().map(|e| (e.id.clone(), e)).collect();
        if let Some(probe) = &mut self.probe {
            let entry = queue.get(&probe.id);
            if entry.is_none_or(|e| !is_live(&e.state)) {
                let seen = probe.dir.join(PROBE_SEEN).is_file();
                let completed = entry.is_none_or(|e| e.state == "COMPLETED");
                // NFS may show the probe's answer a little after Slurm reports its end.
                let waiting = !seen && completed && probe.completed_at.get_or_insert_with(Instant::now).elapsed() < RESULT_GRACE;
                if seen {
                    let _ = remove_within(&self.artifacts, &probe.dir);
                    self.probe = None;
                } else if !waiting {
                    let (state, node) = entry.map_or(("gone".to_owned(), String::new()), |e| (e.state.clone(), e.node.clone()));
                    anyhow::bail!(
                        "the probe job {} ({state}{}) could not see the artefacts folder {} or could not run {} in {}: the \
                         folder, the project and the binary must be on a filesystem that every node mounts at the same \
                         path (see README, \"Running on a Slurm cluster\"){}",
                        probe.id,
                        if node.is_empty() { String::new() } else { format!(" on node {node}") },
                        self.artifacts.display(),
                        self.command.first().map_or("", String::as_str),
                        self.cwd.display(),
                        log_tail(&probe.dir.join(LOG_FILE)).map(|t| format!("; its log:\n{t}")).unwrap_or_default()
                    );
                }
            }
        }
        for mut job in std::mem::take(&mut self.jobs) {
            let entry = job.id.as_ref().and_then(|id| queue.get(id)).cloned();
            if let (Some(id), Some(e)) = (&job.id, &entry) {
                if e.state != job.state || e.node != job.node {
                    match e.state.as_str() {
                        "PENDING" => tracing::info!(stage = %job.stage, "job {id} pending ({})", e.reason),
                        "RUNNING" => tracing::info!(stage = %job.stage, "job {id} running on {}", e.node),
                        other => tracing::debug!(stage = %job.stage, "job {id} {other}"),
                    }
                    job.state = e.state.clone();
                    job.node = e.node.clone();
                }
            }
            if let (Some(id), Some(e)) = (&job.id, &entry) {
                if e.state == "PENDING" && never_runs(&e.reason) {
                    scancel(vec![id.clone()]);
                    self.keep.push(job.dir.clone());
                    let outcome = Err(anyhow::anyhow!(
                        "Slurm job {id} is pending ({}), which means the cluster will never run it as asked; it was \
                         cancelled: check slurm.heavy / slurm.light (cpus, mem, gres, time), slurm.partition and \
                         slurm.account against `scontrol show partition`",
                        e.reason
                    ));
                    self.ready.push_back((job.stage, outcome));
                    continue;
                }
            }
            let live = entry.as_ref().is_some_and(|e| is_live(&e.state));
            // NFS may show a result a little after Slurm reports the end.
            let awaiting_result = !live
                && job.id.is_some()
                && entry.as_ref().is_none_or(|e| e.state == "COMPLETED")
                && !job.dir.join(DONE_FILE).is_file()
                && job.completed_at.get_or_insert_with(Instant::now).elapsed() < RESULT_GRACE;
            // Upstream first: the runner commits a stage only after the stages it reads.
            let upstream_pending = job.after.iter().any(|u| self.jobs.iter().any(|j| &j.stage == u));
            if live || awaiting_result || upstream_pending {
                self.jobs.push(job);
                continue;
            }
            let outcome = self.outcome(&job, entry.as_ref());
            if outcome.is_err() {
                self.keep.push(job.dir.clone());
            }
            self.ready.push_back((job.stage, outcome));
        }
        Ok(())
    }

    fn outcome(&self, job: &Job, entry: Option<&QueueEntry>) -> Outcome {
        let id = job.id.as_deref().unwrap_or("(adopted)");
        let log = job.dir.join(LOG_FILE);
        let failed = entry.is_some_and(|e| e.state != "COMPLETED");
        if !failed {
            if let Ok(bytes) = std::fs::read(job.dir.join(DONE_FILE)) {
                let result: JobResult = serde_json::from_slice(&bytes)
                    .with_context(|| format!("Slurm job {id}: {} is not a job result", job.dir.join(DONE_FILE).display()))?;
                anyhow::ensure!(
                    result.key == job.key,
                    "Slurm job {id}: {} is the result of other work (key {}, expected {})",
                    job.dir.display(),
                    result.key,
                    job.key
                );
                return Ok(Produced {
                    out_dir: job.dir.join(OUT_DIR),
                    movable: false,
                    report: crate::spec::StageReport { device: result.device },
                    wall_time_s: result.wall_time_s,
                    executor: "slurm",
                    node: result.node,
                    job: result.job.or(job.id.clone()),
                    read: Some(result.inputs),
                });
            }
        }
        let what = match entry {
            Some(e) if e.reason.is_empty() || e.reason == "None" => e.state.clone(),
            Some(e) => format!("{} ({})", e.state, e.reason),
            None => "ended".to_owned(),
        };
        let node = entry.map(|e| e.node.as_str()).filter(|n| !n.is_empty()).map(|n| format!(" on node {n}")).unwrap_or_default();
        match log_tail(&log) {
            Some(tail) => Err(anyhow::anyhow!("Slurm job {id} {what}{node}; the end of its log {}:\n{tail}", log.display())),
            None => Err(anyhow::anyhow!(
                "Slurm job {id} {what}{node} and left no log at {}: can that node see the artefacts folder? It must be \
                 on a filesystem that every node mounts at the same path",
                log.display()
            )),
        }
    }
}

/// The last lines of a job's log, indented, or `None` when there is no log.
fn log_tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(15)..];
    Some(if tail.is_empty() { "  (empty)".to_owned() } else { tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n") })
}

impl Executor for SlurmExecutor {
    fn chains(&self) -> bool {
        true
    }

    fn slots(&self) -> Option<usize> {
        None
    }

    fn output_dir(&self, stage: &str) -> Option<PathBuf> {
        self.started.get(stage).map(|(dir, _)| dir.join(OUT_DIR))
    }

    fn start(&mut self, launch: Launch, _store: &Store) -> anyhow::Result<()> {
        if self.found.is_none() {
            catch_interrupts();
        }
        let stage = launch.spec.id.clone();
        // A forced stage is new work: its own key, so it neither adopts nor disturbs earlier jobs.
        let key = if launch.forced {
            let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            format!("{}-forced-{}-{nonce}", launch.key, std::process::id())
        } else {
            launch.key.clone()
        };
        self.check_resources(launch.spec.kind.cost())?;
        let dir = job_dir(&self.artifacts, &stage, &key);
        let name = job_name(&self.artifacts, &stage, &key);
        let mut job = Job {
            stage: stage.clone(),
            key: key.clone(),
            dir: dir.clone(),
            id: None,
            state: String::new(),
            node: String::new(),
            completed_at: None,
            after: launch.after.clone(),
        };
        // A queued or running job of a previous coordinator: wait for it.
        if let Some(entry) = self.found()?.get(&name).cloned() {
            tracing::info!(stage = %stage, "adopting Slurm job {} ({}) of an earlier run", entry.id, entry.state);
            self.started.insert(stage, (dir, Some(entry.id.clone())));
            job.id = Some(entry.id);
            job.state = entry.state;
            self.jobs.push(job);
            return Ok(());
        }
        // A finished job of a previous coordinator (no try of it still queued): adopt its
        // result; the runner checks the inputs it read before committing it.
        let finished = std::fs::read(dir.join(DONE_FILE)).ok().and_then(|b| serde_json::from_slice::<JobResult>(&b).ok());
        // (A result the runner refused keeps its folder for the log, without `out/` and
        // `done.json`, so it is never adopted again.)
        if finished.as_ref().is_some_and(|r| r.key == key) && dir.join(OUT_DIR).is_dir() {
            tracing::info!(stage = %stage, "adopting the finished job of an earlier run ({})", dir.display());
            self.started.insert(stage, (dir, None));
            self.jobs.push(job);
            return Ok(());
        }
        let mut after: Vec<String> = vec![self.probe()?];
        after.extend(launch.after.iter().filter_map(|u| self.started.get(u)?.1.clone()));
        remove_within(&self.artifacts, &dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        std::fs::create_dir_all(dir.join(OUT_DIR)).with_context(|| format!("cannot create {}", dir.display()))?;
        let file = JobFile {
            stage: stage.clone(),
            key,
            kind: launch.spec.kind.kind().to_owned(),
            version: launch.spec.kind.version(),
            params: launch.spec.params.clone(),
            inputs: launch.inputs.clone(),
            previous: launch.previous.clone(),
            recorded: launch.recorded.clone(),
            payload: self.payload.clone(),
        };
        write_atomic(&dir.join(JOB_FILE), serde_json::to_string_pretty(&file)?.as_bytes())?;
        let id = Self::sbatch(&self.sbatch_args(&name, &dir, self.resources(&launch.spec), &after))?;
        tracing::info!(stage = %stage, "submitted Slurm job {id}");
        self.started.insert(stage, (dir, Some(id.clone())));
        job.id = Some(id);
        self.jobs.push(job);
        Ok(())
    }

    fn wait(&mut self) -> anyhow::Result<(String, Outcome)> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Ok(next);
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                anyhow::bail!("interrupted");
            }
            if let Err(e) = self.poll() {
                // An interrupt also reaches squeue; say what happened, not how squeue died.
                anyhow::ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
                return Err(e);
            }
            if self.ready.is_empty() {
                let until = Instant::now() + Duration::from_secs_f64(self.settings.poll_s);
                while Instant::now() < until && !INTERRUPTED.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())));
                }
            }
        }
    }

    fn cancel(&mut self, stages: &[String]) {
        let (gone, kept): (Vec<Job>, Vec<Job>) = std::mem::take(&mut self.jobs).into_iter().partition(|j| stages.contains(&j.stage));
        self.jobs = kept;
        scancel(gone.iter().filter_map(|j| j.id.clone()).collect());
    }

    fn keep(&mut self, stage: &str) {
        if let Some((dir, _)) = self.started.get(stage) {
            self.keep.push(dir.clone());
        }
    }

    fn cancel_all(&mut self) {
        let mut ids: Vec<String> = self.jobs.iter().filter_map(|j| j.id.clone()).collect();
        ids.extend(self.probe.take().map(|p| p.id));
        if !ids.is_empty() {
            tracing::warn!("cancelling Slurm jobs {}", ids.join(", "));
        }
        scancel(ids);
        self.jobs.clear();
    }

    fn describe(&self, launch: &Launch) -> Option<String> {
        let dir = job_dir(&self.artifacts, &launch.spec.id, &launch.key);
        let after: Vec<String> = std::iter::once("<probe>".to_owned()).chain(launch.after.iter().map(|u| format!("<{u}>"))).collect();
        let args = self.sbatch_args(&job_name(&self.artifacts, &launch.spec.id, &launch.key), &dir, self.resources(&launch.spec), &after);
        Some(std::iter::once("sbatch".to_owned()).chain(args.iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" "))
    }

    fn finish(&mut self) {
        // Job folders go once their results are in the store (or no longer wanted); a failed
        // job's folder stays for its log, and a job still in the queue keeps its folder.
        // Without the queue, no folder can be known to be unused.
        let Ok(queue) = queue() else { return };
        let live: Vec<String> = queue.into_iter().filter(|e| is_live(&e.state)).map(|e| e.name).collect();
        let Ok(entries) = std::fs::read_dir(self.artifacts.join(JOBS_DIR)) else { return };
        let mut folders: Vec<(PathBuf, bool)> = Vec::new();
        for entry in entries.flatten() {
            // `<stage>.<tag>` is job `ls.<tag>.<stage>`; `probe.<nonce>` is `ls.probe.<nonce>`.
            let name = entry.file_name().to_string_lossy().into_owned();
            let job = match name.strip_prefix("probe.") {
                Some(nonce) => format!("ls.probe.{nonce}"),
                None => name.rsplit_once('.').map(|(stage, tag)| format!("ls.{tag}.{stage}")).unwrap_or_default(),
            };
            folders.push((entry.path(), live.contains(&job)));
        }
        let ours = |path: &Path| self.started.values().any(|(d, _)| d == path);
        // An earlier coordinator's job still in the queue may read its upstream's folder: then
        // only this run's own folders go.
        let others_live = folders.iter().any(|(path, live)| *live && !ours(path));
        for (path, live) in &folders {
            if *live || self.keep.contains(path) || self.jobs.iter().any(|j| &j.dir == path) || (others_live && !ours(path)) {
                continue;
            }
            if let Err(e) = remove_within(&self.artifacts, path) {
                tracing::warn!("leaving {}: {e}", path.display());
            }
        }
        if let Some(p) = self.probe.take() {
            let _ = remove_within(&self.artifacts, &p.dir);
        }
        for dir in &self.keep {
            let _ = remove_within(&self.artifacts, &dir.join(DONE_FILE));
            let _ = remove_within(&self.artifacts, &dir.join(OUT_DIR));
        }
    }
}

fn scancel(ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    match Command::new("scancel").args(&ids).status() {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!("scancel {} exited with {s}", ids.join(" ")),
        Err(e) => tracing::warn!("cannot run scancel: {e}"),
    }
}

/// The job side of `pipeline job <folder>`: reads what to run, failing clearly when this node
/// cannot see the folder.
pub fn read_job(dir: &Path) -> anyhow::Result<JobFile> {
    let path = dir.join(JOB_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "this node ({}) cannot read {}: {e}; the artefacts folder must be on a filesystem that every node mounts at \
             the same path",
            hostname().unwrap_or_default(),
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a job file", path.display()))
}

/// Whether `dir` is the probe's folder rather than a stage's.
pub fn is_probe(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("probe."))
}

/// The probe job: proves that this node sees the coordinator's artefacts folder.
pub fn run_probe(dir: &Path) -> anyhow::Result<()> {
    let host = hostname().unwrap_or_default();
    std::fs::read(dir.join(PROBE_TOKEN)).map_err(|e| {
        anyhow::anyhow!(
            "this node ({host}) cannot see {} ({e}); the artefacts folder must be on a filesystem that every node mounts at \
             the same path",
            dir.display()
        )
    })?;
    write_atomic(&dir.join(PROBE_SEEN), host.as_bytes())?;
    Ok(())
}

/// Runs the job's stage (rebuilt by the binary as `spec`) into the folder's `out/` and
/// writes `done.json` last. Refuses a spec whose kind, version or params differ from what
/// the coordinator planned (the config was edited after submission).
pub fn run_job(dir: &Path, job: &JobFile, spec: &StageSpec) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        spec.kind.kind() == job.kind && spec.kind.version() == job.version,
        "stage {}: this binary has {} v{}, the coordinator planned {} v{}: run the same build on every node",
        job.stage,
        spec.kind.kind(),
        spec.kind.version(),
        job.kind,
        job.version
    );
    let changes = crate::status::param_changes(&job.params, &spec.params);
    anyhow::ensure!(
        changes.is_empty(),
        "stage {}: the config changed after the job was submitted ({}); run the pipeline again",
        job.stage,
        changes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );
    // A requeued job starts over: its earlier result must not outlive the outputs it describes.
    let done = dir.join(DONE_FILE);
    remove_within(dir, &done).with_context(|| format!("cannot remove {}", done.display()))?;
    let out = dir.join(OUT_DIR);
    remove_within(dir, &out).with_context(|| format!("cannot clear {}", out.display()))?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Hashed before the run and looked at again after it: the coordinator records these.
    let read = ReadInputs::take(&job.stage, &job.inputs, &spec.files)?;
    read.check_recorded(&job.recorded)?;
    let ctx = StageContext::new(&job.stage, &spec.params, job.inputs.clone(), &out).with_previous(job.previous.clone());
    let report = spec.kind.run(&ctx)?;
    read.check_unchanged()?;
    if std::env::var(super::local::PAUSE_ENV).is_ok_and(|v| v == job.stage) {
        eprintln!("paused before commit: {}", job.stage);
        std::thread::sleep(Duration::from_secs(3600));
    }
    let result = JobResult {
        stage: job.stage.clone(),
        key: job.key.clone(),
        node: hostname(),
        job: std::env::var("SLURM_JOB_ID").ok(),
        device: report.device,
        wall_time_s: started.elapsed().as_secs_f64(),
        inputs: read.hashes(),
    };
    write_atomic(&dir.join(DONE_FILE), serde_json::to_string_pretty(&result)?.as_bytes())?;
    eprintln!("stage {} done in {:.2} s", job.stage, result.wall_time_s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{StageKind, StageReport};
    use std::sync::Arc;

    struct Kind(Cost);
    impl StageKind for Kind {
        fn kind(&self) -> &'static str {
            "k"
        }
        fn version(&self) -> u32 {
            1
        }
        fn cost(&self) -> Cost {
            self.0
        }
        fn run(&self, _: &StageContext<'_>) -> anyhow::Result<StageReport> {
            Ok(StageReport::default())
        }
    }

    fn executor(settings: SlurmSettings) -> SlurmExecutor {
        let command = vec!["/opt/my tools/latentscope".to_owned(), "pipeline".to_owned(), "job".to_owned()];
        SlurmExecutor::new(settings, Path::new("/shared/art"), command, serde_json::Value::Null).unwrap()
    }

    #[test]
    fn resources_no_node_has_are_refused_naming_the_key() {
        let sinfo = "debug*|2|7900|(null)\ngpu|16|128000|gpu:h100:4(S:0-1)\ngpu|8|64000|gpu:a100:2\nmixed|4|1|(null)\nmixed|8+|1|(null)\n";
        let default = parse_sinfo(sinfo, None).unwrap().unwrap();
        assert_eq!(default, PartitionOffer { name: "debug".into(), cpus: Some(2), mem_mb: Some(7900), gres: vec![] });
        let gpu = parse_sinfo(sinfo, Some("gpu")).unwrap().unwrap();
        assert_eq!((gpu.cpus, gpu.mem_mb, gpu.gres.clone()), (Some(16), Some(128000), vec!["gpu".to_owned()]));
        // A `+` (a minimum over mixed nodes) says nothing of the largest: not compared.
        let mixed = parse_sinfo(sinfo, Some("mixed")).unwrap().unwrap();
        assert_eq!(mixed.cpus, None);
        check_offer("heavy", &SlurmSettings::default().heavy, &mixed).unwrap();
        let err = parse_sinfo(sinfo, Some("big")).unwrap_err().to_string();
        assert!(err.contains("slurm.partition") && err.contains("debug, gpu"), "{err}");

        let heavy = SlurmSettings::default().heavy;
        let err = check_offer("heavy", &heavy, &default).unwrap_err();
        assert!(err.contains("slurm.heavy.cpus is 8") && err.contains("partition debug has 2 CPUs"), "{err}");
        check_offer("heavy", &heavy, &gpu).unwrap();
        let big = Resources { cpus: 2, mem: "16G".into(), gres: None, time: None };
        assert!(check_offer("heavy", &big, &default).unwrap_err().contains("slurm.heavy.mem is 16G"));
        let cuda = Resources { cpus: 1, mem: "1G".into(), gres: Some("gpu:1".into()), time: None };
        assert!(check_offer("heavy", &cuda, &default).unwrap_err().contains("slurm.heavy.gres is gpu:1"));
        check_offer("heavy", &cuda, &gpu).unwrap();
        // RealMemory unset (sinfo shows 1 MB): memory is not compared.
        let unset = parse_sinfo("debug*|4|1|(null)\n", None).unwrap().unwrap();
        check_offer("heavy", &big, &unset).unwrap();
        assert_eq!((mem_mb("512M"), mem_mb("2048"), mem_mb("1g"), mem_mb("x")), (Some(512), Some(2048), Some(1024), None));

        assert!(never_runs("PartitionConfig") && never_runs("QOSMaxCpuPerJobLimit"));
        assert!(!never_runs("Resources") && !never_runs("Priority") && !never_runs("Dependency"));
    }

    fn launch(id: &str, cost: Cost, after: &[&str]) -> Launch {
        Launch {
            spec: StageSpec::new(id, Arc::new(Kind(cost))),
            inputs: BTreeMap::new(),
            previous: None,
            after: after.iter().map(|s| s.to_string()).collect(),
            key: "ab".repeat(32),
            forced: false,
            recorded: Default::default(),
        }
    }

    #[test]
    fn sbatch_lines_carry_the_class_resources_the_site_options_and_the_chain() {
        let settings = SlurmSettings {
            partition: Some("gpu".into()),
            account: Some("lab-42".into()),
            heavy: Resources { cpus: 8, mem: "16G".into(), gres: Some("gpu:1".into()), time: Some("04:00:00".into()) },
            extra: vec!["--qos=short".into()],
            ..SlurmSettings::default()
        };
        let e = executor(settings);
        let heavy = e.describe(&launch("train-a", Cost::Heavy, &["download-a"])).unwrap();
        for part in [
            "--cpus-per-task=8",
            "--mem=16G",
            "--gres=gpu:1",
            "--time=04:00:00",
            "--partition=gpu",
            "--account=lab-42",
            "--qos=short",
            "'--dependency=afterok:<probe>:<download-a>'",
            "--kill-on-invalid-dep=yes",
            "RAYON_NUM_THREADS=8",
        ] {
            assert!(heavy.contains(part), "{part} missing from {heavy}");
        }
        // The binary's path is quoted for the shell that --wrap runs.
        assert!(heavy.contains(r"'--wrap='\''/opt/my tools/latentscope'\'' pipeline job /shared/art/.jobs/train-a."), "{heavy}");
        let light = e.describe(&launch("score", Cost::Light, &[])).unwrap();
        assert!(light.contains("--cpus-per-task=1") && light.contains("--time=02:00:00") && !light.contains("--gres"), "{light}");
    }

    #[test]
    fn job_names_differ_per_artefacts_folder_and_key() {
        let key = "cd".repeat(32);
        let a = job_name(Path::new("/a/artifacts"), "plot", &key);
        assert!(a.starts_with("ls.") && a.ends_with(".plot"), "{a}");
        assert_ne!(a, job_name(Path::new("/b/artifacts"), "plot", &key));
        assert_ne!(a, job_name(Path::new("/a/artifacts"), "plot", &"ce".repeat(32)));
        assert_eq!(a, job_name(Path::new("/a/artifacts"), "plot", &key));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = SlurmSettings { poll_s: 0.0, ..SlurmSettings::default() };
        assert!(bad.validate().unwrap_err().starts_with("slurm.poll_s"));
        let bad = SlurmSettings { light: Resources { cpus: 0, mem: "1G".into(), gres: None, time: None }, ..SlurmSettings::default() };
        assert!(bad.validate().unwrap_err().starts_with("slurm.light.cpus"));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("plain/path-1.0"), "plain/path-1.0");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
