#!/usr/bin/env bash
# scikit-learn / hdbscan / umap-learn on a finished run's latent vectors, beside our own scores:
# scripts/bench_clustering.py clusters every artifacts/encode-*/latent.safetensors (k-means, GMM,
# Ward, HDBSCAN; raw and after UMAP-10), times each fit, and prints a markdown table of purity,
# NMI, ARI, Hungarian ACC and seconds; then our stages' wall times beside the Python tools' (it
# first re-runs our clustering and embedding stages alone, forced, unless OURS=0), and
# score/metrics.json's `clusterings` field, raw. Run it where pipeline.yaml and artifacts/ are.
#
# The Python packages come from PyPI into a virtualenv made on first use (.venv-cluster in the
# repo root), unless PYTHON names an interpreter that already has them. Neither CI nor the
# pipeline needs it. Two threads (OMP_NUM_THREADS, NUMBA_NUM_THREADS) unless set.
#
#   scripts/bench_clustering.sh                                  # artifacts/, table only
#   scripts/bench_clustering.sh --artifacts artifacts --out /tmp/bench.json
#   PYTHON=/path/to/venv/bin/python scripts/bench_clustering.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-2}

if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
else
    venv=.venv-cluster
    python=$venv/bin/python
    if [ ! -x "$python" ] || ! "$python" -c "import sklearn, umap, hdbscan, safetensors, scipy" 2>/dev/null; then
        echo "making $venv with scikit-learn, umap-learn, hdbscan (first use only)" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip >&2
        "$venv/bin/pip" install -q scikit-learn umap-learn hdbscan safetensors numpy scipy >&2
    fi
fi
# Ours first, each stage alone (--jobs 1), forced so that its wall time is measured now: the
# pipeline's clustering and embedding stages on the same machine, in the same run. OURS=0 skips it.
if [ "${OURS:-1}" != 0 ]; then
    cargo run --release --quiet -- pipeline run --jobs 1 --force 'umap-*' --force 'view-*' \
        --force 'kmeans-*' --force 'gmm-*' --force 'agglomerative-*' --force 'hdbscan-*' >&2
fi
exec "$python" scripts/bench_clustering.py "$@"
