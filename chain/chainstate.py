"""The chain: block index, fork choice, connect/disconnect with undo data, invalidate/reconsider.

Invariants:
- The stored tip, the active-chain height index, the account state, the supply record and the undo
  data of connected blocks always describe the same chain: each connect/disconnect is one batch.
- Importing a block that extends the tip (the common case) is one batch: header, body, index record,
  undo data, accounts and tip together.
- Fork choice: most cumulative work among blocks whose data (and all ancestors' data) is stored and
  that are not known invalid; ties go to the block whose data was seen first (lowest sequence id).
- A block that fails validation is marked FAILED and all its descendants FAILED_CHILD.
- The in-memory index changes only after the batch that stores the change commits: a failed write
  (disk full, LevelDB error) leaves memory as it was, so the node never believes it holds data it did not store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, TypeVar

from chain import indexes
from chain import schema as S
from chain.block import NULL_JOB, Block, Header, tx_root
from chain.config import ChainConfig, launch, parse_config
from chain.difficulty import block_work
from chain.encoding import as_bytes, as_int, as_list, decode, encode
from chain.errors import BlockError, EncodingError, StorageError, ValidationError
from chain.hashing import ZERO_HASH
from chain.keys import ZERO_ADDRESS
from chain.jobs import JobRecord
from chain.state import EMPTY, Account, BlockDiff, MemoryState, StateOverlay, Supply, genesis_econ, genesis_state
from chain.store import Batch, Store
from chain.tx import Transaction, check_tx
from chain.transition import CONTEXT, LAYERS, MUTATION_REASONS, SANITY, STATE, PreState, parent_info, validate_and_apply
from chain.undo import Undo
from chain.validation import ParentInfo

if TYPE_CHECKING:  # annotations only: pouw's verifier is imported where a proof is checked
    from chain.jobs import JobSource
    from pouw.params import PowParams

DB_DIRNAME = "chaindata"

T = TypeVar("T")


def _stored(value: T | None, store: Store, what: str) -> T:
    """`value` read from `store`, which must hold it (the block index and the tip pointers say so):
    StorageError naming `what` when it does not."""
    if value is None:
        raise StorageError(f"database at {store.path} is inconsistent: {what} is missing")
    return value


def make_genesis(cfg: ChainConfig) -> Block:
    """The genesis block implied by a config (no proof; its hash identifies the chain)."""
    _, supply = genesis_state(cfg.genesis_alloc, cfg.genesis_issuers)
    h = Header(
        cfg.version,
        cfg.chain_id,
        0,
        ZERO_HASH,
        cfg.genesis_timestamp,
        cfg.initial_target,
        tx_root([]),
        supply.root,
        ZERO_ADDRESS,
        NULL_JOB,
        nonce=0,
        proof=b"",
    )
    return Block(h, ())


@dataclass
class IndexEntry:
    """In-memory block index record (the header itself stays in the database)."""

    hash: bytes
    prev: bytes
    height: int
    timestamp: int
    target: int
    chainwork: int
    status: int
    seq: int
    reason: str = ""
    chain_data: bool = False  # this block and all ancestors have data

    @property
    def failed(self) -> bool:
        return bool(self.status & S.FAILED_MASK)

    def record(self) -> bytes:
        return encode([self.status, self.chainwork.to_bytes(32, "big"), self.seq, self.reason.encode()])

    def adopt(self, staged: "IndexEntry") -> None:
        """Take the stored fields of `staged` (a copy changed and committed in a batch)."""
        self.status, self.seq, self.reason = staged.status, staged.seq, staged.reason


@dataclass
class ImportResult:
    """Outcome of submit_block: `status` is "active" (on the active chain), "side" (stored, not
    active) or "duplicate". `disconnected`/`connected` are the net change of the active chain."""

    hash: bytes
    status: str
    tip: bytes
    connected: list[Block] = field(default_factory=list)
    disconnected: list[Block] = field(default_factory=list)

    @property
    def disconnected_txs(self) -> list[Transaction]:
        """Transactions of disconnected blocks that the new chain does not contain (re-add to mempool)."""
        now_in = {t.txid for b in self.connected for t in b.txs}
        return [t for b in self.disconnected for t in b.txs if t.txid not in now_in]


class ChainListener(Protocol):
    def block_connected(self, block: Block) -> None: ...
    def block_disconnected(self, block: Block) -> None: ...


JOB_RECORDS_KEPT = 1 << 16  # decoded job records ChainState keeps between blocks (cleared past this)


class _BatchJobs:
    """Job records and schedule as seen through a write batch (reads see the batch's own writes)."""

    def __init__(
        self,
        store: Store,
        b: Batch,
        block_hash_at: Callable[[int], bytes | None],
        decoded: dict[bytes, tuple[bytes, JobRecord]] | None = None,
    ):
        self.store = store
        self.b = b
        self.block_hash_at = block_hash_at  # the active chain below the block being connected
        # job_id -> (raw, record): decode once. Shared across blocks by ChainState (seeded with the records
        # each connect writes); an entry is used only while its raw bytes equal the stored ones.
        self._decoded: dict[bytes, tuple[bytes, JobRecord]] = {} if decoded is None else decoded

    def get_job(self, job_id: bytes) -> JobRecord | None:
        v = self.b.get(S.job_key(job_id))
        if v is None:
            return None
        hit = self._decoded.get(job_id)
        if hit is not None and hit[0] == v:
            return hit[1]
        rec = JobRecord.decode(v)
        self._decoded[job_id] = (v, rec)
        return rec

    def due_jobs(self, height: int) -> list[bytes]:
        pre = S.sched_prefix(height)
        return [k[len(pre) :] for k, _ in self.store.iterate(pre)]  # no batch writes the schedule before this

    def get_econ(self, key: bytes) -> bytes | None:
        return self.b.get(S.econ_key(key))

    def scan_econ(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        st = S.econ_key(start) if start is not None else None
        for k, v in self.store.iterate(S.econ_key(prefix), st):  # no batch writes economy records before this
            yield k[1:], v


@dataclass(frozen=True)
class SupplyTotals:
    """Where the tokens are: minted − burned == balances + escrow + bonds."""

    minted: int
    burned: int
    balances: int
    escrow: int
    bonds: int

    @property
    def conserved(self) -> bool:
        return self.balances + self.escrow + self.bonds == self.minted - self.burned


@dataclass
class ChainTip:
    hash: bytes
    height: int
    branchlen: int
    status: str  # active | valid-fork | valid-headers | headers-only | invalid


class ChainState:
    """A chain stored in ``<datadir>/chaindata``. Use ``ChainState.open``."""

    def __init__(
        self, store: Store, cfg: ChainConfig, *, clock: Callable[[], float] = time.time, check_proofs: bool = True
    ):
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.check_proofs = check_proofs
        self._params: PowParams | None = None
        self.index: dict[bytes, IndexEntry] = {}
        self.children: dict[bytes, list[bytes]] = {}
        self.chain: list[bytes] = []  # active chain hashes by height
        self.candidates: set[bytes] = set()
        self.listeners: list[ChainListener] = []
        self.genesis = make_genesis(cfg)
        self._seq = 0
        self._job_records: dict[bytes, tuple[bytes, JobRecord]] = {}  # see _BatchJobs
        self._recent: dict[bytes, Block] = {}  # the last few submitted blocks (saves a re-read)

    # --- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        datadir: str | Path,
        cfg: ChainConfig | None = None,
        *,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        check_proofs: bool = True,
        sync: bool = False,
    ) -> "ChainState":
        """Open (or, with create and a config, initialise) the chain in datadir.

        Raises StorageError naming the problem for a missing, damaged or foreign database."""
        path = Path(datadir) / DB_DIRNAME
        fresh = not path.exists() or (path.is_dir() and not any(path.iterdir()))  # empty: creation never began
        if fresh and (not create or cfg is None):
            raise StorageError(f"no chain database at {path}" + ("" if create else " (create disabled)"))
        if fresh:
            path.mkdir(parents=True, exist_ok=True)
        store = Store(path, create=fresh, sync=sync)
        try:
            if not fresh and cfg is not None and create and store.is_empty():
                fresh = True  # a crash between creating the database and writing genesis
            if fresh and cfg is not None:  # (checked above: a fresh database comes with a config)
                if not cfg.dated:
                    cfg = launch(cfg, int(clock()))  # a new network: genesis dated now
                cs = cls(store, cfg, clock=clock, check_proofs=check_proofs)
                cs._init_genesis()
            else:
                cfg = cls._check_meta(store, cfg)
                cs = cls(store, cfg, clock=clock, check_proofs=check_proofs)
            cs._load()
            indexes.ensure(cs)  # tx / address / job lookups (chain/indexes.py); once for older datadirs
            cs.activate_best_chain()  # finish a reorg interrupted by a crash
        except BaseException:
            store.close()
            raise
        return cs

    @staticmethod
    def _check_meta(store: Store, cfg: ChainConfig | None) -> ChainConfig:
        marker = store.get(S.META_SCHEMA)
        if marker is None:
            raise StorageError(f"database at {store.path} has no schema marker (incomplete or not a chain database)")
        try:
            version = decode(marker)
        except EncodingError as e:
            raise StorageError(f"database at {store.path}: corrupted schema marker") from e
        if version != S.SCHEMA_VERSION:
            raise StorageError(f"database at {store.path} has schema version {version}, expected {S.SCHEMA_VERSION}")
        src = store.get(S.META_CONFIG)
        genesis = store.get(S.META_GENESIS)
        if src is None or genesis is None:
            raise StorageError(f"database at {store.path} lacks its genesis hash or config")
        stored_cfg = parse_config(src.decode())
        if cfg is None:
            cfg = stored_cfg
        elif not cfg.dated:
            cfg = launch(cfg, stored_cfg.genesis_timestamp)  # the same network template, launched earlier
        g = make_genesis(cfg).hash
        if g != genesis:
            raise StorageError(
                f"database at {store.path} holds chain {stored_cfg.name!r} (genesis {genesis.hex()[:16]}), "
                f"not {cfg.name!r} (genesis {g.hex()[:16]})"
            )
        cid = store.get(S.META_CHAIN_ID)
        if cid is None or decode(cid) != cfg.chain_id:
            raise StorageError(f"database at {store.path}: chain id marker missing or different")
        return cfg

    def _init_genesis(self) -> None:
        g = self.genesis
        accounts, supply = genesis_state(self.cfg.genesis_alloc, self.cfg.genesis_issuers)
        work = block_work(g.header.target)
        e = IndexEntry(
            g.hash,
            ZERO_HASH,
            0,
            g.header.timestamp,
            g.header.target,
            work,
            S.HEADER_VALID | S.HAVE_DATA | S.VALID_STATE,
            0,
        )
        with self.store.batch() as b:
            b.put(S.META_SCHEMA, encode(S.SCHEMA_VERSION))
            b.put(S.META_GENESIS, g.hash)
            b.put(S.META_CHAIN_ID, encode(self.cfg.chain_id))
            b.put(S.META_CONFIG, self.cfg.source.encode())
            b.put(S.header_key(g.hash), g.header.encoded)
            b.put(S.body_key(g.hash), g.body_encoded)
            b.put(S.index_key(g.hash), e.record())
            b.put(S.height_key(0), g.hash)
            for a, acct in accounts.items():
                b.put(S.account_key(a), acct.encode())
            for k, v in genesis_econ(self.cfg.genesis_issuers).items():
                b.put(S.econ_key(k), v)
            b.put(S.META_SUPPLY, supply.encode())
            b.put(S.META_SEQ, encode(1))
            b.put(S.META_TIP, g.hash)

    def _load(self) -> None:
        """Load the block index and the active chain; check the pointers agree."""
        p = self.store.path
        raw_index = {S.strip(S.P_INDEX, k): v for k, v in self.store.iterate(S.P_INDEX)}
        for h, rec in raw_index.items():
            hb = self.store.get(S.header_key(h))
            if hb is None:
                raise StorageError(f"database at {p} is inconsistent: index record without header {h.hex()[:16]}")
            try:
                hdr = Header.decode(hb)
                f = as_list(decode(rec, max_bytes=4096), 4)
                status, cw, seq, reason = as_int(f[0]), as_bytes(f[1], 32), as_int(f[2]), as_bytes(f[3])
            except EncodingError as e:
                raise StorageError(f"database at {p} is corrupted: bad header or index record {h.hex()[:16]}") from e
            if hdr.hash != h:
                raise StorageError(f"database at {p} is corrupted: header {h.hex()[:16]} does not hash to its key")
            self.index[h] = IndexEntry(
                h,
                hdr.prev_hash,
                hdr.height,
                hdr.timestamp,
                hdr.target,
                int.from_bytes(cw, "big"),
                status,
                seq,
                reason.decode(errors="replace"),
            )
        g = self.index.get(self.genesis.hash)
        if g is None:
            raise StorageError(f"database at {p} is missing its genesis block")
        for ent in self.index.values():
            if ent.hash != g.hash:
                if ent.prev not in self.index:
                    raise StorageError(
                        f"database at {p} is inconsistent: block {ent.hash.hex()[:16]} has no parent entry"
                    )
                self.children.setdefault(ent.prev, []).append(ent.hash)
        for ent in sorted(self.index.values(), key=lambda x: x.height):
            ent.chain_data = bool(ent.status & S.HAVE_DATA) and (ent.hash == g.hash or self.index[ent.prev].chain_data)
        seq_rec = self.store.get(S.META_SEQ)
        tip = self.store.get(S.META_TIP)
        if seq_rec is None or tip is None or self.store.get(S.META_SUPPLY) is None:
            raise StorageError(f"database at {p} lacks its tip, supply or sequence record")
        try:
            self._seq = as_int(decode(seq_rec), what="sequence")
        except EncodingError as e:
            raise StorageError(f"database at {p} is corrupted: bad sequence record") from e
        if tip not in self.index:
            raise StorageError(f"database at {p} is inconsistent: tip {tip.hex()[:16]} not in the block index")
        chain: list[bytes] = []
        h = tip
        while True:
            chain.append(h)
            ent = self.index[h]
            if self.store.get(S.height_key(ent.height)) != h:
                raise StorageError(
                    f"database at {p} is inconsistent: height index at {ent.height} disagrees with the tip's chain"
                )
            if ent.height == 0:
                break
            h = ent.prev
        te = self.index[tip]
        if (
            not te.status & S.HAVE_DATA
            or self.store.get(S.body_key(tip)) is None
            or (te.height > 0 and self.store.get(S.undo_key(tip)) is None)
        ):
            raise StorageError(f"database at {p} is inconsistent: the tip's body or undo data is missing")
        if self.store.get(S.height_key(len(chain))) is not None:
            raise StorageError(f"database at {p} is inconsistent: height index extends past the tip")
        self.chain = chain[::-1]
        self._rebuild_candidates()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "ChainState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queries ---------------------------------------------------------------------------------------
    @property
    def params(self) -> PowParams:
        if self._params is None:
            self._params = self.cfg.pow.params()
        return self._params

    @property
    def tip(self) -> IndexEntry:
        return self.index[self.chain[-1]]

    @property
    def height(self) -> int:
        return len(self.chain) - 1

    def block_hash_at(self, height: int) -> bytes | None:
        return self.chain[height] if 0 <= height < len(self.chain) else None

    def get_header(self, h: bytes) -> Header | None:
        data = self.store.get(S.header_key(h))
        return Header.decode(data) if data is not None else None

    def get_block(self, h: bytes) -> Block | None:
        if h in self._recent:
            return self._recent[h]
        hdr = self.get_header(h)
        body = self.store.get(S.body_key(h))
        if hdr is None or body is None:
            return None
        return Block.from_parts(hdr, body, self.cfg.max_block_txs)

    def is_active(self, h: bytes) -> bool:
        e = self.index.get(h)
        return e is not None and e.height < len(self.chain) and self.chain[e.height] == h

    def get_account(self, addr: bytes) -> Account:
        data = self.store.get(S.account_key(addr))
        return Account.decode(data) if data is not None else EMPTY

    @property
    def supply(self) -> Supply:
        return Supply.decode(_stored(self.store.get(S.META_SUPPLY), self.store, "the supply record"))

    def accounts(self) -> dict[bytes, Account]:
        return {S.strip(S.P_ACCOUNT, k): Account.decode(v) for k, v in self.store.iterate(S.P_ACCOUNT)}

    def check_conservation(self) -> None:
        """Raise AssertionError unless Σ balances + Σ escrow + Σ bonds == minted − burned and the stored
        root matches."""
        st = self.memory_state()
        st.check_conservation()
        if _stored(self.get_header(self.tip.hash), self.store, "the tip's header").state_root != st.supply.root:
            raise AssertionError("stored supply does not match the tip's state root")

    def memory_state(self) -> MemoryState:
        """A copy of the tip state (accounts, jobs, supply) in memory."""
        return MemoryState(self.accounts(), self.supply, self.jobs(), list(self.chain), dict(self.scan_econ(b"")))

    # --- economy ---------------------------------------------------------------------------------------
    def get_econ(self, key: bytes) -> bytes | None:
        """An economy record at the tip (chain/economy.py names the keys)."""
        return self.store.get(S.econ_key(key))

    def scan_econ(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Economy records under `prefix` at the tip, in key order (from the first key >= `start`)."""
        st = S.econ_key(start) if start is not None else None
        for k, v in self.store.iterate(S.econ_key(prefix), st):
            yield k[1:], v

    # --- jobs ------------------------------------------------------------------------------------------
    def get_job(self, job_id: bytes) -> JobRecord | None:
        """The job record at the tip (any status), or None. `rec.to_json(job_id, cs.cfg)` for the API."""
        v = self.store.get(S.job_key(job_id))
        return JobRecord.decode(v) if v is not None else None

    def jobs(self) -> dict[bytes, JobRecord]:
        """Every job record at the tip (settled ones included)."""
        return {S.strip(S.P_JOB, k): JobRecord.decode(v) for k, v in self.store.iterate(S.P_JOB)}

    def due_jobs(self, height: int) -> list[bytes]:
        """Ids of live jobs whose next automatic transition (release / refund) runs at the end of `height`."""
        pre = S.sched_prefix(height)
        return [k[len(pre) :] for k, _ in self.store.iterate(pre)]

    def schedule(self) -> list[tuple[int, bytes]]:
        """The whole schedule: (height, job_id) of every live job, in height order."""
        out = []
        for k, _ in self.store.iterate(S.P_SCHED):
            rest = S.strip(S.P_SCHED, k)
            out.append((int.from_bytes(rest[:8], "big"), rest[8:]))
        return out

    def live_jobs(self) -> dict[bytes, JobRecord]:
        """Jobs that still hold escrow (open, claimed, resulted)."""
        return {j: _stored(self.get_job(j), self.store, f"scheduled job {j.hex()[:16]}") for _, j in self.schedule()}

    def open_jobs(self, height: int | None = None) -> list[tuple[bytes, JobRecord]]:
        """Jobs a miner could claim in the next block (open, or claimed with the exclusivity lapsed),
        best fee per multiply-add first (ties: earlier deadline, then job id)."""
        h = self.height + 1 if height is None else height
        out = [(j, r) for j, r in self.live_jobs().items() if r.claimable_at(h, self.cfg)]
        out.sort(key=lambda x: (-x[1].fee_per_mac, x[1].deadline, x[0]))
        return out

    def locked(self) -> tuple[int, int]:
        """(Σ escrow, Σ bonds) held by live jobs at the tip."""
        live = self.live_jobs().values()
        return sum(r.escrow for r in live), sum(r.bond_held for r in live)

    def supply_totals(self) -> SupplyTotals:
        sup = self.supply
        escrow, bonds = self.locked()
        return SupplyTotals(sup.minted, sup.burned, sum(a.balance for a in self.accounts().values()), escrow, bonds)

    def parent_info(self, h: bytes) -> ParentInfo:
        return parent_info(h, self._lookup, self.cfg.mtp_window)

    def _lookup(self, h: bytes) -> tuple[int, int, bytes]:
        e = self.index[h]
        return e.height, e.timestamp, e.prev

    def next_parent_info(self) -> ParentInfo:
        return self.parent_info(self.tip.hash)

    def validate_tx(
        self, tx: Transaction, get: Callable[[bytes], Account] | None = None, jobs: JobSource | None = None
    ) -> None:
        """Mempool admission check against the tip state (or a given account view): raises TxError.
        Job transactions are also checked against the job state at the tip (or the given job source,
        e.g. the tip plus pending job transactions), as if included in the next block (`bad-job-*` and
        fraud-proof reasons)."""
        check_tx(tx, self.cfg.chain_id, self.cfg.max_tx_bytes)
        StateOverlay(get or self.get_account, jobs if jobs is not None else self, self.cfg, self.height + 1).apply_tx(
            tx
        )

    def chain_tips(self) -> list[ChainTip]:
        """Every block without children (and the active tip), like Bitcoin's getchaintips."""
        tips = [e for e in self.index.values() if not self.children.get(e.hash)]
        if self.tip not in tips:
            tips.append(self.tip)
        out = []
        for e in sorted(tips, key=lambda x: (-x.height, x.seq)):
            x, n = e, 0
            while not self.is_active(x.hash):
                x, n = self.index[x.prev], n + 1
            if e.hash == self.tip.hash:
                st = "active"
            elif e.failed:
                st = "invalid"
            elif not e.chain_data:
                st = "headers-only"
            elif e.status & S.VALID_STATE:
                st = "valid-fork"
            else:
                st = "valid-headers"
            out.append(ChainTip(e.hash, e.height, n, st))
        return out

    # --- accepting headers and blocks -----------------------------------------------------------------
    def _now(self) -> int:
        return int(self.clock())

    def _parent_entry(self, h: Header) -> IndexEntry:
        """The stored parent of `h`: `prev-blk-not-found` (retry later) or `bad-prevblk` when it is invalid."""
        parent = self.index.get(h.prev_hash)
        if parent is None:
            raise BlockError("prev-blk-not-found", h.prev_hash.hex()[:16], punish=False, retry_later=True)
        if parent.failed:
            raise BlockError("bad-prevblk", "parent is invalid")
        return parent

    def _pre_state(self, b: Batch) -> PreState:
        """The tip's state as read through batch `b` (reads see the batch's own writes; a batch never committed
        is a plain reader)."""

        def get(a: bytes) -> Account:
            v = b.get(S.account_key(a))
            return Account.decode(v) if v is not None else EMPTY

        supply = Supply.decode(_stored(b.get(S.META_SUPPLY), self.store, "the supply record"))
        if len(self._job_records) > JOB_RECORDS_KEPT:
            self._job_records.clear()
        return PreState(get, supply, _BatchJobs(self.store, b, self.block_hash_at, self._job_records))

    def _validate(self, block: Block | Header, known: IndexEntry | None, pre: PreState | None) -> BlockDiff | None:
        """validate_and_apply on import: a new header runs every layer (PROOF unless `check_proofs` is off), a
        block whose header is stored (`known`) the body's layers only. A failure is recorded from its layer
        (a header failing for good is stored as failed, never re-validated) and re-raised."""
        h = block.header if isinstance(block, Block) else block
        layers = (SANITY, STATE) if known is not None else LAYERS if self.check_proofs else (SANITY, CONTEXT, STATE)
        try:
            return validate_and_apply(
                block,
                lambda: self.parent_info(self._parent_entry(h).hash),
                pre,
                self.cfg,
                self._now(),
                params=self.params,
                layers=layers,
            )
        except ValidationError as err:
            if (
                err.layer in (SANITY, CONTEXT)
                and not err.retry_later
                and err.reason not in MUTATION_REASONS
                and h.prev_hash in self.index
            ):
                if known is None:
                    self._store_failed_header(h, self.index[h.prev_hash], err.reason)
                else:
                    self._mark_failed(h.hash, err.reason)
            raise

    def _new_entry(self, h: Header, parent: IndexEntry, status: int, reason: str = "") -> IndexEntry:
        return IndexEntry(
            h.hash,
            h.prev_hash,
            h.height,
            h.timestamp,
            h.target,
            parent.chainwork + block_work(h.target),
            status,
            0,
            reason,
        )

    def _store_failed_header(self, h: Header, parent: IndexEntry, reason: str) -> None:
        e = self._new_entry(h, parent, S.FAILED, reason)
        with self.store.batch() as b:
            b.put(S.header_key(h.hash), h.encoded)
            b.put(S.index_key(h.hash), e.record())
        self._add_entry(e)

    def _add_entry(self, e: IndexEntry) -> None:
        self.index[e.hash] = e
        self.children.setdefault(e.prev, []).append(e.hash)

    def submit_header(self, h: Header) -> IndexEntry:
        """Headers-first: check proof and context, store the header without a body. Returns its entry."""
        known = self.index.get(h.hash)
        if known is not None:
            if known.failed:
                raise BlockError("duplicate-invalid", known.reason)
            return known
        self._validate(h, None, None)
        parent = self.index[h.prev_hash]
        e = self._new_entry(h, parent, S.HEADER_VALID)
        with self.store.batch() as b:
            b.put(S.header_key(h.hash), h.encoded)
            b.put(S.index_key(h.hash), e.record())
        self._add_entry(e)
        return e

    def submit_block(self, block: Block | bytes) -> ImportResult:
        """Validate and store a block, then move to the best chain.

        Raises ValidationError(reason) if the block is invalid (check `.punish`/`.retry_later`);
        otherwise returns an ImportResult with the net change of the active chain."""
        if isinstance(block, (bytes, bytearray, memoryview)):
            block = Block.decode(
                bytes(block),
                max_bytes=self.cfg.max_block_bytes + self.cfg.max_header_bytes,
                max_txs=self.cfg.max_block_txs,
            )
        h = block.header
        bh = block.hash
        if len(self._recent) > 64:
            self._recent.clear()
        old_tip = self.tip.hash
        known = self.index.get(bh)
        if known is not None:
            if known.failed:
                raise BlockError("duplicate-invalid", known.reason)
            if known.status & S.HAVE_DATA:
                return ImportResult(bh, "duplicate", old_tip)
        extends_tip = h.prev_hash == old_tip
        diff: BlockDiff | None = None
        conn_err: ValidationError | None = None
        try:  # the state layer runs now only on the tip; a side-chain block's waits for _connect
            diff = self._validate(block, known, self._pre_state(Batch(self.store)) if extends_tip else None)
        except ValidationError as err:
            if err.layer != STATE:
                raise
            conn_err = err
        parent = self.index[h.prev_hash]
        # staged: a known entry changes in memory only once the batch has committed
        entry = replace(known) if known is not None else self._new_entry(h, parent, S.HEADER_VALID)
        entry.status |= S.HAVE_DATA
        entry.seq = self._seq
        if conn_err is not None:  # stored with its body, failed: its transactions or state root are wrong
            entry.status |= S.FAILED
            entry.reason = conn_err.reason
        if diff is not None:
            entry.status |= S.VALID_STATE
        with self.store.batch() as b:
            b.put(S.header_key(bh), h.encoded)
            b.put(S.body_key(bh), block.body_encoded)
            b.put(S.META_SEQ, encode(entry.seq + 1))
            if diff is not None:
                self._write_connect(b, block, diff)
            b.put(S.index_key(bh), entry.record())
        self._seq = entry.seq + 1
        if known is None:
            self._add_entry(entry)
        else:
            known.adopt(entry)
            entry = known
        self._recent[bh] = block
        entry.chain_data = parent.chain_data
        if diff is not None:
            self.chain.append(bh)
            self._notify_connected(block)
        if conn_err is not None:
            self._mark_failed(bh, conn_err.reason)  # also flags descendants known by header
            raise conn_err
        if entry.chain_data:
            self._link_children(entry)
        self.activate_best_chain()
        return self._result(bh, old_tip)

    def _link_children(self, e: IndexEntry) -> None:
        """A block got its data: it and descendants whose data was waiting become candidates."""
        stack = [e]
        while stack:
            x = stack.pop()
            if not x.failed:
                self.candidates.add(x.hash)
            for c in self.children.get(x.hash, []):
                ce = self.index[c]
                if ce.status & S.HAVE_DATA and not ce.chain_data:
                    ce.chain_data = True
                    stack.append(ce)

    def _result(self, bh: bytes, old_tip: bytes) -> ImportResult:
        new_tip = self.tip.hash
        fork = self._fork_point(old_tip, new_tip)
        disc = self._path(fork, old_tip)
        conn = self._path(fork, new_tip)
        e = self.index[bh]
        if e.failed:
            raise BlockError(e.reason or "invalid", "block failed to connect")
        status = "active" if self.is_active(bh) else "side"
        return ImportResult(
            bh, status, new_tip, [self._stored_block(h) for h in conn], [self._stored_block(h) for h in disc][::-1]
        )

    def _stored_block(self, h: bytes) -> Block:
        """A block of the active chain or a branch it left (its data is stored)."""
        return _stored(self.get_block(h), self.store, f"block {h.hex()[:16]}")

    def _path(self, ancestor: bytes, h: bytes) -> list[bytes]:
        """Hashes from just after `ancestor` up to `h`, oldest first."""
        out = []
        while h != ancestor:
            out.append(h)
            h = self.index[h].prev
        return out[::-1]

    def _fork_point(self, a: bytes, b: bytes) -> bytes:
        ea, eb = self.index[a], self.index[b]
        while ea.height > eb.height:
            ea = self.index[ea.prev]
        while eb.height > ea.height:
            eb = self.index[eb.prev]
        while ea.hash != eb.hash:
            ea, eb = self.index[ea.prev], self.index[eb.prev]
        return ea.hash

    # --- connect / disconnect -------------------------------------------------------------------------
    def _write_connect(self, b: Batch, block: Block, diff: BlockDiff) -> None:
        for a, acct in diff.after.items():
            if acct.empty:
                b.delete(S.account_key(a))
            else:
                b.put(S.account_key(a), acct.encode())
        for j, rec in sorted(diff.jobs_after.items()):
            old = diff.jobs_before.get(j)
            if old is not None and old.due:
                b.delete(S.sched_key(old.due, j))
            raw = rec.encode()
            b.put(S.job_key(j), raw)
            self._job_records[j] = (raw, rec)  # the next block reads it without decoding
            if rec.due:
                b.put(S.sched_key(rec.due, j), b"")
        for k, v in sorted(diff.econ_after.items()):  # economy records (None: absent)
            if v is None:
                b.delete(S.econ_key(k))
            else:
                b.put(S.econ_key(k), v)
        indexes.write_connect(b, block, diff)
        b.put(S.undo_key(block.hash), Undo.of(diff).encode())
        b.put(S.META_SUPPLY, diff.supply_after.encode())
        b.put(S.height_key(block.height), block.hash)
        b.put(S.META_TIP, block.hash)

    def _connect(self, h: bytes) -> None:
        """Connect block h on top of the tip in one batch; on failure mark it invalid and raise."""
        e = self.index[h]
        assert e.prev == self.tip.hash
        block = self.get_block(h)
        if block is None:
            raise StorageError(f"block {h.hex()[:16]} marked as stored but its data is missing")
        try:
            with self.store.batch() as b:
                # header and body passed the other layers when stored (reindex re-checks them first)
                diff = validate_and_apply(block, None, self._pre_state(b), self.cfg, self._now(), layers=(STATE,))
                assert diff is not None
                self._write_connect(b, block, diff)
                b.put(S.index_key(h), replace(e, status=e.status | S.VALID_STATE).record())
        except ValidationError as err:
            self._mark_failed(h, err.reason)
            raise
        e.status |= S.VALID_STATE
        self.chain.append(h)
        self._notify_connected(block)

    def _disconnect_tip(self) -> Block:
        """Undo the tip block in one batch, returning it."""
        e = self.tip
        if e.height == 0:
            raise StorageError("cannot disconnect the genesis block")
        block = self.get_block(e.hash)
        undo_raw = self.store.get(S.undo_key(e.hash))
        if block is None or undo_raw is None:
            raise StorageError(f"undo data or body of connected block {e.hash.hex()[:16]} is missing")
        undo = Undo.decode(undo_raw, f"undo data of block {e.hash.hex()[:16]}")
        with self.store.batch() as b:
            b.put(S.META_SUPPLY, undo.supply.encode())
            for a, acct in undo.accounts:
                if acct.empty:
                    b.delete(S.account_key(a))
                else:
                    b.put(S.account_key(a), acct.encode())
            for k, v in undo.econ:  # economy records
                if v is None:
                    b.delete(S.econ_key(k))
                else:
                    b.put(S.econ_key(k), v)
            for j, old in undo.jobs:
                cur = self.get_job(j)
                if cur is not None and cur.due:
                    b.delete(S.sched_key(cur.due, j))
                if old is None:
                    b.delete(S.job_key(j))
                else:
                    b.put(S.job_key(j), old.encode())
                    if old.due:
                        b.put(S.sched_key(old.due, j), b"")
            indexes.write_disconnect(b, block, undo, self.get_job)
            b.delete(S.undo_key(e.hash))
            b.delete(S.height_key(e.height))
            b.put(S.META_TIP, e.prev)
        self.chain.pop()
        for l in self.listeners:
            l.block_disconnected(block)
        return block

    def _notify_connected(self, block: Block) -> None:
        for l in self.listeners:
            l.block_connected(block)

    def add_listener(self, listener: ChainListener) -> None:
        """Listener gets block_connected/block_disconnected after each committed batch (in order)."""
        self.listeners.append(listener)

    # --- fork choice -----------------------------------------------------------------------------------
    def _rebuild_candidates(self) -> None:
        tip_work = self.tip.chainwork
        self.candidates = {
            e.hash for e in self.index.values() if e.chain_data and not e.failed and e.chainwork >= tip_work
        }
        self.candidates.add(self.tip.hash)

    def _best_candidate(self) -> IndexEntry:
        return max((self.index[h] for h in self.candidates), key=lambda e: (e.chainwork, -e.seq))

    def activate_best_chain(self) -> None:
        """Reorganise to the candidate with most work (first seen on ties), one batch per step."""
        while True:
            self.candidates.add(self.tip.hash)
            best = self._best_candidate()
            tip = self.tip
            if best.hash == tip.hash or (best.chainwork, -best.seq) <= (tip.chainwork, -tip.seq):
                break
            fork = self._fork_point(tip.hash, best.hash)
            while self.tip.hash != fork:
                self._disconnect_tip()
            try:
                for h in self._path(fork, best.hash):
                    self._connect(h)
            except ValidationError:
                continue  # the failed block and its descendants left the candidates; choose again
        tw = self.tip.chainwork
        self.candidates = {h for h in self.candidates if self.index[h].chainwork >= tw and not self.index[h].failed}
        self.candidates.add(self.tip.hash)

    # --- invalid blocks ----------------------------------------------------------------------------------
    def _descendants(self, h: bytes) -> list[bytes]:
        out, stack = [], list(self.children.get(h, []))
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(self.children.get(c, []))
        return out

    def _mark_failed(self, h: bytes, reason: str) -> None:
        e = self.index[h]
        staged = [(e, replace(e, status=e.status | S.FAILED, reason=reason))]
        for c in self._descendants(h):
            ce = self.index[c]  # reason: what importing it now would say
            staged.append((ce, replace(ce, status=ce.status | S.FAILED_CHILD, reason=ce.reason or "bad-prevblk")))
        with self.store.batch() as b:
            for cur, new in staged:
                b.put(S.index_key(new.hash), new.record())
        for cur, new in staged:
            cur.adopt(new)
        self.candidates.discard(h)
        self.candidates.difference_update(self._descendants(h))

    def invalidate_block(self, h: bytes) -> ImportResult:
        """Mark a block invalid by hand (with its descendants) and move to the best remaining chain."""
        if h not in self.index:
            raise KeyError(h.hex())
        if h == self.genesis.hash:
            raise ValueError("cannot invalidate the genesis block")
        old_tip = self.tip.hash
        while self.is_active(h):
            self._disconnect_tip()
        self._mark_failed(h, "invalidated")
        self._rebuild_candidates()
        self.activate_best_chain()
        return self._result(self.tip.hash, old_tip)

    def reconsider_block(self, h: bytes) -> ImportResult:
        """Clear failure flags on a block, its ancestors and descendants, then re-run fork choice.
        A block that is really invalid fails again when connected."""
        if h not in self.index:
            raise KeyError(h.hex())
        old_tip = self.tip.hash
        todo = [h] + self._descendants(h)
        x = self.index[h]
        while x.height > 0:
            x = self.index[x.prev]
            todo.append(x.hash)
        staged = [
            (ce, replace(ce, status=ce.status & ~S.FAILED_MASK, reason=""))
            for ce in (self.index[c] for c in todo)
            if ce.failed
        ]
        with self.store.batch() as b:
            for cur, new in staged:
                b.put(S.index_key(new.hash), new.record())
        for cur, new in staged:
            cur.adopt(new)
        self._rebuild_candidates()
        self.activate_best_chain()
        return self._result(self.tip.hash, old_tip)
