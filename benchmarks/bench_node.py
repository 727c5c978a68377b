"""`pouw bench node`: a running node's reported work rate over the benchmark's mining rate, in one run.

1. Benchmark: the filler pass the node mines (`pouw.miner.mine_job` on the node's filler shape and device,
   C not recovered, as `node.worker.FillerMiner` runs it): `--reps` back-to-back passes after warm-up; the
   best pass and the mean pass are both reported.
2. Node: an in-process node on a private copy of the network's config (same pow parameters and block time;
   `initial_block_work` set to the benchmark's rate times the block time, the difficulty the network
   converges to on this machine, so blocks come at the network's pace), mining with no peers for
   `--warmup` + `--seconds` seconds. Its `work_rate` is read from `GET /api/v1/status` at the end (the
   60 s window), and its steady rate as the MACs mined during the last `--seconds` over that time.
3. ratio = node work_rate / benchmark rate (best pass: the strict figure); ratio_mean against the mean pass.

The benchmark is timed again after the node stops, and the faster of the two runs is used: on a shared
machine the load changes while the node runs.

Run:  pouw bench node --network devnet --device cpu --seconds 60 --json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_pass(cfg, shape: tuple[int, int, int], device: str, reps: int) -> dict:
    """Filler passes on `shape` as the node mines them: best and mean seconds per pass."""
    import torch

    from kernels import get_backend
    from pouw.miner import filler_operands, mine_job, prepare_job

    params = cfg.pow.params()
    backend = get_backend(device)
    dev = backend.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    a, b = filler_operands(b"bench-node", shape)
    prep = prepare_job(a, b, params)
    target = (1 << 256) // (params.tile_work(shape[1]) * 64)    # ~1 winning tile in 64, as a block's lottery

    def one(i: int) -> None:
        mine_job(b"bench-node-template" + i.to_bytes(8, "big"), prep.job, a, b, target, params, backend,
                 prepared=prep, recover_c=False, max_proofs=1, stage_sync=False)

    for i in range(3):
        one(i)
    sync()
    times = []
    t_all = time.perf_counter()
    for i in range(reps):
        t = time.perf_counter()
        one(1000 + i)
        sync()
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    return {"best_s": min(times), "mean_s": total / reps,
            "backend": backend.name + ("+native" if getattr(backend, "uses_native", False) else ""),
            "device": str(dev)}


def from_scratch(cfg, shape: tuple[int, int, int], device: str, reps: int) -> float:
    """Mean seconds of an attempt that builds its operands and commitments afresh (what every attempt cost
    before operands were reused across nonces): the reference for what reuse saves."""
    from dataclasses import replace as _replace

    from chain.block import NULL_JOB, Header
    from kernels import get_backend
    from node.worker import FillerMiner

    backend = get_backend(device)
    params = cfg.pow.params()
    h = Header(cfg.version, cfg.chain_id, 1, bytes(32), cfg.genesis_timestamp, 1, bytes(32), bytes(32), bytes(20),
               NULL_JOB, 0, b"")
    t = time.perf_counter()
    for i in range(reps):
        FillerMiner(cfg, params, shape).attempt(backend, _replace(h, height=1 + i), i)
    return (time.perf_counter() - t) / reps


def private_config(network: str, block_work: int) -> str:
    """The network's TOML with initial_block_work = block_work (and nothing else changed)."""
    from chain.config import CONFIG_DIRS
    path = Path(network)
    if not path.suffix:
        path = next(d / f"{network}.toml" for d in CONFIG_DIRS if (d / f"{network}.toml").exists())
    text = path.read_text()
    text, n = re.subn(r"(?m)^initial_block_work\s*=\s*\d+", f"initial_block_work = {block_work}", text)
    if n != 1:
        raise SystemExit(f"{path}: no initial_block_work line to set")
    return text


async def run_node(toml_path: Path, datadir: Path, device: str, shape, warmup: float, seconds: float) -> dict:
    import aiohttp

    from node.node import Node, NodeConfig

    conf = NodeConfig(datadir=datadir, network=str(toml_path), port=0, mine=True, device=device,
                      take_jobs=False, filler_shape=shape)
    node = Node(conf)
    await node.start()
    try:
        await asyncio.sleep(warmup)
        m = node.miner
        macs0, t0, h0 = m.rate.total_macs, time.monotonic(), node.chain.height
        att0, builds0 = m.filler.attempts, m.filler.builds
        await asyncio.sleep(seconds)
        macs1, t1 = m.rate.total_macs, time.monotonic()
        async with aiohttp.ClientSession() as s:
            async with s.get(node.url + "/api/v1/status") as r:
                status = await r.json()
        return {"work_rate": status["work_rate"], "steady_rate": (macs1 - macs0) / (t1 - t0),
                "blocks": node.chain.height - h0, "attempts": m.filler.attempts - att0,
                "operand_builds": m.filler.builds - builds0, "mining_state": status["mining"]["state"],
                "useful_fraction": status["mining"]["useful_fraction"], "height": node.chain.height,
                "node_uptime_s": status["uptime_s"]}
    finally:
        await node.stop()


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu() -> tuple[str, list[str]]:
    """CPU model name and the SIMD flags that pick a kernel (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = sorted(f for f in line.split(":", 1)[1].split()
                               if f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512vbmi",
                                        "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve"))
    except OSError:
        pass
    return model, flags


def run(network: str, device: str, shape_text: str | None, seconds: float, warmup: float, reps: int,
        progress: bool = True) -> dict:
    import torch

    from chain.config import load_config
    from node.worker import check_filler_shape, parse_shape

    def say(msg: str) -> None:
        if progress:
            print(f"[bench node] {msg}", file=sys.stderr, flush=True)

    cfg = load_config(network)
    shape = check_filler_shape(cfg, parse_shape(shape_text) if shape_text else cfg.pow.filler_shape)
    macs = shape[0] * shape[1] * shape[2]
    load_before = os.getloadavg()
    b1 = bench_pass(cfg, shape, device, reps)
    say(f"{cfg.name} filler {shape[0]}x{shape[1]}x{shape[2]} on {b1['device']} ({b1['backend']}): pass best "
        f"{b1['best_s'] * 1e3:.2f} ms, mean {b1['mean_s'] * 1e3:.2f} ms")
    scratch_s = from_scratch(cfg, shape, device, max(3, reps // 5))
    say(f"an attempt building its operands afresh: {scratch_s * 1e3:.2f} ms")
    block_work = max(cfg.initial_block_work, int(macs / b1["mean_s"] * cfg.target_block_time))
    with tempfile.TemporaryDirectory() as d:
        toml_path = Path(d) / f"{cfg.name}-bench.toml"
        toml_path.write_text(private_config(network, block_work))
        say(f"node mining for {warmup:.0f} + {seconds:.0f} s (block work {block_work / 1e9:.1f} GMAC)")
        nd = asyncio.run(run_node(toml_path, Path(d) / "node", device, shape, warmup, seconds))
    b2 = bench_pass(cfg, shape, device, reps)
    best_s = min(b1["best_s"], b2["best_s"])
    mean_s = min(b1["mean_s"], b2["mean_s"])
    bench_rate, bench_mean_rate = macs / best_s, macs / mean_s
    cpu = _cpu()
    out = {
        "benchmark": "node", "network": cfg.name, "device": b1["device"], "backend": b1["backend"],
        "filler_shape": list(shape), "threads": torch.get_num_threads(),
        "bench_pass_best_ms": round(best_s * 1e3, 3), "bench_pass_mean_ms": round(mean_s * 1e3, 3),
        "bench_rate_macs": round(bench_rate), "bench_mean_rate_macs": round(bench_mean_rate),
        "node_work_rate_macs": round(nd["work_rate"]), "node_steady_rate_macs": round(nd["steady_rate"]),
        "ratio": round(nd["work_rate"] / bench_rate, 4),
        "ratio_mean": round(nd["work_rate"] / bench_mean_rate, 4),
        "node_blocks": nd["blocks"], "node_attempts": nd["attempts"], "node_operand_builds": nd["operand_builds"],
        "node_state": nd["mining_state"], "seconds": seconds, "warmup_s": warmup, "reps": reps,
        "from_scratch_attempt_ms": round(scratch_s * 1e3, 3), "from_scratch_rate_macs": round(macs / scratch_s),
        "block_work": block_work, "commit": _commit(), "cpu": cpu[0], "cpu_flags": cpu[1],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
    }
    say(f"node work_rate {nd['work_rate'] / 1e9:.2f} GMAC/s (steady {nd['steady_rate'] / 1e9:.2f}), benchmark "
        f"{bench_rate / 1e9:.2f} GMAC/s best pass, {bench_mean_rate / 1e9:.2f} mean: ratio {out['ratio']:.3f} "
        f"(vs mean {out['ratio_mean']:.3f}); {nd['blocks']} blocks, {nd['attempts']} attempts, "
        f"{nd['operand_builds']} operand builds")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", default="devnet", help="config name or .toml (default devnet)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--filler-shape", default=None, metavar="MxKxN", help="default: the network's")
    p.add_argument("--seconds", type=float, default=60.0, help="node mining time measured (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="node mining time before measuring (default 5)")
    p.add_argument("--reps", type=int, default=50, help="benchmark passes (default 50)")
    p.add_argument("--json", action="store_true", help="print only the JSON object on stdout")


def main_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    out = run(args.network, args.device, args.filler_shape, args.seconds, args.warmup, args.reps)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    sys.exit(main_args(ap.parse_args()))
