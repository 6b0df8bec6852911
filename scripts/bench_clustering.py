"""Side-by-side clustering benchmark on a finished run's latent vectors (scikit-learn, hdbscan,
umap-learn), printed next to our own scores. Run through scripts/bench_clustering.sh, which makes
the virtualenv; neither the tests nor the pipeline need it.

For every DIR/encode-*/latent.safetensors (latent f32 [n, d], labels u8 [n]), on the same inputs,
each fit timed with time.perf_counter:
  raw latent:    KMeans(10, n_init=1, random_state=s) for s in 0..9 (lowest-inertia seed, mean over
                 seeds, best-ACC seed); GaussianMixture(10, full) for s in 0,1,2 (highest-likelihood
                 seed, mean); AgglomerativeClustering(10, ward); hdbscan.HDBSCAN(min_cluster_size=50)
                 (noise scored as its own cluster, and on covered points only)
  umap10:        UMAP(n_components=10, n_neighbors=15, min_dist=0.0, random_state=0), then the same
                 methods on the embedding (UMAP's own time on its own row)
  umap2 / tsne2: trustworthiness(n_neighbors=15) of UMAP 2-D / t-SNE 2-D of every point,
                 measured on the first 2,000 points (as the pipeline's view stages measure it)
Scores against the digit labels: purity, nmi, ari, acc (Hungarian-matched accuracy).

Our own scores: DIR/score/metrics.json's field `clusterings`, printed raw if present (its layout
is being redesigned; nothing here depends on it).

  scripts/bench_clustering.sh [--artifacts DIR] [--out FILE.json]
"""
import argparse
import glob
import json
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np
from scipy.optimize import linear_sum_assignment
from safetensors.numpy import load_file
from sklearn import metrics
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.manifold import TSNE, trustworthiness
from sklearn.mixture import GaussianMixture

import hdbscan
import umap

warnings.filterwarnings("ignore")
K = 10
TRUST_SUBSAMPLE = 2000
TRUST_NEIGHBORS = 15
HDBSCAN_MIN = 50


def contingency(truth, pred):
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return table


def scores(truth, pred):
    table = contingency(truth, pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {
        "purity": float(table.max(axis=1).sum() / len(truth)),
        "nmi": float(metrics.normalized_mutual_info_score(truth, pred)),
        "ari": float(metrics.adjusted_rand_score(truth, pred)),
        "acc": float(table[rows, cols].sum() / len(truth)),
    }


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def mean_scores(runs):
    return {m: float(np.mean([r[m] for r in runs])) for m in ("purity", "nmi", "ari", "acc")}


def cluster_rows(X, y, embed):
    """All methods on X; one dict per table row."""
    rows = []

    def row(method, sc, seconds, note=""):
        rows.append({"embed": embed, "method": method, **sc, "seconds": seconds, "note": note})

    km = []
    for s in range(10):
        model, sec = timed(lambda: KMeans(K, n_init=1, random_state=s).fit(X))
        km.append({"seed": s, "inertia": float(model.inertia_), "seconds": sec,
                   **scores(y, model.labels_)})
    best_inertia = min(km, key=lambda r: r["inertia"])
    best_acc = max(km, key=lambda r: r["acc"])
    row(f"kmeans min-inertia (seed {best_inertia['seed']})", best_inertia, best_inertia["seconds"])
    row("kmeans mean of 10 seeds", mean_scores(km), float(np.mean([r["seconds"] for r in km])),
        f"acc sd {np.std([r['acc'] for r in km], ddof=1):.4f}")
    row(f"kmeans best-acc (seed {best_acc['seed']})", best_acc, best_acc["seconds"])

    gm = []
    for s in range(3):
        model, sec = timed(lambda: GaussianMixture(K, covariance_type="full", random_state=s).fit(X))
        gm.append({"seed": s, "loglik": float(model.score(X)), "seconds": sec,
                   **scores(y, model.predict(X))})
    best_ll = max(gm, key=lambda r: r["loglik"])
    row(f"gmm max-likelihood (seed {best_ll['seed']})", best_ll, best_ll["seconds"])
    row("gmm mean of 3 seeds", mean_scores(gm), float(np.mean([r["seconds"] for r in gm])))

    pred, sec = timed(lambda: AgglomerativeClustering(K, linkage="ward").fit_predict(X))
    row("agglomerative ward", scores(y, pred), sec)

    pred, sec = timed(lambda: hdbscan.HDBSCAN(min_cluster_size=HDBSCAN_MIN).fit_predict(X))
    noise = pred == -1
    found = len(np.unique(pred[~noise]))
    note = f"{found} clusters, noise {noise.mean():.3f}"
    row(f"hdbscan mcs={HDBSCAN_MIN} (noise = cluster)", scores(y, pred), sec, note)
    if (~noise).any():
        row(f"hdbscan mcs={HDBSCAN_MIN} (covered only)", scores(y[~noise], pred[~noise]), sec,
            f"{int((~noise).sum())} points")
    return rows


def bench_representation(path):
    data = load_file(path)
    X, y = data["latent"], data["labels"].astype(np.int64)
    rows = cluster_rows(X, y, "raw")

    emb, sec = timed(lambda: umap.UMAP(n_components=10, n_neighbors=15, min_dist=0.0,
                                       random_state=0).fit_transform(X))
    rows.append({"embed": "umap10", "method": "(UMAP fit itself)", "seconds": sec,
                 "note": "n_neighbors=15, min_dist=0.0"})
    rows += cluster_rows(emb, y, "umap10")

    # The 2-D views embed every point, as the pipeline's view stages do; the trustworthiness is
    # measured on the first 2,000 points (O(n^2 log n)), as the pipeline measures it.
    first = slice(0, min(TRUST_SUBSAMPLE, len(X)))
    for name, make in [
        ("umap2", lambda: umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.0, random_state=0)),
        ("tsne2", lambda: TSNE(n_components=2, perplexity=30, random_state=0)),
    ]:
        e, sec = timed(lambda: make().fit_transform(X))
        tw = float(trustworthiness(X[first], e[first], n_neighbors=TRUST_NEIGHBORS))
        rows.append({"embed": name, "method": f"trustworthiness@{TRUST_NEIGHBORS}",
                     "trustworthiness": tw, "seconds": sec,
                     "note": f"trust {tw:.4f} on the first {TRUST_SUBSAMPLE} of {len(X)} embedded points"})
    return {"n": int(X.shape[0]), "d": int(X.shape[1]), "rows": rows}


def fmt(v):
    return "" if v is None else f"{v:.4f}"


def markdown(results):
    lines = ["| representation | embed | method | purity | nmi | ari | acc | seconds | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rep, res in results.items():
        for r in res["rows"]:
            lines.append(f"| {rep} (d={res['d']}) | {r['embed']} | {r['method']} | "
                         f"{fmt(r.get('purity'))} | {fmt(r.get('nmi'))} | {fmt(r.get('ari'))} | "
                         f"{fmt(r.get('acc'))} | {r['seconds']:.2f} | {r.get('note', '')} |")
    return "\n".join(lines)


# (what, our stage id pattern, Python row: embed, method prefix)
TIMED = [
    ("k-means, one seed", "kmeans-{tag}-0", "raw", "kmeans mean"),
    ("GMM, one seed", "gmm-{tag}-0", "raw", "gmm mean"),
    ("Ward", "agglomerative-{tag}", "raw", "agglomerative"),
    ("HDBSCAN", "hdbscan-{tag}", "raw", "hdbscan mcs=50 (noise"),
    ("UMAP to 10-d", "umap-{tag}", "umap10", "(UMAP fit"),
    ("UMAP to 2-d", "view-umap-{tag}", "umap2", "trustworthiness"),
    ("t-SNE to 2-d", "view-tsne-{tag}", "tsne2", "trustworthiness"),
]


def timing_table(artifacts, results):
    """Our stages' wall times (from pipeline.lock) beside the Python tools' on the same latents."""
    lock_path = os.path.join(artifacts, "pipeline.lock")
    if not os.path.exists(lock_path):
        return f"{lock_path} not found"
    with open(lock_path) as f:
        stages = json.load(f).get("stages", {})
    lines = ["| representation | step | ours (s) | Python (s) | ratio |", "|---|---|---|---|---|"]
    for rep, res in results.items():
        for what, pattern, embed, prefix in TIMED:
            ours = stages.get(pattern.format(tag=rep), {}).get("wall_time_s")
            theirs = next((r["seconds"] for r in res["rows"] if r["embed"] == embed and r["method"].startswith(prefix)), None)
            if ours is None or theirs is None:
                continue
            lines.append(f"| {rep} | {what} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} |")
    return "\n".join(lines)


def versions():
    from importlib.metadata import version
    out = {"python": sys.version.split()[0]}
    for dist in ("numpy", "scipy", "scikit-learn", "hdbscan", "umap-learn"):
        try:
            out[dist] = version(dist)
        except Exception:
            out[dist] = None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()

    paths = sorted(glob.glob(os.path.join(args.artifacts, "encode-*", "latent.safetensors")))
    if not paths:
        sys.exit(f"no {args.artifacts}/encode-*/latent.safetensors found")
    # Compile UMAP's numba kernels before anything is timed (else the first fit pays for it).
    warm = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    for nc in (10, 2):
        umap.UMAP(n_components=nc, n_neighbors=15, random_state=0).fit_transform(warm)
    results = {}
    for path in paths:
        rep = os.path.basename(os.path.dirname(path))[len("encode-"):]
        print(f"benchmarking {rep} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[rep] = bench_representation(path)
        results[rep]["total_seconds"] = time.perf_counter() - t0

    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    print(f"## scikit-learn / hdbscan / umap-learn on latent vectors ({args.artifacts})\n")
    print(f"threads: {threads}; trustworthiness rows use a {TRUST_SUBSAMPLE}-point subsample; "
          "umap10 rows' seconds exclude the UMAP fit (own row); 'mean' rows: seconds per fit; "
          "UMAP's numba JIT warmed up untimed\n")
    print(markdown(results))
    for rep, res in results.items():
        print(f"\n{rep}: total {res['total_seconds']:.1f} s")

    print("\n## times: our stages (pipeline.lock wall times) beside the Python tools\n")
    print(timing_table(args.artifacts, results))

    ours = None
    metrics_path = os.path.join(args.artifacts, "score", "metrics.json")
    print("\n## ours (score/metrics.json, field `clusterings`, raw)\n")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            doc = json.load(f)
        if isinstance(doc, dict) and "clusterings" in doc:
            ours = doc["clusterings"]
            print(json.dumps(ours, indent=1))
        else:
            print(f"{metrics_path} has no `clusterings` field")
    else:
        print(f"{metrics_path} not found")

    if args.out:
        with open(args.out, "w") as f:
            json.dump({"artifacts": args.artifacts, "threads": threads, "versions": versions(),
                       "trustworthiness_subsample": TRUST_SUBSAMPLE,
                       "representations": results, "ours_clusterings": ours}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
