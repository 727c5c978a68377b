"""Command-line entry points of the chain layer, registered into the node's `pouw` CLI:

pouw verify  --datadir D [--config NAME|PATH]   exit 0 if the stored chain and state re-validate
pouw reindex --datadir D [--config NAME|PATH]   rebuild state from stored blocks, then verify
pouw bench import [--blocks N] [--txs N] [--json]  (via bench_import(args))
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Callable

from chain.errors import ChainError

if TYPE_CHECKING:  # annotations only: each command imports what it runs
    from chain.config import ChainConfig


def _cfg(args: argparse.Namespace) -> ChainConfig | None:
    from chain.config import load_config

    return load_config(args.config) if getattr(args, "config", None) else None


def cmd_verify(args: argparse.Namespace) -> int:
    from chain.maintenance import verify_datadir

    try:
        rep = verify_datadir(args.datadir, _cfg(args), check_proofs=not getattr(args, "no_proofs", False))
    except (ChainError, ValueError, OSError) as e:
        print(f"verify failed: {e}", file=sys.stderr)
        return 1
    print(f"ok: height {rep.height} tip {rep.tip.hex()} accounts {rep.accounts} txs {rep.transactions} jobs {rep.jobs}")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from chain.maintenance import reindex_datadir

    try:
        rep = reindex_datadir(args.datadir, _cfg(args))
    except (ChainError, ValueError, OSError) as e:
        print(f"reindex failed: {e}", file=sys.stderr)
        return 1
    print(f"reindexed: height {rep.height} tip {rep.tip.hex()} accounts {rep.accounts}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `verify` and `reindex` to an argparse subparsers object (handlers set as `func`)."""
    for name, fn, doc in (
        ("verify", cmd_verify, "re-validate the stored chain and state from genesis"),
        ("reindex", cmd_reindex, "rebuild the state from stored blocks"),
    ):
        p = subparsers.add_parser(name, help=doc, description=doc)
        p.add_argument("--datadir", required=True)
        p.add_argument("--config", default=None, help="config name or path (default: the one stored in the DB)")
        if name == "verify":
            p.add_argument("--no-proofs", action="store_true", help="skip useful-work proof and signature checks")
        p.set_defaults(func=fn)


def add_bench_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", type=int, default=1000)
    p.add_argument("--txs", type=int, default=100, help="transfers per block")
    p.add_argument("--config", default="regtest")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")


def bench_import(args: argparse.Namespace) -> dict[str, float]:
    """Generate a chain (easy target), then time importing it into a fresh datadir. Prints a
    report (JSON with --json) and returns it."""
    import nacl.signing
    from chain.chainstate import ChainState
    from chain.config import load_config
    from chain.synthetic import generate_chain

    cfg = load_config(getattr(args, "config", None) or "regtest")
    n_blocks, n_txs = getattr(args, "blocks", 1000), getattr(args, "txs", 100)
    t0 = time.perf_counter()
    _, blocks = generate_chain(cfg, n_blocks, n_txs, getattr(args, "seed", 1))
    gen_s = time.perf_counter() - t0
    raw = [b.encoded for b in blocks]
    total_txs = sum(len(b.txs) for b in blocks)
    with tempfile.TemporaryDirectory() as d:
        with ChainState.open(d, cfg, clock=lambda: blocks[-1].header.timestamp) as cs:
            t1 = time.perf_counter()
            for data in raw:
                cs.submit_block(data)
            import_s = time.perf_counter() - t1
            assert cs.height == n_blocks
    # empty-block cost (header proof + bookkeeping) so per-tx cost excludes it
    _, empty = generate_chain(cfg, min(50, n_blocks), 0, 2)
    with tempfile.TemporaryDirectory() as d:
        with ChainState.open(d, cfg, clock=lambda: empty[-1].header.timestamp) as cs:
            t2 = time.perf_counter()
            for blk in empty:
                cs.submit_block(blk.encoded)
            per_block_s = (time.perf_counter() - t2) / len(empty)
    sk = nacl.signing.SigningKey(b"\x01" * 32)
    msgs = [sk.sign(i.to_bytes(8, "big") * 4) for i in range(2000)]
    vk = sk.verify_key
    t3 = time.perf_counter()
    for m in msgs:
        vk.verify(m)
    sig_s = (time.perf_counter() - t3) / len(msgs)
    per_tx_s = max(0.0, import_s - per_block_s * n_blocks) / max(1, total_txs)
    rep = {
        "blocks": n_blocks,
        "txs_per_block": n_txs,
        "transactions": total_txs,
        "generate_s": round(gen_s, 3),
        "import_s": round(import_s, 3),
        "blocks_per_s": round(n_blocks / import_s, 2),
        "txs_per_s": round(total_txs / import_s, 1),
        "per_block_overhead_us": round(per_block_s * 1e6, 1),
        "per_tx_us": round(per_tx_s * 1e6, 1),
        "sig_verify_us": round(sig_s * 1e6, 1),
        "per_tx_over_sig_verify": round(per_tx_s / sig_s, 2),
    }
    if getattr(args, "json", False):
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            print(f"{k:>24}: {v}")
    return rep


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (python -m chain.commands verify --datadir D)."""
    p = argparse.ArgumentParser(prog="pouw-chain")
    sub = p.add_subparsers(dest="cmd", required=True)
    register(sub)
    b = sub.add_parser("bench-import")
    add_bench_import_args(b)
    b.set_defaults(func=lambda a: (bench_import(a), 0)[1])
    args = p.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
