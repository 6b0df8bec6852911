//! The checks of a loaded config across its sections: names, ids, seeds, the limit against
//! the local data, the methods, views and k-selection. A bad value is blamed on the `--set`
//! that put it there, else on the file.

use std::path::Path;

use super::{ConfigError, LoadedConfig, View};

impl LoadedConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        // A bad value is blamed on the `--set` that put it there, else on the file.
        let bad = |key: &str, message: &str| {
            let set_by = self.overridden.iter().rev().find(|k| key == k.as_str() || key.starts_with(&format!("{k}.")));
            Err(match set_by {
                Some(k) => ConfigError::InvalidOverride { key: k.clone(), message: format!("{key} {message}") },
                None => ConfigError::Invalid { path: self.path.clone(), key: key.into(), message: message.into() },
            })
        };
        if c.datasets.is_empty() {
            return bad("datasets", "must name at least one dataset");
        }
        if let Err(message) = c.slurm.validate() {
            let key = message.split_whitespace().next().unwrap_or("slurm").to_owned();
            return bad(&key, message.strip_prefix(key.as_str()).unwrap_or(&message).trim());
        }
        if c.models.is_empty() {
            return bad("models", "must name at least one model");
        }
        for name in c.datasets.keys() {
            if let Err(why) = check_name(name) {
                return bad(&format!("datasets.{name}"), &format!("is not a usable name: {why}"));
            }
        }
        for (name, m) in &c.models {
            if let Err(why) = check_name(name) {
                return bad(&format!("models.{name}"), &format!("is not a usable name: {why}"));
            }
            if name.starts_with("pixels") {
                return bad(&format!("models.{name}"), "is not a usable name: names starting with pixels are the baselines'");
            }
            if let Err((key, why)) = m.try_architecture() {
                return bad(&format!("models.{name}.{key}"), &why);
            }
            if m.epochs == 0 {
                return bad(&format!("models.{name}.epochs"), "must be at least 1");
            }
            if m.batch_size == 0 {
                return bad(&format!("models.{name}.batch_size"), "must be at least 1");
            }
            if !(m.lr.is_finite() && m.lr > 0.0) {
                return bad(&format!("models.{name}.lr"), "must be a positive number");
            }
            if !(m.weight_decay.is_finite() && m.weight_decay >= 0.0) {
                return bad(&format!("models.{name}.weight_decay"), "must be zero or positive");
            }
        }
        // Stage ids join dataset and model names with `-`; two pairs must not read the same.
        let mut joined = std::collections::BTreeMap::new();
        for d in c.datasets.keys() {
            for m in c.models.keys() {
                if let Some((d0, m0)) = joined.insert(format!("{d}-{m}"), (d, m)) {
                    return bad(
                        "models",
                        &format!("dataset {d0} with model {m0} and dataset {d} with model {m} would share stage ids ({d}-{m}); rename one"),
                    );
                }
            }
        }
        for (name, d) in &c.datasets {
            if d.local.is_none() && d.hub.is_none() {
                return bad(&format!("datasets.{name}"), "needs local (IDX folder) or hub (parquet files), or both");
            }
            let Some(hub) = &d.hub else { continue };
            if hub.revision.len() != 40 || !hub.revision.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(
                    &format!("datasets.{name}.hub.revision"),
                    &format!(
                        "{:?} is not a commit sha (40 hex digits); a branch or tag can move, and the run would no longer say which data it used. Pin the commit the Hub shows for it",
                        hub.revision
                    ),
                );
            }
            if !hub.repo.contains('/') {
                return bad(&format!("datasets.{name}.hub.repo"), &format!("{:?} is not OWNER/NAME", hub.repo));
            }
            for (split, f) in [("train", &hub.train), ("test", &hub.test)] {
                if let Some(sha) = &f.sha256 {
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return bad(&format!("datasets.{name}.hub.{split}.sha256"), "must be 64 hexadecimal digits");
                    }
                }
            }
        }
        if c.train.seeds.is_empty() {
            return bad("train.seeds", "must list at least one seed");
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.train.seeds.iter().find(|s| !seen.insert(**s)) {
            return bad("train.seeds", &format!("seed {dup} is listed twice"));
        }
        if c.train.limit == Some(0) {
            return bad("train.limit", "must be null or at least 1");
        }
        if let Some((name, local, count)) = self.limit_above_local_data() {
            let limit = c.train.limit.expect("a limit");
            return bad(
                "train.limit",
                &format!(
                    "is {limit}, but dataset {name} has only {count} training images (in {}); set it to at most {count}, or to null for all of them",
                    local.display()
                ),
            );
        }
        let smallest = c.models.values().map(|m| m.architecture().latent_dim()).min().unwrap_or(1);
        if !(1..=smallest).contains(&c.pca.components) {
            return bad("pca.components", &format!("must be between 1 and {smallest} (the smallest latent size)"));
        }
        if c.kmeans.k < 2 {
            return bad("kmeans.k", "must be at least 2");
        }
        if c.kmeans.seeds.is_empty() {
            return bad("kmeans.seeds", "must list at least one seed");
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.kmeans.seeds.iter().find(|s| !seen.insert(**s)) {
            return bad("kmeans.seeds", &format!("seed {dup} is listed twice"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.baselines.iter().find(|b| !seen.insert(format!("{b:?}"))) {
            return bad("baselines", &format!("{dup:?} is listed twice"));
        }
        if c.kmeans.n_init == 0 {
            return bad("kmeans.n_init", "must be at least 1");
        }
        if c.kmeans.max_iter == 0 {
            return bad("kmeans.max_iter", "must be at least 1");
        }
        if !(c.kmeans.tol.is_finite() && c.kmeans.tol >= 0.0) {
            return bad("kmeans.tol", "must be zero or positive");
        }
        if c.plot.samples == 0 || c.plot.samples > 100 {
            return bad("plot.samples", "must be between 1 and 100");
        }
        if let Some((key, message)) = self.check_methods() {
            return bad(&key, &message);
        }
        Ok(())
    }
}

impl LoadedConfig {
    /// The first dataset whose local IDX files (when all four are there, so that the download
    /// uses them) hold fewer training images than `train.limit`: its name, `local` as the
    /// config spells it, and the count its header declares. A limit above a split would train
    /// on the whole split under another fingerprint than `null`. Hub datasets, and local files
    /// whose header cannot be right, are checked when they are read (the train stage refuses
    /// such a limit too).
    fn limit_above_local_data(&self) -> Option<(&str, &Path, usize)> {
        let limit = self.config.train.limit?;
        self.config.datasets.iter().find_map(|(name, d)| {
            let local = d.local.as_deref()?;
            let dir = self.resolve(local);
            if !crate::data::idx::present(&dir) {
                return None;
            }
            let (count, _) = crate::data::idx::training_images(&dir)?;
            (limit > count).then_some((name.as_str(), local, count))
        })
    }

    /// The `cluster`, `embed`, `views` and `select_k` settings: the first bad key and why.
    fn check_methods(&self) -> Option<(String, String)> {
        let c = &self.config;
        let fail = |key: &str, message: &str| Some((key.to_owned(), message.to_owned()));
        if let Some(bad) = c.cluster.check() {
            return Some(bad);
        }
        if let Some(u) = &c.embed.umap {
            if !(1..=100).contains(&u.components) {
                return fail("embed.umap.components", "must be between 1 and 100");
            }
            if u.neighbors < 2 {
                return fail("embed.umap.neighbors", "must be at least 2");
            }
            if !(u.min_dist.is_finite() && (0.0..=1.0).contains(&u.min_dist)) {
                return fail("embed.umap.min_dist", "must be between 0 and 1");
            }
            if u.epochs == Some(0) {
                return fail("embed.umap.epochs", "must be null or at least 1");
            }
        }
        if let Some(t) = &c.embed.tsne {
            if !(t.perplexity.is_finite() && t.perplexity > 0.0) {
                return fail("embed.tsne.perplexity", "must be positive");
            }
            if !(t.theta.is_finite() && (0.0..1.0).contains(&t.theta)) {
                return fail("embed.tsne.theta", "must be at least 0 and below 1");
            }
            if t.max_iter < 2 {
                return fail("embed.tsne.max_iter", "must be at least 2");
            }
            if !c.views.contains(&View::Tsne) {
                return fail("embed.tsne", "makes 2-D views only: add tsne to views, or remove it");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = c.views.iter().find(|v| !seen.insert(format!("{v:?}"))) {
            return fail("views", &format!("{dup:?} is listed twice"));
        }
        if c.views.contains(&View::Umap) && c.embed.umap.is_none() {
            return fail("views", "umap needs embed.umap (its neighbours, min_dist and seed)");
        }
        if c.views.contains(&View::Tsne) && c.embed.tsne.is_none() {
            return fail("views", "tsne needs embed.tsne (its perplexity and seed)");
        }
        let shown = &c.report.clustering;
        if shown.method.seeds(c).is_empty() {
            return fail("report.clustering.method", &format!("is {}, which cluster: does not run", shown.method));
        }
        if shown.umap && c.embed.umap.is_none() {
            return fail("report.clustering.umap", "needs embed.umap");
        }
        if let Some(s) = &c.select_k {
            let [lo, hi] = s.range;
            if lo < 2 || hi < lo {
                return fail("select_k.range", "must be [low, high] with 2 <= low <= high");
            }
            if s.sample < 10 {
                return fail("select_k.sample", "must be at least 10");
            }
            if s.max_iter == 0 {
                return fail("select_k.max_iter", "must be at least 1");
            }
            if !(s.tol.is_finite() && s.tol > 0.0) {
                return fail("select_k.tol", "must be positive");
            }
        }
        None
    }
}

/// Dataset and model names appear in stage ids and folder names: lowercase letters, digits,
/// `-` and `_`, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    match name.bytes().next() {
        None => Err("it is empty"),
        Some(first) if !first.is_ascii_alphanumeric() => Err("it must start with a letter or digit"),
        _ if !ok => Err("use lowercase letters, digits, - and _"),
        _ if name.len() > 40 => Err("it is longer than 40 characters"),
        _ => Ok(()),
    }
}
