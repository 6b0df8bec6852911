"""scikit-learn's k-means inertia on fixed data, the bar latentscope's k-means is held to.

Writes tests/data/kmeans_reference.json: for each data set, KMeans(n_clusters=10,
n_init=n, random_state=s) (greedy k-means++, Lloyd, max_iter 300, tol 1e-4: scikit-learn's
defaults) for s = 0..199 at n_init 1 (one start's optimum varies from seed to seed: a median of
20 moves by about 1%) and s = 0..19 at n_init 10: every inertia and their median. The data sets:
  digits       sklearn's bundled load_digits, 1797 x 64 (tests/data/clusters.safetensors)
  digits-pca10 the same projected on its first 10 principal components, stored f32 in
               tests/data/kmeans_points.safetensors (a latent-sized space)
Points are read as stored (f32 or u8) and clustered as float64, as latentscope does.
Neither the tests' build nor the pipeline runs Python: the outputs are committed.

Run: /path/to/venv/bin/python scripts/kmeans_reference.py   (venv with scikit-learn safetensors numpy)
"""
import json
import os
import sys

import numpy as np
import sklearn
from safetensors.numpy import load_file, save_file
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data")

digits = load_file(os.path.join(DATA, "clusters.safetensors"))["digits_points"].astype(np.float64)
# C order: PCA returns a Fortran-ordered array, whose buffer safetensors would store as is.
pca10 = np.ascontiguousarray(PCA(n_components=10, svd_solver="full").fit_transform(digits).astype(np.float32))
save_file({"digits_pca10": pca10}, os.path.join(DATA, "kmeans_points.safetensors"))
# Cluster what was stored.
stored = load_file(os.path.join(DATA, "kmeans_points.safetensors"))["digits_pca10"]
assert np.array_equal(stored, pca10)
sets = {"digits": digits, "digits-pca10": stored.astype(np.float64)}

out = {
    "generator": "scripts/kmeans_reference.py",
    "method": "sklearn.cluster.KMeans(n_clusters=10, n_init=n_init, random_state=seed), algorithm lloyd, max_iter 300, tol 1e-4",
    "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__},
    "seeds": {"n_init_1": 200, "n_init_10": 20},
}
for name, x in sets.items():
    out[name] = {}
    for n_init in (1, 10):
        seeds = 200 if n_init == 1 else 20
        inertia = [float(KMeans(n_clusters=10, n_init=n_init, random_state=s, algorithm="lloyd").fit(x).inertia_) for s in range(seeds)]
        out[name][f"n_init_{n_init}"] = {"inertia": inertia, "median": float(np.median(inertia)), "min": min(inertia)}
        print(name, n_init, "median", np.median(inertia), "min", min(inertia), file=sys.stderr)
with open(os.path.join(DATA, "kmeans_reference.json"), "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
