"""The CUDA backend's whole mining pass (device noise factors, Triton add_noise, fused GEMM + transcript with the
recovery epilogue, Triton tickets, device-side winner search) run on the CPU under TRITON_INTERPRET=1, against
the CPU backend: same C, tickets and proofs. This checks the GPU pipeline's logic in CI, where no GPU is.

The child process sets TRITON_INTERPRET=1 before importing triton, builds a CudaBackend on the CPU device (its
methods only need `torch.cuda.device` to be a no-op there) and mines a small job.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import contextlib, sys
import numpy as np
import torch
torch.cuda.device = lambda dev: contextlib.nullcontext()   # CudaBackend wraps calls in it; a no-op on the CPU
from kernels.cpu import CpuBackend
from kernels.cuda import CudaBackend
from kernels.triton_support import interpreting
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams
assert interpreting()

be = object.__new__(CudaBackend)
be.device = torch.device("cpu")
P = PowParams(rank=32, tile_h=16, tile_w=16)
m, k, n = 48, 32 * 16, 32
a, b = filler_operands(b"interp", (m, k, n))
prep = prepare_job(a, b, P)
target = (1 << 256) // (P.tile_work(k) * 2)     # about half the tiles win
got = mine_job(b"tpl", prep.job, a, b, target, P, be, prepared=prep, max_proofs=3)
want = mine_job(b"tpl", prep.job, a, b, target, P, CpuBackend(native=False), prepared=prep, max_proofs=3)
assert torch.equal(got.c, want.c), "C differs"
assert torch.equal(got.c, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)), "C is not A.B"
assert np.array_equal(got.tickets, want.tickets), "tickets differ"
assert got.winners == want.winners and got.winners > 0
assert [p.encode() for p in got.proofs] == [p.encode() for p in want.proofs], "proofs differ"
print("ok", got.winners)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_cuda_pipeline_under_interpreter_matches_cpu() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    assert proc.stdout.startswith("ok ")
