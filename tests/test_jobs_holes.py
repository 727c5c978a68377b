"""The settlement holes of issue 14, each shown closed on chain: cancel, operand/result addresses that are
commitments, data-availability challenges (also across reorgs), bonds that scale, lapsed claims that
reopen at once, repeated jobs. Every block is checked against the control replay and for conservation
(`Net.check`)."""

from __future__ import annotations

import pytest

from chain.jobs import challenge_row_count, challenge_rows, required_bond
from testkit.jobs import job_operands
from chain.tx import make_job_answer, make_job_cancel, make_job_challenge, make_job_result, make_job_submit
from pouw.commit import commit_result, open_result_rows
from pouw.freivalds import build_fraud_proof

from test_jobs_core import BOND, CFG, CLIENT, COINBASE, FEE, FUND, JC, M1, M2, OTHER, SHAPE, Net, wrong


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.cs.close()


@pytest.fixture(scope="module")
def ops():
    return job_operands(1, *SHAPE)


def tx_cancel(net, key, jid, txfee=0):
    return make_job_cancel(key, CFG.chain_id, net.nonce(key), jid, txfee)


def tx_challenge(net, key, jid, txfee=0):
    return make_job_challenge(key, CFG.chain_id, net.nonce(key), jid, txfee)


def sampled(net, jid) -> list[int]:
    rec = net.cs.get_job(jid)
    return challenge_rows(
        net.cs.block_hash_at(rec.challenge_height), jid, rec.m, challenge_row_count(CFG, rec.m, rec.n)
    )


def tx_answer(net, key, jid, c, rows=None, txfee=0):
    return make_job_answer(
        key, CFG.chain_id, net.nonce(key), jid, open_result_rows(c, sampled(net, jid) if rows is None else rows), txfee
    )


def result_next(net, key, jid, c):
    """A result with the nonce after the sender's pending claim (both in one block)."""
    h_c = commit_result(c)
    return make_job_result(key, CFG.chain_id, net.nonce(key) + 1, jid, h_c, h_c)


def resulted(net, ops, c=None, key=M1, fee=FEE) -> bytes:
    a, b, c0, job = ops
    s = net.submit(job, fee=fee)
    net.block(s)
    net.block(net.claim(key, s.txid, bond=max(BOND, required_bond(CFG, fee))))
    net.block(net.result(key, s.txid, c0 if c is None else c))
    return s.txid


# --- 6. cancel before claim ---------------------------------------------------------------------------


def test_cancel_before_claim_refunds_escrow(net, ops):
    s = net.submit(ops[3], txfee=7)
    net.block(s)
    assert net.bal(CLIENT) == FUND - FEE - 7
    net.reject(tx_cancel(net, OTHER, s.txid), "bad-job-not-client")
    net.block(tx_cancel(net, CLIENT, s.txid, txfee=3))
    rec = net.cs.get_job(s.txid)
    assert rec.status_name == "cancelled" and rec.escrow == 0 and rec.due == 0 and rec.closed_height == net.height
    assert net.bal(CLIENT) == FUND - 10 and net.cs.open_jobs() == []
    net.reject(tx_cancel(net, CLIENT, s.txid), "bad-job-state")
    net.reject(net.claim(M1, s.txid), "bad-job-state")
    net.reject(tx_cancel(net, CLIENT, b"\1" * 32), "bad-job-unknown")


def test_cancel_after_claim_refused(net, ops):
    s = net.submit(ops[3])
    net.block(s)
    net.block(net.claim(M1, s.txid))
    net.reject(tx_cancel(net, CLIENT, s.txid), "bad-job-state")


def test_cancel_same_block_as_submit_and_undone_by_reorg(net, ops):
    s = net.submit(ops[3])
    fork_parent = net.cs.tip.hash
    net.block(s, make_job_cancel(CLIENT, CFG.chain_id, net.nonce(CLIENT) + 1, s.txid))
    assert net.cs.get_job(s.txid).status_name == "cancelled" and net.bal(CLIENT) == FUND
    # a longer branch without the cancel: the job is open again, the escrow held
    p = fork_parent
    for i in range(2):
        blk = net.b.mine(p, COINBASE, (s,) if i == 0 else (), nonce=9)
        net.cs.submit_block(blk.encoded)
        p = blk.hash
    assert net.cs.tip.hash == p
    net.check()
    assert net.cs.get_job(s.txid).status_name == "open" and net.bal(CLIENT) == FUND - FEE


# --- 2. operands (and C) anyone can check: the blob address is the commitment ----------------------------


def test_hole2_blob_address_must_be_the_commitment(net, ops):
    a, b, c, job = ops
    bad = make_job_submit(CLIENT, CFG.chain_id, net.nonce(CLIENT), job, FEE, net.height + 30, b"A" * 32, job.h_b)
    net.reject(bad, "bad-job-blob")
    bad = make_job_submit(CLIENT, CFG.chain_id, net.nonce(CLIENT), job, FEE, net.height + 30, job.h_a, b"B" * 32)
    net.reject(bad, "bad-job-blob")
    s = net.submit(job)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    h_c = commit_result(c)
    net.reject(make_job_result(M1, CFG.chain_id, net.nonce(M1), s.txid, h_c, b"C" * 32), "bad-job-blob")
    net.block(make_job_result(M1, CFG.chain_id, net.nonce(M1), s.txid, h_c, h_c))
    assert net.cs.get_job(s.txid).blob_c == h_c


# --- 1. data availability: challenge, answer or be slashed ----------------------------------------------


def test_hole1_unserved_result_is_slashed_after_challenge(net, ops):
    """A miner posts an H_C it cannot open (random; C never served): the client challenges, nobody can
    answer, the miner's bond and the escrow go to the client."""
    a, b, c, job = ops
    s = net.submit(job)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    fake = b"\x42" * 32
    net.block(make_job_result(M1, CFG.chain_id, net.nonce(M1), s.txid, fake, fake))
    net.block(tx_challenge(net, CLIENT, s.txid, txfee=5))
    rec = net.cs.get_job(s.txid)
    assert rec.status_name == "challenged" and rec.due == rec.challenge_height + JC.answer_window
    assert rec.escrow == FEE and rec.bond_held == BOND
    # an answer with the true C's rows cannot open against the posted H_C
    net.reject(tx_answer(net, M1, s.txid, c), "bad-answer-merkle")
    due = rec.due
    net.mine_to(due - 1)
    assert net.cs.get_job(s.txid).status_name == "challenged"
    net.block()
    rec = net.cs.get_job(s.txid)
    assert rec.status_name == "slashed" and rec.closed_height == due and rec.due == 0
    assert net.bal(CLIENT) == FUND + BOND - 5 and net.bal(M1) == FUND - BOND


def test_hole1_answered_challenge_then_released(net, ops):
    a, b, c, job = ops
    jid = resulted(net, ops)
    net.reject(tx_challenge(net, OTHER, jid), "bad-job-not-client")
    net.block(tx_challenge(net, CLIENT, jid))
    ch = net.height
    rows = sampled(net, jid)
    assert len(rows) == challenge_row_count(CFG, *SHAPE[::2]) == min(JC.challenge_rows, SHAPE[0])
    assert len(set(rows)) == len(rows) and all(0 <= i < SHAPE[0] for i in rows)
    net.reject(tx_challenge(net, CLIENT, jid), "bad-job-challenged")
    net.reject(tx_answer(net, M1, jid, c, rows=rows[::-1]), "bad-answer-rows")
    net.reject(tx_answer(net, M1, jid, c, rows=rows[:-1]), "bad-answer-rows")
    net.reject(tx_answer(net, M1, jid, wrong(c) if 5 in rows else c + 1, rows=rows), "bad-answer-merkle")
    net.block(tx_answer(net, OTHER, jid, c, txfee=2))  # anyone holding C may answer
    rec = net.cs.get_job(jid)
    assert rec.status_name == "resulted" and rec.answer_height == ch + 1
    assert rec.due == rec.challenge_until(CFG) == ch + 1 + JC.challenge_window
    net.reject(tx_challenge(net, CLIENT, jid), "bad-job-challenged")  # one challenge per job
    net.mine_to(rec.due)
    assert net.cs.get_job(jid).status_name == "released"
    assert net.bal(M1) == FUND + FEE and net.bal(CLIENT) == FUND - FEE and net.bal(OTHER) == FUND - 2


def test_answer_in_the_challenge_block_refused(net, ops):
    a, b, c, job = ops
    jid = resulted(net, ops)
    ch = tx_challenge(net, CLIENT, jid)
    assert net.cs.validate_tx(ch) is None
    # the rows depend on the hash of the challenge's block: an answer cannot share that block
    net.block(ch)
    early = tx_answer(net, M1, jid, c)
    from chain.jobs import job_tx_effects
    from chain.errors import TxError

    with pytest.raises(TxError) as e:
        job_tx_effects(net.cs.get_job, early, net.height, CFG, net.cs.block_hash_at)
    assert e.value.reason == "bad-answer-early"


def test_answered_wrong_row_is_disputable(net, ops):
    a, b, c, job = ops
    bad_c = c.clone()
    bad_c[:, 3] += 1  # every row is wrong: whichever rows are sampled expose it
    jid = resulted(net, ops, c=bad_c)
    net.block(tx_challenge(net, CLIENT, jid))
    ans = tx_answer(net, M1, jid, bad_c)
    net.block(ans)
    # the client builds the fraud proof from the answered row alone (its own A, B + the row and opening)
    r = ans.payload.rows[0]
    proof = build_fraud_proof(a, b, bad_c, r.i, 3)
    assert proof.c_row == r.c_row and proof.path_c == r.path
    net.block(net.dispute(CLIENT, jid, proof))
    assert net.cs.get_job(jid).status_name == "slashed"
    assert net.bal(CLIENT) == FUND + BOND and net.bal(M1) == FUND - BOND


def test_dispute_while_challenged(net, ops):
    a, b, c, job = ops
    jid = resulted(net, ops, c=wrong(c))
    net.block(tx_challenge(net, CLIENT, jid))
    net.block(net.dispute(CLIENT, jid, build_fraud_proof(a, b, wrong(c), 5, 7)))
    assert net.cs.get_job(jid).status_name == "slashed" and net.bal(CLIENT) == FUND + BOND


def test_challenge_after_window_refused(net, ops):
    jid = resulted(net, ops)
    net.mine_to(net.cs.get_job(jid).due)
    net.reject(tx_challenge(net, CLIENT, jid), "bad-job-window")


def test_challenge_across_reorg(net, ops):
    """The sampled rows follow the block that includes the challenge: a reorg that moves the challenge
    to another block changes them; the old answer is refused there, the state matches the control."""
    a, b, c, job = ops
    jid = resulted(net, ops)
    base = net.cs.tip.hash
    ch = tx_challenge(net, CLIENT, jid)
    net.block(ch)
    rows1 = sampled(net, jid)
    ans1 = tx_answer(net, M1, jid, c)
    net.block(ans1)
    assert net.cs.get_job(jid).status_name == "resulted"
    # branch 2 (longer): the challenge in a different block, then nothing: slashed at answer_until
    p = base
    for i in range(JC.answer_window + 3):
        blk = net.b.mine(p, COINBASE, (ch,) if i == 0 else (), nonce=77)
        net.cs.submit_block(blk.encoded)
        p = blk.hash
        if i == 0:
            # the same challenge in another block samples other rows
            assert challenge_rows(blk.hash, jid, SHAPE[0], len(rows1)) != rows1
    assert net.cs.tip.hash == p
    net.check()
    rec = net.cs.get_job(jid)
    assert rec.status_name == "slashed" and net.bal(CLIENT) == FUND + BOND
    # and back: branch 1 extended wins again, the answered job is live again
    tip1 = [h for h, blk in net.b.blocks.items() if ans1 in blk.txs][0]
    for i in range(5):
        blk = net.b.mine(tip1, COINBASE, (), nonce=78)
        net.cs.submit_block(blk.encoded)
        tip1 = blk.hash
    assert net.cs.tip.hash == tip1
    net.check()
    assert net.cs.get_job(jid).status_name in ("resulted", "released")


# --- 3. no griefing: bonds that scale, lapsed claims that reopen at once ----------------------------------


def test_hole3_bond_scales_with_fee(net, ops):
    big = 5 * 10**6
    assert required_bond(CFG, big) == big * JC.bond_num // JC.bond_den > JC.min_bond
    assert required_bond(CFG, 1) == JC.min_bond
    s = net.submit(ops[3], fee=big)
    net.block(s)
    need = required_bond(CFG, big)
    net.reject(net.claim(M2, s.txid, bond=JC.min_bond), "bad-job-bond")
    net.reject(net.claim(M2, s.txid, bond=need - 1), "bad-job-bond")
    net.block(net.claim(M2, s.txid, bond=need))
    assert net.cs.get_job(s.txid).bond_held == need


def test_hole3_lapsed_claim_reopens_at_once(net, ops):
    """A griefer's claim without a result blocks the job only for its window, pays its (scaled) bond to
    the client, and the job is claimable in the very next block."""
    a, b, c, job = ops
    s = net.submit(job)
    net.block(s)
    net.block(net.claim(OTHER, s.txid, bond=BOND, txfee=50))
    ch = net.height
    assert net.cs.get_job(s.txid).due == ch + JC.claim_window - 1
    net.mine_to(ch + JC.claim_window - 2)
    net.reject(net.claim(M1, s.txid), "bad-job-claimed")
    net.block()
    rec = net.cs.get_job(s.txid)
    assert rec.status_name == "open" and rec.bond_held == 0 and rec.due == rec.deadline
    assert [j for j, _ in net.cs.open_jobs()] == [s.txid]
    assert net.bal(CLIENT) == FUND - FEE + BOND and net.bal(OTHER) == FUND - BOND - 50
    net.reject(net.result(OTHER, s.txid, c), "bad-job-state")  # the lapsed claimer lost the job
    net.block(net.claim(M1, s.txid), result_next(net, M1, s.txid, c))  # claim and result in one block
    net.mine_to(net.cs.get_job(s.txid).due)
    assert net.cs.get_job(s.txid).status_name == "released" and net.bal(M1) == FUND + FEE


def test_claim_window_past_deadline_refunds(net, ops):
    s = net.submit(ops[3], deadline=net.height + 3)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    assert net.cs.get_job(s.txid).due == s.payload.deadline
    net.mine_to(s.payload.deadline)
    assert net.cs.get_job(s.txid).status_name == "refunded" and net.bal(CLIENT) == FUND + BOND


# --- 7. latency: submit, claim and result in one block ----------------------------------------------------


def test_submit_claim_result_in_one_block(net, ops):
    a, b, c, job = ops
    s = net.submit(job)
    blk = net.block(s, net.claim(M1, s.txid), result_next(net, M1, s.txid, c), select=True)
    assert len(blk.txs) == 3
    rec = net.cs.get_job(s.txid)
    assert rec.status_name == "resulted" and rec.submit_height == rec.claim_height == rec.result_height


# --- 5. repeated jobs -------------------------------------------------------------------------------------


def test_hole5_repeated_job_is_a_separate_paid_job(net, ops):
    """The rule (docs/jobs.md, Repeated jobs): the chain never counts a job as work, so a repeat with the
    same (H_A, H_B, shape) is simply another purchase of a correct, available C: it settles on its own
    and may be answered from a cached C. A wrong re-post is still slashed."""
    a, b, c, job = ops
    j1 = resulted(net, ops)
    j2 = resulted(net, ops, key=M2)
    assert net.cs.get_job(j1).h_c == net.cs.get_job(j2).h_c
    j3 = resulted(net, ops, c=wrong(c), key=M2)
    net.block(net.dispute(CLIENT, j3, build_fraud_proof(a, b, wrong(c), 5, 7)))
    net.mine_to(max(net.cs.get_job(j).due for j in (j1, j2)))
    assert [net.cs.get_job(j).status_name for j in (j1, j2, j3)] == ["released", "released", "slashed"]
    assert net.bal(M1) == FUND + FEE and net.bal(M2) == FUND + FEE - BOND
    assert net.bal(CLIENT) == FUND - 2 * FEE + BOND
