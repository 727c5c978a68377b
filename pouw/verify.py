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

__all__ = ["verify_proof", "block_work", "PowError"]


def verify_proof(template: bytes, job: JobCommitment, proof: TileProof, target: int, params: PowParams) -> bytes:
    """Check that `proof` is a winning tile of `job` mined under `template`; return its ticket.

    Raises PowError with a stable reason on the first failed check.
    """
    try:
        params.check_shape(job.m, job.k, job.n)
    except JobError as e:
        raise PowError("bad-pow-shape", str(e)) from None
    h, w, k = params.tile_h, params.tile_w, job.k
    if (proof.h, proof.w, proof.k) != (h, w, k):
        raise PowError("bad-pow-shape", "proof tile or k disagrees with the job and parameters")
    if not (0 <= proof.ti < job.m // h and 0 <= proof.tj < job.n // w):
        raise PowError("bad-pow-tile", f"tile ({proof.ti}, {proof.tj}) outside the job")
    if target <= 0:
        raise PowError("bad-pow-target", "target must be positive")
    seeds = derive_seeds(template, job)
    if proof.job_key != seeds.job_key:
        raise PowError("bad-pow-template", "proof was mined under another template")
    if int.from_bytes(proof.ticket, "big") >= win_threshold(target, params.tile_work(k)):
        raise PowError("high-ticket", "ticket is not below the work-scaled target")
    a_rows = np.frombuffer(proof.a_rows, dtype=np.int8).reshape(h, k)
    b_cols = np.frombuffer(proof.b_cols, dtype=np.int8).reshape(w, k)
    if (a_rows.min() < -OPERAND_MAX or a_rows.max() > OPERAND_MAX
            or b_cols.min() < -OPERAND_MAX or b_cols.max() > OPERAND_MAX):
        raise PowError("bad-pow-range", f"opened entry outside [-{OPERAND_MAX}, {OPERAND_MAX}]")
    verify_range(TAG_A, job.h_a, job.m, k, proof.ti * h,
                 [proof.a_rows[i * k:(i + 1) * k] for i in range(h)], proof.path_a, "bad-pow-merkle-a")
    verify_range(TAG_B, job.h_b, job.n, k, proof.tj * w,
                 [proof.b_cols[i * k:(i + 1) * k] for i in range(w)], proof.path_b, "bad-pow-merkle-b")
    r = params.rank
    a_noisy = a_rows.astype(np.int16) + noise_rows(seeds, range(proof.ti * h, (proof.ti + 1) * h), k, r)
    b_noisy = b_cols.astype(np.int16) + noise_cols(seeds, range(proof.tj * w, (proof.tj + 1) * w), k, r)
    msg = tile_message(a_noisy, b_noisy, r)
    ticket = ticket_hash(seeds.job_key, proof.ti, proof.tj, msg.astype("<u4").tobytes())
    if ticket != proof.ticket:
        raise PowError("bad-pow-ticket", "replayed transcript gives another ticket")
    return ticket
