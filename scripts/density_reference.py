"""scikit-learn's DBSCAN and HDBSCAN labels on the fixed data of tests/data/clusters.safetensors.

Writes tests/data/density_reference.json: per method and data set (blobs, moons, digits) the
settings (as latentscope's cluster.dbscan / cluster.hdbscan take them), scikit-learn's labels
point by point (-1 = noise), the clusters found and the noise count, and the tool versions. The points are
read as stored (f32, digits u8) and clustered as float64, as latentscope does.
Neither the tests' build nor the pipeline runs Python: the output is committed.

Run: /path/to/venv/bin/python scripts/density_reference.py   (venv with scikit-learn safetensors numpy)
"""
import json
import os
import sys

import numpy as np
import sklearn
from safetensors.numpy import load_file
from sklearn.cluster import DBSCAN, HDBSCAN

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data")
HDBSCAN_SETTINGS = {
    "blobs": {"min_cluster_size": 20},
    "moons": {"min_cluster_size": 20},
    "digits": {"min_cluster_size": 20},
}
SETTINGS = {
    "blobs": {"eps": 2.0, "min_samples": 5},
    "moons": {"eps": 0.6, "min_samples": 5},
    "digits": {"eps": 23.0, "min_samples": 5},
}

tensors = load_file(os.path.join(DATA, "clusters.safetensors"))
out = {
    "generator": "scripts/dbscan_reference.py",
    "dbscan_method": "sklearn.cluster.DBSCAN(eps, min_samples), metric euclidean, algorithm auto",
    "hdbscan_method": "sklearn.cluster.HDBSCAN(min_cluster_size), min_samples None (= min_cluster_size), eom, euclidean",
    "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__},
}
methods = {
    "dbscan": (SETTINGS, lambda settings: DBSCAN(**settings)),
    "hdbscan": (HDBSCAN_SETTINGS, lambda settings: HDBSCAN(**settings, copy=True)),
}
for method, (per_set, make) in methods.items():
    out[method] = {}
    for name, settings in per_set.items():
        x = tensors[f"{name}_points"].astype(np.float64)
        labels = make(settings).fit_predict(x)
        out[method][name] = {
            "settings": settings,
            "clusters": int(labels.max() + 1),
            "noise": int((labels == -1).sum()),
            "labels": [int(v) for v in labels],
        }
        print(method, name, x.shape, "clusters", labels.max() + 1, "noise", (labels == -1).sum(), file=sys.stderr)
with open(os.path.join(DATA, "density_reference.json"), "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
