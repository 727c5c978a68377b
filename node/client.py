"""Python SDK for compute jobs (docs/jobs-client.md): submit an exact int8 product to a node, wait, verify.

    from node.client import Client
    c = Client("http://127.0.0.1:8545")
    res = c.submit_job("wallet.json", a, b)          # int8 numpy/torch, entries in [-64, 64]
    res.c, res.job_id, res.fee                         # exact A·B (int32), verified

What `submit_job` does:

1. checks the operands (int8, 2-D, contiguous, entries in [-64, 64], inner dims agree) -> `JobError`
   before anything is uploaded or paid;
2. zero-pads them to the protocol grid (pouw.padding, plus extra zero rows of A when the job is below the
   chain's min_job_macs) and checks the chain's job limits (shape, fraud proof fits a transaction);
3. uploads A, B as blobs, signs and posts the submit (max fee default: the going rate
   chain.jobs.job_price of the padded shape; deadline: `deadline_blocks` ahead);
4. with wait=True, polls the job; on a result downloads C, checks it against H_C (commit_result) and runs
   Freivalds (`rounds` random vectors); a wrong C -> finds a wrong entry, files the dispute itself and
   raises `JobFailed("wrong-result")` (the escrow and the miner's bond come back to the client); a
   refund at the deadline raises `JobFailed("refunded")`. Otherwise returns the cropped exact C.

Stdlib HTTP only (urllib); safe to call from a thread.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from node.blobs import BlobError, blob_hash, decode_array, encode_array


class ClientError(RuntimeError):
    """An error answer from the node (stable `code`, e.g. bad-job-deadline, blob-hash-mismatch)."""

    def __init__(self, code: str, message: str, status: int = 0):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class JobFailed(RuntimeError):
    """The job did not deliver a verified C: `reason` is wrong-result, refunded, slashed, unverifiable,
    no-result or timeout."""

    def __init__(self, job_id: str, reason: str, message: str, record: dict | None = None,
                 dispute_txid: str | None = None):
        super().__init__(f"job {job_id[:16]}…: {reason}: {message}")
        self.job_id = job_id
        self.reason = reason
        self.message = message
        self.record = record or {}
        self.dispute_txid = dispute_txid


@dataclass
class Submitted:
    """A posted job and what the client needs to verify its result."""

    job_id: str
    fee: int                   # the escrowed max fee
    tx_fee: int
    deadline: int
    shape: tuple[int, int, int]          # the client's (m, k, n)
    padded: tuple[int, int, int]         # the job's (m, k, n) on chain
    a: object = field(repr=False)        # padded torch int8
    b: object = field(repr=False)
    job: object = field(repr=False)      # pouw.job.JobCommitment
    blob_a: str = ""
    blob_b: str = ""


@dataclass
class JobResult:
    job_id: str
    c: np.ndarray              # exact A·B, int32, the client's shape
    fee: int
    status: str                # resulted or released
    h_c: str
    miner: str | None
    record: dict = field(repr=False, default_factory=dict)


def _load_key(wallet):
    from chain.keys import PrivateKey
    if isinstance(wallet, PrivateKey):
        return wallet
    from node.wallet import open_wallet
    return open_wallet(str(wallet))


class Client:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._cfg = None

    # --- HTTP ----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": ctype} if ctype else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)["error"]
                raise ClientError(err.get("code", "error"), err.get("message", ""), e.code) from None
            except (ValueError, KeyError, TypeError):
                raise ClientError(f"http-{e.code}", raw[:200].decode(errors="replace"), e.code) from None

    def call(self, method: str, path: str, doc: dict | None = None) -> dict:
        body = json.dumps(doc).encode() if doc is not None else None
        _, raw = self._request(method, path, body, "application/json" if body else None)
        return json.loads(raw)

    # --- chain ---------------------------------------------------------------------------------------
    @property
    def cfg(self):
        """The node's chain config (parsed from /api/v1/network)."""
        if self._cfg is None:
            from chain.config import parse_config
            self._cfg = parse_config(self.call("GET", "/api/v1/network")["config_toml"])
        return self._cfg

    def status(self) -> dict:
        return self.call("GET", "/api/v1/status")

    def height(self) -> int:
        return int(self.status()["height"])

    def account(self, address: bytes | str) -> dict:
        a = address.hex() if isinstance(address, bytes) else address
        return self.call("GET", f"/api/v1/accounts/{a}")

    def send_tx(self, tx) -> dict:
        return self.call("POST", "/api/v1/tx", {"tx": tx.encoded.hex()})

    # --- blobs ---------------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        """Upload blob bytes (the node checks size, format and our hash); returns the hex address."""
        h = blob_hash(data).hex()
        _, raw = self._request("POST", f"/api/v1/blobs?hash={h}", data, "application/octet-stream")
        got = json.loads(raw)["hash"]
        if got != h:
            raise ClientError("blob-hash-mismatch", f"node stored {got}, expected {h}")
        return h

    def get_blob(self, h: str | bytes) -> bytes:
        """Download a blob (the node asks its peers when it lacks it); verifies its hash."""
        hx = h.hex() if isinstance(h, bytes) else h
        _, data = self._request("GET", f"/api/v1/blobs/{hx}")
        if blob_hash(data).hex() != hx:
            raise ClientError("blob-hash-mismatch", f"blob {hx[:16]}… does not match its address")
        return data

    # --- jobs ----------------------------------------------------------------------------------------
    def job_status(self, job_id: str | bytes) -> dict:
        jid = job_id.hex() if isinstance(job_id, bytes) else job_id
        return self.call("GET", f"/api/v1/jobs/{jid}")

    def jobs(self, status: str = "open", limit: int = 100) -> list[dict]:
        return self.call("GET", f"/api/v1/jobs?status={status}&limit={limit}")["jobs"]

    def price(self, m: int, k: int, n: int) -> int:
        from chain.jobs import job_price
        return job_price(self.cfg, m, k, n)

    def prepare(self, a, b):
        """Check and pad operands for this chain. Returns (A_pad, B_pad, (m, k, n), JobCommitment).
        Raises pouw.errors.JobError with a clear message for bad operands or a job the chain refuses."""
        import torch
        from chain.errors import TxError
        from chain.jobs import check_job_shape
        from pouw.commit import commit_job
        from pouw.errors import JobError
        from pouw.padding import pad_operands
        cfg = self.cfg
        params = cfg.pow.params()
        ap, bp, shape = pad_operands(a, b, params)
        pm, pk, pn = ap.shape[0], ap.shape[1], bp.shape[1]
        r = params.rank
        pk2 = max(pk, -(-cfg.pow.min_k // r) * r)
        if pm * pk2 * pn < cfg.pow.min_job_macs:  # too small a job: add zero rows to A
            need = -(-cfg.pow.min_job_macs // (pk2 * pn))
            pm2 = -(-need // params.tile_h) * params.tile_h
        else:
            pm2 = pm
        if (pm2, pk2) != (pm, pk):
            a2 = torch.zeros(pm2, pk2, dtype=torch.int8)
            a2[:pm, :pk] = ap
            b2 = torch.zeros(pk2, pn, dtype=torch.int8)
            b2[:pk, :] = bp
            ap, bp = a2, b2
        try:
            check_job_shape(cfg, ap.shape[0], ap.shape[1], bp.shape[1])
        except TxError as e:
            raise JobError(f"job {shape[0]}x{shape[1]}x{shape[2]} (padded {tuple(ap.shape)}x{bp.shape[1]}) "
                           f"is not accepted by the chain: {e.reason} ({e.detail})") from None
        return ap, bp, shape, commit_job(ap, bp)

    def submit_job(self, wallet, a, b, max_fee: int | None = None, wait: bool = True, *,
                   deadline_blocks: int | None = None, tx_fee: int = 1000, timeout: float = 600.0,
                   rounds: int = 2, progress: Callable[[str], None] | None = None) -> JobResult | Submitted:
        """Submit A·B as a paid job; with wait=True return the verified JobResult (else the Submitted
        handle for `wait_job`). Raises JobError (bad operands: nothing uploaded or paid), ClientError
        (the node refused something) or JobFailed (no verified C; see the module docstring)."""
        from chain.tx import make_job_submit
        key = _load_key(wallet)
        ap, bp, shape, job = self.prepare(a, b)
        cfg = self.cfg
        fee = max_fee if max_fee is not None else self.price(job.m, job.k, job.n)
        if fee <= 0:
            raise ClientError("bad-job-fee", "max fee must be positive")
        acct = self.account(key.address)
        if acct["balance"] < fee + tx_fee:
            raise ClientError("bad-txn-balance", f"balance {acct['balance']} < max fee {fee} + tx fee {tx_fee}")
        blob_a = self.put_blob(encode_array(ap))
        blob_b = self.put_blob(encode_array(bp))
        acct = self.account(key.address)
        deadline = acct["height"] + min(cfg.jobs.max_deadline, deadline_blocks or 100)
        tx = make_job_submit(key, cfg.chain_id, acct["pending_nonce"], job, fee, deadline,
                             bytes.fromhex(blob_a), bytes.fromhex(blob_b), tx_fee)
        self.send_tx(tx)
        sub = Submitted(tx.txid.hex(), fee, tx_fee, deadline, shape, (job.m, job.k, job.n), ap, bp, job,
                        blob_a, blob_b)
        if progress:
            progress(f"submitted job {sub.job_id} ({shape[0]}x{shape[1]}x{shape[2]}, padded "
                     f"{job.m}x{job.k}x{job.n}), max fee {fee}, deadline height {deadline}")
        if not wait:
            return sub
        return self.wait_job(sub, key, timeout=timeout, rounds=rounds, progress=progress)

    def wait_job(self, sub: Submitted, wallet=None, *, timeout: float = 600.0, rounds: int = 2,
                 poll: float = 0.25, progress: Callable[[str], None] | None = None) -> JobResult:
        """Wait for `sub`'s result and verify it (dispute with `wallet` when wrong; without a wallet a wrong
        result only raises)."""
        key = _load_key(wallet) if wallet is not None else None
        end = time.monotonic() + timeout
        last = None
        while True:
            try:
                rec = self.job_status(sub.job_id)
            except ClientError as e:
                if e.code != "job-not-found":
                    raise
                rec = {"status": "unknown", "height": None}
            st = rec["status"]
            if progress and (st, rec.get("height")) != last:
                last = (st, rec.get("height"))
                extra = f" by {rec['miner'][:16]}…" if rec.get("miner") else ""
                progress(f"job {sub.job_id[:16]}… {st}{extra} at height {rec.get('height')}")
            if st in ("resulted", "released"):
                return self._check_result(sub, rec, key, rounds, progress, timeout=max(5.0, end - time.monotonic()))
            if st == "refunded":
                raise JobFailed(sub.job_id, "refunded", "no verified result before the deadline; "
                                f"escrow {rec['fee']} refunded to the client", rec)
            if st == "slashed":
                raise JobFailed(sub.job_id, "slashed", "the result was disproved; escrow and bond went to the client",
                                rec)
            if time.monotonic() > end:
                raise JobFailed(sub.job_id, "timeout", f"still {st} after {timeout:.0f} s", rec)
            time.sleep(poll)

    def _check_result(self, sub: Submitted, rec: dict, key, rounds: int, progress, timeout: float) -> JobResult:
        import torch
        from pouw.commit import commit_result
        from pouw.freivalds import freivalds
        m, k, n = sub.padded
        end = time.monotonic() + timeout
        while True:  # the blob may need a moment to reach this node
            try:
                data = self.get_blob(rec["blob_c"])
                c = decode_array(data, "int32", (m, n))
                break
            except (ClientError, BlobError) as e:
                cur = self.job_status(sub.job_id)
                if time.monotonic() > end or (cur["status"] == "released" and rec["status"] == "released"):
                    raise JobFailed(sub.job_id, "unverifiable", f"cannot fetch a valid C blob: {e}", cur) from None
                rec = cur if cur["status"] in ("resulted", "released") else rec
                time.sleep(0.25)
        ct = torch.from_numpy(c)
        h_c = bytes.fromhex(rec["h_c"])
        if commit_result(ct) != h_c:
            raise JobFailed(sub.job_id, "unverifiable", "the C blob does not match the posted H_C (cannot "
                            "build a fraud proof against it)", rec)
        bad = freivalds(sub.a, sub.b, ct, sub.job, h_c, rounds=rounds)
        if not bad:
            if progress:
                progress(f"job {sub.job_id[:16]}… result verified (H_C and Freivalds x{rounds})")
            return JobResult(sub.job_id, c[:sub.shape[0], :sub.shape[2]].copy(), rec["fee"], rec["status"],
                             rec["h_c"], rec.get("miner"), rec)
        if key is None or rec["status"] != "resulted":
            raise JobFailed(sub.job_id, "wrong-result", f"C fails Freivalds in rows {bad[:5]}; "
                            + ("no wallet to dispute with" if key is None else "challenge window closed"), rec)
        txid = self.dispute(key, sub.job_id, sub.a, sub.b, ct, rows=bad)
        if progress:
            progress(f"job {sub.job_id[:16]}… WRONG RESULT (rows {bad[:5]}); dispute {txid[:16]}… filed")
        while time.monotonic() < end:
            cur = self.job_status(sub.job_id)
            if cur["status"] != "resulted":
                break
            time.sleep(0.25)
        else:
            cur = rec
        raise JobFailed(sub.job_id, "wrong-result", f"the miner's C is wrong (Freivalds failed in rows {bad[:5]}); "
                        f"dispute filed, job {cur['status']}", cur, dispute_txid=txid)

    def dispute(self, wallet, job_id: str, a, b, c, rows: list[int] | None = None, tx_fee: int = 1000) -> str:
        """Find a wrong entry of C (padded operands, the miner's full C) and file the fraud proof."""
        import torch
        from chain.tx import make_job_dispute
        from pouw.freivalds import build_fraud_proof, find_wrong_entry
        key = _load_key(wallet)
        a, b, c = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x)) for x in (a, b, c))
        ij = find_wrong_entry(a, b, c, rows if rows is not None else list(range(c.shape[0])))
        if ij is None:
            raise ClientError("fraud-not-proven", "no wrong entry found in C")
        proof = build_fraud_proof(a, b, c, *ij)
        acct = self.account(key.address)
        tx = make_job_dispute(key, self.cfg.chain_id, acct["pending_nonce"], bytes.fromhex(job_id), proof, tx_fee)
        self.send_tx(tx)
        return tx.txid.hex()
