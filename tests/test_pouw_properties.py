"""Property tests: Merkle openings, proof encoding, noise bounds and single-row regeneration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.cpu import int_mm
from pouw.errors import PowError
from pouw.job import JobCommitment
from pouw.merkle import MerkleTree, verify_range
from pouw.noise import derive_seeds, noise_cols, noise_map, noise_rows
from pouw.noise_torch import full_noise, noisy_operands
from pouw.proof import TileProof

SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(count=st.integers(1, 40), leaf_len=st.integers(1, 9), data=st.data())
def test_every_aligned_opening_verifies_and_tampering_fails(count, leaf_len, data):
    leaves = [data.draw(st.binary(min_size=leaf_len, max_size=leaf_len)) for _ in range(count)]
    tree = MerkleTree(b"T", leaves)
    size = data.draw(st.sampled_from([s for s in (1, 2, 4, 8, 16) if s <= count]))
    start = data.draw(st.integers(0, count // size - 1)) * size
    if start + size > count:
        return
    path = tree.open_range(start, size)
    verify_range(b"T", tree.root, count, leaf_len, start, leaves[start : start + size], path, "r")
    bad = list(leaves[start : start + size])
    bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
    try:
        verify_range(b"T", tree.root, count, leaf_len, start, bad, path, "r")
        raise AssertionError("tampered leaf accepted")
    except PowError as e:
        assert e.reason == "r"
    # same leaves under another tag or another count never verify
    for tag, cnt in ((b"U", count), (b"T", count + 1)):
        try:
            verify_range(tag, tree.root, cnt, leaf_len, start, leaves[start : start + size], path, "r")
            raise AssertionError("opening verified under the wrong domain")
        except PowError:
            pass


@SETTINGS
@given(
    h=st.sampled_from([1, 2, 4]),
    w=st.sampled_from([1, 2, 8]),
    k=st.integers(1, 40),
    pa=st.integers(0, 5),
    pb=st.integers(0, 5),
    data=st.data(),
)
def test_proof_encoding_round_trip_and_strictness(h, w, k, pa, pb, data):
    proof = TileProof(
        data.draw(st.binary(min_size=32, max_size=32)),
        data.draw(st.integers(0, 2**32 - 1)),
        data.draw(st.integers(0, 2**32 - 1)),
        h,
        w,
        k,
        data.draw(st.binary(min_size=32, max_size=32)),
        data.draw(st.binary(min_size=h * k, max_size=h * k)),
        data.draw(st.binary(min_size=w * k, max_size=w * k)),
        tuple(bytes([i]) * 32 for i in range(pa)),
        tuple(bytes([i + 7]) * 32 for i in range(pb)),
    )
    raw = proof.encode()
    assert TileProof.decode(raw) == proof
    cut = data.draw(st.integers(0, len(raw) - 1))
    for bad in (raw[:cut], raw + b"\x00"):
        try:
            TileProof.decode(bad)
            raise AssertionError("non-canonical proof decoded")
        except PowError as e:
            assert e.reason == "bad-pow-encoding"


@settings(max_examples=10, deadline=None)
@given(
    seed=st.binary(min_size=1, max_size=16),
    r=st.sampled_from([8, 32, 64]),
    m=st.integers(1, 12),
    n=st.integers(1, 12),
    mult=st.integers(16, 20),
)
def test_noise_bounds_and_single_rows_regenerate(seed, r, m, n, mult):
    k = r * mult
    job = JobCommitment(bytes(32), bytes([1]) * 32, m, k, n)
    seeds = derive_seeds(seed, job)
    nz = full_noise(seeds, m, k, n, r)
    # every chunk's r x r block of P and Q is a permutation matrix: one 1 per row and per column, zeros elsewhere
    for mat in (nz.p_mat, nz.q_mat.t()):
        assert set(mat.unique().tolist()) <= {0, 1}
        blocks = mat.reshape(r, k // r, r)  # row j, chunk c, column in chunk
        assert torch.equal(blocks.sum(2, dtype=torch.int64), torch.ones((r, k // r), dtype=torch.int64))
        assert torch.equal(blocks.sum(0, dtype=torch.int64), torch.ones((k // r, r), dtype=torch.int64))
    assert np.array_equal(nz.maps[0], noise_map(seeds.seed_a, k, r))
    assert np.array_equal(nz.maps[1], noise_map(seeds.seed_b, k, r))
    a = torch.full((m, k), 64, dtype=torch.int8)
    b = torch.full((k, n), -64, dtype=torch.int8)
    a2, b2 = noisy_operands(a, b, nz, int_mm)
    e = a2.to(torch.int16) - 64
    f = b2.to(torch.int16) + 64
    assert -32 <= int(e.min()) and int(e.max()) <= 31 and -32 <= int(f.min()) and int(f.max()) <= 31
    u = m - 1
    assert np.array_equal(noise_rows(seeds, [u], k, r)[0], e[u].numpy().astype(np.int8))
    v = n // 2
    assert np.array_equal(noise_cols(seeds, [v], k, r)[0], f[:, v].numpy().astype(np.int8))


def test_noise_stream_is_rfc7539_chacha20():
    import pouw_reference as ref
    from pouw.noise import keystream

    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    block1 = ref.chacha20_block(key, 1, nonce)
    assert block1.hex().startswith("10f1e7e4d13b5915500fdd1fa32071c4")  # RFC 7539, 2.3.2
    assert keystream(key, nonce, 64, 64) == block1
    assert keystream(key, nonce, 70, 100) == ref.stream_bytes(key, nonce, 70, 100)


def test_noise_map_matches_reference_and_the_documented_example():
    """pouw.noise.noise_map == the reference written from docs/protocol.md §3, and both give §3's example."""
    import pouw_reference as ref

    example = [5, 2, 7, 1, 3, 0, 6, 4, 2, 4, 1, 3, 5, 7, 6, 0]
    assert noise_map(bytes(32), 16, 8).tolist() == example == ref.noise_map(bytes(32), 16, 8)
    for seed, k, r in [(b"a", 8 * 16, 8), (b"b" * 32, 64 * 17, 64), (b"c", 256 * 16, 256)]:
        got = noise_map(seed, k, r)
        assert got.tolist() == ref.noise_map(seed, k, r)
        assert all(sorted(got[c : c + r].tolist()) == list(range(r)) for c in range(0, k, r))
    with pytest.raises(ValueError):
        noise_map(b"x", 100, 64)
