"""`pouw bench node`: a running node's work rate over the benchmark's mining rate, measured in one run.

- Benchmark: the filler pass the node mines (`pouw.miner.mine_job` on the node's filler shape and device, C not
  recovered, at the node's block target, as `node.engine.FillerMiner` runs it), timed pass by pass; the mean
  and the best pass are reported.
- Node: an in-process node on a private copy of the network's config (same pow parameters and block time;
  `initial_block_work` set to a first benchmark's rate times the block time, the difficulty the network
  converges to on this machine, so blocks and template changes come at the network's pace) mining with no
  peers.
- Interleaved, because the machine may be shared and its speed drift: after `--warmup` s of mining, `--rounds`
  rounds of (the node mines `--seconds / --rounds` s; its miner is paused; benchmark passes for
  `--bench-share` of that time, in a thread of the same process while the node's event loop keeps running). The
  node's rate is its miner's counted MACs (the counter behind `work_rate`) over the time from resuming to
  paused (the attempt in progress when the pause comes is counted); `ratio` = node rate / benchmark mean
  rate, `ratio_best` against the best single pass (strict: a mean never reaches a best).
- Then (unless `--no-api-window`) the node mines one full work-rate window (60 s) without pauses, and
  `api_work_rate` is `GET /api/v1/status`'s `work_rate` at its end: the reported figure itself;
  `ratio_api` = api_work_rate / benchmark mean rate (one more benchmark burst follows it; not interleaved,
  so load drift on a shared machine moves it), `api_over_counted` = api_work_rate / the MACs the miner
  counted during that window over its length (1.0: the API reports what the node mined).
- `from_scratch_*`: an attempt that builds its operands and commitments afresh (every attempt before the
  header nonce), for what reuse saves.

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


class Bench:
    """Filler passes on `shape` as the node mines them, timed one by one."""

    def __init__(self, cfg, shape: tuple[int, int, int], device: str):
        import torch

        from kernels import get_backend
        from pouw.miner import filler_operands, prepare_job

        self.params = cfg.pow.params()
        self.backend = get_backend(device)
        dev = self.backend.device
        self.sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        a, b = filler_operands(b"bench-node", shape)
        self.prep = prepare_job(a, b, self.params)
        self.target = 1  # set to the node's block target before the timed passes (winners are as rare)
        self.times: list[float] = []
        self.i = 0
        self.burst(0.05, record=False)

    def one(self) -> None:
        from pouw.miner import mine_job

        self.i += 1
        mine_job(
            b"bench-node-template" + self.i.to_bytes(8, "big"),
            self.prep.job,
            self.prep.a,
            self.prep.b,
            self.target,
            self.params,
            self.backend,
            prepared=self.prep,
            recover_c=False,
            max_proofs=1,
            stage_sync=False,
        )

    def burst(self, seconds: float, record: bool = True) -> None:
        """One untimed pass (this thread's buffers), then timed passes until `seconds` have passed."""
        self.one()
        self.sync()
        end = time.perf_counter() + seconds
        while True:
            t = time.perf_counter()
            self.one()
            self.sync()
            if record:
                self.times.append(time.perf_counter() - t)
            if t >= end:
                return

    @property
    def name(self) -> str:
        from kernels.native_loader import KERNELS as NATIVE_KERNELS

        return self.backend.name + ("+native" if self.backend.kernel_path in NATIVE_KERNELS else "")


def from_scratch(cfg, shape: tuple[int, int, int], device: str, reps: int) -> float:
    """Mean seconds of an attempt that builds its operands and commitments afresh (what every attempt cost
    before operands were reused across nonces): the reference for what reuse saves."""
    from dataclasses import replace as _replace

    from chain.block import NULL_JOB, Header
    from kernels import get_backend
    from node.engine import FillerMiner

    backend = get_backend(device)
    params = cfg.pow.params()
    h = Header(
        cfg.version,
        cfg.chain_id,
        1,
        bytes(32),
        cfg.genesis_timestamp,
        1,
        bytes(32),
        bytes(32),
        bytes(20),
        NULL_JOB,
        0,
        b"",
    )
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


async def run_node(
    toml_path: Path,
    datadir: Path,
    device: str,
    shape,
    bench: Bench,
    *,
    warmup: float,
    seconds: float,
    rounds: int,
    bench_s: float,
    api_window: bool,
) -> dict:
    import aiohttp

    from node.server.node import Node, NodeConfig
    from testkit.nodes import wait_for
    from node.engine import WINDOW_S

    conf = NodeConfig(
        datadir=datadir, network=str(toml_path), port=0, mine=True, device=device, take_jobs=False, filler_shape=shape
    )
    node = Node(conf)
    await node.start()
    try:
        m = node.miner
        await asyncio.sleep(warmup)
        h0, att0, builds0 = node.chain.height, m.filler.attempts, m.filler.builds
        mined = mining_s = 0.0
        for i in range(rounds):
            m.enabled = True
            await wait_for(lambda: m.state != "paused", 30, step=0.001, what="the miner to resume")
            macs0, t0 = m.rate.total_macs, time.monotonic()
            await asyncio.sleep(seconds / rounds)
            m.enabled = False
            await wait_for(lambda: m.state == "paused", 30, step=0.001, what="the miner to pause")
            mined += m.rate.total_macs - macs0
            mining_s += time.monotonic() - t0
            await asyncio.to_thread(bench.burst, bench_s)
        api_rate = None
        if api_window:
            # the reported figure itself: mining without pauses for one full work-rate window, then the API
            m.enabled = True
            await asyncio.sleep(0.5)  # the window then holds only unpaused mining
            macs0, t0 = m.rate.total_macs, time.monotonic()
            await asyncio.sleep(WINDOW_S)
            async with aiohttp.ClientSession() as s:
                async with s.get(node.url + "/api/v1/status") as r:
                    api_rate = (await r.json())["work_rate"]
            window_rate = (m.rate.total_macs - macs0) / (time.monotonic() - t0)
            m.enabled = False
            await wait_for(lambda: m.state == "paused", 30, step=0.001, what="the miner to pause")
            await asyncio.to_thread(bench.burst, bench_s)
        return {
            "rate": mined / mining_s,
            "mining_s": mining_s,
            "api_work_rate": api_rate,
            "window_rate": window_rate if api_window else None,
            "blocks": node.chain.height - h0,
            "attempts": m.filler.attempts - att0,
            "operand_builds": m.filler.builds - builds0,
        }
    finally:
        await node.stop()


def _commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parents[1],
            ).stdout.strip()
            or None
        )
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
                flags = sorted(
                    f
                    for f in line.split(":", 1)[1].split()
                    if f
                    in (
                        "avx2",
                        "fma",
                        "avx512f",
                        "avx512bw",
                        "avx512_vnni",
                        "avx512vbmi",
                        "avx_vnni",
                        "amx_int8",
                        "asimd",
                        "asimddp",
                        "i8mm",
                        "sve",
                    )
                )
    except OSError:
        pass
    return model, flags


def run(
    network: str,
    device: str,
    shape_text: str | None,
    seconds: float,
    warmup: float,
    rounds: int,
    bench_share: float = 0.5,
    api_window: bool = True,
    progress: bool = True,
) -> dict:
    import statistics

    import torch

    from chain.config import load_config
    from node.engine import check_filler_shape, parse_shape

    def say(msg: str) -> None:
        if progress:
            print(f"[bench node] {msg}", file=sys.stderr, flush=True)

    from node.engine import WINDOW_S

    cfg = load_config(network)
    shape = check_filler_shape(cfg, parse_shape(shape_text) if shape_text else cfg.pow.filler_shape)
    macs = shape[0] * shape[1] * shape[2]
    load_before = os.getloadavg()
    bench = Bench(cfg, shape, device)
    bench_s = seconds / rounds * bench_share
    bench.burst(bench_s)
    first = statistics.fmean(bench.times)
    say(
        f"{cfg.name} filler {shape[0]}x{shape[1]}x{shape[2]} on {bench.backend.device} ({bench.name}): "
        f"pass {first * 1e3:.2f} ms"
    )
    scratch_s = from_scratch(cfg, shape, device, 5)
    say(f"an attempt building its operands afresh: {scratch_s * 1e3:.2f} ms")
    block_work = max(cfg.initial_block_work, int(macs / first * cfg.target_block_time))
    bench.target = (1 << 256) // block_work
    with tempfile.TemporaryDirectory() as d:
        toml_path = Path(d) / f"{cfg.name}-bench.toml"
        toml_path.write_text(private_config(network, block_work))
        say(
            f"node: {warmup:.0f} s warm-up, then {rounds} rounds of {seconds / rounds:.1f} s mining + "
            f"{bench_s:.1f} s of benchmark passes (block work {block_work / 1e9:.1f} GMAC)"
        )
        bench.times.clear()
        nd = asyncio.run(
            run_node(
                toml_path,
                Path(d) / "node",
                device,
                shape,
                bench,
                warmup=warmup,
                seconds=seconds,
                rounds=rounds,
                bench_s=bench_s,
                api_window=api_window,
            )
        )
    mean_s, best_s = statistics.fmean(bench.times), min(bench.times)
    bench_rate, bench_best_rate = macs / mean_s, macs / best_s
    cpu = _cpu()
    out = {
        "benchmark": "node",
        "network": cfg.name,
        "device": str(bench.backend.device),
        "backend": bench.name,
        "filler_shape": list(shape),
        "threads": torch.get_num_threads(),
        "node_rate_macs": round(nd["rate"]),
        "bench_rate_macs": round(bench_rate),
        "bench_best_rate_macs": round(bench_best_rate),
        "ratio": round(nd["rate"] / bench_rate, 4),
        "ratio_best": round(nd["rate"] / bench_best_rate, 4),
        "api_work_rate_macs": round(nd["api_work_rate"]) if nd["api_work_rate"] is not None else None,
        "ratio_api": round(nd["api_work_rate"] / bench_rate, 4) if nd["api_work_rate"] is not None else None,
        "api_over_counted": round(nd["api_work_rate"] / nd["window_rate"], 4) if nd["api_work_rate"] else None,
        "bench_pass_mean_ms": round(mean_s * 1e3, 3),
        "bench_pass_best_ms": round(best_s * 1e3, 3),
        "bench_passes": len(bench.times),
        "node_mining_s": round(nd["mining_s"], 2),
        "node_blocks": nd["blocks"],
        "node_attempts": nd["attempts"],
        "node_operand_builds": nd["operand_builds"],
        "from_scratch_attempt_ms": round(scratch_s * 1e3, 3),
        "from_scratch_rate_macs": round(macs / scratch_s),
        "seconds": seconds,
        "warmup_s": warmup,
        "rounds": rounds,
        "bench_s_per_round": round(bench_s, 3),
        "block_work": block_work,
        "commit": _commit(),
        "cpu": cpu[0],
        "cpu_flags": cpu[1],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
    }
    say(
        f"node {nd['rate'] / 1e9:.2f} GMAC/s while mining, benchmark {bench_rate / 1e9:.2f} GMAC/s mean "
        f"({bench_best_rate / 1e9:.2f} best pass): ratio {out['ratio']:.3f} (vs best {out['ratio_best']:.3f}); "
        f"{nd['blocks']} blocks, {nd['attempts']} attempts, {nd['operand_builds']} operand builds; from scratch "
        f"{macs / scratch_s / 1e9:.2f} GMAC/s"
        + (
            f"; API work_rate after {WINDOW_S:.0f} s unpaused {nd['api_work_rate'] / 1e9:.2f} GMAC/s, ratio "
            f"{out['ratio_api']:.3f}"
            if nd["api_work_rate"] is not None
            else ""
        )
    )
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", default="devnet", help="config name or .toml (default devnet)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--filler-shape", default=None, metavar="MxKxN", help="default: the network's")
    p.add_argument("--seconds", type=float, default=60.0, help="node mining time measured (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="node mining time before measuring (default 5)")
    p.add_argument("--rounds", type=int, default=30, help="mining / benchmark alternations (default 30)")
    p.add_argument(
        "--no-api-window",
        action="store_true",
        help="skip the final 60 s of unpaused mining that reads GET /api/v1/status work_rate",
    )
    p.add_argument(
        "--bench-share",
        type=float,
        default=0.5,
        help="benchmark time per round, as a share of the round's mining time (default 0.5)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON object on stdout")


def main_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    out = run(
        args.network,
        args.device,
        args.filler_shape,
        args.seconds,
        args.warmup,
        args.rounds,
        args.bench_share,
        not args.no_api_window,
    )
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    sys.exit(main_args(ap.parse_args()))
