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

Also: `submit_jobs` (a batch in one call: every operand checked before anything is paid, consecutive
nonces, one upload per distinct blob), `wait_job` / `fetch_job` for a job id submitted earlier (A and B
are fetched from the node and checked against H_A / H_B), `jobs_of` (a wallet's jobs), `job_progress`
(status, queue position, estimate), `receipt` (submit / claim / result txids and heights), `quote` (the
going rate and the fees that recently cleared; the default max fee), `cancel_job`. Float operands:
`node.quant` (quantize to the chain's int8 range and de-quantize C).

Stdlib HTTP only (urllib); safe to call from a thread. Every failure is a `ClientError` (the node's
stable code, or `node-unreachable` naming the URL), a `pouw.errors.JobError` (bad operands, naming the
limit) or a `JobFailed`.
"""
from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from node.blobs import BlobError, blob_hash, blob_role, decode_array, encode_array
from pouw.errors import JobError


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
    receipt: dict | None = field(repr=False, default=None)   # submit/claim/result txids and heights
    latency_s: float | None = None      # submit (or wait) call to a verified C, seconds


def _load_key(wallet):
    """A chain.keys.PrivateKey as is, or open a wallet file (asks for its passphrase when encrypted)."""
    from chain.keys import PrivateKey
    if isinstance(wallet, PrivateKey):
        return wallet
    from chain.errors import KeyFileError
    from node.wallet import open_wallet
    try:
        return open_wallet(str(wallet))
    except (OSError, ValueError, KeyFileError, EOFError) as e:  # missing file, bad JSON, wrong passphrase
        raise ClientError("bad-wallet", f"cannot open wallet {wallet}: {e}") from None


class Client:
    def __init__(self, url: str, timeout: float = 30.0):
        if not url.startswith(("http://", "https://")):
            raise ClientError("bad-url", f"node URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._cfg = None

    # --- HTTP ----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
                 extra: dict | None = None) -> tuple[int, bytes]:
        headers = dict(extra or {})
        if ctype:
            headers["Content-Type"] = ctype
        token = os.environ.get("POUW_API_TOKEN")
        if token and method not in ("GET", "HEAD"):
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)["error"]
                raise ClientError(err.get("code", "error"), err.get("message", ""), e.code) from None
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ClientError(f"http-{e.code}", f"{self.url}{path}: " + raw[:200].decode(errors="replace"),
                                  e.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise ClientError("node-unreachable", f"cannot reach the node at {self.url}: {reason}") from None

    def call(self, method: str, path: str, doc: dict | None = None) -> dict:
        body = json.dumps(doc).encode() if doc is not None else None
        _, raw = self._request(method, path, body, "application/json" if body else None)
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError("bad-response", f"{self.url}{path} did not answer JSON (is it a pouw node?)") from None

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
    def put_blob(self, data: bytes, address: bytes | str | None = None, job_tx=None) -> str:
        """Upload blob bytes (the node checks size, format and that they commit to `address`, e.g. the
        job's H_A / H_B; default: H_C of an int32 blob); returns the hex address. A node stores only blobs
        a job names: `job_tx` is the signed submit that names this one (sent as X-Pouw-Job-Tx, node.blobgate)."""
        h = address.hex() if isinstance(address, bytes) else address or blob_hash(data).hex()
        extra = {"X-Pouw-Job-Tx": job_tx.encoded.hex()} if job_tx is not None else None
        _, raw = self._request("POST", f"/api/v1/blobs?hash={h}", data, "application/octet-stream", extra)
        got = json.loads(raw)["hash"]
        if got != h:
            raise ClientError("blob-hash-mismatch", f"node stored {got}, expected {h}")
        return h

    def get_blob(self, h: str | bytes) -> bytes:
        """Download a blob (the node asks its peers when it lacks it); verifies its hash."""
        hx = h.hex() if isinstance(h, bytes) else h
        _, data = self._request("GET", f"/api/v1/blobs/{hx}")
        if blob_role(data, bytes.fromhex(hx)) is None:
            raise ClientError("blob-hash-mismatch", f"blob {hx[:16]}… does not match its address")
        return data


    # --- jobs: reading -------------------------------------------------------------------------------
    def job_status(self, job_id: str | bytes) -> dict:
        jid = job_id.hex() if isinstance(job_id, bytes) else job_id
        return self.call("GET", f"/api/v1/jobs/{_hexid(jid)}")

    def jobs(self, status: str = "open", limit: int = 100) -> list[dict]:
        return self.call("GET", f"/api/v1/jobs?status={status}&limit={limit}")["jobs"]

    def jobs_of(self, address: bytes | str, status: str = "all", limit: int = 100) -> list[dict]:
        """A wallet's jobs, newest first: pending submits, then on-chain records (`status` filters)."""
        a = address.hex() if isinstance(address, bytes) else address
        return self.call("GET", f"/api/v1/accounts/{a}/jobs?status={status}&limit={limit}")["jobs"]

    def job_progress(self, job_id: str) -> dict:
        """Status, queue position (1 = next to be claimed), estimate_blocks / estimate_s until C is posted."""
        return self.call("GET", f"/api/v1/jobs/{_hexid(job_id)}/progress")

    def receipt(self, job_id: str) -> dict:
        """The job's submit, claim, result (and dispute / cancel) transactions: txid, height, sender, fee."""
        return self.call("GET", f"/api/v1/jobs/{_hexid(job_id)}/receipt")

    def price(self, m: int, k: int, n: int) -> int:
        """The chain's going rate for an m×k×n job as it goes on chain (computed locally)."""
        from chain.jobs import job_price
        return job_price(self.cfg, m, k, n)

    def quote(self, m: int, k: int, n: int) -> dict:
        """The node's price view of an on-chain (padded) shape: going_rate, recent (fees that cleared:
        min / median / max scaled to this shape), queue, suggested_max_fee. A node without the view
        answers with the going rate only."""
        try:
            return self.call("GET", f"/api/v1/jobs/price?m={m}&k={k}&n={n}")
        except ClientError as e:
            if e.code not in ("not-found", "bad-param"):
                raise
        going = self.price(m, k, n)
        return {"m": m, "k": k, "n": n, "macs": m * k * n, "going_rate": going, "recent": None, "queue": None,
                "suggested_max_fee": going}

    # --- jobs: shapes --------------------------------------------------------------------------------
    def job_shape(self, m: int, k: int, n: int) -> tuple[int, int, int]:
        """The on-chain shape of a client's m×k×n product: zero-padded to the protocol grid (pouw.padding),
        k at least min_k, extra zero rows of A while below min_job_macs. Raises JobError naming the limit
        when the chain cannot take it (max_dim, or a fraud proof that would not fit max_tx_bytes)."""
        from chain.errors import TxError
        from chain.jobs import check_job_shape, dispute_size_bound
        from pouw.padding import padded_shape
        if min(m, k, n) <= 0:
            raise JobError(f"job {m}x{k}x{n}: every dimension must be positive")
        cfg = self.cfg
        p = cfg.pow
        params = p.params()
        for name, v in (("m", m), ("k", k), ("n", n)):
            if v > p.max_dim:
                raise JobError(f"job {m}x{k}x{n}: {name} = {v} exceeds the chain's max_dim {p.max_dim} "
                               f"(network {cfg.name}); split the product into blocks of at most {p.max_dim}")
        pm, pk, pn = padded_shape(m, k, n, params)
        r = params.rank
        pk = max(pk, -(-p.min_k // r) * r)
        if pm * pk * pn < p.min_job_macs:
            need = -(-p.min_job_macs // (pk * pn))
            pm = -(-need // params.tile_h) * params.tile_h
        for name, v, orig in (("m", pm, m), ("k", pk, k), ("n", pn, n)):
            if v > p.max_dim:
                raise JobError(f"job {m}x{k}x{n}: {name} = {orig} pads to {v}, beyond the chain's max_dim "
                               f"{p.max_dim} (network {cfg.name})")
        need = dispute_size_bound(pm, pk, pn)
        if need > cfg.max_tx_bytes:
            raise JobError(f"job {m}x{k}x{n} (padded {pm}x{pk}x{pn}): a fraud proof against it needs up to "
                           f"{need} bytes, beyond the chain's max_tx_bytes {cfg.max_tx_bytes} (2k + 4n bytes plus "
                           "Merkle paths); use smaller k or n")
        try:
            check_job_shape(cfg, pm, pk, pn)
        except TxError as e:
            raise JobError(f"job {m}x{k}x{n} (padded {pm}x{pk}x{pn}) is not accepted by the chain: {e.reason} "
                           f"({e.detail})") from None
        return pm, pk, pn

    def prepare(self, a, b):
        """Check and pad operands for this chain. Returns (A_pad, B_pad, (m, k, n), JobCommitment).
        Raises pouw.errors.JobError with a clear message for bad operands or a job the chain refuses."""
        import torch
        from pouw.commit import commit_job
        from pouw.job import check_operands
        ta, tb = check_operands(a, b)
        m, k = ta.shape
        n = tb.shape[1]
        pm, pk, pn = self.job_shape(m, k, n)
        ap = torch.zeros(pm, pk, dtype=torch.int8)
        ap[:m, :k] = ta
        bp = torch.zeros(pk, pn, dtype=torch.int8)
        bp[:k, :n] = tb
        return ap, bp, (m, k, n), commit_job(ap, bp)

    # --- jobs: submitting ----------------------------------------------------------------------------
    def submit_job(self, wallet, a, b, max_fee: int | None = None, wait: bool = True, *,
                   deadline_blocks: int | None = None, tx_fee: int = 1000, timeout: float = 600.0,
                   rounds: int = 2, progress: Callable[[str], None] | None = None) -> JobResult | Submitted:
        """Submit A·B as a paid job; with wait=True return the verified JobResult (else the Submitted
        handle for `wait_job`). max_fee None: the node's suggested fee (`quote`). Raises JobError (bad
        operands: nothing uploaded or paid), ClientError (the node refused something) or JobFailed (no
        verified C; see the module docstring)."""
        out = self.submit_jobs(wallet, [(a, b)], max_fee, wait, deadline_blocks=deadline_blocks, tx_fee=tx_fee,
                               timeout=timeout, rounds=rounds, progress=progress)[0]
        if isinstance(out, JobFailed):
            raise out
        return out

    def submit_jobs(self, wallet, pairs, max_fee: int | list[int] | None = None, wait: bool = True, *,
                    deadline_blocks: int | None = None, tx_fee: int = 1000, timeout: float = 600.0,
                    rounds: int = 2, progress: Callable[[str], None] | None = None) -> list:
        """Submit several products in one call (e.g. a model's layers, or micro-batches against one B).

        All operands are checked and the whole cost (Σ max fees + tx fees) is checked against the balance
        before anything is uploaded or paid; each distinct blob is uploaded once; the submits use
        consecutive nonces. Returns, in order, a Submitted per job (wait=False) or a JobResult / JobFailed
        per job (wait=True: a failed job does not hide the others' results). If the node refuses a submit
        midway, ClientError is raised with `.submitted` (the jobs already posted)."""
        from chain.tx import make_job_submit
        key = _load_key(wallet)
        pairs = list(pairs)
        if not pairs:
            raise JobError("no jobs to submit")
        preps = []
        for i, (a, b) in enumerate(pairs):
            try:
                preps.append(self.prepare(a, b))
            except JobError as e:
                raise JobError(f"job {i}: {e}" if len(pairs) > 1 else str(e)) from None
        cfg = self.cfg
        if isinstance(max_fee, list):
            if len(max_fee) != len(pairs):
                raise JobError(f"{len(max_fee)} max fees for {len(pairs)} jobs")
            fees = list(max_fee)
        else:
            fees = [max_fee if max_fee is not None else int(self.quote(p[3].m, p[3].k, p[3].n)["suggested_max_fee"])
                    for p in preps]
        if any(f <= 0 for f in fees):
            raise ClientError("bad-job-fee", "max fee must be positive")
        acct = self.account(key.address)
        need = sum(fees) + tx_fee * len(pairs)
        if acct["balance"] < need:
            raise ClientError("bad-txn-balance", f"balance {acct['balance']} of {key.address.hex()} < max fees "
                              f"{sum(fees)} + tx fees {tx_fee * len(pairs)} (at {self.url})")
        acct = self.account(key.address)
        deadline = acct["height"] + min(cfg.jobs.max_deadline, deadline_blocks or 100)
        nonce = acct["pending_nonce"]
        # the submits are signed first: each upload carries the submit that names it (node.blobgate)
        txs = [make_job_submit(key, cfg.chain_id, nonce + i, job, fee, deadline, job.h_a, job.h_b, tx_fee)
               for i, ((_, _, _, job), fee) in enumerate(zip(preps, fees))]
        sent: set[str] = set()
        blobs = []
        for (ap, bp, _, job), tx in zip(preps, txs):
            hs = []
            for t, addr in ((ap, job.h_a), (bp, job.h_b)):   # an operand's address is its commitment
                h = addr.hex()
                if h not in sent:
                    self.put_blob(encode_array(t), addr, job_tx=tx)
                    sent.add(h)
                hs.append(h)
            blobs.append(hs)
        subs: list[Submitted] = []
        t0 = time.monotonic()
        for i, ((ap, bp, shape, job), fee, (ha, hb), tx) in enumerate(zip(preps, fees, blobs, txs)):
            try:
                self.send_tx(tx)
            except ClientError as e:
                e.submitted = subs  # type: ignore[attr-defined]
                if subs:
                    e.message += f" (job {i}; jobs {', '.join(s.job_id for s in subs)} were submitted)"
                    e.args = (f"{e.code}: {e.message}",)
                raise
            sub = Submitted(tx.txid.hex(), fee, tx_fee, deadline, shape, (job.m, job.k, job.n), ap, bp, job, ha, hb)
            sub.started = t0  # type: ignore[attr-defined]
            subs.append(sub)
            if progress:
                progress(f"submitted job {sub.job_id} ({shape[0]}x{shape[1]}x{shape[2]}, padded "
                         f"{job.m}x{job.k}x{job.n}), max fee {fee}, deadline height {deadline}")
        if not wait:
            return subs
        return self.wait_jobs(subs, key, timeout=timeout, rounds=rounds, progress=progress)

    def cancel_job(self, wallet, job_id: str, tx_fee: int = 1000) -> str:
        """Cancel an open (unclaimed) job of this wallet: the escrow returns to it when the cancel is mined
        (docs/jobs.md). Checks the job first; returns the cancel txid."""
        key = _load_key(wallet)
        rec = self.job_status(job_id)
        if rec.get("client") not in (None, key.address.hex()):
            raise ClientError("bad-job-not-client", f"job {job_id[:16]}… belongs to {rec['client']}, "
                              f"not to this wallet ({key.address.hex()})")
        if rec["status"] not in ("open", "pending"):
            raise ClientError("bad-job-state", f"job {job_id[:16]}… is {rec['status']}: only an open job "
                              "(not claimed) can be cancelled")
        from chain.tx import make_job_cancel
        acct = self.account(key.address)
        tx = make_job_cancel(key, self.cfg.chain_id, acct["pending_nonce"], bytes.fromhex(job_id), tx_fee)
        self.send_tx(tx)
        return tx.txid.hex()

    # --- jobs: waiting and verifying -----------------------------------------------------------------
    def handle(self, job_id: str, shape: tuple[int, ...] | None = None) -> Submitted:
        """Rebuild a Submitted handle for a job on the chain (submitted earlier, maybe elsewhere): fetch A
        and B from the node and check them against H_A, H_B. `shape` (m, n) or (m, k, n) crops C to the
        client's shape; without it C keeps the on-chain (padded) shape."""
        from pouw.commit import commit_job
        jid = _hexid(job_id)
        rec = self.job_status(jid)
        if rec["status"] == "pending" or "blob_a" not in rec:
            raise JobFailed(jid, "no-result", "the job is not on the chain yet (pending)", rec)
        m, k, n = rec["m"], rec["k"], rec["n"]
        try:
            ap = decode_array(self.get_blob(rec["blob_a"]), "int8", (m, k))
            bp = decode_array(self.get_blob(rec["blob_b"]), "int8", (k, n))
        except (ClientError, BlobError) as e:
            raise JobFailed(jid, "unverifiable", f"cannot fetch the operands A, B from {self.url}: {e}", rec) from None
        import torch
        ta, tb = torch.from_numpy(ap.copy()), torch.from_numpy(bp.copy())
        job = commit_job(ta, tb)
        if (job.h_a.hex(), job.h_b.hex()) != (rec["h_a"], rec["h_b"]):
            raise JobFailed(jid, "unverifiable", "the operand blobs do not match the job's H_A / H_B", rec)
        if shape is None:
            cs = (m, k, n)
        else:
            cs = (shape[0], k, shape[-1]) if len(shape) in (2, 3) else (m, k, n)
            if not (0 < cs[0] <= m and 0 < cs[2] <= n):
                raise JobError(f"shape {tuple(shape)} does not fit the job's C ({m}x{n})")
        return Submitted(jid, rec["fee"], 0, rec["deadline"], cs, (m, k, n), ta, tb, job, rec["blob_a"], rec["blob_b"])

    def fetch_job(self, job_id: str, wallet=None, *, shape: tuple[int, ...] | None = None, rounds: int = 2,
                  timeout: float = 60.0, progress: Callable[[str], None] | None = None) -> JobResult:
        """Download and verify the C of a job that has a result now (H_C and Freivalds; a wrong C is
        disputed with `wallet` while the window is open). Raises JobFailed("no-result") otherwise."""
        jid = _hexid(job_id)
        rec = self.job_status(jid)
        if rec["status"] not in ("resulted", "released"):
            raise JobFailed(jid, _failure_reason(rec["status"]), f"job is {rec['status']}: no result to fetch", rec)
        sub = self.handle(jid, shape)
        key = _load_key(wallet) if wallet is not None else None
        return self._check_result(sub, rec, key, rounds, progress, timeout=timeout, t0=time.monotonic())

    def wait_job(self, sub: "Submitted | str", wallet=None, *, timeout: float = 600.0, rounds: int = 2,
                 poll: float = 0.25, shape: tuple[int, ...] | None = None,
                 progress: Callable[[str], None] | None = None) -> JobResult:
        """Wait for a job's result and verify it (dispute with `wallet` when wrong; without a wallet a wrong
        result only raises). `sub` is a Submitted handle or a job id (then A, B come from the node, and
        `shape` crops C as in `handle`)."""
        out = self.wait_jobs([sub], wallet, timeout=timeout, rounds=rounds, poll=poll, shape=shape,
                             progress=progress)[0]
        if isinstance(out, JobFailed):
            raise out
        return out

    def wait_jobs(self, subs: list, wallet=None, *, timeout: float = 600.0, rounds: int = 2, poll: float = 0.25,
                  shape: tuple[int, ...] | None = None,
                  progress: Callable[[str], None] | None = None) -> list:
        """Wait for several jobs at once; returns a JobResult or a JobFailed per job, in order."""
        key = _load_key(wallet) if wallet is not None else None
        end = time.monotonic() + timeout
        t0 = time.monotonic()
        out: list = [None] * len(subs)
        last: dict[int, tuple] = {}
        while True:
            todo = [i for i, o in enumerate(out) if o is None]
            if not todo:
                return out
            for i in todo:
                s = subs[i]
                jid = s.job_id if isinstance(s, Submitted) else _hexid(s)
                try:
                    rec = self.job_status(jid)
                except ClientError as e:
                    if e.code != "job-not-found":
                        raise
                    rec = {"status": "unknown", "height": None}
                st = rec["status"]
                if progress and (st, rec.get("height")) != last.get(i):
                    last[i] = (st, rec.get("height"))
                    progress(self._progress_line(jid, rec))
                if st in ("resulted", "released"):
                    try:
                        sub = s if isinstance(s, Submitted) else self.handle(jid, shape)
                        started = getattr(sub, "started", t0)
                        out[i] = self._check_result(sub, rec, key, rounds, progress,
                                                    timeout=max(5.0, end - time.monotonic()), t0=started)
                    except JobFailed as e:
                        out[i] = e
                elif st in _FAILED:
                    out[i] = JobFailed(jid, _failure_reason(st), _FAILED[st].format(fee=rec.get("fee")), rec)
                elif time.monotonic() > end:
                    out[i] = JobFailed(jid, "timeout", f"still {st} after {timeout:.0f} s", rec)
            if any(o is None for o in out):
                time.sleep(poll)

    def _progress_line(self, jid: str, rec: dict) -> str:
        st = rec["status"]
        line = f"job {jid[:16]}… {st}"
        if rec.get("miner") and st in ("claimed", "resulted", "released"):
            line += f" by {rec['miner'][:16]}…"
        line += f" at height {rec.get('height')}"
        if st in ("pending", "open", "claimed"):
            try:
                p = self.job_progress(jid)
            except ClientError:
                return line
            if p.get("queue_position"):
                line += f", queue position {p['queue_position']} of {p['queue_length']}"
            line += f", estimate ~{p['estimate_blocks']} blocks (~{p['estimate_s']:.0f} s)"
        return line

    def _check_result(self, sub: Submitted, rec: dict, key, rounds: int, progress, timeout: float,
                      t0: float | None = None) -> JobResult:
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
                    raise JobFailed(sub.job_id, "unverifiable", f"cannot fetch a valid C blob from {self.url}: {e}",
                                    cur) from None
                rec = cur if cur["status"] in ("resulted", "released") else rec
                time.sleep(0.25)
        ct = torch.from_numpy(c)
        h_c = bytes.fromhex(rec["h_c"])
        if commit_result(ct) != h_c:
            raise JobFailed(sub.job_id, "unverifiable", "the C blob does not match the posted H_C (cannot "
                            "build a fraud proof against it)", rec)
        bad = freivalds(sub.a, sub.b, ct, sub.job, h_c, rounds=rounds)
        if not bad:
            lat = time.monotonic() - t0 if t0 is not None else None
            if progress:
                progress(f"job {sub.job_id[:16]}… result verified (H_C and Freivalds x{rounds})"
                         + (f" {lat:.2f} s after submit" if lat is not None else ""))
            try:
                rcpt = self.receipt(sub.job_id)
            except ClientError:
                rcpt = None
            return JobResult(sub.job_id, c[:sub.shape[0], :sub.shape[2]].copy(), rec["fee"], rec["status"],
                             rec["h_c"], rec.get("miner"), rec, rcpt, lat)
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

    def challenge_job(self, wallet, job_id: str, tx_fee: int = 1000) -> str:
        """Data availability (docs/jobs.md): ask the miner of a resulted job of this wallet to open rows of C
        on chain (sampled from the hash of the block that includes the challenge). Unanswered within the
        answer window, the miner is slashed and the escrow and bond come back; the answer's rows
        (`job_status(...)["answer_height"]`, tx kind 8) can be checked and disputed. Returns the txid."""
        from chain.tx import make_job_challenge
        key = _load_key(wallet)
        acct = self.account(key.address)
        tx = make_job_challenge(key, self.cfg.chain_id, acct["pending_nonce"], bytes.fromhex(job_id), tx_fee)
        self.send_tx(tx)
        return tx.txid.hex()

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


# terminal statuses without a result: the message for JobFailed
_FAILED = {
    "refunded": "no verified result before the deadline; escrow {fee} refunded to the client",
    "slashed": "the result was disproved; escrow and bond went to the client",
    "cancelled": "the client cancelled the job before a claim; escrow {fee} refunded",
}


def _failure_reason(status: str) -> str:
    return status if status in _FAILED else "no-result"


def _hexid(job_id: str | bytes) -> str:
    """A job id as 64 lowercase hex digits (ClientError bad-job-id otherwise)."""
    s = job_id.hex() if isinstance(job_id, bytes) else str(job_id).strip().lower().removeprefix("0x")
    if len(s) != 64 or any(ch not in "0123456789abcdef" for ch in s):
        raise ClientError("bad-job-id", f"job id {str(job_id)[:80]!r} is not 64 hex digits")
    return s
