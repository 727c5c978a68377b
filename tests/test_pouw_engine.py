"""The useful-work engine: exact C, fast path == slow reference, proofs verify, tampering is rejected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pouw_reference as ref
from kernels import reference as kref
from kernels.cpu import CpuBackend, noisy_matmul_torch
from pouw.errors import JobError, PowError
from pouw.miner import filler_operands, mine_job, prepare_job
from pouw.params import PowParams
from pouw.proof import TileProof
from pouw.verify import verify_proof

P = PowParams(rank=32, tile_h=8, tile_w=8)
EASY = 1 << 256  # with target*work >= 2^256 every tile wins


def rand_ops(m, k, n, seed=0, lo=-64, hi=64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(lo, hi + 1, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(lo, hi + 1, (k, n), dtype=torch.int8, generator=g)
    return a, b


def easy_target(params, k):
    return (1 << 256) // params.tile_work(k)


@pytest.mark.parametrize("m,k,n,seed", [(16, 512, 8, 1), (64, 512, 48, 2), (40, 1024, 24, 3), (8, 640, 72, 4)])
def test_recovered_c_equals_int64_reference(m, k, n, seed):
    a, b = rand_ops(m, k, n, seed)
    prep = prepare_job(a, b, P)
    res = mine_job(b"tmpl" + bytes([seed]), prep.job, a, b, 1, P, backend=CpuBackend(native=False), prepared=prep)
    expect = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert torch.equal(res.c, expect)


def test_extreme_operands_recover_exactly():
    m, k, n = 32, 1024, 32
    a = torch.full((m, k), 64, dtype=torch.int8)
    b = torch.full((k, n), -64, dtype=torch.int8)
    a[::2] = -64
    prep = prepare_job(a, b, P)
    res = mine_job(b"x", prep.job, a, b, 1, P, backend=CpuBackend(native=False), prepared=prep)
    assert torch.equal(res.c, (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))


def test_fast_path_matches_slow_reference():
    m, k, n = 16, 512, 16
    a, b = rand_ops(m, k, n, 7)
    prep = prepare_job(a, b, P)
    job = prep.job
    assert job.h_a == ref.merkle_root(b"A-rows", [bytes(x & 0xFF for x in row) for row in a.tolist()])
    bl = b.tolist()
    assert job.h_b == ref.merkle_root(b"B-cols", [bytes(bl[l][j] & 0xFF for l in range(k)) for j in range(n)])
    template = b"reference template"
    res = mine_job(template, job, a, b, 1, P, backend=CpuBackend(native=False), prepared=prep, recover_c=False)
    jk, A2, B2 = ref.noisy(a.tolist(), b.tolist(), template, job.h_a, job.h_b, P.rank)
    assert jk == res.job_key
    assert all(-96 <= v <= 95 for row in A2 for v in row) and all(-96 <= v <= 95 for row in B2 for v in row)
    want = ref.tickets(jk, A2, B2, P.rank, P.tile_h, P.tile_w)
    for (ti, tj), t in want.items():
        assert res.tickets[ti, tj].tobytes() == t


def test_torch_kernel_matches_kernel_reference():
    for m, k, n, r, h, w, blk in [
        (16, 64, 16, 32, 4, 8, 8),
        (32, 32 * 20, 16, 32, 8, 8, 16),
        (24, 128, 8, 64, 8, 4, 8),
    ]:
        a, b = rand_ops(m, k, n, m + k, lo=-127, hi=127)
        c1, m1 = kref.noisy_matmul(a, b, r, h, w)
        c2, m2 = noisy_matmul_torch(a, b, r, h, w, block_rows=blk)
        assert torch.equal(c1, c2) and torch.equal(m1, m2)


def test_proofs_verify_and_winners_respect_target():
    m, k, n = 64, 512, 64
    a, b = filler_operands(b"seed", (m, k, n))
    prep = prepare_job(a, b, P)
    target = easy_target(P, k) // 8  # about one tile in eight wins
    res = mine_job(b"t1", prep.job, a, b, target, P, prepared=prep, recover_c=False, max_proofs=100)
    thr = target * P.tile_work(k)
    all_t = [res.tickets[i, j].tobytes() for i in range(m // 8) for j in range(n // 8)]
    assert res.winners == sum(int.from_bytes(t, "big") < thr for t in all_t)
    assert 0 < res.winners < len(all_t)
    assert [p.ticket for p in res.proofs] == sorted(p.ticket for p in res.proofs)
    for p in res.proofs:
        again = TileProof.decode(p.encode())
        assert verify_proof(b"t1", prep.job, again, target, P) == p.ticket


@pytest.fixture(scope="module")
def mined():
    m, k, n = 32, 512, 32
    a, b = rand_ops(m, k, n, 11)
    prep = prepare_job(a, b, P)
    target = easy_target(P, k)
    res = mine_job(b"template-1", prep.job, a, b, target, P, prepared=prep, recover_c=False, max_proofs=4)
    return prep, res.proofs[0], target


def _reject(prep, proof, target, reason, template=b"template-1", job=None, params=P):
    with pytest.raises(PowError) as ei:
        verify_proof(template, job or prep.job, proof, target, params)
    assert ei.value.reason == reason, str(ei.value)


def test_flipped_entry_in_opened_row(mined):
    prep, proof, target = mined
    rows = bytearray(proof.a_rows)
    rows[5] = (rows[5] + 1) % 256 if rows[5] != 0x40 else 0x3F
    _reject(prep, dataclasses.replace(proof, a_rows=bytes(rows)), target, "bad-pow-merkle-a")


def test_flipped_entry_in_opened_column(mined):
    prep, proof, target = mined
    cols = bytearray(proof.b_cols)
    cols[3] = 0 if cols[3] else 1
    _reject(prep, dataclasses.replace(proof, b_cols=bytes(cols)), target, "bad-pow-merkle-b")


def test_wrong_merkle_path(mined):
    prep, proof, target = mined
    path = list(proof.path_a)
    path[0] = bytes(32)
    _reject(prep, dataclasses.replace(proof, path_a=tuple(path)), target, "bad-pow-merkle-a")
    _reject(prep, dataclasses.replace(proof, path_b=proof.path_b[:-1]), target, "bad-pow-merkle-b")


def test_ticket_over_target(mined):
    prep, proof, target = mined
    hard = max(1, int.from_bytes(proof.ticket, "big") // P.tile_work(prep.job.k))
    _reject(prep, proof, hard, "high-ticket")


def test_replay_under_other_template(mined):
    prep, proof, target = mined
    _reject(prep, proof, target, "bad-pow-template", template=b"template-2")
    # even with the job key forged to the new template, the transcript gives another ticket
    from pouw.noise import job_key

    forged = dataclasses.replace(proof, job_key=job_key(b"template-2"))
    _reject(prep, forged, target, "bad-pow-ticket", template=b"template-2")


def test_forged_ticket(mined):
    prep, proof, target = mined
    _reject(prep, dataclasses.replace(proof, ticket=bytes(32)), target, "bad-pow-ticket")


def test_out_of_range_value(mined):
    prep, proof, target = mined
    rows = bytearray(proof.a_rows)
    rows[0] = 100
    _reject(prep, dataclasses.replace(proof, a_rows=bytes(rows)), target, "bad-pow-range")


def test_tile_and_shape_errors(mined):
    prep, proof, target = mined
    _reject(prep, dataclasses.replace(proof, ti=99), target, "bad-pow-tile")
    _reject(prep, proof, target, "bad-pow-shape", params=PowParams(rank=32, tile_h=16, tile_w=8))
    bad_job = dataclasses.replace(prep.job, k=100)
    _reject(prep, proof, target, "bad-pow-shape", job=bad_job)
    _reject(prep, proof, 0, "bad-pow-target")


def test_truncated_or_padded_proof_is_bad_encoding(mined):
    _, proof, _ = mined
    raw = proof.encode()
    for bad in (raw[:-1], raw + b"\x00", raw[:10], b"", b"\x02" + raw[1:]):
        with pytest.raises(PowError) as ei:
            TileProof.decode(bad)
        assert ei.value.reason == "bad-pow-encoding"


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda: (torch.full((16, 512), 65, dtype=torch.int8), torch.zeros(512, 8, dtype=torch.int8)), "outside"),
        (lambda: (torch.zeros(16, 512, dtype=torch.int16), torch.zeros(512, 8, dtype=torch.int8)), "dtype"),
        (lambda: (torch.zeros(16, 512, 1, dtype=torch.int8), torch.zeros(512, 8, dtype=torch.int8)), "2-D"),
        (lambda: (torch.zeros(16, 512, dtype=torch.int8), torch.zeros(256, 8, dtype=torch.int8)), "inner dimensions"),
        (lambda: (torch.zeros(512, 16, dtype=torch.int8).t(), torch.zeros(512, 8, dtype=torch.int8)), "contiguous"),
        (lambda: ([[1, 2]], torch.zeros(2, 8, dtype=torch.int8)), "numeric int8 array"),
        (lambda: (np.zeros((16, 512), dtype=np.float32), np.zeros((512, 8), dtype=np.int8)), "dtype"),
        (lambda: (torch.zeros(16, 256, dtype=torch.int8), torch.zeros(256, 8, dtype=torch.int8)), "below the minimum"),
        (
            lambda: (torch.zeros(12, 512, dtype=torch.int8), torch.zeros(512, 8, dtype=torch.int8)),
            "multiple of the tile",
        ),
        (lambda: (torch.zeros(16, 528, dtype=torch.int8), torch.zeros(528, 8, dtype=torch.int8)), "multiple of r"),
    ],
)
def test_bad_operands_get_clear_errors(make, msg):
    a, b = make()
    with pytest.raises(JobError, match=msg):
        prepare_job(a, b, P)


def test_mismatched_job_commitment_is_refused():
    a, b = rand_ops(16, 512, 8, 5)
    prep = prepare_job(a, b, P)
    other = dataclasses.replace(prep.job, h_a=bytes(32))
    with pytest.raises(JobError):
        mine_job(b"t", other, a, b, 1, P)


def test_padding_any_shape_gives_exact_cropped_result():
    from pouw.padding import crop, pad_operands

    g = torch.Generator().manual_seed(9)
    a = torch.randint(-64, 65, (5, 37), dtype=torch.int8, generator=g)
    b = torch.randint(-64, 65, (37, 3), dtype=torch.int8, generator=g)
    ap, bp, shape = pad_operands(a, b, P)
    assert ap.shape == (8, 512) and bp.shape == (512, 8)
    prep = prepare_job(ap, bp, P)
    res = mine_job(b"pad", prep.job, ap, bp, 1, P, prepared=prep)
    assert torch.equal(crop(res.c, shape), (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32))


def test_digits128_reconstruct_exactly():
    from pouw.recover import digits128

    g = torch.Generator().manual_seed(4)
    x = torch.randint(-(2**30), 2**30, (37, 19), dtype=torch.int32, generator=g)
    x[0, 0], x[0, 1], x[0, 2] = 0, -64, 63
    ds = digits128(x)
    assert all(d.dtype == torch.int8 and int(d.min()) >= -64 and int(d.max()) <= 63 for d in ds)
    total = sum(d.to(torch.int64) * (128**i) for i, d in enumerate(ds))
    assert torch.equal(total, x.to(torch.int64))
    assert len(digits128(torch.zeros(3, 3, dtype=torch.int32))) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_mining_pass_is_bit_identical_to_cpu():
    from kernels.cuda import CudaBackend, cuda_available

    if not cuda_available():
        pytest.skip("triton is not installed")
    params = PowParams(rank=64, tile_h=16, tile_w=16)
    a, b = filler_operands(b"gpu", (512, 2048, 384))
    prep = prepare_job(a, b, params)
    target = easy_target(params, 2048) // 16
    cpu = mine_job(b"g", prep.job, a, b, target, params, CpuBackend(), prepared=prep, max_proofs=4)
    gpu = mine_job(b"g", prep.job, a, b, target, params, CudaBackend("cuda:0"), prepared=prep, max_proofs=4)
    assert np.array_equal(cpu.tickets, gpu.tickets)
    assert torch.equal(cpu.c, gpu.c.cpu())
    assert [p.encode() for p in cpu.proofs] == [p.encode() for p in gpu.proofs]


def test_winning_tiles_matches_brute_force() -> None:
    import pouw.ticket as ticket_mod
    from pouw.ticket import winning_tiles

    g = torch.Generator().manual_seed(11)
    t = torch.randint(0, 256, (6, 7, 32), generator=g, dtype=torch.uint8)
    t[0, 1, :10] = 0  # very low tickets, two of them equal
    t[3, 3] = t[0, 1]
    t[2, 5, :7] = 0
    t[2, 5, 7:] = 255  # same 7-byte prefix as a smaller threshold, but larger: a false candidate
    flat = [bytes(row.tolist()) for row in t.reshape(-1, 32)]
    thresholds = [
        0,
        1,
        int.from_bytes(flat[1], "big"),
        int.from_bytes(flat[1], "big") + 1,
        (1 << 200) - 1,
        1 << 200,
        1 << 250,
        (1 << 256) - 1,
        1 << 256,
        1 << 300,
    ]
    thresholds += [int.from_bytes(flat[i], "big") + d for i in (5, 17, 30) for d in (-1, 0, 1)]
    for thr in thresholds:
        want = sorted(
            ((i, x) for i, x in enumerate(flat) if int.from_bytes(x, "big") < thr), key=lambda p: (p[1], p[0])
        )
        assert winning_tiles(t, thr) == (len(want), want), thr
        assert winning_tiles(t, thr, 3) == (len(want), want[:3]), thr
        # both candidate filters (the host one above, the device one that CUDA tensors take) keep every winner
        for filt in (ticket_mod._candidates_host, ticket_mod._candidates_device):
            idx, rows = filt(t.reshape(-1, 32), thr)
            assert {i for i, _ in want} <= set(idx.tolist()), thr
            assert [bytes(r.tolist()) for r in rows] == [flat[i] for i in idx.tolist()]


def test_full_noise_on_device_path_matches_full_noise() -> None:
    """full_noise_on (the device path: factors from a backend, map matrices scattered) == full_noise."""
    from pouw.noise import Seeds, _factor
    from pouw.noise_torch import full_noise, full_noise_on

    def host_factor(key: bytes, nonce: bytes, first: int, rows: int, r: int) -> torch.Tensor:
        return torch.from_numpy(_factor(key, nonce, range(first, first + rows), r).astype(np.int8))

    seeds = Seeds(b"j" * 32, b"a" * 32, b"b" * 32)
    for m, k, n, r in [(48, 512, 40, 32), (16, 64 * 17, 24, 64)]:
        want = full_noise(seeds, m, k, n, r)
        got = full_noise_on(seeds, m, k, n, r, torch.device("cpu"), host_factor)
        for name in ("e_l", "p_mat", "q_mat", "f_r"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        for g, w in zip(got.maps, want.maps):
            assert np.array_equal(g.numpy(), w)


def test_reused_buffers_do_not_leak_between_passes() -> None:
    """A backend that takes out= buffers (native CPU) gets this thread's reused A', B', C', messages: passes
    under different templates still match the torch path, and a returned C is never a reused buffer."""
    be = CpuBackend()
    if not be.caps.accepts_out:
        pytest.skip("native kernel unavailable: no reused buffers")
    P = PowParams(rank=32, tile_h=8, tile_w=8)
    a, b = filler_operands(b"reuse", (32, 32 * 16, 24))
    prep = prepare_job(a, b, P)
    target = (1 << 256) // (P.tile_work(32 * 16) * 4)
    torch_be = CpuBackend(native=False)
    kept = []
    for i, recover in enumerate([False, True, False, True]):
        tpl = b"tpl-%d" % i
        got = mine_job(tpl, prep.job, a, b, target, P, be, prepared=prep, recover_c=recover)
        want = mine_job(tpl, prep.job, a, b, target, P, torch_be, prepared=prep, recover_c=recover)
        assert np.array_equal(got.tickets, want.tickets)
        assert [p.encode() for p in got.proofs] == [p.encode() for p in want.proofs]
        if recover:
            kept.append(got.c)
    exact = (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    assert all(torch.equal(c, exact) for c in kept) and kept[0].data_ptr() != kept[1].data_ptr()


@pytest.mark.parametrize("r,fill", [(64, "full"), (2048, "full"), (32, "min")])
def test_tile_message_matches_reference_in_both_float_widths(r: int, fill: str) -> None:
    """The verifier's replay takes float32 chunk products when they are exact (|a||b|r < 2^24) and float64
    otherwise (r = 2048 at full range); int8 -128 must not fool its bound."""
    from pouw.transcript import tile_message

    rng = np.random.default_rng(r)
    k = r * 18
    a = rng.integers(-128, 128, (4, k)).astype(np.int8)
    b = rng.integers(-128, 128, (8, k)).astype(np.int8)
    if fill == "min":
        a[:] = -128
        b[:, ::2] = -128
    _, msgs = kref.noisy_matmul(torch.from_numpy(a), torch.from_numpy(b.T.copy()), r, 4, 8)
    assert np.array_equal(tile_message(a, b, r).view(np.int32), msgs[0, 0].numpy())


def test_scratch_buffers_are_bounded() -> None:
    """Per-thread reuse keeps small buffers and never pins one over SCRATCH_MAX_BYTES."""
    from pouw import miner

    small = miner._scratch_buffer("t-small", (4, 8), torch.int32)
    assert miner._scratch_buffer("t-small", (4, 8), torch.int32).data_ptr() == small.data_ptr()
    assert miner._scratch_buffer("t-small", (8, 4), torch.int32).shape == (8, 4)  # new shape: new buffer
    big = (miner.SCRATCH_MAX_BYTES // 4 + 16,)
    miner._scratch_buffer("t-big", big, torch.int32)
    assert "t-big" not in miner._scratch.bufs
