"""Verification of a block proof, cheapest check first. Cost: O((h + w) k) bytes and h·w·k MACs.

Reject reasons (stable): bad-pow-encoding, bad-pow-shape, bad-pow-tile, bad-pow-target, bad-pow-template,
high-ticket, bad-pow-range, bad-pow-merkle-a, bad-pow-merkle-b, bad-pow-ticket.
"""

from __future__ import annotations

import numpy as np

from pouw.commit import TAG_A, TAG_B
from pouw.errors import JobError, PowError
from pouw.job import JobCommitment
from pouw.merkle import verify_range
from pouw.noise import derive_seeds, noise_cols, noise_rows
from pouw.params import OPERAND_MAX, PowParams
from pouw.proof import TileProof
from pouw.ticket import block_work, ticket_hash, win_threshold
from pouw.transcript import tile_message

__all__ = ["verify_proof", "verify_tile", "block_work", "PowError"]


def verify_proof(template: bytes, job: JobCommitment, proof: TileProof, target: int, params: PowParams) -> bytes:
    """Check that `proof` is a winning tile of `job` mined under `template`; return its ticket.

    Raises PowError with a stable reason on the first failed check.
    """
    if target <= 0:
        _check_fit(job, proof, params, "bad-pow")
        raise PowError("bad-pow-target", "target must be positive")
    return verify_tile(template, job, proof, win_threshold(target, params.tile_work(job.k)), params)


def _check_fit(job: JobCommitment, proof: TileProof, params: PowParams, pfx: str) -> None:
    try:
        params.check_shape(job.m, job.k, job.n)
    except JobError as e:
        raise PowError(f"{pfx}-shape", str(e)) from None
    h, w, k = params.tile_h, params.tile_w, job.k
    if (proof.h, proof.w, proof.k) != (h, w, k):
        raise PowError(f"{pfx}-shape", "proof tile or k disagrees with the job and parameters")
    if not (0 <= proof.ti < job.m // h and 0 <= proof.tj < job.n // w):
        raise PowError(f"{pfx}-tile", f"tile ({proof.ti}, {proof.tj}) outside the job")


def verify_tile(
    template: bytes,
    job: JobCommitment,
    proof: TileProof,
    threshold: int,
    params: PowParams,
    *,
    pfx: str = "bad-pow",
    high: str = "high-ticket",
) -> bytes:
    """Check that `proof` is a tile of `job` mined under `template` whose ticket is below `threshold`
    (the block's work-scaled target, or a work certificate's share threshold, pouw.share); return the
    ticket. Reasons are `pfx`-shape, -tile, -template, `high`, -range, -merkle-a, -merkle-b, -ticket."""
    _check_fit(job, proof, params, pfx)
    h, w, k = params.tile_h, params.tile_w, job.k
    seeds = derive_seeds(template, job)
    if proof.job_key != seeds.job_key:
        raise PowError(f"{pfx}-template", "proof was mined under another template")
    if int.from_bytes(proof.ticket, "big") >= threshold:
        raise PowError(high, "ticket is not below the threshold")
    a_rows = np.frombuffer(proof.a_rows, dtype=np.int8).reshape(h, k)
    b_cols = np.frombuffer(proof.b_cols, dtype=np.int8).reshape(w, k)
    if (
        a_rows.min() < -OPERAND_MAX
        or a_rows.max() > OPERAND_MAX
        or b_cols.min() < -OPERAND_MAX
        or b_cols.max() > OPERAND_MAX
    ):
        raise PowError(f"{pfx}-range", f"opened entry outside [-{OPERAND_MAX}, {OPERAND_MAX}]")
    verify_range(
        TAG_A,
        job.h_a,
        job.m,
        k,
        proof.ti * h,
        [proof.a_rows[i * k : (i + 1) * k] for i in range(h)],
        proof.path_a,
        f"{pfx}-merkle-a",
    )
    verify_range(
        TAG_B,
        job.h_b,
        job.n,
        k,
        proof.tj * w,
        [proof.b_cols[i * k : (i + 1) * k] for i in range(w)],
        proof.path_b,
        f"{pfx}-merkle-b",
    )
    r = params.rank
    a_noisy = a_rows.astype(np.int16) + noise_rows(seeds, range(proof.ti * h, (proof.ti + 1) * h), k, r)
    b_noisy = b_cols.astype(np.int16) + noise_cols(seeds, range(proof.tj * w, (proof.tj + 1) * w), k, r)
    msg = tile_message(a_noisy, b_noisy, r)
    ticket = ticket_hash(seeds.job_key, proof.ti, proof.tj, msg.astype("<u4").tobytes())
    if ticket != proof.ticket:
        raise PowError(f"{pfx}-ticket", "replayed transcript gives another ticket")
    return ticket
