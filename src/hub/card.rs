//! The model card (`README.md`) of a published run: YAML front matter the Hub reads
//! (`library_name`, `tags`, `datasets`, `model-index` with the test MSE and clustering
//! metrics), then what the experiment is, the metrics beside the notebook's, the figures and how
//! to reproduce the run. Built only from the run's artefacts, so the same run gives the same
//! card.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::artifacts::download::{DatasetSummary, Source};
use crate::artifacts::score::Metrics;
use crate::render::{self, thousands};

/// Everything the card says that is not in the metrics.
pub struct CardInput<'a> {
    pub repo: &'a str,
    /// `score/metrics.json`.
    pub metrics: &'a Metrics,
    /// The effective configuration.
    pub config: &'a crate::config::Config,
    /// The command that reproduces the run (`cargo xtask pipeline run ...`).
    pub run_command: &'a str,
    /// The revision this run is published at (branch).
    pub revision: &'a str,
    /// The latentscope source revision (git commit), when known.
    pub source_revision: Option<&'a str>,
    /// Figures (file name, caption), relative to `report/`.
    pub figures: &'a [(String, String)],
    /// Each dataset's `download` summary (`dataset.json`), in config order.
    pub datasets: &'a [DatasetSummary],
}

/// The Hub repository of a dataset, when it has one.
fn hub_repo(input: &CardInput, dataset: &str) -> Option<String> {
    input.config.datasets.get(dataset).and_then(|d| d.hub.as_ref()).map(|h| h.repo.clone())
}

/// `1e-8` rather than `0.00000001`.
fn number(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

fn metric(kind: &str, name: String, value: Option<f64>) -> Option<Value> {
    value.map(|v| json!({"type": kind, "name": name, "value": (v * 1e6).round() / 1e6}))
}

/// The `model-index` entries: one result per model, nothing chosen with the test labels: the
/// k-means clustering of lowest inertia (with several training seeds, the mean over them) and
/// the mean over every training and k-means seed.
fn model_index(input: &CardInput) -> Value {
    let seeds = input.metrics.kmeans_seeds.len();
    let trainings = input.metrics.training_seeds.len();
    let over = if trainings > 1 { format!("{seeds} k-means seeds x {trainings} training seeds") } else { format!("{seeds} k-means seeds") };
    let results: Vec<Value> = input
        .metrics
        .models
        .iter()
        .map(|m| {
            let mut metrics = vec![metric("mse", "Test MSE".into(), m.test_mse())];
            use crate::artifacts::score::Metric;
            for (key, kind, label) in [
                (Metric::Purity, "purity", "Purity"),
                (Metric::Nmi, "nmi", "NMI"),
                (Metric::Ari, "ari", "ARI"),
                (Metric::Acc, "accuracy", "Clustering accuracy (Hungarian)"),
            ] {
                metrics.push(metric(kind, format!("{label}, k-means of lowest inertia (chosen without labels)"), m.label_free(key)));
                metrics.push(metric(kind, format!("{label}, mean of {over}"), Some(m.mean(key))));
            }
            let arch = m.arch.as_ref().map_or("?", |a| a.family());
            let repo = hub_repo(input, &m.dataset).unwrap_or_else(|| m.dataset.clone());
            // The pinned commit the data came from (or is published at, for a local copy).
            let revision = input.config.datasets.get(&m.dataset).and_then(|d| d.hub.as_ref()).map(|h| h.revision.clone());
            let mut dataset = json!({"type": repo, "name": m.dataset, "config": m.dataset, "split": "test"});
            if let Some(rev) = revision {
                dataset["revision"] = rev.into();
            }
            json!({
                "task": {"type": "image-feature-extraction", "name": format!("Latent-space clustering ({}: {arch}, k-means k={})", m.model, input.metrics.k)},
                "dataset": dataset,
                "metrics": metrics.into_iter().flatten().collect::<Vec<_>>(),
            })
        })
        .collect();
    json!([{"name": input.repo, "results": results}])
}

/// The card's text.
pub fn render(input: &CardInput) -> String {
    let c = input.config;
    let mut repos: Vec<String> = c.datasets.keys().filter_map(|d| hub_repo(input, d)).collect();
    repos.dedup();
    let mut tags: Vec<String> =
        ["autoencoder", "k-means", "clustering", "unsupervised", "candle", "latentscope"].map(String::from).to_vec();
    tags.extend(c.datasets.keys().cloned());
    let front = json!({
        "library_name": "latentscope",
        // The weights come from latentscope's code (MIT OR Apache-2.0, either at the user's
        // choice); the Hub takes one id, and the Licences section says the rest.
        "license": "mit",
        "tags": tags,
        "datasets": repos,
        "metrics": ["mse", "purity", "nmi", "ari", "accuracy"],
        "model-index": model_index(input),
    });
    let yaml = serde_saphyr::to_string(&front).expect("front matter serialises");
    let seeds = c.kmeans.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let mut out = format!("---\n{}---\n\n", yaml.trim_start_matches("---\n"));
    let names: Vec<&str> = c.datasets.keys().map(String::as_str).collect();
    let _ = writeln!(out, "# {}: does an autoencoder's latent space group {} images by class?\n", input.repo, names.join(" and "));
    let _ = writeln!(
        out,
        "{} autoencoder{} ({}) are trained without labels on each dataset. Their encodings of the test images are clustered \
         with k-means (k = {}, k-means++, seeds {seeds}) and the clusters are scored against the true labels. The experiment \
         generalises a PyTorch notebook; this repository holds one complete run of the latentscope pipeline: the trained \
         weights, the latent vectors, the PCA projections, every clustering, the metrics and the figures.\n",
        c.models.len(),
        if c.models.len() == 1 { "" } else { "s" },
        c.models.iter().map(|(n, m)| format!("`{n}`: {}", describe(&m.architecture()))).collect::<Vec<_>>().join("; "),
        c.kmeans.k
    );
    out.push_str("| dataset | source | images | classes | train | test |\n| --- | --- | --- | --- | --- | --- |\n");
    for d in input.datasets {
        let source = match &d.source {
            Source::Hub { repo, revision, .. } => {
                format!("[{repo}](https://huggingface.co/datasets/{repo}) at `{}`", &revision[..revision.len().min(12)])
            }
            Source::Local { .. } => hub_repo(input, &d.dataset).map_or("local IDX files".to_owned(), |r| format!("local IDX copy of {r}")),
        };
        let _ = writeln!(
            out,
            "| {} | {source} | {} | {} | {} | {} |",
            d.dataset,
            d.shape,
            d.classes,
            thousands(d.train.count as u64),
            thousands(d.test.count as u64)
        );
    }
    out.push('\n');
    out.push_str("## Metrics\n\n");
    out.push_str("Test MSE is the mean squared reconstruction error on the test split. Clustering metrics are given first for the k-means seed of lowest inertia (chosen without labels), then as the oracle: the best seed by each metric, which only the test labels can pick (as the notebook did), with the mean ± population std over the k-means seeds; the notebook's numbers are those of the original notebook.\n\n");
    out.push_str(&render::metrics_table(input.metrics));
    out.push('\n');
    out.push_str(
        "## Training\n\n| model | architecture | epochs | batch | learning rate | weight decay |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for (name, m) in &c.models {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            describe(&m.architecture()),
            m.epochs,
            m.batch_size,
            number(m.lr),
            number(m.weight_decay)
        );
    }
    let training_seeds = input.metrics.training_seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        out,
        "\nAdam (PyTorch semantics), MSE loss, training seed{} {training_seeds}, {} training images of each dataset.\n",
        if input.metrics.training_seeds.len() > 1 { "s" } else { "" },
        match c.train.limit {
            Some(n) => format!("at most the first {}", thousands(n as u64)),
            None => "all".to_owned(),
        }
    );
    out.push_str(&pytorch_section(input));
    out.push_str(&limitations(input));
    out.push_str("## Figures\n\n");
    for (file, caption) in input.figures {
        let _ = writeln!(out, "### {caption}\n\n![{caption}](report/{file})\n");
    }
    out.push_str("## Files\n\n| path | what |\n| --- | --- |\n");
    out.push_str("| `models/<dataset>/<model>/s<training seed>/model.safetensors` | weights, PyTorch state-dict names; `config.json`: the architecture and input shape |\n");
    out.push_str("| `models/<dataset>/<model>/s<training seed>/history.json`, `metrics.json` | per-epoch losses; test MSE |\n");
    out.push_str("| `latents/<dataset>/<model>/s<training seed>/latent.safetensors` | test-set latent vectors and labels; `reconstructions.safetensors`: sample reconstructions |\n");
    out.push_str("| `pca/<dataset>/<model>/s<training seed>/` | 2-d PCA projection of the latents |\n");
    out.push_str("| `kmeans/<dataset>/<model>/s<training seed>/seed-<n>/` | cluster assignments and centroids of each k-means seed |\n");
    out.push_str(
        "| `baselines/<dataset>/pixels-pca<d>/`, `kmeans/<dataset>/<baseline>/seed-<n>/` | the baselines, when the run has them |\n",
    );
    out.push_str(
        "| `metrics.json` | every metric per model, training seed and k-means seed; statistics over training seeds; model comparisons |\n",
    );
    out.push_str("| `report/` | `report.md` and the figures |\n");
    out.push_str("| `pipeline.yaml`, `pipeline.lock` | the effective configuration; every stage's parameters, input and output hashes |\n");
    out.push_str("| `latentscope.json` | size and sha256 of every file |\n\n");
    out.push_str("## Licences\n\n");
    let _ = writeln!(
        out,
        "The weights, latents and metrics were produced by latentscope {} (licence: {}). The data keep their own licences: {}.\n",
        crate::VERSION,
        env!("CARGO_PKG_LICENSE"),
        input
            .datasets
            .iter()
            .map(|d| match d.dataset.as_str() {
                "mnist" => "MNIST, CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)".to_owned(),
                other => format!("{other}, see its source repository"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    out.push_str("## Reproduce\n\n");
    // Cargo.toml's `repository`, when the project records one.
    let repository = env!("CARGO_PKG_REPOSITORY");
    if !repository.is_empty() {
        let _ = writeln!(out, "Source: <{repository}>\n");
    }
    match input.source_revision {
        Some(rev) => {
            let _ = writeln!(out, "With the latentscope source at revision `{rev}`:\n");
        }
        None => out.push_str("With the latentscope source (revision unknown: it was not published from a git checkout):\n\n"),
    }
    let _ = writeln!(out, "```sh\n{}\n```\n", input.run_command);
    let _ = writeln!(
        out,
        "or reuse this run as a cache, so that only the `download` stages run (from local data or the Hub) and every other stage is found done:\n\n```sh\ncargo xtask pipeline pull --repo {} --revision {}\n{}\n```",
        input.repo, input.revision, input.run_command
    );
    out
}

/// A Python class name for a model: the notebook's for its two models, else from the name.
fn class_name(name: &str, arch: &crate::models::Architecture) -> String {
    if *arch == crate::models::Architecture::notebook_simple() || *arch == crate::models::Architecture::notebook_conv() {
        return arch.class_name().to_owned();
    }
    let camel: String = name.split(['-', '_']).filter(|p| !p.is_empty()).map(|p| p[..1].to_uppercase() + &p[1..]).collect();
    let camel = if camel.starts_with(|c: char| c.is_ascii_digit()) { format!("M{camel}") } else { camel };
    format!("{camel}Autoencoder")
}

/// How to load each model's weights in PyTorch: the module (its layers give our state-dict
/// names), `hf_hub_download`, `safetensors.torch.load_file`, `load_state_dict(strict=True)`.
fn pytorch_section(input: &CardInput) -> String {
    let Some(data) = input.datasets.first() else { return String::new() };
    let seed = input.metrics.training_seeds.first().copied().unwrap_or_default();
    let mut out = String::from("## Use the weights in PyTorch\n\n");
    let _ = writeln!(
        out,
        "Each `models/<dataset>/<model>/s<training seed>/model.safetensors` holds the weights under PyTorch state-dict names, and its \
         `config.json` the architecture and input shape. These modules load them with `strict=True` (here: dataset {}, training seed {seed}; \
         inputs are pixels scaled to [0, 1]).\n",
        data.dataset
    );
    out.push_str("```python\nimport torch\nfrom torch import nn\nfrom huggingface_hub import hf_hub_download\nfrom safetensors.torch import load_file\n\n");
    let mut loads = String::new();
    for (name, m) in &input.config.models {
        let arch = m.architecture();
        let class = class_name(name, &arch);
        out.push_str(&crate::artifacts::train::ModelFile::of(&arch, data.shape).torch_module(&class));
        out.push_str("\n\n");
        let var = name.replace('-', "_");
        let _ = writeln!(
            loads,
            "{var} = {class}()\n{var}.load_state_dict(load_file(hf_hub_download(\"{}\", \"models/{}/{name}/s{seed}/model.safetensors\", revision=\"{}\")), strict=True)",
            input.repo, data.dataset, input.revision
        );
    }
    out.push_str(&loads);
    out.push_str("```\n\n");
    out
}

/// What a reader should not read into the numbers.
fn limitations(input: &CardInput) -> String {
    let seeds = input.metrics.training_seeds.len();
    let mut out = String::from("## Limitations\n\n");
    let _ = writeln!(
        out,
        "- \"Best\" clustering numbers pick the k-means seed by purity, which uses the true labels (as the notebook did); the \
         lowest-inertia column is the choice a user without labels could make, and the honest estimate.\n- {}\n- The models are small \
         autoencoders trained for {} epochs; the numbers describe these runs, not the architectures in general.\n",
        if seeds == 1 {
            "One training seed: how much the numbers move with the training run is not measured here (in latentscope's five-seed run \
             the conv model's best purity moved by 0.076 between two seeds)."
                .to_owned()
        } else {
            format!("{seeds} training seeds: differences between models come with Welch's t-test over them; treat small p-values from few seeds with care.")
        },
        input.config.models.values().map(|m| m.epochs.to_string()).collect::<Vec<_>>().join("/")
    );
    out
}

/// `mlp 784-128-64-36-18-9` or `conv channels [8, 4], dense [64], latent 10`.
fn describe(arch: &crate::models::Architecture) -> String {
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>();
    match arch {
        crate::models::Architecture::Mlp { encoder } => format!("mlp {}", list(encoder).join("-")),
        crate::models::Architecture::Conv { channels, dense, latent } => {
            format!("conv, channels [{}], dense [{}], latent {latent}", list(channels).join(", "), list(dense).join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_well() {
        assert_eq!(super::number(1e-8), "1e-8");
        assert_eq!(super::number(0.001), "0.001");
        assert_eq!(super::number(0.0), "0");
        assert_eq!(crate::render::thousands(60000), "60,000");
        assert_eq!(crate::render::thousands(999), "999");
        assert_eq!(crate::render::thousands(1234567), "1,234,567");
    }
}
