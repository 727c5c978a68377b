"""Keys and key files, config loading, ASERT difficulty, subsidy schedule."""

from __future__ import annotations

import dataclasses
import json

import pytest

from chain.config import load_config
from chain.difficulty import asert_target, block_work, median_time_past
from chain.errors import KeyFileError
from chain.keys import PrivateKey, address_of, faucet_key, load_key, save_key, verify_sig


def test_faucet_is_funded_in_devnet():
    cfg = load_config("devnet")
    assert dict(cfg.genesis_alloc)[faucet_key().address] > 0
    assert faucet_key().seed.hex() == __import__("hashlib").sha256(b"pouw devnet faucet").hexdigest()
    assert cfg.target_block_time == 5 and cfg.chain_id != load_config("regtest").chain_id


def test_config_by_path_and_errors(tmp_path):
    from chain.config import CONFIG_DIRS

    p = CONFIG_DIRS[0] / "regtest.toml"
    assert load_config(str(p)) == load_config("regtest")
    with pytest.raises(FileNotFoundError):
        load_config("no-such-net")
    bad = tmp_path / "bad.toml"
    bad.write_text(p.read_text().replace("[subsidy]", "[subsidyx]"))
    with pytest.raises(ValueError, match="missing field"):
        load_config(bad)
    cfg = load_config("regtest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.chain_id = 5  # type: ignore[misc]  # frozen


def test_subsidy_schedule():
    cfg = load_config("regtest")
    assert cfg.subsidy(0) == 0
    assert cfg.subsidy(1) == cfg.initial_subsidy
    assert cfg.subsidy(cfg.halving_interval) == cfg.initial_subsidy
    assert cfg.subsidy(cfg.halving_interval + 1) == cfg.initial_subsidy // 2
    assert cfg.subsidy(cfg.halving_interval * 70) == 0


def test_keyfile_encrypted_roundtrip(tmp_path):
    k = PrivateKey.generate()
    p = tmp_path / "k.json"
    save_key(p, k, "correct horse", scrypt_n=1 << 10)
    doc = json.loads(p.read_text())
    assert k.seed.hex() not in p.read_text() and doc["kdf"] == "scrypt"
    assert (p.stat().st_mode & 0o777) == 0o600
    assert load_key(p, "correct horse") == k
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_key(p, "wrong")
    with pytest.raises(KeyFileError, match="passphrase is required"):
        load_key(p)
    doc["ciphertext"] = "00" + doc["ciphertext"][2:]
    p.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError):
        load_key(p, "correct horse")


def test_keyfile_unencrypted_only_when_asked(tmp_path):
    k = faucet_key()
    with pytest.raises(KeyFileError):
        save_key(tmp_path / "f.json", k, None)
    save_key(tmp_path / "f.json", k, None, allow_unencrypted=True)
    assert load_key(tmp_path / "f.json") == k
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(KeyFileError, match="unreadable"):
        load_key(tmp_path / "g.json")


def test_signatures():
    k = PrivateKey.from_phrase(b"x")
    sig = k.sign(b"msg")
    assert verify_sig(k.pubkey, b"msg", sig)
    assert not verify_sig(k.pubkey, b"msh", sig)
    assert not verify_sig(b"\x00" * 32, b"msg", sig)
    assert address_of(k.pubkey) == k.address and len(k.address) == 20


def test_asert():
    L = (1 << 256) - 1
    t0 = 1 << 200
    assert asert_target(t0, 0, 0, 5, 600, L) == t0  # on schedule
    assert asert_target(t0, 600, 0, 5, 600, L) == 2 * t0  # one half-life behind: 2x easier
    assert asert_target(t0, 5 * 120, 120, 5, 600, L) == t0  # exactly on schedule later on
    assert asert_target(t0, 0, 120, 5, 600, L) == t0 // 2  # one half-life ahead: 2x harder
    prev = 0
    for td in range(-3000, 3000, 37):  # monotone in elapsed time
        t = asert_target(t0, td, 0, 5, 600, L)
        assert t >= prev
        prev = t
    assert asert_target(t0, 10**9, 0, 5, 600, L) == L  # clamped at the pow limit
    assert asert_target(t0, -(10**9), 0, 5, 600, L) == 1  # never zero
    assert block_work(t0) == 1 << 56


def test_median_time_past():
    assert median_time_past([5, 1, 3]) == 3
    assert median_time_past(list(range(11))) == 5


def test_hashes_as_docs_write_them():
    """docs/chain.md "Hashes", recomputed with hashlib alone: the tag convention, the transaction root
    (u64 LE count, odd node carried up, empty root), and the state root's LtHash lanes."""
    import hashlib

    import numpy as np

    from chain.chainstate import make_genesis
    from chain.encoding import encode
    from chain.hashing import merkle_root
    from chain.state import Account, Supply

    def H(tag: bytes, *parts: bytes) -> bytes:
        return hashlib.sha256(b"pouw/" + tag + b"\x00" + b"".join(parts)).digest()

    def XOF(tag: bytes, *parts: bytes, n: int) -> bytes:
        return hashlib.shake_256(b"pouw/" + tag + b"\x00" + b"".join(parts)).digest(n)

    g = make_genesis(load_config("regtest")).header
    assert g.hash == H(b"block", g.encoded)
    k = faucet_key()
    assert k.address == H(b"addr", k.pubkey)[:20]
    xs = [bytes([i]) * (i + 1) for i in range(3)]
    leaf = [H(b"txroot/leaf", x) for x in xs]
    top = H(b"txroot/node", H(b"txroot/node", leaf[0], leaf[1]), leaf[2])  # the odd leaf 2 is carried up
    assert merkle_root(xs) == H(b"txroot/root", (3).to_bytes(8, "little"), top)
    assert merkle_root(xs[:1]) == H(b"txroot/root", (1).to_bytes(8, "little"), leaf[0])
    assert merkle_root([]) == H(b"txroot/empty")
    addr, acct = bytes(range(20)), Account(12345, 6)
    lanes = np.frombuffer(XOF(b"acct", addr, encode([12345, 6]), n=2048), dtype="<u2")
    sup = Supply.zero().updated([(addr, Account(), acct)], minted=12345)
    assert sup.lthash == lanes.tobytes()
    assert sup.root == H(b"state", encode([12345, 0, lanes.tobytes()]))
