"""The fused Triton kernel (kernels/triton_kernel.py) and the CUDA backend against kernels.reference, bit for bit.

Interpreter checks run in ONE child process with TRITON_INTERPRET=1: the variable must be set before triton is
imported and must not leak into the rest of the pytest process. The parent builds the operands, the child only
runs the kernel, and the parent compares with `kernels.reference` (C' and messages, exactly).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from triton_child import child_env

from kernels import reference
from kernels.base import MSG_WORDS, ROT, to_i32
from kernels.cuda import CudaBackend, cuda_available

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRITON = importlib.util.find_spec("triton") is not None
Results = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]  # id -> (a, b, C', msgs)
requires_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (pip install triton)")


@dataclass(frozen=True)
class Case:
    """One interpreter run: operand shapes and fill, contract parameters, launch-config overrides."""

    id: str
    m: int
    k: int
    n: int
    r: int
    h: int
    w: int
    fill: str = "random"  # random | pos | neg | pos_neg | signs | mostly_neg
    cfg: dict[str, Any] = field(default_factory=dict)
    transposed_views: bool = False
    transcript: bool = True  # False: the plain GEMM (messages stay zero)
    digits: int = 0  # > 0: fused recovery epilogue with this many random (U_i, V_i) pairs of width 2r

    def correction(self, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        return [
            (
                torch.randint(-64, 64, (self.m, 2 * self.r), generator=g, dtype=torch.int8),
                torch.randint(-64, 64, (2 * self.r, self.n), generator=g, dtype=torch.int8),
            )
            for _ in range(self.digits)
        ]

    def operands(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shape_a, shape_b = (self.m, self.k), (self.k, self.n)
        if self.fill == "random":  # the whole int8 range, -128 included
            a = torch.randint(-128, 128, shape_a, generator=g, dtype=torch.int8)
            b = torch.randint(-128, 128, shape_b, generator=g, dtype=torch.int8)
        elif self.fill == "signs":  # +-127 with random signs: large partial sums of both signs
            a = (torch.randint(0, 2, shape_a, generator=g) * 254 - 127).to(torch.int8)
            b = (torch.randint(0, 2, shape_b, generator=g) * 254 - 127).to(torch.int8)
        elif self.fill == "mostly_neg":  # A ~ +127, B ~ -127, a few signs flipped: big, varied, negative sums
            u, l = torch.meshgrid(torch.arange(self.m), torch.arange(self.k), indexing="ij")
            a = torch.where((u + 3 * l) % 4 == 0, -127, 127).to(torch.int8)
            l, v = torch.meshgrid(torch.arange(self.k), torch.arange(self.n), indexing="ij")
            b = torch.where((7 * l + v) % 5 == 0, 127, -127).to(torch.int8)
        else:
            va, vb = {"pos": (127, 127), "neg": (-127, -127), "pos_neg": (127, -127)}[self.fill]
            a = torch.full(shape_a, va, dtype=torch.int8)
            b = torch.full(shape_b, vb, dtype=torch.int8)
        if self.transposed_views:  # non-contiguous operands with the same values
            a = a.t().contiguous().t()
            b = b.t().contiguous().t()
        return a, b


# Interpreter default blocks are 32x32 (BLOCK_K = r); fold_reduce=False is its default (vectorized XOR tree).
CASES = [
    Case("r32-4x8-n-ragged", 32, 64, 24, 32, 4, 8),
    Case("r64-8x8-mn-ragged", 48, 128, 40, 64, 8, 8),
    Case("r32-16x16", 64, 96, 48, 32, 16, 16),
    Case("r64-16x16-small-m", 16, 128, 16, 64, 16, 16),
    Case("r32-4x8-wrap-20-chunks", 24, 32 * 20, 16, 32, 4, 8),
    Case("r64-8x8-wrap-18-chunks-pos", 32, 64 * 18, 32, 64, 8, 8, fill="pos"),
    Case("r32-4x8-all-neg", 24, 32 * 17, 40, 32, 4, 8, fill="neg"),
    Case("r64-16x16-pos-neg", 48, 64 * 17, 32, 64, 16, 16, fill="pos_neg"),
    Case("r32-8x8-signs", 40, 32 * 18, 24, 32, 8, 8, fill="signs"),
    Case("r32-4x8-mostly-neg", 16, 32 * 17, 24, 32, 4, 8, fill="mostly_neg"),
    Case("r128-4x8-16x16-blocks", 40, 256, 24, 128, 4, 8, cfg={"block_m": 16, "block_n": 16}),
    Case("r64-bk32-two-steps-per-chunk", 24, 64 * 17, 24, 64, 8, 8, cfg={"block_k": 32}),
    Case("r32-8x8-64x16-blocks-grouped", 72, 64, 40, 32, 8, 8, cfg={"block_m": 64, "block_n": 16, "group_m": 2}),
    Case("r32-4x8-non-contiguous", 24, 96, 16, 32, 4, 8, transposed_views=True),
    # The GPU fold (tl.reduce; slow under the interpreter, so tiny): same bits as the XOR tree.
    Case("r32-4x8-tl-reduce", 24, 32 * 17, 16, 32, 4, 8, cfg={"block_m": 16, "block_n": 16, "fold_reduce": True}),
    Case(
        "r64-16x16-tl-reduce-signs",
        16,
        128,
        32,
        64,
        16,
        16,
        fill="signs",
        cfg={"block_m": 16, "block_n": 16, "fold_reduce": True},
    ),
    # The in-thread-first fold (tiles >= 8x8): same bits again.
    Case(
        "r32-8x8-split-fold-signs",
        16,
        32 * 17,
        16,
        32,
        8,
        8,
        fill="signs",
        cfg={"block_m": 16, "block_n": 16, "fold_reduce": True, "fold_split": True},
    ),
    # Transcript off: C' alone.
    Case("r32-4x8-plain", 40, 32 * 3, 24, 32, 4, 8, transcript=False),
    # Fused recovery epilogue: C = C' - sum_i 128^i U_i V_i (1 and 3 digits; ragged edges; BLOCK_K < 2r).
    Case("r32-4x8-recover-1-digit", 40, 32 * 17, 24, 32, 4, 8, digits=1),
    Case("r64-8x8-recover-3-digits-signs", 48, 64 * 2, 40, 64, 8, 8, fill="signs", digits=3, cfg={"block_k": 32}),
]

_CHILD = """
import sys
from dataclasses import replace
import torch
from kernels.triton_kernel import default_config, interpreting, noisy_matmul_triton
assert interpreting(), "TRITON_INTERPRET did not take effect"
cases = torch.load(sys.argv[1])
out = []
for c in cases:
    cfg = replace(default_config(c["r"], c["h"], c["w"]), **c["cfg"])
    out.append(noisy_matmul_triton(c["a"], c["b"], c["r"], c["h"], c["w"], config=cfg,
                                   transcript=c["transcript"], correction=c["corr"]))
torch.save(out, sys.argv[2])
"""


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """Runs every Case through the interpreter in one child process; maps case id -> (a, b, c, msgs)."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    tmp = tmp_path_factory.mktemp("triton_interp")
    operands = [c.operands(seed=1000 + i) for i, c in enumerate(CASES)]
    payload = [
        {
            "a": a,
            "b": b,
            "r": c.r,
            "h": c.h,
            "w": c.w,
            "cfg": c.cfg,
            "transcript": c.transcript,
            "corr": packed(c.correction(seed=2000 + i)) if c.digits else None,
        }
        for i, (c, (a, b)) in enumerate(zip(CASES, operands))
    ]
    torch.save(payload, tmp / "in.pt")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp / "in.pt"), str(tmp / "out.pt")],
        env=child_env(TRITON_INTERPRET="1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"interpreter child failed:\n{proc.stdout}\n{proc.stderr}"
    outs = torch.load(tmp / "out.pt")
    return {c.id: (a, b, co, mo) for c, (a, b), (co, mo) in zip(CASES, operands, outs)}


def packed(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(U, V^T, digits) as `kernels.triton_kernel.pack_correction` builds them (kept here so that the parent
    process never imports triton)."""
    return (
        torch.cat([u for u, _ in pairs], 1).contiguous(),
        torch.cat([v.t() for _, v in pairs], 1).contiguous(),
        len(pairs),
    )


def expected(case: Case, a: torch.Tensor, b: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the kernel must return for `case`: the reference (C', messages), with the transcript and the
    recovery epilogue applied as the case asks (int64 arithmetic, wrapped to int32 at the end)."""
    c, msgs = reference.noisy_matmul(a, b, case.r, case.h, case.w)
    if not case.transcript:
        msgs = torch.zeros_like(msgs)
    if case.digits:
        c64 = c.to(torch.int64)
        for i, (u, v) in enumerate(case.correction(seed)):
            c64 -= (128**i) * (u.to(torch.int64) @ v.to(torch.int64))
        c = to_i32(c64)
    return c, msgs


def fast_reference(a: torch.Tensor, b: torch.Tensor, r: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorized (int64 chunk products, numpy XOR reduce) version of the contract, for shapes too big for
    kernels.reference; checked against it below."""
    m, k = a.shape
    n = b.shape[1]
    a64, b64 = a.to(torch.int64), b.to(torch.int64)
    s = torch.zeros((m, n), dtype=torch.int64)
    msgs = np.zeros((m // h, n // w, MSG_WORDS), dtype=np.uint64)
    for c in range(k // r):
        s += a64[:, c * r : (c + 1) * r] @ b64[c * r : (c + 1) * r]
        u = (s & 0xFFFFFFFF).numpy().astype(np.uint64).reshape(m // h, h, n // w, w)
        x = np.bitwise_xor.reduce(u, axis=(1, 3))
        old = msgs[..., c % MSG_WORDS]
        msgs[..., c % MSG_WORDS] = (((old << ROT) | (old >> (32 - ROT))) & 0xFFFFFFFF) ^ x
    return to_i32(s), to_i32(torch.from_numpy(msgs.astype(np.int64)))


def assert_same(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> None:
    (c, msgs), (c_ref, msgs_ref) = got, want
    assert c.dtype == torch.int32 and msgs.dtype == torch.int32
    assert c.shape == c_ref.shape and msgs.shape == msgs_ref.shape
    assert torch.equal(c, c_ref), f"C' differs at {(c != c_ref).nonzero()[:5].tolist()}"
    assert torch.equal(msgs, msgs_ref), f"messages differ at {(msgs != msgs_ref).nonzero()[:5].tolist()}"


@requires_triton
class TestInterpreter:
    @pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
    def test_bit_identical_to_reference(self, case: Case, interpreter_results: Results) -> None:
        a, b, c, msgs = interpreter_results[case.id]
        assert c.device.type == "cpu" and msgs.device.type == "cpu"
        assert_same((c, msgs), expected(case, a, b, seed=2000 + CASES.index(case)))

    def test_recovery_changes_the_result(self, interpreter_results: Results) -> None:
        """The epilogue is not a no-op: with it, C differs from C' (and the messages, of C', do not)."""
        for cid in ("r32-4x8-recover-1-digit", "r64-8x8-recover-3-digits-signs"):
            case = next(c for c in CASES if c.id == cid)
            a, b, c, msgs = interpreter_results[cid]
            c_noisy, msgs_ref = reference.noisy_matmul(a, b, case.r, case.h, case.w)
            assert not torch.equal(c, c_noisy) and torch.equal(msgs, msgs_ref)

    def test_extreme_cases_hit_interesting_bits(self, interpreter_results: Results) -> None:
        """The extreme fills reach +-127*127*k and give messages with the top bit set.

        (A constant tile XORs to 0 because every tile has an even number of entries, so the messages of
        the constant fills are all zero: the signs / mostly_neg fills exercise the message bits.)
        """
        _, _, c, _ = interpreter_results["r32-4x8-all-neg"]
        assert (c == 127 * 127 * 32 * 17).all()
        _, _, c, _ = interpreter_results["r64-16x16-pos-neg"]
        assert (c == -127 * 127 * 64 * 17).all()
        _, _, c, msgs = interpreter_results["r32-4x8-mostly-neg"]
        assert (c < 0).all() and (msgs != 0).any()
        _, _, c, msgs = interpreter_results["r32-8x8-signs"]
        assert (c < 0).any() and (c > 0).any() and (msgs < 0).any() and (msgs > 0).any()


@requires_triton
def test_config_override_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernels.triton_kernel import BlockConfig, default_config

    monkeypatch.setenv("POUW_TRITON_CONFIG", "128,256,64,8,3,0")
    assert default_config(64, 16, 16, interpret=False) == BlockConfig(128, 256, 64, 8, 8, 3, True, False)
    assert default_config(32, 4, 8, interpret=False).block_k == 32  # never above r
    monkeypatch.setenv("POUW_TRITON_CONFIG", "128,256")
    with pytest.raises(ValueError, match="six integers"):
        default_config(64, 16, 16, interpret=False)
    monkeypatch.delenv("POUW_TRITON_CONFIG")
    assert default_config(64, 16, 16, interpret=False).fold_split


@requires_triton
def test_config_validation() -> None:
    from kernels.triton_kernel import BlockConfig, _check_config, default_config

    _check_config(default_config(64, 16, 16, interpret=False), 64, 16, 16)
    _check_config(default_config(32, 4, 8, interpret=True), 32, 4, 8)
    with pytest.raises(ValueError, match="multiple of the tile"):
        _check_config(BlockConfig(8, 32, 32), 32, 16, 16)
    with pytest.raises(ValueError, match="does not divide"):
        _check_config(BlockConfig(32, 32, 64), 32, 4, 8)
    with pytest.raises(ValueError, match="power of two"):
        _check_config(BlockConfig(48, 32, 32), 32, 4, 8)


def test_fast_reference_matches_reference() -> None:
    g = torch.Generator().manual_seed(7)
    for m, k, n, r, h, w in [(16, 32 * 18, 16, 32, 4, 8), (32, 128, 16, 64, 16, 16)]:
        a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
        assert_same(fast_reference(a, b, r, h, w), reference.noisy_matmul(a, b, r, h, w))


def test_imports_do_not_pull_in_triton() -> None:
    code = (
        "import sys, kernels, kernels.base, kernels.cuda, pouw.miner; "
        "assert 'triton' not in sys.modules, 'triton imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "module", ["kernels.triton_kernel", "kernels.triton_sha256", "kernels.triton_noise", "kernels.triton_chacha"]
)
def test_missing_triton_raises_import_error(module: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['triton'] = None  # makes 'import triton' fail as if it were not installed\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__)\n"
        "else:\n"
        "    raise SystemExit('imported without triton')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "TritonUnavailableError"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
class TestCudaBackend:
    @pytest.fixture(scope="class")
    def backend(self) -> CudaBackend:
        if not cuda_available():
            pytest.skip("triton is not installed (pip install triton)")
        return CudaBackend("cuda:0")

    def test_medium_against_reference(self, backend: CudaBackend) -> None:
        g = torch.Generator().manual_seed(3)
        m, k, n = 136, 64 * 18, 72  # m, n not multiples of the 128x128 blocks; 18 chunks wrap the slots
        a = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8)
        b = torch.randint(-127, 128, (k, n), generator=g, dtype=torch.int8)
        got = backend.noisy_mm(a, b, 64, 8, 8)
        assert got[0].device == backend.device and got[1].device == backend.device
        assert_same((got[0].cpu(), got[1].cpu()), reference.noisy_matmul(a, b, 64, 8, 8))

    @pytest.mark.parametrize(
        "m,k,n,r,h,w,fill",
        [
            (520, 32 * 40, 392, 32, 4, 8, "random"),
            (384, 128 * 17, 256, 128, 16, 16, "signs"),
            (264, 64 * 20, 136, 64, 8, 8, "pos_neg"),
            (256, 128 * 32, 256, 128, 4, 8, "signs"),
        ],
    )
    def test_large_against_fast_reference(
        self, backend: CudaBackend, m: int, k: int, n: int, r: int, h: int, w: int, fill: str
    ) -> None:
        a, b = Case("gpu", m, k, n, r, h, w, fill=fill).operands(seed=m + k + n)
        c, msgs = backend.noisy_mm(a, b, r, h, w)
        assert_same((c.cpu(), msgs.cpu()), fast_reference(a, b, r, h, w))

    def test_other_configs_on_gpu(self, backend: CudaBackend) -> None:
        from kernels.triton_kernel import BlockConfig, noisy_matmul_triton

        a, b = Case("gpu", 200, 64 * 17, 96, 64, 8, 8, fill="signs").operands(seed=5)
        want = fast_reference(a, b, 64, 8, 8)
        for cfg in [
            BlockConfig(64, 64, 32, num_warps=4, num_stages=4),
            BlockConfig(128, 128, 64, fold_reduce=False),
            BlockConfig(64, 128, 64, group_m=4, num_warps=4),
            BlockConfig(128, 128, 64, fold_split=True),
            BlockConfig(64, 128, 64, num_warps=4, num_stages=4, fold_split=True),
            BlockConfig(128, 256, 64, num_warps=8, fold_split=True),
        ]:
            c, msgs = noisy_matmul_triton(a.to(backend.device), b.to(backend.device), 64, 8, 8, config=cfg)
            assert_same((c.cpu(), msgs.cpu()), want)

    @pytest.mark.parametrize("digits", [1, 3])
    def test_fused_recovery_on_gpu(self, backend: CudaBackend, digits: int) -> None:
        case = Case("gpu-recover", 264, 64 * 20, 200, 64, 8, 8, fill="signs", digits=digits)
        a, b = case.operands(seed=9)
        pairs = case.correction(seed=10)
        c, msgs = backend.noisy_mm_recover(a.to(backend.device), b.to(backend.device), 64, 8, 8, pairs)
        c_noisy, want_msgs = fast_reference(a, b, 64, 8, 8)
        c64 = c_noisy.to(torch.int64)
        for i, (u, v) in enumerate(pairs):
            c64 -= (128**i) * (u.to(torch.int64) @ v.to(torch.int64))
        assert_same((c.cpu(), msgs.cpu()), (to_i32(c64), want_msgs))

    def test_plain_kernel_on_gpu(self, backend: CudaBackend) -> None:
        from kernels.triton_kernel import noisy_matmul_triton

        a, b = Case("gpu", 384, 64 * 20, 256, 64, 16, 16).operands(seed=12)
        c, msgs = noisy_matmul_triton(a.to(backend.device), b.to(backend.device), 64, 16, 16, transcript=False)
        assert torch.equal(c.cpu(), (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)) and not msgs.any()

    @pytest.mark.parametrize("m,k,n", [(5, 12, 3), (17, 8, 8), (64, 100, 30), (256, 512, 384)])
    def test_plain_matmul(self, backend: CudaBackend, m: int, k: int, n: int) -> None:
        g = torch.Generator().manual_seed(m * k * n)
        a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        b = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
        c = backend.mm(a, b)
        assert c.device == backend.device and c.dtype == torch.int32
        c = c.cpu()
        assert torch.equal(c, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))
