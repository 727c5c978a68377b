"""The economy through a running node: the CLI (`pouw issuer|subscription|market`) submits through the
HTTP API, the read-only endpoints report issuers, grants, books, trades, supply and velocity, and
/metrics carries the velocity gauges. Conservation is checked on the node's stored state."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import aiohttp
import pytest

from chain import economy as E
from chain.config import load_config
from chain.econsim import issuer_key, with_issuer
from chain.keys import PrivateKey, faucet_key, save_key
from chain.tx import KIND_JOB_SUBMIT, JobSubmit, Transaction, make_transfer
from node.server.node import Node, NodeConfig
from testkit.nodes import wait_for

BASE = load_config("regtest")
ISS = issuer_key()
SUB = PrivateKey.from_phrase(b"node econ subscriber")
BUYER = PrivateKey.from_phrase(b"node econ buyer")


def cli(*argv: str) -> tuple[int, str]:
    from node.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_economy_cli_and_api_on_a_node(tmp_path: Path):
    cfg = with_issuer(BASE, ISS.address, 10**12, "mint", 2, 30, 9000)
    toml = tmp_path / "econ.toml"
    toml.write_text(cfg.source)
    wallets = {}
    for name, k in (("issuer", ISS), ("sub", SUB), ("buyer", BUYER)):
        wallets[name] = str(tmp_path / f"{name}.json")
        save_key(wallets[name], k, None, allow_unencrypted=True)

    async def main():
        n = Node(
            NodeConfig(
                datadir=tmp_path / "n",
                network=str(toml),
                port=0,
                mine=True,
                device="cpu",
                mine_interval=0.05,
                take_jobs=False,
            )
        )
        await n.start()
        url = n.url
        run = lambda *a: asyncio.to_thread(cli, *a, "--node", url)  # noqa: E731
        try:
            await wait_for(lambda: n.chain.height >= 2, 30)
            fk = faucet_key()
            nonce = n.chain.get_account(fk.address).nonce
            for i, k in enumerate((SUB, BUYER, ISS)):
                n.add_tx(make_transfer(fk, cfg.chain_id, nonce + i, k.address, 10**9, 1000))
            await wait_for(lambda: n.chain.get_account(BUYER.address).balance > 0, 30)

            rc, out = await run(
                "subscription",
                "grant",
                "--wallet",
                wallets["issuer"],
                "--to",
                SUB.address.hex(),
                "--allocation",
                "5000000",
                "--period-blocks",
                "50",
                "--json",
            )
            assert rc == 0, out
            gid = json.loads(out)["txid"]
            rc, out = await run(
                "issuer",
                "credit",
                "--wallet",
                wallets["issuer"],
                "--to",
                BUYER.address.hex(),
                "--amount",
                "5",
                "--json",
            )
            assert rc == 0, out
            await wait_for(
                lambda: (
                    n.chain.get_econ(b"G" + bytes.fromhex(gid)) is not None
                    and n.chain.get_econ(b"K" + ISS.address + BUYER.address) is not None
                ),
                30,
            )
            # a job paid from the allocation through the mempool and the miner: the grant pays, not the balance
            free0 = n.chain.get_account(SUB.address).balance
            job = JobSubmit(b"a" * 32, b"b" * 32, 16, 512, 16, 300, n.chain.height + 50, b"a" * 32, b"b" * 32)
            jtx = Transaction(
                KIND_JOB_SUBMIT, cfg.chain_id, n.chain.get_account(SUB.address).nonce, SUB.pubkey, 1000, job
            ).signed(SUB)
            n.add_tx(jtx)
            await wait_for(lambda: n.chain.get_job(jtx.txid) is not None, 30)
            assert n.chain.get_account(SUB.address).balance == free0 - 1000
            rc, out = await run("subscription", "show", "--address", SUB.address.hex(), "--json")
            assert json.loads(out)["allocation_tokens"] == 500 - 300
            rc, out = await run(
                "market",
                "sell",
                "--wallet",
                wallets["sub"],
                "--issuer",
                ISS.address.hex(),
                "--qty",
                "2",
                "--price",
                "0.95",
            )
            assert rc == 0 and "sell order" in out, out
            oid = out.split("tx ")[1].split()[0]
            await wait_for(lambda: n.chain.get_econ(b"O" + bytes.fromhex(oid)) is not None, 30)
            rc, out = await run("market", "book", "--issuer", ISS.address.hex())
            assert rc == 0 and "0.9500  2" in out, out
            # more than one holds: a clear error, nothing moved
            rc, out = await run(
                "market",
                "buy",
                "--wallet",
                wallets["buyer"],
                "--issuer",
                ISS.address.hex(),
                "--qty",
                "100",
                "--price",
                "0.95",
            )
            assert rc == 1 and json.loads(out)["error"]["code"] == "bad-order-funds", out
            rc, out = await run(
                "market",
                "buy",
                "--wallet",
                wallets["buyer"],
                "--issuer",
                ISS.address.hex(),
                "--qty",
                "1.5",
                "--price",
                "0.96",
                "--ioc",
                "--json",
            )
            assert rc == 0, out
            await wait_for(lambda: n.chain.get_econ(b"P" + BUYER.address) is not None, 30)
            rc, out = await run("market", "trades", "--issuer", ISS.address.hex(), "--json")
            t = json.loads(out)["trades"]
            assert rc == 0 and len(t) == 1 and t[0]["qty"] == 150_000_000 and t[0]["price"] == 9500
            rc, out = await run("subscription", "show", "--address", BUYER.address.hex(), "--json")
            d = json.loads(out)
            assert d["spend_only"] == 150_000_000 and d["credits"][ISS.address.hex()] < 5 * 10**8
            rc, out = await run("subscription", "show", "--address", SUB.address.hex())
            assert rc == 0 and "grant " + gid[:16] in out and "5000000 MACs/period" in out, out
            rc, out = await run("issuer", "show", "--address", ISS.address.hex(), "--json")
            assert json.loads(out)["mode"] == "mint"
            # a second issuer through the CLI: register, then (once that is mined) deposit and withdraw
            rc, out = await run(
                "issuer",
                "register",
                "--wallet",
                wallets["buyer"],
                "--mode",
                "rollover",
                "--fee-bps",
                "25",
                "--buyback-bps",
                "0",
            )
            assert rc == 0, out
            await wait_for(lambda: n.chain.get_econ(b"I" + BUYER.address) is not None, 30)
            rc, out = await run("issuer", "deposit", "--wallet", wallets["buyer"], "--amount", "2")
            assert rc == 0, out
            rc, out = await run("issuer", "withdraw", "--wallet", wallets["buyer"], "--amount", "3")
            assert rc == 1 and json.loads(out)["error"]["code"] == "bad-issuer-deposit", out  # not mined yet
            await wait_for(lambda: E.Issuer.decode(n.chain.get_econ(b"I" + BUYER.address)).deposit > 0, 30)
            rc, out = await run("issuer", "show", "--wallet", wallets["buyer"])
            assert rc == 0 and "mode rollover, deposit 2 tokens, fee 25 bps, buyback 0.0000" in out, out
            async with aiohttp.ClientSession() as s:

                async def get(path):
                    async with s.get(url + path) as r:
                        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())

                st, sup = await get("/api/v1/economy/supply")
                assert st == 200 and sup["conserved"] and sup["locked_in_asks"] == 50_000_000
                assert sup["reserved_in_grants"] == 200 and sup["job_escrow"] == 300
                st, vel = await get("/api/v1/economy/velocity")
                assert vel["windows"][0]["volume"] == 150_000_000 and vel["windows"][0]["velocity"] > 0
                st, iss = await get("/api/v1/economy/issuers")
                assert sorted(i["issuer"] for i in iss["issuers"]) == sorted([ISS.address.hex(), BUYER.address.hex()])
                st, g = await get(f"/api/v1/economy/grants/{gid}")
                assert g["subscriber"] == SUB.address.hex() and g["per_period"] == 500
                st, o = await get(f"/api/v1/economy/orders/{oid}")
                assert o["remaining"] == 50_000_000
                assert (await get("/api/v1/economy/orders/" + "00" * 32))[1]["error"]["code"] == "order-not-found"
                assert (await get("/api/v1/economy/issuers/zz"))[1]["error"]["code"] == "bad-param"
                st, text = await get("/metrics")
                assert "pouw_token_velocity" in text and "pouw_market_volume_tokens 1.5e+08" in text
            n.chain.check_conservation()
        finally:
            await n.stop()

    asyncio.run(main())


def test_every_economy_route_is_documented():
    import re

    root = Path(__file__).resolve().parents[1]
    src = (root / "node" / "server" / "economy_api.py").read_text()
    spec = (root / "docs" / "openapi.yaml").read_text()
    doc = (root / "docs" / "api.md").read_text()
    routes = re.findall(r'r\.get\(API \+ "([^"]+)"\)', src)
    assert len(routes) == 9
    for path in routes:
        full = "/api/v1" + path
        assert re.search(rf"^  {re.escape(full)}:\n(    .*\n)*?    get:", spec, re.M), full
        assert full in doc, full


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_market_small_run(tmp_path: Path):
    """`pouw bench market` drives the real transition: its numbers are consistent with each other and the
    chart is written. (The throughput goal is measured by the full run, see docs/economy.md.)"""
    png = tmp_path / "m.png"
    rc, out = cli(
        "bench",
        "market",
        "--subscribers",
        "40",
        "--periods",
        "3",
        "--import-blocks",
        "3",
        "--import-txs",
        "50",
        "--json",
        "--plot",
        str(png),
    )
    assert rc == 0
    d = json.loads(out.strip().splitlines()[-1])
    for k in ("minted", "volume", "fees", "velocity", "revenue_with_market", "revenue_without_market", "tx_per_s"):
        assert k in d
    assert d["minted"] > 0 and d["volume"] > 0 and d["fees"] > 0 and d["revenue_without_market"] > 0
    assert d["volume"] == sum(r["volume"] for r in d["per_period"])
    # both runs use the same compute: what mint mode minted is what breakage kept
    assert d["minted"] == d["revenue_without_market"]
    assert d["subscriber_value"] == d["minted"] - d["expired"]
    assert d["revenue_with_market"] == sum(r["revenue"] for r in d["per_period"])
    assert d["tx_per_s"] > 0 and d["transactions"] > 40 * 3 * 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
