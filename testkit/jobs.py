"""Deterministic client operands for tests of job settlement."""

from __future__ import annotations

import numpy as np
import torch

from pouw.commit import commit_job, commit_result
from pouw.job import JobCommitment


def job_operands(seed: int, m: int, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, JobCommitment]:
    """Client operands A (m×k), B (k×n) in [-64, 64], their exact int32 product C, and the job commitment."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-64, 65, (m, k), generator=g, dtype=torch.int64).to(torch.int8)
    b = torch.randint(-64, 65, (k, n), generator=g, dtype=torch.int64).to(torch.int8)
    c = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    return a, b, c, commit_job(a, b)


def blob_hash(data: torch.Tensor | np.ndarray) -> bytes:
    """Content address of a result blob: H_C, its commitment (operand blobs are addressed by H_A / H_B)."""
    return commit_result(data)
