"""In-process nodes on loopback ports (real sockets) with the regtest chain, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from node.server.node import Node, NodeConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_node(datadir: Path, *, peers=(), mine=False, interval=0.0, port=None, **kw) -> Node:
    conf = NodeConfig(
        datadir=Path(datadir),
        network="regtest",
        port=0 if port is None else port,
        peers=list(peers),
        mine=mine,
        device="cpu",
        mine_interval=interval,
        **kw,
    )
    n = Node(conf)
    await n.start()
    return n


async def wait_for(cond, timeout: float = 30.0, step: float = 0.05, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def set_mining(nodes, on: bool) -> None:
    for n in nodes:
        if n.miner is not None:
            n.miner.enabled = on


def record_writes(client) -> list[tuple[str, str]]:
    """From now on, (method, path) of every request other than GET/HEAD that `client` (a node.client.sdk.Client) sends:
    a call the SDK refuses must send nothing. The client's calls return once the node answered, so what the list
    lacks never reaches the node later (no sleep needed before asserting the node's state is unchanged)."""
    writes: list[tuple[str, str]] = []
    send = client._request

    def recording(method: str, path: str, *a, **kw):
        if method not in ("GET", "HEAD"):
            writes.append((method, path))
        return send(method, path, *a, **kw)

    client._request = recording
    return writes


async def pause_mining(nodes, timeout: float = 10.0) -> None:
    """Stop mining and wait until every miner's loop has seen it (state "paused"): a pass that was in flight has
    ended and a block it found was dropped, so from here on no node's tip moves by its own miner. (Instead of a
    fixed sleep before asserting that nothing changes.)"""
    set_mining(nodes, False)
    await wait_for(
        lambda: all(n.miner is None or n.miner.state == "paused" for n in nodes), timeout, what="miners paused"
    )


async def converge(nodes, timeout: float = 30.0) -> None:
    """Stop mining and wait for one tip. Equal-work forks never resolve by themselves (ties keep the
    first-seen block), so while tips differ the first node mines one more block to break the tie."""
    set_mining(nodes, False)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        if len({n.chain.tip.hash for n in nodes}) == 1:
            return
        m = next((n for n in nodes if n.miner is not None), None)
        if m is not None and len({n.chain.tip.chainwork for n in nodes}) == 1:
            h = m.chain.height
            m.miner.enabled = True
            try:
                await wait_for(lambda: m.chain.height > h, max(1.0, end - time.monotonic()), what="tie-break block")
            finally:
                m.miner.enabled = False
    raise AssertionError(f"nodes did not converge on one tip within {timeout}s")
