"""Jobs settled on chain: pre-state / transactions / expected post-state, through real blocks."""

from __future__ import annotations

import pytest
import torch

from chain.block import Block, tx_root
from chain.chainstate import ChainState
from chain.config import load_config
from chain.errors import ValidationError
from chain.jobs import job_price
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder, make_keys
from testkit.jobs import blob_hash, job_operands
from chain.tx import make_job_claim, make_job_dispute, make_job_result, make_job_submit, make_transfer
from pouw.commit import commit_result
from pouw.freivalds import build_fraud_proof, find_wrong_entry, freivalds

CFG = load_config("regtest")
JC = CFG.jobs
NOW = CFG.genesis_timestamp + 10**6
FAUCET, CLIENT, M1, M2, OTHER = make_keys(5)
COINBASE = PrivateKey.from_phrase(b"jobs coinbase").address
FUND = 10_000_000
SHAPE = (8, 512, 16)
FEE = 200_000
BOND = 50_000


class Net:
    """A ChainState fed by a ChainBuilder; every block is checked against the control replay."""

    def __init__(self, path):
        self.b = ChainBuilder(CFG)
        self.cs = ChainState.open(path, CFG, clock=lambda: NOW)
        self.block(
            *[make_transfer(FAUCET, CFG.chain_id, i, k.address, FUND) for i, k in enumerate((CLIENT, M1, M2, OTHER))]
        )

    @property
    def height(self) -> int:
        return self.cs.height

    def bal(self, key) -> int:
        return self.cs.get_account(key.address).balance

    def nonce(self, key) -> int:
        return self.cs.get_account(key.address).nonce

    def check(self) -> None:
        ctrl = self.b.states[self.cs.tip.hash]
        assert self.cs.accounts() == ctrl.accounts
        assert self.cs.jobs() == ctrl.jobs
        assert self.cs.supply == ctrl.supply
        self.cs.check_conservation()
        ctrl.check_conservation()
        t = self.cs.supply_totals()
        assert t.conserved

    def block(self, *txs, select=False) -> Block:
        blk = self.b.mine(self.cs.tip.hash, COINBASE, txs, select=select)
        assert self.cs.submit_block(blk.encoded).status == "active"
        self.check()
        return blk

    def mine_to(self, height: int) -> None:
        while self.cs.height < height:
            self.block()

    def reject(self, tx, reason: str) -> None:
        """tx is refused by mempool admission and a block containing it is invalid, with `reason`."""
        with pytest.raises(ValidationError) as e:
            self.cs.validate_tx(tx)
        assert e.value.reason == reason
        good = self.b.mine(self.cs.tip.hash, COINBASE, ())
        bad = Block(self.b.remine(good.header, tx_root=tx_root([tx])), (tx,))
        tip = self.cs.tip.hash
        with pytest.raises(ValidationError) as e:
            self.cs.submit_block(bad)
        assert e.value.reason == reason
        assert self.cs.tip.hash == tip

    # --- transactions ---
    def submit(self, job, fee=FEE, deadline=None, key=CLIENT, txfee=0):
        deadline = self.height + 30 if deadline is None else deadline
        return make_job_submit(key, CFG.chain_id, self.nonce(key), job, fee, deadline, job.h_a, job.h_b, txfee)

    def claim(self, key, job_id, bond=BOND, txfee=0):
        return make_job_claim(key, CFG.chain_id, self.nonce(key), job_id, bond, txfee)

    def result(self, key, job_id, c, txfee=0):
        return make_job_result(key, CFG.chain_id, self.nonce(key), job_id, commit_result(c), blob_hash(c), txfee)

    def dispute(self, key, job_id, proof, txfee=0):
        return make_job_dispute(key, CFG.chain_id, self.nonce(key), job_id, proof, txfee)


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.cs.close()


@pytest.fixture(scope="module")
def ops():
    return job_operands(1, *SHAPE)


def wrong(c: torch.Tensor) -> torch.Tensor:
    c2 = c.clone()
    c2[5, 7] += 1
    return c2


def test_paid_job(net, ops):
    a, b, c, job = ops
    s = net.submit(job, txfee=7)
    net.block(s)
    jid = s.txid
    assert net.bal(CLIENT) == FUND - FEE - 7
    r = net.cs.get_job(jid)
    assert r.status_name == "open" and r.client == CLIENT.address and r.fee == FEE and r.escrow == FEE
    assert [j for j, _ in net.cs.open_jobs()] == [jid]
    assert net.cs.supply_totals().escrow == FEE
    net.block(net.claim(M1, jid, txfee=3))
    r = net.cs.get_job(jid)
    assert r.status_name == "claimed" and r.miner == M1.address and r.bond_held == BOND
    assert net.bal(M1) == FUND - BOND - 3 and net.cs.open_jobs() == []
    net.block(net.result(M1, jid, c))
    r = net.cs.get_job(jid)
    rh = net.height
    assert r.status_name == "resulted" and r.h_c == commit_result(c) and r.due == rh + JC.challenge_window
    assert r.to_json(jid, CFG)["challenge_until"] == rh + JC.challenge_window
    net.mine_to(rh + JC.challenge_window - 1)
    assert net.cs.get_job(jid).status_name == "resulted" and net.bal(M1) == FUND - BOND - 3
    net.block()  # end of block r + C: released
    r = net.cs.get_job(jid)
    assert r.status_name == "released" and r.closed_height == rh + JC.challenge_window and r.due == 0
    assert net.bal(M1) == FUND - 3 + FEE and net.bal(CLIENT) == FUND - FEE - 7
    assert net.cs.supply_totals().escrow == 0 and net.cs.supply_totals().bonds == 0
    assert net.cs.schedule() == []


def test_cheating_miner_slashed(net, ops):
    a, b, c, job = ops
    s = net.submit(job)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    bad_c = wrong(c)
    net.block(net.result(M1, s.txid, bad_c))
    # The client checks the result it fetched: Freivalds finds the wrong row, one row of A·B the entry.
    rows = freivalds(a, b, bad_c, job, commit_result(bad_c))
    assert rows == [5]
    i, j = find_wrong_entry(a, b, bad_c, rows)
    assert (i, j) == (5, 7)
    proof = build_fraud_proof(a, b, bad_c, i, j)
    d = net.dispute(CLIENT, s.txid, proof)
    assert len(d.encoded) <= CFG.max_tx_bytes
    net.block(d)
    r = net.cs.get_job(s.txid)
    assert r.status_name == "slashed" and r.due == 0
    assert net.bal(CLIENT) == FUND + BOND and net.bal(M1) == FUND - BOND
    net.mine_to(net.height + JC.challenge_window + 1)  # nothing else happens at the old release height
    assert net.bal(CLIENT) == FUND + BOND and net.bal(M1) == FUND - BOND


def test_dispute_against_correct_result_rejected(net, ops):
    a, b, c, job = ops
    s = net.submit(job)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    net.block(net.result(M1, s.txid, c))
    assert freivalds(a, b, c, job, commit_result(c)) == []
    net.reject(net.dispute(CLIENT, s.txid, build_fraud_proof(a, b, c, 5, 7)), "fraud-not-proven")
    # a proof built from another C does not open against the posted H_C
    net.reject(net.dispute(CLIENT, s.txid, build_fraud_proof(a, b, wrong(c), 5, 7)), "bad-fraud-merkle-c")


def test_silent_client_miner_paid(net, ops):
    a, b, c, job = ops
    s = net.submit(job, deadline=net.height + 6)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    net.block(net.result(M1, s.txid, c))
    rh = net.height
    net.mine_to(rh + JC.challenge_window)  # the release may come after the deadline
    assert rh + JC.challenge_window > s.payload.deadline
    assert net.cs.get_job(s.txid).status_name == "released"
    assert net.bal(M1) == FUND + FEE and net.bal(CLIENT) == FUND - FEE


def test_no_miner_refund_at_deadline(net, ops):
    job = ops[3]
    s = net.submit(job, deadline=net.height + 4)
    net.block(s)
    net.mine_to(s.payload.deadline - 1)
    assert net.cs.get_job(s.txid).status_name == "open" and net.bal(CLIENT) == FUND - FEE
    net.block()
    r = net.cs.get_job(s.txid)
    assert r.status_name == "refunded" and r.closed_height == s.payload.deadline
    assert net.bal(CLIENT) == FUND


def test_claimer_without_result_forfeits_bond_at_deadline(net, ops):
    job = ops[3]
    s = net.submit(job, deadline=net.height + 5)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    net.mine_to(s.payload.deadline)
    assert net.cs.get_job(s.txid).status_name == "refunded"
    assert net.bal(CLIENT) == FUND + BOND and net.bal(M1) == FUND - BOND


def test_two_miners_race(net, ops):
    a, b, c, job = ops
    s = net.submit(job)
    net.block(s)
    c1, c2 = net.claim(M1, s.txid), net.claim(M2, s.txid)
    # both in the mempool: a template keeps the first and drops the second
    blk = net.block(c1, c2, select=True)
    assert [t.txid for t in blk.txs] == [c1.txid]
    net.reject(net.claim(M2, s.txid), "bad-job-claimed")
    net.block(net.result(M1, s.txid, c))
    net.mine_to(net.height + JC.challenge_window)
    assert net.bal(M1) == FUND + FEE and net.bal(M2) == FUND


def test_lapsed_claim_reclaimed(net, ops):
    a, b, c, job = ops
    s = net.submit(job)
    net.block(s)
    net.block(net.claim(M1, s.txid))
    ch = net.height
    net.mine_to(ch + JC.claim_window - 2)
    net.reject(net.claim(M2, s.txid), "bad-job-claimed")  # a claim in block ch + W - 1 is still exclusive
    net.block()
    net.block(net.claim(M2, s.txid, bond=2 * BOND))  # block ch + W: the window lapsed
    r = net.cs.get_job(s.txid)
    assert r.miner == M2.address and r.bond == 2 * BOND
    assert net.bal(M1) == FUND - BOND and net.bal(CLIENT) == FUND - FEE + BOND  # lapsed bond to the client
    net.reject(net.result(M1, s.txid, c), "bad-job-not-claimer")
    net.block(net.result(M2, s.txid, c))
    net.mine_to(net.height + JC.challenge_window)
    assert net.bal(M2) == FUND + FEE and net.cs.get_job(s.txid).status_name == "released"


def test_price_and_denomination():
    m, k, n = SHAPE
    assert job_price(CFG, m, k, n) == -(-(m * k * n) // 10_000)
    assert job_price(CFG, 8, 512, 8) == 4  # 32768 MACs -> ceil(3.2768)
    # 1 token (10**8 base units) buys 10**12 MACs at the reference rate
    assert job_price(CFG, 10**4, 10**4, 10**4) == 10**8


def test_open_jobs_order_and_json(net, ops):
    job = ops[3]
    cheap, dear = net.submit(job, fee=FEE), None
    net.block(cheap)
    dear = net.submit(job, fee=3 * FEE, key=OTHER)
    net.block(dear, net.claim(M1, cheap.txid))
    assert [j for j, _ in net.cs.open_jobs()] == [dear.txid]
    js = net.cs.get_job(cheap.txid).to_json(cheap.txid, CFG)
    assert js["status"] == "claimed" and js["miner"] == M1.address.hex() and js["escrow"] == FEE
    assert js["bond_held"] == BOND and js["claim_until"] == js["claim_height"] + JC.claim_window - 1
    net.mine_to(net.cs.get_job(cheap.txid).claim_height + JC.claim_window - 1)  # reopened at the end of this block
    assert [j for j, _ in net.cs.open_jobs()] == [dear.txid, cheap.txid]
    js = net.cs.get_job(cheap.txid).to_json(cheap.txid, CFG)
    assert js["status"] == "open" and js["miner"] is None and js["escrow"] == FEE and js["bond_held"] == 0
    assert net.cs.get_job(b"\0" * 32) is None


def test_verify_reindex_and_reopen_with_jobs(tmp_path, ops):
    from chain.maintenance import reindex_datadir, verify_datadir

    a, b, c, job = ops
    n = Net(tmp_path)
    s1, s2 = n.submit(job), n.submit(job, key=OTHER, deadline=n.height + 3)
    n.block(s1, s2)
    n.block(n.claim(M1, s1.txid))
    n.block(n.result(M1, s1.txid, c))
    n.mine_to(n.height + 3)
    jobs, sched, tip = n.cs.jobs(), n.cs.schedule(), n.cs.tip.hash
    assert {r.status_name for r in jobs.values()} == {"resulted", "refunded"} and len(sched) == 1
    n.cs.close()
    rep = verify_datadir(tmp_path, CFG)
    assert rep.tip == tip
    reindex_datadir(tmp_path, CFG)
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        assert cs.tip.hash == tip and cs.jobs() == jobs and cs.schedule() == sched
        cs.check_conservation()


def test_node_style_templates_see_the_schedule(net, ops):
    """The node builds templates with `cs.get_account` only (chain.mining.mine_block / build_template):
    the job state is found through it, so blocks that settle jobs carry the right state root."""
    from chain.mining import mine_block

    a, b, c, job = ops
    s = net.submit(job, deadline=net.height + 3)
    s2 = net.submit(job, key=OTHER)
    net.block(s, s2)
    cl = net.claim(M1, s2.txid)
    blk = mine_block(net.cs, COINBASE, [cl, net.claim(M2, s2.txid)], timestamp=NOW - 10**5)
    assert [t.txid for t in blk.txs] == [cl.txid]  # the losing claim is left out
    net.cs.submit_block(blk)
    res = net.result(M1, s2.txid, c)
    while net.cs.get_job(s2.txid).status_name != "released":
        txs = [res] if net.cs.get_job(s2.txid).status_name == "claimed" else []
        net.cs.submit_block(mine_block(net.cs, COINBASE, txs, timestamp=net.cs.tip.timestamp + 5))
    assert net.cs.get_job(s.txid).status_name == "refunded"
    assert net.bal(CLIENT) == FUND and net.bal(M1) == FUND + FEE and net.bal(OTHER) == FUND - FEE
    net.cs.check_conservation()
