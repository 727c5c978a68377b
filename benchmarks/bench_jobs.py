"""`pouw bench jobs`: job latency on a 2-node devnet, from the client's side.

Starts `pouw devnet --nodes N --network regtest` (child processes on 127.0.0.1, both mining and taking
jobs), takes its funded wallet, and submits jobs one after another through the SDK (node.client.sdk) to node 0:
`--small` jobs of `--small-shape` and `--large` jobs of `--large-shape`, interleaved. A job's latency is
the time from the submit call to a verified C in the client's hands (padding, upload, the chain's
submit / claim / result, download, H_C and Freivalds check; the SDK hands C over as soon as it has checked
the pending result's C, before the result is mined). Prints one JSON object: latency_p50_s,
latency_p95_s (all jobs; linear-interpolated percentiles), per-class figures, and block_interval_s, the
mean block interval seen by node 0 during the run (elapsed time / blocks), and from the receipts the
median number of blocks between the submit's and the result's block (0: submit, claim and result in one
block), c_before_result_mined (jobs whose C was checked while the node's tip was below the result's block)
and after_post_p50_s / _p95_s (from the submit transaction sent, i.e. without padding and upload).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _shape(text: str) -> tuple[int, int, int]:
    m, k, n = (int(x) for x in text.split(","))
    return m, k, n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--small", type=int, default=6, help="number of small jobs")
    p.add_argument("--large", type=int, default=2, help="number of large jobs")
    p.add_argument("--small-shape", type=_shape, default=(32, 512, 32), help="m,k,n")
    p.add_argument("--large-shape", type=_shape, default=(64, 4096, 4096), help="m,k,n")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--block-interval", type=float, default=1.0, help="each node's minimum seconds between blocks")
    p.add_argument("--job-timeout", type=float, default=180.0, help="seconds per job before it counts as failed")
    p.add_argument("--json", action="store_true", help="print the JSON object only")


def _free_base(nodes: int) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        ok = True
        for i in range(1, nodes):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + i))
                except OSError:
                    ok = False
        if ok:
            return base


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if xs else None


def run(args: argparse.Namespace) -> dict:
    from chain.keys import load_key
    from node.client.sdk import Client, ClientError, JobFailed

    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="pouw-bench-jobs-") as d:
        base = _free_base(args.nodes)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(Path(d) / "devnet.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node.cli",
                "devnet",
                "--nodes",
                str(args.nodes),
                "--base-port",
                str(base),
                "--datadir",
                str(Path(d) / "dn"),
                "--network",
                "regtest",
                "--block-interval",
                str(args.block_interval),
                "--status-every",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            client = Client(f"http://127.0.0.1:{base}", timeout=60.0)
            end = time.monotonic() + 120
            key = None
            while time.monotonic() < end:
                if proc.poll() is not None:
                    raise RuntimeError(f"devnet exited with {proc.returncode}; see its log")
                try:
                    if key is None and (Path(d) / "dn" / "wallet").exists():
                        key = load_key(str(Path(d) / "dn" / "wallet"))
                    if (
                        key is not None
                        and client.account(key.address)["balance"] > 0
                        and client.status()["peers"] >= args.nodes - 1
                    ):
                        break
                except (ClientError, OSError, ValueError):
                    pass
                time.sleep(0.3)
            else:
                raise RuntimeError("devnet did not come up with a funded wallet within 120 s")
            plan = ["small"] * args.small + ["large"] * args.large
            order = []  # interleave: large jobs spread among the small ones
            step = max(1, len(plan) // max(1, args.large)) if args.large else len(plan) + 1
            smalls, larges = args.small, args.large
            while smalls or larges:
                if larges and (len(order) % step == step - 1 or not smalls):
                    order.append("large")
                    larges -= 1
                else:
                    order.append("small")
                    smalls -= 1
            lat: dict[str, list[float]] = {"small": [], "large": []}
            posted: dict[str, list[float]] = {"small": [], "large": []}  # from the submit tx sent (after upload)
            early: list[bool] = []  # C in hand while the chain's tip was below the result's block
            failures: list[str] = []
            chain_blocks: list[int] = []  # result height - submit height, from the receipts
            h0, t0 = client.height(), time.monotonic()
            for i, cls in enumerate(order):
                m, k, n = args.small_shape if cls == "small" else args.large_shape
                a = rng.integers(-64, 65, size=(m, k), dtype=np.int8)
                b = rng.integers(-64, 65, size=(k, n), dtype=np.int8)
                t = time.monotonic()
                try:
                    res = client.submit_job(key, a, b, None, True, timeout=args.job_timeout)
                    took = time.monotonic() - t  # submit call -> a checked C in hand (the latency)
                    lat[cls].append(took)
                    if res.latency_s is not None:
                        posted[cls].append(res.latency_s)
                    st = res.confirm(args.job_timeout)  # not timed: the result mined, for the receipt
                    if st.outcome != "confirmed":
                        raise JobFailed(res.job_id, st.outcome, st.message)
                    rc = res.receipt or {}
                    if rc.get("submit") and rc.get("result"):
                        chain_blocks.append(rc["result"]["height"] - rc["submit"]["height"])
                        early.append(res.height is not None and res.height < rc["result"]["height"])
                    say(
                        f"job {i} {cls} {m}x{k}x{n}: {took:.2f} s (C in hand at height {res.height}, job "
                        f"{res.status if res.confirmed else 'not yet resulted'}; receipt heights: submit "
                        f"{(rc.get('submit') or {}).get('height')}, result {(rc.get('result') or {}).get('height')})"
                    )
                except (JobFailed, ClientError) as e:
                    failures.append(f"{cls}: {e}")
                    say(f"job {i} {cls}: FAILED {e}")
            h1, t1 = client.height(), time.monotonic()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    every = lat["small"] + lat["large"]
    blocks = h1 - h0
    per = {
        c: {
            "shape": list(args.small_shape if c == "small" else args.large_shape),
            "jobs": len(v),
            "p50_s": _pct(v, 50),
            "p95_s": _pct(v, 95),
            "mean_s": round(sum(v) / len(v), 3) if v else None,
        }
        for c, v in lat.items()
    }
    return {
        "benchmark": "jobs",
        "network": "regtest",
        "nodes": args.nodes,
        "block_interval_setting_s": args.block_interval,
        "jobs": len(every),
        "failed": len(failures),
        "failures": failures[:5],
        "latency_p50_s": _pct(every, 50),
        "latency_p95_s": _pct(every, 95),
        "block_interval_s": round((t1 - t0) / blocks, 3) if blocks > 0 else None,
        "blocks": blocks,
        "wall_s": round(t1 - t0, 1),
        "small": per["small"],
        "large": per["large"],
        "result_minus_submit_blocks_p50": _pct([float(x) for x in chain_blocks], 50),
        "c_before_result_mined": sum(early),
        "after_post_p50_s": _pct(posted["small"] + posted["large"], 50),
        "after_post_p95_s": _pct(posted["small"] + posted["large"], 95),
        "latency_in_blocks_p50": round(_pct(every, 50) / ((t1 - t0) / blocks), 2) if blocks > 0 and every else None,
    }


def main_args(args: argparse.Namespace) -> int:
    out = run(args)
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0 if out["failed"] == 0 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    sys.exit(main_args(ap.parse_args()))
