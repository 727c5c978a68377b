"""Who may store blobs on this node and how much: the upload path of ``POST/PUT /api/v1/blobs``.

Admission (docs/operations.md). A node stores an uploaded blob only when

1. a job references its address: a job on the active chain (``blob_a`` / ``blob_b`` / ``blob_c``), or a
   transaction in the mempool (a submit's ``blob_a`` / ``blob_b``, a result's ``blob_c``); or
2. the upload carries ``X-Pouw-Job-Tx: <hex>``, a job submit signed for this chain that names the blob
   as its ``blob_a`` or ``blob_b`` and whose sender's confirmed balance covers its max fee and fee: the
   account that will pay for the job vouches for the storage. The blob is *charged* to that account until
   a job on the chain references it (or it expires).

Anything else is refused before its body is read: ``403 blob-not-referenced``.

Quotas, checked before the body is read (sizes from ``Content-Length``, else the blob cap):

- one blob: at most `BlobStore.max_bytes` (``413 blob-too-large``, also enforced while streaming);
- per account: unreferenced bytes charged to it ≤ ``blob_account_quota`` (``429 blob-quota-exceeded``);
- all accounts: unreferenced bytes ≤ ``blob_pending_max`` (``429 blob-store-busy``);
- the store: bytes on disk ≤ ``blob_store_max`` (``429 blob-store-full``);
- per client IP: at most `UPLOADS_PER_IP` uploads at once (``429 too-many-uploads``).

Every 429 carries ``Retry-After``. The body is streamed to a temporary file in the store (never held in
memory while it arrives); its checks (format, operand range, commitment = address) run in a worker
thread, at most `VERIFY_SLOTS` at a time, and the file is renamed into place. Unreferenced blobs expire
after ``blob_grace_s`` (`BlobStore.prune`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from chain.errors import ValidationError
from chain.tx import KIND_JOB_RESULT, KIND_JOB_SUBMIT, Transaction, check_tx, decode_tx

if TYPE_CHECKING:
    from node.server.interfaces import NodeView

UPLOADS_PER_IP = 2
VERIFY_SLOTS = 2
USAGE_TTL_S = 5.0
RETRY_AFTER_S = 30


@dataclass
class Charge:
    account: bytes
    size: int
    at: float


class BlobGate:
    def __init__(
        self, node: NodeView, *, account_quota: int, pending_max: int, store_max: int, grace_s: float, clock=time.time
    ):
        self.node = node
        self.account_quota = account_quota
        self.pending_max = pending_max
        self.store_max = store_max
        self.grace_s = grace_s
        self.clock = clock
        self.charges: dict[bytes, Charge] = {}  # blob address -> the account vouching for it
        self.uploading: collections.Counter[str] = collections.Counter()
        self.verify = asyncio.Semaphore(VERIFY_SLOTS)
        self._usage = (0, -1e9)  # (bytes on disk, when measured)
        self.refused: collections.Counter[str] = collections.Counter()  # code -> count (tests, logs)
        for stale in node.blobs.root.glob(".upload-*.tmp"):  # uploads cut short by a crash
            stale.unlink(missing_ok=True)

    # --- admission -------------------------------------------------------------------------------------
    def referenced(self, h: bytes) -> bool:
        """Does a job on the active chain or a transaction in the mempool name blob `h`?"""
        for rec in self.node.chain.jobs().values():
            if h in (rec.blob_a, rec.blob_b, rec.blob_c):
                return True
        for e in self.node.mempool.entries.values():
            t = e.tx
            if t.kind == KIND_JOB_SUBMIT and h in (t.payload.blob_a, t.payload.blob_b):
                return True
            if t.kind == KIND_JOB_RESULT and h == t.payload.blob_c:
                return True
        return False

    def _on_chain(self, h: bytes) -> bool:
        return any(h in (r.blob_a, r.blob_b, r.blob_c) for r in self.node.chain.jobs().values())

    def voucher(self, raw_hex: str) -> Transaction:
        """The submit of X-Pouw-Job-Tx, checked: well formed and signed for this chain, a submit, its sender
        able to pay max fee + fee from its confirmed balance."""
        from node.server.apierror import ApiError

        cfg = self.node.cfg
        try:
            tx = decode_tx(bytes.fromhex(raw_hex.strip()), cfg.max_tx_bytes)
            check_tx(tx, cfg.chain_id, cfg.max_tx_bytes)
        except (ValueError, ValidationError) as e:
            raise ApiError(400, "bad-job-tx", f"X-Pouw-Job-Tx is not a valid transaction of this chain ({e})") from None
        if tx.kind != KIND_JOB_SUBMIT:
            raise ApiError(400, "bad-job-tx", "X-Pouw-Job-Tx must be a job submit")
        bal = self.node.chain.get_account(tx.sender).balance
        if bal < tx.payload.max_fee + tx.fee:
            raise ApiError(
                403,
                "blob-not-paid",
                f"the submit's sender has {bal}, less than its max fee + fee ({tx.payload.max_fee + tx.fee})",
            )
        return tx

    def charged(self, account: bytes) -> int:
        return sum(c.size for c in self.charges.values() if c.account == account)

    def expire(self) -> None:
        """Forget charges of blobs a chain job now references, and of expired uploads."""
        now = self.clock()
        on_chain: set[bytes] = set()
        for r in self.node.chain.jobs().values():
            on_chain.update((r.blob_a, r.blob_b, r.blob_c))
        for h in [h for h, c in self.charges.items() if h in on_chain or now - c.at > self.grace_s]:
            del self.charges[h]

    def usage(self) -> int:
        """Bytes of blobs on disk (measured at most every USAGE_TTL_S, plus what was stored since)."""
        size, at = self._usage
        if time.monotonic() - at > USAGE_TTL_S:
            total = 0
            root = self.node.blobs.root
            for d in os.scandir(root) if root.exists() else ():
                if d.is_dir():
                    for f in os.scandir(d.path):
                        try:
                            total += f.stat().st_size
                        except OSError:
                            pass
            self._usage = (total, time.monotonic())
            size = total
        return size

    # --- the upload ------------------------------------------------------------------------------------
    def _too_many(self, code: str, message: str):
        from node.server.apierror import ApiError

        self.refused[code] += 1
        err = ApiError(429, code, message)
        err.headers = {"Retry-After": str(RETRY_AFTER_S)}  # type: ignore[attr-defined]
        return err

    async def upload(self, request: web.Request) -> web.Response:
        from node.server.apierror import ApiError
        from node.blobs import ROLES, BlobError

        store = self.node.blobs
        cap = store.max_bytes
        expect = request.query.get("hash") or request.headers.get("X-Blob-Hash")
        want = None
        if expect:
            try:
                want = bytes.fromhex(expect.removeprefix("0x"))
            except ValueError:
                want = b""
            if len(want) != 32:
                raise ApiError(400, "bad-param", "hash must be 32 bytes of hex")
        role = request.query.get("role") or None
        if role is not None and role not in ROLES:
            raise ApiError(400, "bad-param", "role must be a (H_A, rows of A), b (H_B, columns of B) or c (H_C)")
        if request.content_length is not None and request.content_length > cap:
            self.refused["blob-too-large"] += 1
            raise ApiError(413, "blob-too-large", f"{request.content_length} bytes > {cap}")
        # who vouches for it
        raw_tx = request.headers.get("X-Pouw-Job-Tx")
        voucher = self.voucher(raw_tx) if raw_tx else None
        if voucher is not None:
            names = (voucher.payload.blob_a, voucher.payload.blob_b)
            if want is not None and want not in names:
                raise ApiError(403, "blob-not-referenced", "the blob's address is not the submit's blob_a or blob_b")
        elif want is None or not self.referenced(want):
            self.refused["blob-not-referenced"] += 1
            raise ApiError(
                403,
                "blob-not-referenced",
                "no job on the chain or in the mempool names this blob: upload with the hash the job "
                "names and X-Pouw-Job-Tx (the signed submit), or after the submit is in the mempool",
            )
        # quotas
        est = request.content_length if request.content_length is not None else cap
        self.expire()
        ip = str(request.remote or "")
        if self.uploading[ip] >= UPLOADS_PER_IP:
            raise self._too_many("too-many-uploads", f"at most {UPLOADS_PER_IP} uploads at once per client")
        if voucher is not None and (want is None or want not in self.charges):
            used = self.charged(voucher.sender)
            if used + est > self.account_quota:
                raise self._too_many(
                    "blob-quota-exceeded",
                    f"account {voucher.sender.hex()[:16]}… has {used} "
                    f"bytes of blobs no chain job references yet; quota {self.account_quota}",
                )
            pending = sum(c.size for c in self.charges.values())
            if pending + est > self.pending_max:
                raise self._too_many(
                    "blob-store-busy",
                    f"{pending} bytes of unreferenced blobs are waiting for their jobs (limit {self.pending_max})",
                )
        if self.usage() + est > self.store_max:
            raise self._too_many(
                "blob-store-full", f"the blob store holds {self.usage()} bytes (limit {self.store_max})"
            )
        # stream to disk, verify off the loop
        self.uploading[ip] += 1
        tmp = store.root / f".upload-{secrets.token_hex(8)}.tmp"
        try:
            n = 0
            with open(tmp, "wb") as f:
                async for chunk in request.content.iter_chunked(1 << 16):
                    n += len(chunk)
                    if n > cap:
                        self.refused["blob-too-large"] += 1
                        raise ApiError(413, "blob-too-large", f"more than {cap} bytes")
                    f.write(chunk)
            async with self.verify:
                try:
                    h = await asyncio.to_thread(store.put_file, tmp, want, role)
                except BlobError as e:
                    raise ApiError(413 if e.code == "blob-too-large" else 400, e.code, e.message) from None
            if voucher is not None:
                if h not in (voucher.payload.blob_a, voucher.payload.blob_b):
                    store.path(h).unlink(missing_ok=True)
                    raise ApiError(
                        403, "blob-not-referenced", "the blob's address is not the submit's blob_a or blob_b"
                    )
                if not self._on_chain(h):
                    self.charges[h] = Charge(voucher.sender, n, self.clock())
            self._usage = (self._usage[0] + n, self._usage[1])
            return web.json_response({"hash": h.hex(), "size": n}, status=201)
        finally:
            self.uploading[ip] -= 1
            if self.uploading[ip] <= 0:
                del self.uploading[ip]
            tmp.unlink(missing_ok=True)
