"""Block import benchmark: blocks/s, transactions/s and per-transaction validation cost relative to a
bare pynacl signature verify. Generation (easy target) is not timed.

    .venv/bin/python benchmarks/bench_import.py --blocks 1000 --txs 100 --json
"""

from __future__ import annotations

import argparse

from chain.commands import add_bench_import_args, bench_import

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_bench_import_args(p)
    bench_import(p.parse_args())
