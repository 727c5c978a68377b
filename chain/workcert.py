"""Work certificates of job results (docs/jobs.md, "Work certificate"; docs/economy.md, the one-hop rule).

A result may carry ``[template, tile_proof]``: the header template of the pass the miner ran over the job
and one share of that pass (pouw.share). It is accepted iff, for a result in the block at height h:

- the template decodes as a canonical header template of this chain (version, chain id);
- its job is the job's commitment (not another job) and its miner is the claimer (not another miner);
- it is recent and on this chain: h − CERT_WINDOW ≤ template height ≤ h, and its prev is this chain's block
  at template height − 1 (a stale or foreign prev is refused);
- no earlier result used the same template (the used set ``U height(8) job_key(32)`` in the economy
  records, pruned once the template is too old to be accepted anyway): one pass certifies one job;
- the tile proof is a share of the job under that template (`pouw.share.verify_share`).

Only the release of a job's restricted escrow (allocation, vintage, spend-only: the funding record
``F``) depends on it: with a valid certificate (flag ``C job_id``) that part is paid to the miner in free
tokens, without it as spend-only tokens (chain/economy.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from chain.encoding import decode, encode
from chain.errors import EncodingError, TxError
from chain.tx import WorkCert, MAX_CERT_TEMPLATE

if TYPE_CHECKING:  # annotations only
    from chain.config import ChainConfig
    from chain.jobs import JobRecord

CERT_WINDOW = 64  # blocks: a certificate's template height is at least h − CERT_WINDOW


def k_used(template_height: int, job_key: bytes) -> bytes:
    """Economy key of a template a result certified with (the used set)."""
    return b"U" + template_height.to_bytes(8, "big") + job_key


def k_certified(job_id: bytes) -> bytes:
    """Economy key marking a restricted-funded job whose result carried a valid certificate."""
    return b"C" + job_id


def check_certificate(
    cfg: ChainConfig,
    rec: JobRecord,
    claimer: bytes,
    cert: WorkCert,
    height: int,
    block_hash: Callable[[int], bytes | None] | None,
) -> tuple[int, bytes]:
    """Check `cert` for a result by `claimer` on the job `rec` (a chain.jobs.JobRecord) in the block at
    `height`; return (template height, job_key). Raises TxError with a stable reason (bad-cert-*). The used
    set is the caller's (it lives in the economy records)."""
    from chain.block import Header
    from pouw.errors import PowError
    from pouw.noise import job_key
    from pouw.proof import TileProof
    from pouw.share import verify_share

    try:
        fields = decode(cert.template, max_bytes=MAX_CERT_TEMPLATE, max_array=16)
        if not isinstance(fields, list) or len(fields) != 11:
            raise EncodingError("bad-encoding", "a header template has 11 fields")
        hd = Header.from_list(fields + [b""])
        if encode(hd.template_list()) != cert.template:
            raise EncodingError("bad-encoding", "template is not canonical")
        proof = TileProof.decode(cert.proof)
    except (EncodingError, PowError) as e:
        raise TxError("bad-cert-encoding", getattr(e, "detail", str(e))) from e
    if hd.version != cfg.version or hd.chain_id != cfg.chain_id:
        raise TxError("bad-cert-chain", f"template of version {hd.version}, chain {hd.chain_id}")
    if hd.job != rec.commitment():
        raise TxError("bad-cert-job", "the template's job is not this job's commitment")
    if hd.miner != claimer:
        raise TxError("bad-cert-miner", "the template's miner is not the claimer")
    prev = block_hash(hd.height - 1) if block_hash is not None and 1 <= hd.height <= height else None
    if hd.height < height - CERT_WINDOW or prev is None or prev != hd.prev_hash:
        raise TxError(
            "bad-cert-stale",
            f"template at height {hd.height} is not on this chain within {CERT_WINDOW} blocks of {height}",
        )
    try:
        verify_share(cert.template, hd.job, proof, cfg.pow.params())
    except PowError as e:
        raise TxError(e.reason, e.detail) from e
    return hd.height, job_key(cert.template)


def cert_size_bound(cfg: ChainConfig, m: int, k: int, n: int) -> int:
    """An upper bound on the encoded size of a result transaction carrying a certificate for an m×k×n
    job: the tile proof ((h + w)·k opened bytes, the two Merkle paths, its header) and the rest (envelope,
    hashes, header template: < 640 bytes). A certificate can be attached iff this is <= max_tx_bytes."""
    from pouw.proof import _HEAD

    p = cfg.pow.params()
    h, w = p.tile_h, p.tile_w

    def depth(c: int) -> int:
        return max(0, (c - 1).bit_length())

    paths = depth(m) - (h.bit_length() - 1) + depth(n) - (w.bit_length() - 1)
    return _HEAD.size + (h + w) * k + 2 + 32 * max(0, paths) + 5 + 640
