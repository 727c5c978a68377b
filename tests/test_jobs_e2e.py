"""Compute jobs end to end on an in-process regtest devnet: SDK (node.client.sdk) -> node API -> mempool ->
miners' paid-job path -> chain settlement, with real loopback sockets.

The SDK is blocking (urllib), so tests call it through asyncio.to_thread while the nodes run in the loop.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from chain.keys import PrivateKey, faucet_key
from chain.tx import make_transfer
from node.blobs import blob_hash, encode_array
from node.client.sdk import Client, JobFailed
from testkit.nodes import record_writes, start_node, wait_for
from pouw.errors import JobError

FUND = 10**12
RNG = np.random.default_rng(7)


def run(coro):
    return asyncio.run(coro)


async def stop_all(nodes):
    for n in nodes:
        await n.stop()


async def fund(node, key: PrivateKey, amount: int = FUND) -> None:
    f = faucet_key()
    nonce = node.mempool.pending_nonce(f.address)
    node.add_tx(make_transfer(f, node.cfg.chain_id, nonce, key.address, amount, 1000))
    await wait_for(lambda: node.chain.get_account(key.address).balance == amount, 30, what="funding")


def job_status(node, jid: bytes) -> str:
    """The job's status on `node`'s chain, "pending" while its submit is not mined (C can be in the client's
    hands before that: a miner computes a job from the mempool)."""
    rec = node.chain.get_job(jid)
    return rec.status_name if rec is not None else "pending"


def operands(m=20, k=70, n=12):
    a = RNG.integers(-64, 65, size=(m, k), dtype=np.int8)
    b = RNG.integers(-64, 65, size=(k, n), dtype=np.int8)
    return a, b


def exact(a, b):
    return a.astype(np.int64) @ b.astype(np.int64)


async def devnet(tmp_path, *, miners=1, cheat=False, take_jobs=True, interval=0.25, **kw):
    """One non-mining gateway node (the client talks to it) and `miners` mining nodes peered with it."""
    gw = await start_node(tmp_path / "gw", **kw)
    nodes = [gw]
    for i in range(miners):
        nodes.append(
            await start_node(
                tmp_path / f"m{i}",
                mine=True,
                interval=interval,
                peers=[gw.listen_addr],
                cheat_jobs=cheat,
                take_jobs=take_jobs,
            )
        )
    await wait_for(lambda: all(len(n.p2p.ready_peers) >= 1 for n in nodes), 20, what="peering")
    return nodes


@pytest.mark.timeout(90)
def test_paid_job_returns_exact_c(tmp_path):
    async def main():
        nodes = await devnet(tmp_path)
        gw, m0 = nodes
        try:
            client_key = PrivateKey.from_phrase(b"e2e client 1")
            await fund(gw, client_key)
            a, b = operands()
            cl = Client(gw.url)
            msgs = []
            res = await asyncio.to_thread(cl.submit_job, client_key, a, b, None, True, timeout=60, progress=msgs.append)
            assert res.c.dtype == np.int32 and res.c.shape == (20, 12)
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))
            assert res.miner == m0.node_key.address.hex()
            assert any("verified" in x for x in msgs)
            # the miner is paid after the challenge window (client silent afterwards)
            jid = bytes.fromhex(res.job_id)
            await wait_for(lambda: job_status(gw, jid) == "released", 30, what="release")
            rec = gw.chain.get_job(jid)
            assert rec.miner == m0.node_key.address and rec.fee == res.fee
            bal = gw.chain.get_account(client_key.address).balance
            assert bal == FUND - res.fee - 1000
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(90)
def test_cheating_miner_is_disputed_and_slashed(tmp_path):
    async def main():
        nodes = await devnet(tmp_path, cheat=True, interval=1.0)
        gw, m0 = nodes
        try:
            client_key = PrivateKey.from_phrase(b"e2e client 2")
            await fund(gw, client_key)
            a, b = operands()
            cl = Client(gw.url)
            with pytest.raises(JobFailed) as ei:
                await asyncio.to_thread(cl.submit_job, client_key, a, b, None, True, timeout=60)
            e = ei.value
            assert e.reason == "wrong-result" and e.dispute_txid
            jid = bytes.fromhex(e.job_id)
            await wait_for(lambda: job_status(gw, jid) == "slashed", 30, what="slashing")
            rec = gw.chain.get_job(jid)
            assert rec.miner == m0.node_key.address and rec.bond == gw.cfg.jobs.min_bond
            # client: paid max fee + 2 tx fees, got back max fee + the miner's bond
            assert gw.chain.get_account(client_key.address).balance == FUND - 2 * 1000 + rec.bond
            assert gw.chain.supply_totals().conserved
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(90)
def test_silent_client_miner_paid_after_window(tmp_path):
    async def main():
        nodes = await devnet(tmp_path)
        gw, m0 = nodes
        try:
            client_key = PrivateKey.from_phrase(b"e2e client 3")
            await fund(gw, client_key)
            a, b = operands(8, 600, 8)
            cl = Client(gw.url)
            sub = await asyncio.to_thread(cl.submit_job, client_key, a, b, 123_456, False)
            assert sub.padded[1] >= 600 and sub.fee == 123_456
            jid = bytes.fromhex(sub.job_id)
            await wait_for(
                lambda: (r := gw.chain.get_job(jid)) is not None and r.status_name == "resulted", 30, what="result"
            )
            rec = gw.chain.get_job(jid)
            assert gw.chain.height <= rec.challenge_until(gw.cfg)
            await wait_for(lambda: job_status(gw, jid) == "released", 30, what="release")
            rec = gw.chain.get_job(jid)
            assert rec.closed_height == rec.result_height + gw.cfg.jobs.challenge_window
            assert rec.miner == m0.node_key.address and jid in m0.paid_jobs.done
            assert gw.chain.get_account(client_key.address).balance == FUND - 123_456 - 1000
            gw.chain.check_conservation()
            # the SDK can still fetch and verify the released result later
            res = await asyncio.to_thread(cl.wait_job, sub, None, timeout=30)
            assert res.status == "released" and np.array_equal(res.c.astype(np.int64), exact(a, b))
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(90)
def test_no_miner_takes_the_job_client_refunded(tmp_path):
    async def main():
        nodes = await devnet(tmp_path, take_jobs=False, interval=0.1)
        gw, m0 = nodes
        try:
            assert m0.paid_jobs is None
            client_key = PrivateKey.from_phrase(b"e2e client 4")
            await fund(gw, client_key)
            a, b = operands()
            cl = Client(gw.url)
            with pytest.raises(JobFailed) as ei:
                await asyncio.to_thread(cl.submit_job, client_key, a, b, None, True, deadline_blocks=5, timeout=60)
            assert ei.value.reason == "refunded"
            rec = gw.chain.get_job(bytes.fromhex(ei.value.job_id))
            assert rec.status_name == "refunded" and rec.closed_height == rec.deadline
            assert gw.chain.get_account(client_key.address).balance == FUND - 1000
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(120)
def test_two_miners_race_exactly_one_paid(tmp_path):
    async def main():
        nodes = await devnet(tmp_path, miners=2, interval=0.3)
        gw, m0, m1 = nodes
        try:
            await wait_for(lambda: len(m0.p2p.ready_peers) >= 1 and len(m1.p2p.ready_peers) >= 1, 20)
            client_key = PrivateKey.from_phrase(b"e2e client 5")
            await fund(gw, client_key)
            a, b = operands()
            cl = Client(gw.url)
            res = await asyncio.to_thread(cl.submit_job, client_key, a, b, None, True, timeout=60)
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))
            jid = bytes.fromhex(res.job_id)
            await wait_for(lambda: job_status(gw, jid) == "released", 30, what="release")
            rec = gw.chain.get_job(jid)
            # The paid miner posted the result. (Both may have: a miner whose claim sat on a fork that later
            # lost a reorg mined and posted too, and its result died with that fork; the chain is what counts.)
            posted = [m.node_key.address for m in (m0, m1) if jid in m.paid_jobs.done]
            assert rec.miner in posted
            # exactly one result on the chain for this job
            results = []
            for h in gw.chain.chain[1:]:
                for t in gw.chain.get_block(h).txs:
                    if t.kind == 2 and t.payload.job_id == jid:
                        results.append(t)
            assert len(results) == 1 and results[0].sender == rec.miner
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(60)
def test_bad_operands_fail_before_paying(tmp_path):
    async def main():
        nodes = await devnet(tmp_path)
        gw = nodes[0]
        try:
            client_key = PrivateKey.from_phrase(b"e2e client 6")
            await fund(gw, client_key)
            cl = Client(gw.url)
            writes = record_writes(cl)
            a, b = operands()
            cases = [
                (a.astype(np.int16), b, "dtype int8"),
                (np.full((4, 70), 65, dtype=np.int8), b, "outside [-64, 64]"),
                (a, np.full((70, 3), -65, dtype=np.int8), "outside [-64, 64]"),
                (a.reshape(1, 20, 70), b, "2-D"),
                (a, b[:60], "inner dimensions disagree"),
                (a[:, ::2], b[:35], "contiguous"),
            ]
            for x, y, msg in cases:
                with pytest.raises(JobError) as ei:
                    await asyncio.to_thread(cl.submit_job, client_key, x, y, None, True)
                assert msg in str(ei.value), (msg, str(ei.value))
            assert writes == [] and gw.blobs.all() == []  # refused before sending anything
            acct = gw.chain.get_account(client_key.address)
            assert acct.balance == FUND and acct.nonce == 0 and len(gw.mempool) == 0
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(60)
def test_blobs_hash_size_and_peer_fetch(tmp_path):
    async def main():
        nodes = await devnet(tmp_path, blob_max_bytes=4096)
        gw, m0 = nodes
        try:
            good = encode_array(np.arange(12, dtype=np.int8).reshape(3, 4))
            h = blob_hash(good, "a").hex()  # its address as an A: H_A
            # a node stores only blobs a job names: uploads carry a signed submit (node/server/blobgate.py)
            payer = PrivateKey.from_phrase(b"e2e blob payer")
            await fund(gw, payer)
            from types import SimpleNamespace
            from chain.tx import make_job_submit

            def names(*hs: str) -> dict:
                a_, b_ = bytes.fromhex(hs[0]), bytes.fromhex(hs[-1])
                job = SimpleNamespace(h_a=a_, h_b=b_, m=4, k=4, n=4)
                tx = make_job_submit(payer, gw.cfg.chain_id, 0, job, 1000, 100, a_, b_, 1000)
                return {"X-Pouw-Job-Tx": tx.encoded.hex()}

            async with aiohttp.ClientSession() as s:

                async def put(data, q="", hdr=None):
                    hdr = hdr if hdr is not None else names(q.rpartition("hash=")[2] if "hash=" in q else h)
                    async with s.post(gw.url + "/api/v1/blobs" + q, data=data, headers=hdr) as r:
                        return r.status, await r.json()

                st, doc = await put(good, "?hash=" + "00" * 32)
                assert st == 400 and doc["error"]["code"] == "blob-hash-mismatch"
                big = encode_array(np.zeros((80, 80), dtype=np.int8))
                assert len(big) > 4096
                st, doc = await put(big)
                assert st == 413 and doc["error"]["code"] == "blob-too-large"
                st, doc = await put(b"not a numpy file")
                assert st == 400 and doc["error"]["code"] == "bad-blob"
                st, doc = await put(good, "?hash=" + h)
                assert st == 201 and doc["hash"] == h
                hb = blob_hash(good, "b").hex()
                async with s.put(gw.url + "/api/v1/blobs?role=a", data=good, headers=names(h)) as r:  # PUT, idempotent
                    assert r.status == 201 and (await r.json())["hash"] == h
                async with s.put(gw.url + "/api/v1/blobs", data=good, headers=names(h)) as r:  # H_A or H_B? the role
                    assert r.status == 400 and (await r.json())["error"]["code"] == "blob-role-needed"
                async with s.put(gw.url + "/api/v1/blobs?role=b", data=good, headers=names(h, hb)) as r:  # as a B
                    assert r.status == 201 and (await r.json())["hash"] == hb != h
                wide = encode_array(np.full((2, 2), 65, dtype=np.int8))
                st, doc = await put(wide, "?role=a")
                assert st == 400 and doc["error"]["code"] == "bad-blob"  # outside the operand range
                # a blob only the miner node has is fetched from it through the peer's API
                other = encode_array(np.arange(6, dtype=np.int32).reshape(2, 3))
                ho = m0.blobs.put(other).hex()
                assert not gw.blobs.has(bytes.fromhex(ho))
                async with s.get(gw.url + f"/api/v1/blobs/{ho}?local=1") as r:
                    assert r.status == 404
                async with s.get(gw.url + f"/api/v1/blobs/{ho}") as r:
                    assert r.status == 200 and await r.read() == other
                assert gw.blobs.has(bytes.fromhex(ho))
                async with s.get(gw.url + "/api/v1/blobs/" + "ab" * 32) as r:
                    assert r.status == 404 and (await r.json())["error"]["code"] == "blob-not-found"
            # the SDK verifies what it downloads
            cl = Client(gw.url)
            assert await asyncio.to_thread(cl.get_blob, ho) == other
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(150)
def test_inference_layers_as_jobs_identical_logits(tmp_path):
    import torch
    from node.cli.inference_demo import run_inference_jobs

    async def main():
        nodes = await devnet(tmp_path, interval=0.1)
        gw = nodes[0]
        try:
            client_key = PrivateKey.from_phrase(b"e2e client 7")
            await fund(gw, client_key)
            out = await asyncio.to_thread(
                run_inference_jobs, Client(gw.url), client_key, samples=24, epochs=30, timeout=60
            )
            assert out["logits_identical"] and torch.equal(out["logits_local"], out["logits_jobs"])
            assert len(out["jobs"]) == 2 and out["accuracy_jobs"] == out["accuracy_local_int8"]
            assert out["accuracy_local_int8"] > 0.7
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(90)
def test_cli_job_submit_status_and_door_checks(tmp_path, capsys):
    from chain.keys import save_key
    from chain.tx import make_job_claim
    from node.cli import main as cli

    async def main():
        nodes = await devnet(tmp_path)
        gw = nodes[0]
        try:
            client_key = PrivateKey.from_phrase(b"e2e client 8")
            await fund(gw, client_key)
            wallet = tmp_path / "wallet.json"
            save_key(wallet, client_key, None, allow_unencrypted=True)
            a, b = operands(10, 40, 9)
            np.save(tmp_path / "a.npy", a)
            np.save(tmp_path / "b.npy", b)
            np.save(tmp_path / "bad.npy", a.astype(np.float32))
            base = ["job", "submit", "--node", gw.url, "--wallet", str(wallet)]
            rc = await asyncio.to_thread(
                cli, base + ["--a", str(tmp_path / "bad.npy"), "--b", str(tmp_path / "b.npy"), "--wait"]
            )
            assert rc == 2 and "dtype int8" in capsys.readouterr().err
            rc = await asyncio.to_thread(
                cli,
                base
                + [
                    "--a",
                    str(tmp_path / "a.npy"),
                    "--b",
                    str(tmp_path / "b.npy"),
                    "--wait",
                    "--timeout",
                    "60",
                    "--out",
                    str(tmp_path / "c.npy"),
                ],
            )
            out = capsys.readouterr()
            assert rc == 0, out
            assert np.array_equal(np.load(tmp_path / "c.npy").astype(np.int64), exact(a, b))
            import json

            doc = json.loads(out.out.strip().splitlines()[-1])
            assert doc["verified"] and "verified" in out.err
            rc = await asyncio.to_thread(cli, ["job", "status", doc["job_id"], "--node", gw.url])
            assert rc == 0 and json.loads(capsys.readouterr().out)["job_id"] == doc["job_id"]
            # job txs are checked at the mempool door with their reason
            bad = make_job_claim(
                client_key, gw.cfg.chain_id, gw.mempool.pending_nonce(client_key.address), b"\x11" * 32, 5000
            )
            async with aiohttp.ClientSession() as s:
                async with s.post(gw.url + "/api/v1/tx", json={"tx": bad.encoded.hex()}) as r:
                    assert r.status == 422 and (await r.json())["error"]["code"] == "bad-job-unknown"
                async with s.get(gw.url + "/api/v1/jobs?status=all") as r:
                    assert doc["job_id"] in [j["job_id"] for j in (await r.json())["jobs"]]
                async with s.get(gw.url + "/api/v1/jobs?status=bogus") as r:
                    assert r.status == 400
        finally:
            await stop_all(nodes)

    run(main())


def test_blob_store_retention(tmp_path):
    from dataclasses import replace as dreplace

    from chain.jobs import JobRecord
    from node.blobs import BlobStore

    now = [1000.0]
    st = BlobStore(tmp_path, 1 << 20, retention_blocks=10, orphan_grace_s=60, clock=lambda: now[0])
    hs = [st.put_array(np.full((2, 2), i, dtype=np.int8), "a") for i in range(5)]
    z = b"\0" * 32
    base = JobRecord(0, b"\0" * 20, z, z, 8, 512, 8, 1, 50, hs[0], hs[1], 1)
    jobs = {
        b"1" * 32: base,  # live: A, B kept
        b"2" * 32: dreplace(base, status=3, blob_a=hs[2], blob_b=z, closed_height=95),
    }  # settled at 95
    import os

    for h in hs:
        os.utime(st.path(h), (now[0], now[0]))
    assert st.prune(jobs, 100) == 0  # hs[2] within retention, hs[3], hs[4] within grace
    now[0] += 120
    assert st.prune(jobs, 100) == 2 and not st.has(hs[3]) and not st.has(hs[4])
    assert st.prune(jobs, 106) == 1 and not st.has(hs[2]) and st.has(hs[0]) and st.has(hs[1])
