"""Regenerate the consensus known-answer vectors in tests/vectors/ (the reference for other implementations).

    PYTHONPATH=. .venv/bin/python scripts/gen_vectors.py            # rewrite tests/vectors/*.json
    PYTHONPATH=. .venv/bin/python scripts/gen_vectors.py --check    # exit 1 if a file differs from a fresh run

Run it only for a deliberate consensus change (and bump the protocol version with it): tests/test_vectors.py
recomputes every vector from its inputs through the node's public API and fails when the code drifts from the
files. Everything here is deterministic (fixed keys, timestamps and nonces; Ed25519 signatures are
deterministic), so two runs on any machine write identical files. The JSON conventions are in
tests/vectors/README.md.

A transaction kind the chain accepts (`chain.tx.KNOWN_KINDS`) needs a sample payload in SAMPLE_PAYLOADS below;
the generator stops and names any kind without one. Further payload shapes of a kind (e.g. a result with a
work certificate) go in EXTRA_PAYLOADS.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chain import econtx as E  # noqa: E402
from chain import tx as T  # noqa: E402
from chain.block import Block, Header  # noqa: E402
from chain.chainstate import make_genesis  # noqa: E402
from chain.config import launch, load_config  # noqa: E402
from chain.encoding import encode  # noqa: E402
from chain.errors import ValidationError  # noqa: E402
from chain.hashing import merkle_root, tagged_hash, u32, u64, xof  # noqa: E402
from chain.keys import PrivateKey  # noqa: E402
from chain.state import Account, Supply  # noqa: E402
from chain.synthetic import ChainBuilder  # noqa: E402

OUT = ROOT / "tests" / "vectors"
REGTEST = load_config("regtest")
G = REGTEST.genesis_timestamp
NOW = G + 1000  # the validating node's clock in the reject vectors
DEVNET_LAUNCH = 1_800_000_000  # the devnet template launched at this time (chain.config.launch)
SENDER = PrivateKey.from_phrase(b"pouw vector sender")
OTHER = PrivateKey.from_phrase(b"pouw vector other")
MINER = PrivateKey.from_phrase(b"pouw vector miner").address
H32 = lambda i: bytes([i]) * 32  # noqa: E731


def obj(x):
    """A canonical-encoding object as JSON: ints stay ints, byte strings become {"bin": hex}, arrays lists."""
    if isinstance(x, bytes):
        return {"bin": x.hex()}
    if isinstance(x, (list, tuple)):
        return [obj(y) for y in x]
    if type(x) is int:
        return x
    raise TypeError(type(x))


def header_fields(h: Header) -> dict:
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


def header_vector(h: Header) -> dict:
    from pouw.noise import job_key

    return {
        "fields": header_fields(h),
        "encoded": h.encoded.hex(),
        "template": h.template.hex(),
        "hash": h.hash.hex(),
        "job_key": job_key(h.template).hex(),
    }


# --- hashing ------------------------------------------------------------------------------------------


def hashing() -> dict:
    cases = [(b"block", [b""]), (b"tx-sig", [b"abc"]), (b"txroot/root", [u64(3), H32(7)]), (b"job-key", [b"\x01\x02"])]
    return {
        "H": [{"tag": t.decode(), "parts": [p.hex() for p in ps], "out": tagged_hash(t, *ps).hex()} for t, ps in cases],
        "XOF": [
            {
                "tag": "acct",
                "parts": [H32(1)[:20].hex(), encode([5, 1]).hex()],
                "length": 64,
                "out": xof(b"acct", H32(1)[:20], encode([5, 1]), length=64).hex(),
            }
        ],
        "u32": [{"int": 258, "bytes": u32(258).hex()}],
        "u64": [{"int": 2**40 + 1, "bytes": u64(2**40 + 1).hex()}],
    }


# --- genesis ------------------------------------------------------------------------------------------


def genesis() -> dict:
    nets = []
    for cfg, how in (
        (REGTEST, "configs/regtest.toml as written"),
        (launch(load_config("devnet"), DEVNET_LAUNCH), f"configs/devnet.toml launched at {DEVNET_LAUNCH}"),
    ):
        g = make_genesis(cfg)
        nets.append(
            {
                "network": cfg.name,
                "config": how,
                "chain_id": cfg.chain_id,
                "version": cfg.version,
                "genesis_timestamp": cfg.genesis_timestamp,
                "initial_target": "%064x" % cfg.initial_target,
                "pow_limit": "%064x" % cfg.pow_limit,
                "alloc": [[a.hex(), v] for a, v in cfg.genesis_alloc],
                **header_vector(g.header),
                "block_encoded": g.encoded.hex(),
            }
        )
    return {"networks": nets}


# --- transactions -------------------------------------------------------------------------------------


def _fraud_sample():
    from pouw.freivalds import FraudProof

    return FraudProof(
        3, 5, bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48)), (H32(1),), (H32(2), H32(3)), ()
    )


# kind -> (name, payload object as the encoding sees it). Add a line for every new kind.
SAMPLE_PAYLOADS = {
    T.KIND_TRANSFER: ("transfer", lambda: T.Transfer(OTHER.address, 123_456_789)),
    T.KIND_JOB_SUBMIT: (
        "job submit",
        lambda: T.JobSubmit(H32(0xA1), H32(0xB1), 16, 512, 32, 10**6, 90, H32(0xA2), H32(0xB2)),
    ),
    T.KIND_JOB_RESULT: ("job result", lambda: T.JobResult(H32(0x11), H32(0xC1), H32(0xC2))),
    T.KIND_JOB_DISPUTE: ("job dispute", lambda: T.JobDispute(H32(0x11), _fraud_sample())),
    T.KIND_JOB_CLAIM: ("job claim", lambda: T.JobClaim(H32(0x11), 5000)),
    T.KIND_JOB_CHALLENGE: ("job challenge", lambda: T.JobRef(H32(0x11))),
    T.KIND_JOB_ANSWER: (
        "job answer",
        lambda: T.JobAnswer(
            H32(0x11), (T.AnsweredRow(2, bytes(range(8)), (H32(4), H32(5))), T.AnsweredRow(9, bytes(8), ()))
        ),
    ),
    T.KIND_JOB_CANCEL: ("job cancel", lambda: T.JobRef(H32(0x12))),
    # the economy (docs/economy.md; payloads in chain/econtx.py)
    E.KIND_ORDER_PLACE: ("order place", lambda: E.OrderPlace(OTHER.address, E.ASK, 9500, 10**8, E.GTC, 500, 0)),
    E.KIND_ORDER_CANCEL: ("order cancel", lambda: E.OrderCancel(H32(0x21))),
    E.KIND_ISSUER_REGISTER: ("issuer register", lambda: E.IssuerRegister(E.MODE_MINT, 3, 30, 9000)),
    E.KIND_ISSUER_DEPOSIT: ("issuer deposit", lambda: E.IssuerDeposit(10**10)),
    E.KIND_ISSUER_WITHDRAW: ("issuer withdraw", lambda: E.IssuerWithdraw(10**9)),
    E.KIND_GRANT: ("grant", lambda: E.Grant(OTHER.address, 10**12, 100, 6, 0)),
    E.KIND_CREDIT_ISSUE: ("credit issue", lambda: E.CreditIssue(OTHER.address, 5 * 10**8)),
    E.KIND_CREDIT_SPEND: ("credit spend", lambda: E.CreditSpend(OTHER.address, 10**8)),
}


def _cert_sample() -> T.WorkCert:
    """A work certificate's shape (docs/jobs.md): a header template and a tile proof (8 x 8 tile, k = 16)."""
    from pouw.job import JobCommitment
    from pouw.proof import TileProof

    hd = Header(
        REGTEST.version,
        REGTEST.chain_id,
        5,
        H32(0x41),
        G + 25,
        1 << 240,
        H32(0x42),
        H32(0x43),
        MINER,
        JobCommitment(H32(0xA1), H32(0xB1), 16, 512, 32),
        9,
    )
    proof = TileProof(
        H32(0x44), 1, 2, 8, 8, 16, H32(0x45), bytes(range(128)), bytes(range(128, 256)), (H32(1),), (H32(2), H32(3))
    )
    return T.WorkCert(hd.template, proof.encode())


# further payload shapes of a kind: (kind, name, payload)
EXTRA_PAYLOADS = [
    (
        T.KIND_JOB_RESULT,
        "job result with work certificate",
        lambda: T.JobResult(H32(0x11), H32(0xC1), H32(0xC1), _cert_sample()),
    ),
]


def tx_vector(tx: T.Transaction, name: str, seed: bytes | None) -> dict:
    try:
        T.check_tx(tx, REGTEST.chain_id, REGTEST.max_tx_bytes)
        verdict = "ok"
    except ValidationError as e:
        verdict = e.reason
    return {
        "name": name,
        "kind": tx.kind,
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "sender_seed": seed.hex() if seed else None,
        "sender_pubkey": tx.sender_pubkey.hex(),
        "sender_address": tx.sender.hex(),
        "fee": tx.fee,
        "payload": obj(tx._payload_obj()),
        "unsigned_encoded": encode(tx.unsigned_list()).hex(),
        "sighash": tx.sighash.hex(),
        "signature": tx.signature.hex(),
        "encoded": tx.encoded.hex(),
        "txid": tx.txid.hex(),
        "check_tx": verdict,
    }


def transactions() -> list[dict]:
    missing = sorted(set(T.KNOWN_KINDS) - set(SAMPLE_PAYLOADS))
    if missing:
        raise SystemExit(
            f"gen_vectors: no sample payload for transaction kind(s) {missing}: add them to SAMPLE_PAYLOADS"
        )
    out = []
    for kind in sorted(T.KNOWN_KINDS):
        name, make = SAMPLE_PAYLOADS[kind]
        tx = T.Transaction(kind, REGTEST.chain_id, 7, SENDER.pubkey, 2500, make()).signed(SENDER)
        out.append(tx_vector(tx, name, SENDER.seed))
    for kind, name, make in EXTRA_PAYLOADS:
        tx = T.Transaction(kind, REGTEST.chain_id, 7, SENDER.pubkey, 2500, make()).signed(SENDER)
        out.append(tx_vector(tx, name, SENDER.seed))
    return out


# --- chain: a short regtest chain, the header vector, roots, rejects --------------------------------------


def build_chain():
    b = ChainBuilder(REGTEST)
    from chain.keys import faucet_key

    fk = faucet_key()
    t1 = [T.make_transfer(fk, REGTEST.chain_id, i, SENDER.address, 10**9 + i, 100 + i) for i in range(3)]
    b1 = b.mine(b.genesis.hash, MINER, t1, G + 5)
    t2 = [
        T.make_transfer(SENDER, REGTEST.chain_id, 0, OTHER.address, 5000, 10),
        T.make_transfer(fk, REGTEST.chain_id, 3, OTHER.address, 777, 1),
    ]
    b2 = b.mine(b1.hash, MINER, t2, G + 11)
    return b, [b1, b2]


def roots(blocks) -> dict:
    leaves = [bytes([i]) * (i + 1) for i in range(5)]
    tx_roots = [
        {"leaves": [x.hex() for x in leaves[:n]], "root": merkle_root(leaves[:n]).hex()} for n in (0, 1, 2, 3, 5)
    ]
    tx_roots.append(
        {
            "leaves": [t.encoded.hex() for t in blocks[0].txs],
            "root": blocks[0].header.tx_root.hex(),
            "note": "block 1 of chain.json: leaves are the full transaction encodings",
        }
    )
    states = []
    for accts, minted, burned in (
        ([], 0, 0),
        ([(H32(1)[:20], 5, 0)], 5, 0),
        ([(H32(1)[:20], 5, 0), (H32(2)[:20], 0, 3), (H32(3)[:20], 2**63 - 1, 2**32)], 2**63 + 4, 0),
    ):
        sup = Supply.zero().updated(
            [(a, Account(), Account(bal, nonce)) for a, bal, nonce in accts], minted=minted, burned=burned
        )
        states.append(
            {
                "accounts": [[a.hex(), bal, nonce] for a, bal, nonce in accts],
                "minted": minted,
                "burned": burned,
                "lthash": sup.lthash.hex(),
                "root": sup.root.hex(),
            }
        )
    return {"tx_roots": tx_roots, "state_roots": states}


def rejects(b: ChainBuilder, blocks) -> dict:
    """Blocks that the node must reject with a given reason, after the prefix chain.json holds."""
    from chain.block import tx_root

    tip = blocks[-1]
    cfg = REGTEST
    good_txs = [T.make_transfer(SENDER, cfg.chain_id, 1, OTHER.address, 1000, 5)]
    good = b.mine(tip.hash, MINER, good_txs, G + 17)
    cases = []

    def case(name: str, reason: str, block: Block | bytes, pre: list[Block] = ()) -> None:
        raw = block if isinstance(block, bytes) else block.encoded
        cases.append({"name": name, "reason": reason, "pre": [p.encoded.hex() for p in pre], "block": raw.hex()})

    def with_txs(txs, **hdr) -> Block:
        return Block(b.remine(good.header, tx_root=tx_root(list(txs)), **hdr), tuple(txs))

    h = good.header
    case("not a block", "bad-blk-encoding", b"\x92\x01")
    case("trailing byte", "bad-blk-encoding", good.encoded + b"\x00")
    case("version 1", "bad-version", Block(replace(h, version=1), good.txs))
    case("other chain id", "bad-chainid", Block(replace(h, chain_id=1), good.txs))
    case("target above the pow limit", "bad-target-range", Block(replace(h, target=cfg.pow_limit + 1), good.txs))
    case("job too small", "bad-job-size", Block(replace(h, job=replace(h.job, m=8, n=8)), good.txs))
    case("job k below min_k", "bad-job-shape", Block(replace(h, job=replace(h.job, k=256)), good.txs))
    case("proof of another nonce", "bad-pow-template", Block(replace(h, nonce=h.nonce + 1), good.txs))
    case("proof bytes truncated", "bad-pow-encoding", Block(replace(h, proof=h.proof[:-1]), good.txs))
    case("body of another block", "bad-txnmrklroot", Block(h, tip.txs))
    dup = good_txs[0]
    case("duplicate transaction", "bad-txns-duplicate", with_txs([dup, dup]))
    bad_sig = replace(dup, signature=bytes(64))
    case("bad signature", "bad-txn-sig", with_txs([bad_sig]))
    case(
        "transaction for another chain",
        "bad-txn-chainid",
        with_txs([T.make_transfer(SENDER, 1, 1, OTHER.address, 1000, 5)]),
    )
    unknown = T.Transaction(99, cfg.chain_id, 1, SENDER.pubkey, 5, [b"x"]).signed(SENDER)
    case("unknown transaction kind", "bad-txn-kind", with_txs([unknown]))
    case("zero amount", "bad-txn-amount", with_txs([T.make_transfer(SENDER, cfg.chain_id, 1, OTHER.address, 0, 5)]))
    case("unknown parent", "prev-blk-not-found", Block(b.remine(h, prev_hash=H32(0xEE)), good.txs))
    case("wrong height", "bad-height", Block(b.remine(h, height=h.height + 1), good.txs))
    case("wrong target", "bad-diffbits", Block(b.remine(h, target=h.target - 1), good.txs))
    mtp = sorted([b.genesis.header.timestamp] + [x.header.timestamp for x in blocks])[1]
    case("timestamp at median time past", "time-too-old", Block(b.remine(h, timestamp=mtp), good.txs))
    case(
        "timestamp too far ahead",
        "time-too-new",
        Block(b.remine(h, timestamp=NOW + cfg.max_future_drift + 1), good.txs),
    )
    case(
        "replayed nonce", "bad-txn-nonce", with_txs([T.make_transfer(SENDER, cfg.chain_id, 0, OTHER.address, 1000, 5)])
    )
    case("overspend", "bad-txn-balance", with_txs([T.make_transfer(OTHER, cfg.chain_id, 0, SENDER.address, 10**15, 5)]))
    case("wrong state root", "bad-state-root", Block(b.remine(h, state_root=H32(0x55)), good.txs))
    bad_parent = Block(b.remine(h, state_root=H32(0x56)), good.txs)
    child = b.remine(
        replace(
            h,
            height=h.height + 1,
            prev_hash=bad_parent.hash,
            timestamp=h.timestamp + 5,
            tx_root=tx_root([]),
            target=h.target,
        )
    )
    case("child of an invalid block", "bad-prevblk", Block(child, ()), pre=[bad_parent])
    case("invalid block sent again", "duplicate-invalid", bad_parent, pre=[bad_parent])
    tx_cases = []
    for name, reason, tx in (
        ("unknown kind", "bad-txn-kind", unknown),
        ("other chain", "bad-txn-chainid", T.make_transfer(SENDER, 1, 0, OTHER.address, 1, 0)),
        ("fee above 2^63 - 1", "bad-txn-fee", T.make_transfer(SENDER, cfg.chain_id, 0, OTHER.address, 1, 2**63)),
        ("zero amount", "bad-txn-amount", T.make_transfer(SENDER, cfg.chain_id, 0, OTHER.address, 0, 0)),
        ("bad signature", "bad-txn-sig", bad_sig),
    ):
        tx_cases.append({"name": name, "reason": reason, "tx": tx.encoded.hex()})
    tx_cases.append(
        {"name": "not canonical (trailing byte)", "reason": "bad-txn-encoding", "tx": dup.encoded.hex() + "00"}
    )
    return {"now": NOW, "good": good.encoded.hex(), "blocks": cases, "txs": tx_cases}


# --- useful work: seeds, noise, ticket, proof -----------------------------------------------------------


def noise_and_proof(blk: Block) -> tuple[dict, dict]:
    from pouw.noise import NONCE_E, NONCE_F, derive_seeds, keystream, noise_cols, noise_map, noise_rows
    from pouw.proof import TileProof
    from pouw.verify import verify_proof

    params = REGTEST.pow.params()
    h = blk.header
    job = h.job
    s = derive_seeds(h.template, job)
    r, k = params.rank, job.k
    rows, cols = [0, 1, job.m - 1], [0, job.n - 1]
    noise = {
        "template": h.template.hex(),
        "job": {"h_a": job.h_a.hex(), "h_b": job.h_b.hex(), "m": job.m, "k": k, "n": job.n},
        "params": {"rank": r, "tile_h": params.tile_h, "tile_w": params.tile_w},
        "job_key": s.job_key.hex(),
        "seed_a": s.seed_a.hex(),
        "seed_b": s.seed_b.hex(),
        "map_a": [int(x) for x in noise_map(s.seed_a, k, r)],
        "map_b": [int(x) for x in noise_map(s.seed_b, k, r)],
        "keystream": [
            {
                "key": s.seed_a.hex(),
                "nonce": NONCE_E.hex(),
                "offset": off,
                "length": 40,
                "bytes": keystream(s.seed_a, NONCE_E, off, 40).hex(),
            }
            for off in (0, 100)
        ]
        + [
            {
                "key": s.seed_b.hex(),
                "nonce": NONCE_F.hex(),
                "offset": 64 * 3 + 5,
                "length": 40,
                "bytes": keystream(s.seed_b, NONCE_F, 64 * 3 + 5, 40).hex(),
            }
        ],
        "noise_rows": {"rows": rows, "E": noise_rows(s, rows, k, r).tolist()},
        "noise_cols": {"cols": cols, "F_T": noise_cols(s, cols, k, r).tolist()},
    }
    p = TileProof.decode(h.proof)
    ticket = verify_proof(h.template, job, p, h.target, params)
    head = 1 + 32 + 4 + 4 + 2 + 2 + 4 + 32  # proof header bytes (docs/protocol.md §6)

    def patch(off: int, new: bytes) -> dict:
        return {"offset": off, "bytes": new.hex()}

    a0, b0 = h.proof[head], h.proof[head + params.tile_h * k]
    tampered = [
        {"name": "truncated", "truncate": len(h.proof) - 1, "reason": "bad-pow-encoding"},
        {"name": "tile row out of range", "patch": patch(33, u32(job.m // params.tile_h)), "reason": "bad-pow-tile"},
        {"name": "other template", "template": (h.template + b"\x00").hex(), "reason": "bad-pow-template"},
        {
            "name": "harder target",
            "target": "%064x" % (int.from_bytes(p.ticket, "big") // params.tile_work(k)),
            "reason": "high-ticket",
        },
        {"name": "A entry out of range", "patch": patch(head, bytes([100])), "reason": "bad-pow-range"},
        {"name": "A entry changed", "patch": patch(head, bytes([(a0 + 1) % 64])), "reason": "bad-pow-merkle-a"},
        {
            "name": "B entry changed",
            "patch": patch(head + params.tile_h * k, bytes([(b0 + 1) % 64])),
            "reason": "bad-pow-merkle-b",
        },
        {"name": "ticket changed", "patch": patch(49, bytes(32)), "reason": "bad-pow-ticket"},
    ]
    proof = {
        "template": h.template.hex(),
        "job": noise["job"],
        "target": "%064x" % h.target,
        "params": noise["params"],
        "proof": h.proof.hex(),
        "decoded": {
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
        "verdict": "ok",
        "ticket": ticket.hex(),
        "tile_work": params.tile_work(k),
        "tampered": tampered,
        "share": share_vector(h.template, job, p, params),
    }
    return noise, proof


def share_vector(template: bytes, job, p, params) -> dict:
    """The same tile as a work share (docs/protocol.md §10): threshold ⌊c·2^256/N⌋ and verdicts."""
    from pouw.errors import PowError
    from pouw.share import SHARE_EXPECTED, job_tiles, share_threshold, verify_share

    def verdict(proof) -> str:
        try:
            verify_share(template, job, proof, params)
            return "ok"
        except PowError as e:
            return e.reason

    return {
        "expected": SHARE_EXPECTED,
        "tiles": job_tiles(job, params),
        "threshold": "%064x" % share_threshold(job, params),
        "verdict": verdict(p),
        "zero_ticket_verdict": verdict(replace(p, ticket=bytes(32))),
    }


def generate() -> dict[str, dict]:
    b, blocks = build_chain()
    noise, proof = noise_and_proof(blocks[0])
    return {
        "hashing.json": hashing(),
        "genesis.json": genesis(),
        "encoding.json": {
            "header": header_vector(blocks[0].header),
            "block_encoded": blocks[0].encoded.hex(),
            "transactions": transactions(),
        },
        "roots.json": roots(blocks),
        "chain.json": {
            "network": "regtest",
            "genesis": b.genesis.hash.hex(),
            "now": NOW,
            "blocks": [
                {
                    "hash": x.hash.hex(),
                    "encoded": x.encoded.hex(),
                    "state_root": x.header.state_root.hex(),
                    "target": "%064x" % x.header.target,
                }
                for x in blocks
            ],
        },
        "rejects.json": rejects(b, blocks),
        "noise.json": noise,
        "proof.json": proof,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = ap.parse_args()
    files = generate()
    differ = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, doc in files.items():
        text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                differ.append(name)
        else:
            path.write_text(text)
    if args.check and differ:
        print("gen_vectors: differ from a fresh run: " + ", ".join(differ))
        return 1
    print(("gen_vectors: up to date: " if args.check else "gen_vectors: wrote ") + ", ".join(sorted(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
