"""Work certificates (docs/jobs.md, docs/economy.md one-hop rule): a job paid with restricted tokens
(spend-only, allocation, vintage) releases them to its miner as free tokens only with a share of the
job's work. Costs are counted in multiply-adds (each ticket's transcript: h·w·k MACs), never timed.
Conservation is asserted after every block (EconSim.end_block)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chain.block import Header
from chain.econsim import EconSim
from chain.errors import TxError
from chain.hashing import ZERO_HASH
from chain.jobs import required_bond
from testkit.jobs import job_operands
from chain.tx import (
    KIND_JOB_CLAIM,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
    JobClaim,
    JobResult,
    JobSubmit,
    WorkCert,
    check_tx,
)
from chain.workcert import CERT_WINDOW, cert_size_bound, k_certified
from pouw.commit import commit_job, commit_result
from pouw.miner import make_proof, mine_job, prepare_job
from pouw.noise import derive_seeds, noise_cols, noise_rows
from pouw.proof import TileProof
from pouw.share import SHARE_EXPECTED, best_share, job_tiles, share_threshold, verify_share
from pouw.errors import PowError
from pouw.ticket import ticket_hash
from pouw.transcript import tile_message
from test_economy import ALT, BUYER, FUND, MINER, SUB, _bought, hold, new_sim

M, K, N = 64, 512, 64  # regtest tiles are 8 x 8: 64 tiles of 32,768 MACs
W = M * K * N


@pytest.fixture(scope="module")
def ops():
    a, b, c, job = job_operands(7, M, K, N)
    return a, b, c, job, prepare_job(a, b, new_sim().cfg.pow.params())


class CountingMiner:
    """Computes tickets tile by tile from the noisy operands of a template, counting the multiply-adds of
    each tile's transcript (h·w·k): what any strategy pays for the tickets it knows."""

    def __init__(self, params, a, b, job):
        self.params, self.job = params, job
        self.a = a.numpy().astype(np.int16)
        self.bt = b.numpy().T.astype(np.int16)
        self.macs = 0

    def tickets(self, template: bytes, tiles) -> dict[int, bytes]:
        p, job = self.params, self.job
        h, w, r = p.tile_h, p.tile_w, p.rank
        seeds = derive_seeds(template, job)
        tj_n = job.n // w
        out = {}
        for t in tiles:
            ti, tj = divmod(t, tj_n)
            a_n = self.a[ti * h : (ti + 1) * h] + noise_rows(seeds, range(ti * h, (ti + 1) * h), job.k, r)
            b_n = self.bt[tj * w : (tj + 1) * w] + noise_cols(seeds, range(tj * w, (tj + 1) * w), job.k, r)
            msg = tile_message(a_n, b_n, r)
            self.macs += h * w * job.k
            out[t] = ticket_hash(seeds.job_key, ti, tj, msg.astype("<u4").tobytes())
        return out


def template(s: EconSim, job, miner: bytes, nonce: int = 0, height: int | None = None, prev: bytes | None = None):
    h = s.next_height if height is None else height
    hd = Header(
        s.cfg.version,
        s.cfg.chain_id,
        h,
        prev if prev is not None else s.block_id(h - 1),
        0,
        1,
        ZERO_HASH,
        ZERO_HASH,
        miner,
        job,
        nonce,
    )
    return hd.template


def honest_cert(s: EconSim, prep, miner: bytes, start_nonce: int = 0) -> tuple[WorkCert, int]:
    """A full pass (the real kernel, as the node's miner runs it) under templates nonce, nonce + 1, ...
    until one holds a share; returns the certificate and the number of passes."""
    params = s.cfg.pow.params()
    for i in range(start_nonce, start_nonce + 50):
        tpl = template(s, prep.job, miner, i)
        res = mine_job(tpl, prep.job, prep.a, prep.b, 1, params, prepared=prep, recover_c=False, max_proofs=0)
        share = best_share(res, prep, params)
        if share is not None:
            return WorkCert(tpl, share.encode()), i - start_nonce + 1
    raise AssertionError("no share in 50 passes")


def paid_job(s: EconSim, job, payer=BUYER, max_fee=1000):
    p = JobSubmit(job.h_a, job.h_b, job.m, job.k, job.n, max_fee, s.next_height + 40, job.h_a, job.h_b)
    tx = s.make(payer, KIND_JOB_SUBMIT, p)
    assert s.add(tx) is None
    s.end_block()
    assert s.submit(ALT, KIND_JOB_CLAIM, JobClaim(tx.txid, required_bond(s.cfg, max_fee))) is None
    s.end_block()
    return tx.txid


def result(s: EconSim, jid: bytes, c, cert: WorkCert | None):
    h_c = commit_result(c)
    tx = s.make(ALT, KIND_JOB_RESULT, JobResult(jid, h_c, h_c, cert))
    try:
        check_tx(tx, s.cfg.chain_id, s.cfg.max_tx_bytes, check_sig=False)  # fits a transaction
    except TxError as e:
        return e.reason
    return s.add(tx)


def release(s: EconSim, jid: bytes) -> None:
    s.run(s.cfg.jobs.challenge_window + 1)
    assert s.st.get_job(jid).status_name == "released"


# --- the release ----------------------------------------------------------------------------------------
def test_certified_release_pays_free_tokens_uncertified_spend_only(ops):
    a, b, c, job, prep = ops
    for certify in (True, False):
        s = new_sim(buyback_bps=0)
        _bought(s)  # BUYER holds 1000 spend-only tokens
        jid = paid_job(s, job)
        cert = honest_cert(s, prep, ALT.address)[0] if certify else None
        assert result(s, jid, c, cert) is None
        s.end_block()
        assert (s.st.get_econ(k_certified(jid)) is not None) == certify
        release(s, jid)
        assert s.st.get_econ(k_certified(jid)) is None  # gone with the funding record
        free, so = s.st.get(ALT.address).balance, hold(s, ALT)["spend_only"]
        assert (free, so) == ((FUND + 1000, 0) if certify else (FUND, 1000))
        assert hold(s, BUYER)["spend_only"] == 0


def test_free_paid_job_needs_no_certificate(ops):
    a, b, c, job, prep = ops
    s = new_sim()
    jid = paid_job(s, job, payer=SUB)  # paid from free tokens: no funding record
    assert result(s, jid, c, None) is None
    release(s, jid)
    assert s.st.get(ALT.address).balance == FUND + 1000 and hold(s, ALT)["spend_only"] == 0


def test_allocation_funded_job_is_released_spend_only_without_certificate(ops):
    from test_economy import grant

    a, b, c, job, prep = ops
    s = new_sim()
    grant(s, alloc=20_000_000, period=60)  # 2000 base units of allocation for SUB
    free = s.st.get(SUB.address).balance
    jid = paid_job(s, job, payer=SUB)
    assert s.st.get(SUB.address).balance == free  # drawn from the allocation
    assert result(s, jid, c, None) is None
    release(s, jid)
    assert hold(s, ALT)["spend_only"] == 1000 and s.st.get(ALT.address).balance == FUND


# --- refusals -------------------------------------------------------------------------------------------
def refused(s, jid, c, cert) -> str:
    return result(s, jid, c, cert)


def with_proof(cert: WorkCert, **changes) -> WorkCert:
    from dataclasses import replace

    return WorkCert(cert.template, replace(TileProof.decode(cert.proof), **changes).encode())


def test_certificates_refused_with_stable_reasons(ops):
    a, b, c, job, prep = ops
    s = new_sim(buyback_bps=0)
    s.run(CERT_WINDOW + 2)  # old enough for a stale template
    _bought(s)
    jid = paid_job(s, job)
    params = s.cfg.pow.params()
    good, _ = honest_cert(s, prep, ALT.address)
    # another job: a pass over other operands (its own share, honestly computed)
    a2, b2, _, job2 = job_operands(8, M, K, N)
    prep2 = prepare_job(a2, b2, params)
    other_job, _ = honest_cert(s, prep2, ALT.address)
    assert refused(s, jid, c, other_job) == "bad-cert-job"
    # another miner: the pass ran under MINER's address
    assert refused(s, jid, c, honest_cert(s, prep, MINER.address)[0]) == "bad-cert-miner"
    # a stale prev: a template older than CERT_WINDOW, and one whose prev is not this chain's block
    old_h = s.next_height - CERT_WINDOW - 1
    tpl_old = template(s, job, ALT.address, height=old_h)
    assert refused(s, jid, c, WorkCert(tpl_old, good.proof)) == "bad-cert-stale"
    tpl_fork = template(s, job, ALT.address, prev=b"\x01" * 32)
    assert refused(s, jid, c, WorkCert(tpl_fork, good.proof)) == "bad-cert-stale"
    future = template(s, job, ALT.address, height=s.next_height + 1)
    assert refused(s, jid, c, WorkCert(future, good.proof)) == "bad-cert-stale"
    # a pass's proof under another template (the same job and miner, another nonce)
    assert refused(s, jid, c, WorkCert(template(s, job, ALT.address, 999), good.proof)) == "bad-cert-template"
    # a forged ticket: the best possible number, on a tile the miner did not compute
    assert refused(s, jid, c, with_proof(good, ticket=bytes(32))) == "bad-cert-ticket"
    # a real ticket above the threshold (the pass's worst tile)
    tpl = good.template
    res = mine_job(tpl, job, a, b, 1, params, prepared=prep, recover_c=False, max_proofs=0)
    flat = res.tickets.reshape(-1, 32)
    worst = max(range(len(flat)), key=lambda i: flat[i].tobytes())
    tj_n = N // params.tile_w
    high = make_proof(prep, res.job_key, worst // tj_n, worst % tj_n, flat[worst].tobytes(), params)
    assert refused(s, jid, c, WorkCert(tpl, high.encode())) == "bad-cert-share"
    # broken openings, a tile outside the job, garbage
    pr = TileProof.decode(good.proof)
    assert refused(s, jid, c, with_proof(good, a_rows=bytes(len(pr.a_rows)))) == "bad-cert-merkle-a"
    assert refused(s, jid, c, with_proof(good, ti=M)) == "bad-cert-tile"
    assert refused(s, jid, c, WorkCert(b"\x90", good.proof)) == "bad-cert-encoding"
    assert refused(s, jid, c, WorkCert(tpl, b"junk")) == "bad-cert-encoding"
    # the good one is accepted once; the same template cannot certify a repeat of the job
    assert refused(s, jid, c, good) is None
    s.end_block()
    jid2 = paid_job(s, job)  # the same commitment, paid again
    assert refused(s, jid2, c, good) == "bad-cert-used"  # the same pass cannot certify it
    release(s, jid)


def test_one_template_certifies_one_job(ops):
    """Two jobs with the same commitment in one block: one pass cannot certify both."""
    a, b, c, job, prep = ops
    s = new_sim(buyback_bps=0)
    _bought(s)
    p = JobSubmit(job.h_a, job.h_b, M, K, N, 400, s.next_height + 40, job.h_a, job.h_b)
    t1 = s.make(BUYER, KIND_JOB_SUBMIT, p)
    assert s.add(t1) is None
    t2 = s.make(BUYER, KIND_JOB_SUBMIT, p)
    assert s.add(t2) is None
    s.end_block()
    for t in (t1, t2):
        assert s.submit(ALT, KIND_JOB_CLAIM, JobClaim(t.txid, required_bond(s.cfg, 400))) is None
    s.end_block()
    cert, _ = honest_cert(s, prep, ALT.address)
    assert result(s, t1.txid, c, cert) is None
    assert result(s, t2.txid, c, cert) == "bad-cert-used"
    cert2, _ = honest_cert(s, prep, ALT.address, start_nonce=1000)  # a second pass: accepted
    assert result(s, t2.txid, c, cert2) is None
    s.end_block()
    assert s.st.get_econ(k_certified(t1.txid)) is not None and s.st.get_econ(k_certified(t2.txid)) is not None
    used = sorted(k for k in s.st.econ if k[:1] == b"U")
    assert len(used) == 2
    th = int.from_bytes(used[0][1:9], "big")
    while s.next_height < th + CERT_WINDOW:  # still acceptable at th + CERT_WINDOW: kept
        s.end_block()
        assert len([k for k in s.st.econ if k[:1] == b"U"]) == 2
    s.end_block()  # too old for any later block: pruned
    assert not [k for k in s.st.econ if k[:1] == b"U"]


def test_zero_operand_shortcut_is_refused(ops):
    """A = 0: the plain product is known for free. Tickets made from it (no noise, no transcript) are cheap
    to grind; one below the threshold is still refused (`bad-cert-ticket`): the noise makes a ticket cost
    its tile's MACs whatever the operands. A full honest pass over A = 0 verifies."""
    s = new_sim(buyback_bps=0)
    params = s.cfg.pow.params()
    a = torch.zeros((M, K), dtype=torch.int8)
    b = job_operands(9, M, K, N)[1]
    job = commit_job(a, b)
    prep = prepare_job(a, b, params)
    thr = share_threshold(job, params)
    tj_n = N // params.tile_w
    for nonce in range(10_000):  # grind templates: hashes only, no MACs
        tpl = template(s, job, ALT.address, nonce)
        jk = derive_seeds(tpl, job).job_key
        cheap = [(ticket_hash(jk, t // tj_n, t % tj_n, bytes(64)), t) for t in range(job_tiles(job, params))]
        tk, t = min(cheap)
        if int.from_bytes(tk, "big") < thr:
            break
    else:
        raise AssertionError("no cheap ticket below the threshold")
    forged = make_proof(prep, jk, t // tj_n, t % tj_n, tk, params)
    with pytest.raises(PowError) as e:
        verify_share(tpl, job, forged, params)
    assert e.value.reason == "bad-cert-ticket"
    cert, _ = honest_cert(s, prep, ALT.address)
    verify_share(cert.template, job, TileProof.decode(cert.proof), params)


# --- the cost, counted in multiply-adds -------------------------------------------------------------------
def test_laundering_costs_at_least_w_over_c_per_share(ops):
    """Strategies that compute a fraction f of the tiles under fresh templates until they hold a share:
    MACs spent per share >= W / c (docs/economy.md), and the honest full pass succeeds with
    1 - (1 - c/N)^N ~ 1 - e^-c. The counted tickets are the kernel's (checked on one template)."""
    a, b, c, job, prep = ops
    s = new_sim()
    params = s.cfg.pow.params()
    n_tiles = job_tiles(job, params)
    thr = share_threshold(job, params)
    cm = CountingMiner(params, a, b, job)
    tpl0 = template(s, job, ALT.address, 0)
    res = mine_job(tpl0, job, a, b, 1, params, prepared=prep, recover_c=False, max_proofs=0)
    flat = res.tickets.reshape(-1, 32)
    got = cm.tickets(tpl0, range(n_tiles))
    assert all(got[t] == flat[t].tobytes() for t in range(n_tiles))
    assert cm.macs == W  # a full pass is the job's work
    templates = 256
    per_tpl = []
    for nonce in range(templates):
        cm_t = cm.tickets(template(s, job, ALT.address, nonce), range(n_tiles))
        per_tpl.append([int.from_bytes(cm_t[t], "big") for t in range(n_tiles)])
    total_macs = cm.macs
    assert total_macs == (templates + 1) * W
    for frac in (1, 4, 16, 64):  # f = 1/frac of the tiles per template
        k_tiles = n_tiles // frac
        successes = sum(1 for row in per_tpl if min(row[:k_tiles]) < thr)
        spent = templates * k_tiles * params.tile_work(K)  # the MACs of the tickets this strategy knows
        p_theory = 1 - (1 - SHARE_EXPECTED / n_tiles) ** k_tiles
        assert abs(successes / templates - p_theory) < 4 * (p_theory * (1 - p_theory) / templates) ** 0.5 + 0.02
        print(
            f"f=1/{frac}: {successes}/{templates} shares, {spent / max(1, successes) / W:.3f} W per share "
            f"(theory {k_tiles / n_tiles / p_theory:.3f} W, bound {1 / SHARE_EXPECTED:.3f} W)"
        )
        if successes:
            assert spent / successes >= 0.6 * W / SHARE_EXPECTED  # W/c, less sampling noise (256 templates)
    honest = sum(1 for row in per_tpl if min(row) < thr) / templates
    assert honest > 0.75  # 1 - (1 - 2/64)^64 = 0.87


def test_certificate_size_fits_a_transaction(ops):
    """A result with a certificate stays within max_tx_bytes; `cert_size_bound` bounds its size, and the
    largest k whose certificate fits follows from it (docs/jobs.md)."""
    a, b, c, job, prep = ops
    s = new_sim()
    cert, _ = honest_cert(s, prep, ALT.address)
    h_c = commit_result(c)
    tx = s.make(ALT, KIND_JOB_RESULT, JobResult(bytes(32), h_c, h_c, cert))
    assert len(tx.encoded) <= cert_size_bound(s.cfg, M, K, N) <= s.cfg.max_tx_bytes
    cfg = s.cfg
    assert cert_size_bound(cfg, M, 1920, N) <= cfg.max_tx_bytes < cert_size_bound(cfg, M, 2048, N)
