"""What every Triton kernel module here shares: the guarded import and the interpreter switch.

Importing this module imports triton; it raises `TritonUnavailableError` (an ImportError) only when triton is
not installed. TRITON_INTERPRET=1 set before the import runs kernels on CPU tensors in Triton's interpreter.
"""

from __future__ import annotations

import os


class TritonUnavailableError(ImportError):
    """Triton is not installed (pip install 'pouw-node[triton]')."""


try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise TritonUnavailableError(f"the Triton kernels need the 'triton' package: {exc}") from exc


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


__all__ = ["TritonUnavailableError", "interpreting", "tl", "triton"]
