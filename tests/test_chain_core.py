"""Chain core: import, fork choice, reorgs with undo, invalidate/reconsider, chain tips, headers-only forks."""

from __future__ import annotations

import random

import pytest

from chain.chainstate import ChainState
from chain.config import load_config
from chain.errors import BlockError
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder, make_keys

CFG = load_config("regtest")
NOW = CFG.genesis_timestamp + 10**6
KEYS = make_keys(6)
MINER_A = PrivateKey.from_phrase(b"miner a").address
MINER_B = PrivateKey.from_phrase(b"miner b").address


@pytest.fixture(scope="module")
def builder():
    return ChainBuilder(CFG)


@pytest.fixture
def cs(tmp_path):
    c = ChainState.open(tmp_path, CFG, clock=lambda: NOW)
    yield c
    c.close()


def assert_matches(cs: ChainState, b: ChainBuilder) -> None:
    """Stored accounts and supply equal the control replay of the active tip; tokens are conserved."""
    ctrl = b.states[cs.tip.hash]
    assert cs.accounts() == ctrl.accounts
    assert cs.supply == ctrl.supply
    cs.check_conservation()
    ctrl.check_conservation()


def test_genesis_and_linear_import(cs, builder):
    assert cs.height == 0 and cs.tip.hash == builder.genesis.hash
    blocks = builder.chain(builder.genesis.hash, 5, MINER_A, keys=KEYS, txs_per_block=4, rng=random.Random(1))
    for i, blk in enumerate(blocks):
        r = cs.submit_block(blk.encoded)
        assert r.status == "active" and r.tip == blk.hash and cs.height == i + 1
        assert [x.hash for x in r.connected] == [blk.hash] and not r.disconnected
    assert_matches(cs, builder)
    assert cs.submit_block(blocks[-1]).status == "duplicate"
    assert cs.get_account(MINER_A).balance == sum(CFG.subsidy(h) for h in range(1, 6)) + sum(
        t.fee for b in blocks for t in b.txs
    )


@pytest.mark.parametrize("depth", [2, 10])
def test_reorg(cs, builder, depth):
    rng = random.Random(depth)
    base = builder.chain(builder.genesis.hash, 3, MINER_A, keys=KEYS, txs_per_block=3, rng=rng)
    main = builder.chain(base[-1].hash, depth, MINER_A, keys=KEYS, txs_per_block=5, rng=rng)
    # The fork spends some of the same outputs differently; one block longer wins.
    fork = builder.chain(base[-1].hash, depth + 1, MINER_B, keys=KEYS, txs_per_block=4, rng=random.Random(99))
    for blk in base + main:
        cs.submit_block(blk)
    assert cs.tip.hash == main[-1].hash
    assert_matches(cs, builder)
    disconnected_seen = []

    class L:
        def block_connected(self, b):
            pass

        def block_disconnected(self, b):
            disconnected_seen.append(b.hash)

    cs.add_listener(L())
    results = [cs.submit_block(blk) for blk in fork]
    assert all(r.status == "side" for r in results[:-1])
    r = results[-1]
    assert r.status == "active" and cs.tip.hash == fork[-1].hash
    assert [b.hash for b in r.disconnected] == [b.hash for b in reversed(main)]
    assert disconnected_seen == [b.hash for b in reversed(main)]  # reverse order
    assert [b.hash for b in r.connected] == [b.hash for b in fork]
    fork_txids = {t.txid for b in fork for t in b.txs}
    assert {t.txid for t in r.disconnected_txs} == {t.txid for b in main for t in b.txs} - fork_txids
    assert_matches(cs, builder)
    # Undo data: reorg back by extending the old branch past the fork.
    more = builder.chain(main[-1].hash, 2, MINER_A)
    for blk in more:
        cs.submit_block(blk)
    assert cs.tip.hash == more[-1].hash
    assert_matches(cs, builder)


def test_equal_work_first_seen_wins(tmp_path, builder):
    base = builder.chain(builder.genesis.hash, 2, MINER_A)
    x = builder.mine(base[-1].hash, MINER_A)
    y = builder.mine(base[-1].hash, MINER_B)
    for first, second in ((x, y), (y, x)):
        d = tmp_path / first.hash.hex()[:8]
        with ChainState.open(d, CFG, clock=lambda: NOW) as c:
            for blk in base:
                c.submit_block(blk)
            assert c.submit_block(first).status == "active"
            assert c.submit_block(second).status == "side"
            assert c.tip.hash == first.hash
            tips = {t.hash: t.status for t in c.chain_tips()}
            assert tips == {first.hash: "active", second.hash: "valid-headers"}
        with ChainState.open(d, None, clock=lambda: NOW) as c:  # still first after restart
            assert c.tip.hash == first.hash


def test_invalidate_and_reconsider(cs, builder):
    a = builder.chain(builder.genesis.hash, 4, MINER_A, keys=KEYS, txs_per_block=2, rng=random.Random(5))
    b = builder.chain(a[0].hash, 2, MINER_B)
    for blk in a + b:
        cs.submit_block(blk)
    assert cs.tip.hash == a[-1].hash
    r = cs.invalidate_block(a[1].hash)
    assert cs.tip.hash == b[-1].hash  # best remaining chain
    assert [x.hash for x in r.disconnected] == [x.hash for x in reversed(a[1:])]
    assert_matches(cs, builder)
    tips = {t.hash: t.status for t in cs.chain_tips()}
    assert tips[a[-1].hash] == "invalid" and tips[b[-1].hash] == "active"
    with pytest.raises(BlockError) as ei:
        cs.submit_block(builder.mine(a[-1].hash, MINER_A))
    assert ei.value.reason == "bad-prevblk"
    cs.reconsider_block(a[1].hash)
    assert cs.tip.hash == a[-1].hash
    assert_matches(cs, builder)
    tips = {t.hash: t for t in cs.chain_tips()}
    assert tips[b[-1].hash].status == "valid-fork" and tips[b[-1].hash].branchlen == 2


def test_headers_only_fork_and_late_bodies(cs, builder):
    main = builder.chain(builder.genesis.hash, 3, MINER_A)
    fork = builder.chain(builder.genesis.hash, 4, MINER_B)
    for blk in main:
        cs.submit_block(blk)
    for blk in fork:
        cs.submit_header(blk.header)
    assert cs.tip.hash == main[-1].hash  # more work, but no bodies: headers only
    tips = {t.hash: t.status for t in cs.chain_tips()}
    assert tips[fork[-1].hash] == "headers-only"
    # bodies arrive out of order: the last one first, then the rest
    assert cs.submit_block(fork[-1]).status == "side"
    for blk in fork[:-1]:
        cs.submit_block(blk)
    assert cs.tip.hash == fork[-1].hash
    assert_matches(cs, builder)


def test_restart_keeps_chain(tmp_path, builder):
    blocks = builder.chain(builder.genesis.hash, 3, MINER_A, keys=KEYS, txs_per_block=3, rng=random.Random(3))
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as c:
        for blk in blocks:
            c.submit_block(blk)
    with ChainState.open(tmp_path, None, clock=lambda: NOW) as c:
        assert c.tip.hash == blocks[-1].hash and c.height == 3
        assert_matches(c, builder)
        assert c.get_block(blocks[1].hash) == blocks[1]
        assert c.block_hash_at(2) == blocks[1].hash


def test_mine_block_on_chainstate(cs, builder):
    from chain.mining import mine_block
    from chain.tx import make_transfer

    txs = [make_transfer(KEYS[0], CFG.chain_id, n, KEYS[1].address, 5, 1) for n in range(3)]
    bad = make_transfer(KEYS[1], CFG.chain_id, 7, KEYS[2].address, 5, 1)  # wrong nonce: skipped
    blk = mine_block(cs, MINER_A, txs + [bad], CFG.genesis_timestamp + 5)
    assert [t.txid for t in blk.txs] == [t.txid for t in txs]
    assert cs.submit_block(blk).status == "active"
    assert cs.get_account(MINER_A).balance == CFG.subsidy(1) + 3
    cs.check_conservation()


def test_asert_follows_block_times(tmp_path):
    """Fast blocks make the target harder, slow blocks easier; validation agrees with the builder."""
    cfg = CFG.with_(asert_half_life=20)
    b = ChainBuilder(cfg)
    fast = b.chain(b.genesis.hash, 8, MINER_A, time_step=1)
    slow = b.chain(fast[-1].hash, 4, MINER_A, time_step=60)
    targets = [x.header.target for x in fast + slow]
    assert targets[0] == cfg.initial_target  # block 1: the schedule starts at genesis
    assert targets[7] < targets[2] < targets[1] < targets[0]  # ahead of schedule: harder
    assert targets[-1] > targets[7]  # behind schedule: easier
    with ChainState.open(tmp_path, cfg, clock=lambda: NOW) as c:
        for blk in fast + slow:
            assert c.submit_block(blk).status == "active"
        assert c.tip.chainwork == sum((1 << 256) // t for t in [cfg.initial_target] + targets)
