"""The sm_90a wgmma kernel (kernels/cuda_src/fused_wgmma.cu, kernels/cuda_wgmma.py) without and with a GPU.

Without a GPU: (1) nvcc builds every instance for sm_90a with all warnings as errors, no register spills, and
no wgmma serialisation reported by ptxas (which would undo the overlap); NVRTC builds the run-time text the same;
(2) the accumulator map of the kernel (wgmma_fold.h) is a bijection onto the 64 x N tile and equals CuTe's
CLayout_64xN for m64nNk32 written as a layout (shape, stride); (3) the host emulator (emulate.cpp: the kernel's
descriptors, maps, wait points and fold; TMA's swizzle, descriptor decoding, the wgmma product and fragment layout
from the PTX ISA) reproduces kernels.reference's C' and messages bit for bit, with tails, every chunk/stage
alignment and the recovery epilogue; (4) POUW_CUDA_KERNEL=wgmma picks it on compute capability 9.0 only.
With a GPU of compute capability 9.0 (marked gpu): the kernel itself against the reference, Triton and _int_mm.
"""

from __future__ import annotations

import ctypes
import shutil

import pytest
import torch

from kernels import cuda_mma, cuda_wgmma, reference
from kernels.cuda import choose_kernel
from kernels.cuda_wgmma import WgmmaConfig
from tests.test_cuda_mma import fast_reference, operands, recovered

HAVE_GXX = shutil.which("g++") is not None
HAVE_NVCC = shutil.which("nvcc") is not None
needs_gxx = pytest.mark.skipif(not HAVE_GXX, reason="g++ not found: the kernel's host emulator cannot be built")
SMALL = WgmmaConfig(128, 6)


# ---------------------------------------------------------------- offline build


@pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not found: the offline CUDA build check needs the CUDA toolkit")
def test_nvcc_builds_sm90a_without_spills_or_serialisation() -> None:
    tile_ws, cfgs = (16, 8, 32), (cuda_wgmma.DEFAULT, SMALL)
    rc, log = cuda_wgmma.nvcc_build(tile_ws, cfgs)
    assert rc == 0, f"nvcc failed\n{log[-3000:]}"
    infos = cuda_mma.parse_ptxas(log)
    assert len(infos) == len(tile_ws) * len(cfgs) * len(cuda_wgmma.VARIANTS), log
    assert {i.arch for i in infos} == {"sm_90a"}, log
    for info in infos:
        assert info.spill_stores == 0 and info.spill_loads == 0 and info.stack == 0, f"{info} spills\n{log}"
    assert cuda_wgmma.serialised(log) == [], log


def test_serialised_reads_ptxas_c7514() -> None:
    log = (
        "ptxas info    : (C7514) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
        "non wgmma instructions reading accumulator registers of  a wgmma between start and end of the pipeline "
        "stage in the function '_Z3fooPv'\nptxas info    : (C7519) warpgroup.arrive is injected in around line 3 "
        "by compiler to allow use of registers in GMMA in function '_Z3barPv'\n"
    )
    assert cuda_wgmma.serialised(log) == ["_Z3fooPv"]


@pytest.mark.skipif(
    cuda_mma.find_nvrtc() is None,
    reason="libnvrtc not found (POUW_NVRTC=path, or pip install nvidia-cuda-nvrtc): the run-time "
    "compile path is checked on the device only",
)
def test_nvrtc_builds_the_runtime_text_for_sm90a() -> None:
    names = list(cuda_wgmma.kernel_names(16).values())
    ok, log, lowered, cubin = cuda_mma.nvrtc_program(cuda_wgmma.source(), "fused_wgmma.cu", names, cuda_wgmma.ARCH)
    assert ok, log[-3000:]
    assert set(lowered) == set(names) and cubin[:4] == b"\x7fELF"
    infos = cuda_mma.parse_ptxas(log)
    assert sorted(i.function for i in infos) == sorted(lowered.values()), log
    assert all(i.spill_stores == 0 and i.spill_loads == 0 for i in infos) and not cuda_wgmma.serialised(log), log


def test_source_is_self_contained() -> None:
    src = cuda_wgmma.source()
    assert "#include" not in src and src.count("namespace pouw {") == 3  # mma_fold.h, wgmma_fold.h, the kernel
    assert cuda_wgmma.kernel_names(16)[(True, True)] == "pouw_fused_wgmma<256, 4, 16, true, true>"


# ---------------------------------------------------------------- index maps as pure functions


def _cute_clayout_64xn(n: int) -> dict[tuple[int, int], tuple[int, int]]:
    """CuTe's CLayout_64xN (cute/atom/mma_traits_sm90_gmma.hpp): (thread, value) -> column-major index into the
    64 x N tile, shape ((4, 8, 4), (2, 2, N/8)), stride ((128, 1, 16), (64, 8, 512))."""
    out = {}
    for t in range(128):
        t0, t1, t2 = t % 4, t // 4 % 8, t // 32
        for v in range(n // 2):
            v0, v1, v2 = v % 2, v // 2 % 2, v // 4
            idx = 128 * t0 + t1 + 16 * t2 + 64 * v0 + 8 * v1 + 512 * v2
            out[(t, v)] = (idx % 64, idx // 64)
    return out


@needs_gxx
@pytest.mark.parametrize("bn", cuda_wgmma.BNS)
def test_accumulator_map_is_cutes_layout(bn: int) -> None:
    rows, cols = (ctypes.c_int * (64 * bn))(), (ctypes.c_int * (64 * bn))()
    assert cuda_mma._emulator().pouw_wgmma_maps(bn, rows, cols) == 0
    kernel = {(t, v): (rows[128 * v + t], cols[128 * v + t]) for t in range(128) for v in range(bn // 2)}
    assert kernel == _cute_clayout_64xn(bn)
    assert sorted(kernel.values()) == [(r, c) for r in range(64) for c in range(bn)]  # a bijection


# ---------------------------------------------------------------- the emulated kernel against the reference


@needs_gxx
@pytest.mark.parametrize(
    "m,k,n,r,w,cfg,seed",
    [
        (128, 32 * 17, 256, 32, 16, cuda_wgmma.DEFAULT, 1),  # one block; 17 chunks wrap the 16 message slots
        (144, 64 * 3, 200, 64, 8, WgmmaConfig(128, 3), 2),  # tails in m and n; 2 chunks a stage; 16 tiles a warp
        (64, 96 * 4, 256, 96, 32, cuda_wgmma.DEFAULT, 3),  # chunks straddle stages (96 of 128 columns)
        (272, 256 * 2, 136, 256, 8, WgmmaConfig(128, 2), 4),  # 2 stages a chunk, ring of 2 reused; 3 x 2 blocks
        (96, 32 * 5, 128, 32, 64, SMALL, 5),  # 2 tiles a warp: 16 lanes a tile, one word each
        (48, 128 * 2, 384, 128, 128, cuda_wgmma.DEFAULT, 6),  # 128-wide tiles, K a whole number of stages
    ],
)
def test_emulated_kernel_matches_reference(m: int, k: int, n: int, r: int, w: int, cfg: WgmmaConfig, seed: int) -> None:
    a, b = operands(m, k, n, seed)
    c, msgs = cuda_wgmma.emulate(a, b, r, 16, w, config=cfg)
    want = reference.noisy_matmul(a, b, r, 16, w) if m * n * k < 5e6 else fast_reference(a, b, r, 16, w)
    assert torch.equal(c, want[0]) and torch.equal(msgs, want[1])


@needs_gxx
def test_emulated_kernel_many_blocks() -> None:
    """10 x 3 blocks: the grouped block order covers every block once (the emulator refuses a repeat)."""
    a, b = operands(128 * 9 + 64, 32 * 3, 128 * 2 + 32, 13)
    got = cuda_wgmma.emulate(a, b, 32, 16, 16, config=SMALL)
    want = fast_reference(a, b, 32, 16, 16)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_gxx
def test_emulated_kernel_extreme_operands() -> None:
    m, k, n, r = 128, 64 * 4, 128, 64
    a = torch.full((m, k), -128, dtype=torch.int8)
    b = torch.full((k, n), 127, dtype=torch.int8)
    a[::3] = 127
    got, want = cuda_wgmma.emulate(a, b, r, 16, 16, config=SMALL), reference.noisy_matmul(a, b, r, 16, 16)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_gxx
def test_emulated_transcript_off_is_plain_gemm() -> None:
    a, b = operands(160, 32 * 6, 72, 7, -128, 128)
    c, msgs = cuda_wgmma.emulate(a, b, 32, 16, 8, transcript=False, config=SMALL)
    assert torch.equal(c, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)) and not msgs.any()


@needs_gxx
@pytest.mark.parametrize("digits,cw", [(1, 128), (3, 128), (2, 96)])
def test_emulated_recovery_epilogue(digits: int, cw: int) -> None:
    """C = C' - sum_i 128^i U_i V_i, digit widths a whole stage or not (96: the box reads the next digit's
    columns, which the consumer must not use)."""
    m, k, n, r = 144, 64 * 3, 176, 64
    a, b = operands(m, k, n, 8)
    g = torch.Generator().manual_seed(9)
    u = torch.randint(-64, 64, (m, digits * cw), dtype=torch.int8, generator=g)
    vt = torch.randint(-64, 64, (n, digits * cw), dtype=torch.int8, generator=g)
    c, msgs = cuda_wgmma.emulate(a, b, r, 16, 16, correction=(u, vt, digits), config=WgmmaConfig(128, 2))
    c_noisy, want_msgs = reference.noisy_matmul(a, b, r, 16, 16)
    assert torch.equal(c, recovered(c_noisy, u, vt, digits)) and torch.equal(msgs, want_msgs)


def test_unsupported_shapes_and_configs() -> None:
    assert cuda_wgmma.unsupported_reason(64, 16, 16) is None
    for r, h, w, cfg, why in [
        (16, 16, 16, cuda_wgmma.DEFAULT, "multiple of 32"),
        (64, 32, 16, cuda_wgmma.DEFAULT, "16-row tiles only"),
        (64, 16, 4, cuda_wgmma.DEFAULT, "tile width 4"),
        (64, 16, 256, cuda_wgmma.DEFAULT, "tile width 256"),
        (64, 16, 24, cuda_wgmma.DEFAULT, "tile width 24"),
        (64, 16, 16, WgmmaConfig(256, 5), "shared memory"),
        (64, 16, 16, WgmmaConfig(192, 4), "bn one of"),
    ]:
        reason = cuda_wgmma.unsupported_reason(r, h, w, cfg)
        assert reason is not None and why in reason
    a, b = operands(32, 64, 32, 1)
    with pytest.raises(ValueError, match="16-row tiles"):
        cuda_wgmma.emulate(a, b, 32, 32, 16)
    assert WgmmaConfig().smem_bytes == 4 * 384 * 128 + 1024 + 64 <= cuda_wgmma.SMEM_LIMIT


# ---------------------------------------------------------------- which kernel runs


def test_choose_wgmma_on_sm90_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POUW_CUDA_KERNEL", "WGMMA")
    assert cuda_mma.requested_kernel() == "wgmma"
    assert choose_kernel("wgmma", 64, 16, 16, (9, 0)) == ("wgmma", None)
    for cap, why in [
        ((8, 9), "compute capability 8.9"),
        ((10, 0), "compute capability 10.0"),
        (None, "no CUDA device"),
    ]:
        kernel, reason = choose_kernel("wgmma", 64, 16, 16, cap)
        assert kernel == "triton" and reason is not None and why in reason and "sm_90a" in reason
    kernel, reason = choose_kernel("wgmma", 64, 32, 32, (9, 0))
    assert kernel == "triton" and reason is not None and "16-row" in reason
    assert choose_kernel("cuda", 64, 16, 16, (9, 0)) == ("cuda", None)  # the mma.sync kernel stays selectable


def test_backend_dispatch_and_fallback(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """POUW_CUDA_KERNEL=wgmma: the wgmma kernel on compute capability 9.0; Triton on other devices, for tiles it
    does not fold and, for good, once CuPy is found missing; each reason logged once with the kernel's name.
    (The kernels are stubs here: this is the choice alone.)"""
    import kernels.cuda as kc
    import kernels.triton_kernel as tk

    calls: list[tuple] = []
    cap = [(9, 0)]

    def wgmma(a, b, r, h, w, correction=None):
        calls.append(("wgmma", r, h, w, correction))
        if r == 128:
            raise ImportError("the wgmma kernel needs CuPy")
        return "C", "msgs"

    def triton(a, b, r, h, w, correction=None):
        calls.append(("triton", r, h, w, correction))
        return "C", "msgs"

    monkeypatch.setattr(cuda_wgmma, "noisy_matmul_wgmma", wgmma)
    monkeypatch.setattr(tk, "noisy_matmul_triton", triton)
    monkeypatch.setattr(kc, "_WARNED", set())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap[0])
    be = object.__new__(kc.CudaBackend)
    be.device = torch.device("cuda", 0)
    be.kernel = "wgmma"
    be._fused(None, None, 64, 16, 16, correction="corr")
    be._fused(None, None, 64, 32, 32)
    cap[0] = (8, 6)
    be._fused(None, None, 64, 16, 16)
    be._fused(None, None, 64, 16, 16)
    cap[0] = (9, 0)
    be._fused(None, None, 128, 16, 16)  # CuPy "missing": Triton from now on
    be._fused(None, None, 64, 16, 16)
    assert [c[0] for c in calls] == ["wgmma", "triton", "triton", "triton", "wgmma", "triton", "triton"]
    assert calls[0] == ("wgmma", 64, 16, 16, "corr") and be.kernel == "triton"
    fields = [r.pouw_fields for r in caplog.records if "running the Triton kernel instead" in r.getMessage()]
    assert len(fields) == 3 and all(f["POUW_CUDA_KERNEL"] == "wgmma" for f in fields)
    warnings = [f["why"] for f in fields]
    assert "16-row" in warnings[0] and "compute capability 8.6" in warnings[1] and "needs CuPy" in warnings[2]


# ---------------------------------------------------------------- on a GPU


def _runnable() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    reason = cuda_wgmma.device_reason(torch.cuda.get_device_capability(0))
    if reason:
        return reason
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda12x or cupy-cuda13x)"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_runnable() is not None, reason=str(_runnable()))
class TestOnDevice:
    @pytest.mark.parametrize(
        "m,k,n,r,w,cfg",
        [
            (128, 32 * 17, 256, 32, 16, cuda_wgmma.DEFAULT),
            (144, 64 * 3, 200, 64, 8, WgmmaConfig(128, 3)),
            (64, 96 * 4, 256, 96, 32, cuda_wgmma.DEFAULT),
            (264, 64 * 20, 200, 64, 16, cuda_wgmma.DEFAULT),
            (272, 256 * 2, 136, 256, 8, WgmmaConfig(128, 2)),
        ],
    )
    def test_against_reference(self, m: int, k: int, n: int, r: int, w: int, cfg: WgmmaConfig) -> None:
        a, b = operands(m, k, n, m + k + n)
        c, msgs = cuda_wgmma.noisy_matmul_wgmma(a.cuda(), b.cuda(), r, 16, w, config=cfg)
        want = fast_reference(a, b, r, 16, w)
        assert torch.equal(c.cpu(), want[0]) and torch.equal(msgs.cpu(), want[1])

    def test_against_triton_large_with_recovery(self) -> None:
        from kernels.triton_kernel import noisy_matmul_triton

        m = k = n = 1024
        a, b = (x.cuda() for x in operands(m, k, n, 11))
        g = torch.Generator().manual_seed(12)
        u = torch.randint(-64, 64, (m, 3 * 128), dtype=torch.int8, generator=g).cuda()
        vt = torch.randint(-64, 64, (n, 3 * 128), dtype=torch.int8, generator=g).cuda()
        for corr, cfg in ((None, cuda_wgmma.DEFAULT), ((u, vt, 3), cuda_wgmma.DEFAULT), ((u, vt, 3), SMALL)):
            got = cuda_wgmma.noisy_matmul_wgmma(a, b, 64, 16, 16, correction=corr, config=cfg)
            want = noisy_matmul_triton(a, b, 64, 16, 16, correction=corr)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), cfg
        c, msgs = cuda_wgmma.noisy_matmul_wgmma(a, b, 64, 16, 16, transcript=False)
        assert torch.equal(c, torch._int_mm(a, b)) and not msgs.any()


# ---------------------------------------------------------------- the device benchmark, dry


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_benchmark_without_a_device(tmp_path, capsys) -> None:
    from benchmarks import bench_wgmma

    assert bench_wgmma.main(["--sizes", "256", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "python -m benchmarks.bench_wgmma --sizes 256" in captured.out and "needs a CUDA device" in captured.err
    assert not (tmp_path / "wgmma.jsonl").exists()


def test_benchmark_summary(tmp_path) -> None:
    from benchmarks import bench_wgmma

    rows = [
        dict(
            what="check",
            against="cpu backend",
            m=200,
            k=384,
            n=328,
            r=64,
            tile="16x8",
            bn=256,
            recover=False,
            exact=True,
        ),
        dict(what="time", kernel="int_mm", size=8192, ms=1.2, tops=916.3, exact=None),
        dict(what="time", kernel="wgmma plain", size=8192, ms=1.0, tops=1099.5, exact=True),
        dict(what="time", kernel="triton transcript", size=8192, ms=2.2, tops=500.0, exact=None),
        dict(what="time", kernel="cuda transcript", size=8192, ms=1.65, tops=666.4, exact=True),
        dict(what="time", kernel="wgmma transcript", size=8192, ms=1.1, tops=999.5, exact=True),
        dict(what="time", kernel="wgmma bn128 transcript", size=8192, ms=0.9, tops=1221.7, exact=False),
    ]
    bench_wgmma.write_summary(tmp_path / "wgmma.md", rows, "NVIDIA H200", "sm_90", "python -m x")
    md = (tmp_path / "wgmma.md").read_text()
    assert "NVIDIA H200 (sm_90)" in md and "`python -m x`" in md and "'tile': '16x8'" in md
    assert "| 8192 | wgmma transcript | 1.1 | 999.5 | True | 0.909 | 2.000 | 1.500 |" in md
    assert "| 8192 | wgmma bn128 transcript | 0.9 | 1221.7 | False | – |  |  |" in md  # not exact: no ratio
