"""Explorer lookups do not grow with the chain; the lookup indexes cost little at import.

`python -m benchmarks.bench_explorer [--blocks 2000] [--txs 10] [--json]` mines a regtest chain in memory
(ChainBuilder, transfers among 20 keys), imports it into a fresh datadir (proof checks off: this measures
storage, not proofs) and reports, all from this one run:

- `import_ratio`: import time with the index writes / without them (median of 3 alternating runs);
- `lookup_ratio`: the median time of the explorer's lookups (tx id -> block, address history page, search
  of a job-less 64-hex id, block stats of 120 blocks) at the full height / at a tenth of it (at least 200): ~1 means no
  lookup scans the chain;
- `old_startup_scan_s`: what the node's former in-memory tx index cost at every start (a read of every
  active block), against `ensure_s`, the check that replaced it (one key read).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

from chain import indexes
from chain.chainstate import ChainState
from chain.config import load_config
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder, make_keys


def _time(fn, reps: int = 200) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def _lookups(cs: ChainState, keys, txid: bytes) -> dict[str, float]:
    from node.server.explorer_api import blockstats_json

    class _N:  # the part of a Node that the chart's lookup reads
        chain = cs

    addr = keys[1].address
    return {
        "tx_block": _time(lambda: indexes.tx_block(cs.store, txid)),
        "history_page": _time(lambda: [e for _, e in zip(range(50), indexes.history(cs.store, addr))]),
        "unknown_id": _time(
            lambda: (b"\x01" * 32 in cs.index, cs.get_job(b"\x01" * 32), indexes.tx_block(cs.store, b"\x01" * 32))
        ),
        "blockstats_120": _time(lambda: blockstats_json(_N, 120), 20),
    }


def run(blocks: int, txs: int) -> dict:
    cfg = load_config("regtest")
    now = cfg.genesis_timestamp + 10**8
    keys = make_keys(20)
    b = ChainBuilder(cfg)
    t0 = time.perf_counter()
    chain = b.chain(
        b.genesis.hash,
        blocks,
        PrivateKey.from_phrase(b"bench miner").address,
        keys=keys,
        txs_per_block=txs,
        rng=random.Random(1),
    )
    build_s = time.perf_counter() - t0
    small = min(blocks, max(200, blocks // 10))  # enough for a full chart window and history page
    real = indexes.write_connect

    def imp(on: bool, upto: int) -> float:
        indexes.write_connect = real if on else (lambda *a: None)
        try:
            with (
                tempfile.TemporaryDirectory() as d,
                ChainState.open(d, cfg, clock=lambda: now, check_proofs=False) as cs,
            ):
                t = time.perf_counter()
                for blk in chain[:upto]:
                    cs.submit_block(blk)
                return time.perf_counter() - t
        finally:
            indexes.write_connect = real

    part = min(blocks, 500)
    times = {True: [], False: []}
    for _ in range(3):
        for on in (False, True):
            times[on].append(imp(on, part))
    with tempfile.TemporaryDirectory() as d, ChainState.open(d, cfg, clock=lambda: now, check_proofs=False) as cs:
        for blk in chain[:small]:
            cs.submit_block(blk)
        tx_small = next(t.txid for blk in chain[:small] for t in blk.txs)
        at_small = _lookups(cs, keys, tx_small)
        for blk in chain[small:]:
            cs.submit_block(blk)
        at_full = _lookups(cs, keys, next(t.txid for t in chain[-1].txs))
        t = time.perf_counter()
        n = sum(len(cs.get_block(h).txs) for h in cs.chain[1:])  # the former startup scan
        old_scan = time.perf_counter() - t
        ensure_s = _time(lambda: indexes.ensure(cs), 50)
    ratios = {k: at_full[k] / at_small[k] for k in at_full}
    return {
        "blocks": blocks,
        "txs_per_block": txs,
        "build_s": round(build_s, 1),
        "import_blocks": part,
        "import_with_indexes_s": round(statistics.median(times[True]), 3),
        "import_without_indexes_s": round(statistics.median(times[False]), 3),
        "import_ratio": round(statistics.median(times[True]) / statistics.median(times[False]), 3),
        "lookups_at_small_us": {k: round(v * 1e6, 1) for k, v in at_small.items()},
        "lookups_at_full_us": {k: round(v * 1e6, 1) for k, v in at_full.items()},
        "lookup_ratio": round(statistics.median(ratios.values()), 3),
        "small_height": small,
        "old_startup_scan_s": round(old_scan, 3),
        "scanned_txs": n,
        "ensure_s": round(ensure_s, 6),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=2000)
    p.add_argument("--txs", type=int, default=10)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    out = run(a.blocks, a.txs)
    print(json.dumps(out, indent=None if a.json else 2))


if __name__ == "__main__":
    main()
