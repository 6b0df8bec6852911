//! `report.html`: the run's report as one self-contained web page (figures inline as PNG data
//! URIs, no script, no external resource), readable offline and fit to attach to an email.
//!
//! Its body is `plot`'s `report.md` (the same text, tables and figures) turned into HTML; after
//! it comes the run's provenance, read from the lock file and the store: the effective config,
//! the latentscope version and git commit, each stage's device, wall time and fingerprint, and
//! each dataset's source revision and checksums. Wall times change from run to run, so the page
//! is not a stage output (those are deterministic bytes): `run` writes it next to the lock file
//! after a run that computed something, and `pipeline report` writes it on demand.

use std::fmt::Write as _;

use anyhow::Context as _;
use std::path::{Path, PathBuf};

use crate::artifacts::download::{DatasetSummary, Source};
use crate::config::LoadedConfig;
use crate::pipeline::finished::FinishedRun;
use crate::pipeline::{Graph, LockFile};

/// The file `run` writes into the artefacts folder.
pub const FILE: &str = "report.html";

/// What the page says about where the run came from.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The key of the run the page describes (see [`run_key`]), in a `<meta>` element so that
    /// `run` can tell whether the page still describes the current run.
    pub run_key: String,
    pub config_yaml: String,
    pub version: String,
    pub source_revision: Option<String>,
    /// (stage, kind v<version>, device, wall time s, fingerprint), in plan order.
    pub stages: Vec<(String, String, String, f64, String)>,
    pub datasets: Vec<DatasetSummary>,
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Inline Markdown of our reports: `code`, **bold**, and images (`![alt](file)`, resolved by
/// `image` to a data URI).
fn inline(text: &str, image: &dyn Fn(&str) -> anyhow::Result<String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = text;
    'outer: while let Some(first) = rest.chars().next() {
        if let Some((alt, tail)) = rest.strip_prefix("![").and_then(|a| a.split_once("](")) {
            if let Some((file, tail)) = tail.split_once(')') {
                let _ = write!(out, "<img src=\"{}\" alt=\"{}\">", image(file)?, escape(alt));
                rest = tail;
                continue;
            }
        }
        for (mark, tag) in [("`", "code"), ("**", "strong")] {
            if let Some((inner, tail)) = rest.strip_prefix(mark).and_then(|a| a.split_once(mark)) {
                let _ = write!(out, "<{tag}>{}</{tag}>", escape(inner));
                rest = tail;
                continue 'outer;
            }
        }
        // Plain text up to the next place a marker could start (at least one character).
        let skip = first.len_utf8();
        let next = rest[skip..].find(['`', '*', '!']).map_or(rest.len(), |i| i + skip);
        out.push_str(&escape(&rest[..next]));
        rest = &rest[next..];
    }
    Ok(out)
}

/// The Markdown our reports use (headings, paragraphs, `- ` lists, pipe tables, images) as HTML.
pub fn markdown_to_html(md: &str, image: &dyn Fn(&str) -> anyhow::Result<String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.is_empty() {
            i += 1;
        } else if let Some((level, text)) = heading(line) {
            let _ = writeln!(out, "<h{level}>{}</h{level}>", inline(text, image)?);
            i += 1;
        } else if line.starts_with('|') {
            out.push_str("<table>\n");
            let mut row = 0;
            while i < lines.len() && lines[i].starts_with('|') {
                let cells: Vec<&str> = lines[i].trim().trim_matches('|').split(" | ").map(str::trim).collect();
                let separator = cells.iter().all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'));
                if !separator {
                    let tag = if row == 0 { "th" } else { "td" };
                    out.push_str("<tr>");
                    for c in cells {
                        let _ = write!(out, "<{tag}>{}</{tag}>", inline(c, image)?);
                    }
                    out.push_str("</tr>\n");
                    row += 1;
                }
                i += 1;
            }
            out.push_str("</table>\n");
        } else if line.starts_with("- ") {
            out.push_str("<ul>\n");
            while i < lines.len() && lines[i].starts_with("- ") {
                let _ = writeln!(out, "<li>{}</li>", inline(&lines[i][2..], image)?);
                i += 1;
            }
            out.push_str("</ul>\n");
        } else {
            let mut para = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() && heading(lines[i]).is_none() && !lines[i].starts_with(['|', '-']) {
                para.push(lines[i].trim());
                i += 1;
            }
            if para.is_empty() {
                // A line starting with '-' that is not a list item.
                para.push(line);
                i += 1;
            }
            let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" "), image)?);
        }
    }
    Ok(out)
}

fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    (1..=6).contains(&level).then(|| line[level..].strip_prefix(' ')).flatten().map(|t| (level, t))
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}img{max-width:100%;height:auto;border:1px solid #eee}code,pre{background:#f6f6f6;font-size:0.9em}\
pre{padding:0.8em;overflow-x:auto}h1{border-bottom:2px solid #ddd}details{margin:1em 0}";

/// The whole page: the report's Markdown (each figure's bytes from `figure`, by file name)
/// and the provenance.
pub fn page(title: &str, report_md: &str, figure: &dyn Fn(&str) -> anyhow::Result<Vec<u8>>, prov: &Provenance) -> anyhow::Result<String> {
    let image = |file: &str| -> anyhow::Result<String> {
        anyhow::ensure!(!file.contains('/') && !file.starts_with('.'), "report.md names a figure outside its folder: {file}");
        let bytes = figure(file).map_err(|e| anyhow::anyhow!("cannot read figure {file}: {e:#}"))?;
        Ok(format!("data:image/png;base64,{}", base64(&bytes)))
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n{}\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        run_meta(&prov.run_key),
        escape(title)
    );
    out.push_str(&markdown_to_html(report_md, &image)?);
    out.push_str("<h2>Provenance</h2>\n<table>\n");
    let _ = writeln!(out, "<tr><th>latentscope</th><td>{}</td></tr>", escape(&prov.version));
    let rev = prov.source_revision.as_deref().unwrap_or("unknown (not run from a git checkout)");
    let _ = writeln!(out, "<tr><th>source revision</th><td><code>{}</code></td></tr>", escape(rev));
    let mut devices: Vec<&str> = prov.stages.iter().map(|s| s.2.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let _ = writeln!(out, "<tr><th>devices</th><td>{}</td></tr>", escape(&devices.join(", ")));
    let total: f64 = prov.stages.iter().map(|s| s.3).sum();
    let _ = writeln!(out, "<tr><th>compute time</th><td>{total:.1} s over {} stages</td></tr>\n</table>", prov.stages.len());
    out.push_str("<h3>Datasets</h3>\n<table>\n<tr><th>dataset</th><th>source</th><th>images</th><th>classes</th><th>train</th><th>test</th><th>files (sha256)</th></tr>\n");
    for d in &prov.datasets {
        let (source, files) = match &d.source {
            Source::Hub { repo, revision, files } => (
                format!("Hub {repo} at <code>{}</code>", escape(revision)),
                files.iter().map(|f| format!("{} <code>{}</code>", escape(&f.file), f.sha256)).collect::<Vec<_>>(),
            ),
            Source::Local { path, checksums } => (
                format!("local IDX files in <code>{}</code>", escape(path)),
                checksums.iter().map(|c| format!("{} <code>{}</code>", escape(&c.file), c.sha256)).collect(),
            ),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{source}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.dataset),
            d.shape,
            d.classes,
            d.train.count,
            d.test.count,
            files.join("<br>")
        );
    }
    out.push_str("</table>\n<h3>Stages</h3>\n<details><summary>Every stage: kind and code version, device, wall time and fingerprint</summary>\n<table>\n<tr><th>stage</th><th>kind</th><th>device</th><th>wall time</th><th>fingerprint</th></tr>\n");
    for (id, kind, device, wall, fp) in &prov.stages {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{wall:.2} s</td><td><code>{}</code></td></tr>",
            escape(id),
            escape(kind),
            escape(device),
            escape(&fp[..fp.len().min(16)])
        );
    }
    out.push_str("</table>\n</details>\n<h3>Effective configuration</h3>\n");
    let _ = writeln!(out, "<pre>{}</pre>\n</body>\n</html>", escape(&prov.config_yaml));
    Ok(out)
}

/// Writes the report page of the current run to `out` (atomically). Fails, naming them, if
/// stages are stale: the page describes one complete run.
pub fn write(config: &LoadedConfig, graph: &Graph, artifacts: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let run = FinishedRun::current(graph, artifacts)?;
    let lock = run.lock();
    let report_md = String::from_utf8(run.read(crate::stages::PLOT, crate::artifacts::plot::REPORT)?)
        .map_err(|_| anyhow::anyhow!("plot/{} is not UTF-8", crate::artifacts::plot::REPORT))?;
    let mut datasets = Vec::new();
    for name in config.config.datasets.keys() {
        datasets.push(crate::artifacts::read_output::<DatasetSummary>(
            &run,
            &crate::stages::StageId::Download(name.as_str().into()).to_string(),
            crate::artifacts::download::SUMMARY,
        )?);
    }
    let stages = graph
        .ordered()
        .filter_map(|spec| {
            let r = lock.stages.get(&spec.id)?;
            Some((
                spec.id.clone(),
                format!("{} v{}", r.kind, r.version),
                r.device.clone().unwrap_or_default(),
                r.wall_time_s,
                r.fingerprint.clone(),
            ))
        })
        .collect();
    let prov = Provenance {
        run_key: run_key(config, graph, lock)?,
        config_yaml: config_yaml(config)?,
        version: crate::VERSION.to_owned(),
        source_revision: source_revision(&config.base_dir()),
        stages,
        datasets,
    };
    let names: Vec<&str> = config.config.datasets.keys().map(String::as_str).collect();
    let figure = |file: &str| -> anyhow::Result<Vec<u8>> { Ok(run.read(crate::stages::PLOT, file)?) };
    let html = page(&format!("latentscope report: {}", names.join(", ")), &report_md, &figure, &prov)?;
    crate::pipeline::store::write_atomic(out, html.as_bytes())
        .with_context(|| format!("cannot write the report page {}", out.display()))?;
    Ok(out.to_owned())
}
/// The `<meta>` element that carries a page's run key.
fn run_meta(key: &str) -> String {
    format!("<meta name=\"latentscope-run\" content=\"{}\">", escape(key))
}

/// The key of the run the lock file describes for this config: a hash of the tool's version,
/// the effective config and every stage's fingerprint in plan order. Wall times are left out,
/// so a run that restores the same entries has the same key; any change of settings, code or
/// data gives another.
pub fn run_key(config: &LoadedConfig, graph: &Graph, lock: &LockFile) -> anyhow::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(crate::VERSION.as_bytes());
    h.update(config_yaml(config)?.as_bytes());
    for spec in graph.ordered() {
        let fp = lock.stages.get(&spec.id).map_or("", |r| r.fingerprint.as_str());
        h.update(format!("\n{} {fp}", spec.id).as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

fn config_yaml(config: &LoadedConfig) -> anyhow::Result<String> {
    serde_saphyr::to_string(&config.experiment_tree()).map_err(|e| anyhow::anyhow!("cannot write the config as YAML: {e}"))
}

/// What [`refresh`] did.
#[derive(Debug)]
pub enum Refresh {
    /// The page was missing or described another run; it now describes this one.
    Written(PathBuf),
    /// The page already describes the current run.
    UpToDate(PathBuf),
    /// Stages are not up to date (a run of some targets): no page describes an incomplete run.
    Incomplete { stale: usize },
}

/// After a run: makes `artifacts/report.html` describe the current run if the run is complete,
/// whatever this run computed (a run that only restored entries from the run-cache changes
/// the run as much as one that computed them). Removes what a killed or failed write left.
/// An error writing the page is an error of the run.
pub fn refresh(config: &LoadedConfig, graph: &Graph, artifacts: &Path) -> anyhow::Result<Refresh> {
    let page = artifacts.join(FILE);
    remove_dead_leftovers(artifacts);
    let lock = LockFile::load(artifacts)?;
    let stale = crate::pipeline::runner::status_of(graph, artifacts, &lock, false)?.iter().filter(|r| !r.fresh).count();
    if stale > 0 {
        return Ok(Refresh::Incomplete { stale });
    }
    let key = run_key(config, graph, &lock)?;
    if page_key(&page).as_deref() == Some(key.as_str()) {
        return Ok(Refresh::UpToDate(page));
    }
    write(config, graph, artifacts, &page).map(Refresh::Written)
}

/// Removes the temporary files (`.report.html.tmp.<pid>`) that killed or failed writes of
/// the page left in `artifacts`, and returns the bytes freed. Only those of processes that no
/// longer run on this machine: another `run` or `report` may be writing its page right now
/// (the page is written without the run lock).
pub fn remove_dead_leftovers(artifacts: &Path) -> u64 {
    crate::pipeline::remove::remove_orphans(artifacts, &format!(".{FILE}.tmp."), std::time::Duration::ZERO)
}

/// The run key in the head of the page at `path`, if it has one.
fn page_key(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut head = vec![0u8; 1024];
    let mut file = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let head = String::from_utf8_lossy(&head[..n]);
    let start = head.find("<meta name=\"latentscope-run\" content=\"")? + "<meta name=\"latentscope-run\" content=\"".len();
    let len = head[start..].find('"')?;
    Some(head[start..start + len].to_owned())
}

/// The git commit of the source tree holding `dir`, with `-dirty` when it has changes.
pub fn source_revision(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output().ok().filter(|o| o.status.success());
    let head = String::from_utf8(git(&["rev-parse", "HEAD"])?.stdout).ok()?.trim().to_owned();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn our_markdown_becomes_html() {
        let md = "# Title\n\nSome `code` and **bold** <text> & more,\nover two lines.\n\n| a | b |\n| --- | --- |\n| 1 ± 2 | `x` |\n\n- one\n- two\n\n### Fig\n\n![Fig](f.png)\n";
        let html = markdown_to_html(md, &|f| Ok(format!("data:{f}"))).unwrap();
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(
            html.contains("<p>Some <code>code</code> and <strong>bold</strong> &lt;text&gt; &amp; more, over two lines.</p>"),
            "{html}"
        );
        assert!(html.contains("<tr><th>a</th><th>b</th></tr>\n<tr><td>1 ± 2</td><td><code>x</code></td></tr>"), "{html}");
        assert!(html.contains("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"), "{html}");
        assert!(html.contains("<img src=\"data:f.png\" alt=\"Fig\">"), "{html}");
        // A lone marker is text.
        let html = markdown_to_html("a * b ! c ` d", &|f| Ok(f.to_owned())).unwrap();
        assert_eq!(html, "<p>a * b ! c ` d</p>\n");
    }
}
