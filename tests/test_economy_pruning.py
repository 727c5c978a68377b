"""Pruning of economy records (docs/economy.md, Pruning): the trade log, old volume windows, closed grants
and used certificate templates leave the state by a deterministic rule, the state stays bounded over many
periods, and the undo data of a pruning block restores the exact pre-state (records and state root)."""

from __future__ import annotations

from collections import Counter

from chain import economy as E
from chain.chainstate import ChainState
from chain.econtx import (
    ASK,
    BID,
    GTC,
    IOC,
    KIND_CREDIT_ISSUE,
    KIND_GRANT,
    KIND_ORDER_PLACE,
    CreditIssue,
    Grant,
    OrderPlace,
)
from chain.keys import faucet_key
from chain.synthetic import ChainBuilder
from chain.tx import KIND_TRANSFER, Transaction, Transfer

from test_economy import BUYER, FUND, ISS, SUB, cfg_with, new_sim
from test_economy_properties import undo_in_memory

NOW = 1767225600 + 10**7


def trade_and_grant(s, h: int) -> None:
    """One trade per block (SUB sells 1 token, BUYER buys it); a short grant to BUYER every 10 blocks."""
    assert s.submit(SUB, KIND_ORDER_PLACE, OrderPlace(ISS.address, ASK, 10_000, 1, GTC, 0, 0)) is None
    assert s.submit(BUYER, KIND_ORDER_PLACE, OrderPlace(ISS.address, BID, 10_000, 1, IOC, 0, 0)) is None
    if h % 10 == 0:
        assert s.submit(ISS, KIND_GRANT, Grant(BUYER.address, 2_000_000, 3, 2, 0)) is None


def tables(econ) -> Counter:
    return Counter(k[:1] for k in econ)


def test_state_stays_bounded_over_many_periods():
    s = new_sim(vintage_periods=2)
    assert s.submit(ISS, KIND_CREDIT_ISSUE, CreditIssue(BUYER.address, 10**7)) is None
    s.end_block()
    peak: Counter = Counter()
    pruned_grants = 0
    blocks = E.VELOCITY_WINDOW * (E.VOLUME_WINDOWS_KEPT + 2)
    for _ in range(blocks):
        trade_and_grant(s, s.next_height)
        before = s.st.copy()
        diff = s.end_block()  # conservation asserted inside
        pruned_grants += sum(1 for _, what in s.events if what == "grant-pruned")
        t = tables(s.st.econ)
        for k, v in t.items():
            peak[k] = max(peak[k], v)
        if any(v is None and k[:1] in b"RTG" for k, v in diff.econ_after.items()):
            back = undo_in_memory(s.st, diff)  # a pruning block undoes exactly
            assert back.econ == before.econ and back.supply == before.supply
    assert peak[b"R"] == E.TRADES_KEPT  # one trade a block, the last TRADES_KEPT kept
    assert peak[b"T"] == E.VOLUME_WINDOWS_KEPT
    assert peak[b"G"] <= 3 and pruned_grants >= blocks // 10 - 3  # closed grants leave
    assert len(s.st.econ) < 3 * E.TRADES_KEPT  # bounded; without pruning > `blocks`
    assert E.holdings(s.st, 0, BUYER.address)["spend_only"] == blocks


def test_reorg_across_a_pruning_block_restores_the_exact_state(tmp_path):
    """A stored chain whose block P prunes the trade log: invalidating P gives back the trade records and
    block P − 1's state root; a fork that prunes in its own block is then adopted record for record."""
    cfg = cfg_with()
    b = ChainBuilder(cfg)
    fk = faucet_key()
    keys = (SUB, BUYER)
    txs = [
        Transaction(KIND_TRANSFER, cfg.chain_id, i, fk.pubkey, 0, Transfer(k.address, FUND)).signed(fk)
        for i, k in enumerate(keys)
    ]
    txs.append(
        Transaction(KIND_CREDIT_ISSUE, cfg.chain_id, 0, ISS.pubkey, 0, CreditIssue(BUYER.address, 10**6)).signed(ISS)
    )
    first = b.mine(b.genesis.hash, SUB.address, txs)
    trade = [
        Transaction(
            KIND_ORDER_PLACE, cfg.chain_id, 0, SUB.pubkey, 0, OrderPlace(ISS.address, ASK, 10_000, 5, GTC, 0, 0)
        ).signed(SUB),
        Transaction(
            KIND_ORDER_PLACE, cfg.chain_id, 0, BUYER.pubkey, 0, OrderPlace(ISS.address, BID, 10_000, 5, IOC, 0, 0)
        ).signed(BUYER),
    ]
    blk = b.mine(first.hash, SUB.address, trade)  # height 2: one trade record
    assert any(k[:1] == b"R" for k in b.states[blk.hash].econ)
    chain = [blk]
    while chain[-1].height < 2 + E.TRADES_KEPT:
        chain.append(b.mine(chain[-1].hash, SUB.address))
    pruning = chain[-1]  # its end-of-block prune drops height 2's trades
    parent = chain[-2]
    assert any(k[:1] == b"R" for k in b.states[parent.hash].econ)
    assert not any(k[:1] == b"R" for k in b.states[pruning.hash].econ)
    fork1 = b.mine(parent.hash, BUYER.address, nonce=7)
    fork2 = b.mine(fork1.hash, BUYER.address)
    with ChainState.open(tmp_path, cfg, clock=lambda: NOW) as cs:
        for x in [first] + chain:
            cs.submit_block(x)
        assert cs.tip.hash == pruning.hash
        assert dict(cs.scan_econ(b"")) == b.states[pruning.hash].econ
        cs.invalidate_block(pruning.hash)  # disconnect the pruning block
        assert cs.tip.hash == parent.hash
        assert dict(cs.scan_econ(b"")) == b.states[parent.hash].econ
        assert cs.supply.root == parent.header.state_root
        cs.check_conservation()
        cs.submit_block(fork1)
        cs.submit_block(fork2)
        assert cs.tip.hash == fork2.hash
        assert dict(cs.scan_econ(b"")) == b.states[fork2.hash].econ
        assert cs.supply.root == fork2.header.state_root
        assert not any(k[:1] == b"R" for k, _ in cs.scan_econ(b"R"))
        cs.check_conservation()
