"""`pouw bench market`: the proposal's claim, simulated through the real state transition.

A population of subscribers (usage drawn from a skewed distribution: many light users, a few heavy ones)
holds grants from one issuer over several billing periods. Every action is a signed transaction applied
by ``chain.state.apply_block`` (``chain.econsim.EconSim``): grants, jobs (submit, claim, result, release),
period ends, vintages, asks and bids in the issuer's book, the buyback. Light users sell part of their
minted vintage (some straight into the buyback), heavy users buy what their allocation lacks with
credits, and every subscriber's jobs draw allocation first. The same population and usage run a second
time with the issuer in breakage mode and no market, which is today's practice.

Definitions (all in token base units at face value):
- ``minted``: unused allocation minted as vintage tokens at period ends.
- ``volume``: tokens traded in the book (buyback included); ``fees``: taker fees (credits) to the issuer.
- ``revenue_with_market``: fees + buyback margin (tokens bought back − credits paid) + vintages that
  expired back to the issuer; ``revenue_without_market``: the breakage run's unused allocation returned.
- ``subscriber_value``: minted − expired (what subscribers kept, spent or sold) against 0 under breakage.
- ``velocity``: volume over the run / average tokens the subscriptions put in circulation (vintages plus
  spend-only tokens, at period ends) — the proposal's proxy for compute demand;
  ``velocity_chain``: volume / average total token supply (the API's definition; subsidy-dominated here).
- ``tx_per_s``: the simulation's blocks (every transaction above) mined, then imported into a fresh datadir
  and timed exactly as ``pouw bench import`` times its transfer chain (submit_block: sanity, signatures,
  the state transition, LevelDB); ``import_tx_per_s``: ``pouw bench import``'s own measurement in the same
  process (a transfer chain of ``--import-blocks`` × ``--import-txs``, imported before and after the market
  chain, averaged). Each is timed twice: in process CPU time (``time.process_time``: every thread of this
  process, LevelDB's compactions included, and none of another process's load) and in wall time (``_wall``).
  ``ratio`` = ``tx_per_s_cpu`` / ``import_tx_per_s_cpu``, the goal's measure (≥ 0.5); ``ratio_wall`` the
  same in wall time, which on a shared host swings with other processes' load between the timed sections.
  Three quarters of the simulation's transactions are the job flow (submit, claim, result);
  ``market_tx_per_s`` and ``market_ratio`` (CPU time) time only the blocks that hold market transactions
  alone (orders and credit issues), from the same import.

    pouw bench market --subscribers 1000 --periods 6 --json --plot market.png
"""

from __future__ import annotations

import argparse
import json
import random
import time

from chain.config import load_config
from chain.econsim import EconSim, with_issuer
from chain.econtx import (
    ASK,
    BID,
    GTC,
    IOC,
    KIND_CREDIT_ISSUE,
    KIND_CREDIT_SPEND,
    KIND_GRANT,
    KIND_ORDER_CANCEL,
    KIND_ORDER_PLACE,
    CreditIssue,
    Grant,
    OrderPlace,
)
from chain.economy import Issuer, dec_int, k_issuer, k_spend_only
from chain.encoding import as_list, decode
from chain.jobs import required_bond
from chain.keys import PrivateKey, faucet_key
from chain.tx import (
    KIND_JOB_CLAIM,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
    KIND_TRANSFER,
    JobClaim,
    JobResult,
    JobSubmit,
    Transfer,
)

ISS = PrivateKey.from_phrase(b"bench market issuer")
MINER = PrivateKey.from_phrase(b"bench market miner")
T = 1_000_000  # tokens (base units) of allocation per subscriber per period
SIGNUP = 12  # blocks over which the subscribers sign up (spreads the schedule's work)
JOBS_AT = 18  # block of each round (from its period's start) at which the jobs are submitted
FREE_PERIODS = 4  # free tokens each subscriber starts with: FREE_PERIODS · T per period simulated (enough
# that no job is refused for funds, so both runs use exactly the same compute)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--periods", type=int, default=6)
    p.add_argument("--period-blocks", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--import-blocks", type=int, default=20, help="blocks of the transfer chain imported for the ratio")
    p.add_argument("--import-txs", type=int, default=500, help="transfers per block of that chain")
    p.add_argument("--plot", default=None, help="write a PNG chart of supply, volume, price and revenue per period")


class Run:
    def __init__(self, n: int, periods: int, L: int, seed: int, market: bool):
        base = load_config("regtest")
        self.market = market
        self.cfg = with_issuer(
            base, ISS.address, 4 * n * periods * T, "mint" if market else "breakage", 2, 30, 9000 if market else 0
        )
        self.sim = EconSim(self.cfg, MINER.address, check=False)
        self.sim.trade_log = {}  # every trade of the run (the state keeps the last TRADES_KEPT blocks only)
        self.n, self.periods, self.L = n, periods, L
        rng = random.Random(seed)
        self.subs = [PrivateKey.from_phrase(b"bench market sub %d" % i) for i in range(n)]
        self.usage = [min(4.0, rng.lognormvariate(-1.0, 1.0)) for _ in range(n)]  # share of the allocation used
        self.rng = random.Random(seed + 1)  # market decisions
        self.job_rng = random.Random(seed + 2)  # job sizes: the same draws in both runs
        self.alloc = T * self.cfg.jobs.rate_den // self.cfg.jobs.rate_num  # MACs worth T tokens
        self.series: list[dict] = []

    # one transaction into the block being built; a full block is closed first
    def push(self, key, kind, payload) -> str | None:
        if len(self.sim.txs) >= self.cfg.max_block_txs:
            self.sim.end_block()
        return self.sim.submit(key, kind, payload)

    def close(self) -> None:
        self.sim.end_block()

    def deposit(self) -> int:
        return Issuer.decode(self.sim.st.get_econ(k_issuer(ISS.address))).deposit

    def vintages(self, who: bytes) -> list[tuple[int, int]]:
        return [
            (int.from_bytes(k[41:49], "big"), dec_int(v)) for k, v in self.sim.st.scan_econ(b"V" + who + ISS.address)
        ]

    def holdings(self) -> int:
        st = self.sim.st
        tot = 0
        for k in self.subs:
            a = k.address
            tot += st.get(a).balance + dec_int(st.get_econ(k_spend_only(a))) + sum(x for _, x in self.vintages(a))
        return tot

    def grants_due(self) -> bool:
        """A grant period end scheduled at or below the tip that the schedule has not settled yet."""
        for k, _ in self.sim.st.scan_econ(b"S"):
            if int.from_bytes(k[1:9], "big") > self.sim.height:
                return False
            if k[9:10] == b"g":
                return True
        return False

    def econ_tokens(self) -> int:
        """Tokens the subscriptions put in circulation: vintages plus spend-only tokens (all holders)."""
        st = self.sim.st
        return sum(dec_int(v) for _, v in st.scan_econ(b"V")) + sum(dec_int(v) for _, v in st.scan_econ(b"P"))

    def trades(self, lo: int, hi: int) -> list[list]:
        """Fills in blocks lo..hi as [height, issuer, price, qty, payment, fee, buyer, seller]."""
        out = []
        assert self.sim.trade_log is not None
        for key, v in sorted(self.sim.trade_log.items()):
            h = int.from_bytes(key[1:9], "big")
            if lo <= h <= hi:
                iss, taker, side, fills = as_list(decode(v), 4)
                for price, qty, pay, fee, maker in fills:
                    buyer, seller = (taker, maker) if side == BID else (maker, taker)
                    out.append([h, iss, price, qty, pay, fee, buyer, seller])
        return out

    def go(self) -> dict:
        s, fk = self.sim, faucet_key()
        for k in self.subs + [MINER]:
            self.push(
                fk, KIND_TRANSFER, Transfer(k.address, FREE_PERIODS * T * self.periods if k is not MINER else 10**12)
            )
        self.close()
        # subscribers sign up over SIGNUP blocks (so period ends are spread out); with S = the first of them,
        # subscriber j's period q (q = 1, 2, ...) is usable in [S + j + (q-1)L, S + j + qL), j < SIGNUP. Round p
        # of the loop: market at S + pL + SIGNUP (every period p has ended and been settled by then), jobs at
        # S + pL + JOBS_AT (inside everyone's period p + 1), then wait for the period p + 1 ends.
        assert self.L >= JOBS_AT + 4
        start = s.next_height
        for j in range(SIGNUP):
            for k in self.subs[j::SIGNUP]:
                assert self.push(ISS, KIND_GRANT, Grant(k.address, self.alloc, self.L, self.periods, 0)) is None
            self.close()
        reserves = self.n * T
        totals = dict(minted=0, volume=0, fees=0, buyback_qty=0, buyback_paid=0, expired=0, breakage=0)
        for p in range(self.periods):
            p_lo = s.next_height
            dep0 = self.deposit()
            heavy = []
            if self.market:
                for i, k in enumerate(self.subs):  # light users sell 60 % of their vintages
                    for expiry, amt in self.vintages(k.address):
                        q = amt * 6 // 10
                        if q and expiry > s.next_height + 1:
                            if self.rng.random() < 0.2:
                                self.push(k, KIND_ORDER_PLACE, OrderPlace(ISS.address, ASK, 9000, q, IOC, 0, expiry))
                            else:
                                price = self.rng.choice([9300, 9500, 9700, 9900])
                                self.push(k, KIND_ORDER_PLACE, OrderPlace(ISS.address, ASK, price, q, GTC, 0, expiry))
                self.close()
                for i, k in enumerate(self.subs):  # heavy users buy what their allocation lacks, with credits
                    need = int((self.usage[i] - 1.0) * T)
                    if need > 0:
                        heavy.append((k, need))
                        self.push(ISS, KIND_CREDIT_ISSUE, CreditIssue(k.address, need + need // 100 + 10))
                self.close()
                for k, need in heavy:
                    self.push(k, KIND_ORDER_PLACE, OrderPlace(ISS.address, BID, 10_000, need, IOC, 0, 0))
                self.close()
            # both runs submit their jobs at the same height (so each falls in the same billing period)
            jobs_at = start + p * self.L + JOBS_AT
            assert s.next_height <= jobs_at, "the market phases took too many blocks"
            while s.next_height < jobs_at:
                s.end_block()
            jobs = []
            for i, k in enumerate(self.subs):  # everyone's jobs: allocation first, then tokens
                fee = max(1, int(self.usage[i] * self.job_rng.uniform(0.8, 1.2) * T))
                if len(s.txs) >= self.cfg.max_block_txs:
                    s.end_block()
                p_ = JobSubmit(b"a" * 32, b"b" * 32, 16, 512, 16, fee, s.next_height + 10, b"a" * 32, b"b" * 32)
                tx = s.make(k, KIND_JOB_SUBMIT, p_)
                if s.add(tx) is None:
                    jobs.append((tx.txid, fee))
            self.close()
            for j, fee in jobs:
                self.push(MINER, KIND_JOB_CLAIM, JobClaim(j, required_bond(self.cfg, fee)))
            self.close()
            for j, _ in jobs:
                self.push(MINER, KIND_JOB_RESULT, JobResult(j, b"c" * 32, b"c" * 32))
            self.close()
            # every period p + 1 ended and settled (the schedule may lag behind its bound of work per block)
            while s.height < start + (p + 1) * self.L + SIGNUP - 1 or self.grants_due():
                s.end_block()
            p_hi = s.height
            tr = self.trades(p_lo, p_hi)
            vol = sum(t[3] for t in tr)
            fees = sum(t[5] for t in tr)
            bb = [t for t in tr if t[6] == ISS.address]
            bb_qty, bb_paid = sum(t[3] for t in bb), sum(t[4] - t[5] for t in bb)
            dep1 = self.deposit()
            # deposit change = −next reserve + returns (breakage / expiries) + tokens bought back
            nxt = reserves if p + 1 < self.periods else 0
            returned = dep1 - dep0 + nxt - bb_qty
            minted = (
                sum(dec_int(v) for k, v in s.st.scan_econ(b"V") if int.from_bytes(k[41:49], "big") > p_hi)
                if self.market
                else 0
            )
            row = {
                "period": p + 1,
                "end_height": p_hi,
                "volume": vol,
                "fees": fees,
                "trades": len(tr),
                "avg_price": (sum(t[2] * t[3] for t in tr) / vol / 10_000) if vol else None,
                "buyback_qty": bb_qty,
                "holdings": self.holdings(),
                "economy_tokens": self.econ_tokens(),
            }
            if self.market:
                row["expired"] = returned
                row["revenue"] = fees + (bb_qty - bb_paid) + returned
            else:
                row["breakage"] = returned
                row["revenue"] = returned
            row["vintage_outstanding"] = minted
            self.series.append(row)
            totals["volume"] += vol
            totals["fees"] += fees
            totals["buyback_qty"] += bb_qty
            totals["buyback_paid"] += bb_paid
            totals["expired" if self.market else "breakage"] += returned
        s.st.check_conservation()
        totals["minted"] = sum(self.sim_grants_minted())
        return totals

    def sim_grants_minted(self):
        from chain.economy import GrantRec

        for _, v in self.sim.st.scan_econ(b"G"):
            yield GrantRec.decode(v).minted


MARKET_KINDS = frozenset({KIND_ORDER_PLACE, KIND_ORDER_CANCEL, KIND_CREDIT_ISSUE, KIND_CREDIT_SPEND})


class Rate:
    """Transactions per second of one timed import, in process CPU time and in wall time."""

    def __init__(self, n: int, cpu_s: float, wall_s: float):
        self.n, self.cpu_s, self.wall_s = n, cpu_s, wall_s

    @property
    def cpu(self) -> float:
        return self.n / self.cpu_s if self.cpu_s else 0.0

    @property
    def wall(self) -> float:
        return self.n / self.wall_s if self.wall_s else 0.0


def _cold() -> None:
    """Empty the process-wide caches (LtHash leaves, record memos) before a timed import: the simulation and
    the mining that just made the chain in this process computed its leaves and decoded its records, which a
    node importing blocks from its peers has not (left warm, the chain that fits the cache best wins)."""
    from chain import encoding, state

    state.clear_leaf_cache()
    encoding.clear_memos()


def _timed_import(
    cfg, raw_blocks: list[bytes], timestamp: int, counts: list[int], market: list[bool] | None = None
) -> tuple[Rate, Rate]:
    """Import encoded blocks (holding `counts` transactions) into a fresh datadir: (all blocks, the
    blocks flagged in `market`)."""
    import tempfile
    from chain.chainstate import ChainState

    _cold()
    mkt_n, mkt_cpu, mkt_wall = 0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as d:
        with ChainState.open(d, cfg, clock=lambda: timestamp) as cs:
            c0, w0 = time.process_time(), time.perf_counter()
            for i, raw in enumerate(raw_blocks):
                c1, w1 = time.process_time(), time.perf_counter()
                cs.submit_block(raw)
                if market is not None and market[i]:
                    mkt_n += counts[i]
                    mkt_cpu += time.process_time() - c1
                    mkt_wall += time.perf_counter() - w1
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            cs.check_conservation()
    return Rate(sum(counts), cpu, wall), Rate(mkt_n, mkt_cpu, mkt_wall)


def import_rate(cfg, blocks_txs: list, miner: bytes) -> tuple[Rate, Rate]:
    """Mine the given blocks (untimed) and time importing them into a fresh datadir, as `pouw bench import`
    does: (all transactions, the blocks that hold only market transactions: orders and credits)."""
    from chain.synthetic import ChainBuilder

    b = ChainBuilder(cfg)
    parent, out = b.genesis.hash, []
    for txs in blocks_txs:
        blk = b.mine(parent, miner, txs)
        out.append(blk.encoded)
        parent = blk.hash
    return _timed_import(
        cfg,
        out,
        b.blocks[parent].header.timestamp,
        [len(txs) for txs in blocks_txs],
        [bool(txs) and all(t.kind in MARKET_KINDS for t in txs) for txs in blocks_txs],
    )


def transfer_import_rate(blocks: int, txs: int) -> Rate:
    """`pouw bench import`'s measurement (transfers), here and now."""
    from chain.synthetic import generate_chain

    cfg = load_config("regtest")
    _, chain_blocks = generate_chain(cfg, blocks, txs, 1)
    return _timed_import(
        cfg, [b.encoded for b in chain_blocks], chain_blocks[-1].header.timestamp, [len(b.txs) for b in chain_blocks]
    )[0]


def plot(path: str, with_m: list[dict], without_m: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["period"] for r in with_m]
    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    ax[0][0].plot(x, [r["economy_tokens"] / 1e8 for r in with_m], "o-", label="with market")
    ax[0][0].plot(x, [r["economy_tokens"] / 1e8 for r in without_m], "s--", label="breakage")
    ax[0][0].set_title("supply: vintage + spend-only tokens (tokens)")
    ax[0][0].legend()
    ax[0][1].bar(x, [r["volume"] / 1e8 for r in with_m])
    ax[0][1].set_title("market volume per period (tokens)")
    ax[1][0].plot(x, [r["avg_price"] if r["avg_price"] is not None else float("nan") for r in with_m], "o-")
    ax[1][0].set_title("volume-weighted price (fraction of face)")
    ax[1][1].plot(x, [r["revenue"] / 1e8 for r in with_m], "o-", label="with market")
    ax[1][1].plot(x, [r["revenue"] / 1e8 for r in without_m], "s--", label="breakage")
    ax[1][1].set_title("issuer revenue per period (tokens)")
    ax[1][1].legend()
    for a in ax.flat:
        a.set_xlabel("period")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    m = Run(args.subscribers, args.periods, args.period_blocks, args.seed, market=True)
    m.sim.record = True
    tm = m.go()
    b = Run(args.subscribers, args.periods, args.period_blocks, args.seed, market=False)
    tb = b.go()
    sim_s = time.perf_counter() - t0
    # the market chain and a transfer chain, imported into fresh datadirs back to back (same load)
    t1 = transfer_import_rate(args.import_blocks, args.import_txs)
    mk, mkt = import_rate(m.cfg, m.sim.blocks, MINER.address)
    t2 = transfer_import_rate(args.import_blocks, args.import_txs)
    tr = Rate(t1.n + t2.n, t1.cpu_s + t2.cpu_s, t1.wall_s + t2.wall_s)  # both transfer imports together
    circ = [r["economy_tokens"] for r in m.series]
    chain_supply = m.sim.st.supply.minted - m.sim.st.supply.burned
    rep = {
        "subscribers": args.subscribers,
        "periods": args.periods,
        "period_blocks": args.period_blocks,
        "heavy_users": sum(u > 1 for u in m.usage),
        "mean_usage": round(sum(m.usage) / len(m.usage), 3),
        "minted": tm["minted"],
        "volume": tm["volume"],
        "fees": tm["fees"],
        "buyback_qty": tm["buyback_qty"],
        "expired": tm["expired"],
        "velocity": tm["volume"] / (sum(circ) / len(circ)) if sum(circ) else 0.0,
        "velocity_chain": tm["volume"] / chain_supply,
        "revenue_with_market": tm["fees"] + tm["buyback_qty"] - tm["buyback_paid"] + tm["expired"],
        "revenue_without_market": tb["breakage"],
        "subscriber_value": tm["minted"] - tm["expired"],
        "transactions": mk.n,
        "blocks": m.sim.height,
        "tx_per_s": round(mk.wall, 1),
        "tx_per_s_cpu": round(mk.cpu, 1),
        "import_tx_per_s": round(tr.wall, 1),
        "import_tx_per_s_cpu": round(tr.cpu, 1),
        "ratio": round(mk.cpu / tr.cpu, 3),
        "ratio_wall": round(mk.wall / tr.wall, 3),
        "ratio_clock": "process CPU time (ratio_wall: wall time)",
        "market_tx_per_s": round(mkt.cpu, 1),
        "market_ratio": round(mkt.cpu / tr.cpu, 3),
        "simulate_s": round(sim_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "per_period": m.series,
        "per_period_breakage": b.series,
    }
    if args.plot:
        plot(args.plot, m.series, b.series)
        rep["plot"] = args.plot
    if args.json:
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            if not k.startswith("per_period"):
                print(f"{k:>24}: {v}")
    return rep


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    run(ap.parse_args())
