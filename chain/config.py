"""Chain configuration: a frozen dataclass loaded from TOML (stdlib tomllib).

``load_config("devnet")`` finds ``configs/devnet.toml`` at the repository root (or inside the
installed package); a path to any .toml file also works.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: pouw.params is imported where the parameters are built
    from pouw.params import PowParams

CONFIG_DIRS = (Path(__file__).resolve().parents[1] / "configs", Path(__file__).resolve().parent / "configs")
MAX_TARGET = (1 << 256) - 1


@dataclass(frozen=True)
class PowConfig:
    rank: int
    tile_h: int
    tile_w: int
    min_k: int
    max_dim: int
    min_job_macs: int
    filler_m: int
    filler_k: int
    filler_n: int

    @property
    def filler_shape(self) -> tuple[int, int, int]:
        return (self.filler_m, self.filler_k, self.filler_n)

    def params(self) -> PowParams:
        """The pouw.params.PowParams these settings describe."""
        from pouw.params import PowParams

        return PowParams(rank=self.rank, tile_h=self.tile_h, tile_w=self.tile_w)


@dataclass(frozen=True)
class JobConfig:
    """On-chain compute jobs (docs/jobs.md). Windows and distances are in blocks; amounts in base units.

    The going rate is ``rate_num / rate_den`` base units per int8 multiply-add (``chain.jobs.job_price``)."""

    claim_window: int = 12  # blocks of exclusivity a claim buys
    challenge_window: int = 60  # blocks after a result during which a dispute may be filed
    min_bond: int = 1_000_000  # smallest bond a claim may post
    max_deadline: int = 17_280  # a deadline may lie at most this many blocks after the submit's block
    rate_num: int = 1  # going rate: rate_num / rate_den base units per multiply-add
    rate_den: int = 10_000  # (1 token = 10**8 base units = 10**12 MACs)
    answer_window: int = 12  # blocks a miner has to answer a data-availability challenge
    challenge_rows: int = 8  # rows of C a challenge samples (fewer when they would not fit a tx)
    bond_num: int = 1  # a claim's bond >= max(min_bond, ceil(fee * bond_num / bond_den))
    bond_den: int = 10


@dataclass(frozen=True)
class GenesisIssuer:
    """An issuer registered at genesis (docs/economy.md): ``[genesis.issuers."<address hex>"]`` with
    ``deposit`` (minted at genesis into the issuer's deposit), ``mode`` (mint | rollover | breakage),
    ``vintage_periods``, ``fee_bps`` and ``buyback_bps``."""

    address: bytes
    deposit: int
    mode: int = 0
    vintage_periods: int = 3
    fee_bps: int = 30
    buyback_bps: int = 9000


@dataclass(frozen=True)
class ChainConfig:
    name: str
    chain_id: int
    version: int
    genesis_timestamp: int
    target_block_time: int
    asert_half_life: int
    initial_block_work: int
    min_block_work: int
    max_future_drift: int
    mtp_window: int
    initial_subsidy: int
    halving_interval: int
    pow: PowConfig
    max_block_bytes: int
    max_block_txs: int
    max_tx_bytes: int
    max_header_bytes: int
    genesis_alloc: tuple[tuple[bytes, int], ...] = field(default_factory=tuple)
    source: str = ""  # the TOML text this config was read from (stored in the DB)
    jobs: JobConfig = field(default_factory=JobConfig)
    genesis_issuers: tuple[GenesisIssuer, ...] = field(default_factory=tuple)

    @property
    def pow_limit(self) -> int:
        """Easiest allowed target."""
        return min(MAX_TARGET, (1 << 256) // self.min_block_work)

    @property
    def initial_target(self) -> int:
        return min(self.pow_limit, (1 << 256) // self.initial_block_work)

    def subsidy(self, height: int) -> int:
        """Block subsidy at a height: halves every halving_interval blocks; genesis has none."""
        if height <= 0:
            return 0
        halvings = (height - 1) // self.halving_interval
        return 0 if halvings >= 64 else self.initial_subsidy >> halvings

    @property
    def dated(self) -> bool:
        """False for a network template (``genesis_timestamp = 0``): its genesis is dated when a node
        creates the network's first datadir (``launch``)."""
        return self.genesis_timestamp != 0

    def with_(self, **kw: Any) -> "ChainConfig":
        return replace(self, **kw)


def _find(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".toml" or p.is_file():  # a folder named like a network (./devnet) is not a config
        if not p.exists():
            raise FileNotFoundError(f"config file {p} not found")
        return p
    for d in CONFIG_DIRS:
        c = d / f"{name}.toml"
        if c.exists():
            return c
    raise FileNotFoundError(f"no config named {name!r} in {[str(d) for d in CONFIG_DIRS]}")


def parse_config(text: str) -> ChainConfig:
    """Build a ChainConfig from TOML text; raises ValueError naming a bad or missing field."""
    doc = tomllib.loads(text)
    try:
        c, s, p, lim = doc["chain"], doc["subsidy"], doc["pow"], doc["limits"]
        alloc = []
        for addr, amount in sorted(doc.get("genesis", {}).get("alloc", {}).items()):
            a = bytes.fromhex(addr.removeprefix("0x"))
            if len(a) != 20 or not isinstance(amount, int) or amount <= 0:
                raise ValueError(f"bad genesis allocation {addr} = {amount!r}")
            alloc.append((a, amount))
        issuers = _parse_issuers(doc.get("genesis", {}).get("issuers", {}))
        cfg = ChainConfig(
            name=str(c["name"]),
            chain_id=int(c["chain_id"]),
            version=int(c["version"]),
            genesis_timestamp=int(c["genesis_timestamp"]),
            target_block_time=int(c["target_block_time"]),
            asert_half_life=int(c["asert_half_life"]),
            initial_block_work=int(c["initial_block_work"]),
            min_block_work=int(c["min_block_work"]),
            max_future_drift=int(c["max_future_drift"]),
            mtp_window=int(c["mtp_window"]),
            initial_subsidy=int(s["initial"]),
            halving_interval=int(s["halving_interval"]),
            pow=PowConfig(**{k: int(p[k]) for k in PowConfig.__dataclass_fields__}),
            max_block_bytes=int(lim["max_block_bytes"]),
            max_block_txs=int(lim["max_block_txs"]),
            max_tx_bytes=int(lim["max_tx_bytes"]),
            max_header_bytes=int(lim["max_header_bytes"]),
            genesis_alloc=tuple(alloc),
            source=text,
            genesis_issuers=issuers,
            jobs=JobConfig(
                **{k: int(v) for k, v in doc.get("jobs", {}).items() if k in JobConfig.__dataclass_fields__}
            ),
        )
    except KeyError as e:
        raise ValueError(f"config is missing field {e}") from e
    if cfg.target_block_time <= 0 or cfg.asert_half_life <= 0 or cfg.halving_interval <= 0:
        raise ValueError("target_block_time, asert_half_life and halving_interval must be positive")
    if not 1 <= cfg.min_block_work <= cfg.initial_block_work:
        raise ValueError("need 1 <= min_block_work <= initial_block_work")
    j = cfg.jobs
    if unknown := set(doc.get("jobs", {})) - set(JobConfig.__dataclass_fields__):
        raise ValueError(f"unknown [jobs] keys {sorted(unknown)}")
    if (
        min(
            j.claim_window,
            j.challenge_window,
            j.min_bond,
            j.max_deadline,
            j.rate_den,
            j.answer_window,
            j.challenge_rows,
            j.bond_den,
        )
        < 1
        or j.rate_num < 0
        or j.bond_num < 0
    ):
        raise ValueError(
            "jobs: windows, min_bond, max_deadline, challenge_rows and the denominators must be "
            "positive, rate_num and bond_num >= 0"
        )
    if j.challenge_rows > 16:
        raise ValueError("jobs: challenge_rows must be at most 16 (one answer transaction)")
    if cfg.pow.min_k < 16 * cfg.pow.rank:
        raise ValueError("pow.min_k must be >= 16 * rank")
    return cfg


_GENESIS_TS = re.compile(r"^(genesis_timestamp[ \t]*=[ \t]*)\d+[^\n]*", re.M)


def launch(cfg: ChainConfig, timestamp: int) -> ChainConfig:
    """The network `cfg` describes, launched at `timestamp`: the same config (and TOML text, which nodes
    store and share) with the genesis dated then. ASERT is anchored at genesis (docs/chain.md), so a
    network's genesis must be dated when it starts, not when its config file was written."""
    if cfg.dated:
        raise ValueError(f"network {cfg.name!r} is already dated (genesis_timestamp {cfg.genesis_timestamp})")
    if timestamp <= 0:
        raise ValueError("launch timestamp must be positive")
    import datetime

    when = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    text, n = _GENESIS_TS.subn(lambda m: f"{m.group(1)}{timestamp}   # launched {when}", cfg.source, count=1)
    if n != 1:
        raise ValueError("config text has no genesis_timestamp line to date")
    out = parse_config(text)
    assert out.genesis_timestamp == timestamp and replace(out, genesis_timestamp=0, source="") == replace(
        cfg, source=""
    ), "launching changed more than the genesis timestamp"
    return out


def _parse_issuers(tbl: dict[str, Any]) -> tuple[GenesisIssuer, ...]:
    modes = {"mint": 0, "rollover": 1, "breakage": 2}
    out = []
    for addr, d in sorted(tbl.items()):
        a = bytes.fromhex(addr.removeprefix("0x"))
        if (
            len(a) != 20
            or not isinstance(d, dict)
            or set(d) - {"deposit", "mode", "vintage_periods", "fee_bps", "buyback_bps"}
        ):
            raise ValueError(f"bad genesis issuer {addr}")
        gi = GenesisIssuer(
            a,
            int(d.get("deposit", 0)),
            modes.get(str(d.get("mode", "mint")), -1),
            int(d.get("vintage_periods", 3)),
            int(d.get("fee_bps", 30)),
            int(d.get("buyback_bps", 9000)),
        )
        if (
            gi.deposit < 0
            or gi.mode < 0
            or not 1 <= gi.vintage_periods <= 1000
            or not 0 <= gi.fee_bps <= 10000
            or not 0 <= gi.buyback_bps <= 10000
        ):
            raise ValueError(f"bad genesis issuer {addr}: {d}")
        out.append(gi)
    return tuple(out)


def load_config(path_or_name: str | Path = "devnet") -> ChainConfig:
    """Load a named config (``devnet``, ``regtest``) or a .toml path."""
    return parse_config(_find(str(path_or_name)).read_text())
