"""Property: random interleavings of job transactions, transfers, empty blocks and reorgs
(fork overtakes, invalidate/reconsider) conserve tokens after every step, and the stored state (accounts,
jobs, schedule, supply) always equals the control replay of the active chain."""

from __future__ import annotations

import random
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.state import MemoryState, apply_block, genesis_state
from testkit.jobs import blob_hash, job_operands
from chain.jobs import challenge_row_count, challenge_rows
from chain.tx import (
    make_job_answer,
    make_job_cancel,
    make_job_challenge,
    make_job_claim,
    make_job_dispute,
    make_job_result,
    make_job_submit,
    make_transfer,
)
from pouw.commit import commit_result, open_result_rows
from pouw.freivalds import build_fraud_proof, find_wrong_entry, freivalds
from test_jobs_core import CFG, CLIENT, COINBASE, M1, M2, OTHER, SHAPE, Net

OPS = [job_operands(10 + i, *SHAPE) for i in range(2)]
KEYS = [CLIENT, M1, M2, OTHER]
ACTIONS = [
    "submit",
    "claim",
    "result",
    "dispute",
    "cancel",
    "challenge",
    "answer",
    "transfer",
    "empty",
    "fork",
    "invalidate",
]
TX_ACTIONS = ACTIONS[:8]


class World:
    def __init__(self, path):
        self.net = Net(path)
        self.cs = self.net.cs
        self.b = self.net.b
        self.c_by_hc = {}  # H_C -> (ops index, C)
        self.forks = 0

    def ctrl(self, h=None) -> MemoryState:
        return self.b.states[h or self.cs.tip.hash]

    def random_txs(self, parent: bytes, rng: random.Random, action: str):
        stt = self.b.states[parent]
        h = self.b.blocks[parent].height + 1
        nonce = {k.address: stt.get(k.address).nonce for k in KEYS}
        cid = CFG.chain_id
        jobs = sorted(stt.jobs.items())
        live = [x for x in jobs if x[1].live]
        out = []
        used = set()

        def n(k):
            nonce[k.address] += 1
            return nonce[k.address] - 1

        for _ in range(rng.randint(1, 3)):
            kind = action if rng.random() < 0.7 else rng.choice(TX_ACTIONS)
            key = rng.choice([k for k in KEYS if k.address not in used] or KEYS)
            used.add(key.address)
            if kind == "submit":
                oi = rng.randrange(len(OPS))
                out.append(
                    make_job_submit(
                        key,
                        cid,
                        n(key),
                        OPS[oi][3],
                        rng.randint(1, 300_000),
                        h + rng.randint(0, 16),
                        OPS[oi][3].h_a,
                        OPS[oi][3].h_b,
                        rng.randint(0, 5),
                    )
                )
            elif kind == "transfer":
                out.append(
                    make_transfer(key, cid, n(key), rng.choice(KEYS).address, rng.randint(1, 50_000), rng.randint(0, 5))
                )
            elif jobs:
                want = {
                    "claim": (0, 1),
                    "result": (1,),
                    "dispute": (2, 6),
                    "cancel": (0,),
                    "challenge": (2,),
                    "answer": (6,),
                }.get(kind, ())
                fit = [x for x in live if x[1].status in want]
                jid, rec = rng.choice(fit if fit and rng.random() < 0.85 else jobs)
                oi = 0 if rec.h_a == OPS[0][3].h_a else 1
                a, b, c, job = OPS[oi]
                if kind in ("cancel", "challenge"):
                    k = next((x for x in KEYS if x.address == rec.client), key) if rng.random() < 0.85 else key
                    mk = make_job_cancel if kind == "cancel" else make_job_challenge
                    out.append(mk(k, cid, n(k), jid))
                elif kind == "answer":
                    seed = stt.block_hash_at(rec.challenge_height) if rec.challenge_height else None
                    cc = self.c_by_hc.get(rec.h_c)
                    if seed is not None and cc is not None:
                        rows = challenge_rows(seed, jid, rec.m, challenge_row_count(CFG, rec.m, rec.n))
                        if rng.random() < 0.2:
                            rows = rows[::-1]
                        out.append(make_job_answer(key, cid, n(key), jid, open_result_rows(cc, rows)))
                elif kind == "claim":
                    out.append(
                        make_job_claim(key, cid, n(key), jid, rng.choice([999, 1000, 40_000, 40_000, 20_000_000]))
                    )
                elif kind == "result":
                    k = next((x for x in KEYS if x.address == rec.miner), key) if rng.random() < 0.8 else key
                    cc = c.clone()
                    if rng.random() < 0.5:
                        cc[rng.randrange(SHAPE[0]), rng.randrange(SHAPE[2])] += rng.choice([-3, 1])
                    hc = commit_result(cc)
                    self.c_by_hc[hc] = cc
                    out.append(make_job_result(k, cid, n(k), jid, hc, blob_hash(cc)))
                elif kind == "dispute" and rec.h_c in self.c_by_hc:
                    cc = self.c_by_hc[rec.h_c]
                    rows = freivalds(a, b, cc, job, rec.h_c)
                    ij = find_wrong_entry(a, b, cc, rows) if rows else (0, 0)
                    out.append(make_job_dispute(key, cid, n(key), jid, build_fraud_proof(a, b, cc, *ij)))
        return out

    def check(self) -> None:
        cs, ctrl = self.cs, self.ctrl()
        assert cs.accounts() == ctrl.accounts
        assert cs.jobs() == ctrl.jobs
        assert cs.schedule() == sorted((r.due, j) for j, r in ctrl.jobs.items() if r.due)
        assert cs.supply == ctrl.supply
        cs.check_conservation()
        ctrl.check_conservation()

    def replay_check(self) -> None:
        """Independent replay of the active chain from genesis equals the stored state."""
        accts, supply = genesis_state(CFG.genesis_alloc)
        stt = MemoryState(accts, supply, hashes=[self.cs.genesis.hash])
        for h in range(1, self.cs.height + 1):
            blk = self.cs.get_block(self.cs.block_hash_at(h))
            diff = apply_block(
                stt.get, stt.supply, blk.txs, blk.header.miner, CFG.subsidy(h), height=h, cfg=CFG, jobs=stt
            )
            assert diff.state_root == blk.header.state_root
            stt.apply(diff)
            stt.hashes.append(blk.hash)
            stt.check_conservation()
        assert stt.accounts == self.cs.accounts() and stt.jobs == self.cs.jobs() and stt.supply == self.cs.supply

    def step(self, action: str, seed: int) -> None:
        rng = random.Random(seed)
        cs = self.cs
        if action == "empty":
            for _ in range(rng.randint(1, 4)):
                self.net.block()
        elif action == "fork" and cs.height > 2:
            d = rng.randint(1, min(5, cs.height - 1))
            parent = cs.block_hash_at(cs.height - d)
            self.forks += 1  # fresh filler jobs: never a block seen before
            for i in range(d + 1):  # one longer: the fork overtakes
                blk = self.b.mine(
                    parent,
                    COINBASE,
                    self.random_txs(parent, rng, rng.choice(TX_ACTIONS)),
                    select=True,
                    nonce=self.forks,
                )
                r = cs.submit_block(blk.encoded)
                parent = blk.hash
                assert r.status == ("active" if i == d else "side")
                cs.check_conservation()
            assert cs.tip.hash == parent
        elif action == "invalidate" and cs.height > 2:
            d = rng.randint(1, min(5, cs.height - 1))
            old_tip = cs.tip.hash
            target = cs.block_hash_at(cs.height - d + 1)
            cs.invalidate_block(target)
            self.check()
            cs.reconsider_block(target)
            assert cs.tip.hash == old_tip
        else:
            parent = cs.tip.hash
            txs = self.random_txs(parent, rng, action)
            blk = self.b.mine(parent, COINBASE, txs, select=True)
            assert cs.submit_block(blk.encoded).status == "active"
        self.check()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2**32)), min_size=4, max_size=40))
def test_random_interleavings_conserve_and_reorg_exactly(steps):
    with tempfile.TemporaryDirectory() as d:
        w = World(d)
        try:
            for action, seed in steps:
                w.step(action, seed)
            w.replay_check()
        finally:
            w.cs.close()


def test_interleavings_reach_every_status():
    """The generator is not vacuous: a long fixed run settles jobs in every way."""
    with tempfile.TemporaryDirectory() as d:
        w = World(d)
        try:
            rng = random.Random(5)
            seen = set()
            for i in range(120):
                w.step(rng.choice(ACTIONS[:7] * 3 + ACTIONS[7:]), rng.getrandbits(32))
                seen |= {r.status_name for r in w.cs.jobs().values()}
            w.replay_check()
        finally:
            w.cs.close()
    assert seen >= {"released", "refunded", "slashed", "cancelled", "challenged"}, seen
