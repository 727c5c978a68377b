"""The native fused CPU kernels (kernels/native/vnni_gemm.c, avx2_gemm.c, neon_gemm.c via kernels.native_loader) are
bit-exact.

Small shapes are checked against the pure-Python `kernels.reference`; a medium shape against a fast torch/numpy
model of the contract written here. Every kernel this CPU's flags say it runs is exercised (AVX512-VNNI; AVX2 with
both inner loops; NEON with the loops the CPU has: tests/test_native_neon.py runs it under qemu elsewhere), whatever $POUW_NATIVE says, and the portable C path too; tests/test_cpu_kernels.py fails when
the build lacks a kernel the CPU has.
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
from kernels.base import MSG_WORDS, ROT, ShapeError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not native_loader.available(),
    reason=f"native CPU kernel unavailable: {native_loader.unavailable_reason()}",
)

needs_vnni = pytest.mark.skipif(
    not native_loader.has_vnni(), reason="CPU lacks AVX512-VNNI: only the portable path runs"
)

# (kernel, AVX2 inner loop) for every fused kernel the CPU's flags say it runs
_LOOPS = {
    "vnni": (None,),
    "avx2": ("int", "fp32"),
    "neon": ("dot", "mull") if "asimddp" in native_loader.cpu_flags() else ("mull",),
}
FUSED = [
    pytest.param(k, loop, id=f"{k}-{loop}" if loop else k) for k in native_loader.cpu_kernels() for loop in _LOOPS[k]
]
IMPLS = FUSED + [pytest.param("portable", None, id="portable")]


def _fits(kernel: str, r: int, h: int, w: int) -> bool:
    """Whether `kernel` takes these parameters (else noisy_matmul runs the portable C path)."""
    if kernel == "vnni":
        return r % 4 == 0 and w in (4, 8, 16) and h >= 4 and h & (h - 1) == 0
    if kernel == "avx2":
        return h % 4 == 0 and (r % 4 == 0 or r <= 1024)
    if kernel == "neon":
        return h % 4 == 0 and r % 4 == 0
    return True


def _run(a, b, r, h, w, kernel, loop, **kw):
    """noisy_matmul on `kernel` (asserting that it is the path taken), loop: the AVX2 inner loop."""
    m, k = a.shape
    want = kernel if _fits(kernel, r, h, w) else "portable"
    assert native_loader.kernel_path(m, k, b.shape[1], r, h, w, kernel=kernel) == want
    return native_loader.noisy_matmul(a, b, r, h, w, kernel=kernel, loop=loop, **kw)


def _rand(shape, gen, extreme=False):
    if extreme:
        return ((torch.randint(0, 2, shape, generator=gen) * 254) - 127).to(torch.int8)
    return torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)


def model_noisy_matmul(a: torch.Tensor, b: torch.Tensor, r: int, h: int, w: int):
    """Fast model of the contract: per-chunk int64 matmuls, numpy XOR folds."""
    m, k = a.shape
    n = b.shape[1]
    acc = torch.zeros(m, n, dtype=torch.int64)
    msgs = np.zeros((m // h, n // w, MSG_WORDS), dtype=np.uint32)
    a64, b64 = a.to(torch.int64), b.to(torch.int64)
    for c in range(k // r):
        acc += a64[:, c * r : (c + 1) * r] @ b64[c * r : (c + 1) * r]
        s = (acc.numpy() & 0xFFFFFFFF).astype(np.uint32)
        x = np.bitwise_xor.reduce(np.bitwise_xor.reduce(s.reshape(m // h, h, n // w, w), axis=3), axis=1)
        slot = c % MSG_WORDS
        cur = msgs[:, :, slot]
        msgs[:, :, slot] = ((cur << np.uint32(ROT)) | (cur >> np.uint32(32 - ROT))) ^ x
    return acc.to(torch.int32), torch.from_numpy(msgs.view(np.int32))


# (m, k, n, r, h, w): several r and tiles, k/r > 16 so slots wrap, m/n multiples of the tile but not of the
# 8-row x 48-column register block (and n not a multiple of 16 where the tile allows it)
SMALL_CASES = [
    (16, 576, 16, 32, 16, 16),  # 18 chunks
    (8, 1088, 48, 64, 8, 8),  # 17 chunks, exactly one register block
    (12, 96, 20, 32, 4, 4),  # 4-row remainder, 20 columns (16 + 4)
    (20, 544, 52, 32, 4, 4),  # 17 chunks, 2 row blocks + remainder, 3 zmm + 4 columns
    (24, 2304, 40, 128, 8, 8),  # 18 chunks of 128, 40 columns (16 + 16 + 8)
    (32, 256, 80, 64, 16, 16),  # 5 zmm columns: one full 3-wide panel + a 2-wide one
    (16, 256, 112, 64, 16, 16),  # 7 zmm columns: 3 + 3 + 1
    (8, 128, 24, 32, 4, 8),  # h != w
    (16, 128, 8, 32, 16, 8),  # n smaller than one zmm
    (4, 64, 4, 32, 4, 4),  # tiniest legal shape
    (32, 192, 32, 64, 32, 16),  # tile height above the register block
    # AVX2 tails: n not a multiple of 8 / of the 16- or 24-column panel, tiles straddling panels, odd widths,
    # r not a multiple of 4 (fp32 loop only), tile height 12
    (8, 96, 28, 32, 4, 4),  # 28 columns: 3 ymm + 4
    (12, 60, 30, 12, 12, 6),  # 30 columns, tile 12 x 6
    (8, 45, 10, 5, 4, 5),  # r = 5, tile width 5
    (16, 136, 40, 8, 8, 8),  # 17 chunks of 8, 40 columns: one 24-column fp32 panel + 16
    (4, 32, 3, 32, 4, 3),  # n = 3 (less than one ymm)
    (8, 96, 72, 96, 8, 24),  # tile width 24 (one fp32 panel, one and a half int panels)
]


@pytest.mark.parametrize("kernel,loop", IMPLS)
@pytest.mark.parametrize("m,k,n,r,h,w", SMALL_CASES)
@pytest.mark.parametrize("extreme", [False, True])
def test_matches_reference(m, k, n, r, h, w, extreme, kernel, loop):
    gen = torch.Generator().manual_seed(hash((m, k, n, r, h, w, extreme)) & 0xFFFF)
    a, b = _rand((m, k), gen, extreme), _rand((k, n), gen, extreme)
    c_ref, m_ref = reference.noisy_matmul(a, b, r, h, w)
    for threads in (1, 2, 3):
        c, msgs = _run(a, b, r, h, w, kernel, loop, threads=threads)
        assert c.dtype == torch.int32 and msgs.dtype == torch.int32
        assert msgs.shape == (m // h, n // w, MSG_WORDS)
        assert torch.equal(c, c_ref), f"C' differs (threads={threads})"
        assert torch.equal(msgs, m_ref), f"messages differ (threads={threads})"


@pytest.mark.parametrize(
    "m,k,n,r,h,w",
    [
        (16, 576, 16, 32, 16, 16),
        (12, 96, 20, 32, 4, 4),
        (8, 36, 8, 12, 2, 8),
        (6, 40, 10, 5, 3, 5),
    ],
)
def test_portable_path_matches_reference(m, k, n, r, h, w):
    """The plain C path (used without VNNI, or for parameters the VNNI path does not take) is exact too."""
    gen = torch.Generator().manual_seed(7)
    a, b = _rand((m, k), gen), _rand((k, n), gen)
    c_ref, m_ref = reference.noisy_matmul(a, b, r, h, w)
    for threads in (1, 2):
        c, msgs = native_loader.noisy_matmul(a, b, r, h, w, threads=threads, force_portable=True)
        assert torch.equal(c, c_ref) and torch.equal(msgs, m_ref)
    c, msgs = native_loader.noisy_matmul(a, b, r, h, w)  # whichever path it picks
    assert torch.equal(c, c_ref) and torch.equal(msgs, m_ref)


@pytest.mark.parametrize("kernel,loop", IMPLS)
def test_extreme_values_worst_case_sums(kernel, loop):
    """All +127 / all -127 operands: the largest |partial sums| and the u8-shift correction at its extremes; for
    the AVX2 fp32 loop chunks of 1024 (|sum| = 127^2 * 1024, just under 2^24) as well as 64."""
    for av, bv in ((127, 127), (-127, 127), (127, -127), (-127, -127)):
        a = torch.full((16, 2048), av, dtype=torch.int8)
        b = torch.full((2048, 48), bv, dtype=torch.int8)
        for r in (64, 1024):
            c, msgs = _run(a, b, r, 8, 8, kernel, loop)
            c_m, m_m = model_noisy_matmul(a, b, r, 8, 8)
            assert torch.equal(c, c_m) and torch.equal(msgs, m_m)
            assert int(c[0, 0]) == av * bv * 2048


@pytest.mark.parametrize("kernel,loop", IMPLS)
@pytest.mark.parametrize("r", [32, 1024, 2048])
def test_minus_128_is_exact_too(kernel, loop, r):
    """-128 lies outside the contract, but every path still computes it exactly (the AVX2 int loop hands such
    operands to its fp32 loop, and chunks wider than 1024 to the portable path)."""
    gen = torch.Generator().manual_seed(17)
    k = max(512, r)
    a = torch.randint(-128, 128, (16, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, 48), generator=gen, dtype=torch.int8)
    a[0, :] = -128
    b[:, 0] = -128
    c_m, m_m = model_noisy_matmul(a, b, r, 8, 8)
    c, msgs = native_loader.noisy_matmul(a, b, r, 8, 8, kernel=kernel, loop=loop)
    assert torch.equal(c, c_m) and torch.equal(msgs, m_m)
    assert int(c[0, 0]) == 128 * 128 * k


@pytest.mark.parametrize("kernel,loop", FUSED)
@pytest.mark.parametrize("r,h,w", [(64, 16, 16), (128, 8, 8), (32, 4, 8)])
def test_medium_shape_against_model(r, h, w, kernel, loop):
    gen = torch.Generator().manual_seed(r * 31 + h)
    a, b = _rand((256, 1024), gen), _rand((1024, 384), gen)
    c_m, m_m = model_noisy_matmul(a, b, r, h, w)
    c, msgs = _run(a, b, r, h, w, kernel, loop)
    assert torch.equal(c, c_m)
    assert torch.equal(msgs, m_m)
    assert torch.equal(c, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))


@pytest.mark.parametrize("kernel,loop", FUSED)
@pytest.mark.parametrize("m,k,n", [(36, 1000, 100), (100, 4104, 20), (260, 512, 264)])
def test_random_shapes_with_tails(m, k, n, kernel, loop):
    """Shapes that are no multiple of any register block, against the model."""
    gen = torch.Generator().manual_seed(m * k + n)
    a, b = _rand((m, k), gen), _rand((k, n), gen)
    r = 8 if k % 8 == 0 else 4
    h, w = 4, 4
    c_m, m_m = model_noisy_matmul(a, b, r, h, w)
    c, msgs = _run(a, b, r, h, w, kernel, loop)
    assert torch.equal(c, c_m) and torch.equal(msgs, m_m)


@pytest.mark.parametrize("kernel,loop", IMPLS)
def test_large_k_exact(kernel, loop):
    """k = 65536 (the contract's maximum): the u8-shifted partial sums come close to 2^31."""
    gen = torch.Generator().manual_seed(3)
    a = torch.full((8, 65536), 127, dtype=torch.int8)
    a[1:, ::7] = -127
    b = _rand((65536, 16), gen, extreme=True)
    b[:, 0] = 127
    c, msgs = _run(a, b, 128, 8, 16, kernel, loop)
    c_m, m_m = model_noisy_matmul(a, b, 128, 8, 16)
    assert torch.equal(c, c_m) and torch.equal(msgs, m_m)
    assert int(c[0, 0]) == 127 * 127 * 65536


@pytest.mark.parametrize("kernel,loop", IMPLS)
def test_noncontiguous_inputs_and_threads(kernel, loop):
    gen = torch.Generator().manual_seed(5)
    a = _rand((256, 64), gen).t()  # 64 x 256, not contiguous
    b = _rand((32, 256), gen).t()  # 256 x 32
    c_m, m_m = model_noisy_matmul(a.contiguous(), b.contiguous(), 32, 8, 8)
    for threads in (1, 2, 5, 64):
        c, msgs = _run(a, b, 32, 8, 8, kernel, loop, threads=threads)
        assert torch.equal(c, c_m) and torch.equal(msgs, m_m)


@pytest.mark.parametrize("kernel,loop", IMPLS)
def test_out_buffers_are_written_in_place_and_checked(kernel, loop):
    gen = torch.Generator().manual_seed(6)
    a, b = _rand((32, 128), gen), _rand((128, 48), gen)
    c_m, m_m = model_noisy_matmul(a, b, 32, 8, 8)
    out = (torch.full((32, 48), 7, dtype=torch.int32), torch.full((4, 6, MSG_WORDS), 7, dtype=torch.int32))
    for _ in range(2):  # a reused buffer holds the last call's values, not a mix
        c, msgs = _run(a, b, 32, 8, 8, kernel, loop, out=out)
        assert c.data_ptr() == out[0].data_ptr() and msgs.data_ptr() == out[1].data_ptr()
        assert torch.equal(c, c_m) and torch.equal(msgs, m_m)
    for bad in [
        (torch.empty((32, 47), dtype=torch.int32), out[1]),  # shape
        (out[0].to(torch.int64), out[1]),  # dtype
        (out[0], torch.empty((6, 4, MSG_WORDS), dtype=torch.int32).transpose(0, 1)),
    ]:  # not contiguous
        with pytest.raises(ShapeError, match="out buffer"):
            native_loader.noisy_matmul(a, b, 32, 8, 8, out=bad)


@pytest.mark.parametrize("kernel,loop", FUSED)
def test_concurrent_callers(kernel, loop):
    """Two Python threads calling at once (the second gets its own threads and workspace)."""
    import threading

    gen = torch.Generator().manual_seed(11)
    cases = []
    for r, h, w in ((64, 16, 16), (32, 8, 4)):
        a, b = _rand((64, 512), gen), _rand((512, 96), gen)
        cases.append((a, b, r, h, w, model_noisy_matmul(a, b, r, h, w)))
    errors = []

    def work(case):
        a, b, r, h, w, (c_m, m_m) = case
        for _ in range(20):
            c, msgs = native_loader.noisy_matmul(a, b, r, h, w, threads=2, kernel=kernel, loop=loop)
            if not (torch.equal(c, c_m) and torch.equal(msgs, m_m)):
                errors.append((r, h, w))
                return

    ts = [threading.Thread(target=work, args=(case,)) for case in cases]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("kernel,loop", FUSED)
def test_works_after_fork(kernel, loop):
    gen = torch.Generator().manual_seed(13)
    a, b = _rand((32, 256), gen), _rand((256, 48), gen)
    c_m, m_m = model_noisy_matmul(a, b, 64, 8, 8)
    _run(a, b, 64, 8, 8, kernel, loop, threads=2)  # the parent's worker pool exists now
    pid = os.fork()
    if pid == 0:  # child: the pool threads did not survive the fork
        ok = False
        try:
            c, msgs = _run(a, b, 64, 8, 8, kernel, loop, threads=2)
            ok = torch.equal(c, c_m) and torch.equal(msgs, m_m)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_rejects_bad_operands():
    a = torch.zeros(16, 64, dtype=torch.int8)
    b = torch.zeros(64, 16, dtype=torch.int8)
    with pytest.raises(ShapeError):
        native_loader.noisy_matmul(a, b, 48, 4, 4)  # k % r
    with pytest.raises(ShapeError):
        native_loader.noisy_matmul(a, b, 32, 3, 4)  # m % h
    with pytest.raises(ShapeError):
        native_loader.noisy_matmul(a.to(torch.int32), b, 32, 4, 4)
    with pytest.raises(ShapeError):
        native_loader.noisy_matmul(a, torch.zeros(32, 16, dtype=torch.int8), 32, 4, 4)


def _run_py(code: str, env: dict) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120
    )


def test_every_native_file_is_built_and_hashed():
    """The loader compiles every .c of kernels/native and hashes every header (a source left out of SOURCES or
    HEADERS would be missing from the library or from the cache key)."""
    native_dir = ROOT / "kernels" / "native"
    assert sorted(p.name for p in native_loader.SOURCES) == sorted(p.name for p in native_dir.glob("*.c"))
    assert sorted(p.name for p in native_loader.HEADERS) == sorted(p.name for p in native_dir.glob("*.h"))


def test_env_disable_and_cache_build(tmp_path):
    off = _run_py("from kernels import native_loader as n; print(n.available())", {"POUW_NATIVE": "0"})
    assert off.returncode == 0 and off.stdout.strip() == "False", off.stderr
    cache = tmp_path / "cache"
    code = (
        "from kernels import native_loader as n; import torch\n"
        "assert n.available(), n.unavailable_reason()\n"
        "a = torch.ones(8, 64, dtype=torch.int8); c, m = n.noisy_matmul(a, a.t().contiguous(), 32, 4, 4)\n"
        "assert int(c[0, 0]) == 64\nprint('ok')"
    )
    # two processes building into the same empty cache at once: both succeed, one library results
    env = {**os.environ, "POUW_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    built = sorted(p.name for p in cache.iterdir())
    assert len(built) == 1 and built[0].startswith("fused_gemm-") and built[0].endswith(".so"), built
    second = _run_py(code, {"POUW_CACHE": str(cache)})  # reuses the cached build
    assert second.returncode == 0 and sorted(p.name for p in cache.iterdir()) == built


def test_missing_compiler_is_not_an_error(tmp_path):
    res = _run_py(
        "from kernels import native_loader as n; print(n.available()); print(n.unavailable_reason())",
        {
            "POUW_CACHE": str(tmp_path / "c"),
            "POUW_CC": "/nonexistent/cc",
            "CC": "/nonexistent/cc",
            "PATH": str(tmp_path),
        },
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "False" and "compiler" in lines[1]


@pytest.mark.parametrize("kernel,loop", FUSED)
@pytest.mark.parametrize("m,k,n", [(8, 64, 16), (12, 132, 48), (40, 4096, 80), (256, 2048, 160)])
def test_plain_gemm_transcript_off_is_exact(m, k, n, kernel, loop):
    """The engine's plain GEMM (transcript off, a few wide chunks) gives the exact product, -128 included, and
    the same C as the transcript pass."""
    gen = torch.Generator().manual_seed(m + k + n)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert torch.equal(native_loader.plain_matmul(a, b, kernel=kernel), want)
    r = 4 if k % 64 else 64
    c_off, _ = _run(a, b, r, 4, 16, kernel, loop, transcript=False)
    c_on, msgs = _run(a, b, r, 4, 16, kernel, loop)
    assert torch.equal(c_off, want) and torch.equal(c_on, want)
    assert torch.equal(msgs, model_noisy_matmul(a, b, r, 4, 16)[1])


@pytest.mark.skipif("avx2" not in native_loader.cpu_kernels(), reason="CPU without AVX2")
@pytest.mark.parametrize("m,k,n", [(4, 7, 5), (20, 2050, 3), (64, 1023, 33), (8, 256, 200), (64, 2048, 400)])
def test_avx2_plain_gemm_odd_shapes(m, k, n):
    """The AVX2 plain GEMM takes any k and n (m a multiple of 4): chunks the widest divisor of k up to 1024; short
    wide products split their panels between the threads."""
    gen = torch.Generator().manual_seed(m + k + n)
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert torch.equal(native_loader.plain_matmul(a, b, kernel="avx2"), want)
    with pytest.raises(ShapeError):
        native_loader.plain_matmul(a[: m - 1], b, kernel="avx2")


def test_plain_chunk_and_backend_fallback():
    """plain_chunk: the widest divisor of k (a multiple of 4) with two chunks per thread where k allows; shapes
    the native plain GEMM does not take fall back to torch._int_mm in CpuBackend.plain_mm."""
    from kernels.cpu import CpuBackend

    for (k, threads), want in {
        (2048, 2): 512,
        (2048, 1): 1024,
        (4096, 8): 256,
        (132, 2): 132,
        (8, 2): 4,
        (6, 1): None,
    }.items():
        assert native_loader.plain_chunk(k, threads) == want, (k, threads)
    gen = torch.Generator().manual_seed(3)
    a, b = _rand((6, 64), gen), _rand((64, 24), gen)  # m % 4 and n % 16: not the native shape
    if native_loader.has_vnni():
        with pytest.raises(ShapeError):
            native_loader.plain_matmul(a, b)
    want = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert torch.equal(CpuBackend().plain_mm(a, b), want)
