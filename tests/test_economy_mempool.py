"""The mempool's pending view of an account uses the state transition's spending order
(docs/economy.md): job submits paid from an allocation queue up without touching the free balance, and
the allocation drawn by pending submits is not counted twice."""

from __future__ import annotations

import pytest

from chain.chainstate import ChainState
from chain.config import load_config
from chain.econsim import with_issuer
from chain.econtx import KIND_GRANT, Grant
from chain.errors import ValidationError
from chain.keys import PrivateKey, faucet_key
from chain.synthetic import ChainBuilder
from chain.tx import KIND_JOB_SUBMIT, JobSubmit, Transaction, make_transfer
from chain import economy as E
from node.server.mempool import Mempool

ISS = PrivateKey.from_phrase(b"mempool issuer")
SUB = PrivateKey.from_phrase(b"mempool subscriber")
CFG = with_issuer(load_config("regtest"), ISS.address, 10**9, "mint", 2, 30, 9000)
NOW = CFG.genesis_timestamp + 10**6
ALLOC = 2_000_000  # MACs per period: reserves 200 base units
FREE = 50  # the subscriber's free tokens: less than one job's max fee


class Net:
    def __init__(self, path):
        self.b = ChainBuilder(CFG)
        self.cs = ChainState.open(path, CFG, clock=lambda: NOW)
        fk = faucet_key()
        self.block(
            make_transfer(fk, CFG.chain_id, 0, SUB.address, FREE, 0),
            make_transfer(fk, CFG.chain_id, 1, ISS.address, 10**6, 0),
        )
        self.block(self.tx(ISS, KIND_GRANT, Grant(SUB.address, ALLOC, 50, 1, 0)))

    def tx(self, key, kind, payload, nonce=None, fee=0):
        n = self.cs.get_account(key.address).nonce if nonce is None else nonce
        return Transaction(kind, CFG.chain_id, n, key.pubkey, fee, payload).signed(key)

    def block(self, *txs):
        blk = self.b.mine(self.cs.tip.hash, ISS.address, txs)
        assert self.cs.submit_block(blk.encoded).status == "active"
        self.cs.check_conservation()
        self.b.states[blk.hash].check_conservation()
        return blk

    def submit(self, nonce, max_fee, fee=0):
        p = JobSubmit(b"a" * 32, b"b" * 32, 16, 512, 16, max_fee, self.cs.height + 10, b"a" * 32, b"b" * 32)
        return self.tx(SUB, KIND_JOB_SUBMIT, p, nonce, fee)

    def holdings(self):
        return E.holdings(self.cs, self.cs.get_account(SUB.address).balance, SUB.address)


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.cs.close()


def test_two_pending_allocation_funded_submits(net):
    mp = Mempool(net.cs)
    assert net.holdings()["allocation_tokens"] == 200
    n0 = net.cs.get_account(SUB.address).nonce
    s1, s2 = net.submit(n0, 80, fee=1), net.submit(n0 + 1, 80, fee=1)
    assert mp.add(s1)
    assert mp.add(s2)  # the first one drew the allocation, not the free balance
    # the pending view counts what the first two drew: 40 allocation + 48 free tokens left, not 200 + 50
    with pytest.raises(ValidationError) as e:
        mp.add(net.submit(n0 + 2, 89, fee=1))
    assert e.value.reason == "bad-txn-balance"
    s3 = net.submit(n0 + 2, 88, fee=0)  # exactly what is left: 40 allocation + 48 free
    assert mp.add(s3)
    st = mp.pending_state(SUB.address, n0 + 3)
    assert st.get(SUB.address).balance == 0
    net.block(*mp.ordered())
    h = net.holdings()
    assert h["allocation_tokens"] == 0 and h["free"] == 0
    assert all(net.cs.get_job(t.txid).status_name == "open" for t in (s1, s2, s3))


def test_pending_view_matches_the_block(net):
    """A transfer queued behind allocation-funded submits sees the free balance the block will leave."""
    mp = Mempool(net.cs)
    n0 = net.cs.get_account(SUB.address).nonce
    assert mp.add(net.submit(n0, 150))
    assert mp.add(net.submit(n0 + 1, 100))  # 50 allocation + 50 free
    with pytest.raises(ValidationError) as e:
        mp.add(make_transfer(SUB, CFG.chain_id, n0 + 2, ISS.address, 1))
    assert e.value.reason == "bad-txn-balance"
    net.block(*mp.ordered())
    assert net.cs.get_account(SUB.address).balance == 0
