"""The decode memos and cached encodings of chain records (chain/encoding.py RecordMemo, cached_encoding;
chain/state.py lt_leaf): pure caches, so every result must equal the uncached computation and decoding
must stay strict."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from chain import state
from chain.economy import GrantRec, Issuer
from chain.encoding import encode
from chain.errors import EncodingError
from chain.jobs import JobRecord
from pouw.hashing import xof

Z = b"\0" * 32


def _job(**kw) -> JobRecord:
    return replace(JobRecord(0, b"\1" * 20, Z, Z, 8, 512, 8, 1, 50, Z, Z, 1), **kw)


def test_job_record_round_trip_and_cached_encoding():
    r = _job(fee=7)
    raw = encode(r.to_list())
    assert r.encode() == raw and r.encode() is r.encode()  # computed once, same bytes
    d1, d2 = JobRecord.decode(raw), JobRecord.decode(bytearray(raw))
    assert d1 == r and d2 is d1  # second decode is the memo's record
    assert d1.encode() == raw
    r2 = replace(d1, fee=8)  # replace never inherits the old bytes
    assert r2.encode() == encode(r2.to_list()) != raw
    assert r2 == _job(fee=8) and hash(r2) == hash(_job(fee=8))  # the cache is outside eq/hash


def test_decode_stays_strict_after_memo_hits():
    good = _job().encode()
    JobRecord.decode(good)
    bad_status = _job(status=99).encode()  # encodes, but is no valid record
    with pytest.raises(EncodingError):
        JobRecord.decode(bad_status)
    with pytest.raises(EncodingError):  # still raises the second time
        JobRecord.decode(bad_status)
    assert good[:4] == b"\xdc\x00\x14\x00"  # array16 of 20 fields, status 0
    with pytest.raises(EncodingError):  # status 0 as a non-canonical uint8
        JobRecord.decode(good[:3] + b"\xcc\x00" + good[4:])
    g = GrantRec(b"\2" * 20, b"\3" * 20, 10, 5, 30, 2, 0, 5, 40, 0)
    gi = Issuer(0, 2, 30, 9000, 100, 0)
    assert GrantRec.decode(g.encode()) == g and GrantRec.decode(g.encode()) is GrantRec.decode(g.encode())
    assert Issuer.decode(gi.encode()) == gi
    with pytest.raises(EncodingError):  # one kind's memo never answers for another
        Issuer.decode(g.encode())
    with pytest.raises(EncodingError):
        GrantRec.decode(gi.encode())


def test_lt_leaf_cache_equals_xof():
    for i in range(3):
        parts = (b"k%d" % i, b"v")
        want = np.frombuffer(xof(b"econ", *parts, length=state.LT_BYTES), dtype="<u2")
        assert np.array_equal(state.lt_leaf(b"econ", *parts), want)
        assert np.array_equal(state.lt_leaf(b"econ", *parts), want)  # from the cache
    assert not state.lt_leaf(b"econ", b"k0", b"v").flags.writeable  # a shared leaf cannot be modified


# --- the transition's own encodings and copies (encode_record, evolve, seeded memos, dec_int) ------------


def test_encode_record_equals_encode_and_evolve_equals_replace():
    from chain.encoding import encode_record, evolve
    from chain.market import Order

    g = GrantRec(b"\2" * 20, b"\3" * 20, 10, 5, 30, 2, 0, 5, 40, 0)
    o = Order(b"\4" * 20, b"\5" * 20, 0, 9500, 100, 60, 0, 0, 3, 7)
    a = state.Account(10**12, 5)
    assert _job(fee=9).encode() == encode(_job(fee=9).to_list())
    for rec in (g, o, a):  # fields in declaration order
        fields = [getattr(rec, f) for f in rec.__dataclass_fields__]
        assert encode_record(fields) == encode(fields) == rec.encode()
    for rec, change in ((_job(), {"fee": 3, "due": 9}), (g, {"remaining": 1}), (o, {"remaining": 5})):
        old = rec.encode()
        new = evolve(rec, **change)
        assert new == replace(rec, **change) and type(new) is type(rec)
        assert new.encode() == replace(rec, **change).encode() != old  # the old bytes are never inherited
        assert rec.encode() == old  # the original is untouched
        with pytest.raises(TypeError):
            evolve(rec, no_such_field=1)
        with pytest.raises(AttributeError):  # still frozen
            new.fee = 1  # type: ignore[misc]


def test_encoding_a_record_seeds_its_decode_memo():
    from chain.market import Order

    g = GrantRec(b"\6" * 20, b"\7" * 20, 11, 5, 30, 2, 0, 5, 40, 0)
    o = Order(b"\4" * 20, b"\5" * 20, 1, 9000, 100, 60, 0, 0, 4, 8)
    i = Issuer(0, 2, 30, 9000, 123_456, 0)
    for rec in (g, o, i):
        assert type(rec).decode(rec.encode()) is rec  # no decode: the written record itself
    with pytest.raises(EncodingError):  # another kind still decodes strictly
        Order.decode(g.encode())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x7f",
        b"\x80",
        b"\xcc\x05",
        b"\xcc\x80",
        b"\xcd\x00\xff",
        b"\xcd\x01\x00",
        b"\xce\x00\x00\xff\xff",
        b"\xce\x00\x01\x00\x00",
        b"\xcf" + (1 << 32).to_bytes(8, "big"),
        b"\xcf" + (5).to_bytes(8, "big"),
        b"\xcf" + ((1 << 64) - 1).to_bytes(8, "big"),
        b"\xc3",
        b"\xc0",
        b"\xff",
        b"\xd0\x80",
        b"\x05\x00",
        b"\xcc",
        b"\xce\x00\x01",
        b"\x91\x05",
        b"\xa1a",
    ],
)
def test_dec_int_fast_path_agrees_with_the_strict_decoder(raw):
    from chain.economy import dec_int
    from chain.encoding import as_int, decode

    try:
        want = as_int(decode(raw), what="amount")
    except EncodingError:
        with pytest.raises(EncodingError):
            dec_int(raw)
    else:
        assert dec_int(raw) == want and type(dec_int(raw)) is int


def test_dec_int_round_trips_every_width():
    from chain.economy import dec_int, enc_int

    for x in (0, 1, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1):
        assert dec_int(enc_int(x)) == x and enc_int(x) == encode(x)
    assert dec_int(None) == 0


def test_lt_leaf_of_a_removed_value_is_not_kept():
    parts = (b"gone", b"value-being-removed")
    state._LEAVES.pop((b"econ", *parts), None)
    want = np.frombuffer(xof(b"econ", *parts, length=state.LT_BYTES), dtype="<u2")
    assert np.array_equal(state.lt_leaf(b"econ", *parts, keep=False), want)
    assert (b"econ", *parts) not in state._LEAVES  # no room taken from live values
    state.lt_leaf(b"econ", *parts)
    assert (b"econ", *parts) in state._LEAVES


# --- the overlay's base reads: each record read once, one scan of a book per block ----------------------


class _CountingSource:
    """A MemoryState seen through counters (the base an overlay reads)."""

    def __init__(self, st):
        self.st, self.gets, self.scans = st, [], []

    def get(self, a):
        return self.st.get(a)

    def get_job(self, j):
        return self.st.get_job(j)

    def due_jobs(self, h):
        return self.st.due_jobs(h)

    def block_hash_at(self, h):
        return self.st.block_hash_at(h)

    def get_econ(self, k):
        self.gets.append(k)
        return self.st.get_econ(k)

    def scan_econ(self, prefix, start=None):
        self.scans.append(prefix)
        return self.st.scan_econ(prefix, start)


def test_overlay_reads_each_base_record_once_and_takers_share_one_book_scan():
    from chain.config import load_config
    from chain.econsim import EconSim, with_issuer
    from chain.econtx import ASK, BID, GTC, IOC, KIND_CREDIT_ISSUE, KIND_ORDER_PLACE, CreditIssue, OrderPlace
    from chain.keys import PrivateKey, faucet_key
    from chain.market import book_prefix
    from chain.tx import KIND_TRANSFER, Transfer

    iss = PrivateKey.from_phrase(b"memo issuer")
    sellers = [PrivateKey.from_phrase(b"memo seller %d" % i) for i in range(6)]
    buyers = [PrivateKey.from_phrase(b"memo buyer %d" % i) for i in range(3)]
    miner = PrivateKey.from_phrase(b"memo miner").address
    cfg = with_issuer(load_config("regtest"), iss.address, 10**10, "mint", 2, 30, 0)
    s = EconSim(cfg, miner)
    for k in sellers + buyers:
        assert s.submit(faucet_key(), KIND_TRANSFER, Transfer(k.address, 10**9)) is None
    s.end_block()
    for i, k in enumerate(sellers):  # a book of six resting asks
        assert s.submit(k, KIND_ORDER_PLACE, OrderPlace(iss.address, ASK, 9000 + 100 * i, 1000, GTC, 0, 0)) is None
    for k in buyers:
        assert s.submit(iss, KIND_CREDIT_ISSUE, CreditIssue(k.address, 10**6)) is None
    s.end_block()
    # one block: three takers sweep the asks (the second and third start where the one before stopped)
    txs = [s.make(k, KIND_ORDER_PLACE, OrderPlace(iss.address, BID, 9600, 1500, IOC, 0, 0)) for k in buyers]
    src = _CountingSource(s.st)
    h = s.next_height
    diff = state.apply_block(src.get, s.st.supply, txs, miner, cfg.subsidy(h), height=h, cfg=cfg, jobs=src)
    for tx in txs:
        assert s.add(tx) is None
    want = s.end_block()  # the same block through EconSim
    assert diff.state_root == want.state_root and diff.econ_after == want.econ_after
    assert diff.econ_before == want.econ_before
    assert len(src.gets) == len(set(src.gets))  # no record read twice from the base
    assert src.scans.count(book_prefix(iss.address, ASK)) == 1  # three takers, one scan of the book
    assert not any(k.startswith(b"B") for k in src.gets)  # makers' before-values came from it
    s.st.check_conservation()


def test_clearing_the_caches_changes_no_result():
    from chain.encoding import clear_memos

    g = GrantRec(b"\x08" * 20, b"\x09" * 20, 12, 5, 30, 2, 0, 5, 40, 0)
    raw = g.encode()
    assert GrantRec.decode(raw) is g
    leaf = state.lt_leaf(b"econ", b"kc", raw).copy()
    clear_memos()
    state.clear_leaf_cache()
    again = GrantRec.decode(raw)
    assert again == g and again is not g  # decoded anew, equal
    assert (b"econ", b"kc", raw) not in state._LEAVES
    assert np.array_equal(state.lt_leaf(b"econ", b"kc", raw), leaf)
