"""Storage health: a node that cannot write its data directory says so, stops mining, and resumes by itself.

- **Low space**: every `every` seconds (default 5) the free space of the data directory is measured; below
  `min_free` bytes (``--min-free-mb``, default 256 MiB) the node enters the fault state before any write
  fails (bitcoind likewise refuses to write blocks with too little space left).
- **Write failures**: a `chain.errors.StorageError` from the chain (or an ``OSError`` the node reports through
  `failed`) enters it at once.
- **In the fault state** the node logs one ERROR line (then one a minute), pauses its miner (status
  ``mining.state = "storage-fault"``), imports no blocks (peers' blocks are fetched again later; the peers are
  not punished), answers ``"storage": {"ok": false, "error", "since", "free_bytes"}`` in ``/api/v1/status``
  and ``pouw_storage_fault 1`` in ``/metrics``.
- **Damaged database** (`check_tip` at start-up, `scan` in a worker thread after it): the start refuses with
  a clear message when one of the last `TIP_BLOCKS` active blocks cannot be read back intact (each one's
  header and body checksum-verified by LevelDB and hashing to its index entry); a full checksum scan of
  every record follows in the background, and a damaged record found there (e.g. undo data, read only on
  a reorg) is a permanent fault: mining and imports stop, status and metrics say so and name the remedy
  (``pouw reindex`` or a resync). It never clears by itself.
- **Recovery**: once the free space is above `min_free` again and a 1 MiB probe file can be written, fsynced
  and removed in the data directory, the fault clears, the miner resumes (if the fault paused it) and a
  WARNING line says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import TYPE_CHECKING, Any, Callable
from node.logfmt import event

if TYPE_CHECKING:
    from node.server.interfaces import StorageHost

log = logging.getLogger("pouw.storage")

PROBE_BYTES = 1 << 20
TIP_BLOCKS = 32
REMEDY = "stop the node and run `pouw reindex --datadir {d}` (or move chaindata away to resync from peers)"


def check_tip(chain, datadir) -> None:
    """Read back the last TIP_BLOCKS active blocks; raise StorageError naming the remedy if one is damaged."""
    from chain.errors import StorageError

    for height in range(chain.height, max(-1, chain.height - TIP_BLOCKS), -1):
        h = chain.block_hash_at(height)
        try:
            b = chain.get_block(h) if h is not None else None
            ok = b is not None and b.hash == h
        except Exception as e:  # StorageError (checksum), or a record that no longer decodes
            raise StorageError(
                f"database damaged: block {height} unreadable ({e}); " + REMEDY.format(d=datadir)
            ) from None
        if not ok:
            raise StorageError(
                f"database damaged: block {height} missing or not matching its hash; " + REMEDY.format(d=datadir)
            )


class StorageHealth:
    def __init__(
        self, node: StorageHost, min_free: int, every: float = 5.0, disk_usage: Callable[[Any], Any] = shutil.disk_usage
    ):
        self.node = node
        self.min_free = min_free
        self.every = every
        self.disk_usage = disk_usage
        self.error: str | None = None
        self.since = 0.0
        self.free = -1
        self._checked = 0.0
        self._logged = 0.0
        self._paused_miner = False
        self.permanent = False
        self.scanned: int | None = None  # records checked by the last full scan (None: not finished)
        import threading

        self.stop_scan = threading.Event()

    @property
    def ok(self) -> bool:
        return self.error is None

    def json(self) -> dict:
        return {
            "ok": self.ok,
            "error": self.error,
            "since": round(self.since, 1) if self.error else None,
            "free_bytes": self.free,
            "min_free_bytes": self.min_free,
        }

    def _free(self) -> int:
        try:
            self.free = int(self.disk_usage(self.node.datadir).free)
        except OSError:
            self.free = -1
        return self.free

    def failed(self, why: str, permanent: bool = False) -> None:
        """Enter (or stay in) the fault state: log, pause the miner. A permanent fault never clears."""
        self.permanent = self.permanent or permanent
        now = time.time()
        if self.error is None:
            self.since = now
            self._logged = 0.0
        self.error = why
        if now - self._logged >= 60.0:
            self._logged = now
            event(
                log,
                logging.ERROR,
                "storage fault: mining paused and no blocks imported until the data directory is writable",
                why=why,
                datadir=str(self.node.datadir),
                min_free_mib=self.min_free >> 20,
            )
        m = self.node.miner
        if m is not None and m.enabled:
            m.enabled = False
            self._paused_miner = True

    def _probe(self) -> str | None:
        p = self.node.datadir / ".write-probe"
        try:
            with open(p, "wb") as f:
                f.write(b"\0" * PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
            return None
        except OSError as e:
            return f"cannot write in {self.node.datadir}: {e.strerror or e}"
        finally:
            try:
                p.unlink()
            except OSError:
                pass

    def tick(self) -> None:
        """Periodic (the node's ticker): measure, enter or leave the fault state."""
        now = time.monotonic()
        if now - self._checked < self.every:
            return
        self._checked = now
        free = self._free()
        if 0 <= free < self.min_free:
            self.failed(f"only {free >> 20} MiB free in {self.node.datadir} (minimum {self.min_free >> 20} MiB)")
            return
        if self.error is None or self.permanent:
            return
        err = self._probe()
        if err is not None:
            self.failed(err)
            return
        event(
            log,
            logging.WARNING,
            "storage recovered",
            after_s=round(time.time() - self.since),
            free_mib=free >> 20,
            resumes="mining" if self._paused_miner else "imports",
        )
        self.error = None
        if self._paused_miner and self.node.miner is not None:
            self.node.miner.enabled = True
        self._paused_miner = False

    async def scan(self) -> None:
        """Checksum-verify every record of the database in a worker thread (after start-up)."""
        import asyncio
        from chain.errors import StorageError

        def walk() -> int | None:
            n = 0
            for _ in self.node.chain.store.iterate(b""):
                n += 1
                if self.stop_scan.is_set():  # shutdown: stop before the database closes
                    return None
            return n

        try:
            self.scanned = await asyncio.to_thread(walk)
            if self.scanned is not None:
                event(log, logging.INFO, "database scan done; records intact", records=self.scanned)
        except StorageError as e:
            self.failed(f"database damaged: {e}; " + REMEDY.format(d=self.node.datadir), permanent=True)
        except RuntimeError:  # the database was closed while scanning (shutdown)
            pass
