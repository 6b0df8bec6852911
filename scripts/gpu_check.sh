#!/usr/bin/env bash
# The prepared GPU check (issue 11): run it when a machine with an NVIDIA GPU is lent.
#
#   scripts/gpu_check.sh [bench] [agree] [full]     # default: all three, in this order
#
# - bench: `bench train` at batch 32 and 256 on cuda, then on the CPU, in the same run.
# - agree: a small run (5,000 training images, 2 epochs per model) on the CPU and on cuda;
#   prints both runs' test MSE and best purity and fails when they differ by more than the
#   tolerance (CUDA is reproducible run to run, not bitwise equal to the CPU).
# - full: the full default pipeline on cuda, timed (wall clock and the training stages).
#
# The binary: $LATENTSCOPE_BIN if set (a `--features cuda` build made elsewhere, e.g. with
# CUDA_COMPUTE_CAP=90 on a machine without the GPU), else `cargo build --release --features
# cuda` here (needs nvcc). Results go to ${OUT:-gpu-check}/ as text and JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
steps=${STEPS:-300}
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(bench agree full)

bin=${LATENTSCOPE_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release -q --features cuda -p latentscope --bin latentscope
    bin=target/release/latentscope
fi
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv | tee "$out/gpu.txt"

# Every stage the run computed, with its device and wall time.
stage_times() {
    python3 - "$1" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1]))
for sid, rec in sorted(lock["stages"].items()):
    print(f"{sid:40} {rec.get('device', '-'):6} {rec.get('wall_time_s', 0):8.1f} s")
PY
}

for section in "${sections[@]}"; do
    case "$section" in
    bench)
        "$bin" bench train --device cuda --steps "$steps" --batch 32,256 --json | tee "$out/bench-cuda.json"
        "$bin" bench train --device cpu --steps "$steps" --batch 32,256 --json | tee "$out/bench-cpu.json"
        ;;
    agree)
        for device in cpu cuda; do
            art="$out/agree-$device"
            rm -rf "$art"
            "$bin" pipeline run --artifacts "$art" --set device=$device --set train.limit=5000 \
                --set models.simple.epochs=2 --set models.conv.epochs=2 score 2>&1 | tail -3
            "$bin" pipeline metrics --artifacts "$art" --json >"$out/metrics-$device.json"
        done
        python3 - "$out/metrics-cpu.json" "$out/metrics-cuda.json" <<'PY'
import json, sys
cpu, gpu = (json.load(open(p)) for p in sys.argv[1:3])
def numbers(m):
    for model in m["models"]:
        for run in model["runs"]:
            at = f"{model['dataset']}-{model['model']}-s{run['training_seed']}"
            yield f"{at} test_mse", run["test_mse"]
            yield f"{at} mean purity", run["purity"]["mean"]
            yield f"{at} label-free purity", run["label_free"]["purity"]
a, b = dict(numbers(cpu)), dict(numbers(gpu))
keys = sorted(k for k in a if k in b)
bad = []
for k in keys:
    tol = 2e-3 if k.endswith("test_mse") else 0.02
    print(f"{k:45} cpu {a[k]:.5f}  cuda {b[k]:.5f}")
    if abs(a[k] - b[k]) > tol:
        bad.append(k)
if not keys:
    sys.exit("no test_mse or purity in the metrics")
if bad:
    sys.exit(f"CPU and CUDA disagree on {bad}")
print(f"CPU and CUDA agree on {len(keys)} numbers")
PY
        ;;
    full)
        art="$out/full-cuda"
        rm -rf "$art"
        start=$(date +%s)
        "$bin" pipeline run --artifacts "$art" --set device=cuda 2>&1 | tail -5
        echo "full default pipeline on cuda: $(($(date +%s) - start)) s" | tee "$out/full.txt"
        stage_times "$art/pipeline.lock" | tee -a "$out/full.txt"
        nvidia-smi --query-gpu=memory.used --format=csv | tee -a "$out/full.txt"
        ;;
    *)
        echo "unknown section $section (bench, agree, full)" >&2
        exit 2
        ;;
    esac
done
