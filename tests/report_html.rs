//! The report as a web page, checked in a real browser: headless Chromium (Debian's package;
//! `.ci/run` installs it and sets LATENTSCOPE_BROWSER_TEST=require, so that CI fails rather than
//! skips when it is missing). The page must be self-contained, every image must decode, the
//! metrics table must show the run's numbers, and a screenshot is saved.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Project, TempDir};

const SMALL: [&str; 6] = ["--set", "models.simple.epochs=1", "--set", "models.conv.epochs=1", "--set", "kmeans.seeds=[0,1]"];

fn chromium() -> Option<PathBuf> {
    let candidates = [std::env::var("CHROMIUM").ok(), Some("/usr/bin/chromium".into()), Some("/usr/bin/chromium-browser".into())];
    candidates.into_iter().flatten().map(PathBuf::from).find(|p| p.is_file())
}

/// Headless Chromium with the flags a closed network needs, and its own profile folder.
fn browser(exe: &Path, profile: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

#[test]
fn the_report_page_is_self_contained_and_renders_in_a_browser() {
    let p = Project::new("html");
    let mut args = vec!["pipeline", "run"];
    args.extend(SMALL);
    let out = p.ok(&args);
    let page = p.artifacts().join("report.html");
    assert!(out.contains(&format!("web page: {}", page.display())) || out.contains("web page: artifacts/report.html"), "{out}");
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: every image inline, nothing fetched.
    let figures = std::fs::read_to_string(p.artifacts().join("plot/report.md")).unwrap().matches("![").count();
    assert_eq!(html.matches("<img src=\"data:image/png;base64,").count(), figures);
    assert!(!html.contains("src=\"http") && !html.contains("<script") && !html.contains("<link"), "external resources");
    // Provenance: version, the data's checksums, each stage's fingerprint, the config.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.artifacts().join("download-mnist/dataset.json")).unwrap()).unwrap();
    let sha = summary["source"]["checksums"][0]["sha256"].as_str().unwrap();
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("pipeline.lock")).unwrap()).unwrap();
    let fp = &lock["stages"]["train-mnist-conv-s42"]["fingerprint"].as_str().unwrap()[..16];
    for needle in
        ["<h2>Provenance</h2>", latentscope::VERSION, sha, fp, "train-mnist-conv-s42", "epochs: 1", "local IDX files in <code>data</code>"]
    {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
    // `pipeline report` writes the same page on demand; a no-op run does not touch it.
    let again = p.path().join("again.html");
    let mut args = vec!["pipeline", "report", "--out", "again.html"];
    args.extend(SMALL);
    p.ok(&args);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), html);
    let before = std::fs::metadata(&page).unwrap().modified().unwrap();
    let mut args = vec!["pipeline", "run"];
    args.extend(SMALL);
    assert!(!p.ok(&args).contains("web page"));
    assert_eq!(std::fs::metadata(&page).unwrap().modified().unwrap(), before);
    let e = p.fails(&["pipeline", "report", "--set", "kmeans.seeds=[0,1,2]"]);
    assert!(e.contains("the run is not complete") && e.contains("kmeans-mnist-conv-s42-2"), "{e}");

    let Some(exe) = chromium() else {
        assert!(std::env::var("LATENTSCOPE_BROWSER_TEST").as_deref() != Ok("require"), "Chromium is required here but not installed");
        eprintln!("skipped the browser half: no Chromium (install Debian's chromium, as .ci/run does)");
        return;
    };
    let tmp = TempDir::new("html-browser");
    // A wrapper page reads the report's DOM once it has loaded, and writes what it found.
    let probe = format!(
        r#"<!DOCTYPE html><html><body><div id="out">pending</div>
<iframe id="f" src="file://{}" width="1200" height="900"></iframe>
<script>
document.getElementById('f').onload = () => {{
  const d = document.getElementById('f').contentDocument;
  const imgs = [...d.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const cells = [...d.querySelectorAll('td')].map(td => td.textContent);
  document.getElementById('out').textContent = JSON.stringify({{images: imgs.length, bad: bad, cells: cells}});
}};
</script></body></html>"#,
        page.display()
    );
    std::fs::write(tmp.path().join("probe.html"), probe).unwrap();
    let dump = browser(&exe, &tmp.path().join("profile"))
        .args(["--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}", tmp.path().join("probe.html").display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dump.stdout);
    let found = dom
        .split_once("<div id=\"out\">")
        .and_then(|(_, rest)| rest.split_once("</div>"))
        .map(|(json, _)| unescape(json))
        .unwrap_or_else(|| panic!("no result in the dumped DOM:\n{dom}\nstderr: {}", String::from_utf8_lossy(&dump.stderr)));
    let found: serde_json::Value = serde_json::from_str(&found).unwrap_or_else(|e| panic!("{e}: {found}"));
    assert_eq!(found["images"].as_u64(), Some(figures as u64), "{found}");
    assert_eq!(found["bad"], serde_json::json!([]), "images that did not decode");
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(p.artifacts().join("score/metrics.json")).unwrap()).unwrap();
    let cells: Vec<&str> = found["cells"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for m in metrics["models"].as_array().unwrap() {
        let run = &m["runs"][0];
        let mse = format!("{:.5}", run["test_mse"].as_f64().unwrap());
        let purity = format!("{:.4}", run["purity"]["best"].as_f64().unwrap());
        assert!(cells.contains(&mse.as_str()), "the table lacks {} test MSE {mse}: {cells:?}", m["model"]);
        assert!(cells.iter().any(|c| c.starts_with(&purity)), "the table lacks {} purity {purity}: {cells:?}", m["model"]);
    }

    // A screenshot of the page as the browser drew it.
    let shot = tmp.path().join("report.png");
    let status = browser(&exe, &tmp.path().join("profile2"))
        .args(["--window-size=1200,3000", "--virtual-time-budget=5000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    if let Ok(keep) = std::env::var("LATENTSCOPE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
