//! The Hub commands against a Hub that accepts connections and never answers: they give up
//! within the network limits (`LATENTSCOPE_HUB_TIMEOUT_S`, `LATENTSCOPE_HUB_RETRIES`) and say
//! so, and a bad `--repo` or `--revision` is refused before any connection.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{text, Project};

/// A server on 127.0.0.1 that accepts every connection, holds it and never sends a byte.
struct SilentHub {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl SilentHub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        // Lives as long as the test process: the sockets it holds are never answered.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => break,
                }
            }
        });
        Self { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads a pipe to its end on a thread of its own (a full pipe would stall the child).
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` (no token, an empty HF_HOME, the given network limits), killing it if it has not
/// finished after `limit`: a hang fails the test instead of stalling it.
fn run_bounded(p: &Project, mut cmd: Command, timeout_s: &str, retries: &str, limit: Duration) -> Finished {
    cmd.env("LATENTSCOPE_HUB_TIMEOUT_S", timeout_s)
        .env("LATENTSCOPE_HUB_RETRIES", retries)
        .env("HF_HOME", p.path().join("hf-home"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = text(&err.join().unwrap());
            panic!("still running after {limit:?}, killed; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    Finished { success: status.success(), stdout: text(&out.join().unwrap()), stderr: text(&err.join().unwrap()), took }
}

#[test]
fn pull_from_a_hub_that_never_answers_fails_in_time_naming_the_endpoint_and_the_settings() {
    let p = Project::new("hub-timeout");
    let hub = SilentHub::start();
    let cmd = p.cmd(&["pipeline", "pull", "--repo", "me/run", "--endpoint", &hub.url]);
    let done = run_bounded(&p, cmd, "1", "1", Duration::from_secs(60));
    assert!(!done.success, "pull succeeded against a silent Hub:\n{}", done.stdout);
    assert!(done.took < Duration::from_secs(20), "pull gave up only after {:?}:\n{}", done.took, done.stderr);
    let err = done.stderr;
    assert!(err.contains(&format!("the Hub at {} did not answer within 1 s", hub.url)), "{err}");
    assert!(err.contains("LATENTSCOPE_HUB_TIMEOUT_S") && err.contains("LATENTSCOPE_HUB_RETRIES"), "{err}");
    assert!(err.contains("2 tries"), "one retry after the first try: {err}");
    assert!(hub.connections() >= 1, "the pull never reached the silent Hub");

    // It waited on the network without taking the run lock, and left nothing behind.
    let run_lock = p.artifacts().join(".run.lock");
    assert!(!run_lock.exists(), "the run lock was taken before the download");
    let staged = std::fs::read_dir(p.artifacts())
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".pull.")).count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "a staging folder was left behind");
}

#[test]
fn the_network_settings_are_checked() {
    let p = Project::new("hub-bad-settings");
    let hub = SilentHub::start();
    for (timeout_s, retries, var) in
        [("0", "1", "LATENTSCOPE_HUB_TIMEOUT_S"), ("soon", "1", "LATENTSCOPE_HUB_TIMEOUT_S"), ("1", "-1", "LATENTSCOPE_HUB_RETRIES")]
    {
        let cmd = p.cmd(&["pipeline", "pull", "--repo", "me/run", "--endpoint", &hub.url]);
        let done = run_bounded(&p, cmd, timeout_s, retries, Duration::from_secs(60));
        assert!(!done.success && done.stderr.contains(var), "{timeout_s} {retries}: {}", done.stderr);
    }
    assert_eq!(hub.connections(), 0, "a request went out with a bad setting");
}

#[test]
fn a_bad_repo_or_revision_is_refused_before_any_request() {
    let p = Project::new("hub-bad-repo");
    let hub = SilentHub::start();
    for bad in ["../x", "me/..", "a/b?x=1", "a/b#c", "a/%2e%2e"] {
        for command in ["pull", "publish"] {
            let cmd = p.cmd(&["pipeline", command, "--repo", bad, "--endpoint", &hub.url]);
            let done = run_bounded(&p, cmd, "1", "0", Duration::from_secs(60));
            assert!(!done.success, "{command} --repo {bad} succeeded");
            let err = done.stderr;
            assert!(err.contains("--repo") && err.contains("expected OWNER/NAME"), "{command} --repo {bad}: {err}");
        }
    }
    for bad in ["..", "main?x=1", "a b", "/main", "%2e%2e"] {
        let cmd = p.cmd(&["pipeline", "pull", "--repo", "me/run", "--revision", bad, "--endpoint", &hub.url]);
        let done = run_bounded(&p, cmd, "1", "0", Duration::from_secs(60));
        assert!(!done.success, "--revision {bad} succeeded");
        assert!(
            done.stderr.contains("--revision") && done.stderr.contains("expected a branch, tag or commit id"),
            "{bad}: {}",
            done.stderr
        );
    }
    // Give a request that did go out time to arrive before counting.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hub.connections(), 0, "a request went out for a bad --repo or --revision");
}
