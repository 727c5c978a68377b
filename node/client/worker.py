"""The remote mining worker (`pouw miner --node URL`) and the small JSON client of the node's HTTP API that
the wallet and the CLI share. The mining itself is node.engine's, the same code the node's miner runs.

Remote worker protocol (getblocktemplate pattern, JSON over the node's HTTP API):
``POST /api/v1/mining/work {"address", "worker", "work_rate"}`` returns a template (header without job
and proof, hex of its canonical encoding, plus `template_id` and the node's `filler` shape); the worker
mines the filler job of that header (`chain.mining.filler_seed`) under nonces of its choosing (a random
start, then +1) with `FillerMiner`, and posts a winning header to
``POST /api/v1/mining/submit {"template_id", "header"}``. It asks for new work every second and after
each found block, so it follows the node's tip.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

from chain.block import Header
from chain.config import ChainConfig
from node.engine import Device, FillerMiner, WorkRate
from node.logfmt import event

log = logging.getLogger("pouw.worker")


# --- remote worker ------------------------------------------------------------------------------------


class NodeClient:
    """Tiny JSON client for the node's HTTP API (stdlib only)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        if os.environ.get("POUW_API_TOKEN") and method not in ("GET", "HEAD"):  # docs/operations.md
            headers["Authorization"] = "Bearer " + os.environ["POUW_API_TOKEN"]
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                doc = json.loads(e.read())
            except Exception:
                doc = {"error": {"code": "http-%d" % e.code, "message": str(e)}}
            raise ApiError(doc.get("error", {}).get("code", "error"), doc.get("error", {}).get("message", "")) from None


class ApiError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def run_remote(
    url: str,
    device: str,
    address: str,
    *,
    max_blocks: int = 0,
    duration: float = 0.0,
    report_every: float = 10.0,
    filler_shape: tuple[int, int, int] | None = None,
    stop: threading.Event | None = None,
    on_block: Callable[[], None] = lambda: None,
    max_failures: int = 5,
) -> int:
    """Mine for the node at `url` until Ctrl-C (or max_blocks found / duration elapsed / `stop` set). Returns found.
    The filler shape is `filler_shape`, else the one the node advertises with its work. on_block() is called
    after each accepted block; the device is dropped (and the worker stops) after max_failures faults in a row."""
    from chain.config import parse_config

    client = NodeClient(url)
    worker_id = os.urandom(4).hex()
    dev = Device(device, max_failures=max_failures)
    stop = stop or threading.Event()
    rate = WorkRate()
    cfg_cache: dict[str, ChainConfig] = {}
    filler: FillerMiner | None = None
    found = 0
    t_start = time.monotonic()
    last_report = t_start
    work = None
    work_at = 0.0
    nonce = random.getrandbits(64)
    event(log, logging.INFO, "worker mining", worker=worker_id, node=url, device=device, rewards_to=address or "node")
    while True:
        now = time.monotonic()
        if (max_blocks and found >= max_blocks) or (duration and now - t_start >= duration) or stop.is_set():
            break
        if work is None or now - work_at >= 1.0:
            try:
                new = client.call(
                    "POST",
                    "/api/v1/mining/work",
                    {"address": address, "worker": worker_id, "work_rate": rate.rate(), "device": device},
                )
            except (OSError, ApiError) as e:
                event(log, logging.WARNING, "cannot get work; retrying", node=url, why=str(e))
                time.sleep(2.0)
                continue
            if work is None or new["template_id"] != work["template_id"]:
                nonce = random.getrandbits(64)
            work, work_at = new, now
            if work["network"] not in cfg_cache:
                cfg_cache.clear()
                cfg_cache[work["network"]] = parse_config(client.call("GET", "/api/v1/network")["config_toml"])
                filler = None
        cfg = cfg_cache[work["network"]]
        if filler is None:
            try:
                filler = FillerMiner(cfg, cfg.pow.params(), filler_shape or tuple(work.get("filler") or ()) or None)
            except ValueError as e:
                event(log, logging.ERROR, "worker stops", why=str(e))
                return found
            event(log, logging.INFO, "filler shape", m=filler.shape[0], k=filler.shape[1], n=filler.shape[2])
        if dev.dropped:
            event(log, logging.ERROR, "device dropped; worker stops")
            return found
        if not dev.ready():
            time.sleep(0.2)
            continue
        header = Header.decode(bytes.fromhex(work["header"]))
        left = max(0.0, 1.0 - (time.monotonic() - work_at))
        if duration:
            left = min(left, max(0.0, duration - (time.monotonic() - t_start)))
        try:
            got, nonce = filler.run(dev.get(), header, nonce, budget_s=left, on_attempt=rate.add, stop=stop.is_set)
            dev.ok()
        except Exception as e:  # any backend error is a device fault
            dev.fault(e)
            continue
        if got is not None:
            try:
                res = client.call(
                    "POST",
                    "/api/v1/mining/submit",
                    {"template_id": work["template_id"], "header": got.encoded.hex(), "worker": worker_id},
                )
                event(
                    log,
                    logging.INFO,
                    "found block",
                    height=got.height,
                    hash=got.hash.hex()[:16],
                    result=res.get("result"),
                    device=device,
                )
                if res.get("result") == "accepted":
                    found += 1
                    on_block()
            except (OSError, ApiError) as e:
                event(log, logging.WARNING, "submit failed", why=str(e))
            work = None
        if time.monotonic() - last_report >= report_every:
            last_report = time.monotonic()
            event(
                log,
                logging.INFO,
                "work rate",
                device=device,
                gmacs_per_s=round(rate.rate() / 1e9, 3),
                attempts=rate.jobs,
                operand_builds=filler.builds,
                blocks_found=found,
            )
    event(log, logging.INFO, "worker done", device=device, blocks=found, gmacs_per_s=round(rate.rate() / 1e9, 3))
    return found


def run_remote_devices(url: str, devices: list[str], address: str, *, max_blocks: int = 0, **kw) -> int:
    """`run_remote` on several devices at once (`pouw miner --device cuda:0,cuda:1` or `cuda:all`): one worker
    thread per device, each with its own worker id, work rate (reported to the node, which sums them) and fault
    handling, so a faulty device is dropped alone and the others keep mining. max_blocks counts the blocks of all
    devices together. Returns the blocks found by all."""
    if len(devices) == 1:
        return run_remote(url, devices[0], address, max_blocks=max_blocks, **kw)
    stop = threading.Event()
    lock = threading.Lock()
    total = [0]
    found: dict[str, int] = {}

    def on_block() -> None:
        with lock:
            total[0] += 1
            if max_blocks and total[0] >= max_blocks:
                stop.set()

    def work(device: str) -> None:
        try:
            found[device] = run_remote(url, device, address, stop=stop, on_block=on_block, **kw)
        except Exception:  # a worker's own bug: log it, the other devices go on
            event(log, logging.ERROR, "worker failed", exc_info=True, device=device)
            found[device] = 0

    threads = [threading.Thread(target=work, args=(d,), name=f"pouw-worker-{d}") for d in devices]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
    except KeyboardInterrupt:
        event(log, logging.INFO, "stopping the workers", devices=",".join(devices))
        stop.set()
        for t in threads:
            t.join()
    per_device = ",".join(f"{d}={found.get(d, 0)}" for d in devices)
    event(log, logging.INFO, "workers done", blocks=sum(found.values()), per_device=per_device)
    return sum(found.values())
