"""The one canonical encoding: msgpack arrays of integers and byte strings, in a fixed field order.

Invariants:
- Only ``int``, ``bytes`` and lists/tuples of them are encodable; no maps, strings, floats, nil, bools.
- ``decode(encode(x)) == x`` and, for any accepted ``data``, ``encode(decode(data)) == data`` (decoding
  rejects every non-canonical form: over-long ints/lengths, trailing bytes, foreign types).
- Every decode runs with explicit size limits.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Generic, TypeVar

import msgpack

from chain.errors import EncodingError

Obj = Any  # int | bytes | list[Obj]: Any, so that decoders index and narrow the tree with as_list/as_int/as_bytes

R = TypeVar("R")

DEFAULT_MAX_BYTES = 1 << 20
U64_MAX = (1 << 64) - 1


_ALLOWED = (int, bytes, list, tuple)


def _check(obj: Obj) -> None:
    """Only int, bytes and arrays of them (exact types: bool is rejected), nesting depth <= 8."""
    stack = [(obj, 0)]
    while stack:
        x, d = stack.pop()
        t = type(x)
        if t is int or t is bytes:
            continue
        if t is list or t is tuple:
            if d >= 8:
                raise EncodingError("bad-encoding", "nesting too deep")
            for y in x:
                ty = type(y)
                if ty is int or ty is bytes:
                    continue
                stack.append((y, d + 1))
            continue
        raise EncodingError("bad-encoding", f"type {t.__name__} not allowed")


def encode(obj: Obj) -> bytes:
    """Canonical bytes of ``obj`` (ints, bytes, lists)."""
    _check(obj)
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=False)
    except (OverflowError, ValueError) as e:
        raise EncodingError("bad-encoding", f"cannot encode: {e}") from e
    return out


def encode_record(fields: Obj) -> bytes:
    """Canonical bytes of a record the state transition built itself from typed fields (ints from checked
    transactions and integer arithmetic, bytes): ``encode`` without its type walk, for the hot path. Never
    for data from outside (decoded or user-built objects go through ``encode``, which rejects foreign
    types). Equal to ``encode(fields)`` whenever that accepts ``fields`` (tests/test_record_memo.py)."""
    out: bytes = msgpack.packb(fields, use_bin_type=True)
    return out


def decode(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_bin: int | None = None, max_array: int = 4096
) -> Obj:
    """Strictly decode canonical bytes; raises EncodingError('bad-encoding') on anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError("bad-encoding", "not bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise EncodingError("bad-encoding", f"{len(data)} bytes exceeds limit {max_bytes}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_bytes if max_bin is None else max_bin,
            max_str_len=0,
            max_array_len=max_array,
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.ExtraData as e:
        raise EncodingError("bad-encoding", "trailing bytes") from e
    except Exception as e:  # msgpack raises several types for malformed input
        raise EncodingError("bad-encoding", f"malformed: {type(e).__name__}") from e
    _check(obj)
    if msgpack.packb(obj, use_bin_type=True) != data:
        raise EncodingError("bad-encoding", "non-canonical form")
    return obj


# --- field helpers for decoders: each raises EncodingError with the given reason -------------------


def as_list(obj: Obj, n: int | None = None, reason: str = "bad-encoding", what: str = "struct") -> list[Obj]:
    if not isinstance(obj, list):
        raise EncodingError(reason, f"{what}: expected array")
    if n is not None and len(obj) != n:
        raise EncodingError(reason, f"{what}: expected {n} fields, got {len(obj)}")
    return obj


def as_int(obj: Obj, lo: int = 0, hi: int = U64_MAX, reason: str = "bad-encoding", what: str = "int") -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise EncodingError(reason, f"{what}: expected int")
    if not lo <= obj <= hi:
        raise EncodingError(reason, f"{what}: {obj} out of range [{lo}, {hi}]")
    return obj


def as_bytes(
    obj: Obj, n: int | None = None, max_len: int | None = None, reason: str = "bad-encoding", what: str = "bytes"
) -> bytes:
    if not isinstance(obj, bytes):
        raise EncodingError(reason, f"{what}: expected bytes")
    if n is not None and len(obj) != n:
        raise EncodingError(reason, f"{what}: expected {n} bytes, got {len(obj)}")
    if max_len is not None and len(obj) > max_len:
        raise EncodingError(reason, f"{what}: {len(obj)} bytes exceeds {max_len}")
    return obj


# --- decoded-record memo: the state transition re-reads the records it wrote a block ago ---------------

_MEMOS: list["RecordMemo[Any]"] = []  # every memo (clear_memos)


def clear_memos() -> None:
    """Empty every record memo (benchmarks: time a cold import, as a node receiving new blocks sees it)."""
    for m in _MEMOS:
        m.clear()


class RecordMemo(Generic[R]):
    """A bounded map from canonical bytes to the immutable record they decode to (frozen dataclasses, so
    one instance can be shared by every reader). ``decode(data, fn)`` runs ``fn`` only on bytes not seen
    recently, and ``remember`` seeds the map with a record's own encoding, so a record written in one
    block decodes for free when the next block reads it. Pure caching: the results equal ``fn(data)``
    (fn raises on bad bytes, and bad bytes never enter the map). ``fn`` must be strict (its record
    encodes back to exactly ``data``): the record keeps ``data`` as its cached encoding."""

    def __init__(self, max_items: int = 1 << 15):
        self.max_items = max_items
        self._map: OrderedDict[bytes, R] = OrderedDict()
        _MEMOS.append(self)

    def clear(self) -> None:
        self._map.clear()

    def decode(self, data: bytes, fn: Callable[[bytes], R]) -> R:
        if type(data) is not bytes:
            data = bytes(data)  # bytearray, memoryview: a key must be immutable
        rec = self._map.get(data)
        if rec is None:
            rec = fn(data)
            object.__setattr__(rec, "_enc", data)
            self.remember(data, rec)
        return rec

    def remember(self, data: bytes, rec: R) -> None:
        m = self._map
        if len(m) >= self.max_items:
            m.popitem(last=False)  # the oldest entry
        m[data] = rec


def evolve(rec: R, **changes: Any) -> R:
    """``dataclasses.replace`` for the frozen records of the state transition, without its per-call field
    introspection and ``__init__``: a copy of ``rec`` with ``changes`` (field names only, else TypeError)
    and without ``rec``'s cached encoding (``cached_encoding``), which describes the old fields. Only for
    dataclasses with no ``__post_init__`` and no validation in ``__init__``."""
    d = rec.__dict__.copy()
    d.pop("_enc", None)
    if not d.keys() >= changes.keys():
        raise TypeError(f"{type(rec).__name__} has no field(s) {sorted(changes.keys() - d.keys())}")
    d.update(changes)
    new: R = object.__new__(type(rec))
    new.__dict__.update(d)  # a frozen dataclass blocks __setattr__, not its __dict__
    return new


def cached_encoding(rec: R, make: Callable[[], bytes], memo: RecordMemo[R] | None = None) -> bytes:
    """``rec``'s canonical bytes, computed by ``make()`` once per instance of a frozen dataclass (kept in
    its ``__dict__``, outside its fields: equality, hashing, ``replace`` and ``evolve`` ignore it). With
    ``memo``, the new bytes are remembered as decoding to ``rec`` (the next block reads them for free)."""
    enc: bytes | None = rec.__dict__.get("_enc")
    if enc is None:
        enc = make()
        object.__setattr__(rec, "_enc", enc)
        if memo is not None:
            memo.remember(enc, rec)
    return enc
