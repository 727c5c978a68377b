#!/usr/bin/env bash
# The mining benchmark on every CPU kernel kind this machine runs, interleaved, RUNS times each, JSON lines into
# $OUT (default benchmarks/results/cpu-<date>-<host>/mining-<kind>.jsonl). Kinds: "vnni" (POUW_NATIVE=vnni),
# "avx2" (POUW_NATIVE=avx2 with oneDNN and MKL held to AVX2 as well: on an AVX-512 machine a stand-in for an
# AVX2-only CPU; bench_mining checks every baseline for exactness, and oneDNN's AVX2 int8 GEMM is not exact),
# "neon" (POUW_NATIVE=neon: aarch64; each JSON line records kernel_path "neon", neon_loop "dot" (SDOT) or "mull",
# the CPU's implementer / part and Features) and "portable" (POUW_NATIVE=off).
# Usage: bash benchmarks/cpu_kinds.sh [extra bench_mining args, e.g. --size 4096]; on an ARM machine
# `bash benchmarks/cpu_kinds.sh --size 2048` gives the aarch64 rows of benchmarks/RESULTS.md.
# Env: RUNS (default 3), KINDS (default: the kernels kernels.native_loader.cpu_kernels() names, then portable).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
RES=${OUT:-benchmarks/results/cpu-$(date +%Y%m%d)-$(hostname -s)}
mkdir -p "$RES"
KINDS=${KINDS:-"$($PY -c 'from kernels.native_loader import cpu_kernels; print(" ".join(cpu_kernels()))') portable"}
for run in $(seq 1 "${RUNS:-3}"); do
  for kind in $KINDS; do
    case $kind in
      avx2) envs=(POUW_NATIVE=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2) ;;
      portable) envs=(POUW_NATIVE=off) ;;
      *) envs=(POUW_NATIVE="$kind") ;;
    esac
    echo "== run $run kind $kind: ${envs[*]} $*" >&2
    env "${envs[@]}" timeout "${BENCH_S:-900}" $PY -m benchmarks.bench_mining --device cpu --json "$@" \
      >> "$RES/mining-$kind.jsonl"
  done
done
echo "results in $RES" >&2
