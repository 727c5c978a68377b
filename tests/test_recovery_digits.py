"""The recovery's digit count fixed from bounds (`pouw.recover.recovery_digits`), against the count the data needs
(`pouw.recover.digits128`, the old per-digit loop): never fewer, equal on the extreme operands, and the fixed
split (`split128`) gives the same correction, hence the same C, on random and extreme inputs."""

from __future__ import annotations

import pytest
import torch

from pouw.noise import noise_map
from pouw.noise_torch import Noise
from pouw.params import MAX_K, PowParams
from pouw.recover import correction_operands, digits128, recovery_digits, split128


def _count(v: int) -> int:
    """Signed base-128 digits of one integer by the sequential rule of `digits128` (Python ints)."""
    d = 1
    while True:
        low = ((v + 64) & 127) - 64
        v = (v - low) >> 7
        if not v:
            return d
        d += 1


def _exact(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.int64) @ y.to(torch.int64)).to(torch.int32)


def _noise(m: int, k: int, n: int, r: int, seed: int) -> Noise:
    g = torch.Generator().manual_seed(seed)
    e_l = torch.randint(-32, 32, (m, r), generator=g, dtype=torch.int8)
    f_r = torch.randint(-32, 32, (r, n), generator=g, dtype=torch.int8)
    return Noise(e_l, f_r, (noise_map(b"a%d" % seed, k, r), noise_map(b"b%d" % seed, k, r)))


def test_bound_is_the_count_of_the_extreme_sums():
    """For every k/r up to beyond what the protocol allows: the bound is the data count of the extreme values
    -96 k/r and 95 k/r (tight), and at least that of A·Q's extremes +-64 k/r."""
    for q in range(1, 20_001):
        d = recovery_digits(64 * q, 64)
        assert d == max(_count(-96 * q), _count(95 * q)), q
        assert d >= max(_count(64 * q), _count(-64 * q))
    assert recovery_digits(8192, 64) == 3 and recovery_digits(4096, 64) == 2 and recovery_digits(5440, 64) == 2
    assert recovery_digits(5504, 64) == 3  # k/r = 86: 95 * 86 > 63 * 129
    assert max(recovery_digits(MAX_K, r) for r in (8, 16, 64, 256)) == 3
    assert recovery_digits(64, 64) == 2 and recovery_digits(0, 8) == 1
    for bad in ((64, 0), (65, 64), (-64, 64)):
        with pytest.raises(ValueError):
            recovery_digits(*bad)


@pytest.mark.parametrize("m,k,n,r", [(16, 1024, 24, 64), (8, 5504, 8, 64), (8, 8192, 16, 64), (4, 2048, 8, 8)])
@pytest.mark.parametrize("fill", ["random", "max", "min"])
def test_fixed_digits_match_the_data_count(m, k, n, r, fill):
    """Protocol-range operands (A in [-64, 64], B' in [-96, 95], real per-chunk permutation maps): the data needs
    no more digits than the bound, exactly as many at the extremes (A all 64 / B' all 95, and -64 / -96), and the
    fixed split is the data's digits followed by zero digits, so the correction sum is the same."""
    g = torch.Generator().manual_seed(m + k + n + r)
    if fill == "random":
        a = torch.randint(-64, 65, (m, k), generator=g, dtype=torch.int8)
        b2 = torch.randint(-96, 96, (k, n), generator=g, dtype=torch.int8)
    else:
        a = torch.full((m, k), 64 if fill == "max" else -64, dtype=torch.int8)
        b2 = torch.full((k, n), 95 if fill == "max" else -96, dtype=torch.int8)
    nz = _noise(m, k, n, r, seed=k + r)
    bound = recovery_digits(k, r)
    data = correction_operands(a, b2, nz, _exact)
    fixed = correction_operands(a, b2, nz, _exact, digits=bound)
    assert len(data) <= bound and len(fixed) == bound
    if fill != "random":  # the extremes need what their sums need...
        q, (sa, sb) = k // r, ((64, 95) if fill == "max" else (-64, -96))
        assert len(data) == max(_count(sa * q), _count(sb * q))
        if fill == "max" or k // r != 86:  # ...which is the whole bound (at k/r = 86
            assert len(data) == bound  # only 95 k/r needs a third digit)
    for i, (u, v) in enumerate(fixed):
        assert u.dtype == v.dtype == torch.int8 and u.is_contiguous() and v.is_contiguous()
        if i < len(data):
            assert torch.equal(u, data[i][0]) and torch.equal(v, data[i][1])
        else:  # [0 | E_L] and [F_R ; 0]: a zero product
            assert not u[:, :r].any() and torch.equal(u[:, r:], nz.e_l)
            assert torch.equal(v[:r], nz.f_r) and not v[r:].any()

    def total(pairs):
        return sum((128**i) * (u.to(torch.int64) @ v.to(torch.int64)) for i, (u, v) in enumerate(pairs))

    want = a.to(torch.int64) @ (nz.q_mat.to(torch.int64) @ nz.f_r.to(torch.int64)) + (
        nz.e_l.to(torch.int64) @ nz.p_mat.to(torch.int64)
    ) @ b2.to(torch.int64)  # A·F + E·B'
    assert torch.equal(total(fixed), want) and torch.equal(total(data), want)


def test_split128_is_digits128_zero_padded():
    g = torch.Generator().manual_seed(3)
    for d in (1, 2, 3, 4, 5):
        s = (128**d - 1) // 127
        x = torch.randint(-64 * s, 63 * s + 1, (40, 33), generator=g, dtype=torch.int64)
        x.view(-1)[:4] = torch.tensor([-64 * s, 63 * s, 0, -1])
        got = split128(x, d)
        assert got.shape == (d, 40, 33) and got.dtype == torch.int8
        assert int(got.min()) >= -64 and int(got.max()) <= 63
        want = digits128(x.to(torch.int32)) if d <= 4 else None  # digits128 works on int32
        if want is not None:
            assert len(want) <= d
            for i in range(d):
                assert torch.equal(got[i], want[i] if i < len(want) else torch.zeros_like(got[i]))
        back = sum((128**i) * got[i].to(torch.int64) for i in range(d))
        assert torch.equal(back, x)
        for out in (-64 * s - 1, 63 * s + 1):  # one past either end: refused on the CPU
            with pytest.raises(ValueError, match="do not fit"):
                split128(torch.tensor([out]), d)
    with pytest.raises(ValueError):
        split128(torch.zeros(2, dtype=torch.int32), 0)


def test_miner_passes_the_bound_and_c_is_exact():
    """A whole pass on the generic CPU path with the fixed count: C equals the int64 product (the miner now always
    asks for `recovery_digits(k, r)` digits; results are what they were)."""
    from kernels.cpu import CpuBackend
    from pouw.miner import filler_operands, mine_job, prepare_job

    P = PowParams(rank=8, tile_h=4, tile_w=4)
    m, k, n = 8, 8 * 96, 12  # k/r = 96: three digits by the bound
    assert recovery_digits(k, 8) == 3
    a, b = filler_operands(b"digits", (m, k, n))
    prep = prepare_job(a, b, P)
    res = mine_job(b"tpl", prep.job, a, b, 1 << 250, P, CpuBackend(native=False), prepared=prep)
    assert torch.equal(res.c, _exact(a, b))
