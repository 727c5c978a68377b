"""Issue 14's holes seen from the nodes (in-process regtest devnet, real sockets): a miner never bonds a
job whose operands it cannot fetch and check, results are relayed only with their C, challenges are
answered by the miner's node, a griefer's claim only delays the honest miner, the fee floor is visible
and respected, and a result reaches the client one block after the submit. Conservation is asserted
on every node at the end of each test."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from chain.errors import ValidationError
from chain.jobs import job_price
from chain.keys import PrivateKey
from chain.tx import make_job_claim, make_job_result, make_job_submit
from node.blobs import encode_array
from node.client.sdk import Client
from testkit.nodes import pause_mining, set_mining, start_node, wait_for

from test_jobs_e2e import FUND, exact, fund, job_status, operands, run, stop_all

CLIENT = PrivateKey.from_phrase(b"jobs node client")
GRIEFER = PrivateKey.from_phrase(b"jobs node griefer")


async def pair(tmp_path, gw_kw=None, interval=0.25, **miner_kw):
    gw = await start_node(tmp_path / "gw", **(gw_kw or {}))
    m0 = await start_node(tmp_path / "m0", mine=True, interval=interval, peers=[gw.listen_addr], **miner_kw)
    await wait_for(lambda: len(gw.p2p.ready_peers) >= 1 and len(m0.p2p.ready_peers) >= 1, 20, what="peering")
    return gw, m0


def conserved(*nodes):
    for n in nodes:
        n.chain.check_conservation()
        assert n.chain.supply_totals().conserved


def padded_job(cl: Client, a, b):
    ap, bp, shape, job = cl.prepare(a, b)
    return ap, bp, job


@pytest.mark.timeout(120)
def test_hole2_miner_never_bonds_a_job_it_cannot_fetch(tmp_path):
    """Operands nobody serves: the miner's node tries to fetch them and never claims (no bond at risk);
    once the client uploads them (each checked against H_A / H_B), the same node takes the job."""

    async def main():
        gw, m0 = await pair(tmp_path)
        try:
            await fund(gw, CLIENT)
            cl = Client(gw.url)
            a, b = operands()
            ap, bp, job = await asyncio.to_thread(padded_job, cl, a, b)
            cfg = gw.cfg
            tx = make_job_submit(
                CLIENT,
                cfg.chain_id,
                gw.mempool.pending_nonce(CLIENT.address),
                job,
                job_price(cfg, job.m, job.k, job.n),
                gw.chain.height + 60,
                job.h_a,
                job.h_b,
                1000,
            )
            gw.add_tx(tx)
            await wait_for(lambda: gw.chain.get_job(tx.txid) is not None, 30, what="submit mined")
            h0 = m0.chain.height
            await wait_for(lambda: m0.chain.height >= h0 + 8, 60, what="blocks")
            rec = gw.chain.get_job(tx.txid)
            assert rec.status_name == "open" and m0.paid_jobs.claims == 0
            assert not any(e.tx.kind == 6 for e in m0.mempool.entries.values())
            # a blob that does not commit to the address is refused; the right ones are accepted
            with pytest.raises(Exception) as e:
                await asyncio.to_thread(cl.put_blob, encode_array(bp), job.h_a)
            assert "blob-hash-mismatch" in str(e.value)
            await asyncio.to_thread(cl.put_blob, encode_array(ap), job.h_a)
            await asyncio.to_thread(cl.put_blob, encode_array(bp), job.h_b)
            await wait_for(
                lambda: gw.chain.get_job(tx.txid).status_name in ("resulted", "released"),
                60,
                what="the job taken once its operands are served",
            )
            assert gw.chain.get_job(tx.txid).miner == m0.node_key.address
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(120)
def test_hole1_result_relayed_only_with_c_and_challenge_answered(tmp_path):
    """A node refuses a result whose C it does not hold (`job-result-unavailable`); the honest miner's
    node answers the client's challenge on chain and is paid after the new window."""

    async def main():
        gw, m0 = await pair(tmp_path)
        try:
            await fund(gw, CLIENT)
            cl = Client(gw.url)
            a, b = operands()
            res = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, None, True, timeout=60)
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))
            assert (await asyncio.to_thread(res.confirm, 60)).outcome == "confirmed"  # the result mined
            jid = bytes.fromhex(res.job_id)
            rec = gw.chain.get_job(jid)
            assert rec.blob_c == rec.h_c and gw.blobs.has(rec.h_c)  # the gateway holds C: it relayed
            # a result for C nobody holds is not admitted (nor relayed, nor mined)
            cfg = gw.cfg
            fake = b"\x17" * 32
            bogus = make_job_result(m0.node_key, cfg.chain_id, 99, jid, fake, fake)
            with pytest.raises(ValidationError) as e:
                gw.add_tx(bogus)
            assert e.value.reason == "job-result-unavailable"
            # data availability: the client challenges, the miner's node answers with the sampled rows
            await asyncio.to_thread(cl.challenge_job, CLIENT, res.job_id)
            await wait_for(lambda: gw.chain.get_job(jid).challenge_height > 0, 30, what="challenge mined")
            await wait_for(lambda: gw.chain.get_job(jid).answer_height > 0, 30, what="answer mined")
            rec = gw.chain.get_job(jid)
            assert rec.status_name in ("resulted", "released") and rec.answer_height > rec.challenge_height
            await wait_for(lambda: job_status(gw, jid) == "released", 60, what="release")
            assert gw.chain.get_account(CLIENT.address).balance == FUND - res.fee - 2 * 1000
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(150)
def test_hole3_griefer_claim_lapses_and_the_miner_retries(tmp_path):
    async def main():
        gw, m0 = await pair(tmp_path)
        try:
            await fund(gw, CLIENT)
            await fund(gw, GRIEFER)
            cl = Client(gw.url)
            a, b = operands()
            await pause_mining([m0])
            sub = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, None, False)
            jid = bytes.fromhex(sub.job_id)
            cfg = gw.cfg
            bond = cfg.jobs.min_bond
            gw.add_tx(make_job_claim(GRIEFER, cfg.chain_id, 0, jid, bond, 5000))  # on the pending submit
            await wait_for(lambda: jid in m0.mempool and len(m0.mempool) >= 2, 20, what="relay")
            set_mining([m0], True)
            await wait_for(
                lambda: (r := gw.chain.get_job(jid)) is not None and r.status_name == "claimed",
                30,
                what="griefer's claim mined",
            )
            assert gw.chain.get_job(jid).miner == GRIEFER.address
            await wait_for(
                lambda: gw.chain.get_job(jid).status_name in ("resulted", "released"),
                60,
                what="the honest miner takes the reopened job",
            )
            rec = gw.chain.get_job(jid)
            assert rec.miner == m0.node_key.address
            assert gw.chain.get_account(GRIEFER.address).balance == FUND - bond - 5000
            res = await asyncio.to_thread(cl.wait_job, sub, CLIENT, timeout=60)
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(120)
def test_hole4_fee_floor_visible_and_respected(tmp_path):
    async def main():
        floor = "1/1000"  # ten times the regtest going rate
        gw, m0 = await pair(tmp_path, gw_kw={"min_job_fee_rate": floor}, min_job_fee_rate=floor)
        try:
            await fund(gw, CLIENT)
            cl = Client(gw.url)
            a, b = operands()
            _, _, job = await asyncio.to_thread(padded_job, cl, a, b)
            going = job_price(gw.cfg, job.m, job.k, job.n)  # the chain's going rate: below this floor
            cheap = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, going, False)
            st = await asyncio.to_thread(cl.job_status, cheap.job_id)
            macs = cheap.padded[0] * cheap.padded[1] * cheap.padded[2]
            await wait_for(lambda: gw.chain.get_job(bytes.fromhex(cheap.job_id)) is not None, 30, what="mined")
            st = await asyncio.to_thread(cl.job_status, cheap.job_id)
            assert st["below_floor"] is True and st["floor_fee"] == -(-macs // 1000) > st["fee"]
            listed = await asyncio.to_thread(cl.jobs, "open")
            assert [j["below_floor"] for j in listed if j["job_id"] == cheap.job_id] == [True]
            dear = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, st["floor_fee"], True, timeout=60)
            assert np.array_equal(dear.c.astype(np.int64), exact(a, b))
            assert gw.chain.get_job(bytes.fromhex(cheap.job_id)).status_name == "open"  # still nobody's
            # C may come before the submit is mined (a throttled miner computes at once): the record first
            await wait_for(lambda: gw.chain.get_job(bytes.fromhex(dear.job_id)) is not None, 30, what="dear mined")
            assert (await asyncio.to_thread(cl.job_status, dear.job_id))["below_floor"] is False
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(120)
def test_latency_c_served_within_one_block_of_the_submit(tmp_path):
    """The miner takes the submit from the mempool, computes, and posts claim and result together; the
    gateway fetches C before it admits the result, so the client can check C (`pending_result`) while
    the chain is at most one block past the submit's block, and the result is mined in one block with
    its claim. (Blocks every 0.5 s at least: regtest blocks are otherwise faster than an HTTP fetch.)"""

    async def main():
        gw, m0 = await pair(tmp_path, interval=0.5)
        try:
            await fund(gw, CLIENT)
            cl = Client(gw.url)
            for _ in range(3):
                a, b = operands()
                sub = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, None, False)
                jid = bytes.fromhex(sub.job_id)
                while True:
                    st = await asyncio.to_thread(cl.job_status, sub.job_id)
                    height = gw.chain.height
                    if st.get("pending_result") or st["status"] in ("resulted", "released"):
                        break
                    await asyncio.sleep(0.02)
                h_c = (st.get("pending_result") or {}).get("h_c") or st["h_c"]
                c = await asyncio.to_thread(cl.get_blob, h_c)  # checked against H_C by the SDK
                from node.blobs import decode_array

                assert np.array_equal(decode_array(c)[:20, :12].astype(np.int64), exact(a, b))
                await wait_for(
                    lambda: (r := gw.chain.get_job(jid)) is not None and r.result_height > 0, 30, what="result mined"
                )
                rec = gw.chain.get_job(jid)
                assert height <= rec.submit_height + 1, (height, rec.submit_height)
                assert rec.claim_height == rec.result_height <= rec.submit_height + 2
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(120)
def test_hole5_repeated_job_served_from_the_miners_cache(tmp_path):
    """docs/jobs.md, Repeated jobs: a second job with the same operands is settled on its own; the miner
    answers it from the C it already holds (no second pass) and both clients' results verify."""

    async def main():
        gw, m0 = await pair(tmp_path)
        try:
            await fund(gw, CLIENT)
            cl = Client(gw.url)
            a, b = operands()
            r1 = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, None, True, timeout=60)
            r2 = await asyncio.to_thread(cl.submit_job, CLIENT, a, b, None, True, timeout=60)
            assert r1.job_id != r2.job_id and r1.h_c == r2.h_c
            assert np.array_equal(r2.c.astype(np.int64), exact(a, b))
            assert m0.paid_jobs.reused == 1
            for r in (r1, r2):
                jid = bytes.fromhex(r.job_id)
                await wait_for(lambda: job_status(gw, jid) == "released", 60, what="release")
            assert gw.chain.get_account(CLIENT.address).balance == FUND - r1.fee - r2.fee - 2 * 1000
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


def test_min_job_fee_rate_flag(tmp_path, capsys):
    from fractions import Fraction

    from chain.config import load_config
    from node.cli import main
    from node.server.jobinfo import fee_floor

    assert main(["node", "--datadir", str(tmp_path / "d"), "--network", "regtest", "--min-job-fee-rate", "abc"]) == 2
    assert "--min-job-fee-rate 'abc'" in capsys.readouterr().err
    assert main(["node", "--datadir", str(tmp_path / "d"), "--network", "regtest", "--min-job-fee-rate", "-1"]) == 2
    cfg = load_config("regtest")
    assert fee_floor(None, cfg) == Fraction(cfg.jobs.rate_num, cfg.jobs.rate_den)
    assert fee_floor("0.0005", cfg) == fee_floor("1/2000", cfg) == Fraction(1, 2000)
