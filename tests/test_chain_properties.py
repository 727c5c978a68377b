"""Property tests: canonical encoding, conservation across random transfers and reorgs, replay and
cross-chain rejection."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.chainstate import ChainState
from chain.config import load_config
from chain.encoding import decode, encode
from chain.errors import EncodingError, ValidationError
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder, make_keys
from chain.tx import Transaction, Transfer, make_transfer

CFG = load_config("regtest")
NOW = CFG.genesis_timestamp + 10**6
KEYS = make_keys(5)
SETTINGS = settings(max_examples=40, deadline=None)

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
leaves = st.one_of(ints, st.binary(max_size=300))
objs = st.recursive(leaves, lambda c: st.lists(c, max_size=20), max_leaves=40)


@SETTINGS
@given(objs)
def test_roundtrip(obj):
    data = encode(obj)
    assert decode(data) == obj
    assert encode(decode(data)) == data


def _noncanonical(obj) -> list[bytes]:
    """Other msgpack encodings of the same value (over-long forms, strings, trailing bytes)."""
    out = [encode(obj) + b"\x00"]
    if isinstance(obj, int) and 0 <= obj < 2**32:
        out.append(b"\xcf" + struct.pack(">Q", obj))  # uint64 form of a small int
    if isinstance(obj, bytes) and len(obj) < 256:
        out.append(b"\xc5" + struct.pack(">H", len(obj)) + obj)  # bin16 for a short string
        out.append(msgpack.packb(obj, use_bin_type=False))  # raw/str type
    if isinstance(obj, list) and len(obj) < 16:
        out.append(b"\xdc" + struct.pack(">H", len(obj)) + b"".join(encode(x) for x in obj))  # array16
    return out


@SETTINGS
@given(objs)
def test_noncanonical_rejected(obj):
    canonical = encode(obj)
    for bad in _noncanonical(obj):
        if bad != canonical:
            with pytest.raises(EncodingError):
                decode(bad)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_accepted_bytes_are_canonical(data):
    try:
        obj = decode(data)
    except EncodingError:
        return
    assert encode(obj) == data


def test_foreign_types_rejected():
    for v in (1.5, True, None, "text", {1: 2}):
        with pytest.raises(EncodingError):
            encode([v])
        with pytest.raises(EncodingError):
            decode(msgpack.packb([v], use_bin_type=True))


@SETTINGS
@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(1, 2**63 - 1),
    st.integers(0, 2**32),
    st.integers(0, 4),
)
def test_tx_roundtrip_and_mutation(nonce, fee, amount, chain_id, k):
    key = KEYS[k]
    tx = Transaction(0, chain_id, nonce, key.pubkey, fee, Transfer(KEYS[0].address, amount)).signed(key)
    back = Transaction.decode(tx.encoded)
    assert back == tx and back.txid == tx.txid and back.encoded == tx.encoded
    # flipping any byte gives either a decode error or a transaction whose signature fails
    rng = random.Random(nonce ^ amount)
    from chain.tx import check_tx

    for _ in range(5):
        i = rng.randrange(len(tx.encoded))
        mut = bytearray(tx.encoded)
        mut[i] ^= 1 << rng.randrange(8)
        try:
            t2 = Transaction.decode(bytes(mut))
        except EncodingError:
            continue
        assert t2 != tx
        with pytest.raises(ValidationError):
            check_tx(t2, t2.chain_id, 4096)


@pytest.fixture(scope="module")
def builder():
    return ChainBuilder(CFG)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32))
def test_conservation_across_random_forks(builder, tmp_path_factory, seed):
    """Random transfers on a random tree of forks, submitted in random order: after every import
    the stored state equals the control replay of the tip and Σ balances == minted − burned."""
    rng = random.Random(seed)
    miners = [PrivateKey.from_phrase(b"m%d" % i).address for i in range(3)]
    blocks = []
    tips = [builder.genesis.hash]
    for _ in range(rng.randint(4, 14)):
        parent = rng.choice(tips + [b.hash for b in blocks])
        txs = builder.random_transfers(parent, KEYS, rng.randint(0, 6), rng)
        blk = builder.mine(parent, rng.choice(miners), txs, nonce=rng.randrange(1 << 20))
        blocks.append(blk)
        tips.append(blk.hash)
    order = list(blocks)
    # parents must be known before children: shuffle within a topological order
    rng.shuffle(order)
    order.sort(key=lambda b: b.height)
    d = tmp_path_factory.mktemp("cons")
    with ChainState.open(d, CFG, clock=lambda: NOW) as cs:
        for blk in order:
            cs.submit_block(blk)
            ctrl = builder.states[cs.tip.hash]
            assert cs.accounts() == ctrl.accounts
            cs.check_conservation()
        best = max(cs.index.values(), key=lambda e: (e.chainwork, -e.seq))
        assert cs.tip.hash == best.hash
        # disconnect everything back to genesis through invalidation: still conserved
        first = cs.block_hash_at(1)
        if first is not None:
            cs.invalidate_block(first)
            cs.check_conservation()
            assert cs.accounts() == builder.states[cs.tip.hash].accounts


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 2**32))
def test_replay_and_cross_chain_rejected(builder, tmp_path_factory, seed, other_chain):
    rng = random.Random(seed)
    chain_blocks = builder.chain(builder.genesis.hash, 2, KEYS[1].address, keys=KEYS, txs_per_block=4, rng=rng)
    d = tmp_path_factory.mktemp("replay")
    with ChainState.open(d, CFG, clock=lambda: NOW) as cs:
        for blk in chain_blocks:
            cs.submit_block(blk)
        old = rng.choice([t for b in chain_blocks for t in b.txs])
        with pytest.raises(ValidationError) as ei:
            cs.validate_tx(old)
        assert ei.value.reason == "bad-txn-nonce"
        cid = CFG.chain_id + other_chain
        sender = rng.choice(KEYS)
        foreign = make_transfer(sender, cid, cs.get_account(sender.address).nonce, KEYS[0].address, 1)
        with pytest.raises(ValidationError) as ei:
            cs.validate_tx(foreign)
        assert ei.value.reason == "bad-txn-chainid"
        # re-labelled to this chain without re-signing: the signature no longer verifies
        relabelled = Transaction(
            foreign.kind,
            CFG.chain_id,
            foreign.nonce,
            foreign.sender_pubkey,
            foreign.fee,
            foreign.payload,
            foreign.signature,
        )
        with pytest.raises(ValidationError) as ei:
            cs.validate_tx(relabelled)
        assert ei.value.reason == "bad-txn-sig"


@pytest.fixture(scope="module")
def fuzz_env(builder, tmp_path_factory):
    base = builder.chain(builder.genesis.hash, 2, KEYS[2].address)
    txs = builder.random_transfers(base[-1].hash, KEYS, 3, random.Random(4))
    good = builder.mine(base[-1].hash, KEYS[2].address, txs)
    cs = ChainState.open(tmp_path_factory.mktemp("fuzz"), CFG, clock=lambda: NOW)
    for b in base:
        cs.submit_block(b)
    yield cs, good
    cs.close()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_block_decoder(fuzz_env, data):
    """Mutated block bytes never crash the node: a ValidationError with a reason, or (if the mutation
    is a no-op on meaning) a normal result; the tip only moves to a fully valid block."""
    cs, good = fuzz_env
    raw = bytearray(good.encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i : i + data.draw(st.integers(1, 40))]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    tip = cs.tip.hash
    try:
        res = cs.submit_block(bytes(raw))
    except ValidationError as e:
        assert e.reason and " " not in e.reason
        assert cs.tip.hash == tip
        return
    assert res.status in ("active", "side", "duplicate")
    assert cs.get_block(res.hash) is not None
    cs.check_conservation()
