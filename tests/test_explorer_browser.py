"""The explorer in a real browser: Debian's headless Chromium (installed by scripts/setup.sh) drives the
page served by a running two-node regtest devnet (in-process nodes, real sockets). The page shows the
height of /api/v1/status, a block link opens that block with its proof re-verified by the node, a
search for a job id opens the job, a block off the active chain says so, and unknown ids give a "not
found" page. Screenshots are saved under the test's tmp dir (paths printed; run with -s to see them)."""

from __future__ import annotations


import aiohttp
import pytest

from chain.jobs import job_price
from chain.keys import PrivateKey
from testkit.jobs import job_operands
from chain.economy import k_issuer
from chain.econtx import KIND_ISSUER_REGISTER, IssuerRegister
from chain.tx import Transaction, make_job_submit
from testkit.nodes import set_mining, start_node, wait_for

from cdp_browser import Browser, find_chromium
from test_jobs_e2e import fund, run

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (scripts/setup.sh installs Debian's chromium where apt-get is available)",
)
CLIENT = PrivateKey.from_phrase(b"explorer browser client")


async def status(node) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(node.url + "/api/v1/status") as r:
            return await r.json()


NO_JUNK = "!/\\b(null|undefined|NaN)\\b|\\[object /.test(document.querySelector('main').innerText)"


def ready(route: str) -> str:
    return f"document.body.dataset.ready === '1' && document.body.dataset.route === {route!r}"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_explorer_in_chromium(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True, interval=0.2, take_jobs=False)
        b = await start_node(tmp_path / "b", peers=[a.listen_addr])
        try:
            await wait_for(lambda: len(a.p2p.ready_peers) >= 1, 20, what="peering")
            await fund(a, CLIENT)
            _, _, _, job = job_operands(7, 16, 512, 16)
            tx = make_job_submit(
                CLIENT,
                a.cfg.chain_id,
                a.mempool.pending_nonce(CLIENT.address),
                job,
                job_price(a.cfg, job.m, job.k, job.n),
                a.chain.height + 90,
                job.h_a,
                job.h_b,
                1000,
            )
            a.add_tx(tx)
            jid = tx.txid.hex()
            await wait_for(
                lambda: a.chain.get_job(tx.txid) is not None and a.chain.height >= 6, 30, what="the job on chain"
            )
            set_mining([a], False)
            await wait_for(lambda: b.chain.tip.hash == a.chain.tip.hash, 20, what="b in sync")
            shots = []
            async with await Browser.launch(CHROMIUM, tmp_path / "chromium-profile") as br:
                # the chain at a glance: the same height as the API
                await br.goto(a.url + "/")
                await br.wait(ready("/") + " && !!document.getElementById('height')", what="home page")
                st = await status(a)
                assert await br.eval("document.getElementById('height').textContent") == str(st["height"])
                assert await br.wait(
                    "document.getElementById('strip-height') && document.getElementById('strip-height').textContent"
                ) == str(st["height"])
                assert await br.eval("document.querySelectorAll('#chart polyline').length") == 2
                assert await br.eval(NO_JUNK), "a value rendered as null/undefined/NaN"
                shots.append(await br.screenshot(tmp_path / "explorer-home.png"))

                # follow a block link from the recent blocks: that block, its proof re-checked by the node
                href = await br.eval(
                    "[...document.querySelectorAll('a[href^=\"#/block/\"]')]"
                    ".find(x => /^[0-9]+$/.test(x.textContent) && x.textContent !== '0')"
                    ".getAttribute('href')"
                )
                want = href.split("/")[-1]
                await br.eval(f"document.querySelector('a[href=\"{href}\"]').click()")
                await br.wait(ready("/block/" + want), what="block page")
                assert await br.eval("document.getElementById('block-hash').textContent") == want
                verdict = await br.wait(
                    "(t => t.includes('proof valid') && t)(document.getElementById('verdict').textContent)",
                    what="the verdict",
                )
                assert "re-checked by this node" in verdict
                assert await br.eval("document.getElementById('job-kind').textContent") == "filler"
                assert await br.eval("document.getElementById('inactive') === null") is True
                assert await br.eval(NO_JUNK), "a value rendered as null/undefined/NaN"
                shots.append(await br.screenshot(tmp_path / "explorer-block.png"))

                # search for the job id: the job page
                await br.eval(
                    f"document.getElementById('q').value = '{jid}'; document.querySelector('#search button').click()"
                )
                await br.wait(ready("/job/" + jid), what="job page")
                assert await br.eval("document.getElementById('job-status').textContent") == "open"
                assert await br.eval(NO_JUNK), "a value rendered as null/undefined/NaN"
                shots.append(await br.screenshot(tmp_path / "explorer-job.png"))

                # the client's address page: balance as the API says, history rows linking its transactions
                await br.goto(a.url + "/#/address/" + CLIENT.address.hex())
                await br.wait(ready("/address/" + CLIENT.address.hex()), what="address page")
                bal = a.chain.get_account(CLIENT.address).balance
                assert (
                    await br.eval("document.getElementById('balance').textContent")
                    == f"{bal / 10**8:,.8f}".rstrip("0").rstrip(".") + " tok"
                )
                assert await br.eval(f"!!document.querySelector('a[href=\"#/tx/{jid}\"]')"), await br.eval(
                    "[...document.querySelectorAll('a')].map(x => x.getAttribute('href')).join(' ')"
                )
                assert await br.eval(NO_JUNK)
                shots.append(await br.screenshot(tmp_path / "explorer-address.png"))

                # a block that left the active chain is shown as such
                top = a.chain.tip.hash
                a.chain.invalidate_block(top)
                await br.goto(a.url + "/#/block/" + top.hex())
                await br.wait(ready("/block/" + top.hex()), what="side block page")
                assert "not on the active chain" in await br.eval("document.getElementById('inactive').textContent")
                a.chain.reconsider_block(top)

                # unknown ids: a "not found" page, not an error
                for route in ("/block/" + "00" * 32, "/job/" + "11" * 32, "/tx/" + "22" * 32, "/search/nothing-here"):
                    await br.goto(a.url + "/#" + route)
                    await br.wait(
                        "document.body.dataset.ready === '1' && !!document.getElementById('not-found')",
                        what="not found on " + route,
                    )
                # the network page lists the peer
                await br.goto(a.url + "/#/network")
                await br.wait(ready("/network"), what="network page")
                assert b.node_key.pubkey.hex()[:8] in await br.eval("document.body.innerText")
                assert await br.eval(NO_JUNK), "a value rendered as null/undefined/NaN"
                shots.append(await br.screenshot(tmp_path / "explorer-network.png"))
                # the economy panel degrades to "no market yet" without issuers or endpoints
                await br.goto(a.url + "/#/economy")
                await br.wait(ready("/economy"), what="economy page")
                assert "no market yet" in await br.eval("document.getElementById('no-market').textContent")
                assert await br.eval(NO_JUNK)
                shots.append(await br.screenshot(tmp_path / "explorer-no-market.png"))
                # once an issuer registers, its panel shows its (empty) order book and trades
                reg = Transaction(
                    KIND_ISSUER_REGISTER,
                    a.cfg.chain_id,
                    a.mempool.pending_nonce(CLIENT.address),
                    CLIENT.pubkey,
                    1000,
                    IssuerRegister(0, 3, 30, 9000),
                ).signed(CLIENT)
                a.add_tx(reg)
                set_mining([a], True)
                await wait_for(lambda: a.chain.get_econ(k_issuer(CLIENT.address)) is not None, 30, what="issuer")
                set_mining([a], False)
                await br.goto(a.url + "/#/")
                await br.wait(ready("/"), what="home again")
                await br.goto(a.url + "/#/economy")
                await br.wait(
                    ready("/economy") + " && document.body.innerText.includes('Order book')", what="issuer panel"
                )
                assert await br.eval("document.getElementById('no-market') === null")
                assert CLIENT.address.hex()[:8] in await br.eval("document.querySelector('main').innerText")
                assert await br.eval(NO_JUNK)
                shots.append(await br.screenshot(tmp_path / "explorer-economy.png"))
                # the chart's window buttons re-draw it over more blocks
                await br.goto(a.url + "/#/")
                await br.wait(ready("/") + " && !!document.getElementById('chart-500')", what="home")
                await br.eval("document.getElementById('chart-500').click()")
                await br.wait(
                    "document.getElementById('chart-500') && "
                    "!document.getElementById('chart-500').classList.contains('secondary')",
                    what="500 blocks",
                )
            for p in shots:
                assert p.stat().st_size > 10_000
                print("explorer screenshot:", p)
        finally:
            await b.stop()
            await a.stop()

    run(main())
