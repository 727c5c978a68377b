"""The explorer's page and lookups (node/server/explorer_api.py) on an in-process regtest node that mines a
paid job: search resolves every kind of id, a block's proof is decoded (paid job vs filler, tile, ticket
below the threshold) and re-verified on request (and a tampered header fails), address history chains
balances, a block that leaves the active chain is shown as such and its transactions leave the index,
and unknown ids answer 404 JSON, never a stack trace."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest

from chain import schema as S
from chain.block import Block
from chain.keys import PrivateKey
from node.server import explorer_api
from node.client.sdk import Client
from testkit.nodes import pause_mining, start_node, wait_for

from test_jobs_e2e import fund, operands, run

CLIENT = PrivateKey.from_phrase(b"explorer client")


async def get(node, path):
    async with aiohttp.ClientSession() as s:
        async with s.get(node.url + path) as r:
            ctype = r.headers.get("Content-Type", "")
            body = await r.json() if ctype.startswith("application/json") else await r.text()
            return r.status, body, r.headers


@pytest.mark.timeout(150)
def test_explorer_lookups(tmp_path):
    async def main():
        n = await start_node(tmp_path / "n", mine=True, interval=0.25)
        try:
            await fund(n, CLIENT)
            a, b = operands()
            res = await asyncio.to_thread(Client(n.url).submit_job, CLIENT, a, b, None, True, timeout=90)
            jid = res.job_id
            await wait_for(lambda: n.chain.height >= 6, 30, what="blocks")
            await pause_mining([n])
            cs = n.chain
            tip = cs.tip.hash.hex()

            # search: height, block hash, job id (= its submit's txid), tx id, address, nothing
            fund_tx = next(t for h in cs.chain[1:] for t in cs.get_block(h).txs if t.kind == 0)
            for q, kind, ident in (
                (str(cs.height), "block", str(cs.height)),
                (tip, "block", tip),
                ("0x" + tip.upper(), "block", tip),
                (jid, "job", jid),
                (fund_tx.txid.hex(), "tx", fund_tx.txid.hex()),
                (CLIENT.address.hex(), "address", CLIENT.address.hex()),
            ):
                st, body, _ = await get(n, "/api/v1/search?q=" + q)
                assert st == 200 and (body["kind"], body["id"]) == (kind, ident), (q, body)
            for q in (str(cs.height + 1), "ab" * 32, "xyz", "", "12" * 7):
                st, body, _ = await get(n, "/api/v1/search?q=" + q)
                assert st == 404 and body["error"]["code"] == "not-found", (q, body)

            # proofs: the paid job's block names the job; every other block is a filler; all verify
            kinds = {}
            for height in range(1, cs.height + 1):
                st, p, _ = await get(n, f"/api/v1/blocks/{height}/proof")
                assert st == 200 and p["height"] == height
                assert p["proof"]["ticket_below_threshold"] and int(p["proof"]["ticket"], 16) < int(
                    p["proof"]["threshold"], 16
                )
                assert 0 <= p["proof"]["tile"]["ti"] < p["job"]["m"] // p["proof"]["tile"]["h"]
                kinds[height] = (p["kind"], p["paid_job"])
            paid = [h for h, (k, j) in kinds.items() if k == "paid"]
            assert paid and all(kinds[h][1] == jid for h in paid), kinds
            assert any(k == "filler" and j is None for k, j in kinds.values())
            rec = cs.get_job(bytes.fromhex(jid))
            hdr = cs.get_header(cs.chain[paid[0]])
            assert (hdr.job.h_a, hdr.job.h_b) == (rec.h_a, rec.h_b)
            st, v, _ = await get(n, f"/api/v1/blocks/{paid[0]}/verify")
            assert st == 200 and v["valid"] is True and v["reason"] is None and v["height"] == paid[0]
            st, g, _ = await get(n, "/api/v1/blocks/0/proof")
            assert st == 200 and g["kind"] == "genesis"
            # the verdict can fail: the same proof under another nonce is not valid
            blk = cs.get_block(cs.chain[paid[0]])
            bad = Block(replace(blk.header, nonce=blk.header.nonce + 1), blk.txs)
            out = explorer_api.verify_json(n, bad)
            assert out["valid"] is False and out["reason"].startswith("bad-pow"), out

            # address history: newest first, balances chain, the funding and the job's txs are there
            st, hist, _ = await get(n, f"/api/v1/accounts/{CLIENT.address.hex()}/history?limit=1")
            assert st == 200 and len(hist["entries"]) == 1 and hist["next_before"] == hist["entries"][-1]["height"]
            st, rest, _ = await get(n, f"/api/v1/accounts/{CLIENT.address.hex()}/history?before={hist['next_before']}")
            entries = hist["entries"] + rest["entries"]
            assert [e["height"] for e in entries] == sorted({e["height"] for e in entries}, reverse=True)
            assert entries[0]["balance_after"] == cs.get_account(CLIENT.address).balance
            for newer, older in zip(entries, entries[1:]):
                assert newer["balance_before"] == older["balance_after"]
            assert entries[-1]["balance_before"] == 0
            txs = {t for e in entries for t in e["txs"]}
            assert fund_tx.txid.hex() in txs and jid in txs

            # chart data: the last N active blocks
            st, bs, _ = await get(n, "/api/v1/blockstats?blocks=5")
            assert st == 200 and [p["height"] for p in bs["points"]] == list(range(cs.height - 4, cs.height + 1))
            st, bs2, _ = await get(n, "/api/v1/blockstats?blocks=2000")
            assert [p["height"] for p in bs2["points"]] == list(range(2, cs.height + 1))  # not block 1: see docs
            assert bs["network_work_rate"] > 0

            # a block that leaves the active chain is shown as such; its txs leave the index
            top = cs.get_block(cs.tip.hash)
            tx_in_top = [t.txid.hex() for t in top.txs]
            cs.invalidate_block(top.hash)
            st, b, _ = await get(n, "/api/v1/blocks/" + top.hash.hex())
            assert st == 200 and b["active"] is False and b["confirmations"] == 0
            st, p, _ = await get(n, f"/api/v1/blocks/{top.hash.hex()}/proof")
            assert st == 200 and p["hash"] == top.hash.hex()
            for t in tx_in_top:
                st, body, _ = await get(n, "/api/v1/search?q=" + t)
                assert st == 404 or n.mempool.get(bytes.fromhex(t)) is not None
            cs.reconsider_block(top.hash)
            assert cs.tip.hash == top.hash

            # no lookup scans the chain: a bounded number of block reads, and only narrow key scans
            reads, scans = [], []
            real_get, real_iter = cs.get_block, cs.store.iterate
            cs.get_block = lambda h: (reads.append(h), real_get(h))[1]
            cs.store.iterate = lambda prefix, start=None: (scans.append(prefix), real_iter(prefix, start))[1]
            try:
                for path in (
                    "/api/v1/search?q=" + fund_tx.txid.hex(),
                    "/api/v1/search?q=" + jid,
                    "/api/v1/search?q=" + CLIENT.address.hex(),
                    f"/api/v1/blocks/{paid[0]}/proof",
                    f"/api/v1/blocks/{paid[0]}/verify",
                    "/api/v1/blockstats?blocks=2000",
                    f"/api/v1/accounts/{CLIENT.address.hex()}/history",
                    "/api/v1/tx/" + fund_tx.txid.hex(),
                ):
                    reads.clear()
                    st, _, _ = await get(n, path)
                    assert st == 200 and len(reads) <= 1, (path, len(reads))
                whole = {S.P_HEADER, S.P_BODY, S.P_UNDO, S.P_INDEX, S.P_HEIGHT, S.P_TXINDEX, S.P_ADDRHIST, S.P_COMMIT}
                assert not whole & set(scans), scans  # never a whole chain table
                assert S.addrhist_prefix(CLIENT.address) in scans  # the history is one narrow range
            finally:
                cs.get_block, cs.store.iterate = real_get, real_iter

            # unknown ids and bad input: JSON errors
            for path, status, code in (
                ("/api/v1/blocks/" + "00" * 32 + "/proof", 404, "block-not-found"),
                ("/api/v1/blocks/999999/verify", 404, "block-not-found"),
                ("/api/v1/blocks/zz/proof", 400, "bad-param"),
                ("/api/v1/accounts/zz/history", 400, "bad-address"),
                ("/api/v1/accounts/" + "00" * 20 + "/history?before=-1", 400, "bad-param"),
                ("/api/v1/blockstats?blocks=x", 400, "bad-param"),
                ("/explorer/secret.py", 404, "not-found"),
                ("/explorer/../api.py", 404, "not-found"),
            ):
                st, body, _ = await get(n, path)
                assert st == status and body["error"]["code"] == code, (path, st, body)
            st, hist, _ = await get(n, "/api/v1/accounts/" + "00" * 20 + "/history")
            assert st == 200 and hist["entries"] == []

            # the page: HTML and assets from this node only
            st, html, hd = await get(n, "/")
            assert st == 200 and hd["Content-Type"].startswith("text/html") and "/explorer/explorer.js" in html
            assert "default-src 'none'" in hd["Content-Security-Policy"] and "http" not in html.replace(
                "http-equiv", ""
            )
            for name in ("explorer.js", "explorer.css"):
                st, text, hd = await get(n, "/explorer/" + name)
                text = text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace name, not a fetch
                assert st == 200 and "http://" not in text and "https://" not in text and "//" + "cdn" not in text
        finally:
            await n.stop()

    run(main())
