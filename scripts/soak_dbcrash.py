#!/usr/bin/env python3
"""Long crash-safety soak: SIGKILL a block-importing worker many times (default 300) and check the
datadir after each kill. See testkit/crashtest.py.

    .venv/bin/python scripts/soak_dbcrash.py --rounds 300 [--proofs] [--max-delay 0.5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.crashtest import run_rounds  # noqa: E402

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=0.5)
    p.add_argument("--proofs", action="store_true", help="worker also verifies useful-work proofs (slower start)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run_rounds(
            Path(d),
            a.rounds,
            seed=a.seed,
            max_delay=a.max_delay,
            check_proofs=a.proofs,
            log=lambda s: print(s, flush=True),
        )
    print(f"ok: {res}")
