"""C in the client's hands before its result is mined, and what the client does when the chain then
disagrees or C is withheld (docs/jobs-client.md, Waiting, confirmation and settlement; Data availability).

In-process regtest nodes with real sockets: a non-mining gateway the client talks to, and one mining node.
Blocks are held back where a test needs an order of events (the miner paused right after it posted its
claim and result, or a miner that takes no jobs paused while the test plays an adversarial miner), so every
assertion is about heights and chain state, never about time. Conservation is asserted on every node.
"""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest

from chain.jobs import challenge_row_count, challenge_rows, required_bond
from chain.keys import PrivateKey
from chain.tx import make_job_answer, make_job_claim, make_job_result
from node.blobs import encode_array
from node.client.sdk import Client, JobFailed
from testkit.nodes import set_mining, start_node, wait_for
from pouw.commit import commit_result, open_result_rows
from tests.test_jobs_client import cli, wallet_file
from tests.test_jobs_e2e import FUND, exact, fund, operands, run, stop_all

TX_FEE = 1000


async def nodes_with(tmp_path, *, take_jobs: bool, interval: float = 0.25):
    gw = await start_node(tmp_path / "gw")
    m0 = await start_node(tmp_path / "m0", mine=True, interval=interval, peers=[gw.listen_addr], take_jobs=take_jobs)
    await wait_for(lambda: len(gw.p2p.ready_peers) >= 1 and len(m0.p2p.ready_peers) >= 1, 20, what="peering")
    return gw, m0


def conserved(*nodes):
    for n in nodes:
        n.chain.check_conservation()
        assert n.chain.supply_totals().conserved


def pause_after_posting(m0) -> None:
    """The miner stops producing blocks right after it sent claim and result: they wait in the mempools."""
    orig = m0.paid_jobs.finished

    async def finished(a, c):
        await orig(a, c)
        m0.miner.enabled = False

    m0.paid_jobs.finished = finished


def result_height(node, jid: bytes) -> int:
    rec = node.chain.get_job(jid)
    return rec.result_height if rec is not None else 0


@pytest.mark.timeout(150)
def test_sdk_hands_c_over_before_the_result_is_mined_then_confirms_and_settles(tmp_path):
    async def main():
        gw, m0 = await nodes_with(tmp_path, take_jobs=True)
        try:
            key = PrivateKey.from_phrase(b"latency client 1")
            await fund(gw, key)
            pause_after_posting(m0)
            cl = Client(gw.url)
            a, b = operands()
            msgs: list[str] = []
            res = await asyncio.to_thread(cl.submit_job, key, a, b, None, True, timeout=60, progress=msgs.append)
            jid = bytes.fromhex(res.job_id)
            # C is verified and in hand; the chain has no result yet (the miner is paused after posting)
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))
            assert res.confirmed is False and res.status in ("pending", "open", "claimed")
            assert result_height(gw, jid) == 0 and res.receipt is None
            assert res.miner == m0.node_key.address.hex()
            assert any("from the pending result" in x for x in msgs)
            set_mining([m0], True)
            st = await asyncio.to_thread(res.confirm, 60)
            assert st.outcome == "confirmed" and res.confirmed
            rc = res.receipt
            assert rc["result"]["h_c"] == res.h_c and rc["result"]["height"] > res.height  # mined after C in hand
            assert rc["submit"]["height"] <= rc["claim"]["height"] <= rc["result"]["height"]
            st = await asyncio.to_thread(res.settle, 60)
            assert st.outcome == "released" and res.receipt["settled"]["status"] == "released"
            assert gw.chain.get_account(key.address).balance == FUND - res.fee - TX_FEE
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(180)
def test_cli_writes_c_before_the_result_is_mined_and_reports_the_settlement(tmp_path, capsys):
    """`job submit --wait --out`: the C file exists while the miner is paused with its result unmined; the
    JSON line then reports the mined result (c_at_height below its block). `job wait --settle` of the same
    job waits for the settlement and reports it."""

    async def main():
        gw, m0 = await nodes_with(tmp_path, take_jobs=True)
        try:
            key = PrivateKey.from_phrase(b"latency client 2")
            await fund(gw, key)
            w = wallet_file(tmp_path, key)
            a, b = operands(16, 80, 8)
            np.save(tmp_path / "a.npy", a)
            np.save(tmp_path / "b.npy", b)
            out = str(tmp_path / "c.npy")
            pause_after_posting(m0)
            task = asyncio.ensure_future(
                cli(
                    capsys,
                    "job",
                    "submit",
                    "--node",
                    gw.url,
                    "--wallet",
                    w,
                    "--a",
                    str(tmp_path / "a.npy"),
                    "--b",
                    str(tmp_path / "b.npy"),
                    "--wait",
                    "--out",
                    out,
                    "--timeout",
                    "90",
                )
            )
            await wait_for(lambda: os.path.exists(out) or task.done(), 90, what="C written")
            jobs = [j for j in gw.chain.jobs()] + [e.tx.txid for e in gw.mempool.entries.values() if e.tx.kind == 1]
            assert len(set(jobs)) == 1 and result_height(gw, jobs[0]) == 0  # written before the result is mined
            assert not m0.miner.enabled
            set_mining([m0], True)
            rc, stdout, err = await task
            assert rc == 0, err
            doc = json.loads(stdout.strip().splitlines()[-1])
            assert np.array_equal(np.load(out).astype(np.int64), exact(a, b))
            assert doc["verified"] and doc["confirmed"] and doc["settlement"]["outcome"] == "confirmed"
            assert doc["c_at_height"] < doc["receipt"]["result"]["height"] == result_height(gw, jobs[0])
            assert "C written to" in err and "waiting for the result to be mined" in err
            rc, stdout, err = await cli(
                capsys,
                "job",
                "wait",
                doc["job_id"],
                "--node",
                gw.url,
                "--wallet",
                w,
                "--settle",
                "--timeout",
                "90",
                "--out",
                str(tmp_path / "c2.npy"),
            )
            assert rc == 0, err
            doc2 = json.loads(stdout.strip().splitlines()[-1])
            assert doc2["settlement"]["outcome"] == "released" and doc2["receipt"]["settled"]["status"] == "released"
            assert np.array_equal(np.load(tmp_path / "c2.npy").astype(np.int64), exact(a, b))  # journal's shape
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


# --- a miner the test plays: claims, results, withheld blobs, answers ----------------------------------------
class Adversary:
    """A miner played by the test through the gateway's mempool (blocks come from a node taking no jobs)."""

    def __init__(self, gw, m0, key: PrivateKey):
        self.gw, self.m0, self.key = gw, m0, key
        self.nonce = 0

    def send(self, tx) -> None:
        self.gw.add_tx(tx)
        self.nonce += 1

    def post(self, jid: bytes, c) -> tuple[bytes, object]:
        """Claim and result for `c` (its blob put in the gateway's store, which relays only results it holds)."""
        cfg = self.gw.cfg
        h_c = commit_result(c)
        self.gw.blobs.put(encode_array(c), expect=h_c)
        rec = self.gw.chain.get_job(jid)
        claim = make_job_claim(self.key, cfg.chain_id, self.nonce, jid, required_bond(cfg, rec.fee), TX_FEE)
        self.send(claim)
        result = make_job_result(self.key, cfg.chain_id, self.nonce, jid, h_c, h_c, TX_FEE)
        self.send(result)
        return h_c, (claim, result)

    def withhold(self, h_c: bytes) -> None:
        for n in (self.gw, self.m0):
            p = n.blobs.path(h_c)
            if p.exists():
                p.unlink()

    def answer(self, jid: bytes, c) -> None:
        import torch

        cs = self.gw.chain
        rec = cs.get_job(jid)
        rows = challenge_rows(
            cs.block_hash_at(rec.challenge_height), jid, rec.m, challenge_row_count(cs.cfg, rec.m, rec.n)
        )
        self.send(
            make_job_answer(
                self.key, cs.cfg.chain_id, self.nonce, jid, open_result_rows(torch.as_tensor(c), rows), TX_FEE
            )
        )


async def job_on_chain(gw, m0, cl, key, a, b):
    sub = await asyncio.to_thread(cl.submit_job, key, a, b, None, False)
    jid = bytes.fromhex(sub.job_id)
    await wait_for(lambda: gw.chain.get_job(jid) is not None, 30, what="submit mined")
    return sub, jid


def full_c(sub):
    return (sub.a.numpy().astype(np.int64) @ sub.b.numpy().astype(np.int64)).astype(np.int32)


@pytest.mark.timeout(150)
def test_watcher_disputes_a_mined_result_that_differs_from_the_c_handed_over(tmp_path):
    """C handed over from one pending result; the block then carries another miner's different (wrong) C:
    the SDK's watcher fetches it, disputes it, and the job is slashed in the client's favour."""

    async def main():
        gw, m0 = await nodes_with(tmp_path, take_jobs=False)
        try:
            key, honest, cheat = (PrivateKey.from_phrase(x) for x in (b"latency client 3", b"latency h", b"latency g"))
            for k in (key, honest, cheat):
                await fund(gw, k)
            cl = Client(gw.url)
            a, b = operands()
            sub, jid = await job_on_chain(gw, m0, cl, key, a, b)
            set_mining([m0], False)
            good = full_c(sub)
            h = Adversary(gw, m0, honest)
            h_good, (claim, result) = h.post(jid, good)
            await wait_for(lambda: result.txid in m0.mempool, 30, what="relay")
            res = await asyncio.to_thread(cl.wait_job, sub, key, timeout=60)
            assert res.confirmed is False and res.h_c == h_good.hex() and result_height(gw, jid) == 0
            # the honest pending result is replaced by a wrong one before any block
            for n in (gw, m0):
                n.mempool._remove_from(claim, "test: replaced")
            bad = good.copy()
            bad[:, 0] += 1
            g = Adversary(gw, m0, cheat)
            h_bad, (_, result2) = g.post(jid, bad)
            await wait_for(lambda: result2.txid in m0.mempool, 30, what="relay")
            set_mining([m0], True)
            st = await asyncio.to_thread(res.confirm, 60)
            assert st.outcome == "disputed" and st.dispute_txid, st
            await wait_for(lambda: gw.chain.get_job(jid).status_name == "slashed", 30, what="slashed")
            rec = gw.chain.get_job(jid)
            assert rec.h_c == h_bad and rec.miner == cheat.address and rec.bond > 0
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))  # the client kept the right C
            # the client paid two tx fees (submit, dispute) and got the escrow back plus the cheat's bond
            assert gw.chain.get_account(key.address).balance == FUND - 2 * TX_FEE + rec.bond
            assert gw.chain.get_account(cheat.address).balance == FUND - rec.bond - 2 * TX_FEE
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


async def withheld_result(tmp_path, who: bytes, wrong: bool):
    gw, m0 = await nodes_with(tmp_path, take_jobs=False)
    key, miner = PrivateKey.from_phrase(who + b" client"), PrivateKey.from_phrase(who + b" miner")
    for k in (key, miner):
        await fund(gw, k)
    cl = Client(gw.url)
    sub, jid = await job_on_chain(gw, m0, cl, key, *operands())
    set_mining([m0], False)
    c = full_c(sub)
    if wrong:
        c[:, -1] -= 3  # every row wrong: whichever rows the challenge samples
    adv = Adversary(gw, m0, miner)
    h_c, (_, result) = adv.post(jid, c)
    await wait_for(lambda: result.txid in m0.mempool, 30, what="relay (the peer fetched C first)")
    adv.withhold(h_c)  # from now on nobody serves C
    set_mining([m0], True)
    return gw, m0, key, miner, cl, sub, jid, c, adv


@pytest.mark.timeout(150)
def test_withheld_c_is_challenged_and_an_unanswered_challenge_slashes(tmp_path):
    async def main():
        gw, m0, key, miner, cl, sub, jid, c, adv = await withheld_result(tmp_path, b"latency da1", wrong=False)
        try:
            msgs: list[str] = []
            with pytest.raises(JobFailed) as ei:
                await asyncio.to_thread(cl.wait_job, sub, key, timeout=90, grace_s=0.5, progress=msgs.append)
            e = ei.value
            assert e.reason == "slashed" and e.challenge_txid and "did not answer" in e.message, e
            rec = gw.chain.get_job(jid)
            assert rec.status_name == "slashed" and rec.challenge_height > rec.result_height > 0
            assert rec.answer_height == 0 and rec.closed_height == rec.challenge_height + gw.cfg.jobs.answer_window
            assert any("challenge" in m and "filed" in m for m in msgs)
            r = await asyncio.to_thread(cl.receipt, sub.job_id)
            assert r["challenge"]["txid"] == e.challenge_txid and r["settled"]["status"] == "slashed"
            # one challenge only; the client paid submit + challenge fees and got escrow + bond back
            assert gw.chain.get_account(key.address).balance == FUND - 2 * TX_FEE + rec.bond
            assert gw.chain.get_account(miner.address).balance == FUND - rec.bond - 2 * TX_FEE
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(150)
def test_withheld_c_answered_with_a_wrong_row_is_disputed_from_the_answer(tmp_path):
    async def main():
        gw, m0, key, miner, cl, sub, jid, c, adv = await withheld_result(tmp_path, b"latency da2", wrong=True)
        try:
            task = asyncio.ensure_future(asyncio.to_thread(cl.wait_job, sub, key, timeout=90, grace_s=0.5))
            await wait_for(
                lambda: gw.chain.get_job(jid).challenge_height > 0 or task.done(),
                60,
                what="the client's challenge mined",
            )
            assert not task.done()
            adv.answer(jid, c)  # rows of the wrong C, with valid openings against its H_C
            with pytest.raises(JobFailed) as ei:
                await task
            e = ei.value
            assert e.reason == "wrong-result" and e.dispute_txid and e.challenge_txid, e
            await wait_for(lambda: gw.chain.get_job(jid).status_name == "slashed", 30, what="slashed")
            rec = gw.chain.get_job(jid)
            assert rec.answer_height > rec.challenge_height > rec.result_height > 0
            r = await asyncio.to_thread(cl.receipt, sub.job_id)
            assert r["dispute"]["txid"] == e.dispute_txid and r["answer"]["sender"] == miner.address.hex()
            assert gw.chain.get_account(key.address).balance == FUND - 3 * TX_FEE + rec.bond
            assert gw.chain.get_account(miner.address).balance == FUND - rec.bond - 3 * TX_FEE
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(90)
def test_job_long_poll_answers_on_the_next_block(tmp_path):
    """GET /jobs/{id}?wait=S&status=X&pending=H holds the answer while the job is in that state and answers
    after the next block; a state the client has not seen is answered with the new state."""
    import urllib.error
    import urllib.request

    async def main():
        gw, m0 = await nodes_with(tmp_path, take_jobs=False, interval=0.5)
        try:
            key = PrivateKey.from_phrase(b"latency client 6")
            await fund(gw, key)
            cl = Client(gw.url)
            sub, jid = await job_on_chain(gw, m0, cl, key, *operands())

            def get(q: str) -> dict:
                with urllib.request.urlopen(f"{gw.url}/api/v1/jobs/{sub.job_id}{q}", timeout=60) as r:
                    return json.loads(r.read())

            h0 = gw.chain.height
            d = await asyncio.to_thread(get, "?wait=30&status=open&pending=")
            assert d["status"] == "open" and d["height"] > h0  # held until a block connected
            set_mining([m0], False)
            h1 = gw.chain.height
            d = await asyncio.to_thread(get, "?wait=30&status=claimed&pending=")  # not what the job is: at once
            assert d["status"] == "open" and d["height"] == h1
            with pytest.raises(urllib.error.HTTPError) as ei:
                await asyncio.to_thread(get, "?wait=x&status=open")
            assert ei.value.code == 400
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())


@pytest.mark.timeout(240)
def test_throttled_miner_hands_c_over_within_its_interval_and_keeps_its_block_spacing(tmp_path):
    """A miner waiting out a long mine interval mines a ready paid job at once (issue 14, latency): C is served
    and the pending result is on GET /api/v1/jobs/{id} before the next block; the block that pass found is
    held, so the next block still comes no sooner than the interval, and it is the paid job's block (its
    header proves the client's A·B) carrying the submit; claim and result follow in the block after."""
    import time
    import urllib.request

    interval = 30.0

    async def main():
        gw, m0 = await nodes_with(tmp_path, take_jobs=True)
        try:
            key = PrivateKey.from_phrase(b"latency client 7")
            await fund(gw, key)
            miner = m0.miner
            miner.interval = interval  # from now on: one block per 30 s
            h0, found0, last0 = m0.chain.height, miner.blocks_found, miner.last_block_at
            assert time.monotonic() - last0 < 5  # the miner just found a block: the interval has begun
            await wait_for(lambda: gw.chain.height == m0.chain.height, 20, what="gateway at the miner's tip")
            cl = Client(gw.url)
            a, b = operands()
            res = await asyncio.to_thread(cl.submit_job, key, a, b, None, True, timeout=60)
            jid = bytes.fromhex(res.job_id)
            # C checked and in hand, and no block produced since the interval began
            assert np.array_equal(res.c.astype(np.int64), exact(a, b)) and res.confirmed is False
            assert m0.chain.height == gw.chain.height == h0 and miner.blocks_found == found0
            assert miner.held is not None and miner.held[2] == "paid"  # the pass ran; its block waits

            def get() -> dict:
                with urllib.request.urlopen(f"{gw.url}/api/v1/jobs/{res.job_id}", timeout=30) as r:
                    return json.loads(r.read())

            d = await asyncio.to_thread(get)
            assert d["pending_result"]["h_c"] == res.h_c and d["pending_result"]["miner"] == res.miner
            assert d["height"] == h0 == m0.chain.height
            # the next block: no sooner than the interval; the paid job's block, with the submit in it
            await wait_for(lambda: m0.chain.height > h0, interval + 60, what="the next block")
            assert m0.chain.height == h0 + 1 and miner.blocks_found == found0 + 1 and miner.held is None
            assert miner.last_block_at - last0 >= interval
            blk = m0.chain.get_block(m0.chain.block_hash_at(h0 + 1))
            assert jid in {t.txid for t in blk.txs}
            rec = m0.chain.get_job(jid)
            assert (blk.header.job.m, blk.header.job.k, blk.header.job.n) == (rec.m, rec.k, rec.n)
            miner.interval = 0.25
            st = await asyncio.to_thread(res.confirm, 60)
            assert st.outcome == "confirmed"
            rc = res.receipt
            assert rc["submit"]["height"] == h0 + 1 < rc["claim"]["height"] <= rc["result"]["height"]
            assert rc["result"]["h_c"] == res.h_c
            conserved(gw, m0)
        finally:
            await stop_all([gw, m0])

    run(main())
