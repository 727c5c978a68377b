"""Which CPU GEMM runs, and the portable path: kernels.cpu and the kernel choice of kernels.native_loader.

- The native build runs every fused kernel this CPU's flags (/proc/cpuinfo) say it can: a build that silently
  lost one (a compile error, a bad run-time check) fails here instead of skipping the kernel's tests.
- $POUW_NATIVE=avx2|vnni|off forces the kernel (checked in subprocesses, the choice is made at import).
- The portable exact GEMMs (torch._int_mm, fp32 in k-chunks of at most 1024) and the transcript on them are
  bit-identical to the reference on random shapes, tails and -128 included.
- A mining pass on each fused kernel the CPU runs equals the pure torch pass.
- The portable path's own stages (noise by gathers, the recovery fused into its row blocks, batched hashlib
  tickets) equal the generic paths and the references, on both portable GEMMs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels import native_loader, reference
from kernels.base import Capabilities, ShapeError, tile_tickets_reference
from kernels.cpu import (
    FP32_EXACT_K,
    CpuBackend,
    add_noise_torch,
    exact_mm,
    fp32_mm,
    int_mm,
    noisy_matmul_torch,
    portable_gemm,
    tile_tickets_hashlib,
)

ROOT = Path(__file__).resolve().parents[1]


def _run_py(code: str, env: dict) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=300
    )


def _exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)


def test_build_runs_every_kernel_the_cpu_has():
    """No silent fallback: where a C compiler exists, the library loads and runs each kernel the CPU flags name."""
    if native_loader.requested_kernel() == "off":
        pytest.skip("POUW_NATIVE=off: no native library asked for")
    if native_loader._compiler() is None:
        pytest.skip("no C compiler on this machine: the portable path is all there is")
    assert native_loader.available(), native_loader.unavailable_reason()
    wanted = native_loader.cpu_kernels()
    assert set(wanted) <= set(native_loader.supported_kernels()), (wanted, native_loader.supported_kernels())
    for kern in wanted:
        assert native_loader.kernel_path(64, 256, 64, 64, 16, 16, kernel=kern) == kern
    if native_loader.requested_kernel() == "auto":
        assert native_loader.gemm_kernel() == (wanted[0] if wanted else None)
        be = CpuBackend()
        assert be.kernel_path == (wanted[0] if wanted else f"portable:{portable_gemm()}")


def test_env_forces_the_kernel(tmp_path):
    code = (
        "from kernels import native_loader as n; from kernels.cpu import CpuBackend\n"
        "be = CpuBackend()\n"
        "sub = be.caps.sub_correction\n"
        "print(n.requested_kernel(), n.gemm_kernel(), be.kernel_path, sub is not None and sub == n.sub_correction)"
    )
    cpu = native_loader.cpu_kernels()
    for env, want_kernel in (
        ("avx2", "avx2" if "avx2" in cpu else None),
        ("vnni", "vnni" if "vnni" in cpu else None),
        ("neon", "neon" if "neon" in cpu else None),
        ("off", None),
    ):
        res = _run_py(code, {"POUW_NATIVE": env, "POUW_PORTABLE_GEMM": "fp32"})
        assert res.returncode == 0, res.stderr
        req, kern, path, has_sub = res.stdout.split()
        assert req == env and kern == str(want_kernel)
        assert path == (want_kernel or "portable:fp32")
        if env == "avx2":
            assert has_sub == "False"  # the AVX2 stand-in uses no AVX512-VNNI recovery either
    res = _run_py("from kernels import native_loader as n; print(n.available())", {"POUW_NATIVE": "off"})
    assert res.stdout.strip() == "False"


@pytest.mark.parametrize("method", ["int_mm", "fp32"])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (5, 7, 3), (33, 1025, 17), (64, 3000, 40), (20, 2048, 24)])
def test_portable_exact_gemms(method, m, k, n):
    """Both portable GEMMs are exact for all int8 values, -128 and k past one fp32 chunk included."""
    gen = torch.Generator().manual_seed(m * 7 + k + n)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    a[0, :] = -128
    b[:, 0] = -128
    assert torch.equal(exact_mm(a, b, method), _exact(a, b))


def test_fp32_chunks_at_the_exactness_edge():
    """|sum| = 128 * 128 * 1024 = 2^24 in every chunk, 4 chunks: the largest value fp32 must hold exactly."""
    a = torch.full((4, 4 * FP32_EXACT_K), -128, dtype=torch.int8)
    b = torch.full((4 * FP32_EXACT_K, 8), -128, dtype=torch.int8)
    assert int(fp32_mm(a, b)[0, 0]) == 128 * 128 * 4 * FP32_EXACT_K
    assert torch.equal(fp32_mm(a, b), int_mm(a, b))


@pytest.mark.parametrize("method", ["int_mm", "fp32"])
@pytest.mark.parametrize(
    "m,k,n,r,h,w",
    [
        (16, 576, 16, 32, 16, 16),
        (12, 96, 20, 32, 4, 4),
        (8, 36, 8, 12, 2, 8),
        (6, 40, 10, 5, 3, 5),
        (8, 2560, 8, 2560, 4, 4),  # one chunk wider than FP32_EXACT_K: summed in int32 pieces
        (10, 96, 12, 2, 5, 6),  # 48 chunks: three message rounds; odd tile height, even width of 3 word pairs
        (4, 140, 6, 4, 1, 1),  # 35 chunks (a partial last round), 1 x 1 tiles
        (20, 64, 24, 64, 4, 8),  # one chunk; more than 16 rows per block: torch._int_mm itself
    ],
)
def test_portable_transcript_matches_reference(method, m, k, n, r, h, w):
    gen = torch.Generator().manual_seed(m + k + r)
    a = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (k, n), generator=gen, dtype=torch.int8)
    if k > 1024:  # the pure-Python reference is slow: a model with int64 chunk products instead
        c_ref = _exact(a, b)
        s = c_ref.numpy().view(np.uint32).reshape(m // h, h, n // w, w)
        x = np.bitwise_xor.reduce(np.bitwise_xor.reduce(s, axis=3), axis=1)
        m_ref = torch.zeros((m // h, n // w, 16), dtype=torch.int32)
        m_ref[:, :, 0] = torch.from_numpy(x.view(np.int32))
    else:
        c_ref, m_ref = reference.noisy_matmul(a, b, r, h, w)
    for block_rows, threads in ((4, 1), (4, 3), (256, None)):  # row blocks on 1 or 3 threads at a time
        c, msgs = noisy_matmul_torch(a, b, r, h, w, block_rows=block_rows, method=method, threads=threads)
        assert torch.equal(c, c_ref) and torch.equal(msgs, m_ref)


def test_portable_choice_is_measured_or_forced(monkeypatch):
    assert portable_gemm() in ("int_mm", "fp32")
    monkeypatch.setenv("POUW_PORTABLE_GEMM", "fp32")
    assert portable_gemm() == "fp32" and CpuBackend(native=False).kernel_path == "portable:fp32"
    monkeypatch.setenv("POUW_PORTABLE_GEMM", "int_mm")
    assert portable_gemm() == "int_mm"


@pytest.mark.parametrize("kernel", native_loader.cpu_kernels() + [None])
def test_mine_job_on_each_kernel_matches_torch(kernel):
    """A whole mining pass (noise, GEMM + transcript, tickets, recovery) on each fused kernel this CPU has, and
    on the portable path, equals the pure torch pass."""
    from pouw.miner import filler_operands, mine_job, prepare_job
    from pouw.params import PowParams

    if kernel and native_loader.requested_kernel() == "off":
        pytest.skip("POUW_NATIVE=off: no native kernel asked for")
    params = PowParams(rank=32, tile_h=8, tile_w=8)
    a, b = filler_operands(b"cpu-kernels", (64, 512, 48))
    prep = prepare_job(a, b, params)
    template = b"tpl-cpu-kernels" + prep.job.h_a + prep.job.h_b
    target = 1 << 252
    be = CpuBackend(kernel=kernel) if kernel else CpuBackend(native=False)
    assert be.kernel_path.startswith(kernel or "portable")
    got = mine_job(template, prep.job, a, b, target, params, be, prepared=prep)
    want = mine_job(template, prep.job, a, b, target, params, CpuBackend(native=False), prepared=prep)
    assert torch.equal(got.c, _exact(a, b)) and torch.equal(got.c, want.c)
    assert np.array_equal(np.asarray(got.tickets), np.asarray(want.tickets))
    assert [p.encode() for p in got.proofs] == [p.encode() for p in want.proofs]
    # the backend's plain GEMM (the benchmark's engine baseline) and mm are exact too
    assert torch.equal(be.plain_mm(a, b), _exact(a, b))
    assert torch.equal(be.mm(a[:, :100], b[:100]), _exact(a[:, :100], b[:100]))


def _sub_reference(c: torch.Tensor, pairs) -> torch.Tensor:
    total = c.to(torch.int64)
    for i, (u, v) in enumerate(pairs):
        total -= (128**i) * (u.to(torch.int64) @ v.to(torch.int64))
    total &= 0xFFFFFFFF
    return torch.where(total >= 2**31, total - 2**32, total).to(torch.int32)


@pytest.mark.skipif(
    "avx2" not in native_loader.cpu_kernels() or native_loader.requested_kernel() == "off",
    reason="CPU without AVX2, or POUW_NATIVE=off",
)
@pytest.mark.parametrize(
    "m,n,widths,lo",
    [
        (64, 48, [128, 128, 128], -64),  # the recovery's shape: digits in [-64, 63], width 2r
        (12, 20, [8, 4, 6], -64),  # unequal widths (zero-padded), n not a multiple of 8
        (8, 16, [64] * 9, -128),  # -128 (the fp32 loop) and more pairs than matter mod 2^32
        (4, 3, [1100], -64),  # one digit wider than 1024 (the int loop only)
    ],
)
def test_avx2_sub_correction(m, n, widths, lo):
    gen = torch.Generator().manual_seed(m + n + len(widths))
    c = torch.randint(-(2**31), 2**31 - 1, (m, n), generator=gen, dtype=torch.int32)
    pairs = [
        (
            torch.randint(lo, 64, (m, w), generator=gen, dtype=torch.int8),
            torch.randint(lo, 64, (w, n), generator=gen, dtype=torch.int8),
        )
        for w in widths
    ]
    want = _sub_reference(c, pairs)
    got = native_loader.avx2_sub_correction(c.clone(), pairs)
    assert torch.equal(got, want)
    be = CpuBackend(kernel="avx2")
    assert torch.equal(be.caps.sub_correction(c.clone(), pairs), want)
    # m % 4 != 0: the backend's Horner fallback on its GEMM
    assert torch.equal(
        be.caps.sub_correction(c[: m - 1].clone(), [(u[: m - 1], v) for u, v in pairs]),
        _sub_reference(c[: m - 1], [(u[: m - 1], v) for u, v in pairs]),
    )
    with pytest.raises(ShapeError):
        native_loader.avx2_sub_correction(c[: m - 1].clone(), [(u[: m - 1], v) for u, v in pairs])


def test_bench_counts_only_exact_baselines():
    """The mining benchmark's baseline filter: a GEMM that is off on full-range int8 operands is named, exact
    ones are not (oneDNN's AVX2 int8 GEMM saturates vpmaddubsw on large pair sums: such a GEMM is no baseline)."""
    from benchmarks.bench_mining import inexact_gemms

    def saturating(a, b):  # what a u8 x s8 pair-sum clamp to int16 does to a + 128 against b
        au = (a.to(torch.int32) + 128).reshape(a.shape[0], -1, 2)
        bb = b.to(torch.int32).reshape(-1, 2, b.shape[1])
        pairs = torch.einsum("mkp,kpn->mkn", au, bb).clamp(-32768, 32767)
        return (pairs.sum(1) - 128 * b.to(torch.int32).sum(0)).to(torch.int32)

    gemms = {"fp32": fp32_mm, "int_mm_or_exact": exact_mm, "saturating": saturating}
    assert inexact_gemms(gemms, 64) == ["saturating"]


@pytest.mark.skipif(
    "avx2" not in native_loader.cpu_kernels() or native_loader.requested_kernel() == "off",
    reason="CPU without AVX2, or POUW_NATIVE=off",
)
@pytest.mark.parametrize("m,k,n,r", [(64, 512, 48, 32), (20, 256, 70, 64), (8, 1024, 200, 16)])
def test_avx2_correction_operands_match_generic(m, k, n, r):
    """The AVX2 backend's correction operands (A·Q and P·B' as column and row sums) equal pouw.recover's, and
    the sums alone equal A·Q and P·B'."""
    from pouw.noise import noise_map
    from pouw.noise_torch import Noise
    from pouw.recover import correction_operands

    gen = torch.Generator().manual_seed(m + k + n + r)
    a = torch.randint(-64, 64, (m, k), generator=gen, dtype=torch.int8)
    b2 = torch.randint(-96, 96, (k, n), generator=gen, dtype=torch.int8)
    e_l = torch.randint(-32, 32, (m, r), generator=gen, dtype=torch.int8)
    f_r = torch.randint(-32, 32, (r, n), generator=gen, dtype=torch.int8)
    nz = Noise(e_l, f_r, (noise_map(b"sa%d" % k, k, r), noise_map(b"sb%d" % k, k, r)))
    want = correction_operands(a, b2, nz, _exact)
    be = CpuBackend(kernel="avx2")
    got = correction_operands(a, b2, nz, be.mm, be.caps.correction_operands)
    assert len(got) == len(want) and all(
        torch.equal(u, wu) and torch.equal(v, wv) for (u, v), (wu, wv) in zip(got, want)
    )
    assert torch.equal(native_loader.avx2_scatter_rows(b2, nz.maps[0], r), _exact(nz.p_mat, b2))
    assert torch.equal(native_loader.avx2_gather_cols(a, nz.maps[1], r), _exact(a, nz.q_mat))
    for fn, x in ((native_loader.avx2_scatter_rows, b2), (native_loader.avx2_gather_cols, a)):
        with pytest.raises(ShapeError):
            fn(x, np.full(k, r), r)  # an index outside [0, r)


@pytest.mark.skipif(
    "avx2" not in native_loader.cpu_kernels() or native_loader.requested_kernel() == "off",
    reason="CPU without AVX2, or POUW_NATIVE=off",
)
@pytest.mark.parametrize("m,n,r,hi", [(64, 48, 64, 2048), (12, 20, 4, 30000), (8, 70, 16, 200000)])
def test_avx2_recovery_int16_merge(m, n, r, hi):
    """Pairs shaped like the recovery's (U_i = [X_i | E], V_i = [F ; Y_i]) merge into one int16 GEMM where the
    whole X and Y fit int16 (else the digit GEMM runs); either way c -= sum_i 128^i U_i V_i exactly."""
    from kernels.cpu import digits128, merge_digit_pairs

    gen = torch.Generator().manual_seed(m + n + r)
    x = torch.randint(-hi, hi, (m, r), generator=gen, dtype=torch.int32)
    y = torch.randint(-hi, hi, (r, n), generator=gen, dtype=torch.int32)
    e = torch.randint(-32, 32, (m, r), generator=gen, dtype=torch.int8)
    f = torch.randint(-32, 32, (r, n), generator=gen, dtype=torch.int8)
    dx, dy = digits128(x), digits128(y)
    d = max(len(dx), len(dy))
    dx += [torch.zeros_like(dx[0])] * (d - len(dx))
    dy += [torch.zeros_like(dy[0])] * (d - len(dy))
    pairs = [(torch.cat([dx[i], e], 1), torch.cat([f, dy[i]], 0)) for i in range(d)]
    merged = merge_digit_pairs(pairs)
    assert (merged is not None) == (hi <= 32767)
    c = torch.randint(-(2**31), 2**31 - 1, (m, n), generator=gen, dtype=torch.int32)
    want = _sub_reference(c, pairs)
    assert torch.equal(CpuBackend(kernel="avx2").caps.sub_correction(c.clone(), pairs), want)
    if merged is not None:
        assert torch.equal(native_loader.avx2_sub_i16(c.clone(), *merged), want)
    # pairs of another shape (E differing between digits) are not merged
    pairs[0] = (torch.cat([dx[0], e + 1], 1), pairs[0][1])
    assert merge_digit_pairs(pairs) is None or d == 1


class _Generic:
    """The portable backend with no capabilities declared: mine_job's generic noise and recovery paths."""

    name = "cpu"

    def __init__(self) -> None:
        inner = CpuBackend(native=False)
        self.device, self.kernel_path = inner.device, inner.kernel_path
        self.caps = Capabilities()
        self.mm, self.noisy_mm, self.tile_tickets = inner.mm, inner.noisy_mm, inner.tile_tickets


@pytest.mark.parametrize("method", ["int_mm", "fp32"])
@pytest.mark.parametrize(
    "shape,params,block_rows",
    [
        ((64, 512, 48), (32, 8, 8), 256),
        ((72, 32 * 35, 40), (32, 8, 8), 16),  # 35 chunks, 5 row blocks (the last one short), 2 digits per side
        ((36, 8 * 20, 21), (8, 4, 1), 12),  # tiles one column wide, blocks of 12 rows
    ],
)
def test_portable_stages_match_the_generic_paths(monkeypatch, method, shape, params, block_rows):
    """A mining pass on the portable backend's own stages (add_noise by gathers, the recovery fused into its
    row blocks, out= buffers when C is not kept) gives the C, tickets and proofs of the generic paths."""
    from pouw.miner import filler_operands, mine_job, prepare_job
    from pouw.params import PowParams

    monkeypatch.setenv("POUW_PORTABLE_GEMM", method)
    pp = PowParams(rank=params[0], tile_h=params[1], tile_w=params[2])
    a, b = filler_operands(b"portable-stages", shape)
    prep = prepare_job(a, b, pp)
    template = b"tpl-portable" + prep.job.h_a + prep.job.h_b
    be = CpuBackend(native=False, block_rows=block_rows)
    assert be.caps.add_noise is not None and be.caps.noisy_mm_recover is not None and be.caps.accepts_out
    want = mine_job(template, prep.job, a, b, 1 << 252, pp, _Generic(), prepared=prep)
    got = mine_job(template, prep.job, a, b, 1 << 252, pp, be, prepared=prep)
    assert torch.equal(got.c, _exact(a, b)) and torch.equal(got.c, want.c)
    assert np.array_equal(got.tickets, want.tickets)
    assert [p.encode() for p in got.proofs] == [p.encode() for p in want.proofs] and got.proofs
    for _ in range(2):  # recover_c=False: C' and the messages into this thread's reused buffers
        bare = mine_job(template, prep.job, a, b, 1 << 252, pp, be, prepared=prep, recover_c=False)
        assert bare.c is None and np.array_equal(bare.tickets, want.tickets)


@pytest.mark.parametrize("method", ["int_mm", "fp32"])
@pytest.mark.parametrize(
    "m,k,n,r,h,w,widths,block_rows",
    [
        (48, 256, 40, 64, 8, 8, (128, 128), 16),  # the recovery's shape: 2 digits, 3 row blocks
        (21, 60, 10, 12, 3, 5, (7, 1, 24), 6),  # 3 digits, odd widths, 4 short blocks
        (16, 32, 8, 32, 16, 8, (40,), 256),  # one digit, one block
    ],
)
def test_portable_fused_recovery(method, m, k, n, r, h, w, widths, block_rows):
    """noisy_matmul_torch(pairs=[(U_i, V_i)]) returns C' - sum_i 128^i U_i V_i (mod 2^32) and the messages of C'
    itself, full-range int8 operands and digits included."""
    gen = torch.Generator().manual_seed(m + k + len(widths))
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    pairs = [
        (
            torch.randint(-128, 128, (m, wd), generator=gen, dtype=torch.int8),
            torch.randint(-128, 128, (wd, n), generator=gen, dtype=torch.int8),
        )
        for wd in widths
    ]
    c_ref, m_ref = reference.noisy_matmul(a, b, r, h, w)
    for threads in (1, 2):
        c, msgs = noisy_matmul_torch(a, b, r, h, w, block_rows=block_rows, method=method, pairs=pairs, threads=threads)
        assert torch.equal(msgs, m_ref)
        assert torch.equal(c, _sub_reference(c_ref, pairs))


@pytest.mark.parametrize("m,k,n,r", [(33, 96, 17, 32), (7, 64, 129, 64), (130, 2048, 96, 64), (1, 8, 1, 8)])
def test_portable_add_noise_matches_noisy_operands(m, k, n, r):
    """add_noise_torch (gathers, int8 adds) is bit for bit noisy_operands (int32 GEMMs converted to int8), maps
    as numpy arrays or tensors, full-range operands (wrapping mod 256) included; out= buffers are written."""
    from pouw.noise_torch import Noise, noisy_operands

    gen = torch.Generator().manual_seed(m * k + n)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    e_l = torch.randint(-32, 32, (m, r), generator=gen, dtype=torch.int8)
    f_r = torch.randint(-32, 32, (r, n), generator=gen, dtype=torch.int8)
    maps = tuple(torch.cat([torch.randperm(r, generator=gen) for _ in range(k // r)]).numpy() for _ in range(2))
    want = noisy_operands(a, b, Noise(e_l, f_r, maps), lambda x, y: exact_mm(x, y, "int_mm"))
    for mp in (maps, tuple(torch.from_numpy(x) for x in maps)):
        got = add_noise_torch(a, b, e_l, f_r, *mp)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    bufs = (torch.empty((m, k), dtype=torch.int8), torch.empty((k, n), dtype=torch.int8))
    got = add_noise_torch(a, b, e_l, f_r, *maps, out=bufs)
    assert got[0] is bufs[0] and got[1] is bufs[1] and torch.equal(bufs[0], want[0]) and torch.equal(bufs[1], want[1])


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (0, 3), (16, 2)])
def test_portable_tickets_match_reference(shape):
    """tile_tickets_hashlib (one buffer, one sha256 call per tile) is bit for bit the reference, for any prefix
    length, non-contiguous messages and no tiles at all."""
    gen = torch.Generator().manual_seed(sum(shape))
    msgs = torch.randint(-(2**31), 2**31, (shape[1], shape[0], 16), generator=gen, dtype=torch.int32)
    view = msgs.transpose(0, 1)
    for prefix in (b"pouw/ticket\x00" + bytes(range(32)), b"", b"x" * 57):
        got = tile_tickets_hashlib(prefix, view)
        assert tuple(got.shape) == (*shape, 32) and got.dtype == torch.uint8
        if shape[0] * shape[1]:
            assert torch.equal(got, tile_tickets_reference(prefix, view))
    assert (
        torch.equal(CpuBackend(native=False).tile_tickets(b"q" * 44, view), tile_tickets_reference(b"q" * 44, view))
        if shape[0] * shape[1]
        else True
    )
