//! The command line, shared by `cargo xtask` and the `latentscope` binary: parse, call the
//! library, print. Logs and progress go to stderr; results to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::LoadedConfig;
use crate::pipeline::{self, DagFormat, Graph, RunOptions};

/// `dag --format`: the engine's [`DagFormat`] as a command-line choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DagFormatArg {
    Text,
    Dot,
    Mermaid,
}

impl From<DagFormatArg> for DagFormat {
    fn from(f: DagFormatArg) -> Self {
        match f {
            DagFormatArg::Text => DagFormat::Text,
            DagFormatArg::Dot => DagFormat::Dot,
            DagFormatArg::Mermaid => DagFormat::Mermaid,
        }
    }
}

/// `run --executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorArg {
    Local,
    Slurm,
}

/// What a Slurm job needs to rebuild its stage exactly as the coordinator planned it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct JobPayload {
    config_path: PathBuf,
    config_text: String,
    overrides: Vec<String>,
}

#[derive(Debug, Parser)]
#[command(name = "latentscope", version, about = "Autoencoder latent spaces vs. MNIST labels: a cached, reproducible pipeline")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run, inspect and maintain the stage pipeline.
    Pipeline(PipelineArgs),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Rewrite README.md's measured numbers (between `<!-- readme-numbers:begin -->` and
    /// `<!-- readme-numbers:end -->`) from the current, complete run, so they never go stale.
    ReadmeNumbers {
        #[command(flatten)]
        common: Common,
        /// The README to rewrite.
        #[arg(long, default_value = "README.md")]
        readme: PathBuf,
        /// Change nothing; exit with status 1 if the README's numbers differ from the run's.
        #[arg(long)]
        check: bool,
    },
    /// Print a shell completion script: `latentscope completions bash > ~/.local/share/bash-completion/completions/latentscope`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Training steps per second of each model at batch 32 and 256, against this machine's
    /// matmul FLOP rate.
    Train {
        /// Timed steps per model and batch size.
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// auto | cpu | cuda | metal
        #[arg(long, default_value = "auto")]
        device: String,
        /// Only this model (simple or conv).
        #[arg(long)]
        model: Option<String>,
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "32,256")]
        batch: Vec<usize>,
        /// Print the measurements as JSON.
        #[arg(long)]
        json: bool,
        /// On the CPU, train through candle's autograd instead of the CPU trainer (the path
        /// other devices take), to compare the two.
        #[arg(long)]
        autograd: bool,
    },
}

#[derive(Debug, Args)]
struct PipelineArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Debug, Args)]
struct Common {
    /// Pipeline configuration file.
    #[arg(long, global = true, default_value = "pipeline.yaml")]
    config: PathBuf,
    /// Folder of the artefact store, the stage views and the lock file.
    #[arg(long, global = true, default_value = "artifacts")]
    artifacts: PathBuf,
    /// Override a config value: dotted.key=value (the value is YAML). Repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// What `publish` and `pull` share.
#[derive(Debug, Args)]
struct HubArgs {
    /// The model repository, OWNER/NAME (`publish` creates it if it does not exist).
    #[arg(long, value_name = "OWNER/NAME", value_parser = crate::hub::RepoId::parse)]
    repo: crate::hub::RepoId,
    /// Branch (`publish`), or branch, tag or commit (`pull`).
    #[arg(long, default_value = "main", value_parser = crate::hub::parse_revision)]
    revision: String,
    /// Hub URL. Default: HF_ENDPOINT, else https://huggingface.co. Each request waits at most
    /// LATENTSCOPE_HUB_TIMEOUT_S seconds (30) for an answer and is retried LATENTSCOPE_HUB_RETRIES
    /// times (3) after a transient failure.
    #[arg(long)]
    endpoint: Option<String>,
    /// Fail at once if another run holds the artefacts folder.
    #[arg(long)]
    no_wait: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum PipelineCommand {
    /// Bring stages up to date (all, or the given ones and their ancestors).
    Run(RunArgs),
    /// Run one stage inside a Slurm job (internal: `run --executor slurm` submits it).
    #[command(hide = true)]
    Job(JobArgs),
    /// Fresh or stale, and why, for every stage.
    Status(StatusArgs),
    /// Print the stage graph.
    Dag(DagArgs),
    /// The metrics table of the current run, beside the notebook's numbers.
    Metrics(MetricsArgs),
    /// Upload the current run (models, latents, clusterings, metrics, figures, a model card,
    /// the effective config and the lock file) to a Hugging Face model repository, in one
    /// commit. Needs a complete, fresh pipeline and a token with write access (HF_TOKEN or the
    /// token file of `hf auth login`).
    Publish(PublishArgs),
    /// Download a published run into the local store, verified against its lock file, so that
    /// `run` finds every stage after `download` cached.
    Pull(PullArgs),
    /// Remove store entries that the lock file does not reference.
    Gc(GcArgs),
    /// List the runs the run-cache holds (each finished `score`): the settings that differ from
    /// the current config, and each model's purity. `metrics --diff run:<fingerprint>` compares
    /// with one.
    Runs(RunsArgs),
    /// Write the run's report as one self-contained web page: the metrics, every figure
    /// inline, and the provenance (config, version and commit, devices, per-stage wall times and
    /// fingerprints, dataset revisions and checksums). `run` rewrites it whenever it leaves a complete run that the page does not describe.
    Report(ReportArgs),
}

/// The arguments of `pipeline run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// Stage ids to bring up to date; none means the whole pipeline.
    ids: Vec<String>,
    /// Run these stages even when they are fresh.
    #[arg(long, value_name = "ID", num_args = 1..)]
    force: Vec<String>,
    /// Say what would run, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Concurrent stage slots (a training takes them all). Default: the core count.
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Re-hash every artefact before trusting it.
    #[arg(long)]
    verify: bool,
    /// Fail at once if another run holds the artefacts folder.
    #[arg(long)]
    no_wait: bool,
    /// After a failure, run every stage that does not depend on a failed one (the run still
    /// fails and names every failed stage).
    #[arg(long, short = 'k')]
    keep_going: bool,
    /// Print the summary as JSON on stdout (logs stay on stderr).
    #[arg(long)]
    json: bool,
    /// Where stages run: here (local), or one Slurm job each (slurm; settings from the
    /// config's `slurm:` section; the artefacts folder must be on a shared filesystem).
    #[arg(long, value_enum, default_value = "local")]
    executor: ExecutorArg,
}

/// The arguments of `pipeline job`.
#[derive(Debug, Args)]
struct JobArgs {
    /// The job's folder under <artifacts>/.jobs/.
    dir: PathBuf,
}

/// The arguments of `pipeline status`.
#[derive(Debug, Args)]
struct StatusArgs {
    /// Print the rows as JSON: [{"stage", "fresh", "reason"}].
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when any stage is stale (for CI gates), 0 when all are fresh.
    #[arg(long, short = 'q')]
    check: bool,
    /// Re-hash every artefact instead of trusting size and mtime.
    #[arg(long)]
    verify: bool,
}

/// The arguments of `pipeline dag`.
#[derive(Debug, Args)]
struct DagArgs {
    /// text (one line per stage with its upstream), dot (Graphviz) or mermaid.
    #[arg(long, value_enum, default_value = "text")]
    format: DagFormatArg,
}

/// The arguments of `pipeline metrics`.
#[derive(Debug, Args)]
struct MetricsArgs {
    /// Print metrics.json (or, with --diff, the old and new values) as JSON.
    #[arg(long)]
    json: bool,
    /// Compare with an earlier run: one in the run-cache, `run:<fingerprint>` (see
    /// `pipeline runs`), its lock file (copy `artifacts/pipeline.lock` aside to keep one), a
    /// `score/metrics.json`, or a published run: `hub:OWNER/NAME[@REV]` (HF_ENDPOINT and
    /// HF_TOKEN apply).
    #[arg(long, value_name = "run:FINGERPRINT|LOCKFILE|METRICS.JSON|hub:OWNER/NAME[@REV]")]
    diff: Option<PathBuf>,
}

/// The arguments of `pipeline publish`.
#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Create the repository private (when this command creates it).
    #[arg(long)]
    private: bool,
    /// Commit message.
    #[arg(long)]
    message: Option<String>,
    /// Print what would be uploaded, with sizes; make no request.
    #[arg(long)]
    dry_run: bool,
    /// Also write the generated model card to this file (to preview it with --dry-run).
    #[arg(long, value_name = "FILE")]
    card_out: Option<PathBuf>,
}

/// The arguments of `pipeline pull`.
#[derive(Debug, Args)]
struct PullArgs {
    #[command(flatten)]
    hub: HubArgs,
}

/// The arguments of `pipeline gc`.
#[derive(Debug, Args)]
struct GcArgs {
    /// Fail at once if another run holds the artefacts folder.
    #[arg(long)]
    no_wait: bool,
    /// Say what would be removed and freed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON: {"entries_removed", "bytes_freed"}.
    #[arg(long)]
    json: bool,
}

/// The arguments of `pipeline runs`.
#[derive(Debug, Args)]
struct RunsArgs {
    /// Print them as JSON: [{"fingerprint", "finished_at", "current", "differs", "purity"}].
    #[arg(long)]
    json: bool,
}

/// The arguments of `pipeline report`.
#[derive(Debug, Args)]
struct ReportArgs {
    /// Where to write it [default: ARTIFACTS/report.html].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Entry point of both binaries.
pub fn main() -> ExitCode {
    pin_thread_count();
    let cli = Cli::parse();
    init_logging();
    match execute(cli) {
        Ok(code) => code,
        // `status | head -1`: the reader went away; that is not an error worth a message.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// candle asks for the thread count on every matmul and, unless RAYON_NUM_THREADS is set,
/// answers by parsing /proc/cpuinfo each time (half the step time of the simple model).
/// Resolve it once, before any thread starts, and pin it.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // Safe: called first thing in main, while the process is single-threaded.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// The log timer: seconds since the process started, to the hundredth.
struct Elapsed(std::time::Instant);

impl tracing_subscriber::fmt::time::FormatTime for Elapsed {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>7.2}s", self.0.elapsed().as_secs_f64())
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress::LogWriter)
        // Seconds since start (" 12.34s"): short, and what a reader of a run's log wants.
        .with_timer(Elapsed(std::time::Instant::now()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The Slurm executor for this config: each job reruns this binary's `pipeline job` on a
/// snapshot of the config text, so an edit after submission cannot change what a job runs.
fn slurm_executor(config: &LoadedConfig, common: &Common) -> anyhow::Result<pipeline::SlurmExecutor> {
    let exe = std::env::current_exe().context("cannot find this program's path for the Slurm jobs")?;
    let config_path = std::path::absolute(&config.path).with_context(|| config.path.display().to_string())?;
    let config_text = std::fs::read_to_string(&config.path).with_context(|| format!("cannot read {}", config.path.display()))?;
    let payload = serde_json::to_value(JobPayload { config_path, config_text, overrides: common.overrides.clone() })?;
    let command = vec![exe.display().to_string(), "pipeline".to_owned(), "job".to_owned()];
    pipeline::SlurmExecutor::new(config.config.slurm.clone(), &common.artifacts, command, payload)
}

/// The config (overrides applied, models checked against local datasets) and its stage graph.
fn load(common: &Common) -> anyhow::Result<(LoadedConfig, Graph)> {
    let config = LoadedConfig::load(&common.config, &common.overrides)?;
    crate::stages::check_shapes(&config)?;
    let graph = Graph::new(crate::stages::plan(&config))?;
    Ok((config, graph))
}

/// Runs the command; the exit status is 0, or 1 for `status --check` with stale stages (errors
/// exit 1 too, with a message on stderr).
fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let args = match cli.command {
        Command::Pipeline(args) => args,
        Command::ReadmeNumbers { common, readme, check } => return readme_numbers(&common, &readme, check),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "latentscope", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Bench(BenchCommand::Train { steps, device, model, batch, json, autograd }) => {
            return bench_train(steps, &device, model, &batch, json, autograd)
        }
    };
    let common = &args.common;
    let mut out = std::io::stdout().lock();
    match args.command {
        PipelineCommand::Run(args) => cmd_run(common, args, &mut out),
        PipelineCommand::Job(args) => cmd_job(common, args, &mut out),
        PipelineCommand::Status(args) => cmd_status(common, args, &mut out),
        PipelineCommand::Dag(args) => cmd_dag(common, args, &mut out),
        PipelineCommand::Metrics(args) => cmd_metrics(common, args, &mut out),
        PipelineCommand::Publish(args) => cmd_publish(common, args, &mut out),
        PipelineCommand::Pull(args) => cmd_pull(common, args, &mut out),
        PipelineCommand::Runs(args) => cmd_runs(common, args, &mut out),
        PipelineCommand::Report(args) => cmd_report(common, args, &mut out),
        PipelineCommand::Gc(args) => cmd_gc(common, args, &mut out),
    }
}

/// `readme-numbers`: the README block of generated numbers from the current, complete run
/// (`--check`: exit 1 when the README differs).
fn readme_numbers(common: &Common, readme: &std::path::Path, check: bool) -> anyhow::Result<ExitCode> {
    let (_, graph) = load(common)?;
    let block = crate::report::readme_numbers(&graph, &common.artifacts)?;
    let text = std::fs::read_to_string(readme).with_context(|| format!("cannot read {}", readme.display()))?;
    let updated = crate::report::replace_marked(&text, &block).with_context(|| readme.display().to_string())?;
    if check {
        return Ok(if updated == text { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    if updated != text {
        crate::pipeline::store::write_atomic(readme, updated.as_bytes())?;
    }
    println!("{}: the measured numbers are those of the run in {}", readme.display(), common.artifacts.display());
    Ok(ExitCode::SUCCESS)
}

/// `bench train`.
fn bench_train(steps: usize, device: &str, model: Option<String>, batch: &[usize], json: bool, autograd: bool) -> anyhow::Result<ExitCode> {
    let only = model
        .map(|m| crate::bench::notebook_model(&m).ok_or_else(|| anyhow::anyhow!("--model {m}: expected simple or conv")))
        .transpose()?;
    anyhow::ensure!(!batch.is_empty() && batch.iter().all(|b| *b > 0), "--batch needs positive sizes");
    let choice: crate::config::DeviceChoice = serde_json::from_value(serde_json::Value::String(device.to_owned()))
        .map_err(|_| anyhow::anyhow!("--device {device}: expected auto, cpu, cuda or metal"))?;
    let report = crate::bench::train(steps.max(1), &crate::models::device::select(choice)?, only, batch, autograd)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline run`.
fn cmd_run(
    common: &Common,
    RunArgs { ids, force, dry_run, jobs, verify, no_wait, keep_going, json, executor }: RunArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<ExitCode> {
    let (config, graph) = load(common)?;
    let mut opts = RunOptions { targets: ids, force, dry_run, verify, wait: !no_wait, keep_going, ..RunOptions::default() };
    if let Some(j) = jobs {
        anyhow::ensure!(j >= 1, "--jobs must be at least 1");
        opts.jobs = j;
    }
    let summary = match executor {
        ExecutorArg::Local => pipeline::run(&graph, &common.artifacts, &opts)?,
        ExecutorArg::Slurm => {
            anyhow::ensure!(jobs.is_none(), "--jobs applies to --executor local; Slurm decides how many jobs run at once");
            let mut slurm = slurm_executor(&config, common)?;
            pipeline::run_on(&graph, &common.artifacts, &opts, &mut slurm)?
        }
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        if dry_run {
            for id in &summary.ran {
                writeln!(out, "would run: {id} ({})", summary.reasons.get(id).map_or("", String::as_str))?;
                if let Some(command) = summary.commands.get(id) {
                    writeln!(out, "  {command}")?;
                }
            }
        }
        writeln!(out, "{summary}")?;
        if !dry_run && summary.ran.iter().any(|id| id == crate::stages::PLOT) {
            let report = common.artifacts.join(crate::stages::PLOT).join(crate::artifacts::plot::REPORT);
            writeln!(out, "report: {}; metrics: `pipeline metrics`", report.display())?;
        }
    }
    // A run that leaves the whole pipeline fresh makes the report page describe it
    // (also when it only restored entries from the run-cache); failing to write it
    // fails the run.
    // A run that wrote nothing (on a read-only folder, say) only warns.
    if !dry_run {
        match crate::html::refresh(&config, &graph, &common.artifacts) {
            Ok(crate::html::Refresh::Written(page)) if !json => writeln!(out, "web page: {}", page.display())?,
            Ok(crate::html::Refresh::Incomplete { stale }) => {
                tracing::info!("report page not refreshed: {stale} stages are not up to date")
            }
            Ok(_) => {}
            Err(e) if summary.ran.is_empty() && summary.cached.len() == graph.stages().len() => {
                tracing::warn!("the report page does not describe this run and could not be rewritten: {e:#}")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline job`.
fn cmd_job(_common: &Common, JobArgs { dir }: JobArgs, _out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    use crate::pipeline::executor::slurm;
    if slurm::is_probe(&dir) {
        slurm::run_probe(&dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    let job = slurm::read_job(&dir)?;
    let payload: JobPayload =
        serde_json::from_value(job.payload.clone()).with_context(|| format!("{}: not a latentscope job", dir.display()))?;
    let config = LoadedConfig::from_yaml(&payload.config_text, &payload.config_path, &payload.overrides)?;
    let spec = crate::stages::plan(&config)
        .into_iter()
        .find(|s| s.id == job.stage)
        .with_context(|| format!("the config has no stage {} (was it edited after submission?)", job.stage))?;
    slurm::run_job(&dir, &job, &spec)?;
    Ok(ExitCode::SUCCESS)
}

/// `pipeline status`.
fn cmd_status(common: &Common, StatusArgs { json, check, verify }: StatusArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    let (_, graph) = load(common)?;
    let rows = pipeline::status(&graph, &common.artifacts, verify)?;
    let stale = rows.iter().filter(|r| !r.fresh).count();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        let width = rows.iter().map(|r| r.stage.len()).max().unwrap_or(0);
        for r in &rows {
            let state = if r.fresh { "fresh" } else { "stale" };
            writeln!(out, "{:width$}  {state}  {}", r.stage, r.reason)?;
        }
    }
    if check && stale > 0 {
        out.flush()?;
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline dag`.
fn cmd_dag(common: &Common, DagArgs { format }: DagArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    let (_, graph) = load(common)?;
    write!(out, "{}", graph.render(format.into()))?;
    Ok(ExitCode::SUCCESS)
}

/// `pipeline metrics`.
fn cmd_metrics(common: &Common, MetricsArgs { json, diff }: MetricsArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    // Never another run's numbers: the current run must be complete and fresh.
    let (_, graph) = load(common)?;
    let current = crate::report::current_metrics(&graph, &common.artifacts)?;
    match diff {
        None if json => writeln!(out, "{}", serde_json::to_string_pretty(&current)?)?,
        None => {
            let typed: crate::artifacts::score::Metrics = serde_json::from_value(current.clone())
                .context("the score stage's metrics.json is from an older latentscope: run the pipeline again")?;
            write!(out, "{}", crate::render::metrics_table(&typed))?
        }
        Some(source) => {
            let old = crate::report::metrics_of_source(&common.artifacts, &source)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&crate::report::diff_json(&old, &current))?)?;
            } else {
                write!(out, "{}", crate::report::diff_table(&old, &current))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline publish`.
fn cmd_publish(
    common: &Common,
    PublishArgs { hub: HubArgs { repo, revision, endpoint, no_wait, json }, private, message, dry_run, card_out }: PublishArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<ExitCode> {
    let (config, graph) = load(common)?;
    let opts = crate::hub::PublishOptions {
        repo,
        private,
        revision,
        message,
        dry_run,
        endpoint,
        artifacts: common.artifacts.clone(),
        run_command: run_command(common),
        wait: !no_wait,
        card_out,
    };
    let outcome = crate::hub::publish(&config, &graph, &opts).with_context(|| format!("publish to {}", opts.repo))?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&outcome)?)?;
    } else {
        writeln!(out, "{outcome}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline pull`.
fn cmd_pull(
    common: &Common,
    PullArgs { hub: HubArgs { repo, revision, endpoint, no_wait, json } }: PullArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<ExitCode> {
    let opts = crate::hub::PullOptions { repo, revision, endpoint, artifacts: common.artifacts.clone(), wait: !no_wait };
    // Without a local config there is nothing to compare with; pulling still works.
    let loaded = if common.config.exists() { Some(load(common)?) } else { None };
    let local = loaded
        .as_ref()
        .map(|(config, graph)| crate::hub::pull::LocalPlan { graph, published: crate::hub::layout::published_stages(config) });
    let report = crate::hub::pull(&opts, local.as_ref()).with_context(|| format!("pull from {}", opts.repo))?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline runs`.
fn cmd_runs(common: &Common, RunsArgs { json }: RunsArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    let (_, graph) = load(common)?;
    let runs = crate::runs::list(&graph, &common.artifacts)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&runs)?)?;
    } else {
        write!(out, "{}", crate::runs::table(&runs))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `pipeline report`.
fn cmd_report(common: &Common, ReportArgs { out: file }: ReportArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    let (config, graph) = load(common)?;
    let file = file.unwrap_or_else(|| common.artifacts.join(crate::html::FILE));
    let page = crate::html::write(&config, &graph, &common.artifacts, &file)?;
    writeln!(out, "wrote {}", page.display())?;
    Ok(ExitCode::SUCCESS)
}

/// `pipeline gc`.
fn cmd_gc(common: &Common, GcArgs { no_wait, dry_run, json }: GcArgs, out: &mut dyn std::io::Write) -> anyhow::Result<ExitCode> {
    let mut report = pipeline::gc(&common.artifacts, !no_wait, dry_run).with_context(|| format!("gc of {}", common.artifacts.display()))?;
    if !dry_run {
        // What a killed or failed write of the report page left beside it.
        report.bytes_freed += crate::html::remove_dead_leftovers(&common.artifacts);
    }
    let size = crate::hub::publish::human_bytes(report.bytes_freed);
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else if dry_run {
        writeln!(out, "would remove {} store entries, freeing {size}", report.entries_removed)?;
    } else {
        writeln!(out, "removed {} store entries, freed {size}", report.entries_removed)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `run` command line that reproduces the current configuration (for the model card).
fn run_command(common: &Common) -> String {
    let quote = |s: &str| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/=,:@+".contains(c)) {
            s.to_owned()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let mut cmd = String::from("cargo xtask pipeline run");
    if common.config != std::path::Path::new("pipeline.yaml") {
        // Never a local absolute path in anything published: relative to the project folder
        // (where the command ran), else the file's name.
        let config = &common.config;
        let shown = match std::env::current_dir() {
            Ok(cwd) if config.is_absolute() => config.strip_prefix(&cwd).map(std::path::Path::to_path_buf).ok(),
            _ if config.is_absolute() => None,
            _ => Some(config.clone()),
        }
        .unwrap_or_else(|| config.file_name().map(std::path::PathBuf::from).unwrap_or_default());
        cmd.push_str(&format!(" --config {}", quote(&shown.display().to_string())));
    }
    for o in &common.overrides {
        cmd.push_str(&format!(" --set {}", quote(o)));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "latentscope", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn completions_know_the_commands() {
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut super::Cli::command(), "latentscope", &mut script);
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("complete -F") && script.contains("runs") && script.contains("--keep-going"), "{script}");
    }
}
