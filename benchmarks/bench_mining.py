"""Mining throughput over plain int8 GEMM on the same device and shape, plus proof verification cost.

Run:  pouw bench mining --device cpu --size 2048 --json
Prints one JSON object: gemm_gops, pouw_gops, ratio (pouw/gemm), verify_ms, verify_speedup, and a breakdown.

The baseline is the best exact int8 GEMM the device can do. On a CPU: the fastest of torch._int_mm (B row- or
column-major), fp32 GEMM in exact k-chunks (kernels.cpu.fp32_mm) and the engine's own kernel with the transcript
off; a candidate whose product is not exact (oneDNN's AVX2 int8 GEMM saturates vpmaddubsw, for one) is reported
under "inexact" and not counted. `baseline` names the winner, `kernel_path` the GEMM the miner ran ("vnni",
"avx2" or "portable:<gemm>"), and the record carries the commit, the CPU model and its flags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kernels import get_backend
from kernels.native_loader import KERNELS as NATIVE_KERNELS
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams, largest_rank
from pouw.verify import verify_proof


def best_of(
    fn: Callable[[], object], reps: int, sync: Callable[[], None], warmup: int = 1, cpu_out: list[float] | None = None
) -> float:
    """Best wall-clock seconds of `reps` calls after `warmup`; cpu_out gets the best process CPU seconds (all
    threads), which a busy shared host inflates far less than wall time."""
    for _ in range(warmup):
        fn()
    sync()
    best = best_cpu = float("inf")
    for _ in range(reps):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    if cpu_out is not None:
        cpu_out.append(best_cpu)
    return best


def run(device: str, size: int, rank: int, tile: int, reps: int, progress: bool = True) -> dict:
    params = PowParams(rank=rank, tile_h=tile, tile_w=tile)
    backend = get_backend(device)
    dev = backend.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    m = k = n = size
    ops = 2 * m * k * n

    def say(msg: str) -> None:
        if progress:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    a, b = filler_operands(b"bench", (m, k, n))
    a_dev, b_dev = a.to(dev), b.to(dev)
    b_col = b_dev.t().contiguous().t()  # the same B, column-major
    say(f"device={dev} size={size} r={rank} tile={tile}x{tile}")
    # torch._int_mm with whichever layout of B it runs faster on (cuBLASLt wants B column-major), the
    # layout change not timed: the baseline is the best plain GEMM, not a handicapped one.
    cpu_s: dict[str, list[float]] = {"torch._int_mm": [], "engine_plain": [], "fp32_chunks": [], "mining": []}
    t_intmm_row = best_of(lambda: torch._int_mm(a_dev, b_dev), reps, sync, cpu_out=cpu_s["torch._int_mm"])
    t_intmm_col = best_of(lambda: torch._int_mm(a_dev, b_col), reps, sync, cpu_out=cpu_s["torch._int_mm"])
    t_intmm = min(t_intmm_row, t_intmm_col)
    say(
        f"torch._int_mm: {t_intmm * 1e3:.2f} ms ({ops / t_intmm / 1e12:.2f} TOPS; B row-major "
        f"{t_intmm_row * 1e3:.2f} ms, column-major {t_intmm_col * 1e3:.2f} ms)"
    )
    baselines = {"torch._int_mm": t_intmm}
    inexact: list[str] = []
    if dev.type == "cuda":
        # The engine's own kernel with noise, transcript and recovery switched off.
        from kernels.triton_kernel import noisy_matmul_triton, plain_config

        t_kernel = best_of(
            lambda: noisy_matmul_triton(a_dev, b_col, rank, tile, tile, config=plain_config(), transcript=False),
            reps,
            sync,
        )
        baselines["engine_plain"] = t_kernel
    else:
        from kernels.cpu import fp32_mm

        # the native kernel with the transcript off (the portable GEMM where no fused kernel runs)
        plain = backend.caps.plain_mm or backend.mm
        t_kernel = best_of(lambda: plain(a_dev, b_dev), reps, sync, cpu_out=cpu_s["engine_plain"])
        baselines["engine_plain"] = t_kernel
        baselines["fp32_chunks"] = best_of(lambda: fp32_mm(a_dev, b_dev), reps, sync, cpu_out=cpu_s["fp32_chunks"])
        say(f"fp32 GEMM in exact k-chunks: {baselines['fp32_chunks'] * 1e3:.2f} ms")
        inexact = inexact_gemms({"torch._int_mm": torch._int_mm, "engine_plain": plain, "fp32_chunks": fp32_mm}, k)
        for name in inexact:
            say(f"{name} is NOT exact on full-range int8 operands here: not a baseline")
    say(f"engine plain GEMM: {t_kernel * 1e3:.2f} ms")
    exact = {k: v for k, v in baselines.items() if k not in inexact}
    baseline = min(exact, key=exact.get)
    t_gemm = exact[baseline]
    say(f"baseline: {baseline} {t_gemm * 1e3:.2f} ms")

    t0 = time.perf_counter()
    prep = prepare_job(a, b, params)
    t_commit = time.perf_counter() - t0
    target = (1 << 256) // (params.tile_work(k) * 64)  # ~1 winning tile in 64, so there is a proof
    best: dict = {}

    def mine(stage_sync: bool) -> None:
        # next_template: with pipelined passes (POUW_CUDA_ASYNC=1) the next pass's inputs are made during this one
        r = mine_job(
            b"bench-template",
            prep.job,
            a,
            b,
            target,
            params,
            backend,
            prepared=prep,
            max_proofs=1,
            stage_sync=stage_sync,
            next_template=b"bench-template",
        )
        if stage_sync and ("res" not in best or r.timings["total"] < best["res"].timings["total"]):
            best["res"] = r

    # Timed as a miner runs it (no waits between stages); the breakdown comes from separate passes that wait
    # for the device after every stage (on a CPU both are the same thing).
    # Three untimed passes first: a miner's steady state. (The first passes of a process each fault in a fresh
    # 16 MiB C, ~4,100 page faults, until glibc's malloc keeps the freed block instead of unmapping it.)
    t_mine = best_of(lambda: mine(False), reps, sync, warmup=3, cpu_out=cpu_s["mining"])
    for _ in range(max(1, min(reps, 3))):
        mine(True)
    res = best["res"]
    say(
        f"useful-work mining: {t_mine * 1e3:.2f} ms; breakdown(ms) "
        + ", ".join(f"{k}={v * 1e3:.1f}" for k, v in res.timings.items())
    )
    if not torch.equal(res.c, backend.mm(a_dev, b_dev)):
        raise SystemExit("recovered C differs from plain GEMM: refusing to report")
    proof = res.proofs[0]
    t_verify = best_of(
        lambda: verify_proof(b"bench-template", prep.job, proof, target, params), max(reps, 20), lambda: None
    )
    say(f"verify one proof: {t_verify * 1e3:.3f} ms")
    cpu = _cpu_info() if dev.type == "cpu" else {}
    return {
        "device": str(dev),
        "device_name": (
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else cpu.get("model") or platform.processor() or platform.machine()
        ),
        "backend": backend.name + ("+native" if backend.kernel_path in NATIVE_KERNELS else ""),
        "kernel_path": backend.kernel_path,
        "avx2_loop": _avx2_loop(backend),
        "neon_loop": _neon_loop(backend),  # aarch64: "dot" (SDOT) or "mull" (vmull_s8)
        "threads": torch.get_num_threads(),
        "size": size,
        "rank": rank,
        "tile": [tile, tile],
        "baseline": baseline,
        "baselines_ms": {k: round(v * 1e3, 3) for k, v in baselines.items()},
        "inexact": inexact,
        "int_mm_ms": round(t_intmm * 1e3, 3),
        "int_mm_row_b_ms": round(t_intmm_row * 1e3, 3),
        "int_mm_col_b_ms": round(t_intmm_col * 1e3, 3),
        "engine_gemm_ms": round(t_kernel * 1e3, 3),
        "gemm_gops": round(ops / t_gemm / 1e9, 2),
        "gemm_tops": round(ops / t_gemm / 1e12, 3),
        "pouw_ms": round(t_mine * 1e3, 3),
        "pouw_gops": round(ops / t_mine / 1e9, 2),
        "pouw_tops": round(ops / t_mine / 1e12, 3),
        "ratio": round(t_gemm / t_mine, 4),
        # CPU: the same ratio in process CPU seconds (all threads; robust on a shared host), baseline = the
        # exact candidate with the least CPU time
        **(_cpu_ratio(cpu_s, inexact) if dev.type == "cpu" else {}),
        "breakdown_ms": {k: round(v * 1e3, 3) for k, v in res.timings.items()},
        "commit_ms": round(t_commit * 1e3, 3),
        "verify_ms": round(t_verify * 1e3, 4),
        "verify_speedup": round(t_mine / t_verify, 1),
        "proof_bytes": len(proof.encode()),
        "kernel_config": _kernel_config(dev, rank, tile),
        "fused_kernel": backend.kernel_path,  # CUDA: "triton" or "cuda" (POUW_CUDA_KERNEL); CPU: as kernel_path
        "async_pass": backend.caps.async_pass,  # pipelined passes (POUW_CUDA_ASYNC=1)
        "torch": torch.__version__,
        "commit": _commit(),
        "cpu_model": cpu.get("model"),
        "cpu_flags": cpu.get("flags"),
        "env": {
            k: os.environ[k]
            for k in (
                "POUW_NATIVE",
                "POUW_PORTABLE_GEMM",
                "ONEDNN_MAX_CPU_ISA",
                "MKL_ENABLE_INSTRUCTIONS",
                "OMP_WAIT_POLICY",
                "POUW_CUDA_KERNEL",
                "POUW_CUDA_ASYNC",
            )
            if k in os.environ
        },
    }


def _cpu_ratio(cpu_s: dict[str, list[float]], inexact: list[str]) -> dict:
    base = {k: min(v) for k, v in cpu_s.items() if k != "mining" and v and k not in inexact}
    name = min(base, key=base.get)
    mine = min(cpu_s["mining"])
    return {
        "cpu_baseline": name,
        "cpu_ms": {k: round(v * 1e3, 3) for k, v in base.items()} | {"mining": round(mine * 1e3, 3)},
        "ratio_cpu": round(base[name] / mine, 4),
    }


def inexact_gemms(gemms: dict[str, Callable], k: int, seed: int = 0) -> list[str]:
    """Names of the CPU GEMMs whose 256 x k x 256 product of full-range int8 operands (the filler's [-64, 63]
    would not show a saturating one; 127 rows and columns give the largest pair sums) differs from fp64's, which
    is exact here (|sums| < 2^53)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(-127, 128, (256, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (k, 256), generator=gen, dtype=torch.int8)
    a[0], b[:, 0] = 127, 127
    want = (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)
    return [name for name, fn in gemms.items() if not torch.equal(fn(a, b), want)]


def _cpu_info() -> dict:
    """The CPU's model name and feature flags (Linux /proc/cpuinfo; else platform's guess, no flags). aarch64
    kernels print no model name: the model is then "<machine> implementer 0x.. part 0x.." (0x41 / 0xd0c: Arm
    Neoverse N1, 0xd40: V1, 0xd4f: V2; 0xc0 / 0xac3: Ampere One; 0x61: Apple)."""
    info: dict = {"model": platform.processor() or platform.machine(), "flags": None}
    arm: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if not key and info["flags"] is not None:
                    break  # the end of the first processor's block
                if key == "model name" and info["flags"] is None:
                    info["model"] = val.strip()
                elif key in ("flags", "Features") and info["flags"] is None:
                    info["flags"] = val.split()
                elif key in ("CPU implementer", "CPU part"):
                    arm.setdefault(key, val.strip())
    except OSError:
        pass
    if arm and info["model"] in ("", platform.machine(), platform.processor()):
        info["model"] = (
            f"{platform.machine()} implementer {arm.get('CPU implementer', '?')} part {arm.get('CPU part', '?')}"
        )
    return info


def _commit() -> str | None:
    """The checkout's git commit (with "-dirty" when it has changes), None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _avx2_loop(backend) -> str | None:
    if backend.kernel_path != "avx2":
        return None
    from kernels import native_loader

    return native_loader.avx2_loop()


def _neon_loop(backend) -> str | None:
    if backend.kernel_path != "neon":
        return None
    from kernels import native_loader

    return native_loader.neon_loop()


def _kernel_config(dev: torch.device, rank: int, tile: int) -> str | None:
    """The fused kernel's launch config on CUDA (POUW_TRITON_CONFIG or the default), for the record."""
    if dev.type != "cuda":
        return None
    from kernels.triton_kernel import default_config

    return repr(default_config(rank, tile, tile))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--size", type=int, default=2048, help="m = k = n (default 2048)")
    p.add_argument("--rank", type=int, default=64, help="noise rank r = fold interval (default 64)")
    p.add_argument("--tile", type=int, default=16, help="square tile side (default 16)")
    p.add_argument("--reps", type=int, default=5, help="repetitions, best is reported (default 5)")
    p.add_argument("--json", action="store_true", help="print only the JSON object on stdout")


def args_error(size: int, rank: int, tile: int) -> str | None:
    """Why these options cannot run (one line: the rule, the smallest size or a rank that fits), or None."""
    try:
        params = PowParams(rank=rank, tile_h=tile, tile_w=tile)
    except ValueError as e:
        return f"--rank {rank} --tile {tile}: {e}"
    err = params.square_size_error(size)
    if err is not None and size < params.min_k:
        r = largest_rank(size)
        err += f": use --size {params.min_k} or more" + (f", or --rank {r}" if r is not None else "")
    return err


def main_args(args: argparse.Namespace) -> int:
    err = args_error(args.size, args.rank, args.tile)
    if err is not None:
        print(f"pouw bench mining: {err}", file=sys.stderr)
        return 2
    out = run(args.device, args.size, args.rank, args.tile, args.reps, progress=True)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    sys.exit(main_args(ap.parse_args()))
