"""Storage: crash safety under SIGKILL, corrupted/missing files at start-up, verify and reindex."""

from __future__ import annotations

import random
from pathlib import Path

import plyvel
import pytest

from chain import schema as S
from chain.chainstate import DB_DIRNAME, ChainState
from chain.commands import main as chain_cli
from chain.config import load_config
from testkit.crashtest import run_rounds
from chain.errors import StorageError
from chain.keys import PrivateKey
from chain.maintenance import VerifyError, reindex_datadir, verify_datadir
from chain.synthetic import ChainBuilder, make_keys

CFG = load_config("regtest")
NOW = CFG.genesis_timestamp + 10**6
MINER = PrivateKey.from_phrase(b"storage miner").address


@pytest.fixture(scope="module")
def chain_blocks():
    b = ChainBuilder(CFG)
    blocks = b.chain(b.genesis.hash, 8, MINER, keys=make_keys(4), txs_per_block=5, rng=random.Random(2))
    side = b.chain(blocks[4].hash, 2, PrivateKey.from_phrase(b"side").address)
    return b, blocks, side


@pytest.fixture
def datadir(tmp_path, chain_blocks):
    _, blocks, side = chain_blocks
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        for blk in blocks + side:
            cs.submit_block(blk)
    return tmp_path


def test_crash_safety_sigkill(tmp_path):
    res = run_rounds(tmp_path, 22, seed=11, max_delay=1.0)
    assert res["kills"] >= 22


def test_verify_ok_and_cli(datadir, chain_blocks, capsys):
    rep = verify_datadir(datadir)
    assert rep.height == 8 and rep.tip == chain_blocks[1][-1].hash
    assert chain_cli(["verify", "--datadir", str(datadir)]) == 0
    assert "ok: height 8" in capsys.readouterr().out


def _raw(datadir: Path):
    return plyvel.DB(str(datadir / DB_DIRNAME))


def test_verify_detects_tampered_account(datadir, chain_blocks, capsys):
    db = _raw(datadir)
    db.put(S.account_key(MINER), b"\x92\x01\x00")  # balance 1, nonce 0
    db.close()
    with pytest.raises(VerifyError) as ei:
        verify_datadir(datadir)
    assert ei.value.reason == "bad-accounts"
    assert chain_cli(["verify", "--datadir", str(datadir)]) == 1
    assert "bad-accounts" in capsys.readouterr().err
    # reindex rebuilds the state from the stored blocks
    rep = reindex_datadir(datadir)
    assert rep.height == 8
    b, blocks, _ = chain_blocks
    with ChainState.open(datadir, None, create=False) as cs:
        assert cs.accounts() == b.states[blocks[-1].hash].accounts


def test_verify_detects_missing_undo(datadir, chain_blocks):
    db = _raw(datadir)
    db.delete(S.undo_key(chain_blocks[1][3].hash))
    db.close()
    with pytest.raises(VerifyError) as ei:
        verify_datadir(datadir)
    assert ei.value.reason == "missing-undo"


def test_reindex_cli_after_wiping_state(datadir, chain_blocks):
    db = _raw(datadir)
    for k, _ in list(db.iterator(prefix=S.P_ACCOUNT)):
        db.delete(k)
    db.close()
    assert chain_cli(["reindex", "--datadir", str(datadir)]) == 0
    assert verify_datadir(datadir).tip == chain_blocks[1][-1].hash


def test_missing_database(tmp_path):
    with pytest.raises(StorageError, match="no chain database"):
        ChainState.open(tmp_path / "nothing", CFG, create=False)
    with pytest.raises(StorageError, match="no chain database"):
        ChainState.open(tmp_path / "nothing", None)


def test_missing_current_file(datadir):
    (datadir / DB_DIRNAME / "CURRENT").unlink()
    with pytest.raises(StorageError, match="CURRENT file is missing"):
        ChainState.open(datadir, CFG)


def test_missing_table_files(datadir):
    db = _raw(datadir)
    db.compact_range()
    db.close()
    tables = list((datadir / DB_DIRNAME).glob("*.ldb")) + list((datadir / DB_DIRNAME).glob("*.sst"))
    assert tables
    for t in tables:
        t.unlink()
    with pytest.raises(StorageError):
        ChainState.open(datadir, CFG)


def test_corrupted_table_file(datadir):
    db = _raw(datadir)
    db.compact_range()
    db.close()
    for t in (datadir / DB_DIRNAME).glob("*.ldb"):
        data = bytearray(t.read_bytes())
        for i in range(100, len(data) - 100, 97):
            data[i] ^= 0xFF
        t.write_bytes(bytes(data))
    with pytest.raises(StorageError):
        ChainState.open(datadir, CFG)


def test_no_schema_marker(datadir):
    db = _raw(datadir)
    db.delete(S.META_SCHEMA)
    db.close()
    with pytest.raises(StorageError, match="no schema marker"):
        ChainState.open(datadir, CFG)


def test_wrong_schema_version(datadir):
    db = _raw(datadir)
    db.put(S.META_SCHEMA, b"\x63")
    db.close()
    with pytest.raises(StorageError, match="schema version 99"):
        ChainState.open(datadir, CFG)


def test_foreign_chain(datadir):
    with pytest.raises(StorageError, match="genesis"):
        ChainState.open(datadir, load_config("devnet"))


def test_missing_tip_body(datadir, chain_blocks):
    db = _raw(datadir)
    db.delete(S.body_key(chain_blocks[1][-1].hash))
    db.close()
    with pytest.raises(StorageError, match="tip's body or undo"):
        ChainState.open(datadir, CFG)


def test_dangling_tip(datadir):
    db = _raw(datadir)
    db.put(S.META_TIP, b"\x07" * 32)
    db.close()
    with pytest.raises(StorageError, match="tip .* not in the block index"):
        ChainState.open(datadir, CFG)


def test_not_a_database(tmp_path):
    d = tmp_path / DB_DIRNAME
    d.mkdir()
    (d / "CURRENT").write_text("garbage\n")
    with pytest.raises(StorageError):
        ChainState.open(tmp_path, CFG)


def test_crash_before_genesis_write(tmp_path):
    """An empty database (killed between creating it and writing genesis) is initialised, not an error."""
    plyvel.DB(str(tmp_path / DB_DIRNAME), create_if_missing=True).close()
    with ChainState.open(tmp_path, CFG) as cs:
        assert cs.height == 0
    assert verify_datadir(tmp_path).height == 0


class _FailingWrites:
    """Wraps a plyvel DB: reads pass through, every write batch fails as on a full disk."""

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def write_batch(self, **kw):
        raise plyvel.IOError("IO error: No space left on device")


@pytest.mark.parametrize("header_first", [True, False])
def test_failed_write_leaves_index_unchanged(tmp_path, chain_blocks, monkeypatch, header_first):
    """A block whose batch fails to commit is not reported as stored (no HAVE_DATA, no tip move, no body), and
    is accepted normally once writes work again; the same holds for a side-chain block, invalidate, reconsider."""
    _, blocks, side = chain_blocks
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:
        for blk in blocks[:5]:
            cs.submit_block(blk)
        cs.submit_header(side[0].header)  # a side branch off blocks[4], known by header
        if header_first:
            cs.submit_header(blocks[5].header)
        before = {h: (e.status, e.seq, e.reason) for h, e in cs.index.items()}
        tips_before, seq_before, db = cs.chain_tips(), cs._seq, cs.store.db
        failing = _FailingWrites(db)
        monkeypatch.setattr(cs.store, "db", failing)
        for blk in (blocks[5], side[0]):  # extends the tip; side block
            with pytest.raises(StorageError, match="No space left"):
                cs.submit_block(blk)
            assert cs.get_block(blk.hash) is None
        for h in (side[0].hash, blocks[3].hash):  # fails marking; fails disconnecting the tip
            with pytest.raises(StorageError, match="No space left"):
                cs.invalidate_block(h)
        assert {h: (e.status, e.seq, e.reason) for h, e in cs.index.items()} == before
        assert cs.chain_tips() == tips_before and cs._seq == seq_before and cs.tip.hash == blocks[4].hash
        monkeypatch.setattr(cs.store, "db", db)
        assert cs.submit_block(blocks[5]).status == "active"
        assert cs.submit_block(side[0]).status == "side"
        assert cs.tip.hash == blocks[5].hash and cs.index[side[0].hash].status & S.HAVE_DATA
        cs.invalidate_block(side[0].hash)
        monkeypatch.setattr(cs.store, "db", failing)
        with pytest.raises(StorageError, match="No space left"):
            cs.reconsider_block(side[0].hash)
        assert cs.index[side[0].hash].reason == "invalidated"
        monkeypatch.setattr(cs.store, "db", db)
        cs.reconsider_block(side[0].hash)
        assert not cs.index[side[0].hash].failed
    assert verify_datadir(tmp_path).height == 6
    with ChainState.open(tmp_path, CFG, clock=lambda: NOW) as cs:  # memory matched disk all along
        assert cs.tip.hash == blocks[5].hash and cs.get_block(side[0].hash) == side[0]
        assert not cs.index[side[0].hash].failed
