"""Float ↔ int8 for compute jobs (docs/jobs-client.md): symmetric quantization into the chain's operand
range [-OPERAND_MAX, OPERAND_MAX] = [-64, 64] (docs/protocol.md), and the de-quantization of C.

    from node.client.quant import quantize, dequantize
    qa, sa = quantize(x, per="row")        # A: one scale per row      (x ≈ qa * sa[:, None])
    qb, sb = quantize(w, per="column")     # B: one scale per column   (w ≈ qb * sb[None, :])
    c = client.submit_job(wallet, qa, qb).c
    y = dequantize(c, sa, sb)              # ≈ x @ w; exact in c, only the quantization rounds

Invariants: q = clip(rint(x / s), -64, 64) with s = max|x| / 64 over the group (a tensor, a row of A or a
column of B), so |x − q·s| ≤ s / 2 entry-wise; an all-zero group gets s = 1 (q = 0). Per-row scales of A
and per-column scales of B keep C separable: (A·B)_ij ≈ s_a[i] · s_b[j] · C_ij. NaN or ±inf is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pouw.errors import JobError
from pouw.params import OPERAND_MAX

PER = ("tensor", "row", "column")


def _as_float(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise JobError(f"{name} must be 2-D to quantize (got {a.ndim}-D)")
    if not np.isfinite(a).all():
        raise JobError(f"{name} contains NaN or inf; cannot quantize")
    return a


def quantize(x: Any, per: str = "tensor", qmax: int = OPERAND_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of a 2-D float array (numpy or torch) into int8 entries in [-qmax, qmax].

    per="tensor": one scale (returned as shape ()); "row": one per row (shape (m,), for A);
    "column": one per column (shape (n,), for B). Returns (q int8 C-contiguous, scales float64)."""
    if per not in PER:
        raise JobError(f"per must be one of {', '.join(PER)} (got {per!r})")
    if not 1 <= qmax <= OPERAND_MAX:
        raise JobError(f"qmax must be in [1, {OPERAND_MAX}] (the chain's operand range)")
    a = _as_float(x, "x")
    absmax = {
        "tensor": lambda: np.abs(a).max(initial=0.0),
        "row": lambda: np.abs(a).max(axis=1, initial=0.0),
        "column": lambda: np.abs(a).max(axis=0, initial=0.0),
    }[per]()
    scale = np.where(absmax > 0, absmax / qmax, 1.0)
    s = scale if per != "row" else scale[:, None]
    q = np.clip(np.rint(a / s), -qmax, qmax).astype(np.int8)
    return np.ascontiguousarray(q), np.asarray(scale, dtype=np.float64)


def dequantize(c: Any, scale_a: Any, scale_b: Any, dtype=np.float32) -> np.ndarray:
    """C (int32, m×n) of quantized operands back to float: C_ij · s_a[i] · s_b[j] (per-tensor scales are
    scalars and broadcast)."""
    ci = np.asarray(c.detach().cpu().numpy() if hasattr(c, "detach") else c)
    if ci.ndim != 2:
        raise JobError("C must be 2-D")
    sa = np.asarray(scale_a, dtype=np.float64)
    sb = np.asarray(scale_b, dtype=np.float64)
    if sa.ndim == 1:
        if sa.shape[0] != ci.shape[0]:
            raise JobError(f"{sa.shape[0]} row scales for a C of {ci.shape[0]} rows")
        sa = sa[:, None]
    if sb.ndim == 1:
        if sb.shape[0] != ci.shape[1]:
            raise JobError(f"{sb.shape[0]} column scales for a C of {ci.shape[1]} columns")
        sb = sb[None, :]
    return (ci.astype(np.float64) * sa * sb).astype(dtype)


def matmul(client, wallet, x: Any, w: Any, **kw) -> np.ndarray:
    """x @ w (floats) as a paid job: x quantized per row, w per column, C verified and de-quantized.
    Keyword arguments go to Client.submit_job (max_fee, timeout, progress, ...)."""
    qa, sa = quantize(x, "row")
    qb, sb = quantize(w, "column")
    res = client.submit_job(wallet, qa, qb, **kw)
    return dequantize(res.c, sa, sb)
