"""Reproducible benchmarks, run from a source checkout (`python -m benchmarks.X` or `pouw bench X`); not shipped
in the wheel.

Each benchmark is its own process, and this package is imported first by `python -m benchmarks.X`, before any
torch import: the one place to set that process's OpenMP policy (as node/cli/__init__.py does for `pouw`). libgomp's
default keeps torch's workers spinning after every parallel op, on the cores the native kernels' threads need
next. An explicit setting wins.

The checkout's root goes on the path too (appended: installed packages win): benchmarks use its testkit/ (the
in-process nodes of `bench sync` and `bench node`), which the wheel does not ship either.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
