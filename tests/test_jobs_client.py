"""The job client as users drive it (docs/jobs-client.md): `pouw job ...` and the SDK against in-process regtest
nodes (real sockets): wait / fetch of earlier jobs, batches, a wallet's jobs, progress and queue position,
receipts, prices, quantization, and every command's failure modes (a clear line, an exit code, no traceback).

The CLI runs in-process (node.cli.main) in a worker thread while the nodes run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from chain.keys import PrivateKey, save_key
from node.client.sdk import Client, ClientError, JobFailed
from testkit.nodes import free_port, record_writes, wait_for
from pouw.errors import JobError
from tests.test_jobs_e2e import FUND, devnet, exact, fund, operands, run, stop_all


async def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from node.cli import main

    rc = await asyncio.to_thread(main, list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "Traceback" not in out.out, out.err
    return rc, out.out, out.err


def wallet_file(tmp_path, key: PrivateKey, name: str = "wallet.json") -> str:
    p = tmp_path / name
    save_key(p, key, None, allow_unencrypted=True)
    return str(p)


def block_has(node, height: int, txid: str) -> bool:
    b = node.chain.get_block(node.chain.block_hash_at(height))
    return any(t.txid.hex() == txid for t in b.txs)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_cli_batch_wait_fetch_list_receipt_price(tmp_path, capsys):
    async def main():
        nodes = await devnet(tmp_path, interval=0.25)
        gw, m0 = nodes
        try:
            key = PrivateKey.from_phrase(b"jobclient 1")
            await fund(gw, key)
            w = wallet_file(tmp_path, key)
            a1, b = operands(20, 70, 12)
            a2, _ = operands(9, 70, 12)
            for name, x in (("a1", a1), ("a2", a2), ("b", b)):
                np.save(tmp_path / f"{name}.npy", x)
            p = lambda n: str(tmp_path / n)  # noqa: E731

            # price: the going rate and the suggestion for the padded shape; then shapes beyond the limits
            rc, out, err = await cli(capsys, "job", "price", "--shape", "20,70,12", "--node", gw.url)
            assert rc == 0, err
            q = json.loads(out)
            assert q["shape"] == [20, 70, 12] and q["padded"][1] >= 512 and q["going_rate"] >= 1
            assert q["suggested_max_fee"] >= q["going_rate"] and q["recent"] is None and q["queue"]["open"] == 0
            rc, out, err = await cli(capsys, "job", "price", "--shape", "5000,512,8", "--node", gw.url)
            assert rc == 2 and "m = 5000 exceeds the chain's max_dim 4096" in err
            rc, out, err = await cli(capsys, "job", "price", "--shape", "8,512", "--node", gw.url)
            assert rc == 2 and "m,k,n" in err

            # a batch: two micro-batches against one B, in one command; B uploaded once
            rc, out, err = await cli(
                capsys,
                "job",
                "submit",
                "--node",
                gw.url,
                "--wallet",
                w,
                "--a",
                p("a1.npy"),
                "--a",
                p("a2.npy"),
                "--b",
                p("b.npy"),
                "--wait",
                "--timeout",
                "90",
                "--out-dir",
                p("outs"),
            )
            assert rc == 0, err
            doc = json.loads(out.strip().splitlines()[-1])
            assert doc["verified"] == 2 and doc["failed"] == 0
            for i, (x, j) in enumerate(zip((a1, a2), doc["jobs"])):
                assert np.array_equal(np.load(p(f"outs/c{i}.npy")).astype(np.int64), exact(x, b))
                r = j["receipt"]  # the receipt names real transactions at their heights
                assert r["submit"]["txid"] == j["job_id"] and block_has(gw, r["submit"]["height"], j["job_id"])
                assert block_has(gw, r["claim"]["height"], r["claim"]["txid"])
                assert block_has(gw, r["result"]["height"], r["result"]["txid"])
                assert r["claim"]["sender"] == m0.node_key.address.hex() == j["miner"]
                assert r["submit"]["height"] <= r["claim"]["height"] <= r["result"]["height"]
                assert j["latency_s"] > 0
            assert doc["jobs"][0]["job_id"] != doc["jobs"][1]["job_id"]
            assert doc["jobs"][0]["fee"] == q["suggested_max_fee"]  # no --max-fee: the node's suggestion
            assert "queue position" in err or "estimate" in err  # progress lines on stderr

            # submit without waiting; then `job wait` (shape from the wallet's journal) and `job fetch`
            rc, out, err = await cli(
                capsys, "job", "submit", "--node", gw.url, "--wallet", w, "--a", p("a1.npy"), "--b", p("b.npy")
            )
            assert rc == 0, err
            jid = json.loads(out)["job_id"]
            rc, out, err = await cli(
                capsys, "job", "wait", jid, "--node", gw.url, "--wallet", w, "--out", p("cw.npy"), "--timeout", "90"
            )
            assert rc == 0, err
            assert np.array_equal(np.load(p("cw.npy")).astype(np.int64), exact(a1, b))
            rc, out, err = await cli(capsys, "job", "fetch", jid, "--node", gw.url, "--out", p("cf.npy"))
            assert rc == 0, err  # no wallet, no journal: C keeps the padded shape
            assert "padded" in err
            cf = np.load(p("cf.npy"))
            assert cf.shape == tuple(json.loads(out)["shape"]) and cf.shape[0] >= 20
            assert np.array_equal(cf[:20, :12].astype(np.int64), exact(a1, b)) and not cf[20:].any()
            rc, out, err = await cli(
                capsys, "job", "fetch", jid, "--node", gw.url, "--shape", "20,12", "--out", p("cs.npy")
            )
            assert rc == 0 and np.array_equal(np.load(p("cs.npy")).astype(np.int64), exact(a1, b))

            # the wallet's jobs: all three, newest first; another wallet has none
            rc, out, err = await cli(capsys, "job", "list", "--mine", "--wallet", w, "--node", gw.url)
            assert rc == 0, err
            mine = json.loads(out)
            assert {j["job_id"] for j in mine} == {jid} | {j["job_id"] for j in doc["jobs"]}
            assert mine[0]["job_id"] == jid and all(j["client"] == key.address.hex() for j in mine)
            other = PrivateKey.from_phrase(b"jobclient nobody").address.hex()
            rc, out, err = await cli(capsys, "job", "list", "--client", other, "--node", gw.url)
            assert rc == 0 and json.loads(out) == []

            # receipt and progress of a finished job; the price now shows fees that cleared
            rc, out, err = await cli(capsys, "job", "receipt", jid, "--node", gw.url)
            assert rc == 0 and json.loads(out)["result"]["h_c"]
            rc, out, err = await cli(capsys, "job", "progress", jid, "--node", gw.url)
            pr = json.loads(out)
            assert rc == 0 and pr["status"] in ("resulted", "released") and pr["estimate_blocks"] == 0
            q = await asyncio.to_thread(Client(gw.url).quote, *q["padded"])
            per_mac = sorted(Fraction(j["fee"], j["macs"]) for j in mine)  # scaled to the quoted shape
            assert q["recent"]["jobs"] == 3 and q["recent"]["min"] == math.ceil(per_mac[0] * q["macs"])
            assert q["recent"]["max"] == math.ceil(per_mac[-1] * q["macs"])
            assert q["recent"]["median"] == math.ceil(per_mac[1] * q["macs"]) <= q["suggested_max_fee"]

            # wrong shapes for fetch are refused with the job's C shape
            rc, out, err = await cli(capsys, "job", "fetch", jid, "--node", gw.url, "--shape", "9999,12")
            assert rc == 2 and "does not fit" in err
            spent = sum(j["fee"] for j in mine) + 3 * 1000
            bal = gw.chain.get_account(key.address).balance
            assert bal == FUND - spent, (bal, spent)
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(150)
def test_queue_position_estimate_cancel_and_failures(tmp_path, capsys):
    """Nobody takes jobs: the queue orders by fee per MAC, progress says where a job stands, an open job
    has nothing to fetch, waiting times out, and (with the cancel transaction) the escrow comes back."""

    async def main():
        nodes = await devnet(tmp_path, take_jobs=False, interval=0.3)
        gw = nodes[0]
        try:
            key = PrivateKey.from_phrase(b"jobclient 2")
            await fund(gw, key)
            w = wallet_file(tmp_path, key)
            cl = Client(gw.url)
            a, b = operands(8, 512, 8)
            subs = await asyncio.to_thread(cl.submit_jobs, key, [(a, b)] * 3, [5_000, 9_000, 7_000], False)
            ids = [s.job_id for s in subs]
            assert len(set(ids)) == 3
            pr = await asyncio.to_thread(cl.job_progress, ids[0])
            assert pr["status"] in ("pending", "open") and pr["queue_position"] >= 1
            await wait_for(
                lambda: all(gw.chain.get_job(bytes.fromhex(j)) is not None for j in ids), 30, what="submits mined"
            )
            pos = [(await asyncio.to_thread(cl.job_progress, j)) for j in ids]
            assert [p["queue_position"] for p in pos] == [3, 1, 2]  # 9000 > 7000 > 5000 (same shape)
            assert all(p["queue_length"] == 3 and p["status"] == "open" for p in pos)
            assert pos[0]["estimate_blocks"] > pos[1]["estimate_blocks"] >= 1 and pos[0]["estimate_s"] > 0
            q = await asyncio.to_thread(cl.quote, *subs[0].padded)
            assert q["queue"]["open"] == 3 and q["queue"]["best_fee"] == 9_000
            floor = math.ceil(gw.job_fee_floor * math.prod(subs[0].padded))  # the gateway's own fee floor
            assert q["floor_fee"] == floor and q["suggested_max_fee"] >= max(floor, q["going_rate"])
            mine = await asyncio.to_thread(cl.jobs_of, key.address, "open")
            assert sorted(j["job_id"] for j in mine) == sorted(ids)

            # an open job: nothing to fetch (exit 3, no-result); waiting runs into the timeout (exit 3)
            rc, out, err = await cli(capsys, "job", "fetch", ids[0], "--node", gw.url)
            assert rc == 3 and json.loads(out)["failed"] == "no-result" and "open" in err
            rc, out, err = await cli(capsys, "job", "wait", ids[0], "--node", gw.url, "--timeout", "1")
            assert rc == 3 and json.loads(out)["failed"] == "timeout"
            rc, out, err = await cli(capsys, "job", "status", ids[1], "--node", gw.url)
            assert rc == 0 and json.loads(out)["progress"]["queue_position"] == 1

            # cancel: refused for someone else's job; the owner's cancel refunds the escrow
            stranger = PrivateKey.from_phrase(b"jobclient stranger")
            ws = wallet_file(tmp_path, stranger, "stranger.json")
            rc, out, err = await cli(capsys, "job", "cancel", ids[0], "--node", gw.url, "--wallet", ws)
            assert rc == 1 and "bad-job-not-client" in err
            before = gw.chain.get_account(key.address).balance
            rc, out, err = await cli(capsys, "job", "cancel", ids[0], "--node", gw.url, "--wallet", w, "--wait")
            assert rc == 0, err
            doc = json.loads(out)
            assert doc["status"] == "cancelled" and doc["refunded"] == 5_000
            assert gw.chain.get_account(key.address).balance == before + 5_000 - 1000
            r = await asyncio.to_thread(cl.receipt, ids[0])
            assert r["cancel"]["txid"] == doc["cancel_txid"] and r["settled"]["status"] == "cancelled"
            rc, out, err = await cli(capsys, "job", "cancel", ids[0], "--node", gw.url, "--wallet", w)
            assert rc == 1 and "cancelled" in err
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(60)
def test_every_job_command_fails_cleanly_without_a_node(tmp_path, capsys):
    """An unreachable node is named by its URL; bad arguments and files exit 2; nothing prints a traceback."""

    async def main():
        url = f"http://127.0.0.1:{free_port()}"
        key = PrivateKey.from_phrase(b"jobclient 3")
        w = wallet_file(tmp_path, key)
        a, b = operands(8, 64, 8)
        np.save(tmp_path / "a.npy", a)
        np.save(tmp_path / "b.npy", b)
        jid = "ab" * 32
        A, B = str(tmp_path / "a.npy"), str(tmp_path / "b.npy")
        for argv in (
            ["submit", "--a", A, "--b", B, "--wallet", w, "--wait"],
            ["wait", jid, "--timeout", "5"],
            ["fetch", jid],
            ["status", jid],
            ["progress", jid],
            ["receipt", jid],
            ["list"],
            ["list", "--mine", "--wallet", w],
            ["cancel", jid, "--wallet", w],
            ["price", "--shape", "8,64,8"],
        ):
            rc, out, err = await cli(capsys, "job", *argv, "--node", url)
            assert rc == 1 and f"cannot reach the node at {url}" in err, (argv, rc, err)
        for argv, msg in (
            (["submit", "--a", str(tmp_path / "nope.npy"), "--b", B, "--wallet", w], "cannot read"),
            (["submit", "--a", A, "--a", A, "--b", B, "--b", B, "--b", B, "--wallet", w], "2 --a for 3"),
            (["submit", "--a", A, "--b", B, "--wallet", str(tmp_path / "no-wallet.json")], "cannot open wallet"),
            (["status", "xyz"], "not 64 hex digits"),
            (["fetch", "12" * 31], "not 64 hex digits"),
            (["price", "--shape", "8,x,8"], "--shape"),
            (["list", "--client", "zz"], "--client"),
            (
                ["submit", "--a", A, "--b", B, "--out", "x.npy", "--out", "y.npy", "--wallet", w],
                "2 --out paths for 1 jobs",
            ),
        ):
            rc, out, err = await cli(capsys, "job", *argv, "--node", url)
            assert rc == 2 and msg in err, (argv, rc, err)
        rc, out, err = await cli(capsys, "job", "status", jid, "--node", "localhost:1")
        assert rc == 2 and "must start with http://" in err
        with pytest.raises(ClientError) as ei:
            Client(url).status()
        assert ei.value.code == "node-unreachable" and url in str(ei.value)

    run(main())


@pytest.mark.timeout(120)
def test_sdk_float_matmul_quantized_and_batch_failures(tmp_path):
    """quant.matmul through a real node: C exact for the quantized operands, de-quantized close to x @ w;
    a batch with one bad operand pays for nothing; a batch result keeps each job's outcome."""
    from node.client import quant

    async def main():
        nodes = await devnet(tmp_path, interval=0.25)
        gw = nodes[0]
        try:
            key = PrivateKey.from_phrase(b"jobclient 4")
            await fund(gw, key)
            cl = Client(gw.url)
            rng = np.random.default_rng(3)
            x = rng.normal(size=(16, 96)).astype(np.float32)
            wgt = rng.normal(size=(96, 24)).astype(np.float32) * 0.1
            y = await asyncio.to_thread(quant.matmul, cl, key, x, wgt, timeout=60)
            qa, sa = quant.quantize(x, "row")
            qb, sb = quant.quantize(wgt, "column")
            want = quant.dequantize(exact(qa, qb), sa, sb)
            assert np.array_equal(y, want)  # the chain's C is exact: only quantization rounds
            err = np.abs(y - x.astype(np.float64) @ wgt).max()
            bound = (
                np.abs(x).max(1)[:, None] * sb[None, :] / 2
                + sa[:, None] * np.abs(wgt).max(0)[None, :] / 2
                + sa[:, None] * sb[None, :] / 4
            ) * 96
            assert err <= bound.max() and err < 0.05 * np.abs(x @ wgt).max()

            # C may be in hand before the job is mined (a throttled miner computes from the mempool)
            await wait_for(lambda: len(gw.mempool) == 0, 30, what="the matmul job mined")
            bal = gw.chain.get_account(key.address).balance
            good = operands(8, 64, 8)
            writes = record_writes(cl)
            with pytest.raises(JobError) as ei:
                await asyncio.to_thread(cl.submit_jobs, key, [good, (np.full((8, 64), 99, np.int8), good[1])], None)
            assert "job 1:" in str(ei.value) and "[-64, 64]" in str(ei.value)
            with pytest.raises(JobError) as ei:
                await asyncio.to_thread(cl.submit_jobs, key, [good], [1, 2])
            assert writes == []  # refused before sending anything: no blob, no transaction
            assert gw.chain.get_account(key.address).balance == bal and len(gw.mempool) == 0
            with pytest.raises(ClientError) as ei:
                await asyncio.to_thread(cl.submit_jobs, key, [good, good], [10**15, 1])
            assert ei.value.code == "bad-txn-balance"
            outs = await asyncio.to_thread(cl.submit_jobs, key, [good, good], None, True, timeout=60)
            assert all(not isinstance(o, JobFailed) for o in outs) and outs[0].job_id != outs[1].job_id
            assert all(np.array_equal(o.c.astype(np.int64), exact(*good)) for o in outs)
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


def test_quantize_ranges_scales_and_errors():
    from node.client.quant import dequantize, quantize

    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 33)) * rng.uniform(0.01, 100, size=(7, 1))
    x[3] = 0.0
    for per, axis in (("tensor", None), ("row", 1), ("column", 0)):
        q, s = quantize(x, per)
        assert q.dtype == np.int8 and q.flags.c_contiguous and np.abs(q).max() == 64
        assert np.all(np.abs(q.astype(np.int64)) <= 64)
        ss = s if per != "row" else s[:, None]
        assert np.all(np.abs(x - q * ss) <= ss / 2 + 1e-12)
        if axis is not None:
            assert s.shape == (x.shape[1 - axis],)
    q, s = quantize(x, "row")
    assert s[3] == 1.0 and not q[3].any()
    assert np.allclose(dequantize(np.ones((7, 2), np.int32), s, np.array([1.0, 2.0]))[:, 1], 2 * s)
    import torch

    qt, st = quantize(torch.tensor(x, dtype=torch.float64), "tensor")
    assert np.array_equal(qt, quantize(x, "tensor")[0]) and st.shape == ()
    for bad, msg in ((np.array([[np.nan, 1.0]]), "NaN"), (np.ones(3), "2-D")):
        with pytest.raises(JobError, match=msg):
            quantize(bad)
    with pytest.raises(JobError, match="per must be"):
        quantize(x, "channel")
    with pytest.raises(JobError, match="row scales"):
        dequantize(np.ones((7, 2), np.int32), np.ones(6), 1.0)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_jobs_json_tiny(tmp_path):
    """`pouw bench jobs --json` on a real 2-node devnet (subprocesses), tiny parameters."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "bench",
            "jobs",
            "--json",
            "--small",
            "2",
            "--large",
            "1",
            "--large-shape",
            "16,1024,256",
            "--block-interval",
            "0.3",
            "--job-timeout",
            "90",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["jobs"] == 3 and doc["failed"] == 0 and doc["nodes"] == 2
    assert 0 < doc["latency_p50_s"] <= doc["latency_p95_s"] and doc["block_interval_s"] > 0
    assert doc["small"]["jobs"] == 2 and doc["large"]["jobs"] == 1 and doc["blocks"] >= 3
    assert doc["result_minus_submit_blocks_p50"] >= 0


@pytest.mark.timeout(120)
def test_receipt_lists_challenge_and_answer(tmp_path):
    """A data-availability challenge and the miner's answer appear in the receipt with their blocks."""
    from chain.tx import make_job_challenge

    async def main():
        nodes = await devnet(tmp_path, interval=0.5)
        gw = nodes[0]
        try:
            key = PrivateKey.from_phrase(b"jobclient 5")
            await fund(gw, key)
            cl = Client(gw.url)
            a, b = operands(8, 512, 8)
            sub = await asyncio.to_thread(cl.submit_job, key, a, b, None, False)
            jid = bytes.fromhex(sub.job_id)
            await wait_for(
                lambda: (r := gw.chain.get_job(jid)) is not None and r.status_name == "resulted",
                60,
                step=0.01,
                what="result",
            )
            gw.add_tx(make_job_challenge(key, gw.cfg.chain_id, gw.mempool.pending_nonce(key.address), jid, 1000))
            await wait_for(lambda: gw.chain.get_job(jid).answer_height > 0, 60, what="answer")
            r = await asyncio.to_thread(cl.receipt, sub.job_id)
            rec = gw.chain.get_job(jid)
            assert r["challenge"]["height"] == rec.challenge_height and r["answer"]["height"] == rec.answer_height
            assert block_has(gw, r["challenge"]["height"], r["challenge"]["txid"])
            assert block_has(gw, r["answer"]["height"], r["answer"]["txid"])
            assert r["challenge"]["sender"] == key.address.hex() and r["answer"]["sender"] == r["result"]["sender"]
            res = await asyncio.to_thread(cl.wait_job, sub, key, timeout=60)  # still verifies after the answer
            assert np.array_equal(res.c.astype(np.int64), exact(a, b))
            gw.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())
