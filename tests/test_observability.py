"""Logs and metrics as an operator reads them: key=value and JSON log lines, and a /metrics page that
Prometheus' own tools accept and that counts what happened (blocks, tickets, a paid job from open to released)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import subprocess

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chain.config import load_config
from chain.keys import PrivateKey, faucet_key
from chain.tx import make_transfer
from node import logfmt
from node.client.sdk import Client
from testkit.nodes import start_node, wait_for

CFG = load_config("regtest")


def _log_with(as_json: bool, fn) -> str:
    buf = io.StringIO()
    logfmt.setup(as_json=as_json, stream=buf)
    try:
        fn(logging.getLogger("pouw.test"))
    finally:
        logfmt.setup()  # back to stderr
    return buf.getvalue()


def test_event_lines_key_value_and_json():
    def emit(log):
        logfmt.event(
            log,
            logging.INFO,
            "block connected",
            height=7,
            hash="ab" * 8,
            ok=True,
            none=None,
            why="bad block (bad-proof)",
            ratio=0.25,
            raw=b"\x01\x02",
        )
        logfmt.event(log, logging.DEBUG, "hidden", x=1)  # below INFO: not written
        log.warning("plain %s message", "old-style")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

    kv = _log_with(False, emit).splitlines()
    assert kv[0].endswith(
        " INFO  pouw.test block connected height=7 hash=abababababababab ok=true none=null "
        'why="bad block (bad-proof)" ratio=0.25 raw=0102'
    ), kv[0]
    assert kv[0][:24].endswith("Z") and kv[0][10] == "T"  # UTC ISO-8601 with milliseconds
    assert kv[1].endswith("WARNING pouw.test plain old-style message")
    assert kv[2].endswith("ERROR pouw.test failed") and kv[-1] == "ValueError: boom"
    js = [json.loads(x) for x in _log_with(True, emit).splitlines()]  # every line is one JSON object
    assert len(js) == 3
    assert js[0] == {
        "ts": js[0]["ts"],
        "level": "info",
        "logger": "pouw.test",
        "msg": "block connected",
        "height": 7,
        "hash": "ab" * 8,
        "ok": True,
        "none": None,
        "why": "bad block (bad-proof)",
        "ratio": 0.25,
        "raw": "0102",
    }
    assert js[1]["msg"] == "plain old-style message" and js[1]["level"] == "warning"
    assert js[2]["level"] == "error" and "ValueError: boom" in js[2]["exc"]


def test_log_json_flag_positions():
    from node.cli import build_parser

    p = build_parser()
    for argv in (
        ["node", "--log-json"],
        ["--log-json", "node"],
        ["devnet", "--log-json"],
        ["miner", "--log-json"],
        ["--log-json", "miner"],
    ):
        assert p.parse_args(argv).log_json is True, argv
    assert getattr(p.parse_args(["node"]), "log_json", False) is False


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample, parsed by prometheus_client's own parser (which raises on a malformed exposition)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promtool_check(text: str) -> None:
    """`promtool check metrics` (lint included) must accept the exposition; skip where promtool is missing."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; scripts/setup.sh does it as root)")
    r = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


@pytest.mark.timeout(180)
def test_metrics_count_mining_and_a_paid_job_to_release(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pouw")

    async def main():
        n = await start_node(tmp_path / "m", mine=True, interval=0.2, filler_shape=(64, 512, 32))
        try:
            client_key = PrivateKey.from_phrase(b"metrics client")
            f = faucet_key()
            n.add_tx(
                make_transfer(f, CFG.chain_id, n.mempool.pending_nonce(f.address), client_key.address, 10**12, 1000)
            )
            await wait_for(lambda: n.chain.get_account(client_key.address).balance == 10**12, 30, what="funding")
            rng = np.random.default_rng(5)
            a = rng.integers(-64, 65, size=(20, 70), dtype=np.int8)
            b = rng.integers(-64, 65, size=(70, 12), dtype=np.int8)
            res = await asyncio.to_thread(Client(n.url).submit_job, client_key, a, b, None, True, timeout=90)
            jid = bytes.fromhex(res.job_id)
            # C may be in hand before the job is mined: no record yet
            await wait_for(
                lambda: getattr(n.chain.get_job(jid), "status_name", "pending") == "released", 60, what="job release"
            )
            rec = n.chain.get_job(jid)
            async with aiohttp.ClientSession() as s:
                async with s.get(n.url + "/metrics") as r:
                    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                    text = await r.text()
            return text, jid, rec, n.chain.height, n.miner.useful_work()[0], n.miner.blocks_found, n.chain.params
        finally:
            await n.stop()

    text, jid, rec, height, mined, found, params = asyncio.run(main())
    m = _samples(text)
    v = lambda name, **lb: m[(name, tuple(sorted(lb.items())))]  # noqa: E731
    assert v("pouw_chain_height") == height and v("pouw_chain_headers") >= height
    assert v("pouw_blocks_connected_total") >= height and v("pouw_blocks_mined_total") == found >= height - 1
    paid = rec.m * rec.k * rec.n  # one ticket per tile of every pass:
    assert v("pouw_tickets_drawn_total") == (
        (v("pouw_mined_macs_total") - paid) // params.tile_work(512) + paid // params.tile_work(rec.k)
    )
    assert v("pouw_mined_macs_total") >= mined > 0 and v("pouw_paid_macs_total") == rec.m * rec.k * rec.n
    assert v("pouw_device_faults_total") == 0 and v("pouw_work_rate_macs_per_second") > 0
    assert v("pouw_jobs", status="released") == 1 and v("pouw_jobs", status="open") == 0
    assert v("pouw_jobs_settled") == 1 and v("pouw_jobs_open") == 0 and v("pouw_jobs_disputed") == 0
    assert v("pouw_jobs_fees_paid_tokens") == rec.fee > 0 and v("pouw_jobs_escrow_tokens") == 0
    assert v("pouw_peers") == 0 and v("pouw_peers_by_direction", direction="inbound") == 0
    for name in (
        "pouw_mempool_transactions",
        "pouw_mempool_bytes",
        "pouw_peer_bans_total",
        "pouw_reorgs_total",
        "pouw_blocks_rejected_total",
        "pouw_process_open_fds",
        "pouw_event_loop_lag_seconds",
    ):
        assert (name, ()) in m, name
    settled = [r.pouw_fields for r in caplog.records if r.getMessage() == "job settled"]  # the log event
    assert settled == [
        {
            "job": jid.hex()[:16],
            "status": "released",
            "was": "resulted",
            "height": rec.closed_height,
            "fee": rec.fee,
            "macs": paid,
            "miner": rec.miner.hex(),
        }
    ]
    promtool_check(text)
