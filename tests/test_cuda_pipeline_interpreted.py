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

# the pipelined pass (POUW_CUDA_ASYNC=1): each attempt's inputs made during the one before (next_template), the
# winners found by the one-copy filter; every attempt equals the CPU backend's, with and without C
be.async_pass = True
calls = []
be.add_noise = lambda *args: (calls.append(1), CudaBackend.add_noise(be, *args))[1]
tpls = [b"tpl-%d" % i for i in range(4)]
keep_c = [True, True, False, False]   # attempt 2 finds inputs staged with C and drops them; attempt 3 uses its own
for i, t in enumerate(tpls):
    nxt = tpls[i + 1] if i + 1 < len(tpls) else None
    got = mine_job(t, prep.job, a, b, target, P, be, prepared=prep, max_proofs=3, next_template=nxt,
                   recover_c=keep_c[i])
    want = mine_job(t, prep.job, a, b, target, P, CpuBackend(native=False), prepared=prep, max_proofs=3,
                    recover_c=keep_c[i])
    assert (got.c is None) == (want.c is None) and (got.c is None or torch.equal(got.c, want.c)), ("C", i)
    assert np.array_equal(got.tickets, want.tickets) and got.winners == want.winners, ("tickets", i)
    assert [p.encode() for p in got.proofs] == [p.encode() for p in want.proofs], ("proofs", i)
    staged = prep._staged.get(str(be.device))
    assert (staged is not None and staged.template == nxt) == (nxt is not None), ("staged", i)
assert len(calls) == 5, calls   # A', B' made: 3 ahead (for attempts 1-3) + attempt 0 and the dropped attempt 2
print("ok", got.winners)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_cuda_pipeline_under_interpreter_matches_cpu() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    assert proc.stdout.startswith("ok ")


_FILLER_CHILD = r"""
import contextlib
from dataclasses import replace
import torch
torch.cuda.device = lambda dev: contextlib.nullcontext()   # CudaBackend wraps calls in it; a no-op on the CPU
from chain.config import load_config
from chain.keys import PrivateKey
from chain.mining import build_template
from chain.synthetic import ChainBuilder
from kernels.cpu import CpuBackend
from kernels.cuda import CudaBackend
from kernels.triton_support import interpreting
from node.engine import FillerMiner
assert interpreting()

CFG = load_config("regtest")
P = CFG.pow.params()
builder = ChainBuilder(CFG)
pinfo = builder.parent_info(builder.genesis.hash)
st = builder.states[builder.genesis.hash]
miner = PrivateKey.from_phrase(b"async filler").address
tpl = build_template(CFG, pinfo, st.get, st.supply, miner, (), pinfo.timestamp + CFG.target_block_time,
                     select=False, jobs=st)
m, k, n = CFG.pow.filler_shape
tiles = (m // P.tile_h) * (n // P.tile_w)
h1 = replace(tpl.header, target=(1 << 256) // (2 * P.tile_work(k) * tiles))   # about 1 in 2 attempts wins
h2 = replace(h1, timestamp=h1.timestamp + 1)   # a refreshed template: same filler operands, another template

cpu = CpuBackend(native=False)
plain = FillerMiner(CFG, P)
def want(h, nonce):
    found = plain.attempt(cpu, h, nonce, next_nonce=nonce + 1)   # the CPU backend has no async_pass: no staging
    assert not plain._prep._staged
    return found.encoded if found else None

be = object.__new__(CudaBackend)
be.device = torch.device("cpu")
be.kernel = "triton"
be.async_pass = True
made = []
be.add_noise = lambda *args: (made.append(1), CudaBackend.add_noise(be, *args))[1]
fm = FillerMiner(CFG, P)
dev = str(be.device)
n0 = (1 << 64) - 2   # the staged nonce wraps within u64 like the attempts
got = []
for i in range(4):
    nonce = (n0 + i) % (1 << 64)
    found = fm.attempt(be, h1, nonce, next_nonce=(nonce + 1) % (1 << 64))
    got.append(found.encoded if found else None)
    assert got[-1] == want(h1, nonce), ("header", i)
    staged = fm._prep._staged[dev]   # the next nonce's inputs, made during this attempt
    assert staged.template == replace(h1, job=fm._prep.job, nonce=(nonce + 1) % (1 << 64), proof=b"").template
assert len(made) == 5, made   # attempt 0's own A', B' and one staged set per attempt
assert any(got) and not all(got), got   # some nonces win, some lose: proofs and their absence both compared
# the template changes (a new tip or refresh): the inputs staged under h1 are dropped, never mined under h2
nonce = (n0 + 4) % (1 << 64)
found = fm.attempt(be, h2, nonce, next_nonce=nonce + 1)
assert (found.encoded if found else None) == want(h2, nonce), "after the template change"
assert len(made) == 7, made   # its own inputs (the staged ones were h1's) + the next nonce's
assert fm._prep._staged[dev].template == replace(h2, job=fm._prep.job, nonce=nonce + 1, proof=b"").template
# run(): the batches of the node's loop stage across attempts and batches and find what the plain path finds
first_plain = next(i for i in range(64) if want(h2, nonce + 1 + i))
found, nxt = fm.run(be, h2, nonce + 1, budget_s=600.0)
assert found.encoded == want(h2, nonce + 1 + first_plain) and nxt == nonce + 2 + first_plain
assert fm.builds == 1   # one operand set throughout
# without async_pass nothing is staged
be.async_pass = False
fm._prep._staged.clear()
found = fm.attempt(be, h2, nxt, next_nonce=nxt + 1)
assert (found.encoded if found else None) == want(h2, nxt) and not fm._prep._staged
print("ok", sum(1 for g in got if g))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_filler_loop_pipelined_under_interpreter_matches_plain() -> None:
    """The node's filler loop (node.engine.FillerMiner, chain.mining.mine_filler_once) on a pipelined CUDA backend
    (async_pass) under TRITON_INTERPRET=1 at the regtest filler shape: every attempt stages the next nonce's inputs,
    the headers and proofs over several nonces (winning and losing) are byte-identical to the plain CPU path's, a
    template change drops the staged attempt (its inputs made afresh, results equal), and run() finds the same
    winner; without async_pass nothing is staged."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _FILLER_CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    assert proc.stdout.startswith("ok ")


def _brute_winners(flat: list[bytes], thr: int) -> list[tuple[int, bytes]]:
    return sorted(((i, x) for i, x in enumerate(flat) if int.from_bytes(x, "big") < thr), key=lambda p: (p[1], p[0]))


def test_device_winner_filter_matches_brute_force() -> None:
    """The CUDA pass's winner filter (`pouw.ticket._winners_device`: exact compare and top-`limit` on the device,
    one fixed-size copy to the host), run here on CPU tensors with the same torch ops: the winner count and the best
    `limit` tiles (by ticket, then index) equal brute force for thresholds at, below and above tickets, equal
    tickets, equal 7-byte prefixes with other tails, no winner and every tile winning."""
    import torch

    from pouw.ticket import _winners_device, winning_tiles

    g = torch.Generator().manual_seed(12)
    t = torch.randint(0, 256, (9, 11, 32), generator=g, dtype=torch.uint8)
    t[0, 1, :10] = 0  # very low tickets, two of them equal
    t[3, 3] = t[0, 1]
    t[2, 5, :7] = 0
    t[2, 5, 7:] = 255  # same 7-byte prefix as a smaller threshold, but larger
    t[4, 4, :7] = t[5, 5, :7] = 3  # a shared prefix with different tails
    t[4, 4, 7:] = 9
    t[5, 5, 7:] = 8
    flat_t = t.reshape(-1, 32)
    flat = [bytes(row.tolist()) for row in flat_t]
    thresholds = [
        1,
        int.from_bytes(flat[1], "big"),
        int.from_bytes(flat[1], "big") + 1,
        (1 << 200) - 1,
        1 << 200,
        1 << 250,
        1 << 254,
        (1 << 256) - 1,
        1 << 256,
        1 << 300,
    ]
    thresholds += [int.from_bytes(flat[i], "big") + d for i in (5, 17, 30, 4 * 11 + 4, 5 * 11 + 5) for d in (-1, 0, 1)]
    for thr in thresholds:
        want = _brute_winners(flat, thr)
        for limit in (0, 1, 2, 3, 8, 99, 200):
            got = _winners_device(flat_t, thr, limit)
            if got is None:  # only where a winner left out shares the largest prefix taken
                cut = want[limit - 1][1][:7]
                assert limit < len(want) and want[limit][1][:7] == cut, (thr, limit)
                continue
            assert got == (len(want), want[:limit]), (thr, limit)
            assert winning_tiles(t, thr, limit) == got
    # ties across the cut: many winners with one prefix; the answer is exact or declined, never wrong
    same = torch.zeros((40, 32), dtype=torch.uint8)
    same[:, 7:] = torch.randint(0, 256, (40, 25), generator=g, dtype=torch.uint8)
    rows = [bytes(r.tolist()) for r in same]
    for limit in (1, 5, 39, 40, 41):
        got = _winners_device(same, 1 << 250, limit)
        want = _brute_winners(rows, 1 << 250)
        assert got is None if limit < 40 else got == (40, want[:limit]), limit


@pytest.mark.gpu
@pytest.mark.parametrize("pipelined", [False, True])
def test_cuda_pass_host_round_trips(pipelined: bool) -> None:
    """On a GPU: how often a mining pass (stage_sync=False, as miners run it) makes the host wait for the device,
    counted by torch's sync debug mode: at most 3 (the candidate winner search: nonzero and two copies) by default,
    at most 1 (the one-copy winner filter) with the pipelined pass, whose next attempt's inputs are made on a
    second stream meanwhile. Every attempt bit-identical to the CPU backend's."""
    import warnings

    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from kernels.cpu import CpuBackend
    from kernels.cuda import CudaBackend
    from pouw.miner import filler_operands, mine_job, prepare_job
    from pouw.params import PowParams

    P = PowParams()
    m = k = n = 2048
    a, b = filler_operands(b"sync", (m, k, n))
    prep = prepare_job(a, b, P)
    be = CudaBackend()
    be.async_pass = pipelined
    target = (1 << 256) // (P.tile_work(k) * 64)
    tpls = [b"warm", b"tpl-0", b"tpl-1", b"tpl-2"]
    for i, t in enumerate(tpls):
        nxt = tpls[i + 1] if i + 1 < len(tpls) else None
        if i == 0:  # compile, upload A and B
            mine_job(t, prep.job, a, b, target, P, be, prepared=prep, stage_sync=False, next_template=nxt)
            torch.cuda.synchronize()
            continue
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = mine_job(t, prep.job, a, b, target, P, be, prepared=prep, stage_sync=False, next_template=nxt)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
        want = mine_job(t, prep.job, a, b, target, P, CpuBackend(), prepared=prep)
        assert torch.equal(got.c.cpu(), want.c) and got.winners == want.winners > 0, t
        assert [p.encode() for p in got.proofs] == [p.encode() for p in want.proofs], t
        assert len(syncs) <= (1 if pipelined else 3), syncs
