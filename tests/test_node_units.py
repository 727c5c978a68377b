"""Node components without a network: mempool, message codec, work rate, device faults, API, workers."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.block import Block
from chain.chainstate import ChainState
from chain.config import load_config
from chain.keys import PrivateKey, faucet_key
from chain.synthetic import ChainBuilder
from chain.tx import make_transfer
from node.engine import Device, WorkRate
from node.server.mempool import Mempool, MempoolError
from node.server.messages import Codec, MessageError
from testkit.nodes import start_node, wait_for
from node.client.worker import run_remote

CFG = load_config("regtest")
F = faucet_key()
K1 = PrivateKey.from_phrase(b"unit 1")
K2 = PrivateKey.from_phrase(b"unit 2")


def tx(key, nonce, amount=1000, fee=10, to=None):
    return make_transfer(key, CFG.chain_id, nonce, (to or K2).address, amount, fee)


@pytest.fixture
def chain(tmp_path):
    cs = ChainState.open(tmp_path / "c", CFG)
    yield cs
    cs.close()


# --- mempool ------------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_mempool_admission_priority_and_limits(chain):
    mp = Mempool(chain, max_txs=3)
    a0, a1 = tx(F, 0, fee=5), tx(F, 1, fee=500)
    assert mp.add(a0) and mp.add(a1)
    assert not mp.add(a0)  # duplicate
    with pytest.raises(Exception) as e:
        mp.add(tx(F, 3))  # nonce gap
    assert getattr(e.value, "reason", "") == "bad-txn-nonce"
    with pytest.raises(Exception) as e:
        mp.add(tx(K1, 0))  # unfunded
    assert e.value.reason == "bad-txn-balance"
    bad = make_transfer(F, CFG.chain_id + 1, 2, K2.address, 1, 1)
    with pytest.raises(Exception) as e:
        mp.add(bad)
    assert e.value.reason == "bad-txn-chainid"
    # nonce order within a sender even though a1 pays more
    assert [t.nonce for t in mp.ordered()] == [0, 1]
    # full: a tx paying a lower fee rate than the pool's worst is refused
    mp.add(tx(F, 2, fee=50))
    with pytest.raises(MempoolError) as e:
        mp.add(tx(F, 3, fee=0))
    assert e.value.reason == "mempool-full"
    # replacement by fee
    r2 = tx(F, 2, fee=60, amount=999)
    assert mp.add(r2) and r2.txid in mp and len(mp) == 3
    with pytest.raises(MempoolError):
        mp.add(tx(F, 2, fee=1, amount=998))


@pytest.mark.timeout(30)
def test_mempool_expiry_persistence_and_reorg_restore(chain, tmp_path):
    now = [1000.0]
    mp = Mempool(chain, expiry_s=60, clock=lambda: now[0])
    t0, t1 = tx(F, 0), tx(F, 1)
    mp.add(t0)
    now[0] += 30
    mp.add(t1)
    path = tmp_path / "mempool.dat"
    assert mp.save(path) == 2
    mp2 = Mempool(chain, expiry_s=60, clock=lambda: now[0])
    assert mp2.load(path) == 2 and t0.txid in mp2
    now[0] += 31
    assert mp2.expire() == 2 and len(mp2) == 0  # t0 expired and t1 depends on it
    path.write_bytes(b"\xc1garbage")
    assert Mempool(chain).load(path) == 0  # unreadable file: ignored, not fatal

    # reorg: a block with t0 is replaced by an empty heavier branch; t0 comes back
    b = ChainBuilder(CFG)
    g = b.genesis.hash
    m = PrivateKey.from_phrase(b"miner").address
    with_tx = b.mine(g, m, [tx(F, 0)])
    mp3 = Mempool(chain)
    chain.submit_block(with_tx)
    mp3.resync()
    alt = b.chain(g, 2, PrivateKey.from_phrase(b"other").address)
    chain.submit_block(alt[0])
    res = chain.submit_block(alt[1])
    assert res.disconnected and res.disconnected_txs
    assert mp3.resync(res.disconnected_txs) == 1 and tx(F, 0).txid in mp3


# --- messages -----------------------------------------------------------------------------------------


def test_codec_limits_and_schema():
    c = Codec(CFG.max_block_bytes, CFG.max_header_bytes, CFG.max_tx_bytes)
    data = c.encode("ping", nonce=5)
    assert c.decode(data) == ("ping", {"nonce": 5})
    bad = [
        b"\xff\x00",  # not msgpack
        msgpack.packb([1, 2]),  # not a map
        msgpack.packb({"t": "nope"}),  # unknown type
        msgpack.packb({"t": "ping"}),  # missing field
        msgpack.packb({"t": "ping", "nonce": 1, "x": 2}),  # extra field
        msgpack.packb({"t": "ping", "nonce": -1}),  # out of range
        msgpack.packb({"t": "getblocks", "hashes": [b"\x00" * 32] * 33}),  # list over the limit
        msgpack.packb({"t": "tx", "tx": b"\x00" * (CFG.max_tx_bytes + 1)}, use_bin_type=True),
        msgpack.packb({"t": "addr", "addrs": ["x" * 200]}),  # string over the limit
        msgpack.packb({"t": "ping", "nonce": 1, **{f"k{i}": i for i in range(20)}}),  # map over the limit
        b"\x00" * (c.max_msg + 1),
    ]
    for d in bad:
        with pytest.raises(MessageError):
            c.decode(d)


# --- work rate and device faults ----------------------------------------------------------------------


def test_work_rate_window():
    now = [0.0]
    r = WorkRate(window=10, clock=lambda: now[0])
    now[0] = 2.0
    r.add(1000)
    assert r.rate() == pytest.approx(500.0)
    now[0] = 20.0
    r.add(3000)
    assert r.rate() == pytest.approx(300.0)  # the first job left the 10 s window


def test_device_fault_backoff_then_drop():
    now = [0.0]
    d = Device("cpu", max_failures=3, clock=lambda: now[0])
    assert d.ready()
    d.fault(RuntimeError("CUDA error: an illegal memory access"))
    assert not d.ready() and d.state == "backoff"
    now[0] += 1.5
    assert d.ready()
    d.fault(MemoryError("out of memory"))
    now[0] += 2.5
    d.ok()
    assert d.failures == 0 and d.ready()
    for _ in range(3):
        d.fault(RuntimeError("boom"))
    assert d.dropped and d.state == "dropped" and d.total_faults == 5


class FailingBackend:
    def __init__(self):
        self.calls = 0

    def noisy_matmul(self, *a, **k):
        self.calls += 1
        raise RuntimeError("CUDA error: out of memory (simulated)")

    def matmul(self, *a, **k):
        raise RuntimeError("simulated")


@pytest.mark.timeout(60)
def test_device_fault_in_node_keeps_serving(tmp_path):
    async def main():
        n = await start_node(tmp_path / "n", mine=True)
        try:
            fb = FailingBackend()
            n.miner.device.backend = fb
            n.miner.device.get = lambda: fb  # every job fails like a broken GPU
            n.miner.device.max_failures = 2
            await wait_for(lambda: n.miner.device.dropped, 20, what="device dropped")
            async with aiohttp.ClientSession() as s:
                async with s.get(n.url + "/api/v1/status") as r:
                    doc = await r.json()
            assert doc["mining"]["device_state"] == "dropped" and doc["mining"]["device_faults"] == 2
        finally:
            await n.stop()

    asyncio.run(main())


# --- API ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_api_endpoints_and_errors(tmp_path):
    async def main():
        n = await start_node(tmp_path / "n", mine=True, interval=0.05)
        try:
            await wait_for(lambda: n.chain.height >= 3, 20)
            n.miner.enabled = False
            async with aiohttp.ClientSession() as s:

                async def get(path):
                    async with s.get(n.url + path) as r:
                        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())

                async def post(path, data):  # JSON content type: the API refuses others (415)
                    async with s.post(n.url + path, data=data, headers={"Content-Type": "application/json"}) as r:
                        return r.status, await r.json()

                st, doc = await get("/api/v1/status")
                assert st == 200
                for k in ("height", "tip", "peers", "difficulty", "work_rate"):
                    assert k in doc
                assert len(bytes.fromhex(doc["tip"])) == 32 and doc["work_rate"] > 0
                st, b1 = await get("/api/v1/blocks/1")
                assert st == 200 and b1["height"] == 1
                st, b1h = await get("/api/v1/blocks/" + b1["hash"])
                assert b1h["hash"] == b1["hash"]
                st, raw = await get("/api/v1/blocks/1?format=raw")  # as docs/api.md "Raw blocks" says
                assert st == 200 and set(raw) == {"hash", "raw"} and raw["hash"] == b1["hash"]
                blk = Block.decode(bytes.fromhex(raw["raw"]))
                assert (
                    blk.hash.hex() == raw["hash"]
                    and blk.encoded.hex() == raw["raw"]
                    and blk.header.nonce == b1["nonce"]
                )
                assert (await get("/api/v1/blocks/0x" + b1["hash"] + "?format=raw"))[1] == raw
                st, lst = await get("/api/v1/blocks?limit=2")
                assert len(lst["blocks"]) == 2
                assert (await get("/api/v1/blocks/99999"))[1]["error"]["code"] == "block-not-found"
                assert (await get("/api/v1/blocks/zz"))[1]["error"]["code"] == "bad-param"
                assert (await get("/api/v1/tx/" + "00" * 32))[1]["error"]["code"] == "tx-not-found"
                assert (await get("/api/v1/accounts/123"))[1]["error"]["code"] == "bad-address"
                st, acct = await get("/api/v1/accounts/" + F.address.hex())
                assert acct["balance"] > 0
                assert (await get("/api/v1/nowhere"))[1]["error"]["code"] == "not-found"
                assert (await post("/api/v1/tx", b"{not json"))[1]["error"]["code"] == "bad-json"
                assert (await post("/api/v1/tx", b'{"tx": "00"}'))[1]["error"]["code"] == "bad-txn-encoding"
                st, doc = await post("/api/v1/tx", b'{"tx": "' + b"00" * 400_000 + b'"}')
                assert st == 413 and doc["error"]["code"] == "body-too-large"
                t = tx(F, acct["pending_nonce"])
                st, doc = await post("/api/v1/tx", ('{"tx": "%s"}' % t.encoded.hex()).encode())
                assert st == 202
                st, doc = await post("/api/v1/tx", ('{"tx": "%s"}' % tx(F, 0, amount=5).encoded.hex()).encode())
                assert st == 422 and doc["error"]["code"] in ("bad-txn-nonce", "txn-mempool-conflict")
                st, mp = await get("/api/v1/mempool")
                assert mp["size"] == 1 and mp["txs"][0]["txid"] == t.txid.hex()
                st, text = await get("/metrics")
                assert st == 200 and "pouw_chain_height" in text and "pouw_work_rate_macs_per_second" in text
                st, tips = await get("/api/v1/chaintips")
                assert tips["tips"][0]["status"] == "active"
        finally:
            await n.stop()

    asyncio.run(main())


@pytest.mark.timeout(90)
def test_remote_worker_mines_through_the_api(tmp_path):
    async def main():
        n = await start_node(tmp_path / "n")  # the node itself does not mine
        try:
            h0 = n.chain.height
            addr = PrivateKey.from_phrase(b"worker").address
            found = await asyncio.to_thread(run_remote, n.url, "cpu", addr.hex(), max_blocks=2, duration=60)
            assert found == 2 and n.chain.height == h0 + 2
            assert n.chain.get_account(addr).balance == 2 * CFG.subsidy(1)
            assert n.workers and n.work_rate() > 0
        finally:
            await n.stop()

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_template_follows_tip_and_better_paying_work(tmp_path):
    async def main():
        n = await start_node(tmp_path / "n")
        try:
            async with aiohttp.ClientSession() as s:

                async def work():
                    async with s.post(n.url + "/api/v1/mining/work", json={"worker": "w1", "work_rate": 123.0}) as r:
                        assert r.status == 200
                        return await r.json()

                w1 = await work()
                assert w1["height"] == 1 and w1["txs"] == 0
                n.add_tx(tx(F, 0, fee=10_000))
                await asyncio.sleep(1.1)
                w2 = await work()
                assert w2["template_id"] != w1["template_id"] and w2["fees"] == 10_000 and w2["txs"] == 1
                assert (await work())["template_id"] == w2["template_id"]  # nothing changed: same work
                assert n.work_rate() == pytest.approx(123.0)  # the node reports its worker's figure
                # a new tip gives new work
                from chain.synthetic import ChainBuilder

                b = ChainBuilder(CFG)
                n.accept_block(b.mine(b.genesis.hash, K1.address, timestamp=int(time.time())), None)
                w3 = await work()
                assert w3["height"] == 2 and w3["template_id"] != w2["template_id"]
        finally:
            await n.stop()

    asyncio.run(main())


def test_every_api_route_is_documented():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # node/server/api.py and its route modules (the economy's and explorer's have their own tests)
    files = [p for p in sorted((root / "node").rglob("*api.py")) if p.name not in ("economy_api.py", "explorer_api.py")]
    assert {p.name for p in files} >= {
        "api.py",
        "status_api.py",
        "chain_api.py",
        "tx_api.py",
        "mining_api.py",
        "jobs_api.py",
        "blobs_api.py",
    }
    src = "\n".join(p.read_text() for p in files)
    spec = (root / "docs" / "openapi.yaml").read_text()
    doc = (root / "docs" / "api.md").read_text()
    routes = re.findall(r'@r\.(get|post)\((API \+ )?"([^"]+)"', src)
    assert len(routes) >= 21
    for method, api, path in routes:
        full = ("/api/v1" if api else "") + path
        if full == "/p2p":
            assert "/p2p" in doc
            continue
        assert re.search(rf"^  {re.escape(full)}:\n(    \w+:\n|    .*\n)*?    {method}:", spec, re.M), full
        assert full.split("{")[0].rstrip("/") in doc, full


_CODEC = Codec(CFG.max_block_bytes, CFG.max_header_bytes, CFG.max_tx_bytes)
_leaf = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=64),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)
_obj = st.recursive(
    _leaf, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5), max_leaves=20
)
_types = st.sampled_from(sorted(_CODEC.schemas) + ["x"])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda t, d: msgpack.packb({"t": t, **d}, use_bin_type=True),
            _types,
            st.dictionaries(
                st.sampled_from(["nonce", "tx", "block", "headers", "hashes", "locator", "stop", "addrs", "sig", "v"]),
                _obj,
                max_size=4,
            ),
        ),
    )
)
def test_fuzz_codec_only_raises_message_error(data):
    try:
        _CODEC.decode(data)
    except MessageError:
        pass


@pytest.mark.timeout(60)
def test_peer_message_table_covers_every_type_and_unhandled_types_ban(tmp_path):
    """Every message type node.server.messages defines has exactly one registered handler; a type without one
    (or one the codec does not know) costs the peer BAN_SCORE and its connection, as before the table."""
    from node.server.node import Node, NodeConfig
    from node.server.peers import BAN_SCORE, Peer

    class FakeWS:
        async def close(self):
            pass

    async def main():
        n = Node(NodeConfig(datadir=tmp_path / "n", network="regtest", port=0))
        try:
            assert set(n.p2p.handlers) == set(n.codec.schemas)
            assert all(callable(h) for h in n.p2p.handlers.values())
            with pytest.raises(ValueError, match="already registered"):
                n.p2p.register({"block": n.on_block})

            def ready_peer():
                p = Peer(FakeWS(), True, "127.0.0.1:1", n.codec, node_id=b"\1" * 32, ready=True)
                n.p2p.peers.append(p)
                return p

            p = ready_peer()  # a handled type: dispatched, no penalty
            await n.p2p._on_frame(p, n.codec.encode("getaddr"))
            assert p.score == 0 and not p.closed and p.out.qsize() == 1
            del n.p2p.handlers["tx"]  # a schema type nobody handles
            p = ready_peer()
            await n.p2p._on_frame(p, n.codec.encode("tx", tx=b"x"))
            assert p.score >= BAN_SCORE and p.closed
            p = ready_peer()  # a type the codec does not know
            await n.p2p._on_frame(p, msgpack.packb({"t": "bogus"}))
            assert p.score >= BAN_SCORE and p.closed
            assert n.p2p.banned_count == 2
        finally:
            n.chain.close()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_fuzz_message_handlers_never_crash(tmp_path):
    """Well-formed messages with garbage contents, straight into a ready peer's handlers."""
    import random
    from node.server.peers import Peer

    class FakeWS:
        async def close(self):
            pass

        async def send_bytes(self, data):
            pass

    async def main():
        n = await start_node(tmp_path / "n")
        rng = random.Random(7)
        try:
            payloads = {
                "tx": lambda: {"tx": rng.randbytes(rng.randint(0, 200))},
                "block": lambda: {"block": rng.randbytes(rng.randint(0, 2000))},
                "headers": lambda: {"headers": [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(0, 5))]},
                "getheaders": lambda: {
                    "locator": [rng.randbytes(32) for _ in range(rng.randint(0, 64))],
                    "stop": rng.choice([b"", rng.randbytes(32)]),
                },
                "getblocks": lambda: {"hashes": [rng.randbytes(32) for _ in range(rng.randint(0, 32))]},
                "notfound": lambda: {"hashes": [rng.randbytes(32) for _ in range(rng.randint(0, 32))]},
                "addr": lambda: {"addrs": [rng.choice(["1.2.3.4:5", "x", ":", "h:99999", "a" * 100])]},
                "ping": lambda: {"nonce": rng.getrandbits(64)},
                "getaddr": lambda: {},
                "hello": lambda: {
                    "v": 1,
                    "chain_id": 1,
                    "genesis": b"\0" * 32,
                    "node_id": b"\0" * 32,
                    "nonce": b"\0" * 32,
                    "port": 1,
                    "height": 1,
                    "work": b"\0" * 32,
                    "tip": b"\0" * 32,
                    "agent": "z",
                },
            }
            for i in range(400):
                p = Peer(FakeWS(), True, "127.0.0.1:1", n.codec, node_id=rng.randbytes(32), ready=True)
                p.headers_req_at = rng.choice([0.0, time.monotonic()])
                n.p2p.peers.append(p)
                t = rng.choice(sorted(payloads))
                await n.p2p._on_frame(p, n.codec.encode(t, **payloads[t]()))
                await n.p2p.close(p, "done")
            assert n.chain.height == 0
            async with aiohttp.ClientSession() as s:
                async with s.get(n.url + "/api/v1/status") as r:
                    assert r.status == 200
        finally:
            await n.stop()

    asyncio.run(main())
