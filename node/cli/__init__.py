"""The `pouw` command line: `main` (the console script `pouw`, and `python -m node.cli`) parses the arguments and
runs a command. The subcommands live beside it: the node, status and remote miner (node.cli.commands), the
devnet (node.cli.devnet), the demos (node.cli.demo, node.cli.inference_demo); wallet, job and economy commands
are the client side's (node.client). Importing this package changes no process-wide setting: `main` does, as the
process starts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _bench(args: argparse.Namespace) -> int:
    if args.what == "mining":
        from benchmarks import bench_mining

        return bench_mining.main_args(args)
    if args.what == "import":
        from chain import commands

        commands.bench_import(args)
        return 0
    if args.what == "market":
        from benchmarks import bench_market

        bench_market.run(args)
        return 0
    if args.what == "sync":
        from benchmarks import bench_sync

        return bench_sync.main_args(args)
    if args.what == "node":
        from benchmarks import bench_node

        return bench_node.main_args(args)
    if args.what == "jobs":
        from benchmarks import bench_jobs

        return bench_jobs.main_args(args)
    raise SystemExit(f"unknown benchmark {args.what!r}")


BENCHMARKS = ("mining", "sync", "node", "jobs", "market")  # modules of benchmarks/ (a source checkout's)


def _no_benchmarks(args: argparse.Namespace) -> int:
    print(
        f"pouw bench {args.what}: the benchmarks are not installed; they run from a source checkout "
        "(its benchmarks/ beside node/: an editable install, `pip install -e .`, finds them)",
        file=sys.stderr,
    )
    return 2


def _add_bench(sub: argparse._SubParsersAction) -> None:
    """`pouw bench`: `import` (chain/) always; the others from benchmarks/, which the wheel does not ship:
    without it they stay listed and say where they live instead of failing on an import."""
    bench = sub.add_parser("bench", help="reproducible benchmarks (JSON)")
    bsub = bench.add_subparsers(dest="what", required=True)
    from chain import commands as chain_commands

    bi = bsub.add_parser("import", help="block import throughput")
    chain_commands.add_bench_import_args(bi)
    bi.set_defaults(func=_bench)
    if not _have_benchmarks():
        for what in BENCHMARKS:
            p = bsub.add_parser(what, help="(source checkout only)")
            p.set_defaults(func=_no_benchmarks)  # its options are unknown here: main() lets them pass
        return
    _add_bench_modules(bsub)


def _have_benchmarks() -> bool:
    """benchmarks/ importable: on the path, or beside node/ in the checkout of an editable install."""
    try:
        import benchmarks  # noqa: F401

        return True
    except ImportError as e:
        if e.name != "benchmarks":  # a checkout's benchmark that fails to import: say so, do not hide it
            raise
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "benchmarks" / "__init__.py").is_file() or str(checkout) in sys.path:
        return False
    sys.path.append(str(checkout))
    return True


def _add_bench_modules(bsub: argparse._SubParsersAction) -> None:
    from benchmarks import bench_jobs, bench_market, bench_mining, bench_node

    bm = bsub.add_parser("mining", help="useful-work mining throughput over plain int8 GEMM; proof verification")
    bench_mining.add_arguments(bm)
    bm.set_defaults(func=_bench)
    bs = bsub.add_parser("sync", help="blocks/s of a fresh node syncing a chain from a peer on loopback")
    bs.add_argument("--blocks", type=int, default=1000)
    bs.add_argument("--txs", type=int, default=0, help="transfers per block")
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(func=_bench)
    bn = bsub.add_parser("node", help="a mining node's reported work_rate over the benchmark's pass rate, one run")
    bench_node.add_arguments(bn)
    bn.set_defaults(func=_bench)
    bj = bsub.add_parser("jobs", help="paid-job latency (submit to a verified C) on a 2-node regtest devnet")
    bench_jobs.add_arguments(bj)
    bj.set_defaults(func=_bench)
    bmk = bsub.add_parser("market", help="the compute-token market simulated through the real state transition")
    bench_market.add_arguments(bmk)
    bmk.set_defaults(func=_bench)


def _mine_demo(args: argparse.Namespace) -> int:
    from node.cli import demo

    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pouw", description="Proof-of-Useful-Work settlement node")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument(
        "--log-json",
        action="store_true",
        help="log one JSON object per line (default: key=value lines); also after node/devnet/miner",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    _add_bench(sub)

    demo = sub.add_parser("mine-demo", help="mine filler jobs locally and show rates (no network)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--size", type=int, default=None, help="m = k = n (default: the minimum, 16 * rank = 1024)")
    demo.add_argument("--jobs", type=int, default=0, help="stop after this many jobs (0 = until Ctrl-C)")
    demo.set_defaults(func=_mine_demo)

    from chain import commands as chain_commands

    chain_commands.register(sub)
    from node.cli import commands as node_commands

    node_commands.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    # libgomp's spinning workers (torch's OpenMP pool) steal a core from the native mining kernel's threads
    # right after a torch op; passive waiting costs torch nothing measurable. Set before anything loads torch
    # (nothing above imports it); an explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ap = build_parser()
    args, unknown = ap.parse_known_args(argv)
    if unknown and getattr(args, "func", None) is not _no_benchmarks:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}")
    from node import logfmt

    logfmt.setup(verbose=args.verbose, as_json=getattr(args, "log_json", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # e.g. a node that does not answer
        print(f"pouw {args.command}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a wrong passphrase or a damaged key file: the message, not a traceback
        from chain.errors import KeyFileError

        if not isinstance(e, KeyFileError):
            raise
        print(f"pouw {args.command}: {e}", file=sys.stderr)
        return 1
