"""`pouw bench sync`: blocks/s at which a fresh node syncs an N-block chain from one peer on loopback.

A regtest chain of N blocks (empty by default, `--txs` transfers per block otherwise) is mined in memory
(chain.synthetic.ChainBuilder) and imported into a source node's datadir; then a fresh node is started
with the source as its only peer and timed from start until its tip equals the source's. Both nodes run
in this process (one event loop, real loopback websockets), so the figure includes both sides' work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path


async def _run(blocks: int, txs: int) -> dict:
    from chain.chainstate import ChainState
    from chain.config import load_config
    from chain.synthetic import ChainBuilder, make_keys
    from testkit.nodes import start_node, wait_for

    cfg = load_config("regtest")
    t0 = time.perf_counter()
    builder = ChainBuilder(cfg)
    keys = make_keys(4) if txs else None
    chain = builder.chain(builder.genesis.hash, blocks, make_keys(1)[0].address, keys=keys, txs_per_block=txs)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        src_dir = Path(d) / "source"
        with ChainState.open(src_dir, cfg) as cs:
            for b in chain:
                cs.submit_block(b)
            assert cs.height == blocks
        src = await start_node(src_dir)
        try:
            t1 = time.perf_counter()
            dst = await start_node(Path(d) / "fresh", peers=[src.listen_addr])
            try:
                first: list[float] = []

                def done() -> bool:
                    if not first and dst.chain.height > 0:
                        first.append(time.perf_counter() - t1)
                    return dst.chain.tip.hash == src.chain.tip.hash

                await wait_for(done, timeout=60.0 + blocks * 0.05, step=0.01, what="sync")
                sync_s = time.perf_counter() - t1
                nbytes = sum(len(b.encoded) for b in chain)
            finally:
                await dst.stop()
        finally:
            await src.stop()
    return {
        "benchmark": "sync",
        "network": cfg.name,
        "blocks": blocks,
        "txs_per_block": txs,
        "chain_bytes": nbytes,
        "generate_s": round(gen_s, 3),
        "sync_s": round(sync_s, 3),
        "first_block_s": round(first[0], 3) if first else None,
        "blocks_per_s": round(blocks / sync_s, 1),
        "mb_per_s": round(nbytes / sync_s / 1e6, 2),
    }


def main_args(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        for name in ("pouw.node", "pouw.sync", "pouw.p2p", "pouw.miner", "pouw.mempool"):
            logging.getLogger(name).setLevel(logging.WARNING)
    rep = asyncio.run(_run(args.blocks, getattr(args, "txs", 0)))
    if args.json:
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            print(f"{k:>16}: {v}")
    return 0
