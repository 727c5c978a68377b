#!/usr/bin/env bash
# All the device work of issue 12 in one run of a few minutes, on a machine with an NVIDIA GPU:
#   1. preflight: GPU, torch, triton, CuPy and its NVRTC (the hand-written kernel is built through them), and
#      whether the installed CuPy wheel is the one for torch's CUDA major (kernels.cuda_mma.cupy_wheel);
#   2. the GPU tests (pytest -m gpu), the mma.sync kernel's against kernels.reference and Triton among them, and
#      tests/test_cuda_pipeline_interpreted.py's count of host round trips in a pass (<= 3 by default, <= 1 with
#      POUW_CUDA_ASYNC=1), each pass bit-identical to the CPU backend's;
#   3. the fused kernels alone (benchmarks/bench_cuda_kernel.py): the CUDA kernel's bit-exactness against the CPU
#      path and Triton, and the TOPS of torch._int_mm, Triton and the CUDA kernel (plain, transcript,
#      transcript + recovery) at 4096^3, 8192^3 and 16384^3;
#   4. the whole mining pass (benchmarks/bench_mining.py) at the same sizes with the Triton default, with
#      POUW_CUDA_KERNEL=cuda, and with the pipelined pass (POUW_CUDA_ASYNC=1: the next attempt's inputs on a second
#      stream, winners in one copy; opt-in until this shows it faster, with the tests above showing it exact);
#      then the node's own filler loop, pipelined (`pouw bench node --device cuda`, 4096^3): node.json;
#   5. on sm_90 only, the wgmma kernel: its GPU tests and benchmarks/bench_wgmma.py (checks, TOPS, ratios;
#      ONLY=wgmma runs just this and the preflight);
#   6. summary.md: device name, TOPS of every kernel and pass, ratios, and each exact command.
#   (EXPLORE=1 adds the Triton block-config exploration of benchmarks/gpu_explore.py.)
# Usage: bash benchmarks/gpu_check.sh     results go to $OUT (if set) or benchmarks/results/gpu-<date>/
# Each step has its own time limit (seconds: TESTS_S, KERNELS_S, BENCH_S), so one slow step cannot hide the others.
# Uses .venv/bin/python when present, else python3. Wheels in .whl/ are installed into /tmp/site first. The lent
# GPU machines (2026-11: Python 3.12, torch 2.11+cu130, triton 3.6) lack `cryptography` and CuPy; fetch them first,
# with the CuPy wheel of torch's CUDA major (pyproject's extras: cuda13 = cupy-cuda13x for a +cu13x torch, as on
# the lent machines; cuda12 = cupy-cuda12x for +cu12x; the preflight says if the wrong one came along):
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl cryptography cffi pycparser \
#     cupy-cuda13x cuda-pathfinder      (CuPy finds libnvrtc in the nvidia-cuda-nvrtc wheel torch cu130 brings)
# and carry .whl with the call. Without a GPU every step reports that and the script exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
RES=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
SIZES=${SIZES:-4096 8192 16384}
mkdir -p "$RES"
echo "bash benchmarks/gpu_check.sh (SIZES='$SIZES', git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))" > "$RES/command.txt"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; timeout "$limit" "$@"; local rc=$?; echo "== rc=$rc"; return $rc; }

if ! nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader \
    | tee "$RES/gpu.txt"; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed); nothing to measure" | tee "$RES/summary.md"
  exit 2
fi
step 60 $PY - <<'PYEOF' 2>&1 | tee "$RES/preflight.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0),
      "capability", torch.cuda.get_device_capability(0))
try:
    import triton
    print("triton", triton.__version__)
except ImportError as e:
    print("triton MISSING:", e)
from kernels.cuda_mma import cupy_wheel, import_cupy, installed_cupy
try:
    print("cupy wheel for torch's CUDA", torch.version.cuda, "is", cupy_wheel(torch.version.cuda)[0],
          "; installed:", installed_cupy() or "none")
    cupy = import_cupy(torch.version.cuda)
    print("cupy", cupy.__version__, "nvrtc", cupy.cuda.nvrtc.getVersion())
except Exception as e:  # the CUDA kernel's steps will report the same error
    print("cupy/nvrtc MISSING or MISMATCHED:", type(e).__name__, e)
PYEOF

# ---- the sm_90a wgmma kernel (kernels/cuda_wgmma.py; skipped below compute capability 9.0): its GPU tests, then
# benchmarks/bench_wgmma.py (bit-exactness against the CPU path on shapes with tails, then TOPS and ratios of
# wgmma, mma.sync, Triton and torch._int_mm at WGMMA_SIZES). Run last, so a hang in this never-run kernel costs
# only its own time limits (WGMMA_TESTS_S, WGMMA_S); ONLY=wgmma runs this section alone (a few minutes).
wgmma_section() {
  echo "python -m pytest -q -m gpu tests/test_cuda_wgmma.py; python -m benchmarks.bench_wgmma --sizes ${WGMMA_SIZES:-4096,8192} --out $RES" >> "$RES/command.txt"
  step "${WGMMA_TESTS_S:-90}" $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_wgmma.py 2>&1 \
    | tee "$RES/pytest_wgmma.txt"
  step "${WGMMA_S:-180}" $PY -m benchmarks.bench_wgmma --sizes "${WGMMA_SIZES:-4096,8192}" --out "$RES" 2>&1 \
    | tee "$RES/wgmma.txt"
}
if [ "${ONLY:-}" = wgmma ]; then
  echo "(ONLY=wgmma: the preflight and this section only)" >> "$RES/command.txt"
  wgmma_section
  { cat "$RES/command.txt"; echo; cat "$RES/wgmma.md" 2>/dev/null || echo "no wgmma.md: see wgmma.txt"; } \
    | tee "$RES/summary.md"
  exit 0
fi

step "${TESTS_S:-150}" $PY -m pytest -q -m gpu -p no:cacheprovider ${GPU_TESTS:-tests/test_cuda_mma.py \
  tests/test_pouw_engine.py tests/test_triton_kernel.py tests/test_triton_chacha.py tests/test_triton_noise.py \
  tests/test_triton_sha256.py tests/test_cuda_pipeline_interpreted.py} 2>&1 | tee "$RES/pytest.txt"

step "${KERNELS_S:-240}" $PY -m benchmarks.bench_cuda_kernel --sizes "$(echo $SIZES | tr ' ' ,)" --out "$RES" 2>&1 \
  | tee "$RES/kernels.txt"

for size in $SIZES; do
  reps=5; [ "$size" -ge 16384 ] && reps=3
  for mode in triton:0 cuda:0 triton:1; do   # kernel:POUW_CUDA_ASYNC
    kernel=${mode%:*} async=${mode#*:}
    echo "POUW_CUDA_KERNEL=$kernel POUW_CUDA_ASYNC=$async python -m benchmarks.bench_mining --device cuda" \
      "--reps $reps --json --size $size" >> "$RES/command.txt"
    POUW_CUDA_KERNEL=$kernel POUW_CUDA_ASYNC=$async step "${BENCH_S:-100}" $PY -m benchmarks.bench_mining \
      --device cuda --reps $reps --json --size "$size" 2> >(tee -a "$RES/mining.log" >&2) | tee -a "$RES/mining.jsonl"
  done
done

# the node's own loop (pipelined filler attempts, header nonces): its work_rate over bench mining's, in one run
echo "POUW_CUDA_ASYNC=1 python -m node.cli bench node --device cuda --filler-shape 4096x4096x4096 --seconds 20 --warmup 3 --rounds 10 --no-api-window --json" >> "$RES/command.txt"
POUW_CUDA_ASYNC=1 step "${NODE_S:-120}" $PY -m node.cli bench node --device cuda --filler-shape 4096x4096x4096 \
  --seconds 20 --warmup 3 --rounds 10 --no-api-window --json 2> >(tee -a "$RES/node.log" >&2) | tee "$RES/node.json"

if [ "${EXPLORE:-0}" = 1 ]; then
  step "${EXPLORE_S:-60}" $PY -m benchmarks.gpu_explore --size 8192 --out "$RES/explore.jsonl" \
    --deadline $(( ${EXPLORE_S:-60} - 15 ))
fi

wgmma_section

$PY -m benchmarks.gpu_summary "$RES" | tee "$RES/summary.md"
[ -f "$RES/wgmma.md" ] && { echo; cat "$RES/wgmma.md"; } | tee -a "$RES/summary.md"
