"""The node's mining loop: filler operands and commitments reused across attempts (header nonces), rebuilt
when the height changes, the filler shape setting, and the useful fraction with a paid job."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import numpy as np
import pytest

from chain.block import Block
from chain.config import load_config
from chain.errors import BlockError
from chain.keys import PrivateKey, faucet_key
from chain.mining import build_template, mine_filler_once
from chain.synthetic import ChainBuilder
from chain.tx import make_transfer
from chain.validation import check_header_proof
from kernels import get_backend
from node.client.sdk import Client
from testkit.nodes import start_node, wait_for
from node.engine import FillerMiner, check_filler_shape, parse_shape

CFG = load_config("regtest")
PARAMS = CFG.pow.params()
MINER = PrivateKey.from_phrase(b"loop miner").address


def template(builder: ChainBuilder, parent: bytes, txs=(), timestamp: int | None = None, per_attempt: float = 0.5):
    """A template on `parent` whose target gives an attempt about `per_attempt` expected winning tiles (regtest's
    own target lets every tile win, which would hide attempts that lose)."""
    st = builder.states[parent]
    pinfo = builder.parent_info(parent)
    ts = timestamp if timestamp is not None else pinfo.timestamp + CFG.target_block_time
    tpl = build_template(CFG, pinfo, st.get, st.supply, MINER, txs, ts, select=False, jobs=st)
    m, k, n = CFG.pow.filler_shape
    tiles = (m // PARAMS.tile_h) * (n // PARAMS.tile_w)
    target = int((1 << 256) * per_attempt) // (PARAMS.tile_work(k) * tiles)
    return tpl, replace(tpl.header, target=target)


def test_reused_operands_mine_the_same_headers_as_fresh_ones():
    backend = get_backend("cpu")
    builder = ChainBuilder(CFG)
    tpl, header = template(builder, builder.genesis.hash)
    fm = FillerMiner(CFG, PARAMS)
    n0 = (1 << 64) - 5  # the nonces wrap within u64
    got = []
    for i in range(16):
        nonce = (n0 + i) % (1 << 64)
        mine = fm.attempt(backend, header, nonce)
        fresh, macs = mine_filler_once(CFG, header, PARAMS, backend, nonce)  # operands built from scratch
        assert (mine.encoded if mine else None) == (fresh.encoded if fresh else None)
        assert macs == fm.macs
        got.append(mine)
    assert fm.builds == 1 and fm.attempts == 16  # one operand set for every attempt
    winners = [h for h in got if h is not None]
    assert winners and len(winners) < len(got)  # some nonces lose, some win
    assert len({h.job for h in winners}) == 1 and len({h.nonce for h in winners}) == len(winners)
    for h in winners:
        check_header_proof(h, CFG)  # a block found at nonce N verifies
        with pytest.raises(BlockError) as e:  # the proof is bound to its nonce
            check_header_proof(replace(h, nonce=(h.nonce + 1) % (1 << 64)), CFG)
        assert e.value.reason.startswith("bad-pow")
    # run(): the first winner in nonce order, and the nonce after it
    first = next(i for i, h in enumerate(got) if h is not None)
    found, nxt = fm.run(backend, header, n0, budget_s=60.0)
    assert found.encoded == got[first].encoded and nxt == (n0 + first + 1) % (1 << 64)
    assert fm.builds == 1
    # a stop request ends a batch after the attempt in progress
    calls = []
    found, nxt = fm.run(
        backend, replace(header, target=1), 7, budget_s=60.0, stop=lambda: True, on_attempt=calls.append
    )
    assert found is None and nxt == 8 and calls == [fm.macs]


def test_operands_follow_the_height_and_proofs_follow_the_template():
    backend = get_backend("cpu")
    builder = ChainBuilder(CFG)
    g = builder.genesis.hash
    fm = FillerMiner(CFG, PARAMS)
    tpl1, h1 = template(builder, g)
    found1, _ = fm.run(backend, h1, 0, budget_s=60.0)
    assert fm.builds == 1
    # new transactions at the same height: a new template (tx root, state root), the same filler operands;
    # the proof binds the new template, and a proof moved between the templates fails
    tx = make_transfer(faucet_key(), CFG.chain_id, 0, MINER, 10**8, 1000)
    tpl2, h2 = template(builder, g, txs=[tx])
    assert h2.tx_root != h1.tx_root
    found2, _ = fm.run(backend, h2, 0, budget_s=60.0)
    assert fm.builds == 1 and found2.job == found1.job and found2.tx_root == tpl2.header.tx_root
    check_header_proof(found2, CFG)
    moved = replace(found2, tx_root=h1.tx_root, state_root=h1.state_root)
    with pytest.raises(BlockError) as e:
        check_header_proof(moved, CFG)
    assert e.value.reason.startswith("bad-pow")
    # a new tip: new operands, a new job
    blk = builder.mine(g, MINER)
    tpl3, h3 = template(builder, blk.hash)
    found3, _ = fm.run(backend, h3, 0, budget_s=60.0)
    assert fm.builds == 2 and found3.job != found1.job and found3.prev_hash == blk.hash
    check_header_proof(found3, CFG)
    Block(found3, tpl3.txs)


def test_filler_shape_setting():
    assert parse_shape("64x512x32") == (64, 512, 32)
    for bad in ("64x512", "axbxc", ""):
        with pytest.raises(ValueError):
            parse_shape(bad)
    assert check_filler_shape(CFG, (64, 512, 32)) == (64, 512, 32)
    for bad in ((64, 256, 32), (64, 520, 32), (60, 512, 32), (16, 512, 16 * 100000)):
        with pytest.raises(ValueError):
            check_filler_shape(CFG, bad)
    # a filler of another shape mines blocks the chain accepts
    backend = get_backend("cpu")
    builder = ChainBuilder(CFG)
    tpl, h = template(builder, builder.genesis.hash, per_attempt=4.0)
    fm = FillerMiner(CFG, PARAMS, (64, 512, 48))
    found, _ = fm.run(backend, h, 0, budget_s=60.0)
    assert (found.job.m, found.job.k, found.job.n) == (64, 512, 48)
    check_header_proof(found, CFG)


def test_node_cli_refuses_a_bad_filler_shape(tmp_path, capsys):
    from node.cli import build_parser

    p = build_parser()
    argv = ["node", "--datadir", str(tmp_path / "d"), "--network", "regtest", "--port", "0", "--mine"]
    args = p.parse_args(argv + ["--filler-shape", "32x100x32"])  # k below min_k
    assert args.func(args) == 2
    assert "outside the chain's limits" in capsys.readouterr().err
    args = p.parse_args(argv + ["--filler-shape", "32by512"])
    with pytest.raises(SystemExit) as e:
        args.func(args)
    assert e.value.code == 2 and "MxKxN" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_the_device_is_opened_before_serving_and_reopened_off_the_event_loop(tmp_path, monkeypatch):
    """Opening a device imports torch and loads kernels: seconds in which the GIL is held, which stalled the
    event loop of a serving node (issue 16: `pouw_event_loop_lag_seconds` read 2-3 s at the first mining
    pass). The node opens it before its listeners start; a device that failed to open is retried in the
    mining thread, never on the event loop."""
    import threading

    import kernels
    from node.server.node import Node, NodeConfig

    real = kernels.get_backend
    calls: list[tuple[bool, bool]] = []  # (on the event loop's thread, the node was serving)

    def get_backend(spec="auto", **kw):
        calls.append((threading.current_thread() is loop_thread, bool(n.runners)))
        if len(calls) == 1:
            raise RuntimeError("device busy")  # the first open fails: the mining loop opens it again
        return real(spec, **kw)

    monkeypatch.setattr(kernels, "get_backend", get_backend)

    async def main():
        nonlocal n, loop_thread
        loop_thread = threading.current_thread()
        n = Node(NodeConfig(datadir=tmp_path / "m", network="regtest", port=0, mine=True, device="cpu"))
        await n.start()
        try:
            assert calls == [(True, False)]  # opened once, before any listener was up
            await wait_for(lambda: n.chain.height >= 2, 30, what="blocks")
            assert calls[1:] == [(False, True)]  # reopened in the mining thread while serving
            assert n.miner.device.total_faults == 0  # the failed open at start is not a fault
        finally:
            await n.stop()

    n = loop_thread = None
    asyncio.run(main())


def test_useful_fraction_with_a_paid_job(tmp_path):
    async def main():
        shape = (64, 512, 32)
        n = await start_node(tmp_path / "m", mine=True, interval=0.25, filler_shape=shape)
        try:
            client_key = PrivateKey.from_phrase(b"loop client")
            f = faucet_key()
            n.add_tx(
                make_transfer(f, CFG.chain_id, n.mempool.pending_nonce(f.address), client_key.address, 10**12, 1000)
            )
            await wait_for(lambda: n.chain.get_account(client_key.address).balance == 10**12, 30, what="funding")
            rng = np.random.default_rng(3)
            a = rng.integers(-64, 65, size=(20, 70), dtype=np.int8)
            b = rng.integers(-64, 65, size=(70, 12), dtype=np.int8)
            res = await asyncio.to_thread(Client(n.url).submit_job, client_key, a, b, None, True, timeout=90)
            assert np.array_equal(res.c.astype(np.int64), a.astype(np.int64) @ b.astype(np.int64))
            await asyncio.to_thread(res.confirm, 60)  # C may come before the result is mined
            rec = n.chain.get_job(bytes.fromhex(res.job_id))
            job_macs = rec.m * rec.k * rec.n  # the padded job the pass mined
            m = n.miner
            assert m.paid_macs == job_macs  # one pass yielded C: paid once
            h = n.chain.height
            await wait_for(lambda: n.chain.height >= h + 2, 30, what="filler blocks after the job")
            async with aiohttp.ClientSession() as s:
                async with s.get(n.url + "/api/v1/status") as r:
                    doc = (await r.json())["mining"]
                async with s.get(n.url + "/metrics") as r:
                    text = await r.text()
            assert doc["paid_macs"] == job_macs and doc["filler_shape"] == list(shape)
            assert doc["mined_macs"] > job_macs  # filler passes were mined too
            assert doc["useful_fraction"] == job_macs / doc["mined_macs"] and 0 < doc["useful_fraction"] < 1
            metrics = {
                line.split()[0]: float(line.split()[1])
                for line in text.splitlines()
                if line and not line.startswith("#")
            }
            assert metrics["pouw_paid_macs_total"] == job_macs
            assert metrics["pouw_mined_macs_total"] >= doc["mined_macs"]
            assert 0 < metrics["pouw_useful_fraction"] <= doc["useful_fraction"]
            assert 1 <= m.filler.builds <= m.filler.attempts
            shapes = {
                (hd.job.m, hd.job.k, hd.job.n)
                for hd in (n.chain.get_header(n.chain.block_hash_at(i)) for i in range(1, n.chain.height + 1))
            }
            assert shape in shapes  # the node mined its configured filler
            n.chain.check_conservation()
        finally:
            await n.stop()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_bench_node_measures_node_and_benchmark_in_one_run():
    from benchmarks.bench_node import run

    out = run("regtest", "cpu", "64x512x32", seconds=1.0, warmup=0.2, rounds=2, api_window=False, progress=False)
    assert out["filler_shape"] == [64, 512, 32] and out["network"] == "regtest"
    assert out["node_attempts"] > 0 and out["bench_passes"] > 0
    assert out["node_operand_builds"] <= out["node_blocks"] + 1  # operands built once per height
    assert abs(out["ratio"] - out["node_rate_macs"] / out["bench_rate_macs"]) < 1e-3
    assert out["api_work_rate_macs"] is None and out["commit"] and out["cpu"]


@pytest.mark.timeout(90)
def test_remote_worker_mines_the_filler_shape_the_node_advertises(tmp_path):
    from node.client.worker import run_remote

    async def main():
        shape = (64, 512, 32)
        n = await start_node(tmp_path / "n", filler_shape=shape)  # not mining itself
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(n.url + "/api/v1/mining/work", json={}) as r:
                    assert (await r.json())["filler"] == list(shape)
            h0 = n.chain.height
            found = await asyncio.to_thread(run_remote, n.url, "cpu", MINER.hex(), max_blocks=2, duration=60)
            assert found == 2 and n.chain.height == h0 + 2
            for i in (h0 + 1, h0 + 2):
                hd = n.chain.get_header(n.chain.block_hash_at(i))
                assert (hd.job.m, hd.job.k, hd.job.n) == shape and hd.miner == MINER
            # the worker's own --filler-shape wins over the node's
            found = await asyncio.to_thread(
                run_remote, n.url, "cpu", MINER.hex(), max_blocks=1, duration=60, filler_shape=(32, 512, 64)
            )
            hd = n.chain.get_header(n.chain.tip.hash)
            assert found == 1 and (hd.job.m, hd.job.k, hd.job.n) == (32, 512, 64)
        finally:
            await n.stop()

    asyncio.run(main())
