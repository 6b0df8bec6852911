//! Helpers shared by the integration tests: temporary projects, the real binary, fake data
//! and a local stand-in for the Hugging Face Hub.
#![allow(dead_code)]

pub mod hubmock;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use latentscope::data::{idx, Dataset, Shape, Split, PIXELS};

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("latentscope-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's `pipeline.yaml`, without the methods beyond k-means (see [`kmeans_only`]).
pub fn shipped_config() -> String {
    kmeans_only(&full_shipped_config())
}

/// The repository's `pipeline.yaml` as it is.
pub fn full_shipped_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.yaml")).unwrap()
}

/// The shipped config without the clustering methods and embeddings beyond k-means (the
/// `cluster`, `embed`, `views` and `select_k` blocks): the tests that train and cluster the
/// full test set keep to k-means; `tests/methods.rs` runs the rest on a small dataset.
pub fn kmeans_only(config: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in config.lines() {
        let top = !line.starts_with(' ') && !line.is_empty();
        if top {
            skipping = ["cluster:", "embed:", "views:", "select_k:"].iter().any(|k| line.starts_with(k));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The repository's MNIST copy.
pub fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// A deterministic fake dataset: `n_train` and `n_test` images with varied pixels.
pub fn fake_dataset(n_train: usize, n_test: usize) -> Dataset {
    let split = |n: usize, salt: usize| Split {
        shape: Shape::MNIST,
        images: (0..n * PIXELS).map(|i| ((i * 7 + salt * 13 + i / PIXELS * 31) % 256) as u8).collect(),
        labels: (0..n).map(|i| ((i + salt) % 10) as u8).collect(),
    };
    Dataset { train: split(n_train, 1), test: split(n_test, 2) }
}

/// A project folder with `pipeline.yaml` (the shipped one, `dataset.local` -> `data`) and a
/// fake IDX dataset under `data/`.
pub struct Project {
    pub dir: TempDir,
}

impl Project {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        idx::write_dir(&dir.path().join("data"), &fake_dataset(40, 20)).unwrap();
        let config = shipped_config().replace("local: data/mnist", "local: data");
        std::fs::write(dir.path().join("pipeline.yaml"), config).unwrap();
        Self { dir }
    }

    /// A project on the real MNIST copy with quick training settings: the first `limit`
    /// training images, one epoch, CPU.
    pub fn mnist(tag: &str, limit: usize) -> Self {
        let p = Self::new(tag);
        let cfg = p.path().join("pipeline.yaml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("local: data", &format!("local: {}", mnist_dir().display()))
            .replace("limit: null", &format!("limit: {limit}"))
            .replace("epochs: 20", "epochs: 1")
            .replace("device: auto", "device: cpu");
        std::fs::write(cfg, text).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn artifacts(&self) -> PathBuf {
        self.path().join("artifacts")
    }

    /// A command for the real binary, run in the project folder.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_latentscope"));
        c.current_dir(self.path()).args(args).env("RUST_LOG", "info").env("NO_PROXY", "127.0.0.1,localhost");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed:\nstdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// `pipeline status --json [extra...]` as stage -> (fresh, reason).
    pub fn status(&self, extra: &[&str]) -> std::collections::BTreeMap<String, (bool, String)> {
        let mut args = vec!["pipeline", "status", "--json"];
        args.extend_from_slice(extra);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&self.ok(&args)).unwrap();
        rows.into_iter()
            .map(|r| (r["stage"].as_str().unwrap().to_owned(), (r["fresh"].as_bool().unwrap(), r["reason"].as_str().unwrap().to_owned())))
            .collect()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail:\nstdout: {}", text(&out.stdout));
        text(&out.stderr)
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn blake3_file(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}
