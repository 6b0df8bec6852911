//! The local executor: each stage runs on a thread of this process, into a scratch folder
//! under `.tmp/` that the runner then moves into the store.

use std::sync::mpsc;
use std::time::Instant;

use super::{hostname, Executor, Launch, Outcome, Produced};
use crate::inputs::ReadInputs;
use crate::remove::remove_within;
use crate::spec::StageContext;
use crate::store::Store;

/// Names a stage; when set, the runner stops (sleeps) after that stage has written its
/// outputs and before they are committed. Used by tests that kill a run mid-stage.
pub const PAUSE_ENV: &str = "LATENTSCOPE_PAUSE_BEFORE_COMMIT";

pub struct LocalExecutor {
    jobs: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
    tx: mpsc::Sender<(String, Outcome)>,
    rx: mpsc::Receiver<(String, Outcome)>,
}

impl LocalExecutor {
    /// Runs at most `jobs` light stages at once (a heavy stage takes all the slots).
    pub fn new(jobs: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        Self { jobs: jobs.max(1), threads: Vec::new(), tx, rx }
    }
}

impl Executor for LocalExecutor {
    fn slots(&self) -> Option<usize> {
        Some(self.jobs)
    }

    fn start(&mut self, launch: Launch, store: &Store) -> anyhow::Result<()> {
        let scratch = store.scratch(&launch.spec.id)?;
        let root = store.root().to_owned();
        let tx = self.tx.clone();
        self.threads.retain(|t| !t.is_finished());
        self.threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let Launch { spec, inputs, previous, recorded, .. } = launch;
            // A panicking stage must still report back, or the runner would wait forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> anyhow::Result<_> {
                // What the stage reads is hashed before it runs and looked at again after, so
                // that its record names the bytes it read (see `inputs`).
                let read = ReadInputs::take(&spec.id, &inputs, &spec.files)?;
                read.check_recorded(&recorded)?;
                let ctx = StageContext::new(&spec.id, &spec.params, inputs, &scratch).with_previous(previous);
                let report = spec.kind.run(&ctx)?;
                read.check_unchanged()?;
                Ok((report, read.hashes()))
            }))
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("{} panicked: {}", spec.id, panic_text(&*panic))));
            let outcome = match result {
                Ok((report, read)) => {
                    if std::env::var(PAUSE_ENV).is_ok_and(|v| v == spec.id) {
                        eprintln!("paused before commit: {}", spec.id);
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                    Ok(Produced {
                        out_dir: scratch,
                        movable: true,
                        report,
                        wall_time_s: started.elapsed().as_secs_f64(),
                        executor: "local",
                        node: hostname(),
                        job: None,
                        read: Some(read),
                    })
                }
                Err(e) => {
                    let _ = remove_within(&root, &scratch);
                    Err(e)
                }
            };
            let _ = tx.send((spec.id.clone(), outcome));
        }));
        Ok(())
    }

    fn wait(&mut self) -> anyhow::Result<(String, Outcome)> {
        Ok(self.rx.recv().expect("the executor holds a sender, so a stage always reports back"))
    }
}

impl Drop for LocalExecutor {
    /// A run that ends early (an error in the runner) still waits for its stages, so nothing
    /// writes into the artefacts folder after `run` returned.
    fn drop(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    }
}
