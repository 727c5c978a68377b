"""The LevelDB key schema. This module is the only place that builds or parses keys.

=====================  ==========================================  ===================================
key                    value                                       meaning
=====================  ==========================================  ===================================
``m/schema``           encode(SCHEMA_VERSION)                      schema marker (checked on open)
``m/genesis``          32-byte genesis hash                        which chain this datadir holds
``m/chain_id``         encode(chain_id)
``m/config``           TOML text of the chain config
``m/tip``              32-byte hash of the active tip              moves in the batch that connects it
``m/supply``           Supply.encode()                             minted, burned, LtHash of accounts
``m/seq``              encode(next sequence id)                    "first seen" order of block data
``h`` + hash           Header.encoded                              every header with a valid proof
``b`` + hash           encode(list of txs)                         block bodies (data)
``i`` + hash           encode([status, chainwork(32), seq, reason]) block index record
``u`` + hash           encode([supply_before, [[addr, acct]...],   undo data of a connected block
                       [[job_id, record or b""]...],               (b"": the job did not exist before)
                       [[econ key] or [econ key, value]...]])      (economy: [key] = absent before)
``n`` + height(8, BE)  32-byte hash                                active chain by height
``a`` + address(20)    Account.encode()                            account state at the tip
``j`` + job_id(32)     JobRecord.encode()                          job records at the tip (chain/jobs.py)
``s`` + height(8, BE)  b""                                         the job schedule: live job `job_id`
  + job_id(32)                                                     has its next automatic transition
                                                                   at the end of block `height`
``e`` + econ key       economy record (chain/economy.py)           issuers, grants, balances by kind,
                                                                   orders, the economy schedule
``m/indexes``          encode(INDEXES_VERSION)                     the indexes below are complete
``t`` + txid(32)       32-byte block hash                          tx index: active-chain block of a tx
``x`` + address(20)    encode([balance_before, balance_after,      address history on the active chain,
  + ~height(8, BE)     nonce_after, [txid...]])                    newest first (~height = 2^64-1-height)
``c`` + h_a + h_b      32-byte job id                              job commitment -> job (paid blocks)
=====================  ==========================================  ===================================
"""

from __future__ import annotations

SCHEMA_VERSION = 1

META_SCHEMA = b"m/schema"
META_GENESIS = b"m/genesis"
META_CHAIN_ID = b"m/chain_id"
META_CONFIG = b"m/config"
META_TIP = b"m/tip"
META_SUPPLY = b"m/supply"
META_SEQ = b"m/seq"

P_HEADER = b"h"
P_BODY = b"b"
P_INDEX = b"i"
P_UNDO = b"u"
P_HEIGHT = b"n"
P_ACCOUNT = b"a"
P_JOB = b"j"
P_SCHED = b"s"
P_ECON = b"e"
# Secondary indexes for lookups (chain/indexes.py): written in the connect/disconnect batches.
META_INDEXES = b"m/indexes"
INDEXES_VERSION = 1
P_TXINDEX = b"t"
P_ADDRHIST = b"x"
P_COMMIT = b"c"

# Block status flags (stored in the index record).
HEADER_VALID = 1  # proof and header context checked
HAVE_DATA = 2  # body stored and passed sanity checks
VALID_STATE = 4  # connected successfully at least once (state transition valid)
FAILED = 8  # the block itself is invalid (or invalidated by hand)
FAILED_CHILD = 16  # descends from a failed block
FAILED_MASK = FAILED | FAILED_CHILD


def header_key(h: bytes) -> bytes:
    return P_HEADER + h


def body_key(h: bytes) -> bytes:
    return P_BODY + h


def index_key(h: bytes) -> bytes:
    return P_INDEX + h


def undo_key(h: bytes) -> bytes:
    return P_UNDO + h


def height_key(height: int) -> bytes:
    return P_HEIGHT + height.to_bytes(8, "big")


def account_key(addr: bytes) -> bytes:
    return P_ACCOUNT + addr


def job_key(job_id: bytes) -> bytes:
    return P_JOB + job_id


def sched_prefix(height: int) -> bytes:
    return P_SCHED + height.to_bytes(8, "big")


def sched_key(height: int, job_id: bytes) -> bytes:
    return sched_prefix(height) + job_id


def econ_key(key: bytes) -> bytes:
    return P_ECON + key


def txindex_key(txid: bytes) -> bytes:
    return P_TXINDEX + txid


def addrhist_prefix(addr: bytes) -> bytes:
    return P_ADDRHIST + addr


def addrhist_key(addr: bytes, height: int) -> bytes:
    """Newest first in key order: the height is stored inverted."""
    return P_ADDRHIST + addr + ((1 << 64) - 1 - height).to_bytes(8, "big")


def addrhist_height(key: bytes) -> int:
    return (1 << 64) - 1 - int.from_bytes(key[-8:], "big")


def commit_key(h_a: bytes, h_b: bytes) -> bytes:
    return P_COMMIT + h_a + h_b


def strip(prefix: bytes, key: bytes) -> bytes:
    assert key.startswith(prefix)
    return key[len(prefix) :]
