"""The persisted lookup indexes (chain/indexes.py): tx id -> block, address -> history, job
commitment -> job. They follow the active chain through reorgs, are rebuilt identically for an old
datadir without them and by `pouw reindex`, and history pages newest first."""

from __future__ import annotations

import random

import pytest

from chain import indexes
from chain import schema as S
from chain.chainstate import ChainState
from chain.config import load_config
from chain.keys import PrivateKey
from chain.maintenance import VerifyError, reindex_datadir, verify_datadir
from chain.synthetic import ChainBuilder, make_keys

CFG = load_config("regtest")
NOW = CFG.genesis_timestamp + 10**6
KEYS = make_keys(6)
MINER_A = PrivateKey.from_phrase(b"miner a").address
MINER_B = PrivateKey.from_phrase(b"miner b").address


@pytest.fixture(scope="module")
def builder():
    return ChainBuilder(CFG)


def index_dump(cs: ChainState) -> dict[bytes, bytes]:
    return {k: v for p in indexes.PREFIXES for k, v in cs.store.iterate(p)}


def expected(cs: ChainState, b: ChainBuilder) -> dict[bytes, bytes]:
    """The index entries implied by the active chain, computed from the builder's control states."""
    out: dict[bytes, bytes] = {}
    g = b.states[cs.chain[0]]
    for a, acct in g.accounts.items():
        out[S.addrhist_key(a, 0)] = indexes.HistoryEntry(0, 0, acct.balance, acct.nonce, ()).encode()
    for height in range(1, cs.height + 1):
        h, prev = cs.chain[height], cs.chain[height - 1]
        blk = b.blocks[h]
        before, after = b.states[prev], b.states[h]
        touched = {a for a in set(before.accounts) | set(after.accounts) if before.get(a) != after.get(a)}
        named: dict[bytes, list[bytes]] = {}
        for t in blk.txs:
            out[S.txindex_key(t.txid)] = h
            for a in indexes.tx_addresses(t):
                named.setdefault(a, []).append(t.txid)
        for a in touched | set(named):
            out[S.addrhist_key(a, height)] = indexes.HistoryEntry(
                height, before.get(a).balance, after.get(a).balance, after.get(a).nonce, tuple(named.get(a, ()))
            ).encode()
    return out


def test_indexes_follow_reorgs_and_rebuild(tmp_path, builder):
    rng = random.Random(5)
    base = builder.chain(builder.genesis.hash, 3, MINER_A, keys=KEYS, txs_per_block=3, rng=rng)
    main = builder.chain(base[-1].hash, 3, MINER_A, keys=KEYS, txs_per_block=4, rng=rng)
    fork = builder.chain(base[-1].hash, 4, MINER_B, keys=KEYS, txs_per_block=4, rng=random.Random(77))
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        assert index_dump(cs) == expected(cs, builder)  # genesis allocations only
        for blk in base + main:
            cs.submit_block(blk)
        assert index_dump(cs) == expected(cs, builder)
        some = main[-1].txs[0]
        assert indexes.tx_block(cs.store, some.txid) == main[-1].hash
        for blk in fork:
            cs.submit_block(blk)
        assert cs.tip.hash == fork[-1].hash
        want = expected(cs, builder)
        assert index_dump(cs) == want  # main's entries gone, fork's present
        gone = {t.txid for b in main for t in b.txs} - {t.txid for b in fork for t in b.txs}
        assert gone and all(indexes.tx_block(cs.store, t) is None for t in gone)
        assert indexes.tx_block(cs.store, fork[0].txs[0].txid) == fork[0].hash
        # an old datadir (no marker, no entries) gets them built on open, identical
        with cs.store.batch() as b:
            b.delete(S.META_INDEXES)
            for k in want:
                b.delete(k)
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        assert cs.store.get(S.META_INDEXES) == indexes.MARKER
        assert index_dump(cs) == want
        # a stray entry is wiped by a rebuild
        with cs.store.batch() as b:
            b.put(S.txindex_key(b"\x01" * 32), b"\x02" * 32)
    reindex_datadir(tmp_path, CFG)  # ends with verify_datadir: indexes checked
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        assert index_dump(cs) == want
        k = S.addrhist_key(KEYS[1].address, fork[0].height)
        good = cs.store.get(k)
        with cs.store.batch() as b:  # a forged history entry
            b.put(k, indexes.HistoryEntry(fork[0].height, 0, 10**9, 0, ()).encode())
    with pytest.raises(VerifyError) as e:
        verify_datadir(tmp_path, CFG)
    assert e.value.reason == "bad-indexes"
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        with cs.store.batch() as b:
            b.put(k, good)
    assert verify_datadir(tmp_path, CFG).height == cs.height


def test_history_newest_first_and_paged(tmp_path, builder):
    blocks = builder.chain(builder.genesis.hash, 6, MINER_A, keys=KEYS, txs_per_block=3, rng=random.Random(9))
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        for blk in blocks:
            cs.submit_block(blk)
        hist = list(indexes.history(cs.store, MINER_A))
        assert [e.height for e in hist] == [6, 5, 4, 3, 2, 1]  # the coinbase changes it every block
        assert hist[0].balance_after == cs.get_account(MINER_A).balance
        for newer, older in zip(hist, hist[1:]):
            assert older.balance_after == newer.balance_before  # a chain of balances, nothing missed
        assert [e.height for e in indexes.history(cs.store, MINER_A, before=4)] == [3, 2, 1]
        assert list(indexes.history(cs.store, MINER_A, before=1)) == []
        assert list(indexes.history(cs.store, b"\x07" * 20)) == []
        k = KEYS[0].address
        mine = [e for e in indexes.history(cs.store, k)]
        sent = {t.txid for b in blocks for t in b.txs if k in indexes.tx_addresses(t)}
        assert {t for e in mine for t in e.txids} == sent and mine[-1].height == 0


def test_bench_explorer_runs():
    """The benchmark still runs (numbers are in benchmarks/RESULTS.md, not asserted here)."""
    from benchmarks.bench_explorer import run

    out = run(220, 2)
    assert out["blocks"] == 220 and out["small_height"] == 200 and out["scanned_txs"] == 440
    assert set(out["lookups_at_full_us"]) == {"tx_block", "history_page", "unknown_id", "blockstats_120"}
