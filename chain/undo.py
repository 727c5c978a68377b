"""Undo data: what disconnecting a connected block restores. Stored under ``u`` + block hash::

    undo = [supply_before, accounts]                      no job or economy record changed
         | [supply_before, accounts, jobs]                job records changed (no economy record)
         | [supply_before, accounts, jobs, econ]          economy records changed (jobs may be [])
    accounts = [[address(20), encode(account_before)], ...]           every account the block wrote
    jobs     = [[job_id(32), encode(record_before) or ""], ...]      "" = the record did not exist
    econ     = [[key] | [key, value_before], ...]                    [key] = the record did not exist

Each list is sorted by its key. `Undo.of(diff)` builds it from a BlockDiff, `encode`/`decode` are exact
inverses (decoding is strict: anything else raises StorageError), and ChainState restores from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.encoding import Obj, as_bytes, as_list, decode, encode
from chain.errors import EncodingError, StorageError
from chain.hashing import HASH_LEN
from chain.jobs import JobRecord
from chain.keys import ADDRESS_LEN
from chain.state import Account, BlockDiff, Supply


@dataclass(frozen=True)
class Undo:
    supply: Supply  # the supply record before the block
    accounts: tuple[tuple[bytes, Account], ...]  # (address, account before), sorted
    jobs: tuple[tuple[bytes, JobRecord | None], ...] = ()  # (job_id, record before or None), sorted
    econ: tuple[tuple[bytes, bytes | None], ...] = ()  # (key, value before or None), sorted

    @classmethod
    def of(cls, diff: BlockDiff) -> "Undo":
        return cls(
            diff.supply_before,
            tuple(sorted(diff.before.items())),
            tuple(sorted(diff.jobs_before.items())),
            tuple(sorted(diff.econ_before.items())),
        )

    def encode(self) -> bytes:
        out: list[Obj] = [self.supply.encode(), [[a, acct.encode()] for a, acct in self.accounts]]
        if self.jobs or self.econ:
            out.append([[j, r.encode() if r is not None else b""] for j, r in self.jobs])
        if self.econ:
            out.append([[k] if v is None else [k, v] for k, v in self.econ])
        return encode(out)

    @classmethod
    def decode(cls, raw: bytes, what: str = "undo data") -> "Undo":
        try:
            f = as_list(decode(raw, max_bytes=1 << 26, max_array=1 << 20), what="undo")
            if len(f) not in (2, 3, 4):
                raise EncodingError("bad-encoding", f"{len(f)} fields")
            supply = Supply.decode(as_bytes(f[0], what="undo.supply"))
            accounts = tuple(
                (as_bytes(a, ADDRESS_LEN, what="undo.address"), Account.decode(as_bytes(v, what="undo.account")))
                for a, v in (as_list(x, 2, what="undo.account") for x in as_list(f[1], what="undo.accounts"))
            )
            jobs = tuple(
                (
                    as_bytes(j, HASH_LEN, what="undo.job_id"),
                    JobRecord.decode(r) if as_bytes(r, what="undo.job") else None,
                )
                for j, r in (
                    as_list(x, 2, what="undo.job") for x in (as_list(f[2], what="undo.jobs") if len(f) > 2 else [])
                )
            )
            econ = []
            for x in as_list(f[3], what="undo.econ") if len(f) > 3 else []:
                item = as_list(x, what="undo.econ_item")
                if len(item) not in (1, 2):
                    raise EncodingError("bad-encoding", "economy undo item")
                econ.append(
                    (
                        as_bytes(item[0], what="undo.econ_key"),
                        as_bytes(item[1], what="undo.econ_value") if len(item) == 2 else None,
                    )
                )
            out = cls(supply, accounts, jobs, tuple(econ))
        except (EncodingError, ValueError) as e:
            raise StorageError(f"{what} is malformed: {e}") from e
        if out.encode() != raw:
            raise StorageError(f"{what} is not in its canonical form")
        return out
