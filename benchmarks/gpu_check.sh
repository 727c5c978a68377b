#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: run the GPU tests, then the mining benchmark at 8192^3 and 2048^3.
# Usage: bash benchmarks/gpu_check.sh [cuda:N]   (writes JSON lines to benchmarks/results/gpu-<date>.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cuda:0}
mkdir -p benchmarks/results
OUT=benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S).jsonl
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT.txt" || true
.venv/bin/python -m pytest -q -m gpu tests/ 2>&1 | tail -5
for size in 8192 2048; do
  .venv/bin/pouw bench mining --device "$DEV" --size "$size" --json | tee -a "$OUT"
done
