"""kernels/native/recover.c via kernels.native_loader: the one-pass c -= sum_i 128^i U_i V_i is bit-exact.

Against a torch int64 reference reduced mod 2^32, on shapes that are and are not multiples of the 8 x 48 block,
w in {64, 128, 256} (and odd widths, which the loader pads), 1-3 pairs, extreme values; plus input checks and one
mining pass with the native CpuBackend against the pure torch one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels import native_loader
from kernels.base import ShapeError

pytestmark = pytest.mark.skipif(
    not native_loader.has_sub_correction(),
    reason=f"native sub_correction unavailable: {native_loader.unavailable_reason() or 'no AVX512-VNNI'}",
)


def _ref(c: torch.Tensor, pairs) -> torch.Tensor:
    t = c.to(torch.int64)
    for i, (u, v) in enumerate(pairs):
        t = t - (u.to(torch.int64) @ v.to(torch.int64)) * ((128**i) % 2**32)
    t = t & 0xFFFFFFFF
    return torch.where(t >= 2**31, t - 2**32, t).to(torch.int32)


def _pairs(m, n, w, npairs, gen, lo=-128, hi=127):
    return [
        (
            torch.randint(lo, hi + 1, (m, w), generator=gen, dtype=torch.int8),
            torch.randint(lo, hi + 1, (w, n), generator=gen, dtype=torch.int8),
        )
        for _ in range(npairs)
    ]


def _c(m, n, gen):
    return torch.randint(-(2**31), 2**31 - 1, (m, n), generator=gen, dtype=torch.int32)


@pytest.mark.parametrize("m,n", [(1, 1), (7, 13), (8, 48), (9, 49), (33, 100), (64, 64), (130, 250), (257, 96)])
@pytest.mark.parametrize("w", [64, 128, 256])
@pytest.mark.parametrize("npairs", [1, 2, 3])
def test_matches_int64_reference(m, n, w, npairs):
    gen = torch.Generator().manual_seed(m * 100003 + n * 101 + w * 7 + npairs)
    c = _c(m, n, gen)
    pairs = _pairs(m, n, w, npairs, gen)
    want = _ref(c, pairs)
    out = native_loader.sub_correction(c, pairs)
    assert out is c  # in place
    assert torch.equal(c, want)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_contract_range_and_threads(threads):
    gen = torch.Generator().manual_seed(threads)
    m, n, w = 200, 300, 128
    c = _c(m, n, gen)
    pairs = _pairs(m, n, w, 2, gen, -64, 63)
    want = _ref(c, pairs)
    native_loader.sub_correction(c, pairs, threads=threads)
    assert torch.equal(c, want)


@pytest.mark.parametrize("val_u,val_v", [(-128, -128), (-128, 127), (127, 127), (127, -128)])
def test_extreme_values(val_u, val_v):
    m, n, w = 19, 70, 256
    gen = torch.Generator().manual_seed(3)
    for npairs in (1, 2, 3):
        pairs = [
            (torch.full((m, w), val_u, dtype=torch.int8), torch.full((w, n), val_v, dtype=torch.int8))
            for _ in range(npairs)
        ]
        # mix in random entries too
        pairs.append(tuple(_pairs(m, n, w, 1, gen)[0]))
        c = _c(m, n, gen)
        want = _ref(c, pairs)
        native_loader.sub_correction(c, pairs)
        assert torch.equal(c, want), (val_u, val_v, npairs)


def test_mixed_and_odd_widths():
    gen = torch.Generator().manual_seed(11)
    m, n = 37, 61
    pairs = []
    for w in (64, 5, 0, 130, 1):
        pairs.append(
            (
                torch.randint(-128, 128, (m, w), generator=gen, dtype=torch.int8),
                torch.randint(-128, 128, (w, n), generator=gen, dtype=torch.int8),
            )
        )
    c = _c(m, n, gen)
    want = _ref(c, pairs)
    native_loader.sub_correction(c, pairs)
    assert torch.equal(c, want)


def test_noncontiguous_operands_and_empty():
    gen = torch.Generator().manual_seed(5)
    m, n, w = 24, 80, 64
    u = torch.randint(-128, 128, (w, m), generator=gen, dtype=torch.int8).t()  # not contiguous
    v = torch.randint(-128, 128, (n, w), generator=gen, dtype=torch.int8).t()
    c = _c(m, n, gen)
    want = _ref(c, [(u, v)])
    native_loader.sub_correction(c, [(u, v)])
    assert torch.equal(c, want)
    c0 = c.clone()
    native_loader.sub_correction(c, [])
    assert torch.equal(c, c0)
    e = torch.empty((0, n), dtype=torch.int32)
    native_loader.sub_correction(e, [(torch.empty((0, w), dtype=torch.int8), v.contiguous())])


def test_rejects_bad_input():
    m, n, w = 16, 32, 64
    u = torch.zeros((m, w), dtype=torch.int8)
    v = torch.zeros((w, n), dtype=torch.int8)
    c = torch.zeros((m, n), dtype=torch.int32)
    with pytest.raises(ShapeError):
        native_loader.sub_correction(c.to(torch.int64), [(u, v)])
    with pytest.raises(ShapeError):
        native_loader.sub_correction(torch.zeros((n, m), dtype=torch.int32).t(), [(u, v)])  # not contiguous
    with pytest.raises(ShapeError):
        native_loader.sub_correction(c, [(u.to(torch.int16), v)])
    with pytest.raises(ShapeError):
        native_loader.sub_correction(c, [(u, v[:-4])])  # w disagrees within the pair
    with pytest.raises(ShapeError):
        native_loader.sub_correction(c, [(u[:-1], v)])  # m disagrees
    with pytest.raises(ShapeError):
        native_loader.sub_correction(c, [(u, v[:, :-1])])  # n disagrees
    with pytest.raises(ShapeError):
        native_loader.sub_correction(c, [(u, v, u)])
    assert not c.any()


def test_many_pairs():
    """Pairs past the C limit are ignored: 128^i = 0 mod 2^32 for i >= 5."""
    gen = torch.Generator().manual_seed(9)
    m, n, w = 20, 50, 8
    pairs = _pairs(m, n, w, native_loader.SUB_CORRECTION_MAX_PAIRS + 3, gen)
    c = _c(m, n, gen)
    want = _ref(c, pairs)
    native_loader.sub_correction(c, pairs)
    assert torch.equal(c, want)


def test_backend_hook():
    from kernels.cpu import CpuBackend

    assert CpuBackend().caps.sub_correction is not None
    assert CpuBackend(native=False).caps.sub_correction is None


def test_mine_job_native_matches_torch():
    from kernels.cpu import CpuBackend
    from pouw.miner import filler_operands, mine_job, prepare_job
    from pouw.params import PowParams

    params = PowParams()
    a, b = filler_operands(b"recover-e2e", (256, 1024, 256))
    prep = prepare_job(a, b, params)
    template = b"template-recover-e2e" + prep.job.h_a + prep.job.h_b
    target = 1 << 250
    native = CpuBackend()
    assert native.caps.sub_correction is not None
    res_n = mine_job(template, prep.job, a, b, target, params, native, prepared=prep)
    res_t = mine_job(template, prep.job, a, b, target, params, CpuBackend(native=False), prepared=prep)
    assert torch.equal(res_n.c, res_t.c)
    assert torch.equal(res_n.c, a.to(torch.int32) @ b.to(torch.int32))
    assert np.array_equal(res_n.tickets, res_t.tickets)


# ------------------------------------------------------------------------- correction operands (A·Q, P·B' digits)

needs_operands = pytest.mark.skipif(
    not native_loader.has_correction_operands(), reason="native correction_operands unavailable (no AVX512-VNNI)"
)


def _noise_case(m, k, n, r, gen, *, maps=None, lo=-128, hi=127):
    """Operands, factors and maps (any indices in [0, r), not only per-chunk permutations) for
    correction_operands."""
    from pouw.noise_torch import Noise

    a = torch.randint(lo, hi + 1, (m, k), generator=gen, dtype=torch.int8)
    b2 = torch.randint(lo, hi + 1, (k, n), generator=gen, dtype=torch.int8)
    e_l = torch.randint(-32, 32, (m, r), generator=gen, dtype=torch.int8)
    f_r = torch.randint(-32, 32, (r, n), generator=gen, dtype=torch.int8)
    if maps is None:
        maps = tuple(torch.randint(0, r, (k,), generator=gen).numpy() for _ in range(2))
    return a, b2, Noise(e_l, f_r, maps)


def _torch_operands(a, b2, nz):
    from kernels.cpu import int_mm
    from pouw.recover import correction_operands

    return correction_operands(a, b2, nz, lambda x, y: int_mm(x.contiguous(), y.contiguous()))


def _same_operands(got, want) -> bool:
    return len(got) == len(want) and all(
        torch.equal(gu, wu) and torch.equal(gv, wv) for (gu, gv), (wu, wv) in zip(got, want)
    )


@needs_operands
@pytest.mark.parametrize(
    "m,k,n,r",
    [
        (1, 64, 1, 8),
        (7, 132, 13, 8),
        (24, 128, 40, 16),
        (33, 512, 100, 32),
        (64, 1024, 64, 64),
        (5, 4096, 17, 256),
        (70, 2048, 130, 128),
        (130, 300, 65, 24),
    ],
)
def test_correction_operands_match_torch(m, k, n, r):
    """Native A·Q and P·B' digits == the torch GEMM path, on tails of every block (rows of 4 and 32, 16 and 64
    columns, k blocks of 256, r not a multiple of 16)."""
    gen = torch.Generator().manual_seed(m * 7919 + k * 31 + n * 7 + r)
    a, b2, nz = _noise_case(m, k, n, r, gen)
    got = native_loader.correction_operands(a, b2, nz.e_l, nz.f_r, *nz.maps)
    assert _same_operands(got, _torch_operands(a, b2, nz))
    assert all(u.is_contiguous() and v.is_contiguous() for u, v in got)


@needs_operands
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_correction_operands_digit_counts(threads):
    """One digit when everything is small, three when the sums need them: the count is the data's, as in
    pouw.recover.digits128 (here A·Q reaches 64 k and P·B' 127 k)."""
    m, k, n, r = 12, 2048, 40, 8
    gen = torch.Generator().manual_seed(threads)
    zero = np.zeros(k, dtype=np.int64)  # P, Q: every column maps to row 0, so A·Q and P·B' sum all of k
    a, b2, nz = _noise_case(m, k, n, r, gen, maps=(zero, zero), lo=0, hi=0)
    one = native_loader.correction_operands(a, b2, nz.e_l, nz.f_r, *nz.maps, threads=threads)
    assert len(one) == 1 and _same_operands(one, _torch_operands(a, b2, nz))
    a.fill_(64)
    b2.fill_(127)
    three = native_loader.correction_operands(a, b2, nz.e_l, nz.f_r, *nz.maps, threads=threads)
    assert len(three) == 3 and _same_operands(three, _torch_operands(a, b2, nz))


@needs_operands
def test_correction_operands_protocol_noise_and_bad_input():
    from pouw.job import JobCommitment
    from pouw.noise import derive_seeds
    from pouw.noise_torch import full_noise

    m, k, n, r = 48, 1024, 80, 64
    gen = torch.Generator().manual_seed(5)
    a, b2, _ = _noise_case(m, k, n, r, gen, lo=-64, hi=64)
    nz = full_noise(derive_seeds(b"template", JobCommitment(b"\1" * 32, b"\2" * 32, m, k, n)), m, k, n, r)
    got = native_loader.correction_operands(a, b2, nz.e_l, nz.f_r, *nz.maps)
    assert _same_operands(got, _torch_operands(a, b2, nz))
    bad = list(nz.maps)
    bad[1] = bad[1].copy()
    bad[1][5] = r
    with pytest.raises(ShapeError, match="index outside"):
        native_loader.correction_operands(a, b2, nz.e_l, nz.f_r, *bad)
    with pytest.raises(ShapeError, match="multiple of 4"):
        native_loader.correction_operands(a[:, :1022], b2[:1022], nz.e_l, nz.f_r, *(x[:1022] for x in nz.maps))
    with pytest.raises(ShapeError, match="int8"):
        native_loader.correction_operands(a.to(torch.int16), b2, nz.e_l, nz.f_r, *nz.maps)
    with pytest.raises(ShapeError, match="disagree"):
        native_loader.correction_operands(a, b2[:, :-1], nz.e_l, nz.f_r, *nz.maps)
    from kernels.cpu import CpuBackend

    assert CpuBackend().caps.correction_operands is native_loader.correction_operands
