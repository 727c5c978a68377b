"""Content-addressed blobs: job operands (A, B) and results (C) that nodes store, serve and fetch.

Format and address (docs/jobs-client.md, docs/api.md):

- A blob is the bytes of a NumPy ``.npy`` file (``np.save(..., allow_pickle=False)``) holding a 2-D
  C-contiguous array: int8 for operands (A is m×k, B is k×n, both already padded to the protocol grid),
  int32 for a result C (m×n). Nothing else is accepted (no pickles, no other dtypes, no Fortran order).
- Its address is its **commitment** (32 bytes, hex in URLs; `pouw.commit`): an int8 operand is addressed
  by H_A (Merkle root over its rows) when it is a job's A and by H_B (over its columns) when it is a
  job's B; an int32 result by H_C (over its rows). The chain requires ``blob_a = h_a``, ``blob_b = h_b``,
  ``blob_c = h_c``, so a blob can be checked against the job by anyone and a blob that does not match
  its job cannot exist. Every transfer is verified: an upload whose commitment is not the address the
  client named, or a peer's answer that does not commit to the requested address, is refused. Operand
  entries must lie in [-64, 64] (the protocol's operand range).
- Size cap: ``4 · max_dim² + 4096`` bytes (the int32 result of the largest job the chain allows, plus the
  ``.npy`` header), or the node's ``blob_max_bytes`` when configured lower.

Storage: ``<datadir>/blobs/<hex[:2]>/<hex>``, written to a temporary file, fsynced and renamed (atomic).

Uploads through the API pass `node.server.blobgate` first (which blobs a node accepts, quotas, streaming to a
temporary file that `BlobStore.put_file` verifies and moves into place).

Retention (`BlobStore.prune`, run by the node every `PRUNE_EVERY_S`): a blob is kept while a live job
references it (as A, B or C), for ``retention_blocks`` blocks after the job settled (``closed_height``),
and, when no job references it, for ``orphan_grace_s`` seconds after it was written (a client uploads its
operands before the submit is mined). Everything else is deleted.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import numpy as np
from node.logfmt import event

log = logging.getLogger("pouw.blobs")

NPY_HEADER_MAX = 4096
PRUNE_EVERY_S = 30.0


class BlobError(ValueError):
    """A blob refused: stable `code` (blob-hash-mismatch, blob-too-large, bad-blob, blob-not-found)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


ROLES = ("a", "b", "c")


def array_address(x: np.ndarray, role: str) -> bytes:
    """The commitment that addresses array `x` in `role` (a: rows of an int8 A, b: columns of an int8 B,
    c: rows of an int32 C)."""
    import torch
    from pouw.commit import commit_result, tree_a, tree_b

    t = torch.from_numpy(np.ascontiguousarray(x))
    if role == "c":
        if x.dtype != np.dtype("<i4"):
            raise BlobError("bad-blob", "a result blob holds int32")
        return commit_result(t)
    if x.dtype != np.int8:
        raise BlobError("bad-blob", "an operand blob holds int8")
    if role == "a":
        return tree_a(t).root
    if role == "b":
        return tree_b(t).root
    raise BlobError("bad-blob", f"blob role must be one of {ROLES}")


def blob_address(data: bytes, role: str | None = None) -> bytes:
    """The address of blob bytes: the commitment in `role` (default: c for int32; an int8 blob needs a or b)."""
    x = decode_array(data)
    if role is None:
        if x.dtype == np.int8:
            raise BlobError("blob-role-needed", "an int8 blob is addressed by H_A or H_B: name its role (a or b)")
        role = "c"
    return array_address(x, role)


def blob_role(data: bytes, h: bytes) -> str | None:
    """The role in which blob bytes commit to address `h` (a, b or c), or None when they do not."""
    try:
        x = decode_array(data)
    except BlobError:
        return None
    for role in ("c",) if x.dtype != np.int8 else ("a", "b"):
        if array_address(x, role) == h:
            return role
    return None


def blob_hash(data: bytes, role: str | None = None) -> bytes:
    """Alias of `blob_address` (kept for callers of the sha256 era; the address is the commitment)."""
    return blob_address(data, role)


def max_blob_bytes(cfg) -> int:
    """The largest blob the chain's job limits allow: the int32 C of a max_dim × max_dim job."""
    return 4 * cfg.pow.max_dim * cfg.pow.max_dim + NPY_HEADER_MAX


def encode_array(x) -> bytes:
    """The blob bytes of a 2-D int8 / int32 array (numpy or torch)."""
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.int8, np.dtype("<i4"), np.int32) or x.ndim != 2:
        raise BlobError("bad-blob", f"a blob holds a 2-D int8 or int32 array, not {x.dtype} {x.ndim}-D")
    if x.dtype.byteorder == ">":
        x = x.astype("<i4")
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def decode_array(data: bytes, dtype=None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Parse blob bytes (``.npy``, no pickles); check the dtype (int8 / int32) and the shape if given."""
    try:
        x = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # ValueError, EOFError, OSError ... : anything that is not a plain .npy
        raise BlobError("bad-blob", f"not a .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype not in (np.dtype(np.int8), np.dtype("<i4")):
        raise BlobError(
            "bad-blob",
            f"a blob holds a 2-D int8 or int32 array, got {getattr(x, 'dtype', '?')} {getattr(x, 'ndim', '?')}-D",
        )
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise BlobError("bad-blob", f"expected dtype {np.dtype(dtype)}, got {x.dtype}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise BlobError("bad-blob", f"expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return np.ascontiguousarray(x)


class BlobStore:
    def __init__(
        self,
        root: str | Path,
        max_bytes: int,
        *,
        retention_blocks: int = 1000,
        orphan_grace_s: float = 3600.0,
        clock=time.time,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.retention_blocks = retention_blocks
        self.orphan_grace_s = orphan_grace_s
        self.clock = clock

    def path(self, h: bytes) -> Path:
        x = h.hex()
        return self.root / x[:2] / x

    def has(self, h: bytes) -> bool:
        return self.path(h).exists()

    def get(self, h: bytes) -> bytes | None:
        try:
            data = self.path(h).read_bytes()
        except FileNotFoundError:
            return None
        if blob_role(data, h) is None:  # disk corruption: drop it (it can be fetched again)
            event(log, logging.WARNING, "blob on disk does not match its hash; deleted", hash=h.hex()[:16])
            self.path(h).unlink(missing_ok=True)
            return None
        return data

    def check(self, data: bytes, expect: bytes | None = None, role: str | None = None) -> bytes:
        """Size, format, range and address checks of a blob about to be stored; returns its address
        (`expect`, which the blob must commit to in some role, or its commitment in `role`)."""
        if len(data) > self.max_bytes:
            raise BlobError("blob-too-large", f"{len(data)} bytes > {self.max_bytes}")
        x = decode_array(data)
        if x.dtype == np.int8 and x.size and int(np.abs(x.astype(np.int16)).max()) > 64:
            raise BlobError("bad-blob", "operand entries must lie in [-64, 64]")
        if expect is None:
            return blob_address(data, role)
        roles = (role,) if role is not None else (("c",) if x.dtype != np.int8 else ("a", "b"))
        for r in roles:
            if array_address(x, r) == expect:
                return expect
        raise BlobError(
            "blob-hash-mismatch",
            f"the blob does not commit to {expect.hex()} (as {' or '.join('H_' + r.upper() for r in roles)})",
        )

    def put(self, data: bytes, expect: bytes | None = None, role: str | None = None) -> bytes:
        """Verify and store atomically; returns the address. Idempotent."""
        h = self.check(data, expect, role)
        p = self.path(h)
        if p.exists():
            os.utime(p)
            return h
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        return h

    def put_file(self, tmp: str | Path, expect: bytes | None = None, role: str | None = None) -> bytes:
        """Verify a blob already written to `tmp` (in this store's file system) and move it into place
        (the upload path: no second copy); returns the address. Idempotent; `tmp` is consumed."""
        tmp = Path(tmp)
        h = self.check(tmp.read_bytes(), expect, role)
        p = self.path(h)
        if p.exists():
            os.utime(p)
            tmp.unlink(missing_ok=True)
            return h
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
        return h

    def put_array(self, x, role: str | None = None) -> bytes:
        return self.put(encode_array(x), role=role)

    def all(self) -> list[tuple[bytes, float]]:
        out = []
        for d in self.root.iterdir() if self.root.exists() else []:
            if not d.is_dir():
                continue
            for f in d.iterdir():
                if len(f.name) == 64:
                    try:
                        out.append((bytes.fromhex(f.name), f.stat().st_mtime))
                    except (ValueError, OSError):
                        pass
                elif ".tmp" in f.name:  # a write interrupted by a crash
                    f.unlink(missing_ok=True)
        return out

    def prune(self, jobs, height: int) -> int:
        """Delete blobs no longer needed (module docstring). `jobs`: job_id -> JobRecord (cs.jobs())."""
        keep: set[bytes] = set()
        referenced: set[bytes] = set()
        for rec in jobs.values():
            hs = (rec.blob_a, rec.blob_b, rec.blob_c)
            referenced.update(hs)
            if rec.live or rec.closed_height + self.retention_blocks >= height:
                keep.update(hs)
        now = self.clock()
        n = 0
        for h, mtime in self.all():
            if h in keep or (h not in referenced and now - mtime < self.orphan_grace_s):
                continue
            self.path(h).unlink(missing_ok=True)
            n += 1
        if n:
            event(log, logging.INFO, "pruned blobs", count=n)
        return n
