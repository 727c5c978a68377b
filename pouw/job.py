"""The job a block's work is done on: commitments to A (rows) and B (columns) plus the shape.

`JobCommitment` is validation-side (no torch); the operand checks, which return torch tensors for the miner and
the client, import torch when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pouw.errors import JobError
from pouw.params import OPERAND_MAX

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class JobCommitment:
    """H_A = Merkle commitment over the rows of A (m x k), H_B over the columns of B (k x n)."""

    h_a: bytes
    h_b: bytes
    m: int
    k: int
    n: int

    def __post_init__(self) -> None:
        if len(self.h_a) != 32 or len(self.h_b) != 32:
            raise JobError("job commitments must be 32 bytes")

    def to_list(self) -> list[Any]:
        return [self.h_a, self.h_b, self.m, self.k, self.n]

    @classmethod
    def from_list(cls, items: list[Any]) -> "JobCommitment":
        if not isinstance(items, (list, tuple)) or len(items) != 5:
            raise JobError("job commitment must be a list of 5 fields")
        h_a, h_b, m, k, n = items
        if not isinstance(h_a, bytes) or not isinstance(h_b, bytes):
            raise JobError("job commitments must be bytes")
        if not all(type(x) is int for x in (m, k, n)):
            raise JobError("job shape must be integers")
        return cls(h_a, h_b, m, k, n)

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def as_int8_matrix(x: Any, name: str, lo: int = -OPERAND_MAX, hi: int = OPERAND_MAX) -> torch.Tensor:
    """Return `x` as a contiguous 2-D int8 CPU tensor after checking dtype, rank, layout and range.

    Accepts torch tensors and numpy arrays. Anything else, other dtypes, non-contiguous layouts and values
    outside [lo, hi] raise JobError with a message naming the operand.
    """
    import torch

    if isinstance(x, np.ndarray):
        if x.dtype != np.int8:
            raise JobError(f"{name} must have dtype int8, got {x.dtype}")
        if not x.flags["C_CONTIGUOUS"]:
            raise JobError(f"{name} is not contiguous (use np.ascontiguousarray)")
        t = torch.from_numpy(x)
    elif isinstance(x, torch.Tensor):
        if x.dtype != torch.int8:
            raise JobError(f"{name} must have dtype int8, got {x.dtype}")
        if not x.is_contiguous():
            raise JobError(f"{name} is not contiguous (call .contiguous())")
        t = x.detach().cpu() if x.device.type != "cpu" else x.detach()
    else:
        raise JobError(f"{name} must be a numeric int8 array (torch tensor or numpy array), got {type(x).__name__}")
    if t.dim() != 2:
        raise JobError(f"{name} must be 2-D, got {t.dim()}-D")
    if t.numel() == 0:
        raise JobError(f"{name} is empty")
    mn, mx = int(t.min()), int(t.max())
    if mn < lo or mx > hi:
        raise JobError(f"{name} has entries outside [{lo}, {hi}] (min {mn}, max {mx})")
    return t


def check_operands(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a client's operands (range [-64, 64], int8, 2-D, contiguous, inner dims agree)."""
    ta = as_int8_matrix(a, "A")
    tb = as_int8_matrix(b, "B")
    if ta.shape[1] != tb.shape[0]:
        raise JobError(f"inner dimensions disagree: A is {tuple(ta.shape)}, B is {tuple(tb.shape)}")
    return ta, tb
