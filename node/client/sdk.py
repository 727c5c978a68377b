"""Python SDK for compute jobs (docs/jobs-client.md): submit an exact int8 product to a node, wait, verify.

    from node.client.sdk import Client
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
4. with wait=True, long-polls the job; on a result, pending (waiting in the node's mempool, which holds
   its C) or mined, downloads C, checks it against H_C and runs Freivalds (`rounds` vectors) and returns
   the cropped exact C at once, before the result is mined when it can (`JobResult.confirmed` False; a
   background thread then follows the chain, and disputes or challenges a different result mined;
   `res.confirm()` / `res.settle()` wait for the result / the settlement). A wrong on-chain C -> finds a
   wrong entry, files the dispute itself and raises `JobFailed("wrong-result")` (the escrow and the
   miner's bond come back to the client); an on-chain C nobody serves -> a data-availability challenge
   after `grace_s`, then the answer is checked (a wrong row disputed) or the unanswered miner slashed
   (`JobFailed("slashed")`); a refund at the deadline raises `JobFailed("refunded")`.

Also: `submit_jobs` (a batch in one call: every operand checked before anything is paid, consecutive
nonces, one upload per distinct blob), `wait_job` / `fetch_job` for a job id submitted earlier (A and B
are fetched from the node and checked against H_A / H_B), `jobs_of` (a wallet's jobs), `job_progress`
(status, queue position, estimate), `receipt` (submit / claim / result txids and heights), `quote` (the
going rate and the fees that recently cleared; the default max fee), `cancel_job`. Float operands:
`node.client.quant` (quantize to the chain's int8 range and de-quantize C).

Stdlib HTTP only (urllib); safe to call from a thread. Every failure is a `ClientError` (the node's
stable code, or `node-unreachable` naming the URL), a `pouw.errors.JobError` (bad operands, naming the
limit) or a `JobFailed`.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from node.blobs import BlobError, blob_hash, blob_role, decode_array, encode_array
from pouw.errors import JobError

if TYPE_CHECKING:
    from pouw.job import JobCommitment

POLL_MIN_S = 0.02  # first sleep between polls of a node without long-poll; grows by half each time
POLL_MAX_S = 0.5  # longest sleep between polls (wait_job's `poll`)
LONG_POLL_S = 10  # seconds a long-poll (GET /jobs/{id}?wait=) may be held by the node
GRACE_S = 5.0  # an on-chain result's C unavailable this long: challenge it (data availability)
WATCH_S = 3600.0  # longest a background watcher follows a job handed over before its result was mined


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

    def __init__(
        self,
        job_id: str,
        reason: str,
        message: str,
        record: dict | None = None,
        dispute_txid: str | None = None,
        challenge_txid: str | None = None,
    ):
        super().__init__(f"job {job_id[:16]}…: {reason}: {message}")
        self.job_id = job_id
        self.reason = reason
        self.message = message
        self.record = record or {}
        self.dispute_txid = dispute_txid
        self.challenge_txid = challenge_txid


@dataclass
class Submitted:
    """A posted job and what the client needs to verify its result."""

    job_id: str
    fee: int  # the escrowed max fee
    tx_fee: int
    deadline: int
    shape: tuple[int, int, int]  # the client's (m, k, n)
    padded: tuple[int, int, int]  # the job's (m, k, n) on chain
    a: object = field(repr=False)  # padded torch int8
    b: object = field(repr=False)
    job: JobCommitment = field(repr=False)
    blob_a: str = ""
    blob_b: str = ""


@dataclass
class JobResult:
    """A verified C. `confirmed` False: C came from a pending result (checked against its H_C and by
    Freivalds) before the result was mined; a background thread follows the job (`confirm`, `settle`)."""

    job_id: str
    c: np.ndarray  # exact A·B, int32, the client's shape
    fee: int
    status: str  # the job's status when C was verified: pending/open/claimed, resulted, released
    h_c: str
    miner: str | None
    record: dict = field(repr=False, default_factory=dict)
    receipt: dict | None = field(repr=False, default=None)  # submit/claim/result txids and heights (None until
    latency_s: float | None = None  # submit (or wait) call to a verified C, seconds       the result is mined)
    confirmed: bool = True  # the chain holds the result with this H_C
    height: int | None = None  # the node's chain height when C was verified
    _client: "Client | None" = field(default=None, repr=False, compare=False)
    _watch: "_Watcher | None" = field(default=None, repr=False, compare=False)
    _settlement: "Settlement | None" = field(default=None, repr=False, compare=False)

    def confirm(self, timeout: float = 600.0) -> "Settlement":
        """Wait until the chain holds this job's result (or the job ended otherwise) and say how
        (Settlement: outcome confirmed, disputed, slashed, refunded, ...). Updates `receipt`, `status`,
        `confirmed`. Returns at once for a result that was on chain when C was verified."""
        if self._watch is None:
            s = self._settlement or Settlement(
                "released" if self.status == "released" else "confirmed",
                self.status,
                "the result was on chain when C was verified",
                receipt=self.receipt,
            )
        else:
            with self._watch.cond:
                self._watch.cond.wait_for(lambda: self._settlement is not None, timeout)
                got = self._settlement
            if got is None:
                return Settlement("timeout", self.status, f"the result was not mined within {timeout:.0f} s")
            s = got
        self._settlement = s
        self.status = s.status
        self.confirmed = s.outcome in ("confirmed", "released")
        if s.receipt is not None:
            self.receipt = s.receipt
        return s

    def settle(self, timeout: float = 600.0) -> "Settlement":
        """`confirm`, then wait until the job settles on chain (the challenge window closes: released,
        the miner paid). Returns the Settlement with the receipt's `settled` entry."""
        end = time.monotonic() + timeout
        s = self.confirm(timeout)
        if s.outcome != "confirmed" or self._client is None:
            return s
        cl = self._client
        backoff = _Backoff(POLL_MAX_S)
        while True:
            rec = cl.job_status(self.job_id)
            if rec["status"] not in ("resulted", "challenged"):
                break
            if time.monotonic() > end:
                return Settlement(
                    "timeout",
                    rec["status"],
                    f"not settled within {timeout:.0f} s (settles at height {rec.get('challenge_until')})",
                    receipt=self.receipt,
                )
            cl._pause(self.job_id, rec, backoff, end)
        try:
            self.receipt = cl.receipt(self.job_id)
        except ClientError:
            pass
        self.status = rec["status"]
        out = "released" if rec["status"] == "released" else rec["status"]
        s = Settlement(out, rec["status"], f"settled at height {rec.get('closed_height')}", receipt=self.receipt)
        self._settlement = s
        return s


def _load_key(wallet):
    """A chain.keys.PrivateKey as is, or open a wallet file (asks for its passphrase when encrypted)."""
    from chain.keys import PrivateKey

    if isinstance(wallet, PrivateKey):
        return wallet
    from chain.errors import KeyFileError
    from node.client.wallet import open_wallet

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
    def _request(
        self, method: str, path: str, body: bytes | None = None, ctype: str | None = None, extra: dict | None = None
    ) -> tuple[int, bytes]:
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
                raise ClientError(
                    f"http-{e.code}", f"{self.url}{path}: " + raw[:200].decode(errors="replace"), e.code
                ) from None
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
        a job names: `job_tx` is the signed submit that names this one (sent as X-Pouw-Job-Tx, node.server.blobgate)."""
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
        return {
            "m": m,
            "k": k,
            "n": n,
            "macs": m * k * n,
            "going_rate": going,
            "recent": None,
            "queue": None,
            "suggested_max_fee": going,
        }

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
                raise JobError(
                    f"job {m}x{k}x{n}: {name} = {v} exceeds the chain's max_dim {p.max_dim} "
                    f"(network {cfg.name}); split the product into blocks of at most {p.max_dim}"
                )
        pm, pk, pn = padded_shape(m, k, n, params)
        r = params.rank
        pk = max(pk, -(-p.min_k // r) * r)
        if pm * pk * pn < p.min_job_macs:
            need = -(-p.min_job_macs // (pk * pn))
            pm = -(-need // params.tile_h) * params.tile_h
        for name, v, orig in (("m", pm, m), ("k", pk, k), ("n", pn, n)):
            if v > p.max_dim:
                raise JobError(
                    f"job {m}x{k}x{n}: {name} = {orig} pads to {v}, beyond the chain's max_dim "
                    f"{p.max_dim} (network {cfg.name})"
                )
        need = dispute_size_bound(pm, pk, pn)
        if need > cfg.max_tx_bytes:
            raise JobError(
                f"job {m}x{k}x{n} (padded {pm}x{pk}x{pn}): a fraud proof against it needs up to "
                f"{need} bytes, beyond the chain's max_tx_bytes {cfg.max_tx_bytes} (2k + 4n bytes plus "
                "Merkle paths); use smaller k or n"
            )
        try:
            check_job_shape(cfg, pm, pk, pn)
        except TxError as e:
            raise JobError(
                f"job {m}x{k}x{n} (padded {pm}x{pk}x{pn}) is not accepted by the chain: {e.reason} ({e.detail})"
            ) from None
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
    def submit_job(
        self,
        wallet,
        a,
        b,
        max_fee: int | None = None,
        wait: bool = True,
        *,
        deadline_blocks: int | None = None,
        tx_fee: int = 1000,
        timeout: float = 600.0,
        rounds: int = 2,
        progress: Callable[[str], None] | None = None,
    ) -> JobResult | Submitted:
        """Submit A·B as a paid job; with wait=True return the verified JobResult (else the Submitted
        handle for `wait_job`). max_fee None: the node's suggested fee (`quote`). Raises JobError (bad
        operands: nothing uploaded or paid), ClientError (the node refused something) or JobFailed (no
        verified C; see the module docstring)."""
        out = self.submit_jobs(
            wallet,
            [(a, b)],
            max_fee,
            wait,
            deadline_blocks=deadline_blocks,
            tx_fee=tx_fee,
            timeout=timeout,
            rounds=rounds,
            progress=progress,
        )[0]
        if isinstance(out, JobFailed):
            raise out
        return out

    def submit_jobs(
        self,
        wallet,
        pairs,
        max_fee: int | list[int] | None = None,
        wait: bool = True,
        *,
        deadline_blocks: int | None = None,
        tx_fee: int = 1000,
        timeout: float = 600.0,
        rounds: int = 2,
        progress: Callable[[str], None] | None = None,
    ) -> list:
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
            fees = [
                max_fee if max_fee is not None else int(self.quote(p[3].m, p[3].k, p[3].n)["suggested_max_fee"])
                for p in preps
            ]
        if any(f <= 0 for f in fees):
            raise ClientError("bad-job-fee", "max fee must be positive")
        acct = self.account(key.address)
        need = sum(fees) + tx_fee * len(pairs)
        if acct["balance"] < need:
            raise ClientError(
                "bad-txn-balance",
                f"balance {acct['balance']} of {key.address.hex()} < max fees "
                f"{sum(fees)} + tx fees {tx_fee * len(pairs)} (at {self.url})",
            )
        deadline = acct["height"] + min(cfg.jobs.max_deadline, deadline_blocks or 100)
        nonce = acct["pending_nonce"]
        # the submits are signed first: each upload carries the submit that names it (node.server.blobgate)
        txs = [
            make_job_submit(key, cfg.chain_id, nonce + i, job, fee, deadline, job.h_a, job.h_b, tx_fee)
            for i, ((_, _, _, job), fee) in enumerate(zip(preps, fees))
        ]
        sent: set[str] = set()
        blobs = []
        for (ap, bp, _, job), tx in zip(preps, txs):
            hs = []
            for t, addr in ((ap, job.h_a), (bp, job.h_b)):  # an operand's address is its commitment
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
                progress(
                    f"submitted job {sub.job_id} ({shape[0]}x{shape[1]}x{shape[2]}, padded "
                    f"{job.m}x{job.k}x{job.n}), max fee {fee}, deadline height {deadline}"
                )
        if not wait:
            return subs
        return self.wait_jobs(subs, key, timeout=timeout, rounds=rounds, progress=progress)

    def cancel_job(self, wallet, job_id: str, tx_fee: int = 1000) -> str:
        """Cancel an open (unclaimed) job of this wallet: the escrow returns to it when the cancel is mined
        (docs/jobs.md). Checks the job first; returns the cancel txid."""
        key = _load_key(wallet)
        rec = self.job_status(job_id)
        if rec.get("client") not in (None, key.address.hex()):
            raise ClientError(
                "bad-job-not-client",
                f"job {job_id[:16]}… belongs to {rec['client']}, not to this wallet ({key.address.hex()})",
            )
        if rec["status"] not in ("open", "pending"):
            raise ClientError(
                "bad-job-state",
                f"job {job_id[:16]}… is {rec['status']}: only an open job (not claimed) can be cancelled",
            )
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

    def fetch_job(
        self,
        job_id: str,
        wallet=None,
        *,
        shape: tuple[int, ...] | None = None,
        rounds: int = 2,
        timeout: float = 60.0,
        grace_s: float = GRACE_S,
        progress: Callable[[str], None] | None = None,
    ) -> JobResult:
        """Download and verify the C of a job that has a result now: on chain, or pending (a result waiting
        in the node's mempool, whose C the node holds; the JobResult is then unconfirmed and watched, see
        `wait_job`). H_C and Freivalds; a wrong on-chain C is disputed with `wallet` while the window is
        open. Raises JobFailed("no-result") when there is no result."""
        jid = _hexid(job_id)
        rec = self.job_status(jid)
        key = _load_key(wallet) if wallet is not None else None
        pr = rec.get("pending_result")
        if rec["status"] in ("open", "claimed") and pr:
            sub = self.handle(jid, shape)
            res = self._try_pending(sub, rec, pr, rounds, progress, time.monotonic())
            if res is not None:
                _Watcher(self, key, rounds, progress).watch(res, sub)
                return res
        if rec["status"] not in ("resulted", "released", "challenged"):
            raise JobFailed(jid, _failure_reason(rec["status"]), f"job is {rec['status']}: no result to fetch", rec)
        sub = self.handle(jid, shape)
        return self._check_result(
            sub, rec, key, rounds, progress, timeout=timeout, t0=time.monotonic(), grace_s=grace_s
        )

    def wait_job(
        self,
        sub: "Submitted | str",
        wallet=None,
        *,
        timeout: float = 600.0,
        rounds: int = 2,
        poll: float = POLL_MAX_S,
        shape: tuple[int, ...] | None = None,
        grace_s: float = GRACE_S,
        progress: Callable[[str], None] | None = None,
    ) -> JobResult:
        """Wait for a job's C and verify it (H_C and Freivalds). Returns as soon as a verified C is in hand:
        usually from the *pending* result (a miner's result waiting in the node's mempool, whose C the node
        holds), before it is mined; then `JobResult.confirmed` is False and a background thread follows
        the job on chain: if the mined result differs from the C handed over it is disputed (or, its C
        unavailable, challenged) with `wallet`. `res.confirm()` waits for the result to be mined,
        `res.settle()` for the settlement (docs/jobs-client.md).
        A wrong on-chain C is disputed with `wallet` (without one it only raises); an on-chain C that
        cannot be fetched for `grace_s` seconds is challenged (data availability) with `wallet`, and the
        answer followed. `sub` is a Submitted handle or a job id (then A, B come from the node, and `shape`
        crops C as in `handle`)."""
        out = self.wait_jobs(
            [sub], wallet, timeout=timeout, rounds=rounds, poll=poll, shape=shape, grace_s=grace_s, progress=progress
        )[0]
        if isinstance(out, JobFailed):
            raise out
        return out

    def wait_jobs(
        self,
        subs: list,
        wallet=None,
        *,
        timeout: float = 600.0,
        rounds: int = 2,
        poll: float = POLL_MAX_S,
        shape: tuple[int, ...] | None = None,
        grace_s: float = GRACE_S,
        progress: Callable[[str], None] | None = None,
    ) -> list:
        """Wait for several jobs at once (as `wait_job`); returns a JobResult or a JobFailed per job, in order.
        One thread follows the jobs whose C was handed over before their result was mined."""
        key = _load_key(wallet) if wallet is not None else None
        end = time.monotonic() + timeout
        t0 = time.monotonic()
        out: list = [None] * len(subs)
        last: dict[int, tuple] = {}
        handles: dict[int, Submitted] = {i: s for i, s in enumerate(subs) if isinstance(s, Submitted)}
        tried: dict[int, set] = {i: set() for i in range(len(subs))}  # pending h_c already fetched and checked
        watcher: _Watcher | None = None
        pause = _Backoff(poll)
        while True:
            todo = [i for i, o in enumerate(out) if o is None]
            if not todo:
                return out
            first = None
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
                pr = rec.get("pending_result")
                try:
                    if (
                        st in ("pending", "open", "claimed")
                        and pr
                        and pr["h_c"] not in tried[i]
                        and (st != "pending" or i in handles)
                    ):
                        tried[i].add(pr["h_c"])
                        if i not in handles:
                            handles[i] = self.handle(jid, shape)
                        sub = handles[i]
                        res = self._try_pending(sub, rec, pr, rounds, progress, getattr(sub, "started", t0))
                        if res is not None:
                            out[i] = res
                            if watcher is None:
                                watcher = _Watcher(self, key, rounds, progress)
                            watcher.watch(res, sub)
                            continue
                    if st in ("resulted", "released", "challenged"):
                        if i not in handles:
                            handles[i] = self.handle(jid, shape)
                        sub = handles[i]
                        out[i] = self._check_result(
                            sub,
                            rec,
                            key,
                            rounds,
                            progress,
                            timeout=max(5.0, end - time.monotonic()),
                            t0=getattr(sub, "started", t0),
                            grace_s=grace_s,
                        )
                        continue
                except JobFailed as e:
                    out[i] = e
                    continue
                if st in _FAILED:
                    out[i] = JobFailed(jid, _failure_reason(st), _FAILED[st].format(fee=rec.get("fee")), rec)
                elif time.monotonic() > end:
                    out[i] = JobFailed(jid, "timeout", f"still {st} after {timeout:.0f} s", rec)
                elif first is None:
                    first = (jid, rec)
            if first is not None:
                self._pause(*first, pause, end)

    # --- waiting for a change ----------------------------------------------------------------------------
    def _pause(self, jid: str, rec: dict, backoff: "_Backoff", end: float) -> None:
        """Until the job's view may have changed: a long-poll on the node (`?wait=`: answered at the next
        block or job transaction), or, from a node that answers at once (no long-poll, too many waiters),
        a sleep that backs off from POLL_MIN_S to the caller's `poll`."""
        left = end - time.monotonic()
        if left <= 0:
            return
        wait = int(max(1, min(LONG_POLL_S, left, self.timeout - 5)))
        pending = (rec.get("pending_result") or {}).get("h_c", "")
        t = time.monotonic()
        try:
            self.call("GET", f"/api/v1/jobs/{jid}?wait={wait}&status={rec['status']}&pending={pending}")
        except ClientError as e:
            if e.code == "node-unreachable":
                raise
        if time.monotonic() - t < POLL_MIN_S:
            time.sleep(min(backoff.next(), max(0.0, end - time.monotonic())))
        else:
            backoff.reset()

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

    # --- checking C ----------------------------------------------------------------------------------------
    def _try_pending(
        self, sub: Submitted, rec: dict, pr: dict, rounds: int, progress, t0: float | None
    ) -> "JobResult | None":
        """C of a pending result (the node holds it): fetched by its h_c, checked against it and by
        Freivalds. A verified JobResult (unconfirmed), or None (not served, or wrong: a wrong C is disputed
        once its result is mined)."""
        import torch
        from pouw.freivalds import freivalds

        m, _, n = sub.padded
        try:
            c = decode_array(self.get_blob(pr["h_c"]), "int32", (m, n))  # the blob commits to its address h_c
        except (ClientError, BlobError):
            return None
        ct = torch.from_numpy(c)
        bad = freivalds(sub.a, sub.b, ct, sub.job, bytes.fromhex(pr["h_c"]), rounds=rounds)
        if bad:
            if progress:
                progress(
                    f"job {sub.job_id[:16]}… the pending result's C is WRONG (rows {bad[:5]}); waiting for it "
                    "to be mined to dispute it"
                )
            return None
        lat = time.monotonic() - t0 if t0 is not None else None
        if progress:
            progress(
                f"job {sub.job_id[:16]}… C verified (H_C and Freivalds x{rounds}) from the pending result"
                + (f", {lat:.2f} s after submit" if lat is not None else "")
                + f"; job {rec['status']} at height {rec.get('height')}, the result is not mined yet"
            )
        return JobResult(
            sub.job_id,
            c[: sub.shape[0], : sub.shape[2]].copy(),
            rec.get("fee", sub.fee),
            rec["status"],
            pr["h_c"],
            pr.get("miner"),
            rec,
            None,
            lat,
            confirmed=False,
            height=rec.get("height"),
            _client=self,
        )

    def _fetch_c(self, sub: Submitted, rec: dict, key, progress, end: float, grace_s: float):
        """The C of an on-chain result, downloaded by blob_c (= H_C). Data availability: while it cannot be
        fetched, after `grace_s` seconds (or half the challenge window) the client's wallet challenges the
        job once (docs/jobs.md); an answer with a wrong row is disputed with the fraud proof built from
        it. Returns (C, record) or raises JobFailed: slashed (challenge unanswered: escrow and bond came
        back), wrong-result (an answered row disproved), unverifiable (no C and nothing to prove)."""
        jid = sub.job_id
        m, _, n = sub.padded
        first_fail = None
        challenge_txid = None
        answer_seen = 0
        backoff = _Backoff(POLL_MAX_S)
        while True:
            try:
                return decode_array(self.get_blob(rec["blob_c"]), "int32", (m, n)), rec
            except (ClientError, BlobError) as e:
                err = e
            now = time.monotonic()
            first_fail = first_fail or now
            cur = self.job_status(jid)
            st = cur["status"]
            if st in ("resulted", "challenged"):
                rec = cur
            if st == "slashed":
                why = (
                    "the miner did not answer the data-availability challenge"
                    if cur.get("challenge_height") and not cur.get("answer_height")
                    else "the result was disproved"
                )
                raise JobFailed(
                    jid,
                    "slashed",
                    f"{why}: escrow {cur.get('fee')} and bond {cur.get('bond')} went to "
                    f"the client (C was never served: {err})",
                    cur,
                    challenge_txid=challenge_txid,
                )
            if st not in ("resulted", "challenged") or now > end:
                note = " (the challenge's rows were answered correctly)" if answer_seen else ""
                raise JobFailed(
                    jid,
                    "unverifiable",
                    f"cannot fetch a valid C blob from {self.url}: {err}; job {st}{note}",
                    cur,
                    challenge_txid=challenge_txid,
                )
            if st == "resulted" and cur.get("answer_height") and cur["answer_height"] != answer_seen:
                answer_seen = cur["answer_height"]
                proof = self._disproving_answer(sub, cur)
                if proof is not None:
                    if key is None:
                        raise JobFailed(
                            jid,
                            "wrong-result",
                            f"the answer to the challenge opens a wrong row {proof.i} of C; no wallet to dispute with",
                            cur,
                            challenge_txid=challenge_txid,
                        )
                    txid = self._send_dispute(key, jid, proof)
                    if progress:
                        progress(
                            f"job {jid[:16]}… the answer to the challenge opens a WRONG row {proof.i}; "
                            f"dispute {txid[:16]}… filed"
                        )
                    cur = self._await_dispute(jid, cur, end)
                    raise JobFailed(
                        jid,
                        "wrong-result",
                        f"C was withheld and the miner's answer to the challenge "
                        f"has a wrong row {proof.i}; dispute filed, job {cur['status']}",
                        cur,
                        dispute_txid=txid,
                        challenge_txid=challenge_txid,
                    )
            if (
                key is not None
                and st == "resulted"
                and challenge_txid is None
                and not cur.get("challenge_height")
                and cur.get("client") == key.address.hex()
            ):
                window = self.cfg.jobs.challenge_window
                late = cur["height"] >= cur["challenge_until"] - max(1, window // 2)
                if now - first_fail >= grace_s or late:
                    challenge_txid = self.challenge_job(key, jid)
                    if progress:
                        progress(
                            f"job {jid[:16]}… C unavailable for {now - first_fail:.1f} s ({err}); "
                            f"data-availability challenge {challenge_txid[:16]}… filed"
                        )
            self._pause(jid, cur, backoff, end)

    def _disproving_answer(self, sub: Submitted, rec: dict):
        """A FraudProof from the answer to this job's challenge when it opens a wrong row of C (the chain
        checked the openings against H_C; the client has A and B), else None."""
        import numpy as np
        from chain.tx import decode_tx
        from pouw.commit import tree_a, tree_b
        from pouw.freivalds import FraudProof

        ans = (self.receipt(sub.job_id) or {}).get("answer")
        if not ans:
            return None
        doc = self.call("GET", f"/api/v1/tx/{ans['txid']}")
        tx = decode_tx(bytes.fromhex(doc["tx"]["raw"]), self.cfg.max_tx_bytes)
        if tx.txid.hex() != ans["txid"]:
            raise ClientError("bad-response", f"{self.url} served another transaction for {ans['txid']}")
        a = np.asarray(sub.a).astype(np.int64)
        b = np.asarray(sub.b)
        for row in tx.payload.rows:
            got = np.frombuffer(row.c_row, dtype="<i4").astype(np.int64)
            want = a[row.i] @ b.astype(np.int64)
            wrong = np.flatnonzero(got != want)
            if wrong.size:
                i, j = int(row.i), int(wrong[0])
                return FraudProof(
                    i,
                    j,
                    np.asarray(sub.a)[i].tobytes(),
                    np.ascontiguousarray(b[:, j]).tobytes(),
                    row.c_row,
                    tuple(tree_a(sub.a).open_range(i, 1)),
                    tuple(tree_b(sub.b).open_range(j, 1)),
                    tuple(row.path),
                )
        return None

    def _await_dispute(self, jid: str, rec: dict, end: float) -> dict:
        """The job's record once the dispute was mined (status no longer resulted), or at `end`."""
        backoff = _Backoff(POLL_MAX_S)
        while time.monotonic() < end:
            cur = self.job_status(jid)
            if cur["status"] != "resulted":
                return cur
            self._pause(jid, cur, backoff, end)
        return rec

    def _check_result(
        self,
        sub: Submitted,
        rec: dict,
        key,
        rounds: int,
        progress,
        timeout: float,
        t0: float | None = None,
        grace_s: float = GRACE_S,
    ) -> JobResult:
        import torch
        from pouw.commit import commit_result
        from pouw.freivalds import freivalds

        end = time.monotonic() + timeout
        c, rec = self._fetch_c(sub, rec, key, progress, end, grace_s)
        ct = torch.from_numpy(c)
        h_c = bytes.fromhex(rec["h_c"])
        if commit_result(ct) != h_c:
            raise JobFailed(
                sub.job_id,
                "unverifiable",
                "the C blob does not match the posted H_C (cannot build a fraud proof against it)",
                rec,
            )
        bad = freivalds(sub.a, sub.b, ct, sub.job, h_c, rounds=rounds)
        if not bad:
            lat = time.monotonic() - t0 if t0 is not None else None
            if progress:
                progress(
                    f"job {sub.job_id[:16]}… result verified (H_C and Freivalds x{rounds})"
                    + (f" {lat:.2f} s after submit" if lat is not None else "")
                )
            try:
                rcpt = self.receipt(sub.job_id)
            except ClientError:
                rcpt = None
            return JobResult(
                sub.job_id,
                c[: sub.shape[0], : sub.shape[2]].copy(),
                rec["fee"],
                rec["status"],
                rec["h_c"],
                rec.get("miner"),
                rec,
                rcpt,
                lat,
                confirmed=True,
                height=rec.get("height"),
                _client=self,
            )
        if key is None or rec["status"] != "resulted":
            raise JobFailed(
                sub.job_id,
                "wrong-result",
                f"C fails Freivalds in rows {bad[:5]}; "
                + ("no wallet to dispute with" if key is None else "challenge window closed"),
                rec,
            )
        txid = self.dispute(key, sub.job_id, sub.a, sub.b, ct, rows=bad)
        if progress:
            progress(f"job {sub.job_id[:16]}… WRONG RESULT (rows {bad[:5]}); dispute {txid[:16]}… filed")
        cur = self._await_dispute(sub.job_id, rec, end)
        raise JobFailed(
            sub.job_id,
            "wrong-result",
            f"the miner's C is wrong (Freivalds failed in rows {bad[:5]}); dispute filed, job {cur['status']}",
            cur,
            dispute_txid=txid,
        )

    def challenge_job(self, wallet, job_id: str, tx_fee: int = 1000) -> str:
        """Data availability (docs/jobs.md): ask the miner of a resulted job of this wallet to open rows of C
        on chain (sampled from the hash of the block that includes the challenge). Unanswered within the
        answer window, the miner is slashed and the escrow and bond come back; the answer's rows
        (`job_status(...)["answer_height"]`, tx kind 8) can be checked and disputed. Returns the txid.
        `wait_job` files it by itself when C stays unavailable."""
        from chain.tx import make_job_challenge

        key = _load_key(wallet)
        acct = self.account(key.address)
        tx = make_job_challenge(key, self.cfg.chain_id, acct["pending_nonce"], bytes.fromhex(job_id), tx_fee)
        self.send_tx(tx)
        return tx.txid.hex()

    def dispute(self, wallet, job_id: str, a, b, c, rows: list[int] | None = None, tx_fee: int = 1000) -> str:
        """Find a wrong entry of C (padded operands, the miner's full C) and file the fraud proof."""
        import torch
        from pouw.freivalds import build_fraud_proof, find_wrong_entry

        a, b, c = (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x)) for x in (a, b, c))
        ij = find_wrong_entry(a, b, c, rows if rows is not None else list(range(c.shape[0])))
        if ij is None:
            raise ClientError("fraud-not-proven", "no wrong entry found in C")
        return self._send_dispute(wallet, job_id, build_fraud_proof(a, b, c, *ij), tx_fee)

    def _send_dispute(self, wallet, job_id: str, proof, tx_fee: int = 1000) -> str:
        from chain.tx import make_job_dispute

        key = _load_key(wallet)
        acct = self.account(key.address)
        tx = make_job_dispute(key, self.cfg.chain_id, acct["pending_nonce"], bytes.fromhex(job_id), proof, tx_fee)
        self.send_tx(tx)
        return tx.txid.hex()


class _Backoff:
    """Sleep lengths for polling: POLL_MIN_S, growing by half each time, at most `cap`."""

    def __init__(self, cap: float):
        self.cap = max(POLL_MIN_S, cap)
        self.cur = POLL_MIN_S

    def next(self) -> float:
        d = self.cur
        self.cur = min(self.cap, self.cur * 1.5)
        return d

    def reset(self) -> None:
        self.cur = POLL_MIN_S


class _Watcher:
    """Follows, in one daemon thread, the jobs whose C was handed over from a pending result, until the
    chain shows their result (or they end otherwise): a mined result with the same H_C confirms; a
    different one is checked like any result (its C fetched, disputed when wrong, challenged when
    unavailable, the answer followed) while the client keeps the C it verified (C = A·B is unique)."""

    def __init__(self, client: Client, key, rounds: int, progress, watch_s: float = WATCH_S):
        self.client = client
        self.key = key
        self.rounds = rounds
        self.progress = progress
        self.end = time.monotonic() + watch_s
        self.items: list[tuple[JobResult, Submitted]] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def watch(self, res: JobResult, sub: Submitted) -> None:
        res._watch = self
        with self.cond:
            self.items.append((res, sub))
            if self.thread is None:  # (the thread clears it, under the lock, when it runs out of jobs)
                self.thread = threading.Thread(target=self._run, name=f"pouw-watch-{res.job_id[:8]}", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        backoff = _Backoff(POLL_MAX_S)
        while True:
            with self.cond:
                todo = [(r, s) for r, s in self.items if r._settlement is None]
                if not todo:
                    self.thread = None
                    return
            first = None
            for res, sub in todo:
                try:
                    rec = self.client.job_status(res.job_id)
                    done = self._judge(res, sub, rec)
                except ClientError as e:  # node unreachable for a while: keep trying until the end
                    rec, done = None, None
                    if time.monotonic() > self.end:
                        done = Settlement("timeout", res.status, f"stopped watching: {e}")
                except Exception as e:  # noqa: BLE001 - the thread must report, never die silently
                    rec, done = None, Settlement("error", res.status, f"{type(e).__name__}: {e}")
                if done is None and time.monotonic() > self.end:
                    done = Settlement(
                        "timeout",
                        rec["status"] if rec else res.status,
                        "the result was not mined while the client watched",
                    )
                if done is not None:
                    self._finish(res, done)
                elif first is None and rec is not None:
                    first = (res.job_id, rec)
            if first is not None:
                try:
                    self.client._pause(*first, backoff, self.end)
                except ClientError:
                    time.sleep(backoff.next())

    def _finish(self, res: JobResult, s: Settlement) -> None:
        try:
            s.receipt = self.client.receipt(res.job_id)
        except ClientError:
            pass
        if self.progress:
            self.progress(f"job {res.job_id[:16]}… {s.outcome}: {s.message}")
        with self.cond:
            res._settlement = s
            self.cond.notify_all()

    def _judge(self, res: JobResult, sub: Submitted, rec: dict) -> "Settlement | None":
        st = rec["status"]
        jid = res.job_id
        if st in ("pending", "open", "claimed", "unknown"):
            return None
        if st in ("resulted", "challenged", "released") and rec.get("h_c") == res.h_c:
            return Settlement(
                "confirmed",
                st,
                f"the result with the C handed over was mined at height "
                f"{rec.get('result_height')}; settles at {rec.get('challenge_until')}",
            )
        if st in ("resulted", "challenged", "released"):
            # another C was mined: the one handed over is A·B, so the chain's is wrong (or unavailable)
            if self.progress:
                self.progress(
                    f"job {jid[:16]}… the mined result ({rec['h_c'][:16]}…) differs from the C handed over; checking it"
                )
            try:
                self.client._check_result(
                    sub, rec, self.key, self.rounds, self.progress, timeout=max(5.0, self.end - time.monotonic())
                )
            except JobFailed as e:
                outcome = {"wrong-result": "disputed"}.get(e.reason, e.reason)
                return Settlement(
                    outcome,
                    e.record.get("status", st),
                    e.message,
                    dispute_txid=e.dispute_txid,
                    challenge_txid=e.challenge_txid,
                )
            return Settlement(
                "mismatch",
                st,
                "the mined result's C also passed the checks although its H_C "
                "differs from the C handed over: compare them (job " + jid + ")",
            )
        if st == "refunded":
            return Settlement(
                "refunded",
                st,
                f"no result was mined before the deadline: escrow {rec.get('fee')} "
                "refunded (the C handed over is correct)",
            )
        return Settlement(st, st, f"job {st}")


@dataclass
class Settlement:
    """What the chain made of a job whose C the client holds (JobResult.confirm / settle). outcome:
    confirmed (the result with this C is mined), released (settled: the miner is paid), disputed (another,
    wrong C was mined and disproved: escrow and bond came back), slashed (a withheld C's challenge went
    unanswered: escrow and bond came back), refunded (no result mined by the deadline), unverifiable,
    mismatch, timeout, error."""

    outcome: str
    status: str
    message: str = ""
    dispute_txid: str | None = None
    challenge_txid: str | None = None
    receipt: dict | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {
            "outcome": self.outcome,
            "status": self.status,
            "message": self.message,
            "dispute_txid": self.dispute_txid,
            "challenge_txid": self.challenge_txid,
        }


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
