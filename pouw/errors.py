"""Errors of the useful-work protocol. Every rejection carries a short, stable reason string."""

from __future__ import annotations


class PowError(Exception):
    """A proof, commitment or fraud proof was rejected. `reason` is stable; tests assert on it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class JobError(ValueError):
    """Operands that cannot be mined or settled (bad dtype, rank, range, shape). Message is for humans."""
