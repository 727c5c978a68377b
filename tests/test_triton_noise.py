"""The Triton noise kernels (kernels/triton_noise.py) against pouw.noise_torch.noisy_operands, entry for entry.

Interpreter checks run in ONE child process with TRITON_INTERPRET=1 (the variable must be set before triton is
imported and must not leak into the rest of the pytest process). The parent builds the operands and the noise,
the child only runs the kernels, and the parent compares with `noisy_operands` (the CPU path). The interpreter
default blocks are 16x32 (A) and 32x16 (B), so the small shapes below span several blocks with ragged edges.
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

from kernels.base import ShapeError
from kernels.cpu import int_mm
from pouw.job import JobCommitment
from pouw.noise import derive_seeds
from pouw.noise_torch import Noise, full_noise, noisy_operands

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRITON = importlib.util.find_spec("triton") is not None
requires_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (pip install triton)")


def seeded_noise(m: int, k: int, n: int, r: int, tag: bytes) -> Noise:
    """The protocol's noise for a made-up job: seeds from derive_seeds, factors and maps from full_noise. When k
    is not a multiple of r (ragged kernel blocks), the maps of the next multiple of r, cut to k."""
    kk = -(-k // r) * r
    job = JobCommitment(bytes([1]) * 32, bytes([2]) * 32, m, kk, n)
    nz = full_noise(derive_seeds(b"template-" + tag, job), m, kk, n, r)
    return Noise(nz.e_l, nz.f_r, tuple(x[:k].copy() for x in nz.maps))


def random_noise(m: int, k: int, n: int, r: int, seed: int) -> Noise:
    """Random factors in [-32, 31] and random maps (any indices in [0, r): the kernels' contract)."""
    g = torch.Generator().manual_seed(seed)
    e_l = torch.randint(-32, 32, (m, r), generator=g, dtype=torch.int8)
    f_r = torch.randint(-32, 32, (r, n), generator=g, dtype=torch.int8)
    return Noise(e_l, f_r, tuple(torch.randint(0, r, (k,), generator=g).numpy() for _ in range(2)))


@dataclass(frozen=True)
class Case:
    """One interpreter run: shapes, where the noise comes from, how the inputs are handed over."""

    id: str
    m: int
    k: int
    n: int
    r: int
    noise: str = "seeds"  # seeds | random
    operands: str = "protocol"  # protocol: [-64, 64] (sums fit int8) | full: [-128, 127] (sums wrap)
    cfg: dict[str, Any] = field(default_factory=dict)  # NoiseConfig overrides
    index_kind: str = "numpy"  # numpy (int64 arrays, as Noise.maps) | torch64 | torch32 (CPU tensors)
    transposed_views: bool = False  # non-contiguous a, b, e_l, f_r with the same values

    def build(self, seed: int) -> tuple[torch.Tensor, torch.Tensor, Noise]:
        g = torch.Generator().manual_seed(seed)
        lo, hi = (-64, 65) if self.operands == "protocol" else (-128, 128)
        a = torch.randint(lo, hi, (self.m, self.k), generator=g, dtype=torch.int8)
        b = torch.randint(lo, hi, (self.k, self.n), generator=g, dtype=torch.int8)
        if self.noise == "seeds":
            nz = seeded_noise(self.m, self.k, self.n, self.r, self.id.encode())
        else:
            nz = random_noise(self.m, self.k, self.n, self.r, seed)
        return a, b, nz


GATHER = {"a_mode": "gather", "b_mode": "gather"}
# The interpreter's default config uses the GPU default modes (a_mode "dot", b_mode "gather"); the cases with
# GATHER, "trans" and b_mode "dot" cover the other modes.
CASES = [
    Case("r64-seeds-all-ragged", 40, 100, 24, 64),
    Case("r64-seeds-all-ragged-gather", 40, 100, 24, 64, cfg=GATHER),
    Case("r32-seeds-exact-blocks", 48, 64, 32, 32),
    Case("r16-random-ragged", 17, 33, 15, 16, noise="random"),
    Case("r16-random-ragged-gather", 17, 33, 15, 16, noise="random", cfg=GATHER),
    Case("r16-seeds-one-block-each", 16, 32, 16, 16),
    Case("r32-random-tiny-1x1x1", 1, 1, 1, 32, noise="random"),
    Case("r32-random-tiny-1x1x1-gather", 1, 1, 1, 32, noise="random", cfg=GATHER),
    Case("r64-random-single-row-col", 1, 70, 1, 64, noise="random"),
    Case("r64-seeds-tall-k", 9, 200, 7, 64),
    Case("r32-random-full-range-wraps", 24, 48, 20, 32, noise="random", operands="full"),
    Case("r32-random-full-range-gather", 24, 48, 20, 32, noise="random", operands="full", cfg=GATHER),
    Case("r64-seeds-torch-int64-indices", 20, 40, 18, 64, index_kind="torch64"),
    Case("r16-random-torch-int32-indices", 20, 40, 18, 16, noise="random", index_kind="torch32"),
    Case("r32-seeds-non-contiguous", 24, 50, 20, 32, transposed_views=True),
    Case("r32-seeds-non-contiguous-gather", 24, 50, 20, 32, transposed_views=True, cfg=GATHER),
    Case(
        "r64-seeds-8x64-64x8-blocks-gather",
        20,
        130,
        12,
        64,
        cfg={"a_block_m": 8, "a_block_k": 64, "b_block_k": 64, "b_block_n": 8, **GATHER},
    ),
    Case(
        "r32-random-64x16-16x64-blocks",
        70,
        40,
        66,
        32,
        noise="random",
        cfg={"a_block_m": 64, "a_block_k": 16, "b_block_k": 16, "b_block_n": 64, "num_warps": 2},
    ),
    Case("r16-seeds-m-zero", 0, 40, 10, 16, noise="random"),
    Case("r16-seeds-n-zero", 10, 40, 0, 16, noise="random"),
    # The other ways of forming the noise block: same results.
    Case("r64-seeds-ragged-trans-dot", 40, 100, 24, 64, cfg={"a_mode": "trans", "b_mode": "dot"}),
    Case("r16-random-ragged-dot-dot", 17, 33, 15, 16, noise="random", cfg={"a_mode": "dot", "b_mode": "dot"}),
    Case("r8-seeds-dot-pads-rank", 20, 70, 18, 8, cfg={"a_mode": "dot", "b_mode": "dot"}),
    Case("r8-random-gather", 20, 70, 18, 8, noise="random", cfg=GATHER),
    Case("r256-seeds-dot", 18, 40, 20, 256, cfg={"a_mode": "dot", "b_mode": "dot"}),
    Case(
        "r32-random-full-range-trans-dot",
        24,
        48,
        20,
        32,
        noise="random",
        operands="full",
        cfg={"a_mode": "trans", "b_mode": "dot"},
    ),
    Case("r32-random-full-range-dot", 24, 48, 20, 32, noise="random", operands="full", cfg={"a_mode": "dot"}),
    Case(
        "r32-seeds-non-contiguous-trans-dot",
        24,
        50,
        20,
        32,
        transposed_views=True,
        cfg={"a_mode": "trans", "b_mode": "dot"},
    ),
    Case(
        "r64-random-32x16-16x32-trans-dot",
        70,
        40,
        66,
        64,
        noise="random",
        cfg={"a_block_m": 32, "a_block_k": 16, "b_block_k": 16, "b_block_n": 32, "a_mode": "trans", "b_mode": "dot"},
    ),
]

_CHILD = """
import sys
from dataclasses import replace
import torch
from kernels.triton_noise import add_noise_triton, default_noise_config, interpreting
assert interpreting(), "TRITON_INTERPRET did not take effect"
cases = torch.load(sys.argv[1])
out = []
for c in cases:
    idx = c["idx"]
    if c["index_kind"] == "numpy":
        idx = [t.numpy() for t in idx]
    elif c["index_kind"] == "torch32":
        idx = [t.to(torch.int32) for t in idx]
    a, b, e_l, f_r = c["a"], c["b"], c["e_l"], c["f_r"]
    if c["transposed_views"]:
        a, b, e_l, f_r = (t.t().contiguous().t() for t in (a, b, e_l, f_r))
        assert not a.is_contiguous() and not b.is_contiguous()
    cfg = replace(default_noise_config(), **c["cfg"])
    a2, b2 = add_noise_triton(a, b, e_l, f_r, *idx, config=cfg)
    out.append({"a2": a2, "b2": b2.contiguous(), "a2_contiguous": a2.is_contiguous(),
                "b2_t_contiguous": b2.t().is_contiguous(), "b2_stride": list(b2.stride())})
torch.save(out, sys.argv[2])
"""


Results = dict[str, tuple[torch.Tensor, torch.Tensor, Noise, dict[str, Any]]]  # id -> (a, b, noise, child output)


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """Runs every Case through the interpreter in one child process."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    tmp = tmp_path_factory.mktemp("triton_noise")
    built = [c.build(seed=3000 + i) for i, c in enumerate(CASES)]
    payload = [
        {
            "a": a,
            "b": b,
            "e_l": nz.e_l,
            "f_r": nz.f_r,
            "idx": [torch.from_numpy(x) for x in nz.maps],
            "index_kind": c.index_kind,
            "transposed_views": c.transposed_views,
            "cfg": c.cfg,
        }
        for c, (a, b, nz) in zip(CASES, built)
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
    return {c.id: (a, b, nz, o) for c, (a, b, nz), o in zip(CASES, built, outs)}


def assert_same(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> None:
    for name, g, w in zip(("A'", "B'"), got, want):
        assert g.dtype == torch.int8 and g.shape == w.shape, (name, g.dtype, g.shape, w.shape)
        assert torch.equal(g, w), f"{name} differs at {(g != w).nonzero()[:5].tolist()}"


@requires_triton
class TestInterpreter:
    @pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
    def test_identical_to_noisy_operands(self, case: Case, interpreter_results: Results) -> None:
        a, b, nz, out = interpreter_results[case.id]
        assert out["a2"].device.type == "cpu"
        assert out["a2_contiguous"] and out["b2_t_contiguous"]
        assert_same((out["a2"], out["b2"]), noisy_operands(a, b, nz, int_mm))

    @pytest.mark.parametrize("case", [c for c in CASES if c.k > 1 and c.n > 1], ids=lambda c: c.id)
    def test_b2_is_a_view_of_k_major_buffer(self, case: Case, interpreter_results: Results) -> None:
        assert interpreter_results[case.id][3]["b2_stride"] == [1, case.k]

    def test_noise_is_really_added(self, interpreter_results: Results) -> None:
        """Sanity: the noise changes most entries, and the full-range case really wraps past int8."""
        a, b, nz, out = interpreter_results["r64-seeds-all-ragged"]
        assert (out["a2"] != a).float().mean() > 0.8 and (out["b2"] != b).float().mean() > 0.8
        a, b, nz, out = interpreter_results["r32-random-full-range-wraps"]
        e = nz.e_l.to(torch.int32) @ nz.p_mat.to(torch.int32)
        assert ((a.to(torch.int32) + e).abs() > 127).any(), "no entry wraps: the case tests nothing extra"


# ------------------------------------------------------------------------------------------------ validation


def _good() -> dict[str, Any]:
    m, k, n, r = 6, 10, 5, 16
    nz = random_noise(m, k, n, r, seed=1)
    return {
        "a": torch.zeros((m, k), dtype=torch.int8),
        "b": torch.zeros((k, n), dtype=torch.int8),
        "e_l": nz.e_l,
        "f_r": nz.f_r,
        "p_a": nz.maps[0],
        "p_b": nz.maps[1],
    }


def _with(**over: Any) -> dict[str, Any]:
    return {**_good(), **over}


def _bad_index(value: int) -> np.ndarray:
    p = _good()["p_a"].copy()
    p[3] = value
    return p


VALIDATION = [
    ("a-not-tensor", lambda: _with(a=np.zeros((6, 10), dtype=np.int8)), ShapeError, "a must be a torch tensor"),
    ("a-dtype", lambda: _with(a=torch.zeros((6, 10), dtype=torch.int16)), ShapeError, "a must be int8"),
    ("b-dtype", lambda: _with(b=torch.zeros((10, 5), dtype=torch.int32)), ShapeError, "b must be int8"),
    ("e_l-dtype", lambda: _with(e_l=_good()["e_l"].to(torch.int16)), ShapeError, "e_l must be int8"),
    ("f_r-dtype", lambda: _with(f_r=_good()["f_r"].float()), ShapeError, "f_r must be int8"),
    ("a-3d", lambda: _with(a=torch.zeros((6, 10, 1), dtype=torch.int8)), ShapeError, "a must be 2-D"),
    ("b-1d", lambda: _with(b=torch.zeros(50, dtype=torch.int8)), ShapeError, "b must be 2-D"),
    ("b-rows", lambda: _with(b=torch.zeros((9, 5), dtype=torch.int8)), ShapeError, "need b.shape"),
    ("e_l-rows", lambda: _with(e_l=torch.zeros((7, 16), dtype=torch.int8)), ShapeError, "e_l must have m=6 rows"),
    ("f_r-cols", lambda: _with(f_r=torch.zeros((16, 4), dtype=torch.int8)), ShapeError, "f_r must have n=5 columns"),
    ("rank-mismatch", lambda: _with(f_r=torch.zeros((32, 5), dtype=torch.int8)), ShapeError, "rank mismatch"),
    (
        "rank-zero",
        lambda: _with(e_l=torch.zeros((6, 0), dtype=torch.int8), f_r=torch.zeros((0, 5), dtype=torch.int8)),
        ShapeError,
        "rank r must be positive",
    ),
    ("index-length", lambda: _with(p_a=_good()["p_a"][:-1]), ShapeError, "p_a must be a vector of length k=10"),
    ("index-2d", lambda: _with(p_b=_good()["p_b"].reshape(2, 5)), ShapeError, "p_b must be a vector"),
    ("index-too-big", lambda: _with(p_a=_bad_index(16)), ShapeError, r"p_a values must lie in \[0, 16\)"),
    ("index-negative", lambda: _with(p_b=_bad_index(-1)), ShapeError, r"p_b values must lie in \[0, 16\)"),
    ("index-torch-too-big", lambda: _with(p_b=torch.from_numpy(_bad_index(99))), ShapeError, "p_b values must lie"),
    ("index-float", lambda: _with(p_a=_good()["p_a"].astype(np.float64)), ShapeError, "p_a must hold integers"),
    ("index-torch-float", lambda: _with(p_b=torch.zeros(10)), ShapeError, "p_b must hold integers"),
    (
        "device-mismatch",
        lambda: _with(f_r=torch.zeros((16, 5), dtype=torch.int8, device="meta")),
        ValueError,
        "f_r is on meta but a is on cpu",
    ),
]


@requires_triton
@pytest.mark.parametrize("make,exc,match", [v[1:] for v in VALIDATION], ids=[v[0] for v in VALIDATION])
def test_input_validation(make, exc: type[Exception], match: str) -> None:
    from kernels.triton_noise import add_noise_triton

    with pytest.raises(exc, match=match):
        add_noise_triton(**make())


@requires_triton
def test_shape_errors_are_value_errors_and_block_sizes_checked() -> None:
    from kernels.triton_noise import NoiseConfig, add_noise_triton

    assert issubclass(ShapeError, ValueError)
    with pytest.raises(ValueError, match="a_block_k=48 must be a power of two"):
        add_noise_triton(**_good(), config=NoiseConfig(16, 48, 32, 16))
    with pytest.raises(ValueError, match="num_warps=3 must be a power of two"):
        add_noise_triton(**_good(), config=NoiseConfig(16, 32, 32, 16, num_warps=3))
    with pytest.raises(ValueError, match="a_mode must be one of"):
        add_noise_triton(**_good(), config=NoiseConfig(16, 32, 32, 16, a_mode="mma"))
    with pytest.raises(ValueError, match="a_mode must be one of"):
        add_noise_triton(**_good(), config=NoiseConfig(16, 32, 32, 16, b_mode="trans"))
    with pytest.raises(ValueError, match="sides >= 16"):
        add_noise_triton(**_good(), config=NoiseConfig(8, 32, 32, 16, a_mode="dot"))
    with pytest.raises(ValueError, match="sides >= 16"):
        add_noise_triton(**_good(), config=NoiseConfig(16, 32, 32, 8, b_mode="dot"))


@requires_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="this process could run the kernel on the GPU")
def test_cpu_tensors_need_the_interpreter() -> None:
    from kernels.triton_noise import add_noise_triton, interpreting

    assert not interpreting()
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        add_noise_triton(**_good())


@requires_triton
def test_default_configs_are_powers_of_two() -> None:
    from kernels.triton_noise import default_noise_config

    for interpret in (False, True):
        cfg = default_noise_config(interpret)
        for v in (cfg.a_block_m, cfg.a_block_k, cfg.b_block_k, cfg.b_block_n, cfg.num_warps):
            assert v > 0 and v & (v - 1) == 0


# ------------------------------------------------------------------------------------------------ real GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
class TestCuda:
    @pytest.fixture(scope="class")
    def add_noise(self):
        if not HAVE_TRITON:
            pytest.skip("triton is not installed (pip install triton)")
        from kernels.triton_noise import add_noise_triton

        return add_noise_triton

    @staticmethod
    def _operands(m: int, k: int, n: int, seed: int, lo: int = -64, hi: int = 65, device: str = "cpu"):
        g = torch.Generator(device=device).manual_seed(seed)
        a = torch.randint(lo, hi, (m, k), generator=g, dtype=torch.int8, device=device)
        b = torch.randint(lo, hi, (k, n), generator=g, dtype=torch.int8, device=device)
        return a, b

    @pytest.mark.parametrize("m,k,n,r", [(1024, 2048, 768, 64), (1000, 2000, 700, 32), (129, 257, 65, 16)])
    def test_against_cpu_noisy_operands(self, add_noise, m: int, k: int, n: int, r: int) -> None:
        a, b = self._operands(m, k, n, seed=m + k + n)
        nz = seeded_noise(m, k, n, r, b"gpu")
        a2, b2 = add_noise(a.cuda(), b.cuda(), nz.e_l.cuda(), nz.f_r.cuda(), *nz.maps)
        assert a2.device.type == "cuda" and a2.is_contiguous() and b2.t().is_contiguous()
        assert_same((a2.cpu(), b2.cpu()), noisy_operands(a, b, nz, int_mm))

    @pytest.mark.parametrize("r", [64, 8])
    def test_other_configs_cuda_indices_and_wrapping(self, add_noise, r: int) -> None:
        from kernels.triton_noise import NoiseConfig

        m, k, n = 300, 520, 200
        a, b = self._operands(m, k, n, seed=9, lo=-128, hi=128)  # full range: sums wrap like .to(int8)
        nz = random_noise(m, k, n, r, seed=9)
        want = noisy_operands(a, b, nz, int_mm)
        idx = [torch.from_numpy(x).cuda() for x in nz.maps]
        for cfg in [
            None,
            NoiseConfig(32, 256, 64, 128),
            NoiseConfig(128, 64, 32, 32, num_warps=8),
            NoiseConfig(16, 128, 128, 16, num_warps=2),
            NoiseConfig(64, 128, 128, 64, a_mode="trans", b_mode="dot"),
            NoiseConfig(64, 128, 128, 64, a_mode="dot", b_mode="gather"),
            NoiseConfig(32, 256, 64, 128, num_warps=8, a_mode="dot", b_mode="dot"),
            NoiseConfig(16, 256, 256, 32, a_mode="trans"),
            NoiseConfig(32, 128, 64, 128, a_mode="trans"),
            NoiseConfig(128, 128, 64, 128, num_warps=8, a_mode="dot", b_mode="dot"),
        ]:
            a2, b2 = add_noise(a.cuda(), b.cuda(), nz.e_l.cuda(), nz.f_r.cuda(), *idx, config=cfg)
            assert b2.t().is_contiguous()
            assert_same((a2.cpu(), b2.cpu()), want)

    def test_non_contiguous_inputs(self, add_noise) -> None:
        m, k, n, r = 200, 300, 100, 32
        a, b = self._operands(m, k, n, seed=4)
        nz = seeded_noise(m, k, n, r, b"views")
        views = [t.cuda().t().contiguous().t() for t in (a, b, nz.e_l, nz.f_r)]
        p_a, p_b = nz.maps  # indices of mixed kinds: numpy, CPU tensor, CUDA int32, CUDA int64
        want = noisy_operands(a, b, nz, int_mm)
        for idx in (
            [p_a, torch.from_numpy(p_b).to("cuda", torch.int32)],
            [torch.from_numpy(p_a), torch.from_numpy(p_b).cuda()],
        ):
            a2, b2 = add_noise(*views, *idx)
            assert_same((a2.cpu(), b2.cpu()), want)

    def test_8192_cube_against_gpu_noisy_operands(self, add_noise) -> None:
        """Production size, the reference being noisy_operands on the GPU with the CUDA backend's exact mm."""
        from kernels.cuda import CudaBackend

        backend = CudaBackend("cuda:0")
        m = k = n = 8192
        r = 64
        a, b = self._operands(m, k, n, seed=8192, device="cuda")
        nz = seeded_noise(m, k, n, r, b"8192").to(torch.device("cuda"))
        a2, b2 = add_noise(a, b, nz.e_l, nz.f_r, *nz.maps)
        assert a2.is_contiguous() and b2.t().is_contiguous()
        want_a, want_b = noisy_operands(a, b, nz, backend.mm)
        assert torch.equal(a2, want_a), f"A' differs at {(a2 != want_a).nonzero()[:5].tolist()}"
        assert torch.equal(b2, want_b), f"B' differs at {(b2 != want_b).nonzero()[:5].tolist()}"
