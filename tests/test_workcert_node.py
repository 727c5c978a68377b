"""The node's paid-job miner attaches a work certificate to the result of a job paid from an allocation
(node/server/paidjobs.py): the certificate comes from the pass that computed C, the chain accepts it, and the
release pays the miner free tokens. Conservation is asserted on the node's stored state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from chain import economy as E
from chain.econsim import issuer_key, with_issuer
from chain.config import load_config
from chain.econtx import KIND_GRANT, Grant
from chain.jobs import job_price
from chain.keys import PrivateKey, faucet_key
from chain.tx import KIND_JOB_RESULT, Transaction, make_job_submit, make_transfer
from node.blobs import encode_array
from node.server.node import Node, NodeConfig
from testkit.nodes import wait_for
from pouw.commit import commit_job

ISS = issuer_key()
SUB = PrivateKey.from_phrase(b"workcert node subscriber")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["plain", "first_pass_misses", "cert_refused"])
def test_node_miner_certifies_an_allocation_funded_job(tmp_path: Path, monkeypatch, mode):
    """`first_pass_misses`: the first pass is made to hold no share; the node runs another pass (C is served
    meanwhile) and posts the result with that pass's certificate. `cert_refused`: the chain refuses every
    certificate (as after a reorg that took a template's prev away); the node posts the result without
    one and the allocation-funded fee reaches the miner as spend-only tokens."""
    import chain.workcert
    import pouw.share

    first_pass_misses = mode == "first_pass_misses"
    if mode == "cert_refused":
        from chain.errors import TxError

        def refuse(*args):
            raise TxError("bad-cert-stale", "refused by the test")

        monkeypatch.setattr(chain.workcert, "check_certificate", refuse)
    if first_pass_misses:
        calls = []
        real = pouw.share.best_share

        def best_share(*args):
            calls.append(1)
            return None if len(calls) == 1 else real(*args)

        monkeypatch.setattr(pouw.share, "best_share", best_share)
    cfg = with_issuer(load_config("regtest"), ISS.address, 10**12, "mint", 2, 30, 9000)
    toml = tmp_path / "net.toml"
    toml.write_text(cfg.source)
    rng = np.random.default_rng(3)
    a = rng.integers(-64, 65, size=(16, 512), dtype=np.int8)  # 4 tiles of 8 x 8: a share in 94 % of passes
    b = rng.integers(-64, 65, size=(512, 16), dtype=np.int8)
    job = commit_job(a, b)

    async def main():
        n = Node(
            NodeConfig(datadir=tmp_path / "n", network=str(toml), port=0, mine=True, device="cpu", mine_interval=0.05)
        )
        await n.start()
        try:
            await wait_for(lambda: n.chain.height >= 2, 30)
            fk = faucet_key()
            nonce = n.mempool.pending_nonce(fk.address)
            for i, k in enumerate((SUB, ISS)):
                n.add_tx(make_transfer(fk, cfg.chain_id, nonce + i, k.address, 10**6, 1000))
            await wait_for(lambda: n.chain.get_account(ISS.address).balance > 0, 30)
            g = Transaction(
                KIND_GRANT,
                cfg.chain_id,
                n.chain.get_account(ISS.address).nonce,
                ISS.pubkey,
                1000,
                Grant(SUB.address, 50_000_000, 200, 1, 0),
            ).signed(ISS)  # 5,000 base units
            n.add_tx(g)
            await wait_for(lambda: n.chain.get_econ(b"G" + g.txid) is not None, 30)
            n.blobs.put(encode_array(a), expect=job.h_a)
            n.blobs.put(encode_array(b), expect=job.h_b)
            fee = job_price(cfg, job.m, job.k, job.n) * 10
            free0 = n.chain.get_account(SUB.address).balance
            tx = make_job_submit(
                SUB,
                cfg.chain_id,
                n.mempool.pending_nonce(SUB.address),
                job,
                fee,
                n.chain.height + 60,
                job.h_a,
                job.h_b,
                1000,
            )
            n.add_tx(tx)
            await wait_for(
                lambda: (r := n.chain.get_job(tx.txid)) is not None and r.status_name == "released",
                120,
                what="the job released",
            )
            rec = n.chain.get_job(tx.txid)
            assert rec.miner == n.node_key.address
            assert n.chain.get_account(SUB.address).balance == free0 - 1000  # the allocation paid the escrow
            blk = n.chain.get_block(n.chain.block_hash_at(rec.result_height))
            res = [t for t in blk.txs if t.kind == KIND_JOB_RESULT and t.payload.job_id == tx.txid]
            assert n.paid_jobs.active is None or n.paid_jobs.active.job_id != tx.txid
            if mode == "cert_refused":
                assert len(res) == 1 and res[0].payload.cert is None
                assert E.holdings(n.chain, 0, n.node_key.address)["spend_only"] == fee
            else:
                assert len(res) == 1 and res[0].payload.cert is not None  # the pass's certificate
                if first_pass_misses:
                    assert n.paid_jobs.cert_passes >= 1  # another pass was run
                # released free: nothing of the fee became spend-only for the miner
                assert n.chain.get_econ(b"P" + n.node_key.address) is None
            n.chain.check_conservation()
        finally:
            await n.stop()

    asyncio.run(main())
