"""Logs and metrics as an operator reads them: key=value and JSON log lines, and a /metrics page that
Prometheus' own tools accept and that counts what happened (blocks, tickets, a paid job from open to released)."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import logging
import pathlib
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
            logfmt.event(log, logging.ERROR, "failed", exc_info=True, step=3)

    kv = _log_with(False, emit).splitlines()
    assert kv[0].endswith(
        " INFO  pouw.test block connected height=7 hash=abababababababab ok=true none=null "
        'why="bad block (bad-proof)" ratio=0.25 raw=0102'
    ), kv[0]
    assert kv[0][:24].endswith("Z") and kv[0][10] == "T"  # UTC ISO-8601 with milliseconds
    assert kv[1].endswith("WARNING pouw.test plain old-style message")
    assert kv[2].endswith("ERROR pouw.test failed step=3") and kv[-1] == "ValueError: boom"
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
    assert js[2]["level"] == "error" and js[2]["step"] == 3 and "ValueError: boom" in js[2]["exc"]
    assert "exc" not in js[0]  # a traceback only with exc_info=True


_PACKAGES = ("node", "chain", "pouw", "kernels")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
_LOGGER_NAMES = {"log", "logger", "lg", "_log"}


def _is_logger(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _LOGGER_NAMES
    return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getLogger"


def _log_style_problems(source: str, where: str) -> list[str]:
    """printf-style log calls (a format with arguments, an f-string or `%` as the message: the numbers belong in
    `event(...)` fields) and loggers named outside `pouw.` (`getLogger(__name__)`, "asyncio", ...)."""
    bad = []
    for n in ast.walk(ast.parse(source)):
        if not isinstance(n, ast.Call) or not isinstance(n.func, (ast.Attribute, ast.Name)):
            continue
        name = n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id
        if name == "getLogger" and n.args:
            a = n.args[0]
            if isinstance(a, ast.BinOp) and isinstance(a.op, ast.Add):
                a = a.left  # "pouw." + __name__
            named = isinstance(a, ast.Constant) and isinstance(a.value, str)
            if (isinstance(a, ast.Name) and a.id == "__name__") or (named and not a.value.startswith("pouw.")):
                bad.append(f"{where}:{n.lineno}: logger outside pouw.: {ast.unparse(n)}")
        elif isinstance(n.func, ast.Attribute) and getattr(n.func.value, "id", None) == "logging" and name in _LEVELS:
            bad.append(f"{where}:{n.lineno}: the root logger, outside pouw.: {ast.unparse(n)[:100]}")
        elif isinstance(n.func, ast.Attribute) and _is_logger(n.func.value) and name in _LEVELS | {"log"}:
            msg_at = 1 if name == "log" else 0
            msg = n.args[msg_at] if len(n.args) > msg_at else None
            formatted = isinstance(msg, ast.JoinedStr) or (isinstance(msg, ast.BinOp) and isinstance(msg.op, ast.Mod))
            if len(n.args) > msg_at + 1 or formatted:
                bad.append(f"{where}:{n.lineno}: printf-style log call, use event(): {ast.unparse(n)[:100]}")
    return bad


def test_log_style_checker_catches_printf_calls_and_stray_loggers():
    sample = """
import logging
log = logging.getLogger(__name__)
other = logging.getLogger("asyncio.mine")
ok = logging.getLogger("pouw." + __name__)
log.info("block %s deferred: %s", h, e)
log.warning(f"peer {p} dropped")
logging.getLogger("pouw.api").exception("error on %s" % path)
log.log(logging.INFO, "x %d", 5)
log.info("shutting down")
logging.warning("disk full")
event(log, logging.INFO, "block deferred", hash=h)
"""
    bad = _log_style_problems(sample, "sample")
    assert [int(b.split(":")[1]) for b in bad] == [3, 4, 6, 7, 8, 9, 11], bad


def test_packages_log_events_with_fields_under_pouw():
    """Every log call in the shipped packages is a fixed phrase with key=value fields (`event(...)`), and every
    logger they name is under `pouw.`: one hierarchy that `pouw -v` and `--log-json` configure as a whole."""
    root = pathlib.Path(__file__).resolve().parent.parent
    files = sorted(p for pkg in _PACKAGES for p in (root / pkg).rglob("*.py"))
    assert len(files) > 50
    bad = [b for p in files for b in _log_style_problems(p.read_text(), str(p.relative_to(root)))]
    assert not bad, "\n".join(bad)


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
