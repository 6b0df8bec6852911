//! The analysis of the latent spaces, free of candle and of the pipeline: PCA, the
//! clustering methods (k-means, Gaussian mixture, agglomerative, HDBSCAN), the embeddings
//! (UMAP, t-SNE), the clustering scores and statistics.

pub mod agglomerative;
pub mod gmm;
pub mod hdbscan;
pub mod kmeans;
pub mod metrics;
pub mod pca;
pub mod silhouette;
pub mod stats;
pub mod tsne;
pub mod umap;

/// Each method against the scores scikit-learn, hdbscan and umap-learn give on the same
/// data (`tests/data/clusters.safetensors` and `cluster_reference.json`, written by
/// `scripts/cluster_reference.py`).
#[cfg(test)]
mod reference {
    use super::*;
    use crate::tensorfile::TensorFile;

    fn data(name: &str) -> (Vec<f32>, usize, Vec<u8>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/clusters.safetensors");
        let file = TensorFile::open(&path).unwrap();
        let (shape, points): (Vec<usize>, Vec<f32>) = match file.get(&format!("{name}_points"), safetensors::Dtype::F32) {
            Ok((shape, bytes)) => (shape.to_vec(), crate::tensorfile::f32_values(bytes)),
            Err(_) => {
                let (shape, bytes) = file.get(&format!("{name}_points"), safetensors::Dtype::U8).unwrap();
                (shape.to_vec(), bytes.iter().map(|&b| b as f32).collect())
            }
        };
        let labels = crate::tensorfile::u32_values(file.get(&format!("{name}_labels"), safetensors::Dtype::U32).unwrap().1);
        (points, shape[1], labels.into_iter().map(|l| l as u8).collect())
    }

    fn reference() -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cluster_reference.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// ARI and ACC, noise (u32::MAX) as one more cluster.
    fn scores(truth: &[u8], found: &[u32]) -> (f64, f64) {
        let k = found.iter().filter(|&&c| c != hdbscan::NOISE).map(|&c| c as usize + 1).max().unwrap_or(0);
        let mapped: Vec<u32> = found.iter().map(|&c| if c == hdbscan::NOISE { k as u32 } else { c }).collect();
        let classes = truth.iter().map(|&l| l as usize + 1).max().unwrap();
        let m = metrics::contingency(truth, &mapped, classes, k + 1);
        (metrics::ari(&m), metrics::accuracy(&m))
    }

    fn close(ours: f64, theirs: &serde_json::Value, tol: f64, what: &str) {
        let theirs = theirs.as_f64().unwrap_or_else(|| panic!("{what}: no reference value"));
        assert!((ours - theirs).abs() <= tol, "{what}: ours {ours}, reference {theirs}");
    }

    #[test]
    fn blobs_every_method_recovers_the_four_clusters() {
        let (x, d, truth) = data("blobs");
        let r = &reference()["blobs"];
        let settings = |k| kmeans::Settings { k, seed: 0, n_init: 10, max_iter: 300, tol: 1e-4 };
        let km = kmeans::fit(&x, d, &settings(4)).unwrap();
        close(scores(&truth, &km.labels).0, &r["kmeans"]["ari"], 1e-12, "k-means ARI");
        close(km.inertia, &r["kmeans"]["inertia"], 1e-3, "k-means inertia");
        close(silhouette::score(&x, d, &km.labels).unwrap(), &r["kmeans"]["silhouette"], 1e-6, "silhouette");
        let g = gmm::fit(&x, d, &gmm::Settings { k: 4, seed: 0, max_iter: 100, tol: 1e-3, reg_covar: 1e-6 }).unwrap();
        close(scores(&truth, &g.labels).0, &r["gmm"]["ari"], 1e-12, "GMM ARI");
        close(g.log_likelihood, &r["gmm"]["mean_log_likelihood"], 1e-3, "GMM mean log-likelihood");
        let a = agglomerative::fit(&x, d, 4, agglomerative::Linkage::Ward).unwrap();
        close(scores(&truth, &a).0, &r["agglomerative"]["ari"], 1e-12, "Ward ARI");
        let h = hdbscan::fit(&x, d, 20, None).unwrap();
        let noise = h.iter().filter(|&&c| c == hdbscan::NOISE).count() as f64 / h.len() as f64;
        close(noise, &r["hdbscan"]["noise_fraction"], 0.01, "HDBSCAN noise fraction");
        close(scores(&truth, &h).0, &r["hdbscan"]["all"]["ari"], 0.01, "HDBSCAN ARI");
        // The silhouette picks the true k, as it does for scikit-learn.
        let best = (2..=8).max_by(|&a, &b| {
            let s = |k| silhouette::score(&x, d, &kmeans::fit(&x, d, &settings(k)).unwrap().labels).unwrap();
            s(a).total_cmp(&s(b))
        });
        assert_eq!(best, Some(4));
    }

    /// HDBSCAN against scikit-learn's `HDBSCAN`, its named reference (the `hdbscan` package
    /// draws some cluster edges elsewhere): on blobs, moons and digits, an ARI of at least 0.99
    /// between the two labelings (noise one more label) and the same noise fraction to 0.01
    /// (`tests/data/density_reference.json`, from `scripts/density_reference.py`).
    #[test]
    fn hdbscan_is_scikit_learns() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/density_reference.json");
        let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for name in ["blobs", "moons", "digits"] {
            let (x, d, _) = data(name);
            let r = &reference["hdbscan"][name];
            let min_cluster_size = r["settings"]["min_cluster_size"].as_u64().unwrap() as usize;
            let ours = hdbscan::fit(&x, d, min_cluster_size, None).unwrap();
            let theirs: Vec<i64> = r["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            let their_noise = theirs.iter().max().map_or(0, |&m| m + 1);
            let truth: Vec<u8> = theirs.iter().map(|&l| if l < 0 { their_noise as u8 } else { l as u8 }).collect();
            let (ari, _) = scores(&truth, &ours);
            let fraction = |noise: usize| noise as f64 / ours.len() as f64;
            let ours_noise = fraction(ours.iter().filter(|&&c| c == hdbscan::NOISE).count());
            let theirs_noise = fraction(theirs.iter().filter(|&&l| l < 0).count());
            assert!(ari >= 0.99, "{name}: ARI {ari} against scikit-learn's HDBSCAN");
            assert!((ours_noise - theirs_noise).abs() <= 0.01, "{name}: noise {ours_noise}, scikit-learn's {theirs_noise}");
        }
    }

    #[test]
    fn moons_hdbscan_finds_the_shapes_that_kmeans_and_ward_cut() {
        let (x, d, truth) = data("moons");
        let r = &reference()["moons"];
        let h = hdbscan::fit(&x, d, 20, None).unwrap();
        let found = h.iter().filter(|&&c| c != hdbscan::NOISE).map(|&c| c + 1).max().unwrap_or(0);
        assert_eq!(found as u64, r["hdbscan"]["n_clusters"].as_u64().unwrap());
        close(scores(&truth, &h).0, &r["hdbscan"]["all"]["ari"], 0.02, "HDBSCAN ARI");
        let w = agglomerative::fit(&x, d, 2, agglomerative::Linkage::Ward).unwrap();
        close(scores(&truth, &w).0, &r["agglomerative"]["all"]["ari"], 1e-9, "Ward ARI");
        let km = kmeans::fit(&x, d, &kmeans::Settings { k: 2, seed: 0, n_init: 1, max_iter: 300, tol: 1e-4 }).unwrap();
        close(scores(&truth, &km.labels).0, &r["kmeans"]["all"]["ari"], 0.05, "k-means ARI");
    }

    #[test]
    fn digits_umap_and_tsne_preserve_neighbourhoods_like_the_python_tools() {
        let (x, d, truth) = data("digits");
        let r = &reference()["digits"];
        let p = umap::Params { components: 2, neighbors: 15, min_dist: 0.1, seed: 0, epochs: None };
        let y = umap::embed(&x, d, &p).unwrap();
        let t = umap::trustworthiness(&x, d, &y, 2, 15);
        let theirs = r["umap2"]["trustworthiness"].as_f64().unwrap();
        eprintln!("digits, UMAP 2-D trustworthiness: ours {t:.4}, umap-learn {theirs:.4}");
        assert!(t >= theirs - 0.01, "UMAP trustworthiness {t}, umap-learn {theirs}");
        let p10 = umap::Params { components: 10, min_dist: 0.0, ..p };
        let y10 = umap::embed(&x, d, &p10).unwrap();
        let g = gmm::fit(&y10, 10, &gmm::Settings { k: 10, seed: 0, max_iter: 100, tol: 1e-3, reg_covar: 1e-6 }).unwrap();
        let acc = scores(&truth, &g.labels).1;
        let theirs = r["umap10_gmm"]["acc"].as_f64().unwrap();
        eprintln!("digits, UMAP 10-d + GMM accuracy: ours {acc:.4}, umap-learn + scikit-learn {theirs:.4}");
        assert!(acc >= theirs - 0.05, "UMAP + GMM accuracy {acc}, umap-learn + scikit-learn {theirs}");
        let ts = tsne::embed(&x, d, &tsne::Settings { perplexity: 30.0, seed: 0, max_iter: 1000, theta: 0.5 }).unwrap();
        let t = umap::trustworthiness(&x, d, &ts, 2, 15);
        let theirs = r["tsne2"]["trustworthiness"].as_f64().unwrap();
        eprintln!("digits, t-SNE trustworthiness: ours {t:.4}, scikit-learn {theirs:.4}");
        assert!(t >= theirs - 0.01, "t-SNE trustworthiness {t}, scikit-learn {theirs}");
    }
}
