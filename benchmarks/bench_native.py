"""Benchmark: the native fused kernel (GEMM + mining transcript) against plain torch._int_mm (oneDNN).

    .venv/bin/python benchmarks/bench_native.py [--size 2048] [--threads N] [--repeats 5]

Prints one JSON object: torch._int_mm's best time / GOPS on the whole size^3 int8 product, and for each
configuration (r, tile) the native kernel's best time / GOPS and its ratio to torch._int_mm (higher is better;
1.0 = as fast as the plain product without the transcript). Best of --repeats runs each (after a warm-up run), all
in this process; the baseline is measured before and after the kernels and the better time is used.

"after_int_mm" times the first configuration when every run directly follows a torch._int_mm call: torch's
OpenMP (libgomp) workers keep spinning for a few milliseconds after each parallel op and take a core from the
kernel's threads unless OMP_WAIT_POLICY=passive is set before torch is imported.
"tickets" times the batch tile tickets (one per 16x16 tile of a size^2 output, 44-byte prefix) in C against the
hashlib reference, "add_noise" the fused A' = A + E_L·P, B' = B + Q·F_R (r = 64) against the int8-GEMM path of
pouw.noise_torch.noisy_operands; "recover" the one-pass c -= sum_i 128^i U_i V_i of pouw.recover (native
sub_correction) against its torch path on the real correction operands; all checked bit-exact. --no-gemm skips the
GEMM part.
`loadavg_before` > ~0.5 means something else was running on this (2-core) machine: numbers unreliable.

--avx2-loops: only the AVX2 kernel's two inner loops (vpmaddubsw "int", fp32 FMA "fp32"), each with the transcript
(r = 64, 16x16 tiles) and without (the plain GEMM, r = 1024), rounds interleaved so host drift hits both alike;
every product checked exact. (On an AVX-512 machine the AVX2 code is the same: it is compiled with -mno-avx512f.)
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


def bench_aux(a: torch.Tensor, b: torch.Tensor, threads: int, repeats: int) -> dict:
    """Tile tickets and add_noise: native vs the Python / torch paths they replace."""
    from kernels.base import tile_tickets_reference
    from kernels.cpu import int_mm
    from pouw.noise import Seeds
    from pouw.noise_torch import full_noise, noisy_operands

    n = a.shape[0]
    out: dict = {}
    gen = torch.Generator().manual_seed(1)
    tiles = max(1, n // 16)
    msgs = torch.randint(-(2**31), 2**31 - 1, (tiles, tiles, 16), generator=gen, dtype=torch.int32)
    prefix = bytes(range(44))
    t_ref = best_of(lambda: tile_tickets_reference(prefix, msgs), 1)
    tk = {"tiles": tiles * tiles, "hashlib_ms": round(t_ref * 1e3, 3)}
    if native_loader.has_tickets():
        exact = bool(torch.equal(native_loader.tile_tickets(prefix, msgs), tile_tickets_reference(prefix, msgs)))
        t = best_of(lambda: native_loader.tile_tickets(prefix, msgs, threads=threads), repeats * 4)
        t1 = best_of(lambda: native_loader.tile_tickets(prefix, msgs, threads=1), repeats * 4)
        tk.update({"native_ms": round(t * 1e3, 3), "native_1thread_ms": round(t1 * 1e3, 3), "exact": exact})
    else:
        tk["native"] = "unavailable (built without OpenSSL)"
    out["tickets"] = tk
    r = 64
    nz = full_noise(Seeds(b"j" * 32, b"a" * 32, b"b" * 32), n, a.shape[1], b.shape[1], r)
    a64 = (a >> 1).contiguous()  # operands in [-64, 63], as the contract wants
    b64 = (b >> 1).contiguous()
    want = noisy_operands(a64, b64, nz, int_mm)
    run = lambda fp: native_loader.add_noise(
        a64,
        b64,
        nz.e_l,
        nz.f_r,
        *nz.maps,
        threads=threads,  # noqa: E731
        force_portable=fp,
    )
    got, got_p = run(False), run(True)
    exact = all(torch.equal(x, y) for x, y in zip((*got, *got_p), (*want, *want)))
    out["add_noise"] = {
        "r": r,
        "path": native_loader.noise_path(r),
        "exact": exact,
        "native_ms": round(best_of(lambda: run(False), repeats * 4) * 1e3, 3),
        "portable_ms": round(best_of(lambda: run(True), repeats) * 1e3, 3),
        "torch_gemm_ms": round(best_of(lambda: noisy_operands(a64, b64, nz, int_mm), repeats) * 1e3, 3),
    }
    out["recover"] = bench_recover(a64, want[1], nz, threads, repeats)
    return out


def bench_recover(a64: torch.Tensor, b_noisy: torch.Tensor, nz, threads: int, repeats: int) -> dict:
    """c -= sum_i 128^i U_i V_i (pouw.recover): the native one-pass sub_correction against the torch path
    (int8 GEMMs + scaled adds + subtract, as pouw.recover.recover does), on the real operands."""
    from kernels.cpu import int_mm
    from pouw.recover import correction_operands

    pairs = correction_operands(a64, b_noisy, nz, int_mm)
    m, n = a64.shape[0], b_noisy.shape[1]
    gen = torch.Generator().manual_seed(2)
    c0 = torch.randint(-(2**30), 2**30, (m, n), generator=gen, dtype=torch.int32)

    def torch_path(c):
        total = None
        for i, (u, v) in enumerate(pairs):
            term = int_mm(u, v)
            total = term if total is None else total.add_(term, alpha=128**i)
        return c.sub_(total)

    rec: dict = {
        "pairs": len(pairs),
        "w": [int(u.shape[1]) for u, _ in pairs],
        "operands_ms": round(best_of(lambda: correction_operands(a64, b_noisy, nz, int_mm), repeats) * 1e3, 3),
    }
    c = c0.clone()
    rec["torch_ms"] = round(best_of(lambda: torch_path(c), repeats * 2) * 1e3, 3)
    if native_loader.has_sub_correction():
        want = torch_path(c0.clone())
        got = native_loader.sub_correction(c0.clone(), pairs, threads=threads)
        rec["exact"] = bool(torch.equal(got, want))
        rec["native_ms"] = round(
            best_of(lambda: native_loader.sub_correction(c, pairs, threads=threads), repeats * 4) * 1e3, 3
        )
        rec["native_1thread_ms"] = round(
            best_of(lambda: native_loader.sub_correction(c, pairs, threads=1), repeats * 2) * 1e3, 3
        )
        macs = sum(m * int(u.shape[1]) * n for u, _ in pairs)
        rec["native_gops"] = round(2 * macs / (rec["native_ms"] * 1e-3) / 1e9, 1)
    else:
        rec["native"] = "unavailable (no AVX512-VNNI)"
    return rec


def bench_avx2_loops(n: int, threads: int, repeats: int, rounds: int = 3) -> dict:
    """Best ms of each AVX2 inner loop, fused (r = 64, 16 x 16 tiles) and plain (r = 1024, no transcript)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), generator=gen, dtype=torch.int8)
    want = (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)
    cases = {
        f"{loop}_{kind}": (
            lambda loop=loop, r=r, tr=tr: native_loader.noisy_matmul(
                a, b, r, 16, 16, kernel="avx2", loop=loop, threads=threads, transcript=tr
            )
        )
        for loop in ("int", "fp32")
        for kind, r, tr in (("fused", 64, True), ("plain", 1024, False))
    }
    best = {k: float("inf") for k in cases}
    best_cpu = dict(best)
    exact = {}
    for _ in range(rounds):
        for name, fn in cases.items():
            exact[name] = bool(torch.equal(fn()[0], want))
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
                best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
    ops = 2.0 * n**3
    # gops_per_cpu_s: per CPU-second of all threads, times the thread count (= GOPS on an idle host, robust on
    # a busy one)
    return {
        name: {
            "ms": round(t * 1e3, 3),
            "gops": round(ops / t / 1e9, 1),
            "cpu_ms": round(best_cpu[name] * 1e3, 3),
            "gops_per_cpu_s_x_threads": round(ops / best_cpu[name] * threads / 1e9, 1),
            "exact": exact[name],
        }
        for name, t in best.items()
    } | {"default_loop": native_loader.avx2_loop()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="default: torch.get_num_threads()")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--configs", default=None, help="comma list of r:h:w, e.g. 64:16:16,128:8:8")
    ap.add_argument("--no-gemm", action="store_true", help="only the tickets / add_noise timings")
    ap.add_argument("--avx2-loops", action="store_true", help="only the AVX2 kernel's two inner loops")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.avx2_loops:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        print(
            json.dumps(
                {
                    "size": args.size,
                    "threads": threads,
                    "loadavg_before": load,
                    "avx2": bench_avx2_loops(args.size, threads, args.repeats),
                },
                indent=2,
            )
        )
        return 0
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
    t_base = float("inf") if args.no_gemm else best_of(base, args.repeats)
    if native_loader.available():
        result.update(bench_aux(a, b, threads, args.repeats))
    if args.no_gemm:
        pass
    elif not native_loader.available():
        result["native_unavailable_reason"] = native_loader.unavailable_reason()
    else:
        result["native_path"] = native_loader.kernel_path(n, n, n, *configs[0])
        c_ref = torch._int_mm(a, b)
        runs = []
        for r, h, w in configs:
            kern = lambda: native_loader.noisy_matmul(a, b, r, h, w, threads=threads)  # noqa: E731
            c, _ = kern()
            exact = bool(torch.equal(c, c_ref))  # C' must equal the plain product
            t = best_of(kern, args.repeats)
            runs.append(
                {
                    "r": r,
                    "tile": f"{h}x{w}",
                    "ms": round(t * 1e3, 3),
                    "gops": round(ops / t / 1e9, 1),
                    "c_matches_int_mm": exact,
                }
            )
        t_base = min(t_base, best_of(base, args.repeats))
        for run in runs:
            run["ratio_vs_int_mm"] = round(t_base * 1e3 / run["ms"], 3)
        result["native"] = runs
        r, h, w = configs[0]
        t_after = float("inf")
        for _ in range(args.repeats):
            base()
            t_after = min(t_after, timed(lambda: native_loader.noisy_matmul(a, b, r, h, w, threads=threads)))
        result["after_int_mm"] = {
            "r": r,
            "tile": f"{h}x{w}",
            "ms": round(t_after * 1e3, 3),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        }
    if not args.no_gemm:
        result["int_mm"] = {"ms": round(t_base * 1e3, 3), "gops": round(ops / t_base / 1e9, 1)}
    result["loadavg_before"] = load_before
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
