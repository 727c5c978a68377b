"""Work shares: a tile proof checked against a share threshold instead of the block target
(docs/protocol.md §10). A job's work certificate (docs/jobs.md) is one share of the job.

A pass over a job of N = (m/h)·(n/w) tiles draws N independent tickets, each costing its tile's h·w·k
multiply-adds whatever the operands (§3, §4). The share threshold is ⌊SHARE_EXPECTED · 2^256 / N⌋, so a
full pass holds a share (its best ticket is below it) with probability 1 − (1 − c/N)^N ≥ 1 − e^−c
(c = SHARE_EXPECTED; N ≥ c), and a pass that computes a fraction f of the tiles with probability
≤ 1 − (1 − c/N)^(fN) ≤ c·f. Each attempt (a fresh template) costs f·W multiply-adds (W = m·k·n), so the
expected work per share is ≥ W / c, whatever strategy (fractions, retries) is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pouw.job import JobCommitment
from pouw.params import PowParams
from pouw.proof import TileProof
from pouw.ticket import winning_tiles
from pouw.verify import verify_tile

if TYPE_CHECKING:
    from pouw.miner import MiningResult, PreparedJob

SHARE_EXPECTED = 2  # c: expected tickets below the share threshold in one full pass


def job_tiles(job: JobCommitment, params: PowParams) -> int:
    """N: the number of lottery tiles of a (minable) job."""
    return (job.m // params.tile_h) * (job.n // params.tile_w)


def share_threshold(job: JobCommitment, params: PowParams) -> int:
    """⌊c · 2^256 / N⌋: a ticket below it is a share of the job."""
    return (SHARE_EXPECTED << 256) // max(1, job_tiles(job, params))


def verify_share(template: bytes, job: JobCommitment, proof: TileProof, params: PowParams) -> bytes:
    """Check that `proof` is a tile of `job` mined under `template` with a ticket below the share
    threshold; return the ticket. Raises PowError: bad-cert-shape, bad-cert-tile, bad-cert-template,
    bad-cert-share (ticket not below the threshold), bad-cert-range, bad-cert-merkle-a, bad-cert-merkle-b,
    bad-cert-ticket (the replayed transcript gives another ticket: a forged or cheaply made ticket)."""
    return verify_tile(
        template, job, proof, share_threshold(job, params), params, pfx="bad-cert", high="bad-cert-share"
    )


def best_share(res: "MiningResult", prep: "PreparedJob", params: PowParams) -> TileProof | None:
    """The share of a finished pass (its lowest ticket, with its tile proof) or None when the pass
    holds none. Uses the tickets the pass already drew: no extra work beyond one tile proof."""
    from pouw.miner import make_proof

    _, best = winning_tiles(res.tickets_t, share_threshold(prep.job, params), 1)
    if not best:
        return None
    i, ticket = best[0]
    tj_n = prep.job.n // params.tile_w
    return make_proof(prep, res.job_key, i // tj_n, i % tj_n, ticket, params)
