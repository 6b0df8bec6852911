#!/usr/bin/env bash
# Our training step against the notebook's PyTorch step, side by side on this machine:
# `latentscope bench train` and scripts/pytorch_bench.py alternate (ours, then PyTorch's) for
# ROUNDS rounds, at the same thread count and batch size, and the script prints ms/step of
# both per round and the ratio per model (ours / PyTorch's: below 1 is faster).
#
# PyTorch comes from PyPI into a virtualenv made on first use ($LATENTSCOPE_BENCH_VENV, default
# .venv-bench; the CPU wheel where its index is reachable). Neither CI nor the pipeline needs it.
#
#   scripts/bench_vs_pytorch.sh                 # 2 rounds, 300 steps, batch 32, all cores
#   ROUNDS=3 STEPS=500 BATCH=32 THREADS=2 scripts/bench_vs_pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LATENTSCOPE_BENCH_VENV:-.venv-bench}
rounds=${ROUNDS:-2}
steps=${STEPS:-300}
batch=${BATCH:-32}
threads=${THREADS:-$(nproc)}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "making $venv with PyTorch (first use only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    "$venv/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu torch >&2 2>/dev/null \
        || "$venv/bin/pip" install -q torch >&2
    "$venv/bin/pip" install -q numpy >&2
fi
cargo build --release -q -p latentscope --bin latentscope
ours=target/release/latentscope

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds: latentscope" >&2
    RAYON_NUM_THREADS=$threads "$ours" bench train --device cpu --batch "$batch" --steps "$steps" --json >"$out/ours-$r.json"
    echo "round $r/$rounds: PyTorch" >&2
    "$venv/bin/python" scripts/pytorch_bench.py --batch "$batch" --steps "$steps" --threads "$threads" >"$out/torch-$r.txt"
done

"$venv/bin/python" - "$out" "$rounds" "$threads" "$batch" <<'PY'
import json, sys, statistics
out, rounds, threads, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ours, torch = {}, {}
for r in range(1, rounds + 1):
    for res in json.load(open(f"{out}/ours-{r}.json"))["results"]:
        ours.setdefault(res["model"], []).append(res["ms_per_step"])
    for line in open(f"{out}/torch-{r}.txt"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "ms/step":
            torch.setdefault(parts[0], []).append(float(parts[1]))
print(f"batch {batch}, {threads} threads, {rounds} interleaved rounds (ms/step per round)")
print(f"{'model':<8} {'latentscope':<22} {'PyTorch':<22} ratio (median)")
for model in ours:
    o, t = ours[model], torch.get(model, [])
    if not t:
        continue
    ratio = statistics.median(o) / statistics.median(t)
    fmt = lambda v: " ".join(f"{x:.3f}" for x in v)
    print(f"{model:<8} {fmt(o):<22} {fmt(t):<22} {ratio:.2f}x")
PY
