"""Fixed test data and reference clustering scores from scikit-learn / hdbscan / umap-learn.

Writes, deterministically (fixed random_state everywhere):
  tests/data/clusters.safetensors   blobs_points f32 [600,5] + blobs_labels u32,
                                    moons_points f32 [440,2] + moons_labels u32 (2 = uniform noise),
                                    digits_points u8 [1797,64] + digits_labels u32 (sklearn's bundled
                                    load_digits, no network)
  tests/data/cluster_reference.json labels-vs-truth scores {ari, nmi, acc, purity} per data set and
                                    method, with the settings used and each tool's version.

Scores: ari = adjusted_rand_score, nmi = normalized_mutual_info_score (arithmetic mean),
acc = accuracy after a Hungarian matching of clusters to classes (scipy linear_sum_assignment on
the contingency table; clusters left unmatched count as wrong), purity = sum over clusters of the
largest class count / n. HDBSCAN's noise label -1 is scored as one more cluster ("all points") and
also left out ("covered": only the points it did not mark noise).

Blobs and moons are clustered on the stored f32 values widened to f64; digits as float32.
Neither the tests' build nor the pipeline runs Python: the outputs are committed.

Run: /path/to/venv/bin/python scripts/cluster_reference.py
     (venv with scikit-learn umap-learn hdbscan safetensors numpy scipy)
"""
import json
import os
import sys
import warnings

import numpy as np
import scipy
import sklearn
from scipy.optimize import linear_sum_assignment
from safetensors.numpy import save_file
from sklearn import metrics
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.datasets import load_digits, make_blobs, make_moons
from sklearn.manifold import TSNE, trustworthiness
from sklearn.mixture import GaussianMixture

import hdbscan
import umap

warnings.filterwarnings("ignore")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT_DIR = os.path.join(ROOT, "tests", "data")


def acc_hungarian(truth, pred):
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(truth))


def purity(truth, pred):
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return float(table.max(axis=1).sum() / len(truth))


def scores(truth, pred):
    truth, pred = np.asarray(truth), np.asarray(pred)
    return {
        "ari": float(metrics.adjusted_rand_score(truth, pred)),
        "nmi": float(metrics.normalized_mutual_info_score(truth, pred)),
        "acc": acc_hungarian(truth, pred),
        "purity": purity(truth, pred),
        "n": int(len(truth)),
        "n_clusters": int(len(np.unique(pred))),
    }


def hdbscan_entry(truth, pred):
    noise = pred == -1
    found = int(len(np.unique(pred[~noise])))
    entry = {
        "n_clusters": found,
        "noise_fraction": float(noise.mean()),
        "all": scores(truth, pred),
    }
    entry["covered"] = scores(truth[~noise], pred[~noise]) if (~noise).any() else None
    return entry


def sklearn_hdbscan(X, min_cluster_size):
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError:
        return None
    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(X)


def make_data():
    blobs_x, blobs_y = make_blobs(
        n_samples=[250, 150, 120, 80], n_features=5, centers=None,
        cluster_std=[1.0, 1.5, 0.5, 1.0], center_box=(-10.0, 10.0), random_state=0)
    mx, my = make_moons(n_samples=400, noise=0.05, random_state=0)
    mx = mx * 5.0
    rng = np.random.default_rng(0)
    noise = rng.uniform(mx.min(axis=0), mx.max(axis=0), size=(40, 2))
    moons_x = np.concatenate([mx, noise])
    moons_y = np.concatenate([my, np.full(40, 2)])
    digits = load_digits()
    return {
        "blobs_points": blobs_x.astype(np.float32),
        "blobs_labels": blobs_y.astype(np.uint32),
        "moons_points": moons_x.astype(np.float32),
        "moons_labels": moons_y.astype(np.uint32),
        "digits_points": digits.data.astype(np.uint8),
        "digits_labels": digits.target.astype(np.uint32),
    }


def blobs_reference(X, y):
    out = {"settings": {
        "data": "make_blobs(n_samples=[250,150,120,80], n_features=5, cluster_std=[1.0,1.5,0.5,1.0], "
                "center_box=(-10,10), random_state=0); stored f32, clustered as f64",
        "kmeans": "KMeans(n_clusters=4, n_init=1, init='k-means++', random_state=0)",
        "gmm": "GaussianMixture(4, covariance_type='full', random_state=0, reg_covar=1e-6, max_iter=100, tol=1e-3)",
        "agglomerative": "AgglomerativeClustering(4, linkage='ward')",
        "hdbscan": "hdbscan.HDBSCAN(min_cluster_size=20)",
        "sklearn_hdbscan": "sklearn.cluster.HDBSCAN(min_cluster_size=20)",
        "silhouette": "silhouette_score(X, kmeans labels, metric='euclidean'), all points",
        "k_sweep": "KMeans(k, n_init=1, random_state=0) for k in 2..8: inertia_, silhouette",
    }}
    km = KMeans(n_clusters=4, n_init=1, init="k-means++", random_state=0).fit(X)
    out["kmeans"] = scores(y, km.labels_)
    out["kmeans"]["inertia"] = float(km.inertia_)
    out["kmeans"]["silhouette"] = float(metrics.silhouette_score(X, km.labels_, metric="euclidean"))
    gmm = GaussianMixture(4, covariance_type="full", random_state=0, reg_covar=1e-6,
                          max_iter=100, tol=1e-3).fit(X)
    out["gmm"] = scores(y, gmm.predict(X))
    out["gmm"]["mean_log_likelihood"] = float(gmm.score(X))
    out["gmm"]["converged"] = bool(gmm.converged_)
    out["agglomerative"] = scores(y, AgglomerativeClustering(4, linkage="ward").fit_predict(X))
    out["hdbscan"] = hdbscan_entry(y, hdbscan.HDBSCAN(min_cluster_size=20).fit_predict(X))
    sk = sklearn_hdbscan(X, 20)
    out["sklearn_hdbscan"] = hdbscan_entry(y, sk) if sk is not None else None
    sweep = []
    for k in range(2, 9):
        m = KMeans(n_clusters=k, n_init=1, random_state=0).fit(X)
        sweep.append({"k": k, "inertia": float(m.inertia_),
                      "silhouette": float(metrics.silhouette_score(X, m.labels_))})
    out["k_sweep"] = sweep
    return out


def moons_reference(X, y):
    out = {"settings": {
        "data": "make_moons(n_samples=400, noise=0.05, random_state=0) * 5, plus 40 points "
                "default_rng(0).uniform over the moons' bounding box (label 2); stored f32, clustered as f64",
        "truth": "'all': every point, noise label 2 as a class; 'hdbscan_covered': only the points "
                 "hdbscan(min_cluster_size=20) did not mark noise",
        "hdbscan": "hdbscan.HDBSCAN(min_cluster_size=20)",
        "sklearn_hdbscan": "sklearn.cluster.HDBSCAN(min_cluster_size=20)",
        "agglomerative": "AgglomerativeClustering(2, linkage='ward')",
        "kmeans": "KMeans(2, n_init=1, random_state=0)",
    }}
    hd = hdbscan.HDBSCAN(min_cluster_size=20).fit_predict(X)
    covered = hd != -1
    preds = {
        "hdbscan": hd,
        "agglomerative": AgglomerativeClustering(2, linkage="ward").fit_predict(X),
        "kmeans": KMeans(2, n_init=1, random_state=0).fit_predict(X),
    }
    for name, pred in preds.items():
        entry = {"all": scores(y, pred), "hdbscan_covered": scores(y[covered], pred[covered])}
        if name == "hdbscan":
            entry["n_clusters"] = int(len(np.unique(pred[covered])))
            entry["noise_fraction"] = float((~covered).mean())
        out[name] = entry
    sk = sklearn_hdbscan(X, 20)
    out["sklearn_hdbscan"] = hdbscan_entry(y, sk) if sk is not None else None
    return out


def digits_reference(X, y):
    X = X.astype(np.float32)
    out = {"settings": {
        "data": "sklearn.datasets.load_digits (1797 x 64, values 0..16), as float32",
        "umap2": "umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=0); "
                 "trustworthiness(X, emb, n_neighbors=15)",
        "umap10_gmm": "umap.UMAP(n_components=10, n_neighbors=15, min_dist=0.0, random_state=0) then "
                      "GaussianMixture(10, covariance_type='full', random_state=0)",
        "kmeans": "KMeans(10, n_init=1, random_state=0) on raw digits",
        "gmm": "GaussianMixture(10, covariance_type='full', random_state=0) on raw digits",
        "tsne2": "TSNE(2, perplexity=30, random_state=0); trustworthiness(X, emb, n_neighbors=15)",
    }}
    emb2 = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=0).fit_transform(X)
    out["umap2"] = {"trustworthiness": float(trustworthiness(X, emb2, n_neighbors=15))}
    emb10 = umap.UMAP(n_components=10, n_neighbors=15, min_dist=0.0, random_state=0).fit_transform(X)
    out["umap10_gmm"] = scores(y, GaussianMixture(10, covariance_type="full", random_state=0)
                               .fit(emb10).predict(emb10))
    out["kmeans"] = scores(y, KMeans(10, n_init=1, random_state=0).fit_predict(X))
    out["gmm"] = scores(y, GaussianMixture(10, covariance_type="full", random_state=0).fit(X).predict(X))
    tsne = TSNE(n_components=2, perplexity=30, random_state=0).fit_transform(X)
    out["tsne2"] = {"trustworthiness": float(trustworthiness(X, tsne, n_neighbors=15))}
    return out


def main():
    data = make_data()
    os.makedirs(OUT_DIR, exist_ok=True)
    save_file(data, os.path.join(OUT_DIR, "clusters.safetensors"))
    ref = {
        "generator": "scripts/cluster_reference.py",
        "scores": "ari, nmi (arithmetic), acc (Hungarian-matched), purity; n = points scored, "
                  "n_clusters = distinct predicted labels among them (hdbscan noise -1 counts as one)",
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "hdbscan": _version("hdbscan"),
            "umap-learn": _version("umap-learn"),
        },
        "blobs": blobs_reference(data["blobs_points"].astype(np.float64), data["blobs_labels"]),
        "moons": moons_reference(data["moons_points"].astype(np.float64), data["moons_labels"]),
        "digits": digits_reference(data["digits_points"], data["digits_labels"]),
    }
    with open(os.path.join(OUT_DIR, "cluster_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


def _version(dist):
    from importlib.metadata import version
    try:
        return version(dist)
    except Exception:
        return None


if __name__ == "__main__":
    main()
