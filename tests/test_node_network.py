"""Multi-node tests: real nodes (in-process asyncio, real loopback sockets), regtest chain."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

import aiohttp
import pytest

from chain.block import Block
from chain.keys import PrivateKey, faucet_key
from chain.tx import make_transfer
from node.server.messages import AGENT, PROTOCOL_VERSION, auth_payload
from testkit.nodes import converge, pause_mining, set_mining, start_node, wait_for


def run(coro):
    return asyncio.run(coro)


async def stop_all(nodes):
    for n in nodes:
        await n.stop()


async def api(node, method, path, body=None):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, node.url + path, json=body) as r:
            return r.status, await r.json()


def same_tip(nodes) -> bool:
    return len({n.chain.tip.hash for n in nodes}) == 1


@pytest.mark.timeout(90)
def test_three_nodes_converge(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True, interval=0.15)
        b = await start_node(tmp_path / "b", mine=True, interval=0.15, peers=[a.listen_addr])
        c = await start_node(tmp_path / "c", mine=True, interval=0.15, peers=[b.listen_addr])
        nodes = [a, b, c]
        try:
            await wait_for(lambda: all(n.chain.height >= 12 for n in nodes), 60, what="12 blocks each")
            # c learned a's address through b (addr gossip) and connects to it
            await wait_for(lambda: a.listen_addr in c.book.addrs, 20, what="addr gossip")
            await converge(nodes)
            for n in nodes:
                n.chain.check_conservation()
            assert sum(n.miner.blocks_found for n in nodes) >= a.chain.height
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(90)
def test_late_node_syncs_from_genesis(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True)
        try:
            await wait_for(lambda: a.chain.height >= 60, 60, what="60 blocks")
            await pause_mining([a])
            b = await start_node(tmp_path / "b", peers=[a.listen_addr])
            c = await start_node(tmp_path / "c", peers=[a.listen_addr, b.listen_addr])
            try:
                await wait_for(lambda: b.chain.tip.hash == a.chain.tip.hash == c.chain.tip.hash, 40, what="sync")
                st, doc = await api(b, "GET", "/api/v1/status")
                assert st == 200 and doc["height"] == a.chain.height and doc["tip"] == a.chain.tip.hash.hex()
                assert doc["sync"]["syncing"] is False and doc["sync"]["percent"] == 100.0
                assert b.chain.get_block(a.chain.block_hash_at(1)) is not None
            finally:
                await stop_all([b, c])
        finally:
            await a.stop()

    run(main())


@pytest.mark.timeout(120)
def test_partition_heal_reorgs_to_heavier_chain_and_keeps_txs(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True, interval=0.1)
        b = await start_node(tmp_path / "b", mine=True, interval=0.1, peers=[a.listen_addr])
        c = await start_node(tmp_path / "c", mine=True, interval=0.1, peers=[a.listen_addr, b.listen_addr])
        nodes = [a, b, c]
        try:
            await wait_for(lambda: a.chain.height >= 5, 30)
            await converge(nodes)
            # partition {a, b} | {c}
            for n in nodes:
                n.p2p.forget_all()
            for n in nodes:
                await n.p2p.disconnect_all()
            b.p2p.add_addr(a.listen_addr)
            await wait_for(lambda: len(a.p2p.ready_peers) == 1 and len(c.p2p.ready_peers) == 0, 20, what="partition")
            fork_height = a.chain.height
            # a transfer that only the light side mines
            tx = make_transfer(
                faucet_key(),
                c.cfg.chain_id,
                c.chain.get_account(faucet_key().address).nonce,
                PrivateKey.from_phrase(b"partition").address,
                12345,
                fee=77,
            )
            c.add_tx(tx)
            c.miner.enabled = True
            await wait_for(lambda: c.chain.height >= fork_height + 2, 30, what="c mines")
            await pause_mining([c])
            assert tx.txid in c.txindex
            a.miner.enabled = True
            await wait_for(lambda: a.chain.height >= fork_height + 6, 30, what="a mines")
            await pause_mining([a])
            await wait_for(lambda: b.chain.tip.hash == a.chain.tip.hash, 20, what="group 1 agrees")
            heavy = max((a, c), key=lambda n: n.chain.tip.chainwork)
            assert heavy is a
            heavy_tip = a.chain.tip.hash
            # heal
            c.p2p.add_addr(a.listen_addr)
            await wait_for(lambda: all(n.chain.tip.hash == heavy_tip for n in nodes), 30, what="reorg to heavier")
            assert tx.txid not in c.txindex
            assert tx.txid in c.mempool, "transaction that fell out of the chain must be back in the mempool"
            await wait_for(lambda: tx.txid in a.mempool and tx.txid in b.mempool, 10, what="tx relayed")
            a.miner.enabled = True
            await wait_for(lambda: all(tx.txid in n.txindex for n in nodes), 30, what="tx mined again")
            a.miner.enabled = False
            for n in nodes:
                n.chain.check_conservation()
        finally:
            await stop_all(nodes)

    run(main())


class RawPeer:
    """A hand-driven peer: does the real handshake, then sends whatever a test wants."""

    def __init__(self, node, key: PrivateKey | None = None):
        self.node = node
        self.key = key or PrivateKey.generate()
        self.codec = node.codec

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"ws://{self.node.listen_addr}/p2p", max_msg_size=0)
        return self

    async def __aexit__(self, *a):
        await self.ws.close()
        await self.session.close()

    async def handshake(self) -> bool:
        nonce = os.urandom(32)
        g = self.node.chain.genesis.hash
        await self.ws.send_bytes(
            self.codec.encode(
                "hello",
                v=PROTOCOL_VERSION,
                chain_id=self.node.cfg.chain_id,
                genesis=g,
                node_id=self.key.pubkey,
                nonce=nonce,
                port=0,
                height=0,
                work=(0).to_bytes(32, "big"),
                tip=g,
                agent=AGENT,
            )
        )
        got_auth = False
        while not got_auth:
            msg = await self.ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.BINARY:
                return False
            t, m = self.codec.decode(msg.data)
            if t == "hello":
                await self.ws.send_bytes(
                    self.codec.encode("auth", sig=self.key.sign(auth_payload(m["nonce"], self.key.pubkey, g)))
                )
            elif t == "auth":
                got_auth = True
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


@pytest.mark.timeout(120)
def test_junk_peers_are_banned_while_others_are_served(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True, interval=0.2)
        b = await start_node(tmp_path / "b", peers=[a.listen_addr])
        try:
            await wait_for(lambda: b.chain.height >= 3 and len(b.p2p.ready_peers) == 1, 30, what="b follows a")
            lags: list[float] = []

            async def watch():
                # the honest peer keeps getting a's blocks promptly, and the API keeps answering
                while True:
                    t0 = time.monotonic()
                    st, doc = await api(a, "GET", "/api/v1/status")
                    assert st == 200
                    lags.append(time.monotonic() - t0)
                    await asyncio.sleep(0.1)

            watcher = asyncio.ensure_future(watch())
            h0 = a.chain.height
            # 1. junk bytes after the handshake
            k1 = PrivateKey.generate()
            async with RawPeer(a, k1) as p:
                assert await p.handshake()
                for _ in range(50):
                    await p.ws.send_bytes(os.urandom(200))
                assert await p.closed()
            assert a.book.banned(node_id=k1.pubkey)
            async with RawPeer(a, k1) as p:  # banned id: refused at the handshake
                assert not await p.handshake() or await p.closed()
            # 2. oversized message
            k2 = PrivateKey.generate()
            async with RawPeer(a, k2) as p:
                assert await p.handshake()
                await p.ws.send_bytes(b"\x00" * (a.codec.max_msg + 10))
                assert await p.closed()
            await wait_for(lambda: a.book.banned(node_id=k2.pubkey), 5, what="oversize ban")
            # 3. an invalid block (valid encoding, proof does not match the changed header)
            k3 = PrivateKey.generate()
            good = a.chain.get_block(a.chain.tip.hash)
            bad = Block(replace(good.header, timestamp=good.header.timestamp + 1), good.txs)
            async with RawPeer(a, k3) as p:
                assert await p.handshake()
                await p.ws.send_bytes(a.codec.encode("block", block=bad.encoded))
                assert await p.closed()
            assert a.book.banned(node_id=k3.pubkey)
            # 4. a flood of well-formed messages
            k4 = PrivateKey.generate()
            async with RawPeer(a, k4) as p:
                assert await p.handshake()
                ping = a.codec.encode("ping", nonce=1)
                try:
                    for _ in range(6000):
                        await p.ws.send_bytes(ping)
                except (ConnectionError, RuntimeError):
                    pass
                assert await p.closed(10)
            assert a.book.banned(node_id=k4.pubkey)
            # meanwhile the honest peer was served
            await wait_for(lambda: a.chain.height >= h0 + 3, 30, what="a keeps mining")
            await wait_for(lambda: b.chain.tip.hash == a.chain.tip.hash, 5, what="b still served")
            assert len(b.p2p.ready_peers) == 1 and not a.book.banned(node_id=b.node_key.pubkey)
            watcher.cancel()
            assert lags and max(lags) < 2.0, f"API stalled: {max(lags):.2f}s"
            st, doc = await api(a, "GET", "/api/v1/peers")
            assert doc["banned"] >= 4
        finally:
            await stop_all([b, a])
        from node.server.peers import PeerBook  # bans survive a restart

        book = PeerBook(tmp_path / "a" / "peers.json")
        assert book.banned(node_id=k1.pubkey) and book.banned(node_id=k4.pubkey)
        assert not book.banned(node_id=b.node_key.pubkey)

    run(main())


@pytest.mark.timeout(90)
def test_graceful_shutdown_and_restart_resume(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True, interval=0.05)
        b = await start_node(tmp_path / "b", peers=[a.listen_addr])
        await wait_for(lambda: b.chain.height >= 8 and b.chain.tip.hash == a.chain.tip.hash, 30)
        await pause_mining([a])
        await wait_for(lambda: b.chain.tip.hash == a.chain.tip.hash, 10)
        tx = make_transfer(
            faucet_key(),
            a.cfg.chain_id,
            a.chain.get_account(faucet_key().address).nonce,
            PrivateKey.from_phrase(b"restart").address,
            5000,
            fee=9,
        )
        a.add_tx(tx)
        await wait_for(lambda: tx.txid in b.mempool, 10, what="tx relayed")
        tip, height, port_a, port_b = a.chain.tip.hash, a.chain.height, a.port, b.port
        await b.stop()
        await a.stop()
        # restart both on the same ports: chain, mempool and peer list come back
        a = await start_node(tmp_path / "a", port=port_a)
        b = await start_node(tmp_path / "b", port=port_b)  # no --peer: uses peers.json
        try:
            assert a.chain.tip.hash == tip and a.chain.height == height
            assert b.chain.tip.hash == tip
            assert tx.txid in a.mempool and tx.txid in b.mempool
            await wait_for(lambda: len(b.p2p.ready_peers) == 1, 20, what="reconnect from the peer list")
            a.miner = None
        finally:
            await stop_all([b, a])

    run(main())


@pytest.mark.timeout(90)
def test_transfer_sent_to_one_node_is_visible_on_all(tmp_path):
    async def main():
        a = await start_node(tmp_path / "a", mine=True, interval=0.2)
        b = await start_node(tmp_path / "b", peers=[a.listen_addr])
        c = await start_node(tmp_path / "c", peers=[b.listen_addr])
        nodes = [a, b, c]
        try:
            await wait_for(lambda: c.chain.height >= 2 and same_tip(nodes), 30, what="connected")
            to = PrivateKey.from_phrase(b"visible").address
            st, net = await api(c, "GET", "/api/v1/network")
            st, acct = await api(c, "GET", f"/api/v1/accounts/{faucet_key().address.hex()}")
            tx = make_transfer(faucet_key(), net["chain_id"], acct["pending_nonce"], to, 777_000, fee=123)
            st, doc = await api(c, "POST", "/api/v1/tx", {"tx": tx.encoded.hex()})
            assert st == 202 and doc["txid"] == tx.txid.hex()
            st, doc = await api(c, "POST", "/api/v1/tx", {"tx": tx.encoded.hex()})
            assert st == 200 and doc["new"] is False

            async def confirmed_everywhere():
                for n in nodes:
                    st, d = await api(n, "GET", f"/api/v1/tx/{tx.txid.hex()}")
                    if st != 200 or d["status"] != "confirmed":
                        return False
                return True

            end = time.monotonic() + 30
            while not await confirmed_everywhere():
                assert time.monotonic() < end, "transfer not confirmed on all nodes"
                await asyncio.sleep(0.2)
            for n in nodes:
                st, d = await api(n, "GET", f"/api/v1/accounts/{to.hex()}")
                assert d["balance"] == 777_000
        finally:
            await stop_all(nodes)

    run(main())


@pytest.mark.timeout(90)
def test_low_work_chain_ignored_and_time_too_new_not_punished(tmp_path):
    from chain.synthetic import ChainBuilder
    from chain import schema as S

    async def main():
        a = await start_node(tmp_path / "a", mine=True)
        await wait_for(lambda: a.chain.height >= 12, 30)
        set_mining([a], False)
        # b mined a short chain of its own before meeting a
        b = await start_node(tmp_path / "b", mine=True, interval=0.05)
        await wait_for(lambda: b.chain.height >= 3, 30)
        await pause_mining([b])
        b_blocks = list(b.chain.chain[1:])
        b.p2p.add_addr(a.listen_addr)
        try:
            await wait_for(lambda: b.chain.tip.hash == a.chain.tip.hash, 30, what="b reorgs to a")
            # a never downloaded b's lighter chain (headers or blocks)
            assert all(h not in a.chain.index or not a.chain.index[h].status & S.HAVE_DATA for h in b_blocks)
            # a block from the future: deferred, the peer is not punished
            builder = ChainBuilder(a.cfg)
            fut = builder.mine(
                builder.genesis.hash, PrivateKey.from_phrase(b"f").address, timestamp=int(time.time()) + 3600
            )
            k = PrivateKey.generate()
            async with RawPeer(a, k) as p:
                assert await p.handshake()
                await p.ws.send_bytes(a.codec.encode("block", block=fut.encoded))
                assert not await p.closed(1.0)
            assert not a.book.banned(node_id=k.pubkey) and fut.hash in a.retry_blocks
        finally:
            await stop_all([b, a])

    run(main())


@pytest.mark.timeout(90)
def test_sync_rerequests_from_another_peer_when_one_stalls(tmp_path, monkeypatch):
    import node.server.sync as sync_mod

    monkeypatch.setattr(sync_mod, "BLOCK_TIMEOUT", 1.0)

    async def main():
        a = await start_node(tmp_path / "a", mine=True)
        await wait_for(lambda: a.chain.height >= 40, 30)
        set_mining([a], False)
        c = await start_node(tmp_path / "c")
        # a peer that claims a's chain but never answers block requests
        k = PrivateKey.generate()
        stalled: list[int] = []
        try:
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"ws://{c.listen_addr}/p2p", max_msg_size=0)
                g = c.chain.genesis.hash
                await ws.send_bytes(
                    c.codec.encode(
                        "hello",
                        v=PROTOCOL_VERSION,
                        chain_id=c.cfg.chain_id,
                        genesis=g,
                        node_id=k.pubkey,
                        nonce=os.urandom(32),
                        port=0,
                        height=a.chain.height,
                        work=a.chain.tip.chainwork.to_bytes(32, "big"),
                        tip=a.chain.tip.hash,
                        agent="staller",
                    )
                )

                async def staller():
                    async for msg in ws:
                        t, m = c.codec.decode(msg.data)
                        if t == "hello":
                            await ws.send_bytes(
                                c.codec.encode("auth", sig=k.sign(auth_payload(m["nonce"], k.pubkey, g)))
                            )
                        elif t == "getheaders":  # serve headers (from a), never blocks
                            hs = [
                                a.chain.get_header(a.chain.block_hash_at(i)).encoded
                                for i in range(1, a.chain.height + 1)
                            ]
                            await ws.send_bytes(c.codec.encode("headers", headers=hs[:100]))
                        elif t == "getblocks":
                            stalled.append(len(m["hashes"]))

                task = asyncio.ensure_future(staller())
                await wait_for(lambda: stalled, 10, what="blocks requested from the staller")
                c.p2p.add_addr(a.listen_addr)
                await wait_for(lambda: c.chain.tip.hash == a.chain.tip.hash, 40, what="sync via the other peer")
                task.cancel()
                await ws.close()
            assert not c.book.banned(node_id=k.pubkey)  # stalling is not misbehaviour
        finally:
            await stop_all([c, a])

    run(main())
