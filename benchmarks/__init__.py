"""Reproducible benchmarks, run from a source checkout (`python -m benchmarks.X` or `pouw bench X`); not shipped
in the wheel.

Each benchmark is its own process, and this package is imported first by `python -m benchmarks.X`, before any
torch import: the one place to set that process's OpenMP policy (as node/cli.py does for `pouw`). libgomp's
default keeps torch's workers spinning after every parallel op, on the cores the native kernels' threads need
next. An explicit setting wins.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
