"""Property tests of the economy: random interleavings of every economy transaction (and job
submits paid from allocations, claims, results with and without work certificates, releases) keep tokens
and credits conserved after every block; each block's diff
restores the exact pre-state; stored chains with forks, reorgs and invalidation agree with the control
replay record for record (the undo data restores the economy exactly)."""

from __future__ import annotations

import functools
import random
from types import SimpleNamespace

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.chainstate import ChainState
from chain.config import load_config
from chain.econsim import EconSim, with_issuer
from chain.econtx import (
    ASK,
    BID,
    KIND_CREDIT_ISSUE,
    KIND_CREDIT_SPEND,
    KIND_GRANT,
    KIND_ISSUER_DEPOSIT,
    KIND_ISSUER_REGISTER,
    KIND_ISSUER_WITHDRAW,
    KIND_ORDER_CANCEL,
    KIND_ORDER_PLACE,
    CreditIssue,
    CreditSpend,
    Grant,
    IssuerDeposit,
    IssuerRegister,
    IssuerWithdraw,
    OrderCancel,
    OrderPlace,
)
from chain.errors import TxError
from chain.keys import PrivateKey, faucet_key
from chain.maintenance import VerifyError, reindex_datadir, verify_datadir
from chain.state import MemoryState, StateOverlay
from chain.synthetic import ChainBuilder
from chain.tx import (
    KIND_JOB_CLAIM,
    KIND_JOB_RESULT,
    KIND_JOB_SUBMIT,
    KIND_TRANSFER,
    JobClaim,
    JobResult,
    JobSubmit,
    Transaction,
    Transfer,
    WorkCert,
    check_tx,
)

BASE = load_config("regtest")
ISS = PrivateKey.from_phrase(b"prop issuer")
ISS2 = PrivateKey.from_phrase(b"prop issuer 2")
USERS = [PrivateKey.from_phrase(b"prop user %d" % i) for i in range(4)]
CFG = with_issuer(BASE, ISS.address, 10**9, "mint", 2, 50, 9000)
NOW = CFG.genesis_timestamp + 10**6
ALL = [ISS, ISS2] + USERS


def random_tx(rng: random.Random, view, height: int) -> tuple[PrivateKey, int, object]:
    """One random economy (or job / transfer) transaction, valid or not."""
    k = rng.choice(ALL)
    issuers = [ISS, ISS2]
    kind = rng.choice(
        [
            KIND_GRANT,
            KIND_GRANT,
            KIND_ORDER_PLACE,
            KIND_ORDER_PLACE,
            KIND_ORDER_PLACE,
            KIND_ORDER_CANCEL,
            KIND_CREDIT_ISSUE,
            KIND_CREDIT_SPEND,
            KIND_ISSUER_REGISTER,
            KIND_ISSUER_DEPOSIT,
            KIND_ISSUER_WITHDRAW,
            KIND_JOB_SUBMIT,
            KIND_JOB_SUBMIT,
            KIND_JOB_CLAIM,
            KIND_JOB_CLAIM,
            KIND_JOB_RESULT,
            KIND_JOB_RESULT,
            KIND_TRANSFER,
        ]
    )
    if kind == KIND_GRANT:
        return (
            rng.choice(issuers),
            kind,
            Grant(
                rng.choice(USERS).address,
                rng.randint(1, 3_000_000),
                rng.randint(1, 4),
                rng.randint(1, 3),
                rng.randint(0, 1),
            ),
        )
    if kind == KIND_ORDER_PLACE:
        side = rng.choice([BID, ASK])
        src = 0
        if side == ASK and rng.random() < 0.6:
            vs = list(view.scan_econ(b"V" + k.address))
            if vs:
                src = int.from_bytes(rng.choice(vs)[0][41:49], "big")
        exp = rng.choice([0, 0, height + rng.randint(0, 4)])
        tif = rng.randint(0, 1)
        return (
            k,
            kind,
            OrderPlace(
                rng.choice(issuers).address,
                side,
                rng.choice([8000, 9000, 9500, 10_000, 10_500]),
                rng.randint(1, 400),
                tif,
                0 if tif else exp,
                src,
            ),
        )
    if kind == KIND_ORDER_CANCEL:
        orders = [key[1:] for key, _ in view.scan_econ(b"O")]
        oid = rng.choice(orders) if orders else bytes(32)
        return k, kind, OrderCancel(oid)
    if kind == KIND_CREDIT_ISSUE:
        return rng.choice(issuers), kind, CreditIssue(rng.choice(ALL).address, rng.randint(1, 5000))
    if kind == KIND_CREDIT_SPEND:
        return k, kind, CreditSpend(rng.choice(issuers).address, rng.randint(1, 2000))
    if kind == KIND_ISSUER_REGISTER:
        return k, kind, IssuerRegister(rng.randint(0, 2), rng.randint(1, 2), rng.randint(0, 100), rng.choice([0, 8000]))
    if kind in (KIND_ISSUER_DEPOSIT, KIND_ISSUER_WITHDRAW):
        cls = IssuerDeposit if kind == KIND_ISSUER_DEPOSIT else IssuerWithdraw
        return k, kind, cls(rng.randint(1, 10**6))
    if kind == KIND_JOB_SUBMIT:
        j = real_job()[0].job if rng.random() < 0.5 else SimpleNamespace(h_a=b"a" * 32, h_b=b"b" * 32)
        return (
            k,
            kind,
            JobSubmit(j.h_a, j.h_b, 16, 512, 16, rng.randint(1, 600), height + rng.randint(1, 8), j.h_a, j.h_b),
        )
    if kind == KIND_JOB_CLAIM:
        open_ = [j for j, r in live_jobs(view).items() if r.status_name == "open"]
        return k, kind, JobClaim(rng.choice(open_) if open_ else bytes(32), 10**3 + rng.randint(0, 100))
    if kind == KIND_JOB_RESULT:
        mine = [(j, r) for j, r in live_jobs(view).items() if r.status_name == "claimed" and r.miner == k.address]
        if not mine:
            return k, kind, JobResult(bytes(32), b"c" * 32, b"c" * 32)
        jid, rec = rng.choice(mine)
        prep, h_c = real_job()
        cert = None
        if rec.h_a == prep.job.h_a and rng.random() < 0.7:  # a real job: usually with a work certificate
            cert = work_cert(view, height, k.address, rng.randrange(1 << 30))
        return k, kind, JobResult(jid, h_c, h_c, cert)
    return k, kind, Transfer(rng.choice(ALL).address, rng.randint(1, 10**4))


@functools.lru_cache(maxsize=1)
def real_job():
    """A 16x512x16 job with real operands (4 tiles of 8 x 8): its prepared operands and H_C."""
    from testkit.jobs import job_operands
    from pouw.commit import commit_result
    from pouw.miner import prepare_job

    a, b, c, _ = job_operands(11, 16, 512, 16)
    return prepare_job(a, b, CFG.pow.params()), commit_result(c)


def work_cert(view, height: int, miner: bytes, nonce: int) -> WorkCert | None:
    """An honest pass over the real job under a template of this chain at `height`; its share, if any."""
    from chain.block import Header
    from chain.hashing import ZERO_HASH
    from pouw.miner import mine_job
    from pouw.share import best_share

    prep = real_job()[0]
    params = CFG.pow.params()
    tpl = Header(
        CFG.version,
        CFG.chain_id,
        height,
        view.source.block_hash_at(height - 1),
        0,
        1,
        ZERO_HASH,
        ZERO_HASH,
        miner,
        prep.job,
        nonce,
    ).template
    res = mine_job(tpl, prep.job, prep.a, prep.b, 1, params, prepared=prep, recover_c=False, max_proofs=0)
    share = best_share(res, prep, params)
    return WorkCert(tpl, share.encode()) if share is not None else None


def live_jobs(view) -> dict:
    """Live jobs of a StateOverlay over a MemoryState, the overlay's writes on top."""
    out = {j: r for j, r in view.source.jobs.items() if r.live}
    out.update({j: r for j, r in view.jobs.items()})
    return {j: r for j, r in sorted(out.items()) if r.live}


def fund_txs(view) -> list[Transaction]:
    fk = faucet_key()
    n = view.get(fk.address).nonce
    return [
        Transaction(KIND_TRANSFER, CFG.chain_id, n + i, fk.pubkey, 0, Transfer(k.address, 10**8)).signed(fk)
        for i, k in enumerate(ALL)
    ]


def random_block_txs(rng: random.Random, state: MemoryState, height: int, n: int) -> list[Transaction]:
    """Up to n random transactions that apply in order on `state` at `height` (invalid ones dropped)."""
    ov = StateOverlay(state.get, state, CFG, height)
    out = []
    for _ in range(n):
        key, kind, payload = random_tx(rng, ov, height)
        tx = Transaction(
            kind, CFG.chain_id, ov.get(key.address).nonce, key.pubkey, rng.choice([0, 0, 3]), payload
        ).signed(key)
        try:
            check_tx(tx, CFG.chain_id, CFG.max_tx_bytes, check_sig=False)
            ov.apply_tx(tx)
        except TxError:
            continue
        out.append(tx)
    return out


def undo_in_memory(after: MemoryState, diff) -> MemoryState:
    """The state a diff's 'before' side describes (what the stored undo data holds)."""
    s = after.copy()
    for a, acct in diff.before.items():
        if acct.empty:
            s.accounts.pop(a, None)
        else:
            s.accounts[a] = acct
    for j, r in diff.jobs_before.items():
        if r is None:
            s.jobs.pop(j, None)
        else:
            s.jobs[j] = r
    for k, v in diff.econ_before.items():
        if v is None:
            s.econ.pop(k, None)
        else:
            s.econ[k] = v
    s.supply = diff.supply_before
    return s


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_random_economy_conserves_and_diffs_undo_exactly(seed):
    rng = random.Random(seed)
    sim = EconSim(CFG)
    for tx in fund_txs(sim.st):
        assert sim.add(tx) is None
    sim.end_block()
    kinds = set()
    for _ in range(rng.randint(8, 25)):
        before = sim.st.copy()
        for tx in random_block_txs(rng, sim.st, sim.next_height, rng.randint(0, 25)):
            assert sim.add(tx) is None
            kinds.add(tx.kind)
        diff = sim.end_block()  # asserts conservation of tokens and of every issuer's credits
        back = undo_in_memory(sim.st, diff)
        assert back.accounts == before.accounts and back.jobs == before.jobs
        assert back.econ == before.econ and back.supply == before.supply
    assert kinds  # the generator produced applicable transactions


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32))
def test_economy_across_forks_reorgs_and_invalidation(tmp_path_factory, seed):
    """Random economy blocks on a random tree of forks, imported in random topological order: after
    every import the stored accounts, jobs and economy records equal the control replay of the tip and
    conservation holds; invalidating block 1 undoes everything back to the genesis economy."""
    rng = random.Random(seed)
    b = ChainBuilder(CFG)
    first = b.mine(b.genesis.hash, USERS[0].address, fund_txs(b.states[b.genesis.hash]))
    blocks = [first]
    for _ in range(rng.randint(4, 10)):
        parent = rng.choice(blocks)
        st_ = b.states[parent.hash]
        txs = random_block_txs(rng, st_, parent.height + 1, rng.randint(0, 15))
        blocks.append(b.mine(parent.hash, rng.choice(ALL).address, txs, nonce=rng.randrange(1 << 20)))
    order = list(blocks)
    rng.shuffle(order)
    order.sort(key=lambda x: x.height)
    d = tmp_path_factory.mktemp("econ")
    with ChainState.open(d, CFG, clock=lambda: NOW) as cs:
        for blk in order:
            cs.submit_block(blk)
            ctrl = b.states[cs.tip.hash]
            assert dict(cs.scan_econ(b"")) == ctrl.econ
            assert cs.accounts() == ctrl.accounts and cs.jobs() == ctrl.jobs
            cs.check_conservation()
        tip = cs.tip.hash
    # verify replays the economy from genesis; reindex rebuilds it from the stored blocks
    assert verify_datadir(d, CFG, check_proofs=False).tip == tip
    from chain.store import Store

    st = Store(d / "chaindata")
    with st.batch() as wb:
        wb.put(b"e" + b"P" + bytes(20), b"\x05")  # a spend-only balance out of nowhere
    st.close()
    with pytest.raises(VerifyError) as ei:
        verify_datadir(d, CFG, check_proofs=False)
    assert ei.value.reason == "bad-economy"
    reindex_datadir(d, CFG)
    with ChainState.open(d, CFG, clock=lambda: NOW) as cs:
        assert cs.tip.hash == tip and dict(cs.scan_econ(b"")) == b.states[tip].econ
        cs.invalidate_block(first.hash)
        g = b.states[b.genesis.hash]
        assert dict(cs.scan_econ(b"")) == g.econ and cs.accounts() == g.accounts
        cs.check_conservation()
