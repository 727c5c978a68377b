"""A validator needs no PyTorch: the whole validation path imports and runs with torch made unimportable.

The parent (with torch) mines: a job's block proof with the miner, a regtest chain of real blocks, a wrong result
and its fraud proof. A child process, where a meta-path finder makes every `import torch` raise ImportError,
imports the verification side of `pouw` and chain's validation path, verifies the proof (and rejects a tampered
one), imports the blocks into a fresh ChainState, and checks the result with Freivalds and the fraud proof.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from triton_child import ROOT, child_env

from chain.config import load_config
from chain.synthetic import ChainBuilder
from pouw.commit import commit_job, commit_result
from pouw.freivalds import build_fraud_proof, find_wrong_entry, freivalds
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams

VALIDATION_MODULES = [
    "pouw.hashing",
    "pouw.merkle",
    "pouw.proof",
    "pouw.noise",
    "pouw.transcript",
    "pouw.ticket",
    "pouw.verify",
    "pouw.freivalds",
    "pouw.commit",
    "pouw.job",
    "pouw.params",
    "chain.block",
    "chain.tx",
    "chain.jobs",
    "chain.state",
    "chain.validation",
    "chain.chainstate",
    "chain.maintenance",
    "chain.store",
]

_CHILD = r"""
import importlib, importlib.abc, json, sys, tempfile

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")

sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
    raise SystemExit("the blocker let torch through")
except ImportError:
    pass

def unhex(x):
    return bytes.fromhex(x[1:]) if isinstance(x, str) else [unhex(p) for p in x] if isinstance(x, list) else x

data = json.load(open(sys.argv[1]))
for name in data["modules"]:
    importlib.import_module(name)

import dataclasses
import numpy as np
from chain.chainstate import ChainState
from chain.config import load_config
from pouw.errors import PowError
from pouw.freivalds import FraudProof, freivalds, verify_fraud_proof
from pouw.job import JobCommitment
from pouw.params import PowParams
from pouw.proof import TileProof
from pouw.verify import verify_proof

out = {}
job = JobCommitment(*unhex(data["job"]))
params = PowParams(**data["params"])
template = bytes.fromhex(data["template"])
proof = TileProof.decode(bytes.fromhex(data["proof"]))
out["ticket"] = verify_proof(template, job, proof, data["target"], params).hex()
flipped = bytearray(proof.b_cols)
flipped[7] ^= 1
try:
    verify_proof(template, job, dataclasses.replace(proof, b_cols=bytes(flipped)), data["target"], params)
    out["tampered"] = "accepted"
except PowError as e:
    out["tampered"] = e.reason

cfg = load_config("regtest")
with tempfile.TemporaryDirectory() as tmp:
    with ChainState.open(tmp, cfg, clock=lambda: data["now"]) as cs:
        out["statuses"] = [cs.submit_block(bytes.fromhex(b)).status for b in data["blocks"]]
        out["height"] = cs.height
        out["tip"] = cs.tip.hash.hex()

a, b, c = (np.array(data[x], dtype=dt) for x, dt in (("a", np.int8), ("b", np.int8), ("c", np.int32)))
h_c = bytes.fromhex(data["h_c"])
fjob = JobCommitment(*unhex(data["fjob"]))
out["freivalds_bad_rows"] = freivalds(a, b, c, fjob, h_c)
verify_fraud_proof(fjob, h_c, FraudProof.from_list(unhex(data["fraud"])))
out["fraud"] = "proven"
out["torch_loaded"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps(out))
"""


def _hexify(x):
    """Bytes as 'h'-prefixed hex, lists element-wise, ints unchanged (the child's `unhex` reverses it)."""
    return "h" + x.hex() if isinstance(x, bytes) else [_hexify(p) for p in x] if isinstance(x, (list, tuple)) else x


def test_validation_path_runs_without_torch(tmp_path):
    # a real proof of a filler job, made by the miner (torch) in this process
    params = PowParams(rank=32, tile_h=8, tile_w=8)
    a, b = filler_operands(b"no-torch", (32, 32 * 16, 24))
    prep = prepare_job(a, b, params)
    target = (1 << 256) // params.tile_work(prep.job.k)  # every tile wins
    res = mine_job(b"no-torch template", prep.job, a, b, target, params, prepared=prep, recover_c=False)
    proof = res.proofs[0]

    # a regtest chain: every header carries a filler proof the child re-verifies on import
    cfg = load_config("regtest")
    builder = ChainBuilder(cfg)
    blocks = builder.chain(builder.genesis.hash, 3, b"\x07" * 20)

    # a wrong result of a small client job and the fraud proof against it
    fa, fb = filler_operands(b"fraud", (8, 16, 4))
    fjob = commit_job(fa, fb)
    c = (fa.to(torch.int64) @ fb.to(torch.int64)).to(torch.int32)
    c[3, 2] += 1
    h_c = commit_result(c)
    i, j = find_wrong_entry(fa, fb, c, freivalds(fa, fb, c, fjob, h_c))
    fraud = build_fraud_proof(fa, fb, c, i, j)

    data = {
        "modules": VALIDATION_MODULES,
        "job": _hexify(prep.job.to_list()),
        "params": params.to_dict(),
        "template": b"no-torch template".hex(),
        "proof": proof.encode().hex(),
        "target": target,
        "now": cfg.genesis_timestamp + 10**6,
        "blocks": [blk.encoded.hex() for blk in blocks],
        "a": fa.tolist(),
        "b": fb.tolist(),
        "c": c.tolist(),
        "h_c": h_c.hex(),
        "fjob": _hexify(fjob.to_list()),
        "fraud": _hexify(fraud.to_list()),
    }
    (tmp_path / "in.json").write_text(json.dumps(data))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "in.json")],
        env=child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ticket"] == proof.ticket.hex()
    assert out["tampered"] == "bad-pow-merkle-b"
    assert out["statuses"] == ["active"] * 3
    assert out["height"] == 3 and out["tip"] == blocks[-1].hash.hex()
    assert out["freivalds_bad_rows"] == [3]
    assert out["fraud"] == "proven" and (i, j) == (3, 2)
    assert out["torch_loaded"] is False
