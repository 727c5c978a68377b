"""LevelDB storage through plyvel: open/close with clear errors, and atomic write batches whose
reads see their own writes (py-evm style).

Invariant: every change to the chain database goes through one ``Batch`` that commits atomically
(LevelDB write batch) or not at all. A process killed at any moment leaves the last committed batch.
``sync=True`` also survives power loss (fsync per batch); the default survives process crashes.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import plyvel

from chain.errors import StorageError

WRITE_BUFFER_SIZE = 64 << 20
"""LevelDB's memtable (its default is 4 MiB). Economy transactions write ~1.4 kB each (undo data included),
so the default filled every few blocks and the compactions that followed took ~15 % of an import's CPU
time (benchmarks/RESULTS.md, market). Memory: up to twice this per open database (the memtable being
flushed and the new one), 128 MiB at most; a restart replays up to this much write-ahead log."""


class _Deleted:
    """The overlay's mark for a key deleted earlier in the batch."""


_DELETED = _Deleted()


class Batch:
    """A write batch with a read overlay: ``get`` sees puts and deletes made earlier in the batch."""

    def __init__(self, store: "Store"):
        self._store = store
        self._overlay: dict[bytes, bytes | _Deleted] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self._overlay[key] = bytes(value)

    def delete(self, key: bytes) -> None:
        self._overlay[key] = _DELETED

    def get(self, key: bytes) -> bytes | None:
        if key in self._overlay:
            v = self._overlay[key]
            return None if isinstance(v, _Deleted) else v
        return self._store.get(key)

    def _commit(self, sync: bool) -> None:
        try:
            with self._store.db.write_batch(sync=sync) as wb:
                for k, v in self._overlay.items():
                    if isinstance(v, _Deleted):
                        wb.delete(k)
                    else:
                        wb.put(k, v)
        except plyvel.Error as e:
            raise StorageError(f"write to {self._store.path} failed: {e}") from e


class Store:
    """A LevelDB database at ``path``. ``create=False`` refuses to create a missing database."""

    def __init__(self, path: str | Path, *, create: bool = False, sync: bool = False):
        self.path = Path(path)
        self.sync = sync
        exists = (self.path / "CURRENT").exists()
        if not exists and not create:
            if self.path.exists():
                raise StorageError(f"database at {self.path} is damaged: its CURRENT file is missing")
            raise StorageError(f"no database at {self.path}")
        try:
            self.db = plyvel.DB(
                str(self.path),
                create_if_missing=create and not exists,
                paranoid_checks=True,
                write_buffer_size=WRITE_BUFFER_SIZE,
            )
        except plyvel.Error as e:
            raise StorageError(f"cannot open database at {self.path}: {e}") from e
        except OSError as e:
            raise StorageError(f"cannot open database at {self.path}: {e}") from e

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self.db.get(key, verify_checksums=True)
        except plyvel.Error as e:
            raise StorageError(f"database at {self.path} is corrupted (reading {key[:2]!r}...): {e}") from e
        return value

    def iterate(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Pairs under `prefix` in key order (from the first key >= `start` when given)."""
        try:
            with self.db.iterator(prefix=prefix, verify_checksums=True) as it:
                if start is not None:
                    it.seek(start)
                for k, v in it:
                    yield k, v
        except plyvel.Error as e:
            raise StorageError(f"database at {self.path} is corrupted (scanning {prefix!r}): {e}") from e

    def is_empty(self) -> bool:
        for _ in self.iterate(b""):
            return False
        return True

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """Commit on normal exit; discard everything on an exception."""
        b = Batch(self)
        yield b
        b._commit(self.sync)

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
