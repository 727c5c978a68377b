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
    assert r.encode() == raw and r.encode() is r.encode()        # computed once, same bytes
    d1, d2 = JobRecord.decode(raw), JobRecord.decode(bytearray(raw))
    assert d1 == r and d2 is d1                                   # second decode is the memo's record
    assert d1.encode() == raw
    r2 = replace(d1, fee=8)                                       # replace never inherits the old bytes
    assert r2.encode() == encode(r2.to_list()) != raw
    assert r2 == _job(fee=8) and hash(r2) == hash(_job(fee=8))   # the cache is outside eq/hash


def test_decode_stays_strict_after_memo_hits():
    good = _job().encode()
    JobRecord.decode(good)
    bad_status = _job(status=99).encode()                         # encodes, but is no valid record
    with pytest.raises(EncodingError):
        JobRecord.decode(bad_status)
    with pytest.raises(EncodingError):                            # still raises the second time
        JobRecord.decode(bad_status)
    assert good[:4] == b"\xdc\x00\x14\x00"                        # array16 of 20 fields, status 0
    with pytest.raises(EncodingError):                            # status 0 as a non-canonical uint8
        JobRecord.decode(good[:3] + b"\xcc\x00" + good[4:])
    g = GrantRec(b"\2" * 20, b"\3" * 20, 10, 5, 30, 2, 0, 5, 40, 0)
    gi = Issuer(0, 2, 30, 9000, 100, 0)
    assert GrantRec.decode(g.encode()) == g and GrantRec.decode(g.encode()) is GrantRec.decode(g.encode())
    assert Issuer.decode(gi.encode()) == gi
    with pytest.raises(EncodingError):                            # one kind's memo never answers for another
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
