"""Benchmark: the native fused kernel (GEMM + mining transcript) against plain torch._int_mm (oneDNN).

    .venv/bin/python benchmarks/bench_native.py [--size 2048] [--threads N] [--repeats 5]

Prints one JSON object: torch._int_mm's best time / GOPS on the whole size^3 int8 product, and for each
configuration (r, tile) the native kernel's best time / GOPS and its ratio to torch._int_mm (higher is better;
1.0 = as fast as the plain product without the transcript). Best of --repeats runs each, all in this process.
The two are timed alternately (one torch._int_mm run, one kernel run, per round) so that both see the same machine
conditions; each ratio uses the baseline measured in the same rounds. `loadavg_before` > ~0.5 means something else
was running on this (2-core) machine and the numbers are unreliable.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kernels import native_loader  # noqa: E402

CONFIGS = [(64, 16, 16), (128, 16, 16), (64, 8, 8), (128, 8, 8), (32, 16, 16), (64, 4, 4)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (page faults, thread start-up, lazy init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="default: torch.get_num_threads()")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--configs", default=None, help="comma list of r:h:w, e.g. 64:16:16,128:8:8")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    n = args.size
    configs = CONFIGS
    if args.configs:
        configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    ops = 2.0 * n * n * n

    result: dict = {
        "size": n,
        "threads": threads,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "native_available": native_loader.available(),
    }
    base = lambda: torch._int_mm(a, b)  # noqa: E731
    base()
    t_base_all = float("inf")
    if not native_loader.available():
        result["native_unavailable_reason"] = native_loader.unavailable_reason()
        t_base_all = best_of(base, args.repeats)
    else:
        result["native_path"] = native_loader.kernel_path(n, n, n, *configs[0])
        c_ref = torch._int_mm(a, b)
        runs = []
        for r, h, w in configs:
            kern = lambda: native_loader.noisy_matmul(a, b, r, h, w, threads=threads)  # noqa: E731
            c, _ = kern()  # warm-up, and the exactness check of C' against torch._int_mm
            exact = bool(torch.equal(c, c_ref))
            t_b = t_k = float("inf")
            for _ in range(args.repeats):  # alternate: both see the same machine conditions
                t_b = min(t_b, timed(base))
                t_k = min(t_k, timed(kern))
            t_base_all = min(t_base_all, t_b)
            runs.append({"r": r, "tile": f"{h}x{w}", "ms": round(t_k * 1e3, 3), "gops": round(ops / t_k / 1e9, 1),
                         "c_matches_int_mm": exact, "int_mm_ms_same_rounds": round(t_b * 1e3, 3),
                         "ratio_vs_int_mm": round(t_b / t_k, 3)})
        result["native"] = runs
    result["int_mm"] = {"ms": round(t_base_all * 1e3, 3), "gops": round(ops / t_base_all / 1e9, 1)}
    result["loadavg_before"] = load_before
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
