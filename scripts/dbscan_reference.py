"""scikit-learn's DBSCAN labels on the fixed data of tests/data/clusters.safetensors.

Writes tests/data/dbscan_reference.json: per data set (blobs, moons, digits) the settings
({eps, min_samples}, as latentscope's cluster.dbscan takes them), scikit-learn's labels point by
point (-1 = noise), the clusters found and the noise count, and the tool versions. The points are
read as stored (f32, digits u8) and clustered as float64, as latentscope does.
Neither the tests' build nor the pipeline runs Python: the output is committed.

Run: /path/to/venv/bin/python scripts/dbscan_reference.py   (venv with scikit-learn safetensors numpy)
"""
import json
import os
import sys

import numpy as np
import sklearn
from safetensors.numpy import load_file
from sklearn.cluster import DBSCAN

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data")
SETTINGS = {
    "blobs": {"eps": 2.0, "min_samples": 5},
    "moons": {"eps": 0.6, "min_samples": 5},
    "digits": {"eps": 23.0, "min_samples": 5},
}

tensors = load_file(os.path.join(DATA, "clusters.safetensors"))
out = {
    "generator": "scripts/dbscan_reference.py",
    "method": "sklearn.cluster.DBSCAN(eps, min_samples), metric euclidean, algorithm auto",
    "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__},
}
for name, settings in SETTINGS.items():
    x = tensors[f"{name}_points"].astype(np.float64)
    labels = DBSCAN(**settings).fit_predict(x)
    out[name] = {
        "settings": settings,
        "clusters": int(labels.max() + 1),
        "noise": int((labels == -1).sum()),
        "labels": [int(v) for v in labels],
    }
    print(name, x.shape, "clusters", out[name]["clusters"], "noise", out[name]["noise"], file=sys.stderr)
with open(os.path.join(DATA, "dbscan_reference.json"), "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
