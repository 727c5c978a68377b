"""The pinned consensus vectors in tests/vectors/ (the reference for other implementations, README there).

Each vector is recomputed from its inputs through the node's public API, the way a second client would use
it: decode, hash, sign, derive, verify, import. A failure means consensus output changed. If that is
deliberate (a protocol version bump), regenerate and commit the files:

    PYTHONPATH=. .venv/bin/python scripts/gen_vectors.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from chain import tx as T
from chain.block import Block, Header
from chain.chainstate import ChainState, make_genesis
from chain.config import launch, load_config
from chain.encoding import encode
from chain.errors import ValidationError
from chain.hashing import merkle_root, tagged_hash, u32, u64, xof
from chain.keys import PrivateKey
from chain.state import Account, Supply

VEC = Path(__file__).resolve().parent / "vectors"
REGEN = (
    "If this change of consensus output is deliberate (and the protocol version was bumped), regenerate the "
    "vectors with `PYTHONPATH=. .venv/bin/python scripts/gen_vectors.py` and commit tests/vectors/."
)
REGTEST = load_config("regtest")


def load(name: str) -> dict:
    return json.loads((VEC / name).read_text())


def same(actual, expected, where: str) -> None:
    assert actual == expected, f"tests/vectors/{where}: got {actual!r}, pinned {expected!r}. {REGEN}"


def unobj(x):
    """Inverse of the generator's obj(): {"bin": hex} -> bytes."""
    if isinstance(x, dict):
        return bytes.fromhex(x["bin"])
    if isinstance(x, list):
        return [unobj(y) for y in x]
    return x


def fields_of(h: Header) -> dict:
    return {
        "version": h.version,
        "chain_id": h.chain_id,
        "height": h.height,
        "prev_hash": h.prev_hash.hex(),
        "timestamp": h.timestamp,
        "target": "%064x" % h.target,
        "tx_root": h.tx_root.hex(),
        "state_root": h.state_root.hex(),
        "miner": h.miner.hex(),
        "job": {"h_a": h.job.h_a.hex(), "h_b": h.job.h_b.hex(), "m": h.job.m, "k": h.job.k, "n": h.job.n},
        "nonce": h.nonce,
        "proof": h.proof.hex(),
    }


def check_header(v: dict, where: str) -> Header:
    from pouw.noise import job_key

    h = Header.decode(bytes.fromhex(v["encoded"]))
    same(fields_of(h), v["fields"], where + ".fields")
    same(h.template.hex(), v["template"], where + ".template")
    same(h.hash.hex(), v["hash"], where + ".hash")
    same(job_key(h.template).hex(), v["job_key"], where + ".job_key")
    return h


def test_hashing():
    v = load("hashing.json")
    for c in v["H"]:
        same(
            tagged_hash(c["tag"].encode(), *map(bytes.fromhex, c["parts"])).hex(),
            c["out"],
            f"hashing.json H {c['tag']}",
        )
    for c in v["XOF"]:
        same(
            xof(c["tag"].encode(), *map(bytes.fromhex, c["parts"]), length=c["length"]).hex(),
            c["out"],
            "hashing.json XOF",
        )
    same([u32(c["int"]).hex() for c in v["u32"]], [c["bytes"] for c in v["u32"]], "hashing.json u32")
    same([u64(c["int"]).hex() for c in v["u64"]], [c["bytes"] for c in v["u64"]], "hashing.json u64")


def test_genesis_per_network():
    nets = {n["network"]: n for n in load("genesis.json")["networks"]}
    same(sorted(nets), ["devnet", "regtest"], "genesis.json networks")
    for name, n in nets.items():
        cfg = load_config(name)
        cfg = cfg if cfg.dated else launch(cfg, n["genesis_timestamp"])
        g = make_genesis(cfg)
        same(g.encoded.hex(), n["block_encoded"], f"genesis.json {name}.block_encoded")
        same(g.hash.hex(), n["hash"], f"genesis.json {name}.hash")
        same("%064x" % cfg.initial_target, n["initial_target"], f"genesis.json {name}.initial_target")
        same("%064x" % cfg.pow_limit, n["pow_limit"], f"genesis.json {name}.pow_limit")
        same([[a.hex(), x] for a, x in cfg.genesis_alloc], n["alloc"], f"genesis.json {name}.alloc")
        check_header(n, f"genesis.json {name}")


def test_header_and_block_encoding():
    v = load("encoding.json")
    h = check_header(v["header"], "encoding.json header")
    blk = Block.decode(bytes.fromhex(v["block_encoded"]))
    same(blk.header, h, "encoding.json block_encoded header")
    same(blk.encoded.hex(), v["block_encoded"], "encoding.json block_encoded")


def test_every_transaction_kind():
    txs = load("encoding.json")["transactions"]
    assert {t["kind"] for t in txs} == set(T.KNOWN_KINDS), (
        f"kinds with vectors {sorted(t['kind'] for t in txs)} != accepted kinds {sorted(T.KNOWN_KINDS)}: add a sample "
        f"payload to SAMPLE_PAYLOADS in scripts/gen_vectors.py. {REGEN}"
    )
    for v in txs:
        where = f"encoding.json tx kind {v['kind']} ({v['name']})"
        key = PrivateKey(bytes.fromhex(v["sender_seed"]))
        same(key.pubkey.hex(), v["sender_pubkey"], where + ".sender_pubkey")
        unsigned = [v["kind"], v["chain_id"], v["nonce"], key.pubkey, v["fee"], unobj(v["payload"])]
        same(encode(unsigned).hex(), v["unsigned_encoded"], where + ".unsigned_encoded")
        same(tagged_hash(b"tx-sig", encode(unsigned)).hex(), v["sighash"], where + ".sighash")
        same(key.sign(bytes.fromhex(v["sighash"])).hex(), v["signature"], where + ".signature")
        tx = T.decode_tx(bytes.fromhex(v["encoded"]), REGTEST.max_tx_bytes)
        same(tx.encoded.hex(), v["encoded"], where + ".encoded")
        same(encode(unsigned + [bytes.fromhex(v["signature"])]).hex(), v["encoded"], where + ".encoded")
        same((tx.txid.hex(), tx.sender.hex()), (v["txid"], v["sender_address"]), where + ".txid")
        try:
            T.check_tx(tx, REGTEST.chain_id, REGTEST.max_tx_bytes)
            verdict = "ok"
        except ValidationError as e:
            verdict = e.reason
        same(verdict, v["check_tx"], where + ".check_tx")


def test_roots():
    v = load("roots.json")
    for i, c in enumerate(v["tx_roots"]):
        same(merkle_root([bytes.fromhex(x) for x in c["leaves"]]).hex(), c["root"], f"roots.json tx_roots[{i}]")
    for i, c in enumerate(v["state_roots"]):
        sup = Supply.zero().updated(
            [(bytes.fromhex(a), Account(), Account(b, n)) for a, b, n in c["accounts"]],
            minted=c["minted"],
            burned=c["burned"],
        )
        same(sup.lthash.hex(), c["lthash"], f"roots.json state_roots[{i}].lthash")
        same(sup.root.hex(), c["root"], f"roots.json state_roots[{i}].root")
        # the documented formula, from hashlib and numpy alone
        lanes = np.zeros(1024, dtype=np.uint16)
        for a, b, n in c["accounts"]:
            lanes += np.frombuffer(xof(b"acct", bytes.fromhex(a), encode([b, n]), length=2048), dtype="<u2")
        same(
            tagged_hash(b"state", encode([c["minted"], c["burned"], lanes.astype("<u2").tobytes()])).hex(),
            c["root"],
            f"roots.json state_roots[{i}] (docs/chain.md formula)",
        )


@pytest.fixture(scope="module")
def chain_vec():
    return load("chain.json")


def open_chain(tmp_path, chain_vec) -> ChainState:
    cs = ChainState.open(tmp_path, REGTEST, clock=lambda: chain_vec["now"])
    same(cs.genesis.hash.hex(), chain_vec["genesis"], "chain.json genesis")
    for b in chain_vec["blocks"]:
        blk = Block.decode(bytes.fromhex(b["encoded"]))
        same(blk.hash.hex(), b["hash"], "chain.json block hash")
        assert cs.submit_block(blk).status == "active", (
            f"tests/vectors/chain.json block {b['hash']} not accepted. {REGEN}"
        )
        same("%064x" % blk.header.target, b["target"], "chain.json target")
    return cs


def test_chain_imports(tmp_path, chain_vec):
    with open_chain(tmp_path, chain_vec) as cs:
        same(cs.tip.hash.hex(), chain_vec["blocks"][-1]["hash"], "chain.json tip")
        cs.check_conservation()


def test_block_reject_reasons(tmp_path, chain_vec):
    v = load("rejects.json")
    same(v["now"], chain_vec["now"], "rejects.json now")
    with open_chain(tmp_path, chain_vec) as cs:
        tip = cs.tip.hash
        for c in v["blocks"]:
            for p in c["pre"]:
                with pytest.raises(ValidationError):
                    cs.submit_block(bytes.fromhex(p))
            with pytest.raises(ValidationError) as ei:
                cs.submit_block(bytes.fromhex(c["block"]))
            same(ei.value.reason, c["reason"], f"rejects.json block '{c['name']}'")
            assert cs.tip.hash == tip
        assert cs.submit_block(bytes.fromhex(v["good"])).status == "active", f"rejects.json good block. {REGEN}"
        cs.check_conservation()
    for c in v["txs"]:
        with pytest.raises(ValidationError) as ei:
            T.check_tx(
                T.decode_tx(bytes.fromhex(c["tx"]), REGTEST.max_tx_bytes), REGTEST.chain_id, REGTEST.max_tx_bytes
            )
        same(ei.value.reason, c["reason"], f"rejects.json tx '{c['name']}'")


def _job(v):
    from pouw.job import JobCommitment

    j = v["job"]
    return JobCommitment(bytes.fromhex(j["h_a"]), bytes.fromhex(j["h_b"]), j["m"], j["k"], j["n"])


def _chacha20_block(key: bytes, counter: int, nonce12: bytes) -> bytes:
    """RFC 7539 §2.3, written out: the layout docs/protocol.md §3 states (word 12 = counter, 13-15 = nonce)."""

    def rotl(x, n):
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    def qr(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 16)  # noqa: E702
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 12)  # noqa: E702
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 8)  # noqa: E702
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 7)  # noqa: E702

    init = [
        0x61707865,
        0x3320646E,
        0x79622D32,
        0x6B206574,
        *struct.unpack("<8I", key),
        counter,
        *struct.unpack("<3I", nonce12),
    ]
    s = list(init)
    for _ in range(10):
        qr(s, 0, 4, 8, 12)
        qr(s, 1, 5, 9, 13)
        qr(s, 2, 6, 10, 14)
        qr(s, 3, 7, 11, 15)  # noqa: E702
        qr(s, 0, 5, 10, 15)
        qr(s, 1, 6, 11, 12)
        qr(s, 2, 7, 8, 13)
        qr(s, 3, 4, 9, 14)  # noqa: E702
    return struct.pack("<16I", *((x + y) & 0xFFFFFFFF for x, y in zip(s, init)))


def test_seeds_and_noise():
    from pouw.noise import derive_seeds, keystream, noise_cols, noise_map, noise_rows

    v = load("noise.json")
    s = derive_seeds(bytes.fromhex(v["template"]), _job(v))
    same(
        (s.job_key.hex(), s.seed_a.hex(), s.seed_b.hex()), (v["job_key"], v["seed_a"], v["seed_b"]), "noise.json seeds"
    )
    k, r = v["job"]["k"], v["params"]["rank"]
    same(noise_map(s.seed_a, k, r).tolist(), v["map_a"], "noise.json map_a")
    same(noise_map(s.seed_b, k, r).tolist(), v["map_b"], "noise.json map_b")
    for c in v["keystream"]:
        key, nonce = bytes.fromhex(c["key"]), bytes.fromhex(c["nonce"])
        same(keystream(key, nonce, c["offset"], c["length"]).hex(), c["bytes"], "noise.json keystream")
        first, last = c["offset"] // 64, (c["offset"] + c["length"] - 1) // 64
        stream = b"".join(_chacha20_block(key, b, nonce) for b in range(first, last + 1))
        skip = c["offset"] - 64 * first
        same(stream[skip : skip + c["length"]].hex(), c["bytes"], "noise.json keystream (RFC 7539 written out)")
    same(noise_rows(s, v["noise_rows"]["rows"], k, r).tolist(), v["noise_rows"]["E"], "noise.json noise_rows")
    same(noise_cols(s, v["noise_cols"]["cols"], k, r).tolist(), v["noise_cols"]["F_T"], "noise.json noise_cols")


def test_ticket_and_proof():
    from pouw.errors import PowError
    from pouw.params import PowParams
    from pouw.proof import TileProof
    from pouw.verify import verify_proof

    v = load("proof.json")
    params = PowParams(**v["params"])
    same(params.tile_work(v["job"]["k"]), v["tile_work"], "proof.json tile_work")
    template, job, target = bytes.fromhex(v["template"]), _job(v), int(v["target"], 16)
    raw = bytes.fromhex(v["proof"])
    p = TileProof.decode(raw)
    d = v["decoded"]
    same(
        {
            "job_key": p.job_key.hex(),
            "ti": p.ti,
            "tj": p.tj,
            "h": p.h,
            "w": p.w,
            "k": p.k,
            "ticket": p.ticket.hex(),
            "path_a": [x.hex() for x in p.path_a],
            "path_b": [x.hex() for x in p.path_b],
        },
        d,
        "proof.json decoded",
    )
    same(p.encode(), raw, "proof.json proof re-encoded")
    same(verify_proof(template, job, p, target, params).hex(), v["ticket"], "proof.json ticket")
    sv = v["share"]  # the tile as a work share (docs/protocol.md §10)
    from dataclasses import replace as _replace
    from pouw.share import SHARE_EXPECTED, job_tiles, share_threshold, verify_share

    same(
        (SHARE_EXPECTED, job_tiles(job, params), "%064x" % share_threshold(job, params)),
        (sv["expected"], sv["tiles"], sv["threshold"]),
        "proof.json share threshold",
    )
    for proof_, want in ((p, sv["verdict"]), (_replace(p, ticket=bytes(32)), sv["zero_ticket_verdict"])):
        try:
            verify_share(template, job, proof_, params)
            got = "ok"
        except PowError as e:
            got = e.reason
        same(got, want, "proof.json share verdict")
    for c in v["tampered"]:
        bad = raw
        if "truncate" in c:
            bad = raw[: c["truncate"]]
        if "patch" in c:
            o, b = c["patch"]["offset"], bytes.fromhex(c["patch"]["bytes"])
            bad = raw[:o] + b + raw[o + len(b) :]
        tpl = bytes.fromhex(c["template"]) if "template" in c else template
        tgt = int(c["target"], 16) if "target" in c else target
        with pytest.raises(PowError) as ei:
            verify_proof(tpl, job, TileProof.decode(bad), tgt, params)
        same(ei.value.reason, c["reason"], f"proof.json tampered '{c['name']}'")


def test_vectors_are_what_the_generator_writes():
    """The files equal a fresh run of scripts/gen_vectors.py (so nothing was edited by hand)."""
    import subprocess
    import sys

    root = VEC.parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_vectors.py"), "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{REGEN}"
