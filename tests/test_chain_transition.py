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
from chain.synthetic import ChainBuilder, make_keys
from chain.transition import CONTEXT, PROOF, SANITY, STATE, PreState, parent_info, validate_and_apply

CFG = load_config("regtest")
VEC = Path(__file__).resolve().parent / "vectors"
# reasons that need storage (is the parent known, is it invalid, was the block seen) or happen before a Block exists
STORAGE_REASONS = {"prev-blk-not-found", "bad-prevblk", "duplicate-invalid", "bad-blk-encoding"}


# the layer each reject vector's reason comes from (docs/chain.md, "Validation layers and reject reasons")
LAYER_OF = {
    **dict.fromkeys(
        [
            "bad-version",
            "bad-chainid",
            "bad-target-range",
            "bad-job-size",
            "bad-job-shape",
            "bad-pow-template",
            "bad-pow-encoding",
        ],
        PROOF,
    ),
    **dict.fromkeys(
        ["bad-txnmrklroot", "bad-txns-duplicate", "bad-txn-sig", "bad-txn-chainid", "bad-txn-kind", "bad-txn-amount"],
        SANITY,
    ),
    **dict.fromkeys(["bad-height", "bad-diffbits", "time-too-old", "time-too-new"], CONTEXT),
    **dict.fromkeys(["bad-txn-nonce", "bad-txn-balance", "bad-state-root"], STATE),
}


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
        diff = validate_and_apply(
            blk,
            builder.parent_info(blk.header.prev_hash),
            PreState(st.get, st.supply, st),
            CFG,
            now,
            params=builder.params,
        )
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
        assert ei.value.layer == LAYER_OF[c["reason"]], c["name"]
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
            assert (
                parent_info(
                    blk.hash, lambda x: (headers[x].height, headers[x].timestamp, headers[x].prev_hash), CFG.mtp_window
                )
                == want
            )
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
            diff = validate_and_apply(
                blk,
                builder.parent_info(blk.header.prev_hash),
                PreState(st.get, st.supply, st),
                CFG,
                chain["now"],
                params=builder.params,
            )
            raw = cs.store.get(S.undo_key(blk.hash))
            assert raw == Undo.of(diff).encode() and Undo.decode(raw) == Undo.of(diff)
            st.apply(diff)
            st.hashes.append(blk.hash)
    sup = Supply.zero()
    a = (bytes(20), Account(5, 1))
    forms = [
        Undo(sup, (a,)),
        Undo(sup, (a,), ((bytes(32), None),)),
        Undo(sup, (a,), (), ((b"k1", None), (b"k2", b"v"))),
        Undo(sup, (), ((bytes(32), None),), ((b"k", b"v"),)),
    ]
    assert [len(__import__("msgpack").unpackb(u.encode())) for u in forms] == [2, 3, 4, 4]
    for u in forms:
        assert Undo.decode(u.encode()) == u
    for bad in (
        encode([sup.encode()]),
        encode([sup.encode(), [], [], [], []]),
        encode([b"x", []]),
        encode([sup.encode(), [[bytes(19), Account(1, 0).encode()]]]),
        encode([sup.encode(), [], [], [[b"k", b"v", b"w"]]]),
        encode([sup.encode(), [], []]),  # jobs list present but empty: not canonical
        Undo(sup, (a,)).encode() + b"\x00",
    ):
        with pytest.raises(StorageError):
            Undo.decode(bad)


def _inject(datadir, blocks: list[Block], *, active: bool) -> None:
    """Store `blocks` (each the child of the one before, the first a child of the tip) as if import had taken
    them: header, body and an index record. `active` also makes them the active chain (height index, tip
    pointer, an undo record): the tampered datadir that `pouw verify` must refuse."""
    from chain import schema as S
    from chain.chainstate import IndexEntry
    from chain.difficulty import block_work
    from chain.undo import Undo

    with ChainState.open(datadir, CFG, create=False) as cs:
        work = cs.tip.chainwork
        undo = Undo(cs.supply, ()).encode()
        with cs.store.batch() as b:
            for i, blk in enumerate(blocks):
                h = blk.header
                work += block_work(h.target)
                status = S.HEADER_VALID | S.HAVE_DATA | (S.VALID_STATE if active else 0)
                b.put(S.header_key(blk.hash), h.encoded)
                b.put(S.body_key(blk.hash), blk.body_encoded)
                b.put(
                    S.index_key(blk.hash),
                    IndexEntry(
                        blk.hash, h.prev_hash, h.height, h.timestamp, h.target, work, status, cs._seq + i
                    ).record(),
                )
                if active:
                    b.put(S.height_key(cs.height + 1 + i), blk.hash)
                    b.put(S.undo_key(blk.hash), undo)
                    b.put(S.META_TIP, blk.hash)


def _through_each(tmp_path, base, blocks: list[Block], now: int, lookup, name: str) -> list[str]:
    """Feed `blocks` (each the child of the one before, the first a child of `base`'s tip) to import, to
    `pouw verify` (holding them on its active chain) and to reindex (holding them stored); assert the last two
    agree with import, and return import's reasons."""
    import shutil
    from chain.maintenance import VerifyError, reindex_datadir, verify_datadir

    reasons, layers = [], []
    shutil.copytree(base, tmp_path / "import")
    with ChainState.open(tmp_path / "import", CFG, clock=lambda: now) as cs:
        tip = cs.tip.hash
        for blk in blocks:
            with pytest.raises(ValidationError) as ei:
                cs.submit_block(blk)
            reasons.append(ei.value.reason)
            layers.append(ei.value.layer)
    # Reindex checks every stored header and body before it connects (runs the state layer), so a child of a
    # block that fails only its state layer is first judged on its own: its own fault if it has one, else
    # `bad-prevblk` once its parent fails to connect. Import knew that parent invalid before anything else.
    want_reindex = list(reasons)
    for i in range(1, len(blocks)):
        if layers[i - 1] == STATE:
            try:
                validate_and_apply(
                    blocks[i],
                    parent_info(blocks[i].header.prev_hash, lookup, CFG.mtp_window),
                    None,
                    CFG,
                    1 << 62,
                    params=CFG.pow.params(),
                )
            except ValidationError as err:
                want_reindex[i] = err.reason
    if "bad-height" not in reasons:  # a wrong height cannot sit on the active chain: the datadir refuses to open
        shutil.copytree(base, tmp_path / "verify")
        _inject(tmp_path / "verify", blocks, active=True)
        with pytest.raises(VerifyError) as vi:
            verify_datadir(tmp_path / "verify", CFG)
        assert vi.value.reason == reasons[0], name
    shutil.copytree(base, tmp_path / "reindex")
    _inject(tmp_path / "reindex", blocks, active=False)
    assert reindex_datadir(tmp_path / "reindex", CFG).tip == tip
    with ChainState.open(tmp_path / "reindex", CFG, create=False) as cs:
        for blk, want in zip(blocks, want_reindex):
            e = cs.index[blk.hash]
            assert e.failed and e.reason == want, (name, e.reason, want)
            assert not cs.is_active(blk.hash)
    return reasons


def test_verify_and_reindex_reject_like_import(tmp_path):
    """The same tampered blocks (every reject vector that can be stored) through import, `pouw verify` and
    reindex: reindex records for each block the reason import gives it, and verify of a datadir holding them
    on its active chain names the first one's reason."""
    chain = json.loads((VEC / "chain.json").read_text())
    rej = json.loads((VEC / "rejects.json").read_text())
    base = tmp_path / "base"
    with ChainState.open(base, CFG, clock=lambda: chain["now"]) as cs:
        for b in chain["blocks"]:
            cs.submit_block(bytes.fromhex(b["encoded"]))
    headers = {
        blk.header.hash: blk.header
        for blk in [ChainBuilder(CFG).genesis]
        + [Block.decode(bytes.fromhex(b["encoded"])) for b in chain["blocks"]]
        + [
            Block.decode(bytes.fromhex(x))
            for c in rej["blocks"]
            if c["reason"] != "bad-blk-encoding"
            for x in c["pre"] + [c["block"]]
        ]
    }

    def lookup(h: bytes) -> tuple[int, int, bytes]:
        return headers[h].height, headers[h].timestamp, headers[h].prev_hash

    # not stored anywhere import could put them: undecodable, no parent, only too new for now, a resubmission
    skip = {"bad-blk-encoding", "prev-blk-not-found", "time-too-new", "duplicate-invalid"}
    seen = set()
    for n, c in enumerate(rej["blocks"]):
        if c["reason"] not in skip:
            blocks = [Block.decode(bytes.fromhex(x)) for x in c["pre"] + [c["block"]]]
            assert _through_each(tmp_path / str(n), base, blocks, rej["now"], lookup, c["name"])[-1] == c["reason"]
            seen.add(c["reason"])
    assert (
        len(seen) >= 18
        and {
            "bad-pow-template",
            "bad-txnmrklroot",
            "bad-txn-sig",
            "time-too-old",
            "bad-txn-nonce",
            "bad-state-root",
            "bad-prevblk",
        }
        <= seen
    )


def test_children_of_invalid_blocks_agree(tmp_path):
    """A valid block on a parent that fails its sanity, context or state layer is `bad-prevblk` through
    import, reindex and (after its parent's own reason) `pouw verify`."""
    from dataclasses import replace

    from chain.block import tx_root
    from chain.difficulty import median_time_past

    b = ChainBuilder(CFG)
    miner = PrivateKey.from_phrase(b"transition miner").address
    keys = make_keys(2)
    main = b.chain(b.genesis.hash, 4, miner, keys=keys, txs_per_block=1, rng=random.Random(5))
    now = main[-1].header.timestamp + 600
    base = tmp_path / "base"
    with ChainState.open(base, CFG, clock=lambda: now) as cs:
        for blk in main:
            cs.submit_block(blk)
    tip = main[-1]
    ok = b.mine(tip.hash, miner, b.random_transfers(tip.hash, keys, 2, random.Random(6)))
    bad_state = Block(b.remine(ok.header, state_root=bytes(32)), ok.txs)
    bad_time = Block(
        b.remine(ok.header, timestamp=median_time_past(list(b.parent_info(tip.hash).recent_timestamps))), ok.txs
    )
    forged = (ok.txs[0], replace(ok.txs[1], signature=bytes(64)))
    bad_sig = Block(b.remine(ok.header, tx_root=tx_root(list(forged))), forged)
    got = {}
    for name, parent in (("state", bad_state), ("context", bad_time), ("sanity", bad_sig)):
        b.blocks[parent.hash] = parent
        b.states[parent.hash] = b.states[ok.hash]
        child = b.mine(parent.hash, miner)
        lookup = lambda h: (b.blocks[h].header.height, b.blocks[h].header.timestamp, b.blocks[h].header.prev_hash)
        got[name] = _through_each(tmp_path / name, base, [parent, child], now, lookup, name)
    assert got == {
        "state": ["bad-state-root", "bad-prevblk"],
        "context": ["time-too-old", "bad-prevblk"],
        "sanity": ["bad-txn-sig", "bad-prevblk"],
    }
