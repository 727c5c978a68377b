"""The hand-written mma.sync kernel (kernels/cuda_src/fused_mma.cu, kernels/cuda_mma.py) without and with a GPU.

Without a GPU: (1) nvcc builds it for sm_80, sm_86, sm_89 and sm_90 and ptxas reports no register spills (skipped
where nvcc is absent); (2) the host emulator (emulate.cpp: the kernel's own index maps and fold steps from
mma_fold.h, the hardware's fragment layouts and shuffles from the PTX ISA) reproduces kernels.reference's C' and
messages bit for bit, and the recovery epilogue's C; (3) the backend's kernel choice (POUW_CUDA_KERNEL).
With a GPU (marked gpu): the kernel itself against the reference and against the Triton kernel.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from kernels import cuda_mma, reference
from kernels.base import to_i32
from kernels.cuda import choose_kernel

HAVE_GXX = shutil.which("g++") is not None
HAVE_NVCC = shutil.which("nvcc") is not None
needs_gxx = pytest.mark.skipif(not HAVE_GXX, reason="g++ not found: the kernel's host emulator cannot be built")


def operands(m: int, k: int, n: int, seed: int, lo: int = -96, hi: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(lo, hi, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(lo, hi, (k, n), dtype=torch.int8, generator=g)
    return a, b


def recovered(c_noisy: torch.Tensor, u: torch.Tensor, vt: torch.Tensor, digits: int) -> torch.Tensor:
    """C' - sum_i 128^i U_i V_i in int64, wrapped to int32 (U = [U_0 | U_1 | ...], V^T likewise)."""
    cw = u.shape[1] // digits
    c = c_noisy.to(torch.int64)
    for i in range(digits):
        ui, vi = u[:, i * cw : (i + 1) * cw].to(torch.int64), vt[:, i * cw : (i + 1) * cw].to(torch.int64)
        c -= (128**i) * (ui @ vi.t())
    return to_i32(c)


def fast_reference(a: torch.Tensor, b: torch.Tensor, r: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """kernels.reference's contract with int64 chunk products and numpy folds (for shapes too big for it)."""
    import numpy as np

    m, k = a.shape
    n = b.shape[1]
    s = torch.zeros((m, n), dtype=torch.int64)
    msgs = np.zeros((m // h, n // w, 16), dtype=np.uint32)
    for c in range(k // r):
        s += a[:, c * r : (c + 1) * r].to(torch.int64) @ b[c * r : (c + 1) * r].to(torch.int64)
        x = (s & 0xFFFFFFFF).numpy().astype(np.uint32).reshape(m // h, h, n // w, w)
        x = np.bitwise_xor.reduce(np.bitwise_xor.reduce(x, axis=3), axis=1)
        word = msgs[:, :, c % 16]
        msgs[:, :, c % 16] = ((word << np.uint32(13)) | (word >> np.uint32(19))) ^ x
    return to_i32(s), torch.from_numpy(msgs.view(np.int32).copy())


# ---------------------------------------------------------------- offline build


@pytest.mark.skipif(not HAVE_NVCC, reason="nvcc not found: the offline CUDA build check needs the CUDA toolkit")
def test_nvcc_builds_every_arch_without_spills() -> None:
    """Every (transcript, recovery) instance of the default config builds for sm_80/86/89/90 with no spills."""
    others = tuple(cuda_mma.MmaConfig(*g, stages=3) for g in cuda_mma.GEOMETRIES[1:])

    def build(arch: str) -> tuple[int, str]:  # the other geometries on sm_90 only, to keep the test short
        return cuda_mma.nvcc_build(arch, more=others if arch == "sm_90" else ())

    with ThreadPoolExecutor(len(cuda_mma.ARCHS)) as ex:
        builds = dict(zip(cuda_mma.ARCHS, ex.map(build, cuda_mma.ARCHS)))
    for arch, (rc, log) in builds.items():
        assert rc == 0, f"{arch}: nvcc failed\n{log[-3000:]}"
        infos = cuda_mma.parse_ptxas(log)
        assert len(infos) == len(cuda_mma.VARIANTS) + 2 * len(others) * (arch == "sm_90"), log
        assert {i.arch for i in infos} == {arch}, log
        for info in infos:
            assert info.spill_stores == 0 and info.spill_loads == 0, f"{arch}: {info} spills\n{log}"
            assert info.registers <= 255


def test_parse_ptxas_reads_registers_and_spills() -> None:
    log = """ptxas info    : Compiling entry function '_Z3fooPi' for 'sm_90'
ptxas info    : Function properties for _Z3fooPi
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 122 registers, used 1 barriers, 424 bytes cmem[0]
ptxas info    : Compiling entry function '_Z3barPi' for 'sm_80'
ptxas info    : Function properties for _Z3barPi
    40 bytes stack frame, 36 bytes spill stores, 28 bytes spill loads
ptxas info    : Used 255 registers, 424 bytes cmem[0]
"""
    assert cuda_mma.parse_ptxas(log) == [
        cuda_mma.PtxasInfo("_Z3fooPi", "sm_90", 122, 0, 0, 0),
        cuda_mma.PtxasInfo("_Z3barPi", "sm_80", 255, 36, 28, 40),
    ]


def test_source_is_self_contained() -> None:
    src = cuda_mma.source()
    assert "#include" not in src.replace("#include <", "")  # mma_fold.h inlined; NVRTC gets one text
    for name in cuda_mma.kernel_names(16, 16).values():
        assert name.startswith("pouw_fused_mma<128, 128, 64, 32, 4, 16, 16, ")


# ---------------------------------------------------------------- which kernel runs


def test_requested_kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POUW_CUDA_KERNEL", raising=False)
    assert cuda_mma.requested_kernel() == "triton"
    monkeypatch.setenv("POUW_CUDA_KERNEL", " CUDA ")
    assert cuda_mma.requested_kernel() == "cuda"
    monkeypatch.setenv("POUW_CUDA_KERNEL", "cutlass")
    with pytest.raises(ValueError, match="POUW_CUDA_KERNEL='cutlass'"):
        cuda_mma.requested_kernel()


def test_choose_kernel() -> None:
    assert choose_kernel("triton", 64, 16, 16) == ("triton", None)  # the default until a device says so
    assert choose_kernel("cuda", 64, 16, 16) == ("cuda", None)
    for r, h, w, why in [
        (16, 16, 16, "multiple of 32"),
        (64, 8, 8, "does not tile"),
        (64, 4, 8, "does not tile"),
        (64, 64, 32, "1 tiles per warp"),
        (64, 16, 24, "does not tile"),
    ]:
        kernel, reason = choose_kernel("cuda", r, h, w)
        assert kernel == "triton" and why in reason


# ---------------------------------------------------------------- the emulated kernel against the reference


@needs_gxx
@pytest.mark.parametrize(
    "m,k,n,r,h,w,seed",
    [
        (128, 32 * 17, 128, 32, 16, 16, 1),  # one block; 17 chunks wrap the 16 message slots
        (144, 64 * 3, 200, 64, 16, 8, 2),  # partial blocks in m and n; 16 tiles per warp
        (192, 128 * 2, 160, 128, 32, 16, 3),  # several k steps per chunk
        (64, 64 * 5, 96, 64, 16, 32, 4),
        (128, 32 * 3, 160, 32, 32, 32, 5),  # 2 tiles per warp: 16 lanes per tile, one word each
        (64, 32 * 4, 64, 32, 64, 16, 6),
    ],
)
def test_emulated_kernel_matches_reference(m: int, k: int, n: int, r: int, h: int, w: int, seed: int) -> None:
    a, b = operands(m, k, n, seed)
    c, msgs = cuda_mma.emulate(a, b, r, h, w)
    want_c, want_msgs = reference.noisy_matmul(a, b, r, h, w)
    assert torch.equal(c, want_c)
    assert torch.equal(msgs, want_msgs)


@needs_gxx
@pytest.mark.parametrize("geometry", cuda_mma.GEOMETRIES[1:])
@pytest.mark.parametrize("h,w", [(16, 16), (16, 64), (16, 8)])
def test_emulated_other_geometries(geometry: tuple[int, int, int, int], h: int, w: int) -> None:
    cfg = cuda_mma.MmaConfig(*geometry, stages=3, recover=1 + (h * w) % 3 % 2)  # both recovery modes
    a, b = operands(160, 64 * 3, 192, h * w)
    g = torch.Generator().manual_seed(3)
    u = torch.randint(-64, 64, (160, 2 * 128), dtype=torch.int8, generator=g)
    vt = torch.randint(-64, 64, (192, 2 * 128), dtype=torch.int8, generator=g)
    want_c, want_msgs = fast_reference(a, b, 64, h, w)
    c, msgs = cuda_mma.emulate(a, b, 64, h, w, config=cfg, correction=(u, vt, 2))
    assert torch.equal(c, recovered(want_c, u, vt, 2)) and torch.equal(msgs, want_msgs)


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POUW_CUDA_CONFIG", raising=False)
    assert cuda_mma.config_from_env() == cuda_mma.DEFAULT
    monkeypatch.setenv("POUW_CUDA_CONFIG", "64,128,32,64,3")
    assert cuda_mma.config_from_env() == cuda_mma.MmaConfig(64, 128, 32, 64, 3)
    monkeypatch.setenv("POUW_CUDA_CONFIG", "128,128,64,32,4,2")
    assert cuda_mma.config_from_env() == cuda_mma.MmaConfig(recover=2)
    for bad in ("128,256,64,64,3", "128,128,64,32", "128,128,64,32,9", "a,b,c,d,e", "128,128,64,32,4,3"):
        monkeypatch.setenv("POUW_CUDA_CONFIG", bad)
        with pytest.raises(ValueError, match="POUW_CUDA_CONFIG"):
            cuda_mma.config_from_env()


@needs_gxx
def test_emulated_kernel_many_blocks() -> None:
    """10 x 3 blocks: the grouped block order (block_of, 8 block rows a group, a partial last group) covers
    every block once (the emulator launches the programs in pid order and refuses a repeated block)."""
    a, b = operands(128 * 9 + 64, 32 * 3, 128 * 2 + 32, 13)
    got = cuda_mma.emulate(a, b, 32, 16, 16)
    want = fast_reference(a, b, 32, 16, 16)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_fast_reference_is_the_reference() -> None:
    a, b = operands(64, 32 * 18, 48, 14)
    want = reference.noisy_matmul(a, b, 32, 16, 8)
    got = fast_reference(a, b, 32, 16, 8)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_gxx
def test_emulated_kernel_extreme_operands() -> None:
    """All -128 / 127 operands: the largest |S_c| the int8 inputs allow, wrapped fold words included."""
    m, k, n, r = 128, 64 * 4, 64, 64
    a = torch.full((m, k), -128, dtype=torch.int8)
    b = torch.full((k, n), 127, dtype=torch.int8)
    a[::3] = 127
    assert [
        torch.equal(x, y) for x, y in zip(cuda_mma.emulate(a, b, r, 16, 16), reference.noisy_matmul(a, b, r, 16, 16))
    ] == [True, True]


@needs_gxx
def test_emulated_transcript_off_is_plain_gemm() -> None:
    a, b = operands(160, 32 * 6, 72, 7, -128, 128)
    c, msgs = cuda_mma.emulate(a, b, 32, 16, 8, transcript=False)
    assert torch.equal(c, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)) and not msgs.any()


@needs_gxx
@pytest.mark.parametrize("recover", [1, 2])
@pytest.mark.parametrize("digits", [1, 3])
def test_emulated_recovery_epilogue(digits: int, recover: int) -> None:
    m, k, n, r = 144, 64 * 3, 176, 64
    a, b = operands(m, k, n, 8)
    g = torch.Generator().manual_seed(9)
    u = torch.randint(-64, 64, (m, digits * 2 * r), dtype=torch.int8, generator=g)
    vt = torch.randint(-64, 64, (n, digits * 2 * r), dtype=torch.int8, generator=g)
    c, msgs = cuda_mma.emulate(a, b, r, 16, 16, correction=(u, vt, digits), config=cuda_mma.MmaConfig(recover=recover))
    c_noisy, want_msgs = reference.noisy_matmul(a, b, r, 16, 16)
    assert torch.equal(c, recovered(c_noisy, u, vt, digits))
    assert torch.equal(msgs, want_msgs)


def test_emulate_refuses_unsupported_shapes() -> None:
    a, b = operands(32, 64, 32, 1)
    with pytest.raises(ValueError, match="multiple of 32"):
        cuda_mma.emulate(a, b, 16, 16, 16)


# ---------------------------------------------------------------- on a GPU


def _cuda_kernel_runnable() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install cupy-cuda12x or cupy-cuda13x)"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_kernel_runnable() is not None, reason=str(_cuda_kernel_runnable()))
class TestOnDevice:
    @pytest.mark.parametrize(
        "m,k,n,r,h,w",
        [
            (128, 32 * 17, 128, 32, 16, 16),
            (144, 64 * 3, 200, 64, 16, 8),
            (64, 32 * 4, 64, 32, 64, 16),
            (264, 64 * 20, 200, 64, 16, 16),
        ],
    )
    def test_against_reference(self, m: int, k: int, n: int, r: int, h: int, w: int) -> None:
        a, b = operands(m, k, n, m + k + n)
        c, msgs = cuda_mma.noisy_matmul_mma(a.cuda(), b.cuda(), r, h, w)
        want = reference.noisy_matmul(a, b, r, h, w) if m * n * k < 2e7 else fast_reference(a, b, r, h, w)
        assert torch.equal(c.cpu(), want[0]) and torch.equal(msgs.cpu(), want[1])

    def test_against_triton_large_with_recovery(self) -> None:
        from kernels.triton_kernel import noisy_matmul_triton

        m = k = n = 1024
        a, b = (x.cuda() for x in operands(m, k, n, 11))
        g = torch.Generator().manual_seed(12)
        u = torch.randint(-64, 64, (m, 3 * 128), dtype=torch.int8, generator=g).cuda()
        vt = torch.randint(-64, 64, (n, 3 * 128), dtype=torch.int8, generator=g).cuda()
        for corr, cfg in (
            (None, cuda_mma.DEFAULT),
            ((u, vt, 3), cuda_mma.DEFAULT),
            ((u, vt, 3), cuda_mma.MmaConfig(recover=2)),
            ((u, vt, 3), cuda_mma.MmaConfig(64, 128, 32, 64, 3, recover=2)),
        ):
            got = cuda_mma.noisy_matmul_mma(a, b, 64, 16, 16, correction=corr, config=cfg)
            want = noisy_matmul_triton(a, b, 64, 16, 16, correction=corr)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), cfg
        c, msgs = cuda_mma.noisy_matmul_mma(a, b, 64, 16, 16, transcript=False)
        assert torch.equal(c, torch._int_mm(a, b)) and not msgs.any()


# ---------------------------------------------------------------- the device script, dry

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_gpu_check_script_parses_and_fails_cleanly_without_a_gpu(tmp_path) -> None:
    import subprocess

    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")], check=False).returncode == 0
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi present: the no-GPU path is not reachable here")
    p = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh")],
        env={**__import__("os").environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2 and "no NVIDIA GPU here" in (tmp_path / "summary.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_kernel_benchmark_without_a_device(tmp_path, capsys) -> None:
    from benchmarks import bench_cuda_kernel

    assert bench_cuda_kernel.main(["--sizes", "256", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "kernels.jsonl").exists()


def test_gpu_summary_of_a_run(tmp_path) -> None:
    from benchmarks import bench_cuda_kernel, gpu_summary

    (tmp_path / "gpu.txt").write_text("NVIDIA H200, 580.1, 143771 MiB\n")
    rows = [
        dict(what="time", kernel="int_mm", size=8192, ms=1.2, tops=916.3, exact=None),
        dict(what="time", kernel="triton transcript+recover", size=8192, ms=2.4, tops=458.1, exact=None),
        dict(what="time", kernel="cuda transcript+recover", size=8192, ms=1.6, tops=687.2, exact=True),
        dict(what="time", kernel="cuda plain", size=8192, ms=1.0, tops=1099.5, exact=False),
    ]
    bench_cuda_kernel.write_summary(tmp_path / "kernels.md", rows, "NVIDIA H200", "sm_90", "python -m x")
    mining = [
        {
            "size": 8192,
            "fused_kernel": k,
            "int_mm_ms": 1.2,
            "engine_gemm_ms": 1.1,
            "pouw_ms": ms,
            "pouw_tops": 1,
            "ratio": round(1.1 / ms, 3),
            "breakdown_ms": {"gemm": 1},
            "verify_ms": 1.8,
        }
        for k, ms in (("triton", 5.0), ("cuda", 4.0), ("triton", 4.0))
    ]
    mining[2]["async_pass"] = True  # the pipelined pass (POUW_CUDA_ASYNC=1), Triton kernel
    (tmp_path / "mining.jsonl").write_text("[bench] noise\n" + "\n".join(json.dumps(r) for r in mining) + "\n")
    md = gpu_summary.summary(tmp_path)
    assert "NVIDIA H200" in md and "GPU tests: MISSING" in md
    # the non-exact kernel gets no ratio; the exact one its ratio against the best exact plain GEMM, and speed-up
    assert "| 8192 | cuda plain | 1.0 | 1099.5 | False | – |  |" in md
    assert "| 8192 | cuda transcript+recover | 1.6 | 687.2 | True | 0.750 | 1.500 |" in md
    assert "pass with the CUDA kernel / with Triton = 1.250× faster" in md
    assert "| 8192 | triton + pipelined | 1.1 | 4.0 |" in md
    assert "pipelined pass (POUW_CUDA_ASYNC=1) / default = 1.250× faster" in md


def test_backend_dispatch_and_fallback(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """POUW_CUDA_KERNEL=cuda: the CUDA kernel for shapes it handles; Triton for the others and, for good, once
    CuPy is found missing; each reason logged once. (Both kernels are stubs here: this is the choice alone.)"""
    import kernels.cuda as kc
    import kernels.triton_kernel as tk

    calls: list[tuple] = []

    def mma(a, b, r, h, w, correction=None):
        calls.append(("cuda", r, h, w, correction))
        if r == 128:
            raise ImportError("the CUDA kernel needs CuPy")
        return "C", "msgs"

    def triton(a, b, r, h, w, correction=None):
        calls.append(("triton", r, h, w, correction))
        return "C", "msgs"

    monkeypatch.setattr(cuda_mma, "noisy_matmul_mma", mma)
    monkeypatch.setattr(tk, "noisy_matmul_triton", triton)
    monkeypatch.setattr(kc, "_WARNED", set())
    be = object.__new__(kc.CudaBackend)  # no device needed for the choice
    assert be.kernel == "triton"
    be._fused(None, None, 64, 16, 16)
    be.kernel = "cuda"
    be._fused(None, None, 64, 16, 16, correction="corr")
    be._fused(None, None, 64, 8, 8)
    be._fused(None, None, 64, 8, 8)
    be._fused(None, None, 128, 16, 16)  # CuPy "missing": Triton from now on
    be._fused(None, None, 64, 16, 16)
    assert [c[0] for c in calls] == ["triton", "cuda", "triton", "triton", "cuda", "triton", "triton"]
    assert calls[1] == ("cuda", 64, 16, 16, "corr") and be.kernel == "triton"
    warnings = [r.pouw_fields for r in caplog.records if "running the Triton kernel instead" in r.getMessage()]
    assert len(warnings) == 2 and "does not tile" in warnings[0]["why"] and "needs CuPy" in warnings[1]["why"]


@pytest.mark.skipif(
    cuda_mma.find_nvrtc() is None,
    reason="libnvrtc not found (POUW_NVRTC=path, or pip install nvidia-cuda-nvrtc): the run-time "
    "compile path is checked on the device only",
)
def test_nvrtc_compiles_like_the_runtime() -> None:
    """The exact text CuPy hands NVRTC at run time compiles for sm_80 and sm_90, every instance's name lowers,
    and ptxas (through NVRTC) reports no spills."""
    with ThreadPoolExecutor(2) as ex:
        results = dict(zip(("sm_80", "sm_90"), ex.map(cuda_mma.nvrtc_compile, ("sm_80", "sm_90"))))
    for arch, (ok, log, lowered) in results.items():
        assert ok, f"{arch}: NVRTC failed\n{log[-3000:]}"
        assert set(lowered) == set(cuda_mma.kernel_names(16, 16).values())
        infos = cuda_mma.parse_ptxas(log)
        assert sorted(i.function for i in infos) == sorted(lowered.values()), log
        assert all(i.spill_stores == 0 and i.spill_loads == 0 for i in infos), log
