"""What the Triton test files share: the environment of a child process that imports this checkout.

Interpreter checks run in a child process because TRITON_INTERPRET must be set before triton is imported and
must not leak into the rest of the pytest process.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """os.environ plus `extra`, with this checkout first on PYTHONPATH."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env
