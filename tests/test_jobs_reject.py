"""One test per job reject reason: the transaction is refused by `validate_tx` and makes a block invalid."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from chain.errors import EncodingError, TxError
from chain.jobs import check_job_shape, dispute_size_bound
from testkit.jobs import job_operands
from chain.tx import KIND_JOB_SUBMIT, MAX_MONEY, Transaction, make_job_submit
from pouw.commit import tree_a, tree_b
from pouw.freivalds import build_fraud_proof
from pouw.job import JobCommitment
from test_jobs_core import BOND, CFG, CLIENT, FEE, FUND, JC, M1, M2, OTHER, SHAPE, Net, wrong


@pytest.fixture(scope="module")
def ops():
    return job_operands(2, *SHAPE)


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.cs.close()


def submitted(net, job, **kw):
    s = net.submit(job, **kw)
    net.block(s)
    return s.txid


def resulted(net, ops, c=None):
    a, b, c0, job = ops
    jid = submitted(net, job)
    net.block(net.claim(M1, jid))
    net.block(net.result(M1, jid, c0 if c is None else c))
    return jid


@pytest.mark.parametrize(
    "shape,reason",
    [
        ((8, 256, 32), "bad-job-shape"),  # k below min_k
        ((8, 520, 16), "bad-job-shape"),  # k not a multiple of r
        ((12, 512, 16), "bad-job-shape"),  # m not a multiple of the tile
        ((8, 512, 8192), "bad-job-shape"),  # above max_dim
        ((8, 512, 8), "bad-job-size"),  # below min_job_macs
    ],
)
def test_bad_shape(net, ops, shape, reason):
    m, k, n = shape
    job = JobCommitment(ops[3].h_a, ops[3].h_b, m, k, n)
    net.reject(net.submit(job), reason)


def test_shape_must_leave_room_for_a_fraud_proof():
    m, k, n = 8, 4096, 4096
    check_job_shape(CFG, m, k, n)
    small = CFG.with_(max_tx_bytes=dispute_size_bound(m, k, n) - 1)
    with pytest.raises(TxError) as e:
        check_job_shape(small, m, k, n)
    assert e.value.reason == "bad-job-shape"


@pytest.mark.parametrize("fee", [0, MAX_MONEY + 1])
def test_bad_fee(net, ops, fee):
    net.reject(net.submit(ops[3], fee=fee), "bad-job-fee")


def test_bad_fee_overflow_with_txfee(net, ops):
    net.reject(net.submit(ops[3], fee=MAX_MONEY, txfee=1), "bad-job-fee")


def test_submit_needs_balance(net, ops):
    net.reject(net.submit(ops[3], fee=FUND + 1), "bad-txn-balance")


@pytest.mark.parametrize("delta", [0, -1, JC.max_deadline + 2])
def test_bad_deadline(net, ops, delta):
    # the including block has height net.height + 1: the deadline must lie in (h, h + max_deadline]
    net.reject(net.submit(ops[3], deadline=net.height + delta), "bad-job-deadline")


def test_deadline_bounds_accepted(net, ops):
    net.block(net.submit(ops[3], deadline=net.height + 1 + JC.max_deadline))
    net.block(net.submit(ops[3], deadline=net.height + 2))


def test_unknown_job(net, ops):
    c = ops[2]
    ghost = b"\x01" * 32
    net.reject(net.claim(M1, ghost), "bad-job-unknown")
    net.reject(net.result(M1, ghost, c), "bad-job-unknown")
    net.reject(net.dispute(CLIENT, ghost, build_fraud_proof(ops[0], ops[1], wrong(c), 5, 7)), "bad-job-unknown")


def test_bad_state(net, ops):
    a, b, c, job = ops
    jid = submitted(net, job)
    net.reject(net.result(M1, jid, c), "bad-job-state")  # not claimed
    net.reject(net.dispute(CLIENT, jid, build_fraud_proof(a, b, wrong(c), 5, 7)), "bad-job-state")  # no result
    net.block(net.claim(M1, jid))
    net.block(net.result(M1, jid, wrong(c)))
    net.reject(net.claim(M2, jid), "bad-job-state")  # already resulted
    net.reject(net.result(M1, jid, c), "bad-job-state")  # second result
    net.block(net.dispute(CLIENT, jid, build_fraud_proof(a, b, wrong(c), 5, 7)))
    net.reject(net.dispute(OTHER, jid, build_fraud_proof(a, b, wrong(c), 5, 7)), "bad-job-state")  # slashed


def test_bad_bond(net, ops):
    jid = submitted(net, ops[3])
    net.reject(net.claim(M1, jid, bond=JC.min_bond - 1), "bad-job-bond")
    net.reject(net.claim(M1, jid, bond=0), "bad-job-bond")
    net.reject(net.claim(M1, jid, bond=FUND + 1), "bad-txn-balance")


def test_claimed(net, ops):
    jid = submitted(net, ops[3])
    net.block(net.claim(M1, jid))
    net.reject(net.claim(M2, jid), "bad-job-claimed")
    net.reject(net.claim(M1, jid), "bad-job-claimed")


def test_not_claimer(net, ops):
    jid = submitted(net, ops[3])
    net.block(net.claim(M1, jid))
    net.reject(net.result(M2, jid, ops[2]), "bad-job-not-claimer")
    net.reject(net.result(CLIENT, jid, ops[2]), "bad-job-not-claimer")


def test_late(net, ops):
    jid = submitted(net, ops[3], deadline=net.height + 4)
    net.block(net.claim(M1, jid))
    net.mine_to(net.cs.get_job(jid).deadline)
    assert net.cs.get_job(jid).status_name == "refunded"
    net.reject(net.result(M1, jid, ops[2]), "bad-job-late")
    net.reject(net.claim(M2, jid), "bad-job-late")


def test_result_in_deadline_block_accepted(net, ops):
    jid = submitted(net, ops[3], deadline=net.height + 4)
    net.block(net.claim(M1, jid))
    net.mine_to(net.cs.get_job(jid).deadline - 1)
    net.block(net.result(M1, jid, ops[2]))
    assert net.height == net.cs.get_job(jid).deadline and net.cs.get_job(jid).status_name == "resulted"


def test_window(net, ops):
    a, b, c, job = ops
    jid = resulted(net, ops, wrong(c))
    rh = net.height
    net.mine_to(rh + JC.challenge_window)
    assert net.cs.get_job(jid).status_name == "released"
    net.reject(net.dispute(CLIENT, jid, build_fraud_proof(a, b, wrong(c), 5, 7)), "bad-job-window")


def test_dispute_in_last_window_block_accepted(net, ops):
    a, b, c, job = ops
    jid = resulted(net, ops, wrong(c))
    net.mine_to(net.height + JC.challenge_window - 1)
    net.block(net.dispute(OTHER, jid, build_fraud_proof(a, b, wrong(c), 5, 7)))  # anyone may dispute
    assert net.cs.get_job(jid).status_name == "slashed"
    assert net.bal(CLIENT) == FUND + BOND and net.bal(M1) == FUND - BOND and net.bal(OTHER) == FUND


def test_fraud_not_proven(net, ops):
    a, b, c, job = ops
    jid = resulted(net, ops)
    net.reject(net.dispute(CLIENT, jid, build_fraud_proof(a, b, c, 0, 0)), "fraud-not-proven")


def test_fraud_proof_reasons(net, ops):
    a, b, c, job = ops
    bad = wrong(c)
    jid = resulted(net, ops, bad)
    good = build_fraud_proof(a, b, bad, 5, 7)
    cases = [
        (replace(good, i=SHAPE[0]), "bad-fraud-index"),
        (replace(good, j=SHAPE[2]), "bad-fraud-index"),
        (replace(good, a_row=good.a_row[:-1]), "bad-fraud-encoding"),
        (replace(good, c_row=good.c_row + b"\0"), "bad-fraud-encoding"),
        (replace(good, a_row=bytes([good.a_row[0] ^ 1]) + good.a_row[1:]), "bad-fraud-merkle-a"),
        (replace(good, b_col=bytes([good.b_col[0] ^ 1]) + good.b_col[1:]), "bad-fraud-merkle-b"),
        (replace(good, path_b=good.path_b[:-1]), "bad-fraud-merkle-b"),
        (replace(good, c_row=bytes(len(good.c_row))), "bad-fraud-merkle-c"),
        (build_fraud_proof(a, b, bad, 4, 7), "fraud-not-proven"),  # right row 4 of the wrong C
    ]
    for proof, reason in cases:
        net.reject(net.dispute(CLIENT, jid, proof), reason)
    assert net.cs.get_job(jid).status_name == "resulted"


def test_fraud_range(net):
    # A job whose committed A holds an out-of-range entry (a client's bug): a proof opening it is refused.
    m, k, n = SHAPE
    a = torch.zeros(m, k, dtype=torch.int8)
    a[0, 0] = 100
    b = torch.ones(k, n, dtype=torch.int8)
    job = JobCommitment(tree_a(a).root, tree_b(b).root, m, k, n)
    c = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    c[0, 0] += 1
    jid = submitted(net, job)
    net.block(net.claim(M1, jid))
    net.block(net.result(M1, jid, c))
    net.reject(net.dispute(CLIENT, jid, build_fraud_proof(a, b, c, 0, 0)), "bad-fraud-range")


def test_malformed_payload_is_an_encoding_error():
    t = Transaction(KIND_JOB_SUBMIT, CFG.chain_id, 0, CLIENT.pubkey, 0, [b"x"]).signed(CLIENT)
    with pytest.raises(EncodingError):
        Transaction.decode(t.encoded)
    s = make_job_submit(
        CLIENT, CFG.chain_id, 0, JobCommitment(b"a" * 32, b"b" * 32, *SHAPE), FEE, 10, b"A" * 32, b"B" * 32
    )
    assert Transaction.decode(s.encoded) == s
