"""kernels/native/aux.c via kernels.native_loader: batch tile tickets and the fused noise are bit-exact.

Tickets against `kernels.base.tile_tickets_reference` (hashlib); add_noise against a torch model of the contract
(the int32 sum converted to int8, as `pouw.noise_torch.noisy_operands` does), on both the AVX512-VBMI and the portable
path; and one mining pass with the native CpuBackend against the pure torch one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels import native_loader
from kernels.base import ShapeError, tile_tickets_reference

pytestmark = pytest.mark.skipif(
    not native_loader.available(),
    reason=f"native CPU kernel unavailable: {native_loader.unavailable_reason()}",
)

needs_tickets = pytest.mark.skipif(
    not native_loader.has_tickets(), reason="native library built without OpenSSL: tickets fall back to hashlib"
)


def _msgs(shape, gen):
    return torch.randint(-(2**31), 2**31 - 1, (*shape, 16), generator=gen, dtype=torch.int32)


# ---------------------------------------------------------------------------------------------- tile tickets


@needs_tickets
@pytest.mark.parametrize("prefix_len", [0, 1, 44, 55, 56, 63, 64, 65, 119, 120, 128, 300])
def test_tickets_match_hashlib_prefixes(prefix_len):
    gen = torch.Generator().manual_seed(prefix_len)
    prefix = bytes((7 * i + prefix_len) & 255 for i in range(prefix_len))
    for shape in ((1, 1), (3, 5), (17, 2)):
        msgs = _msgs(shape, gen)
        got = native_loader.tile_tickets(prefix, msgs)
        assert got.dtype == torch.uint8 and tuple(got.shape) == (*shape, 32)
        assert torch.equal(got, tile_tickets_reference(prefix, msgs)), (prefix_len, shape)


@needs_tickets
@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (40, 72), (128, 128)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_tickets_match_hashlib_shapes(shape, threads):
    gen = torch.Generator().manual_seed(shape[0] * 1000 + shape[1])
    msgs = _msgs(shape, gen)
    msgs[0, 0] = 0
    msgs[-1, -1] = -1  # all-ones words
    prefix = bytes(range(44))  # the miner's ticket prefix length
    got = native_loader.tile_tickets(prefix, msgs, threads=threads)
    assert torch.equal(got, tile_tickets_reference(prefix, msgs))


@needs_tickets
def test_tickets_noncontiguous_and_empty():
    gen = torch.Generator().manual_seed(5)
    big = _msgs((6, 8), gen)
    view = big.transpose(0, 1)  # (8, 6, 16), not contiguous
    assert torch.equal(native_loader.tile_tickets(b"p" * 44, view), tile_tickets_reference(b"p" * 44, view))
    empty = torch.zeros((0, 4, 16), dtype=torch.int32)
    assert tuple(native_loader.tile_tickets(b"x", empty).shape) == (0, 4, 32)
    with pytest.raises(ShapeError):
        native_loader.tile_tickets(b"x", torch.zeros((2, 2, 8), dtype=torch.int32))
    with pytest.raises(ShapeError):
        native_loader.tile_tickets(b"x", torch.zeros((2, 2, 16), dtype=torch.int64))


def test_backend_tickets_wiring():
    from kernels.cpu import CpuBackend

    gen = torch.Generator().manual_seed(9)
    msgs = _msgs((5, 7), gen)
    ref = tile_tickets_reference(b"q" * 44, msgs)
    for be in (CpuBackend(), CpuBackend(native=False)):
        assert torch.equal(be.tile_tickets(b"q" * 44, msgs), ref)
    assert CpuBackend()._native_tickets == native_loader.has_tickets()
    from kernels.cpu import add_noise_torch

    assert CpuBackend(native=False).caps.add_noise is add_noise_torch  # the portable path's torch gathers
    assert CpuBackend().caps.add_noise is not None


# ---------------------------------------------------------------------------------------------- add_noise


def _model_add_noise(a, b, e_l, f_r, map_a, map_b):
    """The contract in int32, converted to int8 like pouw.noise_torch.noisy_operands (wraps mod 256)."""
    pa, pb = (torch.as_tensor(np.asarray(x), dtype=torch.int64) for x in (map_a, map_b))
    a2 = (a.to(torch.int32) + e_l.to(torch.int32)[:, pa]).to(torch.int8)
    b2 = (b.to(torch.int32) + f_r.to(torch.int32)[pb]).to(torch.int8)
    return a2, b2


def _map(gen, k, r):
    """Any k indices in [0, r) (the kernels take any; the protocol's maps are per-chunk permutations)."""
    return torch.randint(0, r, (k,), generator=gen).numpy()


def _noise_case(m, k, n, r, seed, extreme=False):
    gen = torch.Generator().manual_seed(seed)
    if extreme:  # operands at the contract's edges, noise at the edges of [-32, 31]: sums reach -96 and 94
        a = ((torch.randint(0, 2, (m, k), generator=gen) * 127) - 64).clamp(-64, 63).to(torch.int8)
        b = ((torch.randint(0, 2, (k, n), generator=gen) * 127) - 64).clamp(-64, 63).to(torch.int8)
        e_l = ((torch.randint(0, 2, (m, r), generator=gen) * 63) - 32).to(torch.int8)
        f_r = ((torch.randint(0, 2, (r, n), generator=gen) * 63) - 32).to(torch.int8)
    else:
        a = torch.randint(-64, 64, (m, k), generator=gen, dtype=torch.int8)
        b = torch.randint(-64, 64, (k, n), generator=gen, dtype=torch.int8)
        e_l = torch.randint(-32, 32, (m, r), generator=gen, dtype=torch.int8)
        f_r = torch.randint(-32, 32, (r, n), generator=gen, dtype=torch.int8)
    return a, b, e_l, f_r, _map(gen, k, r), _map(gen, k, r)


NOISE_CASES = [  # (m, k, n, r)
    (1, 32, 1, 32),
    (33, 96, 17, 32),
    (7, 64, 129, 64),
    (65, 1088, 31, 64),  # k not a multiple of 64 (masked tail)
    (19, 640, 45, 128),
    (3, 136, 5, 8),
    (9, 768, 11, 256),
    (130, 2048, 96, 128),
]


@pytest.mark.parametrize("force_portable", [False, True])
@pytest.mark.parametrize("case", NOISE_CASES)
def test_add_noise_matches_model(case, force_portable):
    m, k, n, r = case
    for extreme in (False, True):
        args = _noise_case(m, k, n, r, seed=m * 7 + k + n + r, extreme=extreme)
        want = _model_add_noise(*args)
        for threads in (1, 2):
            got = native_loader.add_noise(*args, threads=threads, force_portable=force_portable)
            assert got[0].dtype == torch.int8 and got[1].dtype == torch.int8
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (case, extreme, threads)


def test_add_noise_wraps_like_int32_to_int8():
    """Outside the contract (full int8 range) it still equals the int32 sum converted to int8."""
    gen = torch.Generator().manual_seed(3)
    m, k, n, r = 21, 200, 70, 64
    a = torch.randint(-128, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=gen, dtype=torch.int8)
    e_l = torch.randint(-128, 128, (m, r), generator=gen, dtype=torch.int8)
    f_r = torch.randint(-128, 128, (r, n), generator=gen, dtype=torch.int8)
    maps = (_map(gen, k, r), _map(gen, k, r))
    want = _model_add_noise(a, b, e_l, f_r, *maps)
    for fp in (False, True):
        got = native_loader.add_noise(a, b, e_l, f_r, *maps, force_portable=fp)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_add_noise_matches_noisy_operands_and_rejects_bad_input():
    from kernels.cpu import int_mm
    from pouw.noise import Seeds
    from pouw.noise_torch import full_noise, noisy_operands

    m, k, n, r = 48, 1024, 40, 64
    seeds = Seeds(b"j" * 32, b"a" * 32, b"b" * 32)
    nz = full_noise(seeds, m, k, n, r)
    gen = torch.Generator().manual_seed(11)
    a = torch.randint(-64, 64, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-64, 64, (k, n), generator=gen, dtype=torch.int8)
    want = noisy_operands(a, b, nz, int_mm)
    got = native_loader.add_noise(a, b, nz.e_l, nz.f_r, *nz.maps)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    a_in, b_in = a.clone(), b.clone()
    map_a, map_b = nz.maps
    bad = map_a.copy()
    bad[5] = r
    with pytest.raises(ShapeError):
        native_loader.add_noise(a, b, nz.e_l, nz.f_r, bad, map_b)
    bad[5] = -1
    with pytest.raises(ShapeError):
        native_loader.add_noise(a, b, nz.e_l, nz.f_r, map_a, bad)
    with pytest.raises(ShapeError):
        native_loader.add_noise(a, b[:-1], nz.e_l, nz.f_r, *nz.maps)
    with pytest.raises(ShapeError):
        native_loader.add_noise(a, b, nz.e_l, nz.f_r, map_a[:-1], map_b)
    assert torch.equal(a, a_in) and torch.equal(b, b_in)  # inputs untouched
    out = (torch.empty((m, k), dtype=torch.int8), torch.empty((k, n), dtype=torch.int8))
    got = native_loader.add_noise(a, b, nz.e_l, nz.f_r, *nz.maps, out=out)
    assert got[0].data_ptr() == out[0].data_ptr() and got[1].data_ptr() == out[1].data_ptr()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(ShapeError, match="out buffer"):
        native_loader.add_noise(a, b, nz.e_l, nz.f_r, *nz.maps, out=(out[1], out[0]))


# ---------------------------------------------------------------------------------------------- end to end


def test_mine_job_native_matches_torch():
    from kernels.cpu import CpuBackend
    from pouw.miner import filler_operands, mine_job, prepare_job
    from pouw.params import PowParams

    params = PowParams()
    a, b = filler_operands(b"aux-e2e", (256, 1024, 256))
    prep = prepare_job(a, b, params)
    template = b"template-aux-e2e" + prep.job.h_a + prep.job.h_b
    target = 1 << 250
    native = CpuBackend()
    assert native.caps.add_noise is not None
    res_n = mine_job(template, prep.job, a, b, target, params, native, prepared=prep)
    res_t = mine_job(template, prep.job, a, b, target, params, CpuBackend(native=False), prepared=prep)
    assert np.array_equal(res_n.tickets, res_t.tickets)
    assert torch.equal(res_n.c, res_t.c)
    assert torch.equal(res_n.c, a.to(torch.int32) @ b.to(torch.int32))
    assert res_n.winners == res_t.winners
    assert [p.ticket for p in res_n.proofs] == [p.ticket for p in res_t.proofs]


def test_build_without_openssl_falls_back(tmp_path):
    """When the OpenSSL build fails the plain library loads: no native tickets, the backend uses hashlib."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    gcc = shutil.which(os.environ.get("POUW_CC") or os.environ.get("CC") or "gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    wrapper = tmp_path / "cc-no-ssl"
    wrapper.write_text(f'#!/bin/sh\nfor x in "$@"; do [ "$x" = "-lcrypto" ] && exit 1; done\nexec {gcc} "$@"\n')
    wrapper.chmod(0o755)
    root = Path(__file__).resolve().parents[1]
    code = (
        "from kernels import native_loader as n; from kernels.cpu import CpuBackend\n"
        "from kernels.base import tile_tickets_reference as ref; import torch\n"
        "assert n.available(), n.unavailable_reason()\nassert not n.has_tickets()\n"
        "m = torch.arange(2 * 3 * 16, dtype=torch.int32).reshape(2, 3, 16)\n"
        "assert torch.equal(CpuBackend().tile_tickets(b'p' * 44, m), ref(b'p' * 44, m))\n"
        "try:\n    n.tile_tickets(b'p', m)\nexcept RuntimeError:\n    print('ok')\n"
    )
    env = {**os.environ, "POUW_CACHE": str(tmp_path / "cache"), "POUW_CC": str(wrapper), "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
