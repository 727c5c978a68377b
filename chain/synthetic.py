"""Synthetic chains mined in memory (no database): the workload of `pouw bench import`, and the chains that
tests, benchmarks and the crash soak build. The control state after every block is kept, and each mined
block goes through validate_and_apply, so a builder's chain is valid by the same code that imports it."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterable

from chain.block import Block, Header
from chain.chainstate import make_genesis
from chain.config import ChainConfig
from chain.keys import PrivateKey, faucet_key
from chain.mining import build_template, mine_header
from chain.state import MemoryState, genesis_econ, genesis_state
from chain.tx import Transaction, make_transfer
from chain.transition import PreState, parent_info, validate_and_apply
from chain.validation import ParentInfo

if TYPE_CHECKING:  # annotations only: the miner (torch) is imported where a block is mined
    from kernels.base import Backend


class ChainBuilder:
    """Mines blocks on any known parent; `states[h]` is the control state after block h."""

    def __init__(self, cfg: ChainConfig, backend: Backend | None = None):
        self.cfg = cfg
        self.params = cfg.pow.params()
        self.backend = backend
        g = make_genesis(cfg)
        self.genesis = g
        self.blocks: dict[bytes, Block] = {g.hash: g}
        accts, supply = genesis_state(cfg.genesis_alloc, cfg.genesis_issuers)
        self.states: dict[bytes, MemoryState] = {
            g.hash: MemoryState(accts, supply, hashes=[g.hash], econ=genesis_econ(cfg.genesis_issuers))
        }

    def parent_info(self, h: bytes) -> ParentInfo:
        def lookup(x: bytes) -> tuple[int, int, bytes]:
            hd = self.blocks[x].header
            return hd.height, hd.timestamp, hd.prev_hash

        return parent_info(h, lookup, self.cfg.mtp_window)

    def mine(
        self,
        parent: bytes,
        miner: bytes,
        txs: Iterable[Transaction] = (),
        timestamp: int | None = None,
        *,
        select: bool = False,
        nonce: int = 0,
    ) -> Block:
        pinfo = self.parent_info(parent)
        if timestamp is None:
            timestamp = pinfo.timestamp + self.cfg.target_block_time
        st = self.states[parent]
        tpl = build_template(self.cfg, pinfo, st.get, st.supply, miner, txs, timestamp, select=select, jobs=st)
        h = mine_header(self.cfg, tpl.header, params=self.params, backend=self.backend, nonce=nonce)
        assert h is not None
        blk = Block(h, tpl.txs)
        # the control state goes through the one state transition, as every node's import does
        diff = validate_and_apply(
            blk, pinfo, PreState(st.get, st.supply, st), self.cfg, h.timestamp, params=self.params
        )
        assert diff is not None and diff.state_root == tpl.diff.state_root
        new = st.copy()
        new.apply(diff)
        new.hashes.append(blk.hash)
        self.blocks[blk.hash] = blk
        self.states[blk.hash] = new
        return blk

    def remine(self, header: Header, **changes: Any) -> Header:
        """A header with fields changed and a fresh valid proof (for invalid-block tests)."""
        h = mine_header(self.cfg, replace(header, **changes), params=self.params, backend=self.backend)
        assert h is not None
        return h

    def random_transfers(
        self, parent: bytes, keys: list[PrivateKey], n: int, rng: random.Random, max_amount: int = 10_000
    ) -> list[Transaction]:
        """n valid transfers among keys (senders need funds in the parent's state)."""
        st = self.states[parent]
        nonces = {k.address: st.get(k.address).nonce for k in keys}
        bal = {k.address: st.get(k.address).balance for k in keys}
        out: list[Transaction] = []
        for _ in range(n):
            funded = [k for k in keys if bal[k.address] > max_amount + 100]
            if not funded:
                break
            s = rng.choice(funded)
            r = rng.choice(keys)
            amt, fee = rng.randint(1, max_amount), rng.randint(0, 100)
            out.append(make_transfer(s, self.cfg.chain_id, nonces[s.address], r.address, amt, fee))
            nonces[s.address] += 1
            bal[s.address] -= amt + fee
            bal[r.address] += amt
        return out

    def chain(
        self,
        parent: bytes,
        n: int,
        miner: bytes,
        *,
        keys: list[PrivateKey] | None = None,
        txs_per_block: int = 0,
        rng: random.Random | None = None,
        time_step: int | None = None,
    ) -> list[Block]:
        rng = rng or random.Random(0)
        out: list[Block] = []
        for _ in range(n):
            txs = self.random_transfers(parent, keys, txs_per_block, rng) if keys and txs_per_block else []
            ts = None if time_step is None else self.blocks[parent].header.timestamp + time_step
            b = self.mine(parent, miner, txs, ts)
            out.append(b)
            parent = b.hash
        return out


def make_keys(n: int) -> list[PrivateKey]:
    """The faucet plus n-1 deterministic keys."""
    return [faucet_key()] + [PrivateKey.from_phrase(b"pouw test key %d" % i) for i in range(1, n)]


def generate_chain(cfg: ChainConfig, blocks: int, txs: int, seed: int = 1) -> tuple[ChainBuilder, list[Block]]:
    """A chain of `blocks` blocks with up to `txs` transfers each among 2*txs funded keys (the keys are funded
    from the faucet in the first blocks, `txs` at a time)."""
    rng = random.Random(seed)
    b = ChainBuilder(cfg)
    keys = make_keys(max(2, 2 * txs))
    miner = PrivateKey.from_phrase(b"bench miner").address
    out: list[Block] = []
    parent = b.genesis.hash
    fk, nonce = keys[0], 0
    pending = keys[1:]
    while pending and len(out) < blocks:
        batch, pending = pending[: max(1, txs)], pending[max(1, txs) :]
        fund = [make_transfer(fk, cfg.chain_id, nonce + i, k.address, 10**12, 1) for i, k in enumerate(batch)]
        nonce += len(fund)
        blk = b.mine(parent, miner, fund)
        out.append(blk)
        parent = blk.hash
    while len(out) < blocks:
        blk = b.mine(parent, miner, b.random_transfers(parent, keys, txs, rng))
        out.append(blk)
        parent = blk.hash
    return b, out
