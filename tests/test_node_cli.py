"""The command line as an operator uses it: `pouw node` and `pouw devnet` as subprocesses, SIGTERM, restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.nodes import free_port
from node.client.worker import ApiError, NodeClient

ROOT = Path(__file__).resolve().parents[1]


def pouw(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def wait_api(url: str, cond, timeout: float = 40.0) -> dict:
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = NodeClient(url, timeout=2).call("GET", "/api/v1/status")
            if cond(last):
                return last
        except (OSError, ApiError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out; last status {last}")


@pytest.mark.timeout(120)
def test_node_sigterm_and_restart(tmp_path):
    d, port = tmp_path / "n", free_port()
    url = f"http://127.0.0.1:{port}"
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", "init", "--datadir", str(d), "--network", "regtest"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["network"] == "regtest"
    p = pouw("node", "--datadir", str(d), "--port", str(port), "--mine", "--device", "cpu", "--mine-interval", "0.05")
    try:
        st = wait_api(url, lambda s: s["height"] >= 5)
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    assert re.search(r"^\S+Z INFO  pouw\.node node stopped height=\d+ mempool_saved=0$", out, re.M), out[-2000:]
    assert re.search(r" pouw\.node block connected height=5 hash=[0-9a-f]{16} txs=0 work=\d+ ", out), out[-2000:]
    v = subprocess.run(
        [sys.executable, "-m", "node.cli", "verify", "--datadir", str(d)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    p = pouw("node", "--datadir", str(d), "--port", str(port))
    try:
        st2 = wait_api(url, lambda s: True)
        assert st2["height"] >= st["height"] and st2["network"] == "regtest"
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out


@pytest.mark.timeout(150)
def test_devnet_runs_funds_wallet_and_stops_cleanly(tmp_path):
    base = free_port()
    while any(free_port() == base + i for i in range(2)):
        base = free_port()
    d = tmp_path / "devnet"
    p = pouw(
        "devnet",
        "--nodes",
        "2",
        "--base-port",
        str(base),
        "--datadir",
        str(d),
        "--network",
        "regtest",
        "--block-interval",
        "0.3",
        "--status-every",
        "0",
        "--log-json",
    )
    urls = [f"http://127.0.0.1:{base + i}" for i in range(2)]
    try:
        from chain.keys import load_key

        end = time.time() + 90
        while not (d / "wallet").exists():
            assert time.time() < end and p.poll() is None
            time.sleep(0.2)
        addr = load_key(d / "wallet").address.hex()
        for u in urls:
            wait_api(u, lambda s: s["height"] >= 3 and s["peers"] >= 1, 90)
        end = time.time() + 60
        while NodeClient(urls[1]).call("GET", f"/api/v1/accounts/{addr}")["balance"] == 0:
            assert time.time() < end, "devnet wallet not funded"
            time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert str(d / "wallet") in out and all(u in out for u in urls)
    assert "stopped 2 node(s)" in out
    for i in range(2):
        lines = [json.loads(x) for x in (d / f"node{i}" / "node.log").read_text().splitlines()]  # --log-json
        assert all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
        assert any(x["msg"] == "peer connected" and x["direction"] in ("inbound", "outbound") for x in lines)
        assert any(x["msg"] == "node stopped" and x["height"] >= 3 for x in lines), lines[-3:]
        v = subprocess.run(
            [sys.executable, "-m", "node.cli", "verify", "--datadir", str(d / f"node{i}")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.parametrize(
    "args, expect",
    [
        (
            ("bench", "mining", "--device", "cpu", "--size", "512"),
            "pouw bench mining: size 512 is below the minimum k = 16*r = 1024 for rank r=64: use --size 1024 or more, "
            "or --rank 32",
        ),
        (
            ("bench", "mining", "--device", "cpu", "--size", "1040"),
            "pouw bench mining: size 1040: k=1040 is not a multiple of r=64",
        ),
        (
            ("bench", "mining", "--device", "cpu", "--size", "1024", "--rank", "12"),
            "pouw bench mining: --rank 12 --tile 16: rank must be a power of two in [8, 256], got 12",
        ),
        (
            ("mine-demo", "--device", "cpu", "--size", "512"),
            "pouw mine-demo: size 512 is below the minimum k = 16*r = 1024 for rank r=64 (use --size 1024 or more)",
        ),
    ],
)
def test_unminable_size_is_one_line_and_exit_2(args, expect):
    """A size the lottery cannot mine (16*r <= k, r | k, tiles) is refused before any work: exit 2, one line."""
    r = subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert (r.returncode, r.stdout, r.stderr) == (2, "", expect + "\n")


def test_largest_rank_fits_the_size():
    from pouw.params import PowParams, largest_rank

    assert [largest_rank(k) for k in (127, 128, 512, 1023, 1024, 4096, 65536)] == [None, 8, 32, 32, 64, 256, 256]
    for k in (128, 512, 1000, 1024, 3000):
        assert 16 * largest_rank(k) <= k < 32 * largest_rank(k) or largest_rank(k) == 256
        assert PowParams(rank=largest_rank(k)).min_k <= k
