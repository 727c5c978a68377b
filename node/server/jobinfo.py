"""Read-only views of compute jobs for the HTTP API (docs/api.md, docs/jobs-client.md): a job's progress
(queue position, estimate), its receipt (the transactions that moved it), a wallet's jobs, and the price
of a shape (going rate and the fees that recently cleared); and a node's fee floor for paid jobs (`fee_floor`,
`floor_fee`, `below_floor`: its miner takes no job below it, node.server.paidjobs; the API shows it, node.server.jobs_api).

Everything here reads the chain state at the tip (and the mempool for pending submits) and changes
nothing. Estimates use integer block heights and the headers' timestamps only; they are advice for a
client, never consensus.
"""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import median
from typing import TYPE_CHECKING, Callable

from chain.jobs import JobRecord, check_job_shape, job_price
from chain.tx import (
    KIND_JOB_ANSWER,
    KIND_JOB_CANCEL,
    KIND_JOB_CHALLENGE,
    KIND_JOB_CLAIM,
    KIND_JOB_DISPUTE,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
)

if TYPE_CHECKING:
    from chain.tx import Transaction
    from node.server.interfaces import NodeView


def fee_floor(conf_rate: str | Fraction | None, cfg) -> Fraction:
    """A node's minimum fee per multiply-add: the configured rate (e.g. "1/10000" or "0.0001" base units
    per MAC), default the chain's going rate (rate_num / rate_den)."""
    if conf_rate is None or conf_rate == "":
        return Fraction(cfg.jobs.rate_num, cfg.jobs.rate_den)
    r = Fraction(conf_rate)
    if r < 0:
        raise ValueError("the minimum job fee rate must be >= 0")
    return r


def floor_fee(rate: Fraction, macs: int) -> int:
    """The smallest fee a job of `macs` multiply-adds must offer to meet `rate`: ceil(macs · rate)."""
    return -(-(macs * rate.numerator) // rate.denominator)


def below_floor(rate: Fraction, fee: int, macs: int) -> bool:
    return fee < floor_fee(rate, macs)


RECENT_BLOCKS = 100  # "recently": jobs claimed (cleared) within this many blocks of the tip
INTERVAL_BLOCKS = 30  # block interval: mean over this many recent headers


def block_interval(node: NodeView, blocks: int = INTERVAL_BLOCKS) -> float:
    """Mean seconds between the last `blocks` blocks (header timestamps, 1 s resolution); the chain's
    target block time while the chain is shorter than 2 blocks or the timestamps do not move."""
    cs = node.chain
    top = cs.height
    lo = max(0, top - blocks)
    if top - lo < 2:
        return float(cs.cfg.target_block_time)
    t_hi = cs.get_header(cs.block_hash_at(top)).timestamp  # type: ignore[arg-type,union-attr]
    t_lo = cs.get_header(cs.block_hash_at(lo)).timestamp  # type: ignore[arg-type,union-attr]
    if t_hi <= t_lo:
        return float(cs.cfg.target_block_time)
    return (t_hi - t_lo) / (top - lo)


def _recent(jobs: dict[bytes, JobRecord], tip: int, window: int) -> list[JobRecord]:
    """Jobs a miner claimed within the last `window` blocks (their fee cleared)."""
    return [r for r in jobs.values() if r.claim_height and r.claim_height > tip - window]


def _pending_submits(node: NodeView, sender: bytes | None = None) -> list:
    out = []
    mp = node.mempool
    senders = [sender] if sender is not None else list(mp.by_sender)
    for s in senders:
        for _, txid in sorted(mp.by_sender.get(s, {}).items()):
            tx = mp.get(txid)
            if tx is not None and tx.kind == KIND_JOB_SUBMIT:
                out.append(tx)
    return out


def pending_json(tx, height: int) -> dict:
    p = tx.payload
    return {
        "job_id": tx.txid.hex(),
        "status": "pending",
        "client": tx.sender.hex(),
        "m": p.m,
        "k": p.k,
        "n": p.n,
        "macs": p.m * p.k * p.n,
        "fee": p.max_fee,
        "deadline": p.deadline,
        "blob_a": p.blob_a.hex(),
        "blob_b": p.blob_b.hex(),
        "height": height,
    }


def jobs_of(node: NodeView, client: bytes, status: str = "all", limit: int = 100) -> dict:
    """A wallet's jobs, newest first: pending submits (mempool) then on-chain records (any status, or
    `status` only)."""
    cs = node.chain
    items: list[dict] = []
    if status in ("all", "pending"):
        items += [pending_json(t, cs.height) for t in reversed(_pending_submits(node, client))]
    if status != "pending":
        recs = sorted(
            (
                (j, r)
                for j, r in cs.jobs().items()
                if r.client == client and (status == "all" or r.status_name == status)
            ),
            key=lambda x: (-x[1].submit_height, x[0]),
        )
        items += [r.to_json(j, cs.cfg) for j, r in recs]
    return {"client": client.hex(), "status": status, "height": cs.height, "count": len(items), "jobs": items[:limit]}


def progress(node: NodeView, job_id: bytes) -> dict | None:
    """Where a job stands: status, queue position among claimable jobs (1 = the next a miner takes),
    blocks and seconds to a result (estimate), the settlement height. None for an unknown job.

    Estimate (blocks until C is posted): from the jobs claimed in the last RECENT_BLOCKS blocks,
    `turnaround` = median(result_height − submit_height) (≥ 1; 2 without history) and `miners` = the
    number of distinct claimers (≥ 1). Pending: 1 + turnaround. Open at position p:
    ⌊(p − 1) / miners⌋ · turnaround + turnaround. Claimed: max(1, median(result − claim) − blocks since
    the claim). Resulted or closed: 0. Seconds = blocks × the recent mean block interval."""
    cs = node.chain
    tip = cs.height
    interval = block_interval(node)
    rec = cs.get_job(job_id)
    recent = _recent(cs.jobs(), tip, RECENT_BLOCKS)
    done = [r for r in recent if r.result_height]
    turnaround = max(1, int(median(r.result_height - r.submit_height for r in done))) if done else 2
    compute = max(0, int(median(r.result_height - r.claim_height for r in done))) if done else 1
    miners = max(1, len({r.miner for r in recent}))
    opens = cs.open_jobs()
    out: dict = {
        "job_id": job_id.hex(),
        "height": tip,
        "block_interval_s": round(interval, 3),
        "queue_length": len(opens),
        "queue_position": None,
        "miners_recent": miners,
    }
    if rec is None:
        tx = node.mempool.get(job_id)
        if tx is None or tx.kind != KIND_JOB_SUBMIT:
            return None
        # a pending submit joins the queue behind every open job paying at least as much per MAC
        p = tx.payload
        fpm = Fraction(p.max_fee, max(1, p.m * p.k * p.n))
        pos = 1 + sum(1 for _, r in opens if r.fee_per_mac >= fpm)
        blocks = 1 + (pos - 1) // miners * turnaround + turnaround
        out.update(status="pending", queue_position=pos, estimate_blocks=blocks)
    else:
        out.update(
            status=rec.status_name,
            submit_height=rec.submit_height,
            deadline=rec.deadline,
            claim_height=rec.claim_height or None,
            result_height=rec.result_height or None,
            challenge_until=rec.challenge_until(cs.cfg) or None,
            closed_height=rec.closed_height or None,
            miner=rec.miner.hex() if rec.claim_height else None,
        )
        at = next((i + 1 for i, (j, _) in enumerate(opens) if j == job_id), None)
        if at is not None:  # open (or a lapsed claim: claimable again)
            out["queue_position"] = at
            blocks = (at - 1) // miners * turnaround + turnaround
        elif rec.status_name == "claimed":
            blocks = max(1, compute - (tip - rec.claim_height))
        else:
            blocks = 0
        out["estimate_blocks"] = blocks
    out["estimate_s"] = round(out["estimate_blocks"] * interval, 1)
    return out


def _find_tx(node: NodeView, height: int, want: Callable[[Transaction], bool]) -> Transaction | None:
    h = node.chain.block_hash_at(height) if height else None
    b = node.chain.get_block(h) if h is not None else None
    if b is None:
        return None
    return next((t for t in b.txs if want(t)), None)


def receipt(node: NodeView, job_id: bytes) -> dict | None:
    """The transactions that moved a job on the active chain: submit, (latest) claim, result, the client's
    data-availability challenge and the miner's answer, dispute or cancel, with their heights, and the
    settlement (status, height). None for a job not on the chain."""
    cs = node.chain
    rec = cs.get_job(job_id)
    if rec is None:
        return None

    def entry(t, height: int) -> dict | None:
        return None if t is None else {"txid": t.txid.hex(), "height": height, "sender": t.sender.hex(), "fee": t.fee}

    jid = lambda t: getattr(t.payload, "job_id", None) == job_id  # noqa: E731
    out: dict = {
        "job_id": job_id.hex(),
        "status": rec.status_name,
        "height": cs.height,
        "submit": entry(_find_tx(node, rec.submit_height, lambda t: t.txid == job_id), rec.submit_height),
        "claim": None,
        "result": None,
        "challenge": None,
        "answer": None,
        "dispute": None,
        "cancel": None,
        "settled": None,
    }
    if rec.claim_height:
        t = _find_tx(node, rec.claim_height, lambda t: t.kind == KIND_JOB_CLAIM and jid(t) and t.sender == rec.miner)
        out["claim"] = entry(t, rec.claim_height)
        if out["claim"] is not None:
            out["claim"]["bond"] = rec.bond
    if rec.result_height:
        t = _find_tx(node, rec.result_height, lambda t: t.kind == KIND_JOB_RESULT and jid(t))
        out["result"] = entry(t, rec.result_height)
        if out["result"] is not None:
            out["result"].update(h_c=rec.h_c.hex(), blob_c=rec.blob_c.hex())
    for name, kind, height in (
        ("challenge", KIND_JOB_CHALLENGE, rec.challenge_height),
        ("answer", KIND_JOB_ANSWER, rec.answer_height),
    ):
        if height:

            def of_kind(t: Transaction, k: int = kind) -> bool:
                return t.kind == k and jid(t)

            out[name] = entry(_find_tx(node, height, of_kind), height)
    if rec.closed_height:
        t = _find_tx(node, rec.closed_height, lambda t: t.kind in (KIND_JOB_DISPUTE, KIND_JOB_CANCEL) and jid(t))
        if t is not None:
            out["dispute" if t.kind == KIND_JOB_DISPUTE else "cancel"] = entry(t, rec.closed_height)
        out["settled"] = {"status": rec.status_name, "height": rec.closed_height}
    elif rec.result_height:
        out["settles_at"] = rec.challenge_until(cs.cfg)
    return out


def price(node: NodeView, m: int, k: int, n: int, window: int = RECENT_BLOCKS) -> dict:
    """The price of an m×k×n job (the shape as it goes on chain, i.e. padded): the going rate, the fees
    that recently cleared scaled to this shape (min / median / max of fee per multiply-add over the jobs
    claimed in the last `window` blocks), the open queue, this node's fee floor for the shape (its miner
    takes no job below it), and a suggested max fee = max(going rate, the recent median, the floor). Raises chain.errors.TxError (bad-job-shape / bad-job-size) for a shape the chain
    refuses."""
    cs = node.chain
    cfg = cs.cfg
    check_job_shape(cfg, m, k, n)
    macs = m * k * n
    going = job_price(cfg, m, k, n)
    recent = sorted(r.fee_per_mac for r in _recent(cs.jobs(), cs.height, window))
    scaled = lambda f: max(1, math.ceil(f * macs))  # noqa: E731
    cleared = None
    if recent:
        mid = (
            recent[len(recent) // 2]
            if len(recent) % 2
            else (recent[len(recent) // 2 - 1] + recent[len(recent) // 2]) / 2
        )
        cleared = {"jobs": len(recent), "min": scaled(recent[0]), "median": scaled(mid), "max": scaled(recent[-1])}
    opens = cs.open_jobs()
    queue = {"open": len(opens), "best_fee": scaled(opens[0][1].fee_per_mac) if opens else None}
    floor = None
    rate = getattr(node, "job_fee_floor", None)  # this node's miner's minimum fee per multiply-add
    if rate is not None:
        floor = floor_fee(Fraction(rate), macs)
    suggested = max(going, cleared["median"] if cleared else 0, floor or 0)
    queue["position_at_suggested"] = 1 + sum(1 for _, r in opens if r.fee_per_mac >= Fraction(suggested, macs))
    return {
        "m": m,
        "k": k,
        "n": n,
        "macs": macs,
        "height": cs.height,
        "window_blocks": window,
        "going_rate": going,
        "rate_per_mac": f"{cfg.jobs.rate_num}/{cfg.jobs.rate_den}",
        "recent": cleared,
        "queue": queue,
        "floor_fee": floor,
        "suggested_max_fee": suggested,
    }
