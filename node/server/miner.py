"""The node's mining loop and block templates (shared with remote workers).

Templates: `Templates.current(address)` builds a block template on the tip from the mempool (fee
priority) and caches it; it is rebuilt when the tip changes, and when the mempool changed and a rebuilt
template would pay more fees ("better-paying work", checked at most once a second). Every template
gets an id; the last 64 are kept so remote workers can submit against them.

Miner: one pass of a paid job (`node.server.paidjobs`: a claimed client job, its A·B as the header's job: the pass
yields C) or a batch of filler attempts (`node.engine.FillerMiner.run`: operands and commitments built once
per template, then attempts until a win, a new tip, or `BATCH_S`) in a worker thread, so the event loop keeps
serving; between batches it picks up a new template. Useful fraction: the MACs of paid passes over all MACs
mined (`paid_macs / rate.total_macs`), since the miner started. It never mines a block whose timestamp leads
the clock by more than half the allowed drift (it waits instead), and `interval` spaces its own blocks.
Within its interval it still mines a paid job as soon as it is ready (woken by `PaidJobs.ready`), so C is
served and claim + result posted at once (issue 14, latency); a block that pass finds is held and submitted
when the interval ends (if the tip has not moved), so block timing stays as the interval sets it and the paid
work still wins its block. A block is accepted only once `interval` has passed since the miner's last one.
Device faults are handled by `node.engine.Device` (back-off, then drop); the node keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chain.block import Block
from chain.mining import BlockTemplate, build_template
from node.engine import Device, FillerMiner, WorkRate, mine_paid
from node.logfmt import event

if TYPE_CHECKING:
    from node.server.interfaces import MinerHost, TemplatesHost, WorkView

log = logging.getLogger("pouw.miner")

BATCH_S = 0.25  # filler attempts per visit to the event loop: at most this long (plus one attempt)


@dataclass
class Work:
    id: str
    template: BlockTemplate
    tip: bytes
    mempool_version: int
    built_at: float


class Templates:
    """Block templates for the node's miner and remote workers. Anonymous requests share the last
    `SHARED` templates; a named worker's last `PER_WORKER` templates are kept in its own slot, so other
    clients' requests cannot expire them (issue 16). Named slots go with the node's worker list
    (bounded, and authenticated by the API token when one is set)."""

    SHARED = 64
    PER_WORKER = 4

    def __init__(self, node: TemplatesHost):
        self.node = node
        self.by_id: collections.OrderedDict[str, Work] = collections.OrderedDict()
        self.current_by_addr: dict[bytes, Work] = {}
        self.by_worker: dict[str, collections.OrderedDict[str, Work]] = {}

    def for_worker(self, worker: str, address: bytes) -> Work:
        """`current(address)`, also kept in `worker`'s own slot."""
        w = self.current(address)
        if worker:
            slot = self.by_worker.setdefault(worker, collections.OrderedDict())
            slot[w.id] = w
            slot.move_to_end(w.id)
            while len(slot) > self.PER_WORKER:
                slot.popitem(last=False)
            for gone in [k for k in self.by_worker if k not in self.node.workers and k != worker]:
                del self.by_worker[gone]
        return w

    def current(self, address: bytes) -> Work:
        node = self.node
        tip = node.chain.tip.hash
        w = self.current_by_addr.get(address)
        if w is not None and w.tip == tip:
            if w.mempool_version == node.mempool.version or time.monotonic() - w.built_at < 1.0:
                return w
            new = self._build(address)
            if new.template.fees > w.template.fees or len(new.template.txs) < len(w.template.txs):
                return self._keep(address, new)
            w.mempool_version = node.mempool.version
            return w
        return self._keep(address, self._build(address))

    def _build(self, address: bytes) -> Work:
        node = self.node
        cs = node.chain
        tpl = build_template(
            cs.cfg,
            cs.next_parent_info(),
            cs.get_account,
            cs.supply,
            address,
            node.mempool.ordered(cs.cfg.max_block_txs),
        )
        wid = "%016x" % random.getrandbits(64)
        return Work(wid, tpl, cs.tip.hash, node.mempool.version, time.monotonic())

    def _keep(self, address: bytes, w: Work) -> Work:
        if address not in self.current_by_addr and len(self.current_by_addr) >= 256:
            self.current_by_addr.pop(next(iter(self.current_by_addr)))
        self.current_by_addr[address] = w
        self.by_id[w.id] = w
        while len(self.by_id) > self.SHARED:
            self.by_id.popitem(last=False)
        return w

    def get(self, wid: str) -> Work | None:
        w = self.by_id.get(wid)
        if w is None:
            for slot in self.by_worker.values():
                if wid in slot:
                    return slot[wid]
        return w


class Miner:
    def __init__(
        self,
        node: MinerHost,
        device: str,
        address: bytes,
        interval: float = 0.0,
        filler_shape: tuple[int, int, int] | None = None,
    ):
        self.node = node
        self.device = Device(device)
        self.address = address
        self.interval = interval
        self.filler = FillerMiner(node.cfg, node.chain.params, filler_shape)
        self.rate = WorkRate()
        self.paid_macs = 0  # MACs of paid passes (each yielded a client's C)
        self.enabled = True
        self.blocks_found = 0
        self.held: tuple[Block, WorkView, str] | None = None  # a block found within the interval, its work, kind
        self.dropped = 0  # blocks found within the interval that could not be held (one already was)
        self.last_block_at = 0.0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pouw-mine")
        self.task: asyncio.Task | None = None
        self.state = "starting"

    def open_device(self) -> None:
        """Open the backend now (blocking: call it before the node serves). Importing torch and opening a
        device hold the GIL for seconds, which stalls the event loop even from the mining thread; a device
        that cannot be opened is left to the mining loop's fault handling."""
        try:
            self.device.get()
        except Exception as e:
            event(log, logging.DEBUG, "device not opened at start", device=self.device.spec, why=str(e))

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    def useful_work(self) -> tuple[int, int, float]:
        """(MACs mined, MACs of paid passes, useful fraction = paid / mined or 0.0 before any), since start,
        from one snapshot (the mining thread keeps adding)."""
        mined, paid = self.rate.total_macs, self.paid_macs
        return mined, paid, (paid / mined if mined else 0.0)

    def _mined(self, macs: int, k: int) -> None:
        """One completed pass over a k-deep job (called from the mining thread): one ticket per tile."""
        self.rate.add(macs)
        self.node.metrics.mined_macs.inc(macs)
        self.node.metrics.tickets.inc(macs // self.node.chain.params.tile_work(k))

    def _throttled(self) -> bool:
        """True while `interval` has not passed since this miner's last block (no block may be accepted)."""
        return bool(self.interval) and time.monotonic() - self.last_block_at < self.interval

    def _paid_ready(self):
        """The paid job to mine now (state ready), else None; clears `PaidJobs.ready` first, so a job that turns
        ready after this call wakes `_nap`."""
        pj = self.node.paid_jobs
        if pj is None:
            return None
        pj.ready.clear()
        return pj.step()

    async def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`; a paid job turning ready ends it early."""
        pj = self.node.paid_jobs
        if pj is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(pj.ready.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def stop(self) -> None:
        self.enabled = False
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.node.cfg
        params = self.node.chain.params
        nonce = random.getrandbits(64)
        work_id = None
        event(
            log,
            logging.INFO,
            "mining started",
            device=self.device.spec,
            address=self.address.hex(),
            filler="x".join(map(str, self.filler.shape)),
        )
        while True:
            if not self.enabled or self.node.sync.syncing:
                self.state = "paused" if not self.enabled else "waiting-sync"
                await asyncio.sleep(0.1)
                continue
            if self.device.dropped:
                self.state = "device-dropped"
                await asyncio.sleep(1.0)
                continue
            if not self.device.ready():
                self.state = "device-backoff"
                await asyncio.sleep(0.2)
                continue
            paid = None
            throttled = self._throttled()
            if not throttled and self.held is not None:  # the interval is over: submit the block held back
                block, hw, kind = self.held
                self.held = None
                if self.node.chain.tip.hash == hw.tip:
                    self._submit(block, hw, kind)
                continue
            if throttled:  # no block before the interval ends, but a ready paid job is mined now (its C served)
                paid = self._paid_ready()
                if paid is None:
                    self.state = "interval"
                    await self._nap(min(0.2, self.interval))
                    continue
            try:
                w = self.node.templates.current(self.address)
            except Exception:
                log.exception("cannot build a block template")
                await asyncio.sleep(1.0)
                continue
            if not throttled and w.template.header.timestamp > time.time() + cfg.max_future_drift / 2:
                self.state = "waiting-clock"
                await asyncio.sleep(0.25)
                continue
            if w.id != work_id:
                work_id, nonce = w.id, random.getrandbits(64)
            if not throttled:
                paid = self.node.paid_jobs.step() if self.node.paid_jobs is not None else None
            self.state = "mining-job" if paid is not None else "mining"
            tip = w.tip
            try:
                # opened in the mining thread: loading kernels and probing a device takes seconds (issue 16)
                backend = self.device.backend or await loop.run_in_executor(self.executor, self.device.get)
                if paid is not None:
                    # a fresh nonce per paid pass: another pass over the same job (for its work certificate)
                    # draws new tickets even while the tip stands still
                    nonce = (nonce + 1) % (1 << 64)
                    header, macs, c, paid.share = await loop.run_in_executor(
                        self.executor,
                        mine_paid,
                        cfg,
                        params,
                        backend,
                        dataclasses.replace(w.template.header, nonce=nonce),
                        paid.prepared,
                    )
                    self.paid_macs += macs
                    self.node.metrics.paid_macs.inc(macs)
                    self._mined(macs, paid.prepared.job.k)
                else:
                    header, nonce = await loop.run_in_executor(
                        self.executor,
                        functools.partial(
                            self.filler.run,
                            backend,
                            w.template.header,
                            nonce,
                            budget_s=BATCH_S,
                            on_attempt=functools.partial(self._mined, k=self.filler.shape[1]),
                            stop=lambda: not self.enabled or self.node.chain.tip.hash != tip,
                        ),
                    )
                self.device.ok()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any backend error: a device fault; the node keeps serving
                self.device.fault(e)
                self.node.metrics.device_faults.inc()
                continue
            if paid is not None and self.node.paid_jobs is not None:
                try:
                    await self.node.paid_jobs.finished(paid, c)
                except Exception:
                    event(log, logging.ERROR, "posting a job result failed", exc_info=True, job=paid.job_id.hex()[:16])
            if header is None:
                continue
            if self.node.chain.tip.hash != w.tip or not self.enabled:
                continue  # stale: the tip moved while the job ran
            block = Block(header, w.template.txs)
            kind = "paid" if paid is not None else "filler"
            if throttled or self._throttled():  # found by a pass run within the interval: the interval spaces blocks
                if self.held is None:
                    self.held = (block, w, kind)
                else:
                    self.dropped += 1
                continue
            self._submit(block, w, kind)

    def _submit(self, block: Block, w: WorkView, kind: str) -> None:
        res = self.node.accept_block(block, None)
        if res is not None and res.status == "active":
            self.blocks_found += 1
            self.last_block_at = time.monotonic()
            self.node.metrics.blocks_mined.inc()
            event(
                log,
                logging.INFO,
                "mined block",
                height=block.height,
                hash=block.hash.hex()[:16],
                txs=len(block.txs),
                fees=w.template.fees,
                job=kind,
                macs=block.header.job.macs,
                device=self.device.spec,
            )
