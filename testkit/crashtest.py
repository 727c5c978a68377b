"""Crash-safety harness (Bitcoin Core's feature_dbcrash, in miniature).

A worker subprocess imports a fixed list of blocks (with reorgs) into a datadir; the parent
SIGKILLs it at random moments. After every kill the parent checks, without repairing anything,
that the stored chain re-validates from genesis (`verify_datadir`), that the stored accounts equal
the control replay of the stored tip, and that the tip's cumulative work never went backwards.
Used by tests/test_chain_storage.py (short) and scripts/soak_dbcrash.py (long); the worker runs as
`python -c "from testkit.crashtest import worker; ..."` with the checkout on PYTHONPATH.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack

from chain.config import ChainConfig, load_config
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder, make_keys


def make_sequence(cfg: ChainConfig, n_main: int = 40, txs: int = 30, seed: int = 0):
    """Blocks in submission order: a main chain, a heavier fork 10 deep, then the main chain again
    overtaking it. Returns (builder, blocks)."""
    rng = random.Random(seed)
    b = ChainBuilder(cfg)
    keys = make_keys(8)
    ma, mb = PrivateKey.from_phrase(b"crash a").address, PrivateKey.from_phrase(b"crash b").address
    main = b.chain(b.genesis.hash, n_main, ma, keys=keys, txs_per_block=txs, rng=rng)
    fork = b.chain(main[-11].hash, 12, mb, keys=keys, txs_per_block=txs, rng=rng)
    more = b.chain(main[-1].hash, 3, ma, keys=keys, txs_per_block=txs, rng=rng)
    return b, main + fork + more


def worker(datadir: str, blocks_file: str, config: str, check_proofs: bool) -> int:
    from chain.chainstate import ChainState

    cfg = load_config(config)
    blocks = msgpack.unpackb(Path(blocks_file).read_bytes())
    with ChainState.open(datadir, cfg, clock=lambda: 1 << 40, check_proofs=check_proofs) as cs:
        print("ready", flush=True)
        for data in blocks:
            cs.submit_block(data)
    print("done", flush=True)
    return 0


def check_datadir(datadir: Path, builder: ChainBuilder) -> tuple[int, bytes]:
    """Verify the datadir as the crash left it; returns (tip chainwork, tip hash)."""
    from chain.maintenance import _open_raw, verify_datadir

    verify_datadir(datadir, builder.cfg)
    store, cs = _open_raw(datadir, builder.cfg)
    try:
        tip = cs.tip
        ctrl = builder.states[tip.hash]
        if cs.accounts() != ctrl.accounts or cs.supply != ctrl.supply:
            raise AssertionError(f"state at tip {tip.hash.hex()[:16]} differs from the control replay")
        return tip.chainwork, tip.hash
    finally:
        store.close()


def reopen(datadir: Path, builder: ChainBuilder) -> tuple[int, bytes]:
    """Open as the node would at start-up (finishing an interrupted reorg); check state vs control."""
    from chain.chainstate import ChainState

    with ChainState.open(datadir, builder.cfg, create=False, clock=lambda: 1 << 40, check_proofs=False) as cs:
        tip = cs.tip
        ctrl = builder.states[tip.hash]
        if cs.accounts() != ctrl.accounts or cs.supply != ctrl.supply:
            raise AssertionError(f"state at tip {tip.hash.hex()[:16]} differs from the control replay after restart")
        cs.check_conservation()
        return tip.chainwork, tip.hash


def run_rounds(
    workdir: Path,
    rounds: int,
    *,
    seed: int = 0,
    config: str = "regtest",
    max_delay: float = 0.25,
    check_proofs: bool = False,
    log=lambda s: None,
) -> dict:
    """Kill the worker `rounds` times; returns counters. Raises AssertionError/ChainError on failure."""
    cfg = load_config(config)
    rng = random.Random(seed)
    builder, blocks = make_sequence(cfg, seed=seed)
    blocks_file = workdir / "blocks.msgpack"
    blocks_file.write_bytes(msgpack.packb([b.encoded for b in blocks]))
    best = blocks[-1].hash
    datadir = workdir / "data"
    kills = completions = 0
    last_work = 0
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    span = max_delay  # calibrated to the worker's import time after its first complete run
    while kills < rounds:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from testkit.crashtest import worker; "
            f"sys.exit(worker({str(datadir)!r}, {str(blocks_file)!r}, {config!r}, {check_proofs!r}))",
        ]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert p.stdout is not None and p.stderr is not None  # both piped
        line = p.stdout.readline()
        if line.strip() != b"ready":
            p.kill()
            raise AssertionError(f"worker failed to start: {line!r} {p.stderr.read().decode()[-2000:]}")
        t0 = time.monotonic()
        if completions == 0 and kills == 0:  # calibration: one full import
            p.wait()
            span = min(max_delay, time.monotonic() - t0)
        else:
            time.sleep(rng.uniform(0, span))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        if p.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"worker exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
        p.stdout.close()
        p.stderr.close()
        check_datadir(datadir, builder)  # as the crash left it (maybe mid-reorg)
        work, tip = reopen(datadir, builder)  # after restart: resumes the best chain
        if work < last_work:
            raise AssertionError("tip chainwork went backwards after a crash: a committed write was lost")
        last_work = work
        log(f"round {kills}: rc={p.returncode} tip work {work} height {builder.blocks[tip].height}")
        if p.returncode == 0:
            completions += 1
            if tip != best:
                raise AssertionError("completed import did not end on the best block")
            import shutil

            shutil.rmtree(datadir)
            last_work = 0
    return {"kills": kills, "completions": completions}
