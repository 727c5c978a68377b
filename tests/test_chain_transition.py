"""chain.transition: the block state transition as one pure function, agreeing with ChainState's import."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from chain.block import Block
from chain.chainstate import ChainState
from chain.config import load_config
from chain.errors import ValidationError
from chain.keys import PrivateKey
from chain.state import MemoryState, genesis_state
from chain.testing import ChainBuilder, make_keys
from chain.transition import PreState, parent_info, validate_and_apply

CFG = load_config("regtest")
VEC = Path(__file__).resolve().parent / "vectors"
# reasons that need storage (is the parent known, is it invalid, was the block seen) or happen before a Block exists
STORAGE_REASONS = {"prev-blk-not-found", "bad-prevblk", "duplicate-invalid", "bad-blk-encoding"}


def snapshot(st: MemoryState):
    return copy.deepcopy((st.accounts, st.supply, st.jobs, st.hashes))


def replay(blocks: list[Block], now: int) -> MemoryState:
    """The vectors' chain through validate_and_apply alone, checking that no call mutates its input."""
    builder = ChainBuilder(CFG)
    accts, supply = genesis_state(CFG.genesis_alloc)
    st = MemoryState(accts, supply, hashes=[builder.genesis.hash])
    for blk in blocks:
        builder.blocks[blk.hash] = blk
        before = snapshot(st)
        diff = validate_and_apply(blk, builder.parent_info(blk.header.prev_hash), PreState(st.get, st.supply, st), CFG,
                                  now, params=builder.params)
        assert snapshot(st) == before, "validate_and_apply mutated its pre-state"
        st.apply(diff)
        st.hashes.append(blk.hash)
    return st


def test_pure_transition_agrees_with_import(tmp_path):
    chain = json.loads((VEC / "chain.json").read_text())
    blocks = [Block.decode(bytes.fromhex(b["encoded"])) for b in chain["blocks"]]
    st = replay(blocks, chain["now"])
    with ChainState.open(tmp_path, CFG, clock=lambda: chain["now"]) as cs:
        for blk in blocks:
            cs.submit_block(blk)
        assert cs.accounts() == st.accounts and cs.supply == st.supply
    st.check_conservation()


def test_pure_transition_rejects_like_import():
    """Every reject vector (tests/vectors/rejects.json) that does not need storage gets the same reason from the
    pure function as from ChainState.submit_block."""
    chain = json.loads((VEC / "chain.json").read_text())
    rej = json.loads((VEC / "rejects.json").read_text())
    blocks = [Block.decode(bytes.fromhex(b["encoded"])) for b in chain["blocks"]]
    st = replay(blocks, chain["now"])
    builder = ChainBuilder(CFG)
    for blk in blocks:
        builder.blocks[blk.hash] = blk
    parent = builder.parent_info(blocks[-1].hash)
    checked = 0
    for c in rej["blocks"]:
        if c["reason"] in STORAGE_REASONS:
            continue
        blk = Block.decode(bytes.fromhex(c["block"]))
        before = snapshot(st)
        with pytest.raises(ValidationError) as ei:
            validate_and_apply(blk, parent, PreState(st.get, st.supply, st), CFG, rej["now"], params=builder.params)
        assert ei.value.reason == c["reason"], c["name"]
        assert snapshot(st) == before
        checked += 1
    assert checked >= 18
    good = Block.decode(bytes.fromhex(rej["good"]))
    validate_and_apply(good, parent, PreState(st.get, st.supply, st), CFG, rej["now"], params=builder.params)


def test_parent_info_is_built_once():
    """ChainState, the chain builder and a plain lookup give the same context, near genesis (fewer than 11
    ancestors) and deeper, on both branches of a fork."""
    b = ChainBuilder(CFG)
    miner = PrivateKey.from_phrase(b"transition miner").address
    main = b.chain(b.genesis.hash, 14, miner, keys=make_keys(2), txs_per_block=1, rng=random.Random(3))
    fork = b.chain(main[3].hash, 3, miner, time_step=7)
    import tempfile
    with tempfile.TemporaryDirectory() as d, ChainState.open(d, CFG, clock=lambda: CFG.genesis_timestamp + 10**6) as cs:
        for blk in main + fork:
            cs.submit_block(blk)
        for blk in [b.genesis] + main + fork:
            hd = blk.header
            want = b.parent_info(blk.hash)
            assert cs.parent_info(blk.hash) == want
            headers = {x.hash: x.header for x in [b.genesis] + main + fork}
            assert parent_info(blk.hash, lambda x: (headers[x].height, headers[x].timestamp, headers[x].prev_hash),
                               CFG.mtp_window) == want
            assert len(want.recent_timestamps) == min(CFG.mtp_window, hd.height + 1)
            assert want.recent_timestamps[-1] == hd.timestamp


def test_undo_is_what_import_stores_and_decodes_strictly(tmp_path):
    """The stored undo record of each block is Undo.of(the pure transition's diff).encode(); every form
    (accounts only, with jobs, with economy records) round-trips; anything else is a StorageError."""
    from chain import schema as S
    from chain.encoding import encode
    from chain.errors import StorageError
    from chain.state import Account, Supply
    from chain.undo import Undo
    chain = json.loads((VEC / "chain.json").read_text())
    blocks = [Block.decode(bytes.fromhex(b["encoded"])) for b in chain["blocks"]]
    builder = ChainBuilder(CFG)
    accts, supply = genesis_state(CFG.genesis_alloc)
    st = MemoryState(accts, supply, hashes=[builder.genesis.hash])
    with ChainState.open(tmp_path, CFG, clock=lambda: chain["now"]) as cs:
        for blk in blocks:
            cs.submit_block(blk)
            builder.blocks[blk.hash] = blk
            diff = validate_and_apply(blk, builder.parent_info(blk.header.prev_hash), PreState(st.get, st.supply, st),
                                      CFG, chain["now"], params=builder.params)
            raw = cs.store.get(S.undo_key(blk.hash))
            assert raw == Undo.of(diff).encode() and Undo.decode(raw) == Undo.of(diff)
            st.apply(diff)
            st.hashes.append(blk.hash)
    sup = Supply.zero()
    a = (bytes(20), Account(5, 1))
    forms = [Undo(sup, (a,)), Undo(sup, (a,), ((bytes(32), None),)), Undo(sup, (a,), (), ((b"k1", None), (b"k2", b"v"))),
             Undo(sup, (), ((bytes(32), None),), ((b"k", b"v"),))]
    assert [len(__import__("msgpack").unpackb(u.encode())) for u in forms] == [2, 3, 4, 4]
    for u in forms:
        assert Undo.decode(u.encode()) == u
    for bad in (encode([sup.encode()]), encode([sup.encode(), [], [], [], []]), encode([b"x", []]),
                encode([sup.encode(), [[bytes(19), Account(1, 0).encode()]]]),
                encode([sup.encode(), [], [], [[b"k", b"v", b"w"]]]),
                encode([sup.encode(), [], []]),                   # jobs list present but empty: not canonical
                Undo(sup, (a,)).encode() + b"\x00"):
        with pytest.raises(StorageError):
            Undo.decode(bad)
