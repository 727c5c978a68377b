"""Helpers for tests, the benchmark and the crash soak: mine chains and forks in memory (no DB),
keeping the control state after every block (each mined block goes through validate_and_apply, so a
builder chain is valid by the same code that imports it)."""
from __future__ import annotations

import random
from dataclasses import replace

from chain.block import Block, Header
from chain.chainstate import make_genesis
from chain.config import ChainConfig
from chain.keys import PrivateKey, faucet_key
from chain.mining import build_template, mine_header
from chain.state import MemoryState, genesis_econ, genesis_state
from chain.tx import Transaction, make_transfer
from chain.transition import PreState, parent_info, validate_and_apply
from chain.validation import ParentInfo


class ChainBuilder:
    """Mines blocks on any known parent; `states[h]` is the control state after block h."""

    def __init__(self, cfg: ChainConfig, backend=None):
        self.cfg = cfg
        self.params = cfg.pow.params()
        self.backend = backend
        g = make_genesis(cfg)
        self.genesis = g
        self.blocks: dict[bytes, Block] = {g.hash: g}
        accts, supply = genesis_state(cfg.genesis_alloc, cfg.genesis_issuers)
        self.states: dict[bytes, MemoryState] = {g.hash: MemoryState(accts, supply, hashes=[g.hash],
                                                                     econ=genesis_econ(cfg.genesis_issuers))}

    def parent_info(self, h: bytes) -> ParentInfo:
        def lookup(x: bytes) -> tuple[int, int, bytes]:
            hd = self.blocks[x].header
            return hd.height, hd.timestamp, hd.prev_hash
        return parent_info(h, lookup, self.cfg.mtp_window)

    def mine(self, parent: bytes, miner: bytes, txs=(), timestamp: int | None = None, *, select: bool = False,
             nonce: int = 0) -> Block:
        pinfo = self.parent_info(parent)
        if timestamp is None:
            timestamp = pinfo.timestamp + self.cfg.target_block_time
        st = self.states[parent]
        tpl = build_template(self.cfg, pinfo, st.get, st.supply, miner, txs, timestamp, select=select, jobs=st)
        h = mine_header(self.cfg, tpl.header, params=self.params, backend=self.backend, nonce=nonce)
        assert h is not None
        blk = Block(h, tpl.txs)
        # the control state goes through the one state transition, as every node's import does
        diff = validate_and_apply(blk, pinfo, PreState(st.get, st.supply, st), self.cfg, h.timestamp,
                                  params=self.params)
        assert diff is not None and diff.state_root == tpl.diff.state_root
        new = st.copy()
        new.apply(diff)
        new.hashes.append(blk.hash)
        self.blocks[blk.hash] = blk
        self.states[blk.hash] = new
        return blk

    def remine(self, header: Header, **changes) -> Header:
        """A header with fields changed and a fresh valid proof (for invalid-block tests)."""
        h = mine_header(self.cfg, replace(header, **changes), params=self.params, backend=self.backend)
        assert h is not None
        return h

    def random_transfers(self, parent: bytes, keys: list[PrivateKey], n: int, rng: random.Random,
                         max_amount: int = 10_000) -> list[Transaction]:
        """n valid transfers among keys (senders need funds in the parent's state)."""
        st = self.states[parent]
        nonces = {k.address: st.get(k.address).nonce for k in keys}
        bal = {k.address: st.get(k.address).balance for k in keys}
        out = []
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

    def chain(self, parent: bytes, n: int, miner: bytes, *, keys: list[PrivateKey] | None = None,
              txs_per_block: int = 0, rng: random.Random | None = None, time_step: int | None = None) -> list[Block]:
        rng = rng or random.Random(0)
        out = []
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


def job_operands(seed: int, m: int, k: int, n: int):
    """Deterministic client operands A (m×k), B (k×n) in [-64, 64], their exact int32 product C, and the
    job commitment. For tests of job settlement."""
    import torch
    from pouw.commit import commit_job
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-64, 65, (m, k), generator=g, dtype=torch.int64).to(torch.int8)
    b = torch.randint(-64, 65, (k, n), generator=g, dtype=torch.int64).to(torch.int8)
    c = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    return a, b, c, commit_job(a, b)


def blob_hash(data) -> bytes:
    """Content address of a result blob: H_C, its commitment (operand blobs are addressed by H_A / H_B)."""
    from pouw.commit import commit_result
    return commit_result(data)
