"""A node that faces hostile clients and peers (issue 16): connection limits and deadlines on the listeners,
inbound peer slots, address bans, a bounded ban list, API answers under abuse, separate listeners.

Real nodes on loopback only. Attackers connect from other loopback addresses (127.0.0.2 and up, bound as
the source address) so that per-address limits and address bans apply to them and not to the test's own
client on 127.0.0.1. Every loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from chain.keys import PrivateKey
from node.server.messages import AGENT, PROTOCOL_VERSION, auth_payload
from node.server.netguard import RateLimitFilter, ban_key, is_loopback, netgroup
from node.server.peers import MAX_BANS, Peer, PeerBook, select_eviction
from testkit.nodes import free_port, start_node, wait_for


def run(coro):
    return asyncio.run(coro)


async def api(url, method, path, body=None, headers=None, data=None):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url + path, json=body, data=data, headers=headers) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if raw else None), r.headers


def raw_conn(port: int, src: str, payload: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    if payload:
        s.sendall(payload)
    s.setblocking(False)
    return s


def is_closed(s: socket.socket) -> bool:
    """True once the server closed (EOF or reset); False while it is still open and silent."""
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 4")  # closed, or refused with a 4xx before closing


PARTIAL = b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


# --- 1. slow-loris and connection caps ---------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_partial_requests_time_out_and_per_address_cap_holds(tmp_path):
    async def main():
        n = await start_node(tmp_path / "a", header_timeout=1.5, max_conns_per_ip=8)
        socks: list[socket.socket] = []
        try:
            for _ in range(40):  # 40 partial requests from one address: only 8 are held
                socks.append(raw_conn(n.port, "127.0.0.2", PARTIAL))
            drip = raw_conn(n.port, "127.0.0.3", PARTIAL)  # a slow-loris that keeps sending header bytes
            await wait_for(lambda: sum(not is_closed(s) for s in socks) <= 8, 3, what="per-IP cap")
            assert n.guard.count("127.0.0.2") <= 8
            # the API answers meanwhile, on its own address
            t0 = time.monotonic()
            st, doc, _ = await api(n.url, "GET", "/api/v1/status")
            assert st == 200 and doc["height"] == 0 and time.monotonic() - t0 < 2.0
            # every partial request is closed at its header deadline, the dripping one too
            end = time.monotonic() + 6
            while time.monotonic() < end and not is_closed(drip):
                drip.send(b"a")
                await asyncio.sleep(0.2)
            assert is_closed(drip), "a request head that keeps dripping must still be closed at its deadline"
            await wait_for(lambda: all(is_closed(s) for s in socks), 5, what="partial requests closed")
            await wait_for(lambda: n.guard.count() == 0, 3, what="guard released every connection")
            assert n.guard.timed_out >= 9 and n.guard.refused >= 32
            async with aiohttp.ClientSession() as s:  # /metrics: the guard's counts, process and loop health
                async with s.get(n.url + "/metrics") as r:
                    m = {
                        ln.split()[0]: float(ln.split()[1])
                        for ln in (await r.text()).splitlines()
                        if ln and not ln.startswith("#")
                    }
            assert m["pouw_connections_timed_out_total"] >= 9 and m["pouw_connections_refused_total"] >= 32
            assert m["pouw_process_open_fds"] > 0 and m["pouw_process_resident_memory_bytes"] > 0
            assert 0 <= m["pouw_event_loop_lag_seconds"] < 5
            # a slow body: declared 60 kB, sent a byte at a time, is closed at its body deadline
            body = raw_conn(
                n.port,
                "127.0.0.4",
                b"POST /api/v1/tx HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{",
            )
            end = time.monotonic() + 1.5 + 60_000 / n.guard.limits.min_body_rate + 3
            while time.monotonic() < end and not is_closed(body):
                body.send(b" ")
                await asyncio.sleep(0.5)
            assert is_closed(body)
            # keep-alive requests with complete heads are not affected
            async with aiohttp.ClientSession() as s:
                for _ in range(5):
                    async with s.get(n.url + "/api/v1/status") as r:
                        assert r.status == 200
                    await asyncio.sleep(0.5)
        finally:
            for s in socks:
                s.close()
            await n.stop()

    run(main())


NODE_CHILD = r"""
import asyncio, resource, sys, logging
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[3]), int(sys.argv[3])))
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from pathlib import Path
from node.server.node import Node, NodeConfig
n = Node(NodeConfig(datadir=Path(sys.argv[1]), network="regtest", port=int(sys.argv[2]), header_timeout=60.0))
asyncio.run(n.run_forever())
"""


@pytest.mark.timeout(120)
def test_connection_flood_below_fd_limit_keeps_api_up_and_log_small(tmp_path):
    """A node with 600 file descriptors, flooded with 900 partial requests from 30 addresses: its
    connection cap stays below the fd limit, new clients evict the oldest partial request, the API keeps
    answering, and the log stays small (no 'Too many open files' tracebacks)."""
    port = free_port()
    logf = open(tmp_path / "node.log", "wb")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE_CHILD, str(tmp_path / "d"), str(port), "600"],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
    )
    socks: list[socket.socket] = []
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "node.log").read_text()[-2000:]
                time.sleep(0.3)
        for i in range(900):
            try:
                socks.append(raw_conn(port, f"127.0.1.{1 + i % 30}", PARTIAL))
            except OSError:
                pass
        lat = []
        for _ in range(20):
            t0 = time.monotonic()
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            resp = b""
            while chunk := c.recv(65536):
                resp += chunk
            c.close()
            lat.append(time.monotonic() - t0)
            assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
        assert proc.poll() is None
        nfd = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert nfd < 600, nfd
        open_attackers = sum(not is_closed(s) for s in socks)
        assert open_attackers <= 600 - 512 + 5, open_attackers  # the cap: fd limit minus the reserve
        assert max(lat) < 3.0, lat
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
    log = (tmp_path / "node.log").read_text()
    assert len(log) < 20_000, log[-3000:]
    assert "Too many open files" not in log and "Traceback" not in log


# --- 2. inbound peer slots -----------------------------------------------------------------------------
class RawPeer:
    """A hand-driven peer from a chosen loopback source address."""

    def __init__(self, node, src: str, key: PrivateKey | None = None):
        self.node, self.src = node, src
        self.key = key or PrivateKey.generate()
        self.codec = node.codec

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(self.src, 0)))
        try:
            self.ws = await self.session.ws_connect(f"ws://{self.node.listen_addr}/p2p", max_msg_size=0)
        except BaseException:
            await self.session.close()
            raise
        return self

    async def __aexit__(self, *a):
        await self.ws.close()
        await self.session.close()

    async def handshake(self, work: int = 0, height: int = 0) -> bool:
        g = self.node.chain.genesis.hash
        await self.ws.send_bytes(
            self.codec.encode(
                "hello",
                v=PROTOCOL_VERSION,
                chain_id=self.node.cfg.chain_id,
                genesis=g,
                node_id=self.key.pubkey,
                nonce=os.urandom(32),
                port=0,
                height=height,
                work=work.to_bytes(32, "big"),
                tip=os.urandom(32),
                agent=AGENT,
            )
        )
        while True:
            try:
                msg = await self.ws.receive(timeout=5)
            except asyncio.TimeoutError:
                return False
            if msg.type != aiohttp.WSMsgType.BINARY:
                return False
            t, m = self.codec.decode(msg.data)
            if t == "hello":
                await self.ws.send_bytes(
                    self.codec.encode("auth", sig=self.key.sign(auth_payload(m["nonce"], self.key.pubkey, g)))
                )
            elif t == "auth":
                return True

    async def closed(self, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = await self.ws.receive(timeout=max(0.05, end - time.monotonic()))
            except asyncio.TimeoutError:
                return False
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return True
        return False


@pytest.mark.timeout(90)
def test_idle_websockets_do_not_take_peer_slots_and_handshake_deadline_is_absolute(tmp_path, monkeypatch):
    monkeypatch.setattr("node.server.p2p.HANDSHAKE_TIMEOUT", 1.5)

    async def main():
        a = await start_node(tmp_path / "a", max_inbound=4, max_pending_peers=40, mine=True, interval=0.2)
        b = await start_node(tmp_path / "b", peers=[a.listen_addr])  # an honest node, synced through it all
        idle: list[RawPeer] = []
        try:
            await wait_for(lambda: len(b.p2p.ready_peers) == 1, 20, what="b connected")
            for i in range(30):  # 30 websockets that never say hello (and keep pinging)
                p = RawPeer(a, f"127.0.2.{i + 1}")
                idle.append(await p.__aenter__())
            assert sum(pp.inbound and not pp.ready for pp in a.p2p.peers) == 30
            # an honest peer still gets a slot: only authenticated peers count
            async with RawPeer(a, "127.0.3.1") as honest:
                assert await honest.handshake()
                await wait_for(lambda: len(a.p2p.ready_peers) == 2, 5, what="honest peer ready")
                # pings do not extend the handshake deadline
                end = time.monotonic() + 4
                while time.monotonic() < end and any(not p.ws.closed for p in idle):
                    for p in idle:
                        if not p.ws.closed:
                            try:
                                await p.ws.ping()
                            except (ConnectionError, RuntimeError):
                                pass
                    await asyncio.sleep(0.2)
                for p in idle:
                    assert p.ws.closed or await p.closed(1.0)
                assert not honest.ws.closed and len(a.p2p.ready_peers) == 2
            # handshakes in progress are limited per address
            a.p2p.max_pending = 40
            async with RawPeer(a, "127.0.4.1"), RawPeer(a, "127.0.4.1"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    async with RawPeer(a, "127.0.4.1"):
                        pass
                assert e.value.status == 503
            # the honest node stayed connected and in sync throughout
            h = a.chain.height
            await wait_for(
                lambda: b.chain.height >= h and b.chain.tip.hash == a.chain.tip.hash or b.chain.height > h,
                20,
                what="b in sync",
            )
            assert len(b.p2p.ready_peers) == 1
        finally:
            for p in idle:
                await p.__aexit__()
            await b.stop()
            await a.stop()

    run(main())


@pytest.mark.timeout(90)
def test_full_inbound_slots_evict_and_bans_hold_against_fresh_keys(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", max_inbound=4, max_inbound_per_ip=2)
        peers: list[RawPeer] = []
        try:
            for i in range(4):
                p = await RawPeer(a, f"127.0.5.{i + 1}").__aenter__()
                peers.append(p)
                assert await p.handshake()
            await wait_for(lambda: len(a.p2p.ready_peers) == 4, 5, what="4 inbound peers")
            # a fifth authenticated peer evicts one (slots stay at 4), the newcomer is served
            async with RawPeer(a, "127.0.6.1") as p5:
                assert await p5.handshake()
                await wait_for(lambda: a.p2p.evicted_count == 1, 5, what="an eviction")
                gone = [p for p in peers if p.ws.closed or await p.closed(0.5)]
                assert len(a.p2p.ready_peers) == 4 and len(gone) == 1
                assert any(pp.remote_host == "127.0.6.1" for pp in a.p2p.ready_peers)
            # per-address limit of authenticated peers (with free slots: no eviction involved)
            a.p2p.max_inbound = 10
            async with RawPeer(a, "127.0.7.1") as x1:
                assert await x1.handshake()
                async with RawPeer(a, "127.0.7.1") as x2:
                    assert await x2.handshake()
                    async with RawPeer(a, "127.0.7.1") as x3:
                        assert not await x3.handshake() or await x3.closed()
                    assert sum(pp.remote_host == "127.0.7.1" for pp in a.p2p.ready_peers) == 2
            # a junk peer is banned by id and by address: a fresh key from that address is refused
            async with RawPeer(a, "127.0.8.1") as j:
                assert await j.handshake()
                await j.ws.send_bytes(os.urandom(64))
                assert await j.closed()
            assert a.book.banned(ip="127.0.8.1")
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                async with RawPeer(a, "127.0.8.1", PrivateKey.generate()):
                    pass
            assert e.value.status == 403
            # loopback (the operator's noban list) is not banned by address: local peers stay welcome
            async with RawPeer(a, "127.0.0.1") as j:
                assert await j.handshake()
                await j.ws.send_bytes(os.urandom(64))
                assert await j.closed()
            assert a.book.banned(node_id=j.key.pubkey) and not a.book.banned(ip="127.0.0.1")
            async with RawPeer(a, "127.0.0.1") as ok:
                assert await ok.handshake()
        finally:
            for p in peers:
                await p.__aexit__()
            await a.stop()

    run(main())


@pytest.mark.timeout(60)
def test_peer_claiming_a_chain_it_does_not_deliver_is_not_asked_forever(tmp_path, monkeypatch):
    monkeypatch.setattr("node.server.sync.HEADERS_TIMEOUT", 1.0)

    async def main():
        a = await start_node(tmp_path / "a")
        try:
            for answer in (True, False):  # answers with no headers / does not answer at all
                async with RawPeer(a, "127.0.9.1" if answer else "127.0.9.2") as liar:
                    assert await liar.handshake(work=1 << 200, height=10**6)
                    asked, end = 0, time.monotonic() + 6
                    while time.monotonic() < end:
                        try:
                            msg = await liar.ws.receive(timeout=max(0.05, end - time.monotonic()))
                        except asyncio.TimeoutError:
                            break
                        if msg.type != aiohttp.WSMsgType.BINARY:
                            break
                        t, m = liar.codec.decode(msg.data)
                        if t == "getheaders":
                            asked += 1
                            if answer:
                                await liar.ws.send_bytes(liar.codec.encode("headers", headers=[]))
                    assert liar.ws.closed or await liar.closed(2), "the liar must be disconnected"
                    assert asked == 1, f"asked {asked} times"
                assert not a.sync.syncing
            st, doc, _ = await api(a.url, "GET", "/api/v1/status")
            assert doc["sync"]["syncing"] is False
        finally:
            await a.stop()

    run(main())


def _peer(ip: str, t: float, block: float = 0.0, tx: float = 0.0) -> Peer:
    p = Peer(None, True, f"{ip}:1", None, remote_host=ip, ready=True)
    p.connected_at, p.last_block_at, p.last_tx_at = t, block, tx
    return p


def test_select_eviction_protects_useful_and_old_peers_and_takes_from_the_biggest_group():
    secret = b"k" * 32
    # one peer each from 4 other /16 groups (protected by diversity), 12 from 10.1/16 (the attacker's)
    diverse = [_peer(f"10.{i + 2}.0.1", 100.0 + i) for i in range(4)]
    attack = [_peer(f"10.1.0.{i + 1}", 200.0 + i) for i in range(12)]
    relayer = attack[-1]
    relayer.last_block_at = 5.0  # the youngest, but it relayed a valid block
    out = _peer("10.9.0.1", 1.0)
    out.inbound = False
    victim = select_eviction(diverse + attack + [out], secret)
    assert victim is attack[-2]  # youngest of the biggest group that is not protected
    assert select_eviction([relayer], secret) is None  # all protected: the newcomer is refused
    assert select_eviction([out], secret) is None  # outbound peers are never candidates


# --- ban list ---------------------------------------------------------------------------------------------
def test_ban_list_is_bounded_expiring_and_written_off_the_loop(tmp_path):
    path = tmp_path / "peers.json"
    book = PeerBook(path)
    book.ban(b"\x01" * 32, None, seconds=-1)  # already expired
    for i in range(MAX_BANS + 5000):
        book.ban(i.to_bytes(32, "big"), None)
    assert not path.exists(), "a ban must not write the book synchronously"
    assert len(book.bans) <= MAX_BANS
    assert book.banned(node_id=(MAX_BANS + 4999).to_bytes(32, "big"))  # the newest are kept
    assert not book.banned(node_id=b"\x01" * 32)
    run(book.flush())
    doc = json.loads(path.read_text())
    assert len(doc["bans"]) <= MAX_BANS and f"id:{'01' * 32}" not in doc["bans"]
    book.ban(None, None, ip="2001:db8::1")
    assert book.banned(ip="2001:db8::ffff")  # an IPv6 ban covers the /64
    assert not book.banned(ip="2001:db8:0:1::1")


def test_address_helpers():
    assert ban_key("10.1.2.3") == "10.1.2.3" and ban_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert netgroup("10.1.2.3") == "10.1.0.0/16" and netgroup("2001:db8:1::1") == "2001:db8::/32"
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")


def test_rate_limited_log_filter():
    now = [0.0]
    f = RateLimitFilter(burst=5, interval=10.0, clock=lambda: now[0])
    rec = lambda: logging.LogRecord(
        "asyncio",
        logging.ERROR,
        "x",
        1,
        "socket.accept() out of system resource",  # noqa: E731
        None,
        None,
    )
    passed = sum(f.filter(rec()) for _ in range(10_000))
    assert passed == 5
    now[0] = 11.0
    r = rec()
    assert f.filter(r) and "9995 similar message(s) suppressed" in r.getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, "x", 1, "another message", None, None)
    assert f.filter(other)


# --- 3. the API under abuse -------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_api_answers_bad_requests_with_4xx_not_500(tmp_path):
    async def main():
        n = await start_node(tmp_path / "a", api_max_body=1 << 20)
        u = n.url
        try:
            for path in (
                "/api/v1/blocks/%C2%B2",
                "/api/v1/blocks/%D9%A1",
                "/api/v1/blocks?limit=1_0",
                "/api/v1/blocks?from=-1",
                "/api/v1/mempool?limit=%C2%B2",
                "/api/v1/jobs?limit=1_0",
            ):
                st, doc, _ = await api(u, "GET", path)
                assert st in (400, 404) and doc["error"]["code"] in ("bad-param", "block-not-found"), (path, st, doc)
            st, doc, _ = await api(
                u, "POST", "/api/v1/tx", data=b"[" * 200_000, headers={"Content-Type": "application/json"}
            )
            assert (st, doc["error"]["code"]) == (400, "bad-json")
            st, doc, _ = await api(u, "POST", "/api/v1/mining/work", {"address": 5})
            assert (st, doc["error"]["code"]) == (400, "bad-address")
            st, doc, _ = await api(u, "POST", "/api/v1/mining/work", {"worker": "w", "work_rate": 1e308})
            assert (st, doc["error"]["code"]) == (400, "bad-param")
            st, doc, _ = await api(u, "POST", "/api/v1/mining/work", {"worker": "w", "work_rate": "nan"})
            assert st == 400
            async with aiohttp.ClientSession() as s:
                async with s.get(u + "/api/v1/status") as r:
                    json.loads(await r.text(), parse_constant=lambda c: pytest.fail(f"{c} in /status"))
            st, doc, h = await api(u, "DELETE", "/api/v1/status")
            assert st == 405 and "GET" in h["Allow"]
        finally:
            await n.stop()

    run(main())


@pytest.mark.timeout(60)
def test_browser_requests_are_refused_and_writes_need_json_and_the_token(tmp_path):
    async def main():
        n = await start_node(tmp_path / "a", api_token="s3cret", api_cors_origins=["https://wallet.example"])
        u = n.url
        auth = {"Authorization": "Bearer s3cret"}
        try:
            # a web page's simple POST (text/plain, no preflight) is refused before the handler
            st, doc, _ = await api(
                u, "POST", "/api/v1/tx", data=b'{"tx": "00"}', headers={"Content-Type": "text/plain", **auth}
            )
            assert (st, doc["error"]["code"]) == (415, "unsupported-media-type")
            st, doc, _ = await api(
                u, "POST", "/api/v1/blobs", data=b"x", headers={"Content-Type": "text/plain", **auth}
            )
            assert (st, doc["error"]["code"]) == (415, "unsupported-media-type")
            st, doc, _ = await api(
                u, "POST", "/api/v1/tx", {"tx": "00"}, headers={"Origin": "https://evil.example", **auth}
            )
            assert (st, doc["error"]["code"]) == (403, "origin-not-allowed")
            st, doc, h = await api(
                u,
                "OPTIONS",
                "/api/v1/tx",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert st == 403 and "Access-Control-Allow-Origin" not in h
            st, doc, h = await api(
                u,
                "OPTIONS",
                "/api/v1/tx",
                headers={"Origin": "https://wallet.example", "Access-Control-Request-Method": "POST"},
            )
            assert st == 204 and h["Access-Control-Allow-Origin"] == "https://wallet.example"
            st, doc, h = await api(u, "GET", "/api/v1/status", headers={"Origin": "https://wallet.example"})
            assert st == 200 and h["Access-Control-Allow-Origin"] == "https://wallet.example"
            # DNS rebinding: a name the operator did not allow
            st, doc, _ = await api(u, "GET", "/api/v1/status", headers={"Host": f"evil.example:{n.port}"})
            assert (st, doc["error"]["code"]) == (403, "host-not-allowed")
            # the token: writes need it, reads do not
            st, doc, h = await api(u, "POST", "/api/v1/tx", {"tx": "00"})
            assert (st, doc["error"]["code"]) == (401, "unauthorized") and "Bearer" in h["WWW-Authenticate"]
            st, doc, _ = await api(u, "POST", "/api/v1/tx", {"tx": "00"}, headers={"Authorization": "Bearer nope"})
            assert st == 401
            st, doc, _ = await api(u, "POST", "/api/v1/tx", {"tx": "00"}, headers=auth)
            assert st == 400 and doc["error"]["code"] != "unauthorized"
            st, doc, _ = await api(u, "GET", "/api/v1/status")
            assert st == 200
        finally:
            await n.stop()

    run(main())


@pytest.mark.timeout(90)
def test_separate_api_and_p2p_listeners(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", api_port=0, mine=True, interval=0.2)
        b = await start_node(tmp_path / "b", peers=[a.listen_addr])
        try:
            assert a.url != f"http://{a.listen_addr}"
            st, doc, _ = await api(a.url, "GET", "/api/v1/status")
            assert st == 200
            p2p = f"http://{a.listen_addr}"
            for method, path in (("GET", "/api/v1/status"), ("POST", "/api/v1/mining/work"), ("GET", "/metrics")):
                st, doc, _ = await api(p2p, method, path, {} if method == "POST" else None)
                assert st in (404, 405), (path, st)
            st, doc, _ = await api(a.url, "GET", "/p2p")
            assert st == 404
            await wait_for(
                lambda: b.chain.height >= 2 and b.chain.tip.hash == a.chain.tip.hash,
                30,
                what="b syncs over the p2p listener",
            )
            assert is_loopback(a.api_host)
        finally:
            await b.stop()
            await a.stop()

    run(main())


# --- operator faults: wallet files -------------------------------------------------------------------------
def _cli(args, env_extra, cwd):
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_wallet_wrong_or_empty_passphrase_answers_clearly(tmp_path):
    from chain.keys import save_key

    w = tmp_path / "w.json"
    save_key(w, PrivateKey.generate(), "right", scrypt_n=1 << 10)
    r = _cli(["wallet", "balance", "--wallet", str(w)], {"POUW_WALLET_PASSPHRASE": "wrong"}, tmp_path)
    assert r.returncode == 1 and "wrong passphrase" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _cli(["wallet", "new", "--wallet", str(tmp_path / "n.json")], {"POUW_WALLET_PASSPHRASE": ""}, tmp_path)
    assert r.returncode != 0 and "empty passphrase" in r.stderr and not (tmp_path / "n.json").exists(), r.stderr


def test_key_file_scrypt_parameters_are_bounded(tmp_path):
    from chain.errors import KeyFileError
    from chain.keys import load_key, save_key

    p = tmp_path / "k.json"
    save_key(p, PrivateKey.generate(), "pw", scrypt_n=1 << 10)
    doc = json.loads(p.read_text())
    for n, r in ((1 << 17, 8), (1 << 15, 32), (3000, 8), (0, 8)):
        p.write_text(json.dumps(dict(doc, n=n, r=r)))
        with pytest.raises(KeyFileError, match="scrypt parameters out of range"):
            load_key(p, "pw")
    p.write_text(json.dumps(doc))
    assert load_key(p, "pw")


# --- operator faults: devnet -------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except OSError:
        return False


def _pids_with(arg: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if arg.encode() in f.read().split(b"\0") and _alive(int(d)):
                        out.append(int(d))
            except OSError:
                pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_devnet_ready_means_funded_nodes_die_with_it_and_a_busy_datadir_is_refused(tmp_path):
    from chain.keys import load_key
    from node.client.worker import NodeClient

    port = free_port()
    d = tmp_path / "dn"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [
        sys.executable,
        "-m",
        "node.cli",
        "devnet",
        "--nodes",
        "1",
        "--base-port",
        str(port),
        "--datadir",
        str(d),
        "--network",
        "regtest",
        "--block-interval",
        "0.3",
        "--status-every",
        "0",
    ]
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node_pids: list[int] = []
    try:
        end = time.monotonic() + 150
        lines = []
        while time.monotonic() < end:
            line = p.stdout.readline()
            assert line, "devnet exited early:\n" + "".join(lines)
            lines.append(line)
            if "node(s) up" in line:
                break
        # ready means funded: the first client command can spend
        addr = load_key(d / "wallet").address.hex()
        assert NodeClient(f"http://127.0.0.1:{port}").call("GET", f"/api/v1/accounts/{addr}")["balance"] > 0
        node_pids = _pids_with(str(d / "node0"))
        assert len(node_pids) == 1
        # a second devnet on the same datadir says so and exits
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "in use" in r.stderr, r.stdout + r.stderr
        # SIGKILL the devnet: its node goes too (and stops cleanly: SIGTERM)
        p.kill()
        p.wait(10)
        end = time.monotonic() + 30
        while time.monotonic() < end and _alive(node_pids[0]):
            time.sleep(0.2)
        assert not _alive(node_pids[0]), "the node outlived its devnet"
        assert "node stopped height=" in (d / "node0" / "node.log").read_text()
        # a port that something else answers on is refused before any node starts
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "already answer" in r.stderr and "node(s) up" not in r.stdout, r.stdout + r.stderr
    finally:
        if p.poll() is None:
            p.kill()
        for pid in node_pids:
            if _alive(pid):
                os.kill(pid, 9)


# --- blob uploads ------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_blob_uploads_need_a_paying_job_respect_quotas_and_expire(tmp_path, monkeypatch):
    import threading
    from types import SimpleNamespace

    import numpy as np

    from chain.keys import faucet_key
    from chain.tx import make_job_submit, make_transfer
    from node.blobs import blob_hash, encode_array
    from node.client.sdk import Client

    async def main():
        n = await start_node(
            tmp_path / "n",
            mine=True,
            interval=0.2,
            take_jobs=False,
            blob_account_quota=40_000,
            blob_store_max=10_000_000,
            blob_grace_s=1.0,
        )
        payer, poor = PrivateKey.generate(), PrivateKey.generate()
        f = faucet_key()
        n.add_tx(make_transfer(f, n.cfg.chain_id, n.mempool.pending_nonce(f.address), payer.address, 10**12, 1000))
        await wait_for(lambda: n.chain.get_account(payer.address).balance > 0, 30, what="funding")
        rng = np.random.default_rng(3)
        blob = lambda m, k: encode_array(rng.integers(-64, 65, size=(m, k), dtype=np.int8))  # noqa: E731

        def voucher(key, ha: bytes, hb: bytes | None = None, max_fee: int = 10**6) -> dict:
            hb = hb or ha
            job = SimpleNamespace(h_a=ha, h_b=hb, m=64, k=64, n=64)
            tx = make_job_submit(key, n.cfg.chain_id, 0, job, max_fee, 100, ha, hb, 1000)
            return {"X-Pouw-Job-Tx": tx.encoded.hex()}

        async def put(data: bytes, h: bytes, headers=None):
            return await api(
                n.url,
                "POST",
                f"/api/v1/blobs?hash={h.hex()}",
                data=data,
                headers={"Content-Type": "application/octet-stream", **(headers or {})},
            )

        try:
            a1 = blob(128, 128)
            h1 = blob_hash(a1, "a")
            # nobody names it: refused before the body is read (a 50 MB Content-Length, no body sent)
            s = raw_conn(
                n.port,
                "127.0.0.1",
                (
                    f"POST /api/v1/blobs?hash={h1.hex()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Content-Length: 50000000\r\n\r\n"
                ).encode(),
            )
            s.setblocking(True)
            s.settimeout(5)
            head = await asyncio.to_thread(s.recv, 4096)  # the node runs on this loop: wait in a thread
            s.close()
            assert head.startswith(b"HTTP/1.1 403") and b"blob-not-referenced" in head, head[:300]
            st, doc, _ = await put(a1, h1)
            assert (st, doc["error"]["code"]) == (403, "blob-not-referenced") and not n.blobs.has(h1)
            # vouched for by an account that cannot pay: refused
            st, doc, _ = await put(a1, h1, voucher(poor, h1))
            assert (st, doc["error"]["code"]) == (403, "blob-not-paid")
            # vouched for by a paying account: stored (verified in a worker thread), charged to it
            threads = []
            real = n.blobs.put_file
            monkeypatch.setattr(n.blobs, "put_file", lambda *a: threads.append(threading.current_thread()) or real(*a))
            st, doc, _ = await put(a1, h1, voucher(payer, h1))
            assert st == 201 and doc["hash"] == h1.hex() and n.blobs.has(h1)
            assert threads and threads[0] is not threading.main_thread()
            assert n.blobgate.charged(payer.address) == len(a1)
            # a voucher that names another blob does not admit this one
            a2 = blob(128, 128)
            h2 = blob_hash(a2, "a")
            st, doc, _ = await put(a2, h2, voucher(payer, h1))
            assert (st, doc["error"]["code"]) == (403, "blob-not-referenced")
            # the account's quota (40 kB of unreferenced blobs): the third 16 kB blob is one too many
            st, doc, _ = await put(a2, h2, voucher(payer, h2))
            assert st == 201
            a3 = blob(128, 128)
            h3 = blob_hash(a3, "a")
            st, doc, hdr = await put(a3, h3, voucher(payer, h3))
            assert (st, doc["error"]["code"]) == (429, "blob-quota-exceeded") and int(hdr["Retry-After"]) > 0
            assert not n.blobs.has(h3)
            # a job in the mempool names a blob: anyone may upload it (no voucher needed)
            ops = (
                rng.integers(-64, 65, size=(20, 70), dtype=np.int8),
                rng.integers(-64, 65, size=(70, 12), dtype=np.int8),
            )
            n.blobgate.account_quota = 10**9
            cl = Client(n.url)
            sub = await asyncio.to_thread(cl.submit_job, payer, *ops, None, False)  # the SDK vouches with the submit
            assert n.blobs.has(sub.job.h_a) and n.blobs.has(sub.job.h_b)
            await wait_for(
                lambda: (
                    n.mempool.get(bytes.fromhex(sub.job_id)) is not None
                    or n.chain.get_job(bytes.fromhex(sub.job_id)) is not None
                ),
                10,
                what="submit known",
            )
            n.blobs.path(sub.job.h_a).unlink()
            _, _, _, job = cl.prepare(*ops)
            st, doc, _ = await put(encode_array(cl.prepare(*ops)[0]), job.h_a)
            assert st == 201 and n.blobs.has(job.h_a)
            # two uploads at once per client address; a third waits its turn (429)
            hold = []
            for _ in range(2):
                c = raw_conn(
                    n.port,
                    "127.0.0.1",
                    (
                        f"POST /api/v1/blobs?hash={h3.hex()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/octet-stream\r\nX-Pouw-Job-Tx: "
                        f"{voucher(payer, h3, max_fee=1)['X-Pouw-Job-Tx']}\r\n"
                        f"Content-Length: {len(a3)}\r\n\r\n"
                    ).encode()
                    + a3[:100],
                )
                hold.append(c)
            await wait_for(lambda: n.blobgate.uploading.get("127.0.0.1", 0) == 2, 5, what="two uploads in flight")
            st, doc, hdr = await put(a3, h3, voucher(payer, h3))
            assert (st, doc["error"]["code"]) == (429, "too-many-uploads") and "Retry-After" in hdr
            for c in hold:
                c.close()
            await wait_for(lambda: not n.blobgate.uploading, 5, what="uploads released")
            # the store's total limit
            n.blobgate.store_max = n.blobgate.usage() + 1000
            st, doc, _ = await put(a3, h3, voucher(payer, h3))
            assert (st, doc["error"]["code"]) == (429, "blob-store-full")
            # too large for any job: 413 before reading
            n.blobs.max_bytes = 1000
            st, doc, _ = await put(a3, h3, voucher(payer, h3))
            assert (st, doc["error"]["code"]) == (413, "blob-too-large")
            # unreferenced uploads expire (grace 1 s); blobs a job names stay
            await asyncio.sleep(1.5)
            n.blobs.prune(n.chain.jobs(), n.chain.height)
            assert not n.blobs.has(h1) and not n.blobs.has(h2)
            n.blobgate.expire()
            assert n.blobgate.charged(payer.address) == 0
            rec = n.chain.get_job(bytes.fromhex(sub.job_id))
            if rec is not None:  # mined meanwhile: its operands are kept
                assert n.blobs.has(job.h_a)
        finally:
            await n.stop()

    run(main())


# --- every documented route: no 5xx on arbitrary input (a light, dependency-free schemathesis) ----------
def _documented_routes() -> list[tuple[str, str]]:
    import re

    out, path = [], None
    for line in open(os.path.join(os.path.dirname(__file__), "..", "docs", "openapi.yaml")):
        m = re.match(r"^  (/\S+):\s*$", line)
        if m:
            path = m.group(1)
            continue
        m = re.match(r"^    (get|post|put|delete|patch):", line)
        if m and path:
            out.append((m.group(1).upper(), path))
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_documented_routes_never_answer_5xx_to_arbitrary_input(tmp_path):
    import re
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request

    from hypothesis import given, settings
    from hypothesis import strategies as st

    routes = _documented_routes()
    assert len(routes) >= 20, routes
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    def serve():
        asyncio.set_event_loop(loop)
        box["node"] = loop.run_until_complete(start_node(tmp_path / "n"))
        started.set()
        loop.run_forever()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    assert started.wait(60)
    node = box["node"]
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    )
    fields = st.sampled_from(
        ["tx", "address", "worker", "work_rate", "header", "template_id", "m", "k", "n", "device", "hash", "role"]
    )
    bodies = st.one_of(
        json_values, st.dictionaries(fields, json_values, max_size=5), st.binary(max_size=64).map(lambda b: b.hex())
    )
    params = st.text(max_size=24) | st.sampled_from(["1_0", "²", "-1", "0x" + "ab" * 32, "ab" * 32, "tip", "9" * 40])
    queries = st.dictionaries(
        st.sampled_from(["limit", "from", "status", "format", "local", "hash", "role", "m", "k", "n", "fee"]),
        params,
        max_size=3,
    )
    seen = {}

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.sampled_from(routes), params, queries, bodies, st.sampled_from(["GET", "DELETE", None]))
    def check(route, param, query, body, other_method):
        method, path = route
        if other_method is not None and not (method == "GET" and other_method == "GET"):
            method = other_method if other_method != "GET" else method
        url = node.url + re.sub(r"\{[^}]+\}", urllib.parse.quote(param, safe="") or "x", path)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if method in ("POST", "PUT") else None
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, hdrs = e.code, e.read(), e.headers
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (method, url, body, status, raw[:300])
        if status >= 400:
            err = json.loads(raw)["error"]
            assert err["code"] and isinstance(err["message"], str)
        if status == 405:
            assert hdrs.get("Allow"), (method, url)
        if hdrs.get("Content-Type", "").startswith("application/json") and raw:
            json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} is not JSON ({url})"))

    try:
        check()
    finally:
        asyncio.run_coroutine_threadsafe(node.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)
    assert seen.get(200, 0) > 0 and sum(v for k, v in seen.items() if 400 <= k < 500) > 0, seen


# --- operator faults: a full disk --------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_full_disk_stops_mining_visibly_and_recovers(tmp_path, caplog):
    from types import SimpleNamespace

    from chain.errors import StorageError

    async def main():
        n = await start_node(tmp_path / "n", mine=True, interval=0.1)
        n.storage.every = 0.2
        real_usage = n.storage.disk_usage

        async def status():
            st, doc, _ = await api(n.url, "GET", "/api/v1/status")
            return doc

        async def metric(name):
            async with aiohttp.ClientSession() as s:
                async with s.get(n.url + "/metrics") as r:
                    for ln in (await r.text()).splitlines():
                        if ln.startswith(name + " "):
                            return float(ln.split()[1])

        try:
            await wait_for(lambda: n.chain.height >= 2, 30, what="mining")
            # 1. the disk fills up: detected before a write fails
            n.storage.disk_usage = lambda p: SimpleNamespace(free=10 << 20)
            await wait_for(lambda: not n.storage.ok, 5, what="low-space fault")
            # the miner's loop sees the fault (a pass in flight ends, its block dropped): from here nothing is mined
            await wait_for(lambda: n.miner.state == "paused", 5, what="the fault pauses the miner")
            h, macs = n.chain.height, n.miner.rate.total_macs
            doc = await status()
            assert doc["storage"]["ok"] is False and "MiB free" in doc["storage"]["error"]
            assert doc["mining"]["state"] == "storage-fault"
            assert await metric("pouw_storage_fault") == 1.0
            assert (n.chain.height, n.miner.rate.total_macs) == (h, macs), "mining must stop while storage is faulted"
            # space returns: mining resumes by itself
            n.storage.disk_usage = real_usage
            await wait_for(lambda: n.storage.ok, 5, what="recovery")
            await wait_for(lambda: n.chain.height > h, 30, what="mining resumes")
            assert (await status())["storage"]["ok"] is True and await metric("pouw_storage_fault") == 0.0
            # 2. a write fails outright (the database says so): no traceback, same fault state, recovery
            real_submit = n.chain.submit_block

            def failing(block):
                raise StorageError(f"write to {n.datadir}/chaindata failed: IO error: No space left on device")

            n.chain.submit_block = failing
            await wait_for(lambda: not n.storage.ok, 20, what="write-failure fault")
            doc = await status()
            assert "No space left on device" in doc["storage"]["error"] and doc["mining"]["state"] == "storage-fault"
            n.chain.submit_block = real_submit
            h = n.chain.height
            await wait_for(lambda: n.storage.ok and n.chain.height > h, 30, what="recovery after a failed write")
            n.chain.check_conservation()
        finally:
            await n.stop()

    with caplog.at_level(logging.INFO):
        run(main())
    errors = [r for r in caplog.records if r.name == "pouw.storage" and r.levelno >= logging.ERROR]
    assert errors and all(r.exc_info is None for r in errors)
    assert not [r for r in caplog.records if r.exc_info and "StorageError" in str(r.exc_info[0])]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_damaged_database_is_refused_or_reported_at_start(tmp_path):
    from chain.chainstate import ChainState
    from chain.errors import StorageError

    async def build():
        n = await start_node(tmp_path / "a", mine=True)
        await wait_for(lambda: n.chain.height >= 300, 120, what="300 blocks")
        await n.stop()

    run(build())
    ChainState.open(tmp_path / "a", None).close()  # LevelDB moves its log into a table file
    base = tmp_path / "base"
    import shutil

    shutil.copytree(tmp_path / "a", base)

    def damaged(where: float, how: str):
        d = tmp_path / f"d-{how}-{where}"
        shutil.copytree(base, d)
        ldb = max((d / "chaindata").glob("*.ldb"), key=lambda p: p.stat().st_size)
        size = ldb.stat().st_size
        with open(ldb, "r+b") as f:
            if how == "truncate":
                f.truncate(int(size * where))
            else:
                f.seek(int(size * where))
                f.write(b"\xff" * 256)
        return d

    for where, how in ((0.5, "truncate"), (0.1, "flip"), (0.5, "flip"), (0.9, "flip")):
        d = damaged(where, how)

        async def main():
            try:
                n = await start_node(d, mine=True)
            except StorageError as e:  # refused at start, with the remedy
                assert "damaged" in str(e) or "corrupted" in str(e) or "cannot open" in str(e), e
                return "refused"
            try:  # or: it starts, its full scan finds the damage, and it stops mining and says so
                await wait_for(lambda: not n.storage.ok, 30, what=f"damage reported ({how} at {where})")
                assert n.storage.permanent and "pouw reindex" in n.storage.error
                await wait_for(lambda: n.miner.state == "paused", 5, what="the fault pauses the miner")
                h, macs = n.chain.height, n.miner.rate.total_macs
                st, doc, _ = await api(n.url, "GET", "/api/v1/status")
                assert doc["storage"]["ok"] is False and doc["mining"]["state"] == "storage-fault"
                assert (n.chain.height, n.miner.rate.total_macs) == (h, macs)
                return "reported"
            finally:
                await n.stop()

        assert run(main()) in ("refused", "reported")

    # an intact copy starts and its scan passes
    async def intact():
        n = await start_node(base)
        try:
            await wait_for(lambda: n.storage.scanned is not None, 30, what="full scan")
            assert n.storage.ok and n.storage.scanned > 300
        finally:
            await n.stop()

    run(intact())


@pytest.mark.timeout(90)
def test_a_named_workers_template_survives_other_clients_requests(tmp_path):
    async def main():
        n = await start_node(tmp_path / "n")
        try:
            me = PrivateKey.generate().address.hex()
            st, doc, _ = await api(
                n.url, "POST", "/api/v1/mining/work", {"worker": "rig-1", "address": me, "work_rate": 1e9}
            )
            assert st == 200
            tid = doc["template_id"]
            for i in range(150):  # other clients, each with its own address: 150 fresh templates
                st, _, _ = await api(
                    n.url, "POST", "/api/v1/mining/work", {"address": PrivateKey.generate().address.hex()}
                )
                assert st == 200
            assert n.templates.get(tid) is not None
            st, doc, _ = await api(n.url, "POST", "/api/v1/mining/submit", {"template_id": tid, "header": "00"})
            assert doc["result"] == "rejected", doc  # judged on its merits, not "stale"
            st, doc, _ = await api(n.url, "GET", "/api/v1/status")
            assert [w["id"] for w in doc["mining"]["workers"]] == ["rig-1"]
        finally:
            await n.stop()

    run(main())
