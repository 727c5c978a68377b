"""The mempool's view of pending job transactions (one-block latency, docs/jobs.md): a claim on a pending
submit and a result on a pending claim are admitted, the first claim seen wins, templates order a claim
after its submit, and a resync after a reorg puts dependent job txs back in a working order."""

from __future__ import annotations

import pytest

from chain.errors import ValidationError
from testkit.jobs import job_operands
from chain.tx import make_job_cancel, make_job_result
from node.server.mempool import Mempool
from pouw.commit import commit_result

from test_jobs_core import CFG, CLIENT, COINBASE, M1, M2, OTHER, SHAPE, Net


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.cs.close()


@pytest.fixture(scope="module")
def ops():
    return job_operands(3, *SHAPE)


def result_after_claim(net, key, jid, c, fee=0):
    h_c = commit_result(c)
    return make_job_result(key, CFG.chain_id, net.nonce(key) + 1, jid, h_c, h_c, fee)


def test_claim_and_result_on_a_pending_submit(net, ops):
    a, b, c, job = ops
    mp = Mempool(net.cs)
    s = net.submit(job, txfee=1)
    assert mp.add(s)
    claim = net.claim(M1, s.txid, txfee=500)  # pays more than the submit
    res = result_after_claim(net, M1, s.txid, c, fee=500)
    assert mp.add(claim)
    with pytest.raises(ValidationError) as e:  # first claim seen wins
        mp.add(net.claim(M2, s.txid, txfee=900))
    assert e.value.reason == "bad-job-claimed"
    assert mp.add(res)
    with pytest.raises(ValidationError) as e:  # claimed in the pool: no cancel
        mp.add(make_job_cancel(CLIENT, CFG.chain_id, net.nonce(CLIENT) + 1, s.txid))
    assert e.value.reason == "bad-job-state"
    order = mp.ordered()
    assert [t.txid for t in order] == [s.txid, claim.txid, res.txid]  # the claim waits for its submit
    blk = net.block(*order, select=True)  # all three in one block
    assert len(blk.txs) == 3
    rec = net.cs.get_job(s.txid)
    assert rec.status_name == "resulted" and rec.submit_height == rec.result_height == net.height


def test_result_without_claim_refused_and_replacement_claim_allowed(net, ops):
    a, b, c, job = ops
    mp = Mempool(net.cs)
    s = net.submit(job)
    mp.add(s)
    h_c = commit_result(c)
    with pytest.raises(ValidationError) as e:
        mp.add(make_job_result(M1, CFG.chain_id, net.nonce(M1), s.txid, h_c, h_c))
    assert e.value.reason == "bad-job-state"
    mp.add(net.claim(M1, s.txid, txfee=1))
    assert mp.add(net.claim(M1, s.txid, txfee=2))  # same nonce, higher fee: replaces its own claim
    assert len(mp) == 2


def test_resync_after_reorg_keeps_dependent_job_txs(net, ops):
    """A reorg disconnects the block with submit, claim and result: the resync re-adds all three (the
    claim's sender sorts before the submit's, so a single pass would drop it)."""
    a, b, c, job = ops
    base = net.cs.tip.hash
    s = net.submit(job)
    assert OTHER.address < CLIENT.address  # the claimer sorts before the client
    claim = net.claim(OTHER, s.txid)
    res = result_after_claim(net, OTHER, s.txid, c)
    net.block(s, claim, res)
    mp = Mempool(net.cs)
    p = base
    for i in range(2):
        blk = net.b.mine(p, COINBASE, (), nonce=31)
        r = net.cs.submit_block(blk.encoded)
        p = blk.hash
    assert net.cs.tip.hash == p and net.cs.get_job(s.txid) is None
    net.check()
    back = mp.resync(r.disconnected_txs)
    assert back == 3 and {t.txid for t in mp.ordered()} == {s.txid, claim.txid, res.txid}
    assert [t.txid for t in mp.ordered()].index(s.txid) < [t.txid for t in mp.ordered()].index(claim.txid)
