"""Invalid-block catalogue: one test per reject reason (feature_block style)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from chain.block import Block, tx_root
from chain.chainstate import ChainState
from chain.config import load_config
from chain.encoding import encode
from chain.errors import ValidationError
from chain.keys import PrivateKey
from chain.synthetic import ChainBuilder, make_keys
from chain.tx import Transaction, Transfer, make_transfer

CFG = load_config("regtest")
NOW = CFG.genesis_timestamp + 10**6
KEYS = make_keys(4)
MINER = PrivateKey.from_phrase(b"miner").address


@pytest.fixture(scope="module")
def env():
    b = ChainBuilder(CFG)
    base = b.chain(b.genesis.hash, 3, MINER, keys=KEYS, txs_per_block=3, rng=random.Random(7))
    txs = b.random_transfers(base[-1].hash, KEYS, 4, random.Random(8))
    good = b.mine(base[-1].hash, MINER, txs)
    return b, base, good


@pytest.fixture
def cs(tmp_path, env):
    b, base, _ = env
    c = ChainState.open(tmp_path, CFG, clock=lambda: NOW)
    for blk in base:
        c.submit_block(blk)
    yield c
    c.close()


def rejects(cs: ChainState, blk: Block | bytes, reason: str) -> ValidationError:
    tip = cs.tip.hash
    with pytest.raises(ValidationError) as ei:
        cs.submit_block(blk)
    assert ei.value.reason == reason, ei.value
    assert cs.tip.hash == tip
    cs.check_conservation()
    return ei.value


def with_txs(env, txs, **hdr) -> Block:
    """The good block's header over other transactions (root fixed, proof re-mined)."""
    b, _, good = env
    h = b.remine(good.header, tx_root=tx_root(list(txs)), **hdr)
    return Block(h, tuple(txs))


def test_good_block_accepted(cs, env):
    assert cs.submit_block(env[2]).status == "active"


# --- header proof layer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("version", 1, "bad-version"),
        ("chain_id", 1, "bad-chainid"),
        ("target", CFG.pow_limit + 1, "bad-target-range"),
    ],
)
def test_header_fields(cs, env, field, value, reason):
    b, _, good = env
    rejects(cs, Block(b.remine(good.header, **{field: value}), good.txs), reason)


def test_nonce_is_bound_by_the_proof(cs, env):
    """The nonce is in the template: the same proof under another nonce names another job_key."""
    _, _, good = env
    rejects(cs, Block(replace(good.header, nonce=good.header.nonce + 1), good.txs), "bad-pow-template")


def test_nonce_outside_u64_is_not_canonical(cs, env):
    _, _, good = env
    lst = good.header.to_list()
    lst[10] = -1  # msgpack has no integer above 2^64 - 1; a negative one is not a u64
    rejects(cs, encode([lst, [t.to_list() for t in good.txs]]), "bad-blk-encoding")


def test_nonce_changes_noise_not_operands(env):
    """Attempts at one height share operands and commitments (filler_seed excludes nonce, job, time and
    transactions) while each nonce draws a new job_key, hence new noise and tickets."""
    from chain.mining import filler_job, filler_seed, mine_filler_once
    from pouw.noise import job_key

    b, _, good = env
    h0 = good.header
    h1 = replace(h0, nonce=h0.nonce + 7, timestamp=h0.timestamp + 1, tx_root=bytes(32))
    assert filler_seed(h0) == filler_seed(h1)
    assert filler_seed(replace(h0, height=h0.height + 1)) != filler_seed(h0)
    assert filler_seed(replace(h0, miner=bytes(20))) != filler_seed(h0)
    prep = filler_job(CFG, h0, b.params)
    assert prep.job == h0.job
    t0 = replace(h0, proof=b"").template
    t1 = replace(h0, nonce=h0.nonce + 1, proof=b"").template
    assert job_key(t0) != job_key(t1)
    found, macs = mine_filler_once(CFG, h0, b.params, None, h0.nonce + 1, prepared=prep)
    assert found is not None and found.nonce == h0.nonce + 1 and found.job == h0.job  # every tile wins on regtest
    assert macs == prep.job.macs and found.proof != h0.proof


def test_job_too_small(cs, env):
    b, _, good = env
    job = replace(good.header.job, m=8, n=8)
    rejects(cs, Block(replace(good.header, job=job), good.txs), "bad-job-size")


def test_job_bad_shape(cs, env):
    b, _, good = env
    job = replace(good.header.job, k=256)
    rejects(cs, Block(replace(good.header, job=job), good.txs), "bad-job-shape")


def test_pow_proof_from_another_template(cs, env):
    b, _, good = env
    # change a committed field without re-mining: the proof no longer binds to the template
    rejects(cs, Block(replace(good.header, timestamp=good.header.timestamp + 1), good.txs), "bad-pow-template")


def test_pow_truncated_proof(cs, env):
    _, _, good = env
    rejects(cs, Block(good.header.with_proof(good.header.proof[:-5]), good.txs), "bad-pow-encoding")


def _tamper(proof_bytes: bytes, **changes) -> bytes:
    from pouw.proof import TileProof

    return replace(TileProof.decode(proof_bytes), **changes).encode()


def test_pow_tampered_ticket(cs, env):
    _, _, good = env
    from pouw.proof import TileProof

    p = TileProof.decode(good.header.proof)
    t = (int.from_bytes(p.ticket, "big") // 2).to_bytes(32, "big")
    rejects(cs, Block(good.header.with_proof(_tamper(good.header.proof, ticket=t)), good.txs), "bad-pow-ticket")


def test_pow_tampered_rows(cs, env):
    _, _, good = env
    from pouw.proof import TileProof

    p = TileProof.decode(good.header.proof)
    rows = bytes([(p.a_rows[0] + 1) % 64]) + p.a_rows[1:]
    rejects(cs, Block(good.header.with_proof(_tamper(good.header.proof, a_rows=rows)), good.txs), "bad-pow-merkle-a")


def test_pow_high_ticket(cs, env):
    """A proof whose ticket misses the header's (harder) target."""
    b, _, good = env
    from pouw.miner import filler_operands, mine_job, prepare_job
    from chain.mining import filler_seed

    hard = replace(good.header, target=good.header.target >> 40)
    a, bb = filler_operands(filler_seed(hard), CFG.pow.filler_shape)
    prep = prepare_job(a, bb, b.params)
    hard = replace(hard, job=prep.job)
    res = mine_job(
        hard.template, prep.job, a, bb, good.header.target, b.params, prepared=prep, recover_c=False, max_proofs=1
    )
    rejects(cs, Block(hard.with_proof(res.proofs[0].encode()), good.txs), "high-ticket")


# --- block sanity layer -----------------------------------------------------------------------------


def test_bad_encoding(cs, env):
    _, _, good = env
    rejects(cs, b"\x92\x01", "bad-blk-encoding")
    rejects(cs, good.encoded + b"\x00", "bad-blk-encoding")


def test_too_many_txs(tmp_path, env):
    b, base, good = env
    cfg = CFG.with_(max_block_txs=3)
    with ChainState.open(tmp_path, cfg, clock=lambda: NOW) as c:
        for blk in base:
            c.submit_block(blk)
        rejects(c, good, "bad-blk-length")


def test_bad_tx_root_is_not_cached(cs, env):
    b, _, good = env
    mutated = Block(good.header, good.txs[:-1])
    rejects(cs, mutated, "bad-txnmrklroot")
    assert cs.submit_block(good).status == "active"  # the real block is still accepted


def test_duplicate_txs(cs, env):
    _, _, good = env
    rejects(cs, with_txs(env, good.txs + good.txs[:1]), "bad-txns-duplicate")


def test_bad_signature(cs, env):
    _, _, good = env
    t = good.txs[0]
    forged = replace(t, signature=good.txs[1].signature)
    rejects(cs, with_txs(env, (forged,) + good.txs[1:]), "bad-txn-sig")


def test_cross_chain_tx(cs, env):
    _, _, good = env
    other = make_transfer(KEYS[0], CFG.chain_id + 1, 0, KEYS[1].address, 5)
    rejects(cs, with_txs(env, (other,)), "bad-txn-chainid")


def test_unknown_kind(cs, env):
    t = Transaction(99, CFG.chain_id, 0, KEYS[0].pubkey, 0, [b"x"]).signed(KEYS[0])  # no kind 99 (4 is the market's)
    t2 = Transaction.decode(t.encoded)
    rejects(cs, with_txs(env, (t2,)), "bad-txn-kind")


def test_zero_amount(cs, env):
    t = make_transfer(KEYS[0], CFG.chain_id, 0, KEYS[1].address, 0)
    rejects(cs, with_txs(env, (t,)), "bad-txn-amount")


# --- context layer ----------------------------------------------------------------------------------


def test_unknown_parent(cs, env):
    b, _, good = env
    e = rejects(cs, Block(b.remine(good.header, prev_hash=b"\x42" * 32), good.txs), "prev-blk-not-found")
    assert e.retry_later and not e.punish


def test_invalid_parent(cs, env):
    b, _, good = env
    bad = Block(b.remine(good.header, state_root=b"\x11" * 32), good.txs)
    rejects(cs, bad, "bad-state-root")
    child_hdr = b.remine(good.header, prev_hash=bad.hash, height=good.height + 1, tx_root=tx_root([]))
    rejects(cs, Block(child_hdr, ()), "bad-prevblk")
    rejects(cs, bad, "duplicate-invalid")


def test_bad_height(cs, env):
    b, _, good = env
    rejects(cs, Block(b.remine(good.header, height=good.height + 1), good.txs), "bad-height")


def test_bad_difficulty(cs, env):
    b, _, good = env
    rejects(cs, Block(b.remine(good.header, target=good.header.target - 1), good.txs), "bad-diffbits")


def test_time_too_old(cs, env):
    b, base, good = env
    mtp = sorted(x.header.timestamp for x in [b.genesis] + base)[2]
    rejects(cs, Block(b.remine(good.header, timestamp=mtp), good.txs), "time-too-old")


def test_time_too_new_is_not_punished(tmp_path, env):
    b, base, good = env
    clock = [good.header.timestamp - CFG.max_future_drift - 1]
    with ChainState.open(tmp_path, CFG, clock=lambda: clock[0]) as c:
        for blk in base:
            c.submit_block(blk)
        e = rejects(c, good, "time-too-new")
        assert e.retry_later and not e.punish
        clock[0] += 1
        assert c.submit_block(good).status == "active"  # not cached as invalid


# --- state layer ------------------------------------------------------------------------------------


def test_bad_nonce(cs, env):
    b, base, _ = env
    n = b.states[base[-1].hash].get(KEYS[0].address).nonce
    t = make_transfer(KEYS[0], CFG.chain_id, n + 1, KEYS[1].address, 5)
    rejects(cs, with_txs(env, (t,)), "bad-txn-nonce")


def test_replayed_tx(cs, env):
    b, base, _ = env
    old = next(t for blk in base for t in blk.txs)
    rejects(cs, with_txs(env, (old,)), "bad-txn-nonce")


def test_insufficient_balance(cs, env):
    b, base, _ = env
    poor = PrivateKey.from_phrase(b"poor")
    t = make_transfer(poor, CFG.chain_id, 0, KEYS[1].address, 5)
    rejects(cs, with_txs(env, (t,)), "bad-txn-balance")


def test_bad_state_root(cs, env):
    b, _, good = env
    rejects(cs, Block(b.remine(good.header, state_root=b"\x11" * 32), good.txs), "bad-state-root")
    assert cs.chain_tips()[-1].status == "invalid" or any(t.status == "invalid" for t in cs.chain_tips())


def test_extra_subsidy(cs, env):
    """A miner cannot pay itself more than subsidy + fees: the state root would differ."""
    b, base, good = env
    st = b.states[base[-1].hash]
    from chain.state import apply_block

    diff = apply_block(st.get, st.supply, good.txs, MINER, CFG.subsidy(good.height) + 1)
    rejects(cs, Block(b.remine(good.header, state_root=diff.state_root), good.txs), "bad-state-root")


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda p: {"a_rows": bytes([100]) + p.a_rows[1:]}, "bad-pow-range"),
        (lambda p: {"ti": 1000}, "bad-pow-tile"),
        (lambda p: {"b_cols": bytes([(p.b_cols[0] + 1) % 64]) + p.b_cols[1:]}, "bad-pow-merkle-b"),
    ],
)
def test_pow_tampered_fields(cs, env, change, reason):
    _, _, good = env
    from pouw.proof import TileProof

    p = TileProof.decode(good.header.proof)
    proof = _tamper(good.header.proof, **change(p))
    rejects(cs, Block(good.header.with_proof(proof), good.txs), reason)


def test_header_too_large(tmp_path, env):
    b, base, good = env
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as c:
        for blk in base:
            c.submit_block(blk)
    cfg = CFG.with_(max_header_bytes=len(good.header.encoded) - 1)
    with ChainState.open(tmp_path, cfg, clock=lambda: NOW) as c:
        rejects(c, good, "bad-header-length")


def test_tx_too_large(tmp_path, env):
    b, base, good = env
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as c:
        for blk in base:
            c.submit_block(blk)
    with ChainState.open(tmp_path, CFG.with_(max_tx_bytes=100), clock=lambda: NOW) as c:
        rejects(c, good, "bad-txn-size")


def test_fee_out_of_range(cs, env):
    t = Transaction(0, CFG.chain_id, 0, KEYS[0].pubkey, 2**63, Transfer(KEYS[1].address, 1)).signed(KEYS[0])
    rejects(cs, with_txs(env, (t,)), "bad-txn-fee")
