"""The miner's paid-job path: choose, claim, fetch operands, mine the client's A·B as the block's job,
post the result (docs/jobs-client.md).

One job at a time, driven by the mining loop (`Miner._run` calls `PaidJobs.step()` before each pass):

1. idle: the best claimable job of ``cs.open_jobs()`` (fee per multiply-add order) whose deadline leaves
   room, that this node can pay the bond for and has not given up on, is claimed (claim tx signed with the
   node key, bond = `NodeConfig.job_bond`, default the chain's min_bond) -> ``claiming``.
2. claiming: once the claim is on the chain with this node as the claimer, the operand blobs are fetched
   (local store, else the peers' HTTP APIs), checked (int8, shape, Merkle roots = the job's H_A, H_B)
   and prepared -> ``ready``. Another miner's claim won, the deadline passed or the claim tx vanished ->
   back to idle.
3. ready: the miner mines one pass with the job's A, B in the header template (`mine_paid`): the same
   GEMM draws the block lottery and yields the exact C. `finished` stores C as a blob, posts the result
   (H_C = pouw.commit.commit_result(C)) -> ``posted``.
4. posted: done when the chain shows the result; re-posted if the tx dropped out of the mempool while
   the job is still claimed by us.

``cheat=True`` (NodeConfig.cheat_jobs, or env ``POUW_CHEAT_JOBS=1``) adds 1 to C[0][0] before committing:
for tests of the dispute path only.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from chain.block import Job
from chain.errors import ValidationError
from chain.jobs import CLAIMED, RESULTED
from chain.tx import make_job_claim, make_job_result
from node.blobs import BlobError, decode_array, encode_array

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("pouw.jobs")


@dataclass
class Active:
    job_id: bytes
    state: str                       # claiming | fetching | ready | posted
    claim_txid: bytes = b""
    result_txid: bytes = b""
    prepared: object = None          # pouw.miner.PreparedJob
    result: tuple | None = None      # (h_c, blob_c) once computed
    fetch_task: asyncio.Task | None = field(default=None, repr=False)


def mine_paid(cfg, params, backend, header, prep):
    """One useful-work pass over a paid job: the header's job is the client's commitment. Returns
    (header with proof or None, MACs, exact C as a CPU int32 tensor). Blocking: run in a thread."""
    from pouw.miner import mine_job
    h = replace(header, job=Job.of(prep.job), proof=b"")
    res = mine_job(h.template, prep.job, prep.a, prep.b, h.target, params, backend, prepared=prep,
                   recover_c=True, max_proofs=1, stage_sync=False)
    c = res.c.cpu().contiguous()
    return (h.with_proof(res.proofs[0].encode()) if res.proofs else None), prep.job.macs, c


def commit_c(c, cheat: bool):
    """(h_c, blob bytes) of C; a cheating miner corrupts C[0][0] first. Blocking."""
    from pouw.commit import commit_result
    if cheat:
        c = c.clone()
        c[0, 0] += 1
    return commit_result(c), encode_array(c)


class PaidJobs:
    def __init__(self, node: "Node", *, bond: int, tx_fee: int, cheat: bool = False):
        self.node = node
        self.key = node.node_key
        self.bond = bond
        self.tx_fee = tx_fee
        self.cheat = cheat
        self.active: Active | None = None
        self.given_up: set[bytes] = set()
        self.done: list[bytes] = []      # job ids this node posted results for
        self.claims = 0

    @property
    def address(self) -> bytes:
        return self.key.address

    def _send(self, tx) -> bool:
        try:
            self.node.add_tx(tx)
            return True
        except ValidationError as e:
            log.info("job tx %s refused: %s", tx.txid.hex()[:16], e)
            return False

    def _known_tx(self, txid: bytes) -> bool:
        return txid in self.node.mempool or txid in self.node.txindex

    def step(self) -> Active | None:
        """Advance the state machine; returns the job to mine now (state ready), else None."""
        cs = self.node.chain
        a = self.active
        if a is None:
            self._pick()
            return None
        rec = cs.get_job(a.job_id)
        mine = rec is not None and rec.status == CLAIMED and rec.miner == self.address
        if a.state in ("claiming", "fetching", "ready"):
            if rec is None or not rec.live or cs.height + 1 > rec.deadline:
                return self._drop("closed or past its deadline")
            if rec.status == CLAIMED and rec.miner != self.address:
                return self._drop("claimed by another miner")
            if rec.status == RESULTED:
                return self._drop("resulted by another miner")
            if not mine:
                if not self._known_tx(a.claim_txid):
                    return self._drop("claim transaction dropped")
                return None
            if a.state == "claiming":
                a.state = "fetching"
                a.fetch_task = asyncio.ensure_future(self._fetch(a, rec))
                return None
            if a.state == "ready":
                return a
            return None
        if a.state == "posted":
            if rec is None or rec.status != CLAIMED or rec.miner != self.address:
                self.active = None
                return None
            if not self._known_tx(a.result_txid) and a.result is not None:
                self._post(a)
            return None
        return None

    def _drop(self, why: str) -> None:
        a = self.active
        log.info("job %s: giving up (%s)", a.job_id.hex()[:16], why)
        if a.fetch_task is not None:
            a.fetch_task.cancel()
        self.given_up.add(a.job_id)
        self.active = None
        return None

    def _pick(self) -> None:
        node = self.node
        cs = node.chain
        h = cs.height + 1
        acct = cs.get_account(self.address)
        pending = node.mempool.by_sender.get(self.address, {})
        if pending:  # keep nonces simple: one job tx of ours in flight at a time
            return
        for jid, rec in cs.open_jobs():
            if jid in self.given_up or rec.deadline < h + 1:
                continue
            if rec.status == CLAIMED and rec.miner == self.address:
                continue
            if acct.balance < self.bond + self.tx_fee:
                return
            tx = make_job_claim(self.key, cs.cfg.chain_id, node.mempool.pending_nonce(self.address), jid,
                                self.bond, self.tx_fee)
            if not self._send(tx):
                self.given_up.add(jid)
                continue
            self.claims += 1
            self.active = Active(jid, "claiming", claim_txid=tx.txid)
            log.info("job %s: claimed (%dx%dx%d, fee %d, bond %d)", jid.hex()[:16], rec.m, rec.k, rec.n,
                     rec.fee, self.bond)
            return

    async def _fetch(self, a: Active, rec) -> None:
        from pouw.errors import PowError
        from pouw.miner import prepare_job
        import torch
        node = self.node
        try:
            blobs = []
            for h, shape in ((rec.blob_a, (rec.m, rec.k)), (rec.blob_b, (rec.k, rec.n))):
                data = await node.fetch_blob(h)
                if data is None:
                    raise BlobError("blob-not-found", f"operand blob {h.hex()[:16]} not available")
                blobs.append(decode_array(data, "int8", shape))
            loop = asyncio.get_running_loop()
            prep = await loop.run_in_executor(None, prepare_job, torch.from_numpy(blobs[0]),
                                              torch.from_numpy(blobs[1]), node.chain.params)
            if prep.job != rec.commitment():
                raise BlobError("bad-blob", "operands do not match the job's H_A / H_B")
        except asyncio.CancelledError:
            raise
        except (BlobError, PowError, ValueError) as e:
            log.warning("job %s: operands unusable (%s); giving up", a.job_id.hex()[:16], e)
            if self.active is a:
                self._drop(str(e))
            return
        except Exception:
            log.exception("job %s: fetching operands failed", a.job_id.hex()[:16])
            if self.active is a:
                self._drop("fetch failed")
            return
        a.prepared = prep
        if self.active is a and a.state == "fetching":
            a.state = "ready"

    async def finished(self, a: Active, c) -> None:
        """C computed for `a`: commit, store the blob, post the result."""
        loop = asyncio.get_running_loop()
        h_c, data = await loop.run_in_executor(None, commit_c, c, self.cheat)
        blob_c = self.node.blobs.put(data)
        a.result = (h_c, blob_c)
        a.prepared = None
        a.state = "posted"
        self._post(a)

    def _post(self, a: Active) -> None:
        cs = self.node.chain
        h_c, blob_c = a.result
        tx = make_job_result(self.key, cs.cfg.chain_id, self.node.mempool.pending_nonce(self.address), a.job_id,
                             h_c, blob_c, self.tx_fee)
        if self._send(tx):
            a.result_txid = tx.txid
            if a.job_id not in self.done:
                self.done.append(a.job_id)
            log.info("job %s: result posted%s", a.job_id.hex()[:16], " (CHEATING)" if self.cheat else "")
        else:
            self._drop("result refused")
