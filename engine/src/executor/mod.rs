//! Where a stage's code runs. The runner decides what must run, in which order, and commits
//! every result to the store; an executor only runs one stage into a folder and reports back.
//! Two implementations: [`local::LocalExecutor`] (threads of this process) and
//! [`slurm::SlurmExecutor`] (one `sbatch` job per stage, chained with `afterok`).

pub mod local;
pub mod slurm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::spec::{StageReport, StageSpec};
use super::store::Store;

/// One stage to run.
pub struct Launch {
    pub spec: StageSpec,
    /// Input key (`stage/file`) -> where to read it: a store entry, or (for an upstream stage
    /// still running in a chaining executor) that stage's output folder.
    pub inputs: BTreeMap<String, PathBuf>,
    /// The stage's last committed outputs (its view), for consistency checks only.
    pub previous: Option<PathBuf>,
    /// Upstream stages still running in this executor (only for executors that chain).
    pub after: Vec<String>,
    /// What this piece of work is: a hash of the stage's recipe (kind, version, params,
    /// outside files, its upstream stages' keys), independent of the store. Equal keys mean
    /// equal work, so a restarted coordinator can adopt a job. Empty for executors that do
    /// not chain.
    pub key: String,
    /// `--force`: run it again, never adopt earlier work.
    pub forced: bool,
    /// The content hashes of the inputs that the stage's fingerprint was computed from (input
    /// key -> blake3), as far as they are known at launch: an executor that runs the stage in
    /// this process refuses other bytes before running it (see `crate::inputs`).
    pub recorded: crate::fingerprint::InputHashes,
}

/// What a stage run left behind, before it is committed.
#[derive(Debug)]
pub struct Produced {
    /// The folder holding exactly the declared outputs.
    pub out_dir: PathBuf,
    /// Whether the runner may move `out_dir` into the store. When false, downstream jobs may
    /// still read it, so its files are linked (or copied) instead.
    pub movable: bool,
    pub report: StageReport,
    pub wall_time_s: f64,
    /// `local` or `slurm`.
    pub executor: &'static str,
    /// The host the stage ran on.
    pub node: Option<String>,
    /// The scheduler's job id, if any.
    pub job: Option<String>,
    /// The content hashes of the inputs as the stage read them (input key -> blake3), hashed
    /// before it ran and unchanged after; the runner checks them against the lock before
    /// committing. `None` only from executors that cannot tell (test doubles).
    pub read: Option<crate::fingerprint::InputHashes>,
}

/// The result of one stage run.
pub type Outcome = anyhow::Result<Produced>;

pub trait Executor {
    /// Whether a stage may be started while its upstream stages are still running here (the
    /// executor then orders them itself).
    fn chains(&self) -> bool {
        false
    }
    /// How many light stages may run at once (a heavy one takes them all); `None`: no limit
    /// here (the scheduler decides).
    fn slots(&self) -> Option<usize>;
    /// Where an in-flight stage writes its outputs (chaining executors only).
    fn output_dir(&self, _stage: &str) -> Option<PathBuf> {
        None
    }
    /// Starts (or adopts) a stage run. An error fails that stage only.
    fn start(&mut self, launch: Launch, store: &Store) -> anyhow::Result<()>;
    /// Blocks until a started stage finishes. An error ends the whole run (an interrupt, a
    /// scheduler that cannot be reached): the runner then calls [`Executor::cancel_all`].
    fn wait(&mut self) -> anyhow::Result<(String, Outcome)>;
    /// Stops these in-flight stages (their upstream failed); they report nothing more.
    fn cancel(&mut self, _stages: &[String]) {}
    /// The runner could not commit what this stage produced: keep whatever explains why
    /// (a job's log).
    fn keep(&mut self, _stage: &str) {}
    /// Stops everything in flight.
    fn cancel_all(&mut self) {}
    /// With `--dry-run`: how this stage would be started (the `sbatch` line), if that says
    /// more than its id. `after` pairs each in-flight upstream stage with its key.
    fn describe(&self, _launch: &Launch) -> Option<String> {
        None
    }
    /// Called once when the run ends, whatever its outcome.
    fn finish(&mut self) {}
}

/// This machine's host name.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we read only up to the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned()).filter(|h| !h.is_empty())
}

/// Puts the files of `from` into the fresh folder `to` by hard link (a copy where the
/// filesystem cannot link), leaving `from` as it is.
pub fn link_files(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
